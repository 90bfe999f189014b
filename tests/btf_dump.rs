//! `handover btf dump` against `bpftool btf dump file`, byte for byte, on the kernel's
//! BTF, a split blob, the objects built from programs/*.c and Debian's xdp-tools objects.
//!
//! bpftool and the objects are required: a missing one fails the test with a message
//! saying what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

use handover::btf_file::btf_bytes;
use handover_btf::{Btf, Builder, Endian, Kind, TypeId};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
const XDP_TOOLS_DIR: &str = "/usr/lib/x86_64-linux-gnu/bpf";

/// `bpftool [--base-btf BASE] btf dump file FILE`.
fn bpftool(file: &str, base: Option<&str>) -> Vec<u8> {
    let args: Vec<&str> = base.map_or(vec![], |b| vec!["--base-btf", b]);
    let out = Command::new("bpftool")
        .args(&args)
        .args(["btf", "dump", "file", file])
        .output()
        .unwrap_or_else(|e| panic!("cannot run bpftool (apt install bpftool): {e}"));
    assert!(
        out.status.success(),
        "bpftool {args:?} btf dump file {file} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn handover(args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["btf", "dump"])
        .args(args)
        .output()
        .expect("run handover");
    assert!(
        out.status.success(),
        "handover btf dump {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Asserts both dumps are identical, showing the first differing line if not.
fn assert_same(what: &str, ours: &[u8], theirs: &[u8]) {
    if ours == theirs {
        return;
    }
    let (ours, theirs) = (
        String::from_utf8_lossy(ours),
        String::from_utf8_lossy(theirs),
    );
    let (line, (a, b)) = ours
        .lines()
        .zip(theirs.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .unwrap_or((
            ours.lines().count().min(theirs.lines().count()),
            ("<end>", "<end>"),
        ));
    panic!(
        "dump of {what} differs at line {}:\n  handover: {a}\n  bpftool:  {b}\n({} vs {} lines)",
        line + 1,
        ours.lines().count(),
        theirs.lines().count()
    );
}

fn assert_file_matches(path: &Path) {
    let p = path.to_str().expect("UTF-8 path");
    assert_same(p, &handover(&[p]), &bpftool(p, None));
}

fn objects_in(dir: &Path) -> Vec<PathBuf> {
    let mut objects: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    objects.sort();
    objects
}

#[test]
fn vmlinux_dump_matches_bpftool() {
    assert!(
        Path::new(VMLINUX).exists(),
        "{VMLINUX} is missing: the kernel needs CONFIG_DEBUG_INFO_BTF"
    );
    assert_file_matches(Path::new(VMLINUX));
}

#[test]
fn program_objects_dump_matches_bpftool() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("bash")
        .arg(root.join("programs/build.sh"))
        .status()
        .expect("run programs/build.sh (needs clang and libbpf-dev)");
    assert!(status.success(), "programs/build.sh failed");
    let objects = objects_in(&root.join("programs/build"));
    // programs/btf_kinds.c -> programs/build/btf_kinds.o holds every kind clang emits.
    assert!(
        objects.iter().any(|o| o.ends_with("btf_kinds.o")),
        "programs/build/btf_kinds.o was not built"
    );
    for object in objects {
        let name = object.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".g0.o") {
            // Built with -g0 (programs/build.sh): no .BTF, which both tools must say.
            assert_both_refuse_without_btf(&object);
        } else {
            assert_file_matches(&object);
        }
    }
}

/// An object without `.BTF`: bpftool fails, and `handover btf dump` fails saying why.
fn assert_both_refuse_without_btf(path: &Path) {
    let p = path.to_str().expect("UTF-8 path");
    let theirs = Command::new("bpftool")
        .args(["btf", "dump", "file", p])
        .output()
        .expect("run bpftool");
    assert!(!theirs.status.success(), "bpftool found BTF in {p}");
    let ours = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["btf", "dump", p])
        .output()
        .expect("run handover");
    assert_eq!(ours.status.code(), Some(1), "handover btf dump {p}");
    let err = String::from_utf8_lossy(&ours.stderr);
    assert!(err.contains("no .BTF section") && err.contains(p), "{err}");
}

#[test]
fn xdp_tools_objects_dump_matches_bpftool() {
    let objects = objects_in(Path::new(XDP_TOOLS_DIR));
    assert!(
        !objects.is_empty(),
        "no objects in {XDP_TOOLS_DIR}: apt install xdp-tools"
    );
    for object in objects {
        assert_file_matches(&object);
    }
}

/// Copies the types of `btf` accepted by `keep` into `builder`, mapping each type
/// reference through `map`.
fn reencode(
    btf: &Btf<'_>,
    builder: &mut Builder,
    map: &dyn Fn(TypeId) -> TypeId,
    keep: &dyn Fn(TypeId) -> bool,
) {
    for (id, t) in btf.types() {
        if keep(id) {
            builder.add_copy(&t, map).expect("names of a valid blob");
        }
    }
}

#[test]
fn reencoded_object_btf_is_identical() {
    // The law behind the split test's encoder: re-encoding a blob with the identity map
    // gives back a blob that dumps the same.
    let data =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/build/btf_kinds.o"))
            .expect("programs/build/btf_kinds.o (run programs/build.sh)");
    let btf = Btf::parse(btf_bytes(&data).expect(".BTF")).expect("parse");
    let mut b = Builder::new(Endian::Little);
    reencode(&btf, &mut b, &|id| id, &|_| true);
    let blob = b.finish();
    let again = Btf::parse(&blob).expect("parse re-encoded");
    let (mut x, mut y) = (Vec::new(), Vec::new());
    handover_btf::write_raw_dump(&btf, &mut x).expect("dump");
    handover_btf::write_raw_dump(&again, &mut y).expect("dump");
    assert_same("re-encoded btf_kinds.o", &y, &x);
}

#[test]
fn split_dump_matches_bpftool() {
    // Split blob: the types of programs/build/btf_kinds.o (from programs/btf_kinds.c)
    // encoded on top of the kernel's BTF, as module BTF is. Integers the base already
    // has are dropped and referenced in the base, so ids cross from split to base.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let obj = std::fs::read(root.join("programs/build/btf_kinds.o"))
        .expect("programs/build/btf_kinds.o (run programs/build.sh)");
    let obj_btf = Btf::parse(btf_bytes(&obj).expect(".BTF")).expect("parse object BTF");
    let vmlinux = std::fs::read(VMLINUX).expect("read vmlinux BTF");
    let base = Btf::parse(&vmlinux).expect("parse vmlinux BTF");

    let mut builder = Builder::split(Endian::Little, &base);
    let mut ids = vec![TypeId(0)];
    let mut next = builder.next_id().0;
    let mut in_base = 0;
    for (_, t) in obj_btf.types() {
        let shared = (t.kind() == Kind::Int)
            .then(|| base.id_by_name(t.name().expect("name"), Kind::Int))
            .flatten()
            .filter(|&b| base.size_of(b).ok() == Some(t.size_or_type()));
        ids.push(shared.unwrap_or_else(|| {
            next += 1;
            TypeId(next - 1)
        }));
        in_base += usize::from(shared.is_some());
    }
    assert!(in_base > 0, "no integer of btf_kinds.o maps to the base");
    let map = |id: TypeId| ids.get(id.0 as usize).copied().expect("type id in range");
    let keep = |id: TypeId| map(id) >= builder_first(&base);
    reencode(&obj_btf, &mut builder, &map, &keep);
    let blob = builder.finish();

    let dir = std::env::temp_dir().join(format!("handover-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let split = dir.join("btf_kinds.split.btf");
    std::fs::write(&split, &blob).expect("write split blob");
    let s = split.to_str().expect("UTF-8 path");
    let ours = handover(&[s, "--base", VMLINUX]);
    let theirs = bpftool(s, Some(VMLINUX));
    std::fs::remove_dir_all(&dir).ok();
    assert!(!ours.is_empty(), "split dump is empty");
    assert_same("split btf_kinds on vmlinux", &ours, &theirs);

    // The split blob reaches base types and strings through the same Btf.
    let split = Btf::parse_split(&blob, Btf::parse(&vmlinux).expect("base")).expect("split");
    assert_eq!(split.first_type_id(), builder_first(&base));
    let record = split
        .id_by_name("record", Kind::Struct)
        .expect("struct record");
    assert!(record >= split.first_type_id());
    let int = split.id_by_name("int", Kind::Int).expect("int");
    assert!(int < split.first_type_id(), "int comes from the base");
    assert_eq!(split.type_by_id(int).expect("int").name(), Ok("int"));
    let layout = handover::layout_of(&split, record).expect("layout");
    assert!(layout.leaves().expect("leaves").len() > 10);
}

fn builder_first(base: &Btf<'_>) -> TypeId {
    TypeId(base.first_type_id().0 + u32::try_from(base.type_count()).expect("count"))
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["btf"],
        &["btf", "dump"],
        &["btf", "dump", "a", "b"],
        &["btf", "dump", "a", "--base"],
    ] {
        let status = Command::new(env!("CARGO_BIN_EXE_handover"))
            .args(args)
            .status()
            .expect("run");
        assert_eq!(status.code(), Some(2), "handover {args:?}");
    }
}

#[test]
fn unreadable_input_exits_1_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["btf", "dump", "/proc/self/status"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad BTF magic") && err.contains("/proc/self/status"),
        "{err}"
    );
}

#[test]
fn fuzz_seed_blobs_dump_matches_bpftool() {
    // fuzz/seeds/btf_parse: every_kind_{le,be}.btf are written by the handover-btf unit
    // test `fuzz_seeds_are_current` (one record of every kind, in both byte orders);
    // btf_kinds_obj.btf is the .BTF of programs/btf_kinds.c, xdp_dispatcher.btf that of
    // xdp-tools' xdp-dispatcher.o.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/btf_parse");
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    seeds.sort();
    assert!(
        seeds.iter().any(|s| s.ends_with("every_kind_be.btf")),
        "big-endian seed missing"
    );
    for seed in seeds {
        assert_file_matches(&seed);
    }
}

#[test]
fn big_endian_object_dump_matches_bpftool() {
    // programs/btf_kinds.c compiled for bpfeb: the .BTF of a big-endian ELF object.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("handover-bpfeb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let object = dir.join("btf_kinds.bpfeb.o");
    let status = Command::new("clang")
        .args([
            "-O2",
            "-g",
            "-target",
            "bpfeb",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
        ])
        .arg(root.join("programs/btf_kinds.c"))
        .arg("-o")
        .arg(&object)
        .status()
        .expect("run clang (apt install clang libbpf-dev)");
    assert!(status.success(), "clang -target bpfeb failed");
    let data = std::fs::read(&object).expect("read object");
    let btf = Btf::parse(btf_bytes(&data).expect(".BTF")).expect("parse");
    assert_eq!(btf.endian(), Endian::Big);
    assert_file_matches(&object);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn elf_without_btf_exits_1_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["btf", "dump", env!("CARGO_BIN_EXE_handover")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no .BTF section"), "{err}");
}
