//! Where a uprobe goes in its file: a symbol of an ELF executable or library turned
//! into the file offset the `uprobe` PMU takes.

use std::path::Path;

use object::{Object, ObjectSegment, ObjectSymbol};

/// The file offset of `symbol` plus `offset` in the ELF file `bytes` (named `path` in
/// errors): the symbol's address (`.symtab` first, then `.dynsym`) mapped through the
/// loadable segment that holds it.
///
/// # Errors
/// The file is not ELF, has no defined symbol of that name, or no loadable segment
/// holds the address.
pub(crate) fn uprobe_file_offset(
    path: &Path,
    bytes: &[u8],
    symbol: &str,
    offset: u64,
) -> Result<u64, String> {
    let file = object::File::parse(bytes)
        .map_err(|e| format!("{}: not an ELF file: {e}", path.display()))?;
    let address = file
        .symbols()
        .chain(file.dynamic_symbols())
        .find(|s| s.is_definition() && s.name_bytes().ok() == Some(symbol.as_bytes()))
        .map(|s| s.address())
        .ok_or_else(|| {
            format!(
                "{}: no defined symbol {symbol:?} in its symbol tables",
                path.display()
            )
        })?;
    let target = address
        .checked_add(offset)
        .ok_or_else(|| format!("{symbol}+{offset:#x} overflows"))?;
    file.segments()
        .find_map(|seg| {
            let (start, size) = (seg.address(), seg.size());
            let (file_start, file_size) = seg.file_range();
            let into = target.checked_sub(start)?;
            (into < size.min(file_size)).then(|| file_start + into)
        })
        .ok_or_else(|| {
            format!(
                "{}: no loadable segment holds {symbol}+{offset:#x} (address {target:#x})",
                path.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    // An unmangled name to look up; the function is safe, and nothing else defines it.
    #[allow(unsafe_code)]
    #[unsafe(no_mangle)]
    #[inline(never)]
    extern "C" fn handover_probes_test_symbol(x: u64) -> u64 {
        std::hint::black_box(x).wrapping_mul(3)
    }

    /// The file offset computed from the test binary's symbol table is the one the
    /// process's own mapping of that file gives for the function's address.
    #[test]
    fn a_symbol_of_this_binary_maps_to_the_file_offset_of_its_code() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let bytes = std::fs::read(&exe).unwrap();
        let computed = uprobe_file_offset(&exe, &bytes, "handover_probes_test_symbol", 0).unwrap();
        assert_eq!(handover_probes_test_symbol(2), 6);
        let addr = handover_probes_test_symbol as *const () as usize as u64;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mapped = maps
            .lines()
            .find_map(|line| {
                let mut f = line.split_whitespace();
                let (range, _perms, off) = (f.next()?, f.next()?, f.next()?);
                let (a, b) = range.split_once('-')?;
                let (a, b) = (
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                );
                let off = u64::from_str_radix(off, 16).ok()?;
                (a <= addr && addr < b).then(|| addr - a + off)
            })
            .expect("the function's address is mapped");
        assert_eq!(computed, mapped);
        assert_eq!(
            uprobe_file_offset(&exe, &bytes, "handover_probes_test_symbol", 4).unwrap(),
            mapped + 4
        );
    }

    #[test]
    fn a_missing_symbol_or_a_file_that_is_not_elf_is_named() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let bytes = std::fs::read(&exe).unwrap();
        let e = uprobe_file_offset(&exe, &bytes, "no_such_symbol_anywhere", 0).unwrap_err();
        assert!(
            e.contains("no defined symbol \"no_such_symbol_anywhere\""),
            "{e}"
        );
        let e = uprobe_file_offset(Path::new("/x"), b"#!/bin/sh\n", "main", 0).unwrap_err();
        assert!(e.starts_with("/x: not an ELF file"), "{e}");
    }
}
