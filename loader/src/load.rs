//! Loading a parsed object into the kernel: its BTF, its maps and its programs.
//!
//! The planning steps are pure functions over the specs: [`prepare_btf`] fixes up and
//! sanitises the object's BTF for what a kernel supports ([`BtfFeatures`]),
//! [`relocate`] writes map descriptors into a program's instructions, [`kernel_name`]
//! gives the name the kernel keeps. [`load`] runs them and is the only part that talks
//! to the kernel, through [`Bpf`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use handover_btf::{Btf, Builder, Detail, Endian, Kind, Linkage, StrOffset, TypeId};

use crate::core::{CoreOutcome, CoreTarget, apply_core};
use crate::maps::{MapOrigin, MapSpec, SlotTarget};
use crate::object::Object;
use crate::program::{KsymKind, ProgramSpec, RefTarget};
use crate::program_types::ProgramTypes;
use crate::sys::{
    self, Bpf, Insn, LogLevel, MapBtf, MapCreate, MapType, ProgLoad, ProgramType, UpdateFlags,
};

/// Bytes of an object name the kernel keeps (`BPF_OBJ_NAME_LEN` without the NUL).
pub const KERNEL_NAME_LEN: usize = 15;

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

    /// Asks the kernel about each feature by loading a minimal BTF blob that uses it.
    #[must_use]
    pub fn probe(bpf: &Bpf) -> Self {
        let accepts = |blob: Vec<u8>| bpf.btf_load(&blob, LogLevel::Always(0)).is_ok();
        Self {
            btf: accepts(probe_blob(|_, _| {})),
            func: accepts(probe_blob(|b, int| {
                let proto = b.add(StrOffset(0), Kind::FuncProto, false, 0, int.0, &[]);
                let name = b.string("f");
                b.add(name, Kind::Func, false, 0, proto.0, &[]);
            })),
            func_global: accepts(probe_blob(|b, int| {
                let proto = b.add(StrOffset(0), Kind::FuncProto, false, 0, int.0, &[]);
                let name = b.string("f");
                b.add(name, Kind::Func, false, 1, proto.0, &[]);
            })),
            datasec: accepts(probe_blob(|b, int| {
                let name = b.string("x");
                let var = b.add(name, Kind::Var, false, 0, int.0, &[Linkage::GLOBAL.0]);
                let sec = b.string(".data");
                b.add(sec, Kind::Datasec, false, 1, 4, &[var.0, 0, 4]);
            })),
            float: accepts(probe_blob(|b, _| {
                let name = b.string("float");
                b.add(name, Kind::Float, false, 0, 4, &[]);
            })),
            decl_tag: accepts(probe_blob(|b, int| {
                let name = b.string("x");
                let var = b.add(name, Kind::Var, false, 0, int.0, &[Linkage::GLOBAL.0]);
                let tag = b.string("tag");
                b.add(tag, Kind::DeclTag, false, 0, var.0, &[u32::MAX]);
            })),
            type_tag: accepts(probe_blob(|b, int| {
                let tag = b.string("tag");
                let t = b.add(tag, Kind::TypeTag, false, 0, int.0, &[]);
                b.add(StrOffset(0), Kind::Ptr, false, 0, t.0, &[]);
            })),
            enum64: accepts(probe_blob(|b, _| {
                let name = b.string("e");
                let v = b.string("v");
                b.add(name, Kind::Enum64, false, 1, 8, &[v.0, 0, 1]);
            })),
        }
    }
}

/// A native-endian blob with `int` as type 1 and whatever `more` adds.
fn probe_blob(more: impl FnOnce(&mut Builder, TypeId)) -> Vec<u8> {
    let mut b = Builder::new(Endian::native());
    let name = b.string("int");
    let int = b.add(name, Kind::Int, false, 0, 4, &[(1 << 24) | 32]);
    more(&mut b, int);
    b.finish()
}

