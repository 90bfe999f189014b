//! A small daemon for the handoff tests: serves an HTTP admin endpoint (Prometheus
//! text format, naming the process that answered) on 127.0.0.1, and hands its
//! listener over to a new instance that connects to its handoff socket.
//!
//! ```text
//! handoff-testd --handoff ADDR --port PORT --generation N
//!               [--expect-exe PATH] [--delay-ms MS] [--step-timeout-ms MS]
//! ```
//! `ADDR` is a socket path or `@name` (abstract). Exit codes: 0 handed over and
//! exited; 3 did not serve (the old daemon serves on); 1 error; 2 usage.
//! Prints `serving PID` and `handoff-ready PID` on stdout when it reaches those
//! states; logs to stderr.

use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use handover_handoff::{
    Address, Callbacks, Fallback, FdKind, Finish, HandoffServer, Offer, Outcome, PeerPolicy,
    take_over,
};

struct Args {
    handoff: Address,
    port: u16,
    generation: u32,
    expect_exe: Option<String>,
    delay: Duration,
    step_timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut handoff = None;
    let mut port = None;
    let mut generation = 1;
    let mut expect_exe = None;
    let mut delay = Duration::from_millis(1);
    let mut step_timeout = Duration::from_secs(2);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--handoff" => handoff = Some(Address::parse(&value()?)),
            "--port" => port = Some(u16::try_from(num(value()?)?).map_err(|e| e.to_string())?),
            "--generation" => {
                generation = u32::try_from(num(value()?)?).map_err(|e| e.to_string())?;
            }
            "--expect-exe" => expect_exe = Some(value()?),
            "--delay-ms" => delay = Duration::from_millis(num(value()?)?),
            "--step-timeout-ms" => step_timeout = Duration::from_millis(num(value()?)?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        handoff: handoff.ok_or("--handoff is required")?,
        port: port.ok_or("--port is required")?,
        generation,
        expect_exe,
        delay,
        step_timeout,
    })
}

/// What the accept loop and the request handlers share.
struct Shared {
    generation: u32,
    delay: Duration,
    accepting: AtomicBool,
    in_flight: AtomicU64,
    served: AtomicU64,
    /// Stands for the daemon's map writes: off while quiesced.
    writes_enabled: AtomicBool,
}

fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn handle(shared: &Shared, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = io::BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    // Request line and headers, up to the blank line.
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    thread::sleep(shared.delay);
    let n = shared.served.fetch_add(1, Ordering::Relaxed) + 1;
    let pid = std::process::id();
    let generation = shared.generation;
    let quiesced = u8::from(!shared.writes_enabled.load(Ordering::Relaxed));
    let body = format!(
        "# HELP handoff_testd_requests_total Requests answered by this process.\n\
         # TYPE handoff_testd_requests_total counter\n\
         handoff_testd_requests_total{{pid=\"{pid}\",generation=\"{generation}\"}} {n}\n\
         # HELP handoff_testd_quiesced Whether state writes are stopped for a handover.\n\
         # TYPE handoff_testd_quiesced gauge\n\
         handoff_testd_quiesced{{pid=\"{pid}\",generation=\"{generation}\"}} {quiesced}\n"
    );
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
    // Drain what the client may still send so the close is a FIN, not a reset.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = reader.read(&mut [0u8; 64]);
}

