//! Raw kernel numbers for map, program and attach types, with their kernel names.
//!
//! The values are those of `enum bpf_map_type`, `enum bpf_prog_type` and
//! `enum bpf_attach_type` in `include/uapi/linux/bpf.h`; names are the enumerator without
//! its prefix, in lower case.

/// `enum bpf_map_type` names, indexed by value.
const MAP_TYPES: &[&str] = &[
    "unspec",
    "hash",
    "array",
    "prog_array",
    "perf_event_array",
    "percpu_hash",
    "percpu_array",
    "stack_trace",
    "cgroup_array",
    "lru_hash",
    "lru_percpu_hash",
    "lpm_trie",
    "array_of_maps",
    "hash_of_maps",
    "devmap",
    "sockmap",
    "cpumap",
    "xskmap",
    "sockhash",
    "cgroup_storage",
    "reuseport_sockarray",
    "percpu_cgroup_storage",
    "queue",
    "stack",
    "sk_storage",
    "devmap_hash",
    "struct_ops",
    "ringbuf",
    "inode_storage",
    "task_storage",
    "bloom_filter",
    "user_ringbuf",
    "cgrp_storage",
    "arena",
];

/// `enum bpf_prog_type` names, indexed by value.
const PROG_TYPES: &[&str] = &[
    "unspec",
    "socket_filter",
    "kprobe",
    "sched_cls",
    "sched_act",
    "tracepoint",
    "xdp",
    "perf_event",
    "cgroup_skb",
    "cgroup_sock",
    "lwt_in",
    "lwt_out",
    "lwt_xmit",
    "sock_ops",
    "sk_skb",
    "cgroup_device",
    "sk_msg",
    "raw_tracepoint",
    "cgroup_sock_addr",
    "lwt_seg6local",
    "lirc_mode2",
    "sk_reuseport",
    "flow_dissector",
    "cgroup_sysctl",
    "raw_tracepoint_writable",
    "cgroup_sockopt",
    "tracing",
    "struct_ops",
    "ext",
    "lsm",
    "sk_lookup",
    "syscall",
    "netfilter",
];

/// `enum bpf_attach_type` names, indexed by value.
const ATTACH_TYPES: &[&str] = &[
    "cgroup_inet_ingress",
    "cgroup_inet_egress",
    "cgroup_inet_sock_create",
    "cgroup_sock_ops",
    "sk_skb_stream_parser",
    "sk_skb_stream_verdict",
    "cgroup_device",
    "sk_msg_verdict",
    "cgroup_inet4_bind",
    "cgroup_inet6_bind",
    "cgroup_inet4_connect",
    "cgroup_inet6_connect",
    "cgroup_inet4_post_bind",
    "cgroup_inet6_post_bind",
    "cgroup_udp4_sendmsg",
    "cgroup_udp6_sendmsg",
    "lirc_mode2",
    "flow_dissector",
    "cgroup_sysctl",
    "cgroup_udp4_recvmsg",
    "cgroup_udp6_recvmsg",
    "cgroup_getsockopt",
    "cgroup_setsockopt",
    "trace_raw_tp",
    "trace_fentry",
    "trace_fexit",
    "modify_return",
    "lsm_mac",
    "trace_iter",
    "cgroup_inet4_getpeername",
    "cgroup_inet6_getpeername",
    "cgroup_inet4_getsockname",
    "cgroup_inet6_getsockname",
    "xdp_devmap",
    "cgroup_inet_sock_release",
    "xdp_cpumap",
    "sk_lookup",
    "xdp",
    "sk_skb_verdict",
    "sk_reuseport_select",
    "sk_reuseport_select_or_migrate",
    "perf_event",
    "trace_kprobe_multi",
    "lsm_cgroup",
    "struct_ops",
    "netfilter",
    "tcx_ingress",
    "tcx_egress",
    "trace_uprobe_multi",
    "cgroup_unix_connect",
    "cgroup_unix_sendmsg",
    "cgroup_unix_recvmsg",
    "cgroup_unix_getpeername",
    "cgroup_unix_getsockname",
    "netkit_primary",
    "netkit_peer",
    "trace_kprobe_session",
    "trace_uprobe_session",
];

