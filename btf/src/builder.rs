//! A small encoder for BTF blobs: test fixtures, split blobs, re-encoded sections.

use crate::raw::{Endian, HEADER_LEN, MAGIC, VERSION};
use crate::{Btf, Detail, Error, Kind, StrOffset, Type, TypeId};

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
        self.append_string(s)
    }

    fn append_string(&mut self, s: &str) -> StrOffset {
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

    /// Appends a copy of `t`, a type of another blob: names are copied into this blob's
    /// string section and every type reference goes through `map`. Re-encoding every
    /// type of a blob in order with the identity map gives a blob that reads the same,
    /// in either byte order.
    ///
    /// # Errors
    /// A name of `t` cannot be read.
    pub fn add_copy(
        &mut self,
        t: &Type<'_>,
        map: &dyn Fn(TypeId) -> TypeId,
    ) -> Result<TypeId, Error> {
        // Offset 0 stays 0 (anonymous); any other name is appended, even an empty one,
        // so a copy reads exactly like the original.
        let name = |b: &mut Self, off: StrOffset, n: Result<&str, Error>| -> Result<u32, Error> {
            let n = n?;
            Ok(if off.0 == 0 { 0 } else { b.append_string(n).0 })
        };
        let own = name(self, t.name_off(), t.name())?;
        let mut tail = Vec::new();
        let mut size_or_type = t.size_or_type();
        match t.detail() {
            Detail::Int(i) => tail.push(
                u32::from(i.encoding.0) << 24 | u32::from(i.offset) << 16 | u32::from(i.bits),
            ),
            Detail::Array(a) => tail.extend([map(a.elem).0, map(a.index).0, a.nelems]),
            Detail::Struct(c) | Detail::Union(c) => {
                for m in c.members {
                    let off = if t.kind_flag() {
                        m.bitfield_size << 24 | m.bit_offset
                    } else {
                        m.bit_offset
                    };
                    tail.extend([name(self, m.name_off, m.name())?, map(m.ty).0, off]);
                }
            }
            Detail::Enum(e) | Detail::Enum64(e) => {
                for v in e.values {
                    let n = name(self, v.name_off, v.name())?;
                    let [h0, h1, h2, h3, l0, l1, l2, l3] = v.raw().to_be_bytes();
                    let (hi, lo) = (
                        u32::from_be_bytes([h0, h1, h2, h3]),
                        u32::from_be_bytes([l0, l1, l2, l3]),
                    );
                    if t.kind() == Kind::Enum {
                        tail.extend([n, lo]);
                    } else {
                        tail.extend([n, lo, hi]);
                    }
                }
            }
            Detail::FuncProto(p) => {
                size_or_type = map(p.ret).0;
                for param in p.params {
                    tail.extend([name(self, param.name_off, param.name())?, map(param.ty).0]);
                }
            }
            Detail::Var(v) => {
                size_or_type = map(v.ty).0;
                tail.push(v.linkage.0);
            }
            Detail::Datasec(d) => {
                for v in d.vars {
                    tail.extend([map(v.ty).0, v.offset, v.size]);
                }
            }
            Detail::DeclTag(tag) => {
                size_or_type = map(tag.target).0;
                tail.push(u32::from_ne_bytes(tag.component_idx.to_ne_bytes()));
            }
            Detail::Ptr(target)
            | Detail::Typedef(target)
            | Detail::Volatile(target)
            | Detail::Const(target)
            | Detail::Restrict(target)
            | Detail::TypeTag(target) => size_or_type = map(target).0,
            Detail::Func(f) => size_or_type = map(f.proto).0,
            Detail::Fwd { .. } | Detail::Float { .. } => {}
        }
        Ok(self.add_raw(own, t.info(), size_or_type, &tail))
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
