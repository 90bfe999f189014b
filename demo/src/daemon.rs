//! What `meshd run` does: install the dataplane or reopen it, bring the maps in line
//! with the configuration, say it is ready, then wait: SIGHUP re-reads the
//! configuration and syncs again, SIGTERM or SIGINT ends the daemon and leaves the
//! dataplane pinned and attached, steering traffic until the next start.

use std::io::Write;
use std::path::PathBuf;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{error, info};

use crate::config::{Config, ConfigError};
use crate::install::{InstallError, InstallRequest, Installed, Installer, Start};

/// What a daemon run needs.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// The configuration file.
    pub config: PathBuf,
    /// The dataplane object.
    pub object: PathBuf,
    /// The cgroup the programs attach to.
    pub cgroup: PathBuf,
}

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The object cannot be read.
    #[error("reading the dataplane object {path}: {source}")]
    Object {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Installing or reopening failed.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// Signal handlers cannot be installed, or stdout cannot be written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The line `meshd` prints on stdout once the dataplane is installed and synced:
/// `ready fresh`, `ready restart`, `ready upgrade` or `ready recovered`.
#[must_use]
pub fn ready_line(start: &Start) -> String {
    let word = match start {
        Start::Fresh => "fresh",
        Start::Restart => "restart",
        Start::Upgrade => "upgrade",
        Start::Recovered { .. } => "recovered",
    };
    format!("ready {word}")
}

/// Runs the daemon until SIGTERM or SIGINT.
///
/// # Errors
/// The configuration or object cannot be read, or the installation fails. A failed
/// re-sync after SIGHUP is logged and the daemon goes on with what the maps hold.
pub fn run(installer: &mut dyn Installer, options: &DaemonOptions) -> Result<(), DaemonError> {
    // Before anything is created: a SIGTERM during the installation is handled after it.
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|source| DaemonError::Io {
            what: "installing signal handlers",
            source,
        })?;
    let config = Config::read(&options.config)?;
    let object = std::fs::read(&options.object).map_err(|source| DaemonError::Object {
        path: options.object.display().to_string(),
        source,
    })?;
    let request = InstallRequest {
        object: &object,
        cgroup: &options.cgroup,
    };
    let installed: Installed = installer.open(&request, &mut |dp| dp.sync(&config).map(drop))?;
    info!(start = ?installed.start, links = ?installed.links, "dataplane ready");
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", ready_line(&installed.start))
        .and_then(|()| out.flush())
        .map_err(|source| DaemonError::Io {
            what: "writing the ready line",
            source,
        })?;
    drop(out);
    for signal in signals.forever() {
        match signal {
            SIGHUP => {
                info!(config = %options.config.display(), "SIGHUP: re-reading the configuration");
                match Config::read(&options.config) {
                    Ok(config) => {
                        if let Err(e) = installed.dataplane.sync(&config) {
                            error!(error = %e, "re-sync failed; the maps keep what was applied");
                        }
                    }
                    Err(e) => error!(error = %e, "configuration refused; the maps are unchanged"),
                }
            }
            _ => {
                info!(signal, "stopping; the dataplane stays pinned and attached");
                break;
            }
        }
    }
    Ok(())
}
