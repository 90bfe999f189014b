//! Step 5 of an upgrade: the three-way reconcile after the switch.
//!
//! For every key, base (what the last delta pass carried), old (the old map now, which
//! no program writes any more) and new (the new map now, which the new programs keep
//! writing) decide:
//!
//! | base | old now        | new now          | result                               |
//! |------|----------------|------------------|--------------------------------------|
//! | -    | present        | absent           | added (old created it)               |
//! | -    | present        | present          | merged per field against zero        |
//! | yes  | absent         | = base           | deleted (old deleted it)             |
//! | yes  | absent         | changed / absent | kept as new has it                   |
//! | yes  | = base         | any              | kept as new has it                   |
//! | yes  | changed        | absent           | kept deleted (new deleted it)        |
//! | yes  | changed        | any              | merged per field                     |
//!
//! A key in the tombstone map (below) is left as new has it, whatever the row.
//!
//! Per field (a [`Leaf`]): a field old did not change keeps new's value; a field only
//! old changed takes old's value; a field both changed follows its [`MergeRule`]. A
//! `sum` field always gets old's delta added (old - base) rather than written, so
//! adds the new programs make meanwhile are kept: the [`Patcher`] the kernel path
//! uses applies it with an atomic add in a program run by `BPF_PROG_TEST_RUN`.
//!
//! # Writes of the new programs between the read and the change
//! The new programs keep writing while the reconcile decides from what it read of
//! the new map. So every write of a leaf carries the bytes read there, and a delete
//! the value read: the [`Patcher`] compares before it changes, and answers
//! [`Outcome::Changed`] when the new programs wrote the entry since. The entry is
//! then read and merged again (up to a bound, after which only old's `sum` deltas are
//! added), and a delete is given up (new's entry kept).
//!
//! # The undecidable window, and tombstones
//! Old's changes after the last delta pass all happened before the switch, new's all
//! after it; but the maps tell only values. An entry the old programs created after
//! the last delta pass, which the new programs deleted before the reconcile, looks
//! exactly like one old created and new never saw: it is added back. And a field the
//! new programs wrote with the value carried looks unchanged, so old's change of it
//! in the window is taken, though new's write came later: an entry old changed and
//! new deleted and inserted again (or wrote whole) with some fields as carried gets
//! those fields from old. [`ReconcileReport::window`] is the length of that window
//! (from the last delta pass to the reconcile), and
//! [`ReconcileReport::ambiguous_adds`] counts the adds that fell in it. To make it
//! exact, give [`ReconcileOptions::tombstones`]: a map into which the new programs
//! write the key (new key layout, any value) of every entry they delete or write
//! whole; a key found there is left as the new programs have it (present or not),
//! and nothing of old's is merged into it. Entries the new programs change in place
//! (through a lookup's pointer) are still merged per field, with the same limit: a
//! field they set to the value carried looks unchanged.
//!
//! # Running again
//! A reconcile killed in its middle is run again from the start (the engine's
//! roll-forward). Deletes and adds with `BPF_NOEXIST` are idempotent by themselves;
//! a `sum` delta is not, so every key patched or added is recorded in a marks map
//! ([`ReconcileOptions::marks`]), pinned by the engine while the map's reconcile runs,
//! and a key marked done is skipped on the next run:
//!
//! - the in-kernel patcher writes the mark from its program, in the same run as the
//!   atomic adds ([`Patcher::marks_done`]): a killed process has both or neither;
//! - a patch from user space is marked *patching* with the digest of the entry before
//!   it, applied, then marked done; a next run that finds the mark and the entry
//!   changed takes the patch as applied (exact unless the new programs changed the
//!   entry in the microseconds between the mark and the patch);
//! - an add is marked *adding*, made, then marked done; a next run that finds the
//!   mark and the entry takes the add as made.
//!
//! The engine journals each map whose reconcile is done, so a next run starts at the
//! first map not done.
//!
//! Contract for BPF writers of the tombstone map: a hash (or LRU hash) map whose key is
//! the new map's key; before every `bpf_map_delete_elem` and every whole-entry
//! `bpf_map_update_elem` on the carried map, also
//! `bpf_map_update_elem(&tombstones, key, &one, BPF_ANY)`, and never delete from it.
//! Write the tombstone *before* the change, so that the reconcile never sees the
//! change without its tombstone. The map belongs to the new object; every upgrade
//! creates it empty (its keys matter only for the reconcile of the upgrade that
//! loads it, and an LRU hash keeps it bounded after); the engine is told which map
//! it is by `Options::tombstones` (carried map to tombstone map), and
//! programs/engine_load_v2.c follows the contract. A tombstone the new programs
//! write in the microseconds between the reconcile's look at the tombstone map and
//! its patch of the entry is not seen.

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use super::access::MapAccess;
use super::base::MergeBase;
use super::conversion::Conversion;
use super::copy::check_sizes;
use super::digest::{hash_key_and_entry, hash64};
use super::error::{MigrateError, between_batches, kernel};
use super::fields::{Leaf, ValueFields};
use super::plan::MergeRule;
use super::sys::UpdateFlags;
use super::walk::{DEFAULT_CHUNK, walk_overlapped};

