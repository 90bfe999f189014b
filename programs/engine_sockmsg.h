// An sk_msg program on a sockhash, for the engine's socket map attachments
// (engine/tests/kernel_sockmsg.rs, engine/tests/sockmap_fake.rs); in three versions
// (engine_sockmsg_v1.c .. v3.c define VERSION and include this file). Each version's
// program counts the messages it sees at its own index of `sent`, so the counts say
// which version ran for a socket. Versions 1 and 2 declare the same sockhash (an
// upgrade reuses it and switches its program); version 3 doubles its capacity (an
// upgrade recreates it, carries its sockets and attaches the program to the new map).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, VERSION < 3 ? 64 : 128);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} sent SEC(".maps");

SEC("sk_msg")
int count(struct sk_msg_md *msg)
{
	__u32 i = VERSION - 1;
	__u64 *n = bpf_map_lookup_elem(&sent, &i);

	if (n)
		__sync_fetch_and_add(n, 1);
	return SK_PASS;
}
