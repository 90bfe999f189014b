#![expect(clippy::indexing_slicing, reason = "tests index buffers they built")]

use std::collections::HashMap;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use handover_btf::{Builder, StrOffset};

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../programs/build/{name}.o", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}: run programs/build.sh"))
}

/// Section sizes and variables read straight from an ELF file, independently of
/// [`Object::parse`].
struct ElfLayout {
    sizes: HashMap<String, u64>,
    vars: HashMap<(String, String), (u64, bool)>,
}

impl ElfLayout {
    fn read(data: &[u8]) -> Self {
        let elf = object::read::elf::ElfFile64::<object::Endianness>::parse(data).unwrap();
        let mut sizes = HashMap::new();
        for s in elf.sections() {
            sizes.insert(s.name().unwrap().to_owned(), s.size());
        }
        let mut vars = HashMap::new();
        for sym in elf.symbols() {
            let Some(index) = sym.section_index() else {
                continue;
            };
            let sec = elf.section_by_index(index).unwrap();
            vars.insert(
                (
                    sec.name().unwrap().to_owned(),
                    sym.name().unwrap().to_owned(),
                ),
                (sym.address(), false),
            );
        }
        Self { sizes, vars }
    }
}

impl SectionLayout for ElfLayout {
    fn section_size(&self, section: &str) -> Option<u64> {
        self.sizes.get(section).copied()
    }

    fn variable(&self, section: &str, name: &str) -> Option<(u64, bool)> {
        self.vars
            .get(&(section.to_owned(), name.to_owned()))
            .copied()
    }
}

fn btf_kinds() -> Vec<u8> {
    let data = fixture("btf_kinds");
    let elf = object::read::elf::ElfFile64::<object::Endianness>::parse(&*data).unwrap();
    elf.section_by_name(".BTF")
        .unwrap()
        .data()
        .unwrap()
        .to_vec()
}

fn kinds(btf: &Btf<'_>) -> Vec<Kind> {
    btf.types().map(|(_, t)| t.kind()).collect()
}

#[test]
fn kernel_names_keep_fifteen_bytes_of_allowed_characters() {
    assert_eq!(kernel_name("tc_account"), "tc_account");
    assert_eq!(kernel_name("a_rather_long_program_name"), "a_rather_long_p");
    assert_eq!(kernel_name(".data.config"), ".data.config");
    assert_eq!(kernel_name("x-y z"), "x_y_z");
    assert_eq!(kernel_name(""), "");
}

#[test]
fn relocation_writes_map_fds_and_keeps_value_offsets() {
    // programs/global_data.c: loads of .data, .rodata, .bss and .data.config values.
    let data = fixture("global_data");
    let obj = Object::parse(&data).unwrap();
    let fds: HashMap<&str, i32> = obj
        .maps()
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.as_str(), 100 + i32::try_from(i).unwrap()))
        .collect();
    let mut value_refs = 0;
    for p in obj.programs() {
        let insns = relocate(p, &|m| fds.get(m).copied()).unwrap();
        assert_eq!(insns.len(), p.insns.len());
        for r in &p.references {
            let (first, second) = (insns[r.insn], insns[r.insn + 1]);
            match &r.target {
                RefTarget::MapValue { map, offset } => {
                    assert_eq!(first.src(), crate::PSEUDO_MAP_VALUE);
                    assert_eq!(first.imm, fds[map.as_str()]);
                    assert_eq!(second.imm, i32::try_from(*offset).unwrap());
                    value_refs += 1;
                }
                RefTarget::Map { map } => {
                    assert_eq!(first.src(), crate::PSEUDO_MAP_FD);
                    assert_eq!(first.imm, fds[map.as_str()]);
                    assert_eq!(second.imm, 0);
                }
                _ => assert_eq!(first, p.insns[r.insn], "calls are already resolved"),
            }
        }
        // Everything but the referencing instructions is unchanged.
        for (i, (a, b)) in insns.iter().zip(&p.insns).enumerate() {
            if !p.references.iter().any(|r| r.insn == i || r.insn + 1 == i) {
                assert_eq!(a, b, "{}: instruction {i}", p.name);
            }
        }
    }
    assert!(value_refs >= 5, "{value_refs}");

    let p = obj.program("tc_account").unwrap();
    let err = relocate(p, &|m| (m != ".bss").then_some(3)).unwrap_err();
    assert!(err.to_string().contains("map .bss"), "{err}");
}