/// One leaf a [`Patch`] writes, on the condition that it still holds what the
/// reconcile read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafWrite {
    /// Index in [`ValueFields::leaves`].
    pub leaf: usize,
    /// CPU slot (0 unless per-CPU).
    pub slot: usize,
    /// The bytes to write.
    pub bytes: Vec<u8>,
    /// The bytes the leaf held when the new map was read: where it holds others now,
    /// the new programs wrote the entry since, and the patch is not applied.
    pub expect: Vec<u8>,
}

/// Changes to one entry of the new map, by leaf of [`ValueFields`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Patch {
    /// Leaves to write, each only if it still holds its expected bytes.
    pub writes: Vec<LeafWrite>,
    /// (leaf index, delta): add to the leaf (a `sum` leaf), wrapping at its width;
    /// for per-CPU maps into one CPU's slot, since readers sum the slots.
    pub adds: Vec<(usize, u64)>,
}

impl Patch {
    /// Whether the patch changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.adds.iter().all(|(_, d)| *d == 0)
    }
}

/// What a [`Patcher`] did with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Patched (or deleted).
    Applied,
    /// There is no such entry.
    Missing,
    /// A leaf no longer holds the bytes expected: the new programs wrote the entry
    /// after it was read. Nothing was changed; read it again and merge again.
    Changed,
}

/// Applies a [`Patch`] to an entry of the new map while its programs run.
///
/// Both operations compare before they change: a write of a leaf (or a delete) that
/// the reconcile decided from a read of the new map is made only if the entry still
/// holds what was read, so that a write the new programs made in between is never
/// overwritten. In the kernel the compare and the change run in one program on the
/// element looked up; a program's `bpf_map_update_elem` on a hash map replaces that
/// element, so only a program writing the looked-up element in place, in the few
/// instructions between the compare and the change, can still be overwritten.
pub trait Patcher: Send + Sync + std::fmt::Debug {
    /// Applies `patch` to the entry `key`.
    ///
    /// # Errors
    /// The map or the patch program refuses.
    fn apply(&self, key: &[u8], patch: &Patch) -> Result<Outcome, MigrateError>;

    /// Deletes the entry `key` if every leaf still holds its bytes in `expect` (a whole
    /// value of the new map, every CPU slot, as read).
    ///
    /// # Errors
    /// The map or the program refuses.
    fn delete_unchanged(&self, key: &[u8], expect: &[u8]) -> Result<Outcome, MigrateError>;

    /// Whether [`Patcher::apply`] also marks the key done in the reconcile's marks
    /// map, in the same step as the patch (the in-kernel patcher does, in the one run
    /// of its program), so that no mark needs writing around it.
    fn marks_done(&self) -> bool {
        false
    }
}

/// A [`Patcher`] that reads the value, compares, changes it and writes it back: exact
/// only while nothing else writes the entry between the read and the write (the fake
/// maps of tests; maps whose values carry a spin lock are read and written with
/// `BPF_F_LOCK`, which makes each step, not the pair, atomic). The kernel path uses
/// the in-kernel patcher for `sum`.
#[derive(Debug)]
pub struct UserPatcher<'m, M: MapAccess + ?Sized> {
    map: &'m M,
    name: String,
    fields: ValueFields,
    lock: bool,
}

impl<'m, M: MapAccess + ?Sized> UserPatcher<'m, M> {
    /// A patcher of `map` with the value `fields`.
    #[must_use]
    pub fn new(map: &'m M, name: &str, fields: ValueFields, lock: bool) -> Self {
        Self {
            map,
            name: name.to_owned(),
            fields,
            lock,
        }
    }
}

