//! Crash tests of the carries by reference against the fake kernel: an upgrade from
//! programs/engine_state_v1.c to engine_state_v2.c, whose `socks` sockhash is carried
//! by the sockmap iterator and whose `tenants` hash of maps by inner map id, is killed
//! at every occurrence of every failpoint, then its recovery at every failpoint, then
//! recovered again; and the same from engine_state_v1.c to engine_state_v3.c, whose
//! two maps also widen their keys, so that every entry is carried under a converted
//! key. Each run must end with one consistent set: every socket in the
//! live sockhash with its cookie, every tenant with its inner map (alive), no
//! temporary or rollback pin, and no record of carried sockets left behind. One test
//! in this binary: the failpoint registry is global to the process.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

mod common;

use std::collections::BTreeMap;

use common::{StateDir, crashed, with_crash};
use handover_engine::migrate::{FakeEntries, MapAccess};
use handover_engine::{
    ApplyOptions, Engine, Error, FakeKernel, FakeWorld, Kernel, LockWait, ObjRef, ObjectSource,
    Options, failpoints, identity,
};

fn object(version: u32) -> Vec<ObjectSource> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../programs/build/engine_state_v{version}.o"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    vec![ObjectSource::new("state.o", bytes)]
}

struct Setup {
    world: FakeWorld,
    dir: StateDir,
    sockets: FakeEntries,
    tenants: FakeEntries,
}

fn engine(s: &Setup) -> Engine<FakeKernel> {
    Engine::with_kernel(
        s.world.process(),
        &s.dir.0,
        LockWait::Timeout(std::time::Duration::from_secs(10)),
    )
    .unwrap()
}

fn apply_version(s: &Setup, version: u32) -> Result<handover_engine::Report, Error> {
    let mut e = engine(s);
    let objs = object(version);
    let plan = e.plan(&objs, &Options::default())?;
    // The timers of `sessions` start anew in version 2.
    let apply = ApplyOptions {
        allow_state_loss: true,
        ..ApplyOptions::default()
    };
    e.apply(&plan, &objs, apply)
}

fn installed() -> Setup {
    let mut s = Setup {
        world: FakeWorld::new(),
        dir: StateDir::new("sockets-crash"),
        sockets: FakeEntries::new(),
        tenants: FakeEntries::new(),
    };
    apply_version(&s, 1).unwrap();
    s.sockets = (1..=6u32)
        .map(|k| {
            (
                k.to_ne_bytes().to_vec(),
                (1000 + u64::from(k)).to_ne_bytes().to_vec(),
            )
        })
        .collect();
    let socks = s.world.map_at("maps/socks").unwrap();
    socks.with_entries(|m| m.extend(s.sockets.clone()));
    let mut k = s.world.process();
    for t in 0..3u32 {
        let inner = k.create_map(4, 8, 4).unwrap();
        s.tenants
            .insert(t.to_ne_bytes().to_vec(), inner.id.to_ne_bytes().to_vec());
    }
    let tenants = s.world.map_at("maps/tenants").unwrap();
    tenants.with_entries(|m| m.extend(s.tenants.clone()));
    drop(k);
    s
}

impl Setup {
    /// The machine and the state directory as they are, after every process died.
    fn crashed_copy(&self) -> Setup {
        let dir = self.dir.crashed_copy("sockets-crash-copy");
        Setup {
            world: self.world.crashed_copy(),
            dir,
            sockets: self.sockets.clone(),
            tenants: self.tenants.clone(),
        }
    }
}

/// `entries` under keys widened from 32 to 64 bits, as version 3 keys them.
fn widened(entries: &FakeEntries) -> FakeEntries {
    entries
        .iter()
        .map(|(k, v)| {
            let k = u32::from_ne_bytes(k.as_slice().try_into().unwrap());
            (u64::from(k).to_ne_bytes().to_vec(), v.clone())
        })
        .collect()
}

/// The invariants after a completed recovery of an upgrade to `target`; returns
/// which version is live.
fn check(s: &Setup, target: u32, context: &str) -> u32 {
    let e = engine(s);
    assert!(e.journal().unwrap().is_none(), "{context}: journal left");
    let state = e.state().unwrap().expect("a state");
    drop(e);
    let version = if state.identity == identity(&object(target), &Options::default()) {
        target
    } else {
        1
    };
    let keyed = |entries: &FakeEntries| match version {
        3 => widened(entries),
        _ => entries.clone(),
    };
    let socks = s.world.map_at("maps/socks").expect("a live sockhash");
    assert_eq!(socks.entries(), keyed(&s.sockets), "{context}: sockets");
    assert_eq!(
        socks.geometry().max_entries,
        256 * version.min(2),
        "{context}: capacity"
    );
    let tenants = s.world.map_at("maps/tenants").expect("a live hash of maps");
    assert_eq!(tenants.entries(), keyed(&s.tenants), "{context}: tenants");
    for id in s.tenants.values() {
        let id = u32::from_ne_bytes(id.as_slice().try_into().unwrap());
        assert!(s.world.exists(ObjRef::map(id)), "{context}: inner map {id}");
    }
    let pins = s.world.pins();
    assert!(
        pins.iter()
            .all(|p| !p.starts_with("stage/") && !p.contains("__handover")),
        "{context}: {pins:?}"
    );
    let left: Vec<String> = std::fs::read_dir(&s.dir.0)
        .unwrap()
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".sockets") || f.ends_with(".base"))
        .collect();
    assert!(left.is_empty(), "{context}: {left:?} left");
    version
}

#[test]
fn every_crash_of_a_socket_and_inner_map_carry_ends_in_one_consistent_set() {
    let _scenario = fail::FailScenario::setup();
    for target in [2, 3] {
        crash_everywhere(target);
    }
}

/// Every crash of the upgrade from version 1 to `target` and of its recovery.
fn crash_everywhere(target: u32) {
    let points = failpoints();
    let mut outcomes = BTreeMap::<u32, usize>::new();
    let mut crashes = 0;
    for point in &points {
        for n in 0.. {
            let s = installed();
            let r = with_crash(point, n, || apply_version(&s, target));
            if !crashed(&r) {
                let context = format!("to {target}: {point} #{n} not reached");
                assert_eq!(check(&s, target, &context), target);
                break;
            }
            for rpoint in &points {
                for m in 0.. {
                    let c = s.crashed_copy();
                    let r = with_crash(rpoint, m, || engine(&c).recover());
                    let context = format!(
                        "to {target}: upgrade crash {point} #{n}, recovery crash {rpoint} #{m}"
                    );
                    let recovery_crashed = crashed(&r);
                    if recovery_crashed {
                        crashes += 1;
                        engine(&c).recover().unwrap().expect("a journal to recover");
                    }
                    let v = check(&c, target, &context);
                    if !recovery_crashed {
                        *outcomes.entry(v).or_default() += 1;
                        break;
                    }
                }
            }
        }
    }
    eprintln!(
        "to {target}: {} failpoints; recovery crashes {crashes}; outcomes {outcomes:?}",
        points.len()
    );
    assert!(outcomes.get(&1).is_some_and(|n| *n > 0), "{outcomes:?}");
    assert!(
        outcomes.get(&target).is_some_and(|n| *n > 0),
        "{outcomes:?}"
    );
}
