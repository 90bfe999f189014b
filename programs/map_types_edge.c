// Map definitions and key/value types at the edges of what BTF and the map attributes
// express: BPF_F_NO_PREALLOC, numa_node, map_extra on a bloom filter, a typedef'd
// anonymous struct as __type, enums with negative values, packed and over-aligned
// structs, a flexible array member, unions, bitfields spanning bytes, __int128, function
// pointers, deeply nested anonymous aggregates and very long names.
// Built into programs/build/map_types_edge.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

typedef struct {
	__u32 ifindex;
	__u16 vlan;
	__u16 pad;
} anon_key_t;

enum verdict {
	VERDICT_ERROR = -2,
	VERDICT_UNKNOWN = -1,
	VERDICT_PASS = 0,
	VERDICT_DROP = 0x7fffffff,
};

struct __attribute__((packed)) packed_hdr {
	__u8 kind;
	__u32 len;
	__u16 flags;
};

struct aligned_cell {
	__u8 tag;
	__u64 value __attribute__((aligned(16)));
};

struct bits {
	__u32 low : 3;
	__u32 spans : 10; // bits 3..12: crosses a byte boundary
	__u32 mid : 19;
	__u64 wide : 40; // starts a new storage unit
	__u8 tail : 1;
};

struct with_fn {
	int (*handler)(void *ctx, __u32 arg);
	void (*on_free)(void);
	__u64 cookie;
};

struct nested {
	__u32 id;
	union {
		struct {
			__u16 a;
			union {
				__u8 b8;
				struct {
					__u8 lo : 4, hi : 4;
				};
			};
		};
		__u32 raw;
	};
	struct {
		struct {
			struct {
				__u64 deepest;
			};
		} level2;
	} level1;
};

struct value_with_union {
	enum verdict verdict;
	union {
		__u32 v4;
		__u8 v6[16];
	} addr;
	struct packed_hdr hdr;
	struct aligned_cell cell;
	struct bits bits;
	unsigned __int128 wide_counter;
	struct with_fn fns;
	struct nested nested;
};

struct flex {
	__u32 count;
	__u32 items[];
};

struct value_with_flex {
	__u64 total;
	struct flex f;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, anon_key_t);
	__type(value, struct value_with_union);
} no_prealloc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__uint(numa_node, 0);
	__type(key, __u32);
	__type(value, struct value_with_flex);
} on_node_zero SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
	__uint(max_entries, 1000);
	__uint(map_extra, 5);
	__type(value, __u64);
} bloom SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(key_size, sizeof(struct packed_hdr));
	__uint(value_size, sizeof(struct bits));
} sizes_only SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2);
	__type(key, enum verdict);
	__type(value, unsigned __int128);
} a_map_with_a_deliberately_very_long_name_that_the_kernel_truncates_to_fifteen SEC(".maps");

struct a_struct_whose_name_is_much_longer_than_anything_a_kernel_object_name_can_hold_at_all {
	__u64 first_member_with_an_equally_unreasonably_long_name_for_testing_purposes;
	struct nested second;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct a_struct_whose_name_is_much_longer_than_anything_a_kernel_object_name_can_hold_at_all);
} long_types SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

SEC("xdp")
int use_maps(struct xdp_md *ctx)
{
	anon_key_t k = { .ifindex = ctx->ingress_ifindex };
	__u32 idx = 0;
	__u64 h = ctx->rx_queue_index;
	enum verdict v = VERDICT_UNKNOWN;
	struct value_with_union *val = bpf_map_lookup_elem(&no_prealloc, &k);
	struct value_with_flex *fl = bpf_map_lookup_elem(&on_node_zero, &idx);
	unsigned __int128 *w = bpf_map_lookup_elem(&a_map_with_a_deliberately_very_long_name_that_the_kernel_truncates_to_fifteen, &v);
	void *lt = bpf_map_lookup_elem(&long_types, &idx);

	bpf_map_push_elem(&bloom, &h, 0);
	if (val)
		val->bits.spans++;
	if (fl)
		fl->total++;
	if (w)
		(*w)++;
	bpf_ringbuf_output(&events, &h, sizeof(h), 0);
	return lt ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
