//! Kernel enumerations of `include/uapi/linux/bpf.h` as Rust enums.
//!
//! Each enum converts from the raw `u32` the kernel uses with `TryFrom<u32>` and back
//! with `From<Enum> for u32`. [`name`](MapType::name) gives the kernel's enumerator
//! without its prefix, in lower case (`BPF_MAP_TYPE_LRU_HASH` is `lru_hash`), which is
//! also what `FromStr` accepts and `Display` prints.

use std::fmt;
use std::str::FromStr;

/// A raw value that names no variant of a kernel enumeration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{value} is not a known {kind}")]
pub struct UnknownValue {
    /// Which enumeration was being converted (`map type`, `program type`, ...).
    pub kind: &'static str,
    /// The raw value.
    pub value: u32,
}

/// A name that names no variant of a kernel enumeration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a known {kind}")]
pub struct UnknownName {
    /// Which enumeration was being parsed.
    pub kind: &'static str,
    /// The name given.
    pub name: String,
}

macro_rules! kernel_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $ty:ident : $kind:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $name:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        #[repr(u32)]
        $vis enum $ty {
            $( $(#[$vmeta])* #[doc = concat!("`", $name, "` (", stringify!($value), ")")] $variant = $value, )*
        }

        impl $ty {
            /// Every variant, in the kernel's order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            /// The kernel's enumerator name without its prefix, in lower case.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self { $($ty::$variant => $name,)* }
            }
        }

        impl TryFrom<u32> for $ty {
            type Error = UnknownValue;
            fn try_from(value: u32) -> Result<Self, UnknownValue> {
                match value {
                    $($value => Ok($ty::$variant),)*
                    _ => Err(UnknownValue { kind: $kind, value }),
                }
            }
        }

        impl From<$ty> for u32 {
            fn from(value: $ty) -> u32 {
                value as u32
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                name.parse().map_err(serde::de::Error::custom)
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($name => Ok($ty::$variant),)*
                    _ => Err(UnknownName { kind: $kind, name: s.to_owned() }),
                }
            }
        }
    };
}

kernel_enum! {
    /// `enum bpf_map_type`.
    pub enum MapType: "map type" {
        Unspec = 0 => "unspec",
        Hash = 1 => "hash",
        Array = 2 => "array",
        ProgArray = 3 => "prog_array",
        PerfEventArray = 4 => "perf_event_array",
        PercpuHash = 5 => "percpu_hash",
        PercpuArray = 6 => "percpu_array",
        StackTrace = 7 => "stack_trace",
        CgroupArray = 8 => "cgroup_array",
        LruHash = 9 => "lru_hash",
        LruPercpuHash = 10 => "lru_percpu_hash",
        LpmTrie = 11 => "lpm_trie",
        ArrayOfMaps = 12 => "array_of_maps",
        HashOfMaps = 13 => "hash_of_maps",
        Devmap = 14 => "devmap",
        Sockmap = 15 => "sockmap",
        Cpumap = 16 => "cpumap",
        Xskmap = 17 => "xskmap",
        Sockhash = 18 => "sockhash",
        CgroupStorage = 19 => "cgroup_storage",
        ReuseportSockarray = 20 => "reuseport_sockarray",
        PercpuCgroupStorage = 21 => "percpu_cgroup_storage",
        Queue = 22 => "queue",
        Stack = 23 => "stack",
        SkStorage = 24 => "sk_storage",
        DevmapHash = 25 => "devmap_hash",
        StructOps = 26 => "struct_ops",
        Ringbuf = 27 => "ringbuf",
        InodeStorage = 28 => "inode_storage",
        TaskStorage = 29 => "task_storage",
        BloomFilter = 30 => "bloom_filter",
        UserRingbuf = 31 => "user_ringbuf",
        CgrpStorage = 32 => "cgrp_storage",
        Arena = 33 => "arena",
    }
}

impl MapType {
    /// Whether a value of this map holds one slot per possible CPU in user space.
    #[must_use]
    pub const fn is_per_cpu(self) -> bool {
        matches!(
            self,
            MapType::PercpuHash
                | MapType::PercpuArray
                | MapType::LruPercpuHash
                | MapType::PercpuCgroupStorage
        )
    }

    /// Whether user space writes each value of this map as the file descriptor of
    /// another kernel object (a program, map, perf event, cgroup or socket).
    ///
    /// What a lookup from user space returns then depends on the type: the object's id
    /// for `prog_array` and the map-in-map types, a socket cookie for `sockmap`,
    /// `sockhash` and `reuseport_sockarray`, and an error for the others. `devmap`,
    /// `devmap_hash` and `cpumap` are not among them: their values are an ifindex or a
    /// queue size, which user space writes and reads as it is.
    #[must_use]
    pub const fn holds_fds(self) -> bool {
        matches!(
            self,
            MapType::ProgArray
                | MapType::PerfEventArray
                | MapType::CgroupArray
                | MapType::ArrayOfMaps
                | MapType::HashOfMaps
                | MapType::Sockmap
                | MapType::Sockhash
                | MapType::ReuseportSockarray
                | MapType::Xskmap
        )
    }
}

