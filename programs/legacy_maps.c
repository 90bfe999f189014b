// Maps defined the old way: struct bpf_map_def records in the `maps` section, used by a
// socket filter. Built into programs/build/legacy_maps.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

// The historic definition; records may be longer than the kernel's five fields (iproute2
// and older libbpf appended id/pinning/inner_id), which is why the loader divides the
// section size by the number of map symbols. Built with -DLEGACY_DEF_SHORT (the
// legacy_maps.short.o variant) the records are the five-field, 20-byte struct bpf_map_def
// of libbpf before 1.0.
struct bpf_map_def_legacy {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
#ifndef LEGACY_DEF_SHORT
	unsigned int id;
	unsigned int pinning;
#endif
};

struct bpf_map_def_legacy SEC("maps") legacy_hash = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 512,
	.map_flags = 0,
};

struct bpf_map_def_legacy SEC("maps") legacy_array = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = 24,
	.max_entries = 3,
};

SEC("socket")
int legacy_socket(struct __sk_buff *skb)
{
	__u32 key = skb->protocol;
	__u64 *v = bpf_map_lookup_elem(&legacy_hash, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	key = 0;
	if (bpf_map_lookup_elem(&legacy_array, &key))
		return 0;
	return skb->len;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
__u32 _version SEC("version") = 0x060c00;
