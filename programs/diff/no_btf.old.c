// Maps without BTF key/value: only sizes are known; equal sizes are reused, a size change is recreate.
// Old version; built into programs/build/diff/no_btf.old.o.
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(key_size, 8);
	__uint(value_size, 16);
	__uint(max_entries, 128);
} same SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(key_size, 8);
	__uint(value_size, 16);
	__uint(max_entries, 128);
} resized SEC(".maps");
