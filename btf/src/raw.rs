//! On-disk BTF records and the one place where their bytes become integers.
//!
//! Every record is a `#[repr(C)]` struct of raw byte arrays read through `zerocopy`, so a
//! record can sit at any offset of the input and be read with either byte order. The byte
//! order is a runtime choice ([`Endian`]) taken from the header magic; [`Endian::u32`] and
//! [`Endian::u16`] are the only conversions from record bytes to numbers.

use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// The BTF magic number, `0xeB9F`, as stored in the first two bytes of a blob.
pub const MAGIC: u16 = 0xeb9f;
/// The only BTF version defined so far.
pub const VERSION: u8 = 1;

pub use handover_uapi::Endian;

/// `struct btf_header`.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Header {
    pub magic: [u8; 2],
    pub version: u8,
    pub flags: u8,
    pub hdr_len: [u8; 4],
    pub type_off: [u8; 4],
    pub type_len: [u8; 4],
    pub str_off: [u8; 4],
    pub str_len: [u8; 4],
}

/// `struct btf_type`: the fixed part every type record starts with.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct TypeHeader {
    pub name_off: [u8; 4],
    pub info: [u8; 4],
    pub size_or_type: [u8; 4],
}

/// `struct btf_array`.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Array {
    pub elem: [u8; 4],
    pub index: [u8; 4],
    pub nelems: [u8; 4],
}

/// `struct btf_member`.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Member {
    pub name_off: [u8; 4],
    pub ty: [u8; 4],
    pub offset: [u8; 4],
}

/// `struct btf_enum`.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Enum {
    pub name_off: [u8; 4],
    pub val: [u8; 4],
}

/// `struct btf_enum64`.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Enum64 {
    pub name_off: [u8; 4],
    pub val_lo32: [u8; 4],
    pub val_hi32: [u8; 4],
}

/// `struct btf_param`.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Param {
    pub name_off: [u8; 4],
    pub ty: [u8; 4],
}

/// `struct btf_var_secinfo`.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct VarSecinfo {
    pub ty: [u8; 4],
    pub offset: [u8; 4],
    pub size: [u8; 4],
}

/// A single trailing `u32`: `BTF_KIND_INT` encoding word, `struct btf_var` linkage,
/// `struct btf_decl_tag` component index.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Word {
    pub value: [u8; 4],
}

/// Size in bytes of `struct btf_header` as defined today.
pub(crate) const HEADER_LEN: usize = size_of::<Header>();
/// Size in bytes of `struct btf_type`.
pub(crate) const TYPE_HEADER_LEN: usize = size_of::<TypeHeader>();
