//! `handover demo`: the mesh dataplane (programs/dataplane/v1.c to v3.c, embedded in
//! this binary) and its daemon, meshd, restarted, killed, upgraded and uninstalled
//! under live traffic in a private bpffs, cgroup and network namespace
//! ([`handover_demo::story`]). The binary plays every process of the story: it
//! re-executes itself as meshd (`__demo-meshd`) and as the clients and backends
//! (`__demo-traffic`), hidden commands.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use handover_demo::story::{self, Launcher, Progress, StoryOptions};

use crate::cli::DemoArgs;

/// The dataplane objects, by version (built by programs/build.sh; build.rs checks).
const OBJECTS: [(&str, &[u8]); 3] = [
    (
        "v1",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/programs/build/dataplane/v1.o"
        )),
    ),
    (
        "v2",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/programs/build/dataplane/v2.o"
        )),
    ),
    (
        "v3",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/programs/build/dataplane/v3.o"
        )),
    ),
];

fn object(version: &str) -> Option<&'static [u8]> {
    OBJECTS.iter().find(|(v, _)| *v == version).map(|(_, b)| *b)
}

/// Starts the story's processes as this binary's hidden commands.
struct SelfLauncher {
    exe: PathBuf,
}

impl Launcher for SelfLauncher {
    fn daemon(&self, version: &str) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(["__demo-meshd", "--version", version]);
        if std::env::var_os("RUST_LOG").is_none() {
            c.env("RUST_LOG", "info");
        }
        c
    }

    fn traffic(&self, cgroup: &Path) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("__demo-traffic").arg("--cgroup").arg(cgroup);
        c
    }

    fn object(&self, version: &str) -> &[u8] {
        object(version).unwrap_or_default()
    }
}

/// The live view: one status line on stderr, rewritten in place.
struct LiveView {
    last: Option<(String, u64, Instant)>,
}

impl LiveView {
    fn show(&mut self, p: &Progress) {
        let now = Instant::now();
        let rate = match &self.last {
            Some((phase, n, t)) if *phase == p.phase && now > *t => {
                let dt = now.duration_since(*t).as_secs_f64();
                #[expect(clippy::cast_precision_loss, reason = "a rate to show")]
                let r = (p.stats.connects.saturating_sub(*n)) as f64 / dt;
                r
            }
            _ => 0.0,
        };
        self.last = Some((p.phase.clone(), p.stats.connects, now));
        let backends: Vec<String> = p
            .stats
            .per_backend
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        eprint!(
            "\r\x1b[2K[{}] {:.0} conn/s  {} connects  {} failed  {} out of config  {}",
            p.phase,
            rate,
            p.stats.connects,
            p.stats.failed,
            p.stats.out_of_config,
            backends.join(" ")
        );
    }
}

pub(crate) fn run(args: &DemoArgs) -> Result<ExitCode, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted))
            .map_err(|e| format!("installing the Ctrl-C handler: {e}"))?;
    }
    let options = StoryOptions {
        rate: args.rate,
        settle: Duration::from_millis(args.phase_ms),
        interrupted,
    };
    let live = std::io::stderr().is_terminal() && !args.json;
    let mut view = LiveView { last: None };
    let result = story::run(&SelfLauncher { exe }, &options, &mut |p| {
        if live {
            view.show(p);
        }
    });
    if live {
        eprint!("\r\x1b[2K");
    }
    let report = result.map_err(|e| crate::error_chain(&e))?;
    let text = if args.json {
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())? + "\n"
    } else {
        story::render_text(&report)
    };
    crate::output::print(&text)?;
    Ok(if story::all_good(&report) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `__demo-meshd --version V ARGS...`: meshd with the embedded object of `V`.
pub(crate) fn meshd(version: &str, rest: &[String]) -> ExitCode {
    let Some(bytes) = object(version) else {
        eprintln!("handover __demo-meshd: no embedded dataplane {version} (v1, v2, v3)");
        return ExitCode::from(2);
    };
    handover_demo::meshd_cli::init_logging();
    handover_demo::meshd_cli::main(rest.iter().cloned(), Some(bytes))
}

/// `__demo-traffic --cgroup DIR`: joins the cgroup, then serves the traffic harness.
pub(crate) fn traffic(cgroup: &Path) -> Result<ExitCode, String> {
    handover_demo::isolation::join_cgroup(cgroup).map_err(|e| e.to_string())?;
    handover_demo::traffic::remote::serve(std::io::stdin().lock(), std::io::stdout())
        .map_err(|e| format!("traffic harness: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
