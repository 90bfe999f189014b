//! The bpf(2) layer: every kernel call of handover goes through [`Bpf`].
//!
//! [`Bpf`] is a cheap, cloneable handle over a [`Backend`]. Each command builds its
//! `union bpf_attr` variant (see `attr.rs`), hands the bytes to [`Bpf::raw`], the one
//! choke point, which asks the backend to run the command and turns a failure into an
//! [`Error`] naming the command and the object it was applied to. The real backend
//! calls `syscall(SYS_bpf, cmd, &attr, size)`; tests substitute a backend that fails
//! with chosen errnos to exercise error paths without privileges.
//!
//! Implementing [`Backend`] is `unsafe` (its results become owned descriptors), and a
//! closure is a backend only through the unsafe [`FnBackend::new`], so safe code cannot
//! forge an [`OwnedFd`] through the backend. The kernel backend is private on purpose:
//! [`Backend::bpf`] is a safe function taking arbitrary attr bytes, and attr bytes
//! carry user pointers the kernel writes through. Only the commands of this module, which point into buffers they keep
//! borrowed for the call, may reach the kernel:
//!
//! ```compile_fail
//! // The kernel backend cannot be named outside this module.
//! let _ = handover_sys::KernelBackend;
//! ```
//!
//! File descriptors come in as [`BorrowedFd`](std::os::fd::BorrowedFd) (any
//! `impl AsFd`) and go out as [`OwnedFd`]; the only conversion of a raw descriptor into
//! an owned one is `syscall::owned_fd`, applied by [`Bpf::raw_fd`] to the return value
//! of commands that create a descriptor.
//!
//! See the [`bpf(2)` man page](https://man7.org/linux/man-pages/man2/bpf.2.html) and
//! the kernel's `include/uapi/linux/bpf.h` for the commands.

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod attr;
mod backend;
mod error;
mod files;
mod info;
mod link;
mod map;
mod memlock;
mod obj;
mod perf;
mod probe;
mod prog;
mod syscall;

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::{Arc, OnceLock};

pub use backend::{Backend, FnBackend};
pub use error::{Error, LOG_LINES_SHOWN, errno};
pub use files::{
    KALLSYMS, MAX_KERNEL_CONFIG, OSRELEASE, PROC_CONFIG_GZ, VMLINUX_BTF, kallsyms, kernel_config,
    kernel_release, module_btf, vmlinux_btf,
};
pub use handover_uapi::attach_flags::{ALLOW_MULTI, ALLOW_OVERRIDE, REPLACE};
pub use handover_uapi::{
    AttachType, Insn, LinkType, MapType, ProgramType, UnknownName, UnknownValue, map_flags,
    prog_flags,
};
pub use info::{BtfInfo, LinkInfo, LinkTarget, MapInfo, PerfEventType, ProgInfo};
pub use link::{AttachTarget, IterTarget, LinkCreate, ProgQuery, QUERY_EFFECTIVE};
pub use map::{BatchSupport, Map, MapBtf, MapCreate, MapEntries, UpdateFlags};
pub use obj::{ObjectKind, OpenFlags};
pub use perf::{EVENT_SOURCE_DEVICES, ProbeKind, ProbePmu, ProbeTarget, probe_open};
pub use probe::{Feature, cgroup_program_type};
pub use prog::{LogLevel, ProgLoad, TestRun};
use syscall::KernelBackend;

/// A bpf(2) command (`enum bpf_cmd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u32)]
#[expect(
    missing_docs,
    reason = "each variant is the kernel command of the same name"
)]
pub enum Command {
    MapCreate = 0,
    MapLookupElem = 1,
    MapUpdateElem = 2,
    MapDeleteElem = 3,
    MapGetNextKey = 4,
    ProgLoad = 5,
    ObjPin = 6,
    ObjGet = 7,
    ProgAttach = 8,
    ProgDetach = 9,
    ProgTestRun = 10,
    ProgGetNextId = 11,
    MapGetNextId = 12,
    ProgGetFdById = 13,
    MapGetFdById = 14,
    ObjGetInfoByFd = 15,
    ProgQuery = 16,
    RawTracepointOpen = 17,
    BtfLoad = 18,
    BtfGetFdById = 19,
    MapLookupAndDeleteElem = 21,
    MapFreeze = 22,
    BtfGetNextId = 23,
    MapLookupBatch = 24,
    MapLookupAndDeleteBatch = 25,
    MapUpdateBatch = 26,
    MapDeleteBatch = 27,
    LinkCreate = 28,
    LinkUpdate = 29,
    LinkGetFdById = 30,
    LinkGetNextId = 31,
    IterCreate = 33,
    LinkDetach = 34,
    ProgBindMap = 35,
}

