//! The whole demonstration, as `handover demo` runs it: in a private bpffs, cgroup and
//! network namespace ([`crate::isolation`]), meshd installs dataplane v1, backends
//! answer on 127.0.1.x and 127.0.2.x, clients connect through the VIPs at a steady
//! rate, and the daemon goes through six phases: a restart through handover, a
//! SIGKILL and restart from the pins, an upgrade v1 to v2, an upgrade (v2 to v3)
//! during which the configuration changes, a SIGKILL in the middle of an upgrade (v3
//! to v2) and the recovery, and the uninstall. An admin prober asks the daemon's
//! metrics endpoint all along. The [`DemoReport`] says, per phase, what the clients
//! and the prober saw and what the engine did to each map.
//!
//! The caller says how to start meshd and the traffic child ([`Launcher`]): the
//! `handover` binary re-executes itself with the dataplane objects it embeds.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::admin::get_metrics;
use crate::config::{Backend, Config, LbPolicy, Service};
use crate::daemon::InstallSummary;
use crate::dataplane::Dataplane;
use crate::install::{EngineInstaller, Installer};
use crate::isolation::{Bpffs, Cgroup, IsolationError, NetNs, TempDir};
use crate::layout::{ConnKey, Layout};
use crate::phases::{Phase, PhaseKind, run_phases_with};
use crate::traffic::remote::{RemoteError, RemoteTraffic};
use crate::traffic::{
    ClientOptions, PhaseStats, allowed_of, backends_of, per_backend_total, targets_of,
};

/// The admin endpoint's port in the demo's namespace.
pub const ADMIN_PORT: u16 = 9100;
/// Longest wait for a daemon's ready line.
const PATIENCE: Duration = Duration::from_secs(60);
/// Connections held open at the end to check the per-connection table.
const HELD: usize = 20;

/// How the demo starts its processes.
pub trait Launcher {
    /// A command that runs meshd with dataplane `version` (`v1`, `v2`, `v3`); the
    /// story appends `run` or `uninstall` arguments as `meshd` takes them, with
    /// `--version VERSION` in place of `--object`.
    fn daemon(&self, version: &str) -> Command;
    /// A command that joins the cgroup `cgroup` and serves the traffic harness on
    /// stdin and stdout ([`crate::traffic::remote::serve`]).
    fn traffic(&self, cgroup: &Path) -> Command;
    /// The dataplane object of `version`, to read its map layouts.
    fn object(&self, version: &str) -> &[u8];
}

/// What the demo's run may be told while it runs.
#[derive(Debug, Clone)]
pub struct StoryOptions {
    /// Connects per second the clients aim at.
    pub rate: u32,
    /// How long each phase runs after its action.
    pub settle: Duration,
    /// Set by a signal handler: the run stops at its next wait and cleans up.
    pub interrupted: Arc<AtomicBool>,
}

/// What the live view is shown.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The phase running.
    pub phase: String,
    /// Its counts so far.
    pub stats: PhaseStats,
}

