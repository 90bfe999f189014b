//! What `meshd run` does: take over from a running meshd if there is one (its admin
//! listener and its bpf descriptors, over the authenticated handoff socket), install
//! the dataplane or reopen or upgrade it, bring the maps in line with the
//! configuration, say it is ready, then serve: the admin endpoint answers, SIGHUP
//! re-reads the configuration and syncs again, a successor connecting to the handoff
//! socket takes over, SIGTERM or SIGINT ends the daemon and leaves the dataplane
//! pinned and attached, steering traffic until the next start.
//!
//! During a handover the old daemon stops writing maps when the new one asks
//! (QUIESCED) and before the new one's install and final sync, so nothing it writes
//! is lost or overwritten; a SIGHUP that arrives meanwhile is synced by whichever
//! serves afterwards. If the new daemon dies before it says SERVING, the old one
//! resumes writing and serves on; if the old dies mid-transfer, the new starts from
//! the pins.

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use handover_handoff::{
    Address, Callbacks, Fallback, FdKind, Finish, HandoffServer, NamedFds, Offer, Outcome,
    PeerPolicy, Received, TakeOverError, take_over,
};
use handover_sys::{ObjectKind, OpenFlags};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

use crate::admin::{self, Admin, Metrics};
use crate::config::{Config, ConfigError};
use crate::dataplane::Dataplane;
use crate::install::{InstallError, InstallRequest, Installed, Installer, Start};

/// How long each handoff step may take. The old daemon waits this long for SERVING
/// after QUIESCED, so it covers the new daemon's install (an upgrade copies maps).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the old daemon finishes in-flight admin requests after the handover.
const DRAIN: Duration = Duration::from_secs(5);

/// What a daemon run needs.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// The configuration file.
    pub config: PathBuf,
    /// The dataplane object's bytes (programs/dataplane/vN.c).
    pub object: Vec<u8>,
    /// The cgroup the programs attach to.
    pub cgroup: PathBuf,
    /// Port of the admin endpoint on 127.0.0.1, if it serves one.
    pub admin_port: Option<u16>,
    /// The handoff socket: taken over from at start, listened on afterwards.
    pub handoff: Option<Address>,
    /// The label of this process in its admin answers and handoff messages.
    pub generation: String,
}

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Installing or reopening failed.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// The running daemon serves on (it refused or called the take-over off): this
    /// one must not serve.
    #[error("not taking over: {0}")]
    NotServing(#[source] TakeOverError),
    /// The handoff socket cannot be used.
    #[error("handoff socket: {0}")]
    Handoff(String),
    /// Signal handlers, the admin listener or stdout.
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
/// `ready fresh`, `ready restart`, `ready upgrade` or `ready recovered`, then
/// ` handoff` when it took over from a running daemon.
#[must_use]
pub fn ready_line(start: &Start, took_over: bool) -> String {
    let word = match start {
        Start::Fresh => "fresh",
        Start::Restart => "restart",
        Start::Upgrade => "upgrade",
        Start::Recovered { .. } => "recovered",
    };
    if took_over {
        format!("ready {word} handoff")
    } else {
        format!("ready {word}")
    }
}

/// What `meshd` prints on the line after its ready line, `installed JSON`: how it
/// started and what happened to each map.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstallSummary {
    /// How the installation was found.
    pub start: Start,
    /// Whether it took over from a running daemon.
    pub took_over: bool,
    /// Per map: action, verdict, entries carried and reconciled.
    pub maps: std::collections::BTreeMap<String, crate::install::MapOutcome>,
    /// Microseconds old and new programs both ran (an upgrade).
    pub switch_window_us: Option<u64>,
}

/// The maps and whether the daemon may write them.
#[derive(Debug)]
struct Sync {
    dataplane: Option<Dataplane>,
    /// The attachments' links, by program, to hand over with the maps.
    links: Vec<(String, OwnedFd)>,
    /// A configuration change came while quiesced: sync when resumed.
    pending: bool,
}

