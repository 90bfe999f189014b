//! meshd against the real kernel: the dataplane of programs/dataplane/v1.c
//! (programs/build/dataplane/v1.o) installed by the `meshd` binary into a private bpffs
//! and attached to a private cgroup; backends and clients in a child process that has
//! joined that cgroup and its own network namespace, connecting through the VIPs at
//! several hundred connects per second while the daemon is restarted, killed and
//! reconfigured.
//! Needs root; skips loudly otherwise.

#![expect(clippy::indexing_slicing, reason = "tests index the reports they read")]

mod dataplane;
#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use dataplane::dataplane_loads;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use handover_demo::config::{Backend, Config, LbPolicy, Service};
use handover_demo::dataplane::Dataplane;
use handover_demo::layout::{ConnKey, Layout};
use handover_demo::phases::{Phase, PhaseKind, run_phases};
use handover_demo::traffic::remote::{RemoteTraffic, serve};
use handover_demo::traffic::{
    ClientOptions, HeldConn, PhaseStats, allowed_of, backends_of, per_backend_total, targets_of,
};
use handover_sys::{Bpf, ObjectKind, OpenFlags};

/// Connects per second the clients aim at.
const RATE: u32 = 600;
/// Longest wait for the daemon to say it is ready, or for the kernel to catch up.
const PATIENCE: Duration = Duration::from_secs(30);

/// A dataplane version: programs/dataplane/VERSION.c -> programs/build/dataplane/VERSION.o.
fn object(version: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../programs/build/dataplane")
        .join(format!("{version}.o"));
    assert!(
        p.is_file(),
        "{} missing: run programs/build.sh first",
        p.display()
    );
    p
}

fn backend(name: &str, last: u8, priority: u32) -> Backend {
    Backend {
        name: name.into(),
        address: Ipv4Addr::new(127, 0, 1, last),
        port: 8080,
        weight: 1,
        priority,
    }
}

fn web(backends: Vec<Backend>) -> Service {
    Service {
        name: "web".into(),
        vip: Ipv4Addr::new(127, 100, 0, 1),
        port: 80,
        lb_policy: LbPolicy::RoundRobin,
        target_port: 0,
        backends,
    }
}

/// A second service on its own VIP: random, with a standby backend at priority 1 that
/// must get nothing while the priority-0 one is there.
fn api() -> Service {
    Service {
        name: "api".into(),
        vip: Ipv4Addr::new(127, 100, 0, 2),
        port: 81,
        lb_policy: LbPolicy::Random,
        target_port: 0,
        backends: vec![backend("api-1", 21, 0), backend("api-standby", 22, 1)],
    }
}

/// The child's side: joins the cgroup, makes its own network namespace, then runs the
/// traffic harness commanded over stdin and stdout.
fn traffic_child() {
    let cgroup = std::env::var("HANDOVER_CGROUP").expect("cgroup path");
    testenv::join_cgroup(cgroup.as_ref());
    testenv::enter_new_netns();
    serve(std::io::stdin().lock(), std::io::stdout()).expect("serve the harness");
}

/// Everything a test creates: bpffs, cgroup, state directory, config file, and the
/// processes it started (ended on drop, before the cgroup is removed).
struct Env {
    test: &'static str,
    object: PathBuf,
    // Field order is drop order: processes first, then the cgroup and mounts.
    daemon: Option<Daemon>,
    fs: testenv::Bpffs,
    cgroup: testenv::Cgroup,
    dir: testenv::TempDir,
    /// Backend uids ever seen in the backend map, by backend name.
    uids: BTreeMap<String, u32>,
}

impl Env {
    fn new(test: &'static str, config: &Config) -> Self {
        Self::with_object(test, config, "v1")
    }

