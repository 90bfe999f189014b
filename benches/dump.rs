//! `handover dump --json` against `bpftool map dump -j` on the same 1,000,000-entry
//! hash map (programs/dump_bench.c: 4-byte keys, a 16-byte struct value), both
//! printing to /dev/null, measured in the same run; target at least 10x faster.
//!
//! Run: `cargo bench -p handover --bench dump` (as root, with bpftool installed).

#[path = "../loader/tests/testenv/mod.rs"]
mod testenv;

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use handover_engine::{ApplyOptions, Engine, LockWait, ObjectSource, Options};
use handover_sys::UpdateFlags;

const N: u32 = 1_000_000;
const ROUNDS: usize = 3;
const TARGET: f64 = 10.0;

fn timed(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let elapsed = t.elapsed();
    assert!(status.success(), "{cmd:?}: {status}");
    elapsed
}

fn main() -> ExitCode {
    if !testenv::privileged("bench dump") {
        return ExitCode::SUCCESS;
    }
    if Command::new("bpftool").arg("version").output().is_err() {
        eprintln!("\nSKIPPED: bench dump (bpftool is not installed: apt-get install bpftool)");
        return ExitCode::SUCCESS;
    }
    let object = Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/build/dump_bench.o");
    let bytes = std::fs::read(&object)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", object.display()));
    let fs = testenv::Bpffs::mount();
    let root = std::fs::canonicalize(fs.path()).unwrap();
    let state = testenv::TempDir::new("handover-bench-dump");
    {
        let objects = vec![ObjectSource::new("dump_bench.o", bytes)];
        let mut e = Engine::open(&root, state.path(), LockWait::Refuse).unwrap();
        let plan = e.plan(&objects, &Options::default()).unwrap();
        e.apply(&plan, &objects, ApplyOptions::default()).unwrap();
        let m = e.map_access("endpoints").unwrap();
        let batch = 10_000u32;
        for start in (0..N).step_by(batch as usize) {
            let mut keys = Vec::with_capacity(batch as usize * 4);
            let mut values = Vec::with_capacity(batch as usize * 16);
            for i in start..(start + batch).min(N) {
                keys.extend_from_slice(&i.to_ne_bytes());
                values.extend_from_slice(&(u64::from(i) * 1500).to_ne_bytes());
                values.extend_from_slice(&(i % 100_000).to_ne_bytes());
                values.extend_from_slice(&u16::try_from(i % 65_536).unwrap().to_ne_bytes());
                values.extend_from_slice(&3u16.to_ne_bytes());
            }
            m.update_batch(&keys, &values, UpdateFlags::ANY).unwrap();
        }
    }
    let ours = |_: usize| {
        timed(
            Command::new(env!("CARGO_BIN_EXE_handover"))
                .args([OsString::from("dump"), "--root".into(), root.clone().into()])
                .args([OsString::from("--state"), state.path().into()])
                .args(["endpoints", "--json"]),
        )
    };
    let pin = root.join("maps/endpoints");
    let theirs = |_: usize| {
        timed(
            Command::new("bpftool")
                .args(["map", "dump", "pinned"])
                .arg(&pin)
                .arg("-j"),
        )
    };
    // Each side's best of its rounds, alternating, so that neither gets a warmer cache.
    let mut best = (Duration::MAX, Duration::MAX);
    for round in 0..ROUNDS {
        let a = ours(round);
        let b = theirs(round);
        println!(
            "round {round}: handover dump --json {:.3} s, bpftool map dump -j {:.3} s",
            a.as_secs_f64(),
            b.as_secs_f64()
        );
        best = (best.0.min(a), best.1.min(b));
    }
    let ratio = best.1.as_secs_f64() / best.0.as_secs_f64();
    println!(
        "dump of {N} entries: handover {:.3} s ({:.0} entries/s), bpftool {:.3} s: {ratio:.1}x faster (target {TARGET}x: {})",
        best.0.as_secs_f64(),
        f64::from(N) / best.0.as_secs_f64(),
        best.1.as_secs_f64(),
        if ratio >= TARGET { "met" } else { "NOT MET" }
    );
    let mut e = Engine::open(&root, state.path(), LockWait::Refuse).unwrap();
    e.uninstall().unwrap();
    ExitCode::SUCCESS
}
