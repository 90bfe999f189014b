//! CO-RE relocations of the fixtures `programs/core_kinds.c` and `programs/core_reloc.c`
//! against the running kernel's BTF, checked against facts read from that BTF directly,
//! and the rules on small hand-built BTF.

use super::*;
use crate::Object;
use handover_btf::{Builder, Endian, StrOffset};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../programs/build/{name}.o", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (run programs/build.sh)"))
}

fn vmlinux() -> Option<Vec<u8>> {
    match std::fs::read(VMLINUX) {
        Ok(b) => Some(b),
        Err(e) => {
            // Straight to stderr, so that the skip shows (and .ci/run counts it).
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!(
                    "\nSKIPPED: CO-RE against the running kernel (cannot read {VMLINUX}: {e})\n"
                ),
            );
            None
        }
    }
}

/// Byte offset and size of member `name` of the kernel's `struct task_struct`.
fn task_field(kernel: &Btf<'_>, name: &str) -> Option<(u64, u64)> {
    let id = kernel.id_by_name("task_struct", Kind::Struct)?;
    let Detail::Struct(c) = kernel.type_by_id(id).ok()?.detail() else {
        return None;
    };
    let m = c.members.clone().find(|m| m.name() == Ok(name))?;
    Some((
        u64::from(m.bit_offset / 8),
        u64::from(kernel.size_of(m.ty).ok()?),
    ))
}

fn outcomes(object: &str, program: &str, kernel: &Btf<'_>) -> (ProgramSpec, Vec<CoreOutcome>) {
    let data = fixture(object);
    let obj = Object::parse(&data).expect("fixture parses");
    let spec = obj.program(program).expect("program exists").clone();
    let target = CoreTarget::new(kernel);
    let (insns, out) = apply_core(&spec, obj.btf().expect("BTF"), &target).expect("applies");
    assert_eq!(insns.len(), spec.insns.len());
    for o in &out {
        let insn = insns.get(o.insn as usize).expect("in range");
        if o.target.is_none() {
            assert_eq!((insn.code, insn.imm), (0x85, POISON_HELPER), "{o:?}");
            assert!(o.poisoned.is_some(), "{o:?}");
        }
    }
    (spec, out)
}

#[test]
fn core_reloc_reads_pid_and_tgid_at_kernel_offsets() {
    let Some(blob) = vmlinux() else { return };
    let kernel = Btf::parse(&blob).expect("vmlinux parses");
    let (_, out) = outcomes("core_reloc", "trace_sleep", &kernel);
    let pid = task_field(&kernel, "pid").expect("kernel task_struct has pid");
    let tgid = task_field(&kernel, "tgid").expect("kernel task_struct has tgid");
    let got: Vec<_> = out.iter().map(|o| (o.kind, o.local, o.target)).collect();
    assert_eq!(
        got,
        [
            (CoreKind::FieldByteOffset, 0, Some(pid.0)),
            (CoreKind::FieldByteOffset, 4, Some(tgid.0)),
        ]
    );
}

#[test]
fn core_kinds_resolve_against_the_kernel() {
    let Some(blob) = vmlinux() else { return };
    let kernel = Btf::parse(&blob).expect("vmlinux parses");
    let (spec, out) = outcomes("core_kinds", "core_all", &kernel);
    assert_eq!(out.len(), spec.core_relocations.len());
    let task = u64::from(
        kernel
            .id_by_name("task_struct", Kind::Struct)
            .expect("task_struct")
            .0,
    );
    let pid = task_field(&kernel, "pid").expect("pid").0;
    let comm = task_field(&kernel, "comm").expect("comm").1;
    let mut seen = Vec::new();
    for (o, r) in out.iter().zip(&spec.core_relocations) {
        eprintln!(
            "{} {} -> {:?} ({:?})",
            r.kind_name(),
            r.access,
            o.target,
            o.local
        );
        let expect = match (o.kind, r.access.as_str()) {
            // read_pid(), appended from .text: the relocation moved with it.
            (CoreKind::FieldByteOffset, "0:0") => Some(pid),
            (CoreKind::FieldExists, "0:1") => Some(1),
            (CoreKind::FieldByteSize, "0:2") => Some(comm),
            // flags_high and signed_bits are not in the kernel's task_struct: the
            // probed bitfield reads are poisoned.
            (
                CoreKind::FieldByteOffset
                | CoreKind::FieldByteSize
                | CoreKind::FieldSigned
                | CoreKind::FieldLshiftU64
                | CoreKind::FieldRshiftU64,
                "0:3" | "0:4" | "0:5",
            ) => None,
            (CoreKind::TypeIdTarget, _) => Some(task),
            (CoreKind::TypeIdLocal, _) => Some(u64::from(r.type_id.0)),
            (CoreKind::TypeExists, _) => Some(1),
            // sized_t is a typedef the kernel lacks.
            (CoreKind::TypeSize, _) => Some(0),
            // enum edge_state is not in the kernel.
            (CoreKind::EnumvalExists, _) => Some(0),
            (CoreKind::EnumvalValue, _) => None,
            other => panic!("unexpected relocation {other:?}"),
        };
        assert_eq!(o.target, expect, "{} {}", r.kind_name(), r.access);
        seen.push(o.kind);
    }
    for k in [
        CoreKind::FieldByteOffset,
        CoreKind::FieldByteSize,
        CoreKind::FieldExists,
        CoreKind::FieldSigned,
        CoreKind::FieldLshiftU64,
        CoreKind::FieldRshiftU64,
        CoreKind::TypeIdLocal,
        CoreKind::TypeIdTarget,
        CoreKind::TypeExists,
        CoreKind::TypeSize,
        CoreKind::EnumvalExists,
        CoreKind::EnumvalValue,
    ] {
        assert!(seen.contains(&k), "core_kinds.o has no {k:?} relocation");
    }
}

