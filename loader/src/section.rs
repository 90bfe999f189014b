//! Program type and expected attach type from a program's ELF section name, following
//! libbpf's section naming (`SEC("xdp")`, `SEC("kprobe/do_sys_open")`, ...).

use handover_uapi::{AttachType, ProgramType};

/// How a section-name pattern matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Match {
    /// The section name equals the pattern.
    Exact,
    /// The section name equals the pattern or starts with `pattern/`.
    ExactOrSlash,
}

/// What a section name says about the programs in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SectionKind {
    pub(crate) prog_type: ProgramType,
    pub(crate) attach_type: Option<AttachType>,
    /// Programs in sections like `fentry/FN` need a BTF attach target named after the slash.
    pub(crate) needs_btf_target: bool,
    pub(crate) sleepable: bool,
    pub(crate) xdp_frags: bool,
}

struct Def {
    pattern: &'static str,
    how: Match,
    prog_type: ProgramType,
    attach_type: Option<AttachType>,
    flags: u8,
}

const BTF_TARGET: u8 = 1;
const SLEEPABLE: u8 = 2;
const FRAGS: u8 = 4;

const fn def(
    pattern: &'static str,
    how: Match,
    prog_type: ProgramType,
    attach_type: Option<AttachType>,
    flags: u8,
) -> Def {
    Def {
        pattern,
        how,
        prog_type,
        attach_type,
        flags,
    }
}

use Match::{Exact as E, ExactOrSlash as S};

