//! What an object file defines, as a serialisable [`Report`] (`handover inspect`
//! renders it for a person or prints it as JSON).

use handover_btf::{Btf, Detail, TypeId};
use handover_loader::{KsymKind, MapOrigin, MapSpec, Object, ProgramSpec, RefTarget, SlotTarget};
use serde::Serialize;

/// A BTF type as shown in a report: id, C-like name and size.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TypeReport {
    /// The type id in the object's BTF.
    pub id: u32,
    /// A C-like spelling (`struct flow_key`, `__u32`, `datasec .rodata`).
    pub name: String,
    /// Size in bytes, when the type has one.
    pub size: Option<u32>,
}

/// One statically initialised slot.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SlotReport {
    /// The array index.
    pub index: u32,
    /// `map` or `program`.
    pub kind: &'static str,
    /// The map or program name.
    pub target: String,
}

/// One map of the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MapReport {
    /// Map name.
    pub name: String,
    /// Kernel map type name (`hash`, `lru_hash`, ...).
    #[serde(rename = "type")]
    pub map_type: &'static str,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Maximum entries.
    pub max_entries: u32,
    /// `map_flags`.
    pub flags: u32,
    /// `map_extra`.
    pub map_extra: u64,
    /// NUMA node, if set.
    pub numa_node: Option<u32>,
    /// `none` or `by_name`.
    pub pinning: &'static str,
    /// BTF key type.
    pub key_type: Option<TypeReport>,
    /// BTF value type.
    pub value_type: Option<TypeReport>,
    /// Inner map of a map-in-map.
    pub inner: Option<Box<MapReport>>,
    /// Statically initialised slots.
    pub initial_slots: Vec<SlotReport>,
    /// Length of the initial contents of a global data map.
    pub initial_data_len: Option<usize>,
    /// Whether the map is frozen after initialisation.
    pub frozen: bool,
    /// `btf_maps`, `legacy`, `global_data` or `inner`.
    pub origin: &'static str,
}

/// One reference of a program.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReferenceReport {
    /// Instruction index.
    pub insn: usize,
    /// `map`, `map_value`, `call` or `func_addr`.
    pub kind: &'static str,
    /// The map or function name.
    pub target: String,
    /// Offset into a global data map's value.
    pub offset: Option<u32>,
}

/// One CO-RE relocation of a program.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CoreReport {
    /// Instruction index.
    pub insn: u32,
    /// Relocation kind (`field_byte_offset`, ...).
    pub kind: &'static str,
    /// Root type.
    pub type_name: String,
    /// Access string.
    pub access: String,
}

/// One function placed in a program.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FunctionReport {
    /// Function name.
    pub name: String,
    /// First instruction.
    pub start: usize,
    /// Number of instructions.
    pub len: usize,
}

/// One program of the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProgramReport {
    /// Program name.
    pub name: String,
    /// ELF section.
    pub section: String,
    /// Kernel program type name.
    #[serde(rename = "type")]
    pub prog_type: &'static str,
    /// Kernel attach type name.
    pub attach_type: Option<&'static str>,
    /// Attach target from the section name.
    pub attach_target: Option<String>,
    /// Sleepable program.
    pub sleepable: bool,
    /// Accepts multi-buffer XDP packets (`xdp.frags`).
    pub xdp_frags: bool,
    /// Loaded with the object by default (`false` for `SEC("?...")`).
    pub autoload: bool,
    /// Instruction count, subprograms included.
    pub insn_count: usize,
    /// Functions making up the instructions.
    pub functions: Vec<FunctionReport>,
    /// Map, global data and call references.
    pub relocations: Vec<ReferenceReport>,
    /// Number of `.BTF.ext` `func_info` records.
    pub func_info: usize,
    /// Number of `.BTF.ext` `line_info` records.
    pub line_info: usize,
    /// CO-RE relocations that must be applied before loading.
    pub core_relocations: Vec<CoreReport>,
}

/// A `__kconfig` extern: a value the loader fills from the running kernel.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KconfigReport {
    /// Its name (`CONFIG_HZ`, `LINUX_KERNEL_VERSION`).
    pub name: String,
    /// `bool`, `tristate`, `char`, `int`, `uint` or `string`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Byte offset in the `.kconfig` map.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
    /// Declared `__weak` (0 when the kernel does not set it).
    pub weak: bool,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    /// `little` or `big`.
    pub endian: &'static str,
    /// License string.
    pub license: Option<String>,
    /// `version` section value.
    pub kernel_version: Option<u32>,
    /// Maps.
    pub maps: Vec<MapReport>,
    /// Programs.
    pub programs: Vec<ProgramReport>,
    /// `__kconfig` externs.
    pub kconfig_externs: Vec<KconfigReport>,
}

