// Seed 000, safe change: max_entries increases, layout unchanged.
// New version; built into programs/build/diff/grow.new.o.
#include "common.h"

struct flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 port;
	__u8 proto;
};
struct stats {
	__u64 packets;
	__u32 bytes;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct stats);
	__uint(max_entries, 4096);
} conns SEC(".maps");
