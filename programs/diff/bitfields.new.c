// Migrate: bitfields are carried by bit position; a wider bitfield is widened, a new one starts at zero.
// New version; built into programs/build/diff/bitfields.new.o.
#include "common.h"

struct v {
	__u32 state : 4;
	__u32 retries : 5;
	__u32 urgent : 1;
	__u32 id;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct v);
	__uint(max_entries, 1024);
} m SEC(".maps");
