//! Map models of an ELF object, and loading either side of a comparison from an
//! object or a snapshot file.

use std::path::Path;

use handover_btf::{Kind, TypeId};
use handover_loader::{
    MAX_OBJECT_SIZE, MapOrigin, MapSpec, Object, ObjectError, ReadError, read_regular,
};

use crate::spec::digest::sha256_hex;
use crate::spec::layout::{LayoutError, layout_of, member_tags};
use crate::spec::validate::{InvalidLayout, check_layouts};
use crate::spec::model::{MapModel, TypeLayout};
use crate::spec::snapshot::{ByteOrder, FormatError, MAX_SNAPSHOT_SIZE, ObjectModel, decode};

/// An object whose maps could not be modelled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The file could not be read: missing, not a regular file, or over its limit.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A snapshot file is larger than [`MAX_SNAPSHOT_SIZE`].
    #[error(
        "{path}: {size} bytes is larger than the {MAX_SNAPSHOT_SIZE}-byte limit on snapshot files (MAX_SNAPSHOT_SIZE)"
    )]
    SnapshotTooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
    },
    /// The ELF object is malformed.
    #[error("parsing BPF object {object}")]
    Object {
        /// Object name.
        object: String,
        /// Why.
        #[source]
        source: ObjectError,
    },
    /// A key or value BTF type could not be turned into a layout.
    #[error("building the {side} layout of map `{map}` in {object}")]
    Layout {
        /// Object name.
        object: String,
        /// Map name.
        map: String,
        /// `key` or `value`.
        side: &'static str,
        /// Why.
        #[source]
        source: LayoutError,
    },
    /// A layout named for a size-only map does not fit it.
    #[error("map `{map}` in {object}: the {side} layout `{ty}` cannot be used: {reason}")]
    Hint {
        /// Object name.
        object: String,
        /// Map name.
        map: String,
        /// `key` or `value`.
        side: &'static str,
        /// The type named.
        ty: String,
        /// Why it does not fit.
        reason: String,
    },
    /// A layout the kernel would refuse: refused before any plan is made.
    #[error("map `{map}` in {object}: invalid layout")]
    Invalid {
        /// Object name.
        object: String,
        /// Map name.
        map: String,
        /// Which field, and why.
        #[source]
        source: InvalidLayout,
    },
    /// `snapshot` takes objects only.
    #[error("{path} is not an ELF object: give the BPF object file (clang -target bpf)")]
    NotElf {
        /// The file.
        path: String,
    },
    /// The file is neither an ELF object nor a readable snapshot.
    #[error("reading snapshot {path} (not an ELF object either)")]
    Snapshot {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: FormatError,
    },
}

/// Layouts for maps declared with `key_size`/`value_size` only: a struct, union or
/// typedef of the object's BTF, named on the command line
/// (`--layout MAP=key:STRUCT,value:STRUCT`) or in the C source with a declaration
/// tag on the map (`btf_decl_tag("handover:key:STRUCT")`, `"handover:value:STRUCT"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutHint {
    /// The map.
    pub map: String,
    /// Name of the key's type.
    pub key: Option<String>,
    /// Name of the value's type.
    pub value: Option<String>,
}

/// How objects are modelled beyond what they say themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelOptions {
    /// Layouts for size-only maps; they win over a tag in the object.
    pub layouts: Vec<LayoutHint>,
}

/// The model of one map spec of `object`.
///
/// # Errors
/// [`ModelError::Layout`] when a key or value BTF type has no layout.
pub fn map_model(
    object_name: &str,
    object: &Object<'_>,
    spec: &MapSpec,
) -> Result<MapModel, ModelError> {
    map_model_with(object_name, object, spec, &ModelOptions::default())
}

