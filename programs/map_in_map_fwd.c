// A map-in-map whose inner map's value is a struct reached only through pointers: clang
// emits it as a forward declaration (BTF FWD), so no size can be read for it (libbpf
// refuses the object the same way). Built into programs/build/map_in_map_fwd.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct backend {
	__u64 conns;
	__u32 weight;
};

struct backends {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, struct backend);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, struct backends);
} backends_by_service SEC(".maps");

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	__u32 slot = 0;
	void *backends = bpf_map_lookup_elem(&backends_by_service, &slot);

	if (!backends)
		return XDP_PASS;
	struct backend *b = bpf_map_lookup_elem(backends, &slot);

	if (b)
		b->conns++;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
