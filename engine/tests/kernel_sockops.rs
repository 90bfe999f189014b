//! The sockets of a sockhash carried through an engine upgrade on the running kernel
//! (root): programs/engine_sockets_v1.c installed in a private bpffs, TCP connections
//! on 127.0.0.1 in the test's own network namespace inserted into its pinned `socks`
//! sockhash, then upgraded to programs/engine_sockets_v2.c, whose sockhash doubles its
//! capacity and is therefore recreated: every socket must be in the new map (a
//! lookup of a socket map answers the socket's cookie, compared with `SO_COOKIE` of
//! each socket), and the old map must be gone. Upgraded to
//! programs/engine_sockets_v3.c instead, whose key widens from 32 to 64 bits, every
//! socket must be under its converted key.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use handover_engine::{
    ApplyOptions, Carry, Engine, Kernel, LockWait, ObjRef, ObjectSource, Options, wait_gone,
};
use handover_sys::UpdateFlags;

fn object(version: u32) -> Vec<ObjectSource> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../programs/build/engine_sockets_v{version}.o"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    vec![ObjectSource::new("sockets.o", bytes)]
}

/// The socket's cookie (`SO_COOKIE`), the value a socket map answers for it.
#[allow(unsafe_code, reason = "getsockopt has no safe wrapper in std")]
fn so_cookie(s: &TcpStream) -> u64 {
    let mut cookie = 0u64;
    let mut len = libc::socklen_t::try_from(size_of::<u64>()).unwrap();
    // SAFETY: the fd is open for the stream's lifetime; the buffer and its length
    // are a live u64 and its size.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    assert_eq!(r, 0, "SO_COOKIE: {}", std::io::Error::last_os_error());
    cookie
}

#[test]
fn the_sockets_of_a_recreated_sockhash_are_in_the_new_map() {
    upgrade_to(2, "the_sockets_of_a_recreated_sockhash_are_in_the_new_map");
}

#[test]
fn the_sockets_are_carried_under_a_widened_key() {
    upgrade_to(3, "the_sockets_are_carried_under_a_widened_key");
}

/// Installs version 1, fills its sockhash, upgrades to `version`; `test` names the
/// test.
fn upgrade_to(version: u32, test: &str) {
    if !testenv::privileged(test) {
        return;
    }
    testenv::enter_new_netns();
    let fs = testenv::Bpffs::mount();
    let state = testenv::TempDir::new("handover-sockops-state");
    let opts = Options::default();
    let mut e = Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    if !e.kernel().facts().sockmap_iter {
        testenv::kernel_lacks(test, "the sockmap iterator (iter/sockmap)");
        return;
    }
    let v1 = object(1);
    let plan = e.plan(&v1, &opts).unwrap();
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();

    // Established connections; the client ends go into the sockhash, keyed 0, 10, 20...
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen on 127.0.0.1");
    let addr = listener.local_addr().unwrap();
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..8 {
        clients.push(TcpStream::connect(addr).expect("connect to 127.0.0.1"));
        servers.push(listener.accept().expect("accept").0);
    }
    let socks = e.map_access("socks").unwrap();
    let old_id = e.state().unwrap().unwrap().maps["socks"].id;
    let key = |i: usize| (u32::try_from(i).unwrap() * 10).to_ne_bytes();
    for (i, c) in clients.iter().enumerate() {
        let fd = u64::try_from(c.as_raw_fd()).unwrap();
        socks
            .update(&key(i), &fd.to_ne_bytes(), UpdateFlags::ANY)
            .expect("insert a socket into the sockhash");
    }
    drop(socks);

    let v2 = object(version);
    let plan = e.plan(&v2, &opts).unwrap();
    let m = plan.map("socks").unwrap();
    assert_eq!(m.carry, Carry::Sockets, "{plan}");
    assert_eq!(m.key_plan.is_some(), version == 3, "{plan}");
    assert!(plan.lost_maps().is_empty(), "{plan}");
    let report = e.apply(&plan, &v2, ApplyOptions::default()).unwrap();
    let counts = &report.maps["socks"];
    assert_eq!(counts.copied, 8, "{counts:?}");
    assert_eq!((counts.delta, counts.deleted), (0, 0), "{counts:?}");

    let new_id = e.state().unwrap().unwrap().maps["socks"].id;
    assert_ne!(new_id, old_id, "the sockhash was recreated");
    let socks = e.map_access("socks").unwrap();
    let g = socks.geometry();
    assert_eq!(g.max_entries, 64 * version, "the new capacity");
    let new_key = |i: usize| match version {
        3 => (u64::try_from(i).unwrap() * 10).to_ne_bytes().to_vec(),
        _ => key(i).to_vec(),
    };
    assert_eq!(g.key_size, new_key(0).len());
    for (i, c) in clients.iter().enumerate() {
        let mut v = [0u8; 8];
        let found = socks.lookup(&new_key(i), &mut v, UpdateFlags::ANY).unwrap();
        assert!(found, "socket {i} is in the new sockhash");
        assert_eq!(u64::from_ne_bytes(v), so_cookie(c), "socket {i}'s cookie");
    }
    assert_eq!(socks.count_entries().unwrap(), clients.len());
    drop(socks);
    assert!(
        !state.path().join("socks.sockets").exists(),
        "the record of the carried sockets is removed"
    );
    // The old map is unpinned and, nothing holding it, freed.
    let pins: Vec<String> = e.kernel().pins().unwrap();
    assert!(
        !pins
            .iter()
            .any(|p| p.contains("stage/") || p.contains("__handover")),
        "{pins:?}"
    );
    let alive = wait_gone(e.kernel(), &[ObjRef::map(old_id)], Duration::from_secs(10));
    assert!(alive.is_empty(), "the old sockhash is still in the kernel");

    // Every connection still works through the upgrade.
    for (c, s) in clients.iter_mut().zip(&mut servers) {
        use std::io::{Read, Write};
        c.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }
    e.uninstall().unwrap();
}
