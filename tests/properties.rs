//! Laws of the verdict engine and the converter, on generated layouts.

#![allow(
    clippy::indexing_slicing,
    reason = "test code: an out-of-range index is a failed test"
)]

mod common;

use common::*;
use handover::{
    FieldAction, Member, Policy, Side, TypeLayout, Verdict, convert, diff_map, map_layout,
    read_bits, write_bits,
};
use proptest::prelude::*;

/// A field of a generated struct before layout: name, kind.
#[derive(Debug, Clone)]
enum Gen {
    Int { size: u32, signed: bool },
    Bits { width: u32 },
    Arr { size: u32, len: u32 },
    Nested(Vec<(String, Gen)>),
}

fn gen_field(depth: u32) -> BoxedStrategy<Gen> {
    let leaf = prop_oneof![
        (prop::sample::select(vec![1u32, 2, 4, 8]), any::<bool>())
            .prop_map(|(size, signed)| Gen::Int { size, signed }),
        (1u32..=31).prop_map(|width| Gen::Bits { width }),
        (prop::sample::select(vec![1u32, 2, 4]), 1u32..5)
            .prop_map(|(size, len)| Gen::Arr { size, len }),
    ];
    if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![3 => leaf, 1 => gen_fields(depth - 1).prop_map(Gen::Nested)].boxed()
    }
}

fn gen_fields(depth: u32) -> BoxedStrategy<Vec<(String, Gen)>> {
    prop::collection::vec(gen_field(depth), 1..6)
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, g)| (format!("f{i}"), g))
                .collect()
        })
        .boxed()
}

fn int_of(size: u32, signed: bool) -> TypeLayout {
    int(if signed { "sN" } else { "uN" }, size, signed)
}

/// Lays the fields out as C would (bitfields each in their own 4-byte unit).
fn build(fields: &[(String, Gen)]) -> TypeLayout {
    let mut off = 0u64;
    let mut align = 1u64;
    let mut members = Vec::new();
    for (name, g) in fields {
        let (ty, a, bitfield, shift) = match g {
            Gen::Int { size, signed } => (int_of(*size, *signed), u64::from(*size), 0, 0),
            Gen::Bits { width } => (int_of(4, false), 4, *width, u64::from(32 - width) / 2),
            Gen::Arr { size, len } => (array(int_of(*size, false), *len), u64::from(*size), 0, 0),
            Gen::Nested(f) => {
                let t = build(f);
                let a = match &t {
                    TypeLayout::Struct { members, .. } => members
                        .iter()
                        .map(|m| m.ty.size().unwrap().clamp(1, 8))
                        .max()
                        .unwrap_or(1),
                    _ => 1,
                };
                (t, a.next_power_of_two().min(8), 0, 0)
            }
        };
        off = off.div_ceil(a) * a;
        align = align.max(a);
        let size = ty.size().unwrap();
        members.push(Member {
            name: Some(name.clone()),
            bit_offset: off * 8 + shift,
            bitfield_size: bitfield,
            ty,
            renamed_from: None,
            merge: None,
        });
        off += size;
    }
    TypeLayout::Struct {
        name: Some("v".into()),
        size: u32::try_from(off.div_ceil(align) * align).unwrap(),
        members,
    }
}

/// One edit applied to a field list to make the new version.
#[derive(Debug, Clone)]
enum Edit {
    Keep,
    Widen,
    Drop,
    Rename,
    SignFlip,
}

