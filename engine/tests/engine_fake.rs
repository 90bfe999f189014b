//! The engine's install, restart, upgrade, abort and uninstall paths against the fake
//! kernel (no privileges): programs/engine_v1.c and engine_v2.c.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

mod common;

use std::path::Path;

use common::{StateDir, backend_v2, fill, objects, options};
use handover_engine::{
    ApplyOptions, Engine, Error, FakeWorld, Kernel, Kind, LockWait, MapAction, Start, wait_gone,
};

const CGROUP: &str = "/fake/cgroup";

fn engine(world: &FakeWorld, dir: &StateDir) -> Engine<handover_engine::FakeKernel> {
    Engine::with_kernel(
        world.process(),
        &dir.0,
        LockWait::Timeout(std::time::Duration::from_secs(10)),
    )
    .unwrap()
}

fn install(world: &FakeWorld, dir: &StateDir, version: u32) -> handover_engine::Report {
    let mut e = engine(world, dir);
    let objs = objects(version);
    let plan = e.plan(&objs, &options(Path::new(CGROUP))).unwrap();
    e.apply(&plan, &objs, ApplyOptions::default()).unwrap()
}

/// Hashes and object sizes depend on the compiler that built the fixtures.
fn redact(text: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.len() >= 12 && word.chars().all(|c| c.is_ascii_hexdigit()) {
            out.push_str("<hash>");
        } else if word.chars().all(|c| c.is_ascii_digit()) && word.len() >= 4 && out.ends_with('(')
        {
            out.push_str("<size>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[test]
fn a_fresh_install_pins_every_map_and_program_and_attaches() {
    let world = FakeWorld::new();
    let dir = StateDir::new("fresh");
    let report = install(&world, &dir, 1);
    assert_eq!(report.start, Start::Fresh { stale: None });
    assert_eq!(
        world.pins(),
        [
            "links/connect",
            "maps/backends",
            "maps/config",
            "maps/conns",
            "maps/jumps",
            "maps/~rodata:engine~o",
            "progs/count_connect"
        ]
    );
    assert_eq!(
        world.attached(&common::cgroup_point(Path::new(CGROUP))),
        ["count_connect"]
    );
}

#[test]
fn a_restart_loads_nothing_and_reattaches_a_missing_link() {
    let world = FakeWorld::new();
    let dir = StateDir::new("restart");
    install(&world, &dir, 1);
    let maps_before = world.count(Kind::Map);
    let backends = world.pinned("maps/backends");
    let report = install(&world, &dir, 1);
    assert_eq!(report.start, Start::Restart);
    assert!(report.reattached.is_empty());
    assert_eq!(world.count(Kind::Map), maps_before);
    assert_eq!(world.pinned("maps/backends"), backends);

    // Somebody removed the link pin: the attachment is gone with it.
    world.process().unpin("links/connect").unwrap();
    assert!(
        world
            .attached(&common::cgroup_point(Path::new(CGROUP)))
            .is_empty()
    );
    let report = install(&world, &dir, 1);
    assert_eq!(report.start, Start::Restart);
    assert_eq!(report.reattached, ["connect"]);
    assert_eq!(
        world.attached(&common::cgroup_point(Path::new(CGROUP))),
        ["count_connect"]
    );
    assert_eq!(install(&world, &dir, 1).reattached, Vec::<String>::new());
}

#[test]
fn an_upgrade_converts_every_entry_reuses_unchanged_maps_and_switches() {
    let world = FakeWorld::new();
    let dir = StateDir::new("upgrade");
    install(&world, &dir, 1);
    let (_, v2) = fill(&world, 500);
    let conns = world.pinned("maps/conns");
    let jumps = world.pinned("maps/jumps");
    let backends = world.pinned("maps/backends");
    let prog = world.pinned("progs/count_connect");

    let mut e = engine(&world, &dir);
    let objs = objects(2);
    let plan = e.plan(&objs, &options(Path::new(CGROUP))).unwrap();
    insta::with_settings!({ snapshot_path => "../../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("engine_upgrade_plan_v1_to_v2", redact(&plan.to_string()));
    });
    assert_eq!(plan.map("backends").unwrap().action, MapAction::Copy);
    assert_eq!(plan.map("conns").unwrap().action, MapAction::Reuse);
    assert_eq!(plan.map("jumps").unwrap().action, MapAction::Create);
    let json = serde_json::to_string(&plan).unwrap();
    let back: handover_engine::Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plan);
    let report = e.apply(&back, &objs, ApplyOptions::default()).unwrap();
    assert_eq!(report.maps["backends"].copied, 500);
    assert!(report.switch_window_us.is_some());
    drop(e);

    assert_eq!(world.pinned("maps/conns"), conns, "reused");
    assert_ne!(
        world.pinned("maps/jumps"),
        jumps,
        "program arrays are always new"
    );
    assert_ne!(world.pinned("maps/backends"), backends);
    assert_ne!(world.pinned("progs/count_connect"), prog);
    assert_eq!(
        world.map_at("maps/backends").unwrap().entries(),
        v2["backends"]
    );
    assert_eq!(world.map_at("maps/conns").unwrap().entries(), v2["conns"]);
    assert!(!world.exists(backends.unwrap()), "the old map is freed");
    assert!(!world.exists(prog.unwrap()), "the old program is freed");
    assert!(
        world
            .pins()
            .iter()
            .all(|p| !p.starts_with("stage/") && !p.ends_with("__handover_prev"))
    );
    assert!(world.barriers() >= 1, "the switch waited for old programs");
    assert_eq!(install(&world, &dir, 2).start, Start::Restart);
    let e = engine(&world, &dir);
    assert!(e.journal().unwrap().is_none());
    let mut e = e;
    install_handles(&mut e);
}

fn install_handles(e: &mut Engine<handover_engine::FakeKernel>) {
    let objs = objects(2);
    let plan = e.plan(&objs, &options(Path::new(CGROUP))).unwrap();
    e.apply(&plan, &objs, ApplyOptions::default()).unwrap();
    let m = e.map::<u32, [u8; 24]>("backends").unwrap();
    let v = m.get(&0x7f00_0001).unwrap().unwrap();
    assert_eq!(v.to_vec(), backend_v2(3, 1001));
    assert!(matches!(
        e.map::<u32, u32>("backends"),
        Err(Error::Size { .. })
    ));
    assert!(matches!(
        e.map::<u32, u32>("nope"),
        Err(Error::NoSuch { .. })
    ));
    assert!(e.program("count_connect").is_ok());
}

#[test]
fn a_plan_is_refused_when_the_live_state_changed() {
    let world = FakeWorld::new();
    let dir = StateDir::new("stale-plan");
    install(&world, &dir, 1);
    let mut e = engine(&world, &dir);
    let objs = objects(2);
    let plan = e.plan(&objs, &options(Path::new(CGROUP))).unwrap();
    // Another version was restarted in between: the link runs another program.
    world.replace_link_program("links/connect", "intruder");
    let err = e.apply(&plan, &objs, ApplyOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Stale(_)), "{err}");
    assert!(err.to_string().contains("links/connect"), "{err}");
    let err = e
        .apply(&plan, &objects(1), ApplyOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::Stale(_)), "{err}");
}

