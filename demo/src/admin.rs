//! meshd's admin endpoint: HTTP on a TCP listener (127.0.0.1:PORT of the daemon's
//! network namespace), answering every request with the daemon's metrics in the
//! Prometheus text format (version 0.0.4). Every answer names the process that gave
//! it (`meshd_info{pid, generation}` and an `X-Meshd-Pid` header), so a client can
//! tell which daemon served it across a handover.
//!
//! The listener is shared with a successor during a handover: both accept from it
//! until the old stops ([`Admin::stop_accepting`]) and drains ([`Admin::drain`]).
//! It is non-blocking (set once by whoever bound it; status flags are shared by
//! every holder) and the accept loop sleeps briefly while nothing is queued, so
//! stopping takes effect at once.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tracing::warn;

/// What the metrics say, produced on each request.
pub trait Metrics: Send + Sync {
    /// Connects per backend: (backend name, `address:port`, connects).
    fn backend_connects(&self) -> Vec<(String, String, u64)>;
    /// Syncs of the maps with the configuration this process completed.
    fn sync_generation(&self) -> u64;
    /// Whether map writes are stopped for a handover.
    fn quiesced(&self) -> bool;
}

/// The admin endpoint of one process.
pub struct Admin {
    listener: TcpListener,
    accepting: AtomicBool,
    in_flight: AtomicU64,
    served: AtomicU64,
    generation: String,
    metrics: Arc<dyn Metrics>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("listener", &self.listener)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Binds the admin listener at 127.0.0.1:`port` (non-blocking).
///
/// # Errors
/// The address is taken or cannot be bound.
pub fn bind(port: u16) -> io::Result<TcpListener> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

impl Admin {
    /// Serves `listener` (bound by [`bind`] here or in a predecessor) on a thread;
    /// `generation` labels this process in every answer.
    ///
    /// # Errors
    /// The listener cannot be duplicated for the thread.
    pub fn start(
        listener: TcpListener,
        generation: &str,
        metrics: Arc<dyn Metrics>,
    ) -> io::Result<Arc<Self>> {
        let accept = listener.try_clone()?;
        let admin = Arc::new(Self {
            listener,
            accepting: AtomicBool::new(true),
            in_flight: AtomicU64::new(0),
            served: AtomicU64::new(0),
            generation: generation.to_owned(),
            metrics,
        });
        let a = Arc::clone(&admin);
        thread::spawn(move || a.accept_loop(&accept));
        Ok(admin)
    }

    /// The listener (to hand it over).
    #[must_use]
    pub fn listener(&self) -> &TcpListener {
        &self.listener
    }

    /// Stops taking connections; those queued are left for the successor.
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }

    /// Takes connections again (a successor died).
    pub fn resume_accepting(&self) {
        self.accepting.store(true, Ordering::SeqCst);
    }

    /// Waits until no request is in flight, at most `deadline`; returns how many
    /// were still in flight then.
    pub fn drain(&self, deadline: Duration) -> u64 {
        let until = Instant::now() + deadline;
        while self.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            thread::sleep(Duration::from_millis(2));
        }
        self.in_flight.load(Ordering::SeqCst)
    }

    fn accept_loop(self: &Arc<Self>, listener: &TcpListener) {
        loop {
            // An accept under way counts as a request in flight from before the check
            // of `accepting` on: a drain that starts after `stop_accepting` then waits
            // for it, rather than letting the process exit with a connection taken
            // from the queue and never answered. (Sequentially consistent with the
            // store in `stop_accepting` and the load in `drain`: each side sees the
            // other's write.)
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            if !self.accepting.load(Ordering::SeqCst) {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(2));
                continue;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    let a = Arc::clone(self);
                    thread::spawn(move || {
                        a.answer(stream);
                        a.in_flight.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.in_flight.fetch_sub(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(1));
                }
                Err(e) => {
                    self.in_flight.fetch_sub(1, Ordering::SeqCst);
                    warn!(error = %e, "admin accept failed");
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// The metrics page.
    #[must_use]
    pub fn render(&self) -> String {
        let pid = std::process::id();
        let generation = &self.generation;
        let served = self.served.load(Ordering::Relaxed);
        let mut out = String::new();
        out.push_str(
            "# HELP meshd_backend_connects_total Connects the dataplane steered to each backend (backend_conns).\n\
             # TYPE meshd_backend_connects_total counter\n",
        );
        for (name, address, n) in self.metrics.backend_connects() {
            let _ = writeln!(
                out,
                "meshd_backend_connects_total{{backend=\"{name}\",address=\"{address}\"}} {n}"
            );
        }
        let _ = write!(
            out,
            "# HELP meshd_sync_generation Syncs of the maps with the configuration done by this process.\n\
             # TYPE meshd_sync_generation gauge\n\
             meshd_sync_generation {}\n\
             # HELP meshd_quiesced Whether map writes are stopped for a handover.\n\
             # TYPE meshd_quiesced gauge\n\
             meshd_quiesced {}\n\
             # HELP meshd_admin_requests_total Admin requests this process answered.\n\
             # TYPE meshd_admin_requests_total counter\n\
             meshd_admin_requests_total {served}\n\
             # HELP meshd_info The process that answered.\n\
             # TYPE meshd_info gauge\n\
             meshd_info{{pid=\"{pid}\",generation=\"{generation}\"}} 1\n",
            self.metrics.sync_generation(),
            u8::from(self.metrics.quiesced()),
        );
        out
    }

    fn answer(&self, stream: TcpStream) {
        // Accepted sockets do not inherit O_NONBLOCK on Linux; timeouts bound a
        // client that stalls.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let Ok(read_half) = stream.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(read_half);
        let mut line = String::new();
        // The request line and headers, up to the blank line; the body is ignored.
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) => {}
            }
        }
        self.served.fetch_add(1, Ordering::Relaxed);
        let body = self.render();
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nX-Meshd-Pid: {}\r\nConnection: close\r\n\r\n{body}",
            body.len(),
            std::process::id()
        );
        let mut stream = stream;
        let _ = stream.write_all(response.as_bytes());
        // Half-close, then read what the client may still send, so the close is a
        // FIN and never a reset.
        let _ = stream.shutdown(Shutdown::Write);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = reader.read(&mut [0u8; 64]);
    }
}

/// One admin request from a client: `GET /metrics`, the answer's body and the pid
/// that answered (from `X-Meshd-Pid`).
///
/// # Errors
/// The connection is refused or reset, or the answer is not a 200 with a pid.
pub fn get_metrics(port: u16, timeout: Duration) -> io::Result<(u32, String)> {
    let mut s = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: meshd\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("no end of headers in {text:?}")))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!("answer {head:?}")));
    }
    let pid = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Meshd-Pid: "))
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no X-Meshd-Pid in {head:?}")))?;
    Ok((pid, body.to_owned()))
}
