//! Errors of the data path.

use std::io;
use std::path::PathBuf;

use super::plan::ConvertError;
use super::sys;

/// A failure while copying, passing deltas or reconciling a map; each variant says
/// which map and what was being done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// A map command failed.
    #[error("map {map:?}: {doing}: {source}")]
    Kernel {
        /// The map.
        map: String,
        /// What was being done (`reading the old map`, ...).
        doing: &'static str,
        /// The bpf(2) error.
        #[source]
        source: sys::Error,
    },
    /// A key or value could not be converted to the new layout.
    #[error("map {map:?}: converting the {side} of an entry: {source}")]
    Convert {
        /// The map.
        map: String,
        /// `key` or `value`.
        side: &'static str,
        /// Why.
        #[source]
        source: ConvertError,
    },
    /// The merge base file could not be written or read.
    #[error("merge base {path}: {doing}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        doing: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The merge base file is not one this code wrote, or is damaged; it cannot be
    /// trusted, and the reconcile must not run from it.
    #[error("merge base {path} is not usable: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A failpoint between two batches fired (crash tests): the work stopped there as
    /// if the process had been killed.
    #[error("stopped at failpoint {point}")]
    Interrupted {
        /// The failpoint.
        point: String,
    },
    /// The arguments do not fit the maps (sizes, merge rules, a field a rule names).
    #[error("map {map:?}: {reason}")]
    Invalid {
        /// The map.
        map: String,
        /// What does not fit, and what would.
        reason: String,
    },
}

/// A closure building [`MigrateError::Kernel`] for `map` and `doing`.
pub(crate) fn kernel(map: &str, doing: &'static str) -> impl FnOnce(sys::Error) -> MigrateError {
    let map = map.to_owned();
    move |source| MigrateError::Kernel { map, doing, source }
}

/// Evaluates the failpoint `point` between two batches of a copy or a reconcile (the
/// `fail` crate; without its `failpoints` feature this does nothing).
///
/// # Errors
/// [`MigrateError::Interrupted`] when the failpoint fires.
#[allow(
    clippy::unnecessary_wraps,
    reason = "always Ok without the failpoints feature"
)]
pub(crate) fn between_batches(point: Option<&'static str>) -> Result<(), MigrateError> {
    let Some(point) = point else {
        return Ok(());
    };
    let _ = point;
    fail::fail_point!(point, |_| Err(MigrateError::Interrupted {
        point: point.to_owned()
    }));
    Ok(())
}
