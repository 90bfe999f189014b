//! Kprobe and uprobe attachments against the fake kernel: the plan refuses them on a
//! kernel without the probe's PMU or without perf-event links (the fake kernel told
//! so), naming the attachment and the lack, before anything runs; an upgrade switches
//! them by attaching the new program and dropping the old link, whose type has no
//! detach; and an upgrade aborted after a probe link was switched puts the old program
//! back. With programs/engine_probe_v1.c and v2, and programs/engine_v1.c and v2 for
//! the abort (the fake kernel runs any program at any hook).
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

mod common;

use std::path::{Path, PathBuf};

use common::StateDir;
use handover_engine::{
    ApplyOptions, AttachAction, AttachPoint, Attachment, Engine, Error, FakeWorld, Kind, LockWait,
    ObjectSource, Options, Start, SwitchMethod,
};

fn probe_objects(version: u32) -> Vec<ObjectSource> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../programs/build/engine_probe_v{version}.o"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    vec![ObjectSource::new("probe.o", bytes)]
}

fn kprobe(retprobe: bool) -> AttachPoint {
    AttachPoint::Kprobe {
        function: "__x64_sys_getppid".into(),
        retprobe,
    }
}

fn uprobe() -> AttachPoint {
    AttachPoint::Uprobe {
        path: PathBuf::from("/usr/bin/daemon"),
        symbol: Some("handle_request".into()),
        offset: 0,
        retprobe: false,
    }
}

fn probe_options() -> Options {
    Options {
        attachments: vec![
            Attachment {
                name: "entry".into(),
                program: "count_kprobe".into(),
                point: kprobe(false),
            },
            Attachment {
                name: "exit".into(),
                program: "count_kretprobe".into(),
                point: kprobe(true),
            },
            Attachment {
                name: "user".into(),
                program: "count_uprobe".into(),
                point: uprobe(),
            },
        ],
        ..Options::default()
    }
}

#[test]
fn probe_points_read_and_print_as_their_options_say() {
    let json = serde_json::to_value(kprobe(true)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"kind": "kprobe", "function": "__x64_sys_getppid", "retprobe": true})
    );
    let short: AttachPoint =
        serde_json::from_value(serde_json::json!({"kind": "kprobe", "function": "f"})).unwrap();
    assert_eq!(
        short,
        AttachPoint::Kprobe {
            function: "f".into(),
            retprobe: false
        }
    );
    let user: AttachPoint = serde_json::from_value(
        serde_json::json!({"kind": "uprobe", "path": "/bin/x", "offset": 4096, "retprobe": true}),
    )
    .unwrap();
    assert_eq!(
        user,
        AttachPoint::Uprobe {
            path: "/bin/x".into(),
            symbol: None,
            offset: 4096,
            retprobe: true
        }
    );
    assert_eq!(kprobe(false).to_string(), "kprobe __x64_sys_getppid");
    assert_eq!(kprobe(true).to_string(), "kretprobe __x64_sys_getppid");
    assert_eq!(
        uprobe().to_string(),
        "uprobe /usr/bin/daemon:handle_request"
    );
    assert_eq!(user.to_string(), "uretprobe /bin/x:0x1000");
    let at = AttachPoint::Uprobe {
        path: "/bin/x".into(),
        symbol: Some("f".into()),
        offset: 16,
        retprobe: false,
    };
    assert_eq!(at.to_string(), "uprobe /bin/x:f+0x10");
    for p in [kprobe(false), kprobe(true), uprobe(), user, at] {
        assert_eq!(
            p.switch_method(handover_engine::Hold::Link),
            SwitchMethod::AttachThenDetach,
            "{p}"
        );
    }
}

