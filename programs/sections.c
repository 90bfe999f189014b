// One program per section name of a wider set of hooks, each with a distinct program or
// attach type: tc/ingress and tc/egress (tcx), xdp.frags, cgroup/sock_create, netfilter,
// sk_lookup, flow_dissector, raw_tp.w, iter/task, uprobe.s, fentry.s, lsm, tp_btf and a
// kprobe with an attach target, and a program not loaded unless asked for (SEC("?xdp")).
// Built into programs/build/sections.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("tc/ingress")
int tcx_in(struct __sk_buff *skb)
{
	return skb->len > 100 ? 2 : 0;
}

SEC("tc/egress")
int tcx_out(struct __sk_buff *skb)
{
	return skb->mark ? 2 : 0;
}

SEC("xdp.frags")
int xdp_multi_buffer(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("cgroup/sock_create")
int sock_create(struct bpf_sock *sk)
{
	return sk->type == 2 ? 0 : 1;
}

SEC("netfilter")
int nf_accept(void *ctx)
{
	return 1;
}

SEC("sk_lookup")
int lookup(struct bpf_sk_lookup *ctx)
{
	return ctx->local_port == 7 ? SK_DROP : SK_PASS;
}

SEC("flow_dissector")
int dissect(struct __sk_buff *skb)
{
	return BPF_OK;
}

SEC("raw_tp.w/sched_switch")
int writable_tp(void *ctx)
{
	return 0;
}

SEC("iter/task")
int dump_task(void *ctx)
{
	return 0;
}

SEC("uprobe.s//usr/bin/true:main")
int sleepable_uprobe(void *ctx)
{
	return 0;
}

SEC("fentry.s/do_nanosleep")
int sleepable_fentry(void *ctx)
{
	return 0;
}

SEC("lsm/file_open")
int lsm_open(void *ctx)
{
	return 0;
}

SEC("tp_btf/sched_wakeup")
int btf_tp(void *ctx)
{
	return 0;
}

SEC("kretprobe/do_unlinkat")
int unlink_ret(void *ctx)
{
	return 0;
}

SEC("cgroup_skb/egress")
int skb_egress(struct __sk_buff *skb)
{
	return 1;
}

SEC("sk_msg")
int msg_verdict(struct sk_msg_md *msg)
{
	return SK_PASS;
}

SEC("?xdp")
int xdp_optional(struct xdp_md *ctx)
{
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
