//! Restart time-to-ready: `Engine::open` + `plan` + `apply` of a restart (pins
//! reopened, every attachment verified live, nothing loaded) of programs/engine_v1.c
//! installed with its connect4 program attached to a private cgroup, against a
//! baseline measured in the same run: a bare `BPF_OBJ_GET` of every pin of the set.
//! Target: at most 10 ms.
//!
//! Run: `cargo bench -p handover-engine --bench restart` (as root).

#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use handover_engine::{
    ApplyOptions, AttachPoint, Attachment, Engine, LockWait, ObjectSource, Options, Start, Via,
};
use handover_sys::{Bpf, OpenFlags};

const ROUNDS: usize = 50;
const TARGET: Duration = Duration::from_millis(10);

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn main() -> ExitCode {
    if !testenv::privileged("bench restart") {
        return ExitCode::SUCCESS;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../programs/build/engine_v1.o");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    let objects = vec![ObjectSource::new("engine.o", bytes)];
    let fs = testenv::Bpffs::mount();
    let cgroup = testenv::Cgroup::new();
    let state = testenv::TempDir::new("handover-bench-restart");
    let options = Options {
        attachments: vec![Attachment {
            name: "connect".into(),
            program: "count_connect".into(),
            point: AttachPoint::Cgroup {
                path: cgroup.path().to_owned(),
                attach_type: "cgroup_inet4_connect".into(),
                via: Via::Auto,
            },
        }],
        ..Options::default()
    };
    let open = || Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    {
        let mut e = open();
        let plan = e.plan(&objects, &options).unwrap();
        e.apply(&plan, &objects, ApplyOptions::default()).unwrap();
    }
    let installed = open().state().unwrap().unwrap();
    let pins: Vec<std::path::PathBuf> = installed
        .maps
        .values()
        .chain(installed.programs.values())
        .map(|p| fs.path().join(&p.pin))
        .chain(installed.links.values().map(|l| fs.path().join(&l.pin)))
        .collect();
    let bpf = Bpf::kernel();
    let (mut restarts, mut gets) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let mut e = open();
        let plan = e.plan(&objects, &options).unwrap();
        let report = e.apply(&plan, &objects, ApplyOptions::default()).unwrap();
        restarts.push(t.elapsed());
        assert_eq!(report.start, Start::Restart);
        assert!(report.reattached.is_empty());
        drop(e);

        let t = Instant::now();
        let fds: Vec<_> = pins
            .iter()
            .map(|p| bpf.obj_get(p, OpenFlags::READ_WRITE).unwrap())
            .collect();
        gets.push(t.elapsed());
        drop(fds);
    }
    let (restart, get) = (median(restarts), median(gets));
    println!(
        "restart of {} pins ({} maps, {} programs, {} links), median of {ROUNDS}: \
         open+plan+apply {:.3} ms, bare BPF_OBJ_GET of every pin {:.3} ms ({:.1}x the baseline); \
         target at most {} ms: {}",
        pins.len(),
        installed.maps.len(),
        installed.programs.len(),
        installed.links.len(),
        restart.as_secs_f64() * 1e3,
        get.as_secs_f64() * 1e3,
        restart.as_secs_f64() / get.as_secs_f64().max(1e-9),
        TARGET.as_millis(),
        if restart <= TARGET { "met" } else { "NOT MET" }
    );
    open().uninstall().unwrap();
    ExitCode::SUCCESS
}
