//! A program held by a socket map, through engine upgrades on the running kernel
//! (root): programs/engine_sockmsg_v1.c's `count` (sk_msg) attached to its `socks`
//! sockhash, TCP connections on 127.0.0.1 in the test's own network namespace added
//! to the sockhash, then upgraded to version 2 (same sockhash: the map's program is
//! exchanged) and to version 3 (a larger sockhash: recreated, its sockets carried,
//! the program attached to the new map). Each version counts messages at its own
//! index of `sent`, which shows which program runs for which socket: a socket keeps
//! the programs of the map it was added to while it stays there (the kernel copies
//! them at the add), so only sockets added after an upgrade run the new program.
//! Once with the program held by the map (`BPF_PROG_ATTACH`), once through a socket
//! map link (6.10+).
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

mod common;
#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::{sockmsg_object as object, sockmsg_options as options};
use handover_engine::{
    AttachAction, Carry, Engine, Hold, Kernel, LockWait, ObjRef, RealKernel, SwitchMethod, Via,
    wait_gone,
};
use handover_sys::{AttachTarget, AttachType, Bpf, ObjectKind, OpenFlags, UpdateFlags};

fn apply(e: &mut Engine<RealKernel>, version: u32, via: Via) -> handover_engine::Report {
    let objs = object(version);
    let plan = e.plan(&objs, &options(via)).unwrap();
    e.apply(&plan, &objs, handover_engine::ApplyOptions::default())
        .unwrap_or_else(|err| panic!("apply version {version}: {err}\n{plan}"))
}

/// The messages counted by versions 1, 2 and 3.
fn sent(e: &mut Engine<RealKernel>) -> [u64; 3] {
    let m = e.map::<u32, u64>("sent").unwrap();
    [0, 1, 2].map(|i| m.get(&i).unwrap().unwrap_or(0))
}

/// The programs the map with id `map` holds at sk_msg_verdict; `None` where the
/// kernel answers no query on socket maps (before 5.19).
fn map_programs(map: u32) -> Option<Vec<u32>> {
    let bpf = Bpf::kernel();
    let fd = bpf
        .fd_by_id(ObjectKind::Map, map, OpenFlags::READ_WRITE)
        .unwrap();
    match bpf.prog_query(AttachTarget::Fd(fd.as_fd()), AttachType::SkMsgVerdict, 0) {
        Ok(q) => Some(q.prog_ids),
        Err(e) if e.errno() == Some(libc::EINVAL) => None,
        Err(e) => panic!("query the sockhash's programs: {e}"),
    }
}

use std::os::fd::AsFd;

/// A connection whose client end is added to `socks` at `key`.
struct Conn {
    client: TcpStream,
    server: TcpStream,
}

impl Conn {
    fn new(e: &mut Engine<RealKernel>, listener: &TcpListener, key: u32) -> Self {
        let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let server = listener.accept().expect("accept").0;
        let socks = e.map_access("socks").unwrap();
        let fd = u64::try_from(client.as_raw_fd()).unwrap();
        socks
            .update(&key.to_ne_bytes(), &fd.to_ne_bytes(), UpdateFlags::ANY)
            .expect("add the client's socket to the sockhash");
        Self { client, server }
    }

    /// One message from the client, read by the server.
    fn send(&mut self) {
        self.client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        self.server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }
}

fn prog_id(e: &mut Engine<RealKernel>) -> u32 {
    let s = e.state().unwrap().unwrap();
    let recorded = match s.links.get("count_msgs") {
        Some(l) => l.prog,
        None => s.attached["count_msgs"].prog,
    };
    assert_eq!(
        recorded, s.programs["count"].id,
        "the state records the program"
    );
    recorded
}

#[test]
fn a_socket_map_program_held_by_the_map_is_switched_and_follows_a_recreated_map() {
    scenario(
        "a_socket_map_program_held_by_the_map_is_switched_and_follows_a_recreated_map",
        Via::ProgAttach,
    );
}

#[test]
fn a_socket_map_link_is_switched_and_follows_a_recreated_map() {
    scenario(
        "a_socket_map_link_is_switched_and_follows_a_recreated_map",
        Via::Link,
    );
}

