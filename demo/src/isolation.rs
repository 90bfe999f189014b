//! A private place to run the dataplane: a bpffs mounted on a temporary directory, a
//! cgroup of its own under the cgroup v2 root, and a network namespace of its own
//! with `lo` up. Every guard undoes its work on drop, so a panic, an error or a
//! Ctrl-C that unwinds to the guard still cleans up. Used by `handover demo` and by
//! this crate's kernel tests.
//!
//! # Safety
//! The libc calls here (`unshare`, `setns`, `ioctl`) take integer flags, descriptors
//! owned by the caller for the length of the call, and a zero-initialised `ifreq`
//! owned by the caller.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The cgroup v2 hierarchy's mount point on the machines this runs on.
pub const CGROUP2_ROOTS: &[&str] = &["/sys/fs/cgroup/unified", "/sys/fs/cgroup"];

/// Why a private environment could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IsolationError {
    /// A system call or file operation failed.
    #[error("{what} {path}: {source} (needs root: CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF)")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path or object.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// bpffs could not be mounted.
    #[error(transparent)]
    Bpffs(#[from] handover_bpffs::Error),
    /// No cgroup v2 hierarchy is mounted.
    #[error("no cgroup v2 hierarchy at {}: mount one (mount -t cgroup2 none /sys/fs/cgroup)", CGROUP2_ROOTS.join(" or "))]
    NoCgroup2,
}

fn io_err(
    what: &'static str,
    path: impl std::fmt::Display,
) -> impl FnOnce(io::Error) -> IsolationError {
    let path = path.to_string();
    move |source| IsolationError::Io { what, path, source }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other guard of this process uses: `PREFIX-PID-N`.
#[must_use]
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory under the system temporary directory, removed with its contents on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `TMP/PREFIX-PID-N`.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn new(prefix: &str) -> Result<Self, IsolationError> {
        let path = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir(&path).map_err(io_err("creating directory", path.display()))?;
        Ok(Self { path })
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A fresh bpffs instance mounted on a temporary directory; unmounted on drop (pins
/// still held open by a process live on until it closes them).
#[derive(Debug)]
pub struct Bpffs {
    dir: TempDir,
}

impl Bpffs {
    /// Mounts a new bpffs (mode 0700) on a new temporary directory.
    ///
    /// # Errors
    /// The directory cannot be made or `mount(2)` fails.
    pub fn mount() -> Result<Self, IsolationError> {
        let dir = TempDir::new("handover-bpffs")?;
        handover_bpffs::mount_bpffs(dir.path())?;
        Ok(Self { dir })
    }

    /// The mount point.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = handover_bpffs::unmount_bpffs(self.dir.path());
    }
}

/// A cgroup under the cgroup v2 root; removed on drop (after its processes ended).
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    dir: File,
}

impl Cgroup {
    /// The cgroup v2 root of this machine.
    ///
    /// # Errors
    /// [`IsolationError::NoCgroup2`].
    pub fn root() -> Result<&'static Path, IsolationError> {
        CGROUP2_ROOTS
            .iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.procs").is_file() && p.join("cgroup.controllers").is_file())
            .ok_or(IsolationError::NoCgroup2)
    }

    /// Creates `ROOT/PREFIX-PID-N`.
    ///
    /// # Errors
    /// No cgroup v2 hierarchy, or the directory cannot be made.
    pub fn new(prefix: &str) -> Result<Self, IsolationError> {
        let path = Self::root()?.join(unique(prefix));
        std::fs::create_dir(&path).map_err(io_err("creating cgroup", path.display()))?;
        let dir = File::open(&path).map_err(io_err("opening cgroup", path.display()))?;
        Ok(Self { path, dir })
    }

    /// The cgroup directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup directory, open, to attach programs to.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// Inode number of the cgroup directory: its cgroup id.
    ///
    /// # Errors
    /// `fstat` fails.
    pub fn id(&self) -> Result<u64, IsolationError> {
        let meta = self
            .dir
            .metadata()
            .map_err(io_err("reading cgroup", self.path.display()))?;
        Ok(std::os::unix::fs::MetadataExt::ino(&meta))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // A task that just exited may still be listed for a moment: retry briefly.
        for _ in 0..100 {
            match std::fs::remove_dir(&self.path) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => return,
            }
        }
    }
}