/// Local values are the object's own: relocating against the object's own BTF changes
/// no instruction (each relocation's target value equals its local value).
#[test]
fn relocating_against_the_own_btf_is_the_identity() {
    for (object, program) in [
        ("core_kinds", "core_all"),
        ("core_reloc", "trace_sleep"),
        ("core_load", "core_load"),
    ] {
        let data = fixture(object);
        let obj = Object::parse(&data).expect("fixture parses");
        let spec = obj.program(program).expect("program");
        let local = obj.btf().expect("BTF");
        let target = CoreTarget::new(local);
        let (insns, out) = apply_core(spec, local, &target).expect("applies");
        assert_eq!(insns, spec.insns, "{object}");
        for o in out {
            assert_eq!(o.target, Some(o.local), "{object}: {o:?}");
        }
    }
}

#[test]
fn essential_names_drop_the_last_flavor() {
    assert_eq!(essential("task_struct___old"), "task_struct");
    assert_eq!(essential("a___b___c"), "a___b");
    assert_eq!(essential("task_struct"), "task_struct");
    assert_eq!(essential("a____b"), "a____b");
    assert_eq!(essential("___x"), "___x");
}

/// Builds `struct NAME { int a; unsigned int f : BITS at bit BIT_OFF; }` with `int` as
/// type 1 and `unsigned int` as type 2.
fn two_member_struct(name: &str, a_off: u32, f_off: u32, bits: u32) -> Vec<u8> {
    let mut b = Builder::new(Endian::native());
    let int = b.string("int");
    b.add(int, Kind::Int, false, 0, 4, &[(1 << 24) | 32]);
    let uint = b.string("unsigned int");
    b.add(uint, Kind::Int, false, 0, 4, &[32]);
    let s = b.string(name);
    let a = b.string("a");
    let f = b.string("f");
    b.add(
        s,
        Kind::Struct,
        true,
        2,
        16,
        &[a.0, 1, a_off, f.0, 2, (bits << 24) | f_off],
    );
    b.finish()
}

fn relocation(kind: u32, access: &str, insn: u32) -> CoreRelocation {
    CoreRelocation {
        insn,
        type_id: TypeId(3),
        access: access.into(),
        kind,
    }
}

/// One `r0 = imm` per relocation, holding the local value, then exit.
fn program_of(relos: Vec<CoreRelocation>, locals: &[i32]) -> ProgramSpec {
    let mut spec = ProgramSpec::new("p", "kprobe/x");
    spec.insns = locals
        .iter()
        .map(|&v| Insn::new(0xb7, 0, 0, 0, v))
        .chain([Insn::new(0x95, 0, 0, 0, 0)])
        .collect();
    spec.core_relocations = relos;
    spec
}

