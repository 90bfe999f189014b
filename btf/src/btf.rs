//! The parsed blob: header, string table and the type-offset index.

use core::ffi::CStr;
use std::sync::OnceLock;

use zerocopy::FromBytes;

use crate::raw::{self, Endian, HEADER_LEN, TYPE_HEADER_LEN};
use crate::{Error, ErrorKind, Kind, Type};

/// Index of a type: 0 is `void`, real types start at 1 (or after the base for split BTF).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TypeId(pub u32);

/// Offset of a NUL-terminated name in the string section (continuing the base's
/// string section for split BTF).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StrOffset(pub u32);

/// A parsed BTF blob that borrows its input.
///
/// Parsing checks the header, the string section's framing and walks the type section
/// once, reading only each record's fixed header to find where the next one starts. That
/// walk builds the only allocation: a `Vec<u32>` of record offsets, so lookup by
/// [`TypeId`] is O(1). Names are checked (in range, NUL-terminated, UTF-8) when read, and
/// type references when followed; both return an [`Error`] rather than panic.
///
/// Split BTF ([`Btf::parse_split`]) owns its base: type ids and string offsets below the
/// split blob's own range are answered by the base, as the kernel does for module BTF.
#[derive(Debug)]
pub struct Btf<'data> {
    data: &'data [u8],
    endian: Endian,
    /// Offset of the type section within `data`.
    types_start: usize,
    types: &'data [u8],
    /// Offset of the string section within `data`.
    strings_start: usize,
    strings: &'data [u8],
    /// Offset of every own type record within `types`, in id order.
    offsets: Vec<u32>,
    first_id: u32,
    /// String offset of the first byte of `strings`.
    str_base: u32,
    base: Option<Box<Btf<'data>>>,
    pointer_size: OnceLock<u32>,
}

/// Bytes a record of `kind` with `vlen` trailing entries occupies after its fixed header.
#[inline]
pub(crate) fn tail_len(kind: Kind, vlen: u16) -> usize {
    let (fixed, per) = shape(kind as u8);
    usize::from(fixed) + usize::from(per) * usize::from(vlen)
}

/// `SHAPES` packed for the index loop: bit `k` set if kind number `k` is known.
const KNOWN_KINDS: u32 = pack_known();
/// `SHAPES` packed for the index loop: 2 bits per kind number, fixed tail size / 4.
const FIXED_CODES: u64 = pack_codes(0);
/// `SHAPES` packed for the index loop: 2 bits per kind number, entry size / 4.
const PER_CODES: u64 = pack_codes(1);

const fn pack_known() -> u32 {
    let mut known = 0;
    let mut k = 0;
    while k < 32 {
        if Kind::from_raw(k).is_some() {
            known |= 1 << k;
        }
        k += 1;
    }
    known
}

const fn pack_codes(which: usize) -> u64 {
    let mut codes = 0;
    let mut k = 0;
    let mut rest: &[(u8, u8)] = &SHAPES;
    while let [(fixed, per), tail @ ..] = rest {
        let size = if which == 0 { *fixed } else { *per };
        if size != u8::MAX {
            codes |= ((size / 4) as u64 & 3) << (2 * k);
        }
        k += 1;
        rest = tail;
    }
    codes
}

/// The `SHAPES` entry of kind number `raw`.
#[inline]
fn shape(raw: u8) -> (u8, u8) {
    SHAPES.get(usize::from(raw)).copied().unwrap_or(UNKNOWN)
}

/// Splits a `struct btf_type` `info` word into kind number, kind flag and vlen.
#[inline]
pub(crate) const fn split_info(info: u32) -> (u8, bool, u16) {
    let [hi, _, v1, v0] = info.to_be_bytes();
    (hi & 0x1f, hi & 0x80 != 0, u16::from_be_bytes([v1, v0]))
}

impl<'data> Btf<'data> {
    /// Parses a standalone BTF blob (`/sys/kernel/btf/vmlinux`, an object's `.BTF`).
    ///
    /// Checks: magic (either byte order), version 1, `hdr_len` within the blob, both
    /// sections within the blob, a 4-byte aligned type section, a string section that
    /// starts with the empty string and ends with a NUL, and that every type record has
    /// a known kind and fits. Header flags and any header bytes past the known fields
    /// are not interpreted.
    ///
    /// # Errors
    /// A malformed header, string section or type section; see [`ErrorKind`].
    pub fn parse(data: &'data [u8]) -> Result<Self, Error> {
        Self::parse_inner(data, None)
    }

