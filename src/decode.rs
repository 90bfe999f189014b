//! Map entries as text or JSON, decoded by the key and value layouts of a map's spec
//! ([`MapModel`]): fields by name, integers as numbers, enums by constant name,
//! arrays, nested structs and unions, bitfields, `char` arrays as strings, and one
//! value per CPU for per-CPU maps.
//!
//! A layout is compiled once into a flat list of operations over byte offsets
//! ([`EntryFormat::new`]); formatting an entry then runs that list, writing into a
//! caller's buffer without allocating, which is what lets `handover dump` print
//! millions of entries quickly.

use std::fmt::Write as _;

use crate::{MapModel, TypeLayout};

/// How entries are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `key: {addr: 1, port: 2}  value: {...}`, names escaped as every text output.
    Text,
    /// One JSON object per entry: `{"key":...,"value":...}`, or `"values":[{"cpu":0,
    /// "value":...}]` for per-CPU maps.
    Json,
}

/// Nesting past this depth is printed as hex (layouts are bounded by the BTF
/// parser's depth already; this keeps the compiler's recursion bounded on its own).
const MAX_DEPTH: usize = 32;

/// One operation of a compiled layout.
#[derive(Debug, Clone)]
enum Op {
    /// Literal text: `lits[start..end]`.
    Lit(usize, usize),
    /// A whole-byte integer.
    Int {
        off: usize,
        size: usize,
        signed: bool,
    },
    /// `_Bool`.
    Bool { off: usize },
    /// Integers of an array, separated by `, ` or `,`.
    Ints {
        off: usize,
        size: usize,
        signed: bool,
        len: usize,
    },
    /// A bitfield: `bits` bits from bit `bit` of the value.
    Bits { bit: u64, bits: u32, signed: bool },
    /// A float of 4 or 8 bytes.
    Float { off: usize, size: usize },
    /// An enum: the constant's name when one has the value, else the number.
    Enum {
        off: usize,
        size: usize,
        signed: bool,
        names: Vec<(u64, String)>,
    },
    /// A `char` array: a string up to its first NUL when that is printable ASCII,
    /// else the numbers.
    Chars { off: usize, len: usize },
    /// An array of a compound element: `len` times `elem` at `stride`.
    Array {
        off: usize,
        stride: usize,
        len: usize,
        elem: Box<Format>,
    },
    /// Bytes without a layout, as hex.
    Hex { off: usize, len: usize },
}

/// A compiled layout: operations and the literal text they refer to.
#[derive(Debug, Clone, Default)]
struct Format {
    ops: Vec<Op>,
    lits: String,
}

struct Compiler {
    style: Style,
    out: Format,
}

impl Compiler {
    fn lit(&mut self, s: &str) {
        // Adjacent literals are merged: fewer operations per entry.
        let start = self.out.lits.len();
        self.out.lits.push_str(s);
        let end = self.out.lits.len();
        if let Some(Op::Lit(_, e)) = self.out.ops.last_mut()
            && *e == start
        {
            *e = end;
            return;
        }
        self.out.ops.push(Op::Lit(start, end));
    }

