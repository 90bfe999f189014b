//! Field-by-field mapping from an old key or value layout to a new one.
//!
//! Fields are matched by name, recursively through nested structs, unions and arrays
//! (arrays element by element). Each field of either side gets one action:
//!
//! - `copy`: same width and signedness, the bits are carried unchanged;
//! - `widen`: an integer carried into a wider one without loss: unsigned to wider
//!   unsigned or wider signed is zero-extended, signed to wider signed is
//!   sign-extended; signed to unsigned, and any narrowing, is not lossless and is
//!   treated as a type change;
//! - `zero-fill`: a field of the new layout with no old source starts as zero;
//! - `drop`: a field of the old layout with no place in the new one is discarded.
//!
//! A field whose type changed in a way no rule above carries (narrowed integer, float
//! to int, struct to scalar, enum whose existing constants changed value, union whose
//! old members did not all survive unchanged) is reported as `drop` of the old field
//! and `zero-fill` of the new one, with the reason.
//!
//! Unions: an unchanged union is copied as bytes; a changed union is still copied as
//! bytes when the new one is at least as large and every old member survives with the
//! same layout, since whichever member was active keeps its bytes. Anonymous struct
//! members are looked through (their fields are matched as fields of the parent);
//! an anonymous union member is matched with the old anonymous union that shares a
//! member name.

use serde::{Deserialize, Serialize};

use crate::spec::model::{
    MAX_DEPTH, Member, MergeRule, TypeLayout, enum_values_kept, join, same_layout,
};

/// Most conversion steps an array may expand into; a key or value is at most a few
/// kilobytes in practice, so only a layout that contradicts its map's size gets here.
const MAX_ARRAY_STEPS: u64 = 1 << 16;

/// What happens to one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FieldAction {
    /// Carried unchanged.
    Copy,
    /// Carried into a wider integer.
    Widen,
    /// New field, starts as zero.
    ZeroFill,
    /// New field of a global data map, starts with the new object's initial value
    /// (as a fresh load would).
    Initial,
    /// Old field, discarded.
    Drop,
}

impl FieldAction {
    /// The name shown in reports.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            FieldAction::Copy => "copy",
            FieldAction::Widen => "widen",
            FieldAction::ZeroFill => "zero-fill",
            FieldAction::Initial => "initial",
            FieldAction::Drop => "drop",
        }
    }
}

/// Whether a field belongs to the key or to the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The map key.
    Key,
    /// The map value.
    Value,
}

/// Where a field lives in one layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldLoc {
    /// Type of the field, for display.
    #[serde(rename = "type")]
    pub ty: String,
    /// Offset from the start of the key or value, in bits.
    pub bit_offset: u64,
    /// Width in bits.
    pub bits: u64,
}

/// The action taken for one field, with its place on each side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldMapping {
    /// Key or value.
    pub side: Side,
    /// Dotted path of the field (`stats.bytes`, `addr[0..4]`); empty for the whole key
    /// or value.
    pub path: String,
    /// What happens to it.
    pub action: FieldAction,
    /// Place in the old layout (absent for `zero-fill`).
    pub old: Option<FieldLoc>,
    /// Place in the new layout (absent for `drop`).
    pub new: Option<FieldLoc>,
    /// Why, when the action follows from a type change, a rename or initial data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// How the engine reconciles the field while both versions run, as declared on
    /// the new member (`handover:merge:RULE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergeRule>,
}

/// One step of a conversion; the output starts as zeroes, so zero-filled fields need
/// no step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Copy `len` bytes.
    Bytes {
        /// Source byte offset.
        src: u64,
        /// Destination byte offset.
        dst: u64,
        /// Number of bytes.
        len: u64,
    },
    /// Carry an integer of `src_bits` bits into one of `dst_bits` bits (at least as
    /// wide), extending the sign when `signed`.
    Int {
        /// Source bit offset.
        src_bit: u64,
        /// Source width.
        src_bits: u32,
        /// Destination bit offset.
        dst_bit: u64,
        /// Destination width.
        dst_bits: u32,
        /// Sign-extend rather than zero-extend.
        signed: bool,
    },
}

/// How to turn one old encoded key or value into the new encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversionPlan {
    /// Size of an old key or value in bytes.
    pub old_size: u32,
    /// Size of a new key or value in bytes.
    pub new_size: u32,
    /// Steps, applied in order to an output that starts as [`initial`](Self::initial)
    /// or, without it, as zeroes.
    pub ops: Vec<Op>,
    /// The bytes a new encoding starts from (`new_size` long; hex in JSON): the new
    /// object's initial contents of a global data map, so that fields the old
    /// version did not have start as a fresh load would start them.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::spec::hex"
    )]
    pub initial: Option<Vec<u8>>,
}

