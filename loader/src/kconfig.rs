//! `__kconfig` externs: values a program reads from the running kernel's configuration
//! (`CONFIG_*`) and version (`LINUX_KERNEL_VERSION`), laid out in a `.kconfig` map and
//! filled at load time, by libbpf's rules. The configuration text and the kernel
//! release are arguments: reading them is the kernel layer's job.

use handover_btf::{Btf, Detail, Kind, TypeId};

use crate::error::ObjectError;

/// The section (and map) name of `__kconfig` externs.
pub const KCONFIG_SECTION: &str = ".kconfig";

/// How libbpf types a `__kconfig` extern, from its BTF type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KconfigType {
    /// `bool`: `y` is 1, `n` 0.
    Bool,
    /// `enum libbpf_tristate`: `n` 0, `y` 1, `m` 2.
    Tristate,
    /// A 1-byte integer (`char`): the letter `y`, `n` or `m` itself, or a number.
    Char,
    /// An integer of 2, 4 or 8 bytes.
    Int {
        /// Whether it is signed.
        signed: bool,
    },
    /// A `char` array: a quoted string, cut to fit with its terminating NUL.
    CharArray,
}

impl KconfigType {
    /// What inspect shows: `bool`, `tristate`, `char`, `int`, `uint`, `string`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::Tristate => "tristate",
            Self::Char => "char",
            Self::Int { signed: true } => "int",
            Self::Int { signed: false } => "uint",
            Self::CharArray => "string",
        }
    }
}

/// One `__kconfig` extern and where its value lies in the `.kconfig` map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KconfigExtern {
    /// The extern's name (`CONFIG_HZ`, `LINUX_KERNEL_VERSION`).
    pub name: String,
    /// Its type.
    pub ty: KconfigType,
    /// Byte offset in the `.kconfig` map's value.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
    /// Declared `__weak`: a value the configuration does not give is 0, not an error.
    pub weak: bool,
}

/// The type of a `__kconfig` extern whose BTF type is `ty`, with its size and alignment.
fn kconfig_type(btf: &Btf<'_>, name: &str, ty: TypeId) -> Result<(KconfigType, u32, u32), String> {
    let id = btf.resolve(ty).map_err(|e| e.to_string())?;
    let t = btf.type_by_id(id).map_err(|e| e.to_string())?;
    let size = t.size_or_type();
    let unknown = || {
        format!(
            "__kconfig extern {name} has a type libbpf does not take ({:?} of {size} bytes): \
             use bool, enum libbpf_tristate, char, an integer of 1 to 8 bytes, or a char array",
            t.kind()
        )
    };
    let kind = match t.detail() {
        Detail::Int(int) if int.encoding.is_bool() => {
            if size != 1 {
                return Err(unknown());
            }
            KconfigType::Bool
        }
        Detail::Int(_) if size == 1 => KconfigType::Char,
        Detail::Int(int) if matches!(size, 2 | 4 | 8) => KconfigType::Int {
            signed: int.encoding.is_signed(),
        },
        Detail::Enum(_) | Detail::Enum64(_)
            if t.name().is_ok_and(|n| n == "libbpf_tristate") && size == 4 =>
        {
            KconfigType::Tristate
        }
        Detail::Array(a) if a.nelems > 0 => {
            let (elem, _, _) = kconfig_type(btf, name, a.elem).map_err(|_| unknown())?;
            if elem != KconfigType::Char {
                return Err(unknown());
            }
            return Ok((KconfigType::CharArray, a.nelems, 1));
        }
        _ => return Err(unknown()),
    };
    Ok((kind, size, size))
}

