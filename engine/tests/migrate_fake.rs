//! The data path against the in-memory fake map: copy with conversion, merge base
//! persistence, delta passes and the three-way reconcile, without privileges.
#![allow(clippy::indexing_slicing, reason = "tests index fixed buffers")]
#![allow(clippy::cast_possible_truncation, reason = "test values are small")]

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;
mod values;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{cstruct, u32_};
use handover_engine::migrate::{
    Conflicts, Conversion, CopyOptions, FakeEntries, FakeMap, Geometry, MapAccess, MergeBase,
    MergeRule, Patch, Patcher as _, ReconcileOptions, UserPatcher, ValueFields, base_path,
    copy_map, delta_pass, merge_value, reconcile,
};
use handover_plan::{Side, map_layout};
use handover_sys::{MapType, UpdateFlags};
use proptest::prelude::*;
use testenv::TempDir;
use values::{new_fields, new_layout, old_layout, old_value};

fn conversion(cpus: usize, per_cpu: bool) -> Conversion {
    let key = map_layout(&u32_(), &u32_(), 4, 4, Side::Key);
    let value = map_layout(&old_layout(), &new_layout(), 16, 24, Side::Value);
    Conversion {
        key: key.plan,
        value: value.plan,
        cpus,
        per_cpu,
    }
}

fn maps(n: u32, t: MapType) -> (FakeMap, FakeMap) {
    let old = FakeMap::new(Geometry::new(t, 4, 16, n, 1));
    let new = FakeMap::new(Geometry::new(t, 4, 24, n, 1));
    (old, new)
}

fn fill(map: &FakeMap, n: u32) {
    map.with_entries(|e| {
        for i in 0..n {
            e.insert(
                i.to_ne_bytes().to_vec(),
                old_value(i, i ^ 0x55, u64::from(i) * 1000),
            );
        }
    });
}

fn key(i: u32) -> Vec<u8> {
    i.to_ne_bytes().to_vec()
}

#[test]
fn a_copy_converts_every_entry_through_enospc_and_duplicates() {
    // One writer, and three, each taking the keys of its share of the hashes.
    for writers in [1, 3] {
        let dir = TempDir::new("migrate-copy");
        // 8 buckets for 5000 entries: every bucket exceeds a 16-entry buffer.
        let old = FakeMap::new(Geometry::new(MapType::Hash, 4, 16, 5000, 1))
            .with_buckets(8)
            .with_duplicates_every(3);
        let new = FakeMap::new(Geometry::new(MapType::Hash, 4, 24, 5000, 1));
        fill(&old, 5000);
        let options = CopyOptions {
            chunk: 16,
            writers,
            ..CopyOptions::default()
        };
        let (base, report) =
            copy_map("m", &old, &new, &conversion(1, false), dir.path(), &options).unwrap();
        assert!(old.stats().enospc > 0, "the buffer had to grow");
        assert!(report.duplicates > 0, "the walk returned keys twice");
        assert_eq!(
            (report.copied, base.len()),
            (5000, 5000),
            "{writers} writers"
        );
        assert!(report.read_by_batch && report.written_by_batch);
        let got = new.entries();
        assert_eq!(got.len(), 5000, "{writers} writers");
        for i in 0..5000u32 {
            assert_eq!(
                new_fields(&got[&key(i)]),
                (u64::from(i) * 1000, u64::from(i), i ^ 0x55, 0),
                "{writers} writers, key {i}"
            );
        }
        // The base on disk reads back to the same index.
        let again = MergeBase::read_from(dir.path(), "m").unwrap();
        assert_eq!(again.entries(), base.entries());
    }
}

#[test]
fn without_batch_commands_the_copy_goes_key_by_key() {
    let dir = TempDir::new("migrate-nobatch");
    let (old, new) = maps(300, MapType::Hash);
    let old = old.without_batch();
    let new = new.without_batch();
    fill(&old, 300);
    let (_, report) = copy_map(
        "m",
        &old,
        &new,
        &conversion(1, false),
        dir.path(),
        &CopyOptions::default(),
    )
    .unwrap();
    assert!(!report.read_by_batch && !report.written_by_batch);
    assert_eq!(new.entries().len(), 300);
}

