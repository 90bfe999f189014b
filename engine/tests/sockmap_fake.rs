//! Programs held by a socket map (`sk_msg`/`sk_skb` attached with `BPF_PROG_ATTACH`
//! to a sockmap or sockhash of the set) against the fake kernel:
//! programs/engine_sockmsg_v1.c .. v3.c, whose `count` program is attached to the
//! `socks` sockhash. What the plan says and does for a reused map (the map's program
//! exchanged after a check of the old one) and for a recreated one (the program
//! attached to the new map, the old one going with its map), a restart re-attaching
//! a program detached behind the engine's back, a program someone else put on the map
//! aborting the upgrade, a refused attachment recovered to one consistent set, and
//! uninstall.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

mod common;

use common::{
    StateDir, sockmsg_object as object, sockmsg_options as options_via, sockmsg_point as point_via,
};
use handover_engine::{
    ApplyOptions, AttachAction, AttachPoint, Engine, Error, FakeKernel, FakeWorld, Hold, Kernel,
    LockWait, ObjRef, Options, Report, State, SwitchMethod, Via,
};

fn point(map: Option<u32>) -> AttachPoint {
    point_via(map, Via::ProgAttach)
}

fn options() -> Options {
    options_via(Via::ProgAttach)
}

fn engine(world: &FakeWorld, dir: &StateDir) -> Engine<FakeKernel> {
    Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse).unwrap()
}

fn apply(world: &FakeWorld, dir: &StateDir, version: u32) -> Result<Report, Error> {
    let mut e = engine(world, dir);
    let objs = object(version);
    let plan = e.plan(&objs, &options())?;
    e.apply(&plan, &objs, ApplyOptions::default())
}

fn state(world: &FakeWorld, dir: &StateDir) -> State {
    engine(world, dir).state().unwrap().unwrap()
}

/// The programs the live `socks` map holds, and the program the state records.
fn hook(world: &FakeWorld, dir: &StateDir) -> (Vec<ObjRef>, ObjRef) {
    let s = state(world, dir);
    let held = world.prog_attached(&point(Some(s.maps["socks"].id)));
    (held, ObjRef::prog(s.attached["count_msgs"].prog))
}

#[test]
fn a_reused_map_has_its_program_exchanged_and_a_restart_puts_it_back() {
    let world = FakeWorld::new();
    let dir = StateDir::new("sockmap-reuse");
    let fresh = {
        let mut e = engine(&world, &dir);
        e.plan(&object(1), &options()).unwrap()
    };
    assert_eq!(fresh.attachments[0].hold, Hold::ProgAttach, "{fresh}");
    assert_eq!(fresh.attachments[0].action, AttachAction::Attach, "{fresh}");
    apply(&world, &dir, 1).unwrap();
    let s1 = state(&world, &dir);
    let (held, recorded) = hook(&world, &dir);
    assert_eq!(held, [recorded]);
    assert_eq!(recorded.id, s1.programs["count"].id);
    assert_eq!(
        s1.attached["count_msgs"].cgroup_id,
        u64::from(s1.maps["socks"].id),
        "the record names the map the program is on"
    );

    let plan = engine(&world, &dir).plan(&object(2), &options()).unwrap();
    assert_eq!(
        plan.attachments[0].action,
        AttachAction::Switch(SwitchMethod::MapProgAttach),
        "{plan}"
    );
    let text = plan.to_string();
    assert!(
        text.contains("socket map socks (sk_msg_verdict)")
            && text.contains("sockets already in the map keep the old program"),
        "{text}"
    );
    let r = apply(&world, &dir, 2).unwrap();
    assert!(r.switch_window_us.is_some());
    let s2 = state(&world, &dir);
    assert_eq!(
        s2.maps["socks"].id, s1.maps["socks"].id,
        "the map is reused"
    );
    let (held, recorded) = hook(&world, &dir);
    assert_eq!(held, [recorded]);
    assert_eq!(recorded.id, s2.programs["count"].id);
    assert!(
        !world.exists(ObjRef::prog(s1.programs["count"].id)),
        "the old program is released"
    );

    // A restart verifies; one detached behind the engine's back is attached again.
    let r = apply(&world, &dir, 2).unwrap();
    assert!(r.reattached.is_empty(), "{:?}", r.reattached);
    assert_eq!(world.detach_attached(&point(Some(s2.maps["socks"].id))), 1);
    let r = apply(&world, &dir, 2).unwrap();
    assert_eq!(r.reattached, ["count_msgs"]);
    assert_eq!(hook(&world, &dir).0, [recorded]);

    let gone = engine(&world, &dir).uninstall().unwrap();
    assert!(
        world
            .prog_attached(&point(Some(s2.maps["socks"].id)))
            .is_empty()
    );
    for o in gone.objects {
        assert!(!world.exists(o), "{o} is left");
    }
}

