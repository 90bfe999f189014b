// Mesh dataplane, version 2: version 1 (v1.c) with what a real upgrade brings:
//   - backend value: a flags word appended (BACKEND_F_DRAINING: the policies pass over
//     a draining backend while the level has another);
//   - endpoint: grown from 1024 to 4096 entries;
//   - conns: the key widened (ports as 32-bit words): every entry re-keyed;
//   - frontend value: service_id renamed upstream_id (declared by tag);
//   - backend_conns: its counter declared a sum for the upgrade's merge (by tag);
//   - sock_ctx (an LRU hash by socket cookie) removed, replaced by sock_meta (socket
//     local storage, freed with the socket); service_stats added (connects per service);
//   - conns_tombstones added: the key of every entry of conns deleted or written whole
//     is written there first, the engine's contract that makes the reconcile of conns
//     exact for connections v1 opened late and this version closed or opened again;
//   - lb_policies: a third policy, weighted random (LB_WEIGHTED);
// An L4 service load balancer shaped like Kmesh's workload mode. A connect() to a service VIP:port is rewritten by cgroup/connect4 to one of the
// service's backends:
//
//   frontend (VIP, port, protocol) -> service id
//   service  (id)                  -> endpoint count per priority, lb policy, ports
//   endpoint (service, prio, i)    -> backend uid
//   backend  (uid)                 -> address, port, weight
//
// The daemon writes those four; the programs write the rest: backend_conns counts
// connects per backend, service_stats per service, conns holds one entry per open
// connection (inserted by sockops when the connection is established, deleted when it
// reaches TCP_CLOSE), sock_meta carries a connect's choice from connect4 to sockops in
// the socket's local storage, rr_cursor is the round-robin position per service. The
// policy is chosen by a tail call through lb_policies.
// Built into programs/build/dataplane/v2.o.
#include "dataplane.h"

char LICENSE[] SEC("license") = "GPL";

struct frontend_key {
	__u32 vip;	// network byte order
	__u16 port;	// host byte order
	__u16 protocol; // IPPROTO_TCP
};

struct frontend_value {
	__u32 upstream_id HANDOVER_RENAMED_FROM(service_id);
};

struct service_value {
	__u32 endpoint_count[PRIO_COUNT];
	__u32 lb_policy;    // LB_*
	__u16 service_port; // the port clients connect to (host order)
	__u16 target_port;  // the backend port to use; 0: the backend's own
};

struct endpoint_key {
	__u32 service_id;
	__u32 prio;
	__u32 index; // 0 .. endpoint_count[prio] - 1
};

struct endpoint_value {
	__u32 backend_uid;
};

#define BACKEND_F_DRAINING 1

struct backend_value {
	__u32 ip;   // network byte order
	__u16 port; // host byte order
	__u16 weight;
	__u32 flags; // BACKEND_F_*
};

struct backend_stats {
	__u64 connects HANDOVER_MERGE(sum);
};

struct service_stats {
	__u64 connects HANDOVER_MERGE(sum);
};

struct conn_key {
	__u32 src_ip; // network byte order
	__u32 dst_ip; // network byte order (the backend)
	__u32 src_port; // host byte order
	__u32 dst_port; // host byte order
};

struct conn_value {
	__u32 vip;
	__u32 backend_uid;
	__u32 service_id;
	__u16 vport;
	__u16 pad;
	__u64 established_ns;
};

// What connect4 decided for one socket, until sockops sees it established.
struct sock_meta_value {
	__u32 service_id;
	__u32 prio;
	__u32 count;
	__u32 backend_uid;
	__u32 vip;
	__u16 vport;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct frontend_key);
	__type(value, struct frontend_value);
	__uint(max_entries, 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} frontend SEC(".maps");

// service, endpoint and backend are declared by size only (no BTF key/value types),
// as Kmesh declares them.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct service_value));
	__uint(max_entries, 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} service SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(key_size, sizeof(struct endpoint_key));
	__uint(value_size, sizeof(struct endpoint_value));
	__uint(max_entries, 4096);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoint SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct backend_value));
	__uint(max_entries, 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backend SEC(".maps") __attribute__((btf_decl_tag("handover:value:backend_value")));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct backend_stats);
	__uint(max_entries, 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backend_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct conn_key);
	__type(value, struct conn_value);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conns SEC(".maps");

// The keys of conns deleted or written whole (see the header); LRU, as only those of
// the upgrade that loads it matter (each upgrade creates it empty). meshd names it to
// the engine (Options::tombstones).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct conn_key);
	__type(value, __u8);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conns_tombstones SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct service_stats);
	__uint(max_entries, 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} service_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_meta_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sock_meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rr_cursor SEC(".maps");