/// Adds `delta` to the little-endian integer in `bytes`, wrapping at its width.
fn add_le(bytes: &mut [u8], delta: u64) {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    if let (Some(dst), Some(src)) = (b.get_mut(..n), bytes.get(..n)) {
        dst.copy_from_slice(src);
    }
    let v = u64::from_le_bytes(b).wrapping_add(delta);
    if let (Some(dst), Some(src)) = (bytes.get_mut(..n), v.to_le_bytes().get(..n)) {
        dst.copy_from_slice(src);
    }
}

fn le(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    if let (Some(dst), Some(src)) = (b.get_mut(..n), bytes.get(..n)) {
        dst.copy_from_slice(src);
    }
    u64::from_le_bytes(b)
}

fn stride(fields: &ValueFields, cpus: usize) -> usize {
    if cpus > 1 {
        fields.size.next_multiple_of(8)
    } else {
        fields.size
    }
}

/// Whether every leaf of `value` holds the bytes `expect` has at the same place.
pub(super) fn leaves_hold(fields: &ValueFields, cpus: usize, value: &[u8], expect: &[u8]) -> bool {
    let st = stride(fields, cpus);
    (0..cpus.max(1)).all(|slot| {
        fields.leaves.iter().all(|l| {
            let r = slot * st + l.offset..slot * st + l.offset + l.len;
            value.get(r.clone()) == expect.get(r)
        })
    })
}

/// Whether every write of `patch` finds its leaf holding its expected bytes in `value`.
pub(super) fn writes_expected(
    fields: &ValueFields,
    cpus: usize,
    value: &[u8],
    patch: &Patch,
) -> bool {
    let st = stride(fields, cpus);
    patch.writes.iter().all(|w| {
        fields.leaves.get(w.leaf).is_some_and(|l| {
            let at = w.slot * st + l.offset;
            value.get(at..at + w.expect.len()) == Some(&w.expect[..])
        })
    })
}

/// The delete of [`Patcher::delete_unchanged`] from user space: read, compare, delete.
pub(super) fn delete_if_unchanged<M: MapAccess + ?Sized>(
    map: &M,
    name: &str,
    fields: &ValueFields,
    flags: UpdateFlags,
    key: &[u8],
    expect: &[u8],
) -> Result<Outcome, MigrateError> {
    let g = map.geometry();
    let mut value = vec![0u8; g.value_len];
    if !map
        .lookup(key, &mut value, flags)
        .map_err(kernel(name, "reading an entry to delete"))?
    {
        return Ok(Outcome::Missing);
    }
    if !leaves_hold(fields, g.cpus, &value, expect) {
        return Ok(Outcome::Changed);
    }
    Ok(
        if map.delete(key).map_err(kernel(name, "deleting an entry"))? {
            Outcome::Applied
        } else {
            Outcome::Missing
        },
    )
}

impl<M: MapAccess + ?Sized> UserPatcher<'_, M> {
    fn flags(&self) -> UpdateFlags {
        if self.lock {
            UpdateFlags::LOCK
        } else {
            UpdateFlags::ANY
        }
    }
}

impl<M: MapAccess + ?Sized> Patcher for UserPatcher<'_, M> {
    fn apply(&self, key: &[u8], patch: &Patch) -> Result<Outcome, MigrateError> {
        let g = self.map.geometry();
        let flags = self.flags();
        let mut value = vec![0u8; g.value_len];
        if !self
            .map
            .lookup(key, &mut value, flags)
            .map_err(kernel(&self.name, "reading an entry to patch"))?
        {
            return Ok(Outcome::Missing);
        }
        if !writes_expected(&self.fields, g.cpus, &value, patch) {
            return Ok(Outcome::Changed);
        }
        let st = stride(&self.fields, g.cpus);
        for w in &patch.writes {
            if let Some(l) = self.fields.leaves.get(w.leaf) {
                let at = w.slot * st + l.offset;
                if let Some(dst) = value.get_mut(at..at + w.bytes.len()) {
                    dst.copy_from_slice(&w.bytes);
                }
            }
        }
        for (leaf, delta) in &patch.adds {
            if let Some(l) = self.fields.leaves.get(*leaf)
                && let Some(dst) = value.get_mut(l.offset..l.offset + l.len)
            {
                add_le(dst, *delta);
            }
        }
        let flags = UpdateFlags(UpdateFlags::EXIST.0 | flags.0);
        match self.map.update(key, &value, flags) {
            Ok(()) => Ok(Outcome::Applied),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(Outcome::Missing),
            Err(e) => Err(kernel(&self.name, "writing a patched entry")(e)),
        }
    }

    fn delete_unchanged(&self, key: &[u8], expect: &[u8]) -> Result<Outcome, MigrateError> {
        delete_if_unchanged(
            self.map,
            &self.name,
            &self.fields,
            self.flags(),
            key,
            expect,
        )
    }
}

