//! Step 2 of an upgrade: copy every entry of the old map into the new one, converted,
//! recording the merge base as it goes.
//!
//! Reads and writes overlap: a reader thread walks the old map by batches into chunk
//! buffers and hands them over a bounded channel; the calling thread converts each
//! chunk, records it in the [`MergeBase`] file and writes it into the new map by
//! batch, then hands the buffers back for reuse. Memory stays bounded by the channel
//! depth times the chunk size, plus the base's index.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::access::MapAccess;
use super::base::{BaseShape, BaseWriter, MergeBase};
use super::conversion::Conversion;
use super::error::MigrateError;
use super::walk::{Chunk, DEFAULT_CHUNK, Walker};
use super::write::Writer;

/// How a copy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOptions {
    /// Values hold a `bpf_spin_lock`: read and write them with `BPF_F_LOCK`.
    pub lock: bool,
    /// Entries per batch to start with (grown on `ENOSPC`).
    pub chunk: usize,
    /// Chunks in flight between reader and writer.
    pub depth: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self {
            lock: false,
            chunk: DEFAULT_CHUNK,
            depth: 4,
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyReport {
    /// Distinct keys carried (the base's size).
    pub copied: usize,
    /// Entries read, counting a key the walk returned twice twice.
    pub read: usize,
    /// Keys the walk returned more than once (changed during the walk); the last
    /// value read was kept.
    pub duplicates: usize,
    /// Whether the old map was read by batch (else key by key).
    pub read_by_batch: bool,
    /// Whether the new map was written by batch (else key by key).
    pub written_by_batch: bool,
    /// Wall time.
    pub elapsed: Duration,
}

/// Copies every entry of `old` into `new` through `conversion`, and writes the merge
/// base of map `name` into `state_dir` (fsynced before this returns).
///
/// # Errors
/// A map command fails, an entry cannot be converted, or the base cannot be written;
/// the new map then holds part of the entries and the base is not committed.
pub fn copy_map(
    name: &str,
    old: &dyn MapAccess,
    new: &dyn MapAccess,
    conversion: &Conversion,
    state_dir: &Path,
    options: &CopyOptions,
) -> Result<(MergeBase, CopyReport), MigrateError> {
    let start = Instant::now();
    let (og, ng) = (old.geometry(), new.geometry());
    check_sizes(name, conversion, &og, &ng)?;
    let shape = BaseShape {
        key_size: og.key_size,
        value_len: og.value_len,
        new_key_size: ng.key_size,
        new_value_len: ng.value_len,
    };
    let mut base = BaseWriter::create(state_dir, name, shape, og.max_entries as usize)?;
    let writer = Writer::new(new, name, options.lock);
    let depth = options.depth.max(1);
    let (full_tx, full_rx) = mpsc::sync_channel::<Chunk>(depth);
    let (empty_tx, empty_rx) = mpsc::channel::<Chunk>();
    for _ in 0..depth + 1 {
        let _ = empty_tx.send(Chunk::default());
    }
    let mut read = 0usize;
    let (reader_result, write_result) = std::thread::scope(|s| {
        let reader = s.spawn(move || -> Result<bool, MigrateError> {
            let mut walk = Walker::new(old, name, options.chunk, options.lock);
            while let Ok(mut chunk) = empty_rx.recv() {
                if !walk.next_chunk(&mut chunk)? {
                    break;
                }
                if full_tx.send(chunk).is_err() {
                    break;
                }
            }
            Ok(walk.batched)
        });
        let mut keys = Vec::new();
        let mut values = Vec::new();
        let mut result = Ok(());
        for chunk in &full_rx {
            read += chunk.len;
            if let Err(e) = write_chunk(
                name,
                conversion,
                &writer,
                &mut base,
                &chunk,
                &mut keys,
                &mut values,
            ) {
                result = Err(e);
                break;
            }
            let _ = empty_tx.send(chunk);
        }
        // Dropping the receivers ends the reader at its next send.
        drop(full_rx);
        drop(empty_tx);
        (reader.join(), result)
    });
    let read_by_batch = match reader_result {
        Ok(r) => r?,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    write_result?;
    let base = base.finish()?;
    let copied = base.len();
    Ok((
        base,
        CopyReport {
            copied,
            read,
            duplicates: read.saturating_sub(copied),
            read_by_batch,
            written_by_batch: writer.batched(),
            elapsed: start.elapsed(),
        },
    ))
}

fn write_chunk(
    name: &str,
    conversion: &Conversion,
    writer: &Writer<'_>,
    base: &mut BaseWriter,
    chunk: &Chunk,
    keys: &mut Vec<u8>,
    values: &mut Vec<u8>,
) -> Result<(), MigrateError> {
    keys.clear();
    values.clear();
    let og = writer.map.geometry();
    let ks = conversion.key.old_size as usize;
    let vl = chunk.values.len().checked_div(chunk.len).unwrap_or(0);
    let _ = og;
    let nks = conversion.key.new_size as usize;
    for (k, v) in chunk
        .keys
        .chunks_exact(ks.max(1))
        .zip(chunk.values.chunks_exact(vl.max(1)))
    {
        let (k0, v0) = (keys.len(), values.len());
        conversion.key_into(name, k, keys)?;
        conversion.value_into(name, v, values)?;
        let nd = super::digest::hash64(
            base.seed(),
            &[
                keys.get(k0..).unwrap_or(&[]),
                values.get(v0..).unwrap_or(&[]),
            ],
        );
        base.push(k, v, nd)?;
        debug_assert_eq!(keys.len() - k0, nks);
    }
    writer.update(keys, values)
}

/// Checks that the conversion's sizes are the maps' sizes.
pub(crate) fn check_sizes(
    name: &str,
    c: &Conversion,
    og: &super::access::Geometry,
    ng: &super::access::Geometry,
) -> Result<(), MigrateError> {
    let pairs = [
        ("old key", c.key.old_size as usize, og.key_size),
        ("new key", c.key.new_size as usize, ng.key_size),
        ("old value", c.value.old_size as usize, og.value_size),
        ("new value", c.value.new_size as usize, ng.value_size),
    ];
    for (what, plan, map) in pairs {
        if plan != map {
            return Err(MigrateError::Invalid {
                map: name.to_owned(),
                reason: format!(
                    "the conversion expects a {what} of {plan} bytes, the map's is {map}: the plan was made for other maps"
                ),
            });
        }
    }
    if og.per_cpu() != ng.per_cpu() || c.per_cpu != og.per_cpu() {
        return Err(MigrateError::Invalid {
            map: name.to_owned(),
            reason: "per-CPU and shared values cannot be converted into each other".to_owned(),
        });
    }
    Ok(())
}
