//! The text dump of every type, in the format of `bpftool btf dump file FILE`.

use core::fmt;
use std::borrow::Cow;
use std::io::{self, Write};

use crate::printable::printable;
use crate::{Btf, Detail, Error, ErrorKind, StrOffset};

/// Failure to dump: a malformed blob or a failed write.
#[derive(Debug)]
#[non_exhaustive]
pub enum DumpError {
    /// A name or a record could not be read.
    Btf(Error),
    /// The output could not be written.
    Io(io::Error),
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Btf(_) => f.write_str("cannot read BTF"),
            Self::Io(_) => f.write_str("cannot write the dump"),
        }
    }
}

impl std::error::Error for DumpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Btf(e) => Some(e),
            Self::Io(e) => Some(e),
        }
    }
}

impl From<Error> for DumpError {
    fn from(e: Error) -> Self {
        Self::Btf(e)
    }
}

impl From<io::Error> for DumpError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// A name as `bpftool` prints it: `(anon)` for offset 0; a name holding control
/// characters is escaped ([`printable`]) so it cannot spoof lines of the dump.
fn name<'a>(btf: &'a Btf<'_>, off: StrOffset) -> Result<Cow<'a, str>, Error> {
    if off.0 == 0 {
        Ok(Cow::Borrowed("(anon)"))
    } else {
        btf.string_at(off).map(printable)
    }
}

/// Writes every type `btf` defines (for split BTF, not the base's) in the raw text
/// format of `bpftool btf dump file`, one type per line followed by its members,
/// values, parameters or variables on tab-indented lines.
///
/// Fails on the first name that cannot be read, so a dump that succeeds has printed
/// every type completely.
///
/// # Errors
/// [`DumpError::Btf`] for an unreadable name, [`DumpError::Io`] if writing fails.
pub fn write_raw_dump<W: Write>(btf: &Btf<'_>, out: &mut W) -> Result<(), DumpError> {
    for (id, t) in btf.types() {
        write!(
            out,
            "[{}] {} '{}'",
            id.0,
            t.kind().name(),
            name(btf, t.name_off())?
        )?;
        match t.detail() {
            Detail::Int(int) => {
                let enc = match int.encoding.0 {
                    0 => "(none)",
                    1 => "SIGNED",
                    2 => "CHAR",
                    4 => "BOOL",
                    _ => "UNKN",
                };
                write!(
                    out,
                    " size={} bits_offset={} nr_bits={} encoding={enc}",
                    int.size, int.offset, int.bits
                )?;
            }
            Detail::Ptr(target)
            | Detail::Const(target)
            | Detail::Volatile(target)
            | Detail::Restrict(target)
            | Detail::Typedef(target)
            | Detail::TypeTag(target) => write!(out, " type_id={}", target.0)?,
            Detail::Array(a) => write!(
                out,
                " type_id={} index_type_id={} nr_elems={}",
                a.elem.0, a.index.0, a.nelems
            )?,
            Detail::Struct(c) | Detail::Union(c) => {
                write!(out, " size={} vlen={}", c.size, t.vlen())?;
                for m in c.members {
                    write!(
                        out,
                        "\n\t'{}' type_id={} bits_offset={}",
                        name(btf, m.name_off)?,
                        m.ty.0,
                        m.bit_offset
                    )?;
                    if m.bitfield_size != 0 {
                        write!(out, " bitfield_size={}", m.bitfield_size)?;
                    }
                }
            }
            Detail::Enum(e) | Detail::Enum64(e) => {
                let enc = if e.signed { "SIGNED" } else { "UNSIGNED" };
                write!(out, " encoding={enc} size={} vlen={}", e.size, t.vlen())?;
                let wide = matches!(t.kind(), crate::Kind::Enum64);
                for v in e.values {
                    let n = name(btf, v.name_off)?;
                    match (wide, e.signed) {
                        (false, false) => write!(out, "\n\t'{n}' val={}", v.as_u64())?,
                        (false, true) => write!(out, "\n\t'{n}' val={}", v.as_i64())?,
                        (true, false) => write!(out, "\n\t'{n}' val={}ULL", v.as_u64())?,
                        (true, true) => write!(out, "\n\t'{n}' val={}LL", v.as_i64())?,
                    }
                }
            }
            Detail::Fwd { is_union } => {
                write!(
                    out,
                    " fwd_kind={}",
                    if is_union { "union" } else { "struct" }
                )?;
            }
            Detail::Func(f) => write!(
                out,
                " type_id={} linkage={}",
                f.proto.0,
                f.linkage.name().unwrap_or("(unknown)")
            )?,
            Detail::FuncProto(p) => {
                write!(out, " ret_type_id={} vlen={}", p.ret.0, t.vlen())?;
                for param in p.params {
                    write!(
                        out,
                        "\n\t'{}' type_id={}",
                        name(btf, param.name_off)?,
                        param.ty.0
                    )?;
                }
            }
            Detail::Var(v) => write!(
                out,
                " type_id={}, linkage={}",
                v.ty.0,
                v.linkage.name().unwrap_or("(unknown)")
            )?,
            Detail::Datasec(d) => {
                write!(out, " size={} vlen={}", d.size, t.vlen())?;
                for v in d.vars {
                    write!(
                        out,
                        "\n\ttype_id={} offset={} size={}",
                        v.ty.0, v.offset, v.size
                    )?;
                    // bpftool names the variable when the id is in range; id 0 is the
                    // kind-0 `void` record.
                    match btf.type_by_id(v.ty) {
                        Ok(vt) => write!(
                            out,
                            " ({} '{}')",
                            vt.kind().name(),
                            name(btf, vt.name_off())?
                        )?,
                        Err(e) if e.kind() == ErrorKind::Void => {
                            write!(out, " (UNKNOWN '(anon)')")?;
                        }
                        Err(_) => {}
                    }
                }
            }
            Detail::Float { size } => write!(out, " size={size}")?,
            Detail::DeclTag(tag) => write!(
                out,
                " type_id={} component_idx={}",
                tag.target.0, tag.component_idx
            )?,
        }
        out.write_all(b"\n")?;
    }
    Ok(())
}