impl ConversionPlan {
    /// The plan of an unchanged encoding of `size` bytes.
    #[must_use]
    pub fn identity(size: u32) -> ConversionPlan {
        ConversionPlan {
            old_size: size,
            new_size: size,
            ops: vec![Op::Bytes {
                src: 0,
                dst: 0,
                len: u64::from(size),
            }],
            initial: None,
        }
    }
}

/// The mapping of one key or value layout onto another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutMapping {
    /// Steps the converter follows.
    pub plan: ConversionPlan,
    /// Action per field, in new-layout order, then dropped old fields.
    pub fields: Vec<FieldMapping>,
}

impl LayoutMapping {
    /// Every field of both sides is carried (`copy` or `widen`): the mapping is a
    /// lossless, injective function of the old encoding, as a key mapping must be.
    #[must_use]
    pub fn carries_everything(&self) -> bool {
        self.fields
            .iter()
            .all(|f| matches!(f.action, FieldAction::Copy | FieldAction::Widen))
    }
}

/// Maps the fields of `old` onto `new`. `old_size`/`new_size` are the key or value
/// sizes of the maps (the layouts' own sizes when they agree).
#[must_use]
pub fn map_layout(
    old: &TypeLayout,
    new: &TypeLayout,
    old_size: u32,
    new_size: u32,
    side: Side,
) -> LayoutMapping {
    let mut m = Mapper {
        side,
        ops: Vec::new(),
        fields: Vec::new(),
        dropped: Vec::new(),
    };
    m.walk(
        Field {
            ty: old,
            bit: 0,
            bitfield: 0,
        },
        Field {
            ty: new,
            bit: 0,
            bitfield: 0,
        },
        "",
        0,
    );
    let mut fields = m.fields;
    fields.append(&mut m.dropped);
    LayoutMapping {
        plan: ConversionPlan {
            old_size,
            new_size,
            ops: m.ops,
            initial: None,
        },
        fields,
    }
}

#[derive(Clone, Copy)]
struct Field<'a> {
    ty: &'a TypeLayout,
    bit: u64,
    bitfield: u32,
}

struct Mapper {
    side: Side,
    ops: Vec<Op>,
    fields: Vec<FieldMapping>,
    dropped: Vec<FieldMapping>,
}

/// Integer view of a scalar field: (bit offset, width, signed).
fn scalar(f: Field<'_>) -> Option<(u64, u32, bool)> {
    match f.ty.peel() {
        TypeLayout::Int {
            signed,
            bits,
            bit_offset,
            ..
        } => {
            let width = if f.bitfield > 0 { f.bitfield } else { *bits };
            Some((f.bit.saturating_add(u64::from(*bit_offset)), width, *signed))
        }
        TypeLayout::Enum { size, signed, .. } => {
            let width = if f.bitfield > 0 {
                f.bitfield
            } else {
                size.checked_mul(8)?
            };
            Some((f.bit, width, *signed))
        }
        _ => None,
    }
}

fn width_bits(f: Field<'_>) -> u64 {
    if f.bitfield > 0 {
        return u64::from(f.bitfield);
    }
    f.ty.size().map_or(0, |s| s.saturating_mul(8))
}

fn loc(f: Field<'_>) -> FieldLoc {
    FieldLoc {
        ty: f.ty.describe(),
        bit_offset: f.bit,
        bits: width_bits(f),
    }
}

/// A member as seen for matching: anonymous structs are looked through.
enum Slot<'a> {
    /// A named field, with its member when it is one (not a looked-through one).
    Named(&'a str, Field<'a>, Option<&'a Member>),
    AnonUnion(Field<'a>, &'a [Member]),
}

fn slots<'a>(members: &'a [Member], base: u64, out: &mut Vec<Slot<'a>>, depth: usize) {
    for m in members {
        let f = Field {
            ty: &m.ty,
            bit: base.saturating_add(m.bit_offset),
            bitfield: m.bitfield_size,
        };
        match (&m.name, m.ty.peel()) {
            (Some(name), _) if !name.is_empty() => out.push(Slot::Named(name, f, Some(m))),
            (_, TypeLayout::Struct { members, .. }) if depth < MAX_DEPTH => {
                slots(members, f.bit, out, depth + 1);
            }
            (_, TypeLayout::Union { members, .. }) => out.push(Slot::AnonUnion(f, members)),
            // An unnamed member of another kind (e.g. an unnamed bitfield used as
            // padding) carries no data.
            _ => {}
        }
    }
}

