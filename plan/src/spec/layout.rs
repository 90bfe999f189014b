//! Builds a [`TypeLayout`] from BTF.

use handover_btf::{Btf, Detail, TypeId};

use crate::spec::model::{EnumValue, MAX_DEPTH, Member, TypeLayout};

/// A BTF type that cannot be turned into a layout.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The BTF itself is malformed where the layout needed it.
    #[error("reading BTF type {id}")]
    Btf {
        /// Type being read.
        id: u32,
        /// What the parser found.
        #[source]
        source: handover_btf::Error,
    },
    /// Types nest deeper than the comparison goes (or form a cycle without a pointer).
    #[error("BTF type {id} nests deeper than {MAX_DEPTH} levels (a cycle?)")]
    TooDeep {
        /// Type at which the limit was hit.
        id: u32,
    },
    /// The layout would have more nodes than [`handover_btf::MAX_STEPS`].
    #[error("BTF type {id} expands to more than {} types", handover_btf::MAX_STEPS)]
    TooLarge {
        /// Type at which the budget ran out.
        id: u32,
    },
    /// A kind that has no data layout (a function).
    #[error("BTF type {id} is a {kind}, which has no data layout")]
    NotData {
        /// The type.
        id: u32,
        /// Its kind.
        kind: String,
    },
}

/// The resolved layout of BTF type `id`: typedefs kept by name, `const`,
/// `volatile`, `restrict` and type tags dropped, pointers not followed, a data
/// section turned into a struct of its variables.
///
/// # Errors
/// [`LayoutError`] when the BTF is malformed, nests too deep, or names a function.
pub fn layout_of(btf: &Btf<'_>, id: TypeId) -> Result<TypeLayout, LayoutError> {
    let mut budget = handover_btf::MAX_STEPS;
    walk(btf, id, 0, &mut budget)
}

fn err(id: TypeId) -> impl Fn(handover_btf::Error) -> LayoutError {
    move |source| LayoutError::Btf { id: id.0, source }
}

