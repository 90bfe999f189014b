//! The data path against the running kernel: copy with conversion of 100,000 entries
//! per map type, a writer during the copy caught by a delta pass, and the reconcile
//! with `sum` applied by the in-kernel patch program while another program keeps
//! adding to the same counter, and a reconcile interrupted between two batches and run
//! again, which adds no `sum` twice (the patch program marks each key done in the
//! same run), and the patch and delete programs refusing to change an entry the new
//! programs rewrote after the reconcile read it. Each test has its own bpffs mount and state directory;
//! the maps live only as long as their descriptors. Hash maps of 100,000 entries are
//! written by the generated write program past the first batches, and read by the
//! generated read program where the kernel has `bpf_for_each_map_elem`; a copy into a
//! map too small stops where the kernel refuses, with the batch command's error; values
//! holding a `bpf_timer` are copied by map commands alone where the programs are off.
#![allow(clippy::indexing_slicing, reason = "tests index fixed buffers")]
#![allow(clippy::cast_possible_truncation, reason = "test values are small")]

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;
mod values;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use common::u32_;
use handover_engine::migrate::{
    Conversion, CopyOptions, KernelPatcher, MARK_VALUE_SIZE, MapAccess, MergeRule, MigrateError,
    Outcome, Patch, Patcher, ReconcileOptions, ValueFields, copy_map, delta_pass, merge_value,
    reconcile,
};
use handover_plan::{Side, map_layout};
use handover_sys::{Bpf, Map, MapCreate, MapEntries, MapType, UpdateFlags};
use values::{new_fields, new_layout, new_value, old_layout, old_value};

const N: u32 = 100_000;

fn conversion(map: &Map) -> Conversion {
    let g = MapAccess::geometry(map);
    Conversion {
        key: map_layout(&u32_(), &u32_(), 4, 4, Side::Key).plan,
        value: map_layout(&old_layout(), &new_layout(), 16, 24, Side::Value).plan,
        cpus: g.cpus,
        per_cpu: g.per_cpu(),
    }
}

fn create(bpf: &Bpf, t: MapType, value: u32, max: u32, name: &str) -> Map {
    let mut spec = MapCreate::new(t, 4, value, max);
    spec.name = name;
    Map::create(bpf, &spec).unwrap()
}

/// An old hash map of `entries` entries (hits 0, bytes 10) copied with conversion into a
/// new one, the merge base written to `state`.
fn copied(
    bpf: &Bpf,
    entries: u32,
    state: &std::path::Path,
) -> (Map, Map, Conversion, handover_engine::migrate::MergeBase) {
    let old = create(bpf, MapType::Hash, 16, 1000, "mig_old");
    let new = create(bpf, MapType::Hash, 24, 1000, "mig_new");
    for i in 0..entries {
        old.update(&i.to_ne_bytes(), &old_value(i, 0, 10), UpdateFlags::ANY)
            .unwrap();
    }
    let conv = conversion(&old);
    let (base, _) = copy_map("m", &old, &new, &conv, state, &CopyOptions::default()).unwrap();
    (old, new, conv, base)
}

/// The value of entry `i` on CPU slot `c`.
fn expected(i: u32, c: u32) -> (u64, u64, u32) {
    (u64::from(i) * 3 + u64::from(c), u64::from(i + c), i ^ 0xa5)
}

fn fill(map: &Map, t: MapType) {
    let g = MapAccess::geometry(map);
    let mut entries = MapEntries::new(4, g.value_len);
    for i in 0..N {
        let mut v = Vec::with_capacity(g.value_len);
        for c in 0..g.cpus as u32 {
            let (bytes, hits, flags) = expected(i, c);
            v.extend_from_slice(&old_value(hits as u32, flags, bytes));
            v.resize(v.len().next_multiple_of(if g.per_cpu() { 8 } else { 1 }), 0);
        }
        entries.push(&i.to_ne_bytes(), &v);
    }
    map.update_all(&entries, UpdateFlags::ANY)
        .unwrap_or_else(|e| panic!("{t}: {e}"));
}

