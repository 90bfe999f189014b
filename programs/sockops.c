// Socket-steering programs of the kind a service-mesh daemon pins: cgroup/connect4,
// sockops and sk_msg around a sockhash. Built into programs/build/sockops.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct sock_key {
	__u32 sip;
	__u32 dip;
	__u32 sport;
	__u32 dport;
	__u32 family;
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__type(key, struct sock_key);
	__type(value, __u32);
	__uint(max_entries, 65535);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sock_ops_map SEC(".maps");

struct backend {
	__u32 ip;
	__u16 port;
	__u16 weight;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct backend);
	__uint(max_entries, 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} service_backends_map SEC(".maps");

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	__u32 vip = ctx->user_ip4;
	struct backend *be = bpf_map_lookup_elem(&service_backends_map, &vip);
	if (be) {
		ctx->user_ip4 = be->ip;
		ctx->user_port = bpf_htons(be->port);
	}
	return 1;
}

SEC("sockops")
int sockops_prog(struct bpf_sock_ops *skops)
{
	struct sock_key key = {};
	switch (skops->op) {
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		key.sip = skops->local_ip4;
		key.dip = skops->remote_ip4;
		key.sport = skops->local_port;
		key.dport = bpf_ntohl(skops->remote_port);
		key.family = skops->family;
		bpf_sock_hash_update(skops, &sock_ops_map, &key, BPF_NOEXIST);
		break;
	}
	return 0;
}

SEC("sk_msg")
int sk_msg_redirect(struct sk_msg_md *msg)
{
	struct sock_key key = {
		.sip = msg->remote_ip4,
		.dip = msg->local_ip4,
		.sport = bpf_ntohl(msg->remote_port),
		.dport = msg->local_port,
		.family = msg->family,
	};
	bpf_msg_redirect_hash(msg, &sock_ops_map, &key, BPF_F_INGRESS);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