/// What the admin prober saw in one phase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminStats {
    /// Requests made.
    pub requests: u64,
    /// Requests refused, reset or unanswered.
    pub failed: u64,
    /// Answers by process id.
    pub answered_by: BTreeMap<u32, u64>,
    /// The longest time between two answers, in milliseconds.
    pub longest_gap_ms: u64,
    /// The first few failures, each with the time into the phase it came at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// One phase of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseReport {
    /// The phase (`restart`, `sigkill`, `upgrade`, ...).
    pub name: String,
    /// What was done to the daemon.
    pub action: String,
    /// Dataplane version before and after.
    pub versions: (String, String),
    /// Connects made through the VIPs.
    pub connects: u64,
    /// Connects that failed.
    pub failed: u64,
    /// Connects answered by a backend outside the configuration.
    pub out_of_config: u64,
    /// Answered connects per backend.
    pub per_backend: BTreeMap<String, u64>,
    /// The first failures, if any.
    pub errors: Vec<String>,
    /// How long the phase ran, in milliseconds.
    pub duration_ms: u64,
    /// What the daemon that serves after it reported (not for uninstall).
    pub install: Option<InstallSummary>,
    /// `backend_conns` per backend before the phase's action.
    pub counters_before: BTreeMap<String, u64>,
    /// `backend_conns` per backend at the phase's end.
    pub counters_after: BTreeMap<String, u64>,
    /// How long no daemon ran (after a SIGKILL), in milliseconds.
    pub daemon_down_ms: Option<u64>,
    /// How long the recovery of an interrupted upgrade took, from the kill to the
    /// recovering daemon's ready line, in milliseconds (the old daemon served on).
    pub recovery_ms: Option<u64>,
    /// Whether the kill landed while the upgrade's journal existed (mid-upgrade).
    pub killed_mid_upgrade: Option<bool>,
    /// What the admin prober saw.
    pub admin: AdminStats,
}

/// The per-connection table checked against connections held open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnsCheck {
    /// Connections held open by the clients.
    pub held: usize,
    /// Entries of the `conns` map.
    pub in_table: usize,
    /// Whether the table holds exactly the held connections.
    pub exact: bool,
}

/// The whole report (`handover demo --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoReport {
    /// Connects per second aimed at.
    pub rate: u32,
    /// The phases, in order (the first is the initial install).
    pub phases: Vec<PhaseReport>,
    /// Answered connects per backend over every phase, up to the last upgrade's end
    /// (before the connections held open for the table check).
    pub connects_per_backend: BTreeMap<String, u64>,
    /// `backend_conns` per backend after the last upgrade (traffic paused).
    pub counters_after_last_upgrade: BTreeMap<String, u64>,
    /// The per-connection table with connections held open, after the last upgrade.
    pub conns: ConnsCheck,
    /// Entries left under the bpffs after the uninstall (none expected).
    pub pins_left: Vec<String>,
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoryError {
    /// The private environment.
    #[error(transparent)]
    Isolation(#[from] IsolationError),
    /// The traffic harness.
    #[error("traffic harness: {0}")]
    Traffic(#[from] RemoteError),
    /// A step of the story.
    #[error("{0}")]
    Step(String),
    /// Ctrl-C.
    #[error("interrupted; everything was cleaned up")]
    Interrupted,
}

fn step(what: impl std::fmt::Display) -> StoryError {
    StoryError::Step(what.to_string())
}

fn backend(name: &str, a: u8, b: u8) -> Backend {
    Backend {
        name: name.into(),
        address: Ipv4Addr::new(127, 0, a, b),
        port: 8080,
        weight: 1,
        priority: 0,
    }
}

/// The initial configuration: `web` (round robin over three) and `api` (random over
/// two, with a standby at priority 1).
#[must_use]
pub fn initial_config() -> Config {
    Config {
        services: vec![
            Service {
                name: "web".into(),
                vip: Ipv4Addr::new(127, 100, 0, 1),
                port: 80,
                lb_policy: LbPolicy::RoundRobin,
                target_port: 0,
                backends: vec![
                    backend("web-1", 1, 1),
                    backend("web-2", 1, 2),
                    backend("web-3", 1, 3),
                ],
            },
            Service {
                name: "api".into(),
                vip: Ipv4Addr::new(127, 100, 0, 2),
                port: 81,
                lb_policy: LbPolicy::Random,
                target_port: 0,
                backends: vec![
                    backend("api-1", 2, 1),
                    backend("api-2", 2, 2),
                    Backend {
                        priority: 1,
                        ..backend("api-standby", 2, 3)
                    },
                ],
            },
        ],
    }
}

/// The configuration the upgrade of phase 4 brings: web-2 gone, web-4 added.
#[must_use]
pub fn changed_config() -> Config {
    let mut c = initial_config();
    if let Some(web) = c.services.first_mut() {
        web.backends = vec![
            backend("web-1", 1, 1),
            backend("web-3", 1, 3),
            backend("web-4", 1, 4),
        ];
    }
    c
}

/// A running meshd.
struct Daemon {
    child: Child,
    version: String,
    lines: mpsc::Receiver<String>,
}

/// Everything the story made; cleaned up on drop, in order: processes, the
/// installation, then the mounts, cgroup and files.
struct Stage<'l> {
    launcher: &'l dyn Launcher,
    daemon: Option<Daemon>,
    generation: u32,
    names: BTreeMap<(Ipv4Addr, u16), String>,
    /// Backend names by uid, as last seen in the backend map (a backend removed
    /// from the configuration keeps its counter).
    uids: std::cell::RefCell<BTreeMap<u32, String>>,
    netns: NetNs,
    fs: Bpffs,
    cgroup: Cgroup,
    dir: TempDir,
}

impl Drop for Stage<'_> {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
        let bpf = handover_sys::Bpf::kernel();
        let _ = EngineInstaller::new(&bpf, self.fs.path(), &self.state()).uninstall();
    }
}

