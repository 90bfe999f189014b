// Second half of the statically linked object built from programs/link/linked_a.c: refers to
// the map defined there through an extern `.maps` declaration and to its subprogram.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct shared_value {
	__u64 hits;
	__u32 last_len;
	__u32 owner;
};

extern struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32);
	__type(key, __u32);
	__type(value, struct shared_value);
} shared SEC(".maps");

__u32 b_counter = 2;
static const char b_note[] = "b";

extern int a_record(__u32 key, __u32 len);

__attribute__((noinline)) int b_weight(__u32 len)
{
	return len > 64 ? 2 : b_note[0] - 'a';
}

SEC("classifier")
int linked_tc(struct __sk_buff *skb)
{
	__u32 key = 2;
	b_counter++;
	if (!bpf_map_lookup_elem(&shared, &key))
		return 0;
	return a_record(2, skb->len);
}
