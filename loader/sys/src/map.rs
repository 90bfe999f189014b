//! Maps: `BPF_MAP_CREATE`, element commands, batches with a per-element fallback, and
//! `BPF_MAP_FREEZE`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use zerocopy::FromZeros;

use super::attr::{FdAttr, MapBatchAttr, MapCreateAttr, MapElemAttr, OBJ_NAME_LEN};
use super::error::ENOTSUPP;
use super::{Bpf, Command, Error, MapInfo, MapType, map_flags};

/// BTF describing a map's key and value (`btf_fd`, `btf_key_type_id`,
/// `btf_value_type_id`, `btf_vmlinux_value_type_id` of `BPF_MAP_CREATE`).
#[derive(Debug, Clone, Copy)]
pub struct MapBtf<'a> {
    /// The BTF object, from [`Bpf::btf_load`].
    pub fd: BorrowedFd<'a>,
    /// Type id of the key in that BTF (0: none, for maps whose key has no BTF).
    pub key_type_id: u32,
    /// Type id of the value in that BTF.
    pub value_type_id: u32,
    /// Type id of the value in the kernel's BTF (`struct_ops` maps), else 0.
    pub vmlinux_value_type_id: u32,
}

/// The arguments of `BPF_MAP_CREATE`.
#[derive(Debug, Clone, Copy)]
pub struct MapCreate<'a> {
    /// The map type.
    pub map_type: MapType,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes (of one CPU's slot for per-CPU maps).
    pub value_size: u32,
    /// Capacity (for `ringbuf`, the size in bytes).
    pub max_entries: u32,
    /// `BPF_F_*` flags, see [`map_flags`](super::map_flags).
    pub flags: u32,
    /// Object name; the kernel keeps the first 15 bytes of `[A-Za-z0-9_.]`.
    pub name: &'a str,
    /// Template of the inner map, for `array_of_maps` and `hash_of_maps`.
    pub inner_map_fd: Option<BorrowedFd<'a>>,
    /// NUMA node to allocate on (sets `BPF_F_NUMA_NODE`).
    pub numa_node: Option<u32>,
    /// `map_extra` (bloom filter hash count, arena address).
    pub map_extra: u64,
    /// Network device to offload to, 0 for none.
    pub ifindex: u32,
    /// BTF of key and value.
    pub btf: Option<MapBtf<'a>>,
}

impl MapCreate<'_> {
    /// A map of `map_type` with the given geometry and every optional field unset.
    #[must_use]
    pub fn new(map_type: MapType, key_size: u32, value_size: u32, max_entries: u32) -> Self {
        Self {
            map_type,
            key_size,
            value_size,
            max_entries,
            flags: 0,
            name: "",
            inner_map_fd: None,
            numa_node: None,
            map_extra: 0,
            ifindex: 0,
            btf: None,
        }
    }
}

/// Flags of element updates (`BPF_ANY`, `BPF_NOEXIST`, `BPF_EXIST`, `BPF_F_LOCK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpdateFlags(pub u64);

impl UpdateFlags {
    /// `BPF_ANY`: create or replace.
    pub const ANY: Self = Self(0);
    /// `BPF_NOEXIST`: create only.
    pub const NOEXIST: Self = Self(1);
    /// `BPF_EXIST`: replace only.
    pub const EXIST: Self = Self(2);
    /// `BPF_F_LOCK`: take the value's spin lock.
    pub const LOCK: Self = Self(4);
}

/// Entries of a map as packed arrays: `keys` holds `len()` keys of `key_size` bytes,
/// `values` as many values of `value_len` bytes (all CPUs' slots for per-CPU maps).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MapEntries {
    /// Bytes of one key.
    pub key_size: usize,
    /// Bytes of one value as user space sees it.
    pub value_len: usize,
    /// Keys, back to back.
    pub keys: Vec<u8>,
    /// Values, back to back, in the order of `keys`.
    pub values: Vec<u8>,
}

impl MapEntries {
    /// No entries, for keys of `key_size` and values of `value_len` bytes.
    #[must_use]
    pub fn new(key_size: usize, value_len: usize) -> Self {
        Self {
            key_size,
            value_len,
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    /// The number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len().checked_div(self.key_size).unwrap_or(0)
    }

    /// Whether there is no entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Appends one entry; `key` and `value` must have the sizes of this set.
    ///
    /// # Panics
    /// If a size differs: that is a bug of the caller, not bad input.
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        assert_eq!(key.len(), self.key_size, "key size");
        assert_eq!(value.len(), self.value_len, "value size");
        self.keys.extend_from_slice(key);
        self.values.extend_from_slice(value);
    }

    /// The entries as (key, value) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.keys
            .chunks_exact(self.key_size.max(1))
            .zip(self.values.chunks_exact(self.value_len.max(1)))
    }
}

/// Which kind of bulk operation [`Map`] used last: the batch commands or the
/// per-element fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSupport {
    /// `BPF_MAP_*_BATCH` worked for this map.
    Batch,
    /// The kernel or map type lacks the batch commands; elements go one by one.
    PerElement,
}

