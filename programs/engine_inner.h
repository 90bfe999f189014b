// A hash of maps whose inner maps the daemon creates, for the engine's carry of inner
// maps (engine/tests/kernel_inner.rs); in two versions (engine_inner_v1.c and
// engine_inner_v2.c define VERSION and include this file). Version 2 doubles the outer
// capacity and the inner template's: the kernel takes a live inner hash of another
// capacity into the new outer map (bpf_map_meta_equal does not compare it for hashes),
// so an upgrade carries every inner map by id.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct inner {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 16 * VERSION);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, 8 * VERSION);
	__array(values, struct inner);
} tenants SEC(".maps");

// Counts a packet in the tenant of its interface.
SEC("xdp")
int count(struct xdp_md *ctx)
{
	__u32 tenant = ctx->ingress_ifindex;
	__u32 zero = 0;
	void *inner = bpf_map_lookup_elem(&tenants, &tenant);
	__u64 *n;

	if (!inner)
		return XDP_PASS;
	n = bpf_map_lookup_elem(inner, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	return XDP_PASS;
}