impl<'l> Stage<'l> {
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    fn write_config(&mut self, config: &Config) -> Result<(), StoryError> {
        let tmp = self.dir.path().join("config.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(config).map_err(step)?).map_err(step)?;
        std::fs::rename(&tmp, self.config_path()).map_err(step)?;
        for (k, v) in config.backend_names() {
            self.names.entry(k).or_insert(v);
        }
        Ok(())
    }

    /// Starts meshd `version` in the namespace; with `handoff`, it takes over from
    /// the running one.
    fn spawn(&mut self, version: &str) -> Result<Daemon, StoryError> {
        self.generation += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("meshd.log"))
            .map_err(step)?;
        let mut cmd = self.launcher.daemon(version);
        cmd.arg("run")
            .arg("--root")
            .arg(self.fs.path())
            .arg("--state")
            .arg(self.state())
            .arg("--cgroup")
            .arg(self.cgroup.path())
            .arg("--config")
            .arg(self.config_path())
            .arg("--admin-port")
            .arg(ADMIN_PORT.to_string())
            .arg("--handoff")
            .arg(self.dir.path().join("handoff/meshd.sock"))
            .arg("--generation")
            .arg(format!("{}-{version}", self.generation))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = self
            .netns
            .run(|| cmd.spawn())?
            .map_err(|e| step(format!("starting meshd: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| step("meshd has no stdout"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Daemon {
            child,
            version: version.to_owned(),
            lines,
        })
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("meshd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines
            .get(lines.len().saturating_sub(15)..)
            .unwrap_or_default()
            .join("\n")
    }

    /// Waits for `d`'s ready and installed lines.
    fn ready(&self, d: &Daemon) -> Result<InstallSummary, StoryError> {
        let line = d.lines.recv_timeout(PATIENCE).map_err(|e| {
            step(format!(
                "meshd {} not ready: {e}\n{}",
                d.version,
                self.log_tail()
            ))
        })?;
        if !line.starts_with("ready ") {
            return Err(step(format!("meshd said {line:?}\n{}", self.log_tail())));
        }
        let line = d.lines.recv_timeout(PATIENCE).map_err(step)?;
        let json = line
            .strip_prefix("installed ")
            .ok_or_else(|| step(format!("meshd said {line:?}")))?;
        serde_json::from_str(json).map_err(step)
    }

    /// Starts meshd `version`, which takes over from the running one if any; the old
    /// one drains and exits by itself.
    fn take_over(&mut self, version: &str) -> Result<InstallSummary, StoryError> {
        let new = self.spawn(version)?;
        let summary = self.ready(&new)?;
        if let Some(mut old) = self.daemon.replace(new) {
            let status = old.child.wait().map_err(step)?;
            if !status.success() {
                return Err(step(format!(
                    "the old meshd exited with {status}\n{}",
                    self.log_tail()
                )));
            }
        }
        Ok(summary)
    }

    fn kill(&mut self) -> Result<(), StoryError> {
        if let Some(mut d) = self.daemon.take() {
            d.child.kill().map_err(step)?;
            d.child.wait().map_err(step)?;
        }
        Ok(())
    }

    fn version(&self) -> String {
        self.daemon
            .as_ref()
            .map(|d| d.version.clone())
            .unwrap_or_default()
    }

    /// The dataplane's maps, opened from the engine's pins.
    fn dataplane(&self) -> Result<Dataplane, StoryError> {
        let version = self.version();
        let object =
            handover_loader::Object::parse(self.launcher.object(&version)).map_err(step)?;
        let layout = Layout::of(&object).map_err(step)?;
        let bpf = handover_sys::Bpf::kernel();
        let mut fds = BTreeMap::new();
        for name in ["backend", "backend_conns", "conns"] {
            let path = self.fs.path().join("maps").join(name);
            let fd = bpf
                .obj_get(&path, handover_sys::OpenFlags::READ_WRITE)
                .map_err(|e| step(format!("opening {}: {e}", path.display())))?;
            fds.insert(name.to_owned(), fd);
        }
        Dataplane::new(&bpf, fds, layout).map_err(step)
    }

    /// `backend_conns` by backend name (`uid-N` for a backend no longer in the map).
    fn counters(&self) -> Result<BTreeMap<String, u64>, StoryError> {
        let dp = self.dataplane()?;
        let mut uids = self.uids.borrow_mut();
        for (uid, b) in dp.backends().map_err(step)? {
            if let Some(name) = self.names.get(&(b.address, b.port)) {
                uids.insert(uid, name.clone());
            }
        }
        let mut out = BTreeMap::new();
        for (uid, n) in dp.connects().map_err(step)? {
            let name = uids
                .get(&uid)
                .cloned()
                .unwrap_or_else(|| format!("uid-{uid}"));
            *out.entry(name).or_insert(0) += n;
        }
        Ok(out)
    }
}

/// Asks the admin endpoint in a loop, on a thread in the namespace, counting per
/// phase (the phase name is shared with the story).
fn admin_prober(
    netns: NetNs,
    phase: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<BTreeMap<String, AdminStats>> {
    std::thread::spawn(move || {
        let mut stats: BTreeMap<String, AdminStats> = BTreeMap::new();
        if netns.enter().is_err() {
            return stats;
        }
        let mut last: Option<(String, Instant)> = None;
        let mut phase_start: Option<(String, Instant)> = None;
        while !stop.load(Ordering::Acquire) {
            let name = phase.lock().unwrap_or_else(PoisonError::into_inner).clone();
            if phase_start.as_ref().is_none_or(|(p, _)| *p != name) {
                phase_start = Some((name.clone(), Instant::now()));
            }
            let result = get_metrics(ADMIN_PORT, Duration::from_secs(5));
            // A request the next phase overtook (its kill, say) counts in that phase.
            let after = phase.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let name = if after == name {
                name
            } else {
                phase_start = Some((after.clone(), Instant::now()));
                after
            };
            let s = stats.entry(name.clone()).or_default();
            s.requests += 1;
            match result {
                Ok((pid, _)) => {
                    *s.answered_by.entry(pid).or_insert(0) += 1;
                    let now = Instant::now();
                    if let Some((p, t)) = &last
                        && *p == name
                    {
                        let gap =
                            u64::try_from(now.duration_since(*t).as_millis()).unwrap_or(u64::MAX);
                        s.longest_gap_ms = s.longest_gap_ms.max(gap);
                    }
                    last = Some((name, now));
                }
                Err(e) => {
                    s.failed += 1;
                    if s.errors.len() < 5 {
                        let at = phase_start.as_ref().filter(|(p, _)| *p == name);
                        let ms = at.map_or(0, |(_, t)| t.elapsed().as_millis());
                        s.errors.push(format!("{e} ({ms} ms into the phase)"));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        stats
    })
}

/// Runs the demonstration; `progress` is called while phases run (for a live view).
///
/// # Errors
/// A step fails or the run was interrupted; everything made is cleaned up first.
pub fn run(
    launcher: &dyn Launcher,
    options: &StoryOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<DemoReport, StoryError> {
    let dir = TempDir::new("handover-demo")?;
    let handoff_dir = dir.path().join("handoff");
    std::fs::create_dir(&handoff_dir).map_err(step)?;
    std::fs::set_permissions(
        &handoff_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .map_err(step)?;
    let mut stage = Stage {
        launcher,
        daemon: None,
        generation: 0,
        names: BTreeMap::new(),
        uids: std::cell::RefCell::new(BTreeMap::new()),
        netns: NetNs::new()?,
        fs: Bpffs::mount()?,
        cgroup: Cgroup::new("handover-demo")?,
        dir,
    };
    let first = initial_config();
    let second = changed_config();
    stage.write_config(&first)?;
    stage.write_config(&second)?;
    stage.write_config(&first)?;

    // Install v1, then start the clients.
    let install = stage.take_over("v1")?;
    let mut cmd = launcher.traffic(stage.cgroup.path());
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let child = stage
        .netns
        .run(|| cmd.spawn())?
        .map_err(|e| step(format!("starting the clients: {e}")))?;
    let mut traffic = RemoteTraffic::new(child)?;
    let mut backends = backends_of(&first);
    for b in backends_of(&second) {
        if !backends.contains(&b) {
            backends.push(b);
        }
    }
    traffic.start(
        backends,
        ClientOptions {
            targets: targets_of(&first),
            rate: options.rate,
            ..ClientOptions::default()
        },
        "install",
        allowed_of(&first),
    )?;
    let phase_name = Arc::new(Mutex::new("install".to_owned()));
    let stop_prober = Arc::new(AtomicBool::new(false));
    let prober = admin_prober(
        stage.netns.try_clone()?,
        Arc::clone(&phase_name),
        Arc::clone(&stop_prober),
    );

    let mut reports: Vec<PhaseReport> = vec![PhaseReport {
        name: "install".into(),
        action: "meshd v1 installs the dataplane (fresh)".into(),
        versions: (String::new(), "v1".into()),
        connects: 0,
        failed: 0,
        out_of_config: 0,
        per_backend: BTreeMap::new(),
        errors: Vec::new(),
        duration_ms: 0,
        install: Some(install),
        counters_before: BTreeMap::new(),
        counters_after: BTreeMap::new(),
        daemon_down_ms: None,
        recovery_ms: None,
        killed_mid_upgrade: None,
        admin: AdminStats::default(),
    }];
    let interrupted = Arc::clone(&options.interrupted);
    let settle = options.settle;
    let mut settle_fn = |t: &mut RemoteTraffic| -> Result<(), RemoteError> {
        let until = Instant::now() + settle;
        while Instant::now() < until && !interrupted.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(200));
            if let Some(last) = t.report()?.pop() {
                progress(&Progress {
                    phase: last.name.clone(),
                    stats: last,
                });
            }
        }
        Ok(())
    };
    // The initial phase runs as long as the others.
    settle_fn(&mut traffic)?;

    let phases = [
        Phase::new(PhaseKind::Restart),
        Phase::new(PhaseKind::Sigkill),
        Phase::new(PhaseKind::Upgrade),
        Phase::with_config(PhaseKind::UpgradeWithConfigChange, second.clone()),
        Phase::new(PhaseKind::SigkillMidUpgrade),
    ];
    let stage_cell = std::cell::RefCell::new(&mut stage);
    let mut action = |phase: &Phase| -> Result<(), String> {
        let stage = &mut **stage_cell.borrow_mut();
        if options.interrupted.load(Ordering::Acquire) {
            return Err("interrupted".into());
        }
        *phase_name.lock().unwrap_or_else(PoisonError::into_inner) = phase.kind.name().to_owned();
        let before_version = stage.version();
        let counters_before = stage.counters().map_err(|e| e.to_string())?;
        let mut r = PhaseReport {
            name: phase.kind.name().to_owned(),
            action: String::new(),
            versions: (before_version.clone(), String::new()),
            connects: 0,
            failed: 0,
            out_of_config: 0,
            per_backend: BTreeMap::new(),
            errors: Vec::new(),
            duration_ms: 0,
            install: None,
            counters_before,
            counters_after: BTreeMap::new(),
            daemon_down_ms: None,
            recovery_ms: None,
            killed_mid_upgrade: None,
            admin: AdminStats::default(),
        };
        let e = |e: StoryError| e.to_string();
        match phase.kind {
            PhaseKind::Restart => {
                r.action = "a new meshd v1 takes over from the running one (handover)".into();
                r.install = Some(stage.take_over("v1").map_err(e)?);
            }
            PhaseKind::Sigkill => {
                r.action = "meshd is killed (SIGKILL), a new one starts from the pins".into();
                let t = Instant::now();
                stage.kill().map_err(e)?;
                r.install = Some(stage.take_over(&before_version).map_err(e)?);
                r.daemon_down_ms = Some(u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX));
            }
            PhaseKind::Upgrade => {
                r.action = "meshd v2 takes over from v1 and upgrades the dataplane".into();
                r.install = Some(stage.take_over("v2").map_err(e)?);
            }
            PhaseKind::UpgradeWithConfigChange => {
                r.action = "the configuration changes (web-2 out, web-4 in) as meshd v3 takes over from v2 and upgrades".into();
                if let Some(c) = &phase.config {
                    stage.write_config(c).map_err(e)?;
                }
                r.install = Some(stage.take_over("v3").map_err(e)?);
            }
            PhaseKind::SigkillMidUpgrade => {
                r.action = "meshd v2 takes over from v3 and is killed (SIGKILL) in the middle of its upgrade; the old serves on; a second v2 recovers and upgrades".into();
                let journal = stage.state().join("journal.json");
                let mut new = stage.spawn("v2").map_err(e)?;
                let until = Instant::now() + PATIENCE;
                let mut mid = false;
                while Instant::now() < until {
                    if journal.exists() {
                        mid = true;
                        break;
                    }
                    if new.child.try_wait().map_err(|x| x.to_string())?.is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                let t = Instant::now();
                let _ = new.child.kill();
                let _ = new.child.wait();
                r.killed_mid_upgrade = Some(mid && journal.exists());
                r.install = Some(stage.take_over("v2").map_err(e)?);
                r.recovery_ms = Some(u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX));
            }
            PhaseKind::Steady | PhaseKind::ConfigChange | PhaseKind::Uninstall => {
                return Err(format!(
                    "phase {} is not part of the demo",
                    phase.kind.name()
                ));
            }
        }
        r.versions.1 = stage.version();
        reports.push(r);
        Ok(())
    };
    let stats = run_phases_with(&mut traffic, &first, &phases, &mut settle_fn, &mut action);
    let stage = stage_cell.into_inner();
    if options.interrupted.load(Ordering::Acquire) {
        stop_prober.store(true, Ordering::Release);
        return Err(StoryError::Interrupted);
    }
    stats.map_err(step)?;

    // After the last upgrade: traffic paused, counters against the connects made,
    // then connections held open against the per-connection table.
    traffic.pause()?;
    let counters_after_last_upgrade = stage.counters()?;
    let connects_per_backend = per_backend_total(&traffic.report()?);
    let held = traffic.hold(HELD)?;
    let want: BTreeSet<ConnKey> = held
        .iter()
        .map(|h| ConnKey {
            src: h.local,
            dst: h.peer,
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(5);
    let mut table = stage.dataplane()?.conns().map_err(step)?;
    while table != want && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
        table = stage.dataplane()?.conns().map_err(step)?;
    }
    let conns = ConnsCheck {
        held: held.len(),
        in_table: table.len(),
        exact: table == want,
    };
    traffic.release()?;

    // Uninstall: the daemon stops, everything is removed.
    *phase_name.lock().unwrap_or_else(PoisonError::into_inner) = "uninstall".into();
    stop_prober.store(true, Ordering::Release);
    let counters_before = stage.counters()?;
    if let Some(d) = &stage.daemon {
        let pid = d.child.id();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    if let Some(mut d) = stage.daemon.take() {
        let _ = d.child.wait();
        stage.daemon = None;
        let bpf = handover_sys::Bpf::kernel();
        EngineInstaller::new(&bpf, stage.fs.path(), &stage.state())
            .uninstall()
            .map_err(step)?;
    }
    let pins_left = walk(stage.fs.path())
        .into_iter()
        .filter(|p| !p.ends_with(".debug"))
        .collect();
    reports.push(PhaseReport {
        name: "uninstall".into(),
        action: "meshd stops; the dataplane is detached and every pin removed".into(),
        versions: (stage.version(), String::new()),
        connects: 0,
        failed: 0,
        out_of_config: 0,
        per_backend: BTreeMap::new(),
        errors: Vec::new(),
        duration_ms: 0,
        install: None,
        counters_before,
        counters_after: BTreeMap::new(),
        daemon_down_ms: None,
        recovery_ms: None,
        killed_mid_upgrade: None,
        admin: AdminStats::default(),
    });
    let all = traffic.stop()?;
    let admin = prober.join().unwrap_or_default();

    let stats = all;
    // Fill each phase's traffic, admin and closing counters in.
    for r in &mut reports {
        if let Some(s) = stats.iter().find(|s| s.name == r.name) {
            r.connects = s.connects;
            r.failed = s.failed;
            r.out_of_config = s.out_of_config;
            r.per_backend = s.per_backend.clone();
            r.errors = s.errors.clone();
            r.duration_ms = s.duration_ms;
        }
        r.admin = admin.get(&r.name).cloned().unwrap_or_default();
    }
    for i in 0..reports.len().saturating_sub(1) {
        let next = reports
            .get(i + 1)
            .map(|r| r.counters_before.clone())
            .unwrap_or_default();
        if let Some(r) = reports.get_mut(i) {
            r.counters_after = next;
        }
    }
    if let Some(r) = reports.iter_mut().rev().nth(1) {
        r.counters_after = counters_after_last_upgrade.clone();
    }
    Ok(DemoReport {
        rate: options.rate,
        phases: reports,
        connects_per_backend,
        counters_after_last_upgrade,
        conns,
        pins_left,
    })
}

/// Every path under `dir`, relative to it.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if let Ok(rel) = p.strip_prefix(dir) {
                out.push(rel.display().to_string());
            }
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Whether every check of the report holds: no failed or out-of-config connect in any
/// phase, the counters after the last upgrade equal the connects made, the
/// per-connection table holds exactly the open connections, nothing left pinned.
#[must_use]
pub fn all_good(report: &DemoReport) -> bool {
    report.phases.iter().all(|p| {
        // A killed daemon's admin listener dies with it (a crash falls back to
        // the pins); through a handover nothing may be refused.
        let handed_over = p.install.as_ref().is_some_and(|i| i.took_over);
        p.failed == 0 && p.out_of_config == 0 && (!handed_over || p.admin.failed == 0)
    }) && report.counters_after_last_upgrade == report.connects_per_backend
        && report.conns.exact
        && report.pins_left.is_empty()
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The report as text, one block per phase.
#[must_use]
pub fn render_text(report: &DemoReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "handover demo: meshd under {} connects/s through the VIPs",
        report.rate
    );
    for (i, p) in report.phases.iter().enumerate() {
        let _ = writeln!(
            out,
            "\nphase {i}: {} ({} -> {})",
            p.name, p.versions.0, p.versions.1
        );
        let _ = writeln!(out, "  action: {}", p.action);
        let _ = writeln!(
            out,
            "  connects: {} made, {} failed, {} to a backend not in the config ({} ms)",
            p.connects, p.failed, p.out_of_config, p.duration_ms
        );
        let _ = writeln!(out, "  per backend: {}", counts(&p.per_backend));
        for e in &p.errors {
            let _ = writeln!(out, "  error: {e}");
        }
        let pids: Vec<String> = p
            .admin
            .answered_by
            .iter()
            .map(|(pid, n)| format!("pid {pid}: {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  admin endpoint: {} requests, {} failed, answered by {}, longest gap {} ms",
            p.admin.requests,
            p.admin.failed,
            if pids.is_empty() {
                "-".into()
            } else {
                pids.join(", ")
            },
            p.admin.longest_gap_ms
        );
        if let Some(ms) = p.daemon_down_ms {
            let _ = writeln!(
                out,
                "  no daemon for {ms} ms (the pinned programs steered alone)"
            );
        }
        if let Some(ms) = p.recovery_ms {
            let _ = writeln!(
                out,
                "  recovered and upgraded {ms} ms after the kill (the old daemon served meanwhile)"
            );
        }
        if let Some(mid) = p.killed_mid_upgrade {
            let _ = writeln!(
                out,
                "  killed {}",
                if mid {
                    "with the upgrade's journal open (mid-upgrade)"
                } else {
                    "before the upgrade's journal existed"
                }
            );
        }
        if let Some(inst) = &p.install {
            let start = match &inst.start {
                crate::install::Start::Fresh => "fresh".to_owned(),
                crate::install::Start::Restart => "restart".to_owned(),
                crate::install::Start::Upgrade => "upgrade".to_owned(),
                crate::install::Start::Recovered { direction } => {
                    format!("recovered ({direction})")
                }
            };
            let _ = writeln!(
                out,
                "  daemon: {start}{}{}",
                if inst.took_over {
                    ", took over through handover"
                } else {
                    ""
                },
                inst.switch_window_us
                    .map(|us| format!(", old and new programs side by side {us} us"))
                    .unwrap_or_default()
            );
            for (name, m) in &inst.maps {
                let _ = writeln!(
                    out,
                    "    map {name}: {}{}, carried {}, reconciled {}, deleted {}",
                    m.action,
                    m.verdict
                        .as_ref()
                        .map(|v| format!(" ({v})"))
                        .unwrap_or_default(),
                    m.copied,
                    m.reconciled,
                    m.deleted
                );
            }
        }
        let _ = writeln!(
            out,
            "  backend_conns before: {}",
            counts(&p.counters_before)
        );
        let _ = writeln!(out, "  backend_conns after:  {}", counts(&p.counters_after));
    }
    let _ = writeln!(
        out,
        "\nconnects per backend, all phases: {}",
        counts(&report.connects_per_backend)
    );
    let _ = writeln!(
        out,
        "backend_conns after the last upgrade: {} ({})",
        counts(&report.counters_after_last_upgrade),
        if report.counters_after_last_upgrade == report.connects_per_backend {
            "equal"
        } else {
            "DIFFERENT"
        }
    );
    let _ = writeln!(
        out,
        "per-connection table: {} entries for {} open connections ({})",
        report.conns.in_table,
        report.conns.held,
        if report.conns.exact {
            "exact"
        } else {
            "NOT EXACT"
        }
    );
    let _ = writeln!(
        out,
        "after uninstall: {}",
        if report.pins_left.is_empty() {
            "nothing pinned".to_owned()
        } else {
            format!("left: {}", report.pins_left.join(", "))
        }
    );
    let _ = writeln!(
        out,
        "result: {}",
        if all_good(report) { "ok" } else { "FAILED" }
    );
    out
}
