//! Whole handoffs between two threads of this process, through a socket path and
//! an abstract name: what arrives is what was offered, the callbacks run in
//! protocol order, and each way of calling it off leaves the old side serving.
//! No privileges needed.

mod rig;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::Duration;

use handover_handoff::{
    Address, Fallback, FdKind, Finish, HandoffFailed, HandoffServer, Outcome, PeerPolicy,
    Rejection, TakeOverError, take_over,
};
use rig::{Recorder, Rig, STEP, open_fds, serial};

fn whole_handoff(rig: &Rig, address: &Address) {
    let server = HandoffServer::bind(address, PeerPolicy::same_user()).unwrap();
    let offer = rig.offer();
    let recorder = Recorder::default();
    let old = {
        let mut recorder = recorder.clone();
        thread::spawn(move || {
            let outcome = server.serve_one(&offer, &mut recorder, STEP).unwrap();
            let Outcome::HandedOver(handover) = outcome else {
                panic!("expected a handover, got {outcome:?}")
            };
            assert_eq!(handover.peer().pid, std::process::id());
            // The successor (this process) holds its end: it is alive.
            assert_eq!(
                handover.finish(Duration::from_millis(50)),
                Finish::SuccessorAlive
            );
        })
    };
    let mut received = take_over(address, &PeerPolicy::same_user(), "rig new", STEP).unwrap();
    // QUIESCED has arrived: on_quiesce has run, nothing else.
    assert_eq!(recorder.calls(), ["quiesce"]);
    assert_eq!(received.manifest.label, "rig old");
    assert_eq!(received.manifest.pid, std::process::id());
    assert_eq!(
        received.manifest.extra,
        serde_json::json!({"generation": 1})
    );
    let kinds: Vec<_> = received
        .fds
        .entries()
        .map(|e| (e.name.clone(), e.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("admin".to_owned(), FdKind::Listener),
            ("state".to_owned(), FdKind::Other)
        ]
    );
    // The received listener is the same socket: a connection to its path is
    // accepted through it, and the pipe carries bytes written to the original.
    let admin = UnixListener::from(received.fds.take("admin").unwrap());
    let mut client = UnixStream::connect(rig.dir().join("admin.sock")).unwrap();
    let (mut accepted, _) = admin.accept().unwrap();
    client.write_all(b"hi").unwrap();
    let mut buf = [0u8; 2];
    accepted.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");
    (&rig.pipe.1).write_all(b"s").unwrap();
    let mut state = std::fs::File::from(received.fds.take("state").unwrap());
    state.read_exact(&mut buf[..1]).unwrap();
    assert_eq!(buf[0], b's');

    let released = received.serving().unwrap();
    assert!(!released.old_vanished());
    old.join().unwrap();
    // The old side's end closed with its Handover: it "exited".
    assert!(released.wait_old_exit(Some(Duration::from_secs(1))));
    assert_eq!(recorder.calls(), ["quiesce"]);
}

#[test]
fn a_handoff_through_a_socket_path_passes_every_descriptor() {
    let _s = serial();
    let rig = Rig::new();
    let before = open_fds();
    whole_handoff(&rig, &rig.address());
    assert_eq!(open_fds(), before, "descriptors leaked");
}

#[test]
fn a_handoff_through_an_abstract_name_passes_every_descriptor() {
    let _s = serial();
    let rig = Rig::new();
    let name = format!("handover-handoff-in-process-{}", std::process::id());
    let before = open_fds();
    whole_handoff(&rig, &Address::Abstract(name));
    assert_eq!(open_fds(), before, "descriptors leaked");
}

/// Runs the old side in a thread against `new`, returning its outcome and the
/// order of the callbacks.
fn old_against<T>(
    rig: &Rig,
    policy: PeerPolicy,
    recorder: Recorder,
    new: impl FnOnce(&Address) -> T,
) -> (Outcome, Vec<&'static str>, T) {
    let address = rig.address();
    let server = HandoffServer::bind(&address, policy).unwrap();
    let offer = rig.offer();
    let old = {
        let mut recorder = recorder.clone();
        thread::spawn(move || server.serve_one(&offer, &mut recorder, STEP).unwrap())
    };
    let t = new(&address);
    let outcome = old.join().unwrap();
    (outcome, recorder.calls(), t)
}

#[test]
fn a_new_side_that_calls_off_after_quiesce_makes_the_old_resume() {
    let _s = serial();
    let rig = Rig::new();
    let before = open_fds();
    let (outcome, calls, ()) =
        old_against(&rig, PeerPolicy::same_user(), Recorder::default(), |a| {
            let received = take_over(a, &PeerPolicy::same_user(), "new", STEP).unwrap();
            received.abort("reconcile failed");
        });
    assert!(
        matches!(&outcome, Outcome::Resumed(HandoffFailed::PeerAborted { reason, .. }) if reason == "reconcile failed"),
        "{outcome:?}"
    );
    assert_eq!(calls, ["quiesce", "resume"]);
    assert_eq!(open_fds(), before, "descriptors leaked");
}

