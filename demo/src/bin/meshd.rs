//! meshd: the mesh daemon.
//!
//! ```text
//! meshd run --root DIR --state DIR --cgroup DIR --config FILE --object FILE
//! meshd uninstall --root DIR --state DIR
//! ```
//!
//! `run` installs the dataplane object (or reopens it when it is pinned under `--root`),
//! attaches it to `--cgroup`, syncs the maps with `--config`, prints `ready START` on
//! stdout and waits; SIGHUP re-syncs, SIGTERM and SIGINT stop the daemon and leave the
//! dataplane pinned and attached. `uninstall` detaches and unpins everything.
//! Logs go to stderr (`RUST_LOG` filters them; default `info`).
//! Exit codes: 0 ok, 1 failed, 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;

use handover_demo::daemon::{DaemonOptions, run};
use handover_demo::install::{Installer, EngineInstaller};
use handover_sys::Bpf;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "usage:
  meshd run --root DIR --state DIR --cgroup DIR --config FILE --object FILE
  meshd uninstall --root DIR --state DIR";

struct Args {
    command: String,
    root: Option<PathBuf>,
    state: Option<PathBuf>,
    cgroup: Option<PathBuf>,
    config: Option<PathBuf>,
    object: Option<PathBuf>,
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
    };
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--root" => &mut a.root,
            "--state" => &mut a.state,
            "--cgroup" => &mut a.cgroup,
            "--config" => &mut a.config,
            "--object" => &mut a.object,
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let usage = |msg: String| {
        eprintln!("meshd: {msg}\n{USAGE}");
        ExitCode::from(2)
    };
    let args = match parse(std::env::args().skip(1)) {
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
            let options = match (
                need(args.config, "--config"),
                need(args.object, "--object"),
                need(args.cgroup, "--cgroup"),
            ) {
                (Ok(config), Ok(object), Ok(cgroup)) => DaemonOptions {
                    config,
                    object,
                    cgroup,
                },
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return usage(e),
            };
            run(&mut installer, &options).map_err(error_chain)
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