/// Moves this whole process into `cgroup` (a child process: never a test runner, and
/// never a process that must leave it again).
///
/// # Errors
/// `cgroup.procs` cannot be written.
pub fn join_cgroup(cgroup: &Path) -> Result<(), IsolationError> {
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, b"0").map_err(io_err("joining cgroup", procs.display()))
}

/// Moves the calling thread into a new network namespace and brings its `lo` up.
///
/// # Errors
/// `unshare(CLONE_NEWNET)` or an interface ioctl fails.
pub fn enter_new_netns() -> Result<(), IsolationError> {
    // SAFETY: see the module header; CLONE_NEWNET is allowed in threaded processes
    // and moves the calling thread only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io_err("unshare", "CLONE_NEWNET")(io::Error::last_os_error()));
    }
    lo_up()
}

fn lo_up() -> Result<(), IsolationError> {
    // A socket to send the interface ioctls through (bound to nothing: `lo` is down).
    let sock = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))
        .map_err(io_err("opening a socket in", "the new network namespace"))?;
    let fd = sock.as_raw_fd();
    // SAFETY: an all-zero ifreq is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // SAFETY: `fd` is the live socket above; `ifr` is a local ifreq naming `lo`.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &raw mut ifr) } != 0 {
        return Err(io_err("reading flags of", "lo")(io::Error::last_os_error()));
    }
    // SAFETY: as above; the flags union member was just filled by SIOCGIFFLAGS.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= libc::c_short::try_from(libc::IFF_UP).unwrap_or(1);
    }
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &raw mut ifr) } != 0 {
        return Err(io_err("bringing up", "lo")(io::Error::last_os_error()));
    }
    Ok(())
}

/// A network namespace of its own with `lo` up, held open by a descriptor (so it
/// outlives the thread that made it), that threads and child processes can enter.
/// The namespace goes away when the descriptor and every process in it are gone.
#[derive(Debug)]
pub struct NetNs {
    ns: File,
}

impl NetNs {
    /// Makes a new network namespace (in a short-lived thread, so the caller stays
    /// where it is).
    ///
    /// # Errors
    /// `unshare`, bringing `lo` up or opening the namespace fails.
    pub fn new() -> Result<Self, IsolationError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                enter_new_netns()?;
                let ns = File::open("/proc/thread-self/ns/net")
                    .map_err(io_err("opening", "/proc/thread-self/ns/net"))?;
                Ok(Self { ns })
            })
            .join()
            .unwrap_or_else(|_| {
                Err(io_err("making", "a network namespace")(io::Error::other(
                    "the thread panicked",
                )))
            })
        })
    }

    /// Another handle on the same namespace.
    ///
    /// # Errors
    /// `dup` fails.
    pub fn try_clone(&self) -> Result<Self, IsolationError> {
        let ns = self
            .ns
            .try_clone()
            .map_err(io_err("duplicating", "the network namespace descriptor"))?;
        Ok(Self { ns })
    }

    /// Moves the calling thread into this namespace.
    ///
    /// # Errors
    /// `setns` fails.
    pub fn enter(&self) -> Result<(), IsolationError> {
        // SAFETY: see the module header; `self.ns` is an open namespace descriptor.
        if unsafe { libc::setns(self.ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io_err("entering", "the network namespace")(
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Runs `f` on a thread inside this namespace and returns what it returns: its
    /// sockets are the namespace's, and processes it spawns start there.
    ///
    /// # Errors
    /// The thread cannot enter the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, IsolationError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter()?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// The namespace's descriptor.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ns.as_fd()
    }
}
