// Renamed fields: a declared rename carries values, an undeclared one is flagged; merge rules.
// `pkts` is renamed `packets` with a declaration tag naming the old
// field, so its values are carried; `errs` renamed `errors` without one is dropped and
// zero-filled, flagged as a likely rename. Merge rules are declared on counters.
// New version; built into programs/build/diff/renamed.new.o.
#include "common.h"

struct stats {
	__u64 packets __attribute__((btf_decl_tag("handover:renamed_from:pkts"),
				     btf_decl_tag("handover:merge:sum")));
	__u64 bytes __attribute__((btf_decl_tag("handover:merge:sum")));
	__u64 errors;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct stats);
	__uint(max_entries, 1024);
} counters SEC(".maps");
