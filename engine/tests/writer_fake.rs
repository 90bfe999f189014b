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

use common::{
    StateDir, account_v1, account_v2, backend_v1, backend_v2, fill, objects, options, stat_v1,
    stat_v2,
};
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

fn writer_objects(version: u32) -> Vec<handover_engine::ObjectSource> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../programs/build/engine_writer_v{version}.o"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    vec![handover_engine::ObjectSource::new("writer.o", bytes)]
}

/// CPUs of the fake kernel.
const CPUS: usize = 2;

/// The last `stats` and `accounts` values written per key.
type Written = BTreeMap<u32, (Vec<u8>, Vec<u8>)>;

fn k(i: u32) -> Vec<u8> {
    i.to_ne_bytes().to_vec()
}

#[test]
fn per_cpu_and_spin_locked_values_are_dual_written_through_an_upgrade() {
    let world = FakeWorld::new();
    let dir = StateDir::new("writer-percpu");
    let opts = handover_engine::Options {
        attachments: vec![handover_engine::Attachment {
            name: "count".into(),
            program: "count".into(),
            point: handover_engine::AttachPoint::Xdp {
                iface: "fake0".into(),
            },
        }],
        ..handover_engine::Options::default()
    };
    let mut e = Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse).unwrap();
    let v1 = writer_objects(1);
    let plan = e.plan(&v1, &opts).unwrap();
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    let stats = world.map_at("maps/stats").unwrap();
    let accounts = world.map_at("maps/accounts").unwrap();
    assert_eq!(stats.geometry().cpus, CPUS);
    for i in 0..20 {
        stats
            .update(
                &k(i),
                &stat_v1(&[(u64::from(i), 80), (u64::from(i) * 2, 81)]),
                Default::default(),
            )
            .unwrap();
        accounts
            .update(
                &k(i),
                &account_v1(i, u64::from(i) * 100),
                handover_sys::UpdateFlags::LOCK,
            )
            .unwrap();
    }

    let v2 = writer_objects(2);
    let plan = e.plan(&v2, &opts).unwrap();
    let stats_w = e.map_writer(&plan, "stats").unwrap();
    let accounts_w = e.map_writer(&plan, "accounts").unwrap();
    // Before the new maps exist: the old maps, converted back slot by slot, under
    // the lock.
    stats_w
        .insert(&k(100), &stat_v2(&[(1, 1000, 90), (2, 2000, 91)]))
        .unwrap();
    assert_eq!(
        stats.entries().get(&k(100)),
        Some(&stat_v1(&[(1000, 90), (2000, 91)]))
    );
    let locked = accounts.stats().locked;
    accounts_w.insert(&k(100), &account_v2(7, 100, 5)).unwrap();
    assert_eq!(accounts.entries().get(&k(100)), Some(&account_v1(100, 5)));
    assert!(
        accounts.stats().locked >= locked + 2,
        "read and written under BPF_F_LOCK"
    );
    // A per-CPU value has a slot per CPU.
    let err = stats_w.insert(&k(1), &stat_v2(&[(1, 1, 1)])).unwrap_err();
    assert!(err.to_string().contains("value"), "{err}");

    // While the upgrade runs the daemon writes both maps before every kernel call.
    let last: Arc<Mutex<Written>> = Arc::default();
    {
        let (stats_w, accounts_w, last) = (stats_w.clone(), accounts_w.clone(), Arc::clone(&last));
        let mut n = 0u32;
        world.set_traffic(move |r: &Running| {
            if r.name != "count" {
                return;
            }
            n += 1;
            let i = 200 + n % 30;
            let s = stat_v2(&[(n, u64::from(n) * 10, 70), (n + 1, u64::from(n) * 20, 71)]);
            let a = account_v2(u64::from(n), i, u64::from(n) * 3);
            stats_w.insert(&k(i), &s).unwrap();
            accounts_w.insert(&k(i), &a).unwrap();
            last.lock().unwrap().insert(i, (s, a));
        });
    }
    e.apply(&plan, &v2, ApplyOptions::default()).unwrap();
    world.set_traffic(|_| {});
    let last = last.lock().unwrap().clone();
    assert!(
        last.len() > 5,
        "{} keys written during the upgrade",
        last.len()
    );
    let stats2 = world.map_at("maps/stats").unwrap().entries();
    let accounts2 = world.map_at("maps/accounts").unwrap();
    assert!(accounts2.stats().locked > 0);
    let accounts2 = accounts2.entries();
    for (i, (s, a)) in &last {
        assert_eq!(stats2.get(&k(*i)), Some(s), "stats {i}");
        assert_eq!(accounts2.get(&k(*i)), Some(a), "accounts {i}");
    }
    for i in 0..20 {
        let n = u64::from(i);
        assert_eq!(
            stats2.get(&k(i)),
            Some(&stat_v2(&[(0, n, 80), (0, n * 2, 81)])),
            "stats {i} converted per CPU"
        );
        assert_eq!(accounts2.get(&k(i)), Some(&account_v2(0, i, n * 100)));
    }
    assert_eq!(
        stats2.get(&k(100)),
        Some(&stat_v2(&[(1, 1000, 90), (2, 2000, 91)])),
        "the write before the upgrade, with its new field, replayed"
    );
    assert_eq!(accounts2.get(&k(100)), Some(&account_v2(7, 100, 5)));
    // After the commit: the new map, still under the lock.
    accounts_w.insert(&k(1), &account_v2(9, 1, 1)).unwrap();
    assert_eq!(
        world.map_at("maps/accounts").unwrap().entries().get(&k(1)),
        Some(&account_v2(9, 1, 1))
    );
}