    /// Parses split BTF (kernel module BTF) on top of `base`: its type ids continue after
    /// the base's last id and its string offsets after the base's string section.
    ///
    /// # Errors
    /// As [`Btf::parse`], and [`ErrorKind::TooManyTypes`] if the ids overflow.
    pub fn parse_split(data: &'data [u8], base: Btf<'data>) -> Result<Self, Error> {
        Self::parse_inner(data, Some(Box::new(base)))
    }

    fn parse_inner(data: &'data [u8], base: Option<Box<Btf<'data>>>) -> Result<Self, Error> {
        let endian = match data {
            [0x9f, 0xeb, ..] => Endian::Little,
            [0xeb, 0x9f, ..] => Endian::Big,
            [a, b, ..] => return Err(Error::new(ErrorKind::BadMagic { found: [*a, *b] }, 0)),
            _ => {
                return Err(Error::new(
                    ErrorKind::Truncated {
                        what: "BTF header",
                        needed: HEADER_LEN,
                        available: data.len(),
                    },
                    0,
                ));
            }
        };
        let Ok((hdr, _)) = raw::Header::ref_from_prefix(data) else {
            return Err(Error::new(
                ErrorKind::Truncated {
                    what: "BTF header",
                    needed: HEADER_LEN,
                    available: data.len(),
                },
                0,
            ));
        };
        if hdr.version != raw::VERSION {
            return Err(Error::new(ErrorKind::BadVersion { found: hdr.version }, 2));
        }
        let hdr_len = endian.u32(hdr.hdr_len);
        if (hdr_len as usize) < HEADER_LEN || hdr_len as usize > data.len() {
            return Err(Error::new(ErrorKind::BadHeaderLen { hdr_len }, 4));
        }
        let section = |name: &'static str, field: usize, off: [u8; 4], len: [u8; 4]| {
            let (off, len) = (endian.u32(off), endian.u32(len));
            let start = u64::from(hdr_len) + u64::from(off);
            let end = start + u64::from(len);
            let bounds = usize::try_from(start)
                .ok()
                .zip(usize::try_from(end).ok())
                .and_then(|(s, e)| Some((s, data.get(s..e)?)));
            bounds.ok_or(Error::new(
                ErrorKind::SectionOutOfBounds {
                    section: name,
                    off,
                    len,
                },
                field,
            ))
        };
        // Type records hold u32 fields: the kernel and libbpf require the section to be
        // 4-byte aligned (this parser reads unaligned records, but keeps the rule).
        let type_off = endian.u32(hdr.type_off);
        if type_off % 4 != 0 {
            return Err(Error::new(
                ErrorKind::Misaligned {
                    section: "type",
                    off: type_off,
                },
                8,
            ));
        }
        let (types_start, types) = section("type", 8, hdr.type_off, hdr.type_len)?;
        let (strings_start, strings) = section("string", 16, hdr.str_off, hdr.str_len)?;

        let bad_strings = Error::new(ErrorKind::BadStringSection, strings_start);
        match (&base, strings.first(), strings.last()) {
            (None, Some(0), Some(0)) | (Some(_), _, Some(0) | None) => {}
            _ => return Err(bad_strings),
        }
        let (first_id, str_base) = match &base {
            None => (1, 0),
            Some(b) => (b.end_id()?, b.end_str()?),
        };