impl Command {
    /// The command's name in the uapi header, e.g. `BPF_MAP_CREATE`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Command::MapCreate => "BPF_MAP_CREATE",
            Command::MapLookupElem => "BPF_MAP_LOOKUP_ELEM",
            Command::MapUpdateElem => "BPF_MAP_UPDATE_ELEM",
            Command::MapDeleteElem => "BPF_MAP_DELETE_ELEM",
            Command::MapGetNextKey => "BPF_MAP_GET_NEXT_KEY",
            Command::ProgLoad => "BPF_PROG_LOAD",
            Command::ObjPin => "BPF_OBJ_PIN",
            Command::ObjGet => "BPF_OBJ_GET",
            Command::ProgAttach => "BPF_PROG_ATTACH",
            Command::ProgDetach => "BPF_PROG_DETACH",
            Command::ProgTestRun => "BPF_PROG_TEST_RUN",
            Command::ProgGetNextId => "BPF_PROG_GET_NEXT_ID",
            Command::MapGetNextId => "BPF_MAP_GET_NEXT_ID",
            Command::ProgGetFdById => "BPF_PROG_GET_FD_BY_ID",
            Command::MapGetFdById => "BPF_MAP_GET_FD_BY_ID",
            Command::ObjGetInfoByFd => "BPF_OBJ_GET_INFO_BY_FD",
            Command::ProgQuery => "BPF_PROG_QUERY",
            Command::RawTracepointOpen => "BPF_RAW_TRACEPOINT_OPEN",
            Command::BtfLoad => "BPF_BTF_LOAD",
            Command::BtfGetFdById => "BPF_BTF_GET_FD_BY_ID",
            Command::MapLookupAndDeleteElem => "BPF_MAP_LOOKUP_AND_DELETE_ELEM",
            Command::MapFreeze => "BPF_MAP_FREEZE",
            Command::BtfGetNextId => "BPF_BTF_GET_NEXT_ID",
            Command::MapLookupBatch => "BPF_MAP_LOOKUP_BATCH",
            Command::MapLookupAndDeleteBatch => "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
            Command::MapUpdateBatch => "BPF_MAP_UPDATE_BATCH",
            Command::MapDeleteBatch => "BPF_MAP_DELETE_BATCH",
            Command::LinkCreate => "BPF_LINK_CREATE",
            Command::LinkUpdate => "BPF_LINK_UPDATE",
            Command::LinkGetFdById => "BPF_LINK_GET_FD_BY_ID",
            Command::LinkGetNextId => "BPF_LINK_GET_NEXT_ID",
            Command::IterCreate => "BPF_ITER_CREATE",
            Command::LinkDetach => "BPF_LINK_DETACH",
            Command::ProgBindMap => "BPF_PROG_BIND_MAP",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A handle to the bpf(2) layer: commands, per-CPU geometry and cached feature probes.
///
/// Clones share the backend and the caches.
#[derive(Clone)]
pub struct Bpf {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Box<dyn Backend>,
    possible_cpus: OnceLock<Result<usize, String>>,
    features: probe::Cache,
}

impl fmt::Debug for Bpf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bpf").finish_non_exhaustive()
    }
}

impl Default for Bpf {
    fn default() -> Self {
        Self::kernel()
    }
}

impl Bpf {
    /// A handle that runs commands in the running kernel.
    #[must_use]
    pub fn kernel() -> Self {
        Self::with_backend(KernelBackend)
    }

    /// A handle that runs commands through `backend`.
    #[must_use]
    pub fn with_backend(backend: impl Backend + 'static) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend: Box::new(backend),
                possible_cpus: OnceLock::new(),
                features: probe::Cache::default(),
            }),
        }
    }

    /// The choke point: runs `command` over the bytes of `attr`.
    ///
    /// `object` describes what the command was applied to; it is only built when the
    /// call fails.
    pub(crate) fn raw<A>(
        &self,
        command: Command,
        attr: &mut A,
        log: Option<&mut [u8]>,
        object: impl FnOnce() -> String,
    ) -> Result<i64, Error>
    where
        A: zerocopy::IntoBytes + zerocopy::FromBytes,
    {
        self.inner
            .backend
            .bpf(command, attr.as_mut_bytes(), log)
            .map_err(|error| Error::Syscall {
                command: command.name(),
                object: object(),
                error,
            })
    }

    /// Runs a command that creates a file descriptor and takes ownership of it.
    pub(crate) fn raw_fd<A>(
        &self,
        command: Command,
        attr: &mut A,
        object: impl FnOnce() -> String,
    ) -> Result<OwnedFd, Error>
    where
        A: zerocopy::IntoBytes + zerocopy::FromBytes,
    {
        let ret = self.raw(command, attr, None, object)?;
        syscall::owned_fd(command, ret)
    }

    /// The number of possible CPUs (`/sys/devices/system/cpu/possible`), the number of
    /// slots in a per-CPU map value as user space reads and writes it.
    ///
    /// # Errors
    /// The file cannot be read or parsed.
    pub fn possible_cpus(&self) -> Result<usize, Error> {
        const PATH: &str = "/sys/devices/system/cpu/possible";
        self.inner
            .possible_cpus
            .get_or_init(|| {
                std::fs::read_to_string(PATH)
                    .map_err(|e| e.to_string())
                    .and_then(|text| parse_cpu_list(&text))
            })
            .clone()
            .map_err(|reason| Error::Config {
                what: PATH.to_owned(),
                reason,
            })
    }
}

