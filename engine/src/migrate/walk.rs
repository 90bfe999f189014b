//! Reading a whole map in chunks: batch lookups whose buffer grows on `ENOSPC`, and a
//! key-by-key walk where the kernel or map type has no batch lookup.

use super::access::{Cursor, Geometry, MapAccess, batch_unsupported};
use super::error::{MigrateError, kernel};
use super::read_prog::{self, ProgReader};
use super::sys::UpdateFlags;

/// Entries per chunk to start with.
pub const DEFAULT_CHUNK: usize = 4096;

/// Entries the first batch of a walk asks for.
const FIRST_CHUNK: usize = 1024;

/// Entries a walk reads by batch before it loads a program to read the rest, where
/// it may (see [`Walker::by_program`]): smaller maps do not repay the load.
const PROGRAM_AFTER: usize = 16 * 1024;

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
    Batch {
        cursor: Cursor,
        first: bool,
    },
    PerElement {
        prev: Option<Vec<u8>>,
        steps: usize,
    },
    /// Passes of a generated program ([`super::read_prog`]).
    Program {
        reader: Box<ProgReader>,
        /// Entries of the walk before the last pass's.
        skip: usize,
        /// Entries the last pass read, and how many of them are handed out.
        filled: usize,
        pos: usize,
        /// Entries the next pass asks for.
        next: usize,
        /// The last pass reached the map's end.
        ended: bool,
    },
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
    /// Carrier slots of a read program, where the walk may load one.
    program: Option<usize>,
    /// Entries handed out.
    read: usize,
    /// Whether batch lookups served the walk.
    pub batched: bool,
    /// Entries a generated program read.
    pub by_program: usize,
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
            program: None,
            read: 0,
            batched: true,
            by_program: 0,
        }
    }

    /// Lets the walk read a kernel hash map by a generated program once it has read
    /// its first batches ([`super::read_prog`]), where the map and the kernel allow.
    /// Only for a walk followed by a batch walk of the same map: a pass of the
    /// program can miss an entry that programs moved meanwhile.
    pub(crate) fn by_program(mut self) -> Self {
        self.program = read_prog::slots_for(&self.g, self.flags == UpdateFlags::LOCK);
        self
    }

    /// Loads the read program, once the walk has shown itself large, and goes on by
    /// it from the entries read so far.
    fn go_on_by_program(&mut self) {
        if self.read < PROGRAM_AFTER || self.done {
            return;
        }
        let Some(slots) = self.program.take() else {
            return;
        };
        let Some(kernel_map) = self.map.kernel_map() else {
            return;
        };
        match ProgReader::new(kernel_map, self.name, slots) {
            Ok(reader) => {
                self.mode = Mode::Program {
                    reader: Box::new(reader),
                    skip: self.read,
                    filled: 0,
                    pos: 0,
                    // A short first pass, so that the stages after the walk are
                    // not kept waiting; then passes as long as the carrier.
                    next: self.target.saturating_mul(4).min(slots),
                    ended: false,
                };
            }
            Err(e) => tracing::debug!(map = self.name, error = %e, "reading by batch"),
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
                                self.read += n;
                                self.go_on_by_program();
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
                        self.read += out.len;
                        return Ok(true);
                    }
                }
                Mode::Program {
                    reader,
                    skip,
                    filled,
                    pos,
                    next,
                    ended,
                } => {
                    if *pos < *filled {
                        let n = (*filled - *pos).min(self.target);
                        out.keys.clear();
                        out.values.clear();
                        reader.take(self.name, *pos, n, &mut out.keys, &mut out.values)?;
                        *pos += n;
                        out.len = n;
                        self.read += n;
                        self.by_program += n;
                        return Ok(true);
                    }
                    if *ended {
                        self.done = true;
                        continue;
                    }
                    *skip += *filled;
                    match reader.pass(self.name, *skip, *next) {
                        Ok(n) => {
                            *ended = n < *next;
                            (*filled, *pos) = (n, 0);
                            *next = reader.slots();
                        }
                        Err(e) => {
                            // From the start again by batch: the entries read twice
                            // are the walk's to deduplicate, as those of a walk
                            // through a changing map.
                            tracing::debug!(map = self.name, error = %e, "reading by batch");
                            self.mode = Mode::Batch {
                                cursor: Cursor::start(&self.g),
                                first: false,
                            };
                        }
                    }
                }
            }
        }
        Ok(false)
    }
}

/// How a walk read its map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Walked {
    /// Batch lookups served the walk (else key-by-key lookups).
    pub batched: bool,
    /// Entries a generated program read.
    pub by_program: usize,
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
    each: impl FnMut(&Chunk) -> Result<bool, MigrateError>,
) -> Result<(bool, std::time::Duration), MigrateError> {
    walk_overlapped_by(Walker::new(map, name, chunk, lock), depth, each)
        .map(|(walked, busy)| (walked.batched, busy))
}

/// [`walk_overlapped`] of a walk set up by the caller; returns how it read the map.
pub(crate) fn walk_overlapped_by(
    mut walk: Walker<'_>,
    depth: usize,
    mut each: impl FnMut(&Chunk) -> Result<bool, MigrateError>,
) -> Result<(Walked, std::time::Duration), MigrateError> {
    let depth = depth.max(1);
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Chunk>(depth);
    let (free_tx, free_rx) = std::sync::mpsc::channel::<Chunk>();
    for _ in 0..=depth {
        let _ = free_tx.send(Chunk::default());
    }
    let (reader, result) = std::thread::scope(|s| {
        let reader = s.spawn(
            move || -> Result<(Walked, std::time::Duration), MigrateError> {
                let mut busy = std::time::Duration::ZERO;
                while let Ok(mut c) = free_rx.recv() {
                    let t = std::time::Instant::now();
                    let more = walk.next_chunk(&mut c)?;
                    busy += t.elapsed();
                    if !more || full_tx.send(c).is_err() {
                        break;
                    }
                }
                Ok((
                    Walked {
                        batched: walk.batched,
                        by_program: walk.by_program,
                    },
                    busy,
                ))
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
