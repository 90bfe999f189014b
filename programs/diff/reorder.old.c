// Seed 000, breaking change: value fields are reordered (same size); never reuse, migrate copies by name.
// Old version; built into programs/build/diff/reorder.old.o.
#include "common.h"

struct v {
	__u32 a;
	__u32 b;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct v);
	__uint(max_entries, 1024);
} m SEC(".maps");
