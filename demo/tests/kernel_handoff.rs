//! meshd's process handover against the real kernel: two `meshd` processes in a
//! network namespace of the test's own (the dataplane of programs/dataplane/v1.c in a
//! private bpffs, attached to a private cgroup), the new one taking the admin listener
//! and the bpf descriptors over from the old through the handoff socket.
//! Needs root; skips loudly otherwise.

#![expect(
    clippy::indexing_slicing,
    reason = "tests index the daemons they started"
)]

mod dataplane;
#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use dataplane::dataplane_loads;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use handover_demo::admin::get_metrics;
use handover_demo::config::{Backend, Config, LbPolicy, Service};
use handover_demo::isolation::{Bpffs, Cgroup, NetNs, TempDir};

/// Admin port inside the namespace.
const PORT: u16 = 9100;
/// Requests the client loop makes across the handover.
const REQUESTS: usize = 1500;
const PATIENCE: Duration = Duration::from_secs(30);

fn object() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../programs/build/dataplane/v1.o");
    assert!(
        p.is_file(),
        "{} missing: run programs/build.sh first",
        p.display()
    );
    p
}

struct Env {
    daemons: Vec<Child>,
    netns: NetNs,
    fs: Bpffs,
    cgroup: Cgroup,
    dir: TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = TempDir::new("handover-meshd-handoff").unwrap();
        let config = Config {
            services: vec![Service {
                name: "web".into(),
                vip: Ipv4Addr::new(127, 100, 0, 1),
                port: 80,
                lb_policy: LbPolicy::RoundRobin,
                target_port: 0,
                backends: vec![Backend {
                    name: "web-1".into(),
                    address: Ipv4Addr::new(127, 0, 1, 1),
                    port: 8080,
                    weight: 1,
                    priority: 0,
                }],
            }],
        };
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec(&config).unwrap(),
        )
        .unwrap();
        // The handoff socket's directory: ours, mode 0700.
        let hdir = dir.path().join("handoff");
        std::fs::create_dir(&hdir).unwrap();
        std::fs::set_permissions(&hdir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        Self {
            daemons: Vec::new(),
            netns: NetNs::new().unwrap(),
            fs: Bpffs::mount().unwrap(),
            cgroup: Cgroup::new("handover-test").unwrap(),
            dir,
        }
    }

    /// Starts a meshd of `generation` in the namespace (optionally with a handoff
    /// failpoint); returns its index and the line it printed first.
    fn start(&mut self, generation: &str, failpoint: Option<&str>) -> (usize, Option<String>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("meshd.log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshd"));
        cmd.arg("run")
            .arg("--root")
            .arg(self.fs.path())
            .arg("--state")
            .arg(self.dir.path().join("state"))
            .arg("--cgroup")
            .arg(self.cgroup.path())
            .arg("--config")
            .arg(self.dir.path().join("config.json"))
            .arg("--object")
            .arg(object())
            .arg("--admin-port")
            .arg(PORT.to_string())
            .arg("--handoff")
            .arg(self.dir.path().join("handoff/meshd.sock"))
            .arg("--generation")
            .arg(generation)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(f) = failpoint {
            cmd.env(handover_handoff::FAILPOINT_VAR, f);
        }
        let mut child = self
            .netns
            .run(|| cmd.spawn())
            .unwrap()
            .expect("spawn meshd");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.daemons.push(child);
        (self.daemons.len() - 1, rx.recv_timeout(PATIENCE).ok())
    }

    fn pid(&self, i: usize) -> u32 {
        self.daemons[i].id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("meshd.log")).unwrap_or_default()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = Command::new(env!("CARGO_BIN_EXE_meshd"))
            .arg("uninstall")
            .arg("--root")
            .arg(self.fs.path())
            .arg("--state")
            .arg(self.dir.path().join("state"))
            .output();
    }
}

/// Makes `n` admin requests in the namespace on a thread, telling `at_quarter` when a
/// quarter is done; returns who answered each one, and every error.
fn request_loop(
    netns: NetNs,
    n: usize,
    at_quarter: mpsc::Sender<()>,
) -> std::thread::JoinHandle<(BTreeMap<u32, usize>, Vec<String>)> {
    std::thread::spawn(move || {
        netns.enter().unwrap();
        let mut by_pid = BTreeMap::new();
        let mut errors = Vec::new();
        for i in 0..n {
            if i == n / 4 {
                let _ = at_quarter.send(());
            }
            match get_metrics(PORT, Duration::from_secs(5)) {
                Ok((pid, body)) => {
                    assert!(
                        body.contains(&format!("meshd_info{{pid=\"{pid}\"")),
                        "the body names another process than the header: {body}"
                    );
                    *by_pid.entry(pid).or_insert(0) += 1;
                }
                Err(e) => errors.push(format!("request {i}: {e} ({:?})", e.kind())),
            }
        }
        (by_pid, errors)
    })
}

