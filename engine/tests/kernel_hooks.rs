//! Cgroup hooks held without a link on the running kernel (root), in the test's own
//! bpffs and cgroup: programs/engine_hooks_v1.c's `count_connect4` attached to the
//! cgroup's connect4 hook with `BPF_PROG_ATTACH` (`--cgroup-via prog-attach`), its
//! state map filled, connects made from a child in the cgroup and its own network
//! namespace (to 127.0.0.1 only), then upgraded to engine_hooks_v2.c by a
//! `BPF_F_REPLACE` of the recorded program: `BPF_PROG_QUERY` lists exactly the new
//! program, the new program counts the connects after the switch, the map's entries
//! stay. Detached by hand, the hook is attached again by a restart; uninstall leaves
//! the hook empty and the recorded programs gone. A program put in the recorded one's
//! place by another process makes the kernel refuse the replace, and the upgrade
//! rolls back, leaving that program alone. Under a child connecting in a loop, no
//! connect goes uncounted while the hook is switched (by a replace, and by a link
//! update for comparison): every one is counted by exactly one version.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use handover_engine::{
    ApplyOptions, AttachAction, AttachPoint, Attachment, Engine, Error, Hold, Kernel, LockWait,
    ObjRef, ObjectSource, Options, RealKernel, Start, SwitchMethod, Via, wait_gone,
};
use handover_sys::{
    ALLOW_MULTI, AttachTarget, AttachType, Bpf, ObjectKind, OpenFlags, UpdateFlags,
};

const HOOK: AttachType = AttachType::CgroupInet4Connect;
/// How long a test waits for its own engine's lock after dropping the engine: a child
/// that another test of this binary spawns in that moment holds a copy of every
/// descriptor, the lock's too, until its exec closes them (flock locks belong to the
/// open file, which the copy keeps alive), and on a loaded machine the child may take
/// a while to reach its exec.
const UNLOCKED: LockWait = LockWait::Timeout(Duration::from_secs(10));

fn objects(version: u32) -> Vec<ObjectSource> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../programs/build/engine_hooks_v{version}.o"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    vec![ObjectSource::new("hooks.o", bytes)]
}

fn options(cgroup: &Path, via: Via) -> Options {
    Options {
        attachments: vec![Attachment {
            name: "connect4".into(),
            program: "count_connect4".into(),
            point: AttachPoint::Cgroup {
                path: cgroup.to_owned(),
                attach_type: HOOK.name().to_owned(),
                via,
            },
        }],
        ..Options::default()
    }
}

/// The child: joins the cgroup, makes its own network namespace, and connects to
/// 127.0.0.1 `HANDOVER_CONNECTS` times (nothing listens: each is refused after
/// connect4 ran).
fn connect_child() {
    let cgroup = std::env::var("HANDOVER_CGROUP").expect("cgroup path");
    let n: u16 = std::env::var("HANDOVER_CONNECTS").unwrap().parse().unwrap();
    testenv::join_cgroup(cgroup.as_ref());
    testenv::enter_new_netns();
    for p in 0..n {
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, 3000 + p));
        let _ = TcpStream::connect_timeout(&to, Duration::from_secs(2));
    }
    println!("RESULT done");
}

/// The child: joins the cgroup, makes its own network namespace, and connects to
/// 127.0.0.1 until the file `HANDOVER_STOP` exists; prints how many connects it made.
fn loop_child() {
    let cgroup = std::env::var("HANDOVER_CGROUP").expect("cgroup path");
    let stop = std::env::var("HANDOVER_STOP").expect("stop file");
    testenv::join_cgroup(cgroup.as_ref());
    testenv::enter_new_netns();
    let mut n = 0u64;
    while !Path::new(&stop).exists() {
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, 4000));
        let _ = TcpStream::connect_timeout(&to, Duration::from_secs(2));
        n += 1;
    }
    println!("RESULT connects={n}");
}

fn connect(test: &str, cgroup: &testenv::Cgroup, n: u16) {
    let out = testenv::run_child(
        test,
        "connect",
        &[
            ("HANDOVER_CGROUP", cgroup.path().display().to_string()),
            ("HANDOVER_CONNECTS", n.to_string()),
        ],
    );
    assert!(out.contains("RESULT done"), "{out}");
}

/// The programs attached to the cgroup's connect4 hook itself.
fn query(cgroup: &testenv::Cgroup) -> Vec<u32> {
    Bpf::kernel()
        .prog_query(AttachTarget::Fd(cgroup.fd()), HOOK, 0)
        .unwrap()
        .prog_ids
}

