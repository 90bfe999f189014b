// A hash of maps whose inner maps the daemon creates, for the engine's carry of inner
// maps (engine/tests/kernel_inner.rs); in three versions (engine_inner_vN.c define
// VERSION and include this file). Version 2 doubles the outer
// capacity and the inner template's: the kernel takes a live inner hash of another
// capacity into the new outer map (bpf_map_meta_equal does not compare it for hashes),
// so an upgrade carries every inner map by id. Version 3 widens the outer key to 64
// bits: each inner map is carried under its converted key.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct inner {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 16 * VERSION);
};

#if VERSION >= 3
typedef __u64 tenant_key;
#else
typedef __u32 tenant_key;
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, tenant_key);
	__uint(max_entries, 8 * VERSION);
	__array(values, struct inner);
} tenants SEC(".maps");

// Counts a packet in the tenant of its interface.
SEC("xdp")
int count(struct xdp_md *ctx)
{
	tenant_key tenant = ctx->ingress_ifindex;
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
