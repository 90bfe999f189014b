//! Map specs: what a map looks like, read from `.maps` (BTF-defined), the legacy `maps`
//! section, and global data sections.

use handover_btf::{Btf, Detail, Kind, Linkage, TypeId};

use crate::error::ObjectError;
use handover_uapi::{MapType, map_flags};

pub use handover_uapi::Pinning;

/// Where in the object a map was defined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOrigin {
    /// A BTF-defined map in `.maps`.
    BtfMaps,
    /// A `struct bpf_map_def` record in the legacy `maps` section.
    Legacy,
    /// A global data section (`.data`, `.rodata`, `.bss` and their `.NAME` variants).
    GlobalData {
        /// The section name.
        section: String,
    },
    /// The inner map definition of a map-in-map.
    Inner,
}

/// What a slot of a statically initialised prog array or map-in-map points to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotTarget {
    /// Another map of the object, by name.
    Map(String),
    /// A program of the object, by name.
    Program(String),
}

/// One statically initialised slot (`.values = { [i] = &x }`), from `.rel.maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSlot {
    /// The key (array index).
    pub index: u32,
    /// What the slot holds.
    pub target: SlotTarget,
}

/// Everything needed to create (or compare) one map.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MapSpec {
    /// The map's name in the object (the variable name, or the section name for global
    /// data).
    pub name: String,
    /// The map type.
    pub map_type: MapType,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Maximum number of entries.
    pub max_entries: u32,
    /// `map_flags` (`BPF_F_*`).
    pub flags: u32,
    /// `map_extra` (bloom filter hash count, arena address, ...).
    pub map_extra: u64,
    /// NUMA node, when the definition sets one.
    pub numa_node: Option<u32>,
    /// Pinning behaviour.
    pub pinning: Pinning,
    /// BTF type of the key, in the object's BTF ([`Object::btf`](crate::Object::btf)).
    pub key_type: Option<TypeId>,
    /// BTF type of the value (a `DATASEC` for global data).
    pub value_type: Option<TypeId>,
    /// The inner map of a map-in-map, `None` for one declared with key and value sizes
    /// only (the loader then needs the template from its caller).
    pub inner: Option<Box<MapSpec>>,
    /// Initial contents of a global data map (zeros for `.bss`).
    pub initial_data: Option<Vec<u8>>,
    /// Statically initialised slots of a prog array or map-in-map.
    pub initial_slots: Vec<MapSlot>,
    /// Whether the loader freezes the map after writing its initial contents (`.rodata`).
    pub frozen: bool,
    /// Where the definition came from.
    pub origin: MapOrigin,
}

impl MapSpec {
    /// The map type as the kernel spells it without the `BPF_MAP_TYPE_` prefix, in lower
    /// case (`hash`, `lru_hash`, ...).
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        self.map_type.name()
    }

    /// A map of `map_type` with these sizes and every other property unset, as a
    /// caller describes a map the object does not define (the inner map template of a
    /// map-in-map declared with sizes only).
    #[must_use]
    pub fn new(
        name: &str,
        map_type: MapType,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> Self {
        Self {
            map_type,
            key_size,
            value_size,
            max_entries,
            ..Self::empty(name, MapOrigin::Inner)
        }
    }

    /// Whether this is a map-in-map without an inner map definition, whose inner map
    /// template the loader must be given.
    #[must_use]
    pub fn needs_inner_template(&self) -> bool {
        is_map_in_map(self.map_type) && self.inner.is_none()
    }

    fn empty(name: &str, origin: MapOrigin) -> Self {
        Self {
            name: name.to_owned(),
            map_type: MapType::Unspec,
            key_size: 0,
            value_size: 0,
            max_entries: 0,
            flags: 0,
            map_extra: 0,
            numa_node: None,
            pinning: Pinning::None,
            key_type: None,
            value_type: None,
            inner: None,
            initial_data: None,
            initial_slots: Vec::new(),
            frozen: false,
            origin,
        }
    }
}

/// A BTF-defined map plus where its `values` array starts, for `.rel.maps`.
pub(crate) struct BtfMapDef {
    pub(crate) spec: MapSpec,
    /// Byte offset of the `values` member within the map's struct.
    pub(crate) values_offset: Option<u32>,
}

fn btf_err(map: &str, field: &str) -> impl FnOnce(handover_btf::Error) -> ObjectError {
    let (map, field) = (map.to_owned(), field.to_owned());
    move |source| ObjectError::MapBtf { map, field, source }
}