    fn sep(&self) -> &'static str {
        match self.style {
            Style::Text => ", ",
            Style::Json => ",",
        }
    }

    fn name(&mut self, name: &str) {
        match self.style {
            Style::Text => {
                let shown = handover_btf::printable(name).into_owned();
                self.lit(&shown);
                self.lit(": ");
            }
            Style::Json => {
                let quoted = serde_json::to_string(name).unwrap_or_else(|_| "\"?\"".into());
                self.lit(&quoted);
                self.lit(":");
            }
        }
    }

    /// Compiles `t` at byte `off` (bit `bit` for bitfields inside it).
    fn layout(&mut self, t: &TypeLayout, off: usize, depth: usize) {
        let size = t.size().and_then(|s| usize::try_from(s).ok()).unwrap_or(0);
        if depth >= MAX_DEPTH {
            self.out.ops.push(Op::Hex { off, len: size });
            return;
        }
        match t.peel() {
            TypeLayout::Int {
                name,
                size,
                signed,
                bits,
                bit_offset,
            } => {
                let bytes = *size as usize;
                if *bit_offset != 0 || *bits != size * 8 {
                    self.out.ops.push(Op::Bits {
                        bit: off as u64 * 8 + u64::from(*bit_offset),
                        bits: *bits,
                        signed: *signed,
                    });
                } else if name == "_Bool" && bytes == 1 {
                    self.out.ops.push(Op::Bool { off });
                } else if matches!(bytes, 1 | 2 | 4 | 8 | 16) {
                    self.out.ops.push(Op::Int {
                        off,
                        size: bytes,
                        signed: *signed,
                    });
                } else {
                    self.out.ops.push(Op::Hex { off, len: bytes });
                }
            }
            TypeLayout::Float { size, .. } if matches!(size, 4 | 8) => {
                self.out.ops.push(Op::Float {
                    off,
                    size: *size as usize,
                });
            }
            TypeLayout::Ptr { size, .. } if matches!(size, 4 | 8) => {
                self.out.ops.push(Op::Int {
                    off,
                    size: *size as usize,
                    signed: false,
                });
            }
            TypeLayout::Enum {
                size,
                signed,
                values,
                ..
            } if matches!(size, 1 | 2 | 4 | 8) => {
                let names = values
                    .iter()
                    .map(|v| {
                        let shown = match self.style {
                            Style::Text => handover_btf::printable(&v.name).into_owned(),
                            Style::Json => {
                                serde_json::to_string(&v.name).unwrap_or_else(|_| "\"?\"".into())
                            }
                        };
                        (v.value, shown)
                    })
                    .collect();
                self.out.ops.push(Op::Enum {
                    off,
                    size: *size as usize,
                    signed: *signed,
                    names,
                });
            }
            TypeLayout::Struct { members, .. } | TypeLayout::Union { members, .. } => {
                self.lit("{");
                let mut first = true;
                self.members(members, off, depth, &mut first);
                self.lit("}");
            }
            TypeLayout::Array { elem, len } => self.array(elem, *len as usize, off, depth),
            _ => self.out.ops.push(Op::Hex { off, len: size }),
        }
    }

    fn members(&mut self, members: &[crate::Member], off: usize, depth: usize, first: &mut bool) {
        for m in members {
            let byte = usize::try_from(m.bit_offset / 8).unwrap_or(usize::MAX);
            let at = off.saturating_add(byte);
            match &m.name {
                // An anonymous struct or union: its members belong to the parent, as
                // in C.
                None => {
                    if let TypeLayout::Struct { members, .. } | TypeLayout::Union { members, .. } =
                        m.ty.peel()
                    {
                        self.members(members, at, depth + 1, first);
                    }
                }
                Some(name) => {
                    if !*first {
                        let sep = self.sep();
                        self.lit(sep);
                    }
                    *first = false;
                    self.name(name);
                    if m.bitfield_size != 0 {
                        let signed = matches!(
                            m.ty.peel(),
                            TypeLayout::Int { signed: true, .. }
                                | TypeLayout::Enum { signed: true, .. }
                        );
                        self.out.ops.push(Op::Bits {
                            bit: off as u64 * 8 + m.bit_offset,
                            bits: m.bitfield_size,
                            signed,
                        });
                    } else {
                        self.layout(&m.ty, at, depth + 1);
                    }
                }
            }
        }
    }

    fn array(&mut self, elem: &TypeLayout, len: usize, off: usize, depth: usize) {
        let stride = elem
            .size()
            .and_then(|s| usize::try_from(s).ok())
            .unwrap_or(0);
        if let TypeLayout::Int {
            name,
            size,
            signed,
            bits,
            bit_offset: 0,
        } = elem.peel()
            && *bits == size * 8
            && matches!(size, 1 | 2 | 4 | 8 | 16)
        {
            if *size == 1 && name.contains("char") {
                self.out.ops.push(Op::Chars { off, len });
                return;
            }
            self.lit("[");
            self.out.ops.push(Op::Ints {
                off,
                size: *size as usize,
                signed: *signed,
                len,
            });
            self.lit("]");
            return;
        }
        let mut sub = Compiler {
            style: self.style,
            out: Format::default(),
        };
        sub.layout(elem, 0, depth + 1);
        self.lit("[");
        self.out.ops.push(Op::Array {
            off,
            stride,
            len,
            elem: Box::new(sub.out),
        });
        self.lit("]");
    }
}

