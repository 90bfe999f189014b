//! Drives `handoff-testd` processes and talks HTTP to them, for the privileged
//! handoff tests (each runs inside a network namespace its test created).
#![allow(dead_code, reason = "each test file uses a different part")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The admin port the test daemons serve on, inside each test's own namespace.
pub const PORT: u16 = 9100;

/// A private directory (mode 0700) for a handoff socket; removed on drop.
pub fn private_dir() -> crate::testenv::TempDir {
    let dir = crate::testenv::TempDir::new("handoff");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// A running `handoff-testd`, with its output collected; killed (by its pid) on drop.
pub struct Daemon {
    pub name: String,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    status: Option<ExitStatus>,
}

fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            into.lock().unwrap().push(line);
        }
    });
}

impl Daemon {
    /// Starts generation `generation` at `handoff`, with the failpoint `failpoint`.
    pub fn start(name: &str, handoff: &str, generation: u32, failpoint: Option<&str>) -> Self {
        Self::start_with(name, handoff, generation, failpoint, &[])
    }

    pub fn start_with(
        name: &str,
        handoff: &str,
        generation: u32,
        failpoint: Option<&str>,
        extra: &[&str],
    ) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_handoff-testd"));
        cmd.args(["--handoff", handoff, "--port", &PORT.to_string()])
            .args(["--generation", &generation.to_string()])
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove(handover_handoff::FAILPOINT_VAR)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(fp) = failpoint {
            cmd.env(handover_handoff::FAILPOINT_VAR, fp);
        }
        let mut child = cmd.spawn().expect("spawn handoff-testd");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), Arc::clone(&stdout));
        collect(child.stderr.take().unwrap(), Arc::clone(&stderr));
        Self {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until stdout has a line `word PID`.
    pub fn wait_for(&self, word: &str, timeout: Duration) -> bool {
        let want = format!("{word} {}", self.pid());
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.stdout.lock().unwrap().contains(&want) {
                return true;
            }
            thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Its exit status, if it has exited (reaps it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.exited().is_none()
    }

    /// Whether it died of SIGKILL.
    pub fn killed(&mut self) -> bool {
        self.exited().and_then(|s| s.signal()) == Some(libc::SIGKILL)
    }

    /// A description for assertion messages.
    pub fn report(&mut self) -> String {
        let status = self.exited();
        format!(
            "--- {} (pid {}, status {status:?}) stdout:\n{}\n--- stderr:\n{}",
            self.name,
            self.pid(),
            self.stdout.lock().unwrap().join("\n"),
            self.log()
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How one request went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Answered by this pid.
    By(u32),
    Refused,
    Reset,
    /// Anything else (timeout, short response, parse failure).
    Failed(String),
}

/// One GET of the admin endpoint on 127.0.0.1 (in the caller's namespace).
pub fn get() -> Answer {
    let mut stream = match TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, PORT).into(),
        Duration::from_secs(5),
    ) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Answer::Refused,
        Err(e) => return Answer::Failed(format!("connect: {e}")),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    if let Err(e) = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") {
        return classify(&e, "write");
    }
    let mut response = String::new();
    if let Err(e) = stream.read_to_string(&mut response) {
        return classify(&e, "read");
    }
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        return if response.is_empty() {
            Answer::Reset
        } else {
            Answer::Failed(format!("no header end in {response:?}"))
        };
    };
    if !head.starts_with("HTTP/1.1 200 OK") {
        return Answer::Failed(format!("status {head:?}"));
    }
    // handoff_testd_requests_total{pid="123",generation="1"} 5
    body.lines()
        .find_map(|l| l.strip_prefix("handoff_testd_requests_total{pid=\""))
        .and_then(|rest| rest.split('"').next())
        .and_then(|pid| pid.parse().ok())
        .map_or_else(|| Answer::Failed(format!("no pid in {body:?}")), Answer::By)
}

fn classify(e: &std::io::Error, what: &str) -> Answer {
    match e.kind() {
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => Answer::Reset,
        std::io::ErrorKind::ConnectionRefused => Answer::Refused,
        _ => Answer::Failed(format!("{what}: {e}")),
    }
}

/// Waits until `n` requests in a row are answered by `pid` (within `timeout`).
pub fn settles_on(pid: u32, n: usize, timeout: Duration) -> Result<(), String> {
    let until = Instant::now() + timeout;
    let mut streak = 0;
    let mut last = None;
    while Instant::now() < until {
        let a = get();
        if a == Answer::By(pid) {
            streak += 1;
            if streak == n {
                return Ok(());
            }
        } else {
            streak = 0;
            last = Some(a);
            thread::sleep(Duration::from_millis(10));
        }
    }
    Err(format!(
        "never {n} answers in a row from pid {pid}; last other answer {last:?}"
    ))
}

/// The socket path inside `dir`.
pub fn socket_in(dir: &Path) -> PathBuf {
    dir.join("handoff.sock")
}
