// Seed 000, breaking change: value fields are reordered (same size); never reuse, migrate copies by name.
// New version; built into programs/build/diff/reorder.new.o.
#include "common.h"

struct v {
	__u32 b;
	__u32 a;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct v);
	__uint(max_entries, 1024);
} m SEC(".maps");