fn compile(layout: Option<&TypeLayout>, size: usize, style: Style) -> Format {
    let mut c = Compiler {
        style,
        out: Format::default(),
    };
    match layout {
        Some(t) if t.size() == Some(size as u64) => c.layout(t, 0, 0),
        _ => c.out.ops.push(Op::Hex { off: 0, len: size }),
    }
    c.out
}

/// The compiled format of one map's entries.
#[derive(Debug, Clone)]
pub struct EntryFormat {
    style: Style,
    key: Format,
    value: Format,
    key_size: usize,
    value_size: usize,
    /// Per-CPU maps: the number of CPUs and the bytes of one CPU's slot.
    per_cpu: Option<(usize, usize)>,
}

impl EntryFormat {
    /// The format of entries of `model` (its layouts; bytes without one are hex), on
    /// a machine with `cpus` possible CPUs (per-CPU maps hold one value per CPU, each
    /// in a slot rounded up to 8 bytes, as the syscalls read them).
    #[must_use]
    pub fn new(model: &MapModel, cpus: usize, style: Style) -> Self {
        let key_size = model.key_size as usize;
        let value_size = model.value_size as usize;
        Self {
            style,
            key: compile(model.key.as_ref(), key_size, style),
            value: compile(model.value.as_ref(), value_size, style),
            key_size,
            value_size,
            per_cpu: model
                .map_type
                .is_per_cpu()
                .then(|| (cpus.max(1), value_size.next_multiple_of(8))),
        }
    }

    /// Bytes of one key.
    #[must_use]
    pub fn key_len(&self) -> usize {
        self.key_size
    }

    /// Bytes of one value as the syscalls read it (all CPUs' slots for per-CPU maps).
    #[must_use]
    pub fn value_len(&self) -> usize {
        self.per_cpu
            .map_or(self.value_size, |(cpus, slot)| cpus * slot)
    }

    /// Appends one entry, without a line end, to `out`.
    pub fn write(&self, key: &[u8], value: &[u8], out: &mut Vec<u8>) {
        let json = self.style == Style::Json;
        out.extend_from_slice(if json { b"{\"key\":" } else { b"key: " });
        run(&self.key, key, self.style, out);
        match self.per_cpu {
            None => {
                out.extend_from_slice(if json { b",\"value\":" } else { b"  value: " });
                run(&self.value, value, self.style, out);
            }
            Some((cpus, slot)) => {
                out.extend_from_slice(if json { b",\"values\":[" } else { b"  values:" });
                let mut buf = itoa::Buffer::new();
                for cpu in 0..cpus {
                    let v = value
                        .get(cpu * slot..cpu * slot + self.value_size)
                        .unwrap_or_default();
                    if json {
                        if cpu > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(b"{\"cpu\":");
                        out.extend_from_slice(buf.format(cpu).as_bytes());
                        out.extend_from_slice(b",\"value\":");
                        run(&self.value, v, self.style, out);
                        out.push(b'}');
                    } else {
                        out.extend_from_slice(b" cpu");
                        out.extend_from_slice(buf.format(cpu).as_bytes());
                        out.extend_from_slice(b": ");
                        run(&self.value, v, self.style, out);
                    }
                }
                if json {
                    out.push(b']');
                }
            }
        }
        if json {
            out.push(b'}');
        }
    }
}

fn field(bytes: &[u8], off: usize, size: usize) -> &[u8] {
    bytes.get(off..off.saturating_add(size)).unwrap_or_default()
}

