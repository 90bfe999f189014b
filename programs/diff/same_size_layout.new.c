// A same-size change of layout is never reuse: one u64 becomes two u32.
// New version; built into programs/build/diff/same_size_layout.new.o.
#include "common.h"

struct v {
	__u32 total;
	__u32 extra;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct v);
	__uint(max_entries, 1024);
} m SEC(".maps");
