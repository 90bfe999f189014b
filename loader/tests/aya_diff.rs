//! Differential test against aya-obj 0.3: for every object both parsers accept, map
//! definitions and program types agree, except where noted below with the reason, and
//! every program's instructions agree byte for byte once both sides have linked it:
//! aya-obj through its own `relocate_maps` and `relocate_calls` (with made-up map fds,
//! so no kernel is needed), this loader through [`relocate`] with the same fds. Its
//! `.BTF.ext` func_info and line_info records agree after linking as well. No
//! instruction difference is known, so none is allowed.

#![expect(
    clippy::indexing_slicing,
    reason = "tests index into values they just checked; a panic is a failure"
)]

mod common;

use std::collections::{BTreeSet, HashSet};

use aya_obj::ProgramSection;
use aya_obj::generated::bpf_attach_type;
use aya_obj::maps::PinningType;
use handover_loader::{MapOrigin, Object, Pinning, RefTarget, relocate};
use handover_uapi::Insn;
use handover_uapi::{MapType, ProgramType, map_flags};

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
        "custom_sections.o",
        "InvalidProgramSection { section: \"xdp_custom\" }",
        "aya-obj 0.3 refuses sections libbpf does not name, where this loader parses their \
         programs with the type unknown",
    ),
    (
        "global_data.o",
        "InvalidProgramSection { section: \"tc\" }",
        "aya-obj 0.3 knows `classifier` but not libbpf's `tc` section name",
    ),
    (
        "ksym_vars.o",
        "InvalidProgramSection { section: \"tc\" }",
        "aya-obj 0.3 knows `classifier` but not libbpf's `tc` section name",
    ),
    (
        "ksyms.o",
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

/// One instruction as its 8 bytes on a little-endian host.
fn bytes(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let [o0, o1] = off.to_le_bytes();
    let [i0, i1, i2, i3] = imm.to_le_bytes();
    [code, dst | src << 4, o0, o1, i0, i1, i2, i3]
}

/// Compares two programs instruction by instruction; a failure names the first
/// instruction that differs and shows both encodings.
fn compare_insns(ctx: &str, ours: &[Insn], theirs: &[aya_obj::generated::bpf_insn]) {
    let ours: Vec<[u8; 8]> = ours
        .iter()
        .map(|i| bytes(i.code, i.dst(), i.src(), i.off, i.imm))
        .collect();
    let theirs: Vec<[u8; 8]> = theirs
        .iter()
        .map(|i| bytes(i.code, i.dst_reg(), i.src_reg(), i.off, i.imm))
        .collect();
    if let Some(at) = (0..ours.len().min(theirs.len())).find(|&k| ours[k] != theirs[k]) {
        panic!(
            "{ctx}: instruction {at} differs: ours {:02x?}, aya-obj {:02x?}",
            ours[at], theirs[at]
        );
    }
    assert_eq!(ours.len(), theirs.len(), "{ctx}: instruction count");
}

#[test]
fn aya_obj_agrees_on_maps_and_program_sections() {
    let mut compared = 0;
    let mut aya_rejected = Vec::new();
    let mut insns_compared = 0;
    let (mut with_subprogs, mut with_data_refs, mut with_map_refs) = (0, 0, 0);
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
        let mut theirs = match aya_obj::Object::parse(&data) {
            Ok(o) => o,
            Err(e) => {
                aya_rejected.push((name.clone(), format!("{e:?}")));
                continue;
            }
        };
        compared += 1;

        // Map names: aya-obj keeps inner map definitions inside their outer map, as
        // this loader does, so the sets must be equal.
        // Disagreement: this loader, as libbpf, makes a `.kconfig` map holding the
        // values of __kconfig externs; aya-obj's object has none.
        let our_names: BTreeSet<&str> = ours
            .maps()
            .iter()
            .map(|m| m.name.as_str())
            .filter(|n| *n != handover_loader::KCONFIG_SECTION)
            .collect();
        let their_names: BTreeSet<&str> = theirs.maps.keys().map(String::as_str).collect();
        assert_eq!(our_names, their_names, "{name}: map names");

        for m in ours
            .maps()
            .iter()
            .filter(|m| our_names.contains(m.name.as_str()))
        {
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

        // Link as aya does before a load: every function section counts as text; each
        // map gets a made-up fd, the same number on both sides.
        let map_names: Vec<String> = their_names.iter().map(|n| (*n).to_owned()).collect();
        let fd_of = |n: &str| {
            map_names
                .iter()
                .position(|m| m == n)
                .and_then(|i| i32::try_from(i).ok())
                .map(|i| 100 + i)
        };
        let text_sections: HashSet<usize> = theirs.functions.keys().map(|k| k.0).collect();
        let their_maps = theirs.maps.clone();
        theirs
            .relocate_maps(
                their_maps
                    .iter()
                    .map(|(n, m)| (n.as_str(), fd_of(n).expect("known map"), m)),
                &text_sections,
            )
            .unwrap_or_else(|e| panic!("{name}: aya-obj relocate_maps: {e}"));
        theirs
            .relocate_calls(&text_sections)
            .unwrap_or_else(|e| panic!("{name}: aya-obj relocate_calls: {e}"));

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
            // Disagreement: the references to __kconfig externs load addresses in this
            // loader's `.kconfig` map (as libbpf's), of which aya-obj has none.
            let kconfig = p.references.iter().any(|r| {
                matches!(&r.target, RefTarget::MapValue { map, .. }
                    if map == handover_loader::KCONFIG_SECTION)
            });
            if kconfig {
                continue;
            }
            // Each program's instructions, byte for byte, after both sides have linked
            // subprograms and put a map's fd into each map reference.
            let linked = &theirs.functions[&t.function_key()];
            let ours_insns = relocate(p, &fd_of).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            compare_insns(&ctx, &ours_insns, &linked.instructions);
            // BTF.ext records of the linked program, subprograms included.
            let their_fi: Vec<(u32, u32)> = linked
                .func_info
                .func_info
                .iter()
                .map(|r| (r.insn_off, r.type_id))
                .collect();
            let ours_fi: Vec<(u32, u32)> =
                p.func_info.iter().map(|r| (r.insn, r.type_id.0)).collect();
            assert_eq!(ours_fi, their_fi, "{ctx}: func_info");
            let their_li: Vec<(u32, u32, u32, u32)> = linked
                .line_info
                .line_info
                .iter()
                .map(|r| (r.insn_off, r.file_name_off, r.line_off, r.line_col))
                .collect();
            let ours_li: Vec<(u32, u32, u32, u32)> = p
                .line_info
                .iter()
                .map(|r| {
                    (
                        r.insn,
                        r.file_name.0,
                        r.line.0,
                        r.line_number << 10 | r.column,
                    )
                })
                .collect();
            assert_eq!(ours_li, their_li, "{ctx}: line_info");
            insns_compared += 1;
            with_subprogs += usize::from(p.functions.len() > 1);
            with_data_refs += usize::from(
                p.references
                    .iter()
                    .any(|r| matches!(r.target, RefTarget::MapValue { .. })),
            );
            with_map_refs += usize::from(
                p.references
                    .iter()
                    .any(|r| matches!(r.target, RefTarget::Map { .. })),
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
    assert!(
        insns_compared >= 30,
        "only {insns_compared} programs compared instruction by instruction"
    );
    // The comparison covers each kind of rewrite: appended subprograms with fixed call
    // offsets, global data references with their offsets, map fd references.
    assert!(
        with_subprogs >= 1 && with_data_refs >= 1 && with_map_refs >= 1,
        "programs compared with subprograms {with_subprogs}, global data references \
         {with_data_refs}, map references {with_map_refs}"
    );
}
