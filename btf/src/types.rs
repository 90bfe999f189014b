//! Views of one type record: its kind, name and kind-specific data.

use core::fmt;

use zerocopy::FromBytes;

use crate::raw::{self, Endian};
use crate::{Btf, Error, ErrorKind, StrOffset, TypeId};

/// The kind of a type record (`BTF_KIND_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// `BTF_KIND_INT`: an integer, char or bool.
    Int = 1,
    /// `BTF_KIND_PTR`.
    Ptr = 2,
    /// `BTF_KIND_ARRAY`.
    Array = 3,
    /// `BTF_KIND_STRUCT`.
    Struct = 4,
    /// `BTF_KIND_UNION`.
    Union = 5,
    /// `BTF_KIND_ENUM`: 32-bit (or smaller) enumeration.
    Enum = 6,
    /// `BTF_KIND_FWD`: forward declaration of a struct or union.
    Fwd = 7,
    /// `BTF_KIND_TYPEDEF`.
    Typedef = 8,
    /// `BTF_KIND_VOLATILE`.
    Volatile = 9,
    /// `BTF_KIND_CONST`.
    Const = 10,
    /// `BTF_KIND_RESTRICT`.
    Restrict = 11,
    /// `BTF_KIND_FUNC`: a function, pointing at its prototype.
    Func = 12,
    /// `BTF_KIND_FUNC_PROTO`.
    FuncProto = 13,
    /// `BTF_KIND_VAR`: a global variable.
    Var = 14,
    /// `BTF_KIND_DATASEC`: a section of variables.
    Datasec = 15,
    /// `BTF_KIND_FLOAT`.
    Float = 16,
    /// `BTF_KIND_DECL_TAG`: an attribute on a declaration.
    DeclTag = 17,
    /// `BTF_KIND_TYPE_TAG`: an attribute on a type.
    TypeTag = 18,
    /// `BTF_KIND_ENUM64`.
    Enum64 = 19,
}

impl Kind {
    /// The kind with number `raw`, if it is one of the known kinds.
    #[must_use]
    pub const fn from_raw(raw: u8) -> Option<Self> {
        Some(match raw {
            1 => Self::Int,
            2 => Self::Ptr,
            3 => Self::Array,
            4 => Self::Struct,
            5 => Self::Union,
            6 => Self::Enum,
            7 => Self::Fwd,
            8 => Self::Typedef,
            9 => Self::Volatile,
            10 => Self::Const,
            11 => Self::Restrict,
            12 => Self::Func,
            13 => Self::FuncProto,
            14 => Self::Var,
            15 => Self::Datasec,
            16 => Self::Float,
            17 => Self::DeclTag,
            18 => Self::TypeTag,
            19 => Self::Enum64,
            _ => return None,
        })
    }

    /// The kind's name without the `BTF_KIND_` prefix, as `bpftool` prints it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Int => "INT",
            Self::Ptr => "PTR",
            Self::Array => "ARRAY",
            Self::Struct => "STRUCT",
            Self::Union => "UNION",
            Self::Enum => "ENUM",
            Self::Fwd => "FWD",
            Self::Typedef => "TYPEDEF",
            Self::Volatile => "VOLATILE",
            Self::Const => "CONST",
            Self::Restrict => "RESTRICT",
            Self::Func => "FUNC",
            Self::FuncProto => "FUNC_PROTO",
            Self::Var => "VAR",
            Self::Datasec => "DATASEC",
            Self::Float => "FLOAT",
            Self::DeclTag => "DECL_TAG",
            Self::TypeTag => "TYPE_TAG",
            Self::Enum64 => "ENUM64",
        }
    }

    /// Whether this kind only qualifies or renames another type (typedef, const,
    /// volatile, restrict, type tag).
    #[must_use]
    pub const fn is_modifier(self) -> bool {
        matches!(
            self,
            Self::Typedef | Self::Volatile | Self::Const | Self::Restrict | Self::TypeTag
        )
    }
}

impl TryFrom<u8> for Kind {
    type Error = u8;