fn opt_name(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// Builds the layout of `id` at nesting `depth`; `budget` is the number of types the
/// whole walk may still visit, so a type that fans out exponentially (a struct of two
/// arrays of structs of two arrays ...) ends in an error instead of filling memory.
fn walk(
    btf: &Btf<'_>,
    id: TypeId,
    depth: usize,
    budget: &mut usize,
) -> Result<TypeLayout, LayoutError> {
    if depth >= MAX_DEPTH {
        return Err(LayoutError::TooDeep { id: id.0 });
    }
    *budget = budget
        .checked_sub(1)
        .ok_or(LayoutError::TooLarge { id: id.0 })?;
    if id.0 == 0 {
        return Ok(TypeLayout::Void);
    }
    let ty = btf.type_by_id(id).map_err(err(id))?;
    let name = ty.name().map_err(err(id))?;
    Ok(match ty.detail() {
        Detail::Int(i) => TypeLayout::Int {
            name: name.to_owned(),
            size: i.size,
            signed: i.encoding.is_signed(),
            bits: u32::from(i.bits),
            bit_offset: u32::from(i.offset),
        },
        Detail::Float { size } => TypeLayout::Float {
            name: name.to_owned(),
            size,
        },
        Detail::Ptr(target) => TypeLayout::Ptr {
            size: btf.pointer_size(),
            target: pointee_name(btf, target),
        },
        Detail::Array(a) => TypeLayout::Array {
            elem: Box::new(walk(btf, a.elem, depth + 1, budget)?),
            len: a.nelems,
        },
        Detail::Struct(c) | Detail::Union(c) => {
            let is_union = matches!(ty.detail(), Detail::Union(_));
            let mut members = Vec::with_capacity(c.members.len());
            for m in c.members {
                members.push(Member {
                    name: opt_name(m.name().map_err(err(id))?),
                    bit_offset: u64::from(m.bit_offset),
                    bitfield_size: m.bitfield_size,
                    ty: walk(btf, m.ty, depth + 1, budget)?,
                });
            }
            if is_union {
                TypeLayout::Union {
                    name: opt_name(name),
                    size: c.size,
                    members,
                }
            } else {
                TypeLayout::Struct {
                    name: opt_name(name),
                    size: c.size,
                    members,
                }
            }
        }
        Detail::Enum(e) | Detail::Enum64(e) => TypeLayout::Enum {
            name: opt_name(name),
            size: e.size,
            signed: e.signed,
            values: e
                .values
                .map(|v| {
                    Ok(EnumValue {
                        name: v.name().map_err(err(id))?.to_owned(),
                        value: v.raw(),
                    })
                })
                .collect::<Result<_, LayoutError>>()?,
        },
        Detail::Fwd { is_union } => TypeLayout::Fwd {
            name: name.to_owned(),
            union: is_union,
        },
        Detail::Typedef(target) => TypeLayout::Typedef {
            name: name.to_owned(),
            target: Box::new(walk(btf, target, depth + 1, budget)?),
        },
        Detail::Volatile(t) | Detail::Const(t) | Detail::Restrict(t) | Detail::TypeTag(t) => {
            walk(btf, t, depth + 1, budget)?
        }
        Detail::Var(v) => walk(btf, v.ty, depth + 1, budget)?,
        Detail::Datasec(d) => {
            let mut members = Vec::with_capacity(d.vars.len());
            for v in d.vars {
                let var = btf.type_by_id(v.ty).map_err(err(v.ty))?;
                members.push(Member {
                    name: opt_name(var.name().map_err(err(v.ty))?),
                    bit_offset: u64::from(v.offset) * 8,
                    bitfield_size: 0,
                    ty: walk(btf, v.ty, depth + 1, budget)?,
                });
            }
            TypeLayout::Struct {
                name: opt_name(name),
                size: d.size,
                members,
            }
        }
        _ => {
            return Err(LayoutError::NotData {
                id: id.0,
                kind: format!("{:?}", ty.kind()),
            });
        }
    })
}

/// Name of a pointer's target, looking through modifiers, for display only.
fn pointee_name(btf: &Btf<'_>, mut id: TypeId) -> Option<String> {
    for _ in 0..MAX_DEPTH {
        let ty = btf.type_by_id(id).ok()?;
        match ty.detail() {
            Detail::Volatile(t) | Detail::Const(t) | Detail::Restrict(t) | Detail::TypeTag(t) => {
                id = t;
            }
            d => {
                let name = ty.name().ok()?;
                let prefix = match d {
                    Detail::Struct(_) => "struct ",
                    Detail::Union(_) => "union ",
                    Detail::Enum(_) | Detail::Enum64(_) => "enum ",
                    _ => "",
                };
                return opt_name(name).map(|n| format!("{prefix}{n}"));
            }
        }
    }
    None
}

#[cfg(test)]
mod depth_tests {
    use handover_btf::{Btf, Builder, Endian, Kind, TypeId};

    use super::layout_of;

    /// `int` wrapped in `n` structs, each holding the previous one as its only member.
    fn nested(n: usize) -> (Vec<u8>, TypeId) {
        let mut b = Builder::new(Endian::Little);
        let name = b.string("int");
        let mut top = b.add(name, Kind::Int, false, 0, 4, &[(1 << 24) | 32]);
        for i in 0..n {
            let s = b.string(&format!("s{i}"));
            let m = b.string("m");
            top = b.add(s, Kind::Struct, false, 1, 4, &[m.0, top.0, 0]);
        }
        (b.finish(), top)
    }

    /// The layout builder and the BTF parser's own layout walk refuse the same depth.
    #[test]
    fn the_builder_and_the_parser_share_one_depth_limit() {
        for n in 1..(handover_btf::MAX_DEPTH + 4) {
            let (blob, top) = nested(n);
            let btf = Btf::parse(&blob).unwrap();
            assert_eq!(
                layout_of(&btf, top).is_ok(),
                btf.layout(top).is_ok(),
                "{n} nested structs"
            );
        }
    }

    /// A type that fans out exponentially stops at the step budget.
    #[test]
    fn exponential_fan_out_is_refused() {
        let mut b = Builder::new(Endian::Little);
        let name = b.string("int");
        let mut top = b.add(name, Kind::Int, false, 0, 4, &[(1 << 24) | 32]);
        let mut size = 4u32;
        for i in 0..24 {
            let s = b.string(&format!("s{i}"));
            let (x, y) = (b.string("x"), b.string("y"));
            size *= 2;
            top = b.add(
                s,
                Kind::Struct,
                false,
                2,
                size,
                &[x.0, top.0, 0, y.0, top.0, size * 4],
            );
        }
        let blob = b.finish();
        let btf = Btf::parse(&blob).unwrap();
        assert!(matches!(
            layout_of(&btf, top),
            Err(super::LayoutError::TooLarge { .. })
        ));
    }
}
