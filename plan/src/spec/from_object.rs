//! Map models of an ELF object, and loading either side of a comparison from an
//! object or a snapshot file.

use std::path::Path;

use handover_loader::{MapSpec, Object, ObjectError, Pinning};

use crate::spec::digest::sha256_hex;
use crate::spec::layout::{LayoutError, layout_of};
use crate::spec::model::{MapModel, TypeLayout};
use crate::spec::snapshot::{ByteOrder, FormatError, ObjectModel, decode};

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
        map_type: spec.type_name().to_owned(),
        key_size: spec.key_size,
        value_size: spec.value_size,
        max_entries: spec.max_entries,
        flags: spec.flags,
        map_extra: spec.map_extra,
        pinning: u32::from(matches!(spec.pinning, Pinning::ByName)),
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
    let mut maps: Vec<MapModel> = object
        .maps()
        .iter()
        .map(|spec| map_model(name, &object, spec))
        .collect::<Result<_, _>>()?;
    for m in &mut maps {
        place_section_variables(m, &object);
    }
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