#[test]
fn one_hundred_thousand_entries_per_map_type_are_copied_converted() {
    if !testenv::privileged("one_hundred_thousand_entries_per_map_type_are_copied_converted") {
        return;
    }
    let _bpffs = testenv::Bpffs::mount();
    let state = testenv::TempDir::new("migrate-kernel-copy");
    let bpf = Bpf::kernel();
    let reads_by_program = handover_load::probe_func_addresses(&bpf);
    for t in [
        MapType::Hash,
        MapType::PercpuHash,
        MapType::Array,
        MapType::LruHash,
    ] {
        // LRU maps get room to spare, so that filling them evicts nothing.
        let max = if t == MapType::LruHash { 2 * N } else { N };
        let old = create(&bpf, t, 16, max, "mig_old");
        let new = create(&bpf, t, 24, max, "mig_new");
        fill(&old, t);
        let conv = conversion(&old);
        let (base, report) = copy_map(
            "m",
            &old,
            &new,
            &conv,
            state.path(),
            &CopyOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(report.copied, N as usize, "{t}: {report:?}");
        assert_eq!(base.len(), N as usize);
        // Hash maps of shared values are written by the generated program once the
        // copy passes its first batches, and read by the other where the kernel has
        // bpf_for_each_map_elem (5.13, as function addresses); the others by batch
        // only.
        if matches!(t, MapType::Hash | MapType::LruHash) {
            assert!(
                report.written_by_program > N as usize / 2,
                "{t}: {report:?}"
            );
            if reads_by_program {
                assert!(report.read_by_program > N as usize / 2, "{t}: {report:?}");
            } else {
                assert_eq!(report.read_by_program, 0, "{t}: {report:?}");
            }
        } else {
            assert_eq!(report.written_by_program, 0, "{t}: {report:?}");
            assert_eq!(report.read_by_program, 0, "{t}: {report:?}");
        }
        let got = new.dump().unwrap();
        assert_eq!(got.len(), N as usize, "{t}");
        let g = MapAccess::geometry(&new);
        for (k, v) in got.iter() {
            let i = u32::from_ne_bytes(k.try_into().unwrap());
            for c in 0..g.cpus {
                let stride = if g.per_cpu() { 24 } else { 0 };
                let (bytes, hits, flags, extra) = new_fields(&v[c * stride..c * stride + 24]);
                let (eb, eh, ef) = expected(i, c as u32);
                assert_eq!(
                    (bytes, hits, flags, extra),
                    (eb, eh, ef, 0),
                    "{t} key {i} cpu {c}"
                );
            }
        }
    }
}

/// A hash map of `max` entries whose value is `{ u64 deadline; struct bpf_timer expiry }`
/// with its BTF, so that the kernel knows the timer (5.15).
fn timer_map(bpf: &Bpf, max: u32, name: &str) -> Map {
    let mut b = testenv::BtfBuilder::new();
    let u32_id = b.int("u32", 4);
    let u64_id = b.int("u64", 8);
    let pair = b.array(u64_id, u32_id, 2);
    let timer = b.structure("bpf_timer", 16, &[("__opaque", pair, 0)]);
    let session = b.structure(
        "session",
        24,
        &[("deadline", u64_id, 0), ("expiry", timer, 64)],
    );
    let btf = bpf
        .btf_load(&b.build(), handover_sys::LogLevel::OnFailure)
        .expect("load BTF");
    let mut spec = MapCreate::new(MapType::Hash, 4, 24, max);
    spec.name = name;
    spec.btf = Some(handover_sys::MapBtf {
        fd: std::os::fd::AsFd::as_fd(&btf),
        key_type_id: u32_id,
        value_type_id: session,
        vmlinux_value_type_id: 0,
    });
    Map::create(bpf, &spec).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn values_with_a_timer_are_copied_whole_by_map_commands_when_programs_are_off() {
    const T: &str = "values_with_a_timer_are_copied_whole_by_map_commands_when_programs_are_off";
    if !testenv::privileged(T) {
        return;
    }
    let _bpffs = testenv::Bpffs::mount();
    let state = testenv::TempDir::new("migrate-kernel-timer");
    let bpf = Bpf::kernel();
    // Past the entries a copy reads by batch before it would load its programs.
    const ENTRIES: u32 = 40_000;
    let session = common::cstruct(
        Some("session"),
        vec![
            ("deadline", common::u64_()),
            (
                "expiry",
                common::cstruct(
                    Some("bpf_timer"),
                    vec![("a", common::u64_()), ("b", common::u64_())],
                ),
            ),
        ],
    );
    let conv = Conversion {
        key: map_layout(&u32_(), &u32_(), 4, 4, Side::Key).plan,
        value: map_layout(&session, &session, 24, 24, Side::Value).plan,
        cpus: 1,
        per_cpu: false,
    };
    let old = timer_map(&bpf, ENTRIES, "timer_old");
    let mut entries = MapEntries::new(4, 24);
    for i in 0..ENTRIES {
        let mut v = [0u8; 24];
        v[..8].copy_from_slice(&(u64::from(i) * 1000 + 7).to_ne_bytes());
        entries.push(&i.to_ne_bytes(), &v);
    }
    old.update_all(&entries, UpdateFlags::ANY).unwrap();
    // Off, as the engine sets it for values with kernel-managed fields: map commands
    // only. On: whatever the kernel lets the programs do, every entry arrives whole.
    for programs in [false, true] {
        let new = timer_map(&bpf, ENTRIES, "timer_new");
        let options = CopyOptions {
            programs,
            ..CopyOptions::default()
        };
        let (base, report) = copy_map("sessions", &old, &new, &conv, state.path(), &options)
            .unwrap_or_else(|e| panic!("programs {programs}: {e}"));
        assert_eq!(report.copied, ENTRIES as usize, "{report:?}");
        assert_eq!(base.len(), ENTRIES as usize);
        if !programs {
            assert_eq!(
                (report.read_by_program, report.written_by_program),
                (0, 0),
                "{report:?}"
            );
        }
        let got = new.dump().unwrap();
        assert_eq!(got.len(), ENTRIES as usize);
        for (k, v) in got.iter() {
            let i = u32::from_ne_bytes(k.try_into().unwrap());
            let deadline = u64::from_ne_bytes(v[..8].try_into().unwrap());
            assert_eq!(deadline, u64::from(i) * 1000 + 7, "deadline of {i}");
            assert_eq!(&v[8..], &[0u8; 16], "timer of {i}");
        }
    }
}

#[test]
fn a_copy_into_a_map_too_small_fails_naming_the_refusal_after_the_program_wrote_what_fit() {
    if !testenv::privileged(
        "a_copy_into_a_map_too_small_fails_naming_the_refusal_after_the_program_wrote_what_fit",
    ) {
        return;
    }
    let state = testenv::TempDir::new("migrate-kernel-small");
    let bpf = Bpf::kernel();
    let old = create(&bpf, MapType::Hash, 16, N, "mig_old");
    let new = create(&bpf, MapType::Hash, 24, N / 2, "mig_new");
    fill(&old, MapType::Hash);
    let err = copy_map(
        "m",
        &old,
        &new,
        &conversion(&old),
        state.path(),
        &CopyOptions::default(),
    )
    .unwrap_err();
    // The batch command, given the rest from the refused entry on, says what and where.
    let text = err.to_string();
    assert!(
        text.starts_with("map \"m\": writing entries by batch"),
        "{text}"
    );
    assert!(text.contains("\"mig_new\""), "{text}");
    assert!(text.contains("Argument list too long"), "{text}");
    // Everything that fit is in, each entry converted.
    let got = new.dump().unwrap();
    assert_eq!(got.len(), N as usize / 2);
    for (k, v) in got.iter() {
        let i = u32::from_ne_bytes(k.try_into().unwrap());
        let (eb, eh, ef) = expected(i, 0);
        assert_eq!(new_fields(&v[..24]), (eb, eh, ef, 0), "key {i}");
    }
}

#[test]
fn a_writer_during_the_copy_is_caught_by_the_delta_pass() {
    if !testenv::privileged("a_writer_during_the_copy_is_caught_by_the_delta_pass") {
        return;
    }
    let _bpffs = testenv::Bpffs::mount();
    let state = testenv::TempDir::new("migrate-kernel-delta");
    let bpf = Bpf::kernel();
    let old = create(&bpf, MapType::Hash, 16, 2 * N, "mig_old");
    let new = create(&bpf, MapType::Hash, 24, 2 * N, "mig_new");
    fill(&old, MapType::Hash);
    let conv = conversion(&old);
    let stop = AtomicBool::new(false);
    let (mut base, report) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                old.update(
                    &(n % N).to_ne_bytes(),
                    &old_value(1, 2, 3),
                    UpdateFlags::ANY,
                )
                .unwrap();
                old.update(
                    &(N + n % N).to_ne_bytes(),
                    &old_value(n, 0, 0),
                    UpdateFlags::ANY,
                )
                .unwrap();
                let _ = old.delete(&((n * 7 + 3) % N).to_ne_bytes()).unwrap();
                n += 1;
            }
        });
        let r = copy_map(
            "m",
            &old,
            &new,
            &conv,
            state.path(),
            &CopyOptions::default(),
        );
        stop.store(true, Ordering::Relaxed);
        r.unwrap()
    });
    // Read by the generated program where the kernel has one: its passes may miss
    // entries the writer moves, which the delta pass, by batch, carries.
    if handover_load::probe_func_addresses(&bpf) {
        assert!(report.read_by_program > 0, "{report:?}");
    }
    let d = delta_pass("m", &old, &new, &conv, &mut base, false).unwrap();
    assert!(d.total() > 0, "the writer ran during the copy: {d:?}");
    let want: BTreeMap<Vec<u8>, Vec<u8>> = old
        .dump()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.to_vec(), conv.value("m", v).unwrap()))
        .collect();
    let got: BTreeMap<Vec<u8>, Vec<u8>> = new
        .dump()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the new map is the converted old map");
}

