//! Shared by the engine's tests: the fixture objects and options, temporary state
//! directories, filling and reading the fake kernel's maps.
#![allow(dead_code, reason = "each test file uses a different part")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use handover_engine::migrate::FakeEntries;
use handover_engine::{AttachPoint, Attachment, FakeWorld, ObjectSource, Options, Via};

/// programs/engine_vN.c, built by programs/build.sh into programs/build/engine_vN.o.
pub fn objects(version: u32) -> Vec<ObjectSource> {
    static CACHE: std::sync::Mutex<BTreeMap<u32, Vec<ObjectSource>>> =
        std::sync::Mutex::new(BTreeMap::new());
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cache
        .entry(version)
        .or_insert_with(|| read_objects(version))
        .clone()
}

fn read_objects(version: u32) -> Vec<ObjectSource> {
    fixture(&format!("engine_v{version}.o"), "engine.o")
}

/// programs/build/FILE (built by programs/build.sh) as the one object of a set, named
/// `name`.
pub fn fixture(file: &str, name: &str) -> Vec<ObjectSource> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../programs/build/{file}"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    vec![ObjectSource::new(name, bytes)]
}

/// programs/engine_sockmsg_vN.c: its `count` (sk_msg) is put on its `socks` sockhash.
pub fn sockmsg_object(version: u32) -> Vec<ObjectSource> {
    fixture(&format!("engine_sockmsg_v{version}.o"), "sockmsg.o")
}

/// The sk_msg verdict hook of the `socks` sockhash, held as `via` says; `map` is the
/// live map's id where the state knows it.
pub fn sockmsg_point(map: Option<u32>, via: Via) -> AttachPoint {
    AttachPoint::SockMap {
        map: "socks".into(),
        attach_type: "sk_msg_verdict".into(),
        target: map,
        via,
    }
}

/// engine_sockmsg_vN.c's `count` on the `socks` sockhash, held as `via` says.
pub fn sockmsg_options(via: Via) -> Options {
    Options {
        attachments: vec![Attachment {
            name: "count_msgs".into(),
            program: "count".into(),
            point: sockmsg_point(None, via),
        }],
        ..Options::default()
    }
}

pub fn cgroup_point(path: &Path) -> AttachPoint {
    cgroup_point_via(path, Via::Auto)
}

/// The connect4 hook of the cgroup at `path`, held as `via` says.
pub fn cgroup_point_via(path: &Path, via: Via) -> AttachPoint {
    AttachPoint::Cgroup {
        path: path.to_owned(),
        attach_type: "cgroup_inet4_connect".into(),
        via,
    }
}

pub fn options(cgroup: &Path) -> Options {
    options_via(cgroup, Via::Auto)
}

/// engine_vN.c's `count_connect` attached at the cgroup's connect4 hook as `via` says.
pub fn options_via(cgroup: &Path, via: Via) -> Options {
    Options {
        attachments: vec![Attachment {
            name: "connect".into(),
            program: "count_connect".into(),
            point: cgroup_point_via(cgroup, via),
        }],
        ..Options::default()
    }
}

/// A state directory removed on drop.
#[derive(Debug)]
pub struct StateDir(pub PathBuf);

static N: AtomicU32 = AtomicU32::new(0);