    fn with_object(test: &'static str, config: &Config, version: &str) -> Self {
        let env = Self {
            test,
            object: object(version),
            daemon: None,
            fs: testenv::Bpffs::mount(),
            cgroup: testenv::Cgroup::new(),
            dir: testenv::TempDir::new("handover-meshd"),
            uids: BTreeMap::new(),
        };
        env.write_config(config);
        env
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn write_config(&self, config: &Config) {
        let text = serde_json::to_vec_pretty(config).unwrap();
        // Written whole, then renamed: a daemon never reads half a file.
        let tmp = self.dir.path().join("config.json.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.config_path()).unwrap();
    }

    fn meshd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_meshd"));
        c.args(args)
            .arg("--root")
            .arg(self.fs.path())
            .arg("--state")
            .arg(self.state())
            .env("RUST_LOG", "info");
        c
    }

    /// Starts the daemon and waits for its ready line; returns the start it reports.
    fn start_daemon(&mut self) -> String {
        assert!(self.daemon.is_none(), "a daemon is running already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("meshd.log"))
            .unwrap();
        let mut child = self
            .meshd(&["run"])
            .arg("--cgroup")
            .arg(self.cgroup.path())
            .arg("--config")
            .arg(self.config_path())
            .arg("--object")
            .arg(&self.object)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn meshd");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.daemon = Some(Daemon { child });
        match rx.recv_timeout(PATIENCE) {
            Ok(line) => line
                .strip_prefix("ready ")
                .unwrap_or_else(|| panic!("meshd said {line:?}\n{}", self.log()))
                .to_owned(),
            Err(e) => panic!("meshd not ready: {e}\n{}", self.log()),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("meshd.log")).unwrap_or_default()
    }

    /// SIGTERM, and the daemon exits cleanly.
    fn stop_daemon(&mut self) {
        let mut d = self.daemon.take().expect("a running daemon");
        d.signal(libc::SIGTERM);
        let status = d.child.wait().unwrap();
        assert!(
            status.success(),
            "meshd exited with {status}\n{}",
            self.log()
        );
    }

    /// SIGKILL.
    fn kill_daemon(&mut self) {
        let mut d = self.daemon.take().expect("a running daemon");
        d.child.kill().unwrap();
        d.child.wait().unwrap();
    }

    fn hup_daemon(&self) {
        self.daemon
            .as_ref()
            .expect("a running daemon")
            .signal(libc::SIGHUP);
    }

    fn uninstall(&self) {
        let out = self.meshd(&["uninstall"]).output().unwrap();
        assert!(
            out.status.success(),
            "meshd uninstall: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The dataplane's maps, opened from their pins by this test.
    fn dataplane(&self) -> Dataplane {
        let bpf = Bpf::kernel();
        let mut fds: BTreeMap<String, OwnedFd> = BTreeMap::new();
        for name in [
            "frontend",
            "service",
            "endpoint",
            "backend",
            "backend_conns",
            "conns",
        ] {
            let fd = bpf
                .obj_get(
                    &self.fs.path().join("maps").join(name),
                    OpenFlags::READ_WRITE,
                )
                .unwrap_or_else(|e| panic!("open pin {name}: {e}"));
            fds.insert(name.to_owned(), fd);
        }
        let bytes = std::fs::read(&self.object).unwrap();
        let layout = Layout::of(&handover_loader::Object::parse(&bytes).unwrap()).unwrap();
        Dataplane::new(&bpf, fds, layout).unwrap()
    }

    /// Records the uid of every backend in the backend map, named as in `config`.
    fn learn_uids(&mut self, config: &Config) {
        let names = config.backend_names();
        for (uid, b) in self.dataplane().backends().unwrap() {
            let name = names.get(&(b.address, b.port)).unwrap_or_else(|| {
                panic!(
                    "backend map holds {}:{}, not in the config",
                    b.address, b.port
                )
            });
            if let Some(old) = self.uids.insert(name.clone(), uid) {
                assert_eq!(old, uid, "backend {name} changed uid");
            }
        }
    }

    /// Starts the traffic child, with backends for every config the test will use.
    fn start_traffic(&self, configs: &[&Config], phase: &str) -> RemoteTraffic {
        let exe = std::env::current_exe().unwrap();
        let child: Child = Command::new(exe)
            .args([self.test, "--exact", "--nocapture", "--test-threads=1"])
            .env(testenv::ROLE_VAR, "traffic")
            .env("HANDOVER_CGROUP", self.cgroup.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn traffic child");
        let mut t = RemoteTraffic::new(child).unwrap();
        let mut backends = Vec::new();
        for c in configs {
            for b in backends_of(c) {
                if !backends.contains(&b) {
                    backends.push(b);
                }
            }
        }
        t.start(
            backends,
            ClientOptions {
                targets: targets_of(configs[0]),
                rate: RATE,
                ..ClientOptions::default()
            },
            phase,
            allowed_of(configs[0]),
        )
        .unwrap();
        t
    }

    /// Checks the counters against what the clients saw: every connect the programs
    /// steered, per backend, is one the clients made and got an answer for.
    fn assert_counters_match(&self, phases: &[PhaseStats]) {
        let counted = self.dataplane().connects().unwrap();
        let seen = per_backend_total(phases);
        let by_uid: BTreeMap<u32, u64> = self
            .uids
            .iter()
            .map(|(name, uid)| (*uid, seen.get(name).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(
            counted, by_uid,
            "backend_conns vs the clients' counts (uids: {:?})",
            self.uids
        );
    }

    /// Waits until the per-connection table holds exactly `held`.
    fn assert_conns_are(&self, held: &[HeldConn]) {
        let want: BTreeSet<ConnKey> = held
            .iter()
            .map(|h| ConnKey {
                src: h.local,
                dst: h.peer,
            })
            .collect();
        let dp = self.dataplane();
        let start = Instant::now();
        loop {
            let got = dp.conns().unwrap();
            if got == want {
                return;
            }
            // Closing connections leave the table when their last ACK arrives.
            assert!(
                start.elapsed() < PATIENCE,
                "conns holds {} entries, {} connections are open; extra {:?}, missing {:?}",
                got.len(),
                want.len(),
                got.difference(&want).take(5).collect::<Vec<_>>(),
                want.difference(&got).take(5).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Daemon {
    child: Child,
}

impl Daemon {
    fn signal(&self, sig: i32) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill has no memory arguments; the pid is our own child's, not yet
        // waited for, so it cannot have been reused.
        #[allow(unsafe_code)]
        let ret = unsafe { libc::kill(pid, sig) };
        assert_eq!(ret, 0, "kill: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_clean(phases: &[PhaseStats]) {
    for p in phases {
        assert_eq!(
            p.failed, 0,
            "phase {}: failed connects: {:?}",
            p.name, p.errors
        );
        assert_eq!(
            p.out_of_config, 0,
            "phase {}: connects to backends outside the config: {:?}",
            p.name, p.errors
        );
        assert!(p.connects > 0, "phase {} made no connects", p.name);
    }
}

#[test]
fn v1_steers_every_connect_and_its_maps_count_them() {
    steers("v1_steers_every_connect_and_its_maps_count_them", "v1");
}

#[test]
fn v2_steers_every_connect_and_its_maps_count_them() {
    steers("v2_steers_every_connect_and_its_maps_count_them", "v2");
}

/// A service of dataplane v2's weighted policy: one backend of weight 1, one of 3.
fn weighted() -> Service {
    Service {
        name: "weighted".into(),
        vip: Ipv4Addr::new(127, 100, 0, 3),
        port: 82,
        lb_policy: LbPolicy::Weighted,
        target_port: 0,
        backends: vec![
            backend("light", 31, 0),
            Backend {
                weight: 3,
                ..backend("heavy", 32, 0)
            },
        ],
    }
}

/// Installs dataplane `version` fresh and checks, under traffic, that every connect is
/// steered to a backend of the config and that the maps count exactly what happened.
fn steers(test: &'static str, version: &str) {
    if testenv::child_role().as_deref() == Some("traffic") {
        return traffic_child();
    }
    if !testenv::privileged(test) || !dataplane_loads(test) {
        return;
    }
    let mut config = Config {
        services: vec![
            web(vec![
                backend("web-1", 1, 0),
                backend("web-2", 2, 0),
                backend("web-3", 3, 0),
            ]),
            api(),
        ],
    };
    if version != "v1" {
        config.services.push(weighted());
    }
    let mut env = Env::with_object(test, &config, version);
    assert_eq!(env.start_daemon(), "fresh");
    env.learn_uids(&config);
    let mut traffic = env.start_traffic(&[&config], "steady");
    std::thread::sleep(Duration::from_secs(3));
    let held = traffic.hold(25).unwrap();
    assert_eq!(held.len(), 25);
    traffic.pause().unwrap();
    // Exactly the open connections are in the table.
    env.assert_conns_are(&held);
    let phases = traffic.report().unwrap();
    env.assert_counters_match(&phases);
    traffic.release().unwrap();
    env.assert_conns_are(&[]);
    let phases = traffic.stop().unwrap();
    for p in &phases {
        eprintln!(
            "phase {}: {} connects in {} ms, {} failed, {} out of config, {:?}",
            p.name, p.connects, p.duration_ms, p.failed, p.out_of_config, p.per_backend
        );
    }
    assert_clean(&phases);
    let steady = &phases[0];
    assert!(steady.connects >= 100, "{steady:?}");
    // Every backend of priority 0 answered; the standby never did.
    for name in ["web-1", "web-2", "web-3", "api-1"] {
        assert!(
            steady.per_backend.get(name).copied().unwrap_or(0) > 0,
            "{name}: {steady:?}"
        );
    }
    assert_eq!(steady.per_backend.get("api-standby"), None, "{steady:?}");
    // Round robin spreads web evenly: the counts differ by the connects in flight at
    // most (the held ones went in turn too).
    let web: Vec<u64> = ["web-1", "web-2", "web-3"]
        .iter()
        .map(|n| steady.per_backend[*n])
        .collect();
    let spread = web.iter().max().unwrap() - web.iter().min().unwrap();
    assert!(spread <= 8, "round robin uneven: {web:?}");
    if version != "v1" {
        let light = steady.per_backend.get("light").copied().unwrap_or(0);
        let heavy = steady.per_backend.get("heavy").copied().unwrap_or(0);
        assert!(
            light > 0 && heavy > 2 * light,
            "weighted 1:3 gave {light}:{heavy}"
        );
    }
    env.stop_daemon();
    env.uninstall();
}

const RESTARTS: &str = "restarts_and_sigkills_under_traffic_lose_nothing_and_resync";

#[test]
fn restarts_and_sigkills_under_traffic_lose_nothing_and_resync() {
    if testenv::child_role().as_deref() == Some("traffic") {
        return traffic_child();
    }
    if !testenv::privileged(RESTARTS) || !dataplane_loads(RESTARTS) {
        return;
    }
    let first = Config {
        services: vec![
            web(vec![
                backend("web-1", 1, 0),
                backend("web-2", 2, 0),
                backend("web-3", 3, 0),
            ]),
            api(),
        ],
    };
    // Between runs: web-2 removed, web-4 added.
    let second = Config {
        services: vec![
            web(vec![
                backend("web-1", 1, 0),
                backend("web-3", 3, 0),
                backend("web-4", 4, 0),
            ]),
            api(),
        ],
    };
    // Across a SIGKILL: web-1 removed, web-5 added, the api standby promoted.
    let third = Config {
        services: vec![
            web(vec![
                backend("web-3", 3, 0),
                backend("web-4", 4, 0),
                backend("web-5", 5, 0),
            ]),
            Service {
                backends: vec![backend("api-standby", 22, 0)],
                ..api()
            },
        ],
    };
    // By SIGHUP, while running: web-6 added.
    let fourth = Config {
        services: vec![
            web(vec![
                backend("web-3", 3, 0),
                backend("web-4", 4, 0),
                backend("web-5", 5, 0),
                backend("web-6", 6, 0),
            ]),
            third.services[1].clone(),
        ],
    };
    let mut env = Env::new(RESTARTS, &first);
    assert_eq!(env.start_daemon(), "fresh");
    env.learn_uids(&first);
    let mut traffic = env.start_traffic(&[&first, &second, &third, &fourth], "steady");
    std::thread::sleep(Duration::from_secs(2));
    let phases = [
        Phase::new(PhaseKind::Restart),
        Phase::new(PhaseKind::Sigkill),
        Phase::with_config(PhaseKind::ConfigChange, second.clone()),
        Phase::with_config(PhaseKind::Sigkill, third.clone()),
        Phase::with_config(PhaseKind::ConfigChange, fourth.clone()),
    ];
    let mut step = 0;
    let report = run_phases(
        &mut traffic,
        &first,
        &phases,
        Duration::from_secs(2),
        &mut |phase| {
            step += 1;
            match (step, phase.kind) {
                (1, PhaseKind::Restart) => {
                    env.stop_daemon();
                    // Nothing runs in user space now: the pinned programs steer alone.
                    std::thread::sleep(Duration::from_millis(500));
                    assert_eq!(env.start_daemon(), "restart");
                }
                (2, PhaseKind::Sigkill) => {
                    env.kill_daemon();
                    std::thread::sleep(Duration::from_millis(500));
                    assert_eq!(env.start_daemon(), "restart");
                }
                (3, PhaseKind::ConfigChange) => {
                    env.stop_daemon();
                    env.write_config(&second);
                    assert_eq!(env.start_daemon(), "restart");
                    env.learn_uids(&second);
                }
                (4, PhaseKind::Sigkill) => {
                    env.kill_daemon();
                    env.write_config(&third);
                    assert_eq!(env.start_daemon(), "restart");
                    env.learn_uids(&third);
                }
                (5, PhaseKind::ConfigChange) => {
                    env.write_config(&fourth);
                    env.hup_daemon();
                    // The re-sync is done when web-6 is in the backend map.
                    let start = Instant::now();
                    while !env
                        .dataplane()
                        .backends()
                        .unwrap()
                        .values()
                        .any(|b| b.address == Ipv4Addr::new(127, 0, 1, 6))
                    {
                        assert!(
                            start.elapsed() < PATIENCE,
                            "SIGHUP did not re-sync\n{}",
                            env.log()
                        );
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    // The endpoint slot is written right after the backend.
                    std::thread::sleep(Duration::from_millis(100));
                    env.learn_uids(&fourth);
                }
                other => return Err(format!("unexpected phase {other:?}")),
            }
            Ok(())
        },
    )
    .unwrap();
    traffic.pause().unwrap();
    let report_after_pause = traffic.report().unwrap();
    assert_eq!(report_after_pause.len(), report.len());
    env.assert_counters_match(&report_after_pause);
    env.assert_conns_are(&[]);
    let phases = traffic.stop().unwrap();
    for p in &phases {
        eprintln!(
            "phase {}: {} connects in {} ms, {} failed, {} out of config, {:?}",
            p.name, p.connects, p.duration_ms, p.failed, p.out_of_config, p.per_backend
        );
    }
    assert_clean(&phases);
    let by_name: BTreeMap<&str, &PhaseStats> =
        phases.iter().map(|p| (p.name.as_str(), p)).collect();
    assert_eq!(phases.len(), 6, "{by_name:?}");
    // After each change, the new backends answer.
    let last = phases.last().unwrap();
    for name in ["web-3", "web-4", "web-5", "web-6", "api-standby"] {
        assert!(
            last.per_backend.get(name).copied().unwrap_or(0) > 0,
            "{name}: {last:?}"
        );
    }
    // The uids of kept backends never changed (learn_uids checks), removed ones kept
    // their counters, and the maps hold exactly the last config.
    let dp = env.dataplane();
    let live = dp.live().unwrap();
    assert_eq!(live.backends.len(), 5);
    assert_eq!(live.endpoints.len(), 5);
    assert_eq!(live.services.len(), 2);
    assert_eq!(live.frontends.len(), 2);
    let counted = dp.connects().unwrap();
    for gone in ["web-1", "web-2", "api-1"] {
        assert!(
            counted.get(&env.uids[gone]).copied().unwrap_or(0) > 0,
            "{gone}'s counter"
        );
    }
    env.stop_daemon();
    env.uninstall();
}

const UNINSTALL: &str = "uninstall_detaches_and_leaves_the_bpffs_empty";

#[test]
fn uninstall_detaches_and_leaves_the_bpffs_empty() {
    if testenv::child_role().as_deref() == Some("traffic") {
        return traffic_child();
    }
    if !testenv::privileged(UNINSTALL) || !dataplane_loads(UNINSTALL) {
        return;
    }
    let config = Config {
        services: vec![web(vec![backend("web-1", 1, 0), backend("web-2", 2, 0)])],
    };
    let mut env = Env::new(UNINSTALL, &config);
    // A fresh bpffs may show the kernel's own entries (maps.debug, progs.debug).
    let before = walk(env.fs.path());
    assert_eq!(env.start_daemon(), "fresh");
    let pins: Vec<String> = walk(env.fs.path());
    assert!(pins.contains(&"links/mesh_connect4".to_owned()), "{pins:?}");
    assert!(pins.contains(&"maps/backend".to_owned()), "{pins:?}");
    let bpf = Bpf::kernel();
    let link_ids: Vec<u32> = ["mesh_connect4", "mesh_sockops"]
        .iter()
        .map(|p| {
            let fd = bpf
                .obj_get(&env.fs.path().join("links").join(p), OpenFlags::READ_WRITE)
                .unwrap();
            let id = bpf.link_info(&fd).unwrap().id;
            assert!(
                bpf.fd_by_id(ObjectKind::Link, id, OpenFlags::READ_WRITE)
                    .is_ok()
            );
            id
        })
        .collect();
    let mut traffic = env.start_traffic(&[&config], "steady");
    std::thread::sleep(Duration::from_secs(1));
    env.stop_daemon();
    let phases = run_phases(
        &mut traffic,
        &config,
        &[Phase::new(PhaseKind::Uninstall)],
        Duration::from_secs(1),
        &mut |_| {
            env.uninstall();
            Ok(())
        },
    )
    .unwrap();
    let _ = traffic.stop().unwrap();
    assert_clean(&phases[..1]);
    // After uninstall no connect is steered: the VIP is plain loopback, where nothing
    // listens, so every connect is refused, and none reaches a backend.
    let after = &phases[1];
    assert_eq!(after.out_of_config, 0, "{after:?}");
    assert!(after.failed > 0, "{after:?}");
    assert_eq!(walk(env.fs.path()), before);
    assert!(!env.state().join("pins.json").exists());
    // The links are gone from the kernel.
    for id in link_ids {
        let start = Instant::now();
        while bpf
            .fd_by_id(ObjectKind::Link, id, OpenFlags::READ_WRITE)
            .is_ok()
        {
            assert!(start.elapsed() < PATIENCE, "link {id} still exists");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Every path under `dir`, relative, sorted.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_bad_config_is_refused_before_anything_is_created() {
    let dir = testenv::TempDir::new("handover-meshd-config");
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"services": [{"name": "x", "vip": "10.1.2.3", "port": 80, "backends": []}]}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshd"))
        .arg("run")
        .args([
            "--root",
            "/nonexistent-root",
            "--cgroup",
            "/nonexistent-cgroup",
        ])
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--config")
        .arg(&config)
        .arg("--object")
        .arg(object("v1"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("services[0].vip: 10.1.2.3 is not in 127.0.0.0/8"),
        "{stderr}"
    );
    assert!(!dir.path().join("state").exists());
    let usage = Command::new(env!("CARGO_BIN_EXE_meshd"))
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}