/// The value of the metric line starting with `name` in `body`.
fn metric(body: &str, name: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

const RESTART: &str = "a_restart_through_handover_refuses_and_resets_nothing";

#[test]
fn a_restart_through_handover_refuses_and_resets_nothing() {
    if !testenv::privileged(RESTART) || !dataplane_loads(RESTART) {
        return;
    }
    let mut env = Env::new();
    let (old, line) = env.start("1", None);
    assert_eq!(line.as_deref(), Some("ready fresh"), "{}", env.log());
    let old_pid = env.pid(old);
    let (tx, rx) = mpsc::channel();
    let requests = request_loop(env.netns.try_clone().unwrap(), REQUESTS, tx);
    rx.recv_timeout(PATIENCE).expect("the request loop runs");
    let (new, line) = env.start("2", None);
    assert_eq!(
        line.as_deref(),
        Some("ready restart handoff"),
        "{}",
        env.log()
    );
    let new_pid = env.pid(new);
    // The old daemon drains and exits by itself, with success.
    let status = env.daemons[old].wait().unwrap();
    assert!(status.success(), "old meshd: {status}\n{}", env.log());
    let (by_pid, errors) = requests.join().unwrap();
    assert!(
        errors.is_empty(),
        "{} failed requests: {errors:?}",
        errors.len()
    );
    assert_eq!(by_pid.values().sum::<usize>(), REQUESTS);
    assert!(
        by_pid.keys().all(|p| *p == old_pid || *p == new_pid),
        "answers from {by_pid:?}, not only {old_pid} and {new_pid}"
    );
    assert!(by_pid.contains_key(&old_pid), "{by_pid:?}");
    assert!(by_pid.contains_key(&new_pid), "{by_pid:?}");
    eprintln!("admin requests answered across the handover: {by_pid:?}");
    // After the old exited, the new answers everything, with its maps synced.
    let (pid, body) = env
        .netns
        .run(|| get_metrics(PORT, Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    assert_eq!(pid, new_pid);
    assert_eq!(metric(&body, "meshd_sync_generation"), Some(1), "{body}");
    assert_eq!(metric(&body, "meshd_quiesced"), Some(0), "{body}");
    assert!(
        body.contains("meshd_backend_connects_total{backend=\"web-1\",address=\"127.0.1.1:8080\"}"),
        "{body}"
    );
}

const NEW_DIES: &str = "a_new_meshd_dying_before_serving_leaves_the_old_serving";

#[test]
fn a_new_meshd_dying_before_serving_leaves_the_old_serving() {
    if !testenv::privileged(NEW_DIES) || !dataplane_loads(NEW_DIES) {
        return;
    }
    let mut env = Env::new();
    let (old, line) = env.start("1", None);
    assert_eq!(line.as_deref(), Some("ready fresh"), "{}", env.log());
    let old_pid = env.pid(old);
    // The new one kills itself once the old has quiesced, before its final sync.
    let (new, line) = env.start("2", Some("new.quiesced_received"));
    assert_eq!(line, None, "the new meshd said something: {}", env.log());
    let status = env.daemons[new].wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "{}",
        env.log()
    );
    // The old serves on, with map writes on again.
    let answer = || {
        env.netns
            .run(|| get_metrics(PORT, Duration::from_secs(5)))
            .unwrap()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (pid, body) = answer();
        assert_eq!(pid, old_pid, "{body}");
        if metric(&body, "meshd_quiesced") == Some(0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old meshd stays quiesced: {}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A configuration change is synced by the old daemon.
    let before = metric(&answer().1, "meshd_sync_generation").unwrap();
    assert!(env.daemons[old].try_wait().unwrap().is_none());
    // SAFETY: kill has no memory arguments; the pid is our own live child's.
    #[allow(unsafe_code)]
    let ret = unsafe { libc::kill(libc::pid_t::try_from(old_pid).unwrap(), libc::SIGHUP) };
    assert_eq!(ret, 0);
    let deadline = std::time::Instant::now() + PATIENCE;
    while metric(&answer().1, "meshd_sync_generation").unwrap() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no re-sync: {}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
