//! Values holding a `bpf_spin_lock` (programs/engine_lock_v1.c, v2.c) carried by an
//! upgrade that moves every field around the lock: the copy, the delta passes and the
//! reconcile read and write them with `BPF_F_LOCK` (root; own bpffs and state).
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::path::Path;

use handover_engine::{ApplyOptions, Engine, LockWait, MapAction, ObjectSource, Options, Start};

const TEST: &str = "locked_values_are_converted_under_bpf_f_lock";
const ENTRIES: u32 = 10_000;

fn object(version: u32) -> Vec<ObjectSource> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../programs/build")
        .join(format!("engine_lock_v{version}.o"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    vec![ObjectSource::new("engine_lock.o", bytes)]
}

/// Version 1: `{ bpf_spin_lock lock; u32 owner; u64 balance }`.
fn account_v1(owner: u32, balance: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[4..8].copy_from_slice(&owner.to_ne_bytes());
    v[8..].copy_from_slice(&balance.to_ne_bytes());
    v
}

#[test]
fn locked_values_are_converted_under_bpf_f_lock() {
    if !testenv::privileged(TEST) {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let state = testenv::TempDir::new("handover-lock-state");
    let open = || Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();

    let mut e = open();
    let v1 = object(1);
    let plan = e.plan(&v1, &Options::default()).unwrap();
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    let accounts = e.map::<u32, [u8; 16]>("accounts").unwrap();
    for i in 0..ENTRIES {
        accounts
            .insert(&i, &account_v1(i, u64::from(i) * 7))
            .unwrap();
    }
    drop((accounts, e));

    let mut e = open();
    let v2 = object(2);
    let plan = e.plan(&v2, &Options::default()).unwrap();
    assert!(matches!(plan.start, Start::Upgrade { .. }), "{plan}");
    let m = plan.map("accounts").unwrap();
    assert_eq!(m.action, MapAction::Copy, "{plan}");
    assert!(m.notes.iter().any(|n| n.contains("BPF_F_LOCK")), "{plan}");
    let report = e.apply(&plan, &v2, ApplyOptions::default()).unwrap();
    assert_eq!(
        report.maps["accounts"].copied,
        u64::from(ENTRIES),
        "{report:?}"
    );

    // Version 2: `{ u64 opened; bpf_spin_lock lock; u32 owner; u64 balance }`.
    let accounts = e.map::<u32, [u8; 24]>("accounts").unwrap();
    for i in 0..ENTRIES {
        let v = accounts
            .get(&i)
            .unwrap()
            .unwrap_or_else(|| panic!("account {i} lost"));
        assert_eq!(
            u64::from_ne_bytes(v[..8].try_into().unwrap()),
            0,
            "opened of {i}"
        );
        assert_eq!(
            u32::from_ne_bytes(v[12..16].try_into().unwrap()),
            i,
            "owner of {i}"
        );
        assert_eq!(
            u64::from_ne_bytes(v[16..].try_into().unwrap()),
            u64::from(i) * 7,
            "balance of {i}"
        );
    }
    drop(accounts);
    e.uninstall().unwrap();
}
