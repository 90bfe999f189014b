//! Peers that are not trusted get nothing: another uid (checked with SO_PEERCRED
//! before anything is sent), a process that cannot reach the private directory,
//! and another executable than the expected one. The old daemon logs the rejection
//! and serves on. Each test runs in its own network namespace. Needs root.

mod support;
#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::time::Duration;

use handover_handoff::{Address, PeerPolicy, TakeOverError, take_over};
use support::{Daemon, private_dir, settles_on, socket_in};

const T: Duration = Duration::from_secs(10);
const NOBODY: u32 = 65534;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The child: drops to uid 65534 and tries to take over from `HANDOFF_ADDR`.
fn intruder() {
    let addr = Address::parse(&std::env::var("HANDOFF_ADDR").unwrap());
    testenv::become_user(NOBODY, NOBODY);
    let before = open_fds();
    let result = take_over(&addr, &PeerPolicy::same_user(), "intruder", T);
    let after = open_fds();
    let verdict = match &result {
        Ok(r) => format!("took over {} descriptors", r.fds.len()),
        Err(TakeOverError::Rejected { .. }) => "rejected".to_owned(),
        Err(TakeOverError::Address(e)) => format!("address refused: {e}"),
        Err(e) => format!("other error: {e}"),
    };
    let fallback = result.as_ref().err().map(TakeOverError::fallback);
    drop(result);
    println!("RESULT {verdict} | fallback={fallback:?} fds_before={before} fds_after={after}");
}

fn run_intruder(test: &str, addr: &str) -> String {
    let out = testenv::run_child(test, "intruder", &[("HANDOFF_ADDR", addr.to_owned())]);
    out.lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no result from the intruder: {out}"))
        .to_owned()
}

#[test]
fn a_peer_of_another_uid_gets_nothing_and_is_logged() {
    const TEST: &str = "a_peer_of_another_uid_gets_nothing_and_is_logged";
    if testenv::child_role().as_deref() == Some("intruder") {
        intruder();
        return;
    }
    if !testenv::privileged(TEST) {
        return;
    }
    testenv::enter_new_netns();
    // Abstract: anyone in the namespace can connect, so only the credential check
    // stands between the intruder and the descriptors.
    let addr = "@handover-handoff-reject";
    let mut old = Daemon::start("old", addr, 1, None);
    assert!(old.wait_for("handoff-ready", T), "{}", old.report());
    let result = run_intruder(TEST, addr);
    let (verdict, fds) = result.split_once(" | ").unwrap();
    assert_eq!(verdict, "rejected", "{result}\n{}", old.report());
    assert!(fds.starts_with("fallback=Some(Exit)"), "{result}");
    let (b, a) = fds.split_once(" fds_after=").unwrap();
    assert_eq!(
        b.rsplit('=').next(),
        Some(a),
        "no descriptor arrived: {result}"
    );
    let log = old.log();
    assert!(
        log.contains("handoff peer rejected") && log.contains(&format!("uid {NOBODY}")),
        "the old daemon logs the rejection:\n{log}"
    );
    assert!(!log.contains("successor says hello"), "{log}");
    settles_on(old.pid(), 20, T).unwrap();
    assert!(old.running(), "{}", old.report());
}

#[test]
fn another_uid_cannot_use_the_private_directory() {
    const TEST: &str = "another_uid_cannot_use_the_private_directory";
    if testenv::child_role().as_deref() == Some("intruder") {
        intruder();
        return;
    }
    if !testenv::privileged(TEST) {
        return;
    }
    testenv::enter_new_netns();
    let dir = private_dir();
    let path = socket_in(dir.path());
    let mut old = Daemon::start("old", path.to_str().unwrap(), 1, None);
    assert!(old.wait_for("handoff-ready", T), "{}", old.report());
    let result = run_intruder(TEST, path.to_str().unwrap());
    assert!(
        result.starts_with("address refused:") && result.contains("owned by uid 0"),
        "{result}"
    );
    assert!(result.contains("fallback=Some(Exit)"), "{result}");
    settles_on(old.pid(), 20, T).unwrap();
    assert!(old.running());
}

#[test]
fn another_executable_is_rejected() {
    const TEST: &str = "another_executable_is_rejected";
    if !testenv::privileged(TEST) {
        return;
    }
    testenv::enter_new_netns();
    let addr = "@handover-handoff-exe";
    // The old daemon trusts only the test binary itself, which the new is not.
    let me = std::env::current_exe().unwrap();
    let mut old = Daemon::start_with(
        "old",
        addr,
        1,
        None,
        &["--expect-exe", me.to_str().unwrap()],
    );
    assert!(old.wait_for("handoff-ready", T), "{}", old.report());
    let mut new = Daemon::start("new", addr, 2, None);
    let status = new.wait_exit(T);
    assert_eq!(status.and_then(|s| s.code()), Some(3), "{}", new.report());
    assert!(
        new.log().contains("rejected this process"),
        "{}",
        new.report()
    );
    assert!(old.log().contains("not the expected"), "{}", old.report());
    settles_on(old.pid(), 20, T).unwrap();
    assert!(old.running());

    // And in-process: the test binary is the expected executable, so it may.
    let received = take_over(&Address::parse(addr), &PeerPolicy::same_user(), "test", T).unwrap();
    assert_eq!(received.manifest.fds.len(), 1);
    received.abort("only checking");
    settles_on(old.pid(), 20, T).unwrap();
    assert!(
        old.log().contains("called the handoff off: only checking"),
        "{}",
        old.report()
    );
}
