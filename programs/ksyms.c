// __ksym externs resolved against the running kernel's BTF: kfunc calls
// (bpf_task_from_pid and bpf_task_release, bpf_rcu_read_lock and bpf_rcu_read_unlock,
// all callable from a tc program), and a weak variable and a weak kfunc that no kernel
// has, whose uses are guarded so that they are dead code once they resolve to 0, and a
// typeless kernel symbol whose address comes from /proc/kallsyms.
// Typed kernel variables are in ksym_vars.c. Built into programs/build/ksyms.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct task_struct {
	int pid;
} __attribute__((preserve_access_index));

extern int handover_missing_ksym __ksym __weak;

extern struct task_struct *bpf_task_from_pid(int pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;
extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;
extern int handover_missing_kfunc(int x) __ksym __weak;
extern const void bpf_prog_put __ksym;

SEC("tc")
int ksyms(struct __sk_buff *skb)
{
	struct task_struct *task;
	int x = 0;

	if (&handover_missing_ksym)
		x += handover_missing_ksym;
	if (handover_missing_kfunc)
		x += handover_missing_kfunc(x);
	if ((unsigned long)&bpf_prog_put & 1)
		x++;
	bpf_rcu_read_lock();
	bpf_rcu_read_unlock();
	task = bpf_task_from_pid(1);
	if (task) {
		x += task->pid;
		bpf_task_release(task);
	}
	return x & 1;
}

char LICENSE[] SEC("license") = "GPL";
