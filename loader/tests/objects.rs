//! Specs read from real objects: the fixtures (whose values are written in their C
//! sources under programs/) and the xdp-tools corpus.

#![expect(
    clippy::indexing_slicing,
    reason = "tests index into values they just checked; a panic is a failure"
)]

mod common;

use handover_btf::{Detail, Kind, Linkage};
use handover_loader::{
    MapOrigin, Object, ObjectError, ObjectFile, ObjectOptions, Pinning, RefTarget, SlotTarget,
};
use handover_uapi::{AttachType, MapType, ProgramType, map_flags};

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
                RefTarget::Ksym { name, kind, .. } => {
                    // An address load keeps clang's plain ld_imm64 until load time; a
                    // kfunc call is marked BPF_PSEUDO_KFUNC_CALL.
                    let expected = if insn.code == 0x85 {
                        assert_eq!(
                            *kind,
                            handover_loader::KsymKind::Func,
                            "{ctx}: call of {name}"
                        );
                        (0x85, 2)
                    } else {
                        (0x18, 0)
                    };
                    assert_eq!(
                        (insn.code, insn.src()),
                        expected,
                        "{ctx}: {} reference to ksym {name} at {}",
                        p.name,
                        r.insn
                    );
                }
                RefTarget::Call { function } | RefTarget::FuncAddr { function } => {
                    // A call is `call` with BPF_PSEUDO_CALL; a function address is an
                    // ld_imm64 the loader marks BPF_PSEUDO_FUNC (clang leaves src 0).
                    let expected = if matches!(r.target, RefTarget::Call { .. }) {
                        (0x85, 1)
                    } else {
                        (0x18, 4)
                    };
                    assert_eq!(
                        (insn.code, insn.src()),
                        expected,
                        "{ctx}: {} reference to {function} at {}",
                        p.name,
                        r.insn
                    );
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
        if let Some(fragment) = common::rejected(&path) {
            match file.parse() {
                Err(e) if e.to_string().contains(fragment) => continue,
                Err(e) => panic!(
                    "{}: expected an error with {fragment:?}, got {e}",
                    path.display()
                ),
                Ok(_) => panic!(
                    "{}: parsed, but it should fail with {fragment:?}",
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
    // The same source built with -DLEGACY_DEF_SHORT (programs/build/legacy_maps.short.o):
    // 20-byte records, the same maps.
    assert_eq!(common::section_range(&data, "maps").1, 2 * 28);
    let short = common::read(&common::fixture("legacy_maps.short"));
    assert_eq!(common::section_range(&short, "maps").1, 2 * 20);
    let short = Object::parse(&short).unwrap();
    assert_eq!(short.maps(), obj.maps());
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
fn a_section_libbpf_does_not_name_parses_with_its_type_unknown() {
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
    // It parses, with the type unknown: maps compare without program types.
    let obj = Object::parse(&data).unwrap();
    let p = obj.program("sockops_prog").unwrap();
    assert!(!p.type_known());
    assert_eq!((p.type_name(), p.section.as_str()), ("unknown", "sockopz"));
    assert_eq!(
        obj.program_sections()
            .iter()
            .filter(|s| s.prog_type.is_none())
            .map(|s| (s.section, s.prog_type, s.programs.clone()))
            .collect::<Vec<_>>(),
        [("sockopz", None, vec!["sockops_prog"])]
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

/// Names of the functions placed in `program`, in order.
fn placed<'a>(obj: &'a Object<'_>, program: &str) -> Vec<&'a str> {
    obj.program(program)
        .unwrap_or_else(|| panic!("no program {program}"))
        .functions
        .iter()
        .map(|f| f.name.as_str())
        .collect()
}

fn targets(obj: &Object<'_>, program: &str) -> Vec<RefTarget> {
    obj.program(program)
        .unwrap_or_else(|| panic!("no program {program}"))
        .references
        .iter()
        .map(|r| r.target.clone())
        .collect()
}

#[test]
fn callback_address_relocated_against_text_is_a_pseudo_func_load() {
    // programs/subprogs.c: bpf_loop(16, loop_step, ...) and
    // bpf_for_each_map_elem(&counters, sum_entry, ...). clang emits the callback address
    // as `ld_imm64 r2, <byte offset>` with src 0, relocated against the .text section
    // symbol; this was rejected as "relocation against  on instruction 0x18".
    let data = common::read(&common::fixture("subprogs"));
    let obj = Object::parse(&data).unwrap();
    check_invariants(&common::fixture("subprogs"), &obj);
    assert_eq!(
        placed(&obj, "xdp_second"),
        ["xdp_second", "loop_step", "count_packet", "add_bytes"]
    );
    assert_eq!(
        targets(&obj, "xdp_second"),
        [
            RefTarget::FuncAddr {
                function: "loop_step".into()
            },
            RefTarget::Call {
                function: "count_packet".into()
            },
            RefTarget::Map {
                map: "counters".into()
            },
            RefTarget::Call {
                function: "add_bytes".into()
            },
        ]
    );
    // The for_each callback calls a static subprogram of its own, which is appended too.
    assert_eq!(
        placed(&obj, "xdp_third"),
        ["xdp_third", "sum_entry", "add_bytes"]
    );
    let third = obj.program("xdp_third").unwrap();
    let addr = third
        .references
        .iter()
        .find(|r| {
            r.target
                == RefTarget::FuncAddr {
                    function: "sum_entry".into(),
                }
        })
        .expect("sum_entry address");
    let insn = third.insns[addr.insn];
    assert_eq!((insn.code, insn.src()), (0x18, 4), "BPF_PSEUDO_FUNC");
    assert_eq!(
        i64::try_from(addr.insn).unwrap() + 1 + i64::from(insn.imm),
        i64::try_from(third.functions[1].start).unwrap()
    );
    assert_eq!(third.insns[addr.insn + 1].imm, 0, "second half cleared");
}

#[test]
fn several_programs_in_one_section_with_shared_subprograms() {
    // programs/subprogs.c: four programs in section xdp; count_packet (global), add_bytes
    // (static) and classify_len (weak) in .text, each copied into every program using it.
    let data = common::read(&common::fixture("subprogs"));
    let obj = Object::parse(&data).unwrap();
    let names: Vec<&str> = obj.programs().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["xdp_first", "xdp_second", "xdp_third", "xdp_dispatch"]
    );
    for p in obj.programs() {
        assert_eq!(
            (p.section.as_str(), p.prog_type, p.autoload),
            ("xdp", ProgramType::Xdp, true)
        );
    }
    // Depth first, as libbpf appends them: count_packet's own callee add_bytes comes
    // before classify_len, which xdp_first calls after count_packet.
    assert_eq!(
        placed(&obj, "xdp_first"),
        ["xdp_first", "count_packet", "add_bytes", "classify_len"]
    );
    assert_eq!(placed(&obj, "xdp_dispatch"), ["xdp_dispatch"]);
    // BTF FUNC linkage as the source declares it.
    let btf = obj.btf().unwrap();
    let linkage = |name: &str| {
        let id = btf.id_by_name(name, Kind::Func).unwrap();
        match btf.type_by_id(id).unwrap().detail() {
            Detail::Func(f) => f.linkage,
            other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!(linkage("count_packet"), Linkage::GLOBAL);
    assert_eq!(
        linkage("classify_len"),
        Linkage::GLOBAL,
        "weak is global in BTF"
    );
    assert_eq!(linkage("add_bytes"), Linkage::STATIC);
    assert_eq!(linkage("loop_step"), Linkage::STATIC);
    // Tail calls: one prog array left empty, one initialised with two programs of the
    // same section.
    assert!(obj.map("jump_table").unwrap().initial_slots.is_empty());
    let init = obj.map("jump_table_init").unwrap();
    assert_eq!(init.map_type, MapType::ProgArray);
    let slots: Vec<(u32, SlotTarget)> = init
        .initial_slots
        .iter()
        .map(|s| (s.index, s.target.clone()))
        .collect();
    assert_eq!(
        slots,
        [
            (1, SlotTarget::Program("xdp_second".into())),
            (2, SlotTarget::Program("xdp_third".into())),
        ]
    );
}

#[test]
fn compiler_variants_give_the_same_specs() {
    // programs/subprogs.c built with -mcpu=v1/v2/v3, -target bpfeb and
    // -ffunction-sections, and
    // programs/data_sections.c with its DWARF stripped (programs/build.sh): the maps, the
    // functions placed and what each instruction refers to do not depend on them.
    type Shape = (
        Vec<MapSpecShape>,
        Vec<(String, Vec<String>, Vec<RefTarget>)>,
    );
    type MapSpecShape = (String, MapType, u32, u32, u32, u32);
    fn shape(obj: &Object<'_>) -> Shape {
        (
            obj.maps()
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
                .collect(),
            obj.programs()
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        p.functions.iter().map(|f| f.name.clone()).collect(),
                        p.references.iter().map(|r| r.target.clone()).collect(),
                    )
                })
                .collect(),
        )
    }
    for (base, variants) in [
        (
            "subprogs",
            &[
                "subprogs.v1",
                "subprogs.v2",
                "subprogs.v3",
                "subprogs.bpfeb",
                // -ffunction-sections: subprograms in .text.NAME sections were taken for
                // programs of an unknown type.
                "subprogs.fsections",
            ][..],
        ),
        ("data_sections", &["data_sections.stripped"][..]),
    ] {
        let data = common::read(&common::fixture(base));
        let want = shape(&Object::parse(&data).unwrap());
        for v in variants {
            let vdata = common::read(&common::fixture(v));
            let obj = Object::parse(&vdata).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(shape(&obj), want, "{v} against {base}");
        }
    }
    // programs/map_types_edge.c at -O0: the same BTF-defined maps, plus a .data map
    // holding the helper pointers clang calls through when it does not optimise.
    let o2 = common::read(&common::fixture("map_types_edge"));
    let o0 = common::read(&common::fixture("map_types_edge.O0"));
    let (o2, o0) = (Object::parse(&o2).unwrap(), Object::parse(&o0).unwrap());
    let btf_maps = |o: &Object<'_>| -> Vec<MapSpecShape> {
        shape(o)
            .0
            .into_iter()
            .filter(|m| !m.0.starts_with('.'))
            .collect()
    };
    let mut a = btf_maps(&o2);
    let mut b = btf_maps(&o0);
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert!(o2.map(".data").is_none());
    assert_eq!(
        o0.map(".data").unwrap().origin,
        MapOrigin::GlobalData {
            section: ".data".into()
        }
    );
    let be = common::read(&common::fixture("subprogs.bpfeb"));
    assert_eq!(
        Object::parse(&be).unwrap().endian(),
        handover_btf::Endian::Big
    );
}

#[test]
fn objects_without_btf() {
    // programs/legacy_maps.c built with -g0: no .BTF, no .BTF.ext; the legacy maps and
    // the program are read all the same.
    let g0 = common::read(&common::fixture("legacy_maps.g0"));
    let obj = Object::parse(&g0).unwrap();
    assert!(obj.btf().is_none());
    let with_btf = common::read(&common::fixture("legacy_maps"));
    let full = Object::parse(&with_btf).unwrap();
    assert_eq!(obj.maps(), full.maps());
    let (p, q) = (&obj.programs()[0], &full.programs()[0]);
    assert_eq!(
        (&p.name, &p.insns, &p.references),
        (&q.name, &q.insns, &q.references)
    );
    assert!(p.func_info.is_empty() && p.line_info.is_empty());
    // programs/subprogs.c built with -g0: BTF-defined maps cannot be read without BTF.
    let g0 = common::read(&common::fixture("subprogs.g0"));
    match Object::parse(&g0) {
        Err(ObjectError::Section { section, reason }) => {
            assert_eq!(section, ".maps");
            assert!(reason.contains("need a .BTF section"), "{reason}");
        }
        other => panic!("expected a .maps error, got {other:?}"),
    }
}

#[test]
fn optional_autoload_prefix_is_stripped_and_reported() {
    // programs/sections.c: SEC("?xdp") was an unknown section name.
    let data = common::read(&common::fixture("sections"));
    let obj = Object::parse(&data).unwrap();
    let p = obj.program("xdp_optional").unwrap();
    assert_eq!(
        (
            p.section.as_str(),
            p.prog_type,
            p.expected_attach_type,
            p.autoload
        ),
        ("xdp", ProgramType::Xdp, Some(AttachType::Xdp), false)
    );
    assert!(
        obj.programs()
            .iter()
            .filter(|q| q.name != "xdp_optional")
            .all(|q| q.autoload)
    );
    // An explicit type given for the name with or without the `?` applies.
    let with = Object::parse_with(
        &data,
        &ObjectOptions::new().program_type("?xdp", ProgramType::SchedCls, None),
    )
    .unwrap();
    assert_eq!(
        with.program("xdp_optional").unwrap().prog_type,
        ProgramType::SchedCls
    );
}

/// (program, section, type, attach type, attach target, sleepable, xdp frags).
type Hook = (
    &'static str,
    &'static str,
    ProgramType,
    Option<AttachType>,
    Option<&'static str>,
    bool,
    bool,
);

#[test]
fn wider_hook_section_names() {
    // programs/sections.c: (program, section, type, attach type, attach target,
    // sleepable, xdp frags).
    let data = common::read(&common::fixture("sections"));
    let obj = Object::parse(&data).unwrap();
    let cases: &[Hook] = &[
        (
            "tcx_in",
            "tc/ingress",
            ProgramType::SchedCls,
            Some(AttachType::TcxIngress),
            None,
            false,
            false,
        ),
        (
            "tcx_out",
            "tc/egress",
            ProgramType::SchedCls,
            Some(AttachType::TcxEgress),
            None,
            false,
            false,
        ),
        (
            "xdp_multi_buffer",
            "xdp.frags",
            ProgramType::Xdp,
            Some(AttachType::Xdp),
            None,
            false,
            true,
        ),
        (
            "sock_create",
            "cgroup/sock_create",
            ProgramType::CgroupSock,
            Some(AttachType::CgroupInetSockCreate),
            None,
            false,
            false,
        ),
        (
            "nf_accept",
            "netfilter",
            ProgramType::Netfilter,
            Some(AttachType::Netfilter),
            None,
            false,
            false,
        ),
        (
            "lookup",
            "sk_lookup",
            ProgramType::SkLookup,
            Some(AttachType::SkLookup),
            None,
            false,
            false,
        ),
        (
            "dissect",
            "flow_dissector",
            ProgramType::FlowDissector,
            Some(AttachType::FlowDissector),
            None,
            false,
            false,
        ),
        (
            "writable_tp",
            "raw_tp.w/sched_switch",
            ProgramType::RawTracepointWritable,
            None,
            Some("sched_switch"),
            false,
            false,
        ),
        (
            "dump_task",
            "iter/task",
            ProgramType::Tracing,
            Some(AttachType::TraceIter),
            Some("task"),
            false,
            false,
        ),
        (
            "sleepable_uprobe",
            "uprobe.s//usr/bin/true:main",
            ProgramType::Kprobe,
            None,
            Some("/usr/bin/true:main"),
            true,
            false,
        ),
        (
            "sleepable_fentry",
            "fentry.s/do_nanosleep",
            ProgramType::Tracing,
            Some(AttachType::TraceFentry),
            Some("do_nanosleep"),
            true,
            false,
        ),
        (
            "lsm_open",
            "lsm/file_open",
            ProgramType::Lsm,
            Some(AttachType::LsmMac),
            Some("file_open"),
            false,
            false,
        ),
        (
            "btf_tp",
            "tp_btf/sched_wakeup",
            ProgramType::Tracing,
            Some(AttachType::TraceRawTp),
            Some("sched_wakeup"),
            false,
            false,
        ),
        (
            "unlink_ret",
            "kretprobe/do_unlinkat",
            ProgramType::Kprobe,
            None,
            Some("do_unlinkat"),
            false,
            false,
        ),
        (
            "skb_egress",
            "cgroup_skb/egress",
            ProgramType::CgroupSkb,
            Some(AttachType::CgroupInetEgress),
            None,
            false,
            false,
        ),
        (
            "msg_verdict",
            "sk_msg",
            ProgramType::SkMsg,
            Some(AttachType::SkMsgVerdict),
            None,
            false,
            false,
        ),
    ];
    for &(name, section, ty, attach, target, sleepable, frags) in cases {
        let p = obj
            .program(name)
            .unwrap_or_else(|| panic!("no program {name}"));
        assert_eq!(
            (
                p.section.as_str(),
                p.prog_type,
                p.expected_attach_type,
                p.attach_target.as_deref(),
                p.sleepable,
                p.xdp_frags
            ),
            (section, ty, attach, target, sleepable, frags),
            "{name}"
        );
    }
    assert_eq!(obj.programs().len(), cases.len() + 1, "and xdp_optional");
}

#[test]
fn global_data_in_custom_and_string_sections() {
    // programs/data_sections.c
    let data = common::read(&common::fixture("data_sections"));
    let obj = Object::parse(&data).unwrap();
    let m = |n: &str| obj.map(n).unwrap_or_else(|| panic!("no map {n}"));
    // Global variables make a section mmapable; only static ones do not.
    for (name, flags, frozen) in [
        (
            ".rodata",
            map_flags::RDONLY_PROG | map_flags::MMAPABLE,
            true,
        ),
        (
            ".rodata.limits",
            map_flags::RDONLY_PROG | map_flags::MMAPABLE,
            true,
        ),
        (".rodata.str1.1", map_flags::RDONLY_PROG, true),
        (".data", map_flags::MMAPABLE, false),
        (".data.stats", map_flags::MMAPABLE, false),
        (".data.private", 0, false),
        (".bss", map_flags::MMAPABLE, false),
    ] {
        let map = m(name);
        assert_eq!(
            (
                map.map_type,
                map.key_size,
                map.max_entries,
                map.flags,
                map.frozen
            ),
            (MapType::Array, 4, 1, flags, frozen),
            "{name}"
        );
        assert!(matches!(&map.origin, MapOrigin::GlobalData { section } if section == name));
    }
    // String literals have no DATASEC: no value type, contents as compiled.
    let s = m(".rodata.str1.1");
    assert_eq!(s.value_type, None);
    assert_eq!(s.initial_data.as_deref(), Some(&b"too long\n\0"[..]));
    // .data.stats: custom_counter = 7, then custom_hist[8] zeroed.
    let stats = m(".data.stats");
    assert_eq!(stats.value_size, 8 + 8 * 4);
    assert_eq!(
        &stats.initial_data.as_deref().unwrap()[..8],
        &7_u64.to_le_bytes()
    );
    assert_eq!(
        m(".data.private").initial_data.as_deref(),
        Some(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0][..])
    );
    assert_eq!(
        m(".rodata.limits").initial_data.as_deref(),
        Some(&(1_u64 << 20).to_le_bytes()[..])
    );
    // .rodata: cfg_sample_rate = 64, cfg_verbose = 1, cfg_tag = "edge" in declaration
    // order (the object's DATASEC leaves every offset 0 for the loader to fill from the
    // symbols), then bpf_printk's format string.
    let ro = m(".rodata");
    let bytes = ro.initial_data.as_deref().unwrap();
    assert_eq!(&bytes[..10], b"\x40\0\0\0\x01edge\0");
    assert!(bytes.ends_with(b"flow %u of %u tag %s\0"));
    // .bss: flow_slot flows[16] (16 bytes each), then flows_used and dropped.
    let bss = m(".bss");
    assert_eq!(bss.value_size, 16 * 16 + 8 + 8);
    let pc = m("percpu_slots");
    assert_eq!(
        (pc.map_type, pc.value_size, pc.max_entries),
        (MapType::PercpuArray, 32, 4)
    );
    let p = obj.program("data_user").unwrap();
    assert!(p.references.iter().any(|r| r.target
        == RefTarget::MapValue {
            map: ".rodata.str1.1".into(),
            offset: 0
        }));
    // programs/bss_named.c: .bss.NAME sections are maps of their own.
    let data = common::read(&common::fixture("bss_named"));
    let obj = Object::parse(&data).unwrap();
    let scratch = obj.map(".bss.scratch").unwrap();
    assert_eq!(
        (scratch.value_size, scratch.flags),
        (4 * 8, map_flags::MMAPABLE)
    );
    assert_eq!(obj.map(".bss.hidden").unwrap().flags, 0, "static only");
}

#[test]
fn map_attributes_and_types_at_the_edges() {
    // programs/map_types_edge.c
    let data = common::read(&common::fixture("map_types_edge"));
    let obj = Object::parse(&data).unwrap();
    let btf = obj.btf().unwrap();
    let m = |n: &str| obj.map(n).unwrap_or_else(|| panic!("no map {n}"));
    let np = m("no_prealloc");
    assert_eq!((np.map_type, np.flags, np.key_size), (MapType::Hash, 1, 8));
    assert_eq!(np.flags, map_flags::NO_PREALLOC);
    // __type(key, anon_key_t): the typedef, naming an anonymous struct.
    let key = btf.type_by_id(np.key_type.unwrap()).unwrap();
    assert_eq!(
        (key.kind(), key.name().unwrap()),
        (Kind::Typedef, "anon_key_t")
    );
    let numa = m("on_node_zero");
    assert_eq!((numa.numa_node, numa.value_size), (Some(0), 16));
    let bloom = m("bloom");
    assert_eq!(
        (
            bloom.map_type,
            bloom.map_extra,
            bloom.key_size,
            bloom.value_size,
            bloom.max_entries
        ),
        (MapType::BloomFilter, 5, 0, 8, 1000)
    );
    let sizes = m("sizes_only");
    assert_eq!(
        (
            sizes.key_size,
            sizes.value_size,
            sizes.flags,
            sizes.key_type,
            sizes.value_type
        ),
        (7, 16, map_flags::NO_COMMON_LRU, None, None),
        "packed 7-byte key, bitfield struct value, given by size only"
    );
    let long = "a_map_with_a_deliberately_very_long_name_that_the_kernel_truncates_to_fifteen";
    let lm = m(long);
    assert_eq!(
        (lm.key_size, lm.value_size),
        (4, 16),
        "enum key, __int128 value"
    );
    assert!(
        obj.program("use_maps")
            .unwrap()
            .references
            .iter()
            .any(|r| r.target == RefTarget::Map { map: long.into() })
    );
    // enum verdict: negative values, stored as their 32-bit pattern by clang 14.
    let Detail::Enum(e) = btf
        .type_by_id(btf.id_by_name("verdict", Kind::Enum).unwrap())
        .unwrap()
        .detail()
    else {
        panic!("verdict is not an ENUM")
    };
    let values: Vec<(String, i64)> = e
        .values
        .map(|v| (v.name().unwrap().to_owned(), v.as_i64()))
        .collect();
    assert_eq!(
        values,
        [
            ("VERDICT_ERROR".to_owned(), -2),
            ("VERDICT_UNKNOWN".to_owned(), -1),
            ("VERDICT_PASS".to_owned(), 0),
            ("VERDICT_DROP".to_owned(), 0x7fff_ffff),
        ]
    );
    assert_eq!(m("events").map_type, MapType::Ringbuf);
}

#[test]
fn statically_linked_object_and_its_unlinked_halves() {
    // programs/link/linked_{a,b}.c, linked by `bpftool gen object` into linked.o.
    let data = common::read(&common::fixture("linked"));
    let obj = Object::parse(&data).unwrap();
    let names: Vec<&str> = obj.maps().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, [".data", ".rodata", "shared"]);
    // a_counter = 1 and b_counter = 2 merged into one .data.
    assert_eq!(
        obj.map(".data").unwrap().initial_data.as_deref(),
        Some(&[1, 0, 0, 0, 2, 0, 0, 0][..])
    );
    assert_eq!(
        placed(&obj, "linked_xdp"),
        ["linked_xdp", "a_record", "b_weight"]
    );
    assert_eq!(placed(&obj, "linked_tc"), ["linked_tc", "a_record"]);
    assert!(targets(&obj, "linked_tc").contains(&RefTarget::MapValue {
        map: ".data".into(),
        offset: 4
    }));
    // Each half alone refers to what the other defines: a clear error, not a kernel
    // extern one (they were reported as "an extern (extern) ... against the running
    // kernel").
    for (half, symbol) in [("link/linked_a", "b_weight"), ("link/linked_b", "shared")] {
        let data = common::read(&common::fixture(half));
        match Object::parse(&data) {
            Err(e @ ObjectError::UndefinedSymbol { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(symbol) && text.contains("bpftool gen object"),
                    "{text}"
                );
            }
            other => panic!("{half}: expected UndefinedSymbol {symbol}, got {other:?}"),
        }
    }
}

#[test]
fn struct_ops_map_is_refused_naming_map_section_and_type() {
    // programs/struct_ops.c
    let data = common::read(&common::fixture("struct_ops"));
    match Object::parse(&data) {
        Err(ObjectError::Map { map, reason }) => {
            assert_eq!(map, "edge_cc");
            assert!(
                reason.contains(".struct_ops.link") && reason.contains("tcp_congestion_ops"),
                "{reason}"
            );
        }
        other => panic!("expected a struct_ops map error, got {other:?}"),
    }
}

#[test]
fn function_sections_hold_subprograms_not_programs() {
    // programs/subprogs.c built with -ffunction-sections: each subprogram in its own
    // .text.NAME section was taken for a program whose section names no type.
    let data = common::read(&common::fixture("subprogs.fsections"));
    let obj = Object::parse(&data).unwrap();
    let names: Vec<&str> = obj.programs().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["xdp_first", "xdp_second", "xdp_third", "xdp_dispatch"]
    );
    assert_eq!(
        placed(&obj, "xdp_second"),
        ["xdp_second", "loop_step", "count_packet", "add_bytes"]
    );
    // func_info and line_info of subprograms come from their own .text.NAME sections.
    let p = obj.program("xdp_second").unwrap();
    assert_eq!(p.func_info.len(), 4);
    for f in &p.functions {
        assert!(
            p.line_info.iter().any(|l| l.insn as usize == f.start),
            "{} has no line info at its start",
            f.name
        );
    }
}