/// The table, in libbpf's order: the first match wins, so longer names come before their
/// prefixes (`sk_skb/stream_parser` before `sk_skb`, `xdp.frags` before `xdp`).
const DEFS: &[Def] = &[
    def("socket", E, ProgramType::SocketFilter, None, 0),
    def(
        "sk_reuseport/migrate",
        E,
        ProgramType::SkReuseport,
        Some(AttachType::SkReuseportSelectOrMigrate),
        0,
    ),
    def(
        "sk_reuseport",
        E,
        ProgramType::SkReuseport,
        Some(AttachType::SkReuseportSelect),
        0,
    ),
    def("kprobe", S, ProgramType::Kprobe, None, 0),
    def("uprobe", S, ProgramType::Kprobe, None, 0),
    def("uprobe.s", S, ProgramType::Kprobe, None, SLEEPABLE),
    def("kretprobe", S, ProgramType::Kprobe, None, 0),
    def("uretprobe", S, ProgramType::Kprobe, None, 0),
    def("uretprobe.s", S, ProgramType::Kprobe, None, SLEEPABLE),
    def(
        "kprobe.multi",
        S,
        ProgramType::Kprobe,
        Some(AttachType::TraceKprobeMulti),
        0,
    ),
    def(
        "kretprobe.multi",
        S,
        ProgramType::Kprobe,
        Some(AttachType::TraceKprobeMulti),
        0,
    ),
    def(
        "uprobe.multi",
        S,
        ProgramType::Kprobe,
        Some(AttachType::TraceUprobeMulti),
        0,
    ),
    def(
        "uretprobe.multi",
        S,
        ProgramType::Kprobe,
        Some(AttachType::TraceUprobeMulti),
        0,
    ),
    def(
        "uprobe.multi.s",
        S,
        ProgramType::Kprobe,
        Some(AttachType::TraceUprobeMulti),
        SLEEPABLE,
    ),
    def(
        "uretprobe.multi.s",
        S,
        ProgramType::Kprobe,
        Some(AttachType::TraceUprobeMulti),
        SLEEPABLE,
    ),
    def("ksyscall", S, ProgramType::Kprobe, None, 0),
    def("kretsyscall", S, ProgramType::Kprobe, None, 0),
    def("usdt", S, ProgramType::Kprobe, None, 0),
    def("usdt.s", S, ProgramType::Kprobe, None, SLEEPABLE),
    def(
        "tc/ingress",
        E,
        ProgramType::SchedCls,
        Some(AttachType::TcxIngress),
        0,
    ),
    def(
        "tc/egress",
        E,
        ProgramType::SchedCls,
        Some(AttachType::TcxEgress),
        0,
    ),
    def(
        "tcx/ingress",
        E,
        ProgramType::SchedCls,
        Some(AttachType::TcxIngress),
        0,
    ),
    def(
        "tcx/egress",
        E,
        ProgramType::SchedCls,
        Some(AttachType::TcxEgress),
        0,
    ),
    def("tc", E, ProgramType::SchedCls, None, 0),
    def("classifier", E, ProgramType::SchedCls, None, 0),
    def("action", E, ProgramType::SchedAct, None, 0),
    def(
        "netkit/primary",
        E,
        ProgramType::SchedCls,
        Some(AttachType::NetkitPrimary),
        0,
    ),
    def(
        "netkit/peer",
        E,
        ProgramType::SchedCls,
        Some(AttachType::NetkitPeer),
        0,
    ),
    def("tracepoint", S, ProgramType::Tracepoint, None, 0),
    def("tp", S, ProgramType::Tracepoint, None, 0),
    def("raw_tracepoint", S, ProgramType::RawTracepoint, None, 0),
    def("raw_tp", S, ProgramType::RawTracepoint, None, 0),
    def(
        "raw_tracepoint.w",
        S,
        ProgramType::RawTracepointWritable,
        None,
        0,
    ),
    def("raw_tp.w", S, ProgramType::RawTracepointWritable, None, 0),
    def(
        "tp_btf",
        S,
        ProgramType::Tracing,
        Some(AttachType::TraceRawTp),
        BTF_TARGET,
    ),
    def(
        "fentry",
        S,
        ProgramType::Tracing,
        Some(AttachType::TraceFentry),
        BTF_TARGET,
    ),
    def(
        "fmod_ret",
        S,
        ProgramType::Tracing,
        Some(AttachType::ModifyReturn),
        BTF_TARGET,
    ),
    def(
        "fexit",
        S,
        ProgramType::Tracing,
        Some(AttachType::TraceFexit),
        BTF_TARGET,
    ),
    def(
        "fentry.s",
        S,
        ProgramType::Tracing,
        Some(AttachType::TraceFentry),
        BTF_TARGET | SLEEPABLE,
    ),
    def(
        "fmod_ret.s",
        S,
        ProgramType::Tracing,
        Some(AttachType::ModifyReturn),
        BTF_TARGET | SLEEPABLE,
    ),
    def(
        "fexit.s",
        S,
        ProgramType::Tracing,
        Some(AttachType::TraceFexit),
        BTF_TARGET | SLEEPABLE,
    ),
    def("freplace", S, ProgramType::Ext, None, BTF_TARGET),
    def(
        "lsm",
        S,
        ProgramType::Lsm,
        Some(AttachType::LsmMac),
        BTF_TARGET,
    ),
    def(
        "lsm.s",
        S,
        ProgramType::Lsm,
        Some(AttachType::LsmMac),
        BTF_TARGET | SLEEPABLE,
    ),
    def(
        "lsm_cgroup",
        S,
        ProgramType::Lsm,
        Some(AttachType::LsmCgroup),
        BTF_TARGET,
    ),
    def(
        "iter",
        S,
        ProgramType::Tracing,
        Some(AttachType::TraceIter),
        BTF_TARGET,
    ),
    def(
        "iter.s",
        S,
        ProgramType::Tracing,
        Some(AttachType::TraceIter),
        BTF_TARGET | SLEEPABLE,
    ),
    def("syscall", E, ProgramType::Syscall, None, SLEEPABLE),
    def(
        "xdp.frags/devmap",
        E,
        ProgramType::Xdp,
        Some(AttachType::XdpDevmap),
        FRAGS,
    ),
    def(
        "xdp/devmap",
        E,
        ProgramType::Xdp,
        Some(AttachType::XdpDevmap),
        0,
    ),
    def(
        "xdp.frags/cpumap",
        E,
        ProgramType::Xdp,
        Some(AttachType::XdpCpumap),
        FRAGS,
    ),
    def(
        "xdp/cpumap",
        E,
        ProgramType::Xdp,
        Some(AttachType::XdpCpumap),
        0,
    ),
    def(
        "xdp.frags",
        E,
        ProgramType::Xdp,
        Some(AttachType::Xdp),
        FRAGS,
    ),
    def("xdp", E, ProgramType::Xdp, Some(AttachType::Xdp), 0),
    def("perf_event", E, ProgramType::PerfEvent, None, 0),
    def("lwt_in", E, ProgramType::LwtIn, None, 0),
    def("lwt_out", E, ProgramType::LwtOut, None, 0),
    def("lwt_xmit", E, ProgramType::LwtXmit, None, 0),
    def("lwt_seg6local", E, ProgramType::LwtSeg6local, None, 0),
    def(
        "sockops",
        E,
        ProgramType::SockOps,
        Some(AttachType::CgroupSockOps),
        0,
    ),
    def(
        "sk_skb/stream_parser",
        E,
        ProgramType::SkSkb,
        Some(AttachType::SkSkbStreamParser),
        0,
    ),
    def(
        "sk_skb/stream_verdict",
        E,
        ProgramType::SkSkb,
        Some(AttachType::SkSkbStreamVerdict),
        0,
    ),
    def(
        "sk_skb/verdict",
        E,
        ProgramType::SkSkb,
        Some(AttachType::SkSkbVerdict),
        0,
    ),
    def("sk_skb", E, ProgramType::SkSkb, None, 0),
    def(
        "sk_msg",
        E,
        ProgramType::SkMsg,
        Some(AttachType::SkMsgVerdict),
        0,
    ),
    def(
        "lirc_mode2",
        E,
        ProgramType::LircMode2,
        Some(AttachType::LircMode2),
        0,
    ),
    def(
        "flow_dissector",
        E,
        ProgramType::FlowDissector,
        Some(AttachType::FlowDissector),
        0,
    ),
    def(
        "cgroup_skb/ingress",
        E,
        ProgramType::CgroupSkb,
        Some(AttachType::CgroupInetIngress),
        0,
    ),
    def(
        "cgroup_skb/egress",
        E,
        ProgramType::CgroupSkb,
        Some(AttachType::CgroupInetEgress),
        0,
    ),
    def("cgroup/skb", E, ProgramType::CgroupSkb, None, 0),
    def(
        "cgroup/sock_create",
        E,
        ProgramType::CgroupSock,
        Some(AttachType::CgroupInetSockCreate),
        0,
    ),
    def(
        "cgroup/sock_release",
        E,
        ProgramType::CgroupSock,
        Some(AttachType::CgroupInetSockRelease),
        0,
    ),
    def(
        "cgroup/sock",
        E,
        ProgramType::CgroupSock,
        Some(AttachType::CgroupInetSockCreate),
        0,
    ),
    def(
        "cgroup/post_bind4",
        E,
        ProgramType::CgroupSock,
        Some(AttachType::CgroupInet4PostBind),
        0,
    ),
    def(
        "cgroup/post_bind6",
        E,
        ProgramType::CgroupSock,
        Some(AttachType::CgroupInet6PostBind),
        0,
    ),
    def(
        "cgroup/bind4",
        E,
        ProgramType::CgroupSockAddr,
        Some(AttachType::CgroupInet4Bind),
        0,
    ),
    def(
        "cgroup/bind6",
        E,
        ProgramType::CgroupSockAddr,
        Some(AttachType::CgroupInet6Bind),
        0,
    ),
    def(
        "cgroup/connect4",
        E,
        ProgramType::CgroupSockAddr,
        Some(AttachType::CgroupInet4Connect),
        0,
    ),
    def(
        "cgroup/connect6",
        E,
        ProgramType::CgroupSockAddr,
        Some(AttachType::CgroupInet6Connect),
        0,
    ),
    def(
        "cgroup/connect_unix",
        E,
        ProgramType::CgroupSockAddr,
        Some(AttachType::CgroupUnixConnect),
        0,
    ),
    def(
        "cgroup/sendmsg4",
        E,
        ProgramType::CgroupSockAddr,
        Some(AttachType::CgroupUdp4Sendmsg),
        0,
    ),
    def(
        "cgroup/sendmsg6",
        E,
        ProgramType::CgroupSockAddr,
        Some(AttachType::CgroupUdp6Sendmsg),
        0,
    ),
    def(
        "cgroup/sendmsg_unix",
        E,
        ProgramType::CgroupSockAddr,
        Some(AttachType::CgroupUnixSendmsg),
        0,
    ),
    def(
        "cgroup/recvmsg4",
        E,
        ProgramType::CgroupSockAddr,
        Some(AttachType::CgroupUdp4Recvmsg),
        0,
    ),
    def(
        "cgroup/recvmsg6",
        E,
        ProgramType::CgroupSockAddr,
        Some(AttachType::CgroupUdp6Recvmsg),
        0,
    ),
    def(
        "cgroup/recvmsg_unix",
        E,
        ProgramType::CgroupSockAddr,
        Some(AttachType::CgroupUnixRecvmsg),
        0,
    ),
    def(
        "cgroup/getpeername4",
        E,
        ProgramType::CgroupSockAddr,
        Some(AttachType::CgroupInet4Getpeername),
        0,
    ),
    def(
        "cgroup/getpeername6",
        E,
        ProgramType::CgroupSockAddr,
        Some(AttachType::CgroupInet6Getpeername),
        0,
    ),
    def(
        "cgroup/getpeername_unix",
        E,
        ProgramType::CgroupSockAddr,
        Some(AttachType::CgroupUnixGetpeername),
        0,
    ),
    def(
        "cgroup/getsockname4",
        E,
        ProgramType::CgroupSockAddr,
        Some(AttachType::CgroupInet4Getsockname),
        0,
    ),
    def(
        "cgroup/getsockname6",
        E,
        ProgramType::CgroupSockAddr,
        Some(AttachType::CgroupInet6Getsockname),
        0,
    ),
    def(
        "cgroup/getsockname_unix",
        E,
        ProgramType::CgroupSockAddr,
        Some(AttachType::CgroupUnixGetsockname),
        0,
    ),
    def(
        "cgroup/sysctl",
        E,
        ProgramType::CgroupSysctl,
        Some(AttachType::CgroupSysctl),
        0,
    ),
    def(
        "cgroup/getsockopt",
        E,
        ProgramType::CgroupSockopt,
        Some(AttachType::CgroupGetsockopt),
        0,
    ),
    def(
        "cgroup/setsockopt",
        E,
        ProgramType::CgroupSockopt,
        Some(AttachType::CgroupSetsockopt),
        0,
    ),
    def(
        "cgroup/dev",
        E,
        ProgramType::CgroupDevice,
        Some(AttachType::CgroupDevice),
        0,
    ),
    def("struct_ops", S, ProgramType::StructOps, None, 0),
    def("struct_ops.s", S, ProgramType::StructOps, None, SLEEPABLE),
    def(
        "sk_lookup",
        E,
        ProgramType::SkLookup,
        Some(AttachType::SkLookup),
        0,
    ),
    def(
        "netfilter",
        E,
        ProgramType::Netfilter,
        Some(AttachType::Netfilter),
        0,
    ),
];

