//! The kernel's rule for object names (maps, programs, links, BTF): `bpf_obj_name_cpy`.
//!
//! A name is at most [`KERNEL_NAME_LEN`] bytes (`BPF_OBJ_NAME_LEN` less its NUL), and
//! every byte must pass the kernel's `isalnum` or be `_` or `.`. The kernel's `ctype`
//! table is Latin-1, so besides ASCII letters and digits it also accepts the bytes of
//! the Latin-1 letters (0xC0-0xFF but 0xD7 and 0xF7). Names in this workspace are
//! UTF-8 strings: a non-ASCII character always holds a continuation byte (0x80-0xBF),
//! which the kernel refuses, so such a character never passes whole.

/// Bytes of `char name[BPF_OBJ_NAME_LEN]` in `union bpf_attr`, NUL included.
pub const OBJ_NAME_LEN: usize = 16;

/// Bytes of an object name the kernel keeps (`BPF_OBJ_NAME_LEN` without the NUL).
pub const KERNEL_NAME_LEN: usize = OBJ_NAME_LEN - 1;

/// Whether the kernel accepts `byte` in an object name: its `isalnum` (Latin-1
/// `ctype`), `_` or `.`.
#[must_use]
pub const fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || byte == b'_'
        || byte == b'.'
        || (byte >= 0xc0 && byte != 0xd7 && byte != 0xf7)
}

/// Why the kernel would refuse a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Longer than [`KERNEL_NAME_LEN`] bytes.
    #[error("{len} bytes is longer than the {KERNEL_NAME_LEN} bytes the kernel keeps")]
    TooLong {
        /// The name's length in bytes.
        len: usize,
    },
    /// A byte the kernel refuses.
    #[error(
        "byte {byte:#04x} at offset {offset} is not allowed: object names may only hold letters, digits, '_' and '.'"
    )]
    Byte {
        /// The byte.
        byte: u8,
        /// Its offset in the name.
        offset: usize,
    },
}

/// The `name` field of an attr for `name`, as the kernel checks it: at most
/// [`KERNEL_NAME_LEN`] bytes, each passing [`is_name_byte`], NUL-padded.
///
/// # Errors
/// The name is too long or holds a byte the kernel refuses.
pub fn name_field(name: &[u8]) -> Result<[u8; OBJ_NAME_LEN], NameError> {
    if name.len() > KERNEL_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    let mut out = [0u8; OBJ_NAME_LEN];
    for (offset, (slot, &byte)) in out.iter_mut().zip(name).enumerate() {
        if !is_name_byte(byte) {
            return Err(NameError::Byte { byte, offset });
        }
        *slot = byte;
    }
    Ok(out)
}

/// The name a loader gives the kernel for an object named `name` (as libbpf, the
/// first [`KERNEL_NAME_LEN`] bytes), with every byte the kernel would refuse replaced
/// by `_`, so that [`name_field`] accepts it. A byte the kernel accepts is kept only
/// if it is ASCII: a Latin-1 letter byte inside a UTF-8 name is part of a character
/// whose other bytes the kernel refuses.
#[must_use]
pub fn kernel_name(name: &str) -> String {
    name.bytes()
        .take(KERNEL_NAME_LEN)
        .map(|b| {
            if b.is_ascii() && is_name_byte(b) {
                char::from(b)
            } else {
                '_'
            }
        })
        .collect()
}

/// libbpf's name of a BPF object opened from the file `file_name`: the name up to its
/// first `.` (`xdp_prog.bpf.o` is `xdp_prog`).
#[must_use]
pub fn object_name(file_name: &str) -> &str {
    file_name.split('.').next().unwrap_or_default()
}

/// The name libbpf gives the kernel for the global data map of section `section`
/// (`.data`, `.rodata`, `.bss`, `.kconfig`, `.data.NAME`) of object `object` (see
/// [`object_name`]): as much of the object name as fits before the section name, which
/// keeps at least 7 bytes (so `.bss` gets the same prefix as `.rodata`); a section
/// name with a second `.` (`.rodata.str1.1`) gets no prefix; the result is cut to
/// [`KERNEL_NAME_LEN`] bytes and made acceptable as [`kernel_name`] does.
#[must_use]
pub fn global_data_map_name(object: &str, section: &str) -> String {
    let suffix_len = section.len().clamp(7, KERNEL_NAME_LEN);
    let custom = section.get(1..).is_some_and(|rest| rest.contains('.'));
    let prefix_len = if custom {
        0
    } else {
        (KERNEL_NAME_LEN - suffix_len).min(object.len())
    };
    let prefix = object.as_bytes().get(..prefix_len).unwrap_or_default();
    let suffix = section
        .as_bytes()
        .get(..section.len().min(suffix_len))
        .unwrap_or_default();
    let name: Vec<u8> = prefix.iter().chain(suffix).copied().collect();
    kernel_name(&String::from_utf8_lossy(&name))
}

