//! Reading a whole map in chunks: batch lookups whose buffer grows on `ENOSPC`, and a
//! key-by-key walk where the kernel or map type has no batch lookup.

use super::access::{Cursor, Geometry, MapAccess, batch_unsupported};
use super::error::{MigrateError, kernel};
use super::sys::UpdateFlags;

/// Entries per chunk to start with.
pub const DEFAULT_CHUNK: usize = 4096;

/// Entries the first batch of a walk asks for.
const FIRST_CHUNK: usize = 1024;

/// A chunk of entries, packed as the syscalls take them.
#[derive(Debug, Default)]
pub struct Chunk {
    /// Keys, back to back.
    pub keys: Vec<u8>,
    /// Values, back to back.
    pub values: Vec<u8>,
    /// Number of entries.
    pub len: usize,
}

enum Mode {
    Batch { cursor: Cursor, first: bool },
    PerElement { prev: Option<Vec<u8>>, steps: usize },
}

/// A walk over every entry of a map.
pub(crate) struct Walker<'m> {
    map: &'m dyn MapAccess,
    name: &'m str,
    g: Geometry,
    /// Entries the next batch asks for.
    chunk: usize,
    /// Entries a batch asks for once the walk is under way.
    target: usize,
    flags: UpdateFlags,
    mode: Mode,
    done: bool,
    /// Whether batch lookups served the walk.
    pub batched: bool,
}

impl<'m> Walker<'m> {
    pub(crate) fn new(map: &'m dyn MapAccess, name: &'m str, chunk: usize, lock: bool) -> Self {
        let g = map.geometry();
        let target = chunk.clamp(1, (g.max_entries as usize).max(1));
        Self {
            map,
            name,
            // The first batches are small, so that the stage after the walk starts
            // at once, and double up to `target`.
            chunk: target.min(FIRST_CHUNK),
            target,
            flags: if lock {
                UpdateFlags::LOCK
            } else {
                UpdateFlags::ANY
            },
            mode: Mode::Batch {
                cursor: Cursor::start(&g),
                first: true,
            },
            g,
            done: false,
            batched: true,
        }
    }

