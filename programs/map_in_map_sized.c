// A map-in-map declared with key and value sizes only, as daemons do that create the
// inner maps themselves: the object does not define the inner map, so the loader needs
// its template from the caller. Built into programs/build/map_in_map_sized.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 16);
} backends_by_service SEC(".maps");

SEC("xdp")
int xdp_pick_backend(struct xdp_md *ctx)
{
	__u32 service = 7, slot = 0;
	void *backends = bpf_map_lookup_elem(&backends_by_service, &service);

	if (!backends)
		return XDP_PASS;
	__u64 *backend = bpf_map_lookup_elem(backends, &slot);

	return backend && *backend ? XDP_TX : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
