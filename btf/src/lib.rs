//! Zero-copy parser for BPF Type Format (BTF) blobs.
//!
//! [`Btf::parse`] reads a raw BTF blob (the `.BTF` section of an object file, or
//! `/sys/kernel/btf/vmlinux`), [`Btf::parse_split`] reads split BTF on top of a base.
//! Records and names are borrowed from the input; the only allocation of a parse is the
//! index of record offsets that makes [`Btf::type_by_id`] O(1). Both byte orders are
//! read, chosen from the magic number. Malformed input yields an [`Error`] that names
//! what was expected and the byte offset, never a panic.
//!
//! ```
//! use handover_btf::{Btf, Builder, Endian, Kind, TypeId};
//!
//! let mut b = Builder::new(Endian::Little);
//! let int = b.string("int");
//! let id = b.add(int, Kind::Int, false, 0, 4, &[(1 << 24) | 32]);
//! let blob = b.finish();
//! let btf = Btf::parse(&blob)?;
//! assert_eq!(btf.id_by_name("int", Kind::Int), Some(id));
//! assert_eq!(btf.size_of(TypeId(1))?, 4);
//! # Ok::<(), handover_btf::Error>(())
//! ```

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod btf;
mod builder;
mod dump;
mod error;
mod printable;
mod query;
mod raw;
mod types;

pub use crate::btf::{Btf, StrOffset, TypeId};
pub use builder::Builder;
pub use dump::{DumpError, write_raw_dump};
pub use error::{Error, ErrorKind};
pub use printable::printable;
pub use query::{MAX_DEPTH, MAX_STEPS};
pub use raw::{Endian, MAGIC};
pub use types::{
    Array, Composite, Datasec, DeclTag, Detail, Enum, EnumValue, EnumValues, Func, FuncProto, Int,
    IntEncoding, Kind, Linkage, Member, Members, Param, Params, SecVar, SecVars, Type, Var,
};

#[cfg(test)]
mod tests;
