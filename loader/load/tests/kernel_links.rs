//! Programs attached through links in a private cgroup, observed through real
//! `connect()` calls of a child process in that cgroup and in its own network
//! namespace; `BPF_LINK_UPDATE` swaps programs with compare-and-swap semantics.
//!
//! The connect4 programs are assembled by hand: each rewrites the destination port
//! (`bpf_sock_addr.user_port`) or refuses the connection.
//! Needs root; skips loudly otherwise.

#[path = "../../tests/testenv/mod.rs"]
mod testenv;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use handover_sys::{
    AttachTarget, AttachType, Bpf, Error, Insn, LinkCreate, LinkTarget, LinkType, ProgLoad,
    ProgramType,
};

/// Port the child connects to; nothing listens there.
const ASKED: u16 = 7000;
const PORT_A: u16 = 7001;
const PORT_B: u16 = 7002;
/// Offset of `user_port` in `struct bpf_sock_addr`.
const USER_PORT: i16 = 24;

const TEST: &str = "connect4_link_update_swaps_the_program_seen_by_the_next_connect";

/// `user_port = htons(port); return 1;`
fn redirect_to(port: u16) -> Vec<Insn> {
    vec![
        Insn::new(0xb7, 2, 0, 0, i32::from(port.to_be())), // r2 = htons(port)
        Insn::new(0x63, 1, 2, USER_PORT, 0),               // *(u32 *)(r1 + 24) = r2
        Insn::new(0xb7, 0, 0, 0, 1),                       // r0 = 1
        Insn::new(0x95, 0, 0, 0, 0),                       // exit
    ]
}

/// `return 0;`: the connect fails with EPERM.
fn refuse() -> Vec<Insn> {
    vec![Insn::new(0xb7, 0, 0, 0, 0), Insn::new(0x95, 0, 0, 0, 0)]
}

fn load(bpf: &Bpf, name: &str, insns: &[Insn]) -> OwnedFd {
    let mut spec = ProgLoad::new(ProgramType::CgroupSockAddr, insns, "GPL");
    spec.name = name;
    spec.expected_attach_type = Some(AttachType::CgroupInet4Connect);
    bpf.prog_load(&spec)
        .unwrap_or_else(|e| panic!("load {name}: {e}"))
}

/// The child: joins the cgroup, makes its own network namespace, listens on both
/// ports and connects to `ASKED`; prints where the connection went.
fn connect_child() {
    let cgroup = std::env::var("HANDOVER_CGROUP").expect("cgroup path");
    testenv::join_cgroup(cgroup.as_ref());
    testenv::enter_new_netns();
    let _a = TcpListener::bind((Ipv4Addr::LOCALHOST, PORT_A)).unwrap();
    let _b = TcpListener::bind((Ipv4Addr::LOCALHOST, PORT_B)).unwrap();
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, ASKED));
    match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
        Ok(s) => println!("RESULT port={}", s.peer_addr().unwrap().port()),
        Err(e) => println!("RESULT errno={}", e.raw_os_error().unwrap_or(-1)),
    }
}

fn connect_in_cgroup(cgroup: &testenv::Cgroup) -> String {
    let out = testenv::run_child(
        TEST,
        "connect",
        &[("HANDOVER_CGROUP", cgroup.path().display().to_string())],
    );
    out.lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no result from child: {out}"))
        .to_owned()
}

