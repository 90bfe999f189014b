// A struct_ops map (SEC(".struct_ops.link")) with its callbacks in struct_ops/ sections.
// The loader does not support struct_ops maps; parsing must fail naming the map and the
// section. The ops struct is declared here with the members used, as the kernel's BTF
// is what a struct_ops loader matches it against. Built into programs/build/struct_ops.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct sock;

struct tcp_congestion_ops {
	__u32 (*ssthresh)(struct sock *sk);
	void (*cong_avoid)(struct sock *sk, __u32 ack, __u32 acked);
	__u32 (*undo_cwnd)(struct sock *sk);
	char name[16];
};

SEC("struct_ops/edge_ssthresh")
__u32 edge_ssthresh(struct sock *sk)
{
	return 2;
}

SEC("struct_ops/edge_cong_avoid")
void edge_cong_avoid(struct sock *sk, __u32 ack, __u32 acked)
{
}

SEC("struct_ops/edge_undo_cwnd")
__u32 edge_undo_cwnd(struct sock *sk)
{
	return 10;
}

SEC(".struct_ops.link")
struct tcp_congestion_ops edge_cc = {
	.ssthresh = (void *)edge_ssthresh,
	.cong_avoid = (void *)edge_cong_avoid,
	.undo_cwnd = (void *)edge_undo_cwnd,
	.name = "edge_cc",
};

char LICENSE[] SEC("license") = "GPL";