/// Entries per batch call of [`Map::dump`] and [`Map::update_all`].
const BATCH_CHUNK: usize = 16 * 1024;

/// An open map whose geometry came from the kernel, so that every buffer handed to the
/// kernel is checked against the sizes the kernel will read or write.
#[derive(Debug)]
pub struct Map {
    bpf: Bpf,
    fd: OwnedFd,
    info: MapInfo,
    value_len: usize,
    /// Per batch command (see [`batch_slot`]): the kernel refused it for this map.
    no_batch: [AtomicBool; 4],
    /// Whether the last bulk operation ran as batches.
    last_batch: AtomicBool,
}

/// Index of a batch command in [`Map::no_batch`].
fn batch_slot(command: Command) -> usize {
    match command {
        Command::MapLookupBatch => 0,
        Command::MapLookupAndDeleteBatch => 1,
        Command::MapUpdateBatch => 2,
        _ => 3,
    }
}

/// The name field of `command`'s attr for `name`: its first
/// [`KERNEL_NAME_LEN`](handover_uapi::KERNEL_NAME_LEN) bytes (as libbpf truncates),
/// checked by the kernel's rule ([`handover_uapi::name_field`]).
pub(crate) fn object_name(command: Command, name: &str) -> Result<[u8; OBJ_NAME_LEN], Error> {
    let bytes = name.as_bytes();
    let kept = bytes.get(..handover_uapi::KERNEL_NAME_LEN).unwrap_or(bytes);
    handover_uapi::name_field(kept).map_err(|e| Error::Argument {
        command: command.name(),
        object: format!("{name:?}"),
        reason: e.to_string(),
    })
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // A live descriptor is never negative.
    u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
}

pub(crate) fn raw_fd(fd: impl AsFd) -> u32 {
    fd_u32(fd.as_fd())
}

fn ptr(bytes: &[u8]) -> u64 {
    bytes.as_ptr() as u64
}

fn is_unsupported(err: &Error) -> bool {
    matches!(err.errno(), Some(e) if e == libc::EINVAL || e == libc::EOPNOTSUPP || e == ENOTSUPP)
}

impl Bpf {
    /// Creates a map.
    ///
    /// # Errors
    /// The kernel refuses the map (its geometry, flags or BTF), or the name has
    /// characters the kernel refuses.
    #[doc(alias = "BPF_MAP_CREATE")]
    pub fn map_create(&self, spec: &MapCreate<'_>) -> Result<OwnedFd, Error> {
        let mut attr = MapCreateAttr::new_zeroed();
        attr.map_type = spec.map_type.into();
        attr.key_size = spec.key_size;
        attr.value_size = spec.value_size;
        attr.max_entries = spec.max_entries;
        attr.map_flags = spec.flags;
        attr.map_name = object_name(Command::MapCreate, spec.name)?;
        attr.map_extra = spec.map_extra;
        attr.map_ifindex = spec.ifindex;
        if let Some(node) = spec.numa_node {
            attr.map_flags |= map_flags::NUMA_NODE;
            attr.numa_node = node;
        }
        if let Some(inner) = spec.inner_map_fd {
            attr.inner_map_fd = fd_u32(inner);
        }
        if let Some(btf) = spec.btf {
            attr.btf_fd = fd_u32(btf.fd);
            attr.btf_key_type_id = btf.key_type_id;
            attr.btf_value_type_id = btf.value_type_id;
            attr.btf_vmlinux_value_type_id = btf.vmlinux_value_type_id;
        }
        self.raw_fd(Command::MapCreate, &mut attr, || {
            format!("{} map {:?}", spec.map_type, spec.name)
        })
    }

    /// Freezes a map: user space can no longer write it (`.rodata`).
    ///
    /// # Errors
    /// The kernel refuses (e.g. `EBUSY` while a writable mapping exists).
    #[doc(alias = "BPF_MAP_FREEZE")]
    pub fn map_freeze(&self, map: impl AsFd) -> Result<(), Error> {
        let map = map.as_fd();
        let mut attr = FdAttr::new_zeroed();
        attr.fd = fd_u32(map);
        self.raw(Command::MapFreeze, &mut attr, None, || {
            format!("map fd {}", map.as_raw_fd())
        })
        .map(drop)
    }
}

impl Map {
    /// Wraps a map descriptor, reading its geometry from the kernel.
    ///
    /// # Errors
    /// `fd` is not a map, or the CPU count for per-CPU values cannot be read.
    pub fn new(bpf: &Bpf, fd: OwnedFd) -> Result<Self, Error> {
        let info = bpf.map_info(&fd)?;
        let value_len = bpf.value_len(info.map_type, info.value_size)?;
        Ok(Self {
            bpf: bpf.clone(),
            fd,
            info,
            value_len,
            no_batch: Default::default(),
            last_batch: AtomicBool::new(false),
        })
    }

