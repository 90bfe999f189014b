// Seed 000, breaking change: the map type changes from hash to array.
// Old version; built into programs/build/diff/map_type.old.o.
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 256);
} m SEC(".maps");