impl StateDir {
    pub fn new(tag: &str) -> Self {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let p = base.join(format!(
            "handover-engine-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    /// A copy of the directory's files as a crash leaves them (the lock, held by a
    /// process that died, is not one of them), in a new directory tagged `tag`.
    pub fn crashed_copy(&self, tag: &str) -> Self {
        let dir = Self::new(tag);
        for f in std::fs::read_dir(&self.0).unwrap() {
            let f = f.unwrap();
            if f.file_name() != "lock" {
                std::fs::copy(f.path(), dir.0.join(f.file_name())).unwrap();
            }
        }
        dir
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Version 1's `struct backend { u64 connects; u32 last_port; }` (16 bytes).
pub fn backend_v1(connects: u64, port: u32) -> Vec<u8> {
    let mut v = connects.to_ne_bytes().to_vec();
    v.extend_from_slice(&port.to_ne_bytes());
    v.extend_from_slice(&[0; 4]);
    v
}

/// Version 2's `struct backend { u64 connects; u32 flags; u64 last_port; }` (24 bytes).
pub fn backend_v2(connects: u64, port: u32) -> Vec<u8> {
    let mut v = connects.to_ne_bytes().to_vec();
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&u64::from(port).to_ne_bytes());
    v
}

/// Fills `backends` and `conns` of the installed set with `n` entries each; returns
/// what version 1 and version 2 must hold afterwards.
pub fn fill(
    world: &FakeWorld,
    n: u32,
) -> (
    BTreeMap<&'static str, FakeEntries>,
    BTreeMap<&'static str, FakeEntries>,
) {
    let backends = world.map_at("maps/backends").expect("backends pinned");
    let conns = world.map_at("maps/conns").expect("conns pinned");
    let mut v1 = BTreeMap::new();
    let mut v2 = BTreeMap::new();
    let (mut b1, mut b2, mut c) = (FakeEntries::new(), FakeEntries::new(), FakeEntries::new());
    for i in 0..n {
        let ip = 0x7f00_0000u32 + i;
        b1.insert(
            ip.to_ne_bytes().to_vec(),
            backend_v1(u64::from(i) * 3, 1000 + i),
        );
        b2.insert(
            ip.to_ne_bytes().to_vec(),
            backend_v2(u64::from(i) * 3, 1000 + i),
        );
        c.insert((2 * i).to_ne_bytes().to_vec(), ip.to_ne_bytes().to_vec());
    }
    backends.with_entries(|e| *e = b1.clone());
    conns.with_entries(|e| *e = c.clone());
    v1.insert("backends", b1);
    v1.insert("conns", c.clone());
    v2.insert("backends", b2);
    v2.insert("conns", c);
    (v1, v2)
}

/// Runs `f` with `point` firing at its `n`th evaluation (0-based).
pub fn with_crash<R>(point: &str, n: usize, f: impl FnOnce() -> R) -> R {
    fail::cfg(point, &format!("{n}*off->return")).unwrap();
    let r = f();
    fail::remove(point);
    r
}

/// Whether `r` is a crash at a failpoint; any other error is a test failure.
pub fn crashed(r: &Result<impl std::fmt::Debug, handover_engine::Error>) -> bool {
    match r {
        Err(handover_engine::Error::Crashed { .. }) => true,
        Ok(_) => false,
        Err(e) => panic!("expected a crash or success, got: {e}"),
    }
}

// The values of programs/engine_writer.h (writer_fake, kernel_writer).

/// A version 1 `struct stat` per CPU: packets, port, padding (16 bytes a slot).
pub fn stat_v1(slots: &[(u64, u32)]) -> Vec<u8> {
    slots
        .iter()
        .flat_map(|(p, port)| {
            let mut v = p.to_ne_bytes().to_vec();
            v.extend(port.to_ne_bytes());
            v.extend([0u8; 4]);
            v
        })
        .collect()
}

/// A version 2 `struct stat` per CPU: flags, padding, packets, port, padding (24 bytes).
pub fn stat_v2(slots: &[(u32, u64, u32)]) -> Vec<u8> {
    slots
        .iter()
        .flat_map(|(flags, p, port)| {
            let mut v = flags.to_ne_bytes().to_vec();
            v.extend([0u8; 4]);
            v.extend(p.to_ne_bytes());
            v.extend(port.to_ne_bytes());
            v.extend([0u8; 4]);
            v
        })
        .collect()
}

/// A version 1 `struct account`: lock, owner, balance.
pub fn account_v1(owner: u32, balance: u64) -> Vec<u8> {
    let mut v = vec![0u8; 4];
    v.extend(owner.to_ne_bytes());
    v.extend(balance.to_ne_bytes());
    v
}

/// A version 2 `struct account`: opened, lock, owner, balance.
pub fn account_v2(opened: u64, owner: u32, balance: u64) -> Vec<u8> {
    let mut v = opened.to_ne_bytes().to_vec();
    v.extend(account_v1(owner, balance));
    v
}