    /// Creates a map and wraps it.
    ///
    /// # Errors
    /// As [`Bpf::map_create`] and [`Map::new`].
    pub fn create(bpf: &Bpf, spec: &MapCreate<'_>) -> Result<Self, Error> {
        let fd = bpf.map_create(spec)?;
        Self::new(bpf, fd)
    }

    /// The map's descriptor.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The bpf(2) handle the map was opened with.
    #[must_use]
    pub fn bpf(&self) -> &Bpf {
        &self.bpf
    }

    /// Gives the descriptor back.
    #[must_use]
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// What the kernel said about the map when it was opened.
    #[must_use]
    pub fn info(&self) -> &MapInfo {
        &self.info
    }

    /// Bytes of one key.
    #[must_use]
    pub fn key_size(&self) -> usize {
        self.info.key_size as usize
    }

    /// Bytes of one value as user space reads and writes it: `value_size`, or for
    /// per-CPU maps `value_size` rounded up to 8 times the number of possible CPUs.
    #[must_use]
    pub fn value_len(&self) -> usize {
        self.value_len
    }

    fn object(&self) -> String {
        format!(
            "{} map {:?} (id {})",
            self.info
                .map_type
                .map_or_else(|| self.info.map_type_raw.to_string(), |t| t.to_string()),
            self.info.name,
            self.info.id
        )
    }

    fn check(&self, command: Command, what: &str, len: usize, want: usize) -> Result<(), Error> {
        if len == want {
            Ok(())
        } else {
            Err(Error::Argument {
                command: command.name(),
                object: self.object(),
                reason: format!("{what} is {len} bytes, the map's is {want}"),
            })
        }
    }

    /// Checks that a packed key array of `len` bytes holds whole keys.
    fn check_whole(&self, command: Command, len: usize) -> Result<(), Error> {
        let size = self.key_size();
        if len.checked_rem(size).unwrap_or(len) == 0 {
            Ok(())
        } else {
            Err(Error::Argument {
                command: command.name(),
                object: self.object(),
                reason: format!(
                    "the key array of {len} bytes is not a whole number of {size}-byte keys"
                ),
            })
        }
    }

