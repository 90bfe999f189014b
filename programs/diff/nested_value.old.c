// Seed 000, breaking change: a struct nested in the value changes; under migrate fields are matched by name through the nesting.
// Old version; built into programs/build/diff/nested_value.old.o.
#include "common.h"

struct endpoint {
	__u32 ip;
	__u16 port;
};
struct backend {
	struct endpoint ep;
	__u32 weight;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct backend);
	__uint(max_entries, 1024);
} backends SEC(".maps");