/// Spells a BTF type the way C would, bounded so a cyclic or deep chain cannot recurse
/// forever.
fn type_name(btf: &Btf<'_>, id: TypeId, depth: usize) -> String {
    if id.0 == 0 {
        return "void".into();
    }
    if depth > 8 {
        return "...".into();
    }
    let Ok(t) = btf.type_by_id(id) else {
        return format!("<bad type {}>", id.0);
    };
    let name = t.name().unwrap_or("<bad name>");
    let named = |prefix: &str| {
        if name.is_empty() {
            format!("{prefix} <anon>")
        } else {
            format!("{prefix} {name}")
        }
    };
    match t.detail() {
        Detail::Struct(_) => named("struct"),
        Detail::Union(_) => named("union"),
        Detail::Enum(_) | Detail::Enum64(_) => named("enum"),
        Detail::Fwd { is_union } => named(if is_union { "union" } else { "struct" }),
        Detail::Datasec(_) => named("datasec"),
        Detail::Ptr(target) => format!("{} *", type_name(btf, target, depth + 1)),
        Detail::Array(a) => format!("{}[{}]", type_name(btf, a.elem, depth + 1), a.nelems),
        Detail::Const(target) => format!("const {}", type_name(btf, target, depth + 1)),
        Detail::Volatile(target) => format!("volatile {}", type_name(btf, target, depth + 1)),
        Detail::FuncProto(_) => "function".into(),
        _ => name.to_owned(),
    }
}

fn type_report(btf: Option<&Btf<'_>>, id: Option<TypeId>) -> Option<TypeReport> {
    let (btf, id) = (btf?, id?);
    Some(TypeReport {
        id: id.0,
        name: type_name(btf, id, 0),
        size: btf.size_of(id).ok(),
    })
}

fn map_report(btf: Option<&Btf<'_>>, m: &MapSpec) -> MapReport {
    MapReport {
        name: m.name.clone(),
        map_type: m.type_name(),
        key_size: m.key_size,
        value_size: m.value_size,
        max_entries: m.max_entries,
        flags: m.flags,
        map_extra: m.map_extra,
        numa_node: m.numa_node,
        pinning: m.pinning.name(),
        key_type: type_report(btf, m.key_type),
        value_type: type_report(btf, m.value_type),
        inner: m.inner.as_deref().map(|i| Box::new(map_report(btf, i))),
        initial_slots: m
            .initial_slots
            .iter()
            .map(|s| {
                let (kind, target) = match &s.target {
                    SlotTarget::Map(n) => ("map", n.clone()),
                    SlotTarget::Program(n) => ("program", n.clone()),
                };
                SlotReport {
                    index: s.index,
                    kind,
                    target,
                }
            })
            .collect(),
        initial_data_len: m.initial_data.as_ref().map(Vec::len),
        frozen: m.frozen,
        origin: match m.origin {
            MapOrigin::BtfMaps => "btf_maps",
            MapOrigin::Legacy => "legacy",
            MapOrigin::GlobalData { .. } => "global_data",
            MapOrigin::Inner => "inner",
        },
    }
}

fn program_report(btf: Option<&Btf<'_>>, p: &ProgramSpec) -> ProgramReport {
    ProgramReport {
        name: p.name.clone(),
        section: p.section.clone(),
        prog_type: p.type_name(),
        attach_type: p.attach_type_name(),
        attach_target: p.attach_target.clone(),
        sleepable: p.sleepable,
        xdp_frags: p.xdp_frags,
        autoload: p.autoload,
        insn_count: p.insns.len(),
        functions: p
            .functions
            .iter()
            .map(|f| FunctionReport {
                name: f.name.clone(),
                start: f.start,
                len: f.len,
            })
            .collect(),
        relocations: p
            .references
            .iter()
            .map(|r| {
                let (kind, target, offset) = match &r.target {
                    RefTarget::Map { map } => ("map", map.clone(), None),
                    RefTarget::MapValue { map, offset } => {
                        ("map_value", map.clone(), Some(*offset))
                    }
                    RefTarget::Call { function } => ("call", function.clone(), None),
                    RefTarget::FuncAddr { function } => ("func_addr", function.clone(), None),
                    RefTarget::Ksym { name, kind, weak } => {
                        let kind = match (kind, weak) {
                            (KsymKind::Var, false) => "ksym",
                            (KsymKind::Var, true) => "ksym_weak",
                            (KsymKind::Func, false) => "kfunc",
                            (KsymKind::Func, true) => "kfunc_weak",
                            (KsymKind::Typeless, false) => "ksym_addr",
                            (KsymKind::Typeless, true) => "ksym_addr_weak",
                        };
                        (kind, name.clone(), None)
                    }
                };
                ReferenceReport {
                    insn: r.insn,
                    kind,
                    target,
                    offset,
                }
            })
            .collect(),
        func_info: p.func_info.len(),
        line_info: p.line_info.len(),
        core_relocations: p
            .core_relocations
            .iter()
            .map(|c| CoreReport {
                insn: c.insn,
                kind: c.kind_name(),
                type_name: btf
                    .map_or_else(|| c.type_id.0.to_string(), |b| type_name(b, c.type_id, 0)),
                access: c.access.clone(),
            })
            .collect(),
    }
}

/// Builds the report of a parsed object.
#[must_use]
pub fn report(obj: &Object<'_>) -> Report {
    let btf = obj.btf();
    Report {
        endian: match obj.endian() {
            handover_btf::Endian::Little => "little",
            handover_btf::Endian::Big => "big",
        },
        license: obj.license().map(str::to_owned),
        kernel_version: obj.kernel_version(),
        maps: obj.maps().iter().map(|m| map_report(btf, m)).collect(),
        programs: obj
            .programs()
            .iter()
            .map(|p| program_report(btf, p))
            .collect(),
        kconfig_externs: obj
            .kconfig_externs()
            .iter()
            .map(|k| KconfigReport {
                name: k.name.clone(),
                kind: k.ty.name(),
                offset: k.offset,
                size: k.size,
                weak: k.weak,
            })
            .collect(),
    }
}