/// What the signal loop, the handoff thread and the admin endpoint share.
#[derive(Debug)]
struct Shared {
    sync: Mutex<Sync>,
    quiesced: AtomicBool,
    generation: AtomicU64,
    config: PathBuf,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Sync> {
        self.sync.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Re-reads the configuration and syncs, unless quiesced (then it is left for
    /// whoever serves next).
    fn resync(&self, why: &str) {
        let mut s = self.lock();
        if self.quiesced.load(Ordering::Acquire) {
            info!(why, "quiesced for a handover: sync deferred");
            s.pending = true;
            return;
        }
        s.pending = false;
        let Some(dp) = &s.dataplane else { return };
        match Config::read(&self.config) {
            Ok(config) => match dp.sync(&config) {
                Ok(_) => {
                    self.generation.fetch_add(1, Ordering::AcqRel);
                }
                Err(e) => error!(error = %e, "re-sync failed; the maps keep what was applied"),
            },
            Err(e) => error!(error = %e, "configuration refused; the maps are unchanged"),
        }
    }
}

impl Metrics for Shared {
    fn backend_connects(&self) -> Vec<(String, String, u64)> {
        let s = self.lock();
        let Some(dp) = &s.dataplane else {
            return Vec::new();
        };
        let names = Config::read(&self.config)
            .map(|c| c.backend_names())
            .unwrap_or_default();
        let (Ok(backends), Ok(connects)) = (dp.backends(), dp.connects()) else {
            return Vec::new();
        };
        backends
            .iter()
            .map(|(uid, b)| {
                let name = names
                    .get(&(b.address, b.port))
                    .cloned()
                    .unwrap_or_else(|| format!("uid-{uid}"));
                let n = connects.get(uid).copied().unwrap_or(0);
                (name, format!("{}:{}", b.address, b.port), n)
            })
            .collect()
    }

    fn sync_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn quiesced(&self) -> bool {
        self.quiesced.load(Ordering::Acquire)
    }
}

struct Quiesce(Arc<Shared>);

impl Callbacks for Quiesce {
    fn on_quiesce(&mut self) -> Result<(), String> {
        // Taken under the lock: a sync in progress finishes first.
        let _s = self.0.lock();
        self.0.quiesced.store(true, Ordering::Release);
        info!("quiesced: map writes stopped for the successor's final sync");
        Ok(())
    }

    fn on_resume(&mut self) {
        self.0.quiesced.store(false, Ordering::Release);
        info!("resumed: map writes on again");
        let pending = self.0.lock().pending;
        if pending {
            self.0.resync("configuration changed while quiesced");
        }
    }
}

fn say(line: &str) -> Result<(), DaemonError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|source| DaemonError::Io {
            what: "writing to stdout",
            source,
        })
}

/// Takes over from the daemon at `address`: `Some` with the descriptors and the
/// old daemon quiesced, `None` when there is none (or it died: start from the pins,
/// with what it salvaged).
fn admin_bind_error(source: std::io::Error) -> DaemonError {
    DaemonError::Io {
        what: "binding the admin listener",
        source,
    }
}

fn try_take_over(
    address: &Address,
    label: &str,
) -> Result<(Option<Received>, NamedFds), DaemonError> {
    match take_over(address, &PeerPolicy::same_user(), label, STEP_TIMEOUT) {
        Ok(received) => {
            info!(
                from = received.manifest.label,
                pid = received.old().pid,
                fds = received.fds.len(),
                "took over; the old daemon is quiesced"
            );
            Ok((Some(received), NamedFds::default()))
        }
        Err(e) if e.fallback() == Fallback::StartFresh => {
            info!(reason = %e, "no daemon to take over from: starting from the pins");
            Ok((None, e.into_salvaged()))
        }
        Err(e) => Err(DaemonError::NotServing(e)),
    }
}