/// Accepts while `accepting` is set. The listener is non-blocking (set by the first
/// generation and shared by all), and readiness is awaited with a short sleep-poll,
/// so clearing `accepting` stops the loop from taking connections at once.
fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        if !shared.accepting.load(Ordering::Acquire) {
            thread::sleep(Duration::from_millis(2));
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                shared.in_flight.fetch_add(1, Ordering::AcqRel);
                let s = Arc::clone(&shared);
                thread::spawn(move || {
                    handle(&s, stream);
                    s.in_flight.fetch_sub(1, Ordering::AcqRel);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn drain(shared: &Shared, deadline: Duration) {
    let until = Instant::now() + deadline;
    while shared.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < until {
        thread::sleep(Duration::from_millis(2));
    }
    let left = shared.in_flight.load(Ordering::Acquire);
    if left > 0 {
        tracing::warn!(left, "drain deadline passed with requests in flight");
    }
}

struct Quiesce(Arc<Shared>);

impl Callbacks for Quiesce {
    fn on_quiesce(&mut self) -> Result<(), String> {
        self.0.writes_enabled.store(false, Ordering::Release);
        tracing::info!("quiesced: state writes stopped");
        Ok(())
    }

    fn on_resume(&mut self) {
        self.0.writes_enabled.store(true, Ordering::Release);
        tracing::info!("resumed: state writes on again");
    }
}

/// Serves handoffs until one completes with a live successor; returns then.
fn handoff_loop(
    args: &Args,
    shared: &Arc<Shared>,
    server: &HandoffServer,
    listener: &TcpListener,
) -> Result<(), String> {
    let mut offer = Offer::new(format!("handoff-testd generation {}", args.generation));
    offer
        .add("admin", FdKind::Listener, listener.as_fd())
        .map_err(|e| e.to_string())?;
    offer.set_extra(serde_json::json!({ "generation": args.generation }));
    say(&format!("handoff-ready {}", std::process::id()));
    let mut callbacks = Quiesce(Arc::clone(shared));
    loop {
        match server.serve_one(&offer, &mut callbacks, args.step_timeout) {
            Ok(Outcome::HandedOver(handover)) => {
                shared.accepting.store(false, Ordering::Release);
                tracing::info!(
                    successor = handover.peer().pid,
                    "stopped accepting; draining"
                );
                drain(shared, Duration::from_secs(5));
                match handover.finish(Duration::from_millis(300)) {
                    Finish::SuccessorAlive => return Ok(()),
                    Finish::SuccessorDied => {
                        shared.accepting.store(true, Ordering::Release);
                        callbacks.on_resume();
                        say(&format!("serving {}", std::process::id()));
                    }
                }
            }
            Ok(Outcome::Resumed(_) | Outcome::Rejected(_) | Outcome::NoPeer) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let mut policy = PeerPolicy::same_user();
    if let Some(exe) = &args.expect_exe {
        policy = policy.expect_exe(exe);
    }
    let label = format!("handoff-testd generation {}", args.generation);
    let shared = Arc::new(Shared {
        generation: args.generation,
        delay: args.delay,
        accepting: AtomicBool::new(true),
        in_flight: AtomicU64::new(0),
        served: AtomicU64::new(0),
        writes_enabled: AtomicBool::new(true),
    });
    let start_accepting = |listener: &TcpListener| -> Result<(), String> {
        let l = listener.try_clone().map_err(|e| e.to_string())?;
        let s = Arc::clone(&shared);
        thread::spawn(move || accept_loop(s, l));
        say(&format!("serving {}", std::process::id()));
        Ok(())
    };
    let (listener, server) = match take_over(&args.handoff, &policy, &label, args.step_timeout) {
        Ok(mut received) => {
            let fd = received
                .fds
                .take("admin")
                .ok_or("the manifest has no \"admin\" listener")?;
            let listener = TcpListener::from(fd);
            tracing::info!(
                from = received.manifest.label,
                "took the admin listener over"
            );
            start_accepting(&listener)?;
            match received.serving() {
                Ok(released) => {
                    // The old daemon holds its handoff address until it exits.
                    if !released.wait_old_exit(Some(Duration::from_secs(30))) {
                        tracing::warn!("the old daemon did not exit within 30s");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the old daemon serves on; stepping back");
                    shared.accepting.store(false, Ordering::Release);
                    drain(&shared, Duration::from_secs(5));
                    return Ok(ExitCode::from(3));
                }
            }
            let server =
                HandoffServer::bind_after_takeover(&args.handoff, policy, Duration::from_secs(10))
                    .map_err(|e| e.to_string())?;
            (listener, server)
        }
        Err(e) if e.fallback() == Fallback::StartFresh => {
            tracing::info!(reason = %e, "starting fresh");
            let mut salvaged = e.into_salvaged();
            let listener = match salvaged.take("admin") {
                Some(fd) => TcpListener::from(fd),
                None => {
                    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, args.port))
                        .map_err(|e| format!("bind 127.0.0.1:{}: {e}", args.port))?;
                    l.set_nonblocking(true).map_err(|e| e.to_string())?;
                    l
                }
            };
            start_accepting(&listener)?;
            let server = HandoffServer::bind(&args.handoff, policy).map_err(|e| e.to_string())?;
            (listener, server)
        }
        Err(e) => {
            tracing::warn!(error = %e, "not serving");
            return Ok(ExitCode::from(3));
        }
    };
    handoff_loop(args, &shared, &server, &listener)?;
    tracing::info!("handed over; exiting");
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("handoff-testd: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
