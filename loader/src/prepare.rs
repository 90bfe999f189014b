//! Preparing a parsed object for the kernel, as pure functions over the specs:
//! [`prepare_btf`] fixes up and sanitises the object's BTF for what a kernel supports
//! ([`BtfFeatures`]), [`relocate`] writes map descriptors into a program's
//! instructions, [`resolve_ksyms`] resolves `__ksym` externs against the kernel's BTF
//! and `/proc/kallsyms` text given by the caller. `handover-load` runs them against the
//! kernel.

use std::collections::BTreeMap;

use handover_btf::{Btf, Detail, Endian, Kind, Linkage, TypeId};
use handover_uapi::{Insn, MapType, ProgramType};

use crate::maps::{MapOrigin, MapSpec};
use crate::object::Object;
use crate::program::{KsymKind, ProgramSpec, RefTarget};

pub use handover_uapi::{KERNEL_NAME_LEN, kernel_name};

/// Which BTF kinds and flags a kernel accepts in `BPF_BTF_LOAD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one independent answer per probed kernel feature"
)]
pub struct BtfFeatures {
    /// `BPF_BTF_LOAD` itself (4.18).
    pub btf: bool,
    /// `FUNC` and `FUNC_PROTO` (5.0).
    pub func: bool,
    /// `FUNC` with global linkage (5.6).
    pub func_global: bool,
    /// `VAR` and `DATASEC` (5.2).
    pub datasec: bool,
    /// `FLOAT` (5.13).
    pub float: bool,
    /// `DECL_TAG` (5.16).
    pub decl_tag: bool,
    /// `TYPE_TAG` (5.17).
    pub type_tag: bool,
    /// `ENUM64` and signed enums (`kind_flag` on `ENUM`) (6.0).
    pub enum64: bool,
}

impl BtfFeatures {
    /// Every kind accepted: the BTF goes to the kernel unchanged but for the fixups.
    pub const ALL: Self = Self {
        btf: true,
        func: true,
        func_global: true,
        datasec: true,
        float: true,
        decl_tag: true,
        type_tag: true,
        enum64: true,
    };

    /// BTF accepted, but none of the later kinds: everything optional is rewritten.
    pub const BASIC: Self = Self {
        btf: true,
        func: false,
        func_global: false,
        datasec: false,
        float: false,
        decl_tag: false,
        type_tag: false,
        enum64: false,
    };
}

/// Why an object cannot be prepared for the kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// The object's byte order is not the kernel's.
    #[error(
        "the object is {object:?}-endian but this kernel is {host:?}-endian: compile it with -target bpf (host order)"
    )]
    ByteOrder {
        /// The object's byte order.
        object: Endian,
        /// The host's.
        host: Endian,
    },
    /// The object's BTF cannot be prepared for the kernel.
    #[error("preparing the object's BTF for the kernel: {reason}")]
    Btf {
        /// What is wrong, naming the type or section.
        reason: String,
    },
    /// A program refers to something this loader cannot provide.
    #[error("program {program}: {reason}")]
    Program {
        /// The program's name.
        program: String,
        /// What is missing and what to do.
        reason: String,
    },
    /// A CO-RE relocation cannot be applied (libbpf refuses it too).
    #[error(transparent)]
    Core(crate::core::CoreError),
}

/// The instructions of `program` with every map reference pointing at a descriptor:
/// `fd_of(map)` gives the descriptor number of a map by name. `BPF_PSEUDO_MAP_FD` loads
/// get the descriptor in the first immediate; `BPF_PSEUDO_MAP_VALUE` loads also keep
/// their offset into the value in the second.
///
/// # Errors
/// A referenced map has no descriptor, or a reference does not sit on an `ld_imm64`.
pub fn relocate(
    program: &ProgramSpec,
    fd_of: &dyn Fn(&str) -> Option<i32>,
) -> Result<Vec<Insn>, PrepareError> {
    let mut insns = program.insns.clone();
    for r in &program.references {
        let (map, src, offset) = match &r.target {
            RefTarget::Map { map } => (map, handover_uapi::PSEUDO_MAP_FD, 0),
            RefTarget::MapValue { map, offset } => (map, handover_uapi::PSEUDO_MAP_VALUE, *offset),
            RefTarget::Call { .. } | RefTarget::FuncAddr { .. } | RefTarget::Ksym { .. } => {
                continue;
            }
        };
        let err = |reason: String| PrepareError::Program {
            program: program.name.clone(),
            reason,
        };
        let fd = fd_of(map).ok_or_else(|| {
            err(format!(
                "instruction {} refers to map {map}, which was not created",
                r.insn
            ))
        })?;
        let ok = insns.get(r.insn).is_some_and(|i| i.is_ld_imm64()) && r.insn + 1 < insns.len();
        if !ok {
            return Err(err(format!(
                "reference to map {map} at instruction {} is not on a 16-byte ld_imm64",
                r.insn
            )));
        }
        if let Some(first) = insns.get_mut(r.insn) {
            *first = Insn::new(first.code, first.dst(), src, first.off, fd);
        }
        if let Some(second) = insns.get_mut(r.insn + 1) {
            second.imm = i32::from_ne_bytes(offset.to_ne_bytes());
        }
    }
    Ok(insns)
}

