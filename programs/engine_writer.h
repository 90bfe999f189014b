// Maps the daemon writes through its dual-write handle (MapWriter) while an upgrade
// migrates them (engine/tests/writer_fake.rs, kernel_writer.rs): a per-CPU hash and a
// hash whose values hold a bpf_spin_lock; in two versions (engine_writer_v1.c and
// engine_writer_v2.c define VERSION and include this file). Version 2 adds a field at
// the front of both values, so that every write is converted back for the old map.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct stat {
#if VERSION == 2
	__u32 flags;
#endif
	__u64 packets;
	__u32 port;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, __u32);
	__type(value, struct stat);
	__uint(max_entries, 1024);
} stats SEC(".maps");

struct account {
#if VERSION == 2
	__u64 opened;
#endif
	struct bpf_spin_lock lock;
	__u32 owner;
	__u64 balance;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct account);
	__uint(max_entries, 1024);
} accounts SEC(".maps");

SEC("xdp")
int count(struct xdp_md *ctx)
{
	__u32 key = ctx->ingress_ifindex;
	struct stat *s = bpf_map_lookup_elem(&stats, &key);
	struct account *a = bpf_map_lookup_elem(&accounts, &key);

	if (s)
		s->packets += 1;
	if (a) {
		bpf_spin_lock(&a->lock);
		a->balance += 1;
		bpf_spin_unlock(&a->lock);
	}
	return XDP_PASS;
}
