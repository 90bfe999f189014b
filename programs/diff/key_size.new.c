// Seed 000, breaking change: the key size changes from 4 to 16 bytes (IPv4 to IPv6 address).
// New version; built into programs/build/diff/key_size.new.o.
#include "common.h"

struct stats {
	__u64 packets;
	__u32 bytes;
};
struct addr6 {
	__u32 addr[4];
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct addr6);
	__type(value, struct stats);
	__uint(max_entries, 1024);
} by_addr SEC(".maps");
