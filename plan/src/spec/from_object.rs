//! Map models of an ELF object, and loading either side of a comparison from an
//! object or a snapshot file.

use std::path::Path;

use handover_btf::{Btf, Kind, TypeId};
use handover_loader::{
    MAX_OBJECT_SIZE, MapOrigin, MapSpec, Object, ObjectError, PrepareError, ReadError,
    place_datasec, read_regular,
};

use crate::spec::digest::sha256_hex;
use crate::spec::layout::{LayoutError, layout_of, member_tags};
use crate::spec::model::{MapModel, Member, TypeLayout};
use crate::spec::snapshot::{FormatError, MAX_SNAPSHOT_SIZE, ObjectModel, decode};
use crate::spec::validate::{InvalidLayout, check_layouts};

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
    /// A global data map's variables cannot be placed in their section (the loader
    /// refuses such an object too).
    #[error("placing the variables of global data map `{map}` in {object}")]
    Placement {
        /// Object name.
        object: String,
        /// Map name.
        map: String,
        /// Why (boxed: the loader's error is large).
        #[source]
        source: Box<PrepareError>,
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
        .find_map(|h| {
            if side == "key" {
                h.key.clone()
            } else {
                h.value.clone()
            }
        });
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
        .ok_or_else(|| {
            bad("no struct, union or typedef of that name in the object's BTF".into())
        })?;
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
        (Some(btf), Some(id)) if is_datasec(btf, id) => datasec_layout(object, btf, id)
            .map(Some)
            .map_err(|source| ModelError::Placement {
                object: object_name.to_owned(),
                map: spec.name.clone(),
                source: Box::new(source),
            }),
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
    let maps: Vec<MapModel> = object
        .maps()
        .iter()
        .map(|spec| map_model_with(name, &object, spec, options))
        .collect::<Result<_, _>>()?;
    check_object(name, &maps)?;
    Ok(ObjectModel {
        name: name.to_owned(),
        sha256: sha256_hex(data),
        endian: object.endian(),
        maps,
    })
}

fn is_datasec(btf: &Btf<'_>, id: TypeId) -> bool {
    btf.type_by_id(id).is_ok_and(|t| t.kind() == Kind::Datasec)
}

/// The value layout of a global data map: its `DATASEC` as a struct whose members are
/// the section's variables at their places, as the loader places them
/// ([`place_datasec`]: the ELF section size and symbol offsets where clang left zeros).
fn datasec_layout(
    object: &Object<'_>,
    btf: &Btf<'_>,
    id: TypeId,
) -> Result<TypeLayout, PrepareError> {
    let placed = place_datasec(btf, id, object)?;
    let section = btf
        .type_by_id(id)
        .and_then(|t| t.name())
        .map_err(|e| PrepareError::Btf {
            reason: format!("type {}: {e}", id.0),
        })?;
    let mut members = Vec::with_capacity(placed.vars.len());
    for v in placed.vars {
        let ty = layout_of(btf, v.var).map_err(|e| PrepareError::Btf {
            reason: format!("variable {} of {section}: {e}", v.name),
        })?;
        members.push(Member {
            name: Some(v.name),
            bit_offset: u64::from(v.offset) * 8,
            bitfield_size: 0,
            ty,
            renamed_from: None,
            merge: None,
        });
    }
    Ok(TypeLayout::Struct {
        name: Some(section.to_owned()),
        size: placed.size,
        members,
    })
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
pub fn load_side_with(path: &Path, options: &ModelOptions) -> Result<Vec<ObjectModel>, ModelError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../programs/build/{name}.o", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}: run programs/build.sh"))
    }

    /// The model of a global data map places its variables exactly as the loader does
    /// (`place_datasec`): the same offsets and the section's size.
    #[test]
    fn global_data_variables_sit_where_the_loader_puts_them() {
        let data = fixture("global_data");
        let object = Object::parse(&data).unwrap();
        let model = object_model("global_data", &data).unwrap();
        let btf = object.btf().unwrap();
        let mut checked = 0;
        for (spec, m) in object.maps().iter().zip(&model.maps) {
            let Some(id) = spec.value_type.filter(|id| is_datasec(btf, *id)) else {
                continue;
            };
            let placed = place_datasec(btf, id, &object).unwrap();
            let Some(TypeLayout::Struct { size, members, .. }) = &m.value else {
                panic!("{}: no value layout", m.name);
            };
            assert_eq!(*size, placed.size, "{}", m.name);
            let got: Vec<(Option<&str>, u64)> = members
                .iter()
                .map(|mb| (mb.name.as_deref(), mb.bit_offset / 8))
                .collect();
            let want: Vec<(Option<&str>, u64)> = placed
                .vars
                .iter()
                .map(|v| (Some(v.name.as_str()), u64::from(v.offset)))
                .collect();
            assert_eq!(got, want, "{}", m.name);
            checked += 1;
        }
        assert!(checked >= 3, "only {checked} global data maps");
    }

    /// A variable without a symbol used to drop the value layout silently (only sizes
    /// compared); now the model refuses it, as loading does, naming the variable.
    #[test]
    fn a_variable_without_its_symbol_is_an_error_not_a_dropped_layout() {
        let mut data = fixture("global_data");
        // Rename the symbol `packets_seen` in the string table: the BTF VAR keeps the
        // name, so the variable has no symbol any more.
        let needle = b"\0packets_seen\0";
        let hits: Vec<usize> = data
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i)
            .collect();
        assert!(!hits.is_empty());
        let object = Object::parse(&data).unwrap();
        let btf_range = object
            .btf()
            .map(|b| b.raw().as_ptr() as usize - data.as_ptr() as usize);
        let btf_len = object.btf().map_or(0, |b| b.raw().len());
        drop(object);
        let in_btf = |i: usize| btf_range.is_some_and(|s| i >= s && i < s + btf_len);
        let outside: Vec<usize> = hits.into_iter().filter(|i| !in_btf(*i)).collect();
        assert!(!outside.is_empty(), "a symbol name outside .BTF");
        for at in outside {
            *data.get_mut(at + 1).unwrap() = b'P';
        }
        let err = object_model("global_data", &data).unwrap_err();
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(
            matches!(err, ModelError::Placement { .. }) && text.contains("packets_seen"),
            "{text}"
        );
    }
}
