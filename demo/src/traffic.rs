//! The traffic harness: backends that answer with their name, and clients that connect
//! to the service VIPs continuously at a target rate, counting per phase what happened
//! to every connect.
//!
//! A run is a list of phases ([`Traffic::begin_phase`]); each connect is counted in
//! the phase in which it started, and checked against the set of backends allowed when
//! it started ([`Traffic::allow`]): a reply from a backend outside that set is
//! "out of config". [`remote`] drives a harness in another process (one inside the
//! dataplane's cgroup and network namespace) over its standard input and output.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub mod remote;

/// Longest reply a backend sends (its name and a newline).
const MAX_REPLY: usize = 256;
/// Errors kept per phase, for the report.
const KEPT_ERRORS: usize = 10;

/// A TCP server that answers every connection with its name and a newline, then
/// closes it.
#[derive(Debug)]
pub struct BackendServer {
    name: String,
    addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BackendServer {
    /// Listens on `addr` and answers with `name`.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn start(name: &str, addr: SocketAddrV4) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let stop = Arc::new(AtomicBool::new(false));
        let reply = format!("{name}\n").into_bytes();
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("backend {name}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    // A client that went away is its own failure, counted there.
                    if let Ok(mut conn) = conn {
                        let _ = conn.write_all(&reply);
                    }
                }
            })?;
        Ok(Self {
            name: name.to_owned(),
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Its name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its address.
    #[must_use]
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }
}

impl Drop for BackendServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop; it sees the flag and ends.
        let _ = TcpStream::connect_timeout(&SocketAddr::V4(self.addr), Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How the clients connect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientOptions {
    /// Where to connect (service VIPs and ports), in turn.
    pub targets: Vec<SocketAddrV4>,
    /// Connects per second, over all workers.
    pub rate: u32,
    /// Client threads.
    pub workers: usize,
    /// Longest wait for a connect, and for the reply.
    pub timeout_ms: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            rate: 500,
            workers: 4,
            timeout_ms: 2000,
        }
    }
}

/// What happened to the connects that started in one phase.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseStats {
    /// The phase.
    pub name: String,
    /// Connects started.
    pub connects: u64,
    /// Connects that failed (refused, timed out, no or garbled reply).
    pub failed: u64,
    /// Connects answered by a backend outside the allowed set.
    pub out_of_config: u64,
    /// Answered connects per backend name.
    pub per_backend: BTreeMap<String, u64>,
    /// The first few failures.
    pub errors: Vec<String>,
    /// How long the phase lasted, in milliseconds (until the next began, or now).
    pub duration_ms: u64,
}

impl PhaseStats {
    /// Connects answered by a backend.
    #[must_use]
    pub fn answered(&self) -> u64 {
        self.per_backend.values().sum()
    }
}

/// Totals per backend over `phases`.
#[must_use]
pub fn per_backend_total(phases: &[PhaseStats]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for p in phases {
        for (b, n) in &p.per_backend {
            *out.entry(b.clone()).or_insert(0) += n;
        }
    }
    out
}

/// A connection kept open by [`Traffic::hold`]: the client's address and the address
/// it reached (the backend after the rewrite).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HeldConn {
    /// The client's end.
    pub local: SocketAddrV4,
    /// The backend's end.
    pub peer: SocketAddrV4,
}

#[derive(Debug)]
struct Phases {
    stats: Vec<PhaseStats>,
    started: Vec<Instant>,
    allowed: Arc<BTreeSet<String>>,
}

impl Phases {
    fn current(&self) -> usize {
        self.stats.len().saturating_sub(1)
    }
}

#[derive(Debug)]
struct Shared {
    options: ClientOptions,
    stop: AtomicBool,
    paused: AtomicBool,
    in_flight: AtomicUsize,
    phases: Mutex<Phases>,
    next_target: AtomicUsize,
}

