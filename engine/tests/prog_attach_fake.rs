//! Cgroup attachments held without a link (`BPF_PROG_ATTACH`) against the fake kernel:
//! how `--cgroup-via auto` decides, what the plan says per attachment, a restart
//! re-attaching what was detached behind the engine's back, a compare-and-swap
//! mismatch rolling the upgrade back, a change of the way an attachment is held, and
//! uninstall detaching exactly the programs it recorded. programs/engine_v1.c and
//! engine_v2.c.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

mod common;

use std::path::Path;

use common::{StateDir, cgroup_point_via, objects, options_via};
use handover_engine::{
    ApplyOptions, AttachAction, Engine, Error, FakeKernel, FakeWorld, Hold, Kind, LockWait, Start,
    SwitchMethod, Via,
};

const CGROUP: &str = "/fake/cgroup";

fn engine(world: &FakeWorld, dir: &StateDir) -> Engine<FakeKernel> {
    Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse).unwrap()
}

fn apply(
    world: &FakeWorld,
    dir: &StateDir,
    version: u32,
    via: Via,
) -> Result<handover_engine::Report, Error> {
    let mut e = engine(world, dir);
    let objs = objects(version);
    let plan = e.plan(&objs, &options_via(Path::new(CGROUP), via))?;
    e.apply(&plan, &objs, ApplyOptions::default())
}

fn attached_ids(world: &FakeWorld) -> Vec<u32> {
    world
        .prog_attached(&cgroup_point_via(Path::new(CGROUP), Via::Auto))
        .iter()
        .map(|p| p.id)
        .collect()
}

#[test]
fn auto_holds_by_a_link_where_the_kernel_has_cgroup_links_and_by_prog_attach_elsewhere() {
    let objs = objects(1);
    let opts = options_via(Path::new(CGROUP), Via::Auto);
    for (links, hold, action) in [
        (true, Hold::Link, "attach a new link"),
        (
            false,
            Hold::ProgAttach,
            "attach without a link (prog attach, allow multi)",
        ),
    ] {
        let world = FakeWorld::new();
        world.set_cgroup_links(links);
        let dir = StateDir::new("auto");
        let mut e = engine(&world, &dir);
        let plan = e.plan(&objs, &opts).unwrap();
        assert_eq!(plan.attachments.len(), 1);
        assert_eq!(plan.attachments[0].hold, hold, "{plan}");
        assert!(plan.to_string().contains(action), "{plan}");
    }
    // Asked for explicitly, the probe is not consulted.
    let world = FakeWorld::new();
    let dir = StateDir::new("asked");
    let mut e = engine(&world, &dir);
    let plan = e
        .plan(&objs, &options_via(Path::new(CGROUP), Via::ProgAttach))
        .unwrap();
    assert_eq!(plan.attachments[0].hold, Hold::ProgAttach);
}

#[test]
fn a_prog_attach_hook_is_installed_upgraded_by_replace_restarted_and_uninstalled() {
    let world = FakeWorld::new();
    let dir = StateDir::new("prog-attach");
    let via = Via::ProgAttach;
    apply(&world, &dir, 1, via).unwrap();
    let v1 = engine(&world, &dir).state().unwrap().unwrap();
    assert!(v1.links.is_empty());
    assert!(
        world.pins().iter().all(|p| !p.starts_with("links/")),
        "{:?}",
        world.pins()
    );
    assert_eq!(attached_ids(&world), [v1.attached["connect"].prog]);
    assert_eq!(v1.attached["connect"].prog, v1.programs["count_connect"].id);

    // The plan of the upgrade says how the hook is switched.
    let mut e = engine(&world, &dir);
    let v2_objs = objects(2);
    let opts = options_via(Path::new(CGROUP), via);
    let plan = e.plan(&v2_objs, &opts).unwrap();
    assert_eq!(
        plan.attachments[0].action,
        AttachAction::Switch(SwitchMethod::ProgAttachReplace)
    );
    assert!(
        plan.to_string()
            .contains("switch: prog attach replace (compare-and-swap)"),
        "{plan}"
    );
    e.apply(&plan, &v2_objs, ApplyOptions::default()).unwrap();
    drop(e);
    let v2 = engine(&world, &dir).state().unwrap().unwrap();
    assert_ne!(v2.attached["connect"].prog, v1.attached["connect"].prog);
    assert_eq!(attached_ids(&world), [v2.attached["connect"].prog]);
    assert!(!world.exists(handover_engine::ObjRef::prog(v1.attached["connect"].prog)));

    // Detached behind the engine's back: the restart's plan sees it and re-attaches.
    let point = cgroup_point_via(Path::new(CGROUP), via);
    assert_eq!(world.detach_attached(&point), 1);
    let mut e = engine(&world, &dir);
    let plan = e.plan(&v2_objs, &opts).unwrap();
    assert_eq!(plan.start, Start::Restart);
    assert_eq!(plan.live.attached["connect"], 0, "{:?}", plan.live);
    assert!(
        plan.to_string()
            .contains("verify it is attached (prog query), re-attach if not"),
        "{plan}"
    );
    let report = e.apply(&plan, &v2_objs, ApplyOptions::default()).unwrap();
    assert_eq!(report.reattached, ["connect"]);
    assert_eq!(attached_ids(&world), [v2.attached["connect"].prog]);
    // A restart of a live hook re-attaches nothing.
    let plan = e.plan(&v2_objs, &opts).unwrap();
    let report = e.apply(&plan, &v2_objs, ApplyOptions::default()).unwrap();
    assert!(report.reattached.is_empty());

    // Uninstall detaches the recorded program and nothing else at the hook.
    let gone = e.uninstall().unwrap();
    drop(e);
    assert!(attached_ids(&world).is_empty());
    assert!(world.pins().is_empty(), "{:?}", world.pins());
    for r in gone.objects {
        assert!(!world.exists(r), "{r} left");
    }
    assert_eq!(world.count(Kind::Prog), 0);
}

