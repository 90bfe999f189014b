// Maps whose state the engine's copy cannot carry whole, for the plan's per-map
// strategies (engine/tests/engine_fake.rs); version 3, built into
// programs/build/engine_state_v3.o. Version 2 changes each map so that an upgrade
// must decide what happens to its entries; version 3 changes them as version 2 does
// and widens the keys of the sockhash and of the hash of maps to 64 bits, so that
// their sockets and inner maps are carried under converted keys.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct session {
	__u64 deadline;
	struct bpf_timer expiry;
#if 3 >= 2
	__u32 flags;
#endif
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct session);
	__uint(max_entries, 1024);
} sessions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__type(key, __u64);
	__type(value, __u64);
	__uint(max_entries, 256 * 2);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096 * 2);
} events SEC(".maps");

struct inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u64);
	__uint(max_entries, 8 * 2);
	__array(values, struct inner);
} tenants SEC(".maps");

// A program, so that loaders that pin every program of an object have one.
SEC("socket")
int keep(struct __sk_buff *skb)
{
	return 0;
}