#[test]
fn every_core_relocation_kind_and_one_in_a_subprogram() {
    // programs/core_kinds.c
    let data = common::read(&common::fixture("core_kinds"));
    let obj = Object::parse(&data).unwrap();
    let btf = obj.btf().unwrap();
    let p = obj.program("core_all").unwrap();
    let kinds: std::collections::BTreeSet<&str> =
        p.core_relocations.iter().map(|c| c.kind_name()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "enumval_exists",
            "enumval_value",
            "field_byte_offset",
            "field_byte_size",
            "field_exists",
            "field_lshift_u64",
            "field_rshift_u64",
            "field_signed",
            "type_exists",
            "type_id_local",
            "type_id_target",
            "type_size",
        ]
    );
    let named = |c: &handover_loader::CoreRelocation| -> (String, String, &'static str) {
        (
            btf.type_by_id(c.type_id)
                .unwrap()
                .name()
                .unwrap()
                .to_owned(),
            c.access.clone(),
            c.kind_name(),
        )
    };
    // The relocation of read_pid (BPF_CORE_READ(t, pid): member 0) moved with it: the
    // last record, inside the appended subprogram.
    let sub = &p.functions[1];
    assert_eq!(sub.name, "read_pid");
    let last = p.core_relocations.last().unwrap();
    assert!((sub.start..sub.start + sub.len).contains(&(last.insn as usize)));
    assert_eq!(
        named(last),
        ("task_struct".into(), "0:0".into(), "field_byte_offset")
    );
    // Enum value relocations name the enumerator by index: EDGE_BUSY is 1, EDGE_IDLE 0.
    let enums: Vec<_> = p
        .core_relocations
        .iter()
        .filter(|c| c.kind_name().starts_with("enumval"))
        .map(named)
        .collect();
    assert_eq!(
        enums,
        [
            ("edge_state".into(), "1".into(), "enumval_exists"),
            ("edge_state".into(), "0".into(), "enumval_value")
        ]
    );
    assert!(
        p.core_relocations
            .iter()
            .map(named)
            .any(|n| n == ("sized_t".into(), "0".into(), "type_size")),
        "typedef root"
    );
    assert!(
        p.core_relocations
            .windows(2)
            .all(|w| w[0].insn <= w[1].insn)
    );
}

#[test]
fn a_map_in_map_declared_with_sizes_only_parses_without_an_inner_map() {
    // programs/map_in_map_sized.c: a hash of maps with key_size and value_size, no
    // __array(values, ...).
    let data = common::read(&common::fixture("map_in_map_sized"));
    let obj = Object::parse(&data).unwrap();
    let outer = obj.map("backends_by_service").unwrap();
    assert_eq!(
        (
            outer.map_type,
            outer.key_size,
            outer.value_size,
            outer.max_entries
        ),
        (MapType::HashOfMaps, 4, 4, 16)
    );
    assert!(outer.inner.is_none());
    assert!(outer.needs_inner_template());
    // A map-in-map with its inner definition needs no template.
    let data = common::read(&common::fixture("map_in_map"));
    let obj = Object::parse(&data).unwrap();
    assert!(!obj.map("outer_hash").unwrap().needs_inner_template());
}
