//! The merge base: the record of what was carried into a new map, for the three-way
//! reconcile after the switch.
//!
//! # What is kept, and where
//! The reconcile must tell, per key, whether the old programs and whether the new
//! programs changed an entry since it was carried, and for an entry both changed it
//! needs the carried value itself to take a per-field decision. Keeping every carried
//! value in memory would cost a million entries times their size; instead:
//!
//! - the file `<dir>/<name>.base` holds every carried (key, old value) record, with
//!   the digest of its converted form, written as the copy streams and fsynced before
//!   the copy returns; each delta pass appends a segment of changed and deleted keys;
//! - memory holds an index of 32 bytes per key: a hash of the key, a digest of
//!   (key, old value), a digest of (converted key, converted value) and the offset of
//!   the record in the file. Deciding "unchanged" takes only the digests; the rare
//!   entries both sides changed, and the keys the old side deleted, read their record
//!   back from the file.
//!
//! A million entries thus take 32 MB of memory and a file of a million records. The
//! digests are [seeded](super::digest) per base; a digest of the key with the value
//! makes a key-hash collision show up as a changed entry, which the record read then
//! resolves.
//!
//! # File format (little-endian)
//! ```text
//! header  72 bytes: magic "HOMBASE1", version u32 = 1, key_size u32, value_len u32,
//!         new_key_size u32, new_value_len u32, reserved u32, seed u64, segments u64,
//!         last_checksum u64, last_pass_unix_ns u64, header_check u64 (hash of the 64
//!         bytes before it)
//! segment "SEG1", count u64, then count records:
//!           op u8 (1 put, 0 delete), key [key_size], old value [value_len] (zero for a
//!           delete), new digest u64
//!         then checksum u64: hash, seeded with the previous segment's checksum (the
//!         header's check for the first), of the segment from "SEG1" to the last record
//! ```
//! The first segment is written with a header that counts it and fsynced once: the
//! copy it records counts as done only after that sync. Every later segment is
//! written and fsynced before the header is updated in place to count it, and fsynced
//! again, so that a torn append cannot spoil the segments before it. A file whose
//! segments do not match its header, or whose any checksum fails, is refused by
//! [`MergeBase::read_from`].

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::copy::joined;
use super::digest::{Hasher64, fresh_seed, hash_key_and_entry, hash64};
use super::error::MigrateError;

const MAGIC: &[u8; 8] = b"HOMBASE1";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 72;
const SEG_MAGIC: &[u8; 4] = b"SEG1";
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 0;

/// Sizes of the keys and values on both sides of a carried map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseShape {
    /// Bytes of an old key.
    pub key_size: usize,
    /// Bytes of an old value as the syscalls see it (all CPUs for per-CPU maps).
    pub value_len: usize,
    /// Bytes of a new key.
    pub new_key_size: usize,
    /// Bytes of a new value as the syscalls see it.
    pub new_value_len: usize,
}

/// One key of the base: where its record is and what it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseEntry {
    /// Hash of the old key.
    pub key_hash: u64,
    /// Digest of (old key, old value).
    pub old_digest: u64,
    /// Digest of (new key, new value) as carried.
    pub new_digest: u64,
    /// Byte offset of the record in the file.
    pub offset: u64,
}

/// A change a delta pass makes to the base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseChange {
    /// The key now holds this old value, carried with this new digest.
    Put {
        /// Old key.
        key: Vec<u8>,
        /// Old value.
        value: Vec<u8>,
        /// Digest of the carried (new key, new value).
        new_digest: u64,
    },
    /// The key is gone.
    Delete {
        /// Old key.
        key: Vec<u8>,
    },
}

/// The merge base of one map; see the module documentation.
#[derive(Debug)]
pub struct MergeBase {
    path: PathBuf,
    file: File,
    shape: BaseShape,
    seed: u64,
    index: Vec<BaseEntry>,
    /// Where each range of key hashes starts in `index`; see [`Directory`].
    directory: Directory,
    segments: u64,
    last_checksum: u64,
    last_pass: SystemTime,
    end: u64,
}

fn io_err(path: &Path, doing: &'static str) -> impl FnOnce(std::io::Error) -> MigrateError {
    let path = path.to_owned();
    move |source| MigrateError::Io {
        path,
        doing,
        source,
    }
}

fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The file of the base of map `name` in `dir`.
#[must_use]
pub fn base_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.base"))
}

impl BaseShape {
    fn record_len(&self) -> usize {
        1 + self.key_size + self.value_len + 8
    }
}

