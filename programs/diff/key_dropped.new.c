// Migrate: a key field is removed; old keys would collide, so the map is recreated.
// New version; built into programs/build/diff/key_dropped.new.o.
#include "common.h"

struct flow_key {
	__u32 saddr;
	__u32 daddr;
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
	__uint(max_entries, 1024);
} conns SEC(".maps");