    /// Fills `out` with the next entries; `false` once the map is exhausted.
    pub(crate) fn next_chunk(&mut self, out: &mut Chunk) -> Result<bool, MigrateError> {
        let (ks, vl) = (self.g.key_size, self.g.value_len);
        out.len = 0;
        while !self.done {
            match &mut self.mode {
                Mode::Batch { cursor, first } => {
                    out.keys.resize(self.chunk * ks, 0);
                    out.values.resize(self.chunk * vl, 0);
                    match self
                        .map
                        .lookup_batch(cursor, &mut out.keys, &mut out.values, self.flags)
                    {
                        Ok(n) => {
                            *first = false;
                            // `target` is never below `chunk`: growing on ENOSPC
                            // raises both.
                            self.chunk = self.chunk.saturating_mul(2).min(self.target);
                            self.done = cursor.done();
                            if n > 0 {
                                out.keys.truncate(n * ks);
                                out.values.truncate(n * vl);
                                out.len = n;
                                return Ok(true);
                            }
                        }
                        Err(e)
                            if e.errno() == Some(libc::ENOSPC)
                                && self.chunk < self.g.max_entries as usize =>
                        {
                            // A bucket holds more entries than the buffer: grow it.
                            self.chunk = self
                                .chunk
                                .saturating_mul(2)
                                .min(self.g.max_entries as usize);
                            self.target = self.target.max(self.chunk);
                        }
                        Err(e) if *first && batch_unsupported(&e) => {
                            self.batched = false;
                            self.mode = Mode::PerElement {
                                prev: None,
                                steps: 0,
                            };
                        }
                        Err(e) => return Err(kernel(self.name, "reading entries by batch")(e)),
                    }
                }
                Mode::PerElement { prev, steps } => {
                    out.keys.clear();
                    out.values.clear();
                    let mut next = vec![0u8; ks];
                    let mut value = vec![0u8; vl];
                    let limit = (self.g.max_entries as usize)
                        .saturating_mul(4)
                        .saturating_add(16);
                    while out.len < self.target {
                        let more = self
                            .map
                            .next_key(prev.as_deref(), &mut next)
                            .map_err(kernel(self.name, "listing keys"))?;
                        *steps += 1;
                        if !more || *steps > limit {
                            // Past the limit the keys change faster than they can be
                            // listed; what was read is kept and the next pass catches
                            // the rest.
                            self.done = true;
                            break;
                        }
                        // A key deleted since it was listed is skipped.
                        if self
                            .map
                            .lookup(&next, &mut value, self.flags)
                            .map_err(kernel(self.name, "reading an entry"))?
                        {
                            out.keys.extend_from_slice(&next);
                            out.values.extend_from_slice(&value);
                            out.len += 1;
                        }
                        *prev = Some(next.clone());
                    }
                    if out.len > 0 {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }
}

/// Walks every entry of `map` on the calling thread, calling `each` on every chunk
/// as soon as it is read: for a caller whose work per chunk is small next to the
/// read, where a thread hop per chunk costs more than it overlaps. Returns whether
/// batch lookups served the walk and the time spent reading.
///
/// # Errors
/// The walk fails, or `each` does.
pub(crate) fn walk_inline(
    map: &dyn MapAccess,
    name: &str,
    chunk: usize,
    lock: bool,
    mut each: impl FnMut(&Chunk) -> Result<bool, MigrateError>,
) -> Result<(bool, std::time::Duration), MigrateError> {
    let mut walk = Walker::new(map, name, chunk, lock);
    let mut c = Chunk::default();
    let mut busy = std::time::Duration::ZERO;
    loop {
        let t = std::time::Instant::now();
        let more = walk.next_chunk(&mut c)?;
        busy += t.elapsed();
        if !more || !each(&c)? {
            break;
        }
    }
    Ok((walk.batched, busy))
}

/// Walks every entry of `map` on a reader thread, `depth` chunks ahead, and calls
/// `each` on the calling thread for every chunk in the walk's order; `each` returns
/// `false` to stop early. Returns whether batch lookups served the walk and the time
/// the reader spent reading.
///
/// # Errors
/// The walk fails, or `each` does.
pub(crate) fn walk_overlapped(
    map: &dyn MapAccess,
    name: &str,
    chunk: usize,
    lock: bool,
    depth: usize,
    mut each: impl FnMut(&Chunk) -> Result<bool, MigrateError>,
) -> Result<(bool, std::time::Duration), MigrateError> {
    let depth = depth.max(1);
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Chunk>(depth);
    let (free_tx, free_rx) = std::sync::mpsc::channel::<Chunk>();
    for _ in 0..=depth {
        let _ = free_tx.send(Chunk::default());
    }
    let (reader, result) = std::thread::scope(|s| {
        let reader = s.spawn(
            move || -> Result<(bool, std::time::Duration), MigrateError> {
                let mut walk = Walker::new(map, name, chunk, lock);
                let mut busy = std::time::Duration::ZERO;
                while let Ok(mut c) = free_rx.recv() {
                    let t = std::time::Instant::now();
                    let more = walk.next_chunk(&mut c)?;
                    busy += t.elapsed();
                    if !more || full_tx.send(c).is_err() {
                        break;
                    }
                }
                Ok((walk.batched, busy))
            },
        );
        let mut result = Ok(());
        for c in &full_rx {
            match each(&c) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            let _ = free_tx.send(c);
        }
        // Dropping the receiver stops the reader at its next send, and the free list
        // at its next receive.
        drop(full_rx);
        drop(free_tx);
        (reader.join(), result)
    });
    let walked = reader.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    result?;
    Ok(walked)
}

/// Reads every entry of `map` by batches of `chunk` entries (growing on `ENOSPC`; key
/// by key where the kernel or map type has no batch lookup), on a reader thread a
/// few chunks ahead, and calls `each` with every chunk in order; `each` returns
/// `false` to stop. Memory stays bounded by a few chunks, whatever the map holds.
/// Returns whether batch lookups served the walk.
///
/// # Errors
/// The walk fails (`name` names the map in the error), or `each` does.
pub fn read_map(
    map: &dyn MapAccess,
    name: &str,
    chunk: usize,
    each: impl FnMut(&Chunk) -> Result<bool, MigrateError>,
) -> Result<bool, MigrateError> {
    walk_overlapped(map, name, chunk, false, 2, each).map(|(batched, _)| batched)
}
