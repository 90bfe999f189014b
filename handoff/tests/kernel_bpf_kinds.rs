//! bpf map, program and link descriptors travel through a handoff as themselves
//! (same kernel object ids on the receiving side), and each kind is told from the
//! others. Needs root; skips loudly otherwise.

mod rig;
#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::os::fd::AsFd;
use std::thread;

use handover_handoff::{FdKind, HandoffServer, Offer, Outcome, PeerPolicy, take_over};
use handover_sys::{
    AttachTarget, AttachType, Bpf, Insn, LinkCreate, MapCreate, MapType, ProgLoad, ProgramType,
};
use rig::{Recorder, Rig, STEP, open_fds};

#[test]
fn bpf_objects_are_handed_over_and_checked_by_kind() {
    if !testenv::privileged("bpf_objects_are_handed_over_and_checked_by_kind") {
        return;
    }
    let bpf = Bpf::kernel();
    let cgroup = testenv::Cgroup::new();
    let map = bpf
        .map_create(&MapCreate::new(MapType::Array, 4, 8, 1))
        .unwrap();
    // `return 1;`: allow every connect.
    let insns = [Insn::new(0xb7, 0, 0, 0, 1), Insn::new(0x95, 0, 0, 0, 0)];
    let mut spec = ProgLoad::new(ProgramType::CgroupSockAddr, &insns, "GPL");
    spec.name = "allow";
    spec.expected_attach_type = Some(AttachType::CgroupInet4Connect);
    let prog = bpf.prog_load(&spec).unwrap();
    let link = bpf
        .link_create(&LinkCreate::new(
            prog.as_fd(),
            AttachTarget::Fd(cgroup.fd()),
            AttachType::CgroupInet4Connect,
        ))
        .unwrap();

    // Every kind is recognised, and none passes for another.
    let objects = [
        (FdKind::BpfMap, &map),
        (FdKind::BpfProg, &prog),
        (FdKind::BpfLink, &link),
    ];
    for (kind, fd) in objects {
        for (other, _) in objects {
            let result = Offer::new("x").add("o", other, fd).map(|_| ());
            assert_eq!(
                result.is_ok(),
                kind == other,
                "{kind} offered as {other}: {result:?}"
            );
        }
        let err = Offer::new("x")
            .add("o", FdKind::Listener, fd)
            .map(|_| ())
            .unwrap_err();
        assert!(
            err.to_string().contains("is not a socket (anon_inode:bpf"),
            "{err}"
        );
    }

    let rig = Rig::new();
    let before = open_fds();
    let mut offer = rig.offer();
    offer.add("maps/state", FdKind::BpfMap, &map).unwrap();
    offer.add("progs/allow", FdKind::BpfProg, &prog).unwrap();
    offer.add("links/connect4", FdKind::BpfLink, &link).unwrap();
    let server = HandoffServer::bind(&rig.address(), PeerPolicy::same_user()).unwrap();
    let old = thread::spawn(move || {
        let outcome = server
            .serve_one(&offer, &mut Recorder::default(), STEP)
            .unwrap();
        assert!(matches!(outcome, Outcome::HandedOver(_)), "{outcome:?}");
    });
    let mut received = take_over(&rig.address(), &PeerPolicy::same_user(), "new", STEP).unwrap();
    let map_in = received.fds.take("maps/state").unwrap();
    let prog_in = received.fds.take("progs/allow").unwrap();
    let link_in = received.fds.take("links/connect4").unwrap();
    assert_eq!(
        bpf.map_info(&map_in).unwrap().id,
        bpf.map_info(&map).unwrap().id
    );
    assert_eq!(
        bpf.prog_info(&prog_in).unwrap().id,
        bpf.prog_info(&prog).unwrap().id
    );
    assert_eq!(
        bpf.link_info(&link_in).unwrap().id,
        bpf.link_info(&link).unwrap().id
    );
    drop(received.serving().unwrap());
    old.join().unwrap();
    drop((map_in, prog_in, link_in));
    assert_eq!(open_fds(), before, "descriptors leaked");
}