/// The immediate an unresolved weak kfunc call gets, plus the extern's index: the call
/// becomes one to a helper that does not exist, which the verifier accepts only in dead
/// code (the number libbpf uses, so verifier logs read the same).
pub const POISON_CALL_KFUNC_BASE: i32 = 2_002_000_000;

/// What a `__ksym` extern resolved to in the kernel's BTF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KsymResolution {
    /// The kernel's `VAR` or `FUNC` with this id (in vmlinux).
    BtfId(u32),
    /// A typeless extern's address, from `/proc/kallsyms`.
    Address(u64),
    /// A weak extern the kernel lacks (or, for a kfunc, has with another prototype).
    Missing,
}

/// What the text given to [`kallsyms_address`] is, in its messages.
const KALLSYMS: &str = "kallsyms";

/// The address of kernel symbol `name` in `kallsyms` (the text of `/proc/kallsyms`:
/// `ADDRESS TYPE NAME [MODULE]` lines), `Ok(None)` if it is not listed.
///
/// # Errors
/// The name is listed at two different addresses, or at address 0 (addresses hidden
/// by `kernel.kptr_restrict` from a reader without the privilege to see them).
pub fn kallsyms_address(kallsyms: &str, name: &str) -> Result<Option<u64>, String> {
    let mut found = None;
    for line in kallsyms.lines() {
        let mut words = line.split_ascii_whitespace();
        let (Some(addr), Some(_), Some(sym)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        if sym != name {
            continue;
        }
        let addr = u64::from_str_radix(addr, 16)
            .map_err(|_| format!("{KALLSYMS}: bad address {addr:?} for {name}"))?;
        if addr == 0 {
            return Err(format!(
                "{KALLSYMS} lists {name} at address 0: addresses are hidden (kernel.kptr_restrict)"
            ));
        }
        match found {
            Some(prev) if prev != addr => {
                return Err(format!(
                    "{KALLSYMS} lists {name} at both {prev:#x} and {addr:#x}"
                ));
            }
            _ => found = Some(addr),
        }
    }
    Ok(found)
}

/// Resolves the `__ksym` externs of `program` against `kernel` (the running kernel's
/// BTF) and writes them into `insns`: a variable's or kfunc's address load becomes a
/// `BPF_PSEUDO_BTF_ID` `ld_imm64` of its BTF id, a kfunc call a `BPF_PSEUDO_KFUNC_CALL`
/// to it (both in vmlinux, BTF object 0). The local type (`local`, the object's BTF)
/// must be compatible with the kernel's, as for a CO-RE type relocation. A weak extern
/// the kernel lacks loads 0, and a call to it becomes a call to helper
/// [`POISON_CALL_KFUNC_BASE`] + its index, valid in dead code only. Returns what each
/// extern resolved to, by name.
///
/// # Errors
/// A non-weak extern the kernel's BTF lacks, a variable of an incompatible type, a
/// non-weak kfunc of an incompatible prototype, or a reference not on an `ld_imm64` or
/// a call.
pub fn resolve_ksyms(
    program: &ProgramSpec,
    insns: &mut [Insn],
    local: Option<&Btf<'_>>,
    kernel: &Btf<'_>,
    kallsyms: &dyn Fn(&str) -> Result<Option<u64>, String>,
) -> Result<BTreeMap<String, KsymResolution>, PrepareError> {
    let err = |reason: String| PrepareError::Program {
        program: program.name.clone(),
        reason,
    };
    let mut resolved: BTreeMap<String, KsymResolution> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for r in &program.references {
        let RefTarget::Ksym { name, kind, weak } = &r.target else {
            continue;
        };
        let what = match kind {
            KsymKind::Var => "variable",
            KsymKind::Func => "function",
            KsymKind::Typeless => "symbol",
        };
        let res = if let Some(res) = resolved.get(name) {
            *res
        } else {
            let res = if *kind == KsymKind::Typeless {
                match kallsyms(name) {
                    Ok(Some(addr)) => Ok(KsymResolution::Address(addr)),
                    Ok(None) if *weak => Ok(KsymResolution::Missing),
                    Ok(None) => Err(format!(
                        "{KALLSYMS} does not list it; declare it __weak if the program can do without it"
                    )),
                    Err(e) => Err(e),
                }
            } else {
                resolve_ksym(name, *kind, *weak, local, kernel)
            }
            .map_err(|e| err(format!("extern {what} {name} (__ksym): {e}")))?;
            resolved.insert(name.clone(), res);
            order.push(name);
            res
        };
        let index = order.iter().position(|n| n == name).unwrap_or(0);
        let insn = insns.get(r.insn).copied().ok_or_else(|| {
            err(format!(
                "reference to {name} at instruction {} lies outside the program",
                r.insn
            ))
        })?;
        if insn.is_ld_imm64() && r.insn + 1 < insns.len() {
            let (src, imm, high) = match res {
                KsymResolution::BtfId(id) => (
                    handover_uapi::PSEUDO_BTF_ID,
                    i32::from_ne_bytes(id.to_ne_bytes()),
                    0,
                ),
                KsymResolution::Address(addr) => {
                    // The low half in the first immediate, the high half in the second.
                    let b = addr.to_le_bytes();
                    (
                        0,
                        i32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                        i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                    )
                }
                KsymResolution::Missing => (0, 0, 0),
            };
            if let Some(first) = insns.get_mut(r.insn) {
                *first = Insn::new(first.code, first.dst(), src, first.off, imm);
            }
            if let Some(second) = insns.get_mut(r.insn + 1) {
                second.imm = high;
            }
        } else if insn.code == handover_uapi::CALL && *kind == KsymKind::Func {
            let new = match res {
                KsymResolution::BtfId(id) => Insn::new(
                    insn.code,
                    0,
                    handover_uapi::PSEUDO_KFUNC_CALL,
                    0,
                    i32::from_ne_bytes(id.to_ne_bytes()),
                ),
                KsymResolution::Missing | KsymResolution::Address(_) => {
                    let index = i32::try_from(index).unwrap_or(0);
                    Insn::new(
                        insn.code,
                        0,
                        0,
                        0,
                        POISON_CALL_KFUNC_BASE.saturating_add(index),
                    )
                }
            };
            if let Some(slot) = insns.get_mut(r.insn) {
                *slot = new;
            }
        } else {
            return Err(err(format!(
                "reference to {name} at instruction {} is neither an ld_imm64 nor a kfunc call",
                r.insn
            )));
        }
    }
    Ok(resolved)
}

/// Looks one extern up in the kernel's BTF and checks its type against the local one.
fn resolve_ksym(
    name: &str,
    kind: KsymKind,
    weak: bool,
    local: Option<&Btf<'_>>,
    kernel: &Btf<'_>,
) -> Result<KsymResolution, String> {
    let btf_kind = match kind {
        KsymKind::Var | KsymKind::Typeless => Kind::Var,
        KsymKind::Func => Kind::Func,
    };
    let Some(kid) = kernel.id_by_name(name, btf_kind) else {
        if weak {
            return Ok(KsymResolution::Missing);
        }
        return Err(format!(
            "the kernel's BTF has no {} named {name}; declare it __weak if the program can do without it",
            btf_kind.name()
        ));
    };
    let local = local.ok_or("the object has no BTF to check its type against the kernel's")?;
    let lid = local
        .id_by_name(name, btf_kind)
        .ok_or_else(|| format!("the object's BTF has no {} named {name}", btf_kind.name()))?;
    // Both a VAR and a FUNC name their type (the variable's, the prototype) in
    // `size_or_type`.
    let type_of = |btf: &Btf<'_>, id: TypeId| {
        btf.type_by_id(id)
            .map(|t| TypeId(t.size_or_type()))
            .map_err(|e| e.to_string())
    };
    let (lty, kty) = (type_of(local, lid)?, type_of(kernel, kid)?);
    if crate::core::types_are_compat(local, lty, kernel, kty)? {
        return Ok(KsymResolution::BtfId(kid.0));
    }
    if weak && kind == KsymKind::Func {
        return Ok(KsymResolution::Missing);
    }
    Err(format!(
        "its type (local type [{}]) is not compatible with the kernel's (type [{}] of {} [{}])",
        lty.0,
        kty.0,
        btf_kind.name(),
        kid.0
    ))
}

