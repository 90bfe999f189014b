// Structural comparison: a typedef-only rename and an anonymous struct replacing a named one with the same layout are reuse.
// Old version; built into programs/build/diff/type_names.old.o.
#include "common.h"

typedef __u32 ifindex_t;
struct v {
	__u64 a;
	__u32 b;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, ifindex_t);
	__type(value, __u64);
	__uint(max_entries, 1024);
} by_if SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct v);
	__uint(max_entries, 1024);
} named SEC(".maps");