#[test]
fn the_reconcile_sums_exactly_while_a_program_keeps_adding() {
    if !testenv::privileged("the_reconcile_sums_exactly_while_a_program_keeps_adding") {
        return;
    }
    let _bpffs = testenv::Bpffs::mount();
    let state = testenv::TempDir::new("migrate-kernel-reconcile");
    let bpf = Bpf::kernel();
    let (old, new, conv, base) = copied(&bpf, 100, state.path());
    let rules: BTreeMap<String, MergeRule> = [
        ("hits".to_owned(), MergeRule::Sum),
        ("bytes".to_owned(), MergeRule::Max),
    ]
    .into();
    let fields = ValueFields::new("m", &new_layout(), 24, &rules).unwrap();
    let patcher = KernelPatcher::new(&bpf, &new, "m", &fields, None).unwrap();
    // Old's last changes: +1000 hits on every entry, a created and a deleted entry.
    for i in 0..100u32 {
        old.update(
            &i.to_ne_bytes(),
            &old_value(i + 1000, 0, 5),
            UpdateFlags::ANY,
        )
        .unwrap();
    }
    old.update(&500u32.to_ne_bytes(), &old_value(1, 1, 1), UpdateFlags::ANY)
        .unwrap();
    assert!(old.delete(&99u32.to_ne_bytes()).unwrap());
    // A program keeps adding 1 to `hits` of every entry of the new map, by the same
    // atomic add, while the reconcile runs.
    let adder = KernelPatcher::new(&bpf, &new, "m", &fields, None).unwrap();
    let hits_leaf = fields.leaves.iter().position(|l| l.path == "hits").unwrap();
    let one = Patch {
        writes: Vec::new(),
        adds: vec![(hits_leaf, 1)],
    };
    let stop = AtomicBool::new(false);
    let (report, adds) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut adds = vec![0u64; 100];
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) || round < 3 {
                for i in 0..99u32 {
                    if adder.apply(&i.to_ne_bytes(), &one).unwrap() == Outcome::Applied {
                        adds[i as usize] += 1;
                    }
                }
                round += 1;
            }
            adds
        });
        let r = reconcile(
            "m",
            &old,
            &new,
            &conv,
            &base,
            &fields,
            &patcher,
            &ReconcileOptions::default(),
        );
        stop.store(true, Ordering::Relaxed);
        (r.unwrap(), h.join().unwrap())
    });
    let mut v = vec![0u8; 24];
    for i in 0..99u32 {
        assert!(
            new.lookup(&i.to_ne_bytes(), &mut v, UpdateFlags::ANY)
                .unwrap()
        );
        let (bytes, hits, _, _) = new_fields(&v);
        assert_eq!(
            hits,
            u64::from(i) + 1000 + adds[i as usize],
            "key {i}: exact sum"
        );
        assert_eq!(bytes, 5, "a field only old changed takes old's value");
    }
    assert!(
        !new.lookup(&99u32.to_ne_bytes(), &mut v, UpdateFlags::ANY)
            .unwrap(),
        "deleted"
    );
    assert!(
        new.lookup(&500u32.to_ne_bytes(), &mut v, UpdateFlags::ANY)
            .unwrap(),
        "added"
    );
    assert_eq!(
        (report.added, report.deleted, report.changed),
        (1, 1, 99),
        "{report:?}"
    );
}

