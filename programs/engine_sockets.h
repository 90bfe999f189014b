// A sockhash of established connections, for the engine's socket carry
// (engine/tests/kernel_sockops.rs); in two versions (engine_sockets_v1.c and
// engine_sockets_v2.c define VERSION and include this file). Version 2 doubles its
// capacity, so that an upgrade recreates the map and carries every socket into it by
// the sockmap iterator.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 64 * VERSION);
} socks SEC(".maps");

// Keeps every connection it sees in the sockhash, keyed by its local port.
SEC("sockops")
int track(struct bpf_sock_ops *ops)
{
	__u32 key = ops->local_port;

	if (ops->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB ||
	    ops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		bpf_sock_hash_update(ops, &socks, &key, BPF_ANY);
	return 1;
}
