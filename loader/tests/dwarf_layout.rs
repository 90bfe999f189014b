//! Layout cross-check: for every struct or union used as a map key or value (and every
//! aggregate nested in one), member names, offsets and sizes read from the object's BTF
//! equal those in the same object's DWARF (`.debug_info`, read with gimli).
//!
//! BPF objects are relocatable: `.rel.debug_info` and `.rel.debug_str_offsets` hold
//! `R_BPF_64_ABS32`/`R_BPF_64_ABS64` relocations with the addend in place. They are
//! applied here (section symbols have value 0 in these objects, so the bytes only change
//! when a relocation targets a symbol with a value, but nothing relies on that).

#![expect(
    clippy::indexing_slicing,
    reason = "tests index into values they just checked; a panic is a failure"
)]

mod common;

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use gimli::{AttributeValue, RunTimeEndian};
use handover_btf::{Btf, Detail, TypeId};
use handover_loader::Object;
use object::{
    Object as _, ObjectSection as _, ObjectSymbol as _, RelocationFlags, RelocationTarget,
};

const R_BPF_64_ABS64: u32 = 2;
const R_BPF_64_ABS32: u32 = 3;

/// Section contents with their relocations applied.
fn relocated<'d>(file: &object::File<'d>, name: &str, big: bool) -> Cow<'d, [u8]> {
    let Some(sec) = file.section_by_name(name) else {
        return Cow::Borrowed(&[]);
    };
    let mut data = sec.data().unwrap().to_vec();
    for (offset, rel) in sec.relocations() {
        let RelocationFlags::Elf { r_type } = rel.flags() else {
            panic!("{name}: not an ELF relocation")
        };
        let RelocationTarget::Symbol(si) = rel.target() else {
            panic!("{name}: relocation without symbol")
        };
        let value = file.symbol_by_index(si).unwrap().address();
        let at = usize::try_from(offset).unwrap();
        match r_type.0 {
            R_BPF_64_ABS32 => {
                let b: [u8; 4] = data[at..at + 4].try_into().unwrap();
                let v = if big {
                    u32::from_be_bytes(b)
                } else {
                    u32::from_le_bytes(b)
                };
                let v = v.checked_add(u32::try_from(value).unwrap()).unwrap();
                data[at..at + 4].copy_from_slice(&if big {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                });
            }
            R_BPF_64_ABS64 => {
                let b: [u8; 8] = data[at..at + 8].try_into().unwrap();
                let v = if big {
                    u64::from_be_bytes(b)
                } else {
                    u64::from_le_bytes(b)
                };
                let v = v.checked_add(value).unwrap();
                data[at..at + 8].copy_from_slice(&if big {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                });
            }
            other => panic!("{name}: unexpected relocation type {other}"),
        }
    }
    Cow::Owned(data)
}

#[derive(Debug)]
struct Die {
    tag: gimli::DwTag,
    name: Option<String>,
    byte_size: Option<u64>,
    ty: Option<usize>,
    member_location: Option<u64>,
    data_bit_offset: Option<u64>,
    /// DWARF 2/3 `DW_AT_bit_offset`: from the most significant bit of the storage unit.
    legacy_bit_offset: Option<u64>,
    bit_size: Option<u64>,
    count: Option<u64>,
    declaration: bool,
    children: Vec<usize>,
}

impl Default for Die {
    fn default() -> Self {
        Self {
            tag: gimli::DW_TAG_null,
            name: None,
            byte_size: None,
            ty: None,
            member_location: None,
            data_bit_offset: None,
            legacy_bit_offset: None,
            bit_size: None,
            count: None,
            declaration: false,
            children: Vec::new(),
        }
    }
}

