//! [`FakeMap`]: an in-memory [`MapAccess`] that behaves like a kernel map written by
//! running programs, for tests without privileges.
//!
//! Entries live in a `BTreeMap`. Batch lookups walk simulated hash buckets (a key's
//! bucket is a hash of its bytes), return whole buckets only and fail with `ENOSPC`
//! when the next bucket does not fit the buffer, as the kernel's hash maps do. Arrays
//! hold every index from the start, refuse deletes, and walk in index order. A
//! writer hook runs before every call, so a test can change the map between the calls
//! of a copy exactly as a program would; a duplicate knob makes batch walks return a
//! key again in a later batch, as walks over buckets that programs change can.

use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;

use super::access::{Cursor, Geometry, MapAccess, Partial};
use super::sys::{Error, MapType, UpdateFlags};

/// The entries of a [`FakeMap`].
pub type FakeEntries = BTreeMap<Vec<u8>, Vec<u8>>;

/// A hook run before every call on a [`FakeMap`], with its entries.
pub type WriterHook = Box<dyn FnMut(&mut FakeEntries) + Send>;

/// An in-memory map; see the module documentation.
pub struct FakeMap {
    geometry: Geometry,
    state: Mutex<State>,
}

impl std::fmt::Debug for FakeMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeMap")
            .field("geometry", &self.geometry)
            .finish_non_exhaustive()
    }
}

struct State {
    entries: FakeEntries,
    buckets: u32,
    batch: bool,
    spin_lock: bool,
    duplicate_every: Option<usize>,
    writer: Option<WriterHook>,
    stats: FakeStats,
}

/// What a [`FakeMap`] was asked to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FakeStats {
    /// Batch lookups, including refused ones.
    pub lookup_batches: usize,
    /// Batch lookups that failed with `ENOSPC`.
    pub enospc: usize,
    /// Batch updates.
    pub update_batches: usize,
    /// Batch deletes.
    pub delete_batches: usize,
    /// Single-element calls (lookup, update, delete, next key).
    pub single: usize,
    /// Calls that carried `BPF_F_LOCK`.
    pub locked: usize,
}

fn errno(command: &'static str, e: i32) -> Error {
    Error::Syscall {
        command,
        object: "fake map".to_owned(),
        source: io::Error::from_raw_os_error(e),
    }
}

const ENOTSUPP: i32 = 524;

/// FNV-1a: a stable bucket for a key.
fn bucket_of(key: &[u8], buckets: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    h % buckets.max(1)
}

fn is_array(t: MapType) -> bool {
    matches!(t, MapType::Array | MapType::PercpuArray)
}

