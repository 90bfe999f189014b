// Size-only maps given a layout: `endpoints` by declaration tags, `backends` by --layout only.
// Maps declared with key_size/value_size (no BTF key/value type); `backends` is
// migrated with `--layout backends=value:be_val`, recreated without it.
// Old version; built into programs/build/diff/size_only.old.o.
#include "common.h"

struct ep_key {
	__u32 id;
};
struct ep_val {
	__u32 addr;
	__u16 port;
	__u16 weight;
};
struct be_val {
	__u32 id;
	__u32 capacity;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(key_size, sizeof(struct ep_key));
	__uint(value_size, sizeof(struct ep_val));
	__uint(max_entries, 1024);
} endpoints SEC(".maps") __attribute__((btf_decl_tag("handover:key:ep_key"),
					btf_decl_tag("handover:value:ep_val")));
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct be_val));
	__uint(max_entries, 256);
} backends SEC(".maps");

// The types reach the object's BTF through this function's prototype.
__attribute__((noinline)) int weigh(struct ep_key *k, struct ep_val *e, struct be_val *b)
{
	// A global function is verified on its own: its pointers may be NULL.
	if (!k || !e || !b)
		return XDP_PASS;
	return k->id + e->weight + b->capacity;
}

SEC("xdp")
int balance(struct xdp_md *ctx)
{
	struct ep_key k = { 0 };
	struct ep_val *e = bpf_map_lookup_elem(&endpoints, &k);
	struct be_val *b = bpf_map_lookup_elem(&backends, &k.id);
	return e && b ? weigh(&k, e, b) : XDP_PASS;
}