/// `struct bpf_func_info` records of `program` (instruction index, `FUNC` type id).
#[must_use]
pub fn func_info_bytes(program: &ProgramSpec) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.func_info.len() * 8);
    for f in &program.func_info {
        out.extend_from_slice(&f.insn.to_ne_bytes());
        out.extend_from_slice(&f.type_id.0.to_ne_bytes());
    }
    out
}

/// `struct bpf_line_info` records of `program` (instruction index, file name and line
/// string offsets, line number and column).
#[must_use]
pub fn line_info_bytes(program: &ProgramSpec) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.line_info.len() * 16);
    for l in &program.line_info {
        let line_col = (l.line_number << 10) | (l.column & 0x3ff);
        for w in [l.insn, l.file_name.0, l.line.0, line_col] {
            out.extend_from_slice(&w.to_ne_bytes());
        }
    }
    out
}

/// Sections whose `DATASEC` describes externs resolved at load time, not ELF data.
const EXTERN_SECTIONS: [&str; 2] = [".kconfig", ".ksyms"];

/// Reads the `u32` at `at` of a native-endian buffer.
fn get(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(b.try_into().ok()?))
}

fn set(buf: &mut [u8], at: usize, v: u32) -> Option<()> {
    buf.get_mut(at..at.checked_add(4)?)?
        .copy_from_slice(&v.to_ne_bytes());
    Some(())
}

