//! The sockets of a sockhash carried through an upgrade on the fake kernel, whose
//! sockets are their cookies: programs/engine_state_v1.c upgraded to
//! engine_state_v2.c, whose `socks` sockhash doubles its capacity. The old programs
//! change the old map after the copy and again around the switch, and the new
//! programs change the new map after the switch (both simulated at the engine's
//! failpoints): the delta passes and the last pass must follow the old programs and
//! keep what the new programs did. One test in this binary: the failpoint registry is
//! global to the process.

#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

mod common;

use std::collections::BTreeMap;

use common::StateDir;
use handover_engine::migrate::FakeEntries;
use handover_engine::{
    ApplyOptions, Carry, Engine, FakeWorld, LockWait, MapAction, ObjectSource, Options,
};

fn object(version: u32) -> Vec<ObjectSource> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../programs/build/engine_state_v{version}.o"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    vec![ObjectSource::new("state.o", bytes)]
}

fn key(k: u32) -> Vec<u8> {
    k.to_ne_bytes().to_vec()
}

fn cookie(c: u64) -> Vec<u8> {
    c.to_ne_bytes().to_vec()
}

fn sockets(entries: &FakeEntries) -> BTreeMap<u32, u64> {
    entries
        .iter()
        .map(|(k, v)| {
            (
                u32::from_ne_bytes(k.as_slice().try_into().unwrap()),
                u64::from_ne_bytes(v.as_slice().try_into().unwrap()),
            )
        })
        .collect()
}

fn changes(world: &FakeWorld, pin: &str, f: impl Fn(&mut FakeEntries)) {
    world
        .map_at(pin)
        .unwrap_or_else(|| panic!("no map at {pin}"))
        .with_entries(f);
}

#[test]
fn sockets_are_carried_by_the_copy_the_delta_passes_and_the_last_pass() {
    let _scenario = fail::FailScenario::setup();
    let world = FakeWorld::new();
    let dir = StateDir::new("sockets");
    let mut e = Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse).unwrap();
    let v1 = object(1);
    let plan = e.plan(&v1, &Options::default()).unwrap();
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    changes(&world, "maps/socks", |m| {
        for k in 1..=6 {
            m.insert(key(k), cookie(100 + u64::from(k)));
        }
    });
    let old_socks = world.pinned("maps/socks").unwrap();

    // Without the sockmap iterator the sockhash that grows is reused at its old
    // capacity, as before.
    world.set_sockmap_iter(false);
    let v2 = object(2);
    let plan = e.plan(&v2, &Options::default()).unwrap();
    assert_eq!(plan.map("socks").unwrap().carry, Carry::Keep, "{plan}");
    world.set_sockmap_iter(true);
    let plan = e.plan(&v2, &Options::default()).unwrap();
    let socks = plan.map("socks").unwrap();
    assert_eq!(socks.carry, Carry::Sockets, "{plan}");
    assert_eq!(socks.action, MapAction::Copy);
    assert_eq!(socks.max_entries, 512);
    assert!(!socks.loses_entries);
    assert!(
        plan.to_string()
            .contains("entries: sockets carried in the kernel by the sockmap iterator"),
        "{plan}"
    );

    // After the copy the old programs add socket 7 and drop socket 2: the delta
    // passes follow.
    let w = world.clone();
    fail::cfg_callback("copy:end", move || {
        changes(&w, "maps/socks", |m| {
            m.insert(key(7), cookie(107));
            m.remove(&key(2));
        });
    })
    .unwrap();
    // Between the last delta pass and the end of the switch the old programs add 8,
    // drop 3, put another socket at 4 and add 9; the new programs, already running,
    // add 20, drop 5, put another socket at 6 and add their own at 9.
    let w = world.clone();
    fail::cfg_callback("switch:end", move || {
        changes(&w, "maps/socks", |m| {
            m.insert(key(8), cookie(108));
            m.remove(&key(3));
            m.insert(key(4), cookie(204));
            m.insert(key(9), cookie(109));
        });
        changes(&w, "stage/maps/socks", |m| {
            m.insert(key(20), cookie(320));
            m.remove(&key(5));
            m.insert(key(6), cookie(306));
            m.insert(key(9), cookie(309));
        });
    })
    .unwrap();
    let report = e
        .apply(
            &plan,
            &v2,
            ApplyOptions {
                allow_state_loss: true,
                ..ApplyOptions::default()
            },
        )
        .unwrap();
    fail::remove("copy:end");
    fail::remove("switch:end");

    let now = world.pinned("maps/socks").unwrap();
    assert_ne!(now, old_socks, "the sockhash was replaced");
    let new = sockets(&world.map_at("maps/socks").unwrap().entries());
    let want: BTreeMap<u32, u64> = [
        (1, 101), // carried by the copy
        (4, 204), // put in place by the old programs: carried by the last pass
        (6, 306), // the new programs' socket, kept
        (7, 107), // added by the old programs: carried by a delta pass
        (8, 108), // added by the old programs: carried by the last pass
        (9, 309), // both added one: the new programs' is kept
        (20, 320),
    ]
    .into_iter()
    .collect();
    assert_eq!(new, want, "2, 3 dropped by old, 5 dropped by new");
    let counts = &report.maps["socks"];
    assert_eq!(
        (
            counts.copied,
            counts.delta,
            counts.reconciled,
            counts.deleted
        ),
        (6, 2, 2, 1),
        "{counts:?}"
    );
    assert_eq!(counts.sockets_unsure, 0);
    assert!(!world.exists(old_socks), "the old sockhash is freed");
    assert!(
        world.pins().iter().all(|p| !p.starts_with("stage/")),
        "{:?}",
        world.pins()
    );
    assert!(e.journal().unwrap().is_none());
    assert!(
        !dir.0.join("socks.sockets").exists(),
        "the record of the carried sockets is removed"
    );
}
