//! Kernel and user probes as perf events (`perf_event_open(2)` on the `kprobe` and
//! `uprobe` PMUs), and the perf-event link (`BPF_LINK_CREATE` with `BPF_PERF_EVENT`,
//! 5.15) that attaches a program to one and keeps it alive.
//!
//! A probe made this way is not listed in `tracefs` (`kprobe_events`): it exists as
//! long as its perf event, which the link holds. A pinned link so keeps the probe and
//! its program running after the process that made them exits; dropping the link's
//! last reference removes both. The older `PERF_EVENT_IOC_SET_BPF` attachment lives
//! only as long as the descriptor of the perf event and cannot outlive a daemon.
//!
//! # Safety
//! `perf_event_open(2)` reads `size` bytes of the attr, which lives here for the call,
//! and the NUL-terminated string its `config1` points to, a `CString` that also lives
//! for the call. A non-negative result is a fresh descriptor nothing else owns.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use zerocopy::{FromZeros, IntoBytes};

use super::attr::{LinkCreatePerfEventAttr, PerfEventAttr};
use super::map::raw_fd;
use super::{AttachType, Bpf, Command, Error};

/// Where the kernel lists its dynamic PMUs.
pub const EVENT_SOURCE_DEVICES: &str = "/sys/bus/event_source/devices";

/// `PERF_FLAG_FD_CLOEXEC`.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// Which probe PMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// `kprobe`: a kernel function (`CONFIG_KPROBE_EVENTS`).
    Kprobe,
    /// `uprobe`: an instruction of an executable or library file
    /// (`CONFIG_UPROBE_EVENTS`).
    Uprobe,
}

impl ProbeKind {
    /// The PMU's name under [`EVENT_SOURCE_DEVICES`].
    #[must_use]
    pub const fn pmu(self) -> &'static str {
        match self {
            ProbeKind::Kprobe => "kprobe",
            ProbeKind::Uprobe => "uprobe",
        }
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.pmu())
    }
}

/// A probe PMU as sysfs describes it: the perf type to open events of, and the bit of
/// `config` that makes an event a return probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbePmu {
    /// Which PMU.
    pub kind: ProbeKind,
    /// `perf_event_attr.type` of its events (`.../kprobe/type`).
    pub perf_type: u32,
    /// The bit of `config` for a return probe (`.../kprobe/format/retprobe`,
    /// `config:N`).
    pub retprobe_bit: u32,
}

impl ProbePmu {
    /// Reads the PMU of `kind` from sysfs.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file: the PMU is missing (a kernel without
    /// `CONFIG_KPROBE_EVENTS` or `CONFIG_UPROBE_EVENTS`, or without perf events), or
    /// a file does not say what it should.
    pub fn read(kind: ProbeKind) -> Result<Self, Error> {
        Self::read_under(Path::new(EVENT_SOURCE_DEVICES), kind)
    }

    /// [`ProbePmu::read`] with the PMUs under `devices`.
    ///
    /// # Errors
    /// As [`ProbePmu::read`].
    pub fn read_under(devices: &Path, kind: ProbeKind) -> Result<Self, Error> {
        let dir = devices.join(kind.pmu());
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| Error::Config {
                what: p.display().to_string(),
                reason: e.to_string(),
            })
        };
        let type_path = dir.join("type");
        let text = read(&type_path)?;
        let perf_type = text.trim().parse::<u32>().map_err(|_| Error::Config {
            what: type_path.display().to_string(),
            reason: format!("{:?} is not a perf type number", text.trim()),
        })?;
        let bit_path = dir.join("format/retprobe");
        let retprobe_bit = parse_format_bit(&read(&bit_path)?).map_err(|reason| Error::Config {
            what: bit_path.display().to_string(),
            reason,
        })?;
        Ok(Self {
            kind,
            perf_type,
            retprobe_bit,
        })
    }
}

