// Seed 000, breaking change: a value field is renamed; migrate drops the old name and zero-fills the new one.
// Old version; built into programs/build/diff/rename_field.old.o.
#include "common.h"

struct v {
	__u64 packets;
	__u64 bytes;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct v);
	__uint(max_entries, 1024);
} m SEC(".maps");
