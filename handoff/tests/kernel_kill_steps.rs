//! Kill-at-each-step: for every protocol step, the process running it is killed
//! (`SIGKILL`, through the failpoint of that step) during an upgrade; every case
//! ends with exactly one process serving (by pid, through requests), and that one
//! can hand over again. The list of cases is `Step::ALL`, so a new step cannot
//! escape it. Each case runs in its own network namespace. Needs root.

mod support;
#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::thread;
use std::time::Duration;

use handover_handoff::{Side, Step};
use support::{Daemon, private_dir, settles_on, socket_in};

const T: Duration = Duration::from_secs(15);

/// Old (generation 1) hands over to new (generation 2), one of them dies at `step`.
fn case(step: Step, handoff: &str) -> Result<(), String> {
    testenv::enter_new_netns();
    let fp = Some(step.name());
    let (old_fp, new_fp) = match step.side() {
        Side::Old => (fp, None),
        Side::New => (None, fp),
    };
    let mut old = Daemon::start("old", handoff, 1, old_fp);
    if !old.wait_for("handoff-ready", T) {
        return Err(format!("old never ready\n{}", old.report()));
    }
    let new = Daemon::start("new", handoff, 2, new_fp);
    let (mut dead, mut survivor) = match step.side() {
        Side::Old => (old, new),
        Side::New => (new, old),
    };
    let fail = |what: &str, dead: &mut Daemon, survivor: &mut Daemon| {
        Err(format!(
            "{step}: {what}\n{}\n{}",
            dead.report(),
            survivor.report()
        ))
    };
    if dead.wait_exit(T).is_none() || !dead.killed() {
        return fail(
            "the failpoint did not kill its process",
            &mut dead,
            &mut survivor,
        );
    }
    if let Err(e) = settles_on(survivor.pid(), 50, T) {
        return fail(&e, &mut dead, &mut survivor);
    }
    if !survivor.running() {
        return fail("the survivor is not running", &mut dead, &mut survivor);
    }
    // The old daemon went back to writing state if it had stopped.
    let quiesced = Step::ALL.iter().position(|s| *s == step).is_some_and(|i| {
        i > Step::ALL
            .iter()
            .position(|s| *s == Step::OldQuiesced)
            .unwrap_or(0)
    });
    if step.side() == Side::New
        && quiesced
        && !survivor.log().contains("resumed: state writes on again")
    {
        return fail(
            "the old daemon did not resume its state writes",
            &mut dead,
            &mut survivor,
        );
    }
    // Exactly one serves, and it is whole: it hands over again.
    if !survivor.wait_for("handoff-ready", T) {
        return fail(
            "the survivor never served handoffs",
            &mut dead,
            &mut survivor,
        );
    }
    let mut third = Daemon::start("third", handoff, 3, None);
    if survivor.wait_exit(T).is_none_or(|s| !s.success()) {
        return fail(
            "the survivor did not hand over to a third process",
            &mut survivor,
            &mut third,
        );
    }
    if let Err(e) = settles_on(third.pid(), 20, T) {
        return fail(&e, &mut survivor, &mut third);
    }
    Ok(())
}

fn every_step(test: &str, handoff: impl Fn() -> (Option<testenv::TempDir>, String) + Sync) {
    if !testenv::privileged(test) {
        return;
    }
    let mut failures = Vec::new();
    for step in Step::ALL {
        // A thread of its own: its own network namespace.
        let result = thread::scope(|s| {
            s.spawn(|| {
                let (_dir, address) = handoff();
                case(step, &address)
            })
            .join()
            .unwrap_or_else(|_| Err(format!("{step}: the case panicked")))
        });
        match result {
            Ok(()) => println!("{step}: one process serving"),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn killing_either_side_at_every_step_leaves_one_server_path() {
    every_step(
        "killing_either_side_at_every_step_leaves_one_server_path",
        || {
            let dir = private_dir();
            let path = socket_in(dir.path()).to_string_lossy().into_owned();
            (Some(dir), path)
        },
    );
}

#[test]
fn killing_either_side_at_every_step_leaves_one_server_abstract() {
    every_step(
        "killing_either_side_at_every_step_leaves_one_server_abstract",
        || (None, "@handover-handoff-kill".to_owned()),
    );
}
