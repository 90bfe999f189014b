//! Fallbacks for what older kernels lack, exercised where the kernel lacks it and
//! checked to change nothing where it does not (needs root).
//!
//! - `RLIMIT_MEMLOCK`: kernels before 5.11 charge BPF memory to it and refuse a map
//!   over the limit with `EPERM`; the kernel backend raises the limit and tries again.
#![allow(unsafe_code, reason = "setrlimit in the child process")]

#[path = "../../tests/testenv/mod.rs"]
mod testenv;

use handover_sys::{Bpf, Map, MapCreate, MapType, UpdateFlags};

const MEMLOCK: &str = "a_map_over_a_small_memlock_limit_is_created";

fn memlock() -> libc::rlimit {
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the live rlimit on this stack frame.
    let ret = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &raw mut now) };
    assert_eq!(ret, 0, "getrlimit");
    now
}

/// The child: with RLIMIT_MEMLOCK at 64 KiB (the default before 5.16), creates a
/// preallocated hash map of about 10 MiB and writes to it; prints the limit after.
fn memlock_child() {
    let small = libc::rlimit {
        rlim_cur: 64 << 10,
        rlim_max: 64 << 10,
    };
    // SAFETY: setrlimit reads the live rlimit on this stack frame.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const small) };
    assert_eq!(ret, 0, "setrlimit");
    let bpf = Bpf::kernel();
    let map = Map::create(&bpf, &MapCreate::new(MapType::Hash, 8, 64, 100_000))
        .unwrap_or_else(|e| panic!("a 100000-entry hash map under a 64 KiB memlock limit: {e}"));
    map.update(&7u64.to_ne_bytes(), &[1; 64], UpdateFlags::ANY)
        .unwrap();
    let after = memlock();
    let raised = after.rlim_cur != small.rlim_cur;
    println!("MEMLOCK raised={raised} limit={}", after.rlim_cur);
}

#[test]
fn a_map_over_a_small_memlock_limit_is_created() {
    if testenv::child_role().as_deref() == Some("memlock") {
        memlock_child();
        return;
    }
    if !testenv::privileged(MEMLOCK) {
        return;
    }
    let before = memlock();
    let out = testenv::run_child(MEMLOCK, "memlock", &[]);
    // The harness may print the test's name on the same line first.
    let line = out
        .lines()
        .find_map(|l| l.split_once("MEMLOCK ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no result from the child:\n{out}"));
    if line.contains("raised=true") {
        eprintln!(
            "this kernel charges BPF memory to RLIMIT_MEMLOCK: the limit was raised ({line})"
        );
    } else {
        eprintln!("this kernel does not charge BPF memory to RLIMIT_MEMLOCK ({line})");
    }
    // The limit of the test process itself is untouched.
    let after = memlock();
    assert_eq!(
        (before.rlim_cur, before.rlim_max),
        (after.rlim_cur, after.rlim_max)
    );
}
