// Fixture of the `handover dump` benchmark (programs/build/dump_bench.o): a hash map
// of 1,048,576 entries (allocated as they are filled) with a struct value. The
// program only makes the object loadable; it is never attached.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct endpoint {
	__u64 bytes;
	__u32 packets;
	__u16 port;
	__u16 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct endpoint);
	__uint(max_entries, 1048576);
} endpoints SEC(".maps");

SEC("xdp")
int touch(struct xdp_md *ctx)
{
	__u32 key = 0;
	struct endpoint *e = bpf_map_lookup_elem(&endpoints, &key);

	if (e)
		e->packets += 1;
	return XDP_PASS;
}
