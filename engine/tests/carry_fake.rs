//! Maps whose entries the copy cannot carry whole get a stated strategy in the plan
//! before anything runs, and a plan that would lose state needs `allow_state_loss`:
//! programs/engine_state_v1.c upgraded to engine_state_v2.c on the fake kernel.

mod common;

use common::StateDir;
use handover_engine::{
    ApplyOptions, Carry, Engine, Error, FakeWorld, Kernel, LockWait, MapAction, ObjectSource,
    Options,
};

fn object(version: u32) -> Vec<ObjectSource> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../programs/build/engine_state_v{version}.o"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    vec![ObjectSource::new("state.o", bytes)]
}

#[test]
fn timers_sockets_events_and_inner_maps_each_have_a_stated_strategy() {
    let world = FakeWorld::new();
    let dir = StateDir::new("carry");
    let mut e = Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse).unwrap();
    let v1 = object(1);
    let plan = e.plan(&v1, &Options::default()).unwrap();
    assert!(plan.maps.iter().all(|m| m.carry == Carry::Fresh), "{plan}");
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    // Two tenants with an inner map each, held by the outer map alone.
    let tenants_v1 = world.pinned("maps/tenants").unwrap();
    let mut inner = Vec::new();
    for t in 0..2u32 {
        let m = e.kernel().create_map(4, 8, 4).unwrap();
        world
            .map_at("maps/tenants")
            .unwrap()
            .with_entries(|x| x.insert(t.to_ne_bytes().to_vec(), m.id.to_ne_bytes().to_vec()));
        e.kernel().release(m);
        assert!(world.exists(m), "the outer map holds its inner map");
        inner.push(m);
    }
    let before = world.pins();

    let v2 = object(2);
    let plan = e.plan(&v2, &Options::default()).unwrap();
    let carry = |key: &str| plan.map(key).unwrap().carry.clone();
    // The timer of a session is the old programs' state: the kernel zeroes it on a
    // copy, so the rest is copied and the loss is stated.
    assert_eq!(
        carry("sessions"),
        Carry::CopyWithout {
            fields: vec!["expiry (bpf_timer)".into()]
        }
    );
    assert!(plan.map("sessions").unwrap().loses_entries);
    assert_eq!(plan.map("sessions").unwrap().action, MapAction::Copy);
    // A sockhash that grows gets its new capacity: its sockets are carried by the
    // sockmap iterator (engine/tests/sockets_fake.rs runs it).
    assert_eq!(carry("socks"), Carry::Sockets);
    assert!(!plan.map("socks").unwrap().loses_entries);
    // Ring buffer records are drained from the old map, not carried; no loss.
    assert_eq!(carry("events"), Carry::Drain);
    assert!(!plan.map("events").unwrap().loses_entries);
    // The outer map of inner maps grows, and its inner definition is unchanged: the
    // live inner maps fit the new outer map, and are carried by id.
    let tenants = plan.map("tenants").unwrap();
    assert_eq!(tenants.carry, Carry::InnerMaps, "{plan}");
    assert_eq!(tenants.action, MapAction::Copy);
    assert!(!tenants.loses_entries);
    let text = plan.to_string();
    assert!(
        text.contains("entries: every entry copied except kernel-managed fields"),
        "{text}"
    );
    assert!(
        text.contains("entries: inner maps reopened by id and inserted into the new outer map"),
        "{text}"
    );

    match e.apply(&plan, &v2, ApplyOptions::default()) {
        Err(Error::StateLoss { maps }) => assert_eq!(maps, ["sessions"]),
        other => panic!("applied a plan that loses state: {other:?}"),
    }
    assert_eq!(world.pins(), before, "a refused plan changes nothing");
    e.apply(
        &plan,
        &v2,
        ApplyOptions {
            allow_state_loss: true,
            ..ApplyOptions::default()
        },
    )
    .unwrap();
    assert!(e.journal().unwrap().is_none());
    // The new outer map holds the same inner maps, which outlive the old one.
    let tenants_v2 = world.pinned("maps/tenants").unwrap();
    assert_ne!(tenants_v2, tenants_v1);
    assert!(!world.exists(tenants_v1));
    let entries = world.map_at("maps/tenants").unwrap().entries();
    for (t, m) in inner.iter().enumerate() {
        let t = u32::try_from(t).unwrap();
        assert_eq!(
            entries.get(t.to_ne_bytes().as_slice()),
            Some(&m.id.to_ne_bytes().to_vec()),
            "tenant {t}"
        );
        assert!(world.exists(*m), "inner map {m} is alive");
    }
}

#[test]
fn a_map_whose_sockets_are_carried_has_no_dual_write_handle_during_the_upgrade() {
    let world = FakeWorld::new();
    let dir = StateDir::new("sockets-writer");
    let mut e = Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse).unwrap();
    let v1 = object(1);
    let plan = e.plan(&v1, &Options::default()).unwrap();
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    let v2 = object(2);
    let plan = e.plan(&v2, &Options::default()).unwrap();
    for map in ["socks", "tenants"] {
        let err = e.map_writer(&plan, map).unwrap_err();
        assert!(err.to_string().contains("carries by reference"), "{err}");
    }
}