fn apply(
    fields: &[(String, Gen)],
    edits: &[Edit],
    add: usize,
    rotate: usize,
) -> Vec<(String, Gen)> {
    let mut out = Vec::new();
    for (i, (name, g)) in fields.iter().enumerate() {
        let e = edits.get(i).cloned().unwrap_or(Edit::Keep);
        match (e, g) {
            (Edit::Drop, _) => {}
            (Edit::Rename, g) => out.push((format!("{name}_renamed"), g.clone())),
            (Edit::Widen, Gen::Int { size, signed }) if *size < 8 => {
                out.push((
                    name.clone(),
                    Gen::Int {
                        size: size * 2,
                        signed: *signed,
                    },
                ));
            }
            (Edit::Widen, Gen::Bits { width }) if *width < 31 => {
                out.push((name.clone(), Gen::Bits { width: width + 1 }));
            }
            (Edit::Widen, Gen::Arr { size, len }) => {
                out.push((
                    name.clone(),
                    Gen::Arr {
                        size: *size,
                        len: len + 1,
                    },
                ));
            }
            (Edit::SignFlip, Gen::Int { size, signed }) => {
                out.push((
                    name.clone(),
                    Gen::Int {
                        size: *size,
                        signed: !signed,
                    },
                ));
            }
            (Edit::Widen | Edit::SignFlip, Gen::Nested(f)) => {
                let edits = vec![Edit::Widen; f.len()];
                out.push((name.clone(), Gen::Nested(apply(f, &edits, 1, 0))));
            }
            (_, g) => out.push((name.clone(), g.clone())),
        }
    }
    for j in 0..add {
        out.push((
            format!("added{j}"),
            Gen::Int {
                size: 4,
                signed: false,
            },
        ));
    }
    let n = out.len();
    if n > 0 {
        out.rotate_left(rotate % n);
    }
    out
}