    fn try_from(raw: u8) -> Result<Self, u8> {
        Self::from_raw(raw).ok_or(raw)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One type record, borrowed from its [`Btf`].
#[derive(Clone, Copy)]
pub struct Type<'a> {
    btf: &'a Btf<'a>,
    id: TypeId,
    offset: usize,
    kind: Kind,
    kind_flag: bool,
    vlen: u16,
    name_off: StrOffset,
    info: u32,
    size_or_type: u32,
    tail: &'a [u8],
}

impl fmt::Debug for Type<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Type")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("name_off", &self.name_off)
            .field("info", &format_args!("{:#x}", self.info))
            .field("size_or_type", &self.size_or_type)
            .finish_non_exhaustive()
    }
}

impl<'a> Type<'a> {
    #[expect(clippy::too_many_arguments, reason = "assembled in exactly one place")]
    pub(crate) fn new(
        btf: &'a Btf<'a>,
        id: TypeId,
        offset: usize,
        kind: Kind,
        kind_flag: bool,
        vlen: u16,
        hdr: &raw::TypeHeader,
        tail: &'a [u8],
    ) -> Self {
        let e = btf.endian();
        Self {
            btf,
            id,
            offset,
            kind,
            kind_flag,
            vlen,
            name_off: StrOffset(e.u32(hdr.name_off)),
            info: e.u32(hdr.info),
            size_or_type: e.u32(hdr.size_or_type),
            tail,
        }
    }

    /// The type's id.
    #[must_use]
    pub const fn id(&self) -> TypeId {
        self.id
    }

    /// The type's kind.
    #[must_use]
    pub const fn kind(&self) -> Kind {
        self.kind
    }

    /// Byte offset of the record in the blob that holds it.
    #[must_use]
    pub const fn offset(&self) -> usize {
        self.offset
    }

    /// Offset of the type's name; 0 for anonymous types.
    #[must_use]
    pub const fn name_off(&self) -> StrOffset {
        self.name_off
    }