#[test]
fn flavored_bitfield_moves_like_libbpf_computes() {
    // Local: struct s___v1 { int a; unsigned f : 4 at bit 32 }.
    // Target: struct s { int a at bit 64; unsigned f : 12 at bit 100 }.
    let local_blob = two_member_struct("s___v1", 0, 32, 4);
    let target_blob = two_member_struct("s", 64, 100, 12);
    let local = Btf::parse(&local_blob).expect("local");
    let kernel = Btf::parse(&target_blob).expect("target");
    let relos = vec![
        relocation(0, "0:1", 0),
        relocation(1, "0:1", 1),
        relocation(4, "0:1", 2),
        relocation(5, "0:1", 3),
        relocation(0, "0:0", 4),
        relocation(2, "0:1", 5),
    ];
    // Locals: f lives in the u32 at byte 4, lshift 64-(32+4-32)=60, rshift 60; a at 0.
    let spec = program_of(relos, &[4, 4, 60, 60, 0, 1]);
    let (insns, out) = apply_core(&spec, &local, &CoreTarget::new(&kernel)).expect("applies");
    let imms: Vec<i32> = insns.iter().map(|i| i.imm).collect();
    // Target f: bits 100..112 fit the u32 at byte 12 (bits 96..128): offset 12, size 4,
    // lshift 64 - (100 + 12 - 96) = 48, rshift 64 - 12 = 52; a at byte 8.
    assert_eq!(imms, [12, 4, 48, 52, 8, 1, 0], "{out:?}");
}

#[test]
fn missing_field_is_poisoned_and_existence_is_zero() {
    let local_blob = two_member_struct("s", 0, 32, 4);
    let mut b = Builder::new(Endian::native());
    let int = b.string("int");
    b.add(int, Kind::Int, false, 0, 4, &[(1 << 24) | 32]);
    let name = b.string("s");
    let a = b.string("a");
    b.add(name, Kind::Struct, false, 1, 4, &[a.0, 1, 0]);
    let target_blob = b.finish();
    let local = Btf::parse(&local_blob).expect("local");
    let kernel = Btf::parse(&target_blob).expect("target");
    let spec = program_of(
        vec![relocation(0, "0:1", 0), relocation(2, "0:1", 1)],
        &[4, 1],
    );
    let (insns, out) = apply_core(&spec, &local, &CoreTarget::new(&kernel)).expect("applies");
    assert_eq!(
        insns.first().map(|i| (i.code, i.imm)),
        Some((0x85, POISON_HELPER))
    );
    assert_eq!(insns.get(1).map(|i| i.imm), Some(0));
    assert_eq!(out.first().map(|o| o.target), Some(None));
}

#[test]
fn instruction_not_holding_the_local_value_is_refused() {
    let blob = two_member_struct("s", 0, 32, 4);
    let btf = Btf::parse(&blob).expect("btf");
    // Field a is at byte 0, the instruction says 8.
    let spec = program_of(vec![relocation(0, "0:0", 0)], &[8]);
    let err = apply_core(&spec, &btf, &CoreTarget::new(&btf)).expect_err("refused");
    assert!(err.to_string().contains("expected 0"), "{err}");
}

#[test]
fn malformed_access_strings_are_refused() {
    let blob = two_member_struct("s", 0, 32, 4);
    let btf = Btf::parse(&blob).expect("btf");
    for access in ["", ":0", "0:x", "0:9", "1"] {
        let kind = if access == "1" { 8 } else { 0 };
        let spec = program_of(vec![relocation(kind, access, 0)], &[0]);
        let err = apply_core(&spec, &btf, &CoreTarget::new(&btf)).expect_err(access);
        assert!(err.to_string().contains("CO-RE relocation #0"), "{err}");
    }
}

/// `struct s { FIELD_TYPE x; }` with `int` as type 1, `unsigned int` 2, `long` 3,
/// `unsigned long` 4, and the struct as type 5 whose member has type `field`.
fn struct_with_field(field: u32) -> Vec<u8> {
    let mut b = Builder::new(Endian::native());
    for (name, size, enc) in [
        ("int", 4, 1),
        ("unsigned int", 4, 0),
        ("long", 8, 1),
        ("unsigned long", 8, 0),
    ] {
        let n = b.string(name);
        b.add(n, Kind::Int, false, 0, size, &[(enc << 24) | (size * 8)]);
    }
    let s = b.string("s");
    let x = b.string("x");
    b.add(s, Kind::Struct, false, 1, 8, &[x.0, field, 0]);
    b.finish()
}

fn ldx_program(local_btf_root: u32) -> ProgramSpec {
    let mut spec = ProgramSpec::new("p", "kprobe/x");
    // r0 = *(u32 *)(r1 + 0); exit
    spec.insns = vec![Insn::new(0x61, 0, 1, 0, 0), Insn::new(0x95, 0, 0, 0, 0)];
    spec.core_relocations = vec![CoreRelocation {
        insn: 0,
        type_id: TypeId(local_btf_root),
        access: "0:0".into(),
        kind: 0,
    }];
    spec
}

