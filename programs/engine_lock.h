// A map whose values hold a bpf_spin_lock, for the engine's locked copy
// (engine/tests/kernel_lock.rs), in two versions: engine_lock_v1.c and engine_lock_v2.c
// define VERSION and include this. Version 2 moves the fields around the lock and adds
// one, so that an upgrade converts every value while reading and writing it under
// BPF_F_LOCK.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

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
	__uint(max_entries, 16384);
} accounts SEC(".maps");

// Credits the account whose key the packet starts with (run by BPF_PROG_TEST_RUN).
SEC("xdp")
int credit(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct account *a;
	__u32 key;

	if (data + sizeof(key) > end)
		return XDP_PASS;
	key = *(__u32 *)data;
	a = bpf_map_lookup_elem(&accounts, &key);

	if (!a)
		return XDP_PASS;
	bpf_spin_lock(&a->lock);
	a->balance += 1;
	bpf_spin_unlock(&a->lock);
	return XDP_PASS;
}