fn shares_a_name(a: &[Member], b: &[Member]) -> bool {
    a.iter().any(|x| {
        x.name.is_some()
            && b.iter()
                .any(|y| y.name == x.name && !x.name.as_deref().unwrap_or("").is_empty())
    })
}

impl Mapper {
    fn row(
        &mut self,
        path: &str,
        action: FieldAction,
        old: Option<Field<'_>>,
        new: Option<Field<'_>>,
        note: Option<String>,
    ) {
        let r = FieldMapping {
            side: self.side,
            path: path.to_owned(),
            action,
            old: old.map(loc),
            new: new.map(loc),
            note,
            merge: None,
        };
        if action == FieldAction::Drop {
            self.dropped.push(r);
        } else {
            self.fields.push(r);
        }
    }

    fn incompatible(&mut self, old: Field<'_>, new: Field<'_>, path: &str, why: String) {
        self.row(
            path,
            FieldAction::ZeroFill,
            None,
            Some(new),
            Some(why.clone()),
        );
        self.row(path, FieldAction::Drop, Some(old), None, Some(why));
    }

    fn bytes_copy(&mut self, old: Field<'_>, new: Field<'_>, len: u64) {
        self.ops.push(Op::Bytes {
            src: old.bit / 8,
            dst: new.bit / 8,
            len,
        });
    }

    fn walk(&mut self, old: Field<'_>, new: Field<'_>, path: &str, depth: usize) {
        if depth >= MAX_DEPTH {
            self.incompatible(old, new, path, "nesting too deep to compare".to_owned());
            return;
        }
        let aligned = old.bit.is_multiple_of(8) && new.bit.is_multiple_of(8);
        let plain = old.bitfield == 0 && new.bitfield == 0;
        if aligned
            && plain
            && same_layout(old.ty, new.ty)
            && let Some(len) = old.ty.size()
        {
            self.bytes_copy(old, new, len);
            self.row(path, FieldAction::Copy, Some(old), Some(new), None);
            return;
        }
        if let (Some(o), Some(n)) = (scalar(old), scalar(new)) {
            self.walk_scalar(old, new, o, n, path);
            return;
        }
        match (old.ty.peel(), new.ty.peel()) {
            (TypeLayout::Struct { members: om, .. }, TypeLayout::Struct { members: nm, .. }) => {
                self.walk_struct(om, nm, old.bit, new.bit, path, depth);
            }
            (
                TypeLayout::Union {
                    size: os,
                    members: om,
                    ..
                },
                TypeLayout::Union {
                    size: ns,
                    members: nm,
                    ..
                },
            ) => {
                let survives = om.iter().all(|o| {
                    nm.iter().any(|n| {
                        n.name == o.name
                            && n.bit_offset == o.bit_offset
                            && n.bitfield_size == o.bitfield_size
                            && same_layout(&o.ty, &n.ty)
                    })
                });
                if ns >= os && survives && aligned {
                    self.bytes_copy(old, new, u64::from(*os));
                    self.row(
                        path,
                        FieldAction::Copy,
                        Some(old),
                        Some(new),
                        Some("union copied as bytes: every old member survives".to_owned()),
                    );
                } else {
                    self.incompatible(
                        old,
                        new,
                        path,
                        "union changed: not every old member survives unchanged".to_owned(),
                    );
                }
            }
            (TypeLayout::Array { elem: oe, len: ol }, TypeLayout::Array { elem: ne, len: nl }) => {
                self.walk_array(old, new, (oe, *ol), (ne, *nl), path, depth);
            }
            (TypeLayout::Float { size: a, .. }, TypeLayout::Float { size: b, .. })
            | (TypeLayout::Ptr { size: a, .. }, TypeLayout::Ptr { size: b, .. })
                if a == b && aligned =>
            {
                self.bytes_copy(old, new, u64::from(*a));
                self.row(path, FieldAction::Copy, Some(old), Some(new), None);
            }
            _ => {
                let why = format!(
                    "type changed from {} to {}",
                    old.ty.describe(),
                    new.ty.describe()
                );
                self.incompatible(old, new, path, why);
            }
        }
    }