fn lookup(table: &[&'static str], value: u32) -> Option<&'static str> {
    table.get(usize::try_from(value).ok()?).copied()
}

/// Kernel name of a map type (`hash`, `lru_hash`, ...), or `None` if unknown.
pub(crate) fn map_type_name(value: u32) -> Option<&'static str> {
    lookup(MAP_TYPES, value)
}

/// Kernel name of a program type (`xdp`, `sched_cls`, ...), or `None` if unknown.
pub(crate) fn prog_type_name(value: u32) -> Option<&'static str> {
    lookup(PROG_TYPES, value)
}

/// Kernel name of an attach type (`cgroup_inet4_connect`, ...), or `None` if unknown.
pub(crate) fn attach_type_name(value: u32) -> Option<&'static str> {
    lookup(ATTACH_TYPES, value)
}

pub(crate) mod map {
    pub(crate) const ARRAY: u32 = 2;
    pub(crate) const PROG_ARRAY: u32 = 3;
    pub(crate) const ARRAY_OF_MAPS: u32 = 12;
    pub(crate) const HASH_OF_MAPS: u32 = 13;
}

pub(crate) mod prog {
    pub(crate) const SOCKET_FILTER: u32 = 1;
    pub(crate) const KPROBE: u32 = 2;
    pub(crate) const SCHED_CLS: u32 = 3;
    pub(crate) const SCHED_ACT: u32 = 4;
    pub(crate) const TRACEPOINT: u32 = 5;
    pub(crate) const XDP: u32 = 6;
    pub(crate) const PERF_EVENT: u32 = 7;
    pub(crate) const CGROUP_SKB: u32 = 8;
    pub(crate) const CGROUP_SOCK: u32 = 9;
    pub(crate) const LWT_IN: u32 = 10;
    pub(crate) const LWT_OUT: u32 = 11;
    pub(crate) const LWT_XMIT: u32 = 12;
    pub(crate) const SOCK_OPS: u32 = 13;
    pub(crate) const SK_SKB: u32 = 14;
    pub(crate) const CGROUP_DEVICE: u32 = 15;
    pub(crate) const SK_MSG: u32 = 16;
    pub(crate) const RAW_TRACEPOINT: u32 = 17;
    pub(crate) const CGROUP_SOCK_ADDR: u32 = 18;
    pub(crate) const LWT_SEG6LOCAL: u32 = 19;
    pub(crate) const LIRC_MODE2: u32 = 20;
    pub(crate) const SK_REUSEPORT: u32 = 21;
    pub(crate) const FLOW_DISSECTOR: u32 = 22;
    pub(crate) const CGROUP_SYSCTL: u32 = 23;
    pub(crate) const RAW_TRACEPOINT_WRITABLE: u32 = 24;
    pub(crate) const CGROUP_SOCKOPT: u32 = 25;
    pub(crate) const TRACING: u32 = 26;
    pub(crate) const STRUCT_OPS: u32 = 27;
    pub(crate) const EXT: u32 = 28;
    pub(crate) const LSM: u32 = 29;
    pub(crate) const SK_LOOKUP: u32 = 30;
    pub(crate) const SYSCALL: u32 = 31;
    pub(crate) const NETFILTER: u32 = 32;
}

