// A program the verifier gives up on: a bounded loop whose every iteration it must walk
// (the counter is known in each, so no two iterations' states are equal, and the body
// has no branch to prune), more than its limit of 1,000,000 processed instructions.
// Loading it fails with E2BIG and the log says "BPF program is too large". Built into
// programs/build/too_complex.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_walk_too_far(struct xdp_md *ctx)
{
	__u32 acc = ctx->data_end - ctx->data;

	for (int i = 0; i < 400000; i++) {
		acc = acc * 1103515245 + 12345;
		acc ^= acc >> 7;
	}
	return acc & 1 ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