#[test]
fn a_recreated_map_gets_the_new_program_and_the_old_one_goes_with_its_map() {
    let world = FakeWorld::new();
    let dir = StateDir::new("sockmap-recreate");
    apply(&world, &dir, 1).unwrap();
    let s1 = state(&world, &dir);
    let plan = engine(&world, &dir).plan(&object(3), &options()).unwrap();
    let actions: Vec<AttachAction> = plan.attachments.iter().map(|a| a.action).collect();
    assert_eq!(
        actions,
        [AttachAction::Detach, AttachAction::Attach],
        "{plan}"
    );
    assert!(
        plan.to_string()
            .contains("attach to the map (prog attach; only sockets added"),
        "{plan}"
    );
    apply(&world, &dir, 3).unwrap();
    let s3 = state(&world, &dir);
    assert_ne!(s3.maps["socks"].id, s1.maps["socks"].id, "recreated");
    let (held, recorded) = hook(&world, &dir);
    assert_eq!(held, [recorded]);
    assert_eq!(recorded.id, s3.programs["count"].id);
    assert!(!world.exists(ObjRef::map(s1.maps["socks"].id)));
    assert!(!world.exists(ObjRef::prog(s1.programs["count"].id)));
    assert!(world.pins().iter().all(|p| !p.starts_with("stage/")));
}

#[test]
fn a_program_someone_else_put_on_the_map_aborts_the_upgrade() {
    let world = FakeWorld::new();
    let dir = StateDir::new("sockmap-cas");
    apply(&world, &dir, 1).unwrap();
    let s1 = state(&world, &dir);
    let at = point(Some(s1.maps["socks"].id));
    world.replace_attached_program(&at, "stray");
    let stray = world.prog_attached(&at);
    let err = apply(&world, &dir, 2).unwrap_err();
    assert!(matches!(err, Error::Aborted { .. }), "{err}");
    assert_eq!(world.prog_attached(&at), stray, "the stray stays");
    assert_eq!(state(&world, &dir).identity, s1.identity);
    assert!(world.pins().iter().all(|p| !p.starts_with("stage/")));
}

#[test]
fn a_refused_attach_to_a_new_map_is_recovered_to_one_consistent_set() {
    let world = FakeWorld::new();
    let dir = StateDir::new("sockmap-refused");
    apply(&world, &dir, 1).unwrap();
    let s1 = state(&world, &dir);
    world.refuse_attach(true);
    let err = apply(&world, &dir, 3).unwrap_err();
    assert!(err.to_string().contains("attach"), "{err}");
    world.refuse_attach(false);
    let mut e = engine(&world, &dir);
    if e.journal().unwrap().is_some() {
        e.recover().unwrap().expect("a journal to recover");
    }
    assert!(e.journal().unwrap().is_none());
    let live = e.state().unwrap().unwrap();
    drop(e);
    // Whichever set is live, its map holds its program, and only it.
    let (held, recorded) = hook(&world, &dir);
    assert_eq!(held, [recorded]);
    assert_eq!(recorded.id, live.programs["count"].id);
    if live.identity == s1.identity {
        assert_eq!(live.maps["socks"].id, s1.maps["socks"].id);
    }
    assert!(world.pins().iter().all(|p| !p.starts_with("stage/")));
}

fn apply_via(world: &FakeWorld, dir: &StateDir, version: u32, via: Via) -> Result<Report, Error> {
    let mut e = engine(world, dir);
    let objs = object(version);
    let plan = e.plan(&objs, &options_via(via))?;
    e.apply(&plan, &objs, ApplyOptions::default())
}

/// The program the link pinned for the attachment runs, and the one the state
/// records; the link is the state's.
fn link(world: &FakeWorld, dir: &StateDir) -> (Option<u32>, u32) {
    let s = state(world, dir);
    let rec = &s.links["count_msgs"];
    let mut k = world.process();
    let l = k.get(&rec.pin).unwrap().expect("the link's pin");
    assert_eq!(l.id, rec.id);
    (k.link_program(l).unwrap(), rec.prog)
}

