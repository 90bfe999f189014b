//! Errors of the bpf(2) layer.

use std::io;

/// `ENOTSUPP`, a kernel-internal errno that some bpf(2) commands return to user space.
pub(crate) const ENOTSUPP: i32 = 524;

/// The errno values that callers of this layer test [`Error::errno`] against, so that
/// code above the kernel layer needs no libc of its own.
pub mod errno {
    pub use libc::{E2BIG, EACCES, EBUSY, EEXIST, EINVAL, ENOENT, ENOSPC, EOPNOTSUPP, EPERM};
}

/// A failed bpf(2) command, or an argument refused before the kernel saw it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel (or the backend) refused the command.
    ///
    /// The errno is part of the message and not returned as [`std::error::Error::source`],
    /// so that a printed chain of errors names it once.
    #[error("{command} on {object} failed: {error}")]
    Syscall {
        /// The command, e.g. `BPF_MAP_CREATE`.
        command: &'static str,
        /// What the command was applied to, e.g. `map "counters"` or `map fd 7`.
        object: String,
        /// The errno (in the message, not a source).
        error: io::Error,
    },
    /// The verifier (or the BTF checker) rejected a program (or a BTF blob); its log
    /// says why.
    ///
    /// Its message shows the end of the log (where the verifier says why it stopped),
    /// at most [`LOG_LINES_SHOWN`] lines; the whole log is in `log`.
    #[error(
        "{command} on {object} failed: {error}\n{}:\n{}",
        log_title(command),
        log_tail(log)
    )]
    Rejected {
        /// `BPF_PROG_LOAD` or `BPF_BTF_LOAD`.
        command: &'static str,
        /// The program or BTF blob.
        object: String,
        /// The errno (in the message, not a source).
        error: io::Error,
        /// The kernel's log, possibly truncated at its end.
        log: String,
    },
    /// An argument that the kernel would refuse, caught before the call.
    #[error("{command} on {object}: {reason}")]
    Argument {
        /// The command that was about to run.
        command: &'static str,
        /// What it was about to be applied to.
        object: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A system file the layer depends on could not be read or understood.
    #[error("{what}: {reason}")]
    Config {
        /// The file.
        what: String,
        /// What went wrong.
        reason: String,
    },
}

/// Lines of a kernel log that the message of [`Error::Rejected`] shows: the verifier
/// walks up to a million instructions, logging one line each, and says why it stopped
/// at the end.
pub const LOG_LINES_SHOWN: usize = 100;

/// The last [`LOG_LINES_SHOWN`] lines of `log`, after a line counting those left out.
fn log_tail(log: &str) -> std::borrow::Cow<'_, str> {
    let total = log.lines().count();
    if total <= LOG_LINES_SHOWN {
        return log.into();
    }
    let skipped = total - LOG_LINES_SHOWN;
    let tail: Vec<&str> = log.lines().skip(skipped).collect();
    format!(
        "({skipped} earlier lines of the log left out)\n{}",
        tail.join("\n")
    )
    .into()
}

/// What the log of a logged command is called: the BTF checker writes the log of
/// `BPF_BTF_LOAD`, the verifier that of `BPF_PROG_LOAD`.
fn log_title(command: &str) -> &'static str {
    if command == super::Command::BtfLoad.name() {
        "BTF log"
    } else {
        "verifier log"
    }
}

impl Error {
    /// The errno of a failed command, if the kernel returned one.
    #[must_use]
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Syscall { error, .. } | Error::Rejected { error, .. } => error.raw_os_error(),
            Error::Argument { .. } | Error::Config { .. } => None,
        }
    }

    /// The verifier or BTF log of a rejected load.
    #[must_use]
    pub fn log(&self) -> Option<&str> {
        match self {
            Error::Rejected { log, .. } => Some(log),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_btf_blob_shows_a_btf_log_not_a_verifier_log() {
        let rejected = |command| Error::Rejected {
            command,
            object: "x".to_owned(),
            error: io::Error::from_raw_os_error(libc::EINVAL),
            log: "magic: 0xeb9f".to_owned(),
        };
        let btf = rejected("BPF_BTF_LOAD").to_string();
        assert!(btf.contains("\nBTF log:\nmagic"), "{btf}");
        assert!(!btf.contains("verifier"), "{btf}");
        let prog = rejected("BPF_PROG_LOAD").to_string();
        assert!(prog.contains("\nverifier log:\nmagic"), "{prog}");
    }

    /// Walks `e` and its sources as an error report prints them.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut cur = e.source();
        while let Some(c) = cur {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cur = c.source();
        }
        text
    }

    #[test]
    fn a_chained_syscall_error_names_its_errno_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("creating map counters")]
        struct Outer(#[source] Error);
        let inner = Error::Syscall {
            command: "BPF_MAP_CREATE",
            object: "hash map \"counters\"".to_owned(),
            error: io::Error::from_raw_os_error(libc::EPERM),
        };
        let text = chain(&Outer(inner));
        assert_eq!(
            text,
            "creating map counters: BPF_MAP_CREATE on hash map \"counters\" failed: \
             Operation not permitted (os error 1)"
        );
        let rejected = Error::Rejected {
            command: "BPF_PROG_LOAD",
            object: "xdp program \"p\"".to_owned(),
            error: io::Error::from_raw_os_error(libc::EACCES),
            log: "0: (95) exit\nR0 !read_ok".to_owned(),
        };
        let text = chain(&rejected);
        assert_eq!(text.matches("Permission denied").count(), 1, "{text}");
        assert!(
            text.ends_with("verifier log:\n0: (95) exit\nR0 !read_ok"),
            "{text}"
        );
    }
}
