// Programs at device hooks for the engine's attachment tests
// (engine/tests/kernel_attach.rs, engine/tests/kernel_hooks.rs); in two versions
// (engine_hooks_v1.c and engine_hooks_v2.c define VERSION and include this file). Each
// program counts what it sees (packets, IPv4 connects) in slot VERSION of its map, so a
// test tells which version runs at a hook; the maps are alike in both versions and
// reused.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} xdp_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} tc_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} cg_hits SEC(".maps");

// State the daemon keeps across upgrades (filled by the test, read by nothing here).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1024);
} cg_conns SEC(".maps");

static __always_inline void count(void *map)
{
	__u32 slot = VERSION;
	__u64 *n = bpf_map_lookup_elem(map, &slot);

	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("xdp")
int pass_xdp(struct xdp_md *ctx)
{
	count(&xdp_hits);
	return XDP_PASS;
}

SEC("classifier")
int pass_tc(struct __sk_buff *skb)
{
	count(&tc_hits);
	return 0; // TCX_NEXT
}

SEC("cgroup/connect4")
int count_connect4(struct bpf_sock_addr *ctx)
{
	count(&cg_hits);
	return 1; // allow
}
