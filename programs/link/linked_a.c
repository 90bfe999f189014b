// First half of a statically linked object: `bpftool gen object linked.o linked_a.o
// linked_b.o` (programs/build.sh) merges it with programs/link/linked_b.c. Defines the shared
// map, a global subprogram called from the other file, and calls one defined there.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct shared_value {
	__u64 hits;
	__u32 last_len;
	__u32 owner;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32);
	__type(key, __u32);
	__type(value, struct shared_value);
} shared SEC(".maps");

__u32 a_counter = 1;
const volatile __u32 a_limit = 1500;

extern int b_weight(__u32 len);

__attribute__((noinline)) int a_record(__u32 key, __u32 len)
{
	struct shared_value *v = bpf_map_lookup_elem(&shared, &key);
	if (!v)
		return 0;
	v->hits++;
	v->last_len = len;
	return len < a_limit;
}

SEC("xdp")
int linked_xdp(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	a_counter++;
	return a_record(1, len) + b_weight(len) > 1 ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