    /// The type's name; empty for anonymous types.
    ///
    /// # Errors
    /// The name offset is out of range or the string is malformed.
    pub fn name(&self) -> Result<&'a str, Error> {
        // An offset past the strings is a fault of this record: report it here.
        self.btf
            .string_at(self.name_off)
            .map_err(|e| match e.kind() {
                ErrorKind::StringOffsetOutOfRange { .. } => Error::new(e.kind(), self.offset),
                _ => e,
            })
    }

    /// The raw `info` word: kind, kind flag and vlen.
    #[must_use]
    pub const fn info(&self) -> u32 {
        self.info
    }

    /// The `kind_flag` bit of `info`.
    #[must_use]
    pub const fn kind_flag(&self) -> bool {
        self.kind_flag
    }

    /// The `vlen` field of `info`: number of members, values, params or variables (for
    /// `FUNC`, its linkage).
    #[must_use]
    pub const fn vlen(&self) -> u16 {
        self.vlen
    }

    /// The raw `size`/`type` union: a size for sized kinds, a type id for the others.
    #[must_use]
    pub const fn size_or_type(&self) -> u32 {
        self.size_or_type
    }

    /// The referenced type, for kinds whose `size_or_type` is a type id.
    #[must_use]
    pub const fn target(&self) -> Option<TypeId> {
        match self.kind {
            Kind::Ptr
            | Kind::Typedef
            | Kind::Volatile
            | Kind::Const
            | Kind::Restrict
            | Kind::TypeTag
            | Kind::Func
            | Kind::FuncProto
            | Kind::Var
            | Kind::DeclTag => Some(TypeId(self.size_or_type)),
            _ => None,
        }
    }

    fn word(&self) -> u32 {
        raw::Word::ref_from_bytes(self.tail).map_or(0, |w| self.btf.endian().u32(w.value))
    }

    fn entries<T: FromBytes + zerocopy::KnownLayout + zerocopy::Immutable>(&self) -> &'a [T] {
        <[T]>::ref_from_bytes(self.tail).unwrap_or(&[])
    }

    /// The kind-specific view of the record.
    #[must_use]
    pub fn detail(&self) -> Detail<'a> {
        let target = TypeId(self.size_or_type);
        let size = self.size_or_type;
        let btf = self.btf;
        let endian = btf.endian();
        match self.kind {
            Kind::Int => {
                let [enc, off, _, bits] = self.word().to_be_bytes();
                Detail::Int(Int {
                    size,
                    encoding: IntEncoding(enc & 0x0f),
                    offset: off,
                    bits,
                })
            }
            Kind::Ptr => Detail::Ptr(target),
            Kind::Array => {
                let (elem, index, nelems) =
                    raw::Array::ref_from_bytes(self.tail).map_or((0, 0, 0), |a| {
                        (
                            endian.u32(a.elem),
                            endian.u32(a.index),
                            endian.u32(a.nelems),
                        )
                    });
                Detail::Array(Array {
                    elem: TypeId(elem),
                    index: TypeId(index),
                    nelems,
                })
            }
            Kind::Struct | Kind::Union => {
                let c = Composite {
                    size,
                    members: Members {
                        btf,
                        kind_flag: self.kind_flag,
                        iter: self.entries::<raw::Member>().iter(),
                    },
                };
                if self.kind == Kind::Struct {
                    Detail::Struct(c)
                } else {
                    Detail::Union(c)
                }
            }
            Kind::Enum | Kind::Enum64 => {
                let values = if self.kind == Kind::Enum {
                    EnumValuesInner::Enum32(self.entries::<raw::Enum>().iter())
                } else {
                    EnumValuesInner::Enum64(self.entries::<raw::Enum64>().iter())
                };
                let e = Enum {
                    size,
                    signed: self.kind_flag,
                    values: EnumValues {
                        btf,
                        signed: self.kind_flag,
                        inner: values,
                    },
                };
                if self.kind == Kind::Enum {
                    Detail::Enum(e)
                } else {
                    Detail::Enum64(e)
                }
            }
            Kind::Fwd => Detail::Fwd {
                is_union: self.kind_flag,
            },
            Kind::Typedef => Detail::Typedef(target),
            Kind::Volatile => Detail::Volatile(target),
            Kind::Const => Detail::Const(target),
            Kind::Restrict => Detail::Restrict(target),
            Kind::Func => Detail::Func(Func {
                proto: target,
                linkage: Linkage(u32::from(self.vlen)),
            }),
            Kind::FuncProto => Detail::FuncProto(FuncProto {
                ret: target,
                params: Params {
                    btf,
                    iter: self.entries::<raw::Param>().iter(),
                },
            }),
            Kind::Var => Detail::Var(Var {
                ty: target,
                linkage: Linkage(self.word()),
            }),
            Kind::Datasec => Detail::Datasec(Datasec {
                size,
                vars: SecVars {
                    endian,
                    iter: self.entries::<raw::VarSecinfo>().iter(),
                },
            }),
            Kind::Float => Detail::Float { size },
            Kind::DeclTag => Detail::DeclTag(DeclTag {
                target,
                component_idx: i32::from_ne_bytes(self.word().to_ne_bytes()),
            }),
            Kind::TypeTag => Detail::TypeTag(target),
        }
    }
}

