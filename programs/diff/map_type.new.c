// Seed 000, breaking change: the map type changes from hash to array.
// New version; built into programs/build/diff/map_type.new.o.
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 256);
} m SEC(".maps");