/// Why an object could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
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
    /// The kernel refused the prepared BTF.
    #[error("loading the object's BTF into the kernel")]
    BtfLoad {
        /// The kernel's error, with its BTF log.
        #[source]
        source: sys::Error,
    },
    /// A map could not be created.
    #[error("creating map {map}")]
    MapCreate {
        /// The map's name in the object.
        map: String,
        /// The kernel's error.
        #[source]
        source: sys::Error,
    },
    /// A map could not be filled with its initial contents or frozen.
    #[error("initialising map {map}: {what}")]
    MapInit {
        /// The map's name in the object.
        map: String,
        /// The step that failed.
        what: String,
        /// The kernel's error.
        #[source]
        source: sys::Error,
    },
    /// A map descriptor could not be duplicated.
    #[error("duplicating the descriptor of map {map}")]
    Descriptor {
        /// The map's name in the object.
        map: String,
        /// The error of `dup`.
        #[source]
        source: std::io::Error,
    },
    /// A static slot refers to a program or map that was not loaded.
    #[error(
        "slot {index} of map {map} refers to {target}, which was not loaded: load it too (LoadOptions::programs)"
    )]
    SlotTarget {
        /// The prog array or map-in-map.
        map: String,
        /// The slot.
        index: u32,
        /// The program or map it refers to.
        target: String,
    },
    /// A map passed for reuse does not match the object's definition.
    #[error("map {map} given for reuse does not match the object's definition: {reason}")]
    ReusedMap {
        /// The map's name in the object.
        map: String,
        /// Which property differs, with both values.
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
    /// Programs to load whose sections' names give no program type, and no rule of
    /// [`LoadOptions::program_types`] gave one: every such section, with its programs.
    #[error("{}", untyped_message(sections))]
    UnknownProgramTypes {
        /// Each section without a type, with the programs in it.
        sections: Vec<UntypedSection>,
    },
    /// The kernel refused a program.
    #[error("loading program {program} (section {section})")]
    ProgramLoad {
        /// The program's name.
        program: String,
        /// Its section.
        section: String,
        /// The kernel's error, with the verifier log.
        #[source]
        source: sys::Error,
    },
}

/// A program section whose name gives no program type, with the programs in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UntypedSection {
    /// The section name.
    pub section: String,
    /// Its programs that were to be loaded.
    pub programs: Vec<String>,
}

fn untyped_message(sections: &[UntypedSection]) -> String {
    let list: Vec<String> = sections
        .iter()
        .map(|s| format!("section {:?} (programs {:?})", s.section, s.programs))
        .collect();
    format!(
        "{} program section(s) have names that give no program type: {}; give each a type \
         with --program-type SECTION=TYPE[:ATTACH] (SECTION may end in * for a prefix, or \
         be * for every program)",
        sections.len(),
        list.join(", ")
    )
}

/// Options of [`load`].
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// Maps to use instead of creating them, by name in the object (pinned maps of a
    /// running version). Each must match its definition (type, key and value size,
    /// capacity, flags); it is used as it is: no initial contents are written to it and
    /// it is not frozen, but the static slots of a prog array are still filled with the
    /// programs of this object. The loaded object holds a duplicate of each descriptor.
    pub reuse_maps: HashMap<String, Arc<OwnedFd>>,
    /// Program types by section (exact, prefix, or every program), overriding what
    /// section names say; a program whose section gives no type needs one here.
    pub program_types: ProgramTypes,
    /// Load every program that can be loaded, and report each refusal in
    /// [`LoadedObject::failed`] instead of failing the whole load at the first one.
    /// Maps are still all or nothing.
    pub keep_going: bool,
    /// BTF features to assume instead of probing the kernel.
    pub btf_features: Option<BtfFeatures>,
    /// Verifier log level for program loads.
    pub log_level: LogLevel,
    /// Load only the programs with these names (`None`: every program). A static
    /// prog array slot that refers to a program left out is an error.
    pub programs: Option<BTreeSet<String>>,
    /// Raw BTF to resolve CO-RE relocations against (`None`: the running kernel's,
    /// read from `/sys/kernel/btf/vmlinux` once per load, and only if a program has
    /// CO-RE relocations).
    pub core_btf: Option<Vec<u8>>,
    /// Fail when the kernel refuses the object's BTF, instead of loading without it
    /// (libbpf's default, kept here: the refusal is then in
    /// [`LoadedObject::btf_error`]).
    pub require_btf: bool,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The target BTF is megabytes of bytes: show its size only.
        f.debug_struct("LoadOptions")
            .field("reuse_maps", &self.reuse_maps)
            .field("program_types", &self.program_types)
            .field("keep_going", &self.keep_going)
            .field("btf_features", &self.btf_features)
            .field("log_level", &self.log_level)
            .field("programs", &self.programs)
            .field("require_btf", &self.require_btf)
            .field(
                "core_btf",
                &self.core_btf.as_ref().map(|b| format!("{} bytes", b.len())),
            )
            .finish()
    }
}

