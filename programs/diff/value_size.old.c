// Seed 000, breaking change: the value size changes from 4 to 16 bytes; under migrate the counter is widened and new fields start at zero.
// Old version; built into programs/build/diff/value_size.old.o.
#include "common.h"

struct counter {
	__u32 count;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(max_entries, 1024);
} counts SEC(".maps");