#[test]
fn a_compare_and_swap_mismatch_aborts_and_rolls_back() {
    let world = FakeWorld::new();
    let dir = StateDir::new("cas");
    install(&world, &dir, 1);
    let (v1, _) = fill(&world, 50);
    let before = world.pins();
    let backends = world.pinned("maps/backends");
    let mut e = engine(&world, &dir);
    let objs = objects(2);
    let plan = e.plan(&objs, &options(Path::new(CGROUP))).unwrap();
    // The program changes after the plan is checked: only the kernel's
    // compare-and-swap can catch this; simulate it by a second attachment owner.
    let live_prog = world.pinned("progs/count_connect").unwrap();
    let err = {
        // Replace the link's program between plan and switch: a copy hook runs at
        // the first map call of the copy step.
        let w2 = world.clone();
        world.map_at("maps/backends").unwrap().set_writer(move |_| {
            w2.replace_link_program("links/connect", "intruder");
        });
        e.apply(&plan, &objs, ApplyOptions::default()).unwrap_err()
    };
    world.map_at("maps/backends").unwrap().clear_writer();
    assert!(matches!(err, Error::Aborted { .. }), "{err}");
    assert!(err.to_string().contains("connect"), "{err}");
    drop(e);
    let mut after: Vec<String> = world.pins();
    after.retain(|p| !p.starts_with("other/"));
    assert_eq!(after, before);
    assert_eq!(world.pinned("maps/backends"), backends);
    assert_eq!(world.pinned("progs/count_connect"), Some(live_prog));
    assert_eq!(
        world.map_at("maps/backends").unwrap().entries(),
        v1["backends"]
    );
    assert!(engine(&world, &dir).journal().unwrap().is_none());
}

#[test]
fn a_program_the_verifier_refuses_leaves_nothing_behind() {
    let world = FakeWorld::new();
    let dir = StateDir::new("refused");
    install(&world, &dir, 1);
    let before = world.pins();
    let maps = world.count(Kind::Map);
    world.refuse_loads(Some("R1 invalid mem access"));
    let mut e = engine(&world, &dir);
    let objs = objects(2);
    let plan = e.plan(&objs, &options(Path::new(CGROUP))).unwrap();
    let err = e.apply(&plan, &objs, ApplyOptions::default()).unwrap_err();
    assert!(err.to_string().contains("R1 invalid mem access"), "{err}");
    drop(e);
    assert_eq!(world.pins(), before);
    assert_eq!(world.count(Kind::Map), maps);
    world.refuse_loads(None);
    assert!(matches!(
        install(&world, &dir, 2).start,
        Start::Upgrade { .. }
    ));
}

