//! On-disk records read from untrusted bytes, with their byte order chosen at run time.
//!
//! Every field is a byte array, so the structs have alignment 1 and any byte pattern is a
//! valid value; integers are decoded through [`Endian`](handover_uapi::Endian), the
//! byte order chosen from the file.

use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// `struct bpf_map_def`, the five fields shared by every legacy `maps` record layout.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct RawMapDef {
    pub(crate) map_type: [u8; 4],
    pub(crate) key_size: [u8; 4],
    pub(crate) value_size: [u8; 4],
    pub(crate) max_entries: [u8; 4],
    pub(crate) map_flags: [u8; 4],
}

/// `struct btf_ext_header` up to and including the line_info fields (version 1).
#[derive(FromBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct RawBtfExtHeader {
    pub(crate) magic: [u8; 2],
    pub(crate) version: u8,
    pub(crate) flags: u8,
    pub(crate) hdr_len: [u8; 4],
    pub(crate) func_info_off: [u8; 4],
    pub(crate) func_info_len: [u8; 4],
    pub(crate) line_info_off: [u8; 4],
    pub(crate) line_info_len: [u8; 4],
}

/// The CO-RE relocation fields that follow [`RawBtfExtHeader`] when `hdr_len` allows.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct RawBtfExtCore {
    pub(crate) core_relo_off: [u8; 4],
    pub(crate) core_relo_len: [u8; 4],
}

/// `struct btf_ext_info_sec` header: section name and record count.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct RawExtInfoSec {
    pub(crate) sec_name_off: [u8; 4],
    pub(crate) num_info: [u8; 4],
}

/// `struct bpf_func_info` as stored in `.BTF.ext` (insn_off in bytes).
#[derive(FromBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct RawFuncInfo {
    pub(crate) insn_off: [u8; 4],
    pub(crate) type_id: [u8; 4],
}

/// `struct bpf_line_info` as stored in `.BTF.ext` (insn_off in bytes).
#[derive(FromBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct RawLineInfo {
    pub(crate) insn_off: [u8; 4],
    pub(crate) file_name_off: [u8; 4],
    pub(crate) line_off: [u8; 4],
    pub(crate) line_col: [u8; 4],
}

/// `struct bpf_core_relo` as stored in `.BTF.ext`.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct RawCoreRelo {
    pub(crate) insn_off: [u8; 4],
    pub(crate) type_id: [u8; 4],
    pub(crate) access_str_off: [u8; 4],
    pub(crate) kind: [u8; 4],
}

/// Reads one record of type `T` at `offset`, or `None` if it does not fit.
pub(crate) fn read_at<T: FromBytes + KnownLayout + Immutable + Unaligned>(
    data: &[u8],
    offset: usize,
) -> Option<&T> {
    let bytes = data.get(offset..)?;
    T::ref_from_prefix(bytes).ok().map(|(r, _)| r)
}