struct Header {
    shape: BaseShape,
    seed: u64,
    segments: u64,
    last_checksum: u64,
    last_pass_ns: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = Vec::with_capacity(HEADER_LEN);
        b.extend_from_slice(MAGIC);
        for v in [
            VERSION,
            u32_of(self.shape.key_size),
            u32_of(self.shape.value_len),
            u32_of(self.shape.new_key_size),
            u32_of(self.shape.new_value_len),
            0,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [
            self.seed,
            self.segments,
            self.last_checksum,
            self.last_pass_ns,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let check = hash64(0, &[&b]);
        b.extend_from_slice(&check.to_le_bytes());
        let mut out = [0u8; HEADER_LEN];
        out.copy_from_slice(&b);
        out
    }

    fn check(bytes: &[u8]) -> u64 {
        hash64(0, &[bytes.get(..64).unwrap_or(&[])])
    }

    fn decode(path: &Path, b: &[u8; HEADER_LEN]) -> Result<Self, MigrateError> {
        let bad = |reason: String| MigrateError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let u32_at = |o: usize| {
            b.get(o..o + 4)
                .and_then(|s| s.try_into().ok())
                .map_or(0, u32::from_le_bytes)
        };
        let u64_at = |o: usize| {
            b.get(o..o + 8)
                .and_then(|s| s.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        if b.get(..8) != Some(MAGIC.as_slice()) {
            return Err(bad("it does not start with the merge base magic".to_owned()));
        }
        if u64_at(64) != Self::check(b) {
            return Err(bad("the header checksum does not match".to_owned()));
        }
        if u32_at(8) != VERSION {
            return Err(bad(format!(
                "format version {} is not {VERSION}",
                u32_at(8)
            )));
        }
        Ok(Self {
            shape: BaseShape {
                key_size: u32_at(12) as usize,
                value_len: u32_at(16) as usize,
                new_key_size: u32_at(20) as usize,
                new_value_len: u32_at(24) as usize,
            },
            seed: u64_at(32),
            segments: u64_at(40),
            last_checksum: u64_at(48),
            last_pass_ns: u64_at(56),
        })
    }
}

/// Writes the first segment of a base while a copy streams its entries through it.
#[derive(Debug)]
pub struct BaseWriter {
    path: PathBuf,
    output: Output,
    shape: BaseShape,
    seed: u64,
    index: Vec<BaseEntry>,
    offset: u64,
    count: u64,
    count_at: u64,
    /// Records not yet checksummed and written, in one buffer so that both run over
    /// large slices rather than per field.
    pending: Vec<u8>,
}

/// Bytes of records collected before they are written.
const PENDING: usize = 1 << 20;
/// Buffers of records on their way to the output thread.
const IN_FLIGHT: usize = 2;

/// The thread that checksums the records and writes them to the file, so that the
/// copy's converting thread only collects them; buffers go there full and come back
/// empty, at most [`IN_FLIGHT`] on the way.
#[derive(Debug)]
struct Output {
    path: PathBuf,
    full: Option<mpsc::SyncSender<Vec<u8>>>,
    empty: mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<Result<(File, Hasher64), MigrateError>>>,
}

impl Output {
    /// Starts the thread appending to `out` (whose records start at `at`), the
    /// segment checksum continuing from `checksum`.
    fn start(mut out: File, path: PathBuf, mut checksum: Hasher64, mut at: u64) -> Self {
        let (full, records) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
        let (back, empty) = mpsc::channel();
        let thread_path = path.clone();
        let thread = std::thread::spawn(move || {
            for mut buf in records {
                checksum.write(&buf);
                out.write_all(&buf)
                    .map_err(io_err(&thread_path, "writing"))?;
                let len = buf.len() as u64;
                start_writeback(&out, at, len);
                at += len;
                buf.clear();
                // The writer may be gone (finished or dropped): nothing to give back to.
                let _ = back.send(buf);
            }
            Ok((out, checksum))
        });
        Self {
            path,
            full: Some(full),
            empty,
            thread: Some(thread),
        }
    }

    /// Hands `buf` to the thread; returns an empty buffer to fill next.
    fn send(&mut self, buf: Vec<u8>) -> Result<Vec<u8>, MigrateError> {
        let capacity = buf.capacity();
        let sent = self.full.as_ref().is_some_and(|f| f.send(buf).is_ok());
        if !sent {
            // The thread stopped on an error: report it.
            return Err(self.end().err().unwrap_or_else(|| MigrateError::Io {
                path: self.path.clone(),
                doing: "writing",
                source: std::io::Error::other("the base's output thread stopped"),
            }));
        }
        Ok(self
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(capacity)))
    }

    /// Waits for everything sent to be written; the file and the checksum back.
    fn end(&mut self) -> Result<(File, Hasher64), MigrateError> {
        self.full = None;
        let thread = self.thread.take().ok_or_else(|| MigrateError::Io {
            path: self.path.clone(),
            doing: "writing",
            source: std::io::Error::other("the base's output thread has ended already"),
        })?;
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl BaseWriter {
    /// Starts the base of map `name` in `dir`, replacing an older one; `expected` is
    /// the number of entries to reserve index room for (the map's capacity).
    ///
    /// # Errors
    /// The file cannot be created or written.
    pub fn create(
        dir: &Path,
        name: &str,
        shape: BaseShape,
        expected: usize,
    ) -> Result<Self, MigrateError> {
        let path = base_path(dir, name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err(&path, "creating"))?;
        let seed = fresh_seed();
        let header = Header {
            shape,
            seed,
            segments: 0,
            last_checksum: 0,
            last_pass_ns: 0,
        };
        let head = header.encode();
        let header_check = chain_start(&head);
        let mut out = file;
        out.write_all(&head).map_err(io_err(&path, "writing"))?;
        let mut checksum = Hasher64::new(header_check);
        let mut seg = Vec::with_capacity(12);
        seg.extend_from_slice(SEG_MAGIC);
        seg.extend_from_slice(&0u64.to_le_bytes());
        checksum.write(SEG_MAGIC);
        out.write_all(&seg).map_err(io_err(&path, "writing"))?;
        let mut index = Vec::new();
        index.reserve_exact(expected.saturating_add(expected / 64).saturating_add(16));
        let offset = HEADER_LEN as u64 + 12;
        Ok(Self {
            output: Output::start(out, path.clone(), checksum, offset),
            path,
            shape,
            seed,
            index,
            offset,
            count: 0,
            count_at: HEADER_LEN as u64 + 4,
            pending: Vec::with_capacity(PENDING + shape.record_len()),
        })
    }

    /// The seed of the digests of this base.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Records one carried entry; `new_digest` is [`MergeBase::new_digest`] of its
    /// converted key and value. A key recorded twice keeps its last record.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn push(&mut self, key: &[u8], value: &[u8], new_digest: u64) -> Result<(), MigrateError> {
        let (key_hash, old_digest) = hash_key_and_entry(self.seed, key, value);
        self.push_hashed(key, value, key_hash, old_digest, new_digest)
    }

    /// As [`BaseWriter::push`], with the key hash and old digest computed already
    /// (`hash_key_and_entry` with this base's seed).
    pub(crate) fn push_hashed(
        &mut self,
        key: &[u8],
        value: &[u8],
        key_hash: u64,
        old_digest: u64,
        new_digest: u64,
    ) -> Result<(), MigrateError> {
        self.pending.push(OP_PUT);
        self.pending.extend_from_slice(key);
        self.pending.extend_from_slice(value);
        self.pending.extend_from_slice(&new_digest.to_le_bytes());
        self.index.push(BaseEntry {
            key_hash,
            old_digest,
            new_digest,
            offset: self.offset,
        });
        self.offset += self.shape.record_len() as u64;
        self.count += 1;
        if self.pending.len() >= PENDING {
            self.flush()?;
        }
        Ok(())
    }

    /// Checksums and writes the records collected so far.
    fn flush(&mut self) -> Result<(), MigrateError> {
        let full = std::mem::take(&mut self.pending);
        self.pending = self.output.send(full)?;
        Ok(())
    }

    /// Writes the segment's checksum and the header, fsyncs file and directory, and
    /// returns the base.
    ///
    /// # Errors
    /// The file cannot be written or synced.
    pub fn finish(mut self) -> Result<MergeBase, MigrateError> {
        self.flush()?;
        let (mut out, checksum) = self.output.end()?;
        let Self {
            path,
            shape,
            seed,
            mut index,
            offset,
            count,
            count_at,
            ..
        } = self;
        // The count is part of the checksummed segment; it is known only now, so the
        // checksum covers the magic, then the count, then the records: the reader
        // hashes in the same order.
        let mut sum = Hasher64::new(checksum.finish());
        sum.write(&count.to_le_bytes());
        let seg_sum = sum.finish();
        out.write_all(&seg_sum.to_le_bytes())
            .map_err(io_err(&path, "writing"))?;
        let file = out;
        file.write_all_at(&count.to_le_bytes(), count_at)
            .map_err(io_err(&path, "writing"))?;
        // The file is new: its header counts the one segment at once and a single
        // sync commits both. A crash before the sync ends leaves a file whose header
        // and records disagree, which `read_from` refuses by its checksums, and the
        // journal has not counted the copy as done. The sync waits on the disk while
        // the index is sorted on this thread.
        let last_pass = SystemTime::now();
        let header = Header {
            shape,
            seed,
            segments: 1,
            last_checksum: seg_sum,
            last_pass_ns: unix_ns(last_pass),
        };
        let (synced, deduped) = std::thread::scope(|s| {
            let syncing = s.spawn(|| write_header_synced(&file, &path, &header));
            let deduped = dedupe(&file, &path, shape, &mut index);
            (joined(syncing.join()), deduped)
        });
        synced?;
        deduped?;
        Ok(MergeBase {
            path,
            file,
            shape,
            seed,
            directory: Directory::of(&index),
            index,
            segments: 1,
            last_checksum: seg_sum,
            last_pass,
            end: offset + 8,
        })
    }
}

/// Writes `header` in place, syncs the file, then its directory (which holds the
/// file's name).
fn write_header_synced(file: &File, path: &Path, header: &Header) -> Result<(), MigrateError> {
    file.write_all_at(&header.encode(), 0)
        .map_err(io_err(path, "writing the header"))?;
    file.sync_all().map_err(io_err(path, "syncing"))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir, "syncing the directory"))?;
    }
    Ok(())
}