    fn walk_scalar(
        &mut self,
        old: Field<'_>,
        new: Field<'_>,
        (src_bit, src_bits, src_signed): (u64, u32, bool),
        (dst_bit, dst_bits, dst_signed): (u64, u32, bool),
        path: &str,
    ) {
        if let (TypeLayout::Enum { values: ov, .. }, TypeLayout::Enum { values: nv, .. }) =
            (old.ty.peel(), new.ty.peel())
            && !enum_values_kept(ov, nv)
        {
            self.incompatible(
                old,
                new,
                path,
                "enum constants changed value or were removed".to_owned(),
            );
            return;
        }
        let action = if src_bits == dst_bits && src_signed == dst_signed {
            FieldAction::Copy
        } else if (src_signed == dst_signed && dst_bits > src_bits)
            || (!src_signed && dst_signed && dst_bits > src_bits)
        {
            FieldAction::Widen
        } else {
            let why = format!(
                "{} {src_bits}-bit to {} {dst_bits}-bit loses values",
                if src_signed { "signed" } else { "unsigned" },
                if dst_signed { "signed" } else { "unsigned" },
            );
            self.incompatible(old, new, path, why);
            return;
        };
        if src_bits > 128 || dst_bits > 128 || src_bits == 0 {
            self.incompatible(old, new, path, "integer wider than 128 bits".to_owned());
            return;
        }
        self.ops.push(Op::Int {
            src_bit,
            src_bits,
            dst_bit,
            dst_bits,
            signed: src_signed,
        });
        self.row(path, action, Some(old), Some(new), None);
    }

    fn walk_struct(
        &mut self,
        old_members: &[Member],
        new_members: &[Member],
        old_base: u64,
        new_base: u64,
        path: &str,
        depth: usize,
    ) {
        let mut olds = Vec::new();
        slots(old_members, old_base, &mut olds, depth);
        let mut news = Vec::new();
        slots(new_members, new_base, &mut news, depth);
        let mut used = vec![false; olds.len()];
        let find_named = |used: &[bool], wanted: &str| {
            olds.iter().enumerate().position(|(i, o)| {
                !used.get(i).copied().unwrap_or(true)
                    && matches!(o, Slot::Named(on, _, _) if *on == wanted)
            })
        };
        // Declared renames claim their old field first, so that a new field taking
        // the old name does not take its value too.
        let mut claims: Vec<Option<usize>> = vec![None; news.len()];
        for (claim, n) in claims.iter_mut().zip(&news) {
            if let Slot::Named(_, _, Some(m)) = n
                && let Some(old) = m.renamed_from.as_deref()
                && let Some(i) = find_named(&used, old)
            {
                *claim = Some(i);
                if let Some(u) = used.get_mut(i) {
                    *u = true;
                }
            }
        }
        // New fields left without a source, for the likely-rename check.
        let mut fresh = Vec::new();
        for (n, claim) in news.iter().zip(&claims) {
            match n {
                Slot::Named(name, nf, member) => {
                    let child = join(path, name);
                    let found = claim.or_else(|| {
                        let i = find_named(&used, name)?;
                        if let Some(u) = used.get_mut(i) {
                            *u = true;
                        }
                        Some(i)
                    });
                    let start = self.fields.len();
                    match found.and_then(|i| olds.get(i)) {
                        Some(Slot::Named(old_name, of, _)) => {
                            self.walk(*of, *nf, &child, depth + 1);
                            if claim.is_some() {
                                let note = format!("renamed from `{}`", join(path, old_name));
                                for r in self.fields.iter_mut().skip(start) {
                                    r.note.get_or_insert_with(|| note.clone());
                                }
                            }
                        }
                        _ => {
                            fresh.push((self.fields.len(), *nf));
                            self.row(&child, FieldAction::ZeroFill, None, Some(*nf), None);
                        }
                    }
                    if let Some(rule) = member.and_then(|m| m.merge) {
                        for r in self.fields.iter_mut().skip(start) {
                            r.merge = Some(rule);
                        }
                    }
                }
                Slot::AnonUnion(nf, nm) => {
                    let found = olds.iter().enumerate().find(|(i, o)| {
                        !used.get(*i).copied().unwrap_or(true)
                            && matches!(o, Slot::AnonUnion(_, om) if shares_a_name(om, nm))
                    });
                    let child = join(path, "<anon union>");
                    if let Some((i, Slot::AnonUnion(of, _))) = found {
                        if let Some(u) = used.get_mut(i) {
                            *u = true;
                        }
                        self.walk(*of, *nf, &child, depth + 1);
                    } else {
                        self.row(&child, FieldAction::ZeroFill, None, Some(*nf), None);
                    }
                }
            }
        }
        for (o, u) in olds.iter().zip(&used) {
            if *u {
                continue;
            }
            match o {
                Slot::Named(name, of, _) => {
                    let old_path = join(path, name);
                    // A dropped field and a new one of the same type at the same
                    // offset are most likely one field renamed: say so on both.
                    let twin = fresh.iter().find(|(_, nf)| {
                        nf.bit.wrapping_sub(new_base) == of.bit.wrapping_sub(old_base)
                            && nf.bitfield == of.bitfield
                            && same_layout(nf.ty, of.ty)
                    });
                    let note = twin.and_then(|(index, _)| {
                        let new_row = self.fields.get_mut(*index)?;
                        new_row.note = Some(format!(
                            "likely renamed from `{old_path}` (same type and offset): declare it with btf_decl_tag(\"handover:renamed_from:{name}\") on the new field to carry its value"
                        ));
                        Some(format!("likely renamed to `{}`", new_row.path))
                    });
                    self.row(&old_path, FieldAction::Drop, Some(*of), None, note);
                }
                Slot::AnonUnion(of, _) => {
                    self.row(
                        &join(path, "<anon union>"),
                        FieldAction::Drop,
                        Some(*of),
                        None,
                        None,
                    );
                }
            }
        }
    }

