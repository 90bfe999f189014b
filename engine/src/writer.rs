//! [`MapWriter`]: the daemon's own writes to a map, kept in both versions of the map
//! while an upgrade migrates it (dual-write).
//!
//! A writer takes keys and values in the layout of the set being applied (the plan's
//! new layout). Its target follows the upgrade:
//!
//! 1. before the new map exists, the old map, through the reverse conversion over
//!    the old entry (so fields only the old layout has keep their value);
//! 2. from the preflight on, both maps: the old through the reverse conversion, the
//!    new as given. The copy and the delta passes carry the old map's entries over
//!    the new map meanwhile, and a converted entry lacks the fields only the new
//!    layout has, so every write of this phase is remembered, and **replayed** into
//!    the new map right after the last delta pass, merged field by field with what
//!    the old programs changed in the entry since the write (the write is the base of
//!    that merge: a field the old programs changed after it takes their value);
//! 3. after the replay, both maps still (an aborted switch rolls back to the old
//!    map), and the reconcile leaves the keys written in this phase as the new map has
//!    them;
//! 4. after the commit, the new map only.
//!
//! A write and the engine's phase changes exclude each other (one lock), so a write
//! lands wholly in one phase. Values holding a `bpf_spin_lock` (in both versions, as
//! the copy decides: `carry::values_locked`) are read and written with `BPF_F_LOCK`
//! in both maps, each whole under the lock the programs take. A per-CPU value is
//! written as user space writes one, a slot per possible CPU (each slot the value
//! size rounded up to 8 bytes), and converted back slot by slot, each over that
//! CPU's slot of the old entry.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::Error;
use crate::migrate::{Conversion, MapAccess, Patcher, UserPatcher, ValueFields, merge_value};
use crate::upstream::reverse;

use handover_sys::UpdateFlags;

/// Writes to one map of the set from the daemon, through an upgrade; see the
/// module documentation. Cheap to clone; clones share the target.
#[derive(Debug, Clone)]
pub struct MapWriter {
    key: String,
    target: Arc<Mutex<Target>>,
}

/// A remembered write of phase 2: the new value (`None`: a delete) and what was
/// written to the old map for it.
#[derive(Debug, Clone)]
struct Pending {
    new: Option<Vec<u8>>,
    old: Option<Vec<u8>>,
}

pub(crate) struct Migration {
    pub(crate) old: Arc<dyn MapAccess>,
    pub(crate) new: Option<Arc<dyn MapAccess>>,
    pub(crate) conversion: Conversion,
    pub(crate) fields: ValueFields,
    /// Both maps' values hold a `bpf_spin_lock`: every read and write of them is
    /// under `BPF_F_LOCK`.
    lock: bool,
    /// The new map's values hold one: its writes after the commit are locked.
    new_lock: bool,
    pending: BTreeMap<Vec<u8>, Pending>,
    replayed: bool,
    after_replay: HashSet<Vec<u8>>,
}

impl std::fmt::Debug for Migration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migration")
            .field("pending", &self.pending.len())
            .field("replayed", &self.replayed)
            .finish_non_exhaustive()
    }
}

pub(crate) enum Target {
    /// One map, in the writer's layout; `true`: its values hold a `bpf_spin_lock`.
    Map(Arc<dyn MapAccess>, bool),
    /// A migration runs.
    Migrating(Box<Migration>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Map(m, lock) => f
                .debug_tuple("Map")
                .field(&m.geometry())
                .field(lock)
                .finish(),
            Target::Migrating(m) => m.fmt(f),
        }
    }
}

fn kernel_err(key: &str, doing: &str) -> impl FnOnce(handover_sys::Error) -> Error {
    let (key, doing) = (key.to_owned(), doing.to_owned());
    move |e| Error::Data {
        step: "write",
        map: key,
        reason: format!("{doing}: {e}"),
    }
}

fn data_err(key: &str) -> impl FnOnce(crate::migrate::MigrateError) -> Error {
    let key = key.to_owned();
    move |e| Error::Data {
        step: "write",
        map: key,
        reason: e.to_string(),
    }
}

fn convert_err(key: &str, what: &str) -> impl FnOnce(crate::upstream::ConvertError) -> Error {
    let (key, what) = (key.to_owned(), what.to_owned());
    move |e| Error::Data {
        step: "write",
        map: key,
        reason: format!("converting the {what} back to the old layout: {e}"),
    }
}

