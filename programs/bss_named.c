// A zero-initialised custom section, .bss.NAME, which libbpf turns into its own map like
// .data.NAME (libbpf before 1.2 rejects it). Built into programs/build/bss_named.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct slot {
	__u32 addr;
	__u8 state;
};

struct slot scratch[4] SEC(".bss.scratch");
static __u64 hidden SEC(".bss.hidden");

SEC("socket")
int use_scratch(struct __sk_buff *skb)
{
	scratch[skb->len & 3].state = 1;
	hidden++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