#[test]
fn relocation_refuses_a_reference_off_an_ld_imm64() {
    let data = fixture("global_data");
    let obj = Object::parse(&data).unwrap();
    let mut p = obj.program("tc_second").unwrap().clone();
    let r = p.references.first().unwrap().insn;
    p.insns[r] = Insn::new(0xb7, 0, 0, 0, 0); // r0 = 0
    let err = relocate(&p, &|_| Some(3)).unwrap_err();
    assert!(err.to_string().contains("ld_imm64"), "{err}");
}

#[test]
fn btf_info_records_are_packed_as_the_kernel_reads_them() {
    let data = fixture("global_data");
    let obj = Object::parse(&data).unwrap();
    let p = obj.program("tc_account").unwrap();
    let f = func_info_bytes(p);
    assert_eq!(f.len(), p.func_info.len() * 8);
    assert_eq!(
        f[..4],
        0u32.to_ne_bytes(),
        "the program's own function at 0"
    );
    assert_eq!(f[4..8], p.func_info[0].type_id.0.to_ne_bytes());
    let l = line_info_bytes(p);
    assert_eq!(l.len(), p.line_info.len() * 16);
    let li = p.line_info[1];
    let word = |i: usize| u32::from_ne_bytes(l[16 + i * 4..20 + i * 4].try_into().unwrap());
    assert_eq!(word(0), li.insn);
    assert_eq!(word(1), li.file_name.0);
    assert_eq!(word(2), li.line.0);
    assert_eq!(word(3) >> 10, li.line_number);
    assert_eq!(word(3) & 0x3ff, li.column);
}

#[test]
fn datasec_sizes_and_offsets_come_from_the_elf_file() {
    // programs/global_data.c: clang leaves every DATASEC size and VAR offset zero.
    let data = fixture("global_data");
    let obj = Object::parse(&data).unwrap();
    let orig = obj.btf().unwrap();
    let blob = prepare_btf(&obj, &BtfFeatures::ALL).unwrap().unwrap();
    let btf = Btf::parse(&blob).unwrap();
    assert_eq!(
        kinds(&btf),
        kinds(orig),
        "no kind changes with every feature"
    );
    // String offsets stay valid: the original string section is a prefix.
    assert!(btf.string_section().starts_with(orig.string_section()));
    let mut checked = 0;
    for sec in [".data", ".rodata", ".bss", ".data.config", "license"] {
        let id = btf.id_by_name(sec, Kind::Datasec).unwrap();
        let Detail::Datasec(ds) = btf.type_by_id(id).unwrap().detail() else {
            panic!("{sec}");
        };
        assert_eq!(u64::from(ds.size), obj.section_size(sec).unwrap(), "{sec}");
        let mut last = 0;
        for v in ds.vars {
            let name = btf.type_by_id(v.ty).unwrap().name().unwrap();
            let sym = obj.variable(sec, name).unwrap();
            assert_eq!(u64::from(v.offset), sym.offset, "{sec} {name}");
            assert!(v.offset >= last, "{sec}: variables sorted by offset");
            last = v.offset;
            checked += 1;
        }
    }
    // .rodata: drop_mark and greeting; .bss: bytes_seen and zero_counter at distinct
    // offsets, which the original BTF had both at 0.
    assert!(checked >= 7, "{checked}");
}

