//! Pins in a private bpffs instance: first pins, atomic replacement under a
//! concurrent reader, exchange and rollback, refusal of symlinks and foreign file
//! systems, crash recovery and uninstall through the manifest.
//!
//! Needs root; skips loudly otherwise.

#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use handover_bpffs::{EntryKind, Error, PinPath, PinRoot};
use handover_sys::{Bpf, MapCreate, MapType, OpenFlags};

struct Env {
    bpf: Bpf,
    fs: testenv::Bpffs,
    state: testenv::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            bpf: Bpf::kernel(),
            fs: testenv::Bpffs::mount(),
            state: testenv::TempDir::new("handover-state"),
        }
    }

    fn root(&self) -> PinRoot {
        PinRoot::open(
            &self.bpf,
            self.fs.path(),
            &self.state.path().join("pins.json"),
        )
        .unwrap()
    }

    fn map(&self) -> (OwnedFd, u32) {
        let fd = self
            .bpf
            .map_create(&MapCreate::new(MapType::Array, 4, 8, 1))
            .unwrap();
        let id = self.bpf.map_info(&fd).unwrap().id;
        (fd, id)
    }

    fn id_at(&self, root: &PinRoot, path: &PinPath) -> u32 {
        let fd = root.get(path, OpenFlags::READ_ONLY).unwrap();
        self.bpf.map_info(&fd).unwrap().id
    }
}

fn p(s: &str) -> PinPath {
    PinPath::new(s).unwrap()
}

