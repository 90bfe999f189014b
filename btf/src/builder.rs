//! A small encoder for BTF blobs: test fixtures, split blobs, re-encoded sections.

use crate::raw::{Endian, HEADER_LEN, MAGIC, VERSION};
use crate::{Btf, Kind, StrOffset, TypeId};

/// Encodes a BTF blob one type record at a time.
///
/// Records are written as given: nothing is checked, so the builder can also produce
/// malformed blobs on purpose.
#[derive(Clone, Debug)]
pub struct Builder {
    endian: Endian,
    types: Vec<u8>,
    strings: Vec<u8>,
    str_base: u32,
    next_id: u32,
}

impl Builder {
    /// An empty standalone blob: no types, and the string section holding only `""`.
    #[must_use]
    pub fn new(endian: Endian) -> Self {
        Self {
            endian,
            types: Vec::new(),
            strings: vec![0],
            str_base: 0,
            next_id: 1,
        }
    }

    /// An empty split blob on top of `base`: ids and string offsets continue after it.
    #[must_use]
    pub fn split(endian: Endian, base: &Btf<'_>) -> Self {
        let (mut next_id, mut str_base) = (1u32, 0u32);
        let mut cur = Some(base);
        while let Some(b) = cur {
            #[expect(clippy::cast_possible_truncation, reason = "parsed counts fit in u32")]
            {
                next_id = next_id.saturating_add(b.type_count() as u32);
                str_base = str_base.saturating_add(b.string_section().len() as u32);
            }
            cur = b.base();
        }
        Self {
            endian,
            types: Vec::new(),
            strings: Vec::new(),
            str_base,
            next_id,
        }
    }

    /// Appends `s` to the string section and returns its offset; `""` in a standalone
    /// blob is offset 0.
    pub fn string(&mut self, s: &str) -> StrOffset {
        if s.is_empty() && self.str_base == 0 {
            return StrOffset(0);
        }
        #[expect(clippy::cast_possible_truncation, reason = "fixture blobs are small")]
        let off = self.str_base + self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        StrOffset(off)
    }

    /// Appends a type record with the given header fields and trailing `u32` words,
    /// returning its id.
    pub fn add(
        &mut self,
        name: StrOffset,
        kind: Kind,
        kind_flag: bool,
        vlen: u16,
        size_or_type: u32,
        tail: &[u32],
    ) -> TypeId {
        let info = (u32::from(kind_flag) << 31) | ((kind as u32) << 24) | u32::from(vlen);
        self.add_raw(name.0, info, size_or_type, tail)
    }

    /// Appends a record with a raw `info` word (any kind number, even unknown ones).
    pub fn add_raw(&mut self, name_off: u32, info: u32, size_or_type: u32, tail: &[u32]) -> TypeId {
        for word in [name_off, info, size_or_type].iter().chain(tail) {
            self.types.extend_from_slice(&self.endian.u32_bytes(*word));
        }
        let id = TypeId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// The id the next record will get.
    #[must_use]
    pub const fn next_id(&self) -> TypeId {
        TypeId(self.next_id)
    }

    /// The encoded blob: header, type section, string section.
    #[must_use]
    #[expect(clippy::cast_possible_truncation, reason = "fixture blobs are small")]
    pub fn finish(&self) -> Vec<u8> {
        let e = self.endian;
        let mut out = Vec::with_capacity(HEADER_LEN + self.types.len() + self.strings.len());
        out.extend_from_slice(&e.u16_bytes(MAGIC));
        out.push(VERSION);
        out.push(0);
        for word in [
            HEADER_LEN as u32,
            0,
            self.types.len() as u32,
            self.types.len() as u32,
            self.strings.len() as u32,
        ] {
            out.extend_from_slice(&e.u32_bytes(word));
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}
