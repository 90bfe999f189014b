//! An upgrade through handover under a bounded loop of requests: no connection is
//! refused or reset, and every request is answered by the old or the new process.
//! Each test runs in its own network namespace. Needs root; skips loudly otherwise.

mod support;
#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use support::{Answer, Daemon, get, private_dir, socket_in};

const REQUESTS: usize = 2000;
const CLIENTS: usize = 4;

#[derive(Debug, Default)]
struct Tally {
    by_pid: std::collections::BTreeMap<u32, usize>,
    refused: usize,
    reset: usize,
    failed: Vec<String>,
}

fn upgrade_under_load(test: &str, handoff: &str) {
    if !testenv::privileged(test) {
        return;
    }
    testenv::enter_new_netns();
    let mut old = Daemon::start_with(
        "old",
        handoff,
        1,
        None,
        &["--expect-exe", env!("CARGO_BIN_EXE_handoff-testd")],
    );
    assert!(
        old.wait_for("handoff-ready", Duration::from_secs(10)),
        "{}",
        old.report()
    );

    let done = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let done = Arc::clone(&done);
            let tally = Arc::clone(&tally);
            // Threads start in the namespace of the thread that spawns them.
            thread::spawn(move || {
                for _ in 0..REQUESTS / CLIENTS {
                    let answer = get();
                    let mut t = tally.lock().unwrap();
                    match answer {
                        Answer::By(pid) => *t.by_pid.entry(pid).or_default() += 1,
                        Answer::Refused => t.refused += 1,
                        Answer::Reset => t.reset += 1,
                        Answer::Failed(e) => t.failed.push(e),
                    }
                    drop(t);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    while done.load(Ordering::Relaxed) < REQUESTS / 5 {
        thread::sleep(Duration::from_millis(2));
    }
    let mut new = Daemon::start_with(
        "new",
        handoff,
        2,
        None,
        &["--expect-exe", env!("CARGO_BIN_EXE_handoff-testd")],
    );
    let old_exit = old.wait_exit(Duration::from_secs(30));
    assert!(
        old_exit.is_some_and(|s| s.success()),
        "the old daemon should exit 0 after handing over\n{}\n{}",
        old.report(),
        new.report()
    );
    for c in clients {
        c.join().unwrap();
    }
    assert!(
        new.wait_for("handoff-ready", Duration::from_secs(10)),
        "the new daemon takes the handoff address over\n{}",
        new.report()
    );
    let t = tally.lock().unwrap();
    let report = format!("{t:?}\n{}\n{}", old.report(), new.report());
    assert_eq!(t.refused, 0, "refused connections: {report}");
    assert_eq!(t.reset, 0, "reset connections: {report}");
    assert!(t.failed.is_empty(), "failed requests: {report}");
    let by_old = t.by_pid.get(&old.pid()).copied().unwrap_or(0);
    let by_new = t.by_pid.get(&new.pid()).copied().unwrap_or(0);
    assert_eq!(by_old + by_new, REQUESTS, "answered by others: {report}");
    assert!(by_old > 0 && by_new > 0, "both should answer: {report}");
    assert!(new.running(), "{report}");
    assert_eq!(get(), Answer::By(new.pid()));
    println!("upgrade via {handoff}: {by_old} answered by the old, {by_new} by the new");
}

#[test]
fn upgrade_through_a_socket_path_refuses_and_resets_nothing() {
    let dir = private_dir();
    let path = socket_in(dir.path());
    upgrade_under_load(
        "upgrade_through_a_socket_path_refuses_and_resets_nothing",
        path.to_str().unwrap(),
    );
}

#[test]
fn upgrade_through_an_abstract_name_refuses_and_resets_nothing() {
    upgrade_under_load(
        "upgrade_through_an_abstract_name_refuses_and_resets_nothing",
        "@handover-handoff-test",
    );
}