/// Runs the daemon until SIGTERM or SIGINT, or until a successor took over.
///
/// # Errors
/// The configuration cannot be read, the installation fails, or a running daemon
/// serves on ([`DaemonError::NotServing`]). A failed re-sync after SIGHUP is logged
/// and the daemon goes on with what the maps hold.
pub fn run(installer: &mut dyn Installer, options: &DaemonOptions) -> Result<(), DaemonError> {
    // Before anything is created: a SIGTERM during the installation is handled after it.
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|source| DaemonError::Io {
            what: "installing signal handlers",
            source,
        })?;
    let config = Config::read(&options.config)?;
    let label = format!("meshd {}", options.generation);
    let (mut received, mut salvaged, mut bound) = (None, NamedFds::default(), None);
    if let Some(address) = &options.handoff {
        // A daemon that holds the admin port is alive even when its handoff socket did
        // not answer (between two handoffs, or still binding it after taking over): ask
        // again for a while rather than start beside it.
        let mut attempts = 0;
        loop {
            let (r, s) = try_take_over(address, &label)?;
            if r.is_some() || !s.is_empty() {
                (received, salvaged) = (r, s);
                break;
            }
            match options.admin_port.map(admin::bind) {
                Some(Err(e)) if e.kind() == std::io::ErrorKind::AddrInUse && attempts < 50 => {
                    attempts += 1;
                    warn!("the admin port is held by a running daemon: asking it again");
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => {
                    bound = other.transpose().map_err(admin_bind_error)?;
                    salvaged = s;
                    break;
                }
            }
        }
    }
    let took_over = received.is_some();
    let shared = Arc::new(Shared {
        sync: Mutex::new(Sync {
            dataplane: None,
            links: Vec::new(),
            pending: false,
        }),
        quiesced: AtomicBool::new(false),
        generation: AtomicU64::new(0),
        config: options.config.clone(),
    });

    // The admin listener: the old daemon's, or a new one. Both processes accept
    // from it until the old one stops.
    let inherited = received
        .as_mut()
        .and_then(|r| r.fds.take("admin"))
        .or_else(|| salvaged.take("admin"))
        .map(TcpListener::from);
    let listener = match (inherited.or(bound), options.admin_port) {
        (Some(l), _) => Some(l),
        (None, Some(port)) => Some(admin::bind(port).map_err(admin_bind_error)?),
        (None, None) => None,
    };
    // The final reconcile: install or upgrade, then sync with the configuration.
    // The descriptors taken over stay open until the installation holds its own.
    let request = InstallRequest {
        object: &options.object,
        cgroup: &options.cgroup,
    };
    let installed: Installed = match installer.open(&request, &mut |dp| dp.sync(&config).map(drop))
    {
        Ok(i) => i,
        Err(e) => {
            // Dropping `received` calls the handover off: the old daemon resumes. This
            // one never accepted on the admin listener, so no request is lost with it.
            return Err(e.into());
        }
    };
    info!(start = ?installed.start, links = ?installed.links, "dataplane ready");
    // Only a daemon whose dataplane is ready accepts admin requests: one killed during
    // its installation (an upgrade) leaves no accepted request unanswered, the old
    // daemon answers them all until this one serves.
    let admin = listener
        .map(|l| {
            let metrics: Arc<dyn Metrics> = Arc::clone(&shared) as Arc<dyn Metrics>;
            Admin::start(l, &options.generation, metrics)
        })
        .transpose()
        .map_err(|source| DaemonError::Io {
            what: "starting the admin endpoint",
            source,
        })?;
    let summary = InstallSummary {
        start: installed.start.clone(),
        took_over,
        maps: installed.maps.clone(),
        switch_window_us: installed.switch_window_us,
    };
    shared.generation.store(1, Ordering::Release);
    let bpf = handover_sys::Bpf::kernel();
    let links = installed
        .links
        .iter()
        .filter_map(|(program, &id)| {
            match bpf.fd_by_id(ObjectKind::Link, id, OpenFlags::READ_WRITE) {
                Ok(fd) => Some((program.clone(), fd)),
                Err(e) => {
                    warn!(program, link = id, error = %e, "cannot open the link to hand over");
                    None
                }
            }
        })
        .collect();
    {
        let mut s = shared.lock();
        s.dataplane = Some(installed.dataplane);
        s.links = links;
    }
    let server = match received {
        Some(r) => {
            let released = r.serving().map_err(|e| {
                // The old daemon called it off or went quiet after QUIESCED: it may
                // serve on, so this one steps back.
                if let Some(a) = &admin {
                    a.stop_accepting();
                    a.drain(DRAIN);
                }
                DaemonError::NotServing(e)
            })?;
            if !released.wait_old_exit(Some(STEP_TIMEOUT)) {
                warn!("the old daemon did not exit in time");
            }
            options.handoff.as_ref().map(|a| {
                HandoffServer::bind_after_takeover(a, PeerPolicy::same_user(), STEP_TIMEOUT)
            })
        }
        None => options
            .handoff
            .as_ref()
            .map(|a| HandoffServer::bind(a, PeerPolicy::same_user())),
    }
    .transpose()
    .map_err(|e| DaemonError::Handoff(e.to_string()))?;
    say(&ready_line(&installed.start, took_over))?;
    say(&format!(
        "installed {}",
        serde_json::to_string(&summary).unwrap_or_default()
    ))?;

    if let Some(server) = server {
        let handle = signals.handle();
        let shared = Arc::clone(&shared);
        let admin = admin.clone();
        let generation = options.generation.clone();
        std::thread::spawn(move || {
            handoff_loop(&server, &shared, admin.as_deref(), &generation);
            // Handed over: end the signal loop, and with it the daemon.
            handle.close();
        });
    }
    for signal in signals.forever() {
        match signal {
            SIGHUP => {
                info!(config = %options.config.display(), "SIGHUP: re-reading the configuration");
                shared.resync("SIGHUP");
            }
            _ => {
                info!(signal, "stopping; the dataplane stays pinned and attached");
                break;
            }
        }
    }
    Ok(())
}