kernel_enum! {
    /// `enum bpf_prog_type`.
    pub enum ProgramType: "program type" {
        Unspec = 0 => "unspec",
        SocketFilter = 1 => "socket_filter",
        Kprobe = 2 => "kprobe",
        SchedCls = 3 => "sched_cls",
        SchedAct = 4 => "sched_act",
        Tracepoint = 5 => "tracepoint",
        Xdp = 6 => "xdp",
        PerfEvent = 7 => "perf_event",
        CgroupSkb = 8 => "cgroup_skb",
        CgroupSock = 9 => "cgroup_sock",
        LwtIn = 10 => "lwt_in",
        LwtOut = 11 => "lwt_out",
        LwtXmit = 12 => "lwt_xmit",
        SockOps = 13 => "sock_ops",
        SkSkb = 14 => "sk_skb",
        CgroupDevice = 15 => "cgroup_device",
        SkMsg = 16 => "sk_msg",
        RawTracepoint = 17 => "raw_tracepoint",
        CgroupSockAddr = 18 => "cgroup_sock_addr",
        LwtSeg6local = 19 => "lwt_seg6local",
        LircMode2 = 20 => "lirc_mode2",
        SkReuseport = 21 => "sk_reuseport",
        FlowDissector = 22 => "flow_dissector",
        CgroupSysctl = 23 => "cgroup_sysctl",
        RawTracepointWritable = 24 => "raw_tracepoint_writable",
        CgroupSockopt = 25 => "cgroup_sockopt",
        Tracing = 26 => "tracing",
        StructOps = 27 => "struct_ops",
        Ext = 28 => "ext",
        Lsm = 29 => "lsm",
        SkLookup = 30 => "sk_lookup",
        Syscall = 31 => "syscall",
        Netfilter = 32 => "netfilter",
    }
}

kernel_enum! {
    /// `enum bpf_attach_type`.
    pub enum AttachType: "attach type" {
        CgroupInetIngress = 0 => "cgroup_inet_ingress",
        CgroupInetEgress = 1 => "cgroup_inet_egress",
        CgroupInetSockCreate = 2 => "cgroup_inet_sock_create",
        CgroupSockOps = 3 => "cgroup_sock_ops",
        SkSkbStreamParser = 4 => "sk_skb_stream_parser",
        SkSkbStreamVerdict = 5 => "sk_skb_stream_verdict",
        CgroupDevice = 6 => "cgroup_device",
        SkMsgVerdict = 7 => "sk_msg_verdict",
        CgroupInet4Bind = 8 => "cgroup_inet4_bind",
        CgroupInet6Bind = 9 => "cgroup_inet6_bind",
        CgroupInet4Connect = 10 => "cgroup_inet4_connect",
        CgroupInet6Connect = 11 => "cgroup_inet6_connect",
        CgroupInet4PostBind = 12 => "cgroup_inet4_post_bind",
        CgroupInet6PostBind = 13 => "cgroup_inet6_post_bind",
        CgroupUdp4Sendmsg = 14 => "cgroup_udp4_sendmsg",
        CgroupUdp6Sendmsg = 15 => "cgroup_udp6_sendmsg",
        LircMode2 = 16 => "lirc_mode2",
        FlowDissector = 17 => "flow_dissector",
        CgroupSysctl = 18 => "cgroup_sysctl",
        CgroupUdp4Recvmsg = 19 => "cgroup_udp4_recvmsg",
        CgroupUdp6Recvmsg = 20 => "cgroup_udp6_recvmsg",
        CgroupGetsockopt = 21 => "cgroup_getsockopt",
        CgroupSetsockopt = 22 => "cgroup_setsockopt",
        TraceRawTp = 23 => "trace_raw_tp",
        TraceFentry = 24 => "trace_fentry",
        TraceFexit = 25 => "trace_fexit",
        ModifyReturn = 26 => "modify_return",
        LsmMac = 27 => "lsm_mac",
        TraceIter = 28 => "trace_iter",
        CgroupInet4Getpeername = 29 => "cgroup_inet4_getpeername",
        CgroupInet6Getpeername = 30 => "cgroup_inet6_getpeername",
        CgroupInet4Getsockname = 31 => "cgroup_inet4_getsockname",
        CgroupInet6Getsockname = 32 => "cgroup_inet6_getsockname",
        XdpDevmap = 33 => "xdp_devmap",
        CgroupInetSockRelease = 34 => "cgroup_inet_sock_release",
        XdpCpumap = 35 => "xdp_cpumap",
        SkLookup = 36 => "sk_lookup",
        Xdp = 37 => "xdp",
        SkSkbVerdict = 38 => "sk_skb_verdict",
        SkReuseportSelect = 39 => "sk_reuseport_select",
        SkReuseportSelectOrMigrate = 40 => "sk_reuseport_select_or_migrate",
        PerfEvent = 41 => "perf_event",
        TraceKprobeMulti = 42 => "trace_kprobe_multi",
        LsmCgroup = 43 => "lsm_cgroup",
        StructOps = 44 => "struct_ops",
        Netfilter = 45 => "netfilter",
        TcxIngress = 46 => "tcx_ingress",
        TcxEgress = 47 => "tcx_egress",
        TraceUprobeMulti = 48 => "trace_uprobe_multi",
        CgroupUnixConnect = 49 => "cgroup_unix_connect",
        CgroupUnixSendmsg = 50 => "cgroup_unix_sendmsg",
        CgroupUnixRecvmsg = 51 => "cgroup_unix_recvmsg",
        CgroupUnixGetpeername = 52 => "cgroup_unix_getpeername",
        CgroupUnixGetsockname = 53 => "cgroup_unix_getsockname",
        NetkitPrimary = 54 => "netkit_primary",
        NetkitPeer = 55 => "netkit_peer",
        TraceKprobeSession = 56 => "trace_kprobe_session",
        TraceUprobeSession = 57 => "trace_uprobe_session",
    }
}

