//! The flat view of a layout: every leaf field with its path and its bits, derived
//! from the tree [`layout_of`](crate::layout_of) builds (the one walk over BTF).

use crate::spec::model::{MAX_DEPTH, TypeLayout};

/// Most leaves [`TypeLayout::leaves`] returns.
pub const MAX_LEAVES: usize = 1 << 16;

/// One leaf field of a layout: a scalar, pointer or forward-declared member, with
/// nested structs, unions and array elements opened up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf<'a> {
    /// Member names joined with `.`, array elements as `[i]`; members of anonymous
    /// structs and unions appear as members of the enclosing aggregate, as in C. Empty
    /// for a layout that is itself a leaf.
    pub path: String,
    /// Offset from the start of the layout, in bits.
    pub bit_offset: u64,
    /// Width in bits (the bitfield width for bitfields, 0 for a type without a size).
    pub bit_size: u64,
    /// The leaf's type.
    pub ty: &'a TypeLayout,
}

/// A layout too large to flatten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeavesError {
    /// More than [`MAX_LEAVES`] leaves, or more than [`handover_btf::MAX_STEPS`]
    /// members and array elements to visit.
    #[error(
        "the layout has more than {MAX_LEAVES} leaf fields or {} members and elements",
        handover_btf::MAX_STEPS
    )]
    TooLarge,
    /// Nesting deeper than [`handover_btf::MAX_DEPTH`] (a layout read from a
    /// snapshot rather than built from BTF).
    #[error("the layout nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

impl TypeLayout {
    /// Every leaf field of the layout, in declaration order (array elements in index
    /// order); unnamed members that are not aggregates (padding bitfields) are left out.
    ///
    /// # Errors
    /// [`LeavesError`] past [`MAX_LEAVES`] leaves or the step and depth limits of the
    /// layout builder.
    pub fn leaves(&self) -> Result<Vec<Leaf<'_>>, LeavesError> {
        let mut flat = Flatten {
            leaves: Vec::new(),
            path: String::new(),
            steps: handover_btf::MAX_STEPS,
        };
        flat.value(self, 0, 0, 0)?;
        Ok(flat.leaves)
    }
}

struct Flatten<'a> {
    leaves: Vec<Leaf<'a>>,
    path: String,
    steps: usize,
}

impl<'a> Flatten<'a> {
    fn step(&mut self, depth: usize) -> Result<(), LeavesError> {
        if depth >= MAX_DEPTH {
            return Err(LeavesError::TooDeep);
        }
        self.steps = self.steps.checked_sub(1).ok_or(LeavesError::TooLarge)?;
        Ok(())
    }