#[test]
fn arrays_are_copied_index_by_index() {
    let dir = TempDir::new("migrate-array");
    let (old, new) = maps(64, MapType::Array);
    old.with_entries(|e| {
        for (k, v) in e.iter_mut() {
            let i = u32::from_ne_bytes(k.as_slice().try_into().unwrap());
            *v = old_value(i, 1, 2);
        }
    });
    let (base, _) = copy_map(
        "m",
        &old,
        &new,
        &conversion(1, false),
        dir.path(),
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(base.len(), 64);
    for (k, v) in new.entries() {
        let i = u32::from_ne_bytes(k.try_into().unwrap());
        assert_eq!(new_fields(&v), (2, u64::from(i), 1, 0));
    }
}

#[test]
fn per_cpu_values_are_converted_slot_by_slot() {
    let dir = TempDir::new("migrate-percpu");
    let cpus = 3;
    let old = FakeMap::new(Geometry::new(MapType::PercpuHash, 4, 16, 100, cpus));
    let new = FakeMap::new(Geometry::new(MapType::PercpuHash, 4, 24, 100, cpus));
    old.with_entries(|e| {
        for i in 0..100u32 {
            let mut v = Vec::new();
            for c in 0..cpus as u32 {
                v.extend(old_value(i + c, c, u64::from(c)));
            }
            e.insert(key(i), v);
        }
    });
    copy_map(
        "m",
        &old,
        &new,
        &conversion(cpus, true),
        dir.path(),
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(new.entries().len(), 100);
    for (k, v) in new.entries() {
        let i = u32::from_ne_bytes(k.try_into().unwrap());
        assert_eq!(v.len(), 24 * cpus);
        for c in 0..cpus {
            let (bytes, hits, flags, _) = new_fields(&v[c * 24..(c + 1) * 24]);
            assert_eq!(
                (bytes, hits, flags),
                (c as u64, u64::from(i) + c as u64, c as u32)
            );
        }
    }
}

#[test]
fn spin_lock_values_are_read_and_written_with_bpf_f_lock() {
    let dir = TempDir::new("migrate-lock");
    let (old, new) = maps(50, MapType::Hash);
    let (old, new) = (old.with_spin_lock(), new.with_spin_lock());
    fill(&old, 50);
    let options = CopyOptions {
        lock: true,
        ..CopyOptions::default()
    };
    copy_map("m", &old, &new, &conversion(1, false), dir.path(), &options).unwrap();
    assert!(old.stats().locked > 0 && new.stats().locked > 0);
    assert_eq!(new.entries().len(), 50);
    // Without a spin lock in the value the kernel refuses BPF_F_LOCK; so does the fake.
    let (plain_old, plain_new) = maps(50, MapType::Hash);
    fill(&plain_old, 50);
    let err = copy_map(
        "m",
        &plain_old,
        &plain_new,
        &conversion(1, false),
        dir.path(),
        &options,
    )
    .unwrap_err();
    assert!(err.to_string().contains("Invalid argument"), "{err}");
}

#[test]
fn writes_during_the_copy_are_caught_by_a_delta_pass() {
    let dir = TempDir::new("migrate-delta");
    let (old, new) = maps(4000, MapType::Hash);
    fill(&old, 3000);
    // An old program keeps writing while the copy runs: changes, creates, deletes.
    let tick = Arc::new(AtomicU32::new(0));
    let t = tick.clone();
    old.set_writer(move |e| {
        let n = t.fetch_add(1, Ordering::Relaxed);
        e.insert(key(n % 3000), old_value(7, 7, 7));
        e.insert(key(3000 + n % 900), old_value(n, 1, 2));
        e.remove(&key((n * 7 + 1) % 3000));
    });
    let conv = conversion(1, false);
    let options = CopyOptions {
        chunk: 64,
        ..CopyOptions::default()
    };
    let (mut base, _) = copy_map("m", &old, &new, &conv, dir.path(), &options).unwrap();
    old.clear_writer();
    let r = delta_pass("m", &old, &new, &conv, &mut base, false).unwrap();
    assert!(r.total() > 0, "{r:?}");
    // After the pass the new map is exactly the converted old map.
    let want: BTreeMap<_, _> = old
        .entries()
        .into_iter()
        .map(|(k, v)| (k, conv.value("m", &v).unwrap()))
        .collect();
    assert_eq!(new.entries(), want);
    // A second pass finds nothing, and the base still reads back from disk.
    let r = delta_pass("m", &old, &new, &conv, &mut base, false).unwrap();
    assert_eq!(r.total(), 0, "{r:?}");
    let again = MergeBase::read_from(dir.path(), "m").unwrap();
    assert_eq!(again.entries(), base.entries());
    assert_eq!(again.len(), old.entries().len());
}

#[test]
fn a_damaged_or_truncated_base_is_refused() {
    let dir = TempDir::new("migrate-corrupt");
    let (old, new) = maps(100, MapType::Hash);
    fill(&old, 100);
    copy_map(
        "m",
        &old,
        &new,
        &conversion(1, false),
        dir.path(),
        &CopyOptions::default(),
    )
    .unwrap();
    let path = base_path(dir.path(), "m");
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad[200] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let e = MergeBase::read_from(dir.path(), "m").unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
    std::fs::write(&path, &good[..good.len() - 3]).unwrap();
    assert!(MergeBase::read_from(dir.path(), "m").is_err());
    let mut longer = good.clone();
    longer.extend_from_slice(b"SEG1");
    std::fs::write(&path, &longer).unwrap();
    let e = MergeBase::read_from(dir.path(), "m").unwrap_err();
    assert!(e.to_string().contains("interrupted delta pass"), "{e}");
    std::fs::write(&path, &good).unwrap();
    assert_eq!(MergeBase::read_from(dir.path(), "m").unwrap().len(), 100);
}

fn rules(pairs: &[(&str, MergeRule)]) -> BTreeMap<String, MergeRule> {
    pairs.iter().map(|(p, r)| ((*p).to_owned(), *r)).collect()
}

#[test]
fn the_reconcile_adds_deletes_changes_and_merges_per_field() {
    let dir = TempDir::new("migrate-reconcile");
    let (old, new) = maps(100, MapType::Hash);
    fill(&old, 10);
    let conv = conversion(1, false);
    let (base, _) = copy_map("m", &old, &new, &conv, dir.path(), &CopyOptions::default()).unwrap();
    let fields = ValueFields::new(
        "m",
        &new_layout(),
        24,
        &rules(&[("hits", MergeRule::Sum), ("bytes", MergeRule::Max)]),
    )
    .unwrap();
    // After the switch: old's last writes ...
    old.with_entries(|e| {
        e.insert(key(20), old_value(5, 5, 5)); // created by old
        e.remove(&key(1)); // deleted by old, new untouched: goes
        e.remove(&key(2)); // deleted by old, new changed it: stays
        e.insert(key(3), old_value(3 + 10, 3 ^ 0x55, 3000)); // old: hits +10 only
        e.insert(key(4), old_value(4 + 5, 9, 9000)); // both change hits, flags, bytes
        e.insert(key(5), old_value(5, 5 ^ 0x55, 1)); // both change bytes, old lower
    });
    // ... and new's.
    new.with_entries(|e| {
        e.get_mut(&key(2)).unwrap()[16] = 0xee;
        let v = e.get_mut(&key(4)).unwrap();
        v[8..16].copy_from_slice(&(4u64 + 100).to_le_bytes()); // hits +100
        v[16..20].copy_from_slice(&77u32.to_le_bytes()); // flags
        v[0..8].copy_from_slice(&8000u64.to_le_bytes()); // bytes 4000 -> 8000
        e.get_mut(&key(5)).unwrap()[0..8].copy_from_slice(&6000u64.to_le_bytes());
        e.remove(&key(6)); // new deleted; old unchanged
        e.insert(key(30), vec![1; 24]); // created by new
    });
    let patcher = UserPatcher::new(&new, "m", fields.clone(), false);
    let r = reconcile(
        "m",
        &old,
        &new,
        &conv,
        &base,
        &fields,
        &patcher,
        &ReconcileOptions::default(),
    )
    .unwrap();
    let got = new.entries();
    assert_eq!(new_fields(&got[&key(20)]), (5, 5, 5, 0), "added");
    assert!(!got.contains_key(&key(1)), "deleted");
    assert_eq!(got[&key(2)][16], 0xee, "new's change kept");
    assert_eq!(new_fields(&got[&key(3)]).1, 13, "old's change applied");
    let (bytes, hits, flags, _) = new_fields(&got[&key(4)]);
    assert_eq!(hits, 4 + 100 + 5, "sum of both deltas");
    assert_eq!(flags, 77, "new rule: new's value");
    assert_eq!(bytes, 9000, "max");
    assert_eq!(new_fields(&got[&key(5)]).0, 6000, "max keeps the larger");
    assert!(!got.contains_key(&key(6)), "new's delete kept");
    assert_eq!(got[&key(30)], vec![1; 24], "new's create kept");
    for i in [0u32, 7, 8, 9] {
        assert_eq!(
            new_fields(&got[&key(i)]),
            (u64::from(i) * 1000, u64::from(i), i ^ 0x55, 0),
            "untouched"
        );
    }
    assert_eq!((r.added, r.deleted), (1, 1), "{r:?}");
    // Key 5: old lowered `bytes`, max keeps new's: nothing to write.
    assert_eq!(r.changed, 2, "{r:?}");
    assert_eq!(
        (r.conflicts.sum, r.conflicts.new, r.conflicts.max),
        (1, 1, 2),
        "{r:?}"
    );
    assert_eq!(r.ambiguous_adds, 1);
    assert_eq!(r.copied, 10);
}

#[test]
fn a_tombstone_keeps_an_entry_new_deleted_from_coming_back() {
    let dir = TempDir::new("migrate-tomb");
    let (old, new) = maps(100, MapType::Hash);
    fill(&old, 5);
    let conv = conversion(1, false);
    let (base, _) = copy_map("m", &old, &new, &conv, dir.path(), &CopyOptions::default()).unwrap();
    old.with_entries(|e| {
        e.insert(key(50), old_value(1, 1, 1));
        e.insert(key(51), old_value(1, 1, 1));
    });
    let tombs = FakeMap::new(Geometry::new(MapType::Hash, 4, 1, 100, 1));
    tombs.with_entries(|e| {
        e.insert(key(50), vec![1]);
    });
    let fields = ValueFields::opaque(24);
    let patcher = UserPatcher::new(&new, "m", fields.clone(), false);
    let options = ReconcileOptions {
        tombstones: Some(&tombs),
        ..ReconcileOptions::default()
    };
    let r = reconcile("m", &old, &new, &conv, &base, &fields, &patcher, &options).unwrap();
    assert_eq!((r.added, r.tombstoned, r.ambiguous_adds), (1, 1, 0));
    assert!(!new.entries().contains_key(&key(50)));
    assert!(new.entries().contains_key(&key(51)));
}

#[test]
fn an_entry_the_new_programs_wrote_whole_keeps_their_fields_where_a_tombstone_says_so() {
    // Key 1: old changed it after the last pass; new deleted it and inserted it again
    // with the carried value. Key 2: the same, and new deleted it for good. Key 3:
    // old deleted it; new wrote it again whole, as carried.
    let run = |with_tombstones: bool| {
        let dir = TempDir::new("migrate-whole");
        let (old, new) = maps(100, MapType::Hash);
        fill(&old, 5);
        let conv = conversion(1, false);
        let (base, _) =
            copy_map("m", &old, &new, &conv, dir.path(), &CopyOptions::default()).unwrap();
        let carried = new.entries();
        old.with_entries(|e| {
            e.insert(key(1), old_value(9, 9, 9));
            e.insert(key(2), old_value(9, 9, 9));
            e.remove(&key(3));
        });
        let tombs = FakeMap::new(Geometry::new(MapType::LruHash, 4, 1, 100, 1));
        new.with_entries(|e| {
            e.remove(&key(2));
        });
        tombs.with_entries(|e| {
            for k in [1, 2, 3] {
                e.insert(key(k), vec![1]);
            }
        });
        let fields = ValueFields::opaque(24);
        let patcher = UserPatcher::new(&new, "m", fields.clone(), false);
        let options = ReconcileOptions {
            tombstones: with_tombstones.then_some(&tombs as &dyn MapAccess),
            ..ReconcileOptions::default()
        };
        let r = reconcile("m", &old, &new, &conv, &base, &fields, &patcher, &options).unwrap();
        (new.entries(), carried, r)
    };
    let (got, carried, r) = run(true);
    assert_eq!(got[&key(1)], carried[&key(1)], "new's whole write stands");
    assert!(!got.contains_key(&key(2)), "new's delete stands");
    assert_eq!(got[&key(3)], carried[&key(3)], "new's write again stands");
    assert_eq!(r.tombstoned, 3, "{r:?}");
    assert_eq!((r.changed, r.deleted, r.added), (0, 0, 0), "{r:?}");
    // Without the tombstones the maps alone say old changed key 1 and deleted key 3
    // while new left them as carried: old's changes are taken.
    let (got, carried, r) = run(false);
    assert_ne!(got[&key(1)], carried[&key(1)], "old's change taken");
    assert!(!got.contains_key(&key(2)));
    assert!(!got.contains_key(&key(3)), "old's delete taken");
    assert_eq!((r.changed, r.deleted, r.tombstoned), (1, 1, 0), "{r:?}");
}

/// Runs `write` on the entries of `map` once, before its `at`-th call from now (the
/// fake's writer hook runs before every call), and counts whether it ran.
fn write_before_call(
    map: &FakeMap,
    at: u32,
    write: impl Fn(&mut FakeEntries) + Send + 'static,
) -> Arc<AtomicU32> {
    let calls = Arc::new(AtomicU32::new(0));
    let ran = Arc::new(AtomicU32::new(0));
    let (c, r) = (calls.clone(), ran.clone());
    map.set_writer(move |e| {
        if c.fetch_add(1, Ordering::Relaxed) + 1 == at {
            write(e);
            r.fetch_add(1, Ordering::Relaxed);
        }
    });
    ran
}

#[test]
fn a_write_of_the_new_programs_after_the_reconcile_read_the_entry_is_not_overwritten() {
    let dir = TempDir::new("migrate-rewrite");
    let conv = conversion(1, false);
    let fields =
        ValueFields::new("m", &new_layout(), 24, &rules(&[("hits", MergeRule::Sum)])).unwrap();
    let theirs = values::new_value(77, 1, 77, 77);
    // A patch: old changed `flags` and `hits` of entry 0; a new program writes the
    // whole entry after the reconcile read it (its first call on the new map) and
    // before the patcher reads it (the second).
    let (old, new) = maps(10, MapType::Hash);
    fill(&old, 1);
    let (base, _) = copy_map("m", &old, &new, &conv, dir.path(), &CopyOptions::default()).unwrap();
    old.with_entries(|e| {
        e.insert(key(0), old_value(5, 9, 0));
    });
    let t = theirs.clone();
    let ran = write_before_call(&new, 2, move |e| {
        e.insert(key(0), t.clone());
    });
    let patcher = UserPatcher::new(&new, "m", fields.clone(), false);
    let options = ReconcileOptions::default();
    let r = reconcile("m", &old, &new, &conv, &base, &fields, &patcher, &options).unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), 1);
    let (bytes, hits, flags, extra) = new_fields(&new.entries()[&key(0)]);
    assert_eq!(
        (bytes, flags, extra),
        (77, 77, 77),
        "the new program's write kept: {r:?}"
    );
    assert_eq!(hits, 1 + 5, "old's hits delta still added");
    assert_eq!(
        (r.rewritten, r.changed, r.conflicts.new),
        (1, 1, 1),
        "{r:?}"
    );

    // A delete: old deleted entry 0, new left it as copied, then a new program wrote
    // it after the reconcile read it.
    let dir = TempDir::new("migrate-rewrite-delete");
    let (old, new) = maps(10, MapType::Hash);
    fill(&old, 1);
    let (base, _) = copy_map("m", &old, &new, &conv, dir.path(), &CopyOptions::default()).unwrap();
    old.with_entries(|e| e.remove(&key(0)));
    let t = theirs.clone();
    let ran = write_before_call(&new, 2, move |e| {
        e.insert(key(0), t.clone());
    });
    let patcher = UserPatcher::new(&new, "m", fields.clone(), false);
    let r = reconcile("m", &old, &new, &conv, &base, &fields, &patcher, &options).unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), 1);
    assert_eq!(new.entries().get(&key(0)), Some(&theirs), "{r:?}");
    assert_eq!((r.deleted, r.rewritten, r.kept_new), (0, 1, 1), "{r:?}");
}