impl FakeMap {
    /// An empty map of `geometry` (arrays: every index present, zeroed), with batch
    /// commands, and as many hash buckets as the capacity rounded up to a power of two
    /// (the kernel's sizing).
    #[must_use]
    pub fn new(geometry: Geometry) -> Self {
        let mut entries = BTreeMap::new();
        if is_array(geometry.map_type) {
            for i in 0..geometry.max_entries {
                // Array keys are native u32 indexes; the BTreeMap orders them by
                // big-endian bytes below, so the walk follows the index order.
                entries.insert(i.to_ne_bytes().to_vec(), vec![0u8; geometry.value_len]);
            }
        }
        Self {
            geometry,
            state: Mutex::new(State {
                entries,
                buckets: geometry.max_entries.max(1).next_power_of_two(),
                batch: true,
                spin_lock: false,
                duplicate_every: None,
                writer: None,
                stats: FakeStats::default(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the number of simulated hash buckets (few buckets: large buckets, so small
    /// batch buffers meet `ENOSPC`).
    #[must_use]
    pub fn with_buckets(self, buckets: u32) -> Self {
        self.state().buckets = buckets.max(1);
        self
    }

    /// Refuses every batch command with `EINVAL`, as kernels before 5.6 do.
    #[must_use]
    pub fn without_batch(self) -> Self {
        self.state().batch = false;
        self
    }

    /// Values carry a `bpf_spin_lock`: `BPF_F_LOCK` is accepted (and otherwise
    /// refused with `EINVAL`, as the kernel does).
    #[must_use]
    pub fn with_spin_lock(self) -> Self {
        self.state().spin_lock = true;
        self
    }

    /// Every `n`th batch lookup also returns the last key of the previous batch again.
    #[must_use]
    pub fn with_duplicates_every(self, n: usize) -> Self {
        self.state().duplicate_every = Some(n.max(1));
        self
    }

    /// Runs `writer` on the entries before every later call.
    pub fn set_writer(&self, writer: impl FnMut(&mut FakeEntries) + Send + 'static) {
        self.state().writer = Some(Box::new(writer));
    }

    /// Removes the writer hook.
    pub fn clear_writer(&self) {
        self.state().writer = None;
    }

    /// Runs `f` on the entries now (no writer hook).
    pub fn with_entries<R>(&self, f: impl FnOnce(&mut FakeEntries) -> R) -> R {
        f(&mut self.state().entries)
    }

    /// A copy of the entries.
    #[must_use]
    pub fn entries(&self) -> FakeEntries {
        self.state().entries.clone()
    }

    /// What the map was asked to do so far.
    #[must_use]
    pub fn stats(&self) -> FakeStats {
        self.state().stats
    }

    /// Locks the state and runs the writer hook first, as a program would have run
    /// between two system calls.
    fn call(
        &self,
        flags: UpdateFlags,
        command: &'static str,
    ) -> Result<std::sync::MutexGuard<'_, State>, Error> {
        let mut s = self.state();
        if let Some(mut w) = s.writer.take() {
            w(&mut s.entries);
            s.writer = Some(w);
        }
        if flags.0 & UpdateFlags::LOCK.0 != 0 {
            if !s.spin_lock {
                return Err(errno(command, libc::EINVAL));
            }
            s.stats.locked += 1;
        }
        Ok(s)
    }

    fn check(&self, command: &'static str, key: &[u8], value: Option<usize>) -> Result<(), Error> {
        let ok = key.len() == self.geometry.key_size
            && value.is_none_or(|v| v == self.geometry.value_len);
        if ok {
            Ok(())
        } else {
            Err(errno(command, libc::EINVAL))
        }
    }

    fn put(
        &self,
        s: &mut State,
        key: &[u8],
        value: &[u8],
        flags: UpdateFlags,
    ) -> Result<(), Error> {
        const C: &str = "BPF_MAP_UPDATE_ELEM";
        self.check(C, key, Some(value.len()))?;
        let mode = flags.0 & !UpdateFlags::LOCK.0;
        let exists = s.entries.contains_key(key);
        if is_array(self.geometry.map_type) && !exists {
            return Err(errno(C, libc::E2BIG));
        }
        match mode {
            1 if exists => return Err(errno(C, libc::EEXIST)),
            2 if !exists => return Err(errno(C, libc::ENOENT)),
            0..=2 => {}
            _ => return Err(errno(C, libc::EINVAL)),
        }
        if !exists && s.entries.len() >= self.geometry.max_entries as usize {
            return Err(errno(C, libc::E2BIG));
        }
        s.entries.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn remove(&self, s: &mut State, key: &[u8]) -> Result<bool, Error> {
        const C: &str = "BPF_MAP_DELETE_ELEM";
        self.check(C, key, None)?;
        if is_array(self.geometry.map_type) {
            return Err(errno(C, libc::EINVAL));
        }
        Ok(s.entries.remove(key).is_some())
    }

    /// Keys in walk order from bucket `from`: (bucket, key) for hash maps; arrays and
    /// one-bucket maps walk in key order.
    fn walk_from(&self, s: &State, from: u32) -> Vec<(u32, Vec<u8>)> {
        let mut keys: Vec<(u32, Vec<u8>)> = if is_array(self.geometry.map_type) {
            s.entries
                .keys()
                .filter_map(|k| {
                    let i = u32::from_ne_bytes(k.as_slice().try_into().ok()?);
                    Some((i, k.clone()))
                })
                .collect()
        } else {
            s.entries
                .keys()
                .map(|k| (bucket_of(k, s.buckets), k.clone()))
                .collect()
        };
        keys.retain(|(b, _)| *b >= from);
        keys.sort();
        keys
    }
}

impl MapAccess for FakeMap {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn lookup_batch(
        &self,
        cursor: &mut Cursor,
        keys: &mut [u8],
        values: &mut [u8],
        flags: UpdateFlags,
    ) -> Result<usize, Error> {
        const C: &str = "BPF_MAP_LOOKUP_BATCH";
        let mut s = self.call(flags, C)?;
        s.stats.lookup_batches += 1;
        if !s.batch {
            return Err(errno(C, libc::EINVAL));
        }
        let (ks, vl) = (self.geometry.key_size, self.geometry.value_len);
        let room = keys.len().checked_div(ks).unwrap_or(0);
        if values.len() != room * vl || keys.len() != room * ks {
            return Err(errno(C, libc::EINVAL));
        }
        let (from, next) = cursor.kernel_args();
        let start = from
            .and_then(|t| t.get(..4))
            .and_then(|t| t.try_into().ok())
            .map_or(0, u32::from_ne_bytes);
        let walk = self.walk_from(&s, start);
        // Whole buckets (array: whole indexes) while they fit.
        let mut taken: Vec<Vec<u8>> = Vec::new();
        let mut i = 0;
        let mut resume = None;
        while let Some((bucket, _)) = walk.get(i) {
            let bucket = *bucket;
            let end = walk
                .iter()
                .skip(i)
                .position(|(b, _)| *b != bucket)
                .map_or(walk.len(), |p| i + p);
            if taken.len() + (end - i) > room {
                resume = Some(bucket);
                break;
            }
            taken.extend(walk.iter().take(end).skip(i).map(|(_, k)| k.clone()));
            i = end;
        }
        if taken.is_empty() && resume.is_some() {
            s.stats.enospc += 1;
            return Err(errno(C, libc::ENOSPC));
        }
        let n = s.stats.lookup_batches;
        if let Some(every) = s.duplicate_every
            && n.is_multiple_of(every)
            && taken.len() < room
            && let Some(prev) = s
                .entries
                .range(..taken.first().cloned().unwrap_or_default())
                .next_back()
                .map(|(k, _)| k.clone())
            && start > 0
        {
            taken.insert(0, prev);
        }
        for (j, key) in taken.iter().enumerate() {
            let value = s.entries.get(key).cloned().unwrap_or_default();
            if let (Some(kd), Some(vd)) = (
                keys.get_mut(j * ks..(j + 1) * ks),
                values.get_mut(j * vl..(j + 1) * vl),
            ) {
                kd.copy_from_slice(key);
                vd.copy_from_slice(&value);
            }
        }
        let done = resume.is_none();
        if let (Some(b), Some(slot)) = (resume, next.get_mut(..4)) {
            slot.copy_from_slice(&b.to_ne_bytes());
        }
        drop(s);
        cursor.advance(done);
        Ok(taken.len())
    }

    fn update_batch(&self, keys: &[u8], values: &[u8], flags: UpdateFlags) -> Result<(), Partial> {
        const C: &str = "BPF_MAP_UPDATE_BATCH";
        let mut s = self
            .call(flags, C)
            .map_err(|error| Partial { done: 0, error })?;
        s.stats.update_batches += 1;
        if !s.batch {
            return Err(Partial {
                done: 0,
                error: errno(C, libc::EINVAL),
            });
        }
        let (ks, vl) = (
            self.geometry.key_size.max(1),
            self.geometry.value_len.max(1),
        );
        for (done, (k, v)) in keys.chunks(ks).zip(values.chunks(vl)).enumerate() {
            self.put(&mut s, k, v, UpdateFlags(flags.0 & UpdateFlags::LOCK.0))
                .map_err(|error| Partial { done, error })?;
        }
        Ok(())
    }

    fn delete_batch(&self, keys: &[u8]) -> Result<(), Partial> {
        const C: &str = "BPF_MAP_DELETE_BATCH";
        let mut s = self
            .call(UpdateFlags::ANY, C)
            .map_err(|error| Partial { done: 0, error })?;
        s.stats.delete_batches += 1;
        if !s.batch {
            return Err(Partial {
                done: 0,
                error: errno(C, libc::EINVAL),
            });
        }
        if is_array(self.geometry.map_type) {
            return Err(Partial {
                done: 0,
                error: errno(C, ENOTSUPP),
            });
        }
        for (done, k) in keys.chunks(self.geometry.key_size.max(1)).enumerate() {
            if !self
                .remove(&mut s, k)
                .map_err(|error| Partial { done, error })?
            {
                return Err(Partial {
                    done,
                    error: errno(C, libc::ENOENT),
                });
            }
        }
        Ok(())
    }

    fn lookup(&self, key: &[u8], value: &mut [u8], flags: UpdateFlags) -> Result<bool, Error> {
        const C: &str = "BPF_MAP_LOOKUP_ELEM";
        let mut s = self.call(flags, C)?;
        s.stats.single += 1;
        self.check(C, key, Some(value.len()))?;
        match s.entries.get(key) {
            Some(v) => {
                value.copy_from_slice(v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn update(&self, key: &[u8], value: &[u8], flags: UpdateFlags) -> Result<(), Error> {
        let mut s = self.call(flags, "BPF_MAP_UPDATE_ELEM")?;
        s.stats.single += 1;
        self.put(&mut s, key, value, flags)
    }

    fn delete(&self, key: &[u8]) -> Result<bool, Error> {
        let mut s = self.call(UpdateFlags::ANY, "BPF_MAP_DELETE_ELEM")?;
        s.stats.single += 1;
        self.remove(&mut s, key)
    }

    fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> Result<bool, Error> {
        const C: &str = "BPF_MAP_GET_NEXT_KEY";
        let mut s = self.call(UpdateFlags::ANY, C)?;
        s.stats.single += 1;
        if next.len() != self.geometry.key_size {
            return Err(errno(C, libc::EINVAL));
        }
        // Walk order as the batch walk; a deleted start key starts over, as hash
        // maps do.
        let walk = self.walk_from(&s, 0);
        let pos = match key {
            None => 0,
            Some(k) => walk.iter().position(|(_, w)| w == k).map_or(0, |p| p + 1),
        };
        match walk.get(pos) {
            Some((_, k)) => {
                next.copy_from_slice(k);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
