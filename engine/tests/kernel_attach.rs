//! Attachment kinds on the running kernel (root), in the test's own network namespace
//! and bpffs: programs/engine_hooks_v1.c installed at `lo`'s XDP hook (an XDP link)
//! and tc ingress (a tcx link, where the kernel has them: probed, and otherwise the
//! plan refuses the attachment before anything runs), packets sent to 127.0.0.1 inside
//! the namespace, then upgraded to engine_hooks_v2.c: each link switched in place by
//! compare-and-swap, and the packets after the switch counted by the new programs. A
//! link moved to another program behind the engine's back makes the upgrade abort and
//! roll back.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::net::UdpSocket;
use std::path::Path;

use handover_engine::{
    ApplyOptions, AttachAction, AttachPoint, Attachment, Engine, Error, Kernel, LockWait,
    ObjectSource, Options, RealKernel, SwitchMethod, TcDirection,
};

fn objects(version: u32) -> Vec<ObjectSource> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../programs/build/engine_hooks_v{version}.o"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    vec![ObjectSource::new("hooks.o", bytes)]
}

fn options(tcx: bool) -> Options {
    let mut attachments = vec![Attachment {
        name: "xdp".into(),
        program: "pass_xdp".into(),
        point: AttachPoint::Xdp { iface: "lo".into() },
    }];
    if tcx {
        attachments.push(Attachment {
            name: "tc".into(),
            program: "pass_tc".into(),
            point: AttachPoint::Tcx {
                iface: "lo".into(),
                direction: TcDirection::Ingress,
            },
        });
    }
    Options {
        attachments,
        ..Options::default()
    }
}

/// Sends `n` datagrams from 127.0.0.1 to 127.0.0.1 (this thread's namespace).
fn send(n: usize) {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..n {
        tx.send_to(b"handover", rx.local_addr().unwrap()).unwrap();
    }
}

/// The counts of slots 1 and 2 (versions 1 and 2) of a hit map.
fn hits<K: Kernel>(e: &mut Engine<K>, map: &str) -> [u64; 2] {
    let m = e.map::<u32, u64>(map).unwrap();
    [1, 2].map(|slot| m.get(&slot).unwrap().unwrap_or(0))
}

#[test]
fn xdp_and_tcx_links_are_switched_in_place_on_lo() {
    const TEST: &str = "xdp_and_tcx_links_are_switched_in_place_on_lo";
    if !testenv::privileged(TEST) {
        return;
    }
    testenv::enter_new_netns();
    let fs = testenv::Bpffs::mount();
    let state = testenv::TempDir::new("handover-attach-state");
    let tcx = handover_sys::Bpf::kernel().has(handover_sys::Feature::TcxLink);
    let mut e = Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    if !tcx {
        // Refused before anything runs, and said why.
        let err = e.plan(&objects(1), &options(true)).unwrap_err();
        assert!(err.to_string().contains("no tcx links"), "{err}");
        eprintln!("{TEST}: this kernel has no tcx links: the xdp half runs alone");
    }
    let opts = options(tcx);
    let v1 = objects(1);
    let plan = e.plan(&v1, &opts).unwrap();
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    send(10);
    let xdp = hits(&mut e, "xdp_hits");
    assert!(xdp[0] >= 10 && xdp[1] == 0, "{xdp:?}");
    if tcx {
        let tc = hits(&mut e, "tc_hits");
        assert!(tc[0] >= 10 && tc[1] == 0, "{tc:?}");
    }
    let links_before = e.state().unwrap().unwrap().links;

    let v2 = objects(2);
    let plan = e.plan(&v2, &opts).unwrap();
    for a in &plan.attachments {
        assert_eq!(
            a.action,
            AttachAction::Switch(SwitchMethod::LinkUpdate),
            "{plan}"
        );
    }
    e.apply(&plan, &v2, ApplyOptions::default()).unwrap();
    let links_after = e.state().unwrap().unwrap().links;
    for (name, l) in &links_after {
        assert_eq!(
            l.id, links_before[name].id,
            "{name}: the same link, updated"
        );
        assert_ne!(
            l.prog, links_before[name].prog,
            "{name}: runs the new program"
        );
    }
    let xdp_then = hits(&mut e, "xdp_hits");
    send(10);
    let xdp_now = hits(&mut e, "xdp_hits");
    assert_eq!(
        xdp_now[0], xdp_then[0],
        "the old xdp program no longer runs"
    );
    assert!(xdp_now[1] >= xdp_then[1] + 10, "{xdp_now:?}");
    if tcx {
        let tc_then = hits(&mut e, "tc_hits");
        send(10);
        let tc_now = hits(&mut e, "tc_hits");
        assert_eq!(tc_now[0], tc_then[0]);
        assert!(tc_now[1] >= tc_then[1] + 10, "{tc_now:?}");
    }
    e.uninstall().unwrap();
    send(1);
}

#[test]
fn an_xdp_link_moved_behind_the_engines_back_aborts_the_upgrade() {
    const TEST: &str = "an_xdp_link_moved_behind_the_engines_back_aborts_the_upgrade";
    if !testenv::privileged(TEST) {
        return;
    }
    testenv::enter_new_netns();
    let fs = testenv::Bpffs::mount();
    let state = testenv::TempDir::new("handover-attach-cas");
    let opts = options(false);
    let mut e = Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    let v1 = objects(1);
    let plan = e.plan(&v1, &opts).unwrap();
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    let installed = e.state().unwrap().unwrap();
    drop(e);

    // Another process loads version 2 and moves the link to its program.
    let bpf = handover_sys::Bpf::kernel();
    let v2 = objects(2);
    let object = handover_loader::Object::parse(&v2[0].bytes).unwrap();
    let loaded = handover_load::load(&bpf, &object, handover_load::LoadOptions::default()).unwrap();
    let stray = &loaded.programs["pass_xdp"].fd;
    let link = bpf
        .obj_get(
            &fs.path().join("links/xdp"),
            handover_sys::OpenFlags::READ_WRITE,
        )
        .unwrap();
    bpf.link_update_unconditional(&link, stray).unwrap();

    let mut e = Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    let plan = e.plan(&v2, &opts).unwrap();
    match e.apply(&plan, &v2, ApplyOptions::default()) {
        Err(Error::Aborted { reason }) => assert!(reason.contains("xdp"), "{reason}"),
        other => panic!("a compare-and-swap mismatch went through: {other:?}"),
    }
    // Rolled back: the state is the old one, nothing staged is left.
    assert_eq!(e.state().unwrap().unwrap(), installed);
    assert!(e.journal().unwrap().is_none());
    let mut k = RealKernel::open(fs.path(), state.path()).unwrap();
    assert!(k.pins().unwrap().iter().all(|p| !p.starts_with("stage/")));
    drop(k);
    e.uninstall().unwrap();
}
