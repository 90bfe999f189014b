//! Progress of the copy step, for a caller that shows it (a progress bar on a
//! terminal): the old map's reads are counted as the copy's reader makes them, by a
//! [`MapAccess`] that forwards every call to the map it wraps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::migrate::sys::{Error as SysError, UpdateFlags};
use crate::migrate::{Cursor, Geometry, MapAccess, Partial};

/// How far the copy of one map is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyProgress {
    /// The map's key in the set.
    pub map: String,
    /// Entries read from the live map so far (a key the walk returned twice counts
    /// twice).
    pub read: u64,
    /// Entries the live map holds, where known without a walk (arrays: their
    /// capacity).
    pub total: Option<u64>,
    /// Whether the copy of this map has finished reading.
    pub done: bool,
}

/// A callback for [`CopyProgress`], called from the copy's reader thread.
pub type ProgressFn = Arc<dyn Fn(&CopyProgress) + Send + Sync>;

/// Per-element reads are reported once per this many entries, batch reads once per
/// batch.
const REPORT_EVERY: u64 = 16 * 1024;

/// A map whose reads are reported to a [`ProgressFn`].
pub(crate) struct Watched {
    inner: Arc<dyn MapAccess>,
    key: String,
    total: Option<u64>,
    read: AtomicU64,
    report: ProgressFn,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("map", &self.key)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl Watched {
    pub(crate) fn new(key: &str, inner: Arc<dyn MapAccess>, report: ProgressFn) -> Self {
        let g = inner.geometry();
        let total = matches!(
            g.map_type,
            crate::migrate::sys::MapType::Array | crate::migrate::sys::MapType::PercpuArray
        )
        .then_some(u64::from(g.max_entries));
        Self {
            inner,
            key: key.to_owned(),
            total,
            read: AtomicU64::new(0),
            report,
        }
    }

    fn add(&self, n: u64, always: bool) {
        let before = self.read.fetch_add(n, Ordering::Relaxed);
        let after = before + n;
        if always || before / REPORT_EVERY != after / REPORT_EVERY {
            self.send(after, false);
        }
    }

    fn send(&self, read: u64, done: bool) {
        (self.report)(&CopyProgress {
            map: self.key.clone(),
            read,
            total: self.total,
            done,
        });
    }

    /// Reports the end of the map's copy.
    pub(crate) fn finish(&self) {
        self.send(self.read.load(Ordering::Relaxed), true);
    }
}

impl MapAccess for Watched {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    fn kernel_map(&self) -> Option<&handover_sys::Map> {
        self.inner.kernel_map()
    }

    fn lookup_batch(
        &self,
        cursor: &mut Cursor,
        keys: &mut [u8],
        values: &mut [u8],
        flags: UpdateFlags,
    ) -> Result<usize, SysError> {
        let n = self.inner.lookup_batch(cursor, keys, values, flags)?;
        self.add(n as u64, true);
        Ok(n)
    }

    fn update_batch(&self, keys: &[u8], values: &[u8], flags: UpdateFlags) -> Result<(), Partial> {
        self.inner.update_batch(keys, values, flags)
    }

    fn delete_batch(&self, keys: &[u8]) -> Result<(), Partial> {
        self.inner.delete_batch(keys)
    }

    fn lookup(&self, key: &[u8], value: &mut [u8], flags: UpdateFlags) -> Result<bool, SysError> {
        let found = self.inner.lookup(key, value, flags)?;
        if found {
            self.add(1, false);
        }
        Ok(found)
    }

    fn update(&self, key: &[u8], value: &[u8], flags: UpdateFlags) -> Result<(), SysError> {
        self.inner.update(key, value, flags)
    }

    fn delete(&self, key: &[u8]) -> Result<bool, SysError> {
        self.inner.delete(key)
    }

    fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> Result<bool, SysError> {
        self.inner.next_key(key, next)
    }

    fn count_entries(&self) -> Result<usize, SysError> {
        self.inner.count_entries()
    }
}

/// The engine's optional [`ProgressFn`].
#[derive(Clone, Default)]
pub(crate) struct Reporter(pub(crate) Option<ProgressFn>);

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Reporter(set)"
        } else {
            "Reporter(none)"
        })
    }
}
