//! `.BTF.ext`: per-section function info, line info and CO-RE relocation records.
//!
//! Layout (kernel `Documentation/bpf/btf.rst`, "BTF.ext section"): a header, then for each
//! of the three kinds a `u32` record size followed by blocks of
//! `{ sec_name_off, num_info, records[num_info] }`. Instruction offsets are in bytes from
//! the start of the ELF section; they are converted to instruction indexes here.

use std::collections::HashMap;

use handover_btf::{Endian, MAGIC, StrOffset, TypeId};

use crate::error::ObjectError;
use crate::raw::{
    RawBtfExtCore, RawBtfExtHeader, RawCoreRelo, RawExtInfoSec, RawFuncInfo, RawLineInfo, read_at,
};

#[expect(
    clippy::cast_possible_truncation,
    reason = "an instruction is 8 bytes: the constant fits"
)]
const INSN_SIZE: u32 = handover_uapi::INSN_SIZE as u32;

/// A `bpf_func_info` record: the BTF `FUNC` describing the function starting at `insn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuncInfo {
    /// Instruction index (section-relative while parsing, program-relative in a
    /// [`ProgramSpec`](crate::ProgramSpec)).
    pub insn: u32,
    /// The BTF `FUNC` type.
    pub type_id: TypeId,
}

/// A `bpf_line_info` record: the source line of the instruction at `insn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineInfo {
    /// Instruction index (section-relative while parsing, program-relative in a
    /// [`ProgramSpec`](crate::ProgramSpec)).
    pub insn: u32,
    /// File name, in the BTF string section.
    pub file_name: StrOffset,
    /// Source line text, in the BTF string section.
    pub line: StrOffset,
    /// Line number (upper 22 bits of `line_col`).
    pub line_number: u32,
    /// Column (lower 10 bits of `line_col`).
    pub column: u32,
}

/// A `bpf_core_relo` record: an instruction whose field offset, size or type id depends on
/// the running kernel's BTF and must be adjusted before loading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreRelocation {
    /// Instruction index (section-relative while parsing, program-relative in a
    /// [`ProgramSpec`](crate::ProgramSpec)).
    pub insn: u32,
    /// The root type in the object's BTF.
    pub type_id: TypeId,
    /// The access string (`"0:1:2"`, member indexes from the root type).
    pub access: String,
    /// `enum bpf_core_relo_kind` value.
    pub kind: u32,
}

impl CoreRelocation {
    /// The name of the relocation kind (`field_byte_offset`, `type_exists`, ...).
    #[must_use]
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            0 => "field_byte_offset",
            1 => "field_byte_size",
            2 => "field_exists",
            3 => "field_signed",
            4 => "field_lshift_u64",
            5 => "field_rshift_u64",
            6 => "type_id_local",
            7 => "type_id_target",
            8 => "type_exists",
            9 => "type_size",
            10 => "enumval_exists",
            11 => "enumval_value",
            12 => "type_matches",
            _ => "unknown",
        }
    }
}

/// The records of one ELF section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SectionExt {
    pub(crate) func_info: Vec<FuncInfo>,
    pub(crate) line_info: Vec<LineInfo>,
    pub(crate) core_relos: Vec<CoreRelocation>,
}

/// Parsed `.BTF.ext`, keyed by ELF section name.
#[derive(Clone, Debug, Default)]
pub(crate) struct BtfExt {
    pub(crate) sections: HashMap<String, SectionExt>,
}

fn err(offset: usize, reason: &'static str) -> ObjectError {
    ObjectError::BtfExt { offset, reason }
}

