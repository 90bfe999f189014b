//! Specs read from real objects: the fixtures (whose values are written in their C
//! sources under programs/) and the xdp-tools corpus.

#![expect(
    clippy::indexing_slicing,
    reason = "tests index into values they just checked; a panic is a failure"
)]

mod common;

use handover_loader::sys::{AttachType, MapType, ProgramType, map_flags};
use handover_loader::{
    MapOrigin, Object, ObjectError, ObjectFile, ObjectOptions, Pinning, RefTarget, SlotTarget,
};

/// Properties every parsed object must have, whatever it contains.
fn check_invariants(path: &std::path::Path, obj: &Object<'_>) {
    let ctx = path.display();
    for p in obj.programs() {
        assert!(!p.insns.is_empty(), "{ctx}: {} has no instructions", p.name);
        let total: usize = p.functions.iter().map(|f| f.len).sum();
        assert_eq!(
            total,
            p.insns.len(),
            "{ctx}: {} functions do not cover the instructions",
            p.name
        );
        assert_eq!(
            p.functions.first().map(|f| f.name.as_str()),
            Some(p.name.as_str())
        );
        for r in &p.references {
            let insn = p
                .insns
                .get(r.insn)
                .unwrap_or_else(|| panic!("{ctx}: {} reference past the end", p.name));
            match &r.target {
                RefTarget::Map { map } => {
                    assert!(
                        obj.map(map).is_some(),
                        "{ctx}: {} refers to missing map {map}",
                        p.name
                    );
                    assert_eq!(
                        (insn.code, insn.src()),
                        (0x18, 1),
                        "{ctx}: map load is not ld_imm64 PSEUDO_MAP_FD"
                    );
                }
                RefTarget::MapValue { map, offset } => {
                    let m = obj
                        .map(map)
                        .unwrap_or_else(|| panic!("{ctx}: missing data map {map}"));
                    assert!(*offset < m.value_size, "{ctx}: offset {offset} past {map}");
                    assert_eq!((insn.code, insn.src()), (0x18, 2));
                    assert_eq!(
                        p.insns.get(r.insn + 1).map(|i| i.imm),
                        Some(i32::try_from(*offset).unwrap())
                    );
                }
                RefTarget::Call { function } | RefTarget::FuncAddr { function } => {
                    let f = p
                        .functions
                        .iter()
                        .find(|f| &f.name == function)
                        .expect("called function placed");
                    let target = i64::try_from(r.insn).unwrap() + 1 + i64::from(insn.imm);
                    assert_eq!(
                        target,
                        i64::try_from(f.start).unwrap(),
                        "{ctx}: call at {} does not land on {function}",
                        r.insn
                    );
                }
            }
        }
        // func_info: one record per placed function, at its first instruction, sorted.
        if !p.func_info.is_empty() {
            let starts: Vec<u32> = p
                .functions
                .iter()
                .map(|f| u32::try_from(f.start).unwrap())
                .collect();
            let infos: Vec<u32> = p.func_info.iter().map(|f| f.insn).collect();
            assert_eq!(
                infos, starts,
                "{ctx}: {} func_info does not match its functions",
                p.name
            );
        }
        assert!(
            p.line_info.windows(2).all(|w| w[0].insn <= w[1].insn),
            "{ctx}: line_info unsorted"
        );
        assert!(
            p.line_info
                .iter()
                .all(|l| (l.insn as usize) < p.insns.len())
        );
    }
    for m in obj.maps() {
        assert_ne!(m.map_type, MapType::Unspec, "{ctx}: {}", m.name);
        if let Some(btf) = obj.btf() {
            if let Some(k) = m.key_type {
                assert_eq!(btf.size_of(k).unwrap(), m.key_size, "{ctx}: {} key", m.name);
            }
            if let (Some(v), MapOrigin::BtfMaps) = (m.value_type, &m.origin) {
                assert_eq!(
                    btf.size_of(v).unwrap(),
                    m.value_size,
                    "{ctx}: {} value",
                    m.name
                );
            }
        }
    }
}

#[test]
fn every_fixture_and_xdp_tools_object_parses() {
    for path in common::all_objects() {
        let file = ObjectFile::open(&path).unwrap();
        if let Some(symbol) = common::rejected(&path) {
            match file.parse() {
                Err(ObjectError::UnsupportedExtern { symbol: s, .. }) if s == symbol => continue,
                Err(e) => panic!(
                    "{}: expected an extern error naming {symbol}, got {e}",
                    path.display()
                ),
                Ok(_) => panic!(
                    "{}: parsed, but it uses the unsupported extern {symbol}",
                    path.display()
                ),
            }
        }
        let obj = file
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            !obj.programs().is_empty(),
            "{}: no programs",
            path.display()
        );
        check_invariants(&path, &obj);
    }
}

