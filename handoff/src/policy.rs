//! Who may take part in a handoff: the peer's credentials as the kernel recorded
//! them (`SO_PEERCRED`), checked before anything is sent.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use crate::sys;

/// Which peers are trusted.
///
/// A peer must run as our effective uid or as root. With [`PeerPolicy::expect_exe`]
/// its executable (`/proc/PID/exe`) must also be the given file.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    expected_exe: Option<PathBuf>,
}

impl PeerPolicy {
    /// Peers of our uid, or root.
    #[must_use]
    pub fn same_user() -> Self {
        Self::default()
    }

    /// Also require the peer to run the executable at `path` (compared after
    /// resolving symlinks; a peer whose executable was deleted or replaced does
    /// not match).
    #[must_use]
    pub fn expect_exe(mut self, path: impl Into<PathBuf>) -> Self {
        self.expected_exe = Some(path.into());
        self
    }

    /// Checks the peer of `sock`.
    pub(crate) fn check(&self, sock: BorrowedFd<'_>) -> Result<Peer, Rejection> {
        let cred = sys::peer_cred(sock).map_err(Rejection::NoCredentials)?;
        let ours = sys::euid();
        let peer = Peer {
            pid: cred.pid,
            uid: cred.uid,
            gid: cred.gid,
        };
        if cred.uid != ours && cred.uid != 0 {
            return Err(Rejection::OtherUser { peer, ours });
        }
        if let Some(expected) = &self.expected_exe {
            check_exe(peer, expected)?;
        }
        Ok(peer)
    }
}

fn check_exe(peer: Peer, expected: &Path) -> Result<(), Rejection> {
    let link = format!("/proc/{}/exe", peer.pid);
    let actual =
        std::fs::read_link(&link).map_err(|source| Rejection::ExeUnknown { peer, source })?;
    let expected_real = std::fs::canonicalize(expected).unwrap_or_else(|_| expected.to_owned());
    // The pid is read while the peer's connection is open; a peer that exited and
    // had its pid reused in between could pass as the new process, a window this
    // check shares with every /proc-based one (SO_PEERPIDFD closes it on 6.5+).
    if actual == expected_real {
        Ok(())
    } else {
        Err(Rejection::WrongExe {
            peer,
            expected: expected_real,
            actual,
        })
    }
}

/// A peer's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Its process id (0 if it lives in a pid namespace we cannot see).
    pub pid: u32,
    /// Its user id.
    pub uid: u32,
    /// Its group id.
    pub gid: u32,
}

/// Why a peer was turned away.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// `SO_PEERCRED` failed.
    #[error("cannot read the peer's credentials: {0}")]
    NoCredentials(#[source] io::Error),
    /// Another user.
    #[error("peer pid {} runs as uid {}, neither ours (uid {ours}) nor root", peer.pid, peer.uid)]
    OtherUser {
        /// The peer.
        peer: Peer,
        /// Our effective uid.
        ours: u32,
    },
    /// Another program.
    #[error("peer pid {} runs {}, not the expected {}", peer.pid, actual.display(), expected.display())]
    WrongExe {
        /// The peer.
        peer: Peer,
        /// The executable required.
        expected: PathBuf,
        /// The one it runs.
        actual: PathBuf,
    },
    /// The executable could not be read.
    #[error("cannot read the executable of peer pid {}: {source}", peer.pid)]
    ExeUnknown {
        /// The peer.
        peer: Peer,
        /// The failed call.
        #[source]
        source: io::Error,
    },
}

/// Whether process `pid` has exited, looking for up to `wait`: every thread of it
/// is gone or a zombie. Threads matter: the descriptors of a killed process close
/// only when its last thread exits, which can be after the main thread became a
/// zombie. An unknown pid (0) counts as alive, the safe answer.
pub(crate) fn process_exited(pid: u32, wait: std::time::Duration) -> bool {
    if pid == 0 {
        return false;
    }
    let until = std::time::Instant::now() + wait;
    loop {
        let gone = all_threads_exited(pid);
        if gone || std::time::Instant::now() >= until {
            return gone;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn all_threads_exited(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        match std::fs::read_to_string(task.path().join("stat")) {
            // Reaped while we looked.
            Err(_) => true,
            // The state letter follows the command name, which ends at the last ')'.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .is_some_and(|state| matches!(state, 'Z' | 'X' | 'x')),
        }
    })
}
