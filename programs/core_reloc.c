// A tracing program with CO-RE field relocations (preserve_access_index), and an fentry
// program; the loader reports these relocations. Built into programs/build/core_reloc.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct task_struct {
	int pid;
	int tgid;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, int);
	__type(value, int);
	__uint(max_entries, 64);
} pids SEC(".maps");

SEC("kprobe/do_nanosleep")
int trace_sleep(void *ctx)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	int pid = BPF_CORE_READ(task, pid);
	int tgid = BPF_CORE_READ(task, tgid);
	bpf_map_update_elem(&pids, &pid, &tgid, BPF_ANY);
	return 0;
}

SEC("fentry/do_nanosleep")
int fentry_sleep(unsigned long long *ctx)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_nanosleep")
int tp_sleep(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