#[test]
fn maps_btf_specs_match_the_source() {
    // programs/maps_btf.c
    let data = common::read(&common::fixture("maps_btf"));
    let obj = Object::parse(&data).unwrap();
    let btf = obj.btf().unwrap();
    let m = |n: &str| obj.map(n).unwrap_or_else(|| panic!("no map {n}"));

    let flows = m("flows");
    assert_eq!(
        (
            flows.map_type,
            flows.key_size,
            flows.value_size,
            flows.max_entries
        ),
        (MapType::Hash, 16, 24, 1024)
    );
    assert_eq!(flows.flags, map_flags::NO_PREALLOC);
    assert_eq!(flows.pinning, Pinning::ByName);
    assert_eq!(
        btf.type_by_id(flows.key_type.unwrap())
            .unwrap()
            .name()
            .unwrap(),
        "flow_key"
    );
    assert_eq!(
        btf.type_by_id(flows.value_type.unwrap())
            .unwrap()
            .name()
            .unwrap(),
        "flow_stats"
    );

    let lru = m("lru_sizes_only");
    assert_eq!(
        (lru.map_type, lru.key_size, lru.value_size, lru.max_entries),
        (MapType::LruHash, 8, 16, 4096)
    );
    assert_eq!((lru.key_type, lru.value_type), (None, None));

    assert_eq!(m("percpu_stats").numa_node, Some(0));
    assert_eq!(m("percpu_stats").map_type, MapType::PercpuHash);
    assert_eq!(m("percpu_counters").map_type, MapType::PercpuArray);
    let lpm = m("prefixes");
    assert_eq!(
        (lpm.map_type, lpm.key_size, lpm.value_size, lpm.flags),
        (MapType::LpmTrie, 8, 4, map_flags::NO_PREALLOC)
    );
    let rb = m("events");
    assert_eq!(
        (rb.map_type, rb.key_size, rb.value_size, rb.max_entries),
        (MapType::Ringbuf, 0, 0, 256 * 1024)
    );
    assert_eq!(obj.maps().len(), 7);

    let p = obj.program("xdp_count").unwrap();
    assert_eq!(
        (p.prog_type, p.expected_attach_type),
        (ProgramType::Xdp, Some(AttachType::Xdp))
    );
    let maps_used: Vec<&str> = p
        .references
        .iter()
        .filter_map(|r| match &r.target {
            RefTarget::Map { map } => Some(map.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        maps_used,
        [
            "counters",
            "percpu_counters",
            "flows",
            "percpu_stats",
            "lru_sizes_only",
            "prefixes",
            "events"
        ]
    );
    assert_eq!(obj.license(), Some("GPL"));
}

#[test]
fn map_in_map_and_prog_array_static_init() {
    // programs/map_in_map.c
    let data = common::read(&common::fixture("map_in_map"));
    let obj = Object::parse(&data).unwrap();
    let outer = obj.map("outer_hash").unwrap();
    assert_eq!(
        (
            outer.map_type,
            outer.key_size,
            outer.value_size,
            outer.max_entries
        ),
        (MapType::HashOfMaps, 4, 4, 64)
    );
    let inner = outer.inner.as_deref().unwrap();
    assert_eq!(
        (
            inner.map_type,
            inner.key_size,
            inner.value_size,
            inner.max_entries
        ),
        (MapType::Array, 4, 8, 8)
    );
    let anon = obj.map("outer_array").unwrap().inner.as_deref().unwrap();
    assert_eq!(
        (
            anon.map_type,
            anon.key_size,
            anon.value_size,
            anon.max_entries
        ),
        (MapType::Hash, 4, 4, 32)
    );

    let st = obj.map("outer_static").unwrap();
    assert_eq!(st.initial_slots.len(), 1);
    assert_eq!(
        (st.initial_slots[0].index, &st.initial_slots[0].target),
        (1, &SlotTarget::Map("inner_b".into()))
    );
    let jt = obj.map("jump_table").unwrap();
    assert_eq!(jt.map_type, MapType::ProgArray);
    assert!(jt.inner.is_none());
    assert_eq!(
        (jt.initial_slots[0].index, &jt.initial_slots[0].target),
        (2, &SlotTarget::Program("tail_target".into()))
    );
}

#[test]
fn legacy_maps_section() {
    // programs/legacy_maps.c: 7-field records (28 bytes), version section.
    let data = common::read(&common::fixture("legacy_maps"));
    let obj = Object::parse(&data).unwrap();
    let h = obj.map("legacy_hash").unwrap();
    assert_eq!(
        (
            h.map_type,
            h.key_size,
            h.value_size,
            h.max_entries,
            &h.origin
        ),
        (MapType::Hash, 4, 8, 512, &MapOrigin::Legacy)
    );
    let a = obj.map("legacy_array").unwrap();
    assert_eq!(
        (a.map_type, a.key_size, a.value_size, a.max_entries),
        (MapType::Array, 4, 24, 3)
    );
    assert_eq!(obj.kernel_version(), Some(0x060c00));
    assert_eq!(obj.license(), Some("Dual BSD/GPL"));
    let p = obj.program("legacy_socket").unwrap();
    assert_eq!(
        (p.prog_type, p.expected_attach_type),
        (ProgramType::SocketFilter, None)
    );
}

#[test]
fn global_data_maps_and_bpf_to_bpf_calls() {
    // programs/global_data.c
    let data = common::read(&common::fixture("global_data"));
    let obj = Object::parse(&data).unwrap();
    let ro = obj.map(".rodata").unwrap();
    assert_eq!(
        (ro.map_type, ro.key_size, ro.max_entries),
        (MapType::Array, 4, 1)
    );
    assert_eq!(ro.flags, map_flags::RDONLY_PROG | map_flags::MMAPABLE);
    assert!(ro.frozen);
    let ro_data = ro.initial_data.as_deref().unwrap();
    assert_eq!(&ro_data[..4], &0x2a_u32.to_le_bytes(), "drop_mark");
    assert!(ro_data.windows(8).any(|w| w == b"handover"), "greeting");
    let d = obj.map(".data").unwrap();
    assert_eq!(
        d.initial_data.as_deref(),
        Some(&7_u64.to_le_bytes()[..]),
        "packets_seen = 7"
    );
    assert_eq!(d.flags, map_flags::MMAPABLE);
    let cfg = obj.map(".data.config").unwrap();
    let c = cfg.initial_data.as_deref().unwrap();
    assert_eq!(
        (&c[..4], &c[4..8], &c[8..10]),
        (
            &1000_u32.to_le_bytes()[..],
            &64_u32.to_le_bytes()[..],
            &8080_u16.to_le_bytes()[..]
        )
    );
    let bss = obj.map(".bss").unwrap();
    assert_eq!(bss.value_size, 16);
    assert!(bss.initial_data.as_deref().unwrap().iter().all(|&b| b == 0));

    let tc = obj.program("tc_account").unwrap();
    assert_eq!(tc.prog_type, ProgramType::SchedCls);
    let names: Vec<&str> = tc.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["tc_account", "account", "classify_len"],
        "callees appended transitively"
    );
    let second = obj.program("tc_second").unwrap();
    let names: Vec<&str> = second.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["tc_second", "classify_len"]);
    assert_eq!(tc.func_info.len(), 3);
    // classify_len reads tunables.rate (offset 0) and adds to bytes_seen (.bss offset 8).
    assert!(tc.references.iter().any(|r| r.target
        == RefTarget::MapValue {
            map: ".bss".into(),
            offset: 8
        }));
    assert!(tc.references.iter().any(|r| r.target
        == RefTarget::MapValue {
            map: ".rodata".into(),
            offset: 4
        }));
}

