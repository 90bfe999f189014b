// CO-RE relocations of every kind clang 14 emits, in a program the verifier accepts
// once they are applied against the running kernel: reads go through
// bpf_probe_read_kernel (BPF_CORE_READ), and the reads of a field and an enumerator the
// kernel lacks are guarded by existence checks, so their poisoned instructions are dead
// code. One relocation sits in a static .text subprogram. The local layouts differ from
// the kernel's on purpose. Built into programs/build/core_load.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct task_struct {
	int tgid;
	int pid;
	char comm[16];
	unsigned int sched_reset_on_fork : 1;
	int missing_bits : 5;
} __attribute__((preserve_access_index));

struct absent___x {
	int x;
};

enum pid_type { PIDTYPE_GONE = 3, PIDTYPE_TGID = 5 };

static __attribute__((noinline)) int read_pid(struct task_struct *t)
{
	return BPF_CORE_READ(t, pid);
}

SEC("kprobe/do_nanosleep")
int core_load(void *ctx)
{
	struct task_struct *t = (void *)bpf_get_current_task();
	long r = read_pid(t);

	if (bpf_core_field_exists(t->tgid))
		r += BPF_CORE_READ(t, tgid);
	r += bpf_core_field_size(t->comm);
	r += BPF_CORE_READ_BITFIELD_PROBED(t, sched_reset_on_fork);
	if (bpf_core_field_exists(t->missing_bits))
		r += BPF_CORE_READ_BITFIELD_PROBED(t, missing_bits);
	r += bpf_core_type_id_local(struct task_struct);
	r += bpf_core_type_id_kernel(struct task_struct);
	r += bpf_core_type_exists(struct task_struct);
	r += bpf_core_type_exists(struct absent___x);
	r += bpf_core_type_size(struct task_struct);
	r += bpf_core_enum_value_exists(enum pid_type, PIDTYPE_TGID);
	r += bpf_core_enum_value(enum pid_type, PIDTYPE_TGID);
	if (bpf_core_enum_value_exists(enum pid_type, PIDTYPE_GONE))
		r += bpf_core_enum_value(enum pid_type, PIDTYPE_GONE);
	return r;
}

char LICENSE[] SEC("license") = "GPL";