/// Conflicts (fields both sides changed) by the rule that decided them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conflicts {
    /// Decided by `new`: new's value kept.
    pub new: usize,
    /// Decided by `sum`: old's delta added.
    pub sum: usize,
    /// Decided by `max`.
    pub max: usize,
}

impl Conflicts {
    fn add(&mut self, other: Conflicts) {
        self.new += other.new;
        self.sum += other.sum;
        self.max += other.max;
    }
}

/// The three-way merge of one value's fields: what to change in the new entry, given
/// `base` (the carried value, converted), `old` (the old value now, converted) and
/// `new` (the new value now), all in the new layout with `cpus` slots.
#[must_use]
pub fn merge_value(
    fields: &ValueFields,
    cpus: usize,
    base: &[u8],
    old: &[u8],
    new: &[u8],
    conflicts: &mut Conflicts,
) -> Patch {
    let st = stride(fields, cpus);
    let mut patch = Patch::default();
    let mut sums = vec![0u64; fields.leaves.len()];
    for slot in 0..cpus.max(1) {
        for (i, leaf) in fields.leaves.iter().enumerate() {
            let r = slot * st + leaf.offset..slot * st + leaf.offset + leaf.len;
            let (Some(b), Some(o), Some(n)) = (base.get(r.clone()), old.get(r.clone()), new.get(r))
            else {
                continue;
            };
            if o == b {
                continue;
            }
            let new_changed = n != b;
            match leaf.rule {
                MergeRule::Sum => {
                    if new_changed {
                        conflicts.sum += 1;
                    }
                    if let Some(s) = sums.get_mut(i) {
                        *s = s.wrapping_add(le(o).wrapping_sub(le(b)));
                    }
                }
                _ if !new_changed => patch.writes.push(LeafWrite {
                    leaf: i,
                    slot,
                    bytes: o.to_vec(),
                    expect: n.to_vec(),
                }),
                MergeRule::New => conflicts.new += 1,
                MergeRule::Max => {
                    conflicts.max += 1;
                    if greater(leaf, o, n) {
                        patch.writes.push(LeafWrite {
                            leaf: i,
                            slot,
                            bytes: o.to_vec(),
                            expect: n.to_vec(),
                        });
                    }
                }
            }
        }
    }
    for (i, (s, leaf)) in sums.into_iter().zip(&fields.leaves).enumerate() {
        if leaf.rule == MergeRule::Sum && s & width_mask(leaf.len) != 0 {
            patch.adds.push((i, s & width_mask(leaf.len)));
        }
    }
    patch
}

fn width_mask(len: usize) -> u64 {
    if len >= 8 {
        u64::MAX
    } else {
        (1u64 << (len * 8)) - 1
    }
}

fn greater(leaf: &Leaf, a: &[u8], b: &[u8]) -> bool {
    let (x, y) = (le(a), le(b));
    if leaf.int == Some(true) {
        let shift = 64 - 8 * u32::try_from(leaf.len.min(8)).unwrap_or(8);
        #[expect(
            clippy::cast_possible_wrap,
            reason = "reinterpreting the bits as signed"
        )]
        let (x, y) = (
            ((x << shift) as i64) >> shift,
            ((y << shift) as i64) >> shift,
        );
        x > y
    } else {
        x > y
    }
}

