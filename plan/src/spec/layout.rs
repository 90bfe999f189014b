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
    walk(btf, id, 0)
}

fn err(id: TypeId) -> impl Fn(handover_btf::Error) -> LayoutError {
    move |source| LayoutError::Btf { id: id.0, source }
}

fn opt_name(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn walk(btf: &Btf<'_>, id: TypeId, depth: usize) -> Result<TypeLayout, LayoutError> {
    if depth > MAX_DEPTH {
        return Err(LayoutError::TooDeep { id: id.0 });
    }
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
            elem: Box::new(walk(btf, a.elem, depth + 1)?),
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
                    ty: walk(btf, m.ty, depth + 1)?,
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
            target: Box::new(walk(btf, target, depth + 1)?),
        },
        Detail::Volatile(t) | Detail::Const(t) | Detail::Restrict(t) | Detail::TypeTag(t) => {
            walk(btf, t, depth + 1)?
        }
        Detail::Var(v) => walk(btf, v.ty, depth + 1)?,
        Detail::Datasec(d) => {
            let mut members = Vec::with_capacity(d.vars.len());
            for v in d.vars {
                let var = btf.type_by_id(v.ty).map_err(err(v.ty))?;
                members.push(Member {
                    name: opt_name(var.name().map_err(err(v.ty))?),
                    bit_offset: u64::from(v.offset) * 8,
                    bitfield_size: 0,
                    ty: walk(btf, v.ty, depth + 1)?,
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
