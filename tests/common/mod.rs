//! Small builders for map models and layouts.
#![allow(dead_code, reason = "each test file uses a different subset")]

use handover_plan::{EnumValue, KernelEnv, MapModel, Member, Pinning, TypeLayout};

pub mod corpus;

pub const ENV: KernelEnv = KernelEnv {
    page_size: 4096,
    possible_cpus: 4,
};

pub fn int(name: &str, size: u32, signed: bool) -> TypeLayout {
    TypeLayout::Int {
        name: name.into(),
        size,
        signed,
        bits: size * 8,
        bit_offset: 0,
    }
}

pub fn u8_() -> TypeLayout {
    int("unsigned char", 1, false)
}
pub fn u16_() -> TypeLayout {
    int("short unsigned int", 2, false)
}
pub fn u32_() -> TypeLayout {
    int("unsigned int", 4, false)
}
pub fn u64_() -> TypeLayout {
    int("long long unsigned int", 8, false)
}
pub fn i32_() -> TypeLayout {
    int("int", 4, true)
}
pub fn i64_() -> TypeLayout {
    int("long long int", 8, true)
}

pub fn typedef(name: &str, t: TypeLayout) -> TypeLayout {
    TypeLayout::Typedef {
        name: name.into(),
        target: Box::new(t),
    }
}

pub fn array(elem: TypeLayout, len: u32) -> TypeLayout {
    TypeLayout::Array {
        elem: Box::new(elem),
        len,
    }
}

pub fn enum_(name: &str, values: &[(&str, u64)]) -> TypeLayout {
    TypeLayout::Enum {
        name: Some(name.into()),
        size: 4,
        signed: false,
        values: values
            .iter()
            .map(|(n, v)| EnumValue {
                name: (*n).into(),
                value: *v,
            })
            .collect(),
    }
}

fn align_of(t: &TypeLayout) -> u64 {
    match t.peel() {
        TypeLayout::Array { elem, .. } => align_of(elem),
        TypeLayout::Struct { members, .. } | TypeLayout::Union { members, .. } => {
            members.iter().map(|m| align_of(&m.ty)).max().unwrap_or(1)
        }
        t => t.size().unwrap_or(1).clamp(1, 8),
    }
}

/// A struct with C layout of the given members (natural alignment, no bitfields).
pub fn cstruct(name: Option<&str>, fields: Vec<(&str, TypeLayout)>) -> TypeLayout {
    let mut off = 0u64;
    let mut align = 1;
    let mut members = Vec::new();
    for (n, t) in fields {
        let a = align_of(&t);
        align = align.max(a);
        off = off.div_ceil(a) * a;
        let size = t.size().unwrap();
        members.push(Member {
            name: Some(n.into()),
            bit_offset: off * 8,
            bitfield_size: 0,
            ty: t,
            renamed_from: None,
            merge: None,
        });
        off += size;
    }
    let size = off.div_ceil(align) * align;
    TypeLayout::Struct {
        name: name.map(Into::into),
        size: u32::try_from(size).unwrap(),
        members,
    }
}

pub fn map(name: &str, map_type: &str, key: TypeLayout, value: TypeLayout, max: u32) -> MapModel {
    MapModel {
        name: name.into(),
        map_type: map_type.parse().expect("a kernel map type name"),
        key_size: u32::try_from(key.size().unwrap()).unwrap(),
        value_size: u32::try_from(value.size().unwrap()).unwrap(),
        max_entries: max,
        flags: 0,
        map_extra: 0,
        pinning: Pinning::ByName,
        key: Some(key),
        value: Some(value),
        inner: None,
        initial_data: None,
    }
}
