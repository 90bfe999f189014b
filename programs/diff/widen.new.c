// Migrate: integers widened, unsigned and signed; a signed to unsigned change is not carried.
// New version; built into programs/build/diff/widen.new.o.
#include "common.h"

struct v {
	__u32 port;
	__s64 delta;
	__s64 hits;
	__u64 balance;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct v);
	__uint(max_entries, 1024);
} m SEC(".maps");