    /// Adds the leaves of a value of type `ty` at bit `offset`; `bitfield` is the
    /// width of the member holding it when that is a bitfield.
    fn value(
        &mut self,
        ty: &'a TypeLayout,
        offset: u64,
        bitfield: u32,
        depth: usize,
    ) -> Result<(), LeavesError> {
        self.step(depth)?;
        match ty.peel() {
            TypeLayout::Struct { members, .. } | TypeLayout::Union { members, .. } => {
                for m in members {
                    let name = m.name.as_deref().unwrap_or("");
                    let aggregate = matches!(
                        m.ty.peel(),
                        TypeLayout::Struct { .. }
                            | TypeLayout::Union { .. }
                            | TypeLayout::Array { .. }
                    );
                    if name.is_empty() && !aggregate {
                        continue;
                    }
                    let len = self.path.len();
                    if !name.is_empty() {
                        if !self.path.is_empty() {
                            self.path.push('.');
                        }
                        self.path.push_str(name);
                    }
                    let at = offset.saturating_add(m.bit_offset);
                    self.value(&m.ty, at, m.bitfield_size, depth + 1)?;
                    self.path.truncate(len);
                }
            }
            TypeLayout::Array { elem, len } => {
                let elem_bits = elem.size().unwrap_or(0).saturating_mul(8);
                let path_len = self.path.len();
                for i in 0..*len {
                    use std::fmt::Write as _;
                    let _ = write!(self.path, "[{i}]");
                    let at = offset.saturating_add(u64::from(i).saturating_mul(elem_bits));
                    self.value(elem, at, 0, depth + 1)?;
                    self.path.truncate(path_len);
                }
            }
            leaf => {
                let (bit_offset, bit_size) = match (bitfield, leaf) {
                    (
                        0,
                        TypeLayout::Int {
                            size,
                            bits,
                            bit_offset,
                            ..
                        },
                    ) if u64::from(*bits) != u64::from(*size) * 8 || *bit_offset != 0 => (
                        offset.saturating_add(u64::from(*bit_offset)),
                        u64::from(*bits),
                    ),
                    (0, _) => (offset, leaf.size().unwrap_or(0).saturating_mul(8)),
                    (bits, _) => (offset, u64::from(bits)),
                };
                if self.leaves.len() >= MAX_LEAVES {
                    return Err(LeavesError::TooLarge);
                }
                self.leaves.push(Leaf {
                    path: self.path.clone(),
                    bit_offset,
                    bit_size,
                    ty,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "tests index their own results")]
mod tests {
    use handover_btf::{Btf, Builder, Endian, Kind, StrOffset, TypeId};

    use super::LeavesError;
    use crate::{LayoutError, layout_of};

    /// One record of every kind, as handover-btf's tests build it (and keep current).
    const EVERY_KIND: &[u8] = include_bytes!("../../../fuzz/seeds/btf_parse/every_kind_le.btf");

    fn flat(btf: &Btf<'_>, id: u32) -> Vec<(String, u64, u64)> {
        let layout = layout_of(btf, TypeId(id)).unwrap();
        let leaves = layout.leaves().unwrap();
        leaves
            .into_iter()
            .map(|l| (l.path, l.bit_offset, l.bit_size))
            .collect()
    }

    #[test]
    fn leaves_open_nested_aggregates_arrays_and_bitfields() {
        let btf = Btf::parse(EVERY_KIND).unwrap();
        let s = |p: &str| p.to_owned();
        // struct outer { t n; union { int i; char c[4]; }; const volatile int x; },
        // t a typedef of struct node { struct node *next; int bits:3; _Bool flag:1; }.
        assert_eq!(
            flat(&btf, 28),
            [
                (s("n.next"), 0, 64),
                (s("n.bits"), 64, 3),
                (s("n.flag"), 67, 1),
                (s("i"), 128, 32),
                (s("c[0]"), 128, 8),
                (s("c[1]"), 136, 8),
                (s("c[2]"), 144, 8),
                (s("c[3]"), 152, 8),
                (s("x"), 160, 32),
            ]
        );
        // struct pair { struct node nodes[2]; }
        let pair = flat(&btf, 30);
        assert_eq!(pair.len(), 6);
        assert_eq!(pair[5], (s("nodes[1].flag"), 128 + 67, 1));
        // A scalar is its own single leaf.
        assert_eq!(flat(&btf, 1), [(s(""), 0, 32)]);
    }

    #[test]
    fn cycles_without_a_pointer_are_refused_and_pointers_are_leaves() {
        let mut b = Builder::new(Endian::Little);
        let (a, next, tb, c) = (
            b.string("a"),
            b.string("next"),
            b.string("b"),
            b.string("c"),
        );
        b.add(a, Kind::Struct, false, 1, 8, &[next.0, 2, 0]); // 1: struct a { struct a *next; }
        b.add(StrOffset(0), Kind::Ptr, false, 0, 1, &[]); // 2
        b.add(tb, Kind::Typedef, false, 0, 3, &[]); // 3: typedef b b;
        b.add(c, Kind::Struct, false, 1, 8, &[c.0, 4, 0]); // 4: struct c { struct c c; }
        let blob = b.finish();
        let btf = Btf::parse(&blob).unwrap();
        assert_eq!(flat(&btf, 1), [("next".to_owned(), 0, 64)]);
        for id in [3, 4] {
            assert!(
                matches!(
                    layout_of(&btf, TypeId(id)),
                    Err(LayoutError::TooDeep { .. })
                ),
                "type {id}"
            );
        }
    }

    #[test]
    fn a_huge_array_is_one_node_but_too_many_leaves() {
        let mut b = Builder::new(Endian::Little);
        let (int, f, g) = (b.string("int"), b.string("f"), b.string("g"));
        b.add(int, Kind::Int, false, 0, 4, &[(1 << 24) | 32]); // 1
        b.add(StrOffset(0), Kind::Array, false, 0, 0, &[1, 1, 1 << 20]); // 2: int[1 << 20]
        b.add(g, Kind::Struct, false, 1, 4 << 20, &[f.0, 2, 0]); // 3
        b.add(StrOffset(0), Kind::Array, false, 0, 0, &[1, 1, u32::MAX]); // 4: int[u32::MAX]
        b.add(g, Kind::Struct, false, 1, 0, &[f.0, 4, 0]); // 5
        let blob = b.finish();
        let btf = Btf::parse(&blob).unwrap();
        for id in [3, 5] {
            let layout = layout_of(&btf, TypeId(id)).unwrap();
            assert_eq!(layout.leaves(), Err(LeavesError::TooLarge), "type {id}");
        }
    }
}