/// Asks the kernel to start writing `len` bytes at `from` to the disk now, without
/// waiting for them: the copy streams a file of about its map's size, and the fsync
/// that commits it then finds most of it written instead of all of it dirty. Only a
/// hint: durability still comes from the fsync, so a refusal changes nothing.
#[allow(unsafe_code, reason = "sync_file_range(2) has no safe wrapper in std")]
fn start_writeback(file: &File, from: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(from), Ok(len)) = (i64::try_from(from), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the fd is open for the borrow's duration; the call reads no memory.
    let _ =
        unsafe { libc::sync_file_range(file.as_raw_fd(), from, len, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Sorts the index by key hash and keeps the last record of each key; keys whose
/// hashes collide are told apart by reading them from the file.
fn dedupe(
    file: &File,
    path: &Path,
    shape: BaseShape,
    index: &mut Vec<BaseEntry>,
) -> Result<(), MigrateError> {
    sort_index(index);
    let mut keep = vec![true; index.len()];
    let mut i = 0;
    while i < index.len() {
        let h = index.get(i).map_or(0, |e| e.key_hash);
        let end = index
            .iter()
            .skip(i)
            .position(|e| e.key_hash != h)
            .map_or(index.len(), |p| i + p);
        if end - i > 1 {
            // Read every key of the group; keep the last record of each distinct key.
            let mut keys = Vec::new();
            for e in index.get(i..end).unwrap_or(&[]) {
                keys.push(read_key(file, path, shape, e.offset)?);
            }
            for (a, key) in keys.iter().enumerate() {
                if keys.iter().skip(a + 1).any(|k| k == key)
                    && let Some(k) = keep.get_mut(i + a)
                {
                    *k = false;
                }
            }
        }
        i = end;
    }
    let mut flags = keep.into_iter();
    index.retain(|_| flags.next().unwrap_or(true));
    index.shrink_to_fit();
    Ok(())
}

fn read_key(
    file: &File,
    path: &Path,
    shape: BaseShape,
    offset: u64,
) -> Result<Vec<u8>, MigrateError> {
    let mut key = vec![0u8; shape.key_size];
    file.read_exact_at(&mut key, offset + 1)
        .map_err(io_err(path, "reading a record"))?;
    Ok(key)
}

impl MergeBase {
    /// The digest under which this base records a converted (key, value).
    #[must_use]
    pub fn new_digest(&self, key: &[u8], value: &[u8]) -> u64 {
        hash64(self.seed, &[key, value])
    }

    /// The digest of an old (key, value), as [`BaseEntry::old_digest`].
    #[must_use]
    pub fn old_digest(&self, key: &[u8], value: &[u8]) -> u64 {
        hash64(self.seed, &[key, value])
    }

    /// The seed of the digests of this base.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The hash of an old key, as [`BaseEntry::key_hash`].
    #[must_use]
    pub fn key_hash(&self, key: &[u8]) -> u64 {
        hash64(self.seed, &[key])
    }

    /// Sizes of keys and values.
    #[must_use]
    pub fn shape(&self) -> BaseShape {
        self.shape
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no key is recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The entries, sorted by key hash.
    #[must_use]
    pub fn entries(&self) -> &[BaseEntry] {
        &self.index
    }

    /// When the last segment (the copy or the last delta pass) was committed.
    #[must_use]
    pub fn last_pass(&self) -> SystemTime {
        self.last_pass
    }

    /// Position in [`MergeBase::entries`] of old key `key`, if recorded.
    ///
    /// # Errors
    /// A record cannot be read back (only for keys whose hash collides).
    pub fn find(&self, key: &[u8]) -> Result<Option<usize>, MigrateError> {
        self.find_hashed(key, self.key_hash(key))
    }

    /// As [`MergeBase::find`], with the key's hash ([`MergeBase::key_hash`]) given.
    ///
    /// # Errors
    /// As [`MergeBase::find`].
    pub fn find_hashed(&self, key: &[u8], h: u64) -> Result<Option<usize>, MigrateError> {
        let range = self.directory.range(h);
        let slice = self.index.get(range.clone()).unwrap_or(&[]);
        // A range holds about one entry: a scan beats a search.
        let Some(first) = slice.iter().position(|e| e.key_hash >= h) else {
            return Ok(None);
        };
        let start = range.start + first;
        let group = slice
            .iter()
            .skip(first)
            .take_while(|e| e.key_hash == h)
            .count();
        match group {
            0 => Ok(None),
            1 => Ok(Some(start)),
            _ => {
                for i in start..start + group {
                    if let Some(e) = self.index.get(i)
                        && read_key(&self.file, &self.path, self.shape, e.offset)? == key
                    {
                        return Ok(Some(i));
                    }
                }
                Ok(None)
            }
        }
    }

    /// The (old key, old value) of entry `i`, read from the file.
    ///
    /// # Errors
    /// The record cannot be read.
    pub fn record(&self, i: usize) -> Result<(Vec<u8>, Vec<u8>), MigrateError> {
        let e = self.index.get(i).ok_or_else(|| MigrateError::Corrupt {
            path: self.path.clone(),
            reason: format!("entry {i} is past the end of the index"),
        })?;
        let mut rec = vec![0u8; self.shape.key_size + self.shape.value_len];
        self.file
            .read_exact_at(&mut rec, e.offset + 1)
            .map_err(io_err(&self.path, "reading a record"))?;
        let value = rec.split_off(self.shape.key_size);
        Ok((rec, value))
    }

    /// Appends a segment with `changes` (a delta pass), fsyncs it, and updates the
    /// index.
    ///
    /// # Errors
    /// The file cannot be written or synced.
    pub fn append(&mut self, changes: &[BaseChange]) -> Result<(), MigrateError> {
        let mut seg = Vec::with_capacity(12 + changes.len() * self.shape.record_len() + 8);
        seg.extend_from_slice(SEG_MAGIC);
        seg.extend_from_slice(&(changes.len() as u64).to_le_bytes());
        let zero = vec![0u8; self.shape.value_len];
        let mut updates = Vec::with_capacity(changes.len());
        for c in changes {
            let offset = self.end + seg.len() as u64;
            let (op, key, value, nd) = match c {
                BaseChange::Put {
                    key,
                    value,
                    new_digest,
                } => (OP_PUT, key, value.as_slice(), *new_digest),
                BaseChange::Delete { key } => (OP_DELETE, key, zero.as_slice(), 0),
            };
            if key.len() != self.shape.key_size || value.len() != self.shape.value_len {
                return Err(MigrateError::Invalid {
                    map: self.path.display().to_string(),
                    reason: format!(
                        "a change of {} key and {} value bytes for a base of {} and {}",
                        key.len(),
                        value.len(),
                        self.shape.key_size,
                        self.shape.value_len
                    ),
                });
            }
            seg.push(op);
            seg.extend_from_slice(key);
            seg.extend_from_slice(value);
            seg.extend_from_slice(&nd.to_le_bytes());
            updates.push((op, key.as_slice(), value, nd, offset));
        }
        let sum = segment_checksum(self.last_checksum, &seg);
        seg.extend_from_slice(&sum.to_le_bytes());
        self.file
            .write_all_at(&seg, self.end)
            .map_err(io_err(&self.path, "appending a delta segment"))?;
        let seg_len = seg.len() as u64;
        // Positions are looked up in the sorted index before it changes; a pass holds
        // each key once.
        let mut found = Vec::with_capacity(updates.len());
        for (_, key, ..) in &updates {
            found.push(self.find(key)?);
        }
        let mut sort = false;
        let mut removed = false;
        for ((op, key, value, nd, offset), at) in updates.into_iter().zip(found) {
            let entry = BaseEntry {
                key_hash: self.key_hash(key),
                old_digest: self.old_digest(key, value),
                new_digest: nd,
                offset,
            };
            match (op, at.and_then(|i| self.index.get_mut(i))) {
                (OP_PUT, Some(e)) => *e = entry,
                (OP_PUT, None) => {
                    self.index.push(entry);
                    sort = true;
                }
                (_, Some(e)) => {
                    e.offset = DELETE_BIT;
                    removed = true;
                }
                (_, None) => {}
            }
        }
        if removed {
            self.index.retain(|e| e.offset != DELETE_BIT);
        }
        if sort {
            self.index.sort_unstable_by_key(|e| e.key_hash);
        }
        if sort || removed {
            self.directory = Directory::of(&self.index);
        }
        self.end += seg_len;
        self.commit_segment(sum)
    }

    /// Syncs the segments, then counts the new one in the header and syncs again.
    fn commit_segment(&mut self, checksum: u64) -> Result<(), MigrateError> {
        self.file
            .sync_data()
            .map_err(io_err(&self.path, "syncing"))?;
        self.segments += 1;
        self.last_checksum = checksum;
        self.last_pass = SystemTime::now();
        let header = Header {
            shape: self.shape,
            seed: self.seed,
            segments: self.segments,
            last_checksum: checksum,
            last_pass_ns: unix_ns(self.last_pass),
        };
        write_header_synced(&self.file, &self.path, &header)
    }

    /// Reads and verifies the base of map `name` in `dir`: header, every segment's
    /// checksum, the segment count, and the records' sizes; rebuilds the index.
    ///
    /// # Errors
    /// [`MigrateError::Corrupt`] when anything does not verify;
    /// [`MigrateError::Io`] when the file cannot be read.
    pub fn read_from(dir: &Path, name: &str) -> Result<Self, MigrateError> {
        let path = base_path(dir, name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path, "opening"))?;
        let bad = |reason: String| MigrateError::Corrupt {
            path: path.clone(),
            reason,
        };
        let mut r = BufReader::with_capacity(1 << 20, &file);
        let mut head = [0u8; HEADER_LEN];
        r.read_exact(&mut head)
            .map_err(|_| bad("shorter than its header".to_owned()))?;
        let header = Header::decode(&path, &head)?;
        let shape = header.shape;
        let seed = header.seed;
        let mut prev = chain_start(&head);
        let mut offset = HEADER_LEN as u64;
        let mut index: Vec<BaseEntry> = Vec::new();
        let mut deletes: Vec<(u64, u64)> = Vec::new();
        let mut rec = vec![0u8; shape.record_len()];
        for s in 0..header.segments {
            let mut seg_head = [0u8; 12];
            r.read_exact(&mut seg_head)
                .map_err(|_| bad(format!("segment {s} is missing")))?;
            if seg_head.get(..4) != Some(SEG_MAGIC.as_slice()) {
                return Err(bad(format!("segment {s} does not start with its magic")));
            }
            let count = seg_head
                .get(4..12)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes);
            let mut sum = Hasher64::new(prev);
            sum.write(SEG_MAGIC);
            // The first segment's count was written after its records (see
            // `BaseWriter::finish`); later segments hash it in place.
            let first = s == 0;
            if !first {
                sum.write(seg_head.get(4..).unwrap_or(&[]));
            }
            offset += 12;
            for _ in 0..count {
                r.read_exact(&mut rec)
                    .map_err(|_| bad(format!("segment {s} ends inside its records")))?;
                sum.write(&rec);
                let (op, rest) = rec.split_first().unwrap_or((&OP_PUT, &[]));
                let (key, rest) = rest.split_at(shape.key_size.min(rest.len()));
                let (value, nd) = rest.split_at(shape.value_len.min(rest.len()));
                let nd = nd.try_into().map_or(0, u64::from_le_bytes);
                let kh = hash64(seed, &[key]);
                match *op {
                    OP_PUT => index.push(BaseEntry {
                        key_hash: kh,
                        old_digest: hash64(seed, &[key, value]),
                        new_digest: nd,
                        offset,
                    }),
                    OP_DELETE => deletes.push((kh, offset)),
                    other => return Err(bad(format!("record at byte {offset} has op {other}"))),
                }
                offset += rec.len() as u64;
            }
            let check = if first {
                let mut s2 = Hasher64::new(sum.finish());
                s2.write(&count.to_le_bytes());
                s2.finish()
            } else {
                sum.finish()
            };
            let mut stored = [0u8; 8];
            r.read_exact(&mut stored)
                .map_err(|_| bad(format!("segment {s} has no checksum")))?;
            if u64::from_le_bytes(stored) != check {
                return Err(bad(format!("segment {s} fails its checksum")));
            }
            prev = check;
            offset += 8;
        }
        if prev != header.last_checksum && header.segments > 0 {
            return Err(bad(
                "the last segment is not the one the header names".to_owned()
            ));
        }
        let end = file.metadata().map_err(io_err(&path, "reading"))?.len();
        if end != offset {
            return Err(bad(format!(
                "{} bytes after the last committed segment (an interrupted delta pass)",
                end.saturating_sub(offset)
            )));
        }
        drop(r);
        // Replay: later records supersede earlier ones, deletes remove.
        for (kh, off) in deletes {
            index.push(BaseEntry {
                key_hash: kh,
                old_digest: 0,
                new_digest: 0,
                offset: off | DELETE_BIT,
            });
        }
        resolve(&file, &path, shape, &mut index)?;
        let last_pass = UNIX_EPOCH + Duration::from_nanos(header.last_pass_ns);
        let mut f2 = file;
        f2.seek(SeekFrom::End(0))
            .map_err(io_err(&path, "reading"))?;
        Ok(Self {
            path,
            file: f2,
            shape,
            seed,
            directory: Directory::of(&index),
            index,
            segments: header.segments,
            last_checksum: header.last_checksum,
            last_pass,
            end,
        })
    }
}

/// A radix directory over an index sorted by key hash: for the top `bits` bits of a
/// hash, the first position whose hash has them. Hashes are uniform, so with about
/// one range per entry a lookup reads one directory slot and one or two entries
/// instead of a binary search's twenty scattered ones; it costs 4 bytes per range.
#[derive(Debug, Default)]
struct Directory {
    bits: u32,
    /// `1 << bits` starts, then the index's length.
    starts: Vec<u32>,
}

impl Directory {
    /// The most bits: 16 Mi ranges (64 MiB) cover any map the kernel allows well.
    const MAX_BITS: u32 = 24;

    fn of(index: &[BaseEntry]) -> Self {
        let bits = usize::BITS - index.len().leading_zeros();
        let bits = bits.min(Self::MAX_BITS);
        let ranges = 1usize << bits;
        let mut starts = Vec::with_capacity(ranges + 1);
        let mut at = 0usize;
        for r in 0..ranges {
            while index
                .get(at)
                .is_some_and(|e| Self::slot(bits, e.key_hash) < r)
            {
                at += 1;
            }
            starts.push(u32::try_from(at).unwrap_or(u32::MAX));
        }
        starts.push(u32::try_from(index.len()).unwrap_or(u32::MAX));
        Self { bits, starts }
    }

    fn slot(bits: u32, h: u64) -> usize {
        if bits == 0 {
            0
        } else {
            usize::try_from(h >> (64 - bits)).unwrap_or(usize::MAX)
        }
    }

    /// Positions whose hash shares `h`'s top bits.
    fn range(&self, h: u64) -> std::ops::Range<usize> {
        let r = Self::slot(self.bits, h);
        let at = |i: usize| self.starts.get(i).map_or(0, |s| *s as usize);
        at(r)..at(r + 1)
    }
}

/// Sorts an index by key hash, then by record offset (the delete mark left out), so
/// that each key's records follow one another in the order they were written.
///
/// Key hashes are uniform: one in-place pass distributes the entries by their top
/// [`SORT_BITS`] bits into ranges that each fit a core's cache, and the ranges are
/// then sorted on two threads. A million entries sort in about a third of the time a
/// comparison sort of the whole index takes.
fn sort_index(index: &mut [BaseEntry]) {
    let by = |e: &BaseEntry| (e.key_hash, e.offset & !DELETE_BIT);
    if index.len() < SORT_SMALL {
        index.sort_unstable_by_key(by);
        return;
    }
    let starts = distribute(index);
    // The two halves of the ranges, split where the ranges are (not at the middle
    // entry), each sorted range by range.
    let half = starts.get(SORT_RANGES / 2).copied().unwrap_or(0);
    let (low, high) = index.split_at_mut(half);
    // `bounds`: where each range of `part` starts, then where the last one ends.
    let sort_ranges = |part: &mut [BaseEntry], bounds: &[usize], at: usize| {
        for w in bounds.windows(2) {
            if let (Some(&a), Some(&b)) = (w.first(), w.get(1))
                && let Some(r) = part.get_mut(a - at..b - at)
            {
                r.sort_unstable_by_key(by);
            }
        }
    };
    let lo_bounds = starts.get(..=SORT_RANGES / 2).unwrap_or_default();
    let hi_bounds = starts.get(SORT_RANGES / 2..).unwrap_or_default();
    std::thread::scope(|s| {
        let other = s.spawn(|| sort_ranges(high, hi_bounds, half));
        sort_ranges(low, lo_bounds, 0);
        joined(other.join());
    });
}

/// Bits of the key hash [`sort_index`] distributes by.
const SORT_BITS: u32 = 8;
/// Ranges [`sort_index`] distributes into.
const SORT_RANGES: usize = 1 << SORT_BITS;
/// Below this many entries one comparison sort is quicker than distributing.
const SORT_SMALL: usize = 1 << 14;

/// Moves every entry into the range of its hash's top [`SORT_BITS`] bits, in place
/// (each entry is moved once, along the cycles of the permutation); returns where
/// each range starts, then the index's length.
fn distribute(index: &mut [BaseEntry]) -> Vec<usize> {
    let range = |e: &BaseEntry| usize::try_from(e.key_hash >> (64 - SORT_BITS)).unwrap_or(0);
    let mut counts = vec![0usize; SORT_RANGES];
    for e in index.iter() {
        if let Some(c) = counts.get_mut(range(e)) {
            *c += 1;
        }
    }
    let mut starts = Vec::with_capacity(SORT_RANGES + 1);
    let mut at = 0;
    for c in &counts {
        starts.push(at);
        at += c;
    }
    starts.push(at);
    // `next[r]`: the first place of range `r` not yet holding one of its own.
    let mut next: Vec<usize> = starts.iter().take(SORT_RANGES).copied().collect();
    for r in 0..SORT_RANGES {
        let end = starts.get(r + 1).copied().unwrap_or(0);
        while let Some(&place) = next.get(r)
            && place < end
        {
            let Some(mut held) = index.get(place).copied() else {
                break;
            };
            // Follow the cycle: put `held` where its range fills next, take what was
            // there, until an entry of range `r` comes back for `place`.
            let mut to = range(&held);
            while to != r {
                let Some(slot) = next.get_mut(to) else { break };
                let Some(there) = index.get_mut(*slot) else {
                    break;
                };
                std::mem::swap(&mut held, there);
                *slot += 1;
                to = range(&held);
            }
            if let Some(e) = index.get_mut(place) {
                *e = held;
            }
            if let Some(n) = next.get_mut(r) {
                *n += 1;
            }
        }
    }
    starts
}

/// Marks a delete record in the offset while the index is replayed.
const DELETE_BIT: u64 = 1 << 63;

/// Replays an index of every record: per distinct key, the record with the highest
/// offset wins, and a winning delete removes the key.
fn resolve(
    file: &File,
    path: &Path,
    shape: BaseShape,
    index: &mut Vec<BaseEntry>,
) -> Result<(), MigrateError> {
    sort_index(index);
    let mut keep = vec![true; index.len()];
    let mut i = 0;
    while i < index.len() {
        let h = index.get(i).map_or(0, |e| e.key_hash);
        let end = index
            .iter()
            .skip(i)
            .position(|e| e.key_hash != h)
            .map_or(index.len(), |p| i + p);
        let group = index.get(i..end).unwrap_or(&[]);
        let keys = if group.len() > 1 {
            let mut keys = Vec::with_capacity(group.len());
            for e in group {
                keys.push(read_key(file, path, shape, e.offset & !DELETE_BIT)?);
            }
            keys
        } else {
            Vec::new()
        };
        for (a, e) in group.iter().enumerate() {
            let superseded = keys
                .get(a)
                .is_some_and(|k| keys.iter().skip(a + 1).any(|later| later == k));
            if (superseded || e.offset & DELETE_BIT != 0)
                && let Some(k) = keep.get_mut(i + a)
            {
                *k = false;
            }
        }
        i = end;
    }
    let mut flags = keep.into_iter();
    index.retain(|_| flags.next().unwrap_or(true));
    Ok(())
}

/// The start of the checksum chain: the header's fixed part (magic, version, sizes,
/// seed), which the in-place header updates leave alone.
fn chain_start(head: &[u8]) -> u64 {
    hash64(0, &[head.get(..40).unwrap_or(&[])])
}

fn segment_checksum(prev: u64, seg: &[u8]) -> u64 {
    let mut h = Hasher64::new(prev);
    h.write(seg);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key_hash: u64) -> BaseEntry {
        BaseEntry {
            key_hash,
            old_digest: 0,
            new_digest: 0,
            offset: 0,
        }
    }

    #[test]
    fn directory_ranges_hold_every_hash_they_cover() {
        let mut state = 7u64;
        for n in [0usize, 1, 2, 3, 100, 4097] {
            let mut index: Vec<BaseEntry> = (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    entry(state)
                })
                .chain([entry(0), entry(u64::MAX)])
                .collect();
            index.sort_unstable_by_key(|e| e.key_hash);
            let dir = Directory::of(&index);
            for (i, e) in index.iter().enumerate() {
                let r = dir.range(e.key_hash);
                assert!(r.contains(&i), "n={n}: entry {i} outside {r:?}");
                // Ranges are tight: no entry of another top-bits slot inside.
                for o in index.get(r).unwrap_or(&[]) {
                    assert_eq!(
                        Directory::slot(dir.bits, o.key_hash),
                        Directory::slot(dir.bits, e.key_hash)
                    );
                }
            }
        }
    }

    #[test]
    fn the_index_sorts_as_a_comparison_sort_does_whatever_its_hashes() {
        let mut state = 11u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1442695040888963407);
            state
        };
        // Uniform hashes; hashes in few ranges (a skewed seed); one hash for all;
        // repeated hashes whose records must stay in offset order; delete marks.
        type Shape = fn(u64, u64) -> u64;
        let shapes: [(&str, Shape); 4] = [
            ("uniform", |r, _| r),
            ("three ranges", |r, _| (r % 3) << 62 | r >> 40),
            ("one hash", |_, _| 42),
            ("repeats", |r, i| (r >> 20) ^ (i % 5000)),
        ];
        for (what, shape) in &shapes {
            for n in [SORT_SMALL - 1, SORT_SMALL, 100_003] {
                let mut index: Vec<BaseEntry> = (0..n as u64)
                    .map(|i| {
                        let r = next();
                        BaseEntry {
                            key_hash: shape(r, i),
                            old_digest: i,
                            new_digest: r,
                            // Offsets unique, in no order, some marked deleted.
                            offset: (r >> 3) << 2
                                | (i & 3)
                                | if r & 1 == 1 { DELETE_BIT } else { 0 },
                        }
                    })
                    .collect();
                let mut expected = index.clone();
                expected.sort_unstable_by_key(|e| (e.key_hash, e.offset & !DELETE_BIT));
                sort_index(&mut index);
                let keys = |v: &[BaseEntry]| -> Vec<(u64, u64)> {
                    v.iter()
                        .map(|e| (e.key_hash, e.offset & !DELETE_BIT))
                        .collect()
                };
                assert_eq!(keys(&index), keys(&expected), "{what}, {n} entries");
                let mut a: Vec<_> = index
                    .iter()
                    .map(|e| (e.old_digest, e.new_digest, e.offset))
                    .collect();
                let mut b: Vec<_> = expected
                    .iter()
                    .map(|e| (e.old_digest, e.new_digest, e.offset))
                    .collect();
                a.sort_unstable();
                b.sort_unstable();
                assert_eq!(a, b, "{what}, {n} entries: the same entries, whole");
            }
        }
    }
}
