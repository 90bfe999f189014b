//! `__ksym` externs resolved against the running kernel's BTF, checked against libbpf
//! (needs root).
//!
//! Object: `programs/ksyms.c` (`ksyms.o`): kfunc calls, a typeless kernel symbol, and a
//! weak variable and a weak kfunc that no kernel has. The oracle is bpftool (libbpf):
//! the object loaded with `bpftool prog load` in a private bpffs mount, whose kernel
//! translated instructions must equal those of our load byte for byte once map ids are
//! set aside.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/testenv/mod.rs"]
mod testenv;

use handover_load::{LoadOptions, load};
use handover_loader::{Object, RefTarget};
use handover_sys::{Bpf, OpenFlags};

/// Whether this kernel lacks strong ksyms of `obj` (probed in its BTF); if so, checks
/// that our load is refused naming one of them and says what was not compared.
fn refused_for_missing_ksyms(bpf: &Bpf, obj: &Object, file: &str) -> bool {
    let missing = common::ksyms_missing_from_kernel(obj);
    if missing.is_empty() {
        return false;
    }
    let err = match load(bpf, obj, LoadOptions::default()) {
        Ok(_) => panic!("{file}: loaded although the kernel's BTF has no {missing:?}"),
        Err(e) => common::chain(&e),
    };
    assert!(
        missing.iter().any(|m| err.contains(m.as_str())),
        "{file}: refused for another reason than the missing {missing:?}: {err}"
    );
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "!!!!!!!! {file}: the kernel's BTF has no {missing:?}; refused as it must be ({err}); \
             instructions NOT COMPARED with libbpf's !!!!!!!!\n"
        )
        .as_bytes(),
    );
    true
}

#[test]
fn ksyms_translate_like_libbpfs() {
    if !testenv::privileged("ksyms_translate_like_libbpfs") {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    let path = common::fixture("ksyms");
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let obj = Object::parse(&data).expect("ksyms.o parses");
    let spec = obj.program("ksyms").expect("program ksyms");
    let ksyms = spec
        .references
        .iter()
        .filter(|r| matches!(r.target, RefTarget::Ksym { .. }))
        .count();
    assert_eq!(ksyms, 8, "ksyms.o: every extern use is a ksym reference");
    if refused_for_missing_ksyms(&bpf, &obj, "ksyms.o") {
        return;
    }

    let pin = fs.path().join("ksyms");
    let (ok, log) = testenv::bpftool_in(
        fs.path(),
        &[
            "prog",
            "load",
            path.to_str().unwrap(),
            pin.to_str().unwrap(),
        ],
    );
    assert!(ok, "libbpf does not load ksyms.o:\n{log}");
    let ours = load(&bpf, &obj, LoadOptions::default())
        .unwrap_or_else(|e| panic!("ksyms.o: libbpf loads it, we do not: {}", common::chain(&e)));
    let theirs = bpf
        .obj_get(&pin, OpenFlags::READ_WRITE)
        .expect("pinned program");
    let theirs = bpf.prog_xlated(&theirs).expect("libbpf's instructions");
    let mine = bpf
        .prog_xlated(&ours.program("ksyms").expect("loaded").fd)
        .expect("our instructions");
    assert!(!mine.is_empty(), "the kernel withholds instructions");
    assert_eq!(
        common::normalised_xlated(&mine),
        common::normalised_xlated(&theirs)
    );
    let _ = std::fs::remove_file(&pin);
    eprintln!("ksyms.o: {} instructions equal libbpf's", mine.len() / 8);
}

/// Typed kernel variables resolve to their vmlinux BTF ids; the kernel then looks
/// their addresses up in kallsyms. Both loaders must end the same way: loaded with
/// equal instructions, or (on a kernel built without `CONFIG_KALLSYMS_ALL`, which lists
/// no per-CPU variables) refused by the kernel for the same reason.
#[test]
fn ksym_vars_load_like_libbpf() {
    if !testenv::privileged("ksym_vars_load_like_libbpf") {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    let path = common::fixture("ksym_vars");
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let obj = Object::parse(&data).expect("ksym_vars.o parses");
    if refused_for_missing_ksyms(&bpf, &obj, "ksym_vars.o") {
        return;
    }
    let pin = fs.path().join("ksym_vars");
    let (ok, log) = testenv::bpftool_in(
        fs.path(),
        &[
            "prog",
            "load",
            path.to_str().unwrap(),
            pin.to_str().unwrap(),
        ],
    );
    let ours = load(
        &bpf,
        &obj,
        LoadOptions {
            log_level: handover_sys::LogLevel::OnFailure,
            ..LoadOptions::default()
        },
    );
    if ok {
        let ours = ours.unwrap_or_else(|e| {
            panic!("libbpf loads ksym_vars.o, we do not: {}", common::chain(&e))
        });
        let theirs = bpf
            .obj_get(&pin, OpenFlags::READ_WRITE)
            .expect("pinned program");
        let theirs = bpf.prog_xlated(&theirs).expect("libbpf's instructions");
        let mine = bpf
            .prog_xlated(&ours.program("ksym_vars").expect("loaded").fd)
            .expect("our instructions");
        assert_eq!(
            common::normalised_xlated(&mine),
            common::normalised_xlated(&theirs)
        );
        let _ = std::fs::remove_file(&pin);
        eprintln!(
            "ksym_vars.o: {} instructions equal libbpf's",
            mine.len() / 8
        );
    } else {
        let needle = "failed to find the address for kernel symbol 'bpf_prog_active'";
        assert!(
            log.contains(needle),
            "libbpf refused ksym_vars.o otherwise:\n{log}"
        );
        let err = match ours {
            Ok(_) => panic!("libbpf is refused but we load ksym_vars.o:\n{log}"),
            Err(e) => common::chain(&e),
        };
        assert!(
            err.contains(needle),
            "we are refused for another reason than libbpf: {err}"
        );
        eprintln!("ksym_vars.o: refused by the kernel for both loaders: {needle}");
    }
}