fn read_u128(b: &[u8]) -> u128 {
    let mut buf = [0u8; 16];
    if cfg!(target_endian = "little") {
        for (d, s) in buf.iter_mut().zip(b) {
            *d = *s;
        }
        u128::from_le_bytes(buf)
    } else {
        let start = 16usize.saturating_sub(b.len());
        for (d, s) in buf.iter_mut().skip(start).zip(b) {
            *d = *s;
        }
        u128::from_be_bytes(buf)
    }
}

/// The integer of `size` bytes at `off`, sign-extended when `signed`.
fn int_at(bytes: &[u8], off: usize, size: usize, signed: bool) -> i128 {
    let raw = read_u128(field(bytes, off, size));
    extend(raw, u32::try_from(size * 8).unwrap_or(128), signed)
}

fn extend(raw: u128, bits: u32, signed: bool) -> i128 {
    if bits == 0 || bits >= 128 {
        return raw.cast_signed();
    }
    let masked = raw & ((1u128 << bits) - 1);
    if signed && masked >> (bits - 1) == 1 {
        (masked | !((1u128 << bits) - 1)).cast_signed()
    } else {
        masked.cast_signed()
    }
}

/// `bits` bits at bit `bit` of the value, as BTF numbers them: from the lowest bit of
/// the first byte on little-endian machines, from the highest on big-endian ones.
fn bits_at(bytes: &[u8], bit: u64, bits: u32, signed: bool) -> i128 {
    let first = usize::try_from(bit / 8).unwrap_or(usize::MAX);
    let shift = (bit % 8) as u32;
    let span = (shift + bits).div_ceil(8) as usize;
    let chunk = field(bytes, first, span.min(16));
    let raw = read_u128(chunk);
    let raw = if cfg!(target_endian = "little") {
        raw >> shift
    } else {
        raw >> (u32::try_from(span * 8).unwrap_or(128)).saturating_sub(shift + bits)
    };
    extend(raw, bits, signed)
}

fn number(v: i128, signed: bool, size: usize, out: &mut Vec<u8>) {
    let mut buf = itoa::Buffer::new();
    if signed {
        out.extend_from_slice(buf.format(v).as_bytes());
    } else {
        // An unsigned value of 16 bytes can use the top bit.
        let u = if size >= 16 {
            v.cast_unsigned()
        } else {
            v.cast_unsigned() & ((1u128 << (size * 8)) - 1)
        };
        out.extend_from_slice(buf.format(u).as_bytes());
    }
}

fn hex(bytes: &[u8], json: bool, out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    if json {
        out.push(b'"');
    }
    for b in bytes {
        for nibble in [b >> 4, b & 15] {
            out.push(DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'?'));
        }
    }
    if json {
        out.push(b'"');
    }
}

