//! The `meshd` command line, shared by the `meshd` binary and the daemon role of
//! `handover demo` (which embeds the dataplane objects).
//!
//! ```text
//! meshd run --root DIR --state DIR --cgroup DIR --config FILE --object FILE
//!           [--admin-port PORT] [--handoff ADDR] [--generation LABEL]
//! meshd uninstall --root DIR --state DIR
//! ```
//!
//! `run` installs the dataplane object (or reopens it when it is pinned under `--root`),
//! attaches it to `--cgroup`, syncs the maps with `--config`, prints `ready START` on
//! stdout and serves; SIGHUP re-syncs, SIGTERM and SIGINT stop the daemon and leave the
//! dataplane pinned and attached. With `--handoff ADDR` (a socket path in a 0700
//! directory, or `@name`) it first takes over from the meshd serving there (its admin
//! listener and bpf descriptors), then listens there for its own successor.
//! `--admin-port` serves Prometheus metrics on 127.0.0.1:PORT. `uninstall` detaches
//! and unpins everything. Logs go to stderr (`RUST_LOG` filters them; default `info`).
//! Exit codes: 0 ok, 1 failed, 2 usage, 3 a running meshd serves on (not taken over).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::daemon::{DaemonError, DaemonOptions, run};
use crate::install::{EngineInstaller, Installer};
use handover_handoff::Address;
use handover_sys::Bpf;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "usage:
  meshd run --root DIR --state DIR --cgroup DIR --config FILE --object FILE
            [--admin-port PORT] [--handoff ADDR] [--generation LABEL]
  meshd uninstall --root DIR --state DIR";

struct Args {
    command: String,
    root: Option<PathBuf>,
    state: Option<PathBuf>,
    cgroup: Option<PathBuf>,
    config: Option<PathBuf>,
    object: Option<PathBuf>,
    admin_port: Option<PathBuf>,
    handoff: Option<PathBuf>,
    generation: Option<PathBuf>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let command = args.next().ok_or("no command")?;
    let mut a = Args {
        command,
        root: None,
        state: None,
        cgroup: None,
        config: None,
        object: None,
        admin_port: None,
        handoff: None,
        generation: None,
    };
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--root" => &mut a.root,
            "--state" => &mut a.state,
            "--cgroup" => &mut a.cgroup,
            "--config" => &mut a.config,
            "--object" => &mut a.object,
            "--admin-port" => &mut a.admin_port,
            "--handoff" => &mut a.handoff,
            "--generation" => &mut a.generation,
            other => return Err(format!("unknown argument {other}")),
        };
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        *slot = Some(PathBuf::from(value));
    }
    Ok(a)
}

fn need(v: Option<PathBuf>, flag: &str) -> Result<PathBuf, String> {
    v.ok_or_else(|| format!("{flag} is required"))
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
}

/// Runs the `meshd` command line `args` (without the program name). `embedded` is
/// the dataplane object when the caller carries it: `--object` is then not needed.
#[must_use]
pub fn main(args: impl Iterator<Item = String>, embedded: Option<&[u8]>) -> ExitCode {
    let usage = |msg: String| {
        eprintln!("meshd: {msg}\n{USAGE}");
        ExitCode::from(2)
    };
    let args = match parse(args) {
        Ok(a) => a,
        Err(e) => return usage(e),
    };
    let (root, state) = match (need(args.root, "--root"), need(args.state, "--state")) {
        (Ok(r), Ok(s)) => (r, s),
        (Err(e), _) | (_, Err(e)) => return usage(e),
    };
    let bpf = Bpf::kernel();
    let mut installer = EngineInstaller::new(&bpf, &root, &state);
    let result = match args.command.as_str() {
        "run" => {
            let (config, cgroup) =
                match (need(args.config, "--config"), need(args.cgroup, "--cgroup")) {
                    (Ok(config), Ok(cgroup)) => (config, cgroup),
                    (Err(e), _) | (_, Err(e)) => return usage(e),
                };
            let admin_port = match args.admin_port.map(|p| p.to_string_lossy().parse::<u16>()) {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => return usage(format!("--admin-port: {e}")),
            };
            let object = match (embedded, args.object) {
                (Some(bytes), _) => bytes.to_vec(),
                (None, None) => return usage("--object is required".into()),
                (None, Some(path)) => match std::fs::read(&path) {
                    Ok(b) => b,
                    Err(e) => {
                        eprintln!(
                            "meshd: reading the dataplane object {}: {e}",
                            path.display()
                        );
                        return ExitCode::FAILURE;
                    }
                },
            };
            let options = DaemonOptions {
                config,
                object,
                cgroup,
                admin_port,
                handoff: args.handoff.map(|a| Address::parse(&a.to_string_lossy())),
                generation: args
                    .generation
                    .map_or_else(|| "1".to_owned(), |g| g.to_string_lossy().into_owned()),
            };
            match run(&mut installer, &options) {
                Err(e @ DaemonError::NotServing(_)) => {
                    eprintln!("meshd: {}", error_chain(e));
                    return ExitCode::from(3);
                }
                r => r.map_err(error_chain),
            }
        }
        "uninstall" => installer.uninstall().map_err(error_chain),
        other => return usage(format!("unknown command {other}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The error with every source, one per line.
fn error_chain(e: impl std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!("\n  caused by: {s}"));
        source = s.source();
    }
    out
}