#[test]
fn a_new_side_that_vanishes_after_quiesce_makes_the_old_resume() {
    let _s = serial();
    let rig = Rig::new();
    let (outcome, calls, ()) =
        old_against(&rig, PeerPolicy::same_user(), Recorder::default(), |a| {
            drop(take_over(a, &PeerPolicy::same_user(), "new", STEP).unwrap());
        });
    let Outcome::Resumed(HandoffFailed::Protocol { source, .. }) = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        source
            .to_string()
            .contains("closed the connection while we waited for SERVING"),
        "{source}"
    );
    assert_eq!(calls, ["quiesce", "resume"]);
}

#[test]
fn a_slow_new_side_is_told_to_step_back() {
    let _s = serial();
    let rig = Rig::new();
    let (outcome, calls, err) =
        old_against(&rig, PeerPolicy::same_user(), Recorder::default(), |a| {
            let received = take_over(a, &PeerPolicy::same_user(), "new", STEP).unwrap();
            // Longer than the old side waits for SERVING.
            thread::sleep(STEP * 2);
            received.serving().unwrap_err()
        });
    assert!(
        matches!(outcome, Outcome::Resumed(HandoffFailed::Protocol { .. })),
        "{outcome:?}"
    );
    assert_eq!(calls, ["quiesce", "resume"]);
    assert!(matches!(err, TakeOverError::Aborted { .. }), "{err}");
    assert!(err.to_string().contains("no SERVING within"), "{err}");
    assert_eq!(err.fallback(), Fallback::Exit);
}

#[test]
fn a_refused_quiesce_calls_the_handoff_off() {
    let _s = serial();
    let rig = Rig::new();
    let recorder = Recorder {
        refuse: Some("a map write is stuck".into()),
        ..Recorder::default()
    };
    let before = open_fds();
    let (outcome, calls, err) = old_against(&rig, PeerPolicy::same_user(), recorder, |a| {
        take_over(a, &PeerPolicy::same_user(), "new", STEP).unwrap_err()
    });
    assert!(
        matches!(
            outcome,
            Outcome::Resumed(HandoffFailed::QuiesceFailed { .. })
        ),
        "{outcome:?}"
    );
    assert_eq!(calls, ["quiesce"]);
    assert!(
        err.to_string()
            .contains("could not quiesce: a map write is stuck"),
        "{err}"
    );
    assert_eq!(err.fallback(), Fallback::Exit);
    assert_eq!(open_fds(), before, "descriptors leaked");
}

#[test]
fn a_peer_running_another_executable_gets_nothing() {
    let _s = serial();
    let rig = Rig::new();
    let before = open_fds();
    let policy = PeerPolicy::same_user().expect_exe("/bin/sh");
    let (outcome, calls, err) = old_against(&rig, policy, Recorder::default(), |a| {
        take_over(a, &PeerPolicy::same_user(), "new", STEP).unwrap_err()
    });
    assert!(
        matches!(outcome, Outcome::Rejected(Rejection::WrongExe { .. })),
        "{outcome:?}"
    );
    assert!(calls.is_empty());
    // The old side lives (it is this process), so the hang-up is a rejection.
    assert!(matches!(err, TakeOverError::Rejected { .. }), "{err}");
    assert_eq!(err.fallback(), Fallback::Exit);
    assert_eq!(open_fds(), before, "descriptors leaked");
}

#[test]
fn nobody_listening_means_start_fresh() {
    let _s = serial();
    let rig = Rig::new();
    let err = take_over(&rig.address(), &PeerPolicy::same_user(), "new", STEP).unwrap_err();
    assert!(matches!(err, TakeOverError::NoOldProcess { .. }), "{err}");
    assert_eq!(err.fallback(), Fallback::StartFresh);
    assert!(err.into_salvaged().is_empty());
}

#[test]
fn an_offer_refuses_a_descriptor_of_the_wrong_kind() {
    let rig = Rig::new();
    let mut offer = handover_handoff::Offer::new("x");
    let err = offer
        .add("admin", FdKind::Listener, &rig.pipe.0)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("should be a listening socket but is not a socket (pipe:["),
        "{err}"
    );
    let unbound = UnixStream::pair().unwrap().0;
    let err = offer.add("admin", FdKind::Listener, &unbound).unwrap_err();
    assert!(
        err.to_string()
            .contains("a stream socket that is not listening"),
        "{err}"
    );
    let err = offer.add("m", FdKind::BpfMap, &rig.pipe.0).unwrap_err();
    assert!(
        err.to_string()
            .contains("should be a bpf map but is pipe:["),
        "{err}"
    );
    offer.add("admin", FdKind::Listener, &rig.admin).unwrap();
    let err = offer.add("admin", FdKind::Other, &rig.pipe.0).unwrap_err();
    assert!(err.to_string().contains("names \"admin\" twice"), "{err}");
}
