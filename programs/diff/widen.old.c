// Migrate: integers widened, unsigned and signed; a signed to unsigned change is not carried.
// Old version; built into programs/build/diff/widen.old.o.
#include "common.h"

struct v {
	__u16 port;
	__s32 delta;
	__u32 hits;
	__s32 balance;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct v);
	__uint(max_entries, 1024);
} m SEC(".maps");
