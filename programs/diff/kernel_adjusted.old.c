// Kernel adjustments: a ring buffer of 4000 bytes is created as 4096, a perf event array of 0 entries gets one per CPU; neither looks changed.
// Old version; built into programs/build/diff/kernel_adjusted.old.o.
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4000);
} events SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, 4);
	__uint(value_size, 4);
} perf SEC(".maps");