#[test]
fn a_replaced_program_at_a_prog_attach_hook_aborts_the_upgrade_and_rolls_it_back() {
    let world = FakeWorld::new();
    let dir = StateDir::new("prog-attach-cas");
    let via = Via::ProgAttach;
    apply(&world, &dir, 1, via).unwrap();
    let installed = engine(&world, &dir).state().unwrap().unwrap();
    let point = cgroup_point_via(Path::new(CGROUP), via);
    // Another process puts its own program in the recorded one's place.
    world.replace_attached_program(&point, "stray");
    let stray = world.pinned("other/stray").unwrap();
    match apply(&world, &dir, 2, via) {
        Err(Error::Aborted { reason }) => assert!(reason.contains("connect"), "{reason}"),
        other => panic!("a compare-and-swap mismatch went through: {other:?}"),
    }
    let e = engine(&world, &dir);
    assert_eq!(e.state().unwrap().unwrap(), installed);
    assert!(e.journal().unwrap().is_none());
    drop(e);
    assert!(world.pins().iter().all(|p| !p.starts_with("stage/")));
    assert_eq!(attached_ids(&world), [stray.id], "the stray is left alone");
    // Uninstall removes only what it recorded: the stray stays attached.
    engine(&world, &dir).uninstall().unwrap();
    assert_eq!(attached_ids(&world), [stray.id]);
}

#[test]
fn a_hook_moved_from_a_link_to_prog_attach_and_back_runs_one_program_after_each_upgrade() {
    let world = FakeWorld::new();
    let dir = StateDir::new("prog-attach-move");
    let point = cgroup_point_via(Path::new(CGROUP), Via::Auto);
    apply(&world, &dir, 1, Via::Link).unwrap();
    // Another way to hold it: attached anew, the old one detached at the commit.
    let mut e = engine(&world, &dir);
    let objs = objects(2);
    let plan = e
        .plan(&objs, &options_via(Path::new(CGROUP), Via::ProgAttach))
        .unwrap();
    let actions: Vec<(AttachAction, Hold)> = plan
        .attachments
        .iter()
        .map(|a| (a.action, a.hold))
        .collect();
    assert_eq!(
        actions,
        [
            (AttachAction::Detach, Hold::Link),
            (AttachAction::Attach, Hold::ProgAttach)
        ],
        "{plan}"
    );
    e.apply(&plan, &objs, ApplyOptions::default()).unwrap();
    drop(e);
    assert_eq!(world.attached(&point), ["count_connect"]);
    assert_eq!(world.count(Kind::Link), 0);
    let state = engine(&world, &dir).state().unwrap().unwrap();
    assert!(state.links.is_empty() && state.attached.contains_key("connect"));

    apply(&world, &dir, 1, Via::Link).unwrap();
    assert_eq!(world.attached(&point), ["count_connect"]);
    assert!(attached_ids(&world).is_empty());
    let state = engine(&world, &dir).state().unwrap().unwrap();
    assert!(state.attached.is_empty() && state.links.contains_key("connect"));
    engine(&world, &dir).uninstall().unwrap();
    assert!(world.attached(&point).is_empty());
}
