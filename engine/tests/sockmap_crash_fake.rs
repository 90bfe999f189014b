//! Crash tests of a program on a socket map against the fake kernel:
//! programs/engine_sockmsg_v1.c upgraded to v2 (the sockhash reused, its program
//! switched) and to v3 (the sockhash recreated, the program attached to the new map),
//! with the program held by the map and through a socket map link, each killed at
//! every occurrence of every failpoint, then its recovery at every failpoint, then
//! recovered again. Each run must end with one set: the live sockhash runs exactly
//! the program the state records, which is that set's program, and no temporary or
//! rollback pin is left. One test in this binary: the failpoint registry is global to
//! the process.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

mod common;

use std::collections::BTreeMap;

use common::{
    StateDir, crashed, sockmsg_object as object, sockmsg_options as options,
    sockmsg_point as point, with_crash,
};
use handover_engine::{
    ApplyOptions, Engine, Error, FakeKernel, FakeWorld, Kernel, LockWait, Via, failpoints, identity,
};

fn engine(world: &FakeWorld, dir: &StateDir) -> Engine<FakeKernel> {
    Engine::with_kernel(
        world.process(),
        &dir.0,
        LockWait::Timeout(std::time::Duration::from_secs(10)),
    )
    .unwrap()
}

fn apply(world: &FakeWorld, dir: &StateDir, version: u32, via: Via) -> Result<(), Error> {
    let mut e = engine(world, dir);
    let objs = object(version);
    let plan = e.plan(&objs, &options(via))?;
    e.apply(&plan, &objs, ApplyOptions::default()).map(drop)
}

/// The invariants after a completed recovery; returns which version is live.
fn check(world: &FakeWorld, dir: &StateDir, to: u32, via: Via, context: &str) -> u32 {
    let e = engine(world, dir);
    assert!(e.journal().unwrap().is_none(), "{context}: journal left");
    let state = e.state().unwrap().expect("a state");
    drop(e);
    let version = if state.identity == identity(&object(to), &options(via)) {
        to
    } else {
        let v1 = identity(&object(1), &options(via));
        assert_eq!(state.identity, v1, "{context}");
        1
    };
    let socks = world.pinned("maps/socks").expect("a live sockhash");
    assert_eq!(socks.id, state.maps["socks"].id, "{context}");
    let at = point(Some(socks.id), via);
    if via == Via::Link {
        let rec = &state.links["count_msgs"];
        let mut k = world.process();
        let l = k.get(&rec.pin).unwrap().expect("the link's pin");
        assert_eq!(
            l.id, rec.id,
            "{context}: the pinned link is the recorded one"
        );
        assert_eq!(k.link_program(l).unwrap(), Some(rec.prog), "{context}");
        assert_eq!(rec.prog, state.programs["count"].id, "{context}");
        assert_eq!(
            world.attached(&at),
            ["count"],
            "{context}: one link on the map"
        );
    } else {
        let held = world.prog_attached(&at);
        let recorded = state.attached["count_msgs"].prog;
        assert_eq!(
            held.iter().map(|p| p.id).collect::<Vec<_>>(),
            [recorded],
            "{context}: the live sockhash holds the recorded program"
        );
        assert_eq!(recorded, state.programs["count"].id, "{context}");
        assert_eq!(
            state.attached["count_msgs"].cgroup_id,
            u64::from(socks.id),
            "{context}: the record names the live map"
        );
    }
    let pins = world.pins();
    assert!(
        pins.iter()
            .all(|p| !p.starts_with("stage/") && !p.contains("__handover")),
        "{context}: {pins:?}"
    );
    version
}

#[test]
fn every_crash_of_a_socket_map_program_switch_ends_in_one_consistent_set() {
    let _scenario = fail::FailScenario::setup();
    let points = failpoints();
    let mut outcomes = BTreeMap::<(Via, u32, u32), usize>::new();
    let cases = [
        (Via::ProgAttach, 2),
        (Via::ProgAttach, 3),
        (Via::Link, 2),
        (Via::Link, 3),
    ];
    for (via, to) in cases {
        for point in &points {
            for n in 0.. {
                let world = FakeWorld::new();
                let dir = StateDir::new("sockmap-crash");
                apply(&world, &dir, 1, via).unwrap();
                let r = with_crash(point, n, || apply(&world, &dir, to, via));
                if !crashed(&r) {
                    r.unwrap();
                    let context = format!("{via:?} 1 -> {to}: {point} #{n}");
                    assert_eq!(check(&world, &dir, to, via, &context), to);
                    break;
                }
                for rpoint in &points {
                    for m in 0.. {
                        let w = world.crashed_copy();
                        let d = dir.crashed_copy("sockmap-crash-copy");
                        let r = with_crash(rpoint, m, || engine(&w, &d).recover());
                        let context = format!(
                            "{via:?} 1 -> {to}: upgrade crash {point} #{n}, recovery crash \
                             {rpoint} #{m}"
                        );
                        let recovery_crashed = crashed(&r);
                        if recovery_crashed {
                            engine(&w, &d)
                                .recover()
                                .unwrap()
                                .expect("a journal to recover");
                        }
                        let v = check(&w, &d, to, via, &context);
                        if !recovery_crashed {
                            *outcomes.entry((via, to, v)).or_default() += 1;
                            break;
                        }
                    }
                }
            }
        }
    }
    eprintln!("outcomes {outcomes:?}");
    for (via, to) in cases {
        for v in [1, to] {
            assert!(
                outcomes.get(&(via, to, v)).is_some_and(|n| *n > 0),
                "{via:?} 1 -> {to} ending in {v}: {outcomes:?}"
            );
        }
    }
}
