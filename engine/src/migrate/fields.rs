//! The fields of a value as the reconcile merges them, with their merge rules.
//!
//! A value is cut into leaves: every integer, float, pointer or enum member, and every
//! element of an array of at most [`MAX_ARRAY_LEAVES`] elements; unions and larger
//! arrays are one opaque leaf each. Bitfields sharing bytes are merged into one leaf
//! covering those bytes (a byte is the smallest unit written). Padding belongs to no
//! leaf and is never written.
//!
//! Rules are named by field path (`stats.bytes`, `hits[2]`); a rule on a struct or
//! array applies to every leaf under it. `sum` and `max` apply to integer leaves only;
//! `sum` further needs a 4- or 8-byte integer aligned to its size, since it is applied
//! by an atomic add in the kernel.

use std::collections::BTreeMap;

use super::error::MigrateError;
use super::plan::TypeLayout;

/// Arrays with more elements than this are one opaque leaf.
pub const MAX_ARRAY_LEAVES: u32 = 1024;

/// What the reconcile does with a field that both the old and the new programs changed
/// since the last delta pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum MergeRule {
    /// The new programs' value stays (the default).
    #[default]
    New,
    /// The old programs' change is added to the new value (counters): the result is
    /// new + (old - base).
    Sum,
    /// The larger of the two values (timestamps, high-water marks).
    Max,
}

impl MergeRule {
    /// Parses `new`, `sum` or `max` (the suffix of a `handover:merge:` tag).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "new" => Some(Self::New),
            "sum" => Some(Self::Sum),
            "max" => Some(Self::Max),
            _ => None,
        }
    }

    /// The rule's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Sum => "sum",
            Self::Max => "max",
        }
    }
}

/// One leaf of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// Dotted path of the field.
    pub path: String,
    /// Byte offset in one value (one CPU's slot for per-CPU maps).
    pub offset: usize,
    /// Bytes.
    pub len: usize,
    /// For an integer leaf, whether it is signed.
    pub int: Option<bool>,
    /// Its merge rule.
    pub rule: MergeRule,
}

/// The leaves of a value layout; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueFields {
    /// Leaves by offset.
    pub leaves: Vec<Leaf>,
    /// Bytes of one value (one CPU's).
    pub size: usize,
}

impl ValueFields {
    /// A value with no known layout: one opaque leaf, merged by the `new` rule.
    #[must_use]
    pub fn opaque(size: usize) -> Self {
        Self {
            leaves: vec![Leaf {
                path: String::new(),
                offset: 0,
                len: size,
                int: None,
                rule: MergeRule::New,
            }],
            size,
        }
    }

    /// The leaves of `layout` (the new value layout) of `size` bytes, with `rules` by
    /// field path.
    ///
    /// # Errors
    /// A rule names no field of the layout, or `sum`/`max` names a field that is not
    /// an integer of a width the rule can take.
    pub fn new(
        map: &str,
        layout: &TypeLayout,
        size: usize,
        rules: &BTreeMap<String, MergeRule>,
    ) -> Result<Self, MigrateError> {
        let mut raw = Vec::new();
        collect(layout, 0, "", &mut raw, 0);
        raw.retain(|l| l.len > 0 && l.offset + l.len <= size);
        raw.sort_by_key(|l| (l.offset, l.len));
        // Merge leaves that share bytes (bitfields).
        let mut leaves: Vec<Leaf> = Vec::new();
        for l in raw {
            match leaves.last_mut() {
                Some(last) if l.offset < last.offset + last.len => {
                    let end = (last.offset + last.len).max(l.offset + l.len);
                    last.len = end - last.offset;
                    last.int = None;
                }
                _ => leaves.push(l),
            }
        }
        let invalid = |reason: String| MigrateError::Invalid {
            map: map.to_owned(),
            reason,
        };
        for (path, rule) in rules {
            let mut matched = false;
            for leaf in &mut leaves {
                if under(&leaf.path, path) {
                    matched = true;
                    check_rule(leaf, *rule).map_err(|why| {
                        invalid(format!("merge rule {} on {path:?}: {why}", rule.as_str()))
                    })?;
                    leaf.rule = *rule;
                }
            }
            if !matched {
                return Err(invalid(format!(
                    "merge rule {} names {path:?}, which is no field of the value",
                    rule.as_str()
                )));
            }
        }
        Ok(Self { leaves, size })
    }

    /// Whether any leaf has the `sum` rule.
    #[must_use]
    pub fn has_sum(&self) -> bool {
        self.leaves.iter().any(|l| l.rule == MergeRule::Sum)
    }
}

fn under(leaf: &str, rule: &str) -> bool {
    rule.is_empty()
        || leaf == rule
        || leaf
            .strip_prefix(rule)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

fn check_rule(leaf: &Leaf, rule: MergeRule) -> Result<(), String> {
    match rule {
        MergeRule::New => Ok(()),
        _ if leaf.int.is_none() => Err(format!("field {:?} is not an integer", leaf.path)),
        MergeRule::Max if leaf.len <= 8 => Ok(()),
        MergeRule::Sum if matches!(leaf.len, 4 | 8) && leaf.offset.is_multiple_of(leaf.len) => {
            Ok(())
        }
        MergeRule::Sum => Err(format!(
            "field {:?} is {} bytes at offset {}: an in-kernel atomic add needs a 4- or 8-byte integer aligned to its size",
            leaf.path, leaf.len, leaf.offset
        )),
        MergeRule::Max => Err(format!("field {:?} is wider than 8 bytes", leaf.path)),
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else if name.is_empty() {
        path.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn opaque(path: &str, bit: u64, t: &TypeLayout, out: &mut Vec<Leaf>, int: Option<bool>) {
    let len = t.size().unwrap_or(0);
    out.push(Leaf {
        path: path.to_owned(),
        offset: usize::try_from(bit / 8).unwrap_or(usize::MAX),
        len: usize::try_from(len).unwrap_or(0),
        int,
        rule: MergeRule::New,
    });
}

fn collect(t: &TypeLayout, bit: u64, path: &str, out: &mut Vec<Leaf>, depth: usize) {
    if depth > 32 {
        opaque(path, bit, t, out, None);
        return;
    }
    match t.peel() {
        TypeLayout::Struct { members, .. } => {
            for m in members {
                let at = bit.saturating_add(m.bit_offset);
                let child = join(path, m.name.as_deref().unwrap_or(""));
                if m.bitfield_size > 0 {
                    let first = at / 8;
                    let end = (at + u64::from(m.bitfield_size)).div_ceil(8);
                    out.push(Leaf {
                        path: child,
                        offset: usize::try_from(first).unwrap_or(usize::MAX),
                        len: usize::try_from(end - first).unwrap_or(0),
                        int: None,
                        rule: MergeRule::New,
                    });
                } else {
                    collect(&m.ty, at, &child, out, depth + 1);
                }
            }
        }
        TypeLayout::Array { elem, len } if *len <= MAX_ARRAY_LEAVES => {
            let es = elem.size().unwrap_or(0).saturating_mul(8);
            for i in 0..u64::from(*len) {
                collect(elem, bit + i * es, &format!("{path}[{i}]"), out, depth + 1);
            }
        }
        TypeLayout::Int {
            signed,
            bits,
            size,
            bit_offset,
            ..
        } => {
            let whole = *bit_offset == 0 && *bits == size.saturating_mul(8);
            opaque(path, bit, t.peel(), out, whole.then_some(*signed));
        }
        other => opaque(path, bit, other, out, None),
    }
}