fn info(kind: Kind, kind_flag: bool, vlen: u16) -> u32 {
    (u32::from(kind_flag) << 31) | ((kind as u32) << 24) | u32::from(vlen)
}

/// The type and string sections of a blob being rewritten in place, plus records and
/// strings appended after them.
struct Rewrite {
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
    /// Type-section offset of each type record, by id.
    offsets: Vec<usize>,
    int_id: Option<u32>,
    dummy_var: Option<u32>,
    /// String offset of the placeholder variable's name.
    dummy_name: Option<u32>,
    enum64_placeholder: Option<u32>,
    param_name: Option<u32>,
}

impl Rewrite {
    fn string(&mut self, s: &str) -> u32 {
        let off = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn append(&mut self, words: &[u32]) -> u32 {
        // Appended records are indexed like the original ones (ids follow on).
        if self.offsets.len() == self.next_id as usize {
            self.offsets.push(self.types.len());
        }
        for w in words {
            self.types.extend_from_slice(&w.to_ne_bytes());
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// An unsigned 4-byte `INT` (appended once).
    fn int(&mut self) -> u32 {
        if let Some(id) = self.int_id {
            return id;
        }
        let name = self.string("int");
        let id = self.append(&[name, info(Kind::Int, false, 0), 4, 32]);
        self.int_id = Some(id);
        id
    }
}

fn btf_err(reason: impl Into<String>) -> PrepareError {
    PrepareError::Btf {
        reason: reason.into(),
    }
}

/// Where the data of an object's sections lies: what [`prepare_btf_with`] needs from
/// the ELF file besides the BTF.
pub trait SectionLayout {
    /// The size of the ELF section `section`.
    fn section_size(&self, section: &str) -> Option<u64>;
    /// The offset of variable `name` in `section`, and whether its visibility is
    /// hidden (so that it is static for user space).
    fn variable(&self, section: &str, name: &str) -> Option<(u64, bool)>;
}

impl SectionLayout for Object<'_> {
    fn section_size(&self, section: &str) -> Option<u64> {
        Object::section_size(self, section)
    }

    fn variable(&self, section: &str, name: &str) -> Option<(u64, bool)> {
        Object::variable(self, section, name).map(|v| (v.offset, v.hidden))
    }
}

/// One variable of a `DATASEC`, at its place in the section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedVar {
    /// The `VAR` (or, in extern sections, `FUNC`) type id the DATASEC entry names.
    pub var: TypeId,
    /// Its name.
    pub name: String,
    /// Whether the entry is a `VAR`.
    pub is_var: bool,
    /// Byte offset in the section.
    pub offset: u32,
    /// Size in bytes, as the DATASEC entry gives it.
    pub size: u32,
    /// Whether the symbol's visibility is hidden (static for user space).
    pub hidden: bool,
}

/// A `DATASEC` with its size and every variable at its place, sorted by offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedDatasec {
    /// The section's size in bytes.
    pub size: u32,
    /// The variables, by offset.
    pub vars: Vec<PlacedVar>,
}