/// Reads an integer member encoded as `int (*name)[VALUE]` (`__uint`) or as an enum
/// with one value (`__ulong` in newer `bpf_helpers.h`).
fn uint_member(btf: &Btf<'_>, map: &str, field: &str, ty: TypeId) -> Result<u64, ObjectError> {
    let e = btf_err(map, field);
    let t = btf
        .type_by_id(btf.resolve(ty).map_err(btf_err(map, field))?)
        .map_err(btf_err(map, field))?;
    match t.detail() {
        Detail::Ptr(target) => {
            let arr = btf
                .type_by_id(btf.resolve(target).map_err(e)?)
                .map_err(btf_err(map, field))?;
            match arr.detail() {
                Detail::Array(a) => Ok(u64::from(a.nelems)),
                _ => Err(ObjectError::map(
                    map,
                    format!(
                        "field {field}: pointer to {:?}, expected pointer to array (__uint)",
                        arr.kind()
                    ),
                )),
            }
        }
        Detail::Enum(mut en) | Detail::Enum64(mut en) => match (en.values.next(), en.values.next())
        {
            (Some(v), None) => Ok(v.as_u64()),
            _ => Err(ObjectError::map(
                map,
                format!("field {field}: enum must have exactly one value"),
            )),
        },
        _ => Err(ObjectError::map(
            map,
            format!(
                "field {field}: {:?}, expected __uint (pointer to array) or __ulong (enum)",
                t.kind()
            ),
        )),
    }
}

fn u32_member(btf: &Btf<'_>, map: &str, field: &str, ty: TypeId) -> Result<u32, ObjectError> {
    let v = uint_member(btf, map, field, ty)?;
    u32::try_from(v).map_err(|_| {
        ObjectError::map(
            map,
            format!("field {field}: value {v} does not fit in 32 bits"),
        )
    })
}

/// `__type(name, T)` is `T *name`: returns `T` and its size.
fn type_member(
    btf: &Btf<'_>,
    map: &str,
    field: &str,
    ty: TypeId,
) -> Result<(TypeId, u32), ObjectError> {
    let t = btf
        .type_by_id(btf.resolve(ty).map_err(btf_err(map, field))?)
        .map_err(btf_err(map, field))?;
    let Detail::Ptr(target) = t.detail() else {
        return Err(ObjectError::map(
            map,
            format!("field {field}: {:?}, expected a pointer (__type)", t.kind()),
        ));
    };
    // A type only declared (a struct the object never defines, as clang emits it
    // when nothing but pointers reach it) has no size for the map to take.
    let resolved = btf.resolve(target).map_err(btf_err(map, field))?;
    let rt = btf.type_by_id(resolved).map_err(btf_err(map, field))?;
    if let Detail::Fwd { is_union } = rt.detail() {
        let name = rt.name().unwrap_or("");
        return Err(ObjectError::map(
            map,
            format!(
                "field {field}: {} {name} (BTF type {}) is only declared, never defined in this \
                 object's BTF, so its size is unknown; define it where a program or a global uses it \
                 by value",
                if is_union { "union" } else { "struct" },
                resolved.0
            ),
        ));
    }
    let size = btf.size_of(target).map_err(btf_err(map, field))?;
    Ok((target, size))
}

fn set_size(map: &str, field: &str, slot: &mut u32, size: u32) -> Result<(), ObjectError> {
    if *slot != 0 && *slot != size {
        return Err(ObjectError::map(
            map,
            format!("conflicting {field}: {} and {size}", *slot),
        ));
    }
    *slot = size;
    Ok(())
}

fn is_map_in_map(map_type: MapType) -> bool {
    matches!(map_type, MapType::ArrayOfMaps | MapType::HashOfMaps)
}

fn map_type(map: &str, value: u32) -> Result<MapType, ObjectError> {
    match MapType::try_from(value) {
        Ok(MapType::Unspec) | Err(_) => {
            Err(ObjectError::map(map, format!("unknown map type {value}")))
        }
        Ok(t) => Ok(t),
    }
}