#[test]
fn sockops_fixture_program_types() {
    // programs/sockops.c
    let data = common::read(&common::fixture("sockops"));
    let obj = Object::parse(&data).unwrap();
    let types: Vec<_> = obj
        .programs()
        .iter()
        .map(|p| (p.name.as_str(), p.prog_type, p.expected_attach_type))
        .collect();
    assert_eq!(
        types,
        [
            (
                "connect4",
                ProgramType::CgroupSockAddr,
                Some(AttachType::CgroupInet4Connect)
            ),
            (
                "sockops_prog",
                ProgramType::SockOps,
                Some(AttachType::CgroupSockOps)
            ),
            (
                "sk_msg_redirect",
                ProgramType::SkMsg,
                Some(AttachType::SkMsgVerdict)
            ),
        ]
    );
    let sh = obj.map("sock_ops_map").unwrap();
    assert_eq!(
        (sh.map_type, sh.key_size, sh.value_size, sh.max_entries),
        (MapType::Sockhash, 20, 4, 65535)
    );
}

#[test]
fn core_relocations_are_reported() {
    // programs/core_reloc.c: two BPF_CORE_READs of struct task_struct fields.
    let data = common::read(&common::fixture("core_reloc"));
    let obj = Object::parse(&data).unwrap();
    let p = obj.program("trace_sleep").unwrap();
    assert!(p.needs_core());
    let btf = obj.btf().unwrap();
    let access: Vec<(&str, &str, &str)> = p
        .core_relocations
        .iter()
        .map(|c| {
            (
                btf.type_by_id(c.type_id).unwrap().name().unwrap(),
                c.access.as_str(),
                c.kind_name(),
            )
        })
        .collect();
    assert_eq!(
        access,
        [
            ("task_struct", "0:0", "field_byte_offset"),
            ("task_struct", "0:1", "field_byte_offset")
        ]
    );
    assert!(!obj.program("fentry_sleep").unwrap().needs_core());
    let f = obj.program("fentry_sleep").unwrap();
    assert_eq!(
        (
            f.prog_type,
            f.expected_attach_type,
            f.attach_target.as_deref()
        ),
        (
            ProgramType::Tracing,
            Some(AttachType::TraceFentry),
            Some("do_nanosleep")
        )
    );
}