fn to_usize(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Walks one info block (func, line or CO-RE), calling `record` for each record with the
/// section name and the record's bytes.
fn walk<'s>(
    data: &[u8],
    start: usize,
    len: u32,
    min_rec_size: usize,
    order: Endian,
    strings: &dyn Fn(StrOffset) -> Option<&'s str>,
    mut record: impl FnMut(&'s str, usize, &[u8]) -> Result<(), ObjectError>,
) -> Result<(), ObjectError> {
    if len == 0 {
        return Ok(());
    }
    let end = start
        .checked_add(to_usize(len))
        .filter(|&e| e <= data.len())
        .ok_or_else(|| err(start, "info block extends past the end of the section"))?;
    let block = data
        .get(start..end)
        .ok_or_else(|| err(start, "info block out of bounds"))?;
    let rec_size = read_at::<[u8; 4]>(block, 0)
        .map(|b| order.u32(*b))
        .ok_or_else(|| err(start, "missing record size"))?;
    let rec_size = to_usize(rec_size);
    if rec_size < min_rec_size || !rec_size.is_multiple_of(4) {
        return Err(err(start, "record size too small or not a multiple of 4"));
    }
    let mut pos = 4usize;
    while pos < block.len() {
        let sec = read_at::<RawExtInfoSec>(block, pos)
            .ok_or_else(|| err(start + pos, "truncated section info header"))?;
        let name = strings(StrOffset(order.u32(sec.sec_name_off)))
            .ok_or_else(|| err(start + pos, "section name offset is not a valid BTF string"))?;
        let count = to_usize(order.u32(sec.num_info));
        pos += 8;
        let bytes = count
            .checked_mul(rec_size)
            .ok_or_else(|| err(start + pos, "record count overflows"))?;
        let recs_end = pos
            .checked_add(bytes)
            .filter(|&e| e <= block.len())
            .ok_or_else(|| err(start + pos, "records extend past the info block"))?;
        let mut at = pos;
        while at < recs_end {
            let rec = block
                .get(at..at + rec_size)
                .ok_or_else(|| err(start + at, "truncated record"))?;
            record(name, start + at, rec)?;
            at += rec_size;
        }
        pos = recs_end;
    }
    Ok(())
}

fn insn_index(byte_off: u32, at: usize) -> Result<u32, ObjectError> {
    if !byte_off.is_multiple_of(INSN_SIZE) {
        return Err(err(at, "instruction offset is not a multiple of 8"));
    }
    Ok(byte_off / INSN_SIZE)
}

impl BtfExt {
    /// Parses `.BTF.ext`; `strings` resolves offsets into the `.BTF` string section.
    pub(crate) fn parse<'s>(
        data: &[u8],
        strings: &dyn Fn(StrOffset) -> Option<&'s str>,
    ) -> Result<Self, ObjectError> {
        let hdr = read_at::<RawBtfExtHeader>(data, 0).ok_or_else(|| err(0, "truncated header"))?;
        let order = if u16::from_le_bytes(hdr.magic) == MAGIC {
            Endian::Little
        } else if u16::from_be_bytes(hdr.magic) == MAGIC {
            Endian::Big
        } else {
            return Err(err(0, "bad magic (expected 0xeb9f)"));
        };
        if hdr.version != 1 {
            return Err(err(2, "unsupported version (expected 1)"));
        }
        let hdr_len = to_usize(order.u32(hdr.hdr_len));
        if hdr_len < size_of::<RawBtfExtHeader>() || hdr_len > data.len() {
            return Err(err(4, "header length out of range"));
        }
        let (core_off, core_len) =
            if hdr_len >= size_of::<RawBtfExtHeader>() + size_of::<RawBtfExtCore>() {
                let core = read_at::<RawBtfExtCore>(data, size_of::<RawBtfExtHeader>())
                    .ok_or_else(|| err(24, "truncated header"))?;
                (order.u32(core.core_relo_off), order.u32(core.core_relo_len))
            } else {
                (0, 0)
            };
        let base = |off: u32| {
            hdr_len
                .checked_add(to_usize(off))
                .ok_or_else(|| err(8, "info offset overflows"))
        };
        let mut out = Self::default();

        walk(
            data,
            base(order.u32(hdr.func_info_off))?,
            order.u32(hdr.func_info_len),
            size_of::<RawFuncInfo>(),
            order,
            strings,
            |sec, at, rec| {
                let r =
                    read_at::<RawFuncInfo>(rec, 0).ok_or_else(|| err(at, "truncated func_info"))?;
                let insn = insn_index(order.u32(r.insn_off), at)?;
                out.sections
                    .entry(sec.to_owned())
                    .or_default()
                    .func_info
                    .push(FuncInfo {
                        insn,
                        type_id: TypeId(order.u32(r.type_id)),
                    });
                Ok(())
            },
        )?;
        walk(
            data,
            base(order.u32(hdr.line_info_off))?,
            order.u32(hdr.line_info_len),
            size_of::<RawLineInfo>(),
            order,
            strings,
            |sec, at, rec| {
                let r =
                    read_at::<RawLineInfo>(rec, 0).ok_or_else(|| err(at, "truncated line_info"))?;
                let insn = insn_index(order.u32(r.insn_off), at)?;
                let line_col = order.u32(r.line_col);
                out.sections
                    .entry(sec.to_owned())
                    .or_default()
                    .line_info
                    .push(LineInfo {
                        insn,
                        file_name: StrOffset(order.u32(r.file_name_off)),
                        line: StrOffset(order.u32(r.line_off)),
                        line_number: line_col >> 10,
                        column: line_col & 0x3ff,
                    });
                Ok(())
            },
        )?;
        walk(
            data,
            base(core_off)?,
            core_len,
            size_of::<RawCoreRelo>(),
            order,
            strings,
            |sec, at, rec| {
                let r = read_at::<RawCoreRelo>(rec, 0)
                    .ok_or_else(|| err(at, "truncated CO-RE relocation"))?;
                let insn = insn_index(order.u32(r.insn_off), at)?;
                let access = strings(StrOffset(order.u32(r.access_str_off))).ok_or_else(|| {
                    err(at, "CO-RE access string offset is not a valid BTF string")
                })?;
                out.sections
                    .entry(sec.to_owned())
                    .or_default()
                    .core_relos
                    .push(CoreRelocation {
                        insn,
                        type_id: TypeId(order.u32(r.type_id)),
                        access: access.to_owned(),
                        kind: order.u32(r.kind),
                    });
                Ok(())
            },
        )?;
        Ok(out)
    }
}

