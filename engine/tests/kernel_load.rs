//! An upgrade under load against the running kernel (root): programs/engine_load_v1.c
//! is installed in a private bpffs with its connect4 program on a private cgroup;
//! a client in that cgroup and in its own network namespace connects continuously to
//! 127.0.0.1-16 (nothing listens: each connect is refused after connect4 ran), so
//! the program counts connects per backend and inserts and deletes per-connection
//! entries all through the upgrade to programs/engine_load_v2.c, which changes both
//! value layouts (a migrate of both maps: copy, delta passes, switch, reconcile).
//!
//! Afterwards: every backend's counter equals the connects the client made to it
//! (the `sum` rule of the tag in engine_load_v2.c, applied in the kernel), every
//! connection entry inserted and not deleted is there with the address of its last
//! insert, every deleted one is gone (version 2 writes tombstones), each backend's
//! last port is the port of its last connect (the new program's writes are never
//! overwritten by the old ones'), and every filled entry is carried converted.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

mod common;
#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{backend_v1, backend_v2};
use handover_engine::{
    ApplyOptions, AttachPoint, Attachment, DeltaBounds, Engine, LockWait, ObjectSource, Options,
    Start, Via,
};
use handover_sys::UpdateFlags;

const TEST: &str = "an_upgrade_under_connect_load_loses_no_count_and_no_entry";
const FILLED: u32 = 50_000;
const BACKENDS: u32 = 16;
/// Even ports the client inserts at, from 2000 on.
const PORTS: u32 = 25_000;

fn object(version: u32) -> Vec<ObjectSource> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../programs/build/engine_load_v{version}.o"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    vec![ObjectSource::new("engine_load.o", bytes)]
}

fn options(cgroup: &Path, version: u32) -> Options {
    let mut o = Options {
        attachments: vec![Attachment {
            name: "connect".into(),
            program: "count_connect".into(),
            point: AttachPoint::Cgroup {
                path: cgroup.to_owned(),
                attach_type: "cgroup_inet4_connect".into(),
                via: Via::Auto,
            },
        }],
        ..Options::default()
    };
    if version == 2 {
        // Under this load no pass settles: two passes, then the final one.
        o.delta = DeltaBounds {
            max_passes: 2,
            max_time_ms: 2000,
            settle_at: 64,
        };
        o.tombstones
            .insert("conns".into(), "conns_tombstones".into());
    }
    o
}

/// What the client did: connects per backend (last octet), the address of the
/// last insert of every port still inserted, and the last port per backend.
#[derive(Debug, Default)]
struct Made {
    connects: BTreeMap<u8, u64>,
    conns: BTreeMap<u32, u8>,
    deleted: u64,
    last_port: BTreeMap<u8, u32>,
    ops: u64,
}

/// The client: joins the cgroup, makes its own network namespace, and connects until
/// the file `HANDOVER_STOP` exists; prints what it made.
fn client() {
    let cgroup = std::env::var("HANDOVER_CGROUP").expect("cgroup path");
    let stop = PathBuf::from(std::env::var("HANDOVER_STOP").expect("stop file"));
    testenv::join_cgroup(cgroup.as_ref());
    testenv::enter_new_netns();
    let mut made = Made::default();
    let connect = |made: &mut Made, octet: u8, port: u32| {
        let to = SocketAddr::from((
            Ipv4Addr::new(127, 0, 0, octet),
            u16::try_from(port).unwrap(),
        ));
        let _ = TcpStream::connect_timeout(&to, Duration::from_secs(2));
        *made.connects.entry(octet).or_default() += 1;
        made.last_port.insert(octet, port);
    };
    let mut n: u32 = 0;
    println!("RESULT started");
    while !stop.exists() {
        let octet = u8::try_from(1 + n % BACKENDS).unwrap();
        let port = 2000 + 2 * (n % PORTS);
        connect(&mut made, octet, port);
        made.conns.insert(port, octet);
        if n % 3 == 1 {
            connect(&mut made, octet, port + 1);
            made.conns.remove(&port);
            made.deleted += 1;
        }
        made.ops += 1;
        n += 1;
    }
    println!("RESULT connects {}", join(&made.connects));
    println!("RESULT conns {}", join(&made.conns));
    println!("RESULT last_port {}", join(&made.last_port));
    println!("RESULT ops {} deleted {}", made.ops, made.deleted);
}