    fn elem(
        &self,
        command: Command,
        key: Option<&[u8]>,
        value: u64,
        flags: u64,
    ) -> Result<bool, Error> {
        let mut attr = MapElemAttr::new_zeroed();
        attr.map_fd = fd_u32(self.fd.as_fd());
        attr.key = key.map_or(0, ptr);
        attr.value = value;
        attr.flags = flags;
        match self.bpf.raw(command, &mut attr, None, || self.object()) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads the value of `key` into `value`; `false` if there is no such key.
    ///
    /// # Errors
    /// Wrong buffer sizes, or the kernel refuses.
    #[doc(alias = "BPF_MAP_LOOKUP_ELEM")]
    pub fn lookup(&self, key: &[u8], value: &mut [u8], flags: UpdateFlags) -> Result<bool, Error> {
        let c = Command::MapLookupElem;
        self.check(c, "key", key.len(), self.key_size())?;
        self.check(c, "value", value.len(), self.value_len)?;
        self.elem(c, Some(key), value.as_mut_ptr() as u64, flags.0)
    }

    /// Writes `value` at `key`.
    ///
    /// # Errors
    /// Wrong buffer sizes, or the kernel refuses (`EEXIST` with
    /// [`UpdateFlags::NOEXIST`], `ENOENT` with [`UpdateFlags::EXIST`], `E2BIG` when
    /// full).
    #[doc(alias = "BPF_MAP_UPDATE_ELEM")]
    pub fn update(&self, key: &[u8], value: &[u8], flags: UpdateFlags) -> Result<(), Error> {
        let c = Command::MapUpdateElem;
        self.check(c, "key", key.len(), self.key_size())?;
        self.check(c, "value", value.len(), self.value_len)?;
        let mut attr = MapElemAttr::new_zeroed();
        attr.map_fd = fd_u32(self.fd.as_fd());
        attr.key = ptr(key);
        attr.value = ptr(value);
        attr.flags = flags.0;
        self.bpf.raw(c, &mut attr, None, || self.object()).map(drop)
    }

    /// Deletes `key`; `false` if there was no such key.
    ///
    /// # Errors
    /// Wrong key size, or the kernel refuses (arrays cannot delete: `EINVAL`).
    #[doc(alias = "BPF_MAP_DELETE_ELEM")]
    pub fn delete(&self, key: &[u8]) -> Result<bool, Error> {
        let c = Command::MapDeleteElem;
        self.check(c, "key", key.len(), self.key_size())?;
        self.elem(c, Some(key), 0, 0)
    }

    /// Reads and deletes the value of `key` (or pops a queue/stack when the map has
    /// no key); `false` if there was none.
    ///
    /// # Errors
    /// Wrong buffer sizes, or the kernel refuses.
    #[doc(alias = "BPF_MAP_LOOKUP_AND_DELETE_ELEM")]
    pub fn lookup_and_delete(&self, key: &[u8], value: &mut [u8]) -> Result<bool, Error> {
        let c = Command::MapLookupAndDeleteElem;
        self.check(c, "key", key.len(), self.key_size())?;
        self.check(c, "value", value.len(), self.value_len)?;
        let key = if key.is_empty() { None } else { Some(key) };
        self.elem(c, key, value.as_mut_ptr() as u64, 0)
    }

    /// Writes the key after `key` (the first key for `None`) into `next`; `false`
    /// when there is none.
    ///
    /// # Errors
    /// Wrong buffer sizes, or the kernel refuses.
    #[doc(alias = "BPF_MAP_GET_NEXT_KEY")]
    pub fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> Result<bool, Error> {
        let c = Command::MapGetNextKey;
        if let Some(key) = key {
            self.check(c, "key", key.len(), self.key_size())?;
        }
        self.check(c, "next key", next.len(), self.key_size())?;
        self.elem(c, key, next.as_mut_ptr() as u64, 0)
    }

    /// Freezes the map, see [`Bpf::map_freeze`].
    ///
    /// # Errors
    /// As [`Bpf::map_freeze`].
    pub fn freeze(&self) -> Result<(), Error> {
        self.bpf.map_freeze(&self.fd)
    }

    /// Every key, by `BPF_MAP_GET_NEXT_KEY`, each once.
    ///
    /// When the key a step starts from is deleted meanwhile (by a program), hash
    /// maps and LPM tries start over at their first key: keys already listed are
    /// skipped, and a listing that keeps starting over gives up after a few times the
    /// map's capacity in steps.
    ///
    /// # Errors
    /// The kernel refuses, or (an error of kind `WouldBlock`) the keys changed
    /// faster than they could be listed.
    pub fn keys(&self) -> Result<Vec<u8>, Error> {
        let c = Command::MapGetNextKey;
        let size = self.key_size();
        let limit = (self.info.max_entries as usize)
            .saturating_mul(4)
            .saturating_add(16);
        let mut keys = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut next = vec![0u8; size];
        let mut prev: Option<Vec<u8>> = None;
        let mut steps = 0usize;
        while self.next_key(prev.as_deref(), &mut next)? {
            steps += 1;
            if steps > limit {
                return Err(Error::Syscall {
                    command: c.name(),
                    object: self.object(),
                    error: std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        format!(
                            "the keys changed while they were listed ({steps} steps for a capacity of {}): retry when the map's writers are quieter",
                            self.info.max_entries
                        ),
                    ),
                });
            }
            if seen.insert(next.clone()) {
                keys.extend_from_slice(&next);
            }
            prev = Some(next.clone());
        }
        Ok(keys)
    }

    /// Whether the last bulk operation ([`Map::dump`], [`Map::drain`],
    /// [`Map::update_all`], [`Map::delete_all`]) ran as batches.
    #[must_use]
    pub fn batch_support(&self) -> BatchSupport {
        if self.last_batch.load(Ordering::Relaxed) {
            BatchSupport::Batch
        } else {
            BatchSupport::PerElement
        }
    }

    fn batch_refused(&self, command: Command) -> bool {
        self.no_batch
            .get(batch_slot(command))
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    fn refuse_batch(&self, command: Command) {
        if let Some(f) = self.no_batch.get(batch_slot(command)) {
            f.store(true, Ordering::Relaxed);
        }
    }

    fn used_batch(&self, batch: bool) {
        self.last_batch.store(batch, Ordering::Relaxed);
    }

    fn batch_attr(&self, count: usize) -> MapBatchAttr {
        let mut attr = MapBatchAttr::new_zeroed();
        attr.map_fd = fd_u32(self.fd.as_fd());
        attr.count = u32::try_from(count).unwrap_or(u32::MAX);
        attr
    }

    /// Reads every entry, with `BPF_MAP_LOOKUP_BATCH` where the kernel and map type
    /// have it, else key by key.
    ///
    /// # Errors
    /// The kernel refuses.
    #[doc(alias = "BPF_MAP_LOOKUP_BATCH")]
    pub fn dump(&self) -> Result<MapEntries, Error> {
        self.dump_impl(Command::MapLookupBatch)
    }

    /// Reads and deletes every entry, with `BPF_MAP_LOOKUP_AND_DELETE_BATCH` where the
    /// kernel and map type have it, else key by key.
    ///
    /// # Errors
    /// The kernel refuses.
    #[doc(alias = "BPF_MAP_LOOKUP_AND_DELETE_BATCH")]
    pub fn drain(&self) -> Result<MapEntries, Error> {
        self.dump_impl(Command::MapLookupAndDeleteBatch)
    }

    fn dump_impl(&self, command: Command) -> Result<MapEntries, Error> {
        if !self.batch_refused(command) {
            match self.dump_batch(command) {
                Ok(entries) => {
                    self.used_batch(true);
                    return Ok(entries);
                }
                // A drain refused after its first call has deleted entries already,
                // which a per-element pass would no longer see: only a refusal of the
                // first call falls back. A plain dump reads again from the start.
                Err((first, e))
                    if is_unsupported(&e) && (first || command == Command::MapLookupBatch) =>
                {
                    self.refuse_batch(command);
                }
                Err((_, e)) => return Err(e),
            }
        }
        self.used_batch(false);
        self.dump_per_element(command == Command::MapLookupAndDeleteBatch)
    }

    /// Reads every entry key by key (`BPF_MAP_GET_NEXT_KEY` and
    /// `BPF_MAP_LOOKUP_ELEM`), deleting each after reading it when `delete` is set.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn dump_per_element(&self, delete: bool) -> Result<MapEntries, Error> {
        let keys = self.keys()?;
        let mut out = MapEntries::new(self.key_size(), self.value_len);
        let mut value = vec![0u8; self.value_len];
        for key in keys.chunks_exact(self.key_size().max(1)) {
            // A key deleted since it was listed is skipped, not an error.
            if self.lookup(key, &mut value, UpdateFlags::ANY)? {
                out.push(key, &value);
                if delete {
                    self.delete(key)?;
                }
            }
        }
        Ok(out)
    }