fn scenario(test: &str, via: Via) {
    if !testenv::privileged(test) {
        return;
    }
    if via == Via::Link && !Bpf::kernel().sockmap_link_works(AttachType::SkMsgVerdict) {
        testenv::kernel_lacks(test, "socket map links (6.10)");
        return;
    }
    let hold = match via {
        Via::Link => Hold::Link,
        _ => Hold::ProgAttach,
    };
    testenv::enter_new_netns();
    let fs = testenv::Bpffs::mount();
    let state = testenv::TempDir::new("handover-sockmsg-state");
    let mut e = Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen on 127.0.0.1");

    let r = apply(&mut e, 1, via);
    assert!(r.reattached.is_empty());
    let s = e.state().unwrap().unwrap();
    let socks_id = s.maps["socks"].id;
    let v1 = prog_id(&mut e);
    if hold == Hold::ProgAttach {
        assert_eq!(s.attached["count_msgs"].cgroup_id, u64::from(socks_id));
    }
    let query = map_programs(socks_id);
    if let Some(ids) = &query {
        assert_eq!(ids, &[v1], "version 1's program is the sockhash's");
    } else {
        println!("{test}: this kernel answers no query on socket maps (before 5.19)");
    }
    let mut a = Conn::new(&mut e, &listener, 1);
    a.send();
    assert_eq!(sent(&mut e), [1, 0, 0]);

    // Version 2: the same sockhash, its program exchanged.
    let plan = e.plan(&object(2), &options(via)).unwrap();
    let att = &plan.attachments[0];
    assert_eq!(att.hold, hold, "{plan}");
    let method = match hold {
        Hold::Link => SwitchMethod::LinkUpdate,
        Hold::ProgAttach => SwitchMethod::MapProgAttach,
    };
    assert_eq!(att.action, AttachAction::Switch(method), "{plan}");
    apply(&mut e, 2, via);
    let v2 = prog_id(&mut e);
    assert_ne!(v2, v1);
    assert_eq!(e.state().unwrap().unwrap().maps["socks"].id, socks_id);
    if query.is_some() {
        assert_eq!(map_programs(socks_id).unwrap(), [v2]);
    }
    let mut b = Conn::new(&mut e, &listener, 2);
    b.send();
    a.send();
    assert_eq!(
        sent(&mut e),
        [2, 1, 0],
        "the socket added before the switch keeps version 1's program, the one added \
         after runs version 2's"
    );

    // A restart finds the program attached (or, where the kernel cannot say, attaches
    // it again, which changes nothing).
    let r = apply(&mut e, 2, via);
    assert!(r.reattached.is_empty(), "{:?}", r.reattached);
    b.send();
    assert_eq!(sent(&mut e), [2, 2, 0]);

    // Version 3: a larger sockhash, recreated; its sockets carried by the sockmap
    // iterator, which this kernel may lack.
    if !e.kernel().facts().sockmap_iter {
        testenv::kernel_lacks(
            test,
            "the sockmap iterator (iter/sockmap): version 3 not run",
        );
    } else {
        let plan = e.plan(&object(3), &options(via)).unwrap();
        assert_eq!(plan.map("socks").unwrap().carry, Carry::Sockets, "{plan}");
        let actions: Vec<AttachAction> = plan.attachments.iter().map(|a| a.action).collect();
        // The old map's program goes with it (a link of the same name is replaced
        // at commit); the new map gets the new one.
        let expected: &[AttachAction] = match hold {
            Hold::Link => &[AttachAction::Attach],
            Hold::ProgAttach => &[AttachAction::Detach, AttachAction::Attach],
        };
        assert_eq!(actions, expected, "{plan}");
        let r = apply(&mut e, 3, via);
        assert_eq!(r.maps["socks"].copied, 2, "{:?}", r.maps["socks"]);
        let s = e.state().unwrap().unwrap();
        let new_socks = s.maps["socks"].id;
        assert_ne!(new_socks, socks_id, "the sockhash was recreated");
        let v3 = prog_id(&mut e);
        if hold == Hold::ProgAttach {
            assert_eq!(s.attached["count_msgs"].cgroup_id, u64::from(new_socks));
        }
        if query.is_some() {
            assert_eq!(map_programs(new_socks).unwrap(), [v3]);
        }
        let mut c = Conn::new(&mut e, &listener, 3);
        c.send();
        a.send();
        b.send();
        assert_eq!(
            sent(&mut e),
            [3, 3, 1],
            "carried sockets keep their programs; a socket added to the new map runs \
             version 3's"
        );
        drop(c);
    }

    // Uninstall: with the sockets closed (a socket holds the programs it was added
    // with), nothing recorded is left.
    drop((a, b));
    let gone = e.uninstall().unwrap();
    let alive = wait_gone(e.kernel(), &gone.objects, Duration::from_secs(20));
    assert!(alive.is_empty(), "still in the kernel: {alive:?}");
    assert!(
        !gone.objects.contains(&ObjRef::map(0)),
        "ids are real: {:?}",
        gone.objects
    );
    let left: Vec<_> = std::fs::read_dir(fs.path())
        .unwrap()
        .map(|d| d.unwrap().file_name())
        .filter(|n| n != "maps.debug" && n != "progs.debug")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
