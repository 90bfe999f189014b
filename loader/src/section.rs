//! Program type and expected attach type from a program's ELF section name, following
//! libbpf's section naming (`SEC("xdp")`, `SEC("kprobe/do_sys_open")`, ...).

use crate::kinds::{attach as at, prog as pt};

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
    pub(crate) prog_type: u32,
    pub(crate) attach_type: Option<u32>,
    /// Programs in sections like `fentry/FN` need a BTF attach target named after the slash.
    pub(crate) needs_btf_target: bool,
    pub(crate) sleepable: bool,
    pub(crate) xdp_frags: bool,
}

struct Def {
    pattern: &'static str,
    how: Match,
    prog_type: u32,
    attach_type: Option<u32>,
    flags: u8,
}

const BTF_TARGET: u8 = 1;
const SLEEPABLE: u8 = 2;
const FRAGS: u8 = 4;

const fn def(
    pattern: &'static str,
    how: Match,
    prog_type: u32,
    attach_type: Option<u32>,
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
    def("socket", E, pt::SOCKET_FILTER, None, 0),
    def(
        "sk_reuseport/migrate",
        E,
        pt::SK_REUSEPORT,
        Some(at::SK_REUSEPORT_SELECT_OR_MIGRATE),
        0,
    ),
    def(
        "sk_reuseport",
        E,
        pt::SK_REUSEPORT,
        Some(at::SK_REUSEPORT_SELECT),
        0,
    ),
    def("kprobe", S, pt::KPROBE, None, 0),
    def("uprobe", S, pt::KPROBE, None, 0),
    def("uprobe.s", S, pt::KPROBE, None, SLEEPABLE),
    def("kretprobe", S, pt::KPROBE, None, 0),
    def("uretprobe", S, pt::KPROBE, None, 0),
    def("uretprobe.s", S, pt::KPROBE, None, SLEEPABLE),
    def(
        "kprobe.multi",
        S,
        pt::KPROBE,
        Some(at::TRACE_KPROBE_MULTI),
        0,
    ),
    def(
        "kretprobe.multi",
        S,
        pt::KPROBE,
        Some(at::TRACE_KPROBE_MULTI),
        0,
    ),
    def(
        "uprobe.multi",
        S,
        pt::KPROBE,
        Some(at::TRACE_UPROBE_MULTI),
        0,
    ),
    def(
        "uretprobe.multi",
        S,
        pt::KPROBE,
        Some(at::TRACE_UPROBE_MULTI),
        0,
    ),
    def(
        "uprobe.multi.s",
        S,
        pt::KPROBE,
        Some(at::TRACE_UPROBE_MULTI),
        SLEEPABLE,
    ),
    def(
        "uretprobe.multi.s",
        S,
        pt::KPROBE,
        Some(at::TRACE_UPROBE_MULTI),
        SLEEPABLE,
    ),
    def("ksyscall", S, pt::KPROBE, None, 0),
    def("kretsyscall", S, pt::KPROBE, None, 0),
    def("usdt", S, pt::KPROBE, None, 0),
    def("usdt.s", S, pt::KPROBE, None, SLEEPABLE),
    def("tc/ingress", E, pt::SCHED_CLS, Some(at::TCX_INGRESS), 0),
    def("tc/egress", E, pt::SCHED_CLS, Some(at::TCX_EGRESS), 0),
    def("tcx/ingress", E, pt::SCHED_CLS, Some(at::TCX_INGRESS), 0),
    def("tcx/egress", E, pt::SCHED_CLS, Some(at::TCX_EGRESS), 0),
    def("tc", E, pt::SCHED_CLS, None, 0),
    def("classifier", E, pt::SCHED_CLS, None, 0),
    def("action", E, pt::SCHED_ACT, None, 0),
    def(
        "netkit/primary",
        E,
        pt::SCHED_CLS,
        Some(at::NETKIT_PRIMARY),
        0,
    ),
    def("netkit/peer", E, pt::SCHED_CLS, Some(at::NETKIT_PEER), 0),
    def("tracepoint", S, pt::TRACEPOINT, None, 0),
    def("tp", S, pt::TRACEPOINT, None, 0),
    def("raw_tracepoint", S, pt::RAW_TRACEPOINT, None, 0),
    def("raw_tp", S, pt::RAW_TRACEPOINT, None, 0),
    def("raw_tracepoint.w", S, pt::RAW_TRACEPOINT_WRITABLE, None, 0),
    def("raw_tp.w", S, pt::RAW_TRACEPOINT_WRITABLE, None, 0),
    def("tp_btf", S, pt::TRACING, Some(at::TRACE_RAW_TP), BTF_TARGET),
    def("fentry", S, pt::TRACING, Some(at::TRACE_FENTRY), BTF_TARGET),
    def(
        "fmod_ret",
        S,
        pt::TRACING,
        Some(at::MODIFY_RETURN),
        BTF_TARGET,
    ),
    def("fexit", S, pt::TRACING, Some(at::TRACE_FEXIT), BTF_TARGET),
    def(
        "fentry.s",
        S,
        pt::TRACING,
        Some(at::TRACE_FENTRY),
        BTF_TARGET | SLEEPABLE,
    ),
    def(
        "fmod_ret.s",
        S,
        pt::TRACING,
        Some(at::MODIFY_RETURN),
        BTF_TARGET | SLEEPABLE,
    ),
    def(
        "fexit.s",
        S,
        pt::TRACING,
        Some(at::TRACE_FEXIT),
        BTF_TARGET | SLEEPABLE,
    ),
    def("freplace", S, pt::EXT, None, BTF_TARGET),
    def("lsm", S, pt::LSM, Some(at::LSM_MAC), BTF_TARGET),
    def(
        "lsm.s",
        S,
        pt::LSM,
        Some(at::LSM_MAC),
        BTF_TARGET | SLEEPABLE,
    ),
    def("lsm_cgroup", S, pt::LSM, Some(at::LSM_CGROUP), BTF_TARGET),
    def("iter", S, pt::TRACING, Some(at::TRACE_ITER), BTF_TARGET),
    def(
        "iter.s",
        S,
        pt::TRACING,
        Some(at::TRACE_ITER),
        BTF_TARGET | SLEEPABLE,
    ),
    def("syscall", E, pt::SYSCALL, None, SLEEPABLE),
    def("xdp.frags/devmap", E, pt::XDP, Some(at::XDP_DEVMAP), FRAGS),
    def("xdp/devmap", E, pt::XDP, Some(at::XDP_DEVMAP), 0),
    def("xdp.frags/cpumap", E, pt::XDP, Some(at::XDP_CPUMAP), FRAGS),
    def("xdp/cpumap", E, pt::XDP, Some(at::XDP_CPUMAP), 0),
    def("xdp.frags", E, pt::XDP, Some(at::XDP), FRAGS),
    def("xdp", E, pt::XDP, Some(at::XDP), 0),
    def("perf_event", E, pt::PERF_EVENT, None, 0),
    def("lwt_in", E, pt::LWT_IN, None, 0),
    def("lwt_out", E, pt::LWT_OUT, None, 0),
    def("lwt_xmit", E, pt::LWT_XMIT, None, 0),
    def("lwt_seg6local", E, pt::LWT_SEG6LOCAL, None, 0),
    def("sockops", E, pt::SOCK_OPS, Some(at::CGROUP_SOCK_OPS), 0),
    def(
        "sk_skb/stream_parser",
        E,
        pt::SK_SKB,
        Some(at::SK_SKB_STREAM_PARSER),
        0,
    ),
    def(
        "sk_skb/stream_verdict",
        E,
        pt::SK_SKB,
        Some(at::SK_SKB_STREAM_VERDICT),
        0,
    ),
    def("sk_skb/verdict", E, pt::SK_SKB, Some(at::SK_SKB_VERDICT), 0),
    def("sk_skb", E, pt::SK_SKB, None, 0),
    def("sk_msg", E, pt::SK_MSG, Some(at::SK_MSG_VERDICT), 0),
    def("lirc_mode2", E, pt::LIRC_MODE2, Some(at::LIRC_MODE2), 0),
    def(
        "flow_dissector",
        E,
        pt::FLOW_DISSECTOR,
        Some(at::FLOW_DISSECTOR),
        0,
    ),
    def(
        "cgroup_skb/ingress",
        E,
        pt::CGROUP_SKB,
        Some(at::CGROUP_INET_INGRESS),
        0,
    ),
    def(
        "cgroup_skb/egress",
        E,
        pt::CGROUP_SKB,
        Some(at::CGROUP_INET_EGRESS),
        0,
    ),
    def("cgroup/skb", E, pt::CGROUP_SKB, None, 0),
    def(
        "cgroup/sock_create",
        E,
        pt::CGROUP_SOCK,
        Some(at::CGROUP_INET_SOCK_CREATE),
        0,
    ),
    def(
        "cgroup/sock_release",
        E,
        pt::CGROUP_SOCK,
        Some(at::CGROUP_INET_SOCK_RELEASE),
        0,
    ),
    def(
        "cgroup/sock",
        E,
        pt::CGROUP_SOCK,
        Some(at::CGROUP_INET_SOCK_CREATE),
        0,
    ),
    def(
        "cgroup/post_bind4",
        E,
        pt::CGROUP_SOCK,
        Some(at::CGROUP_INET4_POST_BIND),
        0,
    ),
    def(
        "cgroup/post_bind6",
        E,
        pt::CGROUP_SOCK,
        Some(at::CGROUP_INET6_POST_BIND),
        0,
    ),
    def(
        "cgroup/bind4",
        E,
        pt::CGROUP_SOCK_ADDR,
        Some(at::CGROUP_INET4_BIND),
        0,
    ),
    def(
        "cgroup/bind6",
        E,
        pt::CGROUP_SOCK_ADDR,
        Some(at::CGROUP_INET6_BIND),
        0,
    ),
    def(
        "cgroup/connect4",
        E,
        pt::CGROUP_SOCK_ADDR,
        Some(at::CGROUP_INET4_CONNECT),
        0,
    ),
    def(
        "cgroup/connect6",
        E,
        pt::CGROUP_SOCK_ADDR,
        Some(at::CGROUP_INET6_CONNECT),
        0,
    ),
    def(
        "cgroup/connect_unix",
        E,
        pt::CGROUP_SOCK_ADDR,
        Some(at::CGROUP_UNIX_CONNECT),
        0,
    ),
    def(
        "cgroup/sendmsg4",
        E,
        pt::CGROUP_SOCK_ADDR,
        Some(at::CGROUP_UDP4_SENDMSG),
        0,
    ),
    def(
        "cgroup/sendmsg6",
        E,
        pt::CGROUP_SOCK_ADDR,
        Some(at::CGROUP_UDP6_SENDMSG),
        0,
    ),
    def(
        "cgroup/sendmsg_unix",
        E,
        pt::CGROUP_SOCK_ADDR,
        Some(at::CGROUP_UNIX_SENDMSG),
        0,
    ),
    def(
        "cgroup/recvmsg4",
        E,
        pt::CGROUP_SOCK_ADDR,
        Some(at::CGROUP_UDP4_RECVMSG),
        0,
    ),
    def(
        "cgroup/recvmsg6",
        E,
        pt::CGROUP_SOCK_ADDR,
        Some(at::CGROUP_UDP6_RECVMSG),
        0,
    ),
    def(
        "cgroup/recvmsg_unix",
        E,
        pt::CGROUP_SOCK_ADDR,
        Some(at::CGROUP_UNIX_RECVMSG),
        0,
    ),
    def(
        "cgroup/getpeername4",
        E,
        pt::CGROUP_SOCK_ADDR,
        Some(at::CGROUP_INET4_GETPEERNAME),
        0,
    ),
    def(
        "cgroup/getpeername6",
        E,
        pt::CGROUP_SOCK_ADDR,
        Some(at::CGROUP_INET6_GETPEERNAME),
        0,
    ),
    def(
        "cgroup/getpeername_unix",
        E,
        pt::CGROUP_SOCK_ADDR,
        Some(at::CGROUP_UNIX_GETPEERNAME),
        0,
    ),
    def(
        "cgroup/getsockname4",
        E,
        pt::CGROUP_SOCK_ADDR,
        Some(at::CGROUP_INET4_GETSOCKNAME),
        0,
    ),
    def(
        "cgroup/getsockname6",
        E,
        pt::CGROUP_SOCK_ADDR,
        Some(at::CGROUP_INET6_GETSOCKNAME),
        0,
    ),
    def(
        "cgroup/getsockname_unix",
        E,
        pt::CGROUP_SOCK_ADDR,
        Some(at::CGROUP_UNIX_GETSOCKNAME),
        0,
    ),
    def(
        "cgroup/sysctl",
        E,
        pt::CGROUP_SYSCTL,
        Some(at::CGROUP_SYSCTL),
        0,
    ),
    def(
        "cgroup/getsockopt",
        E,
        pt::CGROUP_SOCKOPT,
        Some(at::CGROUP_GETSOCKOPT),
        0,
    ),
    def(
        "cgroup/setsockopt",
        E,
        pt::CGROUP_SOCKOPT,
        Some(at::CGROUP_SETSOCKOPT),
        0,
    ),
    def(
        "cgroup/dev",
        E,
        pt::CGROUP_DEVICE,
        Some(at::CGROUP_DEVICE),
        0,
    ),
    def("struct_ops", S, pt::STRUCT_OPS, None, 0),
    def("struct_ops.s", S, pt::STRUCT_OPS, None, SLEEPABLE),
    def("sk_lookup", E, pt::SK_LOOKUP, Some(at::SK_LOOKUP), 0),
    def("netfilter", E, pt::NETFILTER, Some(at::NETFILTER), 0),
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

/// The part of a section name after the first `/` (the attach target of `kprobe/FN`,
/// `fentry/FN`, `tracepoint/CAT/NAME`, ...), if any.
pub(crate) fn attach_target(section: &str) -> Option<&str> {
    section
        .split_once('/')
        .map(|(_, rest)| rest)
        .filter(|rest| !rest.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{attach_type_name, prog_type_name};

    fn names(section: &str) -> Option<(&'static str, Option<&'static str>)> {
        classify(section).map(|k| {
            (
                prog_type_name(k.prog_type).unwrap_or("?"),
                k.attach_type.map(|a| attach_type_name(a).unwrap_or("?")),
            )
        })
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
    }
}