#[test]
fn pin_replace_exchange_and_rollback() {
    if !testenv::privileged("pin_replace_exchange_and_rollback") {
        return;
    }
    let env = Env::new();
    assert!(
        handover_bpffs::find_mounts()
            .unwrap()
            .iter()
            .any(|m| m.mount_point == env.fs.path())
    );
    assert!(handover_bpffs::is_bpffs(env.fs.path()).unwrap());
    let root = env.root();
    let path = p("mesh/maps/endpoints");
    let (a, id_a) = env.map();
    let (b, id_b) = env.map();
    let (c, id_c) = env.map();

    root.pin(&a, &path).unwrap();
    assert_eq!(env.id_at(&root, &path), id_a);
    // Directories were created 0700.
    let mode = std::fs::metadata(env.fs.path().join("mesh/maps")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o700
    );
    // A first pin never overwrites.
    let err = root.pin(&b, &path).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
    assert_eq!(env.id_at(&root, &path), id_a);

    root.replace(&b, &path).unwrap();
    assert_eq!(env.id_at(&root, &path), id_b);

    root.exchange(&c, &path).unwrap();
    assert_eq!(env.id_at(&root, &path), id_c);
    let kept = env
        .bpf
        .obj_get(
            &env.fs
                .path()
                .join("mesh/maps")
                .join("endpoints__handover_prev"),
            OpenFlags::READ_ONLY,
        )
        .unwrap();
    assert_eq!(env.bpf.map_info(&kept).unwrap().id, id_b);
    root.rollback(&path).unwrap();
    assert_eq!(env.id_at(&root, &path), id_b);
    assert!(
        !env.fs
            .path()
            .join("mesh/maps/endpoints__handover_prev")
            .exists()
    );

    root.exchange(&c, &path).unwrap();
    root.commit(&path).unwrap();
    assert_eq!(env.id_at(&root, &path), id_c);
    let names: Vec<_> = std::fs::read_dir(env.fs.path().join("mesh/maps"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["endpoints"]);

    // The manifest, re-read from disk, lists exactly what was created.
    let again = env.root();
    let entries: Vec<_> = again
        .entries()
        .into_iter()
        .map(|e| (e.kind, e.path))
        .collect();
    assert_eq!(
        entries,
        [
            (EntryKind::Dir, "mesh".to_owned()),
            (EntryKind::Dir, "mesh/maps".to_owned()),
            (EntryKind::Pin, "mesh/maps/endpoints".to_owned()),
        ]
    );
    let text = std::fs::read_to_string(env.state.path().join("pins.json")).unwrap();
    assert!(
        text.contains("\"temporary\": \"mesh/maps/endpoints__handover_tmp\""),
        "{text}"
    );
}

#[test]
fn a_reader_never_misses_the_pin_during_10000_replacements() {
    if !testenv::privileged("a_reader_never_misses_the_pin_during_10000_replacements") {
        return;
    }
    let env = Env::new();
    let root = Arc::new(env.root());
    let path = p("state/counters");
    let (a, id_a) = env.map();
    let (b, id_b) = env.map();
    root.pin(&a, &path).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (root, path, stop, reads, bpf) = (
            root.clone(),
            path.clone(),
            stop.clone(),
            reads.clone(),
            env.bpf.clone(),
        );
        std::thread::spawn(move || {
            let mut seen = [0u64; 2];
            while !stop.load(Ordering::Relaxed) {
                let fd = root
                    .get(&path, OpenFlags::READ_ONLY)
                    .unwrap_or_else(|e| panic!("the pin vanished during a replacement: {e}"));
                let id = bpf.map_info(&fd).unwrap().id;
                match id {
                    x if x == id_a => seen[0] += 1,
                    x if x == id_b => seen[1] += 1,
                    other => panic!("pin holds map {other}, neither {id_a} nor {id_b}"),
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
            seen
        })
    };
    for i in 0..10_000 {
        let next = if i % 2 == 0 { &b } else { &a };
        root.replace(next, &path).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let seen = reader.join().expect("reader saw no gap");
    eprintln!(
        "reader opened the pin {} times: {seen:?} (old, new)",
        reads.load(Ordering::Relaxed)
    );
    assert!(
        seen[0] > 0 && seen[1] > 0,
        "the reader saw both maps: {seen:?}"
    );
    assert_eq!(env.id_at(&root, &path), id_a);
    // No temporary is left behind.
    assert_eq!(
        std::fs::read_dir(env.fs.path().join("state"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn symlinks_dots_and_foreign_file_systems_are_refused() {
    if !testenv::privileged("symlinks_dots_and_foreign_file_systems_are_refused") {
        return;
    }
    let env = Env::new();
    let root = env.root();
    let (a, _) = env.map();
    root.pin(&a, &p("real/pin")).unwrap();
    std::os::unix::fs::symlink("real", env.fs.path().join("alias")).unwrap();
    let err = root.get(&p("alias/pin"), OpenFlags::READ_ONLY).unwrap_err();
    assert!(matches!(err, Error::NotADirectory { .. }), "{err}");
    let err = root.replace(&a, &p("alias/other")).unwrap_err();
    assert!(matches!(err, Error::NotADirectory { .. }), "{err}");
    assert!(!env.fs.path().join("real/other").exists());

    // Names bpffs would refuse never reach the kernel.
    for bad in ["map.v2", "../escape", "a/./b", "/abs"] {
        assert!(
            matches!(PinPath::new(bad), Err(Error::InvalidName { .. })),
            "{bad}"
        );
    }
    // The kernel indeed refuses a dot, with EPERM.
    let dir = std::fs::File::open(env.fs.path()).unwrap();
    let err = env.bpf.obj_pin_at(&a, &dir, "map.v2").unwrap_err();
    assert_eq!(err.errno(), Some(libc::EPERM));

    // A pin root must be on bpffs.
    let err =
        PinRoot::open(&env.bpf, env.state.path(), &env.state.path().join("m.json")).unwrap_err();
    assert!(matches!(err, Error::NotBpffs { .. }), "{err}");
    // A manifest written for another root is refused.
    let err = PinRoot::open(
        &env.bpf,
        env.fs.path().join("real").as_path(),
        &env.state.path().join("pins.json"),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Manifest { .. }), "{err}");
}

#[test]
fn recovery_and_uninstall_remove_exactly_what_is_ours() {
    if !testenv::privileged("recovery_and_uninstall_remove_exactly_what_is_ours") {
        return;
    }
    let env = Env::new();
    let root = env.root();
    let (a, _) = env.map();
    let (b, _) = env.map();
    root.pin(&a, &p("app/one")).unwrap();
    root.exchange(&b, &p("app/two")).unwrap();
    root.exchange(&a, &p("app/two")).unwrap(); // leaves a rollback pin
    // A crash between the temporary pin and the rename leaves the temporary.
    env.bpf
        .obj_pin(&b, &env.fs.path().join("app/one__handover_tmp"))
        .unwrap();
    // Somebody else's pins, beside ours and in a directory of ours.
    env.bpf.obj_pin(&b, &env.fs.path().join("foreign")).unwrap();
    env.bpf
        .obj_pin(&b, &env.fs.path().join("app/theirs"))
        .unwrap();

    let reopened = env.root();
    let rec = reopened.recover().unwrap();
    assert_eq!(rec.removed_temporaries, ["app/one__handover_tmp"]);
    assert!(env.fs.path().join("app/one").exists());
    assert!(reopened.recover().unwrap().removed_temporaries.is_empty());

    // Unpinning something not ours is refused.
    let err = reopened.unpin(&p("foreign")).unwrap_err();
    assert!(matches!(err, Error::Manifest { .. }), "{err}");

    reopened.uninstall().unwrap();
    let mut left: Vec<_> = walk(env.fs.path());
    left.sort();
    // Ours are gone; theirs stay, and so does the directory that still holds theirs.
    assert_eq!(left, ["app", "app/theirs", "foreign"]);
    let entries: Vec<_> = env.root().entries().into_iter().map(|e| e.path).collect();
    assert_eq!(entries, ["app"]);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        // `maps.debug` and `progs.debug` are made by the kernel in every instance
        // (bpf_preload); no pin can have a '.' in its name.
        if name.contains('.') {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()).into_iter().map(|n| format!("{name}/{n}")));
        }
        out.push(name);
    }
    out
}

#[test]
fn private_mounts_are_fresh_instances_found_by_magic() {
    if !testenv::privileged("private_mounts_are_fresh_instances_found_by_magic") {
        return;
    }
    let dir = testenv::TempDir::new("handover-mount");
    assert!(!handover_bpffs::is_bpffs(dir.path()).unwrap());
    // Refuses to unmount what is not a bpffs.
    let err = handover_bpffs::unmount_bpffs(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NotBpffs { .. }), "{err}");
    handover_bpffs::mount_bpffs(dir.path()).unwrap();
    let guard = Unmount(dir.path().to_owned());
    assert!(handover_bpffs::is_bpffs(dir.path()).unwrap());
    assert!(
        handover_bpffs::find_mounts()
            .unwrap()
            .iter()
            .any(|m| m.mount_point == dir.path())
    );
    // Fresh: nothing but the kernel's own preload entries.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.contains('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    let mode = std::fs::metadata(dir.path()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o700
    );
    drop(guard);
    assert!(!handover_bpffs::is_bpffs(dir.path()).unwrap());
}

/// Unmounts on drop, also after a failed assertion.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = handover_bpffs::unmount_bpffs(&self.0);
    }
}