/// The `__kconfig` externs the `.kconfig` `DATASEC` of `btf` declares, laid out as
/// libbpf lays them out: by descending alignment, then ascending size, then name, each
/// at the next offset its alignment allows. `weak` says whether a name's symbol is weak.
pub(crate) fn collect(
    btf: &Btf<'_>,
    weak: &dyn Fn(&str) -> bool,
) -> Result<Vec<KconfigExtern>, ObjectError> {
    let Some(id) = btf.id_by_name(KCONFIG_SECTION, Kind::Datasec) else {
        return Ok(Vec::new());
    };
    let btf_err = |source| ObjectError::Btf { source };
    let t = btf.type_by_id(id).map_err(btf_err)?;
    let Detail::Datasec(ds) = t.detail() else {
        return Ok(Vec::new());
    };
    let mut found: Vec<(u32, KconfigExtern)> = Vec::new();
    for v in ds.vars {
        let var = btf.type_by_id(v.ty).map_err(btf_err)?;
        let name = var.name().map_err(btf_err)?;
        let Detail::Var(detail) = var.detail() else {
            return Err(ObjectError::section(
                KCONFIG_SECTION,
                format!("DATASEC entry {name} is not a VAR"),
            ));
        };
        let (ty, size, align) = kconfig_type(btf, name, detail.ty)
            .map_err(|reason| ObjectError::symbol(name, reason))?;
        found.push((
            align,
            KconfigExtern {
                name: name.to_owned(),
                ty,
                offset: 0,
                size,
                weak: weak(name),
            },
        ));
    }
    found.sort_by(|(a_align, a), (b_align, b)| {
        b_align
            .cmp(a_align)
            .then(a.size.cmp(&b.size))
            .then(a.name.cmp(&b.name))
    });
    let mut offset = 0u32;
    let mut out = Vec::with_capacity(found.len());
    for (align, mut ext) in found {
        offset = offset
            .checked_next_multiple_of(align.max(1))
            .and_then(|o| o.checked_add(ext.size).map(|end| (o, end)))
            .map(|(o, end)| {
                ext.offset = o;
                end
            })
            .ok_or_else(|| ObjectError::section(KCONFIG_SECTION, "externs overflow 4 GiB"))?;
        out.push(ext);
    }
    Ok(out)
}

/// The size of the `.kconfig` map's value holding `externs`.
#[must_use]
pub fn kconfig_size(externs: &[KconfigExtern]) -> u32 {
    externs
        .iter()
        .map(|e| e.offset.saturating_add(e.size))
        .max()
        .unwrap_or(0)
}

/// `KERNEL_VERSION(a, b, c)` of a kernel release string (`6.18.44-fc`, as `uname -r`
/// gives it), the patch level capped at 255 as the kernel's macro does; `None` when
/// the release does not start with three dot-separated numbers (two are taken as
/// `a.b.0`).
#[must_use]
pub fn kernel_version_code(release: &str) -> Option<u32> {
    let mut parts = release.splitn(3, '.');
    let number = |s: Option<&str>| -> Option<u32> {
        let s = s?;
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s.get(..end).filter(|d| !d.is_empty())?.parse().ok()
    };
    let major = number(parts.next())?;
    let minor = number(parts.next())?;
    let patch = number(parts.next()).unwrap_or(0).min(255);
    if major > 255 || minor > 255 {
        return None;
    }
    Some((major << 16) | (minor << 8) | patch)
}

/// What the values of `__kconfig` externs come from.
#[derive(Clone, Copy, Debug)]
pub struct KconfigSource<'a> {
    /// `LINUX_KERNEL_VERSION`, as [`kernel_version_code`] gives it.
    pub kernel_version: Option<u32>,
    /// The kernel configuration's text (`CONFIG_X=y` lines), `None` when none was
    /// found; needed only when an extern is a `CONFIG_*` one.
    pub config: Option<&'a str>,
    /// Where `config` came from, for errors (`/proc/config.gz`).
    pub config_origin: &'a str,
}

/// Why the value of a `__kconfig` extern could not be given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("__kconfig extern {name}: {reason}")]
pub struct KconfigError {
    /// The extern.
    pub name: String,
    /// What is wrong, and where.
    pub reason: String,
}

/// Whether any extern needs the kernel configuration's text.
#[must_use]
pub fn needs_config(externs: &[KconfigExtern]) -> bool {
    externs.iter().any(|e| e.name.starts_with("CONFIG_"))
}