/// Every DIE of every unit, keyed by its offset in `.debug_info`.
fn read_dies(file: &object::File<'_>) -> HashMap<usize, Die> {
    let big = !file.is_little_endian();
    let endian = if big {
        RunTimeEndian::Big
    } else {
        RunTimeEndian::Little
    };
    let sections =
        gimli::DwarfSections::load(|id| Ok::<_, gimli::Error>(relocated(file, id.name(), big)))
            .unwrap();
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, endian));
    let mut dies = HashMap::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next().unwrap() {
        let unit = dwarf.unit(header).unwrap();
        let base = unit.header.offset().0;
        let mut stack: Vec<usize> = Vec::new();
        let mut cursor = unit.entries();
        while let Some(entry) = cursor.next_dfs().unwrap() {
            let off = base + entry.offset().0;
            let depth = usize::try_from(entry.depth()).unwrap();
            stack.truncate(depth);
            if let Some(&parent) = stack.last() {
                dies.entry(parent)
                    .or_insert_with(Die::default)
                    .children
                    .push(off);
            }
            stack.push(off);
            let d = dies.entry(off).or_insert_with(Die::default);
            d.tag = entry.tag();
            for attr in entry.attrs() {
                let v = attr.value();
                match attr.name() {
                    gimli::DW_AT_name => {
                        d.name = Some(
                            dwarf
                                .attr_string(&unit, v)
                                .unwrap()
                                .to_string_lossy()
                                .into_owned(),
                        );
                    }
                    gimli::DW_AT_byte_size => d.byte_size = v.udata_value(),
                    gimli::DW_AT_data_member_location => d.member_location = v.udata_value(),
                    gimli::DW_AT_data_bit_offset => d.data_bit_offset = v.udata_value(),
                    gimli::DW_AT_bit_offset => d.legacy_bit_offset = v.udata_value(),
                    gimli::DW_AT_bit_size => d.bit_size = v.udata_value(),
                    gimli::DW_AT_count => d.count = v.udata_value(),
                    gimli::DW_AT_upper_bound => d.count = v.udata_value().map(|u| u + 1),
                    gimli::DW_AT_declaration => d.declaration = true,
                    gimli::DW_AT_type => {
                        if let AttributeValue::UnitRef(r) = v {
                            d.ty = Some(base + r.0);
                        }
                    }
                    _ => {}
                }
            }
            // clang describes BPF bitfields the DWARF 2 way: a storage unit of byte_size
            // at data_member_location, and the field's offset from the unit's most
            // significant bit. Counted from the start of the aggregate, that is the same
            // offset on a big-endian target and the mirrored one on a little-endian one.
            if let (None, Some(msb), Some(bits), Some(unit_bytes)) = (
                d.data_bit_offset,
                d.legacy_bit_offset,
                d.bit_size,
                d.byte_size,
            ) {
                let start = d.member_location.unwrap_or(0) * 8;
                d.data_bit_offset = Some(if big {
                    start + msb
                } else {
                    start + unit_bytes * 8 - msb - bits
                });
            }
        }
    }
    dies
}

fn dwarf_size(dies: &HashMap<usize, Die>, off: usize, depth: usize) -> Option<u64> {
    assert!(depth < 32, "DWARF type chain too deep");
    let d = dies.get(&off)?;
    if let Some(s) = d.byte_size {
        return Some(s);
    }
    match d.tag {
        gimli::DW_TAG_typedef
        | gimli::DW_TAG_const_type
        | gimli::DW_TAG_volatile_type
        | gimli::DW_TAG_restrict_type => dwarf_size(dies, d.ty?, depth + 1),
        gimli::DW_TAG_pointer_type => Some(8),
        gimli::DW_TAG_array_type => {
            let elem = dwarf_size(dies, d.ty?, depth + 1)?;
            let n: u64 = d
                .children
                .iter()
                .filter_map(|c| dies.get(c))
                .filter(|c| c.tag == gimli::DW_TAG_subrange_type)
                .map(|c| c.count.unwrap_or(0))
                .product();
            Some(elem * n)
        }
        _ => None,
    }
}

/// (name, bit offset, size in bytes) of each member, as DWARF describes the aggregate.
fn dwarf_members(dies: &HashMap<usize, Die>, agg: &Die) -> Vec<(String, u64, u64)> {
    agg.children
        .iter()
        .filter_map(|c| dies.get(c))
        .filter(|c| c.tag == gimli::DW_TAG_member)
        .map(|m| {
            let bit = m
                .data_bit_offset
                .unwrap_or_else(|| m.member_location.unwrap_or(0) * 8);
            (
                m.name.clone().unwrap_or_default(),
                bit,
                dwarf_size(dies, m.ty.unwrap(), 0).unwrap_or(0),
            )
        })
        .collect()
}

