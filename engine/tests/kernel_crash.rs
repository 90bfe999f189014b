//! Crash tests against the running kernel (root): the upgrade from
//! programs/engine_v1.c to engine_v2.c runs in a child process (this test binary run
//! again) that a failpoint kills with SIGKILL at every step boundary of the engine
//! (every failpoint of the step list, so a new step is covered), in the middle of the
//! copy and in the middle of the reconcile; a new process then recovers. For two of
//! those kills (one finished forward, one rolled back) the recovery is itself killed
//! at every failpoint and recovered again. Each case ends with exactly the pins the
//! state records, no temporary or rollback pin, every entry of the version that is
//! live, and the recorded objects alive. Each case has its own bpffs; the cgroup and
//! the network namespace of the test are the engine's attach point only (nothing
//! connects).
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]
#![allow(
    unsafe_code,
    reason = "the failpoint kills its own process with kill(2)"
)]

mod common;
#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{backend_v1, backend_v2, objects, options};
use handover_engine::{
    ApplyOptions, Engine, Kernel as _, LockWait, ObjRef, Step, failpoints, identity,
};
use handover_sys::UpdateFlags;

const TEST: &str = "a_killed_upgrade_or_recovery_ends_in_one_consistent_set";
const FILLED: u32 = 10_000;
/// Entries per batch: five batches per map, so a kill can land inside a copy and
/// inside a reconcile.
const BATCH: usize = 2048;

fn key(i: u32) -> [u8; 4] {
    (0x7f01_0000u32 + i).to_be_bytes()
}