/// A map of a loaded object.
#[derive(Debug)]
pub struct LoadedMap {
    /// The map.
    pub fd: OwnedFd,
    /// Its definition in the object.
    pub spec: MapSpec,
    /// Whether it came from [`LoadOptions::reuse_maps`] rather than being created.
    pub reused: bool,
    /// The BTF key and value type ids it was created with (`None`: without BTF).
    pub btf_type_ids: Option<(u32, u32)>,
}

/// A program of a loaded object.
#[derive(Debug)]
pub struct LoadedProgram {
    /// The program.
    pub fd: OwnedFd,
    /// Its definition in the object.
    pub spec: ProgramSpec,
    /// What each of its CO-RE relocations wrote (a `None` target: the instruction was
    /// poisoned, as the relocation has no value on the target kernel).
    pub core: Vec<CoreOutcome>,
}

/// An object in the kernel: its BTF and owned handles to its maps and programs.
#[derive(Debug)]
pub struct LoadedObject {
    /// The object's BTF as loaded (fixed up and sanitised), if the kernel took it.
    pub btf: Option<OwnedFd>,
    /// The kernel's refusal of the object's BTF (with its BTF log), when the object was
    /// loaded without it; see [`LoadOptions::require_btf`].
    pub btf_error: Option<sys::Error>,
    /// Every map by name in the object (inner map templates excluded: they only serve
    /// to create their outer map).
    pub maps: BTreeMap<String, LoadedMap>,
    /// Every program loaded, by name.
    pub programs: BTreeMap<String, LoadedProgram>,
    /// Every program that was to be loaded but was not, by name, with why (only with
    /// [`LoadOptions::keep_going`]; without it the first refusal fails the load).
    pub failed: BTreeMap<String, LoadError>,
}

impl LoadedObject {
    /// The map named `name`.
    #[must_use]
    pub fn map(&self, name: &str) -> Option<&LoadedMap> {
        self.maps.get(name)
    }

    /// The program named `name`.
    #[must_use]
    pub fn program(&self, name: &str) -> Option<&LoadedProgram> {
        self.programs.get(name)
    }
}