#[test]
fn connect4_link_update_swaps_the_program_seen_by_the_next_connect() {
    if testenv::child_role().as_deref() == Some("connect") {
        connect_child();
        return;
    }
    if !testenv::privileged(TEST) {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let cgroup = testenv::Cgroup::new();
    let bpf = Bpf::kernel();

    // Without a program the connection is refused: nothing listens on ASKED.
    assert_eq!(
        connect_in_cgroup(&cgroup),
        format!("errno={}", libc::ECONNREFUSED)
    );

    let to_a = load(&bpf, "to_a", &redirect_to(PORT_A));
    let to_b = load(&bpf, "to_b", &redirect_to(PORT_B));
    let deny = load(&bpf, "deny", &refuse());
    let id = |p: &OwnedFd| bpf.prog_info(p).unwrap().id;

    let link = bpf
        .link_create(&LinkCreate::new(
            to_a.as_fd(),
            AttachTarget::Fd(cgroup.fd()),
            AttachType::CgroupInet4Connect,
        ))
        .expect("link connect4 program to the test cgroup");
    let info = bpf.link_info(&link).unwrap();
    assert_eq!(info.link_type, Some(LinkType::Cgroup));
    assert_eq!(info.prog_id, id(&to_a));
    assert_eq!(
        info.target,
        LinkTarget::Cgroup {
            cgroup_id: cgroup.id(),
            attach_type: Some(AttachType::CgroupInet4Connect)
        }
    );
    let by_id = bpf
        .fd_by_id(handover_sys::ObjectKind::Link, info.id, Default::default())
        .unwrap();
    assert_eq!(bpf.link_info(&by_id).unwrap().prog_id, id(&to_a));
    drop(by_id);
    // The link outlives this descriptor in the test's bpffs.
    bpf.obj_pin(&link, &fs.path().join("connect4")).unwrap();
    assert_eq!(connect_in_cgroup(&cgroup), format!("port={PORT_A}"));

    bpf.link_update(&link, &to_b, &to_a)
        .expect("swap to_a for to_b");
    assert_eq!(bpf.link_info(&link).unwrap().prog_id, id(&to_b));
    assert_eq!(connect_in_cgroup(&cgroup), format!("port={PORT_B}"));

    // The link runs to_b, not to_a: the swap is refused and nothing changes.
    let err = bpf.link_update(&link, &deny, &to_a).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EPERM), "{err}");
    assert!(matches!(
        err,
        Error::Syscall {
            command: "BPF_LINK_UPDATE",
            ..
        }
    ));
    assert_eq!(bpf.link_info(&link).unwrap().prog_id, id(&to_b));
    assert_eq!(connect_in_cgroup(&cgroup), format!("port={PORT_B}"));

    bpf.link_update(&link, &deny, &to_b).unwrap();
    assert_eq!(connect_in_cgroup(&cgroup), format!("errno={}", libc::EPERM));

    bpf.link_update_unconditional(&link, &to_a).unwrap();
    assert_eq!(connect_in_cgroup(&cgroup), format!("port={PORT_A}"));

    // Detaching the link ends the redirection even while its pin keeps it alive.
    bpf.link_detach(&link).unwrap();
    assert_eq!(
        connect_in_cgroup(&cgroup),
        format!("errno={}", libc::ECONNREFUSED)
    );
}

#[test]
fn legacy_cgroup_attach_replaces_with_bpf_f_replace() {
    const NAME: &str = "legacy_cgroup_attach_replaces_with_bpf_f_replace";
    if testenv::child_role().as_deref() == Some("connect") {
        connect_child();
        return;
    }
    if !testenv::privileged(NAME) {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let cgroup = testenv::Cgroup::new();
    let bpf = Bpf::kernel();
    let to_a = load(&bpf, "to_a", &redirect_to(PORT_A));
    let to_b = load(&bpf, "to_b", &redirect_to(PORT_B));
    let target = AttachTarget::Fd(cgroup.fd());
    let hook = AttachType::CgroupInet4Connect;
    bpf.prog_attach(target, &to_a, hook, handover_sys::ALLOW_MULTI, None)
        .unwrap();
    let child = |cg: &testenv::Cgroup| {
        let out = testenv::run_child(
            NAME,
            "connect",
            &[("HANDOVER_CGROUP", cg.path().display().to_string())],
        );
        out.lines()
            .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
            .unwrap()
            .to_owned()
    };
    assert_eq!(child(&cgroup), format!("port={PORT_A}"));
    // Replacing a program that is not attached fails and changes nothing.
    let deny = load(&bpf, "deny", &refuse());
    let err = bpf
        .prog_attach(
            target,
            &deny,
            hook,
            handover_sys::ALLOW_MULTI,
            Some(to_b.as_fd()),
        )
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
    assert_eq!(child(&cgroup), format!("port={PORT_A}"));
    bpf.prog_attach(
        target,
        &to_b,
        hook,
        handover_sys::ALLOW_MULTI,
        Some(to_a.as_fd()),
    )
    .unwrap();
    assert_eq!(child(&cgroup), format!("port={PORT_B}"));
    bpf.prog_detach(target, Some(to_b.as_fd()), hook).unwrap();
    assert_eq!(child(&cgroup), format!("errno={}", libc::ECONNREFUSED));
}

#[test]
fn sk_msg_and_sk_skb_attach_to_a_sockmap_and_detach() {
    if !testenv::privileged("sk_msg_and_sk_skb_attach_to_a_sockmap_and_detach") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    let sockmap = bpf
        .map_create(&handover_sys::MapCreate::new(
            handover_sys::MapType::Sockmap,
            4,
            4,
            4,
        ))
        .unwrap();
    let pass = [Insn::new(0xb7, 0, 0, 0, 1), Insn::new(0x95, 0, 0, 0, 0)];
    for (ty, hook) in [
        (ProgramType::SkMsg, AttachType::SkMsgVerdict),
        (ProgramType::SkSkb, AttachType::SkSkbStreamVerdict),
    ] {
        let mut spec = ProgLoad::new(ty, &pass, "GPL");
        spec.expected_attach_type = Some(hook);
        let prog = bpf.prog_load(&spec).unwrap_or_else(|e| panic!("{ty}: {e}"));
        let other = bpf.prog_load(&spec).unwrap();
        let target = AttachTarget::Fd(sockmap.as_fd());
        bpf.prog_attach(target, &prog, hook, 0, None).unwrap();
        // A second attach to the same sockmap hook replaces the first program.
        bpf.prog_attach(target, &other, hook, 0, None).unwrap();
        let err = bpf
            .prog_detach(target, Some(prog.as_fd()), hook)
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT), "{ty}: {err}");
        bpf.prog_detach(target, Some(other.as_fd()), hook).unwrap();
        let err = bpf
            .prog_detach(target, Some(other.as_fd()), hook)
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT), "{ty}: {err}");
    }
}