#[test]
fn every_optional_kind_is_rewritten_for_a_basic_kernel() {
    // programs/btf_kinds.c: one of every kind clang emits, and a __ksym extern.
    let raw = btf_kinds();
    let orig = Btf::parse(&raw).unwrap();
    let layout = ElfLayout::read(&fixture("btf_kinds"));
    for k in [
        Kind::Var,
        Kind::Datasec,
        Kind::Func,
        Kind::FuncProto,
        Kind::Float,
        Kind::DeclTag,
        Kind::TypeTag,
    ] {
        assert!(kinds(&orig).contains(&k), "fixture lacks {k:?}");
    }
    let blob = prepare_btf_with(&orig, &layout, &BtfFeatures::BASIC).unwrap();
    let btf = Btf::parse(&blob).unwrap();
    // String offsets stay valid: the strings are the same but for the dots of the
    // DATASEC names, which struct names may not hold.
    let (new, old) = (btf.string_section(), orig.string_section());
    assert!(new.len() >= old.len());
    for (i, (a, b)) in new.iter().zip(old).enumerate() {
        assert!(a == b || (*b, *a) == (b'.', b'_'), "string byte {i}");
    }
    // Original ids keep their place; new types only come after them.
    assert!(btf.type_count() >= orig.type_count());
    for (id, t) in orig.types() {
        let new = btf.type_by_id(id).unwrap();
        let want = match t.kind() {
            Kind::Var | Kind::DeclTag => Kind::Int,
            Kind::Datasec | Kind::Float => Kind::Struct,
            Kind::Func => Kind::Typedef,
            Kind::FuncProto => Kind::Enum,
            Kind::TypeTag => Kind::Const,
            Kind::Enum64 => Kind::Union,
            k => k,
        };
        assert_eq!(new.kind(), want, "type {}", id.0);
        if want == Kind::Enum {
            assert!(!new.kind_flag(), "type {}: signed enum left", id.0);
        }
        if t.kind() == Kind::Datasec {
            assert!(
                !new.name().unwrap().contains('.'),
                "struct named with a dot"
            );
            assert_eq!(new.vlen(), t.vlen());
        }
        if t.kind() == Kind::Enum64 {
            assert_eq!(new.size_or_type(), t.size_or_type(), "union keeps the size");
        }
    }
}

#[test]
fn enum64_becomes_a_union_and_signed_enums_unsigned() {
    // Clang of this toolchain encodes the 64-bit enums of btf_kinds.c as 8-byte ENUMs,
    // so the ENUM64 input is built here: int, ENUM64 {a = 1 << 32, b = 2}, signed
    // ENUM {n = -1}.
    let mut b = Builder::new(Endian::native());
    let int = b.string("int");
    b.add(int, Kind::Int, false, 0, 4, &[(1 << 24) | 32]);
    let (e, a, bb) = (b.string("wide"), b.string("a"), b.string("b"));
    let wide = b.add(e, Kind::Enum64, false, 2, 8, &[a.0, 0, 1, bb.0, 2, 0]);
    let (s, neg) = (b.string("signed"), b.string("n"));
    let signed = b.add(s, Kind::Enum, true, 1, 4, &[neg.0, u32::MAX]);
    let blob = b.finish();
    let orig = Btf::parse(&blob).unwrap();
    let none = ElfLayout {
        sizes: HashMap::new(),
        vars: HashMap::new(),
    };
    let out = prepare_btf_with(&orig, &none, &BtfFeatures::BASIC).unwrap();
    let btf = Btf::parse(&out).unwrap();
    let u = btf.type_by_id(wide).unwrap();
    assert_eq!((u.kind(), u.size_or_type(), u.vlen()), (Kind::Union, 8, 2));
    let Detail::Union(c) = u.detail() else {
        panic!()
    };
    let placeholder = btf.id_by_name("enum64_placeholder", Kind::Int).unwrap();
    for m in c.members {
        assert_eq!((m.ty, m.bit_offset), (placeholder, 0));
    }
    let e = btf.type_by_id(signed).unwrap();
    assert_eq!((e.kind(), e.kind_flag()), (Kind::Enum, false));
    // With ENUM64 support nothing changes.
    let same = prepare_btf_with(&orig, &none, &BtfFeatures::ALL).unwrap();
    assert_eq!(same, blob);
}

