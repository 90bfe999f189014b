// Programs whose attach targets the loader is given instead of reading them from the
// section name: an XDP program calling a global function, an freplace program that
// replaces that function, an fentry program on it (fentry on BPF), and an fentry
// program whose kernel function is given at load. Built into
// programs/build/attach_targets.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

__attribute__((noinline)) int decide(struct xdp_md *ctx)
{
	return ctx->data_end - ctx->data > 1000 ? XDP_DROP : XDP_PASS;
}

SEC("xdp")
int xdp_with_decision(struct xdp_md *ctx)
{
	return decide(ctx);
}

SEC("freplace")
int replace_decide(struct xdp_md *ctx)
{
	return XDP_DROP;
}

SEC("fentry")
int trace_decide(unsigned long long *ctx)
{
	return 0;
}

SEC("fentry")
int trace_kernel(unsigned long long *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
