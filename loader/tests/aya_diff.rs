//! Differential test against aya-obj 0.3: for every object both parsers accept, map
//! definitions and program types agree, except where noted below with the reason.

#![expect(
    clippy::indexing_slicing,
    reason = "tests index into values they just checked; a panic is a failure"
)]

mod common;

use std::collections::BTreeSet;

use aya_obj::ProgramSection;
use aya_obj::generated::bpf_attach_type;
use aya_obj::maps::PinningType;
use handover_loader::sys::{MapType, ProgramType, map_flags};
use handover_loader::{MapOrigin, Object, Pinning};

/// Objects aya-obj 0.3 rejects while this loader accepts them: file, a piece of aya-obj's
/// error, and why. A change in either parser that alters this list fails the test.
const AYA_REJECTS: &[(&str, &str, &str)] = &[
    (
        "big_endian.bpfeb.o",
        "InvalidHeader",
        "aya-obj reads the BTF header in host byte order only; this loader takes the byte \
         order from the BTF magic and the ELF header",
    ),
    (
        "global_data.o",
        "InvalidProgramSection { section: \"tc\" }",
        "aya-obj 0.3 knows `classifier` but not libbpf's `tc` section name",
    ),
    (
        "map_in_map.o",
        "UnexpectedBtfType",
        "aya-obj 0.3 cannot read `__array(values, ...)` members (map-in-map inner \
         definitions and prog-array initialisers)",
    ),
    (
        "sections.o",
        "InvalidProgramSection { section: \"tc/ingress\" }",
        "aya-obj 0.3 knows neither the tcx section names nor `?` (not loaded by default), \
         `netfilter`, `raw_tp.w`, `iter/`, `uprobe.s`, `flow_dissector`",
    ),
    (
        "subprogs.bpfeb.o",
        "InvalidHeader",
        "big-endian BTF, as for big_endian.bpfeb.o",
    ),
    (
        "subprogs.fsections.o",
        "UnexpectedBtfType",
        "subprogs.o built with -ffunction-sections",
    ),
    (
        "subprogs.o",
        "UnexpectedBtfType",
        "`__array(values, int (void *))` prog arrays, as for map_in_map.o",
    ),
    (
        "subprogs.v1.o",
        "UnexpectedBtfType",
        "subprogs.o built with -mcpu=v1",
    ),
    (
        "subprogs.v2.o",
        "UnexpectedBtfType",
        "subprogs.o built with -mcpu=v2",
    ),
    (
        "subprogs.v3.o",
        "UnexpectedBtfType",
        "subprogs.o built with -mcpu=v3",
    ),
];

/// Objects this loader rejects on purpose (see `common::REJECTED`).
fn we_reject(name: &str) -> bool {
    common::REJECTED.iter().any(|(n, _)| *n == name)
}

fn attach(a: impl Into<bpf_attach_type>) -> Option<u32> {
    Some(a.into() as u32)
}

/// The program type aya-obj's section kind stands for, and the attach type when the
/// kind carries one (aya-obj leaves the others to attach time, so they are not compared).
fn aya_kind(s: &ProgramSection) -> (ProgramType, Option<Option<u32>>) {
    use ProgramSection as S;
    match s {
        S::KProbe | S::KRetProbe | S::UProbe { .. } | S::URetProbe { .. } => {
            (ProgramType::Kprobe, None)
        }
        S::TracePoint => (ProgramType::Tracepoint, None),
        S::SocketFilter => (ProgramType::SocketFilter, None),
        S::Xdp { attach_type, .. } => (ProgramType::Xdp, Some(attach(*attach_type))),
        S::SkMsg => (ProgramType::SkMsg, None),
        S::SkSkbStream { kind } => (ProgramType::SkSkb, Some(attach(*kind))),
        S::SockOps => (ProgramType::SockOps, None),
        S::SchedClassifier => (ProgramType::SchedCls, None),
        S::CgroupSkb { attach_type } => {
            (ProgramType::CgroupSkb, Some(attach_type.and_then(attach)))
        }
        S::CgroupSockAddr { attach_type } => {
            (ProgramType::CgroupSockAddr, Some(attach(*attach_type)))
        }
        S::CgroupSysctl => (ProgramType::CgroupSysctl, None),
        S::CgroupSockopt { attach_type } => {
            (ProgramType::CgroupSockopt, Some(attach(*attach_type)))
        }
        S::LircMode2 => (ProgramType::LircMode2, None),
        S::PerfEvent => (ProgramType::PerfEvent, None),
        S::RawTracePoint => (ProgramType::RawTracepoint, None),
        S::Lsm { .. } | S::LsmCgroup => (ProgramType::Lsm, None),
        S::BtfTracePoint | S::FEntry { .. } | S::FExit { .. } | S::Iter { .. } => {
            (ProgramType::Tracing, None)
        }
        S::FlowDissector => (ProgramType::FlowDissector, None),
        S::Extension => (ProgramType::Ext, None),
        S::SkLookup => (ProgramType::SkLookup, None),
        S::SkReuseport { attach_type } => (ProgramType::SkReuseport, Some(attach(*attach_type))),
        S::CgroupSock { attach_type } => (ProgramType::CgroupSock, Some(attach(*attach_type))),
        S::CgroupDevice => (ProgramType::CgroupDevice, None),
    }
}