#[test]
fn extern_and_global_linkage_are_fixed_for_the_kernel() {
    let raw = btf_kinds();
    let orig = Btf::parse(&raw).unwrap();
    let layout = ElfLayout::read(&fixture("btf_kinds"));
    let blob = prepare_btf_with(&orig, &layout, &BtfFeatures::ALL).unwrap();
    let btf = Btf::parse(&blob).unwrap();
    let ksyms = btf.id_by_name(".ksyms", Kind::Datasec).unwrap();
    let Detail::Datasec(ds) = btf.type_by_id(ksyms).unwrap().detail() else {
        panic!()
    };
    assert_eq!(ds.size, 4 * u32::try_from(ds.vars.len()).unwrap());
    for (_, t) in btf.types() {
        match t.detail() {
            Detail::Var(v) => assert_ne!(v.linkage, Linkage::EXTERN, "{:?}", t.name()),
            Detail::Func(f) => assert_ne!(f.linkage, Linkage::EXTERN, "{:?}", t.name()),
            _ => {}
        }
    }
    // Without global functions, global ones become static.
    let no_global = BtfFeatures {
        func_global: false,
        ..BtfFeatures::ALL
    };
    let blob = prepare_btf_with(&orig, &layout, &no_global).unwrap();
    let btf = Btf::parse(&blob).unwrap();
    let sum = btf.id_by_name("sum_flags", Kind::Func).unwrap();
    let Detail::Func(f) = btf.type_by_id(sum).unwrap().detail() else {
        panic!()
    };
    assert_eq!(f.linkage, Linkage::STATIC);
}

#[test]
fn a_datasec_without_its_section_is_an_error_naming_it() {
    let raw = btf_kinds();
    let orig = Btf::parse(&raw).unwrap();
    let mut layout = ElfLayout::read(&fixture("btf_kinds"));
    layout.sizes.remove(".rodata");
    let err = prepare_btf_with(&orig, &layout, &BtfFeatures::ALL).unwrap_err();
    assert!(err.to_string().contains("DATASEC .rodata"), "{err}");
}

#[test]
fn ring_buffers_round_up_and_perf_arrays_get_a_slot_per_cpu() {
    let data = fixture("diff/kernel_adjusted.old");
    let obj = Object::parse(&data).unwrap();
    let events = obj.map("events").unwrap();
    assert_eq!(created_max_entries(events, 4096, 8), 4096);
    assert_eq!(created_max_entries(events, 1024, 8), 4096);
    let mut exact = events.clone();
    exact.max_entries = 8192;
    assert_eq!(created_max_entries(&exact, 4096, 8), 8192);
    exact.max_entries = 3 * 4096;
    assert_eq!(created_max_entries(&exact, 4096, 8), 16384);
    let perf = obj.map("perf").unwrap();
    assert_eq!(created_max_entries(perf, 4096, 8), 8);
}

#[test]
fn global_data_maps_are_typed_only_with_datasec() {
    let data = fixture("global_data");
    let obj = Object::parse(&data).unwrap();
    let d = obj.map(".data").unwrap();
    let (key, value) = map_btf_ids(d, &BtfFeatures::ALL).unwrap();
    assert_eq!(key, 0, "global data has no key type");
    assert_eq!(Some(TypeId(value)), d.value_type);
    assert_eq!(map_btf_ids(d, &BtfFeatures::BASIC), None);
    let data = fixture("map_in_map");
    let obj = Object::parse(&data).unwrap();
    assert_eq!(
        map_btf_ids(obj.map("outer_hash").unwrap(), &BtfFeatures::ALL),
        None
    );
    let inner = obj.map("inner_a").unwrap();
    assert!(map_btf_ids(inner, &BtfFeatures::BASIC).is_some());
}