/// The `.kconfig` map's value: each extern's value from `source`, as libbpf gives it.
///
/// # Errors
/// An extern neither `CONFIG_*` nor one this loader knows (`LINUX_KERNEL_VERSION`),
/// a strong extern the configuration does not set, a value of the wrong kind for the
/// extern's type or too large for it, or a `CONFIG_` line without `=value`.
pub fn kconfig_data(
    externs: &[KconfigExtern],
    source: &KconfigSource<'_>,
) -> Result<Vec<u8>, KconfigError> {
    let len = usize::try_from(kconfig_size(externs)).unwrap_or(usize::MAX);
    let mut data = vec![0u8; len];
    let mut set = vec![false; externs.len()];
    let err = |e: &KconfigExtern, reason: String| KconfigError {
        name: e.name.clone(),
        reason,
    };
    for (e, done) in externs.iter().zip(set.iter_mut()) {
        if e.name.starts_with("CONFIG_") {
            continue;
        }
        if e.name == "LINUX_KERNEL_VERSION" {
            let v = source
                .kernel_version
                .ok_or_else(|| err(e, "the running kernel's version is not known".into()))?;
            write_number(e, &mut data, u64::from(v)).map_err(|r| err(e, r))?;
            *done = true;
        } else if !(e.weak && e.name.starts_with("LINUX_")) {
            return Err(err(
                e,
                "not a kernel configuration value (CONFIG_*) nor a value this loader \
                 provides (LINUX_KERNEL_VERSION)"
                    .into(),
            ));
        }
    }
    if needs_config(externs) {
        let Some(text) = source.config else {
            let first = externs
                .iter()
                .find(|e| e.name.starts_with("CONFIG_"))
                .map_or("", |e| e.name.as_str());
            return Err(KconfigError {
                name: first.to_owned(),
                reason: format!(
                    "no kernel configuration was found ({}): give one, or declare the \
                     extern __weak to read 0 without it",
                    source.config_origin
                ),
            });
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if !line.starts_with("CONFIG_") {
                continue;
            }
            let at = || format!("{} line {}", source.config_origin, n + 1);
            let Some((name, value)) = line.split_once('=') else {
                return Err(KconfigError {
                    name: line.to_owned(),
                    reason: format!("{}: no '=' after the name", at()),
                });
            };
            let Some(i) = externs.iter().position(|e| e.name == name) else {
                continue;
            };
            let (Some(e), Some(done)) = (externs.get(i), set.get_mut(i)) else {
                continue;
            };
            if *done {
                continue;
            }
            if value.is_empty() {
                return Err(err(e, format!("{}: no value after '='", at())));
            }
            write_value(e, &mut data, value).map_err(|r| err(e, format!("{}: {r}", at())))?;
            *done = true;
        }
    }
    for (e, done) in externs.iter().zip(&set) {
        if !done && !e.weak {
            return Err(err(
                e,
                format!(
                    "the kernel configuration ({}) does not set it: declare it __weak to read 0 \
                     when it is not set",
                    source.config_origin
                ),
            ));
        }
    }
    Ok(data)
}

fn slot<'d>(e: &KconfigExtern, data: &'d mut [u8]) -> Result<&'d mut [u8], String> {
    let start = usize::try_from(e.offset).map_err(|_| "offset overflows")?;
    let end = start.saturating_add(usize::try_from(e.size).map_err(|_| "size overflows")?);
    data.get_mut(start..end)
        .ok_or_else(|| "lies outside the .kconfig map".to_owned())
}

fn write_value(e: &KconfigExtern, data: &mut [u8], value: &str) -> Result<(), String> {
    match value.as_bytes().first() {
        Some(&letter @ (b'y' | b'n' | b'm')) if value.len() == 1 => match (e.ty, letter) {
            (KconfigType::Bool, b'm') => {
                Err("value m (module) for a bool: declare it enum libbpf_tristate".into())
            }
            (KconfigType::Bool, _) => write_number(e, data, u64::from(letter == b'y')),
            (KconfigType::Tristate, _) => {
                let v: u32 = match letter {
                    b'n' => 0,
                    b'y' => 1,
                    _ => 2,
                };
                slot(e, data)?
                    .get_mut(..4)
                    .ok_or("a tristate takes 4 bytes")?
                    .copy_from_slice(&v.to_ne_bytes());
                Ok(())
            }
            (KconfigType::Char, _) => {
                slot(e, data)?.fill(letter);
                Ok(())
            }
            _ => Err(format!(
                "value {} implies a bool, tristate or char extern, not a {}",
                char::from(letter),
                e.ty.name()
            )),
        },
        Some(b'"') => {
            if e.ty != KconfigType::CharArray {
                return Err(format!(
                    "a string value implies a char array extern, not a {}",
                    e.ty.name()
                ));
            }
            let inner = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or_else(|| format!("string value {value:?} has no closing quote"))?;
            let s = slot(e, data)?;
            s.fill(0);
            // Cut to leave room for the NUL, as libbpf does.
            let n = inner.len().min(s.len().saturating_sub(1));
            if let (Some(dst), Some(src)) = (s.get_mut(..n), inner.as_bytes().get(..n)) {
                dst.copy_from_slice(src);
            }
            Ok(())
        }
        _ => {
            let v = parse_number(value).ok_or_else(|| {
                format!("value {value:?} is neither y, n, m, a string nor a number")
            })?;
            write_number(e, data, v)
        }
    }
}