/// Every scalar leaf: (path, bit offset, width, signed).
fn leaves(
    t: &TypeLayout,
    path: &str,
    bit: u64,
    bitfield: u32,
    out: &mut Vec<(String, u64, u32, bool)>,
) {
    match t.peel() {
        TypeLayout::Int { signed, bits, .. } => {
            out.push((
                path.to_owned(),
                bit,
                if bitfield > 0 { bitfield } else { *bits },
                *signed,
            ));
        }
        TypeLayout::Struct { members, .. } => {
            for m in members {
                let name = m.name.as_deref().unwrap_or("");
                let p = if path.is_empty() {
                    name.to_owned()
                } else {
                    format!("{path}.{name}")
                };
                leaves(&m.ty, &p, bit + m.bit_offset, m.bitfield_size, out);
            }
        }
        TypeLayout::Array { elem, len } => {
            let es = elem.size().unwrap() * 8;
            for i in 0..u64::from(*len) {
                leaves(elem, &format!("{path}[{i}]"), bit + i * es, 0, out);
            }
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Components of a path: names and `[a..b]`/`[i]` index ranges.
fn components(p: &str) -> Vec<(String, Option<(u64, u64)>)> {
    let mut out = Vec::new();
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in p.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            '.' if depth == 0 => {
                parts.push(&p[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&p[start..]);
    for part in parts {
        let (name, rest) = part
            .split_once('[')
            .map_or((part, None), |(n, r)| (n, Some(r)));
        let range = rest.map(|r| {
            let r = r.trim_end_matches(']');
            match r.split_once("..") {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None => {
                    let i: u64 = r.parse().unwrap();
                    (i, i + 1)
                }
            }
        });
        out.push((name.to_owned(), range));
    }
    out
}

/// Whether a field-mapping row names this leaf (itself or an enclosing aggregate).
fn covers(row: &str, leaf: &str) -> bool {
    if row.is_empty() {
        return true;
    }
    let (r, l) = (components(row), components(leaf));
    r.len() <= l.len()
        && r.iter().zip(&l).all(|((rn, rr), (ln, lr))| {
            rn == ln
                && match (rr, lr) {
                    (None, None) => true,
                    (Some((a, b)), Some((i, _))) => a <= i && i < b,
                    (Some(_), None) => false,
                    (None, Some(_)) => true,
                }
        })
}

fn extend(v: u128, bits: u32, signed: bool) -> u128 {
    if signed && bits < 128 && (v >> (bits - 1)) & 1 == 1 {
        v | (u128::MAX << bits)
    } else {
        v
    }
}

fn mask(bits: u32) -> u128 {
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn diff_of_a_spec_with_itself_is_all_reuse(
        key in gen_fields(1),
        value in gen_fields(2),
        map_type in prop::sample::select(vec![
            "hash", "lru_hash", "percpu_hash", "array", "percpu_array", "lpm_trie",
            "sockhash", "sk_storage", "ringbuf", "perf_event_array", "devmap", "queue",
        ]),
        max in 0u32..100_000,
        flags in 0u32..4,
        strict in any::<bool>(),
    ) {
        let m = map("m", map_type, build(&key), build(&value), max);
        let m = handover::MapModel { flags, ..m };
        let policy = if strict { Policy::Strict } else { Policy::Migrate };
        let d = diff_map(Some(&m), Some(&m), policy, &ENV);
        prop_assert_eq!(d.verdict, Verdict::Reuse);
        prop_assert!(d.changes.is_empty() && d.fields.is_empty() && !d.loses_entries);
    }

    #[test]
    fn converter_keeps_copied_and_widened_fields_and_zeroes_new_ones(
        fields in gen_fields(2),
        edits in prop::collection::vec(prop_oneof![
            4 => Just(Edit::Keep), 2 => Just(Edit::Widen), 1 => Just(Edit::Drop),
            1 => Just(Edit::Rename), 1 => Just(Edit::SignFlip),
        ], 0..8),
        add in 0usize..3,
        rotate in 0usize..6,
        seed in any::<u64>(),
    ) {
        let old = build(&fields);
        let new = build(&apply(&fields, &edits, add, rotate));
        let (os, ns) = (old.size().unwrap(), new.size().unwrap());
        let mapping = map_layout(&old, &new, u32::try_from(os).unwrap(), u32::try_from(ns).unwrap(), Side::Value);

        // Encode a value per old leaf, by field name.
        let mut old_leaves = Vec::new();
        leaves(&old, "", 0, 0, &mut old_leaves);
        let mut buf = vec![0u8; usize::try_from(os).unwrap()];
        let mut state = seed | 1;
        let mut values = std::collections::HashMap::new();
        for (path, bit, bits, signed) in &old_leaves {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            let v = u128::from(state) & mask(*bits);
            write_bits(&mut buf, *bit, *bits, v).unwrap();
            values.insert(path.clone(), (v, *bits, *signed));
        }
        let out = convert(&mapping.plan, &buf).unwrap();

        // Decode by field name: each new leaf is named by exactly one kept row.
        let mut new_leaves = Vec::new();
        leaves(&new, "", 0, 0, &mut new_leaves);
        for (path, bit, bits, _) in &new_leaves {
            let row = mapping.fields.iter()
                .filter(|f| f.action != FieldAction::Drop && covers(&f.path, path))
                .max_by_key(|f| f.path.len())
                .unwrap_or_else(|| panic!("no row for {path}: {:#?}", mapping.fields));
            let got = read_bits(&out, *bit, *bits).unwrap();
            match row.action {
                FieldAction::Copy | FieldAction::Widen => {
                    let (v, obits, signed) = values[path.as_str()];
                    prop_assert_eq!(got, extend(v, obits, signed) & mask(*bits), "{} {:?}", path, row);
                }
                FieldAction::ZeroFill | FieldAction::Initial => prop_assert_eq!(got, 0, "{}", path),
                FieldAction::Drop => unreachable!(),
            }
        }
        // Every old leaf is either carried or reported dropped.
        for (path, ..) in &old_leaves {
            prop_assert!(mapping.fields.iter().any(|f| covers(&f.path, path)), "{} unreported", path);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The reverse conversion (new to old, for dual writes) undoes the conversion on
    /// every carried field: converting an old value and reversing it over the old
    /// value gives the old value back, whatever the old bytes are; reversed without
    /// an old value, the fields the new layout lacks are zero.
    #[test]
    fn reverse_undoes_convert_on_carried_fields(
        fields in gen_fields(2),
        edits in prop::collection::vec(prop_oneof![
            4 => Just(Edit::Keep), 2 => Just(Edit::Widen), 1 => Just(Edit::Drop),
            1 => Just(Edit::Rename), 1 => Just(Edit::SignFlip),
        ], 0..8),
        add in 0usize..3,
        rotate in 0usize..6,
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let old = build(&fields);
        let new = build(&apply(&fields, &edits, add, rotate));
        let (os, ns) = (old.size().unwrap(), new.size().unwrap());
        let mapping = map_layout(&old, &new, u32::try_from(os).unwrap(), u32::try_from(ns).unwrap(), Side::Value);
        let mut buf: Vec<u8> = bytes.iter().copied().cycle().take(usize::try_from(os).unwrap()).collect();
        buf.resize(usize::try_from(os).unwrap(), 0);
        let converted = convert(&mapping.plan, &buf).unwrap();
        let back = handover::reverse(&mapping.plan, &converted, Some(&buf)).unwrap();
        prop_assert_eq!(&back, &buf);
        // Without the old value: every carried old leaf is back, the rest is zero.
        let bare = handover::reverse(&mapping.plan, &converted, None).unwrap();
        let mut old_leaves = Vec::new();
        leaves(&old, "", 0, 0, &mut old_leaves);
        for (path, bit, bits, _) in &old_leaves {
            let carried = mapping.fields.iter().any(|f| {
                matches!(f.action, FieldAction::Copy | FieldAction::Widen) && covers(&f.path, path)
            });
            let want = if carried { read_bits(&buf, *bit, *bits).unwrap() } else { 0 };
            prop_assert_eq!(read_bits(&bare, *bit, *bits).unwrap(), want, "{}", path);
        }
    }

    /// A plan read back from its JSON equals the plan written.
    #[test]
    fn a_plan_survives_json(
        fields in gen_fields(2),
        edits in prop::collection::vec(prop_oneof![
            4 => Just(Edit::Keep), 2 => Just(Edit::Widen), 1 => Just(Edit::Drop),
            1 => Just(Edit::Rename), 1 => Just(Edit::SignFlip),
        ], 0..8),
        add in 0usize..3,
        rotate in 0usize..6,
    ) {
        let old = build(&fields);
        let new = build(&apply(&fields, &edits, add, rotate));
        let key = common::u32_();
        let o = common::map("m", "hash", key.clone(), old, 64);
        let n = common::map("m", "hash", key, new, 128);
        let plan = handover::Plan::new(handover::diff_maps(&[o], &[n], handover::Policy::Migrate, &ENV));
        let json = serde_json::to_string(&plan).unwrap();
        let back: handover::Plan = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, plan);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A key mapping that carries every field (copy or widen only) is injective: keys
    /// that differ in any field stay different, so a rekeyed map loses no entry.
    #[test]
    fn a_carrying_key_mapping_keeps_keys_apart(
        fields in gen_fields(1),
        widen in prop::collection::vec(any::<bool>(), 0..8),
        rotate in 0usize..6,
        seeds in (any::<u64>(), any::<u64>()),
    ) {
        // Only scalars are widened: a longer array or a nested struct with an added
        // member would add key fields that old keys cannot provide.
        let edits: Vec<Edit> = fields
            .iter()
            .zip(widen.iter().chain(std::iter::repeat(&false)))
            .map(|((_, g), w)| match g {
                Gen::Int { .. } | Gen::Bits { .. } if *w => Edit::Widen,
                _ => Edit::Keep,
            })
            .collect();
        let old = build(&fields);
        let new = build(&apply(&fields, &edits, 0, rotate));
        let (os, ns) = (old.size().unwrap(), new.size().unwrap());
        let mapping = map_layout(&old, &new, u32::try_from(os).unwrap(), u32::try_from(ns).unwrap(), Side::Key);
        prop_assert!(mapping.carries_everything(), "{:#?}", mapping.fields);
        let mut old_leaves = Vec::new();
        leaves(&old, "", 0, 0, &mut old_leaves);
        let encode = |mut state: u64| {
            let mut buf = vec![0u8; usize::try_from(os).unwrap()];
            for (_, bit, bits, _) in &old_leaves {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                write_bits(&mut buf, *bit, *bits, u128::from(state) & mask(*bits)).unwrap();
            }
            buf
        };
        let (a, b) = (encode(seeds.0 | 1), encode(seeds.1 | 1));
        let (ca, cb) = (convert(&mapping.plan, &a).unwrap(), convert(&mapping.plan, &b).unwrap());
        prop_assert_eq!(a == b, ca == cb);
    }
}