#[test]
fn tracing_programs_name_their_kernel_btf_target() {
    let data = fixture("core_reloc");
    let obj = Object::parse(&data).unwrap();
    let fentry = obj.program("fentry_sleep").unwrap();
    assert_eq!(
        attach_btf_name(fentry),
        Some(("do_nanosleep".to_owned(), Kind::Func))
    );
    assert_eq!(attach_btf_name(obj.program("trace_sleep").unwrap()), None);
}

fn kernel_btf(without: &[&str], var_kind: Kind) -> Vec<u8> {
    let mut b = Builder::new(Endian::native());
    let int_name = b.string("int");
    let int = b.add(int_name, Kind::Int, false, 0, 4, &[(1 << 24) | 32]);
    let task = b.string("task_struct");
    let pid = b.string("pid");
    let task = b.add(task, Kind::Struct, false, 1, 4, &[pid.0, int.0, 0]);
    let task_ptr = b.add(StrOffset(0), Kind::Ptr, false, 0, task.0, &[]);
    let p = b.string("p");
    let from_pid = b.add(
        StrOffset(0),
        Kind::FuncProto,
        false,
        1,
        task_ptr.0,
        &[pid.0, int.0],
    );
    let release = b.add(
        StrOffset(0),
        Kind::FuncProto,
        false,
        1,
        0,
        &[p.0, task_ptr.0],
    );
    let void = b.add(StrOffset(0), Kind::FuncProto, false, 0, 0, &[]);
    for (name, proto) in [
        ("bpf_task_from_pid", from_pid),
        ("bpf_task_release", release),
        ("bpf_rcu_read_lock", void),
        ("bpf_rcu_read_unlock", void),
    ] {
        if !without.contains(&name) {
            let n = b.string(name);
            b.add(n, Kind::Func, false, 0, proto.0, &[]);
        }
    }
    let var_type = if var_kind == Kind::Int {
        int
    } else {
        let s = b.string("not_an_int");
        b.add(s, Kind::Struct, false, 0, 4, &[])
    };
    let active = b.string("bpf_prog_active");
    b.add(
        active,
        Kind::Var,
        false,
        0,
        var_type.0,
        &[Linkage::GLOBAL.0],
    );
    let rq = b.string("rq");
    let cpu = b.string("cpu");
    let rq = b.add(rq, Kind::Struct, false, 1, 4, &[cpu.0, int.0, 0]);
    let runqueues = b.string("runqueues");
    b.add(runqueues, Kind::Var, false, 0, rq.0, &[Linkage::GLOBAL.0]);
    b.finish()
}

/// A `/proc/kallsyms` with the typeless symbol of programs/ksyms.c.
const KALLSYMS_TEXT: &str = "ffffffff81000000 T _text\nffffffff814d38f0 T bpf_prog_put\n";

fn fake_kallsyms(name: &str) -> Result<Option<u64>, String> {
    kallsyms_address(KALLSYMS_TEXT, name)
}

#[test]
fn kallsyms_lines_give_one_address_per_name() {
    let text = "ffffffff814d38f0 T bpf_prog_put\n\
                ffffffffc0001000 t helper\t[some_module]\n\
                ffffffffc0002000 t helper\t[other_module]\n\
                ffffffff81000010 t twice\n\
                ffffffff81000010 t twice\n\
                0000000000000000 T hidden\n\
                not a line\n";
    assert_eq!(
        kallsyms_address(text, "bpf_prog_put"),
        Ok(Some(0xffff_ffff_814d_38f0))
    );
    assert_eq!(
        kallsyms_address(text, "twice"),
        Ok(Some(0xffff_ffff_8100_0010))
    );
    assert_eq!(kallsyms_address(text, "absent"), Ok(None));
    let err = kallsyms_address(text, "helper").unwrap_err();
    assert!(err.contains("both"), "{err}");
    let err = kallsyms_address(text, "hidden").unwrap_err();
    assert!(err.contains("kptr_restrict"), "{err}");
}

