//! Step 2 of an upgrade: copy every entry of the old map into the new one, converted,
//! recording the merge base as it goes.
//!
//! Three stages overlap: a reader thread walks the old map, by batches at first and,
//! once the walk has passed its first batches, through a generated program where the
//! map allows one ([`super::read_prog`]), which spares the batch lookup's per-bucket
//! locking and copies to user space; the calling thread converts each chunk with the
//! compiled [`Conversion`] and records it in the [`MergeBase`] file; writer threads,
//! fed through bounded channels, put the converted entries into the new map: by batch
//! at first, and past the first batches through a generated program where the map
//! allows one ([`super::write_prog`]), which spares the batch command's copy from user
//! space of each key and value. A read program's pass fills its carrier at once, so
//! the conversion has a thread of its own that works through the chunks already read
//! while the next pass runs. With more than one writer each takes the keys
//! whose hash falls in its share, in the walk's order, so a key the walk returned
//! twice ends with the value read last, as the base records it, however the writers
//! interleave. Every buffer goes back to its stage for reuse: nothing is allocated
//! per entry or per chunk once the pipeline runs, and memory stays bounded by the
//! channel depth times the chunk size, plus the base's index.
//!
//! A pass of the read program can miss an entry that programs moved while the copy
//! ran; the delta pass that follows every copy of an upgrade walks by batch and
//! carries it, as it carries every entry written during the copy.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::access::MapAccess;
use super::base::{BaseShape, BaseWriter, MergeBase};
use super::conversion::{Compiled, Conversion};
use super::digest::{hash_key_and_entry_keeping, hash64};
use super::error::{MigrateError, between_batches};
use super::walk::{Chunk, Walker, walk_overlapped_by};
use super::write::Writer;
use super::write_prog::{self, ProgWriter};

/// How a copy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOptions {
    /// Values hold a `bpf_spin_lock`: read and write them with `BPF_F_LOCK`.
    pub lock: bool,
    /// Entries per batch to start with (grown on `ENOSPC`).
    pub chunk: usize,
    /// Chunks in flight between two stages.
    pub depth: usize,
    /// Threads writing the new map (at most [`MAX_WRITERS`]): each takes the keys
    /// of its share of the key hashes, so that one key's writes keep their order.
    /// One by default: the reading thread and one writer already fill two CPUs, and
    /// a kernel's hash-map update gains little from a second writer on the same map.
    pub writers: usize,
    /// A failpoint evaluated before each batch is converted (crash tests).
    pub batch_point: Option<&'static str>,
    /// Whether a large hash map may be read and written by generated programs
    /// ([`super::read_prog`], [`super::write_prog`]). Off for values holding fields
    /// the kernel manages (kptrs, timers, list heads): a program would read a kptr as
    /// the raw pointer where the batch lookup reads zeroes, and the verifier refuses
    /// its plain loads and stores of the others.
    pub programs: bool,
}

/// Entries per batch a copy starts with: large batches cost fewer syscalls, and
/// the buffers in flight stay a few MiB for typical entry sizes.
pub const COPY_CHUNK: usize = 16 * 1024;

/// The most writer threads a copy runs.
pub const MAX_WRITERS: usize = 8;