/// Where the variables of `DATASEC` `id` lie, the one rule for both loading and
/// planning: clang leaves a data section's `DATASEC` with size 0 and every variable
/// at offset 0, so then the size is the ELF section's and each offset its symbol's
/// value (libbpf's fixup); a `DATASEC` with a size is taken as written. Every variable
/// must have a symbol in its section either way, which also says whether it is hidden.
///
/// # Errors
/// `id` is not a `DATASEC`, its section is missing (for a size-0 `DATASEC`), a variable
/// has no symbol, or an offset passes 4 GiB.
pub fn place_datasec(
    btf: &Btf<'_>,
    id: TypeId,
    layout: &dyn SectionLayout,
) -> Result<PlacedDatasec, PrepareError> {
    let t = btf
        .type_by_id(id)
        .map_err(|e| btf_err(format!("type {}: {e}", id.0)))?;
    let name_err = |e: handover_btf::Error| btf_err(format!("type {}: {e}", id.0));
    let name = t.name().map_err(name_err)?;
    let Detail::Datasec(ds) = t.detail() else {
        return Err(btf_err(format!("type {} ({name}) is not a DATASEC", id.0)));
    };
    let fixup = ds.size == 0;
    let size = if fixup {
        let size = layout
            .section_size(name)
            .filter(|&s| s > 0)
            .ok_or_else(|| {
                btf_err(format!(
                    "DATASEC {name} has size 0 and the object has no ELF section {name} to take it from"
                ))
            })?;
        u32::try_from(size).map_err(|_| btf_err(format!("section {name} larger than 4 GiB")))?
    } else {
        ds.size
    };
    let mut vars = Vec::new();
    for v in ds.vars {
        let var = btf.type_by_id(v.ty).map_err(name_err)?;
        let var_name = var.name().map_err(name_err)?;
        let (sym_offset, hidden) = layout.variable(name, var_name).ok_or_else(|| {
            btf_err(format!(
                "variable {var_name} of DATASEC {name} has no symbol in section {name}"
            ))
        })?;
        let offset = if fixup {
            u32::try_from(sym_offset)
                .map_err(|_| btf_err(format!("variable {var_name} lies beyond 4 GiB")))?
        } else {
            v.offset
        };
        vars.push(PlacedVar {
            var: v.ty,
            name: var_name.to_owned(),
            is_var: var.kind() == Kind::Var,
            offset,
            size: v.size,
            hidden,
        });
    }
    vars.sort_by_key(|v| v.offset);
    Ok(PlacedDatasec { size, vars })
}

/// The object's BTF as the kernel will take it ([`prepare_btf_with`] over the object's
/// own sections), or `None` when the object has no BTF.
///
/// # Errors
/// As [`prepare_btf_with`].
pub fn prepare_btf(
    object: &Object<'_>,
    features: &BtfFeatures,
) -> Result<Option<Vec<u8>>, PrepareError> {
    object
        .btf()
        .map(|btf| prepare_btf_with(btf, object, features))
        .transpose()
}

/// An object's BTF as the kernel will take it: the sizes of `DATASEC`s and offsets of
/// their `VAR`s filled in from the ELF section sizes and symbol table (clang leaves them
/// zero), hidden globals made static, extern sections (`.kconfig`, `.ksyms`) given a
/// placeholder layout of ints, and every kind the kernel lacks rewritten the way
/// libbpf does: `VAR` -> `INT`, `DATASEC` -> `STRUCT`, `FUNC` -> `TYPEDEF`,
/// `FUNC_PROTO` -> `ENUM`, global `FUNC` -> static, `FLOAT` -> empty `STRUCT`,
/// `DECL_TAG` -> `INT`, `TYPE_TAG` -> `CONST`, `ENUM64` -> `UNION` of a placeholder,
/// signed `ENUM` -> unsigned. Records are rewritten in place and new ones only
/// appended, so type ids and string offsets are kept and `func_info` and `line_info`
/// records stay valid.
///
/// # Errors
/// The BTF is not in host byte order, a `DATASEC` has no ELF section or a `VAR` no
/// symbol, or the blob is malformed.
pub fn prepare_btf_with(
    btf: &Btf<'_>,
    layout: &dyn SectionLayout,
    features: &BtfFeatures,
) -> Result<Vec<u8>, PrepareError> {
    if btf.endian() != Endian::native() {
        return Err(PrepareError::ByteOrder {
            object: btf.endian(),
            host: Endian::native(),
        });
    }
    // A DECL_TAG may tag a FUNC parameter or a VAR; once those are rewritten, the tag
    // has nothing valid to point at. (Kernels with DECL_TAG have both anyway.)
    let features = &BtfFeatures {
        decl_tag: features.decl_tag && features.func && features.datasec,
        func_global: features.func_global && features.func,
        ..*features
    };
    let raw = btf.raw();
    let word = |at: usize| get(raw, at).map(|w| w as usize);
    let (Some(hdr_len), Some(type_off), Some(type_len), Some(str_off), Some(str_len)) =
        (word(4), word(8), word(12), word(16), word(20))
    else {
        return Err(btf_err("BTF header truncated"));
    };
    let types_start = hdr_len + type_off;
    let section = |start: usize, len: usize, what: &str| {
        raw.get(start..start + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| btf_err(format!("{what} section lies outside the blob")))
    };
    let mut rw = Rewrite {
        types: section(types_start, type_len, "type")?,
        strings: section(hdr_len + str_off, str_len, "string")?,
        next_id: u32::try_from(btf.type_count() + 1).unwrap_or(u32::MAX),
        offsets: vec![0],
        int_id: None,
        dummy_var: None,
        dummy_name: None,
        enum64_placeholder: None,
        param_name: None,
    };
    for (_, t) in btf.types() {
        rw.offsets.push(t.offset() - types_start);
    }
    for (id, t) in btf.types() {
        let at = rw.offsets.get(id.0 as usize).copied().unwrap_or(0);
        rewrite_type(layout, btf, &t, at, features, &mut rw)?;
    }
    let mut out = Vec::with_capacity(24 + rw.types.len() + rw.strings.len());
    out.extend_from_slice(&handover_btf::MAGIC.to_ne_bytes());
    out.extend_from_slice(&[1, 0]);
    let tl = u32::try_from(rw.types.len()).map_err(|_| btf_err("type section too large"))?;
    let sl = u32::try_from(rw.strings.len()).map_err(|_| btf_err("string section too large"))?;
    for w in [24, 0, tl, tl, sl] {
        out.extend_from_slice(&u32::to_ne_bytes(w));
    }
    out.extend_from_slice(&rw.types);
    out.extend_from_slice(&rw.strings);
    Ok(out)
}

