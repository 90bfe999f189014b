// BTF-defined maps of every flavour the loader reads from `.maps`, used by an XDP program.
// Built into programs/build/maps_btf.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow_stats {
	__u64 packets;
	__u64 bytes;
	__u32 last_seen;
	__u32 flags;
};

struct lpm_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_stats);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 16);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(key_size, 8);
	__uint(value_size, 16);
	__uint(max_entries, 4096);
} lru_sizes_only SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, __u32);
	__type(value, struct flow_stats);
	__uint(max_entries, 128);
	__uint(numa_node, 0);
} percpu_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} percpu_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v4_key);
	__type(value, __u32);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	__u32 idx = 0;
	__u64 *cnt = bpf_map_lookup_elem(&counters, &idx);
	if (cnt)
		__sync_fetch_and_add(cnt, 1);
	cnt = bpf_map_lookup_elem(&percpu_counters, &idx);
	if (cnt)
		*cnt += 1;

	struct flow_key key = {};
	key.proto = (__u8)(ctx->data_end - ctx->data);
	struct flow_stats *st = bpf_map_lookup_elem(&flows, &key);
	if (st)
		st->packets++;
	st = bpf_map_lookup_elem(&percpu_stats, &idx);
	if (st)
		st->bytes += 1;

	__u64 lkey = 0;
	if (bpf_map_lookup_elem(&lru_sizes_only, &lkey))
		return XDP_DROP;

	struct lpm_v4_key pkey = { .prefixlen = 32 };
	if (bpf_map_lookup_elem(&prefixes, &pkey))
		return XDP_DROP;

	__u32 *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (ev) {
		*ev = idx;
		bpf_ringbuf_submit(ev, 0);
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
