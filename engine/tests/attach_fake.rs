//! Attachments against the fake kernel: those the kernel cannot switch are refused by
//! the plan before anything runs (a tcx attachment on a kernel without tcx links, the
//! fake kernel told so, with programs/engine_hooks_v1.c), and an upgrade aborted after
//! a link without update nor detach was switched puts the old program back.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

mod common;

use common::StateDir;
use handover_engine::{
    AttachPoint, Attachment, Engine, Error, FakeWorld, LockWait, ObjectSource, Options, TcDirection,
};

#[test]
fn a_tcx_attachment_without_tcx_links_is_refused_by_the_plan() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../programs/build/engine_hooks_v1.o");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    let objects = [ObjectSource::new("hooks.o", bytes)];
    let options = Options {
        attachments: vec![Attachment {
            name: "tc".into(),
            program: "pass_tc".into(),
            point: AttachPoint::Tcx {
                iface: "eth0".into(),
                direction: TcDirection::Egress,
            },
        }],
        ..Options::default()
    };
    let world = FakeWorld::new();
    let dir = StateDir::new("tcx");
    let mut e = Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse).unwrap();
    assert!(
        e.plan(&objects, &options).is_ok(),
        "a kernel with tcx links"
    );
    world.set_tcx_links(false);
    match e.plan(&objects, &options) {
        Err(Error::Options(why)) => {
            assert!(
                why.contains("tc: ") || why.contains("attachment tc"),
                "{why}"
            );
            assert!(why.contains("no tcx links"), "{why}");
        }
        other => panic!("planned a tcx attachment without tcx links: {other:?}"),
    }
    assert!(world.pins().is_empty());
}

/// An upgrade aborted after a raw tracepoint attachment was switched (its old link
/// unpinned and dropped, the kernel having no detach for it) attaches the old
/// program there again: programs/engine_v1.c's `count_connect` at a raw tracepoint
/// and a cgroup hook whose link another process moved.
#[test]
fn an_abort_after_a_link_without_detach_was_dropped_attaches_the_old_program_again() {
    let cgroup = std::path::Path::new("/fake/cgroup");
    let raw = AttachPoint::RawTracepoint {
        tracepoint: "sys_enter".into(),
    };
    let options = Options {
        attachments: vec![
            Attachment {
                name: "raw".into(),
                program: "count_connect".into(),
                point: raw.clone(),
            },
            Attachment {
                name: "connect".into(),
                program: "count_connect".into(),
                point: common::cgroup_point(cgroup),
            },
        ],
        ..Options::default()
    };
    let world = FakeWorld::new();
    let dir = StateDir::new("drop-abort");
    let apply = |version: u32| {
        let mut e = Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse).unwrap();
        let objs = common::objects(version);
        let plan = e.plan(&objs, &options)?;
        e.apply(&plan, &objs, handover_engine::ApplyOptions::default())
    };
    apply(1).unwrap();
    let installed = Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse)
        .unwrap()
        .state()
        .unwrap()
        .unwrap();
    world.replace_link_program("links/connect", "stray");
    match apply(2) {
        Err(Error::Aborted { reason }) => assert!(reason.contains("connect"), "{reason}"),
        other => panic!("a compare-and-swap mismatch went through: {other:?}"),
    }
    let e = Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse).unwrap();
    let state = e.state().unwrap().unwrap();
    assert!(e.journal().unwrap().is_none());
    drop(e);
    assert_eq!(state.programs, installed.programs);
    assert_eq!(
        world.attached(&raw),
        ["count_connect"],
        "the old program again"
    );
    let relinked = world
        .pinned("links/raw")
        .expect("a link pinned at links/raw");
    assert!(world.exists(relinked));
    assert_ne!(relinked.id, installed.links["raw"].id);
    assert_eq!(
        state.links["raw"].id, relinked.id,
        "the state records the new link"
    );
    assert_eq!(state.links["connect"], installed.links["connect"]);
    // The installed set is trusted again: the next plan is an upgrade of it.
    let mut e = Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse).unwrap();
    let plan = e.plan(&common::objects(2), &options).unwrap();
    assert!(
        matches!(plan.start, handover_engine::Start::Upgrade { .. }),
        "{plan}"
    );
    drop(e);
    assert!(world.pins().iter().all(|p| !p.starts_with("stage/")));
    assert_eq!(
        world.count(handover_engine::Kind::Prog),
        2,
        "version 1's program and the stray"
    );
}
