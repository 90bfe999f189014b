// Functions and calls: several programs in one section, static and global subprograms in
// .text calling each other, callbacks passed by address to bpf_loop and
// bpf_for_each_map_elem, tail calls through a statically initialised prog array, and a
// weak function. Built into programs/build/subprogs.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct bpf_map;

struct counter {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct counter);
} counters SEC(".maps");

// Static subprogram: BTF FUNC with static linkage, called through a relocation against
// the .text section symbol.
static __attribute__((noinline)) __u64 add_bytes(struct counter *c, __u64 n)
{
	c->bytes += n;
	return c->bytes;
}

// Global subprogram: BTF FUNC with global linkage, verified on its own by the kernel.
__attribute__((noinline)) int count_packet(__u32 key, __u64 len)
{
	struct counter *c = bpf_map_lookup_elem(&counters, &key);
	if (!c)
		return 0;
	c->packets++;
	return add_bytes(c, len) > 1000;
}

// A weak global subprogram: a linker may replace it, the object keeps its own body.
__attribute__((weak, noinline)) int classify_len(__u64 len)
{
	return len > 512 ? 2 : 1;
}

// Loop callback: its address is loaded with ld_imm64 (BPF_PSEUDO_FUNC).
static int loop_step(__u32 index, void *ctx)
{
	__u64 *sum = ctx;
	*sum += index;
	return *sum > 100;
}

// for_each callback, calling a static subprogram of its own.
static __u64 sum_entry(struct bpf_map *map, __u32 *key, struct counter *val, __u64 *acc)
{
	*acc += add_bytes(val, 0);
	return 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__array(values, int (void *));
} jump_table SEC(".maps");

SEC("xdp")
int xdp_first(struct xdp_md *ctx)
{
	__u64 len = ctx->data_end - ctx->data;
	count_packet(0, len);
	bpf_tail_call(ctx, &jump_table, classify_len(len));
	return XDP_PASS;
}

SEC("xdp")
int xdp_second(struct xdp_md *ctx)
{
	__u64 sum = 0;
	bpf_loop(16, loop_step, &sum, 0);
	return count_packet(1, sum) ? XDP_DROP : XDP_PASS;
}

SEC("xdp")
int xdp_third(struct xdp_md *ctx)
{
	__u64 acc = 0;
	bpf_for_each_map_elem(&counters, sum_entry, &acc, 0);
	return acc > 5 ? XDP_DROP : XDP_PASS;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__array(values, int (void *));
} jump_table_init SEC(".maps") = {
	.values = {
		[1] = (void *)&xdp_second,
		[2] = (void *)&xdp_third,
	},
};

SEC("xdp")
int xdp_dispatch(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &jump_table_init, 1);
	return XDP_ABORTED;
}

char LICENSE[] SEC("license") = "GPL";
