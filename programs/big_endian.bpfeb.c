// A big-endian object (clang -target bpfeb): a BTF-defined hash map, global data and an
// XDP program. Built into programs/build/big_endian.bpfeb.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct be_key {
	__u32 addr;
	__u16 port;
	__u16 proto;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct be_key);
	__type(value, __u64);
	__uint(max_entries, 300);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} be_flows SEC(".maps");

volatile const __u32 be_limit = 0x01020304;
__u64 be_hits = 0x1122334455667788ULL;

SEC("xdp")
int be_xdp(struct xdp_md *ctx)
{
	struct be_key key = { .addr = be_limit };
	__u64 *v = bpf_map_lookup_elem(&be_flows, &key);
	if (v)
		*v += 1;
	be_hits++;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