/// Parses the struct behind one `.maps` variable. `is_inner` forbids nested `values`.
pub(crate) fn parse_btf_map(
    btf: &Btf<'_>,
    name: &str,
    ty: TypeId,
    is_inner: bool,
) -> Result<BtfMapDef, ObjectError> {
    let sid = btf.resolve(ty).map_err(btf_err(name, "-"))?;
    let st = btf.type_by_id(sid).map_err(btf_err(name, "-"))?;
    let Detail::Struct(composite) = st.detail() else {
        return Err(ObjectError::map(
            name,
            format!("definition is {:?}, expected a struct", st.kind()),
        ));
    };
    let origin = if is_inner {
        MapOrigin::Inner
    } else {
        MapOrigin::BtfMaps
    };
    let mut spec = MapSpec::empty(name, origin);
    let mut values_offset = None;
    let count = composite.members.len();
    for (i, m) in composite.members.enumerate() {
        let field = m.name().map_err(btf_err(name, "-"))?;
        match field {
            "type" => spec.map_type = map_type(name, u32_member(btf, name, field, m.ty)?)?,
            "max_entries" => spec.max_entries = u32_member(btf, name, field, m.ty)?,
            "map_flags" => spec.flags = u32_member(btf, name, field, m.ty)?,
            "numa_node" => spec.numa_node = Some(u32_member(btf, name, field, m.ty)?),
            "map_extra" => spec.map_extra = uint_member(btf, name, field, m.ty)?,
            "key_size" => {
                let v = u32_member(btf, name, field, m.ty)?;
                set_size(name, field, &mut spec.key_size, v)?;
            }
            "value_size" => {
                let v = u32_member(btf, name, field, m.ty)?;
                set_size(name, field, &mut spec.value_size, v)?;
            }
            "key" => {
                let (t, size) = type_member(btf, name, field, m.ty)?;
                set_size(name, "key_size", &mut spec.key_size, size)?;
                spec.key_type = Some(t);
            }
            "value" => {
                let (t, size) = type_member(btf, name, field, m.ty)?;
                set_size(name, "value_size", &mut spec.value_size, size)?;
                spec.value_type = Some(t);
            }
            "pinning" => {
                spec.pinning = match u32_member(btf, name, field, m.ty)? {
                    0 => Pinning::None,
                    1 => Pinning::ByName,
                    v => {
                        return Err(ObjectError::map(
                            name,
                            format!("invalid pinning value {v} (expected 0 = none or 1 = by name)"),
                        ));
                    }
                };
            }
            "values" => {
                if is_inner {
                    return Err(ObjectError::map(
                        name,
                        "inner map has its own values: multi-level map-in-map is not supported",
                    ));
                }
                if i + 1 != count {
                    return Err(ObjectError::map(
                        name,
                        "field values must be the last member",
                    ));
                }
                let is_prog_array = spec.map_type == MapType::ProgArray;
                if !is_prog_array && !is_map_in_map(spec.map_type) {
                    return Err(ObjectError::map(
                        name,
                        "field values is only allowed in prog arrays and map-in-map types",
                    ));
                }
                set_size(name, "value_size", &mut spec.value_size, 4)?;
                values_offset = Some(m.bit_offset / 8);
                let arr = btf
                    .type_by_id(btf.resolve(m.ty).map_err(btf_err(name, field))?)
                    .map_err(btf_err(name, field))?;
                let Detail::Array(a) = arr.detail() else {
                    return Err(ObjectError::map(
                        name,
                        "field values must be an array of pointers (__array)",
                    ));
                };
                if a.nelems != 0 {
                    return Err(ObjectError::map(
                        name,
                        "field values must be a flexible array (zero elements)",
                    ));
                }
                let ptr = btf
                    .type_by_id(btf.resolve(a.elem).map_err(btf_err(name, field))?)
                    .map_err(btf_err(name, field))?;
                let Detail::Ptr(target) = ptr.detail() else {
                    return Err(ObjectError::map(
                        name,
                        "field values must be an array of pointers (__array)",
                    ));
                };
                let target = btf.resolve(target).map_err(btf_err(name, field))?;
                let tk = btf.type_by_id(target).map_err(btf_err(name, field))?.kind();
                if is_prog_array {
                    if tk != Kind::FuncProto {
                        return Err(ObjectError::map(
                            name,
                            "prog array values must point to a function prototype",
                        ));
                    }
                } else {
                    if tk != Kind::Struct {
                        return Err(ObjectError::map(
                            name,
                            "map-in-map values must point to an inner map struct",
                        ));
                    }
                    let inner = parse_btf_map(btf, &format!("{name}.inner"), target, true)?;
                    spec.inner = Some(Box::new(inner.spec));
                }
            }
            other => return Err(ObjectError::map(name, format!("unknown field {other}"))),
        }
    }
    if spec.map_type == MapType::Unspec {
        return Err(ObjectError::map(name, "missing type"));
    }
    // A map-in-map declared with key and value sizes only has no inner definition:
    // libbpf opens such objects, and the loader takes the inner map's template from
    // its caller. Its value is an inner map's id or descriptor, 4 bytes.
    if is_map_in_map(spec.map_type) && spec.inner.is_none() && spec.value_size != 4 {
        return Err(ObjectError::map(
            name,
            format!(
                "map-in-map without an inner map definition (__array(values, ...)) has value \
                 size {}, expected 4 (an inner map's id)",
                spec.value_size
            ),
        ));
    }
    Ok(BtfMapDef {
        spec,
        values_offset,
    })
}

