// The upgrade engine's fixture for upgrades under load, version 2
// (programs/build/engine_load_v2.o); version 1 is programs/engine_load_v1.c. As
// version 1, with wider values: the backend gains `flags` (set to 2 by this version)
// and a 64-bit port, its counter declared a `sum`; a connection gains the version that
// inserted it. The key of every delete and every insert is also written to
// `conns_tombstones` first, the contract that lets the reconcile leave an entry this
// version deleted or wrote whole as this version has it.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

struct backend {
	__u64 connects __attribute__((btf_decl_tag("handover:merge:sum")));
	__u32 flags;
	__u64 last_port;
};

struct conn {
	__u32 ip;
	__u32 version;
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

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, __u32);
	__type(value, __u8);
	__uint(max_entries, 65536);
} conns_tombstones SEC(".maps");

SEC("cgroup/connect4")
int count_connect(struct bpf_sock_addr *ctx)
{
	__u32 ip = ctx->user_ip4;
	__u32 port = bpf_ntohs(ctx->user_port);
	struct backend *b = bpf_map_lookup_elem(&backends, &ip);

	if (b) {
		__sync_fetch_and_add(&b->connects, 1);
		b->flags = 2;
		b->last_port = port;
	} else {
		struct backend n = { .connects = 1, .flags = 2, .last_port = port };
		bpf_map_update_elem(&backends, &ip, &n, BPF_NOEXIST);
	}
	if (port % 2 == 0) {
		struct conn c = { .ip = ip, .version = 2 };
		__u8 one = 1;

		// A whole-entry write: the tombstone first, as for a delete.
		bpf_map_update_elem(&conns_tombstones, &port, &one, BPF_ANY);
		bpf_map_update_elem(&conns, &port, &c, BPF_ANY);
	} else {
		__u32 below = port - 1;
		__u8 one = 1;
		// The tombstone first: the reconcile must never see the entry gone
		// without it.
		bpf_map_update_elem(&conns_tombstones, &below, &one, BPF_ANY);
		bpf_map_delete_elem(&conns, &below);
	}
	return 1;
}
