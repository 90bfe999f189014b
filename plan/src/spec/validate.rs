//! Layouts the kernel would refuse, caught before any plan is made from them.
//!
//! The kernel checks a map's BTF when it creates the map (`map_check_btf`): the key
//! and value types must have the map's key and value sizes, and its BTF verifier
//! refuses a struct or union member that lies past the end of its parent ("Member
//! exceeds struct_size"). A layout read from a crafted object or snapshot may break
//! either rule; the diff would then plan conversions over bytes that do not exist.

use crate::spec::model::{MAX_DEPTH, MapModel, Member, TypeLayout, join};

/// The largest key or value a map can hold: `KMALLOC_MAX_SIZE` with 4 KiB pages and
/// the default `MAX_PAGE_ORDER` of 10, 4 MiB. Every map type refuses larger ones
/// (most much smaller), so a layout above it is not one the kernel would create.
pub const MAX_ENCODING_SIZE: u64 = 4 << 20;

/// What is wrong with a layout: the side, the field (dotted path, empty for the
/// whole key or value) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{side} {}: {reason}", if field.is_empty() { "(whole)" } else { field.as_str() })]
pub struct InvalidLayout {
    /// `key` or `value`.
    pub side: &'static str,
    /// Dotted path of the field.
    pub field: String,
    /// Why the kernel would refuse it.
    pub reason: String,
}

/// Checks the key and value layouts of `map` (and of its inner map) against the
/// kernel's rules.
///
/// # Errors
/// The first [`InvalidLayout`] found.
pub fn check_layouts(map: &MapModel) -> Result<(), InvalidLayout> {
    for (side, layout, size) in [
        ("key", map.key.as_ref(), map.key_size),
        ("value", map.value.as_ref(), map.value_size),
    ] {
        let Some(layout) = layout else { continue };
        let bad = |field: &str, reason: String| InvalidLayout {
            side,
            field: field.to_owned(),
            reason,
        };
        let Some(actual) = layout.size() else {
            return Err(bad(
                "",
                format!("{} has no size the kernel can use", layout.describe()),
            ));
        };
        if actual > MAX_ENCODING_SIZE {
            return Err(bad(
                "",
                format!(
                    "{} is {actual} bytes, larger than any map {side} the kernel allocates ({MAX_ENCODING_SIZE} bytes, KMALLOC_MAX_SIZE)",
                    layout.describe()
                ),
            ));
        }
        if actual != u64::from(size) {
            return Err(bad(
                "",
                format!(
                    "{} is {actual} bytes but the map's {side}_size is {size}: the kernel refuses the map",
                    layout.describe()
                ),
            ));
        }
        check_type(layout, "", 0).map_err(|(field, reason)| bad(&field, reason))?;
    }
    if let Some(inner) = &map.inner {
        check_layouts(inner)?;
    }
    Ok(())
}

fn check_type(t: &TypeLayout, path: &str, depth: usize) -> Result<(), (String, String)> {
    if depth > MAX_DEPTH {
        return Err((
            path.to_owned(),
            format!("nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    match t.peel() {
        TypeLayout::Struct { size, members, .. } | TypeLayout::Union { size, members, .. } => {
            let end = u64::from(*size).saturating_mul(8);
            for (i, m) in members.iter().enumerate() {
                let name = m.name.clone().unwrap_or_else(|| format!("<anon {i}>"));
                let child = join(path, &name);
                check_member(m, end, &child, t)?;
                check_type(&m.ty, &child, depth + 1)?;
            }
            Ok(())
        }
        TypeLayout::Array { elem, .. } => {
            if t.size().is_none() {
                return Err((path.to_owned(), "array size overflows".to_owned()));
            }
            check_type(elem, &format!("{path}[]"), depth + 1)
        }
        _ => Ok(()),
    }
}

fn check_member(
    m: &Member,
    parent_end: u64,
    path: &str,
    parent: &TypeLayout,
) -> Result<(), (String, String)> {
    let width = if m.bitfield_size > 0 {
        let type_bits = m.ty.size().unwrap_or(0).saturating_mul(8);
        if u64::from(m.bitfield_size) > type_bits {
            return Err((
                path.to_owned(),
                format!(
                    "a {}-bit bitfield of {} ({type_bits} bits)",
                    m.bitfield_size,
                    m.ty.describe()
                ),
            ));
        }
        u64::from(m.bitfield_size)
    } else {
        m.ty.size()
            .ok_or_else(|| (path.to_owned(), format!("{} has no size", m.ty.describe())))?
            .saturating_mul(8)
    };
    if m.bit_offset.saturating_add(width) > parent_end {
        return Err((
            path.to_owned(),
            format!(
                "lies past the end of {} ({} bytes): bits {}..{}",
                parent.describe(),
                parent_end / 8,
                m.bit_offset,
                m.bit_offset.saturating_add(width)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use handover_uapi::{MapType, Pinning};

    fn u32_() -> TypeLayout {
        TypeLayout::Int {
            name: "u32".into(),
            size: 4,
            signed: false,
            bits: 32,
            bit_offset: 0,
        }
    }

    fn member(name: &str, bit_offset: u64) -> Member {
        Member {
            name: Some(name.into()),
            bit_offset,
            bitfield_size: 0,
            ty: u32_(),
            renamed_from: None,
            merge: None,
        }
    }

    fn map(value: TypeLayout, value_size: u32) -> MapModel {
        MapModel {
            name: "flows".into(),
            map_type: MapType::Hash,
            key_size: 4,
            value_size,
            max_entries: 8,
            flags: 0,
            map_extra: 0,
            pinning: Pinning::None,
            key: Some(u32_()),
            value: Some(value),
            inner: None,
            initial_data: None,
        }
    }

    #[test]
    fn a_member_past_its_struct_is_named() {
        let v = TypeLayout::Struct {
            name: Some("v".into()),
            size: 8,
            members: vec![member("a", 0), member("late", 64)],
        };
        let e = check_layouts(&map(v, 8)).unwrap_err();
        assert_eq!((e.side, e.field.as_str()), ("value", "late"));
        assert!(e.to_string().contains("past the end"), "{e}");
    }

    #[test]
    fn a_struct_of_size_0xffffffff_is_refused() {
        let v = TypeLayout::Struct {
            name: Some("huge".into()),
            size: 0xffff_ffff,
            members: vec![member("a", 0)],
        };
        let e = check_layouts(&map(v, 0xffff_ffff)).unwrap_err();
        assert!(e.to_string().contains("KMALLOC_MAX_SIZE"), "{e}");
    }

    #[test]
    fn a_layout_of_another_size_than_the_map_is_refused() {
        let e = check_layouts(&map(u32_(), 8)).unwrap_err();
        assert!(e.to_string().contains("value_size is 8"), "{e}");
        assert!(check_layouts(&map(u32_(), 4)).is_ok());
    }
}