fn bad(t: &handover_btf::Type<'_>) -> PrepareError {
    btf_err(format!("type {} record is truncated", t.id().0))
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per kind, in the order libbpf applies them"
)]
fn rewrite_type(
    layout: &dyn SectionLayout,
    btf: &Btf<'_>,
    t: &handover_btf::Type<'_>,
    at: usize,
    f: &BtfFeatures,
    rw: &mut Rewrite,
) -> Result<(), PrepareError> {
    let name_err = |e: handover_btf::Error| btf_err(format!("type {}: {e}", t.id().0));
    let vlen = usize::from(t.vlen());
    match t.detail() {
        Detail::Datasec(ds) => {
            let name = t.name().map_err(name_err)?;
            let is_extern = EXTERN_SECTIONS.contains(&name);
            if is_extern {
                // Externs are resolved at load time, so the kernel only needs a valid
                // layout: every variable an int, one after the other.
                let mut off = 0u32;
                for (i, v) in ds.vars.enumerate() {
                    let target = btf.type_by_id(v.ty).map_err(name_err)?;
                    let slot = at + 12 + i * 12;
                    if target.kind() == Kind::Var {
                        let var_at = rw.offsets.get(v.ty.0 as usize).copied().unwrap_or(0);
                        let int = rw.int();
                        set(&mut rw.types, var_at + 8, int).ok_or_else(|| bad(t))?;
                        set(&mut rw.types, var_at + 12, Linkage::GLOBAL.0).ok_or_else(|| bad(t))?;
                    } else {
                        let dummy = if let Some(d) = rw.dummy_var {
                            d
                        } else {
                            let int = rw.int();
                            let name = rw.string("dummy_ksym");
                            rw.dummy_name = Some(name);
                            // Without DATASEC the variables become INTs, this one too.
                            let d = if f.datasec {
                                rw.append(&[name, info(Kind::Var, false, 0), int, 1])
                            } else {
                                rw.append(&[name, info(Kind::Int, false, 0), 1, 8])
                            };
                            rw.dummy_var = Some(d);
                            d
                        };
                        set(&mut rw.types, slot, dummy).ok_or_else(|| bad(t))?;
                        // The kernel wants every parameter of a FUNC's prototype named;
                        // clang leaves those of extern declarations unnamed. They take
                        // the placeholder variable's name, as libbpf does.
                        if let Detail::Func(func) = target.detail()
                            && let Ok(proto) = btf.type_by_id(func.proto)
                            && let Detail::FuncProto(fp) = proto.detail()
                        {
                            let proto_at = rw.offsets.get(func.proto.0 as usize).copied();
                            if let (Some(proto_at), Some(name)) = (proto_at, rw.dummy_name) {
                                for (k, p) in fp.params.enumerate() {
                                    if p.ty.0 != 0 && p.name_off.0 == 0 {
                                        set(&mut rw.types, proto_at + 12 + k * 8, name)
                                            .ok_or_else(|| bad(t))?;
                                    }
                                }
                            }
                        }
                    }
                    set(&mut rw.types, slot + 4, off).ok_or_else(|| bad(t))?;
                    set(&mut rw.types, slot + 8, 4).ok_or_else(|| bad(t))?;
                    off += 4;
                }
                set(&mut rw.types, at + 8, off).ok_or_else(|| bad(t))?;
            } else {
                let placed = place_datasec(btf, t.id(), layout)?;
                if placed.size != ds.size {
                    set(&mut rw.types, at + 8, placed.size).ok_or_else(|| bad(t))?;
                }
                let mut entries = Vec::with_capacity(vlen);
                for v in &placed.vars {
                    if v.hidden && v.is_var {
                        let var_at = rw.offsets.get(v.var.0 as usize).copied().unwrap_or(0);
                        set(&mut rw.types, var_at + 12, Linkage::STATIC.0).ok_or_else(|| bad(t))?;
                    }
                    entries.push([v.var.0, v.offset, v.size]);
                }
                for (i, e) in entries.iter().enumerate() {
                    for (k, w) in e.iter().enumerate() {
                        set(&mut rw.types, at + 12 + i * 12 + k * 4, *w).ok_or_else(|| bad(t))?;
                    }
                }
            }
            if !f.datasec {
                // A struct whose members are the (now INT) variables at their offsets;
                // the kernel refuses dots in struct names.
                let vlen16 = t.vlen();
                set(&mut rw.types, at + 4, info(Kind::Struct, false, vlen16))
                    .ok_or_else(|| bad(t))?;
                let name_off = t.name_off().0 as usize;
                if let Some(bytes) = rw.strings.get_mut(name_off..name_off + name.len()) {
                    for b in bytes.iter_mut().filter(|b| **b == b'.') {
                        *b = b'_';
                    }
                }
                for i in 0..vlen {
                    let slot = at + 12 + i * 12;
                    let (ty, off) = (get(&rw.types, slot), get(&rw.types, slot + 4));
                    let (Some(ty), Some(off)) = (ty, off) else {
                        return Err(bad(t));
                    };
                    let var_name = rw
                        .offsets
                        .get(ty as usize)
                        .and_then(|&o| get(&rw.types, o))
                        .unwrap_or(0);
                    set(&mut rw.types, slot, var_name).ok_or_else(|| bad(t))?;
                    set(&mut rw.types, slot + 4, ty).ok_or_else(|| bad(t))?;
                    set(&mut rw.types, slot + 8, off.saturating_mul(8)).ok_or_else(|| bad(t))?;
                }
            }
        }
        Detail::Var(_) if !f.datasec => {
            // The name stays: it names the struct member that replaces the variable.
            set(&mut rw.types, at + 4, info(Kind::Int, false, 0)).ok_or_else(|| bad(t))?;
            set(&mut rw.types, at + 8, 1).ok_or_else(|| bad(t))?;
            set(&mut rw.types, at + 12, 8).ok_or_else(|| bad(t))?;
        }
        Detail::Func(func) => {
            if !f.func {
                set(&mut rw.types, at + 4, info(Kind::Typedef, false, 0)).ok_or_else(|| bad(t))?;
            } else if func.linkage == Linkage::EXTERN
                || (!f.func_global && func.linkage == Linkage::GLOBAL)
            {
                // Extern functions are resolved by the loader; the kernel knows only
                // static and global ones.
                let linkage = u16::from(f.func_global);
                set(&mut rw.types, at + 4, info(Kind::Func, false, linkage))
                    .ok_or_else(|| bad(t))?;
            }
        }
        Detail::FuncProto(_) if !f.func => {
            let vlen16 = t.vlen();
            set(&mut rw.types, at + 4, info(Kind::Enum, false, vlen16)).ok_or_else(|| bad(t))?;
            set(&mut rw.types, at + 8, 4).ok_or_else(|| bad(t))?;
            for i in 0..vlen {
                let slot = at + 12 + i * 8;
                if get(&rw.types, slot) == Some(0) {
                    let name = if let Some(p) = rw.param_name {
                        p
                    } else {
                        let p = rw.string("param");
                        rw.param_name = Some(p);
                        p
                    };
                    set(&mut rw.types, slot, name).ok_or_else(|| bad(t))?;
                }
            }
        }
        Detail::Float { .. } if !f.float => {
            set(&mut rw.types, at, 0).ok_or_else(|| bad(t))?;
            set(&mut rw.types, at + 4, info(Kind::Struct, false, 0)).ok_or_else(|| bad(t))?;
        }
        Detail::DeclTag(_) if !f.decl_tag => {
            set(&mut rw.types, at, 0).ok_or_else(|| bad(t))?;
            set(&mut rw.types, at + 4, info(Kind::Int, false, 0)).ok_or_else(|| bad(t))?;
            set(&mut rw.types, at + 8, 1).ok_or_else(|| bad(t))?;
            set(&mut rw.types, at + 12, 8).ok_or_else(|| bad(t))?;
        }
        Detail::TypeTag(_) if !f.type_tag => {
            set(&mut rw.types, at, 0).ok_or_else(|| bad(t))?;
            set(&mut rw.types, at + 4, info(Kind::Const, false, 0)).ok_or_else(|| bad(t))?;
        }
        Detail::Enum64(_) if !f.enum64 => {
            let placeholder = if let Some(p) = rw.enum64_placeholder {
                p
            } else {
                let name = rw.string("enum64_placeholder");
                let p = rw.append(&[name, info(Kind::Int, false, 0), 1, 8]);
                rw.enum64_placeholder = Some(p);
                p
            };
            set(&mut rw.types, at + 4, info(Kind::Union, false, t.vlen())).ok_or_else(|| bad(t))?;
            for i in 0..vlen {
                let slot = at + 12 + i * 12;
                set(&mut rw.types, slot + 4, placeholder).ok_or_else(|| bad(t))?;
                set(&mut rw.types, slot + 8, 0).ok_or_else(|| bad(t))?;
            }
        }
        Detail::Enum(_) if !f.enum64 && t.kind_flag() => {
            set(&mut rw.types, at + 4, info(Kind::Enum, false, t.vlen())).ok_or_else(|| bad(t))?;
        }
        _ => {}
    }
    Ok(())
}

