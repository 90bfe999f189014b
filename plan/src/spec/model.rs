//! A serialisable model of a map spec and of the BTF layout of its key and value.
//!
//! The model is what a snapshot stores and what the verdict engine compares. It is
//! deliberately independent of the BTF parser: a layout is a resolved tree (typedefs
//! kept by name, modifiers such as `const` and `volatile` dropped because they do not
//! change a single byte), so two models can be compared without the objects that
//! produced them.

use handover_uapi::{MapType, Pinning};
use serde::{Deserialize, Serialize};

/// One map of an object: its kernel attributes and, when the object has BTF for it,
/// the layout of its key and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapModel {
    /// Map name as written in the object (the kernel keeps the first 15 bytes).
    pub name: String,
    /// Kernel map type, serialised as the lower-case suffix of `BPF_MAP_TYPE_*`
    /// (`hash`, `lru_hash`).
    pub map_type: MapType,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Capacity as declared.
    pub max_entries: u32,
    /// `BPF_F_*` creation flags.
    pub flags: u32,
    /// Type-specific extra attribute (bloom filter hash count, arena address).
    pub map_extra: u64,
    /// Pinning mode, serialised as libbpf's number (0 none, 1 `LIBBPF_PIN_BY_NAME`).
    pub pinning: Pinning,
    /// Key layout, when the object carries BTF for the key.
    pub key: Option<TypeLayout>,
    /// Value layout, when the object carries BTF for the value.
    pub value: Option<TypeLayout>,
    /// Spec of the inner map of a map-in-map.
    pub inner: Option<Box<MapModel>>,
    /// Initial contents of a writable global data map (`.data`), as the object gives
    /// them (hex in JSON); absent when every byte is zero (`.bss`) or for other maps.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::spec::hex"
    )]
    pub initial_data: Option<Vec<u8>>,
}

impl MapModel {
    /// Whether the map is writable global data (`.data`, `.bss`, `.data.NAME`, or one
    /// of those behind an object-name prefix), whose initial contents come from the
    /// object.
    #[must_use]
    pub fn is_writable_global_data(&self) -> bool {
        let section = self
            .name
            .find('.')
            .map_or("", |i| self.name.get(i..).unwrap_or(""));
        self.map_type == MapType::Array
            && (section == ".bss"
                || section == ".data"
                || section.starts_with(".data.")
                || section.starts_with(".bss."))
    }
}

/// How the engine reconciles a field that both the old and the new version write
/// while they run side by side, declared on the new member with
/// `btf_decl_tag("handover:merge:RULE")`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeRule {
    /// Counters: the increments of both sides are added.
    Sum,
    /// High-water marks: the larger value wins.
    Max,
    /// The new version's value wins.
    New,
}

impl MergeRule {
    /// The name used in tags and reports.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            MergeRule::Sum => "sum",
            MergeRule::Max => "max",
            MergeRule::New => "new",
        }
    }
}

impl std::str::FromStr for MergeRule {
    type Err = String;
    fn from_str(s: &str) -> Result<MergeRule, String> {
        match s {
            "sum" => Ok(MergeRule::Sum),
            "max" => Ok(MergeRule::Max),
            "new" => Ok(MergeRule::New),
            other => Err(format!(
                "unknown merge rule `{other}`; accepted: sum, max, new"
            )),
        }
    }
}

/// A member of a struct or union.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Member name; `None` for an anonymous struct or union member.
    pub name: Option<String>,
    /// Offset of the member from the start of its parent, in bits.
    pub bit_offset: u64,
    /// Width of a bitfield in bits, 0 when the member is not a bitfield.
    pub bitfield_size: u32,
    /// Type of the member.
    pub ty: TypeLayout,
    /// The old name of a renamed member, declared on it in the C source with
    /// `btf_decl_tag("handover:renamed_from:OLDNAME")`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
    /// Reconciliation rule, declared with `btf_decl_tag("handover:merge:sum|max|new")`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergeRule>,
}

/// One named constant of an enum. The value is stored as its 64 raw bits; the
/// enclosing enum says whether they are read as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnumValue {
    /// Constant name.
    pub name: String,
    /// Raw value bits.
    pub value: u64,
}