        let offsets = index(endian, types, types_start, first_id)?;
        Ok(Self {
            data,
            endian,
            types_start,
            types,
            strings_start,
            strings,
            offsets,
            first_id,
            str_base,
            base,
            pointer_size: OnceLock::new(),
        })
    }

    /// The id one past this blob's last type.
    fn end_id(&self) -> Result<u32, Error> {
        u32::try_from(self.offsets.len())
            .ok()
            .and_then(|n| self.first_id.checked_add(n))
            .ok_or(Error::new(ErrorKind::TooManyTypes, self.types_start))
    }

    /// The string offset one past this blob's string section.
    fn end_str(&self) -> Result<u32, Error> {
        u32::try_from(self.strings.len())
            .ok()
            .and_then(|n| self.str_base.checked_add(n))
            .ok_or(Error::new(
                ErrorKind::SectionOutOfBounds {
                    section: "string",
                    off: self.str_base,
                    len: u32::MAX,
                },
                self.strings_start,
            ))
    }

    /// Byte order of the blob.
    #[must_use]
    pub const fn endian(&self) -> Endian {
        self.endian
    }

    /// The whole input, as given to the parser.
    #[must_use]
    pub const fn raw(&self) -> &'data [u8] {
        self.data
    }

    /// The raw string section of this blob (not including the base's).
    #[must_use]
    pub const fn string_section(&self) -> &'data [u8] {
        self.strings
    }

    /// The base of split BTF.
    #[must_use]
    pub fn base(&self) -> Option<&Btf<'data>> {
        self.base.as_deref()
    }

    /// Id of this blob's first type: 1, or the id after the base's last type.
    #[must_use]
    pub const fn first_type_id(&self) -> TypeId {
        TypeId(self.first_id)
    }

    /// Number of types this blob defines (not counting `void` or the base's types).
    #[must_use]
    pub fn type_count(&self) -> usize {
        self.offsets.len()
    }

    /// Whether this blob defines no types.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The type with id `id`, from this blob or its base.
    ///
    /// # Errors
    /// [`ErrorKind::Void`] for id 0, [`ErrorKind::TypeIdOutOfRange`] past the last type.
    pub fn type_by_id(&self, id: TypeId) -> Result<Type<'_>, Error> {
        if id.0 == 0 {
            return Err(Error::new(ErrorKind::Void, self.types_start));
        }
        if id.0 < self.first_id
            && let Some(base) = &self.base
        {
            return base.type_by_id(id);
        }
        let out_of_range = Error::new(ErrorKind::TypeIdOutOfRange { id }, self.types_start);
        let index =
            id.0.checked_sub(self.first_id)
                .and_then(|i| usize::try_from(i).ok())
                .ok_or(out_of_range)?;
        let offset = *self.offsets.get(index).ok_or(out_of_range)?;
        self.record(id, offset).ok_or(out_of_range)
    }

    /// Decodes the record at `offset` of the type section, which the index already
    /// checked; `None` only if that invariant were broken.
    fn record(&self, id: TypeId, offset: u32) -> Option<Type<'_>> {
        let rest = self.types.get(offset as usize..)?;
        let (hdr, rest) = raw::TypeHeader::ref_from_prefix(rest).ok()?;
        let info = self.endian.u32(hdr.info);
        let (kind, kind_flag, vlen) = split_info(info);
        let kind = Kind::from_raw(kind)?;
        let tail = rest.get(..tail_len(kind, vlen))?;
        Some(Type::new(
            self,
            id,
            self.types_start + offset as usize,
            kind,
            kind_flag,
            vlen,
            hdr,
            tail,
        ))
    }

    /// Every type this blob defines (not the base's), with its id, in id order.
    pub fn types(&self) -> impl Iterator<Item = (TypeId, Type<'_>)> + '_ {
        (self.first_id..)
            .zip(self.offsets.iter())
            .map_while(move |(id, &offset)| {
                let id = TypeId(id);
                Some((id, self.record(id, offset)?))
            })
    }

    /// The NUL-terminated string at `off`, from this blob or its base.
    ///
    /// # Errors
    /// [`ErrorKind::StringOffsetOutOfRange`], [`ErrorKind::UnterminatedString`] or
    /// [`ErrorKind::InvalidUtf8`].
    pub fn string_at(&self, off: StrOffset) -> Result<&'data str, Error> {
        if off.0 < self.str_base
            && let Some(base) = &self.base
        {
            return base.string_at(off);
        }
        let bytes = self.string_bytes(off)?;
        // `string_bytes` succeeded, so `off` lies in this blob's string section.
        let at = self.strings_start + off.0.saturating_sub(self.str_base) as usize;
        let cstr = CStr::from_bytes_until_nul(bytes)
            .map_err(|_| Error::new(ErrorKind::UnterminatedString { off }, at))?;
        cstr.to_str()
            .map_err(|_| Error::new(ErrorKind::InvalidUtf8 { off }, at))
    }

    /// The bytes from `off` to the end of whichever string section holds it.
    fn string_bytes(&self, off: StrOffset) -> Result<&'data [u8], Error> {
        if off.0 < self.str_base
            && let Some(base) = &self.base
        {
            return base.string_bytes(off);
        }
        let rel = off.0.checked_sub(self.str_base).map(|r| r as usize);
        match rel.and_then(|r| self.strings.get(r..)) {
            Some(bytes) if !bytes.is_empty() => Ok(bytes),
            _ => Err(Error::new(
                ErrorKind::StringOffsetOutOfRange { off },
                self.strings_start,
            )),
        }
    }

    /// Whether the string at `off` is exactly `name`, without decoding it.
    fn name_is(&self, off: StrOffset, name: &str) -> bool {
        self.string_bytes(off).is_ok_and(|bytes| {
            bytes.starts_with(name.as_bytes()) && bytes.get(name.len()) == Some(&0)
        })
    }

    /// Headers of every type of the base chain and this blob, as (id, name, kind).
    fn headers(&self) -> Box<dyn Iterator<Item = (TypeId, StrOffset, u8)> + '_> {
        let own = (self.first_id..)
            .zip(self.offsets.iter())
            .filter_map(move |(id, &offset)| {
                let rest = self.types.get(offset as usize..)?;
                let (hdr, _) = raw::TypeHeader::ref_from_prefix(rest).ok()?;
                let (kind, _, _) = split_info(self.endian.u32(hdr.info));
                Some((TypeId(id), StrOffset(self.endian.u32(hdr.name_off)), kind))
            });
        match &self.base {
            Some(base) => Box::new(base.headers().chain(own)),
            None => Box::new(own),
        }
    }

    /// The first type (lowest id, base included) named `name` of kind `kind`.
    #[must_use]
    pub fn id_by_name(&self, name: &str, kind: Kind) -> Option<TypeId> {
        self.headers()
            .find(|&(_, off, k)| k == kind as u8 && self.name_is(off, name))
            .map(|(id, _, _)| id)
    }

    /// Every type (base included) named `name`, of any kind, in id order.
    pub fn ids_by_name<'s>(&'s self, name: &'s str) -> impl Iterator<Item = TypeId> + 's {
        self.headers()
            .filter(move |&(_, off, _)| off.0 != 0 && self.name_is(off, name))
            .map(|(id, _, _)| id)
    }

    /// Size in bytes of a pointer for this BTF: the size of its `long` integer type,
    /// or of the running machine's pointers when the blob has none. Computed once.
    pub fn pointer_size(&self) -> u32 {
        *self.pointer_size.get_or_init(|| {
            const LONGS: [&str; 6] = [
                "long",
                "long int",
                "unsigned long",
                "long unsigned int",
                "unsigned long int",
                "long signed int",
            ];
            let found = self.headers().find_map(|(id, off, kind)| {
                if kind != Kind::Int as u8 || !LONGS.iter().any(|n| self.name_is(off, n)) {
                    return None;
                }
                let size = self.type_by_id(id).ok()?.size_or_type();
                matches!(size, 4 | 8).then_some(size)
            });
            #[expect(
                clippy::cast_possible_truncation,
                reason = "a pointer is at most 16 bytes"
            )]
            found.unwrap_or(size_of::<usize>() as u32)
        })
    }

    /// Overrides the pointer size guessed by [`Btf::pointer_size`].
    pub fn set_pointer_size(&mut self, size: u32) {
        self.pointer_size = OnceLock::from(size);
    }
}

