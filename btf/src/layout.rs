//! Queries that follow type references: resolve, size, alignment, flattened layout.
//!
//! Every walk is bounded: reference chains by [`MAX_DEPTH`], the total work of one query
//! by [`MAX_STEPS`], so cycles (`typedef a a;`, a struct containing itself) and
//! exponential fan-out end in an [`Error`] rather than a hang or a stack overflow.

use crate::{Btf, Detail, Error, ErrorKind, Kind, Type, TypeId};

/// Longest chain of references followed by one walk (the kernel's limit is 32).
pub const MAX_DEPTH: usize = 32;
/// Most fields a flattened layout may have.
pub const MAX_LAYOUT_FIELDS: usize = 1 << 16;
/// Most types one query may visit (the layout builder of `handover-plan` walks under
/// the same budget).
pub const MAX_STEPS: usize = 1 << 20;

/// One field of a flattened struct or union layout; see [`Btf::layout`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    /// Path from the aggregate to the field: member names joined with `.`, array
    /// elements as `[i]`; members of anonymous structs and unions appear as if they
    /// were members of the enclosing aggregate, as in C.
    pub path: String,
    /// The components of `path`: member names, and `None` for an array index.
    pub components: Vec<PathComponent<'a>>,
    /// Offset of the field from the start of the aggregate, in bits.
    pub bit_offset: u64,
    /// Width of the field in bits (the bitfield width for bitfields).
    pub bit_size: u64,
    /// The field's declared type (not resolved through typedefs).
    pub ty: TypeId,
}

/// One step of a [`Field`] path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathComponent<'a> {
    /// A named member.
    Member(&'a str),
    /// An array element.
    Index(u32),
}

struct Walk<'a, 'b> {
    btf: &'b Btf<'a>,
    root: TypeId,
    steps: usize,
    fields: Vec<Field<'a>>,
    path: String,
    components: Vec<PathComponent<'a>>,
}

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

    /// The flattened layout of struct or union `id` (through typedefs and modifiers):
    /// every leaf field, descending into nested structs, unions and array elements,
    /// in declaration order. Unnamed non-aggregate members (padding bitfields) are left
    /// out.
    ///
    /// # Errors
    /// [`ErrorKind::UnexpectedKind`] if `id` is not an aggregate,
    /// [`ErrorKind::LayoutTooLarge`] past [`MAX_LAYOUT_FIELDS`], or a reference error.
    pub fn layout(&self, id: TypeId) -> Result<Vec<Field<'a>>, Error> {
        let resolved = self.resolve(id)?;
        let t = self.type_by_id(resolved)?;
        if !matches!(t.kind(), Kind::Struct | Kind::Union) {
            return Err(Error::new(
                ErrorKind::UnexpectedKind {
                    id: resolved,
                    kind: t.kind(),
                },
                t.offset(),
            ));
        }
        let mut walk = Walk {
            btf: self,
            root: id,
            steps: 0,
            fields: Vec::new(),
            path: String::new(),
            components: Vec::new(),
        };
        walk.aggregate(t, 0, 0)?;
        Ok(walk.fields)
    }
}

impl<'a> Walk<'a, '_> {
    fn step(&mut self, depth: usize) -> Result<(), Error> {
        self.steps += 1;
        if depth >= MAX_DEPTH || self.steps > MAX_STEPS {
            return Err(self.btf.depth_error(self.root));
        }
        Ok(())
    }

    fn overflow(&self, at: usize) -> Error {
        Error::new(ErrorKind::Overflow { id: self.root }, at)
    }

    fn aggregate(&mut self, t: Type<'_>, base: u64, depth: usize) -> Result<(), Error> {
        self.step(depth)?;
        let (Detail::Struct(c) | Detail::Union(c)) = t.detail() else {
            return Ok(());
        };
        for m in c.members {
            let name = self.btf.string_at(m.name_off)?;
            let offset = base
                .checked_add(u64::from(m.bit_offset))
                .ok_or_else(|| self.overflow(t.offset()))?;
            let resolved = self.btf.resolve_from(m.ty, Some(t.offset()))?;
            let is_aggregate = resolved.0 != 0
                && matches!(
                    self.btf.type_by_id(resolved)?.kind(),
                    Kind::Struct | Kind::Union | Kind::Array
                );
            if name.is_empty() && !is_aggregate {
                continue;
            }
            let (path_len, comp_len) = (self.path.len(), self.components.len());
            if !name.is_empty() {
                if !self.path.is_empty() {
                    self.path.push('.');
                }
                self.path.push_str(name);
                self.components.push(PathComponent::Member(name));
            }
            self.value(m.ty, t.offset(), offset, m.bitfield_size, depth + 1)?;
            self.path.truncate(path_len);
            self.components.truncate(comp_len);
        }
        Ok(())
    }

    /// Adds the fields of a value of type `ty` (a reference read from the record at byte
    /// `from`) placed at bit `offset`.
    fn value(
        &mut self,
        ty: TypeId,
        from: usize,
        offset: u64,
        bitfield: u32,
        depth: usize,
    ) -> Result<(), Error> {
        self.step(depth)?;
        let resolved = self.btf.resolve_from(ty, Some(from))?;
        let t = self.btf.type_by_id(resolved)?;
        match t.detail() {
            // One level of nesting is one step of depth: a member (or an element)
            // and the aggregate it is share it, as in the layout builder of
            // `handover-plan`, so both refuse the same nesting.
            Detail::Struct(_) | Detail::Union(_) => return self.aggregate(t, offset, depth),
            Detail::Array(a) => {
                let elem_bits = u64::from(self.btf.size_of_from(a.elem, Some(t.offset()))?) * 8;
                let path_len = self.path.len();
                for i in 0..a.nelems {
                    self.step(depth)?;
                    use core::fmt::Write as _;
                    let _ = write!(self.path, "[{i}]");
                    self.components.push(PathComponent::Index(i));
                    let at = u64::from(i)
                        .checked_mul(elem_bits)
                        .and_then(|o| o.checked_add(offset))
                        .ok_or_else(|| self.overflow(t.offset()))?;
                    self.value(a.elem, t.offset(), at, 0, depth + 1)?;
                    self.path.truncate(path_len);
                    self.components.pop();
                }
                return Ok(());
            }
            _ => {}
        }
        let (bit_offset, bit_size) = match (bitfield, t.detail()) {
            (0, Detail::Int(int))
                if u64::from(int.bits) != u64::from(int.size) * 8 || int.offset != 0 =>
            {
                let at = offset
                    .checked_add(u64::from(int.offset))
                    .ok_or_else(|| self.overflow(t.offset()))?;
                (at, u64::from(int.bits))
            }
            (0, _) => (
                offset,
                u64::from(self.btf.size_of_from(ty, Some(from))?) * 8,
            ),
            (bits, _) => (offset, u64::from(bits)),
        };
        if self.fields.len() >= MAX_LAYOUT_FIELDS {
            return Err(Error::new(
                ErrorKind::LayoutTooLarge {
                    id: self.root,
                    limit: MAX_LAYOUT_FIELDS,
                },
                t.offset(),
            ));
        }
        self.fields.push(Field {
            path: self.path.clone(),
            components: self.components.clone(),
            bit_offset,
            bit_size,
            ty,
        });
        Ok(())
    }
}