impl Migration {
    /// A migration of `old` by `conversion`; `(lock, new_lock)`: both maps' values
    /// hold a `bpf_spin_lock`, the new map's do.
    pub(crate) fn new(
        old: Arc<dyn MapAccess>,
        conversion: Conversion,
        fields: ValueFields,
        (lock, new_lock): (bool, bool),
    ) -> Self {
        Self {
            old,
            new: None,
            conversion,
            fields,
            lock,
            new_lock,
            pending: BTreeMap::new(),
            replayed: false,
            after_replay: HashSet::new(),
        }
    }

    /// The old key of a new key.
    fn old_key(&self, map: &str, key: &[u8]) -> Result<Vec<u8>, Error> {
        reverse(&self.conversion.key, key, None).map_err(convert_err(map, "key"))
    }

    fn flags(&self) -> UpdateFlags {
        if self.lock {
            UpdateFlags::LOCK
        } else {
            UpdateFlags::ANY
        }
    }

    /// The old value of a new `value`, over the old entry `current`: per CPU slot for
    /// a per-CPU map.
    fn old_value(&self, map: &str, value: &[u8], current: Option<&[u8]>) -> Result<Vec<u8>, Error> {
        let plan = &self.conversion.value;
        if !self.conversion.per_cpu {
            return reverse(plan, value, current).map_err(convert_err(map, "value"));
        }
        let (new_size, old_size) = (plan.new_size as usize, plan.old_size as usize);
        let (new_stride, old_stride) = (new_size.next_multiple_of(8), old_size.next_multiple_of(8));
        let mut out = vec![0u8; old_stride * self.conversion.cpus];
        for cpu in 0..self.conversion.cpus {
            let slot = value.get(cpu * new_stride..cpu * new_stride + new_size);
            let cur = current.and_then(|c| c.get(cpu * old_stride..cpu * old_stride + old_size));
            let dst = out.get_mut(cpu * old_stride..cpu * old_stride + old_size);
            let (Some(slot), Some(dst)) = (slot, dst) else {
                return Err(Error::Data {
                    step: "write",
                    map: map.to_owned(),
                    reason: format!("the per-CPU value has no slot for CPU {cpu}"),
                });
            };
            let v = reverse(plan, slot, cur).map_err(convert_err(map, "value"))?;
            dst.copy_from_slice(v.get(..old_size).unwrap_or(&v));
        }
        Ok(out)
    }

    fn put(&mut self, map: &str, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let ok = self.old_key(map, key)?;
        let flags = self.flags();
        let mut current = vec![0u8; self.old.geometry().value_len];
        let found = self
            .old
            .lookup(&ok, &mut current, flags)
            .map_err(kernel_err(map, "reading the old map"))?;
        let old_value = self.old_value(map, value, found.then_some(&current[..]))?;
        self.old
            .update(&ok, &old_value, flags)
            .map_err(kernel_err(map, "writing the old map"))?;
        if let Some(new) = &self.new {
            new.update(key, value, flags)
                .map_err(kernel_err(map, "writing the new map"))?;
        }
        self.remember(
            key,
            Pending {
                new: Some(value.to_vec()),
                old: Some(old_value),
            },
        );
        Ok(())
    }

    fn delete(&mut self, map: &str, key: &[u8]) -> Result<bool, Error> {
        let ok = self.old_key(map, key)?;
        let mut had = self
            .old
            .delete(&ok)
            .map_err(kernel_err(map, "deleting from the old map"))?;
        if let Some(new) = &self.new {
            had |= new
                .delete(key)
                .map_err(kernel_err(map, "deleting from the new map"))?;
        }
        self.remember(
            key,
            Pending {
                new: None,
                old: None,
            },
        );
        Ok(had)
    }

    fn remember(&mut self, key: &[u8], p: Pending) {
        if self.replayed {
            self.after_replay.insert(key.to_vec());
        } else {
            self.pending.insert(key.to_vec(), p);
        }
    }

