//! Sockets and inner maps carried under converted keys, on the fake kernel (whose
//! sockets are their cookies): programs/engine_sockets_v1.c upgraded to
//! engine_sockets_v3.c, whose sockhash key widens from 32 to 64 bits, and
//! programs/engine_inner_v1.c to engine_inner_v3.c, whose outer key does the same.
//! The old programs change the old sockhash after the copy and around the switch, and
//! the new programs change the new one after the switch (simulated at the engine's
//! failpoints): every pass must compare and insert by the converted keys. One test in
//! this binary: the failpoint registry is global to the process.

#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

mod common;

use std::collections::BTreeMap;

use common::{StateDir, fixture};
use handover_engine::migrate::FakeEntries;
use handover_engine::{
    ApplyOptions, Carry, Engine, FakeWorld, Kernel, LockWait, MapAction, Options,
};

fn old_key(k: u32) -> Vec<u8> {
    k.to_ne_bytes().to_vec()
}

fn new_key(k: u64) -> Vec<u8> {
    k.to_ne_bytes().to_vec()
}

fn cookie(c: u64) -> Vec<u8> {
    c.to_ne_bytes().to_vec()
}

/// The entries of a map of 8-byte keys and values.
fn wide(entries: &FakeEntries) -> BTreeMap<u64, u64> {
    entries
        .iter()
        .map(|(k, v)| {
            let k: [u8; 8] = k.as_slice().try_into().expect("an 8-byte key");
            let mut c = [0u8; 8];
            c[..v.len()].copy_from_slice(v);
            (u64::from_ne_bytes(k), u64::from_ne_bytes(c))
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
fn sockets_and_inner_maps_are_carried_under_their_converted_keys() {
    let _scenario = fail::FailScenario::setup();

    // A sockhash keyed by a 32-bit port, then by a 64-bit one.
    let world = FakeWorld::new();
    let dir = StateDir::new("rekey-sockets");
    let mut e = Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse).unwrap();
    let v1 = fixture("engine_sockets_v1.o", "sockets.o");
    let plan = e.plan(&v1, &Options::default()).unwrap();
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    changes(&world, "maps/socks", |m| {
        for k in 1..=6 {
            m.insert(old_key(k), cookie(100 + u64::from(k)));
        }
        // The top bit: a widened key is zero-extended, never sign-extended.
        m.insert(old_key(0x8000_0001), cookie(999));
    });
    let old_socks = world.pinned("maps/socks").unwrap();

    let v3 = fixture("engine_sockets_v3.o", "sockets.o");
    let plan = e.plan(&v3, &Options::default()).unwrap();
    let socks = plan.map("socks").unwrap();
    assert_eq!(socks.carry, Carry::Sockets, "{plan}");
    assert_eq!(socks.action, MapAction::Copy);
    assert!(!socks.loses_entries, "{plan}");
    assert!(socks.key_plan.is_some(), "{plan}");
    assert!(plan.lost_maps().is_empty(), "{plan}");
    assert!(
        plan.to_string()
            .contains("keys are converted: each socket is inserted under its converted key"),
        "{plan}"
    );
    // Without the iterator the sockets are a stated loss, as before.
    world.set_sockmap_iter(false);
    let lossy = e.plan(&v3, &Options::default()).unwrap();
    assert!(
        matches!(lossy.map("socks").unwrap().carry, Carry::Lost { .. }),
        "{lossy}"
    );
    world.set_sockmap_iter(true);

    // After the copy the old programs add 7 and drop 2.
    let w = world.clone();
    fail::cfg_callback("copy:end", move || {
        changes(&w, "maps/socks", |m| {
            m.insert(old_key(7), cookie(107));
            m.remove(&old_key(2));
        });
    })
    .unwrap();
    // Around the switch the old programs add 8, drop 3, replace 4 and add 9; the new
    // programs (keyed by 64 bits) add 20, drop 5, replace 6 and add their own 9.
    let w = world.clone();
    fail::cfg_callback("switch:end", move || {
        changes(&w, "maps/socks", |m| {
            m.insert(old_key(8), cookie(108));
            m.remove(&old_key(3));
            m.insert(old_key(4), cookie(204));
            m.insert(old_key(9), cookie(109));
        });
        changes(&w, "stage/maps/socks", |m| {
            m.insert(new_key(20), cookie(320));
            m.remove(&new_key(5));
            m.insert(new_key(6), cookie(306));
            m.insert(new_key(9), cookie(309));
        });
    })
    .unwrap();
    let report = e.apply(&plan, &v3, ApplyOptions::default()).unwrap();
    fail::remove("copy:end");
    fail::remove("switch:end");

    assert_ne!(world.pinned("maps/socks").unwrap(), old_socks);
    let new = wide(&world.map_at("maps/socks").unwrap().entries());
    let want: BTreeMap<u64, u64> = [
        (1, 101),
        (4, 204),
        (6, 306),
        (7, 107),
        (8, 108),
        (9, 309),
        (20, 320),
        (0x8000_0001, 999),
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
        (7, 2, 2, 1),
        "{counts:?}"
    );
    assert!(!world.exists(old_socks), "the old sockhash is freed");
    assert!(world.pins().iter().all(|p| !p.starts_with("stage/")));
    assert!(!dir.0.join("socks.sockets").exists());

    // A hash of maps keyed by a 32-bit tenant, then by a 64-bit one.
    let world = FakeWorld::new();
    let dir = StateDir::new("rekey-inner");
    let mut e = Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse).unwrap();
    let v1 = fixture("engine_inner_v1.o", "inner.o");
    let plan = e.plan(&v1, &Options::default()).unwrap();
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    let mut inner = BTreeMap::new();
    for t in [0u32, 3, 0xffff_fff0] {
        let m = e.kernel().create_map(4, 8, 16).unwrap();
        changes(&world, "maps/tenants", |x| {
            x.insert(old_key(t), m.id.to_ne_bytes().to_vec());
        });
        e.kernel().release(m);
        inner.insert(u64::from(t), u64::from(m.id));
    }
    let v3 = fixture("engine_inner_v3.o", "inner.o");
    let plan = e.plan(&v3, &Options::default()).unwrap();
    let tenants = plan.map("tenants").unwrap();
    assert_eq!(tenants.carry, Carry::InnerMaps, "{plan}");
    assert!(!tenants.loses_entries, "{plan}");
    assert!(
        plan.to_string()
            .contains("keys are converted: each inner map is inserted under its converted key"),
        "{plan}"
    );
    let report = e.apply(&plan, &v3, ApplyOptions::default()).unwrap();
    assert_eq!(report.maps["tenants"].copied, 3, "{report:?}");
    let now = wide(&world.map_at("maps/tenants").unwrap().entries());
    assert_eq!(now, inner, "every inner map under its widened key");
    for id in inner.values() {
        let id = u32::try_from(*id).unwrap();
        assert!(world.exists(handover_engine::ObjRef::map(id)));
    }
}
