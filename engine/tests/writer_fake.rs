//! The daemon's dual-write handle (`MapWriter`) against the fake kernel: an upgrade
//! from programs/engine_v1.c to engine_v2.c while the daemon writes `backends`
//! through the handle before every call the engine makes into the kernel (from the
//! preflight, through the copy, the delta passes, the switch and the reconcile, to
//! the commit); every write is in the new map afterwards exactly as written,
//! including the field only version 2 has, every delete is gone, every other entry is
//! converted, and the old map held the writes (reverse-converted) until the commit.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::{StateDir, backend_v1, backend_v2, fill, objects, options};
use handover_engine::migrate::MapAccess;
use handover_engine::{ApplyOptions, Engine, FakeWorld, LockWait, MapWriter, Running, Start};

const CGROUP: &str = "/fake/cgroup";
const ENTRIES: u32 = 300;

fn key(i: u32) -> Vec<u8> {
    (0x7f00_0000u32 + i).to_ne_bytes().to_vec()
}

/// A version 2 value with the new `flags` field set.
fn written(n: u32) -> Vec<u8> {
    let mut v = backend_v2(u64::from(n) + 5000, 7);
    v[8..12].copy_from_slice(&0xab_u32.to_ne_bytes());
    v
}

#[test]
fn daemon_writes_during_an_upgrade_are_in_the_new_map_converted() {
    let world = FakeWorld::new();
    let dir = StateDir::new("writer");
    let engine = || {
        Engine::with_kernel(
            world.process(),
            &dir.0,
            LockWait::Timeout(std::time::Duration::from_secs(10)),
        )
        .unwrap()
    };
    let opts = options(Path::new(CGROUP));
    let mut e = engine();
    let v1 = objects(1);
    let plan = e.plan(&v1, &opts).unwrap();
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    drop(e);
    fill(&world, ENTRIES);

    let mut e = engine();
    let v2 = objects(2);
    let plan = e.plan(&v2, &opts).unwrap();
    assert!(matches!(plan.start, Start::Upgrade { .. }));
    let writer: MapWriter = e.map_writer(&plan, "backends").unwrap();
    // What each key must hold at the end: Some(value) written last, None deleted.
    let last: Arc<Mutex<BTreeMap<u32, Option<Vec<u8>>>>> = Arc::default();
    let seen_in_old = Arc::new(Mutex::new(0usize));
    {
        let (writer, last, seen_in_old, world2) = (
            writer.clone(),
            Arc::clone(&last),
            Arc::clone(&seen_in_old),
            world.clone(),
        );
        let mut n = 0u32;
        // The old program stays attached: its map must hold the writes too, in the
        // old layout, until the commit.
        world.set_traffic(move |r: &Running| {
            let Some(old_backends) = r.maps.get("backends") else {
                return;
            };
            n += 1;
            let i = (n * 7) % (ENTRIES + 50);
            if n.is_multiple_of(5) {
                writer.remove(&key(i)).unwrap();
                last.lock().unwrap().insert(i, None);
            } else {
                writer.insert(&key(i), &written(n)).unwrap();
                last.lock().unwrap().insert(i, Some(written(n)));
                if old_backends.geometry().value_size == 16 {
                    assert_eq!(
                        old_backends.entries().get(&key(i)),
                        Some(&backend_v1(u64::from(n) + 5000, 7)),
                        "write {n} reverse-converted into the old map"
                    );
                    *seen_in_old.lock().unwrap() += 1;
                }
            }
            let _ = &world2;
        });
    }
    let apply = ApplyOptions {
        batch: Some(32),
        ..ApplyOptions::default()
    };
    e.apply(&plan, &v2, apply).unwrap();
    world.set_traffic(|_| {});
    let last = last.lock().unwrap().clone();
    assert!(last.len() > 20, "{} keys written", last.len());
    assert!(*seen_in_old.lock().unwrap() > 10);
    let got = world.map_at("maps/backends").unwrap().entries();
    for i in 0..ENTRIES + 50 {
        let expected = match last.get(&i) {
            Some(w) => w.clone(),
            None if i < ENTRIES => Some(backend_v2(u64::from(i) * 3, 1000 + i)),
            None => None,
        };
        assert_eq!(got.get(&key(i)), expected.as_ref(), "key {i}");
    }
    // After the commit the handle writes the new map, in its layout.
    writer.insert(&key(1), &written(1)).unwrap();
    assert_eq!(
        world
            .map_at("maps/backends")
            .unwrap()
            .entries()
            .get(&key(1)),
        Some(&written(1))
    );
}
