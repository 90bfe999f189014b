//! meshd: the mesh daemon.
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

use std::process::ExitCode;

fn main() -> ExitCode {
    handover_demo::meshd_cli::init_logging();
    handover_demo::meshd_cli::main(std::env::args().skip(1), None)
}
