// Migrate: arrays are matched element by element (extra elements zero-filled) and a union whose members all survive is copied as bytes.
// Old version; built into programs/build/diff/nested_array_union.old.o.
#include "common.h"

struct slot {
	__u32 id;
	__u32 weight;
};
struct v {
	struct slot slots[4];
	union {
		__u32 v4;
		__u8 raw[4];
	} addr;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct v);
	__uint(max_entries, 1024);
} m SEC(".maps");
