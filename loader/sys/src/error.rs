//! Errors of the bpf(2) layer.

use std::io;

/// `ENOTSUPP`, a kernel-internal errno that some bpf(2) commands return to user space.
pub(crate) const ENOTSUPP: i32 = 524;

/// A failed bpf(2) command, or an argument refused before the kernel saw it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel (or the backend) refused the command.
    #[error("{command} on {object} failed: {source}")]
    Syscall {
        /// The command, e.g. `BPF_MAP_CREATE`.
        command: &'static str,
        /// What the command was applied to, e.g. `map "counters"` or `map fd 7`.
        object: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// The verifier (or the BTF checker) rejected a program (or a BTF blob); its log
    /// says why.
    #[error(
        "{command} on {object} failed: {source}\n{}:\n{log}",
        log_title(command)
    )]
    Rejected {
        /// `BPF_PROG_LOAD` or `BPF_BTF_LOAD`.
        command: &'static str,
        /// The program or BTF blob.
        object: String,
        /// The errno.
        #[source]
        source: io::Error,
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
            Error::Syscall { source, .. } | Error::Rejected { source, .. } => source.raw_os_error(),
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
            source: io::Error::from_raw_os_error(libc::EINVAL),
            log: "magic: 0xeb9f".to_owned(),
        };
        let btf = rejected("BPF_BTF_LOAD").to_string();
        assert!(btf.contains("\nBTF log:\nmagic"), "{btf}");
        assert!(!btf.contains("verifier"), "{btf}");
        let prog = rejected("BPF_PROG_LOAD").to_string();
        assert!(prog.contains("\nverifier log:\nmagic"), "{prog}");
    }
}
