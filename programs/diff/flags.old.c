// Migrate: a flag change (BPF_F_NO_PREALLOC) is carried by copying into a new map.
// Old version; built into programs/build/diff/flags.old.o.
#include "common.h"

struct stats {
	__u64 packets;
	__u32 bytes;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct stats);
	__uint(max_entries, 1024);
} conns SEC(".maps");