/// Kind-specific data of a type record; see [`Type::detail`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Detail<'a> {
    /// An integer.
    Int(Int),
    /// A pointer to the given type.
    Ptr(TypeId),
    /// An array.
    Array(Array),
    /// A struct.
    Struct(Composite<'a>),
    /// A union.
    Union(Composite<'a>),
    /// An enumeration with 32-bit values.
    Enum(Enum<'a>),
    /// A forward declaration.
    Fwd {
        /// Declares a union (else a struct).
        is_union: bool,
    },
    /// A typedef of the given type.
    Typedef(TypeId),
    /// `volatile` of the given type.
    Volatile(TypeId),
    /// `const` of the given type.
    Const(TypeId),
    /// `restrict` of the given type.
    Restrict(TypeId),
    /// A function.
    Func(Func),
    /// A function prototype.
    FuncProto(FuncProto<'a>),
    /// A variable.
    Var(Var),
    /// A data section.
    Datasec(Datasec<'a>),
    /// A floating-point type of `size` bytes.
    Float {
        /// Size in bytes.
        size: u32,
    },
    /// A declaration tag.
    DeclTag(DeclTag),
    /// A type tag on the given type.
    TypeTag(TypeId),
    /// An enumeration with 64-bit values.
    Enum64(Enum<'a>),
}

/// `BTF_KIND_INT` data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Int {
    /// Size in bytes.
    pub size: u32,
    /// Signedness, char and bool bits.
    pub encoding: IntEncoding,
    /// Bit offset of the value within its storage.
    pub offset: u8,
    /// Number of value bits.
    pub bits: u8,
}

/// The encoding bits of an integer (`BTF_INT_SIGNED`, `BTF_INT_CHAR`, `BTF_INT_BOOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntEncoding(pub u8);

impl IntEncoding {
    /// `BTF_INT_SIGNED`.
    pub const SIGNED: u8 = 1;
    /// `BTF_INT_CHAR`.
    pub const CHAR: u8 = 2;
    /// `BTF_INT_BOOL`.
    pub const BOOL: u8 = 4;

    /// Whether the integer is signed.
    #[must_use]
    pub const fn is_signed(self) -> bool {
        self.0 & Self::SIGNED != 0
    }

    /// Whether the integer is a character.
    #[must_use]
    pub const fn is_char(self) -> bool {
        self.0 & Self::CHAR != 0
    }

    /// Whether the integer is a boolean.
    #[must_use]
    pub const fn is_bool(self) -> bool {
        self.0 & Self::BOOL != 0
    }
}

/// `BTF_KIND_ARRAY` data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Array {
    /// Element type.
    pub elem: TypeId,
    /// Index type.
    pub index: TypeId,
    /// Number of elements.
    pub nelems: u32,
}

/// `BTF_KIND_STRUCT` / `BTF_KIND_UNION` data.
#[derive(Clone, Debug)]
pub struct Composite<'a> {
    /// Size in bytes.
    pub size: u32,
    /// The members, in declaration order.
    pub members: Members<'a>,
}

/// Iterator over the members of a struct or union.
#[derive(Clone)]
pub struct Members<'a> {
    btf: &'a Btf<'a>,
    kind_flag: bool,
    iter: core::slice::Iter<'a, raw::Member>,
}

impl fmt::Debug for Members<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Members")
            .field("remaining", &self.iter.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Iterator for Members<'a> {
    type Item = Member<'a>;

    fn next(&mut self) -> Option<Member<'a>> {
        let m = self.iter.next()?;
        let e = self.btf.endian();
        let offset = e.u32(m.offset);
        let (bit_offset, bitfield_size) = if self.kind_flag {
            (offset & 0x00ff_ffff, offset >> 24)
        } else {
            (offset, 0)
        };
        Some(Member {
            btf: self.btf,
            name_off: StrOffset(e.u32(m.name_off)),
            ty: TypeId(e.u32(m.ty)),
            bit_offset,
            bitfield_size,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.iter.size_hint()
    }
}

impl ExactSizeIterator for Members<'_> {}

/// A member of a struct or union.
#[derive(Clone, Copy)]
pub struct Member<'a> {
    btf: &'a Btf<'a>,
    /// Offset of the member's name; 0 for anonymous members.
    pub name_off: StrOffset,
    /// The member's type.
    pub ty: TypeId,
    /// Offset of the member from the start of the aggregate, in bits.
    pub bit_offset: u32,
    /// Width of a bitfield member declared through the kind flag; 0 otherwise.
    pub bitfield_size: u32,
}

impl fmt::Debug for Member<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("name_off", &self.name_off)
            .field("ty", &self.ty)
            .field("bit_offset", &self.bit_offset)
            .field("bitfield_size", &self.bitfield_size)
            .finish()
    }
}

impl<'a> Member<'a> {
    /// The member's name; empty for anonymous members.
    ///
    /// # Errors
    /// The name offset is out of range or the string is malformed.
    pub fn name(&self) -> Result<&'a str, Error> {
        self.btf.string_at(self.name_off)
    }
}