/// The connects counted by version 1 and version 2 (slots 1 and 2 of `cg_hits`).
fn hits(e: &mut Engine<RealKernel>) -> [u64; 2] {
    let m = e.map::<u32, u64>("cg_hits").unwrap();
    [1, 2].map(|slot| m.get(&slot).unwrap().unwrap_or(0))
}

#[test]
fn a_prog_attach_hook_is_replaced_by_an_upgrade_reattached_by_a_restart_and_detached() {
    const TEST: &str =
        "a_prog_attach_hook_is_replaced_by_an_upgrade_reattached_by_a_restart_and_detached";
    if testenv::child_role().as_deref() == Some("connect") {
        connect_child();
        return;
    }
    if !testenv::privileged(TEST) {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let cgroup = testenv::Cgroup::new();
    let state = testenv::TempDir::new("handover-hooks-state");
    let open = || Engine::open(fs.path(), state.path(), UNLOCKED).unwrap();
    let mut e = open();
    let v1 = objects(1);

    // Left to the kernel, the hook is held by a link here (the probe's throwaway
    // cgroup is gone again).
    let auto = e.plan(&v1, &options(cgroup.path(), Via::Auto)).unwrap();
    let linked = Bpf::kernel().cgroup_link_works(cgroup.fd(), HOOK);
    let expected = if linked { Hold::Link } else { Hold::ProgAttach };
    assert_eq!(auto.attachments[0].hold, expected, "{auto}");
    let children = std::fs::read_dir(cgroup.path())
        .unwrap()
        .filter(|d| d.as_ref().unwrap().file_type().unwrap().is_dir())
        .count();
    assert_eq!(children, 0, "the probe's cgroup is removed");

    // Install version 1 held by the cgroup.
    let opts = options(cgroup.path(), Via::ProgAttach);
    let plan = e.plan(&v1, &opts).unwrap();
    assert!(
        plan.to_string()
            .contains("attach without a link (prog attach, allow multi)"),
        "{plan}"
    );
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    let installed = e.state().unwrap().unwrap();
    let v1_prog = installed.programs["count_connect4"].id;
    let held = &installed.attached["connect4"];
    assert_eq!((held.prog, held.cgroup_id), (v1_prog, cgroup.id()));
    assert!(installed.links.is_empty());
    assert!(!fs.path().join("links").exists(), "no link pinned");
    assert_eq!(query(&cgroup), [v1_prog]);
    let flags = Bpf::kernel()
        .prog_query(AttachTarget::Fd(cgroup.fd()), HOOK, 0)
        .unwrap()
        .prog_attach_flags;
    // Kernels before 6.0 report no per-program flags.
    assert!(flags.is_empty() || flags == [ALLOW_MULTI], "{flags:?}");
    let conns = e.map_access("cg_conns").unwrap();
    for i in 0..500u32 {
        conns
            .update(
                &i.to_ne_bytes(),
                &u64::from(i * 7).to_ne_bytes(),
                UpdateFlags::ANY,
            )
            .unwrap();
    }
    drop(conns);
    connect(TEST, &cgroup, 3);
    assert_eq!(hits(&mut e), [3, 0]);
    drop(e);

    // Upgrade: the recorded program is replaced in place.
    let mut e = open();
    let v2 = objects(2);
    let plan = e.plan(&v2, &opts).unwrap();
    assert!(matches!(plan.start, Start::Upgrade { .. }), "{plan}");
    assert_eq!(
        plan.attachments[0].action,
        AttachAction::Switch(SwitchMethod::ProgAttachReplace)
    );
    assert!(
        plan.to_string()
            .contains("switch: prog attach replace (compare-and-swap)"),
        "{plan}"
    );
    e.apply(&plan, &v2, ApplyOptions::default()).unwrap();
    let upgraded = e.state().unwrap().unwrap();
    let v2_prog = upgraded.programs["count_connect4"].id;
    assert_ne!(v2_prog, v1_prog);
    assert_eq!(upgraded.attached["connect4"].prog, v2_prog);
    assert_eq!(query(&cgroup), [v2_prog], "exactly the new program");
    connect(TEST, &cgroup, 2);
    assert_eq!(hits(&mut e), [3, 2], "the old program no longer runs");
    let conns = e.map::<u32, u64>("cg_conns").unwrap();
    for i in 0..500u32 {
        assert_eq!(conns.get(&i).unwrap(), Some(u64::from(i * 7)), "entry {i}");
    }
    drop(conns);
    drop(e);
    let mut k = RealKernel::open(fs.path(), state.path()).unwrap();
    let alive = wait_gone(&mut k, &[ObjRef::prog(v1_prog)], Duration::from_secs(10));
    assert!(
        alive.is_empty(),
        "version 1's program is still in the kernel"
    );
    drop(k);

    // Detached by hand: the restart's plan sees it, and attaches it again.
    let bpf = Bpf::kernel();
    let fd = bpf
        .fd_by_id(ObjectKind::Program, v2_prog, OpenFlags::READ_ONLY)
        .unwrap();
    bpf.prog_detach(AttachTarget::Fd(cgroup.fd()), Some(fd.as_fd()), HOOK)
        .unwrap();
    drop(fd);
    assert!(query(&cgroup).is_empty());
    let mut e = open();
    let plan = e.plan(&v2, &opts).unwrap();
    assert_eq!(plan.start, Start::Restart);
    assert_eq!(plan.live.attached["connect4"], 0);
    let report = e.apply(&plan, &v2, ApplyOptions::default()).unwrap();
    assert_eq!(report.reattached, ["connect4"]);
    assert_eq!(query(&cgroup), [v2_prog]);
    connect(TEST, &cgroup, 1);
    assert_eq!(hits(&mut e), [3, 3]);

    // Uninstall: the hook is empty, the recorded programs are gone.
    let gone = e.uninstall().unwrap();
    drop(e);
    assert!(query(&cgroup).is_empty());
    let mut k = RealKernel::open(fs.path(), state.path()).unwrap();
    let mut recorded: Vec<ObjRef> = gone.objects.clone();
    recorded.extend([ObjRef::prog(v1_prog), ObjRef::prog(v2_prog)]);
    let alive = wait_gone(&mut k, &recorded, Duration::from_secs(10));
    assert!(alive.is_empty(), "still in the kernel: {alive:?}");
}

#[test]
fn a_program_replaced_behind_the_engines_back_makes_the_kernel_refuse_the_replace() {
    const TEST: &str =
        "a_program_replaced_behind_the_engines_back_makes_the_kernel_refuse_the_replace";
    if !testenv::privileged(TEST) {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let cgroup = testenv::Cgroup::new();
    let state = testenv::TempDir::new("handover-hooks-cas");
    let opts = options(cgroup.path(), Via::ProgAttach);
    let mut e = Engine::open(fs.path(), state.path(), UNLOCKED).unwrap();
    let v1 = objects(1);
    let plan = e.plan(&v1, &opts).unwrap();
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    let installed = e.state().unwrap().unwrap();
    let v1_prog = installed.attached["connect4"].prog;
    drop(e);

    // Another process loads version 2 and puts its program in the recorded one's
    // place (a replace of its own).
    let bpf = Bpf::kernel();
    let v2 = objects(2);
    let object = handover_loader::Object::parse(&v2[0].bytes).unwrap();
    let loaded = handover_load::load(&bpf, &object, handover_load::LoadOptions::default()).unwrap();
    let stray = &loaded.programs["count_connect4"].fd;
    let stray_id = bpf.prog_info(stray).unwrap().id;
    let v1_fd = bpf
        .fd_by_id(ObjectKind::Program, v1_prog, OpenFlags::READ_ONLY)
        .unwrap();
    bpf.prog_attach(
        AttachTarget::Fd(cgroup.fd()),
        stray,
        HOOK,
        ALLOW_MULTI,
        Some(v1_fd.as_fd()),
    )
    .unwrap();
    drop(v1_fd);
    assert_eq!(query(&cgroup), [stray_id]);

    let mut e = Engine::open(fs.path(), state.path(), UNLOCKED).unwrap();
    let plan = e.plan(&v2, &opts).unwrap();
    assert_eq!(plan.live.attached["connect4"], 0, "{:?}", plan.live);
    match e.apply(&plan, &v2, ApplyOptions::default()) {
        Err(Error::Aborted { reason }) => assert!(reason.contains("connect4"), "{reason}"),
        other => panic!("a replace of a program not attached went through: {other:?}"),
    }
    // Rolled back: the state is the old one, nothing staged is left, and the other
    // process's program is still the one attached.
    assert_eq!(e.state().unwrap().unwrap(), installed);
    assert!(e.journal().unwrap().is_none());
    let mut k = RealKernel::open(fs.path(), state.path()).unwrap();
    assert!(k.pins().unwrap().iter().all(|p| !p.starts_with("stage/")));
    drop(k);
    assert_eq!(query(&cgroup), [stray_id]);
    // Uninstall detaches only what it recorded.
    e.uninstall().unwrap();
    assert_eq!(query(&cgroup), [stray_id]);
    bpf.prog_detach(AttachTarget::Fd(cgroup.fd()), Some(stray.as_fd()), HOOK)
        .unwrap();
    assert!(query(&cgroup).is_empty());
}

#[test]
fn no_connect_goes_uncounted_while_the_hook_is_switched() {
    const TEST: &str = "no_connect_goes_uncounted_while_the_hook_is_switched";
    if testenv::child_role().as_deref() == Some("loop") {
        loop_child();
        return;
    }
    if !testenv::privileged(TEST) {
        return;
    }
    for via in [Via::ProgAttach, Via::Link] {
        let fs = testenv::Bpffs::mount();
        let cgroup = testenv::Cgroup::new();
        let state = testenv::TempDir::new("handover-hooks-window");
        let opts = options(cgroup.path(), via);
        let mut e = Engine::open(fs.path(), state.path(), UNLOCKED).unwrap();
        let v1 = objects(1);
        let plan = e.plan(&v1, &opts).unwrap();
        e.apply(&plan, &v1, ApplyOptions::default()).unwrap();

        let stop = state.path().join("stop");
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(testenv::ROLE_VAR, "loop")
            .env("HANDOVER_CGROUP", cgroup.path())
            .env("HANDOVER_STOP", &stop)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Connects counted by version 1 before the upgrade starts.
        while hits(&mut e)[0] < 100 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let v2 = objects(2);
        let plan = e.plan(&v2, &opts).unwrap();
        let started = std::time::Instant::now();
        let report = e.apply(&plan, &v2, ApplyOptions::default()).unwrap();
        let took = started.elapsed();
        let at_switch = hits(&mut e);
        while hits(&mut e)[1] < at_switch[1] + 100 {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::write(&stop, b"").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let made: u64 = stdout
            .lines()
            .find_map(|l| l.split_once("RESULT connects=").map(|(_, n)| n))
            .unwrap_or_else(|| panic!("no count from the child: {stdout}"))
            .trim()
            .parse()
            .unwrap();
        let [old, new] = hits(&mut e);
        eprintln!(
            "{TEST}: {via:?}: {made} connects, {old} counted by version 1 and {new} by \
             version 2; upgrade {took:?}, switch window {:?} us",
            report.switch_window_us
        );
        assert_eq!(
            old + new,
            made,
            "{via:?}: every connect counted exactly once"
        );
        assert!(old > 0 && new > 0);
        e.uninstall().unwrap();
        assert!(query(&cgroup).is_empty());
    }
}

#[test]
fn a_removed_cgroup_is_reported_by_a_restart_and_leaves_nothing_to_detach() {
    const TEST: &str = "a_removed_cgroup_is_reported_by_a_restart_and_leaves_nothing_to_detach";
    if !testenv::privileged(TEST) {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let parent = testenv::Cgroup::new();
    let cgroup = parent.path().join("daemon");
    std::fs::create_dir(&cgroup).unwrap();
    let state = testenv::TempDir::new("handover-hooks-gone");
    let opts = options(&cgroup, Via::ProgAttach);
    let mut e = Engine::open(fs.path(), state.path(), UNLOCKED).unwrap();
    let v1 = objects(1);
    let plan = e.plan(&v1, &opts).unwrap();
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    let prog = e.state().unwrap().unwrap().attached["connect4"].prog;
    // The cgroup goes (its programs with it); the restart cannot attach again.
    std::fs::remove_dir(&cgroup).unwrap();
    let plan = e.plan(&v1, &opts).unwrap();
    assert_eq!(plan.live.attached["connect4"], 0);
    let err = e
        .apply(&plan, &v1, ApplyOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&cgroup.display().to_string()), "{err}");
    // Uninstall has nothing to detach there, and removes the rest.
    let gone = e.uninstall().unwrap();
    drop(e);
    let mut k = RealKernel::open(fs.path(), state.path()).unwrap();
    let mut all = gone.objects.clone();
    all.push(ObjRef::prog(prog));
    let alive = wait_gone(&mut k, &all, Duration::from_secs(10));
    assert!(alive.is_empty(), "still in the kernel: {alive:?}");
}