/// In a child: makes the `n`th evaluation of failpoint `point` kill this process.
fn kill_at(point: &str, n: usize) {
    let seen = AtomicUsize::new(0);
    fail::cfg_callback(point, move || {
        if seen.fetch_add(1, Ordering::SeqCst) == n {
            // SAFETY: kill(2) of this process with a valid signal number.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    })
    .unwrap();
}

/// The child: the upgrade or the recovery, killed where the environment says.
fn child(role: &str) {
    let var = |k: &str| std::env::var(k).unwrap();
    let (fs, state, cgroup) = (
        var("HANDOVER_FS"),
        var("HANDOVER_STATE"),
        var("HANDOVER_CGROUP"),
    );
    let _scenario = fail::FailScenario::setup();
    kill_at(
        &var("HANDOVER_KILL_AT"),
        var("HANDOVER_KILL_N").parse().unwrap(),
    );
    let mut e = Engine::open(fs.as_ref(), state.as_ref(), LockWait::Refuse).unwrap();
    match role {
        "upgrade" => {
            let v2 = objects(2);
            let plan = e.plan(&v2, &options(cgroup.as_ref())).unwrap();
            let apply = ApplyOptions {
                batch: Some(BATCH),
                ..ApplyOptions::default()
            };
            e.apply(&plan, &v2, apply).unwrap();
        }
        _ => {
            e.recover().unwrap();
        }
    }
    println!("RESULT not reached");
}

/// Runs a child in `role`; whether the failpoint killed it.
fn run(role: &str, env: &[(&str, String)], point: &str, n: usize) -> bool {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(testenv::ROLE_VAR, role)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("HANDOVER_KILL_AT", point)
        .env("HANDOVER_KILL_N", n.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if std::os::unix::process::ExitStatusExt::signal(&out.status) == Some(libc::SIGKILL) {
        return true;
    }
    assert!(
        out.status.success() && stdout.contains("RESULT not reached"),
        "{role} killed at {point} #{n}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

fn listing(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.file_type().unwrap().is_dir() {
            listing(&e.path(), &format!("{name}/"), out);
        } else {
            out.push(name);
        }
    }
}

/// One case: install version 1 and fill it, kill the upgrade at `point` #`n`, then
/// (when `recovery_kill` is given) kill the recovery there, then recover.
fn case(cgroup: &testenv::Cgroup, point: &str, n: usize, recovery_kill: Option<(&str, usize)>) {
    let context = format!("upgrade killed at {point} #{n}, recovery killed at {recovery_kill:?}");
    let fs = testenv::Bpffs::mount();
    let state = testenv::TempDir::new("handover-engine-crash");
    let mut before = Vec::new();
    listing(fs.path(), "", &mut before);
    let opts = options(cgroup.path());
    {
        let mut e = Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
        let v1 = objects(1);
        let plan = e.plan(&v1, &opts).unwrap();
        e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
        let backends = e.map_access("backends").unwrap();
        let conns = e.map_access("conns").unwrap();
        for i in 0..FILLED {
            backends
                .update(&key(i), &backend_v1(u64::from(i), i), UpdateFlags::ANY)
                .unwrap();
            conns
                .update(&i.to_ne_bytes(), &key(i), UpdateFlags::ANY)
                .unwrap();
        }
    }
    let env = [
        ("HANDOVER_FS", fs.path().display().to_string()),
        ("HANDOVER_STATE", state.path().display().to_string()),
        ("HANDOVER_CGROUP", cgroup.path().display().to_string()),
    ];
    let killed = run("upgrade", &env, point, n);
    if killed && let Some((rpoint, m)) = recovery_kill {
        run("recover", &env, rpoint, m);
    }
    let mut e = Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    e.recover().unwrap();
    assert!(e.journal().unwrap().is_none(), "{context}: journal left");
    let s = e.state().unwrap().expect("a state");
    let version = if s.identity == identity(&objects(2), &opts) {
        2
    } else {
        assert_eq!(s.identity, identity(&objects(1), &opts), "{context}");
        1
    };
    assert!(
        killed || version == 2,
        "{context}: not killed, not upgraded"
    );
    let mut pins = Vec::new();
    listing(fs.path(), "", &mut pins);
    pins.retain(|p| !before.contains(p));
    pins.sort();
    let mut recorded: Vec<String> = s
        .maps
        .values()
        .chain(s.programs.values())
        .map(|p| p.pin.clone())
        .chain(s.links.values().map(|l| l.pin.clone()))
        .collect();
    recorded.sort();
    assert_eq!(pins, recorded, "{context}: exactly the recorded pins");
    let recorded_objects = s
        .maps
        .values()
        .map(|p| ObjRef::map(p.id))
        .chain(s.programs.values().map(|p| ObjRef::prog(p.id)));
    for r in recorded_objects {
        assert!(e.kernel().alive(r), "{context}: {r} not alive");
    }
    // The live set works: applying its own objects is a restart.
    let objs = objects(version);
    let plan = e.plan(&objs, &opts).unwrap();
    assert_eq!(plan.start, handover_engine::Start::Restart, "{context}");
    e.apply(&plan, &objs, ApplyOptions::default()).unwrap();
    let conns = e.map::<u32, [u8; 4]>("conns").unwrap();
    for i in 0..FILLED {
        assert_eq!(conns.get(&i).unwrap(), Some(key(i)), "{context}: conn {i}");
    }
    drop(conns);
    if version == 2 {
        let b = e.map::<[u8; 4], [u8; 24]>("backends").unwrap();
        for i in 0..FILLED {
            assert_eq!(
                b.get(&key(i)).unwrap().map(|v| v.to_vec()),
                Some(backend_v2(u64::from(i), i)),
                "{context}: backend {i}"
            );
        }
    } else {
        let b = e.map::<[u8; 4], [u8; 16]>("backends").unwrap();
        for i in 0..FILLED {
            assert_eq!(
                b.get(&key(i)).unwrap().map(|v| v.to_vec()),
                Some(backend_v1(u64::from(i), i)),
                "{context}: backend {i}"
            );
        }
    }
    e.uninstall().unwrap();
}

#[test]
fn a_killed_upgrade_or_recovery_ends_in_one_consistent_set() {
    if let Some(role) = testenv::child_role() {
        child(&role);
        return;
    }
    if !testenv::privileged(TEST) {
        return;
    }
    let cgroup = testenv::Cgroup::new();
    let mut cases = 0;
    for step in Step::ALL {
        for point in step.all_points() {
            case(&cgroup, point, 0, None);
            cases += 1;
        }
    }
    // In the middle of the copy and of the reconcile.
    for point in [Step::Copy, Step::Reconcile]
        .iter()
        .filter_map(|s| s.batch_point())
    {
        case(&cgroup, point, 2, None);
        cases += 1;
    }
    // The recovery killed at every failpoint: after a kill that recovery finishes
    // forward (in the middle of the reconcile) and after one it rolls back (in the
    // middle of the copy).
    for (point, n) in [("reconcile:batch", 2), ("copy:batch", 2)] {
        for rpoint in failpoints() {
            case(&cgroup, point, n, Some((rpoint, 0)));
            cases += 1;
        }
    }
    eprintln!("{cases} kill cases");
}