/// Checks the aggregate `id` and every aggregate nested in it; returns their names.
fn check(
    btf: &Btf<'_>,
    dies: &HashMap<usize, Die>,
    id: TypeId,
    ctx: &str,
    seen: &mut BTreeSet<u32>,
    checked: &mut Vec<String>,
) {
    let id = btf.resolve(id).unwrap();
    if id.0 == 0 || !seen.insert(id.0) {
        return;
    }
    let t = btf.type_by_id(id).unwrap();
    match t.detail() {
        Detail::Array(a) => check(btf, dies, a.elem, ctx, seen, checked),
        Detail::Struct(c) | Detail::Union(c) => {
            let name = t.name().unwrap();
            let tag = if matches!(t.detail(), Detail::Struct(_)) {
                gimli::DW_TAG_structure_type
            } else {
                gimli::DW_TAG_union_type
            };
            let ours: Vec<(String, u64, u64)> = c
                .members
                .clone()
                .map(|m| {
                    (
                        m.name().unwrap().to_owned(),
                        u64::from(m.bit_offset),
                        u64::from(btf.size_of(m.ty).unwrap()),
                    )
                })
                .collect();
            // Find the DWARF definition with the same name and member list; anonymous
            // aggregates are found by their member list alone.
            let candidates: Vec<&Die> = dies
                .values()
                .filter(|d| {
                    d.tag == tag
                        && !d.declaration
                        && d.name.as_deref().unwrap_or("") == name
                        && d.byte_size == Some(u64::from(c.size))
                })
                .collect();
            assert!(
                !candidates.is_empty(),
                "{ctx}: no DWARF definition of {name:?} with size {}",
                c.size
            );
            let theirs: Vec<Vec<(String, u64, u64)>> =
                candidates.iter().map(|d| dwarf_members(dies, d)).collect();
            assert!(
                theirs.contains(&ours),
                "{ctx}: {name:?} BTF members {ours:?} differ from DWARF {theirs:?}"
            );
            checked.push(if name.is_empty() {
                "<anon>".into()
            } else {
                name.to_owned()
            });
            for m in c.members {
                check(btf, dies, m.ty, ctx, seen, checked);
            }
        }
        _ => {}
    }
}

#[test]
fn btf_layouts_of_map_keys_and_values_match_dwarf() {
    let mut all_checked = BTreeSet::new();
    for path in common::all_objects() {
        if common::rejected(&path).is_some() {
            continue;
        }
        let data = common::read(&path);
        let obj = Object::parse(&data).unwrap();
        let Some(btf) = obj.btf() else { continue };
        let file = object::File::parse(&*data).unwrap();
        // programs/build.sh: `llvm-strip -g` and `bpftool gen object` (which links without
        // debug info) leave BTF but no DWARF to compare with.
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".stripped.o") || name == "linked.o" {
            assert!(file.section_by_name(".debug_info").is_none(), "{name}");
            continue;
        }
        assert!(
            file.section_by_name(".debug_info").is_some(),
            "{}: built without -g",
            path.display()
        );
        let dies = read_dies(&file);
        let ctx = path.display().to_string();
        let mut seen = BTreeSet::new();
        let mut checked = Vec::new();
        for m in obj.maps() {
            for id in [m.key_type, m.value_type].into_iter().flatten() {
                check(
                    btf,
                    &dies,
                    id,
                    &format!("{ctx}: map {}", m.name),
                    &mut seen,
                    &mut checked,
                );
            }
            if let Some(inner) = &m.inner {
                for id in [inner.key_type, inner.value_type].into_iter().flatten() {
                    check(
                        btf,
                        &dies,
                        id,
                        &format!("{ctx}: map {}", inner.name),
                        &mut seen,
                        &mut checked,
                    );
                }
            }
        }
        all_checked.extend(checked);
    }
    // The fixtures' key and value structs (programs/*.c) and xdp-tools' are all covered.
    for name in [
        "flow_key",
        "flow_stats",
        "lpm_v4_key",
        "sock_key",
        "backend",
        "be_key",
        "xdp_stats_record",
        "ethaddr",
        "in6_addr",
        // programs/map_types_edge.c, programs/subprogs.c and programs/data_sections.c.
        "<anon>", // anon_key_t, a typedef of an anonymous struct
        "value_with_union",
        "packed_hdr",
        "aligned_cell",
        "bits",
        "with_fn",
        "nested",
        "value_with_flex",
        "flex",
        "a_struct_whose_name_is_much_longer_than_anything_a_kernel_object_name_can_hold_at_all",
        "counter",
        "flow_slot",
    ] {
        assert!(
            all_checked.contains(name),
            "{name} was not checked; checked {all_checked:?}"
        );
    }
}
