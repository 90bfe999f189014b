// Fixture of `handover dump` (programs/build/dump_types.o): maps whose keys and values
// hold every kind of field the decoder prints: a struct key, nested structs, arrays,
// a char array, an enum, bitfields, a signed int, a union, and a per-CPU counter
// array. The program only makes the object loadable; it is never attached.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

enum proto { PROTO_TCP = 6, PROTO_UDP = 17 };

struct flow {
	__u32 addr;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

struct window {
	__u64 first_ns;
	__u64 last_ns;
};

struct flow_state {
	__u64 packets;
	__s32 delta;
	enum proto proto;
	char name[8];
	__u16 ports[3];
	__u8 open : 1;
	__u8 retries : 3;
	struct window window;
	union {
		__u32 mark;
		__u8 mark_bytes[4];
	} tag;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow);
	__type(value, struct flow_state);
	__uint(max_entries, 64);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} counters SEC(".maps");

SEC("xdp")
int count_packets(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(&counters, &zero);

	if (c)
		*c += 1;
	return XDP_PASS;
}
