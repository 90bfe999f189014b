//! The manifest: which descriptors travel, by name and kind, and the checks that a
//! descriptor is what its entry says.

use std::collections::BTreeSet;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use serde::{Deserialize, Serialize};

use crate::sys;

/// What a handed-over descriptor is, checked on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FdKind {
    /// A listening stream socket (`SO_TYPE` is `SOCK_STREAM`, `SO_ACCEPTCONN` set).
    Listener,
    /// A bpf map (`anon_inode:bpf-map`).
    BpfMap,
    /// A bpf program (`anon_inode:bpf-prog`).
    BpfProg,
    /// A bpf link (`anon_inode:bpf_link`, or `anon_inode:bpf-link` when reopened).
    BpfLink,
    /// Anything else; not checked.
    Other,
}

impl FdKind {
    /// The `/proc/self/fd` link targets of a bpf object of this kind.
    const fn anon_inodes(self) -> &'static [&'static str] {
        match self {
            Self::BpfMap => &["anon_inode:bpf-map"],
            Self::BpfProg => &["anon_inode:bpf-prog"],
            // The kernel names the file of a new link with an underscore
            // (`bpf_link_prime`) and that of a link reopened from a pin or by id
            // with a dash (`bpf_link_new_fd`).
            Self::BpfLink => &["anon_inode:bpf_link", "anon_inode:bpf-link"],
            Self::Listener | Self::Other => &[],
        }
    }
}

impl fmt::Display for FdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Listener => "listening socket",
            Self::BpfMap => "bpf map",
            Self::BpfProg => "bpf program",
            Self::BpfLink => "bpf link",
            Self::Other => "descriptor",
        })
    }
}

/// One named descriptor in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdEntry {
    /// The name both sides know it by (`admin`, `maps/backend`).
    pub name: String,
    /// What it is.
    pub kind: FdKind,
}

/// What the old daemon hands over; the descriptors travel with it in the same order
/// as `fds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Who sends it, for logs (`demo-daemon v1 generation 3`).
    pub label: String,
    /// The sender's process id, as it sees itself.
    pub pid: u32,
    /// The descriptors, in the order they travel.
    pub fds: Vec<FdEntry>,
    /// Whatever else the application passes along (a config digest, a generation).
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// A descriptor that is not what its manifest entry says, or a manifest that does
/// not hold together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// A descriptor of the wrong kind.
    #[error("descriptor {name:?} should be a {expected} but is {actual}")]
    WrongKind {
        /// Its name.
        name: String,
        /// What the manifest says.
        expected: FdKind,
        /// What it is (its `/proc/self/fd` link, and socket facts).
        actual: String,
    },
    /// Two entries with one name.
    #[error("the manifest names {name:?} twice")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// An entry without a name.
    #[error("a manifest entry has an empty name")]
    EmptyName,
    /// More descriptors than one message can carry.
    #[error("{count} descriptors; one handoff carries at most {max}")]
    TooMany {
        /// Entries.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The kind could not be checked.
    #[error("checking descriptor {name:?}: {source}")]
    Inspect {
        /// Its name.
        name: String,
        /// The failed call.
        #[source]
        source: std::io::Error,
    },
}

/// What `fd` is, for error messages: its `/proc/self/fd` link target.
pub(crate) fn describe(fd: BorrowedFd<'_>) -> String {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match std::fs::read_link(&link) {
        Ok(target) => target.to_string_lossy().into_owned(),
        Err(e) => format!("unknown ({link}: {e})"),
    }
}

/// Checks that `fd` is a `kind`.
pub(crate) fn check_kind(
    name: &str,
    kind: FdKind,
    fd: BorrowedFd<'_>,
) -> Result<(), ManifestError> {
    let wrong = |actual: String| ManifestError::WrongKind {
        name: name.to_owned(),
        expected: kind,
        actual,
    };
    let inspect = |source| ManifestError::Inspect {
        name: name.to_owned(),
        source,
    };
    match kind {
        FdKind::Other => Ok(()),
        FdKind::Listener => match sys::socket_kind(fd).map_err(inspect)? {
            None => Err(wrong(format!("not a socket ({})", describe(fd)))),
            Some(s) if !s.stream => Err(wrong(format!(
                "a socket but not a stream socket ({})",
                describe(fd)
            ))),
            Some(s) if !s.listening => Err(wrong(format!(
                "a stream socket that is not listening ({})",
                describe(fd)
            ))),
            Some(_) => Ok(()),
        },
        FdKind::BpfMap | FdKind::BpfProg | FdKind::BpfLink => {
            let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
            let target = std::fs::read_link(&link).map_err(inspect)?;
            if kind
                .anon_inodes()
                .iter()
                .any(|want| target.as_os_str() == *want)
            {
                Ok(())
            } else {
                Err(wrong(target.to_string_lossy().into_owned()))
            }
        }
    }
}

/// Checks that the names are unique and not empty, and the count is within one
/// message.
pub(crate) fn check_entries(entries: &[FdEntry]) -> Result<(), ManifestError> {
    if entries.len() > sys::MAX_FDS_PER_MESSAGE {
        return Err(ManifestError::TooMany {
            count: entries.len(),
            max: sys::MAX_FDS_PER_MESSAGE,
        });
    }
    let mut seen = BTreeSet::new();
    for e in entries {
        if e.name.is_empty() {
            return Err(ManifestError::EmptyName);
        }
        if !seen.insert(e.name.as_str()) {
            return Err(ManifestError::DuplicateName {
                name: e.name.clone(),
            });
        }
    }
    Ok(())
}

/// Named, owned descriptors: what an offer holds and what a take-over receives.
/// Dropping it closes every descriptor still in it.
#[derive(Debug, Default)]
pub struct NamedFds {
    entries: Vec<(FdEntry, OwnedFd)>,
}

impl NamedFds {
    /// Removes the descriptor named `name` and gives it to the caller.
    pub fn take(&mut self, name: &str) -> Option<OwnedFd> {
        let i = self.entries.iter().position(|(e, _)| e.name == name)?;
        Some(self.entries.remove(i).1)
    }

    /// The descriptor named `name`, borrowed.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.entries
            .iter()
            .find(|(e, _)| e.name == name)
            .map(|(_, fd)| fd.as_fd())
    }

    /// The entries still held, in manifest order.
    pub fn entries(&self) -> impl Iterator<Item = &FdEntry> {
        self.entries.iter().map(|(e, _)| e)
    }

    /// How many descriptors are still held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every held descriptor with its entry.
    pub fn into_entries(self) -> Vec<(FdEntry, OwnedFd)> {
        self.entries
    }

    pub(crate) fn push(&mut self, entry: FdEntry, fd: OwnedFd) {
        self.entries.push((entry, fd));
    }

    pub(crate) fn borrowed(&self) -> Vec<BorrowedFd<'_>> {
        self.entries.iter().map(|(_, fd)| fd.as_fd()).collect()
    }

    pub(crate) fn manifest_entries(&self) -> Vec<FdEntry> {
        self.entries.iter().map(|(e, _)| e.clone()).collect()
    }
}