    fn walk_array(
        &mut self,
        old: Field<'_>,
        new: Field<'_>,
        (old_elem, old_len): (&TypeLayout, u32),
        (new_elem, new_len): (&TypeLayout, u32),
        path: &str,
        depth: usize,
    ) {
        let (Some(oes), Some(nes)) = (old_elem.size(), new_elem.size()) else {
            self.incompatible(old, new, path, "array element of unknown size".to_owned());
            return;
        };
        let common = old_len.min(new_len);
        let range = |a: u32, b: u32| {
            if b == a + 1 {
                format!("{path}[{a}]")
            } else {
                format!("{path}[{a}..{b}]")
            }
        };
        if common > 0 {
            let elem_path = range(0, common);
            let mut sub = Mapper {
                side: self.side,
                ops: Vec::new(),
                fields: Vec::new(),
                dropped: Vec::new(),
            };
            let first_old = Field {
                ty: old_elem,
                bit: old.bit,
                bitfield: 0,
            };
            let first_new = Field {
                ty: new_elem,
                bit: new.bit,
                bitfield: 0,
            };
            sub.walk(first_old, first_new, &elem_path, depth + 1);
            let aligned = old.bit.is_multiple_of(8) && new.bit.is_multiple_of(8);
            let steps = u64::from(common).saturating_mul(sub.ops.len() as u64);
            if !(aligned && same_layout(old_elem, new_elem)) && steps > MAX_ARRAY_STEPS {
                self.incompatible(
                    old,
                    new,
                    path,
                    format!("array of {common} changed elements is too large to convert"),
                );
                return;
            }
            if aligned && same_layout(old_elem, new_elem) {
                // One copy for every common element.
                self.bytes_copy(old, new, oes.saturating_mul(u64::from(common)));
            } else {
                for i in 0..u64::from(common) {
                    let od = i.saturating_mul(oes).saturating_mul(8);
                    let nd = i.saturating_mul(nes).saturating_mul(8);
                    for op in &sub.ops {
                        self.ops.push(match *op {
                            Op::Bytes { src, dst, len } => Op::Bytes {
                                src: src.saturating_add(od / 8),
                                dst: dst.saturating_add(nd / 8),
                                len,
                            },
                            Op::Int {
                                src_bit,
                                src_bits,
                                dst_bit,
                                dst_bits,
                                signed,
                            } => Op::Int {
                                src_bit: src_bit.saturating_add(od),
                                src_bits,
                                dst_bit: dst_bit.saturating_add(nd),
                                dst_bits,
                                signed,
                            },
                        });
                    }
                }
            }
            self.fields.append(&mut sub.fields);
            self.dropped.append(&mut sub.dropped);
        }
        if new_len > common {
            let f = Field {
                ty: new_elem,
                bit: new
                    .bit
                    .saturating_add(u64::from(common).saturating_mul(nes).saturating_mul(8)),
                bitfield: 0,
            };
            self.row(
                &range(common, new_len),
                FieldAction::ZeroFill,
                None,
                Some(f),
                None,
            );
        }
        if old_len > common {
            let f = Field {
                ty: old_elem,
                bit: old
                    .bit
                    .saturating_add(u64::from(common).saturating_mul(oes).saturating_mul(8)),
                bitfield: 0,
            };
            self.row(
                &range(common, old_len),
                FieldAction::Drop,
                Some(f),
                None,
                None,
            );
        }
    }
}
