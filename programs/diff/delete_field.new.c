// Seed 000, breaking change: a value field is deleted; migrate reports it dropped.
// New version; built into programs/build/diff/delete_field.new.o.
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
