//! The steps of an upgrade, in the order they run, and the failpoints derived from
//! them: the crash tests take their list from [`failpoints`], so a step added here is
//! crash-tested without anyone remembering to.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// One step of an install or upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Capacity checks against live counts; replacement maps and every program
    /// created and pinned at temporary pins; nothing live changes.
    Preflight,
    /// Entries copied from the live maps into their replacements, with conversion.
    Copy,
    /// Entries changed since the copy carried over while the old programs run.
    Delta,
    /// Every attachment moved to the new programs.
    Switch,
    /// Wait until no old program can still be running.
    Synchronize,
    /// Three-way reconcile of what the old programs wrote after the copy.
    Reconcile,
    /// Temporary pins exchanged over the live ones; the new state written.
    Commit,
    /// Rollback pins and removed maps released; the journal closed.
    Release,
}

impl Step {
    /// Every step, in execution order.
    pub const ALL: [Step; 8] = [
        Step::Preflight,
        Step::Copy,
        Step::Delta,
        Step::Switch,
        Step::Synchronize,
        Step::Reconcile,
        Step::Commit,
        Step::Release,
    ];

    /// The step's name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Step::Preflight => "preflight",
            Step::Copy => "copy",
            Step::Delta => "delta",
            Step::Switch => "switch",
            Step::Synchronize => "synchronize",
            Step::Reconcile => "reconcile",
            Step::Commit => "commit",
            Step::Release => "release",
        }
    }

    /// Whether a crash after this step started is finished forward: from the switch
    /// on, new programs may have written to the new maps, which a rollback would lose.
    #[must_use]
    pub fn point_of_no_return(self) -> bool {
        self >= Step::Switch
    }

    /// The failpoints of the step: at its start (after the journal says so), per
    /// item it works on (a map copied, a link switched, a pin exchanged), and at its
    /// end (before the journal records it).
    const fn points(self) -> [&'static str; 3] {
        match self {
            Step::Preflight => ["preflight:start", "preflight:item", "preflight:end"],
            Step::Copy => ["copy:start", "copy:item", "copy:end"],
            Step::Delta => ["delta:start", "delta:item", "delta:end"],
            Step::Switch => ["switch:start", "switch:item", "switch:end"],
            Step::Synchronize => ["synchronize:start", "synchronize:item", "synchronize:end"],
            Step::Reconcile => ["reconcile:start", "reconcile:item", "reconcile:end"],
            Step::Commit => ["commit:start", "commit:item", "commit:end"],
            Step::Release => ["release:start", "release:item", "release:end"],
        }
    }

    /// The failpoint evaluated when the step starts (after the journal says so).
    #[must_use]
    pub const fn start_point(self) -> &'static str {
        self.points()[0]
    }

    /// The failpoint evaluated once per item the step works on, before each.
    #[must_use]
    pub const fn item_point(self) -> &'static str {
        self.points()[1]
    }

    /// The failpoint evaluated when the step's effect is complete, before the journal
    /// records it.
    #[must_use]
    pub const fn end_point(self) -> &'static str {
        self.points()[2]
    }

    /// The failpoint evaluated inside the work on one map, before each batch of
    /// entries, for the steps that work by batches: a crash in the middle of a
    /// copy, or of a reconcile that must then be safe to run again.
    #[must_use]
    pub const fn batch_point(self) -> Option<&'static str> {
        match self {
            Step::Copy => Some("copy:batch"),
            Step::Reconcile => Some("reconcile:batch"),
            _ => None,
        }
    }

    /// Every failpoint of the step, in the order the step meets them.
    #[must_use]
    pub fn all_points(self) -> Vec<&'static str> {
        let mut v = vec![self.start_point(), self.item_point()];
        v.extend(self.batch_point());
        v.push(self.end_point());
        v
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Failpoints of the rollback path (run when an upgrade is abandoned before its
/// switch, or aborted at a compare-and-swap mismatch).
pub const ROLLBACK_POINTS: [&str; 3] = ["rollback:start", "rollback:item", "rollback:end"];

/// Failpoints of re-attaching on a restart and of uninstall.
pub const OTHER_POINTS: [&str; 2] = ["reattach:item", "uninstall:item"];

/// Every failpoint of the engine.
#[must_use]
pub fn failpoints() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Step::ALL.iter().flat_map(|s| s.all_points()).collect();
    v.extend(ROLLBACK_POINTS);
    v.extend(OTHER_POINTS);
    v
}

/// Evaluates the failpoint `point`: with the `failpoints` feature and the point
/// configured to `return`, the engine stops there as if the process had been killed.
///
/// # Errors
/// [`Error::Crashed`] when the failpoint fires.
#[allow(
    clippy::unnecessary_wraps,
    reason = "always Ok without the failpoints feature"
)]
pub(crate) fn checkpoint(point: &str) -> Result<(), Error> {
    let _ = point;
    fail::fail_point!(point, |_| Err(Error::Crashed {
        point: point.to_owned()
    }));
    Ok(())
}
