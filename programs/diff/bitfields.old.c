// Migrate: bitfields are carried by bit position; a wider bitfield is widened, a new one starts at zero.
// Old version; built into programs/build/diff/bitfields.old.o.
#include "common.h"

struct v {
	__u32 state : 3;
	__u32 retries : 5;
	__u32 id;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct v);
	__uint(max_entries, 1024);
} m SEC(".maps");
