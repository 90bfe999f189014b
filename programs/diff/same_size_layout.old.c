// A same-size change of layout is never reuse: one u64 becomes two u32.
// Old version; built into programs/build/diff/same_size_layout.old.o.
#include "common.h"

struct v {
	__u64 total;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct v);
	__uint(max_entries, 1024);
} m SEC(".maps");