#[cfg(test)]
#[expect(
    clippy::indexing_slicing,
    reason = "tests patch fixed offsets of a blob they built"
)]
mod tests {
    use super::*;

    /// Builds a `.BTF.ext` blob in either byte order: a 32-byte header, then func_info,
    /// line_info and CO-RE blocks, each for the section whose name is at string offset 1.
    fn blob(big: bool) -> Vec<u8> {
        let w32 = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut func = Vec::new();
        func.extend(w32(8)); // rec_size
        func.extend(w32(1)); // sec_name_off
        func.extend(w32(2)); // num_info
        func.extend(w32(0)); // insn_off (bytes)
        func.extend(w32(7)); // type_id
        func.extend(w32(40)); // insn_off: instruction 5
        func.extend(w32(9));
        let mut line = Vec::new();
        line.extend(w32(16));
        line.extend(w32(1));
        line.extend(w32(1));
        line.extend(w32(8)); // instruction 1
        line.extend(w32(5)); // file_name_off
        line.extend(w32(6)); // line_off
        line.extend(w32((42 << 10) | 3)); // line 42, column 3
        let mut core = Vec::new();
        core.extend(w32(16));
        core.extend(w32(1));
        core.extend(w32(1));
        core.extend(w32(16)); // instruction 2
        core.extend(w32(4)); // type_id
        core.extend(w32(10)); // access_str_off
        core.extend(w32(0)); // field_byte_offset
        let mut out = Vec::new();
        out.extend(if big {
            0xeb9f_u16.to_be_bytes()
        } else {
            0xeb9f_u16.to_le_bytes()
        });
        out.extend([1, 0]); // version, flags
        out.extend(w32(32)); // hdr_len
        out.extend(w32(0));
        out.extend(w32(u32::try_from(func.len()).unwrap()));
        out.extend(w32(u32::try_from(func.len()).unwrap()));
        out.extend(w32(u32::try_from(line.len()).unwrap()));
        out.extend(w32(u32::try_from(func.len() + line.len()).unwrap()));
        out.extend(w32(u32::try_from(core.len()).unwrap()));
        out.extend(func);
        out.extend(line);
        out.extend(core);
        out
    }

    fn strings(off: StrOffset) -> Option<&'static str> {
        match off.0 {
            1 => Some("xdp"),
            5 => Some("a.c"),
            6 => Some("return 0;"),
            10 => Some("0:1"),
            _ => None,
        }
    }

    #[test]
    fn both_byte_orders_read_the_same_records() {
        for big in [false, true] {
            let ext = BtfExt::parse(&blob(big), &strings).unwrap();
            let sec = ext.sections.get("xdp").unwrap();
            assert_eq!(
                sec.func_info,
                [
                    FuncInfo {
                        insn: 0,
                        type_id: TypeId(7)
                    },
                    FuncInfo {
                        insn: 5,
                        type_id: TypeId(9)
                    }
                ]
            );
            assert_eq!(
                sec.line_info,
                [LineInfo {
                    insn: 1,
                    file_name: StrOffset(5),
                    line: StrOffset(6),
                    line_number: 42,
                    column: 3
                }]
            );
            assert_eq!(sec.core_relos.len(), 1);
            assert_eq!(
                (sec.core_relos[0].insn, sec.core_relos[0].access.as_str()),
                (2, "0:1")
            );
            assert_eq!(sec.core_relos[0].kind_name(), "field_byte_offset");
        }
    }

    #[test]
    fn defects_are_errors_with_offsets() {
        let good = blob(false);
        let mut bad_name = good.clone();
        bad_name[32 + 4] = 99; // func_info sec_name_off -> not a string
        assert!(matches!(
            BtfExt::parse(&bad_name, &strings),
            Err(ObjectError::BtfExt { offset: 36, .. })
        ));
        let mut misaligned = good.clone();
        misaligned[32 + 12] = 3; // first func_info insn_off = 3 bytes
        assert!(matches!(
            BtfExt::parse(&misaligned, &strings),
            Err(ObjectError::BtfExt { offset: 44, .. })
        ));
        let mut small_rec = good.clone();
        small_rec[32] = 4; // func_info rec_size smaller than a record
        assert!(BtfExt::parse(&small_rec, &strings).is_err());
        assert!(BtfExt::parse(&good[..20], &strings).is_err());
        let mut version = good;
        version[2] = 2;
        assert!(BtfExt::parse(&version, &strings).is_err());
    }
}