fn run(f: &Format, bytes: &[u8], style: Style, out: &mut Vec<u8>) {
    let json = style == Style::Json;
    for op in &f.ops {
        match op {
            Op::Lit(s, e) => out.extend_from_slice(f.lits.get(*s..*e).unwrap_or("").as_bytes()),
            Op::Int { off, size, signed } => {
                number(int_at(bytes, *off, *size, *signed), *signed, *size, out);
            }
            Op::Bool { off } => {
                let set = field(bytes, *off, 1).first().is_some_and(|b| *b != 0);
                out.extend_from_slice(if set { b"true" } else { b"false" });
            }
            Op::Ints {
                off,
                size,
                signed,
                len,
            } => {
                for i in 0..*len {
                    if i > 0 {
                        out.extend_from_slice(if json { b"," } else { b", " });
                    }
                    number(
                        int_at(bytes, off + i * size, *size, *signed),
                        *signed,
                        *size,
                        out,
                    );
                }
            }
            Op::Bits { bit, bits, signed } => {
                let v = bits_at(bytes, *bit, *bits, *signed);
                let mut buf = itoa::Buffer::new();
                out.extend_from_slice(buf.format(v).as_bytes());
            }
            Op::Float { off, size } => {
                let b = field(bytes, *off, *size);
                let v = match (*size, b.try_into(), b.try_into()) {
                    (4, Ok(a), _) => f64::from(f32::from_ne_bytes(a)),
                    (8, _, Ok(a)) => f64::from_ne_bytes(a),
                    _ => f64::NAN,
                };
                if v.is_finite() {
                    let mut s = String::new();
                    let _ = write!(s, "{v:?}");
                    out.extend_from_slice(s.as_bytes());
                } else if json {
                    // JSON has no NaN or infinity.
                    out.extend_from_slice(b"null");
                } else {
                    let _ = std::io::Write::write_fmt(out, format_args!("{v}"));
                }
            }
            Op::Enum {
                off,
                size,
                signed,
                names,
            } => {
                let v = int_at(bytes, *off, *size, *signed);
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "enums are at most 8 bytes: the low 64 bits are the value"
                )]
                let raw = v.cast_unsigned() as u64;
                match names.iter().find(|(n, _)| {
                    // Constants are kept as their 64 raw bits; compare as many as the
                    // enum has.
                    let mask = if *size >= 8 {
                        u64::MAX
                    } else {
                        (1u64 << (size * 8)) - 1
                    };
                    n & mask == raw & mask
                }) {
                    Some((_, name)) => out.extend_from_slice(name.as_bytes()),
                    None => number(v, *signed, *size, out),
                }
            }
            Op::Chars { off, len } => {
                let b = field(bytes, *off, *len);
                let text = b.split(|c| *c == 0).next().unwrap_or_default();
                if text.iter().all(|c| (0x20..0x7f).contains(c)) {
                    out.push(b'"');
                    for c in text {
                        if matches!(c, b'"' | b'\\') {
                            out.push(b'\\');
                        }
                        out.push(*c);
                    }
                    out.push(b'"');
                } else {
                    out.push(b'[');
                    for (i, c) in b.iter().enumerate() {
                        if i > 0 {
                            out.extend_from_slice(if json { b"," } else { b", " });
                        }
                        out.extend_from_slice(itoa::Buffer::new().format(*c).as_bytes());
                    }
                    out.push(b']');
                }
            }
            Op::Array {
                off,
                stride,
                len,
                elem,
            } => {
                for i in 0..*len {
                    if i > 0 {
                        out.extend_from_slice(if json { b"," } else { b", " });
                    }
                    let at = off + i * stride;
                    run(elem, field(bytes, at, *stride), style, out);
                }
            }
            Op::Hex { off, len } => hex(field(bytes, *off, *len), json, out),
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index values they built")]
mod tests {
    use super::*;
    use crate::{EnumValue, MapType, Member, Pinning};

    fn int(name: &str, size: u32, signed: bool) -> TypeLayout {
        TypeLayout::Int {
            name: name.into(),
            size,
            signed,
            bits: size * 8,
            bit_offset: 0,
        }
    }

    fn member(name: Option<&str>, byte: u64, ty: TypeLayout) -> Member {
        Member {
            name: name.map(Into::into),
            bit_offset: byte * 8,
            bitfield_size: 0,
            ty,
            renamed_from: None,
            merge: None,
        }
    }

    fn model(map_type: MapType, key: TypeLayout, value: TypeLayout) -> MapModel {
        MapModel {
            name: "m".into(),
            map_type,
            key_size: u32::try_from(key.size().unwrap()).unwrap(),
            value_size: u32::try_from(value.size().unwrap()).unwrap(),
            max_entries: 4,
            flags: 0,
            map_extra: 0,
            pinning: Pinning::None,
            key: Some(key),
            value: Some(value),
            inner: None,
            initial_data: None,
        }
    }

    fn show(m: &MapModel, cpus: usize, style: Style, key: &[u8], value: &[u8]) -> String {
        let mut out = Vec::new();
        EntryFormat::new(m, cpus, style).write(key, value, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fields_are_printed_by_name_with_their_types() {
        let value = TypeLayout::Struct {
            name: Some("v".into()),
            size: 24,
            members: vec![
                member(Some("count"), 0, int("long long unsigned int", 8, false)),
                member(Some("delta"), 8, int("int", 4, true)),
                member(
                    Some("kind"),
                    12,
                    TypeLayout::Enum {
                        name: Some("k".into()),
                        size: 4,
                        signed: false,
                        values: vec![EnumValue {
                            name: "K_TCP".into(),
                            value: 6,
                        }],
                    },
                ),
                member(
                    Some("name"),
                    16,
                    TypeLayout::Array {
                        elem: Box::new(int("char", 1, true)),
                        len: 4,
                    },
                ),
                Member {
                    bitfield_size: 3,
                    bit_offset: 20 * 8 + 1,
                    ..member(Some("flags"), 0, int("unsigned char", 1, false))
                },
                member(
                    None,
                    21,
                    TypeLayout::Struct {
                        name: None,
                        size: 3,
                        members: vec![member(
                            Some("ports"),
                            0,
                            TypeLayout::Array {
                                elem: Box::new(int("unsigned char", 1, false)),
                                len: 3,
                            },
                        )],
                    },
                ),
            ],
        };
        let m = model(MapType::Hash, int("unsigned int", 4, false), value);
        let mut v = Vec::new();
        v.extend_from_slice(&7u64.to_ne_bytes());
        v.extend_from_slice(&(-3i32).to_ne_bytes());
        v.extend_from_slice(&6u32.to_ne_bytes());
        v.extend_from_slice(b"ab\0\0");
        // flags = 5 at bits 1..4 of byte 20 (little-endian numbering).
        v.push(if cfg!(target_endian = "little") {
            5 << 1
        } else {
            5 << 4
        });
        v.extend_from_slice(&[1, 2, 3]);
        let k = 9u32.to_ne_bytes();
        assert_eq!(
            show(&m, 1, Style::Json, &k, &v),
            r#"{"key":9,"value":{"count":7,"delta":-3,"kind":"K_TCP","name":"ab","flags":5,"ports":[1,2,3]}}"#
        );
        assert_eq!(
            show(&m, 1, Style::Text, &k, &v),
            "key: 9  value: {count: 7, delta: -3, kind: K_TCP, name: \"ab\", flags: 5, ports: [1, 2, 3]}"
        );
        let parsed: serde_json::Value =
            serde_json::from_str(&show(&m, 1, Style::Json, &k, &v)).unwrap();
        assert_eq!(parsed["value"]["delta"], -3);
    }

    #[test]
    fn per_cpu_values_are_printed_per_cpu_from_their_8_byte_slots() {
        let m = model(
            MapType::PercpuArray,
            int("unsigned int", 4, false),
            int("unsigned int", 4, false),
        );
        let mut v = Vec::new();
        for c in [10u32, 20, 30] {
            v.extend_from_slice(&c.to_ne_bytes());
            v.extend_from_slice(&[0xff; 4]);
        }
        assert_eq!(
            show(&m, 3, Style::Json, &0u32.to_ne_bytes(), &v),
            r#"{"key":0,"values":[{"cpu":0,"value":10},{"cpu":1,"value":20},{"cpu":2,"value":30}]}"#
        );
        assert_eq!(
            show(&m, 3, Style::Text, &0u32.to_ne_bytes(), &v),
            "key: 0  values: cpu0: 10 cpu1: 20 cpu2: 30"
        );
        assert_eq!(EntryFormat::new(&m, 3, Style::Json).value_len(), 24);
    }

    #[test]
    fn bytes_without_a_layout_and_odd_names_stay_readable() {
        let mut m = model(
            MapType::Hash,
            int("unsigned int", 4, false),
            TypeLayout::Struct {
                name: None,
                size: 4,
                members: vec![member(
                    Some("a\"\nb"),
                    0,
                    TypeLayout::Array {
                        elem: Box::new(int("char", 1, false)),
                        len: 4,
                    },
                )],
            },
        );
        m.key = None;
        let out = show(&m, 1, Style::Json, &[0x7f, 0, 0, 1], &[1, 0xff, 0, 0]);
        assert_eq!(out, r#"{"key":"7f000001","value":{"a\"\nb":[1,255,0,0]}}"#);
        let text = show(&m, 1, Style::Text, &[0x7f, 0, 0, 1], b"x\"y\0");
        assert_eq!(text, "key: 7f000001  value: {a\"\\nb: \"x\\\"y\"}");
    }
}