/// Serves handoffs until one completes with a live successor.
fn handoff_loop(
    server: &HandoffServer,
    shared: &Arc<Shared>,
    admin: Option<&Admin>,
    generation: &str,
) {
    let mut callbacks = Quiesce(Arc::clone(shared));
    loop {
        let mut offer = Offer::new(format!("meshd {generation}"));
        if let Some(a) = admin
            && let Err(e) = offer.add("admin", FdKind::Listener, a.listener().as_fd())
        {
            error!(error = %e, "cannot offer the admin listener");
            return;
        }
        // The maps travel too, so a successor holds them even if a pin vanished.
        let guard = shared.lock();
        let mut ok = true;
        if let Some(dp) = &guard.dataplane {
            for name in dp.names() {
                if let Ok(map) = dp.map(name)
                    && let Err(e) = offer.add(format!("map:{name}"), FdKind::BpfMap, map.fd())
                {
                    error!(error = %e, map = name, "cannot offer a map");
                    ok = false;
                }
            }
        }
        for (name, fd) in &guard.links {
            if let Err(e) = offer.add(format!("link:{name}"), FdKind::BpfLink, fd.as_fd()) {
                error!(error = %e, link = name, "cannot offer a link");
                ok = false;
            }
        }
        drop(guard);
        if !ok {
            return;
        }
        offer.set_extra(serde_json::json!({ "generation": generation }));
        match server.serve_one(&offer, &mut callbacks, STEP_TIMEOUT) {
            Ok(Outcome::HandedOver(handover)) => {
                if let Some(a) = admin {
                    a.stop_accepting();
                    let left = a.drain(DRAIN);
                    if left > 0 {
                        warn!(left, "drain deadline passed with admin requests in flight");
                    }
                }
                info!(successor = handover.peer().pid, "handed over; drained");
                match handover.finish(Duration::from_millis(300)) {
                    Finish::SuccessorAlive => return,
                    Finish::SuccessorDied => {
                        if let Some(a) = admin {
                            a.resume_accepting();
                        }
                        callbacks.on_resume();
                    }
                }
            }
            Ok(Outcome::Resumed(failed)) => warn!(reason = %failed, "handover failed; serving on"),
            Ok(Outcome::Rejected(r)) => warn!(rejection = %r, "refused a handoff peer"),
            Ok(Outcome::NoPeer) => {}
            Err(e) => {
                error!(error = %e, "handoff socket failed; no more handovers");
                return;
            }
        }
    }
}