#[test]
fn xdp_and_tcx_links_attach_to_loopback_of_a_private_netns() {
    if !testenv::privileged("xdp_and_tcx_links_attach_to_loopback_of_a_private_netns") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    std::thread::spawn(move || {
        testenv::enter_new_netns();
        let lo = 1; // the first device of a new namespace
        let ret0 = [Insn::new(0xb7, 0, 0, 0, 2), Insn::new(0x95, 0, 0, 0, 0)];
        let xdp = bpf
            .prog_load(&ProgLoad::new(ProgramType::Xdp, &ret0, "GPL"))
            .unwrap();
        let link = bpf
            .link_create(&LinkCreate::new(
                xdp.as_fd(),
                AttachTarget::Ifindex(lo),
                AttachType::Xdp,
            ))
            .unwrap();
        let info = bpf.link_info(&link).unwrap();
        assert_eq!(info.target, LinkTarget::Xdp { ifindex: lo });
        // One xdp link per device: a second is refused.
        let err = bpf
            .link_create(&LinkCreate::new(
                xdp.as_fd(),
                AttachTarget::Ifindex(lo),
                AttachType::Xdp,
            ))
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::EBUSY), "{err}");
        drop(link);

        if !bpf.has(handover_sys::Feature::TcxLink) {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"!!!!!!!! this kernel has no tcx links: tcx part NOT TESTED !!!!!!!!\n",
            );
            return;
        }
        let tc = bpf
            .prog_load(&ProgLoad::new(ProgramType::SchedCls, &ret0, "GPL"))
            .unwrap();
        let link = bpf
            .link_create(&LinkCreate::new(
                tc.as_fd(),
                AttachTarget::Ifindex(lo),
                AttachType::TcxIngress,
            ))
            .unwrap();
        assert_eq!(
            bpf.link_info(&link).unwrap().target,
            LinkTarget::Tcx {
                ifindex: lo,
                attach_type: Some(AttachType::TcxIngress)
            }
        );
    })
    .join()
    .unwrap();
}

#[test]
fn feature_probes_answer_for_this_kernel() {
    if !testenv::privileged("feature_probes_answer_for_this_kernel") {
        return;
    }
    use handover_sys::{Feature, Map, MapCreate, MapType, UpdateFlags, page_size};
    let bpf = Bpf::kernel();
    let has = |f: Feature| {
        let present = bpf.has(f);
        assert_eq!(bpf.has(f), present, "{f:?} (cached)");
        eprintln!("{f:?}: {}", if present { "present" } else { "ABSENT" });
        present
    };
    // Each answer agrees with what the kernel does when the feature is really used.
    let ringbuf = bpf
        .map_create(&MapCreate::new(MapType::Ringbuf, 0, 0, 4 * page_size()))
        .is_ok();
    assert_eq!(has(Feature::Ringbuf), ringbuf, "a ring buffer of 4 pages");

    let map = Map::create(&bpf, &MapCreate::new(MapType::Hash, 4, 4, 8)).unwrap();
    map.update(&1u32.to_ne_bytes(), &2u32.to_ne_bytes(), UpdateFlags::ANY)
        .unwrap();
    assert_eq!(map.dump().unwrap().len(), 1);
    let batched = map.batch_support() == handover_sys::BatchSupport::Batch;
    assert_eq!(has(Feature::BatchOps), batched, "a dump of a hash map");

    let tcx = has(Feature::TcxLink);
    let bpf_in_netns = bpf.clone();
    std::thread::spawn(move || {
        let bpf = bpf_in_netns;
        testenv::enter_new_netns();
        let ret0 = [Insn::new(0xb7, 0, 0, 0, 0), Insn::new(0x95, 0, 0, 0, 0)];
        let tc = bpf
            .prog_load(&ProgLoad::new(ProgramType::SchedCls, &ret0, "GPL"))
            .unwrap();
        let link = bpf.link_create(&LinkCreate::new(
            tc.as_fd(),
            AttachTarget::Ifindex(1),
            AttachType::TcxIngress,
        ));
        assert_eq!(link.is_ok(), tcx, "a tcx link on lo: {link:?}");
    })
    .join()
    .unwrap();

    // Pins relative to a directory work with BPF_F_PATH_FD or without it.
    has(Feature::PathFd);
    // Fetch-add (clang -mcpu=v3 atomics), which the demo dataplane needs.
    has(Feature::AtomicFetch);
}