    /// Batched reads; on failure, whether it was the first call that failed.
    fn dump_batch(&self, command: Command) -> Result<MapEntries, (bool, Error)> {
        let key_size = self.key_size();
        let mut out = MapEntries::new(key_size, self.value_len);
        let token_len = key_size.max(8);
        let mut token_in = vec![0u8; token_len];
        let mut token_out = vec![0u8; token_len];
        let mut first = true;
        let mut chunk = BATCH_CHUNK.min(self.info.max_entries.max(1) as usize);
        loop {
            let start_keys = out.keys.len();
            let start_values = out.values.len();
            out.keys.resize(start_keys + chunk * key_size, 0);
            out.values.resize(start_values + chunk * self.value_len, 0);
            let mut attr = self.batch_attr(chunk);
            attr.in_batch = if first { 0 } else { ptr(&token_in) };
            attr.out_batch = token_out.as_mut_ptr() as u64;
            attr.keys = out
                .keys
                .get_mut(start_keys..)
                .map_or(0, |s| s.as_mut_ptr() as u64);
            attr.values = out
                .values
                .get_mut(start_values..)
                .map_or(0, |s| s.as_mut_ptr() as u64);
            let result = self.bpf.raw(command, &mut attr, None, || self.object());
            let got = (attr.count as usize).min(chunk);
            out.keys.truncate(start_keys + got * key_size);
            out.values.truncate(start_values + got * self.value_len);
            match result {
                Ok(_) => {}
                Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(out),
                // A hash bucket holds more entries than the chunk: retry bigger.
                Err(e)
                    if e.errno() == Some(libc::ENOSPC)
                        && got == 0
                        && chunk < self.info.max_entries as usize =>
                {
                    chunk = chunk.saturating_mul(2).min(self.info.max_entries as usize);
                    continue;
                }
                Err(e) => return Err((first, e)),
            }
            first = false;
            std::mem::swap(&mut token_in, &mut token_out);
        }
    }

    /// One `BPF_MAP_LOOKUP_BATCH` call: reads up to `keys.len() / key_size` entries
    /// after the position `cursor` names (`None`: from the start) into `keys` and
    /// `values`, and the position after them into `next_cursor` (at least 8 bytes and
    /// the key size, as the kernel writes a bucket index or a key there).
    ///
    /// Returns the number of entries read and whether the walk reached the end (the
    /// kernel's `ENOENT`, which may come with a last few entries). `elem_flags` may be
    /// [`UpdateFlags::LOCK`] for values with a spin lock.
    ///
    /// # Errors
    /// Wrong buffer sizes; `ENOSPC` (nothing read) when the next hash bucket holds more
    /// entries than the buffers; `EINVAL`/`ENOTSUPP` when the kernel or map type has
    /// no batch lookup.
    #[doc(alias = "BPF_MAP_LOOKUP_BATCH")]
    pub fn lookup_batch_once(
        &self,
        cursor: Option<&[u8]>,
        next_cursor: &mut [u8],
        keys: &mut [u8],
        values: &mut [u8],
        elem_flags: UpdateFlags,
    ) -> Result<(usize, bool), Error> {
        let c = Command::MapLookupBatch;
        let n = self.batch_count(c, keys.len(), values.len())?;
        let token = self.key_size().max(8);
        self.check_at_least(c, "the cursor", next_cursor.len(), token)?;
        if let Some(cur) = cursor {
            self.check_at_least(c, "the cursor", cur.len(), token)?;
        }
        let mut attr = self.batch_attr(n);
        attr.in_batch = cursor.map_or(0, ptr);
        attr.out_batch = next_cursor.as_mut_ptr() as u64;
        attr.keys = keys.as_mut_ptr() as u64;
        attr.values = values.as_mut_ptr() as u64;
        attr.elem_flags = elem_flags.0;
        let result = self.bpf.raw(c, &mut attr, None, || self.object());
        let got = (attr.count as usize).min(n);
        match result {
            Ok(_) => Ok((got, false)),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok((got, true)),
            Err(e) => Err(e),
        }
    }

