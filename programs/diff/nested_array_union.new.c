// Migrate: arrays are matched element by element (extra elements zero-filled) and a union whose members all survive is copied as bytes.
// New version; built into programs/build/diff/nested_array_union.new.o.
#include "common.h"

struct slot {
	__u32 id;
	__u64 weight;
};
struct v {
	struct slot slots[8];
	union {
		__u32 v4;
		__u8 raw[4];
		__u32 v6[4];
	} addr;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct v);
	__uint(max_entries, 1024);
} m SEC(".maps");
