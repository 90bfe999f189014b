//! CO-RE relocations checked against libbpf on the real kernel (needs root).
//!
//! Objects: `programs/core_reloc.c` (`core_reloc.o`), `programs/core_kinds.c`
//! (`core_kinds.o`, every relocation kind clang emits, one in a `.text` subprogram),
//! `programs/core_load.c` (`core_load.o`, the same kinds in a program the verifier
//! accepts, with poisoned instructions in dead code) and xdp-tools' `xdpdump_bpf.o`.
//!
//! Two oracles, both from bpftool (libbpf) in a private bpffs mount:
//! - the value of every relocation: libbpf's debug log (`bpftool -d prog loadall`)
//!   prints each patched instruction with its new value, or that it was poisoned;
//!   relocation happens before the kernel sees any program, so this holds even for
//!   objects the kernel then refuses;
//! - the verified instructions: for each program with CO-RE relocations, a copy of the
//!   object where every other program's section is marked not to be loaded (`?` prefix,
//!   `llvm-objcopy --rename-section`) is loaded with `bpftool prog load`, and the
//!   kernel's translated instructions of that program must equal those of our load of
//!   the original object, byte for byte once map ids are set aside. Programs the kernel
//!   refuses for both loaders are listed.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/testenv/mod.rs"]
mod testenv;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use handover_btf::Btf;
use handover_load::{LoadOptions, load};
use handover_loader::{CoreTarget, Object, ProgramSpec, apply_core};
use handover_sys::{Bpf, OpenFlags};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

fn objects() -> Vec<PathBuf> {
    let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../programs/build");
    vec![
        build.join("core_reloc.o"),
        build.join("core_kinds.o"),
        build.join("core_load.o"),
        PathBuf::from("/usr/lib/x86_64-linux-gnu/bpf/xdpdump_bpf.o"),
    ]
}

/// What libbpf did to each relocation: (program, relocation number) to (instruction,
/// new value, or `None` when poisoned), parsed from its debug log lines
/// `prog 'P': relo #I: patched insn #N (...) imm A -> B` and
/// `prog 'P': relo #I: substituting insn #N w/ invalid insn`.
fn libbpf_relocations(log: &str) -> BTreeMap<(String, u32), (u32, Option<u64>)> {
    let mut out = BTreeMap::new();
    for line in log.lines() {
        let Some(rest) = line.strip_prefix("libbpf: prog '") else {
            continue;
        };
        let Some((prog, rest)) = rest.split_once("': relo #") else {
            continue;
        };
        let Some((relo, rest)) = rest.split_once(": ") else {
            continue;
        };
        let relo: u32 = relo.parse().expect("relocation number");
        let value = if let Some(r) = rest.strip_prefix("patched insn #") {
            let (insn, r) = r.split_once(' ').expect("patched line");
            let new = r.rsplit("-> ").next().expect("new value");
            (
                insn.parse().expect("insn"),
                Some(new.trim().parse().expect("value")),
            )
        } else if let Some(r) = rest.strip_prefix("substituting insn #") {
            let insn = r.split_once(' ').expect("substituting line").0;
            (insn.parse().expect("insn"), None)
        } else {
            continue;
        };
        // A poisoned ld_imm64 is reported once per half: keep the first.
        out.entry((prog.to_owned(), relo)).or_insert(value);
    }
    out
}

/// The function of `spec` holding instruction `insn`, and the index within it.
fn function_of(spec: &ProgramSpec, insn: u32) -> (String, u32) {
    let f = spec
        .functions
        .iter()
        .find(|f| (f.start..f.start + f.len).contains(&(insn as usize)))
        .expect("instruction inside a function");
    (f.name.clone(), insn - u32::try_from(f.start).unwrap())
}