/// Counts the CPUs of a kernel CPU list such as `0-3,8,10-11`.
pub(crate) fn parse_cpu_list(text: &str) -> Result<usize, String> {
    let mut count = 0usize;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("{part:?} is not a CPU number or range");
        let (first, last) = if let Some((a, b)) = part.split_once('-') {
            (
                a.parse::<usize>().map_err(|_| bad())?,
                b.parse::<usize>().map_err(|_| bad())?,
            )
        } else {
            let n = part.parse::<usize>().map_err(|_| bad())?;
            (n, n)
        };
        if last < first {
            return Err(bad());
        }
        count = (last - first)
            .checked_add(1)
            .and_then(|n| count.checked_add(n))
            .ok_or_else(|| format!("{text:?} counts more CPUs than fit a usize"))?;
    }
    if count == 0 {
        return Err(format!("no CPU in {text:?}"));
    }
    Ok(count)
}

/// The page size of this machine, from the auxiliary vector (`AT_PAGESZ` in
/// `/proc/self/auxv`); 4096 when it cannot be read. Ring buffer sizes are multiples
/// of it.
#[must_use]
pub fn page_size() -> u32 {
    std::fs::read("/proc/self/auxv")
        .ok()
        .and_then(|auxv| auxv_page_size(&auxv))
        .unwrap_or(4096)
}

/// `AT_PAGESZ` of an auxiliary vector: native-endian (type, value) pairs of `u64`.
fn auxv_page_size(auxv: &[u8]) -> Option<u32> {
    const AT_PAGESZ: u64 = 6;
    auxv.chunks_exact(16).find_map(|pair| {
        let (k, v) = pair.split_at(8);
        let k = u64::from_ne_bytes(k.try_into().ok()?);
        let v = u64::from_ne_bytes(v.try_into().ok()?);
        (k == AT_PAGESZ).then(|| u32::try_from(v).ok()).flatten()
    })
}

#[cfg(test)]
pub(crate) mod fake;

#[cfg(test)]
mod tests {
    use super::{auxv_page_size, parse_cpu_list};

    #[test]
    fn cpu_lists_count_every_range() {
        assert_eq!(parse_cpu_list("0-1\n"), Ok(2));
        assert_eq!(parse_cpu_list("0"), Ok(1));
        assert_eq!(parse_cpu_list("0-3,8,10-11"), Ok(7));
        assert_eq!(parse_cpu_list("0-3\n"), Ok(4));
        assert_eq!(parse_cpu_list("0,2-3"), Ok(3));
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list(&format!("0-{}", usize::MAX)).is_err());
    }

    #[test]
    fn public_flag_values_match_the_uapi_header() {
        use super::{ALLOW_MULTI, ALLOW_OVERRIDE, OpenFlags, REPLACE, UpdateFlags, map_flags};
        // BPF_F_* of BPF_MAP_CREATE.
        assert_eq!(
            [
                map_flags::NO_PREALLOC,
                map_flags::NO_COMMON_LRU,
                map_flags::NUMA_NODE,
                map_flags::RDONLY,
                map_flags::WRONLY,
                map_flags::ZERO_SEED,
                map_flags::RDONLY_PROG,
                map_flags::WRONLY_PROG,
                map_flags::MMAPABLE,
                map_flags::INNER_MAP,
            ],
            [1, 2, 4, 8, 16, 64, 128, 256, 1024, 4096]
        );
        // BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK.
        assert_eq!(
            [
                UpdateFlags::ANY,
                UpdateFlags::NOEXIST,
                UpdateFlags::EXIST,
                UpdateFlags::LOCK
            ]
            .map(|f| f.0),
            [0, 1, 2, 4]
        );
        // BPF_F_RDONLY, BPF_F_WRONLY as open flags.
        assert_eq!(
            [OpenFlags::READ_ONLY.0, OpenFlags::WRITE_ONLY.0],
            [map_flags::RDONLY, map_flags::WRONLY]
        );
        // BPF_F_ALLOW_OVERRIDE, BPF_F_ALLOW_MULTI, BPF_F_REPLACE.
        assert_eq!([ALLOW_OVERRIDE, ALLOW_MULTI, REPLACE], [1, 2, 4]);
    }

    #[test]
    fn the_page_size_is_read_from_the_auxiliary_vector() {
        let mut auxv = Vec::new();
        for (k, v) in [(3u64, 77u64), (6, 16384), (0, 0)] {
            auxv.extend_from_slice(&k.to_ne_bytes());
            auxv.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(auxv_page_size(&auxv), Some(16384));
        assert_eq!(auxv_page_size(auxv.get(..16).unwrap()), None);
        assert!(super::page_size().is_power_of_two());
    }
}