/// How the reconcile runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReconcileOptions<'a> {
    /// Values hold a `bpf_spin_lock`.
    pub lock: bool,
    /// The tombstone map the new programs write deleted keys into (see the module
    /// documentation).
    pub tombstones: Option<&'a dyn MapAccess>,
    /// The map of keys already reconciled, which makes the reconcile safe to run again
    /// after it was interrupted (see "Running again" in the module documentation): a
    /// hash map keyed by the new key with [`MARK_VALUE_SIZE`]-byte values, empty on the
    /// first run and kept until the map's reconcile is recorded as done.
    pub marks: Option<&'a dyn MapAccess>,
    /// New keys to leave as the new map has them (the daemon wrote them through a
    /// dual-write handle after its writes were replayed).
    pub keep: Option<&'a HashSet<Vec<u8>>>,
    /// Entries per batch of the walk over the old map (0: the default).
    pub chunk: usize,
    /// A failpoint evaluated before each batch (crash tests).
    pub batch_point: Option<&'static str>,
}

/// Bytes of a value of the [`ReconcileOptions::marks`] map: the state (`u32`: 1 a
/// patch is being applied, 2 an entry is being added, 3 done), 4 bytes of zero, and
/// for a patch being applied the digest (`u64`) of the entry before it.
pub const MARK_VALUE_SIZE: usize = 16;

/// Merges of one entry against a new map the new programs keep rewriting, before its
/// writes are given up (old's `sum` deltas are still added).
const MAX_TRIES: usize = 8;

/// A mark's state: a patch is about to be applied from user space.
const MARK_PATCHING: u32 = 1;
/// A mark's state: the entry is about to be added.
const MARK_ADDING: u32 = 2;
/// A mark's state: the key is reconciled.
pub const MARK_DONE: u32 = 3;

/// Marks of keys reconciled, read and written through the marks map.
struct Marks<'a> {
    map: Option<&'a dyn MapAccess>,
    name: &'a str,
}

impl Marks<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<(u32, u64)>, MigrateError> {
        let Some(m) = self.map else {
            return Ok(None);
        };
        let mut v = [0u8; MARK_VALUE_SIZE];
        if !m
            .lookup(key, &mut v, UpdateFlags::ANY)
            .map_err(kernel(self.name, "reading the reconcile's marks"))?
        {
            return Ok(None);
        }
        let (state, digest) = v.split_at(8);
        Ok(Some((
            u32::try_from(le(state.get(..4).unwrap_or(&[])) & 0xffff_ffff).unwrap_or(0),
            le(digest),
        )))
    }

    fn set(&self, key: &[u8], state: u32, digest: u64) -> Result<(), MigrateError> {
        let Some(m) = self.map else {
            return Ok(());
        };
        let mut v = [0u8; MARK_VALUE_SIZE];
        v[..4].copy_from_slice(&state.to_le_bytes());
        v[8..].copy_from_slice(&digest.to_le_bytes());
        m.update(key, &v, UpdateFlags::ANY)
            .map_err(kernel(self.name, "writing the reconcile's marks"))
    }
}

/// What the reconcile of one map did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReconcileReport {
    /// Keys in the base (carried by the copy and the delta passes).
    pub copied: usize,
    /// Entries the old programs created that were added.
    pub added: usize,
    /// Entries changed (patched) with the old programs' changes.
    pub changed: usize,
    /// Entries the old programs deleted that were deleted.
    pub deleted: usize,
    /// Fields both sides changed, by rule.
    pub conflicts: Conflicts,
    /// Entries old deleted or changed that new had changed or deleted: new's kept.
    pub kept_new: usize,
    /// Keys left as the new programs have them because the tombstone map held them
    /// (deleted or written whole by the new programs since the switch).
    pub tombstoned: usize,
    /// Adds that fall in the undecidable window (no tombstone map to tell).
    pub ambiguous_adds: usize,
    /// Keys found reconciled already by an earlier, interrupted run.
    pub resumed: usize,
    /// Patches and deletes not made because the new programs wrote the entry between
    /// its read and the change (each patch was merged again with what they wrote).
    pub rewritten: usize,
    /// From the last delta pass to the start of the reconcile: the window in which an
    /// entry old created and new deleted cannot be told from one new never saw.
    pub window: Duration,
    /// Wall time.
    pub elapsed: Duration,
}