/// A number as C's `strtoull(s, _, 0)` reads a whole string: `0x` hex, a leading `0`
/// octal, else decimal; a leading `-` negates (two's complement).
fn parse_number(s: &str) -> Option<u64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let v = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        u64::from_str_radix(hex, 16).ok()?
    } else if digits.len() > 1
        && let Some(oct) = digits.strip_prefix('0')
    {
        u64::from_str_radix(oct, 8).ok()?
    } else {
        digits.parse().ok()?
    };
    Some(if neg { v.wrapping_neg() } else { v })
}

fn write_number(e: &KconfigExtern, data: &mut [u8], v: u64) -> Result<(), String> {
    let signed = match e.ty {
        KconfigType::Int { signed } => signed,
        KconfigType::Char => false,
        KconfigType::Bool if v <= 1 => false,
        KconfigType::Bool => return Err(format!("value {v} is not 0 or 1, for a bool")),
        KconfigType::Tristate | KconfigType::CharArray => {
            return Err(format!(
                "a number implies an integer, char or bool extern, not a {}",
                e.ty.name()
            ));
        }
    };
    let bits = e.size.saturating_mul(8);
    let fits = bits >= 64
        || if signed {
            // As libbpf: the value, read as signed, lies in the type's range.
            let half = 1u64 << (bits - 1);
            v.wrapping_add(half) < (1u64 << bits)
        } else {
            v >> bits == 0
        };
    if !fits {
        return Err(format!("value {v} does not fit in {} bytes", e.size));
    }
    let s = slot(e, data)?;
    let bytes = v.to_ne_bytes();
    let n = s.len();
    let src = if cfg!(target_endian = "big") {
        bytes.get(8 - n.min(8)..)
    } else {
        bytes.get(..n.min(8))
    };
    if let Some(src) = src {
        s.copy_from_slice(src);
    }
    Ok(())
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "tests index buffers they built")]
mod tests {
    use super::*;

    fn ext(name: &str, ty: KconfigType, offset: u32, size: u32, weak: bool) -> KconfigExtern {
        KconfigExtern {
            name: name.into(),
            ty,
            offset,
            size,
            weak,
        }
    }

    const CONFIG: &str = "\
#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_BPF=y
CONFIG_HZ=250
CONFIG_NF_TABLES=m
# CONFIG_BPF_LSM is not set
CONFIG_LOCALVERSION=\"-handover-test\"
CONFIG_ARCH_MMAP_RND_BITS_MIN=-28
CONFIG_PHYSICAL_START=0x1000000
";