#[test]
fn big_endian_object_reads_like_its_little_endian_twin() {
    // programs/big_endian.bpfeb.c built with -target bpfeb, and programs/big_endian_le.c,
    // which includes the same source, built with -target bpf.
    let be_data = common::read(&common::fixture("big_endian.bpfeb"));
    let le_data = common::read(&common::fixture("big_endian_le"));
    let be = Object::parse(&be_data).unwrap();
    let le = Object::parse(&le_data).unwrap();
    assert_eq!(be.endian(), handover_btf::Endian::Big);
    assert_eq!(le.endian(), handover_btf::Endian::Little);
    let strip = |o: &Object<'_>| {
        o.maps()
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    m.map_type,
                    m.key_size,
                    m.value_size,
                    m.max_entries,
                    m.flags,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&be), strip(&le));
    let flows = be.map("be_flows").unwrap();
    assert_eq!(
        (
            flows.key_size,
            flows.value_size,
            flows.max_entries,
            flows.flags
        ),
        (8, 8, 300, map_flags::NO_PREALLOC)
    );
    // Initial data keeps the object's byte order: it is copied into the map as is.
    assert_eq!(
        be.map(".rodata").unwrap().initial_data.as_deref(),
        Some(&[1, 2, 3, 4][..])
    );
    assert_eq!(
        le.map(".rodata").unwrap().initial_data.as_deref(),
        Some(&[4, 3, 2, 1][..])
    );
    // Instructions are decoded into host order: the two objects' programs are identical.
    let (bp, lp) = (be.program("be_xdp").unwrap(), le.program("be_xdp").unwrap());
    assert_eq!(bp.insns, lp.insns);
    assert_eq!(bp.references, lp.references);
}

#[test]
fn unknown_section_names_the_section_and_the_way_out() {
    // programs/sockops.c with its "sockops" section renamed to "sockopz" in .strtab (the
    // name may be the tail of ".relsockops", which is renamed along with it).
    let mut data = common::read(&common::fixture("sockops"));
    let (off, size) = common::section_range(&data, ".strtab");
    let at = off
        + data[off..off + size]
            .windows(8)
            .position(|w| w == b"sockops\0")
            .expect("section name in .strtab");
    data[at + 6] = b'z';
    let err = match Object::parse(&data) {
        Ok(_) => panic!("parsed an object with an unknown section"),
        Err(e) => e,
    };
    assert!(
        matches!(&err, ObjectError::UnknownSection { section } if section == "sockopz"),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("sockopz") && msg.contains("ObjectOptions::program_type"),
        "{msg}"
    );

    let opts = ObjectOptions::new().program_type(
        "sockopz",
        ProgramType::SockOps,
        Some(AttachType::CgroupSockOps),
    );
    let obj = Object::parse_with(&data, &opts).unwrap();
    let p = obj.program("sockops_prog").unwrap();
    assert_eq!(
        (p.prog_type, p.expected_attach_type, p.section.as_str()),
        (
            ProgramType::SockOps,
            Some(AttachType::CgroupSockOps),
            "sockopz"
        )
    );
}