/// `BTF_KIND_ENUM` / `BTF_KIND_ENUM64` data.
#[derive(Clone, Debug)]
pub struct Enum<'a> {
    /// Size in bytes.
    pub size: u32,
    /// Whether values are signed (the kind flag).
    pub signed: bool,
    /// The enumerators, in declaration order.
    pub values: EnumValues<'a>,
}

/// Iterator over the enumerators of an enum.
#[derive(Clone)]
pub struct EnumValues<'a> {
    btf: &'a Btf<'a>,
    signed: bool,
    inner: EnumValuesInner<'a>,
}

#[derive(Clone)]
enum EnumValuesInner<'a> {
    Enum32(core::slice::Iter<'a, raw::Enum>),
    Enum64(core::slice::Iter<'a, raw::Enum64>),
}

impl fmt::Debug for EnumValues<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnumValues")
            .field("remaining", &self.size_hint().0)
            .finish_non_exhaustive()
    }
}

impl<'a> Iterator for EnumValues<'a> {
    type Item = EnumValue<'a>;

    fn next(&mut self) -> Option<EnumValue<'a>> {
        let e = self.btf.endian();
        let (name_off, bits, wide) = match &mut self.inner {
            EnumValuesInner::Enum32(iter) => {
                let v = iter.next()?;
                (e.u32(v.name_off), u64::from(e.u32(v.val)), false)
            }
            EnumValuesInner::Enum64(iter) => {
                let v = iter.next()?;
                let (lo, hi) = (e.u32(v.val_lo32), e.u32(v.val_hi32));
                (e.u32(v.name_off), u64::from(hi) << 32 | u64::from(lo), true)
            }
        };
        Some(EnumValue {
            btf: self.btf,
            name_off: StrOffset(name_off),
            bits,
            wide,
            signed: self.signed,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.inner {
            EnumValuesInner::Enum32(iter) => iter.size_hint(),
            EnumValuesInner::Enum64(iter) => iter.size_hint(),
        }
    }
}

impl ExactSizeIterator for EnumValues<'_> {}

/// One enumerator.
#[derive(Clone, Copy)]
pub struct EnumValue<'a> {
    btf: &'a Btf<'a>,
    /// Offset of the enumerator's name.
    pub name_off: StrOffset,
    bits: u64,
    wide: bool,
    signed: bool,
}

impl fmt::Debug for EnumValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnumValue")
            .field("name_off", &self.name_off)
            .field("bits", &self.bits)
            .field("signed", &self.signed)
            .finish_non_exhaustive()
    }
}

impl<'a> EnumValue<'a> {
    /// The enumerator's name.
    ///
    /// # Errors
    /// The name offset is out of range or the string is malformed.
    pub fn name(&self) -> Result<&'a str, Error> {
        self.btf.string_at(self.name_off)
    }

    /// The stored value bits, zero-extended (32 bits for `ENUM`, 64 for `ENUM64`).
    #[must_use]
    pub const fn raw(&self) -> u64 {
        self.bits
    }

    /// The value read as unsigned.
    #[must_use]
    pub const fn as_u64(&self) -> u64 {
        self.bits
    }

    /// The value read as signed: sign-extended from 32 bits for `ENUM`.
    #[must_use]
    pub const fn as_i64(&self) -> i64 {
        if self.wide {
            i64::from_ne_bytes(self.bits.to_ne_bytes())
        } else {
            let [.., b4, b5, b6, b7] = self.bits.to_be_bytes();
            i32::from_be_bytes([b4, b5, b6, b7]) as i64
        }
    }

    /// Whether the enum declares its values signed.
    #[must_use]
    pub const fn is_signed(&self) -> bool {
        self.signed
    }
}

/// Linkage of a `FUNC` (its vlen) or `VAR`: 0 static, 1 global, 2 extern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linkage(pub u32);

