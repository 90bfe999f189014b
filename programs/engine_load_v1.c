// The upgrade engine's fixture for upgrades under load, version 1
// (programs/build/engine_load_v1.o); version 2 is programs/engine_load_v2.c. A cgroup
// connect4 program counts connects per destination address in `backends` and keeps a
// per-connection entry in `conns`, keyed by destination port: a connect to an even
// port inserts the entry of that port, a connect to an odd port deletes the entry of
// the port below it.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

struct backend {
	__u64 connects;
	__u32 last_port;
};

struct conn {
	__u32 ip;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct backend);
	__uint(max_entries, 131072);
} backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct conn);
	__uint(max_entries, 131072);
} conns SEC(".maps");

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
		struct conn c = { .ip = ip };
		bpf_map_update_elem(&conns, &port, &c, BPF_ANY);
	} else {
		__u32 below = port - 1;
		bpf_map_delete_elem(&conns, &below);
	}
	return 1;
}