#[test]
fn a_failed_pin_over_a_foreign_pin_is_not_recorded_as_ours() {
    if !testenv::privileged("a_failed_pin_over_a_foreign_pin_is_not_recorded_as_ours") {
        return;
    }
    let env = Env::new();
    let root = env.root();
    let (a, id_a) = env.map();
    let (b, _) = env.map();
    root.pin(&a, &p("app/ours")).unwrap();
    env.bpf
        .obj_pin(&a, &env.fs.path().join("app/theirs"))
        .unwrap();
    let err = root.pin(&b, &p("app/theirs")).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
    assert_eq!(env.id_at(&root, &p("app/theirs")), id_a);
    assert!(!env.fs.path().join("app/theirs__handover_tmp").exists());
    let paths: Vec<_> = env.root().entries().into_iter().map(|e| e.path).collect();
    assert_eq!(paths, ["app", "app/ours"]);

    // So neither unpin nor uninstall touches it.
    let err = root.unpin(&p("app/theirs")).unwrap_err();
    assert!(matches!(err, Error::Manifest { .. }), "{err}");
    root.uninstall().unwrap();
    let mut left = walk(env.fs.path());
    left.sort();
    assert_eq!(left, ["app", "app/theirs"]);
}

#[test]
fn a_pin_that_is_a_symlink_is_not_followed() {
    if !testenv::privileged("a_pin_that_is_a_symlink_is_not_followed") {
        return;
    }
    let env = Env::new();
    let root = env.root();
    let (a, id_a) = env.map();
    root.pin(&a, &p("real/pin")).unwrap();
    std::os::unix::fs::symlink("pin", env.fs.path().join("real/alias")).unwrap();
    // The kernel itself follows it ...
    let fd = env
        .bpf
        .obj_get(&env.fs.path().join("real/alias"), OpenFlags::READ_ONLY)
        .unwrap();
    assert_eq!(env.bpf.map_info(&fd).unwrap().id, id_a);
    // ... the pin root does not.
    let err = root
        .get(&p("real/alias"), OpenFlags::READ_ONLY)
        .unwrap_err();
    assert!(matches!(err, Error::Symlink { .. }), "{err}");
    assert_eq!(env.id_at(&root, &p("real/pin")), id_a);
}

#[test]
fn a_failed_pin_over_our_directory_keeps_the_directory_recorded() {
    if !testenv::privileged("a_failed_pin_over_our_directory_keeps_the_directory_recorded") {
        return;
    }
    let env = Env::new();
    let root = env.root();
    let (a, _) = env.map();
    root.pin(&a, &p("app/one")).unwrap();
    // `app` is our directory: a pin cannot take its name, and forgetting that pin
    // must not forget the directory.
    let err = root.pin(&a, &p("app")).unwrap_err();
    assert!(err.errno().is_some(), "{err}");
    let entries: Vec<_> = env
        .root()
        .entries()
        .into_iter()
        .map(|e| (e.kind, e.path))
        .collect();
    assert_eq!(
        entries,
        [
            (EntryKind::Dir, "app".to_owned()),
            (EntryKind::Pin, "app/one".to_owned())
        ]
    );
    root.uninstall().unwrap();
    assert!(walk(env.fs.path()).is_empty(), "{:?}", walk(env.fs.path()));
}