#[test]
fn unsigned_field_that_grows_widens_the_load() {
    let local_blob = struct_with_field(2);
    let target_blob = struct_with_field(4);
    let local = Btf::parse(&local_blob).expect("local");
    let kernel = Btf::parse(&target_blob).expect("target");
    let (insns, _) =
        apply_core(&ldx_program(5), &local, &CoreTarget::new(&kernel)).expect("applies");
    // BPF_LDX | BPF_MEM | BPF_DW.
    assert_eq!(insns.first().map(|i| i.code), Some(0x79));
}

#[test]
fn signed_field_that_changes_size_is_poisoned() {
    let local_blob = struct_with_field(1);
    let target_blob = struct_with_field(3);
    let local = Btf::parse(&local_blob).expect("local");
    let kernel = Btf::parse(&target_blob).expect("target");
    let (insns, out) =
        apply_core(&ldx_program(5), &local, &CoreTarget::new(&kernel)).expect("applies");
    assert_eq!(
        insns.first().map(|i| (i.code, i.imm)),
        Some((0x85, POISON_HELPER))
    );
    assert_eq!(out.first().map(|o| o.target), Some(None));
    let why = out
        .first()
        .and_then(|o| o.poisoned.clone())
        .unwrap_or_default();
    assert!(
        why.contains("8 bytes in the target, 4 in the object"),
        "{why}"
    );
    assert!(why.starts_with("field_byte_offset of struct "), "{why}");
}

/// `r0 = imm` for one type relocation of `kind` on the struct (type 5).
fn type_relocation_value(kind: u32, local: &[u8], target: &[u8]) -> i32 {
    let local = Btf::parse(local).expect("local");
    let kernel = Btf::parse(target).expect("target");
    let mut spec = ProgramSpec::new("p", "kprobe/x");
    spec.insns = vec![Insn::new(0xb7, 0, 0, 0, 1), Insn::new(0x95, 0, 0, 0, 0)];
    spec.core_relocations = vec![CoreRelocation {
        insn: 0,
        type_id: TypeId(5),
        access: "0".into(),
        kind,
    }];
    let (insns, _) = apply_core(&spec, &local, &CoreTarget::new(&kernel)).expect("applies");
    insns.first().map_or(-1, |i| i.imm)
}

#[test]
fn type_matches_is_stricter_than_type_exists() {
    let int_field = struct_with_field(1);
    let uint_field = struct_with_field(2);
    let long_field = struct_with_field(3);
    // Same layout: both hold.
    assert_eq!(type_relocation_value(12, &int_field, &int_field), 1);
    assert_eq!(type_relocation_value(8, &int_field, &int_field), 1);
    // Signedness or width differs: the struct still exists, but does not match.
    assert_eq!(type_relocation_value(8, &int_field, &uint_field), 1);
    assert_eq!(type_relocation_value(12, &int_field, &uint_field), 0);
    assert_eq!(type_relocation_value(12, &int_field, &long_field), 0);
}

/// Target BTF: `int` (1), then for each `(name, offset)` a struct `name { int a; }`
/// with `a` at that byte offset.
fn targets(structs: &[(&str, u32)]) -> Vec<u8> {
    let mut b = Builder::new(Endian::native());
    let int = b.string("int");
    b.add(int, Kind::Int, false, 0, 4, &[(1 << 24) | 32]);
    let a = b.string("a");
    for &(name, off) in structs {
        let n = b.string(name);
        b.add(n, Kind::Struct, false, 1, 32, &[a.0, 1, off * 8]);
    }
    b.finish()
}

fn field_a_offset(local_name: &str, target: &[u8]) -> Result<Vec<Insn>, CoreError> {
    let local_blob = two_member_struct(local_name, 0, 32, 4);
    let local = Btf::parse(&local_blob).expect("local");
    let kernel = Btf::parse(target).expect("target");
    let spec = program_of(vec![relocation(0, "0:0", 0)], &[0]);
    apply_core(&spec, &local, &CoreTarget::new(&kernel)).map(|(insns, _)| insns)
}

#[test]
fn candidates_that_agree_are_accepted() {
    let insns = field_a_offset("s", &targets(&[("s___x", 8), ("s", 8)])).expect("applies");
    assert_eq!(insns.first().map(|i| i.imm), Some(8));
}

#[test]
fn candidates_that_disagree_are_refused() {
    let err = field_a_offset("s", &targets(&[("s___x", 8), ("s___y", 16)])).expect_err("refused");
    assert!(err.to_string().contains("different field offsets"), "{err}");
}