/// The resolved layout of a type, recursively.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TypeLayout {
    /// An integer (also `char` and `_Bool`).
    Int {
        /// C name of the type (`unsigned int`).
        name: String,
        /// Storage size in bytes.
        size: u32,
        /// Whether the value is signed.
        signed: bool,
        /// Number of value bits (BTF `nr_bits`).
        bits: u32,
        /// Offset of the value bits inside the storage (BTF encoding offset), usually 0.
        #[serde(default, skip_serializing_if = "is_zero")]
        bit_offset: u32,
    },
    /// A floating-point number.
    Float {
        /// C name of the type.
        name: String,
        /// Size in bytes.
        size: u32,
    },
    /// A pointer. Its target is kept by name only: pointers are never followed, which
    /// also makes self-referencing types finite.
    Ptr {
        /// Size in bytes (8 on BPF).
        size: u32,
        /// Name of the pointed-to type, for display.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
    /// An enum (32- or 64-bit).
    Enum {
        /// Enum tag, `None` when anonymous.
        name: Option<String>,
        /// Size in bytes.
        size: u32,
        /// Whether the constants are signed.
        signed: bool,
        /// The constants, in declaration order.
        values: Vec<EnumValue>,
    },
    /// A struct (also used for a data section, whose variables become members).
    Struct {
        /// Struct tag, `None` when anonymous.
        name: Option<String>,
        /// Size in bytes.
        size: u32,
        /// Members in declaration order.
        members: Vec<Member>,
    },
    /// A union.
    Union {
        /// Union tag, `None` when anonymous.
        name: Option<String>,
        /// Size in bytes.
        size: u32,
        /// Members in declaration order.
        members: Vec<Member>,
    },
    /// A fixed-length array.
    Array {
        /// Element type.
        elem: Box<TypeLayout>,
        /// Number of elements.
        len: u32,
    },
    /// A typedef, resolved but named.
    Typedef {
        /// Typedef name.
        name: String,
        /// What it names.
        target: Box<TypeLayout>,
    },
    /// A forward declaration: a type whose layout the object does not give.
    Fwd {
        /// Declared name.
        name: String,
        /// Whether it was declared as a union.
        union: bool,
    },
    /// `void`.
    Void,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde passes a reference"
)]
fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl TypeLayout {
    /// Drops typedefs until a type that has its own layout.
    #[must_use]
    pub fn peel(&self) -> &TypeLayout {
        let mut t = self;
        while let TypeLayout::Typedef { target, .. } = t {
            t = target;
        }
        t
    }

    /// Size of the type in bytes, `None` for `void` and forward declarations.
    #[must_use]
    pub fn size(&self) -> Option<u64> {
        match self.peel() {
            TypeLayout::Int { size, .. }
            | TypeLayout::Float { size, .. }
            | TypeLayout::Ptr { size, .. }
            | TypeLayout::Enum { size, .. }
            | TypeLayout::Struct { size, .. }
            | TypeLayout::Union { size, .. } => Some(u64::from(*size)),
            TypeLayout::Array { elem, len } => elem.size()?.checked_mul(u64::from(*len)),
            TypeLayout::Typedef { .. } | TypeLayout::Fwd { .. } | TypeLayout::Void => None,
        }
    }

    /// A short C-like name for display: `struct flow`, `__u32`, `char[16]`.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            TypeLayout::Int { name, .. }
            | TypeLayout::Float { name, .. }
            | TypeLayout::Typedef { name, .. } => name.clone(),
            TypeLayout::Ptr { target, .. } => {
                format!("{} *", target.as_deref().unwrap_or("void"))
            }
            TypeLayout::Enum { name, .. } => {
                format!("enum {}", name.as_deref().unwrap_or("<anon>"))
            }
            TypeLayout::Struct { name, .. } => {
                format!("struct {}", name.as_deref().unwrap_or("<anon>"))
            }
            TypeLayout::Union { name, .. } => {
                format!("union {}", name.as_deref().unwrap_or("<anon>"))
            }
            TypeLayout::Array { elem, len } => format!("{}[{len}]", elem.describe()),
            TypeLayout::Fwd { name, union } => {
                format!(
                    "{} {name} (declared only)",
                    if *union { "union" } else { "struct" }
                )
            }
            TypeLayout::Void => "void".to_owned(),
        }
    }
}

/// Whether two layouts give the same bytes the same meaning.
///
/// Names of structs, unions, enums and typedefs do not count (a typedef-only rename or
/// an anonymous type replacing a named one with the same layout is the same layout);
/// member names, offsets, bitfield widths, integer sizes and signedness, array lengths
/// and enum constants do. An enum that only gained constants keeps its layout: every
/// value stored under the old enum still means the same under the new one.
#[must_use]
pub fn same_layout(old: &TypeLayout, new: &TypeLayout) -> bool {
    same_layout_depth(old, new, 0)
}

