// Global data in .data, .rodata, .bss and a custom .data.config section, read by a tc
// program through bpf-to-bpf calls into .text subprograms. Built into
// programs/build/global_data.o.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

volatile const __u32 drop_mark = 0x2a;
volatile const char greeting[16] = "handover";
__u64 packets_seen = 7;
__u64 bytes_seen;
__u32 zero_counter;
struct tunables {
	__u32 rate;
	__u32 burst;
	__u16 port;
} tunables SEC(".data.config") = { .rate = 1000, .burst = 64, .port = 8080 };

static __attribute__((noinline)) int classify_len(__u32 len)
{
	if (len > tunables.rate)
		return TC_ACT_SHOT;
	bytes_seen += len;
	return TC_ACT_OK;
}

__attribute__((noinline)) int account(struct __sk_buff *skb)
{
	packets_seen++;
	zero_counter += greeting[0];
	if (skb->mark == drop_mark)
		return TC_ACT_SHOT;
	return classify_len(skb->len);
}

SEC("tc")
int tc_account(struct __sk_buff *skb)
{
	return account(skb);
}

SEC("classifier")
int tc_second(struct __sk_buff *skb)
{
	if (skb->len < tunables.burst)
		return TC_ACT_OK;
	return classify_len(skb->len + tunables.port);
}

char LICENSE[] SEC("license") = "GPL";
