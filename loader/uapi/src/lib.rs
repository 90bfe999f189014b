//! The uapi vocabulary of bpf(2), shared by the pure crates and the kernel layer.
//!
//! Kernel enumerations ([`MapType`], [`ProgramType`], [`AttachType`], [`LinkType`])
//! with their kernel names, flag constants, the instruction encoding with the one
//! decoder from an object's byte order ([`Insn::decode`]), the kernel's object-name
//! rule ([`name_field`], [`kernel_name`]) and the one byte-order type ([`Endian`]).
//! Nothing here calls the kernel or links libc.

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod endian;
mod flags;
mod insn;
mod name;
mod pinning;
mod types;

pub use endian::Endian;
pub use flags::{attach_flags, map_flags, prog_flags};
pub use insn::{
    CALL, INSN_SIZE, Insn, LD_IMM64, PSEUDO_BTF_ID, PSEUDO_CALL, PSEUDO_FUNC, PSEUDO_KFUNC_CALL,
    PSEUDO_MAP_FD, PSEUDO_MAP_VALUE,
};
pub use name::{
    KERNEL_NAME_LEN, NameError, OBJ_NAME_LEN, created_map_name, global_data_map_name, is_name_byte,
    kernel_name, name_field, object_name,
};
pub use pinning::Pinning;
pub use types::{AttachType, LinkType, MapType, ProgramType, UnknownName, UnknownValue};