/// Map types whose kernel implementation refuses BTF key and value types.
fn takes_btf(map_type: MapType) -> bool {
    !matches!(
        map_type,
        MapType::PerfEventArray
            | MapType::CgroupArray
            | MapType::StackTrace
            | MapType::ArrayOfMaps
            | MapType::HashOfMaps
            | MapType::Devmap
            | MapType::DevmapHash
            | MapType::Cpumap
            | MapType::Xskmap
            | MapType::Sockmap
            | MapType::Sockhash
            | MapType::Queue
            | MapType::Stack
            | MapType::Arena
            | MapType::ProgArray
            | MapType::Ringbuf
            | MapType::UserRingbuf
    )
}

/// The BTF type ids a map is created with: `(key, value)`, or `None` for no BTF.
///
/// Map types whose kernel code refuses BTF get none, and so do global data maps when
/// the kernel lacks `DATASEC`: the kernel accepts a map without key type only when its
/// value is a `DATASEC`.
#[must_use]
pub fn map_btf_ids(spec: &MapSpec, features: &BtfFeatures) -> Option<(u32, u32)> {
    let global_data = matches!(spec.origin, MapOrigin::GlobalData { .. });
    if !takes_btf(spec.map_type)
        || spec.value_type.is_none() && spec.key_type.is_none()
        || global_data && !features.datasec
    {
        return None;
    }
    Some((
        spec.key_type.map_or(0, |t| t.0),
        spec.value_type.map_or(0, |t| t.0),
    ))
}