#[test]
fn rules_naming_no_field_or_an_unfit_field_are_refused() {
    let e =
        ValueFields::new("m", &new_layout(), 24, &rules(&[("nope", MergeRule::Sum)])).unwrap_err();
    assert!(e.to_string().contains("\"nope\", which is no field"), "{e}");
    let odd = cstruct(None, vec![("a", u32_()), ("b", common::u16_())]);
    let e = ValueFields::new("m", &odd, 8, &rules(&[("b", MergeRule::Sum)])).unwrap_err();
    assert!(e.to_string().contains("atomic add"), "{e}");
}

/// A value of the new layout from its fields.
fn nv(bytes: u64, hits: u64, flags: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&bytes.to_le_bytes());
    v.extend_from_slice(&hits.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

fn apply(fields: &ValueFields, new: &[u8], patch: &Patch) -> Vec<u8> {
    let map = FakeMap::new(Geometry::new(MapType::Hash, 4, 24, 1, 1));
    map.update(&key(0), new, UpdateFlags::ANY).unwrap();
    UserPatcher::new(&map, "m", fields.clone(), false)
        .apply(&key(0), patch)
        .unwrap();
    map.entries()[&key(0)].clone()
}

proptest! {
    /// The reconcile law: with only one side changed the result is that side; with
    /// neither, nothing changes; whatever the rules.
    #[test]
    fn one_side_changed_gives_that_side(
        b in (any::<u64>(), any::<u64>(), any::<u32>()),
        o in (any::<u64>(), any::<u64>(), any::<u32>()),
        which in 0u8..3,
        sum in any::<bool>(),
        max in any::<bool>(),
    ) {
        let mut r = Vec::new();
        if sum { r.push(("hits", MergeRule::Sum)); }
        if max { r.push(("bytes", MergeRule::Max)); }
        let fields = ValueFields::new("m", &new_layout(), 24, &rules(&r)).unwrap();
        let base = nv(b.0, b.1, b.2);
        let changed = nv(o.0, o.1, o.2);
        let mut c = Conflicts::default();
        match which {
            0 => {
                let p = merge_value(&fields, 1, &base, &base, &base, &mut c);
                prop_assert!(p.is_empty());
            }
            1 => {
                let p = merge_value(&fields, 1, &base, &changed, &base, &mut c);
                prop_assert_eq!(apply(&fields, &base, &p), changed);
            }
            _ => {
                let p = merge_value(&fields, 1, &base, &base, &changed, &mut c);
                prop_assert!(p.is_empty());
            }
        }
        prop_assert_eq!(c, Conflicts::default());
    }
}
