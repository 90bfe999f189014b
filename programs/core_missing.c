// A CO-RE read of a field no kernel has, not guarded by bpf_core_field_exists: the
// loader poisons the instruction (no offset exists on the target) and the verifier
// reaches it, so the load fails; the error must name the relocation (which field of
// which struct) instead of only the poison call. Built into programs/build/core_missing.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct task_struct {
	int pid;
	int handover_no_such_field;
} __attribute__((preserve_access_index));

SEC("kprobe/do_nanosleep")
int read_missing_field(void *ctx)
{
	struct task_struct *t = (void *)bpf_get_current_task();

	return BPF_CORE_READ(t, handover_no_such_field);
}

char LICENSE[] SEC("license") = "GPL";