/// The bit of a one-bit PMU format field: `config:N` (a range `config:N-N` of one
/// bit is accepted too).
pub(crate) fn parse_format_bit(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a one-bit format field of config (config:N)");
    let bits = text.strip_prefix("config:").ok_or_else(bad)?;
    let (first, last) = match bits.split_once('-') {
        Some((a, b)) => (a, b),
        None => (bits, bits),
    };
    let first: u32 = first.parse().map_err(|_| bad())?;
    let last: u32 = last.parse().map_err(|_| bad())?;
    if first != last || first > 63 {
        return Err(bad());
    }
    Ok(first)
}

/// Where a probe goes.
#[derive(Debug, Clone, Copy)]
pub enum ProbeTarget<'a> {
    /// A kernel function by name, `offset` bytes into it (0: its entry).
    Kernel {
        /// The function (a symbol of `/proc/kallsyms`).
        function: &'a str,
        /// Bytes past the symbol.
        offset: u64,
    },
    /// An instruction of a file, for every process that maps it.
    User {
        /// The executable or library.
        path: &'a Path,
        /// The instruction's offset in the file.
        offset: u64,
    },
}

impl ProbeTarget<'_> {
    fn describe(&self) -> String {
        match self {
            ProbeTarget::Kernel {
                function,
                offset: 0,
            } => format!("kernel function {function}"),
            ProbeTarget::Kernel { function, offset } => {
                format!("kernel function {function}+{offset:#x}")
            }
            ProbeTarget::User { path, offset } => {
                format!("{} at file offset {offset:#x}", path.display())
            }
        }
    }
}

/// Opens a probe perf event of `pmu` at `target` (a return probe with `retprobe`),
/// for every process (`pid` -1) on CPU 0 as a probe event is, which runs an attached
/// program on every CPU that hits the probe. The event is enabled as it is made.
///
/// # Errors
/// `ENOENT` or `EINVAL` for a function the kernel has no symbol of (or cannot probe),
/// `ENOENT` for a missing file; [`Error::Argument`] for a target of the other PMU or
/// a name holding a NUL byte.
pub fn probe_open(
    pmu: &ProbePmu,
    target: ProbeTarget<'_>,
    retprobe: bool,
) -> Result<OwnedFd, Error> {
    const COMMAND: &str = "perf_event_open";
    let argument = |reason: String| Error::Argument {
        command: COMMAND,
        object: target.describe(),
        reason,
    };
    let (name, offset) = match (pmu.kind, target) {
        (ProbeKind::Kprobe, ProbeTarget::Kernel { function, offset }) => (
            CString::new(function)
                .map_err(|_| argument("a function name holds no NUL byte".to_owned()))?,
            offset,
        ),
        (ProbeKind::Uprobe, ProbeTarget::User { path, offset }) => (
            CString::new(path.as_os_str().as_encoded_bytes())
                .map_err(|_| argument("a path holds no NUL byte".to_owned()))?,
            offset,
        ),
        (kind, _) => return Err(argument(format!("not a target of the {kind} PMU"))),
    };
    let mut attr = PerfEventAttr::new_zeroed();
    attr.type_ = pmu.perf_type;
    attr.size = u32::try_from(size_of::<PerfEventAttr>()).unwrap_or(u32::MAX);
    if retprobe {
        attr.config = 1u64 << pmu.retprobe_bit;
    }
    // `kprobe_func`/`uprobe_path`: read by the kernel during the call, while `name`
    // lives here.
    attr.config1 = name.as_ptr() as u64;
    attr.config2 = offset;
    let bytes = attr.as_mut_bytes();
    loop {
        // SAFETY: see the module header: `bytes` is the whole attr, `size` says its
        // length, and the one pointer in it is `name`, alive for the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                bytes.as_mut_ptr(),
                -1 as libc::pid_t,
                0 as libc::c_int,
                -1 as libc::c_int,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if ret >= 0 {
            let fd = libc::c_int::try_from(ret)
                .map_err(|_| argument(format!("its result {ret} is not a file descriptor")))?;
            // SAFETY: a non-negative result of perf_event_open is a descriptor the
            // kernel gave this process alone.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            let what = if retprobe { "return probe" } else { "probe" };
            return Err(Error::Syscall {
                command: COMMAND,
                object: format!("{} {what} at {}", pmu.kind, target.describe()),
                error,
            });
        }
    }
}