    /// One `BPF_MAP_UPDATE_BATCH` call over packed `keys` and `values`.
    ///
    /// # Errors
    /// Wrong buffer sizes, or the kernel refuses; the error comes with the number of
    /// entries written before it.
    #[doc(alias = "BPF_MAP_UPDATE_BATCH")]
    pub fn update_batch_once(
        &self,
        keys: &[u8],
        values: &[u8],
        elem_flags: UpdateFlags,
    ) -> Result<(), (usize, Error)> {
        let c = Command::MapUpdateBatch;
        let n = self
            .batch_count(c, keys.len(), values.len())
            .map_err(|e| (0, e))?;
        let mut attr = self.batch_attr(n);
        attr.keys = ptr(keys);
        attr.values = ptr(values);
        attr.elem_flags = elem_flags.0;
        self.bpf
            .raw(c, &mut attr, None, || self.object())
            .map(drop)
            .map_err(|e| ((attr.count as usize).min(n), e))
    }

    /// One `BPF_MAP_DELETE_BATCH` call over packed `keys`.
    ///
    /// # Errors
    /// Wrong key array, or the kernel refuses (`ENOENT` at a missing key); the error
    /// comes with the number of keys deleted before it.
    #[doc(alias = "BPF_MAP_DELETE_BATCH")]
    pub fn delete_batch_once(&self, keys: &[u8]) -> Result<(), (usize, Error)> {
        let c = Command::MapDeleteBatch;
        self.check_whole(c, keys.len()).map_err(|e| (0, e))?;
        let n = keys.len().checked_div(self.key_size()).unwrap_or(0);
        let mut attr = self.batch_attr(n);
        attr.keys = ptr(keys);
        self.bpf
            .raw(c, &mut attr, None, || self.object())
            .map(drop)
            .map_err(|e| ((attr.count as usize).min(n), e))
    }

    /// The entry count of packed key and value buffers, checked against each other.
    fn batch_count(&self, command: Command, keys: usize, values: usize) -> Result<usize, Error> {
        self.check_whole(command, keys)?;
        let n = keys.checked_div(self.key_size()).unwrap_or(0);
        self.check(command, "the value array", values, n * self.value_len)?;
        Ok(n)
    }

    fn check_at_least(
        &self,
        command: Command,
        what: &str,
        len: usize,
        want: usize,
    ) -> Result<(), Error> {
        if len >= want {
            Ok(())
        } else {
            Err(Error::Argument {
                command: command.name(),
                object: self.object(),
                reason: format!("{what} is {len} bytes, at least {want} are needed"),
            })
        }
    }

    /// Writes every entry of `entries`, with `BPF_MAP_UPDATE_BATCH` where the kernel
    /// and map type have it, else one by one.
    ///
    /// # Errors
    /// Sizes differ from the map's, or the kernel refuses an element.
    #[doc(alias = "BPF_MAP_UPDATE_BATCH")]
    pub fn update_all(&self, entries: &MapEntries, flags: UpdateFlags) -> Result<(), Error> {
        let c = Command::MapUpdateBatch;
        self.check(c, "key", entries.key_size, self.key_size())?;
        self.check(c, "value", entries.value_len, self.value_len)?;
        self.check_whole(c, entries.keys.len())?;
        self.check(
            c,
            "the value array",
            entries.values.len(),
            entries.len() * self.value_len,
        )?;
        // The batch command takes no flag but BPF_F_LOCK in `elem_flags`.
        let batchable = flags.0 & !UpdateFlags::LOCK.0 == 0;
        if batchable && !self.batch_refused(c) {
            match self.update_batch(entries, flags) {
                Ok(()) => {
                    self.used_batch(true);
                    return Ok(());
                }
                // Refused in the first call: nothing or only part of the first chunk
                // was written, and writing those elements again is harmless.
                Err((true, e)) if is_unsupported(&e) => self.refuse_batch(c),
                Err((_, e)) => return Err(e),
            }
        }
        self.used_batch(false);
        for (key, value) in entries.iter() {
            self.update(key, value, flags)?;
        }
        Ok(())
    }

