//! The narrow map interface the upgrade engine works through: [`MapAccess`].
//!
//! Copy, delta passes and reconcile read and write maps only through this trait, so
//! that every one of them runs unchanged against the kernel (the impl for
//! [`sys::Map`](crate::migrate::sys::Map), in `kernel.rs`) and against
//! [`FakeMap`](super::FakeMap), an in-memory map that can change between calls the way
//! a map written by running programs does.
//!
//! The trait keeps the kernel's own semantics rather than smoothing them over, because
//! the algorithms above it must handle them: a batch lookup may fail with `ENOSPC`
//! when a hash bucket does not fit the buffer, may be refused (`EINVAL`, `ENOTSUPP`)
//! by an old kernel or a map type without batches, and may return a key twice across
//! calls when programs change the map during the walk. Errors are the bpf(2) layer's
//! [`Error`], whose [`errno`](Error::errno) the callers inspect.

use std::collections::HashSet;

use super::sys::{Error, MapType, UpdateFlags};

/// The shape of a map as user space reads and writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// The map type.
    pub map_type: MapType,
    /// Bytes of one key.
    pub key_size: usize,
    /// Bytes of one value as programs see it (one CPU's value for per-CPU maps).
    pub value_size: usize,
    /// Bytes of one value as the syscalls read and write it: `value_size`, or for
    /// per-CPU maps `value_size` rounded up to 8 times the possible CPUs.
    pub value_len: usize,
    /// Number of per-CPU slots in a value (1 for maps that are not per-CPU).
    pub cpus: usize,
    /// Capacity.
    pub max_entries: u32,
}

impl Geometry {
    /// The geometry of a map of `map_type` on a machine with `possible_cpus` CPUs.
    #[must_use]
    pub fn new(
        map_type: MapType,
        key_size: usize,
        value_size: usize,
        max_entries: u32,
        possible_cpus: usize,
    ) -> Self {
        let cpus = if map_type.is_per_cpu() {
            possible_cpus.max(1)
        } else {
            1
        };
        let value_len = if cpus > 1 || map_type.is_per_cpu() {
            value_size.next_multiple_of(8) * cpus
        } else {
            value_size
        };
        Self {
            map_type,
            key_size,
            value_size,
            value_len,
            cpus,
            max_entries,
        }
    }

    /// Whether values hold one slot per possible CPU.
    #[must_use]
    pub fn per_cpu(&self) -> bool {
        self.map_type.is_per_cpu()
    }

    /// Bytes of the position a batch walk hands from one call to the next: the kernel
    /// writes a bucket index (hash maps) or a key (arrays) there.
    #[must_use]
    pub fn cursor_len(&self) -> usize {
        self.key_size.max(8)
    }
}

/// The position of a batch walk over a map, handed from one
/// [`MapAccess::lookup_batch`] call to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    token: Vec<u8>,
    next: Vec<u8>,
    started: bool,
    done: bool,
}

impl Cursor {
    /// A walk from the first entry of a map of `geometry`.
    #[must_use]
    pub fn start(geometry: &Geometry) -> Self {
        Self {
            token: vec![0; geometry.cursor_len()],
            next: vec![0; geometry.cursor_len()],
            started: false,
            done: false,
        }
    }

    /// Whether the walk has reached the end of the map.
    #[must_use]
    pub fn done(&self) -> bool {
        self.done
    }

    /// The position to pass to the kernel (`None` before the first call) and the
    /// buffer the kernel writes the next position into.
    pub fn kernel_args(&mut self) -> (Option<&[u8]>, &mut [u8]) {
        let Self {
            token,
            next,
            started,
            ..
        } = self;
        (started.then_some(token.as_slice()), next.as_mut_slice())
    }

    /// Records a successful call: the position it wrote becomes the current one, and
    /// `done` when the kernel said the walk is over.
    pub fn advance(&mut self, done: bool) {
        std::mem::swap(&mut self.token, &mut self.next);
        self.started = true;
        self.done = done;
    }
}

/// A batch write that stopped part way.
#[derive(Debug)]
pub struct Partial {
    /// Entries written (or keys deleted) before the failure.
    pub done: usize,
    /// Why it stopped.
    pub error: Error,
}