#[test]
fn uninstall_removes_every_pin_and_frees_every_recorded_object() {
    let world = FakeWorld::new();
    let dir = StateDir::new("uninstall");
    install(&world, &dir, 1);
    install(&world, &dir, 2);
    let mut e = engine(&world, &dir);
    let gone = e.uninstall().unwrap();
    assert!(gone.objects.len() >= 8, "{gone:?}");
    assert!(world.pins().is_empty(), "{:?}", world.pins());
    assert!(wait_gone(e.kernel(), &gone.objects, std::time::Duration::from_secs(1)).is_empty());
    assert!(e.state().unwrap().is_none());
    for kind in [Kind::Map, Kind::Prog, Kind::Link, Kind::Btf] {
        assert_eq!(world.count(kind), 0, "{kind:?}");
    }
}

#[test]
fn a_second_engine_on_the_same_state_is_refused() {
    let world = FakeWorld::new();
    let dir = StateDir::new("lock");
    let _first = engine(&world, &dir);
    let err = Engine::with_kernel(
        world.process(),
        &dir.0,
        LockWait::Timeout(std::time::Duration::from_millis(50)),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
}

#[test]
fn a_wiped_bpffs_makes_the_state_stale_and_the_start_fresh() {
    let world = FakeWorld::new();
    let dir = StateDir::new("reboot");
    install(&world, &dir, 1);
    // A reboot: a new machine, the same state directory.
    let world = FakeWorld::new();
    let mut e = engine(&world, &dir);
    let objs = objects(1);
    let plan = e.plan(&objs, &options(Path::new(CGROUP))).unwrap();
    let Start::Fresh { stale: Some(why) } = &plan.start else {
        panic!("{:?}", plan.start)
    };
    assert!(why.contains("wiped"), "{why}");
    e.apply(&plan, &objs, ApplyOptions::default()).unwrap();
    assert_eq!(world.pins().len(), 7);
}

#[test]
fn a_tampered_state_file_is_not_trusted() {
    let world = FakeWorld::new();
    let dir = StateDir::new("tamper");
    install(&world, &dir, 1);
    let p = dir.0.join("state.json");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replacen("maps/conns", "maps/connz", 1);
    std::fs::write(&p, text).unwrap();
    let mut e = engine(&world, &dir);
    let err = e
        .plan(&objects(1), &options(Path::new(CGROUP)))
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn a_tombstone_map_is_created_empty_by_every_upgrade() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../programs/build/engine_load_v2.o");
    let objs = vec![handover_engine::ObjectSource::new(
        "engine_load.o",
        std::fs::read(&path).unwrap(),
    )];
    let mut opts = handover_engine::Options::default();
    opts.tombstones
        .insert("conns".into(), "conns_tombstones".into());
    let world = FakeWorld::new();
    let dir = StateDir::new("tombstones-fresh");
    let mut e = engine(&world, &dir);
    let plan = e.plan(&objs, &opts).unwrap();
    e.apply(&plan, &objs, ApplyOptions::default()).unwrap();
    let tombs = world.map_at("maps/conns_tombstones").unwrap();
    tombs.with_entries(|m| {
        m.insert(7u32.to_ne_bytes().to_vec(), vec![1]);
    });
    let before = e.state().unwrap().unwrap().maps["conns_tombstones"].id;
    // The same objects with one more option: an upgrade, whose maps all fit.
    opts.merge_rules
        .insert("conns.ip".into(), handover_engine::MergeRule::Max);
    let plan = e.plan(&objs, &opts).unwrap();
    assert!(matches!(plan.start, Start::Upgrade { .. }), "{plan}");
    let m = plan.map("conns_tombstones").unwrap();
    assert_eq!(m.action, MapAction::Create, "{plan}");
    assert!(!m.loses_entries, "{plan}");
    assert!(plan.lost_maps().is_empty(), "{plan}");
    assert!(
        m.notes
            .iter()
            .any(|n| n.contains("created empty by every upgrade")),
        "{plan}"
    );
    assert_eq!(
        plan.map("conns").unwrap().action,
        MapAction::Reuse,
        "{plan}"
    );
    e.apply(&plan, &objs, ApplyOptions::default()).unwrap();
    let after = e.state().unwrap().unwrap().maps["conns_tombstones"].id;
    assert_ne!(after, before);
    assert!(
        world
            .map_at("maps/conns_tombstones")
            .unwrap()
            .entries()
            .is_empty()
    );
}
