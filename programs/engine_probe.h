// Programs at kernel and user probes for the engine's probe attachment tests
// (engine/tests/kernel_kprobe.rs, engine/tests/kernel_uprobe.rs); in two versions
// (engine_probe_v1.c and engine_probe_v2.c define VERSION and include this file). Each
// program counts the hits of the process whose tgid the test writes in slot 0 of
// `probe_pid`, in slot VERSION of its own map, so a test tells which version runs; the
// maps are alike in both versions and reused.
//
// The kernel probes sit at __x64_sys_getppid, the x86-64 entry of getppid(2) (5.10 to
// 6.18 alike), which a test triggers by calling getppid; the user probes sit at a
// function of the test binary, named by the test's options. Probes are attached
// through perf-event links, which have no update: an upgrade attaches the new program,
// then drops the old link.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} probe_pid SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} kprobe_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} kretprobe_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} uprobe_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} uretprobe_hits SEC(".maps");

static __always_inline void count(void *map)
{
	__u32 zero = 0, slot = VERSION;
	__u32 *pid = bpf_map_lookup_elem(&probe_pid, &zero);
	__u64 *n;

	if (!pid || *pid != (__u32)(bpf_get_current_pid_tgid() >> 32))
		return;
	n = bpf_map_lookup_elem(map, &slot);
	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("kprobe/__x64_sys_getppid")
int count_kprobe(void *ctx)
{
	count(&kprobe_hits);
	return 0;
}

SEC("kretprobe/__x64_sys_getppid")
int count_kretprobe(void *ctx)
{
	count(&kretprobe_hits);
	return 0;
}

SEC("uprobe")
int count_uprobe(void *ctx)
{
	count(&uprobe_hits);
	return 0;
}

SEC("uretprobe")
int count_uretprobe(void *ctx)
{
	count(&uretprobe_hits);
	return 0;
}