fn join<K: std::fmt::Display, V: std::fmt::Display>(m: &BTreeMap<K, V>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse(out: &str) -> Made {
    let mut made = Made::default();
    let pairs = |s: &str| -> Vec<(u64, u64)> {
        s.split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (a, b) = p.split_once(':').unwrap();
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect()
    };
    for line in out.lines() {
        let Some(rest) = line.strip_prefix("RESULT ") else {
            continue;
        };
        let (what, data) = rest.split_once(' ').unwrap_or((rest, ""));
        let b = |v: u64| u8::try_from(v).unwrap();
        let p = |v: u64| u32::try_from(v).unwrap();
        match what {
            "connects" => made.connects = pairs(data).into_iter().map(|(k, v)| (b(k), v)).collect(),
            "conns" => made.conns = pairs(data).into_iter().map(|(k, v)| (p(k), b(v))).collect(),
            "last_port" => {
                made.last_port = pairs(data).into_iter().map(|(k, v)| (b(k), p(v))).collect();
            }
            "ops" => {
                let f: Vec<&str> = data.split(' ').collect();
                made.ops = f[0].parse().unwrap();
                made.deleted = f[2].parse().unwrap();
            }
            _ => {}
        }
    }
    made
}

/// The client process, killed by pid if the test fails before it stops.
struct ClientGuard(Option<Child>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn conn_v1(octet: u8) -> [u8; 4] {
    [127, 0, 0, octet]
}

#[test]
fn an_upgrade_under_connect_load_loses_no_count_and_no_entry() {
    if testenv::child_role().as_deref() == Some("client") {
        client();
        return;
    }
    if !testenv::privileged(TEST) {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let cgroup = testenv::Cgroup::new();
    let state = testenv::TempDir::new("handover-engine-load");
    let scratch = testenv::TempDir::new("handover-engine-load-client");
    let stop = scratch.path().join("stop");
    let open = || Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();

    let mut e = open();
    let v1 = object(1);
    let plan = e.plan(&v1, &options(cgroup.path(), 1)).unwrap();
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    let backends = e.map_access("backends").unwrap();
    let conns = e.map_access("conns").unwrap();
    for i in 0..FILLED {
        let k = (0x7f01_0000u32 + i).to_be_bytes();
        backends
            .update(&k, &backend_v1(u64::from(i), i % 65536), UpdateFlags::ANY)
            .unwrap();
        conns
            .update(&(100_000 + i).to_ne_bytes(), &k, UpdateFlags::ANY)
            .unwrap();
    }
    drop(e);

    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(testenv::ROLE_VAR, "client")
        .env("HANDOVER_CGROUP", cgroup.path())
        .env("HANDOVER_STOP", &stop)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut guard = ClientGuard(Some(child));
    // The upgrade starts once the program has counted a few hundred connects.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut v = [0u8; 16];
        let found = backends
            .lookup(&conn_v1(1), &mut v, UpdateFlags::ANY)
            .unwrap();
        if found && u64::from_ne_bytes(v[..8].try_into().unwrap()) > 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the client does not connect");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop((backends, conns));

    let mut e = open();
    let v2 = object(2);
    let plan = e.plan(&v2, &options(cgroup.path(), 2)).unwrap();
    assert!(matches!(plan.start, Start::Upgrade { .. }), "{plan}");
    let started = Instant::now();
    let report = e.apply(&plan, &v2, ApplyOptions::default()).unwrap();
    let took = started.elapsed();
    std::fs::write(&stop, b"").unwrap();
    let mut child = guard.0.take().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{out}");
    let made = parse(&out);
    eprintln!(
        "upgrade under load: {took:?}, client ops {} (deletes {}), switch window {:?} us, per map {:#?}",
        made.ops, made.deleted, report.switch_window_us, report.maps
    );
    for m in ["backends", "conns"] {
        eprintln!(
            "{m}: undecidable window (last delta pass to reconcile) {} us",
            report.maps[m].window_us
        );
    }
    assert!(made.ops > 500, "{} ops: not under load", made.ops);
    // conns has a tombstone map: no add is left to guess.
    assert_eq!(report.maps["conns"].ambiguous_adds, 0, "{:?}", report.maps);

    let backends = e.map::<[u8; 4], [u8; 24]>("backends").unwrap();
    for (&octet, &n) in &made.connects {
        let v = backends
            .get(&conn_v1(octet))
            .unwrap()
            .unwrap_or_else(|| panic!("backend {octet} lost"));
        let connects = u64::from_ne_bytes(v[..8].try_into().unwrap());
        let flags = u32::from_ne_bytes(v[8..12].try_into().unwrap());
        let last_port = u64::from_ne_bytes(v[16..].try_into().unwrap());
        assert_eq!(connects, n, "connects counted for 127.0.0.{octet}");
        assert!(flags == 0 || flags == 2, "flags {flags}");
        assert_eq!(
            last_port,
            u64::from(made.last_port[&octet]),
            "last port of 127.0.0.{octet}"
        );
    }
    for i in 0..FILLED {
        let k = (0x7f01_0000u32 + i).to_be_bytes();
        assert_eq!(
            backends.get(&k).unwrap().map(|v| v.to_vec()),
            Some(backend_v2(u64::from(i), i % 65536)),
            "filled backend {i}"
        );
    }
    let conns = e.map::<u32, [u8; 8]>("conns").unwrap();
    let mut present = 0;
    for port in (2000..2000 + 2 * PORTS).step_by(2) {
        let got = conns.get(&port).unwrap();
        match made.conns.get(&port) {
            Some(&octet) => {
                let v = got.unwrap_or_else(|| panic!("connection entry {port} lost"));
                assert_eq!(
                    v[..4],
                    conn_v1(octet),
                    "address of the last insert of {port}"
                );
                let version = u32::from_ne_bytes(v[4..].try_into().unwrap());
                assert!(version == 0 || version == 2, "version {version}");
                present += 1;
            }
            None => assert!(
                got.is_none(),
                "connection entry {port} was deleted: {got:?}"
            ),
        }
    }
    assert_eq!(present, made.conns.len());
    for i in 0..FILLED {
        let k = (0x7f01_0000u32 + i).to_be_bytes();
        let mut expected = [0u8; 8];
        expected[..4].copy_from_slice(&k);
        assert_eq!(
            conns.get(&(100_000 + i)).unwrap(),
            Some(expected),
            "filled conn {i}"
        );
    }
    drop((backends, conns));
    e.uninstall().unwrap();
}
