// A sockhash of established connections, for the engine's socket carry
// (engine/tests/kernel_sockops.rs); in three versions (engine_sockets_vN.c define
// VERSION and include this file). Version 2 doubles its capacity, so that an upgrade
// recreates the map and carries every socket into it by the sockmap iterator;
// version 3 widens the key to 64 bits, so that each socket is carried under its
// converted key.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

#if VERSION >= 3
typedef __u64 sock_key;
#else
typedef __u32 sock_key;
#endif

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__type(key, sock_key);
	__type(value, __u64);
	__uint(max_entries, 64 * VERSION);
} socks SEC(".maps");

// Keeps every connection it sees in the sockhash, keyed by its local port.
SEC("sockops")
int track(struct bpf_sock_ops *ops)
{
	sock_key key = ops->local_port;

	if (ops->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB ||
	    ops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		bpf_sock_hash_update(ops, &socks, &key, BPF_ANY);
	return 1;
}
