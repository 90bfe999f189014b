//! Step 3 of an upgrade: delta passes while the old programs still run.
//!
//! A pass walks the old map, compares each entry with the merge base, and carries what
//! changed since the copy or the last pass into the new map: created and changed
//! entries converted and written, deleted ones deleted. The base then records the pass
//! (a segment appended and fsynced), so the final reconcile compares against what the
//! last pass carried. Nothing runs on the new map yet, so plain writes are exact here.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::access::MapAccess;
use super::base::{BaseChange, MergeBase};
use super::conversion::Conversion;
use super::copy::check_sizes;
use super::error::MigrateError;
use super::walk::{Chunk, DEFAULT_CHUNK, Walker};
use super::write::Writer;

/// What one delta pass carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeltaReport {
    /// Entries the old programs created since the last pass.
    pub created: usize,
    /// Entries they changed.
    pub changed: usize,
    /// Entries they deleted.
    pub deleted: usize,
    /// Wall time of the pass.
    pub elapsed: Duration,
}

impl DeltaReport {
    /// Entries the pass carried.
    #[must_use]
    pub fn total(&self) -> usize {
        self.created + self.changed + self.deleted
    }
}

/// Bounds of [`delta_passes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaLimits {
    /// At most this many passes.
    pub max_passes: usize,
    /// No new pass starts after this much time.
    pub max_time: Duration,
    /// Stop once a pass carries at most this many entries: the old programs write
    /// little enough for the last pass before the switch to be short.
    pub settle_at: usize,
}

impl Default for DeltaLimits {
    fn default() -> Self {
        Self {
            max_passes: 8,
            max_time: Duration::from_secs(10),
            settle_at: 64,
        }
    }
}

/// One delta pass over map `name`; `lock` reads and writes with `BPF_F_LOCK`.
///
/// # Errors
/// A map command fails, an entry cannot be converted, or the base cannot be written.
pub fn delta_pass(
    name: &str,
    old: &dyn MapAccess,
    new: &dyn MapAccess,
    conversion: &Conversion,
    base: &mut MergeBase,
    lock: bool,
) -> Result<DeltaReport, MigrateError> {
    let start = Instant::now();
    check_sizes(name, conversion, &old.geometry(), &new.geometry())?;
    let mut seen = vec![false; base.len()];
    // Changes by old key; a key the walk returns twice keeps its last value.
    let mut changes: BTreeMap<Vec<u8>, (Vec<u8>, bool)> = BTreeMap::new();
    let mut walk = Walker::new(old, name, DEFAULT_CHUNK, lock);
    let mut chunk = Chunk::default();
    let ks = old.geometry().key_size.max(1);
    let vl = old.geometry().value_len.max(1);
    while walk.next_chunk(&mut chunk)? {
        for (k, v) in chunk
            .keys
            .chunks_exact(ks)
            .zip(chunk.values.chunks_exact(vl))
        {
            match base.find(k)? {
                Some(i) => {
                    if let Some(s) = seen.get_mut(i) {
                        *s = true;
                    }
                    let same = base
                        .entries()
                        .get(i)
                        .is_some_and(|e| e.old_digest == base.old_digest(k, v));
                    if same {
                        changes.remove(k);
                    } else {
                        changes.insert(k.to_vec(), (v.to_vec(), false));
                    }
                }
                None => {
                    changes.insert(k.to_vec(), (v.to_vec(), true));
                }
            }
        }
    }
    let mut report = DeltaReport::default();
    let mut base_changes = Vec::with_capacity(changes.len());
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    for (k, (v, created)) in changes {
        let (k0, v0) = (keys.len(), values.len());
        conversion.key_into(name, &k, &mut keys)?;
        conversion.value_into(name, &v, &mut values)?;
        let nd = base.new_digest(
            keys.get(k0..).unwrap_or(&[]),
            values.get(v0..).unwrap_or(&[]),
        );
        if created {
            report.created += 1;
        } else {
            report.changed += 1;
        }
        base_changes.push(BaseChange::Put {
            key: k,
            value: v,
            new_digest: nd,
        });
    }
    let writer = Writer::new(new, name, lock);
    if !keys.is_empty() {
        writer.update(&keys, &values)?;
    }
    let mut gone = Vec::new();
    for (i, s) in seen.iter().enumerate() {
        if !s {
            let (k, _) = base.record(i)?;
            conversion.key_into(name, &k, &mut gone)?;
            base_changes.push(BaseChange::Delete { key: k });
            report.deleted += 1;
        }
    }
    if !gone.is_empty() {
        writer.delete(&gone)?;
    }
    base.append(&base_changes)?;
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Delta passes until one carries at most [`DeltaLimits::settle_at`] entries, or the
/// pass or time bound is reached; the reports of every pass. The executor runs one
/// more [`delta_pass`] right before the switch.
///
/// # Errors
/// As [`delta_pass`].
pub fn delta_passes(
    name: &str,
    old: &dyn MapAccess,
    new: &dyn MapAccess,
    conversion: &Conversion,
    base: &mut MergeBase,
    lock: bool,
    limits: &DeltaLimits,
) -> Result<Vec<DeltaReport>, MigrateError> {
    let start = Instant::now();
    let mut reports = Vec::new();
    while reports.len() < limits.max_passes && start.elapsed() < limits.max_time {
        let r = delta_pass(name, old, new, conversion, base, lock)?;
        reports.push(r);
        if r.total() <= limits.settle_at {
            break;
        }
    }
    Ok(reports)
}