kernel_enum! {
    /// `enum bpf_link_type`.
    pub enum LinkType: "link type" {
        Unspec = 0 => "unspec",
        RawTracepoint = 1 => "raw_tracepoint",
        Tracing = 2 => "tracing",
        Cgroup = 3 => "cgroup",
        Iter = 4 => "iter",
        Netns = 5 => "netns",
        Xdp = 6 => "xdp",
        PerfEvent = 7 => "perf_event",
        KprobeMulti = 8 => "kprobe_multi",
        StructOps = 9 => "struct_ops",
        Netfilter = 10 => "netfilter",
        Tcx = 11 => "tcx",
        UprobeMulti = 12 => "uprobe_multi",
        Netkit = 13 => "netkit",
        Sockmap = 14 => "sockmap",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_and_try_from() {
        for &t in MapType::ALL {
            assert_eq!(t.name().parse::<MapType>(), Ok(t));
            assert_eq!(MapType::try_from(u32::from(t)), Ok(t));
        }
        for &t in ProgramType::ALL {
            assert_eq!(t.name().parse::<ProgramType>(), Ok(t));
            assert_eq!(ProgramType::try_from(u32::from(t)), Ok(t));
        }
        for &t in AttachType::ALL {
            assert_eq!(t.name().parse::<AttachType>(), Ok(t));
            assert_eq!(AttachType::try_from(u32::from(t)), Ok(t));
        }
        for &t in LinkType::ALL {
            assert_eq!(LinkType::try_from(u32::from(t)), Ok(t));
        }
    }

    #[test]
    fn values_match_the_uapi_enumerators() {
        assert_eq!(u32::from(MapType::LruHash), 9);
        assert_eq!(u32::from(MapType::Ringbuf), 27);
        assert_eq!(u32::from(ProgramType::CgroupSockAddr), 18);
        assert_eq!(u32::from(AttachType::CgroupInet4Connect), 10);
        assert_eq!(u32::from(AttachType::TcxIngress), 46);
        assert_eq!(MapType::ALL.len(), 34);
        assert_eq!(AttachType::ALL.len(), 58);
    }

    #[test]
    fn device_and_cpu_maps_hold_plain_values_not_descriptors() {
        for t in [MapType::Devmap, MapType::DevmapHash, MapType::Cpumap] {
            assert!(!t.holds_fds(), "{t}");
        }
        for t in [MapType::ProgArray, MapType::HashOfMaps, MapType::Sockhash] {
            assert!(t.holds_fds(), "{t}");
        }
    }

    #[test]
    fn serde_uses_the_kernel_names() {
        let json = serde_json::to_string(&MapType::LruHash).unwrap();
        assert_eq!(json, "\"lru_hash\"");
        assert_eq!(
            serde_json::from_str::<MapType>(&json).unwrap(),
            MapType::LruHash
        );
        let err = serde_json::from_str::<MapType>("\"lru-hash\"").unwrap_err();
        assert!(err.to_string().contains("not a known map type"), "{err}");
    }

    #[test]
    fn unknown_values_and_names_are_errors() {
        assert_eq!(
            MapType::try_from(9999),
            Err(UnknownValue {
                kind: "map type",
                value: 9999
            })
        );
        assert!("BPF_MAP_TYPE_HASH".parse::<MapType>().is_err());
        assert_eq!("cgroup_sock_addr".parse(), Ok(ProgramType::CgroupSockAddr));
    }
}
