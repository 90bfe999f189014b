// Programs in sections libbpf does not name, as daemons write them: tail-call targets
// of a cgroup/connect4 program in cgroup/connect4/NAME_TAIL_CALL_n sections, and custom
// xdp_* and tc_* section names. They parse with their type unknown; loading needs a
// type for each (given by exact section, by prefix, or for every program). Built into
// programs/build/custom_sections.o.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} connect_tails SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&hits, &slot);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("cgroup/connect4")
int connect_entry(struct bpf_sock_addr *ctx)
{
	if (ctx->user_port == 0)
		return 1;
	count(0);
	bpf_tail_call(ctx, &connect_tails, 1);
	return 1;
}

SEC("cgroup/connect4/ROUTE_TAIL_CALL_1")
int connect_route(struct bpf_sock_addr *ctx)
{
	if (ctx->user_port == 0)
		return 1;
	count(1);
	bpf_tail_call(ctx, &connect_tails, 2);
	return 1;
}

SEC("cgroup/connect4/ROUTE_TAIL_CALL_2")
int connect_finish(struct bpf_sock_addr *ctx)
{
	if (ctx->user_port == 0)
		return 1;
	count(2);
	return 1;
}

SEC("xdp_custom")
int xdp_custom_prog(struct xdp_md *ctx)
{
	count(3);
	return XDP_PASS;
}

SEC("tc_custom")
int tc_custom_prog(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
