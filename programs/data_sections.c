// Global data in every shape libbpf turns into maps: string literals in .rodata.str1.1,
// custom .data.NAME / .rodata.NAME sections, static against global
// variables, const volatile configuration knobs, an array of structs in .bss, and a
// per-CPU array of structs. Built into programs/build/data_sections.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct flow_slot {
	__u32 addr;
	__u16 port;
	__u8 proto;
	__u8 state;
	__u64 seen;
};

// Configuration knobs a loader rewrites before loading: .rodata, frozen.
const volatile __u32 cfg_sample_rate = 64;
const volatile __u8 cfg_verbose = 1;
const volatile char cfg_tag[16] = "edge";

// Custom sections: each becomes its own map, named after the section.
__u64 custom_counter SEC(".data.stats") = 7;
__u32 custom_hist[8] SEC(".data.stats");
const volatile __u64 custom_limit SEC(".rodata.limits") = 1 << 20;

// Only static variables: not mmapable under libbpf's rule.
static __u64 static_only_a SEC(".data.private") = 1;
static __u64 static_only_b SEC(".data.private") = 2;

// .bss: an array of structs and a static counter next to a global one.
struct flow_slot flows[16];
static __u32 flows_used;
__u64 dropped;

// .data: global and static with initialisers.
__u32 next_slot = 3;
static __u32 generation = 11;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct flow_slot[2]);
} percpu_slots SEC(".maps");

// "classifier", the older name of "tc", which aya-obj 0.3 also reads.
SEC("classifier")
int data_user(struct __sk_buff *skb)
{
	__u32 i = next_slot & 15;
	__u32 key = 0;
	struct flow_slot *pc = bpf_map_lookup_elem(&percpu_slots, &key);

	if (pc)
		pc[1].seen++;
	if (skb->len % cfg_sample_rate)
		return 0;
	if (cfg_verbose)
		bpf_printk("flow %u of %u tag %s", i, generation, cfg_tag);
	flows[i].addr = skb->mark;
	flows[i].port = skb->ifindex;
	flows[i].seen++;
	flows_used++;
	custom_counter += static_only_a + static_only_b;
	custom_hist[skb->len & 7]++;
	if (skb->len > custom_limit) {
		dropped++;
		// A string literal passed by address: clang puts it in .rodata.str1.1.
		bpf_trace_printk("too long\n", sizeof("too long\n"));
		return 2;
	}
	next_slot = i + 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
