// The upgrade engine's fixture, version 1 (programs/build/engine_v1.o); version 2 is
// programs/engine_v2.c. A cgroup connect4 program counts connects per destination
// address in `backends` and keeps per-port entries in `conns`: it inserts the entry of
// an even destination port and deletes the entry of the port below an odd one.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

struct backend {
	__u64 connects;
	__u32 last_port;
};

// programs/build/engine_v1.small.o (programs/build.sh) is this object with 1,024
// backends: a shrink.
#ifndef BACKENDS_MAX
#define BACKENDS_MAX 131072
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct backend);
	__uint(max_entries, BACKENDS_MAX);
} backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 131072);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} jumps SEC(".maps");

const volatile __u32 version = 1;

SEC("cgroup/connect4")
int count_connect(struct bpf_sock_addr *ctx)
{
	__u32 ip = ctx->user_ip4;
	__u32 port = bpf_ntohs(ctx->user_port);
	struct backend *b = bpf_map_lookup_elem(&backends, &ip);

	if (b) {
		__sync_fetch_and_add(&b->connects, 1);
		b->last_port = port;
	} else {
		struct backend n = { .connects = 1, .last_port = port };
		bpf_map_update_elem(&backends, &ip, &n, BPF_NOEXIST);
	}
	if (port % 2 == 0) {
		bpf_map_update_elem(&conns, &port, &ip, BPF_ANY);
	} else {
		__u32 below = port - 1;
		bpf_map_delete_elem(&conns, &below);
	}
	bpf_tail_call(ctx, &jumps, version);
	return 1;
}