int lb_random(struct bpf_sock_addr *ctx);
int lb_round_robin(struct bpf_sock_addr *ctx);
int lb_weighted(struct bpf_sock_addr *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(max_entries, 8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, int(void *));
} lb_policies SEC(".maps") = {
	.values = {
		[LB_RANDOM] = (void *)&lb_random,
		[LB_ROUND_ROBIN] = (void *)&lb_round_robin,
		[LB_WEIGHTED] = (void *)&lb_weighted,
	},
};

static __always_inline void count_service(__u32 sid)
{
	struct service_stats *s = bpf_map_lookup_elem(&service_stats, &sid);
	if (!s) {
		struct service_stats first = { .connects = 1 };
		if (bpf_map_update_elem(&service_stats, &sid, &first, BPF_NOEXIST) == 0)
			return;
		s = bpf_map_lookup_elem(&service_stats, &sid);
		if (!s)
			return;
	}
	__sync_fetch_and_add(&s->connects, 1);
}

static __always_inline void count_connect(__u32 uid)
{
	struct backend_stats *s = bpf_map_lookup_elem(&backend_conns, &uid);
	if (!s) {
		struct backend_stats first = { .connects = 1 };
		if (bpf_map_update_elem(&backend_conns, &uid, &first, BPF_NOEXIST) == 0)
			return;
		// Another CPU created it meanwhile.
		s = bpf_map_lookup_elem(&backend_conns, &uid);
		if (!s)
			return;
	}
	__sync_fetch_and_add(&s->connects, 1);
}

// The port a connect to `be` goes to: the service's target port, else the backend's
// own. Not inlined, so that struct backend_value reaches the object's BTF through this
// prototype: the backend map declares its value by size only, and its
// handover:value tag names this struct.
static __attribute__((noinline)) __u16 backend_port(const struct backend_value *be,
						    __u16 target_port)
{
	return target_port ? target_port : be->port;
}

// Rewrites the connect to endpoint `index` of the socket's service and priority. The
// daemon may shrink the endpoint list between connect4 and here: an index past the end
// is retried against the current count.
static __always_inline int steer(struct bpf_sock_addr *ctx, struct sock_meta_value *c,
				 __u32 index)
{
	struct endpoint_key ek = { .service_id = c->service_id, .prio = c->prio, .index = index };
	struct endpoint_value *ev = bpf_map_lookup_elem(&endpoint, &ek);
	if (!ev) {
		struct service_value *sv = bpf_map_lookup_elem(&service, &c->service_id);
		if (!sv || c->prio >= PRIO_COUNT)
			return 1;
		__u32 count = sv->endpoint_count[c->prio & (PRIO_COUNT - 1)];
		if (count == 0)
			return 1;
		ek.index = index % count;
		ev = bpf_map_lookup_elem(&endpoint, &ek);
		if (!ev)
			return 1;
	}
	__u32 uid = ev->backend_uid;
	struct backend_value *be = bpf_map_lookup_elem(&backend, &uid);
	if (!be)
		return 1;
	if ((be->flags & BACKEND_F_DRAINING) && c->count > 1) {
		ek.index = (ek.index + 1) % c->count;
		struct endpoint_value *next = bpf_map_lookup_elem(&endpoint, &ek);
		if (next) {
			__u32 other = next->backend_uid;
			struct backend_value *nb = bpf_map_lookup_elem(&backend, &other);
			if (nb && !(nb->flags & BACKEND_F_DRAINING)) {
				uid = other;
				be = nb;
			}
		}
	}
	struct service_value *sv = bpf_map_lookup_elem(&service, &c->service_id);
	ctx->user_ip4 = be->ip;
	ctx->user_port = bpf_htons(backend_port(be, sv ? sv->target_port : 0));
	c->backend_uid = uid;
	count_connect(uid);
	count_service(c->service_id);
	return 1;
}

static __always_inline struct sock_meta_value *current_ctx(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 0;
	return bpf_sk_storage_get(&sock_meta, sk, 0, 0);
}

static __always_inline int pick_random(struct bpf_sock_addr *ctx)
{
	struct sock_meta_value *c = current_ctx(ctx);
	if (!c || c->count == 0)
		return 1;
	return steer(ctx, c, bpf_get_prandom_u32() % c->count);
}

SEC("cgroup/connect4")
int lb_random(struct bpf_sock_addr *ctx)
{
	return pick_random(ctx);
}

SEC("cgroup/connect4")
int lb_round_robin(struct bpf_sock_addr *ctx)
{
	struct sock_meta_value *c = current_ctx(ctx);
	if (!c || c->count == 0)
		return 1;
	__u32 sid = c->service_id;
	__u32 *cursor = bpf_map_lookup_elem(&rr_cursor, &sid);
	if (!cursor) {
		__u32 zero = 0;
		bpf_map_update_elem(&rr_cursor, &sid, &zero, BPF_NOEXIST);
		cursor = bpf_map_lookup_elem(&rr_cursor, &sid);
		if (!cursor)
			return steer(ctx, c, 0);
	}
	__u32 at = __sync_fetch_and_add(cursor, 1);
	return steer(ctx, c, at % c->count);
}