/// Builds a legacy map from one `struct bpf_map_def` record of `record_size` bytes.
pub(crate) fn legacy_map(
    name: &str,
    record: &[u8],
    order: handover_uapi::Endian,
) -> Result<MapSpec, ObjectError> {
    let def = crate::raw::read_at::<crate::raw::RawMapDef>(record, 0).ok_or_else(|| {
        ObjectError::map(
            name,
            format!(
                "legacy record of {} bytes is shorter than struct bpf_map_def (20)",
                record.len()
            ),
        )
    })?;
    if record
        .get(size_of::<crate::raw::RawMapDef>()..)
        .is_some_and(|extra| extra.iter().any(|&b| b != 0))
    {
        return Err(ObjectError::map(
            name,
            "legacy map record has non-zero fields after struct bpf_map_def that this loader does not understand",
        ));
    }
    let mut spec = MapSpec::empty(name, MapOrigin::Legacy);
    spec.map_type = map_type(name, order.u32(def.map_type))?;
    spec.key_size = order.u32(def.key_size);
    spec.value_size = order.u32(def.value_size);
    spec.max_entries = order.u32(def.max_entries);
    spec.flags = order.u32(def.map_flags);
    Ok(spec)
}

/// Which global data section a name denotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DataKind {
    Data,
    Rodata,
    Bss,
}

pub(crate) fn data_kind(section: &str) -> Option<DataKind> {
    let is = |base: &str| {
        section == base
            || section
                .strip_prefix(base)
                .is_some_and(|r| r.starts_with('.'))
    };
    if is(".data") {
        Some(DataKind::Data)
    } else if is(".rodata") {
        Some(DataKind::Rodata)
    } else if is(".bss") {
        Some(DataKind::Bss)
    } else {
        None
    }
}

/// The single-entry array of `size` bytes that holds section `section`, named after it.
fn section_array(section: &str, size: u32) -> MapSpec {
    let mut spec = MapSpec::empty(
        section,
        MapOrigin::GlobalData {
            section: section.to_owned(),
        },
    );
    spec.map_type = MapType::Array;
    spec.key_size = 4;
    spec.value_size = size;
    spec.max_entries = 1;
    spec
}

/// A single-entry array holding a global data section, flagged the way libbpf creates
/// it: `.rodata*` read-only for programs and frozen, and mmapable when the section's
/// `DATASEC` has a variable that is not `static`.
pub(crate) fn global_data_map(
    section: &str,
    kind: DataKind,
    contents: Vec<u8>,
    btf: Option<&Btf<'_>>,
) -> Result<MapSpec, ObjectError> {
    let size = u32::try_from(contents.len())
        .map_err(|_| ObjectError::section(section, "section larger than 4 GiB"))?;
    let mut spec = section_array(section, size);
    if kind == DataKind::Rodata {
        spec.flags |= map_flags::RDONLY_PROG;
        spec.frozen = true;
    }
    if let Some(btf) = btf
        && let Some(id) = btf.id_by_name(section, Kind::Datasec)
    {
        spec.value_type = Some(id);
        let t = btf.type_by_id(id).map_err(btf_err(section, "-"))?;
        if let Detail::Datasec(ds) = t.detail() {
            for v in ds.vars {
                let vt = btf.type_by_id(v.ty).map_err(btf_err(section, "-"))?;
                if let Detail::Var(var) = vt.detail()
                    && var.linkage != Linkage::STATIC
                {
                    spec.flags |= map_flags::MMAPABLE;
                    break;
                }
            }
        }
    }
    spec.initial_data = Some(contents);
    Ok(spec)
}

/// The `.kconfig` map: a single-entry array of `size` bytes holding the values of the
/// object's `__kconfig` externs, flagged as libbpf creates it (read-only for programs,
/// mmapable, frozen once written). Its contents are the running kernel's, written at
/// load time, so it has no initial data here.
pub(crate) fn kconfig_map(size: u32) -> MapSpec {
    let mut spec = section_array(crate::kconfig::KCONFIG_SECTION, size);
    spec.flags = map_flags::RDONLY_PROG | map_flags::MMAPABLE;
    spec.frozen = true;
    spec
}