/// Reconciles map `name`: `old` and `new` now against `base`, with the new value's
/// `fields` and their rules; changes go through `patcher` (in the kernel for `sum`).
///
/// # Errors
/// A map command fails, an entry cannot be converted, or the base cannot be read.
#[expect(
    clippy::too_many_arguments,
    reason = "each is one input of the three-way merge"
)]
pub fn reconcile(
    name: &str,
    old: &dyn MapAccess,
    new: &dyn MapAccess,
    conversion: &Conversion,
    base: &MergeBase,
    fields: &ValueFields,
    patcher: &dyn Patcher,
    options: &ReconcileOptions<'_>,
) -> Result<ReconcileReport, MigrateError> {
    let start = Instant::now();
    let (og, ng) = (old.geometry(), new.geometry());
    check_sizes(name, conversion, &og, &ng)?;
    if fields.size != ng.value_size {
        return Err(MigrateError::Invalid {
            map: name.to_owned(),
            reason: format!(
                "the field layout is {} bytes, the new map's value {}",
                fields.size, ng.value_size
            ),
        });
    }
    let mut report = ReconcileReport {
        copied: base.len(),
        window: SystemTime::now()
            .duration_since(base.last_pass())
            .unwrap_or_default(),
        ..ReconcileReport::default()
    };
    let flags = if options.lock {
        UpdateFlags::LOCK
    } else {
        UpdateFlags::ANY
    };
    let mut seen = vec![false; base.len()];
    let mut created_seen: HashSet<Vec<u8>> = HashSet::new();
    // Whether the tombstone map holds a key (the new programs deleted its entry or
    // wrote it whole since the switch).
    let mut tv = vec![0u8; options.tombstones.map_or(0, |t| t.geometry().value_len)];
    let mut owned = |nk: &[u8]| -> Result<bool, MigrateError> {
        match options.tombstones {
            Some(t) => t
                .lookup(nk, &mut tv, UpdateFlags::ANY)
                .map_err(kernel(name, "reading the tombstone map")),
            None => Ok(false),
        }
    };
    let (ks, vl) = (og.key_size.max(1), og.value_len.max(1));
    let mut new_value = vec![0u8; ng.value_len];
    let zero = vec![0u8; ng.value_len];
    // The walk reads ahead on its own thread while the entries are checked here.
    let marks = Marks {
        map: options.marks,
        name,
    };
    let chunk_len = if options.chunk == 0 {
        DEFAULT_CHUNK
    } else {
        options.chunk
    };
    walk_overlapped(old, name, chunk_len, options.lock, 4, |chunk| {
        between_batches(options.batch_point)?;
        for (k, v) in chunk
            .keys
            .chunks_exact(ks)
            .zip(chunk.values.chunks_exact(vl))
        {
            let (key_hash, old_digest) = hash_key_and_entry(base.seed(), k, v);
            let found = base.find_hashed(k, key_hash)?;
            // The fast path: old did not change the entry (its digest covers the key,
            // so a key-hash collision falls through to the record check below).
            let mut in_base = None;
            if let Some(i) = found {
                if seen.get(i).copied().unwrap_or(true) {
                    continue;
                }
                let entry = base.entries().get(i).copied();
                if entry.is_some_and(|e| e.old_digest == old_digest) {
                    if let Some(s) = seen.get_mut(i) {
                        *s = true;
                    }
                    continue;
                }
                let (bk, bv) = base.record(i)?;
                if bk == k {
                    if let Some(s) = seen.get_mut(i) {
                        *s = true;
                    }
                    in_base = Some((i, bv));
                }
            }
            if in_base.is_none() && !created_seen.insert(k.to_vec()) {
                continue;
            }
            let nk = conversion.key(name, k)?;
            if options.keep.is_some_and(|keep| keep.contains(&nk)) {
                report.kept_new += 1;
                continue;
            }
            let mark = marks.get(&nk)?;
            if mark.is_some_and(|(state, _)| state == MARK_DONE) {
                report.resumed += 1;
                continue;
            }
            let old_conv = conversion.value(name, v)?;
            let present = new
                .lookup(&nk, &mut new_value, flags)
                .map_err(kernel(name, "reading the new map"))?;
            match mark {
                // Interrupted between marking an add and marking it done: the add
                // happened if the entry is there.
                Some((MARK_ADDING, _)) if present => {
                    marks.set(&nk, MARK_DONE, 0)?;
                    report.resumed += 1;
                    continue;
                }
                // Interrupted around a patch from user space: it was applied if the
                // entry is no longer the one it was applied to.
                Some((MARK_PATCHING, before))
                    if !present || hash64(base.seed(), &[&new_value]) != before =>
                {
                    marks.set(&nk, MARK_DONE, 0)?;
                    report.resumed += 1;
                    continue;
                }
                _ => {}
            }
            // A key the new programs deleted or wrote whole since the switch is
            // theirs: what old did to it came before.
            if owned(&nk)? {
                report.tombstoned += 1;
                continue;
            }
            // The value the merge takes as base: the carried one, or zeros where both
            // sides created the key.
            let merge_base = match &in_base {
                None if !present => {
                    if options.tombstones.is_none() {
                        report.ambiguous_adds += 1;
                    }
                    marks.set(&nk, MARK_ADDING, 0)?;
                    let add = UpdateFlags(UpdateFlags::NOEXIST.0 | flags.0);
                    match new.update(&nk, &old_conv, add) {
                        Ok(()) => report.added += 1,
                        // The new programs created it meanwhile: theirs stays.
                        Err(e) if e.errno() == Some(libc::EEXIST) => report.kept_new += 1,
                        Err(e) => return Err(kernel(name, "adding an entry")(e)),
                    }
                    marks.set(&nk, MARK_DONE, 0)?;
                    continue;
                }
                None => Cow::Borrowed(&zero[..]),
                Some(_) if !present => {
                    report.kept_new += 1;
                    continue;
                }
                Some((_, bv)) => Cow::Owned(conversion.value(name, bv)?),
            };
            // Whether the new programs left the entry as carried, when first read: then
            // no field can be in conflict.
            let new_unchanged = in_base.as_ref().is_some_and(|(i, _)| {
                base.entries()
                    .get(*i)
                    .is_some_and(|e| e.new_digest == base.new_digest(&nk, &new_value))
            });
            let around = marks.map.is_some() && !patcher.marks_done();
            let mut tries = 0;
            // The conflicts of the last merge only: a merge made again counts once.
            let mut conflicts;
            loop {
                conflicts = Conflicts::default();
                let mut patch = merge_value(
                    fields,
                    ng.cpus,
                    &merge_base,
                    &old_conv,
                    &new_value,
                    &mut conflicts,
                );
                debug_assert!(tries > 0 || !new_unchanged || conflicts == Conflicts::default());
                if tries == MAX_TRIES {
                    // The new programs rewrite this entry faster than it can be
                    // patched: their fields stay, old's deltas are still added.
                    patch.writes.clear();
                    report.kept_new += 1;
                }
                if patch.is_empty() {
                    break;
                }
                if around {
                    marks.set(&nk, MARK_PATCHING, hash64(base.seed(), &[&new_value]))?;
                }
                match patcher.apply(&nk, &patch)? {
                    Outcome::Applied => report.changed += 1,
                    // The new programs deleted it: it stays deleted.
                    Outcome::Missing => report.kept_new += 1,
                    Outcome::Changed => {
                        report.rewritten += 1;
                        tries += 1;
                        let present = new
                            .lookup(&nk, &mut new_value, flags)
                            .map_err(kernel(name, "reading the new map"))?;
                        if present {
                            continue;
                        }
                        report.kept_new += 1;
                    }
                }
                break;
            }
            report.conflicts.add(conflicts);
            if around {
                marks.set(&nk, MARK_DONE, 0)?;
            }
        }
        Ok(true)
    })?;
    // Keys of the base the walk never met: old deleted them. Running this again is
    // harmless: a key deleted before is not in the new map any more.
    between_batches(options.batch_point)?;
    for (i, s) in seen.iter().enumerate() {
        if *s {
            continue;
        }
        let (k, _) = base.record(i)?;
        let nk = conversion.key(name, &k)?;
        if !new
            .lookup(&nk, &mut new_value, flags)
            .map_err(kernel(name, "reading the new map"))?
        {
            continue;
        }
        let unchanged = base
            .entries()
            .get(i)
            .is_some_and(|e| e.new_digest == base.new_digest(&nk, &new_value));
        if !unchanged {
            report.kept_new += 1;
            continue;
        }
        // Written again whole by the new programs, with the value carried.
        if owned(&nk)? {
            report.tombstoned += 1;
            continue;
        }
        match patcher.delete_unchanged(&nk, &new_value)? {
            Outcome::Applied => report.deleted += 1,
            Outcome::Missing => {}
            Outcome::Changed => {
                report.rewritten += 1;
                report.kept_new += 1;
            }
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}