fn ksym_refs(spec: &ProgramSpec) -> Vec<(usize, String)> {
    spec.references
        .iter()
        .filter_map(|r| match &r.target {
            RefTarget::Ksym { name, .. } => Some((r.insn, name.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn kfunc_calls_get_kernel_btf_ids_and_weak_misses_are_dead_ends() {
    // programs/ksyms.c: four kfuncs, a weak variable and a weak kfunc no kernel has.
    let data = fixture("ksyms");
    let obj = Object::parse(&data).unwrap();
    let spec = obj.program("ksyms").unwrap();
    let raw = kernel_btf(&[], Kind::Int);
    let kernel = Btf::parse(&raw).unwrap();
    let mut insns = spec.insns.clone();
    let resolved = resolve_ksyms(spec, &mut insns, obj.btf(), &kernel, &fake_kallsyms).unwrap();
    assert_eq!(resolved.len(), 7, "{resolved:?}");
    let mut calls = 0;
    for (at, name) in ksym_refs(spec) {
        let insn = insns[at];
        match kernel.id_by_name(&name, Kind::Func) {
            Some(id) => {
                assert_eq!(resolved[&name], KsymResolution::BtfId(id.0));
                assert_eq!((insn.code, insn.src(), insn.off), (0x85, 2, 0), "{name}");
                assert_eq!(insn.imm, i32::try_from(id.0).unwrap(), "{name}");
                calls += 1;
            }
            None if name == "bpf_prog_put" => {
                // Typeless: its address from kallsyms, as a plain 64-bit constant.
                assert_eq!(
                    resolved[&name],
                    KsymResolution::Address(0xffff_ffff_814d_38f0)
                );
                assert_eq!((insn.code, insn.src()), (0x18, 0));
                assert_eq!(insn.imm as u32, 0x814d_38f0);
                assert_eq!(insns[at + 1].imm as u32, 0xffff_ffff);
            }
            None => {
                assert_eq!(resolved[&name], KsymResolution::Missing, "{name}");
                if insn.code == 0x85 {
                    // A call to a helper that does not exist: valid only as dead code.
                    assert_eq!((insn.src(), insn.off), (0, 0), "{name}");
                    assert!(insn.imm >= POISON_CALL_KFUNC_BASE, "{name}");
                } else {
                    assert_eq!((insn.code, insn.src(), insn.imm), (0x18, 0, 0), "{name}");
                    assert_eq!(insns[at + 1].imm, 0, "{name}");
                }
            }
        }
    }
    assert_eq!(calls, 4);
}

#[test]
fn a_missing_kfunc_that_is_not_weak_is_an_error_naming_it() {
    let data = fixture("ksyms");
    let obj = Object::parse(&data).unwrap();
    let spec = obj.program("ksyms").unwrap();
    let raw = kernel_btf(&["bpf_task_release"], Kind::Int);
    let kernel = Btf::parse(&raw).unwrap();
    let mut insns = spec.insns.clone();
    let err = resolve_ksyms(spec, &mut insns, obj.btf(), &kernel, &fake_kallsyms)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bpf_task_release"), "{err}");
    assert!(err.contains("no FUNC named"), "{err}");
}

#[test]
fn kernel_variables_load_by_btf_id_when_their_types_agree() {
    // programs/ksym_vars.c: an int and a struct rq per-CPU variable.
    let data = fixture("ksym_vars");
    let obj = Object::parse(&data).unwrap();
    let spec = obj.program("ksym_vars").unwrap();
    let raw = kernel_btf(&[], Kind::Int);
    let kernel = Btf::parse(&raw).unwrap();
    let mut insns = spec.insns.clone();
    resolve_ksyms(spec, &mut insns, obj.btf(), &kernel, &fake_kallsyms).unwrap();
    let refs = ksym_refs(spec);
    assert_eq!(refs.len(), 2);
    for (at, name) in refs {
        let id = kernel.id_by_name(&name, Kind::Var).unwrap();
        assert_eq!((insns[at].code, insns[at].src()), (0x18, 3), "{name}");
        assert_eq!(insns[at].imm, i32::try_from(id.0).unwrap(), "{name}");
        assert_eq!(insns[at + 1].imm, 0, "{name}: BTF object 0 is vmlinux");
    }

    // The object says int, the kernel a struct: refused, naming the variable.
    let raw = kernel_btf(&[], Kind::Struct);
    let kernel = Btf::parse(&raw).unwrap();
    let mut insns = spec.insns.clone();
    let err = resolve_ksyms(spec, &mut insns, obj.btf(), &kernel, &fake_kallsyms)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bpf_prog_active"), "{err}");
    assert!(err.contains("not compatible"), "{err}");
}

#[test]
fn the_weak_ksym_of_btf_kinds_loads_zero_or_its_btf_id() {
    // programs/btf_kinds.c reads `extern int extern_ksym __ksym __weak`.
    let data = fixture("btf_kinds");
    let obj = Object::parse(&data).unwrap();
    let spec = obj.program("btf_kinds").unwrap();
    let refs = ksym_refs(spec);
    assert_eq!(refs.len(), 1);
    let (at, _) = refs[0];
    assert!(spec.references.iter().any(|r| r.target
        == RefTarget::Ksym {
            name: "extern_ksym".into(),
            kind: KsymKind::Var,
            weak: true
        }));

    let raw = kernel_btf(&[], Kind::Int);
    let kernel = Btf::parse(&raw).unwrap();
    let mut insns = spec.insns.clone();
    resolve_ksyms(spec, &mut insns, obj.btf(), &kernel, &fake_kallsyms).unwrap();
    assert_eq!((insns[at].src(), insns[at].imm), (0, 0));

    let mut b = Builder::new(Endian::native());
    let int_name = b.string("int");
    let int = b.add(int_name, Kind::Int, false, 0, 4, &[(1 << 24) | 32]);
    let name = b.string("extern_ksym");
    let var = b.add(name, Kind::Var, false, 0, int.0, &[Linkage::GLOBAL.0]);
    let raw = b.finish();
    let kernel = Btf::parse(&raw).unwrap();
    let mut insns = spec.insns.clone();
    resolve_ksyms(spec, &mut insns, obj.btf(), &kernel, &fake_kallsyms).unwrap();
    assert_eq!(
        (insns[at].src(), insns[at].imm),
        (3, i32::try_from(var.0).unwrap())
    );
}

/// The one DATASEC placement: a variable without its symbol is an error naming it
/// (the plan's model used to drop the whole layout instead).
#[test]
fn placing_a_datasec_needs_every_variable_symbol() {
    let data = fixture("global_data");
    let obj = Object::parse(&data).unwrap();
    let btf = obj.btf().unwrap();
    let id = btf.id_by_name(".data", Kind::Datasec).unwrap();
    let placed = place_datasec(btf, id, &obj).unwrap();
    assert_eq!(placed.vars.len(), 1);
    assert_eq!(placed.vars[0].name, "packets_seen");

    struct Missing<'a>(&'a Object<'a>);
    impl SectionLayout for Missing<'_> {
        fn section_size(&self, section: &str) -> Option<u64> {
            self.0.section_size(section)
        }
        fn variable(&self, _: &str, _: &str) -> Option<(u64, bool)> {
            None
        }
    }
    let err = place_datasec(btf, id, &Missing(&obj)).unwrap_err();
    assert!(err.to_string().contains("packets_seen"), "{err}");
}
