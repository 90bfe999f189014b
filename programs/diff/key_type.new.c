// Seed 000, breaking change: the key type changes (a key field is added, which old keys cannot provide).
// New version; built into programs/build/diff/key_type.new.o.
#include "common.h"

struct flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 port;
	__u8 proto;
	__u8 zone;
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