impl Bpf {
    /// Attaches `prog` (a kprobe, uprobe, tracepoint or perf event program) to the
    /// perf event `event` through a new perf-event link (5.15), with `cookie` for
    /// `bpf_get_attach_cookie`. The link holds the event: pinned, it keeps the probe
    /// and the program running after every descriptor of the event is closed. The
    /// kernel has no update and no detach for these links (`EOPNOTSUPP`): the
    /// attachment lasts until the link is freed.
    ///
    /// # Errors
    /// `EINVAL` on a kernel without perf-event links (before 5.15) or for a program
    /// of another type; `EEXIST` when the event runs a program already.
    #[doc(alias = "BPF_LINK_CREATE")]
    pub fn link_create_perf_event(
        &self,
        prog: impl AsFd,
        event: impl AsFd,
        cookie: u64,
    ) -> Result<OwnedFd, Error> {
        let event = event.as_fd();
        let mut attr = LinkCreatePerfEventAttr::new_zeroed();
        attr.prog_fd = raw_fd(prog.as_fd());
        attr.target_fd = raw_fd(event);
        attr.attach_type = AttachType::PerfEvent.into();
        attr.bpf_cookie = cookie;
        self.raw_fd(Command::LinkCreate, &mut attr, || {
            format!("perf_event link to perf event fd {}", event.as_raw_fd())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_bits_are_read_from_config_fields() {
        assert_eq!(parse_format_bit("config:0\n"), Ok(0));
        assert_eq!(parse_format_bit("config:63"), Ok(63));
        assert_eq!(parse_format_bit("config:5-5"), Ok(5));
        for bad in ["config:32-63", "config1:0", "config:", "config:64", "0", ""] {
            assert!(parse_format_bit(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_pmu_is_read_from_its_sysfs_directory_and_a_missing_one_is_named() {
        let root = std::env::temp_dir().join(format!("handover-pmu-{}", std::process::id()));
        let dir = root.join("uprobe/format");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(root.join("uprobe/type"), "8\n").unwrap();
        std::fs::write(dir.join("retprobe"), "config:0\n").unwrap();
        let pmu = ProbePmu::read_under(&root, ProbeKind::Uprobe).unwrap();
        assert_eq!(
            pmu,
            ProbePmu {
                kind: ProbeKind::Uprobe,
                perf_type: 8,
                retprobe_bit: 0
            }
        );
        let missing = ProbePmu::read_under(&root, ProbeKind::Kprobe).unwrap_err();
        assert!(missing.to_string().contains("kprobe/type"), "{missing}");
        std::fs::write(root.join("uprobe/type"), "eight\n").unwrap();
        let bad = ProbePmu::read_under(&root, ProbeKind::Uprobe).unwrap_err();
        assert!(bad.to_string().contains("not a perf type"), "{bad}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_target_of_the_other_pmu_is_refused_before_the_call() {
        let pmu = ProbePmu {
            kind: ProbeKind::Kprobe,
            perf_type: 6,
            retprobe_bit: 0,
        };
        let user = ProbeTarget::User {
            path: Path::new("/bin/true"),
            offset: 0,
        };
        let e = probe_open(&pmu, user, false).unwrap_err();
        assert!(matches!(e, Error::Argument { .. }), "{e}");
        let nul = ProbeTarget::Kernel {
            function: "a\0b",
            offset: 0,
        };
        assert!(matches!(
            probe_open(&pmu, nul, false),
            Err(Error::Argument { .. })
        ));
    }
}