#[test]
fn a_socket_map_link_is_updated_by_compare_and_swap_and_replaced_with_a_recreated_map() {
    let world = FakeWorld::new();
    let dir = StateDir::new("sockmap-link");
    // Auto: a link where the kernel has socket map links, held by the map elsewhere.
    for (links, hold) in [(false, Hold::ProgAttach), (true, Hold::Link)] {
        world.set_sockmap_links(links);
        let plan = engine(&world, &dir)
            .plan(&object(1), &options_via(Via::Auto))
            .unwrap();
        assert_eq!(plan.attachments[0].hold, hold, "{plan}");
    }
    apply_via(&world, &dir, 1, Via::Link).unwrap();
    let s1 = state(&world, &dir);
    assert!(s1.attached.is_empty());
    let (runs, recorded) = link(&world, &dir);
    assert_eq!(runs, Some(recorded));
    assert_eq!(recorded, s1.programs["count"].id);

    let plan = engine(&world, &dir)
        .plan(&object(2), &options_via(Via::Link))
        .unwrap();
    assert_eq!(
        plan.attachments[0].action,
        AttachAction::Switch(SwitchMethod::LinkUpdate),
        "{plan}"
    );
    apply_via(&world, &dir, 2, Via::Link).unwrap();
    let s2 = state(&world, &dir);
    assert_eq!(
        s2.links["count_msgs"].id, s1.links["count_msgs"].id,
        "one link"
    );
    let (runs, recorded) = link(&world, &dir);
    assert_eq!(runs, Some(recorded));
    assert_eq!(recorded, s2.programs["count"].id);

    // A restart attaches a link that went missing again, to the live map.
    assert!(world.process().unpin("links/count_msgs").unwrap());
    let r = apply_via(&world, &dir, 2, Via::Link).unwrap();
    assert_eq!(r.reattached, ["count_msgs"]);
    let (runs, recorded) = link(&world, &dir);
    assert_eq!(runs, Some(recorded));
    assert_eq!(
        world.attached(&point_via(Some(s2.maps["socks"].id), Via::Link)),
        ["count"]
    );

    // Someone else's program in the link: the compare-and-swap refuses, nothing moves.
    // (Version 1 again: an upgrade like any other, over the same sockhash.)
    world.replace_link_program("links/count_msgs", "stray");
    let err = apply_via(&world, &dir, 1, Via::Link).unwrap_err();
    assert!(matches!(err, Error::Aborted { .. }), "{err}");
    assert_eq!(state(&world, &dir).identity, s2.identity);
    assert!(world.pins().iter().all(|p| !p.starts_with("stage/")));
    // Back to the recorded program by hand; now the recreate goes through: a new link
    // on the new map, pinned over the old one.
    let mut k = world.process();
    let l = k.get("links/count_msgs").unwrap().unwrap();
    let stray = ObjRef::prog(k.link_program(l).unwrap().unwrap());
    let count = k.get("progs/count").unwrap().unwrap();
    k.update_link(l, count, stray).unwrap();
    drop(k);
    let plan = engine(&world, &dir)
        .plan(&object(3), &options_via(Via::Link))
        .unwrap();
    let actions: Vec<AttachAction> = plan.attachments.iter().map(|a| a.action).collect();
    assert_eq!(actions, [AttachAction::Attach], "{plan}");
    apply_via(&world, &dir, 3, Via::Link).unwrap();
    let s3 = state(&world, &dir);
    assert_ne!(s3.maps["socks"].id, s2.maps["socks"].id);
    assert_ne!(s3.links["count_msgs"].id, s2.links["count_msgs"].id);
    let (runs, recorded) = link(&world, &dir);
    assert_eq!(runs, Some(recorded));
    assert_eq!(recorded, s3.programs["count"].id);
    assert_eq!(
        world.attached(&point_via(Some(s3.maps["socks"].id), Via::Link)),
        ["count"]
    );
    assert!(!world.exists(ObjRef::link(s2.links["count_msgs"].id)));
    assert!(!world.exists(ObjRef::map(s2.maps["socks"].id)));
    let gone = engine(&world, &dir).uninstall().unwrap();
    for o in gone.objects {
        assert!(!world.exists(o), "{o} is left");
    }
}
