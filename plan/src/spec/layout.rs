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
    /// A `handover:` declaration tag on a member that cannot be read.
    #[error("BTF type {id}, member `{member}`: tag \"{tag}\": {reason}")]
    BadTag {
        /// The struct or union.
        id: u32,
        /// The tagged member.
        member: String,
        /// The whole tag.
        tag: String,
        /// What is wrong with it.
        reason: String,
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
    Walker { btf, tags: &tags }.walk(id, 0)
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

struct Walker<'a, 'b> {
    btf: &'a Btf<'b>,
    tags: &'a [Tag],
}

fn err(id: TypeId) -> impl Fn(handover_btf::Error) -> LayoutError {
    move |source| LayoutError::Btf { id: id.0, source }
}

fn opt_name(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl Walker<'_, '_> {
    /// `renamed_from` and `merge` of member `index` of struct `id`.
    fn member_tags(
        &self,
        id: TypeId,
        index: usize,
        member: Option<&str>,
    ) -> Result<(Option<String>, Option<MergeRule>), LayoutError> {
        let (mut renamed_from, mut merge) = (None, None);
        for t in self.tags.iter().filter(|t| {
            t.target == id && usize::try_from(t.component).is_ok_and(|c| c == index)
        }) {
            let bad = |reason: String| LayoutError::BadTag {
                id: id.0,
                member: member.unwrap_or("<anon>").to_owned(),
                tag: format!("{TAG_PREFIX}{}", t.text),
                reason,
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

fn walk(&self, id: TypeId, depth: usize) -> Result<TypeLayout, LayoutError> {
    let btf = self.btf;
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
            elem: Box::new(self.walk(a.elem, depth + 1)?),
            len: a.nelems,
        },
        Detail::Struct(c) | Detail::Union(c) => {
            let is_union = matches!(ty.detail(), Detail::Union(_));
            let mut members = Vec::with_capacity(c.members.len());
            for (index, m) in c.members.enumerate() {
                let name = opt_name(m.name().map_err(err(id))?);
                let (renamed_from, merge) = self.member_tags(id, index, name.as_deref())?;
                members.push(Member {
                    name,
                    bit_offset: u64::from(m.bit_offset),
                    bitfield_size: m.bitfield_size,
                    ty: self.walk(m.ty, depth + 1)?,
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
            target: Box::new(self.walk(target, depth + 1)?),
        },
        Detail::Volatile(t) | Detail::Const(t) | Detail::Restrict(t) | Detail::TypeTag(t) => {
            self.walk(t, depth + 1)?
        }
        Detail::Var(v) => self.walk(v.ty, depth + 1)?,
        Detail::Datasec(d) => {
            let mut members = Vec::with_capacity(d.vars.len());
            for v in d.vars {
                let var = btf.type_by_id(v.ty).map_err(err(v.ty))?;
                members.push(Member {
                    name: opt_name(var.name().map_err(err(v.ty))?),
                    bit_offset: u64::from(v.offset) * 8,
                    bitfield_size: 0,
                    ty: self.walk(v.ty, depth + 1)?,
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