/// The type named by a layout hint or a map's tag for one side, if any: the option
/// first, then a `handover:key:`/`handover:value:` tag on the map's variable.
fn hinted_type(
    object_name: &str,
    object: &Object<'_>,
    spec: &MapSpec,
    options: &ModelOptions,
    side: &'static str,
) -> Result<Option<TypeId>, ModelError> {
    let Some(btf) = object.btf() else {
        return Ok(None);
    };
    let from_option = options
        .layouts
        .iter()
        .filter(|h| h.map == spec.name)
        .find_map(|h| if side == "key" { h.key.clone() } else { h.value.clone() });
    let from_tag = || -> Result<Option<String>, ModelError> {
        let Some(var) = btf.id_by_name(&spec.name, Kind::Var) else {
            return Ok(None);
        };
        let tags = member_tags(btf).map_err(|source| ModelError::Layout {
            object: object_name.to_owned(),
            map: spec.name.clone(),
            side,
            source,
        })?;
        let prefix = format!("{side}:");
        Ok(tags
            .into_iter()
            .filter(|t| t.target == var && t.component < 0)
            .find_map(|t| t.text.strip_prefix(&prefix).map(str::to_owned)))
    };
    let name = match from_option {
        Some(n) => n,
        None => match from_tag()? {
            Some(n) => n,
            None => return Ok(None),
        },
    };
    let bad = |reason: String| ModelError::Hint {
        object: object_name.to_owned(),
        map: spec.name.clone(),
        side,
        ty: name.clone(),
        reason,
    };
    let id = [Kind::Struct, Kind::Union, Kind::Typedef]
        .into_iter()
        .find_map(|k| btf.id_by_name(&name, k))
        .ok_or_else(|| bad("no struct, union or typedef of that name in the object's BTF".into()))?;
    let size = btf.size_of(id).map_err(|e| bad(e.to_string()))?;
    let expected = if side == "key" {
        spec.key_size
    } else {
        spec.value_size
    };
    if size != expected {
        return Err(bad(format!(
            "it is {size} bytes, the map's {side}_size is {expected}"
        )));
    }
    Ok(Some(id))
}

/// As [`map_model`], with layouts named for size-only maps.
///
/// # Errors
/// [`ModelError::Layout`] when a key or value BTF type has no layout,
/// [`ModelError::Hint`] when a named layout is not in the object or has the wrong size.
pub fn map_model_with(
    object_name: &str,
    object: &Object<'_>,
    spec: &MapSpec,
    options: &ModelOptions,
) -> Result<MapModel, ModelError> {
    let btf = object.btf();
    let key_type = match spec.key_type {
        Some(id) => Some(id),
        None => hinted_type(object_name, object, spec, options, "key")?,
    };
    let value_type = match spec.value_type {
        Some(id) => Some(id),
        None => hinted_type(object_name, object, spec, options, "value")?,
    };
    let layout = |id, side| match (btf, id) {
        (Some(btf), Some(id)) => {
            layout_of(btf, id)
                .map(Some)
                .map_err(|source| ModelError::Layout {
                    object: object_name.to_owned(),
                    map: spec.name.clone(),
                    side,
                    source,
                })
        }
        _ => Ok(None),
    };
    let inner = match &spec.inner {
        Some(i) => Some(Box::new(map_model_with(object_name, object, i, options)?)),
        None => None,
    };
    // Writable global data starts with the object's bytes; all-zero (`.bss`) is the
    // default and not stored.
    let initial_data = match (&spec.origin, spec.frozen, &spec.initial_data) {
        (MapOrigin::GlobalData { .. }, false, Some(data)) if data.iter().any(|b| *b != 0) => {
            Some(data.clone())
        }
        _ => None,
    };
    Ok(MapModel {
        name: spec.name.clone(),
        map_type: spec.map_type,
        key_size: spec.key_size,
        value_size: spec.value_size,
        max_entries: spec.max_entries,
        flags: spec.flags,
        map_extra: spec.map_extra,
        pinning: spec.pinning,
        key: layout(key_type, "key")?,
        value: layout(value_type, "value")?,
        inner,
        initial_data,
    })
}

/// The model of every map of the ELF object in `data`, named `name`.
///
/// # Errors
/// [`ModelError::Object`] when the object does not parse, [`ModelError::Layout`] when
/// a map's BTF has no layout.
pub fn object_model(name: &str, data: &[u8]) -> Result<ObjectModel, ModelError> {
    object_model_with(name, data, &ModelOptions::default())
}

/// As [`object_model`], with [`ModelOptions`]; every layout is checked
/// ([`check_layouts`]).
///
/// # Errors
/// As [`object_model`], [`ModelError::Hint`] for a layout hint that does not fit, and
/// [`ModelError::Invalid`] for a layout the kernel would refuse.
pub fn object_model_with(
    name: &str,
    data: &[u8],
    options: &ModelOptions,
) -> Result<ObjectModel, ModelError> {
    let object = Object::parse(data).map_err(|source| ModelError::Object {
        object: name.to_owned(),
        source,
    })?;
    let mut maps: Vec<MapModel> = object
        .maps()
        .iter()
        .map(|spec| map_model_with(name, &object, spec, options))
        .collect::<Result<_, _>>()?;
    for m in &mut maps {
        place_section_variables(m, &object);
    }
    check_object(name, &maps)?;
    Ok(ObjectModel {
        name: name.to_owned(),
        sha256: sha256_hex(data),
        endian: match object.endian() {
            handover_btf::Endian::Big => ByteOrder::Big,
            handover_btf::Endian::Little => ByteOrder::Little,
        },
        maps,
    })
}