#[test]
fn the_verifier_log_explains_a_rejected_program() {
    if !testenv::privileged("the_verifier_log_explains_a_rejected_program") {
        return;
    }
    let bpf = Bpf::kernel();
    // exit without setting r0
    let insns = [Insn::new(0x95, 0, 0, 0, 0)];
    let mut spec = ProgLoad::new(ProgramType::Xdp, &insns, "GPL");
    spec.name = "no_r0";
    let err = bpf.prog_load(&spec).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EACCES), "{err}");
    let log = err.log().expect("a verifier log");
    assert!(log.contains("R0 !read_ok"), "{log}");
    assert!(
        err.to_string()
            .starts_with("BPF_PROG_LOAD on xdp program \"no_r0\" failed"),
        "{err}"
    );
}

#[test]
fn programs_load_with_btf_func_and_line_info() {
    if !testenv::privileged("programs_load_with_btf_func_and_line_info") {
        return;
    }
    let bpf = Bpf::kernel();
    let mut b = testenv::BtfBuilder::new();
    let int = b.int("int", 4);
    let proto = b.func_proto(int, &[]);
    let func = b.func("pass", proto);
    let file = b.string("pass.c");
    let line = b.string("return 2;");
    let btf = bpf
        .btf_load(&b.build(), handover_sys::LogLevel::OnFailure)
        .unwrap();
    let btf_id = bpf.btf_info(&btf).unwrap().id;
    let insns = [Insn::new(0xb7, 0, 0, 0, 2), Insn::new(0x95, 0, 0, 0, 0)];
    // struct bpf_func_info { insn_off, type_id }
    let func_info: Vec<u8> = [0u32, func].iter().flat_map(|w| w.to_ne_bytes()).collect();
    // struct bpf_line_info { insn_off, file_name_off, line_off, line_col (line << 10 | col) }
    let line_info: Vec<u8> = [0u32, file, line, (3 << 10) | 5]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .collect();
    let mut spec = ProgLoad::new(ProgramType::Xdp, &insns, "Dual BSD/GPL");
    spec.name = "pass";
    spec.prog_btf_fd = Some(btf.as_fd());
    spec.func_info = &func_info;
    spec.func_info_rec_size = 8;
    spec.line_info = &line_info;
    spec.line_info_rec_size = 16;
    let prog = bpf.prog_load(&spec).unwrap();
    let info = bpf.prog_info(&prog).unwrap();
    assert_eq!(info.btf_id, btf_id);
    assert_eq!(info.name, "pass");
    // Objects reopen by id.
    use handover_sys::{ObjectKind, OpenFlags};
    let by_id = bpf
        .fd_by_id(ObjectKind::Program, info.id, OpenFlags::READ_WRITE)
        .unwrap();
    assert_eq!(bpf.prog_info(&by_id).unwrap().id, info.id);
    let by_id = bpf
        .fd_by_id(ObjectKind::Btf, btf_id, OpenFlags::READ_WRITE)
        .unwrap();
    assert_eq!(bpf.btf_info(&by_id).unwrap().id, btf_id);
    let err = bpf
        .fd_by_id(ObjectKind::Program, u32::MAX, OpenFlags::READ_WRITE)
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENOENT));
    assert!(
        err.to_string()
            .contains("BPF_PROG_GET_FD_BY_ID on program id 4294967295"),
        "{err}"
    );
    assert!(info.gpl_compatible);
    assert_eq!(info.prog_type, Some(ProgramType::Xdp));
    // A func_info naming a type that is not a function is refused, with a log.
    let bad: Vec<u8> = [0u32, int].iter().flat_map(|w| w.to_ne_bytes()).collect();
    spec.func_info = &bad;
    let err = bpf.prog_load(&spec).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL), "{err}");
    assert!(!err.log().unwrap_or_default().is_empty(), "{err}");
}
