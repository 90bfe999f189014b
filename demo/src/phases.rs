//! The phases a demonstration runs under traffic, as a list: each phase is an action
//! on the daemon (restart it, kill it, upgrade it, change its configuration...) that
//! the driver performs while the clients keep connecting, and the configuration in
//! force once the action is done.
//!
//! [`run_phases`] runs such a list against a traffic harness: a phase's connects are
//! checked against the backends of the configuration before and after it until its
//! action is done, then only against the new one; each phase then lasts at least
//! `settle` more, so every phase has traffic of its own.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::config::Config;
use crate::traffic::remote::{RemoteError, RemoteTraffic};
use crate::traffic::{PhaseStats, allowed_of};

/// What a phase does to the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    /// The daemon installs the dataplane (or is running already): traffic only.
    Steady,
    /// The daemon exits (SIGTERM) and starts again.
    Restart,
    /// The daemon is killed (SIGKILL) and started again.
    Sigkill,
    /// The configuration changes and the daemon re-syncs (SIGHUP, or a restart).
    ConfigChange,
    /// The daemon is upgraded to a new dataplane version (needs the upgrade engine).
    Upgrade,
    /// An upgrade during which the configuration changes (needs the upgrade engine).
    UpgradeWithConfigChange,
    /// The daemon is killed in the middle of an upgrade, and recovers on its next
    /// start (needs the upgrade engine).
    SigkillMidUpgrade,
    /// The dataplane is removed: connects to the VIPs are no longer steered.
    Uninstall,
}

impl PhaseKind {
    /// The phase's name in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            PhaseKind::Steady => "steady",
            PhaseKind::Restart => "restart",
            PhaseKind::Sigkill => "sigkill",
            PhaseKind::ConfigChange => "config-change",
            PhaseKind::Upgrade => "upgrade",
            PhaseKind::UpgradeWithConfigChange => "upgrade-with-config-change",
            PhaseKind::SigkillMidUpgrade => "sigkill-mid-upgrade",
            PhaseKind::Uninstall => "uninstall",
        }
    }

    /// Whether the phase needs the upgrade engine.
    #[must_use]
    pub fn needs_engine(self) -> bool {
        matches!(
            self,
            PhaseKind::Upgrade | PhaseKind::UpgradeWithConfigChange | PhaseKind::SigkillMidUpgrade
        )
    }
}

/// One phase: what it does and the configuration in force once it is done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phase {
    /// What it does.
    pub kind: PhaseKind,
    /// The configuration after it (`None`: unchanged; for `Uninstall`, no backend is
    /// allowed afterwards whatever this says).
    pub config: Option<Config>,
}

impl Phase {
    /// A phase that keeps the configuration.
    #[must_use]
    pub fn new(kind: PhaseKind) -> Self {
        Self { kind, config: None }
    }

    /// A phase after which `config` is in force.
    #[must_use]
    pub fn with_config(kind: PhaseKind, config: Config) -> Self {
        Self {
            kind,
            config: Some(config),
        }
    }
}

/// A failed phase run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PhaseError {
    /// The traffic harness.
    #[error(transparent)]
    Traffic(#[from] RemoteError),
    /// The driver's action for a phase.
    #[error("phase {phase}: {message}")]
    Action {
        /// The phase.
        phase: &'static str,
        /// What failed.
        message: String,
    },
}

/// Runs `phases` in order against `traffic` (started already, in a first phase with
/// `initial`'s backends): `action` performs each phase's change on the daemon. Returns
/// the counts of every phase so far, the first one included.
///
/// # Errors
/// The harness fails, or an action does.
pub fn run_phases(
    traffic: &mut RemoteTraffic,
    initial: &Config,
    phases: &[Phase],
    settle: Duration,
    action: &mut dyn FnMut(&Phase) -> Result<(), String>,
) -> Result<Vec<PhaseStats>, PhaseError> {
    run_phases_with(
        traffic,
        initial,
        phases,
        &mut |_| {
            std::thread::sleep(settle);
            Ok(())
        },
        action,
    )
}

/// [`run_phases`] with the wait after each action done by `settle`, which may use the
/// harness meanwhile (to show progress).
///
/// # Errors
/// The harness fails, or an action does.
pub fn run_phases_with(
    traffic: &mut RemoteTraffic,
    initial: &Config,
    phases: &[Phase],
    settle: &mut dyn FnMut(&mut RemoteTraffic) -> Result<(), RemoteError>,
    action: &mut dyn FnMut(&Phase) -> Result<(), String>,
) -> Result<Vec<PhaseStats>, PhaseError> {
    let mut current = allowed_of(initial);
    for phase in phases {
        let next: BTreeSet<String> = match (&phase.config, phase.kind) {
            (_, PhaseKind::Uninstall) => BTreeSet::new(),
            (Some(c), _) => allowed_of(c),
            (None, _) => current.clone(),
        };
        let during: BTreeSet<String> = current.union(&next).cloned().collect();
        traffic.begin_phase(phase.kind.name(), during)?;
        action(phase).map_err(|message| PhaseError::Action {
            phase: phase.kind.name(),
            message,
        })?;
        traffic.allow(next.clone())?;
        settle(traffic)?;
        current = next;
    }
    Ok(traffic.report()?)
}
