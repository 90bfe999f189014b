//! The parser's error: what was expected, and at which byte offset of the input.

use core::fmt;

use crate::{Kind, StrOffset, TypeId};

/// A malformed blob or a query that cannot be answered.
///
/// Small and `Copy` so that building one costs nothing on the success path. `offset()` is
/// a byte offset into the blob given to [`Btf::parse`](crate::Btf::parse) (for split BTF,
/// into the split blob for its own records, into the base blob for base records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    offset: usize,
}

/// What went wrong; carried by [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The blob ends before a record that must be there.
    Truncated {
        /// What was being read.
        what: &'static str,
        /// How many bytes that needs.
        needed: usize,
        /// How many bytes were left.
        available: usize,
    },
    /// The first two bytes are not `0xeB9F` in either byte order.
    BadMagic {
        /// The two bytes found.
        found: [u8; 2],
    },
    /// The header's version is not 1.
    BadVersion {
        /// The version found.
        found: u8,
    },
    /// `hdr_len` is smaller than `struct btf_header` or larger than the blob.
    BadHeaderLen {
        /// The `hdr_len` found.
        hdr_len: u32,
    },
    /// A section described by the header does not fit in the blob.
    SectionOutOfBounds {
        /// `"type"` or `"string"`.
        section: &'static str,
        /// The section's offset, relative to the end of the header.
        off: u32,
        /// The section's length.
        len: u32,
    },
    /// A section offset is not a multiple of 4.
    Misaligned {
        /// `"type"` or `"string"`.
        section: &'static str,
        /// The offending offset.
        off: u32,
    },
    /// The string section is empty or does not start with the empty string.
    BadStringSection,
    /// A string offset points past the end of the string section.
    StringOffsetOutOfRange {
        /// The offset asked for.
        off: StrOffset,
    },
    /// A string runs to the end of the string section without a NUL byte.
    UnterminatedString {
        /// The offset of the string.
        off: StrOffset,
    },
    /// A string is not valid UTF-8.
    InvalidUtf8 {
        /// The offset of the string.
        off: StrOffset,
    },
    /// A type id names no type of this blob (or its base).
    TypeIdOutOfRange {
        /// The id asked for.
        id: TypeId,
    },
    /// Type id 0 (`void`) was used where a real type is needed.
    Void,
    /// A type's trailing records (`vlen` of them) run past the end of the type section.
    VlenPastEnd {
        /// The type's id.
        id: TypeId,
        /// Its `vlen`.
        vlen: u16,
    },
    /// A type record's kind is not one this parser knows.
    UnknownKind {
        /// The type's id.
        id: TypeId,
        /// The raw kind number.
        kind: u8,
    },
    /// There are more types than fit in the 32-bit id space.
    TooManyTypes,
    /// Following typedef/modifier/array references did not reach a sized type in time:
    /// a reference cycle (`typedef a a;`) or a chain deeper than the limit.
    ReferenceDepth {
        /// The type the walk started from.
        id: TypeId,
    },
    /// The query needs a type of another kind (e.g. the layout of an `INT`).
    UnexpectedKind {
        /// The type's id.
        id: TypeId,
        /// Its kind.
        kind: Kind,
    },
    /// The type has no size (`void`, `FWD`, `FUNC`, `FUNC_PROTO`, `DECL_TAG`).
    NoSize {
        /// The type's id.
        id: TypeId,
    },
    /// A size or offset computation overflowed.
    Overflow {
        /// The type's id.
        id: TypeId,
    },
}

impl Error {
    pub(crate) const fn new(kind: ErrorKind, offset: usize) -> Self {
        Self { kind, offset }
    }

    /// What went wrong.
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Byte offset in the input where the problem was found.
    #[must_use]
    pub const fn offset(&self) -> usize {
        self.offset
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte offset {}", self.kind, self.offset)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated {
                what,
                needed,
                available,
            } => write!(
                f,
                "truncated {what}: needs {needed} bytes, {available} available"
            ),
            Self::BadMagic { found } => write!(
                f,
                "bad BTF magic: first bytes {:02x} {:02x}, expected 9f eb (magic 0xeb9f \
                 little-endian) or eb 9f (big-endian)",
                found[0], found[1]
            ),
            Self::BadVersion { found } => {
                write!(f, "unsupported BTF version {found}, expected 1")
            }
            Self::BadHeaderLen { hdr_len } => write!(
                f,
                "bad BTF header length {hdr_len}: must be at least 24 and within the blob"
            ),
            Self::SectionOutOfBounds { section, off, len } => write!(
                f,
                "{section} section (offset {off}, length {len}) lies outside the blob"
            ),
            Self::Misaligned { section, off } => {
                write!(f, "{section} section offset {off} is not 4-byte aligned")
            }
            Self::BadStringSection => write!(
                f,
                "string section must start with an empty string and end with a NUL byte"
            ),
            Self::StringOffsetOutOfRange { off } => {
                write!(f, "string offset {} is past the string section", off.0)
            }
            Self::UnterminatedString { off } => {
                write!(f, "string at offset {} has no terminating NUL", off.0)
            }
            Self::InvalidUtf8 { off } => write!(f, "string at offset {} is not UTF-8", off.0),
            Self::TypeIdOutOfRange { id } => write!(f, "type id {} is out of range", id.0),
            Self::Void => write!(f, "type id 0 (void) has no record"),
            Self::VlenPastEnd { id, vlen } => write!(
                f,
                "type {} has vlen {vlen}, its records run past the type section",
                id.0
            ),
            Self::UnknownKind { id, kind } => write!(f, "type {} has unknown kind {kind}", id.0),
            Self::TooManyTypes => write!(f, "more types than the 32-bit id space holds"),
            Self::ReferenceDepth { id } => write!(
                f,
                "references from type {} form a cycle or a chain that is too deep",
                id.0
            ),
            Self::UnexpectedKind { id, kind } => {
                write!(f, "type {} is a {kind}, not usable here", id.0)
            }
            Self::NoSize { id } => write!(f, "type {} has no size", id.0),
            Self::Overflow { id } => write!(f, "size of type {} overflows", id.0),
        }
    }
}

impl std::error::Error for Error {}
