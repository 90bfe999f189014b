//! `BPF_PROG_QUERY` on the running kernel (root), at a cgroup hook of the test's own
//! cgroup: programs attached with `BPF_F_ALLOW_MULTI` are listed in order with their
//! flags, a `BPF_F_REPLACE` attach swaps exactly the expected program and is refused
//! (changing nothing) when that program is not attached, a detach empties the list,
//! and an effective query of a child cgroup lists what it inherits. The hook's
//! revision, where the kernel keeps one, changes with every attach and detach.

#[path = "../../tests/testenv/mod.rs"]
mod testenv;

use std::os::fd::{AsFd, OwnedFd};

use handover_sys::{
    ALLOW_MULTI, AttachTarget, AttachType, Bpf, Insn, ObjectKind, ProgLoad, ProgramType,
    QUERY_EFFECTIVE,
};

/// A cgroup_skb egress program that returns `verdict`, pinned in `fs` as `name`.
fn program(bpf: &Bpf, fs: &testenv::Bpffs, name: &str, verdict: i32) -> (OwnedFd, u32) {
    let insns = [
        Insn::new(0xb7, 0, 0, 0, verdict), // r0 = verdict
        Insn::new(0x95, 0, 0, 0, 0),       // exit
    ];
    let mut load = ProgLoad::new(ProgramType::CgroupSkb, &insns, "GPL");
    load.expected_attach_type = Some(AttachType::CgroupInetEgress);
    load.name = name;
    let fd = bpf.prog_load(&load).unwrap();
    bpf.obj_pin(&fd, &fs.path().join(name)).unwrap();
    let id = bpf.prog_info(&fd).unwrap().id;
    (fd, id)
}