// Weighted random over the level's endpoints (the first MAX_WEIGHTED of them).
#define MAX_WEIGHTED 16

SEC("cgroup/connect4")
int lb_weighted(struct bpf_sock_addr *ctx)
{
	struct sock_meta_value *c = current_ctx(ctx);
	if (!c || c->count == 0)
		return 1;
	__u32 total = 0;
	for (__u32 i = 0; i < MAX_WEIGHTED && i < c->count; i++) {
		struct endpoint_key ek = { .service_id = c->service_id, .prio = c->prio, .index = i };
		struct endpoint_value *ev = bpf_map_lookup_elem(&endpoint, &ek);
		if (!ev)
			break;
		__u32 uid = ev->backend_uid;
		struct backend_value *be = bpf_map_lookup_elem(&backend, &uid);
		if (be)
			total += be->weight;
	}
	if (total == 0)
		return steer(ctx, c, bpf_get_prandom_u32() % c->count);
	__u32 pick = bpf_get_prandom_u32() % total;
	for (__u32 i = 0; i < MAX_WEIGHTED && i < c->count; i++) {
		struct endpoint_key ek = { .service_id = c->service_id, .prio = c->prio, .index = i };
		struct endpoint_value *ev = bpf_map_lookup_elem(&endpoint, &ek);
		if (!ev)
			break;
		__u32 uid = ev->backend_uid;
		struct backend_value *be = bpf_map_lookup_elem(&backend, &uid);
		__u32 w = be ? be->weight : 0;
		if (pick < w)
			return steer(ctx, c, i);
		pick -= w;
	}
	return steer(ctx, c, 0);
}

SEC("cgroup/connect4")
int mesh_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return 1;
	struct frontend_key fk = {
		.vip = ctx->user_ip4,
		.port = bpf_ntohs(ctx->user_port),
		.protocol = IPPROTO_TCP,
	};
	struct frontend_value *fv = bpf_map_lookup_elem(&frontend, &fk);
	if (!fv)
		return 1;
	__u32 sid = fv->upstream_id;
	struct service_value *sv = bpf_map_lookup_elem(&service, &sid);
	if (!sv)
		return 1;
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct sock_meta_value *c =
		bpf_sk_storage_get(&sock_meta, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!c)
		return 1;
	c->service_id = sid;
	c->vip = fk.vip;
	c->vport = fk.port;
	c->backend_uid = 0;
	c->count = 0;
	for (__u32 p = 0; p < PRIO_COUNT; p++) {
		if (sv->endpoint_count[p]) {
			c->prio = p;
			c->count = sv->endpoint_count[p];
			break;
		}
	}
	if (c->count == 0)
		return 1;
	bpf_tail_call(ctx, &lb_policies, sv->lb_policy);
	// No program for that policy: random.
	return pick_random(ctx);
}

static __always_inline void conn_key_of(struct bpf_sock_ops *skops, struct conn_key *k)
{
	k->src_ip = skops->local_ip4;
	k->dst_ip = skops->remote_ip4;
	k->src_port = skops->local_port;
	k->dst_port = bpf_ntohl(skops->remote_port);
}

SEC("sockops")
int mesh_sockops(struct bpf_sock_ops *skops)
{
	if (skops->family != 2 /* AF_INET */)
		return 1;
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		struct bpf_sock *sk = skops->sk;
		if (!sk)
			return 1;
		struct sock_meta_value *c = bpf_sk_storage_get(&sock_meta, sk, 0, 0);
		if (!c || c->backend_uid == 0)
			return 1;
		struct conn_key k = {};
		conn_key_of(skops, &k);
		struct conn_value v = {
			.vip = c->vip,
			.vport = c->vport,
			.backend_uid = c->backend_uid,
			.service_id = c->service_id,
			.established_ns = bpf_ktime_get_ns(),
		};
		__u8 one = 1;

		// A whole-entry write: the tombstone first, as for a delete.
		bpf_map_update_elem(&conns_tombstones, &k, &one, BPF_ANY);
		bpf_map_update_elem(&conns, &k, &v, BPF_ANY);
		bpf_sk_storage_delete(&sock_meta, sk);
		// Ask for state changes of this socket, to see it close.
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
							 BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	}
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == MESH_TCP_CLOSE) {
			struct conn_key k = {};
			conn_key_of(skops, &k);
			__u8 one = 1;
			// The tombstone first: the reconcile must never see the entry
			// gone without it.
			bpf_map_update_elem(&conns_tombstones, &k, &one, BPF_ANY);
			bpf_map_delete_elem(&conns, &k);
		}
		break;
	}
	return 1;
}
