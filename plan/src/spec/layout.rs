//! Builds a [`TypeLayout`] from BTF.

use handover_btf::{Btf, Detail, TypeId};

use crate::spec::model::{EnumValue, MAX_DEPTH, Member, MergeRule, TypeLayout};

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
    /// A `handover:` declaration tag on a member that cannot be read.
    #[error("BTF type {id}, {what}")]
    BadTag {
        /// The struct or union.
        id: u32,
        /// The member, the tag and what is wrong with it.
        what: String,
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
    let tags = member_tags(btf)?;
    let mut budget = handover_btf::MAX_STEPS;
    walk(btf, &tags, id, 0, &mut budget)
}

/// The prefix of every declaration tag handover reads.
pub const TAG_PREFIX: &str = "handover:";

/// One `handover:` declaration tag: the tagged type (a struct, a variable), the
/// member index (-1 for the declaration itself) and the text after the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tag {
    pub target: TypeId,
    pub component: i32,
    pub text: String,
}

/// Every `handover:` declaration tag of `btf` (an object has few types; this is one
/// pass over them).
pub(crate) fn member_tags(btf: &Btf<'_>) -> Result<Vec<Tag>, LayoutError> {
    let mut out = Vec::new();
    for (id, ty) in btf.types() {
        if let Detail::DeclTag(tag) = ty.detail() {
            let name = ty.name().map_err(err(id))?;
            if let Some(text) = name.strip_prefix(TAG_PREFIX) {
                out.push(Tag {
                    target: tag.target,
                    component: tag.component_idx,
                    text: text.to_owned(),
                });
            }
        }
    }
    Ok(out)
}

/// `renamed_from` and `merge` of member `index` of struct `id`, from its tags.
fn tags_of(
    tags: &[Tag],
    id: TypeId,
    index: usize,
    member: Option<&str>,
) -> Result<(Option<String>, Option<MergeRule>), LayoutError> {
    let (mut renamed_from, mut merge) = (None, None);
    for t in tags
        .iter()
        .filter(|t| t.target == id && usize::try_from(t.component).is_ok_and(|c| c == index))
    {
        let bad = |reason: String| LayoutError::BadTag {
            id: id.0,
            what: format!(
                "member `{}`: tag \"{TAG_PREFIX}{}\": {reason}",
                member.unwrap_or("<anon>"),
                t.text
            ),
        };
        if let Some(old) = t.text.strip_prefix("renamed_from:") {
            if old.is_empty() {
                return Err(bad("no old name after `renamed_from:`".to_owned()));
            }
            renamed_from = Some(old.to_owned());
        } else if let Some(rule) = t.text.strip_prefix("merge:") {
            merge = Some(rule.parse().map_err(bad)?);
        } else {
            return Err(bad(
                "unknown tag; accepted on a member: handover:renamed_from:OLDNAME, handover:merge:sum|max|new".to_owned(),
            ));
        }
    }
    Ok((renamed_from, merge))
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
    tags: &[Tag],
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
            elem: Box::new(walk(btf, tags, a.elem, depth + 1, budget)?),
            len: a.nelems,
        },
        Detail::Struct(c) | Detail::Union(c) => {
            let is_union = matches!(ty.detail(), Detail::Union(_));
            let mut members = Vec::with_capacity(c.members.len());
            for (index, m) in c.members.enumerate() {
                let name = opt_name(m.name().map_err(err(id))?);
                let (renamed_from, merge) = tags_of(tags, id, index, name.as_deref())?;
                members.push(Member {
                    name,
                    bit_offset: u64::from(m.bit_offset),
                    bitfield_size: m.bitfield_size,
                    ty: walk(btf, tags, m.ty, depth + 1, budget)?,
                    renamed_from,
                    merge,
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
            target: Box::new(walk(btf, tags, target, depth + 1, budget)?),
        },
        Detail::Volatile(t) | Detail::Const(t) | Detail::Restrict(t) | Detail::TypeTag(t) => {
            walk(btf, tags, t, depth + 1, budget)?
        }
        Detail::Var(v) => walk(btf, tags, v.ty, depth + 1, budget)?,
        Detail::Datasec(d) => {
            let mut members = Vec::with_capacity(d.vars.len());
            for v in d.vars {
                let var = btf.type_by_id(v.ty).map_err(err(v.ty))?;
                members.push(Member {
                    name: opt_name(var.name().map_err(err(v.ty))?),
                    bit_offset: u64::from(v.offset) * 8,
                    bitfield_size: 0,
                    ty: walk(btf, tags, v.ty, depth + 1, budget)?,
                    renamed_from: None,
                    merge: None,
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
#[expect(clippy::indexing_slicing, reason = "tests index their own results")]
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

    /// Nesting stops at the BTF parser's depth limit (the kernel's), and every leaf
    /// below it is reached.
    #[test]
    fn nesting_stops_at_the_parsers_depth_limit() {
        for n in 1..(handover_btf::MAX_DEPTH + 4) {
            let (blob, top) = nested(n);
            let btf = Btf::parse(&blob).unwrap();
            match layout_of(&btf, top) {
                Ok(layout) => {
                    assert!(n < handover_btf::MAX_DEPTH, "{n} nested structs");
                    let leaves = layout.leaves().unwrap();
                    assert_eq!(leaves.len(), 1);
                    assert_eq!(leaves[0].path, vec!["m"; n].join("."));
                }
                Err(e) => {
                    assert!(n >= handover_btf::MAX_DEPTH, "{n} nested structs: {e}");
                    assert!(matches!(e, super::LayoutError::TooDeep { .. }), "{e}");
                }
            }
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
