//! bpffs mounts, pins and atomic pin replacement through directory fds.
//!
//! [`PinRoot`] owns a directory on a bpffs and every pin handover makes under it:
//! paths are walked one component at a time with `openat(O_PATH | O_DIRECTORY |
//! O_NOFOLLOW)`, each directory is proven to be bpffs with `fstatfs`, names are
//! checked before the kernel sees them ([`PinPath`]), replacements are a pin at a
//! temporary name followed by one `rename` over the target, and a [`Manifest`] kept
//! outside the root records every pin and directory created, so uninstall and crash
//! recovery remove exactly what is ours.
//!
//! This crate depends on `handover-sys` only, for `BPF_OBJ_PIN`/`BPF_OBJ_GET`: every
//! bpf(2) call of handover goes through its single choke point (`handover_sys::Bpf`),
//! and bpffs adds what is about paths, names and renames. The filesystem calls that
//! std lacks (`openat`, `renameat2`, `fstatfs`, `mount`) are in one module,
//! `fsys.rs`, the only unsafe code of this crate.
#![deny(unsafe_code)]

mod fsys;
mod manifest;
mod mount;
mod name;
mod root;

pub use fsys::BPF_FS_MAGIC;
pub use manifest::{Entry, EntryKind, Manifest};
pub use mount::{BpffsMount, find_mounts, is_bpffs, mount_bpffs, parse_mountinfo, unmount_bpffs};
pub use name::{MAX_NAME, PinPath};
pub use root::{PinRoot, Recovery};

/// A failed bpffs operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A pin path that bpffs or the pin root would refuse.
    #[error("invalid pin path {name:?}: {reason}")]
    InvalidName {
        /// The path as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// To which path.
        path: String,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
    /// A directory that should be on bpffs is not.
    #[error("{path} is not on a bpffs; mount one with `mount -t bpf bpf DIR`")]
    NotBpffs {
        /// The directory.
        path: String,
    },
    /// A path component is a symlink or not a directory.
    #[error("{path} is a symlink or not a directory; pin paths never follow symlinks")]
    NotADirectory {
        /// The path under the pin root.
        path: String,
    },
    /// A pin path names a symlink.
    #[error("{path} is a symlink; pins are opened without following symlinks")]
    Symlink {
        /// The path under the pin root.
        path: String,
    },
    /// The manifest cannot be used.
    #[error("manifest {path}: {reason}")]
    Manifest {
        /// The manifest file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A pin or get failed in the kernel.
    #[error("{op} {path}: {source}")]
    Bpf {
        /// What was being done.
        op: &'static str,
        /// The pin path under the root.
        path: String,
        /// The bpf(2) error.
        #[source]
        source: handover_sys::Error,
    },
}

impl Error {
    /// The errno behind this error, if there is one.
    #[must_use]
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            Error::Bpf { source, .. } => source.errno(),
            _ => None,
        }
    }
}