/// Nesting from this depth on is refused by the builder; the comparison and the field
/// mapping stop there too. The BTF parser's limit ([`handover_btf::MAX_DEPTH`], the
/// kernel's), so every walk over types has the one limit.
pub(crate) const MAX_DEPTH: usize = handover_btf::MAX_DEPTH;

fn same_layout_depth(old: &TypeLayout, new: &TypeLayout, depth: usize) -> bool {
    if depth >= MAX_DEPTH {
        return false;
    }
    match (old.peel(), new.peel()) {
        (
            TypeLayout::Int {
                size: s1,
                signed: g1,
                bits: b1,
                bit_offset: o1,
                ..
            },
            TypeLayout::Int {
                size: s2,
                signed: g2,
                bits: b2,
                bit_offset: o2,
                ..
            },
        ) => s1 == s2 && g1 == g2 && b1 == b2 && o1 == o2,
        (TypeLayout::Float { size: s1, .. }, TypeLayout::Float { size: s2, .. })
        | (TypeLayout::Ptr { size: s1, .. }, TypeLayout::Ptr { size: s2, .. }) => s1 == s2,
        (
            TypeLayout::Enum {
                size: s1,
                signed: g1,
                values: v1,
                ..
            },
            TypeLayout::Enum {
                size: s2,
                signed: g2,
                values: v2,
                ..
            },
        ) => s1 == s2 && g1 == g2 && enum_values_kept(v1, v2),
        (
            TypeLayout::Struct {
                size: s1,
                members: m1,
                ..
            },
            TypeLayout::Struct {
                size: s2,
                members: m2,
                ..
            },
        )
        | (
            TypeLayout::Union {
                size: s1,
                members: m1,
                ..
            },
            TypeLayout::Union {
                size: s2,
                members: m2,
                ..
            },
        ) => {
            s1 == s2
                && m1.len() == m2.len()
                && m1.iter().zip(m2).all(|(a, b)| {
                    a.name == b.name
                        && a.bit_offset == b.bit_offset
                        && a.bitfield_size == b.bitfield_size
                        && same_layout_depth(&a.ty, &b.ty, depth + 1)
                })
        }
        (TypeLayout::Array { elem: e1, len: l1 }, TypeLayout::Array { elem: e2, len: l2 }) => {
            l1 == l2 && same_layout_depth(e1, e2, depth + 1)
        }
        (
            TypeLayout::Fwd {
                name: n1,
                union: u1,
            },
            TypeLayout::Fwd {
                name: n2,
                union: u2,
            },
        ) => n1 == n2 && u1 == u2,
        (TypeLayout::Void, TypeLayout::Void) => true,
        _ => false,
    }
}

/// The dotted path of member `name` of the field at `path` (empty: the whole key or
/// value), as field mappings and layout errors name fields.
pub(crate) fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// Every old constant is still present in the new enum with the same value.
pub(crate) fn enum_values_kept(old: &[EnumValue], new: &[EnumValue]) -> bool {
    old.iter()
        .all(|o| new.iter().any(|n| n.name == o.name && n.value == o.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_int() -> TypeLayout {
        TypeLayout::Int {
            name: "unsigned int".into(),
            size: 4,
            signed: false,
            bits: 32,
            bit_offset: 0,
        }
    }

    #[test]
    fn typedef_rename_and_anonymous_struct_are_the_same_layout() {
        let member = |name: &str, off| Member {
            name: Some(name.into()),
            bit_offset: off,
            bitfield_size: 0,
            ty: u32_int(),
            renamed_from: None,
            merge: None,
        };
        let named = TypeLayout::Typedef {
            name: "flow_t".into(),
            target: Box::new(TypeLayout::Struct {
                name: Some("flow".into()),
                size: 8,
                members: vec![member("a", 0), member("b", 32)],
            }),
        };
        let anon = TypeLayout::Struct {
            name: None,
            size: 8,
            members: vec![member("a", 0), member("b", 32)],
        };
        assert!(same_layout(&named, &anon));
        let swapped = TypeLayout::Struct {
            name: None,
            size: 8,
            members: vec![member("b", 0), member("a", 32)],
        };
        assert!(!same_layout(&named, &swapped), "same size, other layout");
    }
}
