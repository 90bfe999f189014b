//! Map models of an ELF object, and loading either side of a comparison from an
//! object or a snapshot file.

use std::path::Path;

use handover_btf::{Btf, Kind, TypeId};
use handover_loader::{MapSpec, Object, ObjectError, PrepareError, place_datasec};

use crate::spec::digest::sha256_hex;
use crate::spec::layout::{LayoutError, layout_of};
use crate::spec::model::{MapModel, Member, TypeLayout};
use crate::spec::snapshot::{FormatError, ObjectModel, decode};

/// An object whose maps could not be modelled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The file could not be read.
    #[error("reading {path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
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

/// The model of one map spec of `object`.
///
/// # Errors
/// [`ModelError::Layout`] when a key or value BTF type has no layout.
pub fn map_model(
    object_name: &str,
    object: &Object<'_>,
    spec: &MapSpec,
) -> Result<MapModel, ModelError> {
    let btf = object.btf();
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
        Some(i) => Some(Box::new(map_model(object_name, object, i)?)),
        None => None,
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
        key: layout(spec.key_type, "key")?,
        value: layout(spec.value_type, "value")?,
        inner,
    })
}

/// The model of every map of the ELF object in `data`, named `name`.
///
/// # Errors
/// [`ModelError::Object`] when the object does not parse, [`ModelError::Layout`] when
/// a map's BTF has no layout.
pub fn object_model(name: &str, data: &[u8]) -> Result<ObjectModel, ModelError> {
    let object = Object::parse(data).map_err(|source| ModelError::Object {
        object: name.to_owned(),
        source,
    })?;
    let maps: Vec<MapModel> = object
        .maps()
        .iter()
        .map(|spec| map_model(name, &object, spec))
        .collect::<Result<_, _>>()?;
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
    let shown = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| ModelError::Io {
        path: shown.clone(),
        source,
    })?;
    if is_elf(&data) {
        let name = path
            .file_name()
            .map_or_else(|| shown.clone(), |n| n.to_string_lossy().into_owned());
        Ok(vec![object_model(&name, &data)?])
    } else {
        decode(&data)
            .map(|s| s.objects)
            .map_err(|source| ModelError::Snapshot {
                path: shown,
                source,
            })
    }
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
