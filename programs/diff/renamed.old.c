// Renamed fields: a declared rename carries values, an undeclared one is flagged; merge rules.
// `pkts` is renamed `packets` with a declaration tag naming the old
// field, so its values are carried; `errs` renamed `errors` without one is dropped and
// zero-filled, flagged as a likely rename. Merge rules are declared on counters.
// Old version; built into programs/build/diff/renamed.old.o.
#include "common.h"

struct stats {
	__u64 pkts;
	__u64 bytes;
	__u64 errs;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct stats);
	__uint(max_entries, 1024);
} counters SEC(".maps");
