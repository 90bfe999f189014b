//! The engine's errors: each says what was being done, to what, and what to do next.

use std::path::PathBuf;

use crate::kernel::KernelError;

/// A failed engine operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file of the state directory could not be read or written.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A state file failed its checksum or does not decode: it is not trusted.
    #[error(
        "state file {} is not trusted: {reason}; move it away to start from the pins alone",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another process holds the state directory's lock.
    #[error(
        "{} is locked by another process (a daemon running or upgrading); wait for it or stop it",
        path.display()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// An object of the set cannot be modelled.
    #[error("object {object}: {reason}")]
    Object {
        /// The object's name.
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// The options are inconsistent with the objects.
    #[error("options: {0}")]
    Options(String),
    /// A kernel call of a step failed.
    #[error("{step}: {what}: {source}")]
    Kernel {
        /// The step.
        step: &'static str,
        /// What it was doing.
        what: String,
        /// The kernel's refusal.
        #[source]
        source: KernelError,
    },
    /// Moving map entries failed.
    #[error("{step} of map {map}: {reason}")]
    Data {
        /// The step.
        step: &'static str,
        /// The map.
        map: String,
        /// What failed.
        reason: String,
    },
    /// The plan would lose entries and the caller did not allow it.
    #[error("the plan loses entries of {maps:?}; apply with allow_state_loss to accept that")]
    StateLoss {
        /// The maps whose entries would be lost.
        maps: Vec<String>,
    },
    /// A live map holds more entries than its replacement can take.
    #[error(
        "map {map} holds {live} entries, more than the new capacity {capacity}, what its \
         replacement takes without dropping any ({why}); nothing was changed: raise \
         max_entries or remove entries first"
    )]
    DoesNotFit {
        /// The map.
        map: String,
        /// Entries in the live map.
        live: usize,
        /// Entries the new map takes without dropping any.
        capacity: u32,
        /// Why the capacity is what it is.
        why: String,
    },
    /// The live state is not the one the plan was computed against.
    #[error("the plan no longer applies: {0}; compute a new plan")]
    Stale(String),
    /// An interrupted upgrade must be recovered first.
    #[error("an interrupted upgrade ({tx}) is in the journal; recover first")]
    Interrupted {
        /// Its transaction id.
        tx: String,
    },
    /// The upgrade was aborted and rolled back (the live set is the old one).
    #[error("upgrade aborted and rolled back: {reason}")]
    Aborted {
        /// Why.
        reason: String,
    },
    /// A named map or program does not exist in the installed set.
    #[error("no {kind} named {name} in the installed set")]
    NoSuch {
        /// `map` or `program`.
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// A typed handle's key or value size does not match the map.
    #[error("map {map}: {what} is {actual} bytes, the type given is {expected}")]
    Size {
        /// The map.
        map: String,
        /// `key` or `value`.
        what: &'static str,
        /// Bytes of the map's.
        actual: usize,
        /// Bytes of the type's.
        expected: usize,
    },
    /// A crash injected by a failpoint (tests only): the process is to die here, so
    /// nothing is cleaned up.
    #[error("crash injected at {point}")]
    Crashed {
        /// The failpoint.
        point: String,
    },
}
