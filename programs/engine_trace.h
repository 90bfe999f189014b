// Programs at tracing hooks for the engine's attachment tests
// (engine/tests/kernel_tracing.rs); in two versions (engine_trace_v1.c and
// engine_trace_v2.c define VERSION and include this file). A raw tracepoint program and
// a BTF tracepoint (tracing) program at sys_enter count the system calls of the process
// whose tgid the test writes in slot 0 of `trace_pid`, in slot VERSION of their map, so
// a test tells which version runs; the maps are alike in both versions and reused.
// Neither link type has an update: an upgrade attaches the new program, then detaches
// the old.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} trace_pid SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} raw_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} btf_hits SEC(".maps");

static __always_inline void count(void *map)
{
	__u32 zero = 0, slot = VERSION;
	__u32 *pid = bpf_map_lookup_elem(&trace_pid, &zero);
	__u64 *n;

	if (!pid || *pid != (__u32)(bpf_get_current_pid_tgid() >> 32))
		return;
	n = bpf_map_lookup_elem(map, &slot);
	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("raw_tp/sys_enter")
int count_raw(void *ctx)
{
	count(&raw_hits);
	return 0;
}

SEC("tp_btf/sys_enter")
int count_btf(void *ctx)
{
	count(&btf_hits);
	return 0;
}