pub(crate) mod attach {
    pub(crate) const CGROUP_INET_INGRESS: u32 = 0;
    pub(crate) const CGROUP_INET_EGRESS: u32 = 1;
    pub(crate) const CGROUP_INET_SOCK_CREATE: u32 = 2;
    pub(crate) const CGROUP_SOCK_OPS: u32 = 3;
    pub(crate) const SK_SKB_STREAM_PARSER: u32 = 4;
    pub(crate) const SK_SKB_STREAM_VERDICT: u32 = 5;
    pub(crate) const CGROUP_DEVICE: u32 = 6;
    pub(crate) const SK_MSG_VERDICT: u32 = 7;
    pub(crate) const CGROUP_INET4_BIND: u32 = 8;
    pub(crate) const CGROUP_INET6_BIND: u32 = 9;
    pub(crate) const CGROUP_INET4_CONNECT: u32 = 10;
    pub(crate) const CGROUP_INET6_CONNECT: u32 = 11;
    pub(crate) const CGROUP_INET4_POST_BIND: u32 = 12;
    pub(crate) const CGROUP_INET6_POST_BIND: u32 = 13;
    pub(crate) const CGROUP_UDP4_SENDMSG: u32 = 14;
    pub(crate) const CGROUP_UDP6_SENDMSG: u32 = 15;
    pub(crate) const LIRC_MODE2: u32 = 16;
    pub(crate) const FLOW_DISSECTOR: u32 = 17;
    pub(crate) const CGROUP_SYSCTL: u32 = 18;
    pub(crate) const CGROUP_UDP4_RECVMSG: u32 = 19;
    pub(crate) const CGROUP_UDP6_RECVMSG: u32 = 20;
    pub(crate) const CGROUP_GETSOCKOPT: u32 = 21;
    pub(crate) const CGROUP_SETSOCKOPT: u32 = 22;
    pub(crate) const TRACE_RAW_TP: u32 = 23;
    pub(crate) const TRACE_FENTRY: u32 = 24;
    pub(crate) const TRACE_FEXIT: u32 = 25;
    pub(crate) const MODIFY_RETURN: u32 = 26;
    pub(crate) const LSM_MAC: u32 = 27;
    pub(crate) const TRACE_ITER: u32 = 28;
    pub(crate) const CGROUP_INET4_GETPEERNAME: u32 = 29;
    pub(crate) const CGROUP_INET6_GETPEERNAME: u32 = 30;
    pub(crate) const CGROUP_INET4_GETSOCKNAME: u32 = 31;
    pub(crate) const CGROUP_INET6_GETSOCKNAME: u32 = 32;
    pub(crate) const XDP_DEVMAP: u32 = 33;
    pub(crate) const CGROUP_INET_SOCK_RELEASE: u32 = 34;
    pub(crate) const XDP_CPUMAP: u32 = 35;
    pub(crate) const SK_LOOKUP: u32 = 36;
    pub(crate) const XDP: u32 = 37;
    pub(crate) const SK_SKB_VERDICT: u32 = 38;
    pub(crate) const SK_REUSEPORT_SELECT: u32 = 39;
    pub(crate) const SK_REUSEPORT_SELECT_OR_MIGRATE: u32 = 40;
    pub(crate) const TRACE_KPROBE_MULTI: u32 = 42;
    pub(crate) const LSM_CGROUP: u32 = 43;
    pub(crate) const NETFILTER: u32 = 45;
    pub(crate) const TCX_INGRESS: u32 = 46;
    pub(crate) const TCX_EGRESS: u32 = 47;
    pub(crate) const TRACE_UPROBE_MULTI: u32 = 48;
    pub(crate) const CGROUP_UNIX_CONNECT: u32 = 49;
    pub(crate) const CGROUP_UNIX_SENDMSG: u32 = 50;
    pub(crate) const CGROUP_UNIX_RECVMSG: u32 = 51;
    pub(crate) const CGROUP_UNIX_GETPEERNAME: u32 = 52;
    pub(crate) const CGROUP_UNIX_GETSOCKNAME: u32 = 53;
    pub(crate) const NETKIT_PRIMARY: u32 = 54;
    pub(crate) const NETKIT_PEER: u32 = 55;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_uapi_values() {
        assert_eq!(map_type_name(map::ARRAY), Some("array"));
        assert_eq!(map_type_name(map::HASH_OF_MAPS), Some("hash_of_maps"));
        assert_eq!(map_type_name(27), Some("ringbuf"));
        assert_eq!(map_type_name(18), Some("sockhash"));
        assert_eq!(prog_type_name(prog::NETFILTER), Some("netfilter"));
        assert_eq!(prog_type_name(prog::SK_LOOKUP), Some("sk_lookup"));
        assert_eq!(attach_type_name(attach::XDP), Some("xdp"));
        assert_eq!(attach_type_name(attach::NETKIT_PEER), Some("netkit_peer"));
        assert_eq!(attach_type_name(attach::TCX_EGRESS), Some("tcx_egress"));
        assert_eq!(map_type_name(1000), None);
    }
}
