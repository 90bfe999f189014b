//! Queries that follow type references: resolve, size, alignment.
//!
//! Every walk is bounded: reference chains by [`MAX_DEPTH`], the total work of one query
//! by [`MAX_STEPS`], so cycles (`typedef a a;`, a struct containing itself) and
//! exponential fan-out end in an [`Error`] rather than a hang or a stack overflow. The
//! one walk over whole layouts (members, arrays, nesting) is the layout builder of
//! `handover-plan` (`layout_of`), under the same two limits.

use crate::{Btf, Detail, Error, ErrorKind, Type, TypeId};

/// Longest chain of references followed by one walk (the kernel's limit is 32).
pub const MAX_DEPTH: usize = 32;
/// Most types one query may visit (the layout builder of `handover-plan` walks under
/// the same budget).
pub const MAX_STEPS: usize = 1 << 20;

impl<'a> Btf<'a> {
    /// A cycle or too deep a chain, reported at the record the walk started from.
    fn depth_error(&self, id: TypeId) -> Error {
        let at = self.type_by_id(id).map_or(self.raw().len(), |t| t.offset());
        Error::new(ErrorKind::ReferenceDepth { id }, at)
    }

    /// Looks up `id`, a reference read from the record at byte offset `from` (if any):
    /// an id out of range is reported at that record, where the bad reference is.
    fn referenced(&self, id: TypeId, from: Option<usize>) -> Result<Type<'_>, Error> {
        self.type_by_id(id).map_err(|e| match (e.kind(), from) {
            (ErrorKind::TypeIdOutOfRange { .. }, Some(at)) => Error::new(e.kind(), at),
            _ => e,
        })
    }

    /// Follows typedef, const, volatile, restrict and type-tag references from `id` to
    /// the first other type (or `void`).
    ///
    /// # Errors
    /// A dangling reference, or [`ErrorKind::ReferenceDepth`] for a cycle.
    pub fn resolve(&self, id: TypeId) -> Result<TypeId, Error> {
        self.resolve_from(id, None)
    }

    /// [`Btf::resolve`] of a reference read from the record at `from`.
    fn resolve_from(&self, id: TypeId, mut from: Option<usize>) -> Result<TypeId, Error> {
        let mut cur = id;
        for _ in 0..MAX_DEPTH {
            if cur.0 == 0 {
                return Ok(cur);
            }
            let t = self.referenced(cur, from)?;
            if !t.kind().is_modifier() {
                return Ok(cur);
            }
            from = Some(t.offset());
            cur = TypeId(t.size_or_type());
        }
        Err(self.depth_error(id))
    }

    /// Size in bytes of a value of type `id`.
    ///
    /// # Errors
    /// [`ErrorKind::NoSize`] for void, forward declarations, functions and tags,
    /// [`ErrorKind::Overflow`] past `u32::MAX`, or a reference error.
    pub fn size_of(&self, id: TypeId) -> Result<u32, Error> {
        self.size_of_from(id, None)
    }

    /// [`Btf::size_of`] of a reference read from the record at `from`.
    fn size_of_from(&self, id: TypeId, mut from: Option<usize>) -> Result<u32, Error> {
        let mut count: u32 = 1;
        let mut cur = id;
        for _ in 0..MAX_DEPTH {
            let t = self.referenced(cur, from).map_err(|e| match e.kind() {
                ErrorKind::Void => Error::new(ErrorKind::NoSize { id }, e.offset()),
                _ => e,
            })?;
            let overflow = || Error::new(ErrorKind::Overflow { id }, t.offset());
            let size = match t.detail() {
                Detail::Int(_)
                | Detail::Enum(_)
                | Detail::Enum64(_)
                | Detail::Struct(_)
                | Detail::Union(_)
                | Detail::Datasec(_)
                | Detail::Float { .. } => t.size_or_type(),
                Detail::Ptr(_) => self.pointer_size(),
                Detail::Typedef(next)
                | Detail::Volatile(next)
                | Detail::Const(next)
                | Detail::Restrict(next)
                | Detail::TypeTag(next)
                | Detail::Var(crate::Var { ty: next, .. }) => {
                    from = Some(t.offset());
                    cur = next;
                    continue;
                }
                Detail::Array(a) => {
                    count = count.checked_mul(a.nelems).ok_or_else(overflow)?;
                    from = Some(t.offset());
                    cur = a.elem;
                    continue;
                }
                Detail::Fwd { .. }
                | Detail::Func(_)
                | Detail::FuncProto(_)
                | Detail::DeclTag(_) => {
                    return Err(Error::new(ErrorKind::NoSize { id }, t.offset()));
                }
            };
            return count.checked_mul(size).ok_or_else(overflow);
        }
        Err(self.depth_error(id))
    }

    /// Alignment in bytes of a value of type `id`, as a C compiler would place it
    /// (1 for a struct whose member offsets show it is packed).
    ///
    /// # Errors
    /// As [`Btf::size_of`].
    pub fn align_of(&self, id: TypeId) -> Result<u32, Error> {
        let mut steps = 0;
        self.align_inner(id, id, None, 0, &mut steps)
    }

    fn align_inner(
        &self,
        root: TypeId,
        id: TypeId,
        from: Option<usize>,
        depth: usize,
        steps: &mut usize,
    ) -> Result<u32, Error> {
        *steps += 1;
        if depth >= MAX_DEPTH || *steps > MAX_STEPS {
            return Err(self.depth_error(root));
        }
        let t = self.referenced(id, from).map_err(|e| match e.kind() {
            ErrorKind::Void => Error::new(ErrorKind::NoSize { id: root }, e.offset()),
            _ => e,
        })?;
        let scalar = |size: u32| size.min(self.pointer_size()).max(1);
        match t.detail() {
            Detail::Int(_) | Detail::Enum(_) | Detail::Enum64(_) | Detail::Float { .. } => {
                Ok(scalar(t.size_or_type()))
            }
            Detail::Ptr(_) => Ok(self.pointer_size().max(1)),
            Detail::Typedef(next)
            | Detail::Volatile(next)
            | Detail::Const(next)
            | Detail::Restrict(next)
            | Detail::TypeTag(next)
            | Detail::Var(crate::Var { ty: next, .. }) => {
                self.align_inner(root, next, Some(t.offset()), depth + 1, steps)
            }
            Detail::Array(a) => self.align_inner(root, a.elem, Some(t.offset()), depth + 1, steps),
            Detail::Struct(c) | Detail::Union(c) => {
                let mut max = 1;
                for m in c.members {
                    let align = self.align_inner(root, m.ty, Some(t.offset()), depth + 1, steps)?;
                    max = max.max(align);
                    if m.bitfield_size == 0 && u64::from(m.bit_offset) % (8 * u64::from(align)) != 0
                    {
                        return Ok(1);
                    }
                }
                Ok(if c.size % max == 0 { max } else { 1 })
            }
            Detail::Datasec(_)
            | Detail::Fwd { .. }
            | Detail::Func(_)
            | Detail::FuncProto(_)
            | Detail::DeclTag(_) => Err(Error::new(ErrorKind::NoSize { id: root }, t.offset())),
        }
    }
}