/// Shape of a record by kind number: bytes after the fixed header, and bytes per `vlen`
/// entry. `UNKNOWN` marks kind numbers with no record layout.
const SHAPES: [(u8, u8); 32] = [
    UNKNOWN, // 0: void has no record
    (4, 0),  // INT: encoding word
    (0, 0),  // PTR
    (12, 0), // ARRAY: struct btf_array
    (0, 12), // STRUCT: struct btf_member per member
    (0, 12), // UNION
    (0, 8),  // ENUM: struct btf_enum per value
    (0, 0),  // FWD
    (0, 0),  // TYPEDEF
    (0, 0),  // VOLATILE
    (0, 0),  // CONST
    (0, 0),  // RESTRICT
    (0, 0),  // FUNC
    (0, 8),  // FUNC_PROTO: struct btf_param per parameter
    (4, 0),  // VAR: struct btf_var
    (0, 12), // DATASEC: struct btf_var_secinfo per variable
    (0, 0),  // FLOAT
    (4, 0),  // DECL_TAG: struct btf_decl_tag
    (0, 0),  // TYPE_TAG
    (0, 12), // ENUM64: struct btf_enum64 per value
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
];
const UNKNOWN: (u8, u8) = (u8::MAX, u8::MAX);

/// Walks the type section once, reading only each record's `info` word and skipping its
/// trailing entries, and returns the offset of every record.
fn index(
    endian: Endian,
    types: &[u8],
    types_start: usize,
    first_id: u32,
) -> Result<Vec<u32>, Error> {
    // One copy of the loop per byte order, so the conversion is not a branch per record.
    let offsets = match endian {
        Endian::Little => index_with(|w| Endian::Little.u32(w), types),
        Endian::Big => index_with(|w| Endian::Big.u32(w), types),
    }
    .map_err(|(pos, indexed)| index_error(endian, types, types_start, pos, first_id, indexed))?;
    if u32::try_from(offsets.len())
        .ok()
        .and_then(|n| first_id.checked_add(n))
        .is_none()
    {
        return Err(Error::new(ErrorKind::TooManyTypes, types_start));
    }
    Ok(offsets)
}

