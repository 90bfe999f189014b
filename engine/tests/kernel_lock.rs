//! Values holding a `bpf_spin_lock` (programs/engine_lock_v1.c, v2.c) carried by an
//! upgrade that moves every field around the lock: the copy, the delta passes and the
//! reconcile read and write them with `BPF_F_LOCK`; and the in-kernel patcher taking
//! the value's lock, so that a `sum` stays exact while the fixture's program adds to
//! the same field under that lock (root; own bpffs and state).
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{cstruct, u32_, u64_};
use handover_engine::migrate::{
    KernelPatcher, LeafWrite, MergeRule, Outcome, Patch, Patcher, ValueFields,
};
use handover_engine::{ApplyOptions, Engine, LockWait, MapAction, ObjectSource, Options, Start};
use handover_sys::{Bpf, Map, ObjectKind, OpenFlags, UpdateFlags};

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

/// Version 2's value: `{ u64 opened; bpf_spin_lock lock; u32 owner; u64 balance }`.
fn account_v2_layout() -> handover_plan::TypeLayout {
    cstruct(
        Some("account"),
        vec![
            ("opened", u64_()),
            (
                "lock",
                cstruct(Some("bpf_spin_lock"), vec![("val", u32_())]),
            ),
            ("owner", u32_()),
            ("balance", u64_()),
        ],
    )
}

#[test]
fn a_sum_on_locked_values_is_exact_while_a_program_adds_under_the_lock() {
    const T: &str = "a_sum_on_locked_values_is_exact_while_a_program_adds_under_the_lock";
    if !testenv::privileged(T) {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let state = testenv::TempDir::new("handover-lock-sum");
    let mut e = Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    let v2 = object(2);
    let plan = e.plan(&v2, &Options::default()).unwrap();
    e.apply(&plan, &v2, ApplyOptions::default()).unwrap();
    let accounts = e.map::<u32, [u8; 24]>("accounts").unwrap();
    accounts.insert(&0, &[0u8; 24]).unwrap();
    let bpf = Bpf::kernel();
    let map = Map::new(
        &bpf,
        bpf.obj_get(&fs.path().join("maps/accounts"), OpenFlags::READ_WRITE)
            .unwrap(),
    )
    .unwrap();
    let credit = bpf
        .fd_by_id(
            ObjectKind::Program,
            e.program("credit").unwrap().id,
            OpenFlags::READ_WRITE,
        )
        .unwrap();
    let rules: BTreeMap<String, MergeRule> = [("balance".to_owned(), MergeRule::Sum)].into();
    let fields = ValueFields::new("accounts", &account_v2_layout(), 24, &rules).unwrap();
    assert_eq!(fields.spin_lock, Some(8));
    assert!(
        fields
            .leaves
            .iter()
            .all(|l| l.offset + l.len <= 8 || l.offset >= 12)
    );
    let patcher = KernelPatcher::new(&bpf, &map, "accounts", &fields, None).unwrap();
    let balance = fields
        .leaves
        .iter()
        .position(|l| l.path == "balance")
        .unwrap();
    let owner = fields
        .leaves
        .iter()
        .position(|l| l.path == "owner")
        .unwrap();
    let add = Patch {
        writes: Vec::new(),
        adds: vec![(balance, 1)],
    };
    // The program credits account 0 (the packet's first four bytes) under its lock,
    // 5,000 runs a round, while the patcher adds one at a time.
    let packet = [0u8; 14];
    const RUNS: u32 = 5_000;
    let stop = AtomicBool::new(false);
    let (programs, patched) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) || rounds < 4 {
                bpf.prog_test_run(&credit, &packet, None, RUNS).unwrap();
                rounds += 1;
            }
            rounds * u64::from(RUNS)
        });
        let mut patched = 0u64;
        for _ in 0..20_000 {
            if patcher.apply(&0u32.to_ne_bytes(), &add).unwrap() == Outcome::Applied {
                patched += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        (h.join().unwrap(), patched)
    });
    assert_eq!(patched, 20_000);
    let read = |m: &Map| {
        let mut v = [0u8; 24];
        assert!(
            m.lookup(&0u32.to_ne_bytes(), &mut v, UpdateFlags::LOCK)
                .unwrap()
        );
        v
    };
    let v = read(&map);
    assert_eq!(
        u64::from_ne_bytes(v[16..].try_into().unwrap()),
        programs + patched,
        "every credit of the program and of the patcher counted"
    );
    // A write under the lock, compared first.
    let write = |expect: u32| Patch {
        writes: vec![LeafWrite {
            leaf: owner,
            slot: 0,
            bytes: 7u32.to_ne_bytes().to_vec(),
            expect: expect.to_ne_bytes().to_vec(),
        }],
        adds: Vec::new(),
    };
    assert_eq!(
        patcher.apply(&0u32.to_ne_bytes(), &write(3)).unwrap(),
        Outcome::Changed
    );
    assert_eq!(
        patcher.apply(&0u32.to_ne_bytes(), &write(0)).unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        u32::from_ne_bytes(read(&map)[12..16].try_into().unwrap()),
        7
    );
    // The delete program takes and releases the lock too.
    let now = read(&map);
    assert_eq!(
        patcher
            .delete_unchanged(&0u32.to_ne_bytes(), &[0u8; 24])
            .unwrap(),
        Outcome::Changed
    );
    assert_eq!(
        patcher.delete_unchanged(&0u32.to_ne_bytes(), &now).unwrap(),
        Outcome::Applied
    );
    drop((accounts, map, credit, patcher));
    e.uninstall().unwrap();
}