/// Gives the variables of a global data map their offsets.
///
/// In an object file the compiler leaves every `DATASEC` with size 0 and every
/// variable at offset 0; the real places are the symbols' values in the section,
/// which the loader reads from the symbol table ([`Object::variable`]) for the same
/// fixup before loading. The section size is the map's value size. When a variable
/// has no symbol, the value layout is dropped and only sizes compare.
fn place_section_variables(map: &mut MapModel, object: &Object<'_>) {
    let Some(TypeLayout::Struct {
        name: Some(section),
        size,
        members,
    }) = map.value.as_mut()
    else {
        return;
    };
    if !section.starts_with('.') || members.iter().all(|m| m.bit_offset != 0) {
        return;
    }
    let placed: Option<Vec<u64>> = members
        .iter()
        .map(|m| {
            let var = object.variable(section, m.name.as_deref()?)?;
            var.offset.checked_mul(8)
        })
        .collect();
    match placed {
        Some(offsets) => {
            for (m, off) in members.iter_mut().zip(offsets) {
                m.bit_offset = off;
            }
            if *size == 0 {
                *size = map.value_size;
            }
        }
        None => map.value = None,
    }
}

/// Whether `data` starts like an ELF file.
#[must_use]
pub fn is_elf(data: &[u8]) -> bool {
    data.starts_with(b"\x7fELF")
}

/// The objects of one side of a comparison: an ELF object (told by its magic) or a
/// snapshot file.
///
/// # Errors
/// [`ModelError`] naming the file and what failed.
pub fn load_side(path: &Path) -> Result<Vec<ObjectModel>, ModelError> {
    load_side_with(path, &ModelOptions::default())
}

/// The model of the BPF object file at `path`, named by its file name.
///
/// # Errors
/// [`ModelError`] naming the file and what failed; a file that is not ELF is refused.
pub fn read_object_model(path: &Path, options: &ModelOptions) -> Result<ObjectModel, ModelError> {
    let data = read_regular(path, MAX_OBJECT_SIZE, "BPF object files (MAX_OBJECT_SIZE)")?;
    if !is_elf(&data) {
        return Err(ModelError::NotElf {
            path: path.display().to_string(),
        });
    }
    object_model_with(&file_name(path), &data, options)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// As [`load_side`], with [`ModelOptions`] for objects (a snapshot keeps the layouts
/// it was written with). Every layout is checked ([`check_layouts`]), a snapshot's
/// too.
///
/// # Errors
/// [`ModelError`] naming the file and what failed.
pub fn load_side_with(
    path: &Path,
    options: &ModelOptions,
) -> Result<Vec<ObjectModel>, ModelError> {
    let shown = path.display().to_string();
    let data = read_regular(path, MAX_OBJECT_SIZE, "BPF object files (MAX_OBJECT_SIZE)")?;
    if is_elf(&data) {
        Ok(vec![object_model_with(&file_name(path), &data, options)?])
    } else if data.len() as u64 > MAX_SNAPSHOT_SIZE {
        Err(ModelError::SnapshotTooLarge {
            path: shown,
            size: data.len() as u64,
        })
    } else {
        let objects = decode(&data)
            .map(|s| s.objects)
            .map_err(|source| ModelError::Snapshot {
                path: shown,
                source,
            })?;
        for o in &objects {
            check_object(&o.name, &o.maps)?;
        }
        Ok(objects)
    }
}

fn check_object(object: &str, maps: &[MapModel]) -> Result<(), ModelError> {
    for m in maps {
        check_layouts(m).map_err(|source| ModelError::Invalid {
            object: object.to_owned(),
            map: m.name.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Objects of `old` that `new` does not hold, when objects are matched by name
/// (either side holds more than one): their maps would be reported removed.
#[must_use]
pub fn missing_objects(old: &[ObjectModel], new: &[ObjectModel]) -> Vec<String> {
    if old.len() <= 1 && new.len() <= 1 {
        return Vec::new();
    }
    old.iter()
        .filter(|o| !new.iter().any(|n| n.name == o.name))
        .map(|o| o.name.clone())
        .collect()
}