    fn source(config: Option<&str>) -> KconfigSource<'_> {
        KconfigSource {
            kernel_version: kernel_version_code("6.18.44-fc-v657"),
            config,
            config_origin: "the test's config",
        }
    }

    #[test]
    fn values_come_from_the_config_text_typed_as_libbpf_types_them() {
        let externs = [
            ext(
                "CONFIG_PHYSICAL_START",
                KconfigType::Int { signed: false },
                0,
                8,
                false,
            ),
            ext(
                "LINUX_KERNEL_VERSION",
                KconfigType::Int { signed: false },
                8,
                4,
                false,
            ),
            ext(
                "CONFIG_HZ",
                KconfigType::Int { signed: false },
                12,
                4,
                false,
            ),
            ext("CONFIG_NF_TABLES", KconfigType::Tristate, 16, 4, false),
            ext(
                "CONFIG_ARCH_MMAP_RND_BITS_MIN",
                KconfigType::Int { signed: true },
                20,
                2,
                false,
            ),
            ext("CONFIG_BPF", KconfigType::Bool, 22, 1, false),
            ext("CONFIG_BPF_LSM", KconfigType::Bool, 23, 1, true),
            ext("CONFIG_LOCALVERSION", KconfigType::CharArray, 24, 8, false),
        ];
        let data = kconfig_data(&externs, &source(Some(CONFIG))).unwrap();
        let u = |at: usize, n: usize| {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&data[at..at + n]);
            u64::from_le_bytes(b)
        };
        assert_eq!(u(0, 8), 0x100_0000);
        assert_eq!(u(8, 4), (6 << 16) | (18 << 8) | 44);
        assert_eq!(u(12, 4), 250);
        assert_eq!(u(16, 4), 2, "m is TRI_MODULE");
        assert_eq!(i16::from_le_bytes([data[20], data[21]]), -28);
        assert_eq!((data[22], data[23]), (1, 0), "y, and not set (weak)");
        assert_eq!(&data[24..32], b"-handov\0", "cut to fit with its NUL");
    }

    #[test]
    fn what_the_config_cannot_give_is_an_error_naming_the_extern_and_the_line() {
        let one = |e: KconfigExtern, config: Option<&str>| {
            kconfig_data(&[e], &source(config)).unwrap_err().to_string()
        };
        let strong = |name: &str, ty, size| ext(name, ty, 0, size, false);
        let e = one(strong("CONFIG_BPF_LSM", KconfigType::Bool, 1), Some(CONFIG));
        assert!(
            e.contains("CONFIG_BPF_LSM") && e.contains("does not set it"),
            "{e}"
        );
        let e = one(
            strong("CONFIG_NF_TABLES", KconfigType::Bool, 1),
            Some(CONFIG),
        );
        assert!(e.contains("line 6") && e.contains("value m"), "{e}");
        let e = one(
            strong("CONFIG_PHYSICAL_START", KconfigType::Char, 1),
            Some(CONFIG),
        );
        assert!(e.contains("does not fit in 1 bytes"), "{e}");
        let e = one(
            strong("CONFIG_BPF", KconfigType::CharArray, 4),
            Some(CONFIG),
        );
        assert!(e.contains("implies a bool, tristate or char"), "{e}");
        let e = one(strong("CONFIG_HZ", KconfigType::Bool, 1), None);
        assert!(
            e.contains("no kernel configuration was found (the test's config)"),
            "{e}"
        );
        let e = one(
            strong("CONFIG_HZ", KconfigType::Int { signed: false }, 4),
            Some("CONFIG_HZ\n"),
        );
        assert!(e.contains("line 1: no '='"), "{e}");
        let e = one(strong("LINUX_HAS_BPF_COOKIE", KconfigType::Bool, 1), None);
        assert!(e.contains("not a kernel configuration value"), "{e}");
        // A weak LINUX_ extern this loader does not provide reads 0, as with libbpf.
        let weak = ext("LINUX_HAS_BPF_COOKIE", KconfigType::Bool, 0, 1, true);
        assert_eq!(kconfig_data(&[weak], &source(None)).unwrap(), [0]);
    }

    #[test]
    fn kernel_versions_as_the_kernel_macro_computes_them() {
        assert_eq!(kernel_version_code("6.18.44-fc-v657"), Some(0x06_12_2c));
        assert_eq!(
            kernel_version_code("4.19.300"),
            Some(0x04_13_ff),
            "patch capped"
        );
        assert_eq!(kernel_version_code("5.10"), Some(0x05_0a_00));
        assert_eq!(kernel_version_code("6.1.0-rc1"), Some(0x06_01_00));
        assert_eq!(kernel_version_code("linux"), None);
    }

    #[test]
    fn numbers_are_read_as_strtoull_reads_them() {
        assert_eq!(parse_number("250"), Some(250));
        assert_eq!(parse_number("0x10"), Some(16));
        assert_eq!(parse_number("010"), Some(8));
        assert_eq!(parse_number("0"), Some(0));
        assert_eq!(parse_number("-1"), Some(u64::MAX));
        assert_eq!(parse_number("12a"), None);
    }
}