#[test]
fn a_reconcile_interrupted_between_batches_and_run_again_adds_each_sum_once() {
    const TEST: &str = "a_reconcile_interrupted_between_batches_and_run_again_adds_each_sum_once";
    const POINT: &str = "test:interrupted_reconcile";
    if !testenv::privileged(TEST) {
        return;
    }
    let _bpffs = testenv::Bpffs::mount();
    let state = testenv::TempDir::new("migrate-kernel-rerun");
    let bpf = Bpf::kernel();
    let (old, new, conv, base) = copied(&bpf, 200, state.path());
    let rules: BTreeMap<String, MergeRule> = [("hits".to_owned(), MergeRule::Sum)].into();
    let fields = ValueFields::new("m", &new_layout(), 24, &rules).unwrap();
    let mut spec = MapCreate::new(MapType::Hash, 4, MARK_VALUE_SIZE as u32, 1000);
    spec.flags = handover_sys::map_flags::NO_PREALLOC;
    spec.name = "mig_marks";
    let marks = Map::create(&bpf, &spec).unwrap();
    let patcher = KernelPatcher::new(&bpf, &new, "m", &fields, Some(&marks)).unwrap();
    assert!(patcher.marks_done());
    // The old programs' last changes (+1000 hits each, 50 created entries), and the
    // new programs' (+7 hits each).
    for i in 0..200u32 {
        old.update(
            &i.to_ne_bytes(),
            &old_value(i + 1000, 0, 10),
            UpdateFlags::ANY,
        )
        .unwrap();
    }
    for i in 1000..1050u32 {
        old.update(&i.to_ne_bytes(), &old_value(3, 0, 1), UpdateFlags::ANY)
            .unwrap();
    }
    let seven = Patch {
        writes: Vec::new(),
        adds: vec![(
            fields.leaves.iter().position(|l| l.path == "hits").unwrap(),
            7,
        )],
    };
    for i in 0..200u32 {
        KernelPatcher::new(&bpf, &new, "m", &fields, None)
            .unwrap()
            .apply(&i.to_ne_bytes(), &seven)
            .unwrap();
    }
    let options = ReconcileOptions {
        marks: Some(&marks),
        chunk: 32,
        batch_point: Some(POINT),
        ..ReconcileOptions::default()
    };
    // Stopped before the fourth batch: three batches of patches applied and marked.
    fail::cfg(POINT, "3*off->return").unwrap();
    let first = reconcile("m", &old, &new, &conv, &base, &fields, &patcher, &options);
    fail::remove(POINT);
    assert!(
        matches!(first, Err(MigrateError::Interrupted { .. })),
        "{first:?}"
    );
    let again = reconcile("m", &old, &new, &conv, &base, &fields, &patcher, &options).unwrap();
    assert!(again.resumed > 0, "{again:?}");
    let mut v = vec![0u8; 24];
    for i in 0..200u32 {
        assert!(
            new.lookup(&i.to_ne_bytes(), &mut v, UpdateFlags::ANY)
                .unwrap()
        );
        let (_, hits, _, _) = new_fields(&v);
        assert_eq!(hits, u64::from(i) + 1000 + 7, "key {i}: the sum added once");
    }
    for i in 1000..1050u32 {
        assert!(
            new.lookup(&i.to_ne_bytes(), &mut v, UpdateFlags::ANY)
                .unwrap()
        );
        assert_eq!(new_fields(&v).1, 3, "created key {i} added once");
    }
}

