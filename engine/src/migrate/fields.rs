//! The fields of a value as the reconcile merges them, with their merge rules.
//!
//! A value is cut into leaves: every integer, float, pointer or enum member, and every
//! element of an array of at most [`MAX_ARRAY_LEAVES`] elements; unions and larger
//! arrays are one opaque leaf each. Bitfields sharing bytes are merged into one leaf
//! covering those bytes (a byte is the smallest unit written). Padding belongs to no
//! leaf and is never written.
//!
//! A leaf's rule comes from the `handover:merge:` declaration tag of its member in the
//! new layout (a tag on a struct or array member applies to every leaf under it),
//! unless a rule given by field path (`stats.bytes`, `hits[2]`; the daemon's options)
//! names it or a field above it: the given rule wins. Every rule, tagged or given,
//! must fit its leaf. `sum` and `max` apply to integer leaves only;
//! `sum` further needs a 4- or 8-byte integer aligned to its size, since it is applied
//! by an atomic add in the kernel.

use std::collections::BTreeMap;

use super::error::MigrateError;
use super::plan::{MergeRule, TypeLayout};

/// Arrays with more elements than this are one opaque leaf.
pub const MAX_ARRAY_LEAVES: u32 = 1024;

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
    /// Byte offset of the value's `struct bpf_spin_lock`, if it has one: the lock is
    /// no leaf (never compared, merged or written), and a patch in the kernel takes it.
    pub spin_lock: Option<usize>,
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
            spin_lock: None,
        }
    }

    /// The leaves of `layout` (the new value layout) of `size` bytes, with the rules
    /// its members' tags declare, overridden by `rules` by field path.
    ///
    /// # Errors
    /// A rule names no field of the layout, or `sum`/`max` (tagged or given) names a
    /// field that is not an integer of a width the rule can take.
    pub fn new(
        map: &str,
        layout: &TypeLayout,
        size: usize,
        rules: &BTreeMap<String, MergeRule>,
    ) -> Result<Self, MigrateError> {
        let mut raw = Vec::new();
        collect(layout, 0, "", MergeRule::New, &mut raw, 0);
        let spin_lock = spin_lock_at(layout, 0, 0).and_then(|bit| usize::try_from(bit / 8).ok());
        // The lock word belongs to the kernel: user space reads it as zero.
        raw.retain(|l| {
            l.len > 0
                && l.offset + l.len <= size
                && spin_lock
                    .is_none_or(|at| l.offset + l.len <= at || l.offset >= at + SPIN_LOCK_SIZE)
        });
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
        let mut given = vec![false; leaves.len()];
        for (path, rule) in rules {
            let mut matched = false;
            for (leaf, given) in leaves.iter_mut().zip(&mut given) {
                if under(&leaf.path, path) {
                    matched = true;
                    check_rule(leaf, *rule).map_err(|why| {
                        invalid(format!("merge rule {} on {path:?}: {why}", rule.as_str()))
                    })?;
                    leaf.rule = *rule;
                    *given = true;
                }
            }
            if !matched {
                return Err(invalid(format!(
                    "merge rule {} names {path:?}, which is no field of the value",
                    rule.as_str()
                )));
            }
        }
        for (leaf, _) in leaves.iter().zip(&given).filter(|(_, g)| !**g) {
            check_rule(leaf, leaf.rule).map_err(|why| {
                invalid(format!(
                    "the tag handover:merge:{} on {:?} does not fit: {why}",
                    leaf.rule.as_str(),
                    leaf.path
                ))
            })?;
        }
        Ok(Self {
            leaves,
            size,
            spin_lock,
        })
    }

    /// Whether any leaf has the `sum` rule.
    #[must_use]
    pub fn has_sum(&self) -> bool {
        self.leaves.iter().any(|l| l.rule == MergeRule::Sum)
    }
}

/// Bytes of `struct bpf_spin_lock`.
const SPIN_LOCK_SIZE: usize = 4;

/// The bit offset of the `struct bpf_spin_lock` in `t` (the kernel allows one, at the
/// top level or in a nested struct, never in an array or a union).
fn spin_lock_at(t: &TypeLayout, bit: u64, depth: usize) -> Option<u64> {
    if depth > 32 {
        return None;
    }
    match t.peel() {
        TypeLayout::Struct { name: Some(n), .. } if n == "bpf_spin_lock" => Some(bit),
        TypeLayout::Struct { members, .. } => members
            .iter()
            .find_map(|m| spin_lock_at(&m.ty, bit.saturating_add(m.bit_offset), depth + 1)),
        _ => None,
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

/// Where a leaf is, and the rule it inherits from the tags above it.
#[derive(Clone, Copy)]
struct At<'p> {
    path: &'p str,
    bit: u64,
    rule: MergeRule,
}

fn opaque(at: At<'_>, t: &TypeLayout, out: &mut Vec<Leaf>, int: Option<bool>) {
    let len = t.size().unwrap_or(0);
    out.push(Leaf {
        path: at.path.to_owned(),
        offset: usize::try_from(at.bit / 8).unwrap_or(usize::MAX),
        len: usize::try_from(len).unwrap_or(0),
        int,
        rule: at.rule,
    });
}

fn collect(
    t: &TypeLayout,
    bit: u64,
    path: &str,
    rule: MergeRule,
    out: &mut Vec<Leaf>,
    depth: usize,
) {
    let here = At { path, bit, rule };
    if depth > 32 {
        opaque(here, t, out, None);
        return;
    }
    match t.peel() {
        TypeLayout::Struct { members, .. } => {
            for m in members {
                let at = bit.saturating_add(m.bit_offset);
                let child = join(path, m.name.as_deref().unwrap_or(""));
                let rule = m.merge.unwrap_or(rule);
                if m.bitfield_size > 0 {
                    let first = at / 8;
                    let end = (at + u64::from(m.bitfield_size)).div_ceil(8);
                    out.push(Leaf {
                        path: child,
                        offset: usize::try_from(first).unwrap_or(usize::MAX),
                        len: usize::try_from(end - first).unwrap_or(0),
                        int: None,
                        rule,
                    });
                } else {
                    collect(&m.ty, at, &child, rule, out, depth + 1);
                }
            }
        }
        TypeLayout::Array { elem, len } if *len <= MAX_ARRAY_LEAVES => {
            let es = elem.size().unwrap_or(0).saturating_mul(8);
            for i in 0..u64::from(*len) {
                let child = format!("{path}[{i}]");
                collect(elem, bit + i * es, &child, rule, out, depth + 1);
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
            opaque(here, t.peel(), out, whole.then_some(*signed));
        }
        other => opaque(here, other, out, None),
    }
}