impl Default for CopyOptions {
    fn default() -> Self {
        Self {
            lock: false,
            chunk: COPY_CHUNK,
            depth: 4,
            writers: 1,
            batch_point: None,
            programs: true,
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
    /// Entries a generated program read (module `migrate::read_prog`) rather than the
    /// batch command.
    pub read_by_program: usize,
    /// Whether the new map was written by batch (else key by key).
    pub written_by_batch: bool,
    /// Entries a generated program wrote (see [`ProgramWrites`]) rather than the
    /// batch command.
    pub written_by_program: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Time each stage of the pipeline spent working (not waiting on the others).
    pub stages: StageTimes,
}

/// Busy time per stage of the copy's pipeline: the stage whose time is closest to
/// [`CopyReport::elapsed`] is the one that bounds the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StageTimes {
    /// Batch lookups in the old map.
    pub read: Duration,
    /// Conversion and the merge base (records, digests, file writes).
    pub convert: Duration,
    /// Batch updates of the new map (the busiest writer).
    pub write: Duration,
    /// Closing the base: its index sorted and deduplicated, the file synced.
    pub finish: Duration,
}

/// Copies every entry of `old` into `new` through `conversion`, and writes the merge
/// base of map `name` into `state_dir` (fsynced before this returns). Of a map that
/// programs change meanwhile, a [`delta_pass`](super::delta_pass) carries what
/// changed, and what the copy missed (see the module documentation).
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
    let compiled = Compiled::new(name, conversion)?;
    let mut base = BaseWriter::create(state_dir, name, shape, og.max_entries as usize)?;
    let writer = Writer::new(new, name, options.lock);
    let depth = options.depth.max(1);
    let writers = options.writers.clamp(1, MAX_WRITERS);
    let run = write_prog::run_for(&ng, options.lock).filter(|_| options.programs);
    // New chunks go from the walk to each writer, and back empty. Each lane has `depth`
    // buffers in flight plus one being filled, all allocated once.
    let mut lanes = Vec::with_capacity(writers);
    let mut lane_ends = Vec::with_capacity(writers);
    for _ in 0..writers {
        let (tx, rx) = mpsc::sync_channel::<Chunk>(depth);
        let (free_tx, free_rx) = mpsc::channel::<Chunk>();
        for _ in 0..=depth {
            let _ = free_tx.send(Chunk::default());
        }
        lanes.push((tx, free_rx));
        lane_ends.push((rx, free_tx));
    }
    let mut read = 0usize;
    let mut converting = Duration::ZERO;
    let (walked, finishing, writer_results) = std::thread::scope(|s| {
        let writer = &writer;
        let handles: Vec<_> = lane_ends
            .into_iter()
            .map(|(rx, free_tx)| {
                s.spawn(move || -> Result<(Duration, usize), MigrateError> {
                    let mut busy = Duration::ZERO;
                    let mut by_program = ProgramWrites::new(new, name, run);
                    for chunk in &rx {
                        if chunk.len > 0 {
                            let t = Instant::now();
                            by_program.write(writer, &chunk)?;
                            busy += t.elapsed();
                        }
                        // The converter may have finished and gone: nothing to hand
                        // back to.
                        let _ = free_tx.send(chunk);
                    }
                    Ok((busy, by_program.written))
                })
            })
            .collect();
        let mut outs: Vec<Chunk> = Vec::with_capacity(writers);
        let each = |chunk: &Chunk| {
            between_batches(options.batch_point)?;
            read += chunk.len;
            outs.clear();
            for (_, free_rx) in &lanes {
                let Ok(out) = free_rx.recv() else {
                    // A writer stopped on an error, which its join reports.
                    return Ok(false);
                };
                outs.push(out);
            }
            let t = Instant::now();
            convert_chunk(name, &compiled, &mut base, chunk, &mut outs)?;
            converting += t.elapsed();
            for ((tx, _), out) in lanes.iter().zip(outs.drain(..)) {
                if tx.send(out).is_err() {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        let mut walker = Walker::new(old, name, options.chunk, options.lock);
        if options.programs {
            walker = walker.by_program();
        }
        let walked = walk_overlapped_by(walker, depth, each);
        // Dropping the lanes ends each writer after its last chunk.
        drop(lanes);
        // The base is closed (index sorted, file synced) while the writers put the
        // last chunks in: it is the copy's record of what was read, complete once the
        // walk is. A writer that fails after this still fails the copy, whose step
        // the journal then does not count as done, so the base is never trusted.
        let t = Instant::now();
        let walked = walked.and_then(|w| Ok((w, base.finish()?)));
        let finishing = t.elapsed();
        let writer_results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        (walked, finishing, writer_results)
    });
    // A writer's error is the cause of a walk that stopped early: report it first.
    let (mut writing, mut written_by_program) = (Duration::ZERO, 0);
    for r in writer_results {
        let (busy, by_program) = joined(r)?;
        writing = writing.max(busy);
        written_by_program += by_program;
    }
    let ((how, reading), base) = walked?;
    let stages = StageTimes {
        read: reading,
        convert: converting,
        write: writing,
        finish: finishing,
    };
    let copied = base.len();
    Ok((
        base,
        CopyReport {
            copied,
            read,
            duplicates: read.saturating_sub(copied),
            read_by_batch: how.batched,
            read_by_program: how.by_program,
            written_by_batch: writer.batched(),
            written_by_program,
            elapsed: start.elapsed(),
            stages,
        },
    ))
}

/// Entries a writer thread puts in by batch before it loads a program to write the
/// rest (see [`super::write_prog`]): smaller copies do not repay the load.
const PROGRAM_AFTER: usize = 16 * 1024;

/// One writer thread's way of writing: by batch at first, then, once the copy has
/// shown itself large, through a generated program where the map allows one, and by
/// batch again for whatever the program left (a refused entry, whose error the batch
/// command then reports; or the program's load refused).
struct ProgramWrites<'m> {
    map: &'m dyn MapAccess,
    name: &'m str,
    run: Option<usize>,
    by_batch: usize,
    program: Option<ProgWriter>,
    written: usize,
}

impl<'m> ProgramWrites<'m> {
    fn new(map: &'m dyn MapAccess, name: &'m str, run: Option<usize>) -> Self {
        Self {
            map,
            name,
            run,
            by_batch: 0,
            program: None,
            written: 0,
        }
    }

    fn write(&mut self, writer: &Writer<'_>, chunk: &Chunk) -> Result<(), MigrateError> {
        if self.by_batch >= PROGRAM_AFTER
            && let Some(run) = self.run.take()
            && let Some(kernel_map) = self.map.kernel_map()
        {
            match ProgWriter::new(kernel_map, self.name, run) {
                Ok(p) => self.program = Some(p),
                Err(e) => tracing::debug!(map = self.name, error = %e, "writing by batch"),
            }
        }
        let mut done = 0;
        if let Some(p) = &mut self.program {
            match p.write(self.name, &chunk.keys, &chunk.values) {
                Ok(n) => done = n,
                Err(e) => {
                    // Written again from the start by batch: the same values in the
                    // same order, so nothing changes twice.
                    tracing::debug!(map = self.name, error = %e, "writing by batch");
                    self.program = None;
                }
            }
        }
        self.written += done;
        if done < chunk.len {
            let (ks, vl) = (
                chunk.keys.len() / chunk.len.max(1),
                chunk.values.len() / chunk.len.max(1),
            );
            writer.update(
                chunk.keys.get(done * ks..).unwrap_or_default(),
                chunk.values.get(done * vl..).unwrap_or_default(),
            )?;
            self.by_batch += chunk.len - done;
        }
        Ok(())
    }
}

/// A thread's result, its panic carried on.
pub(super) fn joined<T>(r: std::thread::Result<T>) -> T {
    r.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Converts one chunk of old entries into the writers' chunks `outs`, each key into
/// the one its hash picks, and records each entry in the base.
fn convert_chunk(
    name: &str,
    compiled: &Compiled,
    base: &mut BaseWriter,
    chunk: &Chunk,
    outs: &mut [Chunk],
) -> Result<(), MigrateError> {
    let (ks, vl) = (
        chunk.keys.len().checked_div(chunk.len).unwrap_or(0),
        chunk.values.len().checked_div(chunk.len).unwrap_or(0),
    );
    let (nks, nvl) = (compiled.new_key_size(), compiled.new_value_len);
    for out in outs.iter_mut() {
        out.len = 0;
        out.keys.clear();
        out.values.clear();
    }
    let lanes = outs.len().max(1) as u64;
    let seed = base.seed();
    // Where the key, or the key and the value, are carried byte for byte, the new
    // digest shares the old one's pass: the same bytes hash the same.
    let (same_key, same_entry) = compiled.identities();
    for (k, v) in chunk
        .keys
        .chunks_exact(ks.max(1))
        .zip(chunk.values.chunks_exact(vl.max(1)))
    {
        let (key_hash, old_digest, after_key) = hash_key_and_entry_keeping(seed, k, v, same_key);
        // The high bits pick the lane (the index sorts by the whole hash).
        let lane = usize::try_from(((key_hash >> 32) * lanes) >> 32).unwrap_or(0);
        let Some(out) = outs.get_mut(lane) else {
            continue;
        };
        let (k0, v0) = (out.keys.len(), out.values.len());
        // Zeroed room, overwritten whole by the conversion.
        out.keys.resize(k0 + nks, 0);
        out.values.resize(v0 + nvl, 0);
        let (nk, nv) = (
            out.keys.get_mut(k0..).unwrap_or_default(),
            out.values.get_mut(v0..).unwrap_or_default(),
        );
        compiled.key_into(name, k, nk)?;
        compiled.value_into(name, v, nv)?;
        let new_digest = match after_key {
            _ if same_entry => old_digest,
            Some(mut h) => {
                h.write(nv);
                h.finish()
            }
            None => hash64(seed, &[nk, nv]),
        };
        debug_assert_eq!(new_digest, hash64(seed, &[nk, nv]), "map {name}");
        out.len += 1;
        base.push_hashed(k, v, key_hash, old_digest, new_digest)?;
    }
    Ok(())
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
