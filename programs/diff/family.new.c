// Migrate: map types within one family (hash and lru_hash, percpu_hash and lru_percpu_hash) are carried by copying; array and percpu_array are not one family.
// New version; built into programs/build/diff/family.new.o.
#include "common.h"

struct stats {
	__u64 packets;
	__u32 bytes;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, __u32);
	__type(value, struct stats);
	__uint(max_entries, 1024);
} conns SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__type(key, __u32);
	__type(value, struct stats);
	__uint(max_entries, 128);
} pcpu SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 8);
} slots SEC(".maps");
