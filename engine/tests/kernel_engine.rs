//! The engine against the running kernel (root): programs/engine_v1.c installed in a
//! private bpffs with its connect4 program attached to a private cgroup, 100,000
//! entries filled, connections made from a child in its own network namespace (to
//! 127.0.0.1 only), upgraded to programs/engine_v2.c, every entry read back and
//! converted, the new program counting on from the carried counter, a restart that
//! loads nothing, and an uninstall after which the bpffs is empty and every recorded
//! kernel object is gone.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

mod common;
#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use common::{backend_v1, backend_v2, objects, options};
use handover_engine::{ApplyOptions, Engine, LockWait, Start, wait_gone};
use handover_sys::UpdateFlags;

const TEST: &str = "install_fill_connect_upgrade_restart_uninstall";
const ENTRIES: u32 = 100_000;

/// The child: joins the cgroup, makes its own network namespace, and connects to
/// 127.0.0.1 at each port of `HANDOVER_PORTS` (nothing listens: each is refused
/// after connect4 ran).
fn connect_child() {
    let cgroup = std::env::var("HANDOVER_CGROUP").expect("cgroup path");
    let ports = std::env::var("HANDOVER_PORTS").expect("ports");
    testenv::join_cgroup(cgroup.as_ref());
    testenv::enter_new_netns();
    for p in ports.split(',') {
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, p.parse::<u16>().unwrap()));
        let _ = TcpStream::connect_timeout(&to, Duration::from_secs(2));
    }
    println!("RESULT done");
}

fn connect(cgroup: &testenv::Cgroup, ports: &[u16]) {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    let out = testenv::run_child(
        TEST,
        "connect",
        &[
            ("HANDOVER_CGROUP", cgroup.path().display().to_string()),
            ("HANDOVER_PORTS", list.join(",")),
        ],
    );
    assert!(out.contains("RESULT done"), "{out}");
}

fn key(i: u32) -> [u8; 4] {
    // Keys of 127.1.0.0/16 and up: the child's connects go to 127.0.0.1.
    (0x7f01_0000u32 + i).to_be_bytes()
}

const LOCALHOST: [u8; 4] = [127, 0, 0, 1];

/// `connects` and `last_port` of a version 1 value (its padding is whatever the
/// program's stack held).
fn fields_v1(v: &[u8; 16]) -> (u64, u32) {
    let (c, rest) = v.split_at(8);
    (
        u64::from_ne_bytes(c.try_into().unwrap()),
        u32::from_ne_bytes(rest[..4].try_into().unwrap()),
    )
}

/// `connects`, `flags` and `last_port` of a version 2 value.
fn fields_v2(v: &[u8; 24]) -> (u64, u32, u64) {
    (
        u64::from_ne_bytes(v[..8].try_into().unwrap()),
        u32::from_ne_bytes(v[8..12].try_into().unwrap()),
        u64::from_ne_bytes(v[16..].try_into().unwrap()),
    )
}

#[test]
fn install_fill_connect_upgrade_restart_uninstall() {
    if testenv::child_role().as_deref() == Some("connect") {
        connect_child();
        return;
    }
    if !testenv::privileged(TEST) {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let cgroup = testenv::Cgroup::new();
    let state = testenv::TempDir::new("handover-engine-state");
    let opts = options(cgroup.path());
    let open = || Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    // A fresh bpffs may hold the kernel's preloaded iterators (maps.debug, ...).
    let listing = || {
        let mut v: Vec<String> = std::fs::read_dir(fs.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = listing();

    // Install version 1.
    let mut e = open();
    let v1 = objects(1);
    let plan = e.plan(&v1, &opts).unwrap();
    assert_eq!(plan.start, Start::Fresh { stale: None });
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    let backends = e.map_access("backends").unwrap();
    for i in 0..ENTRIES {
        backends
            .update(
                &key(i),
                &backend_v1(u64::from(i), i % 65536),
                UpdateFlags::ANY,
            )
            .unwrap();
    }
    drop(backends);
    connect(&cgroup, &[1000, 1001, 1002, 1003, 1004]);
    let counted = e.map::<[u8; 4], [u8; 16]>("backends").unwrap();
    assert_eq!(
        fields_v1(&counted.get(&LOCALHOST).unwrap().unwrap()),
        (5, 1004)
    );
    drop(counted);
    drop(e);

    // Upgrade to version 2 in a new process's worth of state (a new engine).
    let mut e = open();
    let v2 = objects(2);
    let plan = e.plan(&v2, &opts).unwrap();
    assert!(matches!(plan.start, Start::Upgrade { .. }), "{plan}");
    let report = e.apply(&plan, &v2, ApplyOptions::default()).unwrap();
    assert_eq!(report.maps["backends"].copied, u64::from(ENTRIES) + 1);
    let m = e.map::<[u8; 4], [u8; 24]>("backends").unwrap();
    for i in 0..ENTRIES {
        let got = m
            .get(&key(i))
            .unwrap()
            .unwrap_or_else(|| panic!("entry {i} lost"));
        assert_eq!(
            got.to_vec(),
            backend_v2(u64::from(i), i % 65536),
            "entry {i}"
        );
    }
    assert_eq!(
        fields_v2(&m.get(&LOCALHOST).unwrap().unwrap()),
        (5, 0, 1004)
    );
    let conns = e.map::<u32, u32>("conns").unwrap();
    assert_eq!(
        conns.get(&1004).unwrap(),
        Some(u32::from_ne_bytes(LOCALHOST))
    );
    assert_eq!(conns.get(&1000).unwrap(), None);
    // The new program runs, on the carried counter.
    connect(&cgroup, &[2000, 2001, 2002]);
    assert_eq!(
        fields_v2(&m.get(&LOCALHOST).unwrap().unwrap()),
        (8, 0, 2002)
    );
    drop((m, conns));
    let installed = e.state().unwrap().unwrap();
    drop(e);

    // A restart loads nothing.
    let mut e = open();
    let plan = e.plan(&v2, &opts).unwrap();
    assert_eq!(plan.start, Start::Restart);
    let report = e.apply(&plan, &v2, ApplyOptions::default()).unwrap();
    assert!(report.reattached.is_empty());
    assert_eq!(e.state().unwrap().unwrap(), installed);

    // Uninstall: the bpffs is as before, every recorded object is gone.
    let gone = e.uninstall().unwrap();
    assert_eq!(gone.objects, installed.objects());
    assert_eq!(listing(), before);
    drop(e);
    let mut k = handover_engine::RealKernel::open(fs.path(), state.path()).unwrap();
    let alive = wait_gone(&mut k, &gone.objects, Duration::from_secs(10));
    assert!(alive.is_empty(), "still in the kernel: {alive:?}");
}
