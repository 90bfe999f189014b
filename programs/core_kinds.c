// Every CO-RE relocation kind clang 14 emits (all but type_matches), one of them in a
// .text subprogram so its record moves with the subprogram into the program.
// Built into programs/build/core_kinds.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct task_struct {
	int pid;
	int tgid;
	char comm[16];
	unsigned int flags_low : 4, flags_high : 12;
	int signed_bits : 5;
} __attribute__((preserve_access_index));

enum edge_state { EDGE_IDLE = 1, EDGE_BUSY = 2 };

typedef struct {
	int x;
	long y;
} sized_t;

// Subprogram with its own CO-RE relocation (field_byte_offset of pid).
__attribute__((noinline)) int read_pid(struct task_struct *t)
{
	return BPF_CORE_READ(t, pid);
}

SEC("kprobe/do_nanosleep")
int core_all(void *ctx)
{
	struct task_struct *t = (void *)bpf_get_current_task();
	long r = read_pid(t);

	if (bpf_core_field_exists(t->tgid))
		r += 1;
	r += bpf_core_field_size(t->comm);
	r += BPF_CORE_READ_BITFIELD_PROBED(t, flags_high);
	r += BPF_CORE_READ_BITFIELD_PROBED(t, signed_bits);
	r += bpf_core_type_id_local(struct task_struct);
	r += bpf_core_type_id_kernel(struct task_struct);
	r += bpf_core_type_exists(struct task_struct);
	r += bpf_core_type_size(sized_t);
	r += bpf_core_enum_value_exists(enum edge_state, EDGE_BUSY);
	r += bpf_core_enum_value(enum edge_state, EDGE_IDLE);
	return r;
}

char LICENSE[] SEC("license") = "GPL";
