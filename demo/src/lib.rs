//! A Kmesh-like service mesh daemon and the harness that shows it restart (and, with
//! the upgrade engine, upgrade) under live traffic.
//!
//! - [`admin`]: the daemon's admin endpoint (Prometheus metrics over HTTP).
//! - [`config`]: the services and backends file (the control plane's stand-in).
//! - [`isolation`]: a private bpffs, cgroup and network namespace.
//! - [`layout`]: the byte layouts of the dataplane's maps (programs/dataplane/vN.c).
//! - [`sync`]: what to write so the maps match the configuration, as a value.
//! - [`dataplane`]: the open maps; reading them, applying a sync.
//! - [`install`]: the [`install::Installer`] trait, and the loader-based installer.
//! - [`daemon`]: what `meshd` does: take over from a running meshd, install, reopen or
//!   upgrade, sync, serve the admin endpoint, re-sync on SIGHUP, hand over.
//! - [`traffic`]: backends, clients at a target rate, counts per phase.
//! - [`meshd_cli`]: the `meshd` command line.
//! - [`phases`]: the list of phases a demonstration runs under traffic.
//! - [`story`]: the whole demonstration `handover demo` runs, and its report.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod install;
pub mod isolation;
pub mod layout;
pub mod meshd_cli;
pub mod phases;
pub mod story;
pub mod sync;
pub mod traffic;