    /// Batched updates; on failure, whether it was the first call that failed.
    fn update_batch(&self, entries: &MapEntries, flags: UpdateFlags) -> Result<(), (bool, Error)> {
        let (ks, vs) = (self.key_size(), self.value_len);
        let mut first = true;
        for (keys, values) in entries
            .keys
            .chunks(BATCH_CHUNK * ks.max(1))
            .zip(entries.values.chunks(BATCH_CHUNK * vs.max(1)))
        {
            let n = keys.len() / ks.max(1);
            let mut attr = self.batch_attr(n);
            attr.keys = ptr(keys);
            attr.values = ptr(values);
            attr.elem_flags = flags.0;
            if let Err(e) = self
                .bpf
                .raw(Command::MapUpdateBatch, &mut attr, None, || self.object())
            {
                return Err((first, e));
            }
            first = false;
        }
        Ok(())
    }

    /// Deletes every key of `keys` (packed), with `BPF_MAP_DELETE_BATCH` where the
    /// kernel and map type have it, else one by one.
    ///
    /// # Errors
    /// The kernel refuses, or a key does not exist.
    #[doc(alias = "BPF_MAP_DELETE_BATCH")]
    pub fn delete_all(&self, keys: &[u8]) -> Result<(), Error> {
        let ks = self.key_size().max(1);
        let c = Command::MapDeleteBatch;
        self.check_whole(c, keys.len())?;
        if !self.batch_refused(c) {
            let mut done = 0;
            let mut result = Ok(());
            for chunk in keys.chunks(BATCH_CHUNK * ks) {
                let mut attr = self.batch_attr(chunk.len() / ks);
                attr.keys = ptr(chunk);
                if let Err(e) = self.bpf.raw(c, &mut attr, None, || self.object()) {
                    done += attr.count as usize;
                    result = Err(e);
                    break;
                }
                done += chunk.len() / ks;
            }
            match result {
                Ok(()) => {
                    self.used_batch(true);
                    return Ok(());
                }
                Err(e) if done == 0 && is_unsupported(&e) => self.refuse_batch(c),
                Err(e) => return Err(e),
            }
        }
        self.used_batch(false);
        for key in keys.chunks_exact(ks) {
            if !self.delete(key)? {
                return Err(Error::Syscall {
                    command: Command::MapDeleteElem.name(),
                    object: self.object(),
                    error: std::io::Error::from_raw_os_error(libc::ENOENT),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "tests index fixed results")]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use zerocopy::{FromBytes, IntoBytes};

    /// A map over /dev/null whose commands go to `backend`.
    fn fake_map<F>(backend: F, key_size: u32, value_size: u32) -> Map
    where
        F: Fn(Command, &mut [u8], Option<&mut [u8]>) -> std::io::Result<i64>
            + Send
            + Sync
            + 'static,
    {
        // SAFETY: the fake backends of these tests return counts and errnos, never a
        // descriptor.
        #[allow(unsafe_code, reason = "a fake backend")]
        let backend = unsafe { crate::FnBackend::new(backend) };
        let fd = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let info = MapInfo {
            map_type: Some(MapType::Hash),
            map_type_raw: MapType::Hash.into(),
            id: 1,
            key_size,
            value_size,
            max_entries: 64,
            flags: 0,
            name: "m".into(),
            ifindex: 0,
            btf_id: 0,
            btf_key_type_id: 0,
            btf_value_type_id: 0,
            btf_vmlinux_value_type_id: 0,
            map_extra: 0,
        };
        Map {
            bpf: Bpf::with_backend(backend),
            fd,
            info,
            value_len: value_size as usize,
            no_batch: Default::default(),
            last_batch: AtomicBool::new(false),
        }
    }

    /// A backend that answers the `n`th `BPF_MAP_LOOKUP_AND_DELETE_BATCH` with
    /// `batches[n]` (a count of entries, or an errno) and records every command.
    fn drain_backend(
        batches: Vec<Result<u32, i32>>,
        calls: Arc<Mutex<Vec<Command>>>,
    ) -> impl Fn(Command, &mut [u8], Option<&mut [u8]>) -> std::io::Result<i64> + Send + Sync + 'static
    {
        batch_backend(Command::MapLookupAndDeleteBatch, batches, calls)
    }

    /// As [`drain_backend`], for the batch command `batch`.
    fn batch_backend(
        batch: Command,
        batches: Vec<Result<u32, i32>>,
        calls: Arc<Mutex<Vec<Command>>>,
    ) -> impl Fn(Command, &mut [u8], Option<&mut [u8]>) -> std::io::Result<i64> + Send + Sync + 'static
    {
        move |c: Command, attr: &mut [u8], _: Option<&mut [u8]>| {
            let mut calls = calls.lock().unwrap();
            let n = calls.iter().filter(|&&k| k == c).count();
            calls.push(c);
            match (c == batch, batches.get(n)) {
                (true, Some(&Ok(count))) => {
                    let mut a = MapBatchAttr::read_from_prefix(attr).unwrap().0;
                    a.count = count;
                    attr[..size_of::<MapBatchAttr>()].copy_from_slice(a.as_bytes());
                    Ok(0)
                }
                (true, Some(&Err(e))) => Err(std::io::Error::from_raw_os_error(e)),
                _ => Err(std::io::Error::from_raw_os_error(libc::ENOENT)),
            }
        }
    }

    #[test]
    fn a_drain_refused_after_its_first_batch_is_an_error_not_a_per_element_pass() {
        // The first batch deleted two entries; falling back to key-by-key draining
        // then would return without them, and they would be lost.
        let calls = Arc::new(Mutex::new(Vec::new()));
        let map = fake_map(
            drain_backend(vec![Ok(2), Err(libc::EINVAL)], calls.clone()),
            4,
            4,
        );
        let err = map.drain().unwrap_err();
        assert_eq!(err.errno(), Some(libc::EINVAL));
        assert_eq!(
            *calls.lock().unwrap(),
            [Command::MapLookupAndDeleteBatch; 2],
            "no per-element fallback after entries were drained"
        );
        assert!(!map.batch_refused(Command::MapLookupAndDeleteBatch));
    }

    #[test]
    fn a_drain_refused_on_its_first_batch_falls_back_to_per_element() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let map = fake_map(drain_backend(vec![Err(libc::EINVAL)], calls.clone()), 4, 4);
        assert!(map.drain().unwrap().is_empty());
        assert_eq!(
            *calls.lock().unwrap(),
            [Command::MapLookupAndDeleteBatch, Command::MapGetNextKey]
        );
        assert_eq!(map.batch_support(), BatchSupport::PerElement);
    }

    #[test]
    fn a_dump_refused_after_its_first_batch_reads_again_per_element() {
        // Reading deletes nothing, so starting over key by key loses nothing.
        let calls = Arc::new(Mutex::new(Vec::new()));
        let map = fake_map(
            batch_backend(
                Command::MapLookupBatch,
                vec![Ok(2), Err(libc::EINVAL)],
                calls.clone(),
            ),
            4,
            4,
        );
        assert!(map.dump().unwrap().is_empty());
        assert_eq!(
            *calls.lock().unwrap(),
            [
                Command::MapLookupBatch,
                Command::MapLookupBatch,
                Command::MapGetNextKey
            ]
        );
    }

    #[test]
    fn listing_the_keys_of_a_map_that_keeps_starting_over_ends() {
        // A backend whose GET_NEXT_KEY never reaches the end, as a hash map does
        // when the key each step starts from is deleted before the step.
        let bpf_calls = Arc::new(Mutex::new(0usize));
        let seen = bpf_calls.clone();
        let map = fake_map(
            move |c: Command, _: &mut [u8], _: Option<&mut [u8]>| {
                assert_eq!(c, Command::MapGetNextKey);
                *seen.lock().unwrap() += 1;
                Ok(0)
            },
            4,
            4,
        );
        let err = map.keys().unwrap_err();
        assert!(err.to_string().contains("keys changed"), "{err}");
        assert_eq!(*bpf_calls.lock().unwrap(), 64 * 4 + 16 + 1);
    }

    #[test]
    fn update_all_refuses_a_key_array_of_partial_keys() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let map = fake_map(drain_backend(Vec::new(), calls.clone()), 4, 4);
        let entries = MapEntries {
            key_size: 4,
            value_len: 4,
            keys: vec![0; 5],
            values: vec![0; 4],
        };
        let err = map.update_all(&entries, UpdateFlags::ANY).unwrap_err();
        assert!(
            err.to_string()
                .contains("5 bytes is not a whole number of 4-byte keys"),
            "{err}"
        );
        assert!(
            calls.lock().unwrap().is_empty(),
            "nothing reached the kernel"
        );
    }

    #[test]
    fn names_are_truncated_to_fifteen_bytes_and_checked() {
        let n = object_name(Command::MapCreate, "a_very_long_map_name").unwrap();
        assert_eq!(&n[..15], b"a_very_long_map");
        assert_eq!(n[15], 0);
        assert!(object_name(Command::MapCreate, ".rodata").is_ok());
        let e = object_name(Command::MapCreate, "bad-name").unwrap_err();
        assert!(e.to_string().contains("BPF_MAP_CREATE"), "{e}");
        // The rule is the kernel's, shared with the loader's sanitised names: every
        // name the loader derives passes, on every ASCII byte.
        for b in 0..=0x7fu8 {
            let name = format!("m{}", char::from(b));
            let derived = handover_uapi::kernel_name(&name);
            assert!(
                object_name(Command::MapCreate, &derived).is_ok(),
                "{derived:?}"
            );
            assert_eq!(
                object_name(Command::MapCreate, &name).is_ok(),
                handover_uapi::is_name_byte(b),
                "byte {b:#x}"
            );
        }
    }

    #[test]
    fn entries_iterate_in_pairs() {
        let mut e = MapEntries::new(2, 3);
        e.push(&[1, 2], &[3, 4, 5]);
        e.push(&[6, 7], &[8, 9, 10]);
        assert_eq!(e.len(), 2);
        let pairs: Vec<_> = e.iter().collect();
        assert_eq!(pairs[1], (&[6u8, 7][..], &[8u8, 9, 10][..]));
    }
}