#[test]
fn prog_query_lists_what_prog_attach_and_replace_leave_at_a_cgroup_hook() {
    const TEST: &str = "prog_query_lists_what_prog_attach_and_replace_leave_at_a_cgroup_hook";
    if !testenv::privileged(TEST) {
        return;
    }
    let bpf = Bpf::kernel();
    let fs = testenv::Bpffs::mount();
    let cg = testenv::Cgroup::new();
    let hook = AttachType::CgroupInetEgress;
    let at = AttachTarget::Fd(cg.fd());
    let (a, a_id) = program(&bpf, &fs, "query_a", 1);
    let (b, b_id) = program(&bpf, &fs, "query_b", 1);
    let (c, c_id) = program(&bpf, &fs, "query_c", 1);

    let empty = bpf.prog_query(at, hook, 0).unwrap();
    assert!(empty.prog_ids.is_empty(), "{empty:?}");

    bpf.prog_attach(at, &a, hook, ALLOW_MULTI, None).unwrap();
    let one = bpf.prog_query(at, hook, 0).unwrap();
    bpf.prog_attach(at, &b, hook, ALLOW_MULTI, None).unwrap();
    let two = bpf.prog_query(at, hook, 0).unwrap();
    assert_eq!(one.prog_ids, [a_id]);
    assert_eq!(two.prog_ids, [a_id, b_id], "in the order they run");
    assert_eq!(two.attach_flags, ALLOW_MULTI, "{two:?}");
    if two.prog_attach_flags.is_empty() {
        eprintln!("{TEST}: this kernel reports no per-program attach flags (before 6.0)");
    } else {
        assert_eq!(two.prog_attach_flags, [ALLOW_MULTI, ALLOW_MULTI], "{two:?}");
    }
    match (empty.revision, one.revision, two.revision) {
        (Some(r0), Some(r1), Some(r2)) => assert!(r0 < r1 && r1 < r2, "{r0} {r1} {r2}"),
        (None, None, None) => eprintln!("{TEST}: this kernel keeps no revision of cgroup hooks"),
        other => panic!("a revision now and then: {other:?}"),
    }

    // Replace b by c: the expected program is attached, so c takes its place.
    bpf.prog_attach(at, &c, hook, ALLOW_MULTI, Some(b.as_fd()))
        .unwrap();
    let swapped = bpf.prog_query(at, hook, 0).unwrap();
    assert_eq!(swapped.prog_ids, [a_id, c_id], "c in b's place");
    if let (Some(r2), Some(r3)) = (two.revision, swapped.revision) {
        assert!(r3 > r2, "{r2} {r3}");
    }
    // Replace b again, by d: b is not attached any more, so the kernel refuses.
    let (d, _) = program(&bpf, &fs, "query_d", 1);
    let refused = bpf
        .prog_attach(at, &d, hook, ALLOW_MULTI, Some(b.as_fd()))
        .unwrap_err();
    assert_eq!(refused.errno(), Some(libc::ENOENT), "{refused}");
    // A program attached already is refused a second place (EINVAL, not EEXIST).
    let twice = bpf
        .prog_attach(at, &a, hook, ALLOW_MULTI, None)
        .unwrap_err();
    assert_eq!(twice.errno(), Some(libc::EINVAL), "{twice}");
    assert_eq!(
        bpf.prog_query(at, hook, 0).unwrap(),
        swapped,
        "nothing changed"
    );

    // A child cgroup has nothing attached to itself but runs what it inherits.
    let child_path = cg.path().join("child");
    std::fs::create_dir(&child_path).unwrap();
    let child = std::fs::File::open(&child_path).unwrap();
    let child_at = AttachTarget::Fd(child.as_fd());
    assert!(
        bpf.prog_query(child_at, hook, 0)
            .unwrap()
            .prog_ids
            .is_empty()
    );
    let effective = bpf.prog_query(child_at, hook, QUERY_EFFECTIVE).unwrap();
    assert_eq!(effective.prog_ids, [a_id, c_id]);
    assert!(effective.prog_attach_flags.is_empty());
    drop(child);
    std::fs::remove_dir(&child_path).unwrap();

    bpf.prog_detach(at, Some(a.as_fd()), hook).unwrap();
    bpf.prog_detach(at, Some(c.as_fd()), hook).unwrap();
    let none = bpf.prog_query(at, hook, 0).unwrap();
    assert!(none.prog_ids.is_empty(), "{none:?}");
    let gone = bpf.prog_detach(at, Some(c.as_fd()), hook).unwrap_err();
    assert_eq!(gone.errno(), Some(libc::ENOENT), "{gone}");
    // The programs are still pinned: the detach let go of the hook's reference only.
    for id in [a_id, b_id, c_id] {
        bpf.fd_by_id(ObjectKind::Program, id, handover_sys::OpenFlags::READ_ONLY)
            .unwrap();
    }
}

#[test]
fn the_cgroup_link_probe_answers_for_a_cgroup_hook_and_refuses_another() {
    const TEST: &str = "the_cgroup_link_probe_answers_for_a_cgroup_hook_and_refuses_another";
    if !testenv::privileged(TEST) {
        return;
    }
    let bpf = Bpf::kernel();
    let cg = testenv::Cgroup::new();
    // Cgroup links came with 5.7, BPF_PROG_QUERY long before: the probe is checked
    // against what the link leaves behind, not against a version.
    let linked = bpf.cgroup_link_works(cg.fd(), AttachType::CgroupInet4Connect);
    if !linked {
        testenv::kernel_lacks(
            TEST,
            "cgroup links (BPF_LINK_CREATE at cgroup_inet4_connect)",
        );
        return;
    }
    // The probe's link is gone with its descriptor: nothing stays attached.
    let left = bpf
        .prog_query(AttachTarget::Fd(cg.fd()), AttachType::CgroupInet4Connect, 0)
        .unwrap();
    assert!(left.prog_ids.is_empty(), "{left:?}");
    assert!(!bpf.cgroup_link_works(cg.fd(), AttachType::Xdp));
}