impl Shared {
    fn phases(&self) -> MutexGuard<'_, Phases> {
        self.phases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn target(&self) -> Option<SocketAddrV4> {
        let n = self.options.targets.len();
        (n > 0).then(|| {
            let i = self.next_target.fetch_add(1, Ordering::Relaxed) % n;
            self.options.targets.get(i).copied()
        })?
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.options.timeout_ms.max(1))
    }

    /// Records the outcome of a connect started in phase `phase` with `allowed`.
    fn record(&self, phase: usize, allowed: &BTreeSet<String>, outcome: Result<String, String>) {
        let mut p = self.phases();
        let Some(stats) = p.stats.get_mut(phase) else {
            return;
        };
        stats.connects += 1;
        match outcome {
            Ok(name) => {
                if !allowed.contains(&name) {
                    stats.out_of_config += 1;
                    if stats.errors.len() < KEPT_ERRORS {
                        stats
                            .errors
                            .push(format!("answered by {name}, not in the config"));
                    }
                }
                *stats.per_backend.entry(name).or_insert(0) += 1;
            }
            Err(e) => {
                stats.failed += 1;
                if stats.errors.len() < KEPT_ERRORS {
                    stats.errors.push(e);
                }
            }
        }
    }

    /// One connect to `target`: the backend's name, or what went wrong. The stream is
    /// returned open when `keep` is set.
    fn connect_once(
        &self,
        target: SocketAddrV4,
        keep: bool,
    ) -> (Result<String, String>, Option<TcpStream>) {
        let timeout = self.timeout();
        let mut stream = match TcpStream::connect_timeout(&SocketAddr::V4(target), timeout) {
            Ok(s) => s,
            Err(e) => return (Err(format!("connect {target}: {e}")), None),
        };
        let _ = stream.set_read_timeout(Some(timeout));
        let mut buf = Vec::with_capacity(32);
        let mut chunk = [0u8; 64];
        let answer = loop {
            match stream.read(&mut chunk) {
                Ok(0) => break Err(format!("{target}: closed before a full reply")),
                Ok(n) => {
                    buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                        buf.truncate(end);
                        break String::from_utf8(buf)
                            .map_err(|_| format!("{target}: reply is not UTF-8"));
                    }
                    if buf.len() > MAX_REPLY {
                        break Err(format!("{target}: reply longer than {MAX_REPLY} bytes"));
                    }
                }
                Err(e) => break Err(format!("{target}: reading the reply: {e}")),
            }
        };
        (answer, keep.then_some(stream))
    }

    fn worker(&self, index: usize) {
        let workers = u32::try_from(self.options.workers.max(1)).unwrap_or(u32::MAX);
        let interval = Duration::from_secs(1) * workers / self.options.rate.max(1);
        // Spread the workers over one interval.
        let mut next = Instant::now() + interval * u32::try_from(index).unwrap_or(0) / workers;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else if now - next > Duration::from_secs(1) {
                // Far behind (a stall): do not burst to catch up.
                next = now;
            }
            next += interval;
            if self.paused.load(Ordering::SeqCst) {
                continue;
            }
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            // Checked again after counting in flight, so `pause` can wait for zero.
            if self.paused.load(Ordering::SeqCst) {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let Some(target) = self.target() else {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                break;
            };
            let (phase, allowed) = {
                let p = self.phases();
                (p.current(), Arc::clone(&p.allowed))
            };
            let (outcome, _) = self.connect_once(target, false);
            self.record(phase, &allowed, outcome);
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Clients connecting continuously through the service VIPs, with the counts per phase.
#[derive(Debug)]
pub struct Traffic {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    held: Vec<TcpStream>,
}

impl Traffic {
    /// Starts the clients in a first phase `phase`, with the backends `allowed`.
    ///
    /// # Errors
    /// A client thread cannot be started.
    pub fn start(
        options: ClientOptions,
        phase: &str,
        allowed: BTreeSet<String>,
    ) -> io::Result<Self> {
        let workers = options.workers.max(1);
        let shared = Arc::new(Shared {
            options,
            stop: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            phases: Mutex::new(Phases {
                stats: vec![PhaseStats {
                    name: phase.to_owned(),
                    ..PhaseStats::default()
                }],
                started: vec![Instant::now()],
                allowed: Arc::new(allowed),
            }),
            next_target: AtomicUsize::new(0),
        });
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let s = Arc::clone(&shared);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("client {i}"))
                    .spawn(move || s.worker(i))?,
            );
        }
        Ok(Self {
            shared,
            workers: handles,
            held: Vec::new(),
        })
    }

    /// Starts phase `name`: connects started from now on count in it, checked against
    /// `allowed`. Returns the phase's index.
    pub fn begin_phase(&self, name: &str, allowed: BTreeSet<String>) -> usize {
        let mut p = self.shared.phases();
        p.stats.push(PhaseStats {
            name: name.to_owned(),
            ..PhaseStats::default()
        });
        p.started.push(Instant::now());
        p.allowed = Arc::new(allowed);
        p.current()
    }

    /// Connects started from now on are checked against `allowed` (the phase goes on).
    pub fn allow(&self, allowed: BTreeSet<String>) {
        self.shared.phases().allowed = Arc::new(allowed);
    }

    /// Stops starting connects and waits until none is in flight.
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
        while self.shared.in_flight.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Starts connecting again after [`Traffic::pause`].
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    /// Opens `count` more connections through the targets, counted in the current
    /// phase like any connect, and keeps them open (the backend has answered and
    /// closed its end; this end stays open) until [`Traffic::release`]. Returns the
    /// ends of every connection held now.
    pub fn hold(&mut self, count: usize) -> Vec<HeldConn> {
        for _ in 0..count {
            let Some(target) = self.shared.target() else {
                break;
            };
            let (phase, allowed) = {
                let p = self.shared.phases();
                (p.current(), Arc::clone(&p.allowed))
            };
            let (outcome, stream) = self.shared.connect_once(target, true);
            let ok = outcome.is_ok();
            self.shared.record(phase, &allowed, outcome);
            if let (true, Some(s)) = (ok, stream) {
                self.held.push(s);
            }
        }
        self.held_conns()
    }

    /// The ends of every connection held open.
    #[must_use]
    pub fn held_conns(&self) -> Vec<HeldConn> {
        self.held
            .iter()
            .filter_map(|s| match (s.local_addr(), s.peer_addr()) {
                (Ok(SocketAddr::V4(local)), Ok(SocketAddr::V4(peer))) => {
                    Some(HeldConn { local, peer })
                }
                _ => None,
            })
            .collect()
    }

    /// Closes every held connection.
    pub fn release(&mut self) {
        self.held.clear();
    }

    /// The counts so far, per phase.
    #[must_use]
    pub fn report(&self) -> Vec<PhaseStats> {
        let p = self.shared.phases();
        let now = Instant::now();
        let mut out = p.stats.clone();
        for (i, stats) in out.iter_mut().enumerate() {
            let start = p.started.get(i).copied().unwrap_or(now);
            let end = p.started.get(i + 1).copied().unwrap_or(now);
            stats.duration_ms = u64::try_from((end - start).as_millis()).unwrap_or(u64::MAX);
        }
        out
    }

    /// Stops the clients and returns the counts per phase.
    #[must_use]
    pub fn stop(mut self) -> Vec<PhaseStats> {
        self.shutdown();
        self.report()
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.held.clear();
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A backend for the harness to run: its name and address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendSpec {
    /// What it answers.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddrV4,
}

/// Every backend of `config`, by name, for [`BackendServer::start`] (a backend that
/// serves several services once).
#[must_use]
pub fn backends_of(config: &crate::config::Config) -> Vec<BackendSpec> {
    config
        .backend_names()
        .into_iter()
        .map(|((address, port), name)| BackendSpec {
            name,
            addr: SocketAddrV4::new(address, port),
        })
        .collect()
}

/// The names of every backend of `config`: the allowed set for a phase.
#[must_use]
pub fn allowed_of(config: &crate::config::Config) -> BTreeSet<String> {
    config.backend_names().into_values().collect()
}

/// The VIPs and ports of every service of `config`: the clients' targets.
#[must_use]
pub fn targets_of(config: &crate::config::Config) -> Vec<SocketAddrV4> {
    config
        .services
        .iter()
        .map(|s| SocketAddrV4::new(s.vip, s.port))
        .collect()
}

/// The loopback address 127.0.0.0/8 the harness keeps to.
#[must_use]
pub fn is_loopback(addr: &SocketAddrV4) -> bool {
    addr.ip().octets()[0] == Ipv4Addr::LOCALHOST.octets()[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_total_per_backend() {
        let a = PhaseStats {
            name: "a".into(),
            per_backend: [("x".to_owned(), 2), ("y".to_owned(), 1)].into(),
            ..PhaseStats::default()
        };
        let b = PhaseStats {
            name: "b".into(),
            per_backend: [("x".to_owned(), 5)].into(),
            ..PhaseStats::default()
        };
        assert_eq!(a.answered(), 3);
        assert_eq!(
            per_backend_total(&[a, b]),
            [("x".to_owned(), 7), ("y".to_owned(), 1)].into()
        );
    }
}