impl Linkage {
    /// `BTF_FUNC_STATIC` / `BTF_VAR_STATIC`.
    pub const STATIC: Self = Self(0);
    /// `BTF_FUNC_GLOBAL` / `BTF_VAR_GLOBAL_ALLOCATED`.
    pub const GLOBAL: Self = Self(1);
    /// `BTF_FUNC_EXTERN` / `BTF_VAR_GLOBAL_EXTERN`.
    pub const EXTERN: Self = Self(2);

    /// `static`, `global`, `extern`, or `None` for an unknown value.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        match self.0 {
            0 => Some("static"),
            1 => Some("global"),
            2 => Some("extern"),
            _ => None,
        }
    }
}

/// `BTF_KIND_FUNC` data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Func {
    /// The function's `FUNC_PROTO`.
    pub proto: TypeId,
    /// Its linkage.
    pub linkage: Linkage,
}

/// `BTF_KIND_FUNC_PROTO` data.
#[derive(Clone, Debug)]
pub struct FuncProto<'a> {
    /// Return type (0 for `void`).
    pub ret: TypeId,
    /// The parameters; a trailing one with type 0 marks a variadic function.
    pub params: Params<'a>,
}

/// Iterator over the parameters of a function prototype.
#[derive(Clone)]
pub struct Params<'a> {
    btf: &'a Btf<'a>,
    iter: core::slice::Iter<'a, raw::Param>,
}

impl fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Params")
            .field("remaining", &self.iter.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = Param<'a>;

    fn next(&mut self) -> Option<Param<'a>> {
        let p = self.iter.next()?;
        let e = self.btf.endian();
        Some(Param {
            btf: self.btf,
            name_off: StrOffset(e.u32(p.name_off)),
            ty: TypeId(e.u32(p.ty)),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.iter.size_hint()
    }
}

impl ExactSizeIterator for Params<'_> {}

/// One parameter of a function prototype.
#[derive(Clone, Copy)]
pub struct Param<'a> {
    btf: &'a Btf<'a>,
    /// Offset of the parameter's name; 0 if unnamed.
    pub name_off: StrOffset,
    /// The parameter's type.
    pub ty: TypeId,
}

impl fmt::Debug for Param<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Param")
            .field("name_off", &self.name_off)
            .field("ty", &self.ty)
            .finish()
    }
}

impl<'a> Param<'a> {
    /// The parameter's name; empty if unnamed.
    ///
    /// # Errors
    /// The name offset is out of range or the string is malformed.
    pub fn name(&self) -> Result<&'a str, Error> {
        self.btf.string_at(self.name_off)
    }
}

/// `BTF_KIND_VAR` data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var {
    /// The variable's type.
    pub ty: TypeId,
    /// Its linkage.
    pub linkage: Linkage,
}

/// `BTF_KIND_DATASEC` data.
#[derive(Clone, Debug)]
pub struct Datasec<'a> {
    /// Size of the section in bytes.
    pub size: u32,
    /// The variables placed in the section.
    pub vars: SecVars<'a>,
}

/// Iterator over the variables of a data section.
#[derive(Clone)]
pub struct SecVars<'a> {
    endian: Endian,
    iter: core::slice::Iter<'a, raw::VarSecinfo>,
}

impl fmt::Debug for SecVars<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecVars")
            .field("remaining", &self.iter.len())
            .finish_non_exhaustive()
    }
}

impl Iterator for SecVars<'_> {
    type Item = SecVar;

    fn next(&mut self) -> Option<SecVar> {
        let v = self.iter.next()?;
        let e = self.endian;
        Some(SecVar {
            ty: TypeId(e.u32(v.ty)),
            offset: e.u32(v.offset),
            size: e.u32(v.size),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.iter.size_hint()
    }
}

impl ExactSizeIterator for SecVars<'_> {}

/// A variable's place in a data section (`struct btf_var_secinfo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecVar {
    /// The `VAR` (or `FUNC` for `.ksyms`) type.
    pub ty: TypeId,
    /// Offset in the section, in bytes.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// `BTF_KIND_DECL_TAG` data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeclTag {
    /// The tagged declaration.
    pub target: TypeId,
    /// Index of the tagged member or parameter, or -1 for the declaration itself.
    pub component_idx: i32,
}