    /// Phase 2 to 3: the remembered writes into the new map, merged with what the old
    /// programs changed since each.
    fn replay(&mut self, map: &str) -> Result<usize, Error> {
        let Some(new) = self.new.clone() else {
            return Ok(0);
        };
        let patcher = UserPatcher::new(new.as_ref(), map, self.fields.clone(), self.lock);
        let flags = self.flags();
        let cpus = if self.conversion.per_cpu {
            self.conversion.cpus
        } else {
            1
        };
        let mut current = vec![0u8; self.old.geometry().value_len];
        let mut n = 0;
        for (key, p) in std::mem::take(&mut self.pending) {
            let ok = self.old_key(map, &key)?;
            let found = self
                .old
                .lookup(&ok, &mut current, flags)
                .map_err(kernel_err(map, "reading the old map"))?;
            match (p.new, p.old, found) {
                (Some(value), Some(written), true) => {
                    new.update(&key, &value, flags)
                        .map_err(kernel_err(map, "writing the new map"))?;
                    let base = self
                        .conversion
                        .value(map, &written)
                        .map_err(data_err(map))?;
                    let now = self
                        .conversion
                        .value(map, &current)
                        .map_err(data_err(map))?;
                    let mut conflicts = crate::migrate::Conflicts::default();
                    let patch =
                        merge_value(&self.fields, cpus, &base, &now, &value, &mut conflicts);
                    // A patch the new programs overtook (Outcome::Changed) leaves
                    // their write: it is newer than both.
                    if !patch.is_empty() {
                        patcher.apply(&key, &patch).map_err(data_err(map))?;
                    }
                }
                // Deleted since, by the write or by the old programs.
                (_, _, false) => {
                    new.delete(&key)
                        .map_err(kernel_err(map, "deleting from the new map"))?;
                }
                // Deleted by the write and created again by the old programs: the
                // delta passes carried their entry.
                _ => {}
            }
            n += 1;
        }
        self.replayed = true;
        Ok(n)
    }
}

impl MapWriter {
    pub(crate) fn new(key: &str, target: Target) -> Self {
        Self {
            key: key.to_owned(),
            target: Arc::new(Mutex::new(target)),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Target> {
        self.target.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The map's key in the set.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Writes `value` at `key` (new layout), in both maps while a migration runs.
    ///
    /// # Errors
    /// A map refuses, or the key or value is not of the map's sizes (a per-CPU
    /// value: one slot per possible CPU).
    pub fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let mut t = self.lock();
        match &mut *t {
            Target::Map(m, lock) => m
                .update(
                    key,
                    value,
                    if *lock {
                        UpdateFlags::LOCK
                    } else {
                        UpdateFlags::ANY
                    },
                )
                .map_err(kernel_err(&self.key, "writing the map")),
            Target::Migrating(m) => {
                self.check(m, key, value)?;
                m.put(&self.key, key, value)
            }
        }
    }

    /// Deletes `key` (new layout) from both maps while a migration runs; whether
    /// either had it.
    ///
    /// # Errors
    /// As [`MapWriter::insert`].
    pub fn remove(&self, key: &[u8]) -> Result<bool, Error> {
        let mut t = self.lock();
        match &mut *t {
            Target::Map(m, _) => m
                .delete(key)
                .map_err(kernel_err(&self.key, "deleting from the map")),
            Target::Migrating(m) => {
                self.check(m, key, &[])?;
                m.delete(&self.key, key)
            }
        }
    }

    fn check(&self, m: &Migration, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let vs = m.conversion.value.new_size as usize;
        let (ks, vs) = (
            m.conversion.key.new_size as usize,
            if m.conversion.per_cpu {
                vs.next_multiple_of(8) * m.conversion.cpus
            } else {
                vs
            },
        );
        if key.len() != ks || (!value.is_empty() && value.len() != vs) {
            return Err(Error::Size {
                map: self.key.clone(),
                what: if key.len() == ks { "value" } else { "key" },
                actual: if key.len() == ks {
                    value.len()
                } else {
                    key.len()
                },
                expected: if key.len() == ks { vs } else { ks },
            });
        }
        Ok(())
    }

    /// Phase 1 to 2: the new map exists.
    pub(crate) fn start_dual(&self, new: Arc<dyn MapAccess>) {
        if let Target::Migrating(m) = &mut *self.lock() {
            m.new = Some(new);
        }
    }

    /// Phase 2 to 3; the writes replayed.
    pub(crate) fn replay(&self) -> Result<usize, Error> {
        match &mut *self.lock() {
            Target::Migrating(m) => m.replay(&self.key),
            Target::Map(..) => Ok(0),
        }
    }

    /// The new keys the reconcile leaves as the new map has them.
    pub(crate) fn written_after_replay(&self) -> HashSet<Vec<u8>> {
        match &*self.lock() {
            Target::Migrating(m) => m.after_replay.clone(),
            Target::Map(..) => HashSet::new(),
        }
    }

    /// The end of a migration: one map from now on.
    pub(crate) fn settle(&self, map: Arc<dyn MapAccess>) {
        let mut t = self.lock();
        let lock = match &*t {
            Target::Migrating(m) => m.new_lock,
            Target::Map(_, lock) => *lock,
        };
        *t = Target::Map(map, lock);
    }

    /// After a rolled back migration: the old map only, through the reverse
    /// conversion, as before the upgrade.
    pub(crate) fn abandon(&self) {
        if let Target::Migrating(m) = &mut *self.lock() {
            m.new = None;
            m.pending.clear();
            m.after_replay.clear();
            m.replayed = false;
        }
    }
}