/// A patch or a delete decided from a read of the new map changes nothing once the
/// new programs wrote the entry since: the in-kernel programs compare first.
#[test]
fn the_patch_and_delete_programs_leave_an_entry_the_new_programs_rewrote() {
    if !testenv::privileged("the_patch_and_delete_programs_leave_an_entry_the_new_programs_rewrote")
    {
        return;
    }
    let _bpffs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    let new = create(&bpf, MapType::Hash, 24, 16, "mig_cas");
    let rules: BTreeMap<String, MergeRule> = [("hits".to_owned(), MergeRule::Sum)].into();
    let fields = ValueFields::new("m", &new_layout(), 24, &rules).unwrap();
    let patcher = KernelPatcher::new(&bpf, &new, "m", &fields, None).unwrap();
    let read = new_value(10, 5, 1, 0);
    let old = new_value(20, 9, 2, 3);
    let theirs = new_value(30, 6, 7, 8);
    // Old changed every field since the base, which new still holds: write them all,
    // add the hits delta.
    let mut conflicts = handover_engine::migrate::Conflicts::default();
    let patch = merge_value(&fields, 1, &read, &old, &read, &mut conflicts);
    assert_eq!(patch.writes.len(), 3, "{patch:?}");
    let (k1, k2, k3) = (1u32.to_ne_bytes(), 2u32.to_ne_bytes(), 3u32.to_ne_bytes());
    new.update(&k1, &read, UpdateFlags::ANY).unwrap();
    // Entry 2 was read as `read`, then rewritten by a new program.
    new.update(&k2, &theirs, UpdateFlags::ANY).unwrap();
    assert_eq!(patcher.apply(&k1, &patch).unwrap(), Outcome::Applied);
    assert_eq!(patcher.apply(&k2, &patch).unwrap(), Outcome::Changed);
    assert_eq!(patcher.apply(&k3, &patch).unwrap(), Outcome::Missing);
    let mut v = vec![0u8; 24];
    assert!(new.lookup(&k1, &mut v, UpdateFlags::ANY).unwrap());
    assert_eq!(new_fields(&v), (20, 9, 2, 3));
    assert!(new.lookup(&k2, &mut v, UpdateFlags::ANY).unwrap());
    assert_eq!(
        v, theirs,
        "a refused patch changed nothing, not even the sum"
    );
    // A single changed byte in the last leaf refuses it too.
    let mut almost = read.clone();
    almost[23] ^= 1;
    new.update(&k1, &almost, UpdateFlags::ANY).unwrap();
    assert_eq!(patcher.apply(&k1, &patch).unwrap(), Outcome::Changed);
    // Deletes: only of an entry that holds what was read.
    assert_eq!(
        patcher.delete_unchanged(&k2, &read).unwrap(),
        Outcome::Changed
    );
    assert!(new.lookup(&k2, &mut v, UpdateFlags::ANY).unwrap());
    assert_eq!(v, theirs);
    assert_eq!(
        patcher.delete_unchanged(&k2, &theirs).unwrap(),
        Outcome::Applied
    );
    assert!(!new.lookup(&k2, &mut v, UpdateFlags::ANY).unwrap());
    assert_eq!(
        patcher.delete_unchanged(&k2, &theirs).unwrap(),
        Outcome::Missing
    );
}