#[test]
fn aya_obj_agrees_on_maps_and_program_sections() {
    let mut compared = 0;
    let mut aya_rejected = Vec::new();
    for path in common::all_objects() {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let data = common::read(&path);
        let ours = match Object::parse(&data) {
            Ok(o) => o,
            Err(e) => {
                assert!(we_reject(&name), "{name}: {e}");
                continue;
            }
        };
        let theirs = match aya_obj::Object::parse(&data) {
            Ok(o) => o,
            Err(e) => {
                aya_rejected.push((name.clone(), format!("{e:?}")));
                continue;
            }
        };
        compared += 1;

        // Map names: aya-obj keeps inner map definitions inside their outer map, as
        // this loader does, so the sets must be equal.
        let our_names: BTreeSet<&str> = ours.maps().iter().map(|m| m.name.as_str()).collect();
        let their_names: BTreeSet<&str> = theirs.maps.keys().map(String::as_str).collect();
        assert_eq!(our_names, their_names, "{name}: map names");

        for m in ours.maps() {
            let t = &theirs.maps[&m.name];
            let ctx = format!("{name}: map {}", m.name);
            assert_eq!(u32::from(m.map_type), t.map_type(), "{ctx}: type");
            assert_eq!(m.key_size, t.key_size(), "{ctx}: key_size");
            assert_eq!(m.value_size, t.value_size(), "{ctx}: value_size");
            assert_eq!(m.max_entries, t.max_entries(), "{ctx}: max_entries");
            assert_eq!(m.map_extra, t.map_extra(), "{ctx}: map_extra");
            let mut flags = m.flags;
            if matches!(m.origin, MapOrigin::GlobalData { .. }) {
                // Disagreement: libbpf (since "only add BPF_F_MMAPABLE flag for data
                // maps with global vars") creates global data maps mmapable when a
                // variable is not static; this loader does the same, aya-obj never sets
                // the flag.
                flags &= !map_flags::MMAPABLE;
                // Same contents: aya-obj fills .bss with zeros as well.
                assert_eq!(
                    m.initial_data.as_deref(),
                    Some(t.data()),
                    "{ctx}: initial data"
                );
            }
            assert_eq!(flags, t.map_flags(), "{ctx}: flags");
            let their_pin = match t.pinning() {
                PinningType::None => Pinning::None,
                PinningType::ByName => Pinning::ByName,
            };
            assert_eq!(m.pinning, their_pin, "{ctx}: pinning");
            match (&m.inner, t.inner()) {
                (None, None) => {}
                (Some(i), Some(ti)) => {
                    assert_eq!(
                        (
                            u32::from(i.map_type),
                            i.key_size,
                            i.value_size,
                            i.max_entries,
                            i.flags
                        ),
                        (
                            ti.map_type(),
                            ti.key_size(),
                            ti.value_size(),
                            ti.max_entries(),
                            ti.map_flags()
                        ),
                        "{ctx}: inner map"
                    );
                }
                (a, b) => panic!(
                    "{ctx}: inner map present in one parser only: ours {a:?}, aya {:?}",
                    b.is_some()
                ),
            }
            assert_ne!(m.map_type, MapType::Unspec);
        }

        let our_progs: BTreeSet<&str> = ours.programs().iter().map(|p| p.name.as_str()).collect();
        let their_progs: BTreeSet<&str> = theirs.programs.keys().map(String::as_str).collect();
        assert_eq!(our_progs, their_progs, "{name}: program names");
        for p in ours.programs() {
            let t = &theirs.programs[&p.name];
            let ctx = format!("{name}: program {}", p.name);
            let (ty, att) = aya_kind(&t.section);
            assert_eq!(p.prog_type, ty, "{ctx}: type");
            if let Some(att) = att {
                assert_eq!(
                    p.expected_attach_type.map(u32::from),
                    att,
                    "{ctx}: attach type"
                );
            }
            // The program's own instructions, before subprograms are appended.
            let f = &theirs.functions[&t.function_key()];
            assert_eq!(
                p.functions[0].len,
                f.instructions.len(),
                "{ctx}: instruction count"
            );
            // aya-obj carries per-function BTF.ext records; the program's own must match.
            let ours_fi = p
                .func_info
                .iter()
                .filter(|r| (r.insn as usize) < p.functions[0].len)
                .count();
            assert_eq!(
                ours_fi,
                f.func_info.func_info.len(),
                "{ctx}: func_info count"
            );
        }
    }
    let names: Vec<&str> = aya_rejected.iter().map(|(n, _)| n.as_str()).collect();
    let expected: Vec<&str> = AYA_REJECTS.iter().map(|e| e.0).collect();
    assert_eq!(
        names, expected,
        "objects aya-obj rejects changed: {aya_rejected:?}"
    );
    for ((file, err), (_, fragment, why)) in aya_rejected.iter().zip(AYA_REJECTS) {
        assert!(
            err.contains(fragment),
            "{file}: aya-obj now fails differently ({err}); expected {fragment}: {why}"
        );
    }
    assert!(compared >= 15, "only {compared} objects compared");
}