/// What the engine needs of a map: its geometry, batch and single-element
/// reads/writes/deletes with the kernel's flags and errors.
///
/// Buffers are packed: `keys` holds `n * key_size` bytes, `values` `n * value_len`
/// bytes in the same order. `flags` are the kernel's element flags:
/// [`UpdateFlags::ANY`]/[`NOEXIST`](UpdateFlags::NOEXIST)/[`EXIST`](UpdateFlags::EXIST)
/// for single updates, and [`UpdateFlags::LOCK`] (`BPF_F_LOCK`) for values with a
/// `bpf_spin_lock`, which batch lookups and updates also accept.
pub trait MapAccess: Send + Sync + std::fmt::Debug {
    /// Sizes, type and capacity.
    fn geometry(&self) -> Geometry;

    /// The kernel map behind this access, where there is one: a copy into it can then
    /// be written by a generated program (see [`super::write_prog`]).
    fn kernel_map(&self) -> Option<&super::sys::Map> {
        None
    }

    /// One batch lookup (`BPF_MAP_LOOKUP_BATCH`) from `cursor`, filling up to
    /// `keys.len() / key_size` entries; returns how many, and advances `cursor`
    /// (marking it done at the end of the map, possibly with a last few entries).
    ///
    /// # Errors
    /// `ENOSPC` with nothing read and `cursor` unchanged, when the next hash bucket
    /// holds more entries than the buffers: the caller retries with larger ones.
    /// `EINVAL`/`EOPNOTSUPP`/`ENOTSUPP` on the first call when the kernel or map type
    /// has no batch lookup: the caller falls back to [`MapAccess::next_key`].
    fn lookup_batch(
        &self,
        cursor: &mut Cursor,
        keys: &mut [u8],
        values: &mut [u8],
        flags: UpdateFlags,
    ) -> Result<usize, Error>;

    /// One batch update (`BPF_MAP_UPDATE_BATCH`, create or replace).
    ///
    /// # Errors
    /// The kernel refuses; [`Partial::done`] entries were written before it.
    fn update_batch(&self, keys: &[u8], values: &[u8], flags: UpdateFlags) -> Result<(), Partial>;

    /// One batch delete (`BPF_MAP_DELETE_BATCH`).
    ///
    /// # Errors
    /// The kernel refuses (`ENOENT` at the first missing key, `ENOTSUPP` for arrays);
    /// [`Partial::done`] keys were deleted before it.
    fn delete_batch(&self, keys: &[u8]) -> Result<(), Partial>;

    /// Reads the value of `key`; `false` when there is none.
    ///
    /// # Errors
    /// The kernel refuses.
    fn lookup(&self, key: &[u8], value: &mut [u8], flags: UpdateFlags) -> Result<bool, Error>;

    /// Writes `value` at `key`.
    ///
    /// # Errors
    /// The kernel refuses (`EEXIST`, `ENOENT`, `E2BIG` when full, ...).
    fn update(&self, key: &[u8], value: &[u8], flags: UpdateFlags) -> Result<(), Error>;

    /// Deletes `key`; `false` when there was none.
    ///
    /// # Errors
    /// The kernel refuses (`EINVAL` for arrays).
    fn delete(&self, key: &[u8]) -> Result<bool, Error>;

    /// Writes the key after `key` (the first for `None`) into `next`; `false` at the
    /// end. After a deleted `key`, hash maps start over from their first key.
    ///
    /// # Errors
    /// The kernel refuses.
    fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> Result<bool, Error>;

    /// Counts the entries by walking the keys (each counted once even when the walk
    /// starts over).
    ///
    /// # Errors
    /// As [`MapAccess::next_key`].
    fn count_entries(&self) -> Result<usize, Error> {
        let g = self.geometry();
        let mut seen = HashSet::new();
        let mut prev: Option<Vec<u8>> = None;
        let mut next = vec![0u8; g.key_size];
        let limit = (g.max_entries as usize)
            .saturating_mul(4)
            .saturating_add(16);
        let mut steps = 0usize;
        while steps < limit && self.next_key(prev.as_deref(), &mut next)? {
            steps += 1;
            seen.insert(next.clone());
            prev = Some(next.clone());
        }
        Ok(seen.len())
    }
}

/// Whether `err` says the kernel or map type lacks a batch command.
#[must_use]
pub fn batch_unsupported(err: &Error) -> bool {
    /// `ENOTSUPP`, the kernel-internal errno `BPF_DO_BATCH` returns.
    const ENOTSUPP: i32 = 524;
    matches!(err.errno(), Some(e) if e == libc::EINVAL || e == libc::EOPNOTSUPP || e == ENOTSUPP)
}
