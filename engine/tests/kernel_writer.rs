//! The daemon's dual-write handle (`MapWriter`) on the running kernel (root):
//! programs/engine_writer_v1.c installed in a private bpffs, upgraded to
//! engine_writer_v2.c while a thread writes through the handles of its per-CPU hash
//! `stats` (a slot per possible CPU, converted back slot by slot for the old map) and
//! of its hash `accounts`, whose values hold a `bpf_spin_lock` (written under
//! `BPF_F_LOCK` in both maps). Every write is in the new maps afterwards as written,
//! and every other entry converted.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

mod common;
#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use handover_engine::{ApplyOptions, Engine, Kernel, LockWait, ObjectSource, Options};
use handover_sys::UpdateFlags;

use common::{account_v1, account_v2};

const TEST: &str = "per_cpu_and_spin_locked_values_are_dual_written_on_the_kernel";

fn object(version: u32) -> Vec<ObjectSource> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../programs/build/engine_writer_v{version}.o"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    vec![ObjectSource::new("writer.o", bytes)]
}

/// Version 1 `struct stat`s of `cpus` slots, slot `c` counting `packets + c`.
fn stat_v1(cpus: usize, packets: u64, port: u32) -> Vec<u8> {
    let slots: Vec<(u64, u32)> = (0..cpus as u64).map(|c| (packets + c, port)).collect();
    common::stat_v1(&slots)
}

/// Version 2 `struct stat`s of `cpus` slots, slot `c` counting `packets + c`.
fn stat_v2(cpus: usize, flags: u32, packets: u64, port: u32) -> Vec<u8> {
    let slots: Vec<(u32, u64, u32)> = (0..cpus as u64)
        .map(|c| (flags, packets + c, port))
        .collect();
    common::stat_v2(&slots)
}

/// The last `stats` and `accounts` values written per key.
type Written = BTreeMap<u32, (Vec<u8>, Vec<u8>)>;

fn k(i: u32) -> [u8; 4] {
    i.to_ne_bytes()
}

#[test]
fn per_cpu_and_spin_locked_values_are_dual_written_on_the_kernel() {
    if !testenv::privileged(TEST) {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let state = testenv::TempDir::new("handover-writer-state");
    let opts = Options::default();
    let mut e = Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    let cpus = e.kernel().facts().possible_cpus as usize;
    let v1 = object(1);
    let plan = e.plan(&v1, &opts).unwrap();
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    let stats = e.map_access("stats").unwrap();
    let accounts = e.map_access("accounts").unwrap();
    for i in 0..50 {
        stats
            .update(
                &k(i),
                &stat_v1(cpus, u64::from(i) * 10, 80),
                UpdateFlags::ANY,
            )
            .unwrap();
        accounts
            .update(&k(i), &account_v1(i, u64::from(i) * 100), UpdateFlags::LOCK)
            .unwrap();
    }

    let v2 = object(2);
    let plan = e.plan(&v2, &opts).unwrap();
    let stats_w = e.map_writer(&plan, "stats").unwrap();
    let accounts_w = e.map_writer(&plan, "accounts").unwrap();
    // Before the new maps exist: the old maps, converted back.
    stats_w
        .insert(&k(100), &stat_v2(cpus, 5, 1000, 90))
        .unwrap();
    accounts_w.insert(&k(100), &account_v2(7, 100, 5)).unwrap();
    let mut v = vec![0u8; stats.geometry().value_len];
    assert!(stats.lookup(&k(100), &mut v, UpdateFlags::ANY).unwrap());
    assert_eq!(v, stat_v1(cpus, 1000, 90), "converted back slot by slot");
    let mut a = [0u8; 16];
    assert!(accounts.lookup(&k(100), &mut a, UpdateFlags::LOCK).unwrap());
    assert_eq!(a.to_vec(), account_v1(100, 5));

    // The daemon writes while the upgrade runs, from its own thread.
    let stop = Arc::new(AtomicBool::new(false));
    let last: Arc<Mutex<Written>> = Arc::default();
    let daemon = {
        let (stop, last) = (Arc::clone(&stop), Arc::clone(&last));
        let (stats_w, accounts_w) = (stats_w.clone(), accounts_w.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) || n < 50 {
                n += 1;
                let i = 200 + n % 40;
                let s = stat_v2(cpus, n, u64::from(n) * 10, 70);
                let a = account_v2(u64::from(n), i, u64::from(n) * 3);
                stats_w.insert(&k(i), &s).unwrap();
                accounts_w.insert(&k(i), &a).unwrap();
                last.lock().unwrap().insert(i, (s, a));
            }
            n
        })
    };
    e.apply(&plan, &v2, ApplyOptions::default()).unwrap();
    stop.store(true, Ordering::Relaxed);
    let writes = daemon.join().unwrap();
    assert!(writes >= 50, "{writes} writes");

    let stats = e.map_access("stats").unwrap();
    let accounts = e.map_access("accounts").unwrap();
    assert_eq!(stats.geometry().value_size, 24, "the new map");
    let read = |m: &dyn handover_engine::migrate::MapAccess, i: u32, flags| {
        let mut v = vec![0u8; m.geometry().value_len];
        m.lookup(&k(i), &mut v, flags).unwrap().then_some(v)
    };
    for (i, (s, a)) in last.lock().unwrap().iter() {
        assert_eq!(
            read(stats.as_ref(), *i, UpdateFlags::ANY).as_ref(),
            Some(s),
            "stats {i}"
        );
        assert_eq!(
            read(accounts.as_ref(), *i, UpdateFlags::LOCK).as_ref(),
            Some(a),
            "accounts {i}"
        );
    }
    for i in 0..50 {
        assert_eq!(
            read(stats.as_ref(), i, UpdateFlags::ANY),
            Some(stat_v2(cpus, 0, u64::from(i) * 10, 80)),
            "stats {i} converted per CPU"
        );
        assert_eq!(
            read(accounts.as_ref(), i, UpdateFlags::LOCK),
            Some(account_v2(0, i, u64::from(i) * 100))
        );
    }
    assert_eq!(
        read(stats.as_ref(), 100, UpdateFlags::ANY),
        Some(stat_v2(cpus, 5, 1000, 90)),
        "the write before the upgrade, with its new field"
    );
    assert_eq!(
        read(accounts.as_ref(), 100, UpdateFlags::LOCK),
        Some(account_v2(7, 100, 5))
    );
    drop((stats, accounts));
    e.uninstall().unwrap();
}
