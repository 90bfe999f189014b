//! The `handover` command as a user meets it: help and version, refused values,
//! non-UTF-8 file names, closed pipes, output paths that must not be replaced,
//! inputs that must not be waited on, names that must not spoof lines, and the exit
//! codes of `diff`.

#![allow(
    clippy::indexing_slicing,
    reason = "test code: an out-of-range index is a failed test"
)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_handover"))
}

fn run<S: AsRef<OsStr>>(args: &[S]) -> Output {
    bin().args(args).stdin(Stdio::null()).output().unwrap()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(rel: &str) -> PathBuf {
    let p = root().join("programs/build").join(rel);
    assert!(
        p.exists(),
        "{} is missing: run programs/build.sh",
        p.display()
    );
    p
}

fn pair(name: &str) -> (PathBuf, PathBuf) {
    (
        fixture(&format!("diff/{name}.old.o")),
        fixture(&format!("diff/{name}.new.o")),
    )
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("handover-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_and_help_with_examples() {
    let v = run(&["--version"]);
    assert!(v.status.success());
    assert_eq!(
        String::from_utf8(v.stdout).unwrap().trim(),
        format!("handover {}", env!("CARGO_PKG_VERSION"))
    );
    for cmd in [
        &["--help"][..],
        &["inspect", "--help"],
        &["snapshot", "--help"],
        &["diff", "--help"],
        &["btf", "dump", "--help"],
        &["plan", "--help"],
        &["upgrade", "--help"],
        &["status", "--help"],
        &["dump", "--help"],
        &["recover", "--help"],
        &["uninstall", "--help"],
    ] {
        let o = run(cmd);
        assert!(o.status.success(), "{cmd:?}");
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(text.contains("Examples:\n  handover "), "{cmd:?}: {text}");
    }
    let top = String::from_utf8(run(&["--help"]).stdout).unwrap();
    assert!(
        top.contains("4  diff, plan: every entry is carried, but some field values are dropped")
            && top.contains("5  upgrade --plan: refused"),
        "{top}"
    );
    assert_eq!(run::<&str>(&[]).status.code(), Some(2));
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn an_unknown_value_names_the_value_and_what_is_accepted() {
    let o = run(&["inspect", "x.o", "--program-type", "x=xdpp"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("x=xdpp") && e.contains("`xdpp`") && e.contains("sched_cls"),
        "{e}"
    );
    let o = run(&["diff", "a", "b", "--policy", "lenient"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("lenient") && e.contains("strict") && e.contains("migrate"),
        "{e}"
    );
    let o = run(&["diff", "a", "b", "--layout", "m=kee:x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`kee`"), "{}", stderr(&o));
}

/// A file name holding byte 0xff (legal on Linux, not UTF-8) works in every command.
#[test]
fn non_utf8_file_names_work() {
    let dir = TempDir::new("non-utf8");
    let name = |s: &[u8]| dir.0.join(OsStr::from_bytes(s));
    let (old_src, new_src) = pair("grow");
    let old = name(b"old\xff.o");
    let new = name(b"new\xff.o");
    std::fs::copy(&old_src, &old).unwrap();
    std::fs::copy(&new_src, &new).unwrap();
    let snap = name(b"maps\xff.json");
    for args in [
        vec![OsStr::new("inspect"), old.as_os_str()],
        vec![OsStr::new("btf"), OsStr::new("dump"), old.as_os_str()],
        vec![
            OsStr::new("snapshot"),
            old.as_os_str(),
            OsStr::new("-o"),
            snap.as_os_str(),
        ],
        vec![OsStr::new("diff"), snap.as_os_str(), new.as_os_str()],
        vec![
            OsStr::new("diff"),
            old.as_os_str(),
            new.as_os_str(),
            OsStr::new("--json"),
        ],
    ] {
        let o = run(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    assert!(snap.exists());
    // A missing one is named in the error, lossily.
    let o = run(&[OsStr::new("inspect"), name(b"gone\xff.o").as_os_str()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("gone\u{fffd}.o"), "{}", stderr(&o));
}

/// Output into a pipe whose reader is gone: the command stops writing, prints
/// nothing on stderr and exits with the status it decided (no panic, no message).
#[test]
fn a_closed_stdout_pipe_ends_every_command_quietly() {
    let obj = fixture("maps_btf.o");
    let (shrink_old, shrink_new) = pair("shrink");
    let (grow_old, grow_new) = pair("grow");
    let p = |p: &Path| p.to_str().unwrap().to_owned();
    let cases: Vec<(Vec<String>, i32)> = vec![
        (vec!["inspect".into(), p(&obj)], 0),
        (vec!["inspect".into(), p(&obj), "--json".into()], 0),
        (vec!["diff".into(), p(&grow_old), p(&grow_new)], 0),
        (
            vec!["diff".into(), p(&grow_old), p(&grow_new), "--json".into()],
            0,
        ),
        (vec!["diff".into(), p(&shrink_old), p(&shrink_new)], 3),
        (vec!["btf".into(), "dump".into(), p(&obj)], 0),
        (vec!["--help".into()], 0),
    ];
    let mut cases = cases;
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        // Far more than a pipe buffer: the write fails part way.
        cases.push((
            vec![
                "btf".into(),
                "dump".into(),
                "/sys/kernel/btf/vmlinux".into(),
            ],
            0,
        ));
    }
    for (args, code) in cases {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = bin()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert!(o.stderr.is_empty(), "{args:?}: {}", stderr(&o));
    }
}

/// `-o` never replaces a device node, a FIFO, a symbolic link or a directory: the
/// refusal names the path and what it is, before anything is written.
#[test]
fn snapshot_output_must_be_a_regular_file_or_missing() {
    let dir = TempDir::new("output");
    let obj = fixture("maps_btf.o");
    let fifo = dir.0.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let target = dir.0.join("kept.json");
    std::fs::write(&target, "kept").unwrap();
    let link = dir.0.join("link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for (out, kind) in [
        (Path::new("/dev/null"), "a character device"),
        (fifo.as_path(), "a FIFO"),
        (link.as_path(), "a symbolic link"),
        (dir.0.as_path(), "a directory"),
    ] {
        let o = run(&[
            OsStr::new("snapshot"),
            obj.as_os_str(),
            OsStr::new("-o"),
            out.as_os_str(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", out.display());
        let e = stderr(&o);
        assert!(
            e.contains(&out.display().to_string()) && e.contains(kind),
            "{e}"
        );
    }
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept");
    let o = run(&[
        OsStr::new("snapshot"),
        obj.as_os_str(),
        OsStr::new("-o"),
        target.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Inputs: a FIFO without a writer is refused at once by every command, a device
/// is refused, and a huge sparse file is refused by its size, naming the limit.
#[test]
fn inputs_are_regular_files_within_a_limit() {
    let dir = TempDir::new("inputs");
    let fifo = dir.0.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let obj = fixture("maps_btf.o");
    let big = dir.0.join("big.o");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(handover::loader::MAX_OBJECT_SIZE + 1)
        .unwrap();
    let out = dir.0.join("out.json");
    for (bad, kind) in [
        (fifo.as_os_str(), "a FIFO"),
        (OsStr::new("/dev/zero"), "a character device"),
        (big.as_os_str(), "MAX_OBJECT_SIZE"),
    ] {
        for args in [
            vec![OsStr::new("inspect"), bad],
            vec![OsStr::new("btf"), OsStr::new("dump"), bad],
            vec![OsStr::new("diff"), bad, obj.as_os_str()],
            vec![
                OsStr::new("snapshot"),
                bad,
                OsStr::new("-o"),
                out.as_os_str(),
            ],
        ] {
            let o = run(&args);
            assert_eq!(o.status.code(), Some(1), "{args:?}");
            assert!(stderr(&o).contains(kind), "{args:?}: {}", stderr(&o));
        }
    }
    assert!(!out.exists());
}

/// A crafted object whose map, type and field names hold a newline, an escape
/// sequence and a C1 control: every text output shows them escaped, so no line can
/// be forged; JSON keeps them exact.
#[test]
fn names_with_control_characters_are_escaped_in_text() {
    let dir = TempDir::new("escape");
    let (old, new) = pair("renamed");
    let data = std::fs::read(&new).unwrap();
    let replace = |d: Vec<u8>, from: &[u8], to: &[u8]| {
        assert_eq!(from.len(), to.len());
        let mut out = Vec::with_capacity(d.len());
        let mut i = 0;
        while i < d.len() {
            if d[i..].starts_with(from) {
                out.extend_from_slice(to);
                i += from.len();
            } else {
                out.push(d[i]);
                i += 1;
            }
        }
        out
    };
    let data = replace(data, b"counters", b"c\nmap x:");
    let data = replace(data, b"stats", b"\x1b[2Jx");
    let data = replace(data, b"packets", b"pa\xc2\x9bket");
    let crafted = dir.0.join("crafted.o");
    std::fs::write(&crafted, &data).unwrap();
    let text_runs = [
        vec![OsStr::new("inspect"), crafted.as_os_str()],
        vec![OsStr::new("diff"), old.as_os_str(), crafted.as_os_str()],
        vec![OsStr::new("diff"), crafted.as_os_str(), crafted.as_os_str()],
        vec![OsStr::new("btf"), OsStr::new("dump"), crafted.as_os_str()],
    ];
    for args in text_runs {
        let o = run(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{args:?}: {text:?}"
        );
        assert!(!text.lines().any(|l| l.starts_with("map x:")), "{text}");
        assert!(text.contains("c\\nmap x:"), "{args:?}: {text}");
    }
    let o = run(&[
        OsStr::new("inspect"),
        crafted.as_os_str(),
        OsStr::new("--json"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["maps"][0]["name"], "c\nmap x:");
}

#[test]
fn diff_exit_codes_tell_lost_entries_from_dropped_values() {
    let s = |p: &Path| p.as_os_str().to_owned();
    let code = |(old, new): (PathBuf, PathBuf), extra: &[&str]| {
        let mut args = vec![OsStr::new("diff").to_owned(), s(&old), s(&new)];
        args.extend(extra.iter().map(|e| OsStr::new(e).to_owned()));
        run(&args).status.code()
    };
    assert_eq!(code(pair("grow"), &[]), Some(0));
    assert_eq!(code(pair("shrink"), &[]), Some(3));
    // Every entry carried, a field dropped.
    assert_eq!(code(pair("delete_field"), &[]), Some(4));
    assert_eq!(code(pair("renamed"), &[]), Some(4));
    // Lost entries win over dropped values.
    assert_eq!(code(pair("delete_field"), &["--policy", "strict"]), Some(3));
    // A size-only map: lost without a layout, migrated with one.
    assert_eq!(code(pair("size_only"), &[]), Some(3));
    assert_eq!(
        code(pair("size_only"), &["--layout", "backends=value:be_val"]),
        Some(0)
    );
    let o = run(&[
        OsStr::new("diff"),
        pair("size_only").0.as_os_str(),
        pair("size_only").1.as_os_str(),
        OsStr::new("--layout"),
        OsStr::new("backend=value:be_val"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("`backend`"), "{}", stderr(&o));
}

/// A snapshot of two objects diffed against one of them: the other object is named
/// as missing and the diff refused, unless --allow-missing-objects, which reports
/// its maps removed.
#[test]
fn objects_missing_from_new_are_named_and_required() {
    let dir = TempDir::new("missing");
    let a = dir.0.join("a.o");
    let b = dir.0.join("b.o");
    std::fs::copy(pair("grow").0, &a).unwrap();
    std::fs::copy(pair("rekey").0, &b).unwrap();
    let snap = dir.0.join("both.json");
    let o = run(&[
        OsStr::new("snapshot"),
        a.as_os_str(),
        b.as_os_str(),
        OsStr::new("-o"),
        snap.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[OsStr::new("diff"), snap.as_os_str(), a.as_os_str()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("b.o") && e.contains("--allow-missing-objects") && !e.contains("a.o,"),
        "{e}"
    );
    let o = run(&[
        OsStr::new("diff"),
        snap.as_os_str(),
        a.as_os_str(),
        OsStr::new("--allow-missing-objects"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("map b.o:conns: removed"), "{text}");
    // Both objects given: nothing is missing.
    let o = run(&[OsStr::new("diff"), snap.as_os_str(), snap.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
}