fn matches(def: &Def, section: &str) -> bool {
    match def.how {
        Match::Exact => section == def.pattern,
        Match::ExactOrSlash => section
            .strip_prefix(def.pattern)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
    }
}

/// Looks a section name up in the table; `None` if no libbpf section name matches.
pub(crate) fn classify(section: &str) -> Option<SectionKind> {
    DEFS.iter()
        .find(|d| matches(d, section))
        .map(|d| SectionKind {
            prog_type: d.prog_type,
            attach_type: d.attach_type,
            needs_btf_target: d.flags & BTF_TARGET != 0,
            sleepable: d.flags & SLEEPABLE != 0,
            xdp_frags: d.flags & FRAGS != 0,
        })
}

/// What a section name says to attach to: the part after `kprobe/`, `fentry/`,
/// `tracepoint/`, ... for the section kinds whose suffix names a target. Sections with a
/// fixed name (`cgroup/connect4`, `sk_skb/stream_parser`) have none.
pub(crate) fn attach_target(section: &str) -> Option<&str> {
    let def = DEFS.iter().find(|d| matches(d, section))?;
    if def.how != Match::ExactOrSlash {
        return None;
    }
    section
        .get(def.pattern.len() + 1..)
        .filter(|rest| !rest.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(section: &str) -> Option<(&'static str, Option<&'static str>)> {
        classify(section).map(|k| (k.prog_type.name(), k.attach_type.map(AttachType::name)))
    }

    #[test]
    fn libbpf_section_names() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("socket", "socket_filter", None),
            ("kprobe/do_sys_open", "kprobe", None),
            ("kretprobe/do_sys_open", "kprobe", None),
            ("uprobe", "kprobe", None),
            ("uretprobe//bin/sh:main", "kprobe", None),
            ("tracepoint/syscalls/sys_enter_openat", "tracepoint", None),
            ("tp/sched/sched_switch", "tracepoint", None),
            ("raw_tp/sched_switch", "raw_tracepoint", None),
            ("raw_tracepoint/sched_switch", "raw_tracepoint", None),
            ("xdp", "xdp", Some("xdp")),
            ("xdp.frags", "xdp", Some("xdp")),
            ("xdp/devmap", "xdp", Some("xdp_devmap")),
            ("tc", "sched_cls", None),
            ("tcx/ingress", "sched_cls", Some("tcx_ingress")),
            ("tcx/egress", "sched_cls", Some("tcx_egress")),
            ("classifier", "sched_cls", None),
            ("action", "sched_act", None),
            (
                "cgroup/connect4",
                "cgroup_sock_addr",
                Some("cgroup_inet4_connect"),
            ),
            (
                "cgroup/connect6",
                "cgroup_sock_addr",
                Some("cgroup_inet6_connect"),
            ),
            (
                "cgroup/sendmsg4",
                "cgroup_sock_addr",
                Some("cgroup_udp4_sendmsg"),
            ),
            (
                "cgroup/sendmsg6",
                "cgroup_sock_addr",
                Some("cgroup_udp6_sendmsg"),
            ),
            (
                "cgroup/recvmsg4",
                "cgroup_sock_addr",
                Some("cgroup_udp4_recvmsg"),
            ),
            (
                "cgroup/recvmsg6",
                "cgroup_sock_addr",
                Some("cgroup_udp6_recvmsg"),
            ),
            (
                "cgroup/getsockopt",
                "cgroup_sockopt",
                Some("cgroup_getsockopt"),
            ),
            (
                "cgroup/setsockopt",
                "cgroup_sockopt",
                Some("cgroup_setsockopt"),
            ),
            (
                "cgroup/sock",
                "cgroup_sock",
                Some("cgroup_inet_sock_create"),
            ),
            (
                "cgroup/sock_create",
                "cgroup_sock",
                Some("cgroup_inet_sock_create"),
            ),
            (
                "cgroup/sock_release",
                "cgroup_sock",
                Some("cgroup_inet_sock_release"),
            ),
            (
                "cgroup/post_bind4",
                "cgroup_sock",
                Some("cgroup_inet4_post_bind"),
            ),
            (
                "cgroup/post_bind6",
                "cgroup_sock",
                Some("cgroup_inet6_post_bind"),
            ),
            (
                "cgroup/bind4",
                "cgroup_sock_addr",
                Some("cgroup_inet4_bind"),
            ),
            (
                "cgroup/bind6",
                "cgroup_sock_addr",
                Some("cgroup_inet6_bind"),
            ),
            (
                "cgroup/getpeername4",
                "cgroup_sock_addr",
                Some("cgroup_inet4_getpeername"),
            ),
            (
                "cgroup/getpeername6",
                "cgroup_sock_addr",
                Some("cgroup_inet6_getpeername"),
            ),
            (
                "cgroup/getsockname4",
                "cgroup_sock_addr",
                Some("cgroup_inet4_getsockname"),
            ),
            (
                "cgroup/getsockname6",
                "cgroup_sock_addr",
                Some("cgroup_inet6_getsockname"),
            ),
            ("cgroup/dev", "cgroup_device", Some("cgroup_device")),
            ("cgroup/sysctl", "cgroup_sysctl", Some("cgroup_sysctl")),
            (
                "cgroup_skb/ingress",
                "cgroup_skb",
                Some("cgroup_inet_ingress"),
            ),
            (
                "cgroup_skb/egress",
                "cgroup_skb",
                Some("cgroup_inet_egress"),
            ),
            ("cgroup/skb", "cgroup_skb", None),
            ("sockops", "sock_ops", Some("cgroup_sock_ops")),
            ("sk_msg", "sk_msg", Some("sk_msg_verdict")),
            (
                "sk_skb/stream_parser",
                "sk_skb",
                Some("sk_skb_stream_parser"),
            ),
            (
                "sk_skb/stream_verdict",
                "sk_skb",
                Some("sk_skb_stream_verdict"),
            ),
            ("sk_skb", "sk_skb", None),
            ("sk_lookup", "sk_lookup", Some("sk_lookup")),
            ("flow_dissector", "flow_dissector", Some("flow_dissector")),
            ("lsm/file_open", "lsm", Some("lsm_mac")),
            ("fentry/do_unlinkat", "tracing", Some("trace_fentry")),
            ("fexit/do_unlinkat", "tracing", Some("trace_fexit")),
            ("fmod_ret/security_x", "tracing", Some("modify_return")),
            ("tp_btf/sched_switch", "tracing", Some("trace_raw_tp")),
            ("iter/task", "tracing", Some("trace_iter")),
            ("perf_event", "perf_event", None),
            ("struct_ops/tcp_init", "struct_ops", None),
        ];
        for &(section, prog, attach) in cases {
            assert_eq!(names(section), Some((prog, attach)), "section {section}");
        }
    }

    #[test]
    fn near_misses_are_not_matched() {
        // libbpf 1.x requires exact names for these; prefixes without '/' do not count.
        for section in [
            "xdp_foo",
            "kprobex",
            "classifier/x",
            "sockops2",
            "",
            "fentryfoo",
            "tcx",
        ] {
            assert_eq!(classify(section), None, "section {section:?}");
        }
    }

    #[test]
    fn targets_after_slash() {
        assert_eq!(attach_target("kprobe/do_sys_open"), Some("do_sys_open"));
        assert_eq!(
            attach_target("tracepoint/syscalls/sys_enter"),
            Some("syscalls/sys_enter")
        );
        assert_eq!(attach_target("xdp"), None);
        assert_eq!(attach_target("kprobe/"), None);
        assert_eq!(attach_target("cgroup/connect4"), None);
        assert_eq!(attach_target("sk_skb/stream_parser"), None);
        assert_eq!(attach_target("fentry.s/do_unlinkat"), Some("do_unlinkat"));
    }
}
