// Typed __ksym variables: per-CPU kernel variables read through bpf_this_cpu_ptr and
// bpf_per_cpu_ptr. The loader resolves them to their BTF ids in vmlinux; the kernel
// then needs their addresses from kallsyms, which a kernel built without
// CONFIG_KALLSYMS_ALL does not list. Built into programs/build/ksym_vars.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct rq {
	int cpu;
} __attribute__((preserve_access_index));

extern int bpf_prog_active __ksym;
extern const struct rq runqueues __ksym;

SEC("tc")
int ksym_vars(struct __sk_buff *skb)
{
	const struct rq *rq;
	int *active;
	int x;

	active = bpf_this_cpu_ptr(&bpf_prog_active);
	x = *active;
	rq = bpf_per_cpu_ptr(&runqueues, 0);
	if (rq)
		x += rq->cpu;
	return x & 1;
}

char LICENSE[] SEC("license") = "GPL";