/// The index loop; on a record it cannot step over, returns its position and how many
/// records came before it.
#[inline]
fn index_with(read: impl Fn([u8; 4]) -> u32, types: &[u8]) -> Result<Vec<u32>, (usize, usize)> {
    // Records average over 16 bytes (a header alone is 12), so this rarely grows.
    let mut offsets = Vec::with_capacity(types.len() / 16);
    let mut pos = 0usize;
    while pos < types.len() {
        let Some(Ok((hdr, _))) = types.get(pos..).map(raw::TypeHeader::ref_from_prefix) else {
            return Err((pos, offsets.len()));
        };
        let (kind, _, vlen) = split_info(read(hdr.info));
        // The record length from register arithmetic only (no table load on the
        // loop-carried dependency): `FIXED_CODES`/`PER_CODES` hold, 2 bits per kind
        // number, the `SHAPES` sizes divided by 4.
        let shift = 2 * u32::from(kind);
        let fixed = ((FIXED_CODES >> shift) & 3) as usize * 4;
        let per = ((PER_CODES >> shift) & 3) as usize * 4;
        let len = TYPE_HEADER_LEN + fixed + per * usize::from(vlen);
        if KNOWN_KINDS >> kind & 1 == 0 || len > types.len() - pos {
            return Err((pos, offsets.len()));
        }
        // `types` is at most u32::MAX bytes long (its length is a u32 header field).
        #[expect(
            clippy::cast_possible_truncation,
            reason = "pos < types.len() <= u32::MAX"
        )]
        offsets.push(pos as u32);
        pos += len;
    }
    Ok(offsets)
}

/// The error for the record at `pos`, which the index loop could not step over.
#[cold]
fn index_error(
    endian: Endian,
    types: &[u8],
    types_start: usize,
    pos: usize,
    first_id: u32,
    indexed: usize,
) -> Error {
    let at = types_start + pos;
    let rest = types.get(pos..).unwrap_or_default();
    let id = TypeId(
        u32::try_from(indexed)
            .ok()
            .and_then(|n| first_id.checked_add(n))
            .unwrap_or(u32::MAX),
    );
    let Some(&[_, _, _, _, i0, i1, i2, i3, ..]) = rest.get(..TYPE_HEADER_LEN) else {
        return Error::new(
            ErrorKind::Truncated {
                what: "type record",
                needed: TYPE_HEADER_LEN,
                available: rest.len(),
            },
            at,
        );
    };
    let (kind, _, vlen) = split_info(endian.u32([i0, i1, i2, i3]));
    match Kind::from_raw(kind) {
        None => Error::new(ErrorKind::UnknownKind { id, kind }, at),
        Some(_) => Error::new(ErrorKind::VlenPastEnd { id, vlen }, at),
    }
}

#[cfg(test)]
mod packed_shapes {
    use super::{FIXED_CODES, KNOWN_KINDS, PER_CODES, tail_len};
    use crate::Kind;

    #[test]
    fn packed_codes_agree_with_tail_len() {
        for raw in 0u8..32 {
            let shift = 2 * u32::from(raw);
            let known = KNOWN_KINDS >> raw & 1 == 1;
            assert_eq!(known, Kind::from_raw(raw).is_some(), "kind {raw}");
            if let Some(kind) = Kind::from_raw(raw) {
                for vlen in [0, 1, 7, u16::MAX] {
                    let fixed = usize::try_from((FIXED_CODES >> shift) & 3).unwrap() * 4;
                    let per = usize::try_from((PER_CODES >> shift) & 3).unwrap() * 4;
                    assert_eq!(
                        fixed + per * usize::from(vlen),
                        tail_len(kind, vlen),
                        "{kind}"
                    );
                }
            }
        }
    }
}