#[test]
fn fields_are_found_inside_anonymous_members() {
    // struct s { int pad[3]; union { int a; }; } with the union at byte 12.
    let mut b = Builder::new(Endian::native());
    let int = b.string("int");
    b.add(int, Kind::Int, false, 0, 4, &[(1 << 24) | 32]);
    b.add(StrOffset(0), Kind::Array, false, 0, 0, &[1, 1, 3]);
    let a = b.string("a");
    b.add(StrOffset(0), Kind::Union, false, 1, 4, &[a.0, 1, 0]);
    let s = b.string("s");
    let pad = b.string("pad");
    b.add(s, Kind::Struct, false, 2, 16, &[pad.0, 2, 0, 0, 3, 96]);
    let insns = field_a_offset("s", &b.finish()).expect("applies");
    assert_eq!(insns.first().map(|i| i.imm), Some(12));
}

/// `struct s { PAD; int arr[4]; }`: `int` is 1, `long` 2, the array 3, the struct 4;
/// `pad` bytes of padding members (longs) come first.
fn struct_with_array(pads: u32) -> Vec<u8> {
    let mut b = Builder::new(Endian::native());
    let int = b.string("int");
    b.add(int, Kind::Int, false, 0, 4, &[(1 << 24) | 32]);
    let long = b.string("long");
    b.add(long, Kind::Int, false, 0, 8, &[(1 << 24) | 64]);
    b.add(StrOffset(0), Kind::Array, false, 0, 0, &[1, 1, 4]);
    let s = b.string("s");
    let arr = b.string("arr");
    let pad = b.string("pad");
    let mut members = Vec::new();
    for i in 0..pads {
        members.extend([pad.0, 2, i * 64]);
    }
    members.extend([arr.0, 3, pads * 64]);
    let vlen = u16::try_from(pads + 1).expect("few members");
    b.add(s, Kind::Struct, false, vlen, pads * 8 + 16, &members);
    b.finish()
}

#[test]
fn array_elements_move_with_their_array() {
    let local_blob = struct_with_array(0);
    let target_blob = struct_with_array(2);
    let local = Btf::parse(&local_blob).expect("local");
    let kernel = Btf::parse(&target_blob).expect("target");
    let relo = |kind, insn| CoreRelocation {
        insn,
        type_id: TypeId(4),
        access: "0:0:2".into(),
        kind,
    };
    // arr[2]: byte 8 locally, byte 24 behind two longs; 4 bytes either way.
    let spec = program_of(vec![relo(0, 0), relo(1, 1)], &[8, 4]);
    let (insns, _) = apply_core(&spec, &local, &CoreTarget::new(&kernel)).expect("applies");
    let imms: Vec<i32> = insns.iter().map(|i| i.imm).collect();
    assert_eq!(imms, [24, 4, 0]);
    // An index past the local array is refused.
    let spec = program_of(
        vec![CoreRelocation {
            access: "0:0:4".into(),
            ..relo(0, 0)
        }],
        &[16],
    );
    let err = apply_core(&spec, &local, &CoreTarget::new(&kernel)).expect_err("refused");
    assert!(err.to_string().contains("out of range"), "{err}");
}

proptest::proptest! {
    /// Any access string, kind, root type and instruction on the fixture's own BTF and
    /// the kernel-like target gives a result or an error naming the relocation, never a
    /// panic; an applied relocation keeps the program's length.
    #[test]
    fn arbitrary_relocations_never_panic(
        access in "[0-9]{1,3}(:[0-9]{1,3}){0,4}",
        kind in 0u32..14,
        root in 0u32..40,
        code in proptest::sample::select(vec![0x07u8, 0x61, 0x79, 0x18, 0xb7, 0x63, 0x85]),
        imm in proptest::prelude::any::<i32>(),
    ) {
        let data = fixture("core_load");
        let obj = Object::parse(&data).expect("fixture parses");
        let local = obj.btf().expect("BTF");
        let target_blob = two_member_struct("task_struct", 0, 32, 4);
        let target = Btf::parse(&target_blob).expect("target");
        let mut spec = ProgramSpec::new("p", "kprobe/x");
        spec.insns = vec![Insn::new(code, 1, 0, 0, imm), Insn::new(0, 0, 0, 0, 0)];
        spec.core_relocations = vec![CoreRelocation {
            insn: 0,
            type_id: TypeId(root),
            access,
            kind,
        }];
        match apply_core(&spec, local, &CoreTarget::new(&target)) {
            Ok((insns, out)) => {
                proptest::prop_assert_eq!(insns.len(), 2);
                proptest::prop_assert_eq!(out.len(), 1);
            }
            Err(e) => proptest::prop_assert!(e.to_string().contains("CO-RE relocation #0")),
        }
    }
}
