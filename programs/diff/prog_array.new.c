// Per map type: a program array is never reused across versions, even unchanged; not a loss.
// New version; built into programs/build/diff/prog_array.new.o.
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, 4);
	__uint(value_size, 4);
	__uint(max_entries, 8);
} jumps SEC(".maps");