/// The name the kernel keeps for an object named `name`: its first
/// [`KERNEL_NAME_LEN`] bytes, with every byte outside `[A-Za-z0-9_.]` replaced by `_`.
#[must_use]
pub fn kernel_name(name: &str) -> String {
    name.bytes()
        .take(KERNEL_NAME_LEN)
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' {
                char::from(b)
            } else {
                '_'
            }
        })
        .collect()
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
) -> Result<Vec<Insn>, LoadError> {
    let mut insns = program.insns.clone();
    for r in &program.references {
        let (map, src, offset) = match &r.target {
            RefTarget::Map { map } => (map, crate::PSEUDO_MAP_FD, 0),
            RefTarget::MapValue { map, offset } => (map, crate::PSEUDO_MAP_VALUE, *offset),
            RefTarget::Call { .. } | RefTarget::FuncAddr { .. } | RefTarget::Ksym { .. } => {
                continue;
            }
        };
        let err = |reason: String| LoadError::Program {
            program: program.name.clone(),
            reason,
        };
        let fd = fd_of(map).ok_or_else(|| {
            err(format!(
                "instruction {} refers to map {map}, which was not created",
                r.insn
            ))
        })?;
        let ok =
            insns.get(r.insn).is_some_and(crate::insn::is_ld_imm64) && r.insn + 1 < insns.len();
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

/// Where the kernel lists its symbols' addresses.
const KALLSYMS: &str = "/proc/kallsyms";

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
) -> Result<BTreeMap<String, KsymResolution>, LoadError> {
    let err = |reason: String| LoadError::Program {
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
        if crate::insn::is_ld_imm64(&insn) && r.insn + 1 < insns.len() {
            let (src, imm, high) = match res {
                KsymResolution::BtfId(id) => (
                    crate::PSEUDO_BTF_ID,
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
        } else if insn.code == crate::insn::CALL && *kind == KsymKind::Func {
            let new = match res {
                KsymResolution::BtfId(id) => Insn::new(
                    insn.code,
                    0,
                    crate::PSEUDO_KFUNC_CALL,
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

fn btf_err(reason: impl Into<String>) -> LoadError {
    LoadError::Btf {
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

/// The object's BTF as the kernel will take it ([`prepare_btf_with`] over the object's
/// own sections), or `None` when the object has no BTF.
///
/// # Errors
/// As [`prepare_btf_with`].
pub fn prepare_btf(
    object: &Object<'_>,
    features: &BtfFeatures,
) -> Result<Option<Vec<u8>>, LoadError> {
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
) -> Result<Vec<u8>, LoadError> {
    if btf.endian() != Endian::native() {
        return Err(LoadError::ByteOrder {
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

fn bad(t: &handover_btf::Type<'_>) -> LoadError {
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
) -> Result<(), LoadError> {
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
                let fixup = ds.size == 0;
                if fixup {
                    let size = layout
                        .section_size(name)
                        .filter(|&s| s > 0)
                        .ok_or_else(|| {
                            btf_err(format!(
                                "DATASEC {name} has size 0 and the object has no ELF section {name} to take it from"
                            ))
                        })?;
                    let size = u32::try_from(size)
                        .map_err(|_| btf_err(format!("section {name} larger than 4 GiB")))?;
                    set(&mut rw.types, at + 8, size).ok_or_else(|| bad(t))?;
                }
                let mut entries = Vec::with_capacity(vlen);
                for v in ds.vars {
                    let var = btf.type_by_id(v.ty).map_err(name_err)?;
                    let var_name = var.name().map_err(name_err)?;
                    let (sym_offset, hidden) = layout.variable(name, var_name).ok_or_else(|| {
                        btf_err(format!(
                            "variable {var_name} of DATASEC {name} has no symbol in section {name}"
                        ))
                    })?;
                    let offset = if fixup {
                        u32::try_from(sym_offset).map_err(|_| {
                            btf_err(format!("variable {var_name} lies beyond 4 GiB"))
                        })?
                    } else {
                        v.offset
                    };
                    if hidden && var.kind() == Kind::Var {
                        let var_at = rw.offsets.get(v.ty.0 as usize).copied().unwrap_or(0);
                        set(&mut rw.types, var_at + 12, Linkage::STATIC.0).ok_or_else(|| bad(t))?;
                    }
                    entries.push([v.ty.0, offset, v.size]);
                }
                entries.sort_by_key(|e| e[1]);
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

fn create_map(
    bpf: &Bpf,
    spec: &MapSpec,
    features: &BtfFeatures,
    btf: Option<BorrowedFd<'_>>,
    inner: Option<BorrowedFd<'_>>,
) -> Result<(OwnedFd, Option<(u32, u32)>), LoadError> {
    let name = kernel_name(&spec.name);
    let cpus = match spec.map_type {
        MapType::PerfEventArray if spec.max_entries == 0 => {
            bpf.possible_cpus().map_err(|source| LoadError::MapCreate {
                map: spec.name.clone(),
                source,
            })?
        }
        _ => 0,
    };
    let max_entries = created_max_entries(
        spec,
        sys::page_size(),
        u32::try_from(cpus).unwrap_or(u32::MAX),
    );
    let mut args = MapCreate::new(spec.map_type, spec.key_size, spec.value_size, max_entries);
    args.flags = spec.flags;
    args.name = &name;
    // As libbpf: the node applies only when the definition also sets BPF_F_NUMA_NODE
    // (per-CPU maps refuse a node, and `numa_node` alone is a hint clang always emits
    // as written).
    args.numa_node = spec
        .numa_node
        .filter(|_| spec.flags & sys::map_flags::NUMA_NODE != 0);
    args.map_extra = spec.map_extra;
    args.inner_map_fd = inner;
    let ids = btf.and(map_btf_ids(spec, features));
    if let (Some(fd), Some((key, value))) = (btf, ids) {
        args.btf = Some(MapBtf {
            fd,
            key_type_id: key,
            value_type_id: value,
            vmlinux_value_type_id: 0,
        });
    }
    let err = |source| LoadError::MapCreate {
        map: spec.name.clone(),
        source,
    };
    match bpf.map_create(&args) {
        Ok(fd) => Ok((fd, ids)),
        // As libbpf: a map type that turns out to refuse BTF is created without it.
        Err(e) if args.btf.is_some() && e.errno() != Some(libc::EPERM) => {
            args.btf = None;
            bpf.map_create(&args)
                .map(|fd| (fd, None))
                .map_err(|_| err(e))
        }
        Err(e) => Err(err(e)),
    }
}

fn check_reused(bpf: &Bpf, spec: &MapSpec, fd: &OwnedFd) -> Result<(), LoadError> {
    let info = bpf.map_info(fd).map_err(|source| LoadError::MapInit {
        map: spec.name.clone(),
        what: "reading the reused map's info".into(),
        source,
    })?;
    let cpus = match spec.map_type {
        MapType::PerfEventArray if spec.max_entries == 0 => {
            bpf.possible_cpus().map_err(|source| LoadError::MapInit {
                map: spec.name.clone(),
                what: "counting the possible CPUs".into(),
                source,
            })?
        }
        _ => 0,
    };
    let cpus = u32::try_from(cpus).unwrap_or(u32::MAX);
    let diffs = reused_map_differences(&info, spec, sys::page_size(), cpus);
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(LoadError::ReusedMap {
            map: spec.name.clone(),
            reason: diffs.join(", "),
        })
    }
}

/// `BPF_F_RDONLY` and `BPF_F_WRONLY`: access modes of the descriptor that creates a
/// map, which the kernel clears from the map's own `map_flags`.
const FD_ACCESS_FLAGS: u32 = sys::map_flags::RDONLY | sys::map_flags::WRONLY;

/// How the map the kernel describes in `info` differs from the one [`load`] would
/// create for `spec`: compared with what creation gives (the capacity of
/// [`created_max_entries`], the flags less [`FD_ACCESS_FLAGS`]), not with the
/// definition as written.
#[must_use]
fn reused_map_differences(
    info: &sys::MapInfo,
    spec: &MapSpec,
    page_size: u32,
    possible_cpus: u32,
) -> Vec<String> {
    let mut diffs = Vec::new();
    if info.map_type != Some(spec.map_type) {
        diffs.push(format!(
            "type {} (object: {})",
            info.map_type.map_or("unknown", MapType::name),
            spec.map_type.name()
        ));
    }
    for (what, have, want) in [
        ("key size", info.key_size, spec.key_size),
        ("value size", info.value_size, spec.value_size),
        (
            "max_entries",
            info.max_entries,
            created_max_entries(spec, page_size, possible_cpus),
        ),
        (
            "flags",
            info.flags & !FD_ACCESS_FLAGS,
            spec.flags & !FD_ACCESS_FLAGS,
        ),
    ] {
        if have != want {
            diffs.push(format!("{what} {have} (object: {want})"));
        }
    }
    if info.map_extra != spec.map_extra {
        diffs.push(format!(
            "map_extra {} (object: {})",
            info.map_extra, spec.map_extra
        ));
    }
    diffs
}

/// Loads `object` into the kernel: its BTF (prepared by [`prepare_btf`] for the
/// kernel's [`BtfFeatures`]), every map (created, or taken from
/// [`LoadOptions::reuse_maps`]), global data written and `.rodata` frozen, map-in-map
/// slots filled, then every program (CO-RE relocations applied by
/// [`apply_core`](crate::apply_core) against [`LoadOptions::core_btf`] or the kernel's
/// BTF, map references by [`relocate`]), then the static slots
/// of prog arrays. Everything created is closed again if a later step fails.
///
/// # Errors
/// The first step that fails, naming the map or program, with the kernel's log where
/// there is one.
pub fn load(
    bpf: &Bpf,
    object: &Object<'_>,
    options: LoadOptions,
) -> Result<LoadedObject, LoadError> {
    let LoadOptions {
        mut reuse_maps,
        program_types,
        keep_going,
        btf_features,
        log_level,
        programs: only,
        core_btf,
        require_btf,
    } = options;
    let mut failed = BTreeMap::new();
    let to_load = typed_programs(
        object,
        &program_types,
        only.as_ref(),
        keep_going,
        &mut failed,
    )?;
    if object.endian() != Endian::native() {
        return Err(LoadError::ByteOrder {
            object: object.endian(),
            host: Endian::native(),
        });
    }
    let features = btf_features.unwrap_or_else(|| BtfFeatures::probe(bpf));
    // As libbpf does, BTF is optional for everything this loader creates: when the
    // kernel refuses the object's BTF, maps are created and programs loaded without it
    // (no BTF key/value ids, no func/line info) and the refusal is kept in the result.
    let mut btf_error = None;
    let btf_fd = if features.btf {
        match prepare_btf(object, &features)? {
            Some(blob) => match bpf.btf_load(&blob, LogLevel::OnFailure) {
                Ok(fd) => Some(fd),
                Err(source) if require_btf => return Err(LoadError::BtfLoad { source }),
                Err(source) => {
                    btf_error = Some(source);
                    None
                }
            },
            None => None,
        }
    } else {
        None
    };
    let btf = btf_fd.as_ref().map(AsFd::as_fd);

    let mut maps = BTreeMap::new();
    for spec in object.maps() {
        if let Some(given) = reuse_maps.remove(&spec.name) {
            let fd = given.try_clone().map_err(|source| LoadError::Descriptor {
                map: spec.name.clone(),
                source,
            })?;
            check_reused(bpf, spec, &fd)?;
            maps.insert(
                spec.name.clone(),
                LoadedMap {
                    fd,
                    spec: spec.clone(),
                    reused: true,
                    btf_type_ids: None,
                },
            );
            continue;
        }
        // The inner map is a template for the outer map's values; the kernel keeps
        // only its geometry, so it is closed once the outer map exists.
        let template = match &spec.inner {
            Some(inner) => Some(create_map(bpf, inner, &features, btf, None)?.0),
            None => None,
        };
        let (fd, ids) = create_map(
            bpf,
            spec,
            &features,
            btf,
            template.as_ref().map(AsFd::as_fd),
        )?;
        drop(template);
        if let Some(data) = &spec.initial_data {
            init_data(bpf, spec, &fd, data)?;
        }
        maps.insert(
            spec.name.clone(),
            LoadedMap {
                fd,
                spec: spec.clone(),
                reused: false,
                btf_type_ids: ids,
            },
        );
    }
    if let Some(name) = reuse_maps.keys().next() {
        return Err(LoadError::ReusedMap {
            map: name.clone(),
            reason: "the object has no map of that name".into(),
        });
    }
    // Map-in-map slots refer to maps only, so they can be filled now.
    for m in maps.values().filter(|m| !m.reused) {
        for slot in &m.spec.initial_slots {
            if let SlotTarget::Map(target) = &slot.target {
                let fd = maps.get(target).map(|t| t.fd.as_raw_fd());
                fill_slot(bpf, m, slot.index, target, fd)?;
            }
        }
    }

    let fds: HashMap<&str, i32> = maps
        .iter()
        .map(|(k, m)| (k.as_str(), m.fd.as_raw_fd()))
        .collect();
    let license = object.license().unwrap_or("");
    let mut programs = BTreeMap::new();
    let mut vmlinux = Vmlinux::default();
    let kallsyms = std::sync::OnceLock::new();
    let core_blob = if to_load.iter().any(ProgramSpec::needs_core) {
        Some(match core_btf {
            Some(blob) => blob,
            None => std::fs::read(VMLINUX_BTF).map_err(|e| LoadError::Btf {
                reason: format!(
                    "reading the kernel's BTF ({VMLINUX_BTF}) to apply CO-RE relocations: {e}"
                ),
            })?,
        })
    } else {
        None
    };
    let core_btf = core_blob
        .as_deref()
        .map(Btf::parse)
        .transpose()
        .map_err(|e| LoadError::Btf {
            reason: format!("parsing the target BTF of CO-RE relocations: {e}"),
        })?;
    let core_target = core_btf.as_ref().map(CoreTarget::new);
    for spec in to_load {
        let ctx = ProgContext {
            bpf,
            object,
            fds: &fds,
            btf,
            features: &features,
            license,
            log_level,
            kallsyms: &kallsyms,
        };
        match load_program(&ctx, &spec, &mut vmlinux, core_target.as_ref()) {
            Ok((fd, core)) => {
                programs.insert(spec.name.clone(), LoadedProgram { fd, spec, core });
            }
            Err(e) if keep_going => {
                failed.insert(spec.name.clone(), e);
            }
            Err(e) => return Err(e),
        }
    }
    for m in maps.values() {
        for slot in &m.spec.initial_slots {
            if let SlotTarget::Program(target) = &slot.target {
                // A program that failed is reported in `failed`; its slot stays empty.
                if failed.contains_key(target) {
                    continue;
                }
                let fd = programs.get(target).map(|p| p.fd.as_raw_fd());
                fill_slot(bpf, m, slot.index, target, fd)?;
            }
        }
    }
    Ok(LoadedObject {
        btf: btf_fd,
        btf_error,
        maps,
        programs,
        failed,
    })
}

/// The programs to load (every one, or those in `only`), each with the type its rule in
/// `rules` gives, else its section's name. Programs left without a type are an error
/// naming every such section, before anything is created; with `keep_going` each is
/// put in `failed` instead.
fn typed_programs(
    object: &Object<'_>,
    rules: &ProgramTypes,
    only: Option<&BTreeSet<String>>,
    keep_going: bool,
    failed: &mut BTreeMap<String, LoadError>,
) -> Result<Vec<ProgramSpec>, LoadError> {
    let mut typed = Vec::new();
    let mut untyped: Vec<UntypedSection> = Vec::new();
    for p in object.programs() {
        if only.is_some_and(|o| !o.contains(&p.name)) {
            continue;
        }
        let mut spec = p.clone();
        if let Some((prog_type, attach_type)) = rules.lookup(&spec.section) {
            spec.prog_type = prog_type;
            spec.expected_attach_type = attach_type;
        }
        if spec.type_known() {
            typed.push(spec);
            continue;
        }
        match untyped.iter_mut().find(|u| u.section == spec.section) {
            Some(u) => u.programs.push(spec.name),
            None => untyped.push(UntypedSection {
                section: spec.section,
                programs: vec![spec.name],
            }),
        }
    }
    if untyped.is_empty() {
        return Ok(typed);
    }
    if !keep_going {
        return Err(LoadError::UnknownProgramTypes { sections: untyped });
    }
    for u in untyped {
        for program in &u.programs {
            let one = UntypedSection {
                section: u.section.clone(),
                programs: vec![program.clone()],
            };
            failed.insert(
                program.clone(),
                LoadError::UnknownProgramTypes {
                    sections: vec![one],
                },
            );
        }
    }
    Ok(typed)
}

/// A [`sys::Map`] over a duplicate of `fd`, for element updates checked against the
/// map's geometry.
fn map_handle(bpf: &Bpf, name: &str, fd: &OwnedFd) -> Result<sys::Map, LoadError> {
    let dup = fd.try_clone().map_err(|source| LoadError::Descriptor {
        map: name.to_owned(),
        source,
    })?;
    sys::Map::new(bpf, dup).map_err(|source| LoadError::MapInit {
        map: name.to_owned(),
        what: "reading its info".into(),
        source,
    })
}

fn init_data(bpf: &Bpf, spec: &MapSpec, fd: &OwnedFd, data: &[u8]) -> Result<(), LoadError> {
    let init_err = |what: &str| {
        let map = spec.name.clone();
        let what = what.to_owned();
        move |source| LoadError::MapInit { map, what, source }
    };
    let map = map_handle(bpf, &spec.name, fd)?;
    map.update(&0u32.to_ne_bytes(), data, UpdateFlags::ANY)
        .map_err(init_err("writing the section's initial contents"))?;
    if spec.frozen {
        map.freeze().map_err(init_err("freezing it"))?;
    }
    Ok(())
}

fn fill_slot(
    bpf: &Bpf,
    map: &LoadedMap,
    index: u32,
    target: &str,
    fd: Option<i32>,
) -> Result<(), LoadError> {
    let fd = fd.ok_or_else(|| LoadError::SlotTarget {
        map: map.spec.name.clone(),
        index,
        target: target.to_owned(),
    })?;
    let value = u32::try_from(fd).unwrap_or(u32::MAX).to_ne_bytes();
    map_handle(bpf, &map.spec.name, &map.fd)?
        .update(&index.to_ne_bytes(), &value, UpdateFlags::ANY)
        .map_err(|source| LoadError::MapInit {
            map: map.spec.name.clone(),
            what: format!("setting slot {index} to {target}"),
            source,
        })
}

/// What the programs of one object share while loading.
struct ProgContext<'a> {
    bpf: &'a Bpf,
    object: &'a Object<'a>,
    fds: &'a HashMap<&'a str, i32>,
    btf: Option<BorrowedFd<'a>>,
    features: &'a BtfFeatures,
    license: &'a str,
    log_level: LogLevel,
    /// The text of `/proc/kallsyms`, read on first need.
    kallsyms: &'a std::sync::OnceLock<Result<String, String>>,
}

/// The kernel's BTF, read on first need.
#[derive(Default)]
struct Vmlinux {
    data: Option<Result<Vec<u8>, String>>,
}

/// Where the kernel publishes its own BTF.
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

impl Vmlinux {
    fn find(&mut self, name: &str, kind: Kind) -> Result<Option<u32>, String> {
        self.with_btf(|btf| btf.id_by_name(name, kind).map(|t| t.0))
    }

    /// Runs `f` over the kernel's BTF.
    fn with_btf<R>(&mut self, f: impl FnOnce(&Btf<'_>) -> R) -> Result<R, String> {
        let data = self.data.get_or_insert_with(|| {
            std::fs::read(VMLINUX_BTF).map_err(|e| format!("cannot read {VMLINUX_BTF}: {e}"))
        });
        let data = data.as_ref().map_err(Clone::clone)?;
        let btf = Btf::parse(data).map_err(|e| format!("{VMLINUX_BTF}: {e}"))?;
        Ok(f(&btf))
    }
}

/// The kernel BTF type a tracing or LSM program attaches to, as libbpf names it:
/// the function for `fentry`/`fexit`/`fmod_ret`, `bpf_lsm_NAME` for `lsm`,
/// `btf_trace_NAME` (a typedef) for `tp_btf`, `bpf_iter_NAME` for `iter`. `None` for
/// programs that need no attach type id.
#[must_use]
pub fn attach_btf_name(program: &ProgramSpec) -> Option<(String, Kind)> {
    use crate::sys::AttachType as A;
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

fn load_program(
    ctx: &ProgContext<'_>,
    spec: &ProgramSpec,
    vmlinux: &mut Vmlinux,
    core: Option<&CoreTarget<'_>>,
) -> Result<(OwnedFd, Vec<CoreOutcome>), LoadError> {
    let ProgContext {
        bpf,
        object,
        fds,
        btf,
        features,
        license,
        log_level,
        kallsyms,
    } = *ctx;
    let perr = |reason: String| LoadError::Program {
        program: spec.name.clone(),
        reason,
    };
    if spec.prog_type == ProgramType::Ext {
        return Err(perr(
            "freplace programs need the program they replace, which an object load does not know"
                .into(),
        ));
    }
    let mut outcomes = Vec::new();
    let insns = if spec.needs_core() {
        let (Some(local), Some(target)) = (object.btf(), core) else {
            return Err(perr(format!(
                "has {} CO-RE relocations but the object has no BTF to resolve them",
                spec.core_relocations.len()
            )));
        };
        let (patched, done) = apply_core(spec, local, target).map_err(LoadError::Core)?;
        outcomes = done;
        let mut relocated = spec.clone();
        relocated.insns = patched;
        relocate(&relocated, &|m| fds.get(m).copied())?
    } else {
        relocate(spec, &|m| fds.get(m).copied())?
    };
    let mut insns = insns;
    if spec
        .references
        .iter()
        .any(|r| matches!(r.target, RefTarget::Ksym { .. }))
    {
        let kallsyms = |name: &str| {
            let text = kallsyms
                .get_or_init(|| {
                    std::fs::read_to_string(KALLSYMS)
                        .map_err(|e| format!("cannot read {KALLSYMS}: {e}"))
                })
                .as_ref()
                .map_err(Clone::clone)?;
            kallsyms_address(text, name)
        };
        vmlinux
            .with_btf(|kernel| resolve_ksyms(spec, &mut insns, object.btf(), kernel, &kallsyms))
            .map_err(&perr)??;
    }
    let name = kernel_name(&spec.name);
    let func_info = func_info_bytes(spec);
    let line_info = line_info_bytes(spec);
    let mut args = ProgLoad::new(spec.prog_type, &insns, license);
    args.name = &name;
    args.expected_attach_type = spec.expected_attach_type;
    args.kern_version = object.kernel_version().unwrap_or(0);
    args.log_level = log_level;
    if let Some((target, kind)) = attach_btf_name(spec) {
        args.attach_btf_id = vmlinux.find(&target, kind).map_err(&perr)?.ok_or_else(|| {
            perr(format!(
                "attaches to {target}, which the kernel's BTF ({VMLINUX_BTF}) does not have"
            ))
        })?;
    }
    if spec.sleepable {
        args.flags |= sys::prog_flags::SLEEPABLE;
    }
    if spec.xdp_frags {
        args.flags |= sys::prog_flags::XDP_HAS_FRAGS;
    }
    if let Some(fd) = btf
        && features.func
    {
        args.prog_btf_fd = Some(fd);
        if !func_info.is_empty() {
            args.func_info = &func_info;
            args.func_info_rec_size = 8;
        }
        if !line_info.is_empty() {
            args.line_info = &line_info;
            args.line_info_rec_size = 16;
        }
    }
    let fd = bpf
        .prog_load(&args)
        .map_err(|source| LoadError::ProgramLoad {
            program: spec.name.clone(),
            section: spec.section.clone(),
            source,
        })?;
    Ok((fd, outcomes))
}

#[cfg(test)]
mod tests;
