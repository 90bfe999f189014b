//! Sockets of a sockmap and a sockhash carried into new, larger maps by the generated
//! `iter/sockmap` program, against the running kernel: TCP connections on 127.0.0.1
//! in the test's own network namespace, read back by their socket cookies.
#![allow(clippy::indexing_slicing, reason = "tests index fixed buffers")]

#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use handover_engine::migrate::{MigrateError, carry_sockets};
use handover_sys::{Bpf, Map, MapCreate, MapType, UpdateFlags};

fn create(bpf: &Bpf, t: MapType, key: u32, max: u32, name: &str) -> Map {
    let mut spec = MapCreate::new(t, key, 8, max);
    spec.name = name;
    Map::create(bpf, &spec).unwrap_or_else(|e| panic!("create {name}: {e}"))
}

/// Established connections: the client ends, with the server ends kept open.
fn connections(n: usize) -> (TcpListener, Vec<TcpStream>, Vec<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen on 127.0.0.1");
    let addr = listener.local_addr().expect("listener address");
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..n {
        clients.push(TcpStream::connect(addr).expect("connect to 127.0.0.1"));
        servers.push(listener.accept().expect("accept").0);
    }
    (listener, clients, servers)
}

fn cookie(map: &Map, key: &[u8]) -> Option<u64> {
    let mut v = [0u8; 8];
    map.lookup(key, &mut v, UpdateFlags::ANY)
        .expect("look a socket up")
        .then(|| u64::from_ne_bytes(v))
}

fn insert(map: &Map, key: &[u8], sock: &TcpStream) {
    let fd = u64::try_from(sock.as_raw_fd()).expect("fd");
    map.update(key, &fd.to_ne_bytes(), UpdateFlags::ANY)
        .expect("insert a socket");
}

const TEST: &str = "sockets_of_a_sockmap_and_a_sockhash_are_carried_into_larger_maps";

#[test]
fn sockets_of_a_sockmap_and_a_sockhash_are_carried_into_larger_maps() {
    if !testenv::privileged(TEST) {
        return;
    }
    testenv::enter_new_netns();
    let bpf = Bpf::kernel();
    let (_listener, clients, _servers) = connections(3);

    // A sockmap: indices 0, 1 and 3 of 4 hold a socket.
    let old = create(&bpf, MapType::Sockmap, 4, 4, "ho_old_sockmap");
    let keys: [u32; 3] = [0, 1, 3];
    for (k, s) in keys.iter().zip(&clients) {
        insert(&old, &k.to_ne_bytes(), s);
    }
    let new = create(&bpf, MapType::Sockmap, 4, 16, "ho_new_sockmap");
    let report = match carry_sockets(&bpf, "sockmap", &old, &new) {
        // Some kernels refuse every map-element iterator (sockmap, sk_storage) with
        // EPERM before verifying a single instruction, bpftool's load as well.
        Err(MigrateError::Kernel {
            doing: "loading the sockmap iterator program",
            source,
            ..
        }) if source.errno() == Some(libc::EPERM) => {
            testenv::kernel_lacks(
                TEST,
                &format!("a sockmap iterator program it accepts ({source})"),
            );
            return;
        }
        r => r.expect("carry the sockmap"),
    };
    assert_eq!((report.seen, report.carried), (3, 3), "{report:?}");
    assert!(report.refused.is_empty());
    for k in 0u32..16 {
        let key = k.to_ne_bytes();
        let want = if k < 4 { cookie(&old, &key) } else { None };
        assert_eq!(cookie(&new, &key), want, "sockmap index {k}");
        assert_eq!(want.is_some(), keys.contains(&k), "index {k}");
    }

    // A sockhash keyed by 8 bytes.
    let old_h = create(&bpf, MapType::Sockhash, 8, 4, "ho_old_sockhash");
    let hkeys: [u64; 3] = [7, 0xdead_beef_0000_0001, u64::MAX];
    for (k, s) in hkeys.iter().zip(&clients) {
        insert(&old_h, &k.to_ne_bytes(), s);
    }
    let new_h = create(&bpf, MapType::Sockhash, 8, 16, "ho_new_sockhash");
    let report = carry_sockets(&bpf, "sockhash", &old_h, &new_h).expect("carry the sockhash");
    assert_eq!((report.seen, report.carried), (3, 3), "{report:?}");
    for k in hkeys {
        let key = k.to_ne_bytes();
        let c = cookie(&old_h, &key).expect("old sockhash entry");
        assert_eq!(cookie(&new_h, &key), Some(c), "sockhash key {k:#x}");
    }
    // The same connection keeps its cookie across map types: the maps hold the one
    // socket, not copies.
    assert_eq!(
        cookie(&new, &0u32.to_ne_bytes()),
        cookie(&new_h, &7u64.to_ne_bytes())
    );

    // A smaller sockmap refuses the index past its end, and the report says which.
    let small = create(&bpf, MapType::Sockmap, 4, 2, "ho_small_sockmap");
    let report = carry_sockets(&bpf, "sockmap", &old, &small).expect("carry into less");
    assert_eq!((report.seen, report.carried), (3, 2), "{report:?}");
    assert_eq!(
        report.refused,
        vec![(3u32.to_ne_bytes().to_vec(), libc::E2BIG)]
    );

    // Two maps of different types are refused before anything runs.
    let err = carry_sockets(&bpf, "mixed", &old, &new_h).expect_err("sockmap into sockhash");
    assert!(
        err.to_string().contains("two sockmaps or two sockhashes"),
        "{err}"
    );
}