#[test]
fn core_relocation_values_equal_libbpfs() {
    if !testenv::privileged("core_relocation_values_equal_libbpfs") {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let blob = std::fs::read(VMLINUX).expect("kernel BTF");
    let kernel = Btf::parse(&blob).expect("kernel BTF parses");
    let target = CoreTarget::new(&kernel);
    let mut compared = 0;
    for (n, path) in objects().iter().enumerate() {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let obj = Object::parse(&data).expect("object parses");
        let pins = fs.path().join(format!("all{n}"));
        let (_, log) = testenv::bpftool_in(
            fs.path(),
            &[
                "-d",
                "prog",
                "loadall",
                path.to_str().unwrap(),
                pins.to_str().unwrap(),
            ],
        );
        let _ = std::fs::remove_dir_all(&pins);
        let libbpf = libbpf_relocations(&log);
        // Ours, per function: libbpf relocates each subprogram once, before copying it
        // into the programs that call it, so every copy must carry its values.
        let mut ours: BTreeMap<(String, u32), Option<u64>> = BTreeMap::new();
        for spec in obj.programs().iter().filter(|p| p.needs_core()) {
            let (_, outcomes) = apply_core(spec, obj.btf().expect("BTF"), &target)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for o in outcomes {
                let key = function_of(spec, o.insn);
                if let Some(prev) = ours.insert(key.clone(), o.target) {
                    assert_eq!(prev, o.target, "{key:?}: two copies disagree");
                }
            }
        }
        let theirs: BTreeMap<(String, u32), Option<u64>> = libbpf
            .values()
            .zip(libbpf.keys())
            .map(|(&(insn, v), (prog, _))| ((prog.clone(), insn), v))
            .collect();
        assert!(
            !theirs.is_empty(),
            "{}: no relocation in libbpf's log:\n{log}",
            path.display()
        );
        assert_eq!(ours, theirs, "{}", path.display());
        eprintln!(
            "{}: {} relocations equal libbpf's ({} poisoned)",
            path.display(),
            ours.len(),
            ours.values().filter(|v| v.is_none()).count()
        );
        compared += ours.len();
    }
    assert!(compared > 0);
}

#[test]
fn core_programs_translate_like_libbpfs() {
    if !testenv::privileged("core_programs_translate_like_libbpfs") {
        return;
    }
    if !common::tool_found("llvm-objcopy", "core_programs_translate_like_libbpfs") {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let tmp = testenv::TempDir::new("handover-core");
    let bpf = Bpf::kernel();
    let (mut same, mut refused) = (Vec::new(), Vec::new());
    for (n, path) in objects().iter().enumerate() {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let obj = Object::parse(&data).expect("object parses");
        for spec in obj.programs().iter().filter(|p| p.needs_core()) {
            let name = format!("{}:{}", path.display(), spec.name);
            let alone = tmp.path().join(format!("{n}_{}.o", spec.name));
            let mut objcopy = Command::new("llvm-objcopy");
            for other in obj.programs() {
                if other.section != spec.section && other.autoload {
                    objcopy
                        .arg("--rename-section")
                        .arg(format!("{0}=?{0}", other.section));
                }
            }
            let st = objcopy
                .arg(path)
                .arg(&alone)
                .status()
                .expect("llvm-objcopy");
            assert!(st.success(), "{name}: llvm-objcopy failed");
            let pin = fs.path().join(format!("p{n}_{}", spec.name));
            let (ok, log) = testenv::bpftool_in(
                fs.path(),
                &[
                    "prog",
                    "load",
                    alone.to_str().unwrap(),
                    pin.to_str().unwrap(),
                ],
            );
            let options = LoadOptions {
                programs: Some([spec.name.clone()].into()),
                ..LoadOptions::default()
            };
            let ours = load(&bpf, &obj, options);
            if !ok {
                assert!(
                    !log.contains("can't pin program that wasn't loaded"),
                    "{name}: bpftool prog load pins only an object's first program"
                );
                let err = match ours {
                    Ok(_) => panic!("{name}: libbpf is refused but we load it:\n{log}"),
                    Err(e) => common::chain(&e),
                };
                let why = log
                    .lines()
                    .rfind(|l| l.starts_with("libbpf:"))
                    .unwrap_or("");
                eprintln!("{name}: refused for both\n  ours: {err}\n  libbpf: {why}");
                refused.push(name);
                continue;
            }
            let ours = ours.unwrap_or_else(|e| {
                panic!("{name}: libbpf loads it, we do not: {}", common::chain(&e))
            });
            let theirs = bpf
                .obj_get(&pin, OpenFlags::READ_WRITE)
                .expect("pinned program");
            let theirs = bpf.prog_xlated(&theirs).expect("libbpf's instructions");
            let mine = bpf
                .prog_xlated(&ours.program(&spec.name).expect("loaded").fd)
                .expect("our instructions");
            assert!(
                !mine.is_empty(),
                "{name}: the kernel withholds instructions"
            );
            assert_eq!(
                common::normalised_xlated(&mine),
                common::normalised_xlated(&theirs),
                "{name}"
            );
            let _ = std::fs::remove_file(&pin);
            eprintln!("{name}: {} instructions equal libbpf's", mine.len() / 8);
            same.push(name);
        }
    }
    eprintln!("byte for byte: {same:?}; refused by the kernel for both: {refused:?}");
    assert!(!same.is_empty(), "no CO-RE program loaded to compare");
}

#[test]
fn core_target_btf_can_be_given() {
    if !testenv::privileged("core_target_btf_can_be_given") {
        return;
    }
    let bpf = Bpf::kernel();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../programs/build/core_reloc.o");
    let data = std::fs::read(&path).expect("core_reloc.o");
    let obj = Object::parse(&data).expect("object parses");
    let only = || Some(["trace_sleep".to_owned()].into());
    let default = load(
        &bpf,
        &obj,
        LoadOptions {
            programs: only(),
            ..LoadOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("default target: {}", common::chain(&e)));
    let given = load(
        &bpf,
        &obj,
        LoadOptions {
            programs: only(),
            core_btf: Some(std::fs::read(VMLINUX).expect("kernel BTF")),
            ..LoadOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("given target: {}", common::chain(&e)));
    let core = |l: &handover_load::LoadedObject| l.program("trace_sleep").unwrap().core.clone();
    assert_eq!(core(&default), core(&given));
    assert!(core(&given).iter().all(|o| o.target.is_some()));
    let err = load(
        &bpf,
        &obj,
        LoadOptions {
            programs: only(),
            core_btf: Some(b"not BTF".to_vec()),
            ..LoadOptions::default()
        },
    )
    .map(drop)
    .expect_err("garbage target BTF");
    assert!(
        common::chain(&err).contains("parsing the target BTF of CO-RE relocations"),
        "{}",
        common::chain(&err)
    );
}