/// The name a loader gives the kernel for map `map` of the object named `object`
/// (see [`object_name`]; `None` when not known): a global data map (named after its
/// section, so starting with `.`) gets libbpf's [`global_data_map_name`] when the
/// object name is known, every other map (and every map of an unnamed object)
/// [`kernel_name`] of its own name.
#[must_use]
pub fn created_map_name(object: Option<&str>, map: &str) -> String {
    match object {
        Some(object) if map.starts_with('.') => global_data_map_name(object, map),
        _ => kernel_name(map),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_set_is_the_kernels_ctype() {
        let ascii: Vec<u8> = (0..=127u8).filter(|b| is_name_byte(*b)).collect();
        let want: Vec<u8> = (b'0'..=b'9')
            .chain(b'A'..=b'Z')
            .chain(b'a'..=b'z')
            .chain([b'_', b'.'])
            .collect::<std::collections::BTreeSet<u8>>()
            .into_iter()
            .collect();
        assert_eq!(ascii, want);
        // Latin-1 letters pass; the multiplication and division signs, the C1
        // controls, punctuation and every UTF-8 continuation byte do not.
        assert!(is_name_byte(0xc0) && is_name_byte(0xe9) && is_name_byte(0xff));
        assert!(!is_name_byte(0xd7) && !is_name_byte(0xf7));
        assert!((0x80..=0xbf).all(|b| !is_name_byte(b)));
        assert!(!is_name_byte(b'-') && !is_name_byte(b' ') && !is_name_byte(0));
    }

    /// The sanitised name always passes the check, for every byte and length.
    #[test]
    fn every_kernel_name_passes_the_check() {
        for b in 0..=0x7fu8 {
            let name = format!("a{}b", char::from(b));
            let kept = kernel_name(&name);
            assert!(name_field(kept.as_bytes()).is_ok(), "{name:?} -> {kept:?}");
            assert_eq!(
                kept.as_bytes().get(1) == Some(&b),
                is_name_byte(b),
                "byte {b:#x}"
            );
        }
        assert_eq!(kernel_name("my-map.é"), "my_map.__");
        assert_eq!(kernel_name("a_very_long_map_name"), "a_very_long_map");
        // A cut inside a character: the lead byte is replaced, the String stays UTF-8.
        let cut = kernel_name("abcdefghijklmné");
        assert_eq!(cut, "abcdefghijklmn_");
        assert!(name_field(cut.as_bytes()).is_ok());
    }

    #[test]
    fn the_check_names_the_byte_and_the_limit() {
        assert_eq!(
            name_field(b"my-map"),
            Err(NameError::Byte {
                byte: b'-',
                offset: 2
            })
        );
        assert_eq!(
            name_field(b"sixteen_bytes_xx"),
            Err(NameError::TooLong { len: 16 })
        );
        let field = name_field(b"xyz\xe9").unwrap();
        assert_eq!(&field[..5], b"xyz\xe9\0");
    }

    #[test]
    fn global_data_maps_are_named_as_libbpf_names_them() {
        assert_eq!(object_name("global_data.o"), "global_data");
        assert_eq!(object_name("xdp.bpf.o"), "xdp");
        assert_eq!(
            global_data_map_name("global_data", ".rodata"),
            "global_d.rodata"
        );
        assert_eq!(global_data_map_name("global_data", ".bss"), "global_d.bss");
        assert_eq!(
            global_data_map_name("kconfig_extern", ".kconfig"),
            "kconfig.kconfig"
        );
        assert_eq!(global_data_map_name("x", ".data"), "x.data");
        assert_eq!(
            global_data_map_name("data_sections", ".rodata.str1.1"),
            ".rodata.str1.1"
        );
        assert_eq!(
            global_data_map_name("data_sections", ".data.a_long_custom_name"),
            ".data.a_long_cu"
        );
        assert_eq!(global_data_map_name("my-obj", ".data"), "my_obj.data");
    }
}