/// The size a ring buffer of `n` bytes is created with: the smallest power-of-two
/// multiple of the page size that holds `n` (`n` itself when it already is one, or when
/// none fits in a `u32` and the kernel is left to refuse it).
#[must_use]
pub fn ringbuf_size(n: u32, page_size: u32) -> u32 {
    if page_size == 0 || n.is_multiple_of(page_size) && (n / page_size).is_power_of_two() {
        return n;
    }
    let mut size = page_size;
    while size <= n {
        match size.checked_mul(2) {
            Some(s) => size = s,
            None => return n,
        }
    }
    size
}

/// The capacity a map is created with: as libbpf does, a ring buffer's size is
/// rounded up to a power-of-two multiple of the page size, and a perf event array
/// without `max_entries` gets one slot per possible CPU.
#[must_use]
pub fn created_max_entries(spec: &MapSpec, page_size: u32, possible_cpus: u32) -> u32 {
    let n = spec.max_entries;
    match spec.map_type {
        MapType::Ringbuf | MapType::UserRingbuf if n != 0 => ringbuf_size(n, page_size),
        MapType::PerfEventArray if n == 0 => possible_cpus,
        _ => n,
    }
}

/// The kernel BTF type a tracing or LSM program attaches to, as libbpf names it:
/// the function for `fentry`/`fexit`/`fmod_ret`, `bpf_lsm_NAME` for `lsm`,
/// `btf_trace_NAME` (a typedef) for `tp_btf`, `bpf_iter_NAME` for `iter`. `None` for
/// programs that need no attach type id.
#[must_use]
pub fn attach_btf_name(program: &ProgramSpec) -> Option<(String, Kind)> {
    use handover_uapi::AttachType as A;
    let target = program.attach_target.as_deref()?;
    match (program.prog_type, program.expected_attach_type?) {
        (ProgramType::Tracing, A::TraceFentry | A::TraceFexit | A::ModifyReturn) => {
            Some((target.to_owned(), Kind::Func))
        }
        (ProgramType::Tracing, A::TraceRawTp) => {
            Some((format!("btf_trace_{target}"), Kind::Typedef))
        }
        (ProgramType::Tracing, A::TraceIter) => Some((format!("bpf_iter_{target}"), Kind::Func)),
        (ProgramType::Lsm, A::LsmMac | A::LsmCgroup) => {
            Some((format!("bpf_lsm_{target}"), Kind::Func))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