#[test]
fn a_probe_attachment_is_refused_by_the_plan_on_a_kernel_that_cannot_hold_it() {
    let objects = probe_objects(1);
    let options = probe_options();
    let world = FakeWorld::new();
    let dir = StateDir::new("probe-refused");
    let mut e = Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse).unwrap();
    assert!(e.plan(&objects, &options).is_ok(), "a kernel with it all");
    let refused = |e: &mut Engine<_>, lack: &str, attachment: &str| match e.plan(&objects, &options)
    {
        Err(Error::Options(why)) => {
            assert!(
                why.contains(&format!("attachment {attachment} at")),
                "{why}"
            );
            assert!(why.contains(lack), "{why}");
        }
        other => panic!("planned without {lack}: {other:?}"),
    };
    world.set_kprobes(false);
    refused(&mut e, "no kprobe PMU", "entry");
    world.set_kprobes(true);
    world.set_uprobes(false);
    refused(&mut e, "no uprobe PMU", "user");
    world.set_uprobes(true);
    world.set_perf_links(false);
    refused(&mut e, "no perf-event links", "entry");
    world.set_perf_links(true);
    // Points the options cannot mean.
    let bad = |point: AttachPoint| Options {
        attachments: vec![Attachment {
            name: "bad".into(),
            program: "count_uprobe".into(),
            point,
        }],
        ..Options::default()
    };
    for (point, why) in [
        (
            AttachPoint::Uprobe {
                path: "bin/daemon".into(),
                symbol: None,
                offset: 0,
                retprobe: false,
            },
            "bin/daemon is not an absolute path",
        ),
        (
            AttachPoint::Uprobe {
                path: "/bin/daemon".into(),
                symbol: Some(String::new()),
                offset: 0,
                retprobe: false,
            },
            "symbol is empty",
        ),
        (
            AttachPoint::Kprobe {
                function: String::new(),
                retprobe: false,
            },
            "needs the name of a kernel function",
        ),
    ] {
        match e.plan(&objects, &bad(point)) {
            Err(Error::Options(text)) => {
                assert!(
                    text.contains("attachment bad at") && text.contains(why),
                    "{text}"
                );
            }
            other => panic!("planned a bad probe point: {other:?}"),
        }
    }
    // Refused before anything ran.
    assert!(world.pins().is_empty());
    assert_eq!(world.count(Kind::Prog), 0);
}

#[test]
fn an_upgrade_switches_probe_links_by_attaching_the_new_program_and_dropping_the_old_link() {
    let options = probe_options();
    let world = FakeWorld::new();
    let dir = StateDir::new("probe-switch");
    let apply = |version: u32| {
        let mut e = Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse).unwrap();
        let objs = probe_objects(version);
        let plan = e.plan(&objs, &options).unwrap();
        e.apply(&plan, &objs, ApplyOptions::default()).unwrap();
        (plan, e.state().unwrap().unwrap())
    };
    let (_, v1) = apply(1);
    for a in &options.attachments {
        assert_eq!(world.attached(&a.point), [a.program.as_str()], "{}", a.name);
    }
    // A restart keeps the links.
    let (plan, again) = apply(1);
    assert_eq!(plan.start, Start::Restart);
    assert!(
        plan.attachments
            .iter()
            .all(|a| a.action == AttachAction::Verify)
    );
    assert_eq!(again.links, v1.links);
    let (plan, v2) = apply(2);
    for a in &plan.attachments {
        assert_eq!(
            a.action,
            AttachAction::Switch(SwitchMethod::AttachThenDetach),
            "{}",
            a.name
        );
    }
    for a in &options.attachments {
        let (old, new) = (&v1.links[&a.name], &v2.links[&a.name]);
        assert_ne!(old.id, new.id, "{}: a new link", a.name);
        assert_ne!(old.prog, new.prog, "{}: the new program", a.name);
        assert!(
            !world.exists(handover_engine::ObjRef::link(old.id)),
            "{}: the old link is freed",
            a.name
        );
        // One program at the hook: version 2's.
        assert_eq!(world.attached(&a.point), [a.program.as_str()], "{}", a.name);
        assert_eq!(
            world.pinned(&new.pin),
            Some(handover_engine::ObjRef::link(new.id))
        );
    }
    // Only version 2's programs are left.
    assert_eq!(world.count(Kind::Prog), v2.programs.len());
    let mut e = Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse).unwrap();
    e.uninstall().unwrap();
    drop(e);
    assert!(world.pins().is_empty(), "{:?}", world.pins());
    assert_eq!(world.count(Kind::Link), 0);
}

/// An upgrade aborted after a kprobe attachment was switched (its old link unpinned
/// and dropped, the kernel having no detach for it) attaches the old program there
/// again: programs/engine_v1.c's `count_connect` at a kprobe and a cgroup hook whose
/// link another process moved.
#[test]
fn an_abort_after_a_kprobe_link_was_dropped_attaches_the_old_program_again() {
    let cgroup = Path::new("/fake/cgroup");
    let point = kprobe(false);
    let options = Options {
        attachments: vec![
            Attachment {
                name: "kprobe".into(),
                program: "count_connect".into(),
                point: point.clone(),
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
    let dir = StateDir::new("probe-abort");
    let apply = |version: u32| {
        let mut e = Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse).unwrap();
        let objs = common::objects(version);
        let plan = e.plan(&objs, &options)?;
        e.apply(&plan, &objs, ApplyOptions::default())
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
    assert_eq!(world.attached(&point), ["count_connect"], "the old program");
    let relinked = world
        .pinned("links/kprobe")
        .expect("a link pinned at links/kprobe");
    assert_ne!(relinked.id, installed.links["kprobe"].id, "a new link");
    assert_eq!(state.links["kprobe"].id, relinked.id);
    assert_eq!(
        state.links["kprobe"].prog, installed.links["kprobe"].prog,
        "running version 1's program"
    );
    assert!(world.pins().iter().all(|p| !p.starts_with("stage/")));
}
