//! Tracing attachments on the running kernel (root), in the test's own bpffs:
//! programs/engine_trace_v1.c's raw tracepoint program and BTF tracepoint (tracing)
//! program linked at `sys_enter`, counting this process's system calls, then
//! upgraded to engine_trace_v2.c. Neither link type has an update (nor a detach), so
//! the plan says each is switched by attaching the new program, then detaching the
//! old: after the upgrade new links run the new programs, and the old programs count
//! nothing more. Uninstall leaves every recorded object gone.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::path::Path;
use std::time::Duration;

use handover_engine::{
    ApplyOptions, AttachAction, AttachPoint, Attachment, Engine, Kernel, LockWait, ObjectSource,
    Options, RealKernel, SwitchMethod, wait_gone,
};

fn objects(version: u32) -> Vec<ObjectSource> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../programs/build/engine_trace_v{version}.o"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    vec![ObjectSource::new("trace.o", bytes)]
}

fn options() -> Options {
    Options {
        attachments: vec![
            Attachment {
                name: "raw".into(),
                program: "count_raw".into(),
                point: AttachPoint::RawTracepoint {
                    tracepoint: "sys_enter".into(),
                },
            },
            Attachment {
                name: "btf".into(),
                program: "count_btf".into(),
                point: AttachPoint::Tracing,
            },
        ],
        ..Options::default()
    }
}

/// Makes system calls of this process (reads of a file).
fn syscalls(n: usize) {
    for _ in 0..n {
        let _ = std::fs::metadata("/proc/self/stat");
    }
}

/// The counts of slots 1 and 2 (versions 1 and 2) of a hit map.
fn hits<K: Kernel>(e: &mut Engine<K>, map: &str) -> [u64; 2] {
    let m = e.map::<u32, u64>(map).unwrap();
    [1, 2].map(|slot| m.get(&slot).unwrap().unwrap_or(0))
}

#[test]
fn tracing_links_are_switched_by_attaching_the_new_program_then_dropping_the_old_link() {
    const TEST: &str =
        "tracing_links_are_switched_by_attaching_the_new_program_then_dropping_the_old_link";
    if !testenv::privileged(TEST) {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let state = testenv::TempDir::new("handover-trace-state");
    let opts = options();
    let mut e = Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    let v1 = objects(1);
    let plan = e.plan(&v1, &opts).unwrap();
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    e.map::<u32, u32>("trace_pid")
        .unwrap()
        .insert(&0, &std::process::id())
        .unwrap();
    syscalls(20);
    for map in ["raw_hits", "btf_hits"] {
        let h = hits(&mut e, map);
        assert!(h[0] >= 20 && h[1] == 0, "{map}: {h:?}");
    }
    let before = e.state().unwrap().unwrap().links;
    drop(e);

    let mut e = Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    let v2 = objects(2);
    let plan = e.plan(&v2, &opts).unwrap();
    for a in &plan.attachments {
        assert_eq!(
            a.action,
            AttachAction::Switch(SwitchMethod::AttachThenDetach),
            "{plan}"
        );
    }
    assert_eq!(
        plan.to_string()
            .matches("switch: attach new, then detach old")
            .count(),
        2,
        "{plan}"
    );
    e.apply(&plan, &v2, ApplyOptions::default()).unwrap();
    let after = e.state().unwrap().unwrap().links;
    for (name, l) in &after {
        assert_ne!(l.id, before[name].id, "{name}: a new link");
        assert_ne!(l.prog, before[name].prog, "{name}: the new program");
    }
    // The old links are freed: their ids are gone, and the old programs count no
    // more.
    let mut k = RealKernel::open(fs.path(), state.path()).unwrap();
    let old: Vec<_> = before
        .values()
        .map(|l| handover_engine::ObjRef::link(l.id))
        .collect();
    let alive = wait_gone(&mut k, &old, Duration::from_secs(10));
    assert!(alive.is_empty(), "old links still in the kernel: {alive:?}");
    drop(k);
    let then = [hits(&mut e, "raw_hits"), hits(&mut e, "btf_hits")];
    syscalls(20);
    for (map, then) in ["raw_hits", "btf_hits"].into_iter().zip(then) {
        let now = hits(&mut e, map);
        assert_eq!(now[0], then[0], "{map}: the old program no longer runs");
        assert!(now[1] >= then[1] + 20, "{map}: {now:?}");
    }

    let gone = e.uninstall().unwrap();
    drop(e);
    let mut k = RealKernel::open(fs.path(), state.path()).unwrap();
    let alive = wait_gone(&mut k, &gone.objects, Duration::from_secs(10));
    assert!(alive.is_empty(), "still in the kernel: {alive:?}");
}
