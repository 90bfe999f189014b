//! Objects the integration tests read: the fixtures built from `programs/*.c` by
//! `programs/build.sh` (programs/NAME.c -> programs/build/NAME.o), and the third-party
//! objects shipped by Debian's xdp-tools.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::path::{Path, PathBuf};

/// Directory of the xdp-tools objects.
pub const XDP_TOOLS_DIR: &str = "/usr/lib/x86_64-linux-gnu/bpf";

fn objects_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    v.sort();
    v
}

/// The workspace root: the nearest directory above the crate under test that holds
/// `programs/build.sh` (these helpers serve crates at different depths).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("programs/build.sh").is_file())
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            Path::to_path_buf,
        )
}

/// Every fixture object; fails when they have not been built.
pub fn fixtures() -> Vec<PathBuf> {
    let dir = workspace().join("programs/build");
    let v = if dir.is_dir() {
        objects_in(&dir)
    } else {
        Vec::new()
    };
    assert!(
        !v.is_empty(),
        "no fixture objects in {}: run programs/build.sh first",
        dir.display()
    );
    v
}

/// One fixture by name (`maps_btf` -> programs/build/maps_btf.o).
pub fn fixture(name: &str) -> PathBuf {
    let p = workspace().join("programs/build").join(format!("{name}.o"));
    assert!(
        p.is_file(),
        "{} missing: run programs/build.sh first",
        p.display()
    );
    p
}

/// Every xdp-tools object; fails when the package is not installed.
pub fn xdp_tools() -> Vec<PathBuf> {
    let v = objects_in(Path::new(XDP_TOOLS_DIR));
    assert!(
        !v.is_empty(),
        "no objects in {XDP_TOOLS_DIR}: install xdp-tools"
    );
    v
}

/// Fixtures and xdp-tools objects together.
pub fn all_objects() -> Vec<PathBuf> {
    let mut v = fixtures();
    v.extend(xdp_tools());
    v
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Fixtures the loader rejects on purpose, with a piece of the error it must give:
/// programs/struct_ops.c defines a struct_ops map, which this loader does not create;
/// programs/subprogs.c built with -g0 has BTF-defined maps but no `.BTF` to read them from.
pub const REJECTED: &[(&str, &str)] = &[
    (
        "struct_ops.o",
        "map edge_cc: struct_ops maps (section .struct_ops.link",
    ),
    (
        "subprogs.g0.o",
        "section .maps: BTF-defined maps need a .BTF section",
    ),
    // The inner map's value struct is reached only through pointers: BTF FWD.
    (
        "map_in_map_fwd.o",
        "map backends_by_service.inner: field value: struct backend (BTF type 29) is only declared",
    ),
];

/// Fixtures the kernel refuses on purpose, with a piece of the loader's error:
/// programs/too_complex.c is a loop the verifier walks past its million instructions.
pub const KERNEL_REFUSED: &[(&str, &str)] = &[("too_complex.o", "BPF program is too large")];

/// The expected rejection of `path`, if it is one of [`REJECTED`].
pub fn rejected(path: &Path) -> Option<&'static str> {
    let name = path.file_name()?.to_str()?;
    REJECTED.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// File offset and size of the section called `name`, found with the `object` crate.
pub fn section_range(data: &[u8], name: &str) -> (usize, usize) {
    use object::{Object as _, ObjectSection as _};
    let file = object::File::parse(data).expect("valid ELF");
    let sec = file
        .section_by_name(name)
        .unwrap_or_else(|| panic!("no section {name}"));
    let (off, size) = sec
        .file_range()
        .unwrap_or_else(|| panic!("{name} has no file data"));
    (
        usize::try_from(off).unwrap(),
        usize::try_from(size).unwrap(),
    )
}

/// An error and its sources, joined by `: `.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Translated instructions with the map ids the kernel put in `ld_imm64` map loads
/// zeroed, so two loads of one program compare equal.
pub fn normalised_xlated(xlated: &[u8]) -> Vec<[u8; 8]> {
    let mut insns: Vec<[u8; 8]> = xlated
        .chunks_exact(8)
        .map(|c| c.try_into().unwrap())
        .collect();
    for insn in &mut insns {
        // code 0x18 is ld_imm64; src_reg (high nibble of byte 1) 1, 2, 5, 6 name maps.
        if let [0x18, regs, _, _, imm @ ..] = insn
            && matches!(*regs >> 4, 1 | 2 | 5 | 6)
        {
            imm.fill(0);
        }
    }
    insns
}

/// The strong (not `__weak`) typed `__ksym` externs of `obj` that neither the kernel's
/// BTF nor any module's BTF under /sys/kernel/btf has: a kernel without them refuses
/// the object, whichever loader sends it.
pub fn ksyms_missing_from_kernel(obj: &handover_loader::Object) -> Vec<String> {
    use handover_btf::{Btf, Kind};
    use handover_loader::{KsymKind, RefTarget};
    let mut wanted: Vec<(String, Kind)> = obj
        .programs()
        .iter()
        .flat_map(|p| &p.references)
        .filter_map(|r| match &r.target {
            RefTarget::Ksym {
                name,
                kind,
                weak: false,
            } => match kind {
                KsymKind::Func => Some((name.clone(), Kind::Func)),
                KsymKind::Var => Some((name.clone(), Kind::Var)),
                KsymKind::Typeless => None,
            },
            _ => None,
        })
        .collect();
    wanted.sort_by(|a, b| a.0.cmp(&b.0));
    wanted.dedup();
    let vmlinux = std::fs::read("/sys/kernel/btf/vmlinux").expect("kernel BTF");
    let base = Btf::parse(&vmlinux).expect("kernel BTF parses");
    wanted.retain(|(name, kind)| base.id_by_name(name, *kind).is_none());
    for module in std::fs::read_dir("/sys/kernel/btf")
        .into_iter()
        .flatten()
        .flatten()
    {
        if wanted.is_empty() {
            break;
        }
        if module.file_name() == "vmlinux" {
            continue;
        }
        let Ok(data) = std::fs::read(module.path()) else {
            continue;
        };
        let base = Btf::parse(&vmlinux).expect("kernel BTF parses");
        if let Ok(btf) = Btf::parse_split(&data, base) {
            wanted.retain(|(name, kind)| btf.id_by_name(name, *kind).is_none());
        }
    }
    wanted.into_iter().map(|(name, _)| name).collect()
}

/// Whether `tool` is on the PATH; prints a loud notice naming `test` when it is not
/// (the kernel matrix's initramfs has bpftool but no LLVM tools).
pub fn tool_found(tool: &str, test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()));
    if !found {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("\n!!!!!!!! SKIPPED: {test} ({tool} not found; NOTHING WAS TESTED) !!!!!!!!\n")
                .as_bytes(),
        );
    }
    found
}
