// Seed 000, breaking change: the value size changes from 4 to 16 bytes; under migrate the counter is widened and new fields start at zero.
// New version; built into programs/build/diff/value_size.new.o.
#include "common.h"

struct counter {
	__u64 count;
	__u32 errors;
	__u32 last_seen;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(max_entries, 1024);
} counts SEC(".maps");
