// Map-in-map definitions (hash of maps, array of maps with static initialisation) and a
// program array initialised with a tail-call target. Built into programs/build/map_in_map.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct inner_array {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 8);
} inner_a SEC(".maps"), inner_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, 64);
	__array(values, struct inner_array);
} outer_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__type(key, __u32);
		__type(value, __u32);
		__uint(max_entries, 32);
	});
} outer_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct inner_array);
} outer_static SEC(".maps") = {
	.values = { [1] = &inner_b },
};

SEC("xdp")
int tail_target(struct xdp_md *ctx)
{
	return XDP_PASS;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, int (void *));
} jump_table SEC(".maps") = {
	.values = { [2] = (void *)&tail_target },
};

SEC("xdp")
int xdp_dispatch(struct xdp_md *ctx)
{
	__u32 key = 0;
	void *inner = bpf_map_lookup_elem(&outer_hash, &key);
	if (inner) {
		__u64 *v = bpf_map_lookup_elem(inner, &key);
		if (v)
			return XDP_DROP;
	}
	inner = bpf_map_lookup_elem(&outer_array, &key);
	if (inner && bpf_map_lookup_elem(inner, &key))
		return XDP_ABORTED;
	inner = bpf_map_lookup_elem(&outer_static, &key);
	if (inner && bpf_map_lookup_elem(inner, &key))
		return XDP_ABORTED;
	bpf_tail_call(ctx, &jump_table, 2);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
