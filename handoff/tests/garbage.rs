//! Peers sending garbage, on both sides: oversize frames, bad JSON, another
//! version, descriptors the frame does not declare or that come without a frame,
//! manifests that lie. Each gets a clear error and no descriptors, and every
//! descriptor that came is closed (the process's descriptor count is unchanged).
//! No privileges needed.

mod rig;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;

use handover_handoff::testing::{frame, recv_raw, send_raw};
use handover_handoff::{
    Fallback, HandoffFailed, HandoffServer, Outcome, PeerPolicy, TakeOverError, take_over,
};
use rig::{Recorder, Rig, STEP, open_fds, serial};

/// A raw peer's behaviour.
type Peer<'a> = Box<dyn Fn(&UnixStream) + Sync + 'a>;

const HELLO: &[u8] = br#"{"type":"HELLO","version":1,"pid":1,"label":"raw"}"#;

/// Everything the peer sends until it closes: bytes and how many descriptors.
fn read_all(stream: &UnixStream) -> (Vec<u8>, usize) {
    let mut bytes = Vec::new();
    let mut fds = 0;
    loop {
        match recv_raw(stream, 65536) {
            Ok((b, f)) if b.is_empty() => {
                fds += f.len();
                return (bytes, fds);
            }
            Ok((b, f)) => {
                bytes.extend_from_slice(&b);
                fds += f.len();
            }
            Err(_) => return (bytes, fds),
        }
    }
}

/// Reads one whole frame (or what comes before the peer closes).
fn read_frame(stream: &UnixStream) -> (Vec<u8>, Vec<OwnedFd>) {
    let mut bytes = Vec::new();
    let mut fds = Vec::new();
    loop {
        let (b, f) = recv_raw(stream, 65536).unwrap();
        fds.extend(f);
        if b.is_empty() {
            return (bytes, fds);
        }
        bytes.extend_from_slice(&b);
        if let Some(head) = bytes.first_chunk::<4>() {
            let len = u32::from_be_bytes(*head) as usize;
            if bytes.len() >= 4 + len {
                return (bytes, fds);
            }
        }
    }
}

/// Two spare descriptors to attach where they do not belong.
fn spare() -> (std::io::PipeReader, std::io::PipeWriter) {
    std::io::pipe().unwrap()
}

/// The old side serves one raw peer that runs `peer`; returns the old side's
/// outcome, the callbacks, and what the peer read back.
fn old_facing(peer: impl FnOnce(&UnixStream)) -> (Outcome, Vec<&'static str>, Vec<u8>, usize) {
    let before = open_fds();
    let rig = Rig::new();
    let server = HandoffServer::bind(&rig.address(), PeerPolicy::same_user()).unwrap();
    let offer = rig.offer();
    let recorder = Recorder::default();
    let old = {
        let mut recorder = recorder.clone();
        thread::spawn(move || server.serve_one(&offer, &mut recorder, STEP).unwrap())
    };
    let (reply, fds) = {
        let stream = UnixStream::connect(rig.address_path()).unwrap();
        peer(&stream);
        read_all(&stream)
    };
    let outcome = old.join().unwrap();
    drop(rig);
    assert_eq!(open_fds(), before, "descriptors leaked ({outcome:?})");
    (outcome, recorder.calls(), reply, fds)
}

trait AddressPath {
    fn address_path(&self) -> std::path::PathBuf;
}

impl AddressPath for Rig {
    fn address_path(&self) -> std::path::PathBuf {
        match self.address() {
            handover_handoff::Address::Path(p) => p,
            handover_handoff::Address::Abstract(_) => unreachable!(),
        }
    }
}

fn protocol_error(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Resumed(HandoffFailed::Protocol { source, .. }) => source.to_string(),
        other => panic!("expected a protocol failure, got {other:?}"),
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    String::from_utf8_lossy(haystack).contains(needle)
}

#[test]
fn the_old_side_refuses_garbage_before_sending_anything() {
    let _s = serial();
    let pipe = spare();
    let two = [pipe.0.as_fd(), pipe.1.as_fd()];
    let cases: Vec<(&str, Peer, &str)> = vec![
        (
            "oversize",
            Box::new(|s| send_raw(s, &[0xff, 0xff, 0xff, 0xff], &[]).unwrap()),
            "frame of 4294967295 bytes announced; the limit is 65536",
        ),
        (
            "bad JSON",
            Box::new(|s| send_raw(s, &frame(br#"{"type": HELLO"#), &[]).unwrap()),
            "frame is not JSON: expected value at line 1 column 10",
        ),
        (
            "wrong version",
            Box::new(|s| {
                let body = br#"{"type":"HELLO","version":7,"pid":1,"label":"x"}"#;
                send_raw(s, &frame(body), &[]).unwrap();
            }),
            "frame of protocol version 7; this side speaks version 1",
        ),
        (
            "no version",
            Box::new(|s| send_raw(s, &frame(br#"{"type":"HELLO"}"#), &[]).unwrap()),
            "frame has no numeric \"version\" field",
        ),
        (
            "extra fds",
            Box::new(|s| send_raw(s, &frame(HELLO), &two).unwrap()),
            "HELLO declares 0 descriptors but 2 came with it; all were closed",
        ),
        (
            "fds without a frame",
            Box::new(|s| {
                send_raw(s, b"\0", &two).unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
            }),
            "the connection closed inside a frame (waiting for HELLO): 1 of 4 bytes",
        ),
        (
            "empty frame",
            Box::new(|s| send_raw(s, &frame(b""), &[]).unwrap()),
            "empty frame",
        ),
        (
            "wrong message",
            Box::new(|s| {
                send_raw(s, &frame(br#"{"type":"SERVING","version":1}"#), &[]).unwrap();
            }),
            "expected HELLO, got SERVING",
        ),
        ("silence", Box::new(|_| {}), "no HELLO within 300ms"),
    ];
    for (name, peer, want) in cases {
        let (outcome, calls, reply, fds) = old_facing(|s| peer(s));
        let err = protocol_error(&outcome);
        assert!(err.contains(want), "{name}: {err:?} should say {want:?}");
        assert!(calls.is_empty(), "{name}: {calls:?}");
        assert_eq!(fds, 0, "{name}: descriptors were sent");
        assert!(!contains(&reply, "MANIFEST"), "{name}: a manifest was sent");
        if name == "wrong message" {
            assert!(contains(&reply, r#""type":"ABORT""#), "{name}: {reply:?}");
        }
    }
}

#[test]
fn the_old_side_resumes_when_garbage_follows_the_manifest() {
    let _s = serial();
    // Garbage instead of READY_TO_TAKE_OVER: nothing was quiesced.
    let (outcome, calls, _, _) = old_facing(|s| {
        send_raw(s, &frame(HELLO), &[]).unwrap();
        let (manifest, fds) = read_frame(s);
        assert!(contains(&manifest, r#""type":"MANIFEST""#));
        assert_eq!(fds.len(), 2);
        send_raw(s, &frame(b"\xff\xfe"), &[]).unwrap();
    });
    assert!(
        protocol_error(&outcome).contains("frame is not JSON"),
        "{outcome:?}"
    );
    assert!(calls.is_empty(), "{calls:?}");

    // Garbage instead of SERVING, after QUIESCED: the old side resumes.
    let pipe = spare();
    let (outcome, calls, reply, _) = old_facing(|s| {
        send_raw(s, &frame(HELLO), &[]).unwrap();
        drop(read_frame(s));
        send_raw(
            s,
            &frame(br#"{"type":"READY_TO_TAKE_OVER","version":1}"#),
            &[],
        )
        .unwrap();
        let (quiesced, _) = read_frame(s);
        assert!(contains(&quiesced, "QUIESCED"));
        send_raw(
            s,
            &frame(br#"{"type":"SERVING","version":1}"#),
            &[pipe.0.as_fd()],
        )
        .unwrap();
    });
    let err = protocol_error(&outcome);
    assert!(
        err.contains("SERVING declares 0 descriptors but 1 came"),
        "{err}"
    );
    assert_eq!(calls, ["quiesce", "resume"]);
    assert!(contains(&reply, r#""type":"ABORT""#), "{reply:?}");
}

/// A fake old side at the rig's address that answers HELLO with `reply`; returns
/// the take-over's error and what the fake read back.
fn new_facing(reply: impl FnOnce(&UnixStream) + Send) -> (TakeOverError, Vec<u8>) {
    let before = open_fds();
    let rig = Rig::new();
    let listener = UnixListener::bind(rig.address_path()).unwrap();
    let (err, back) = thread::scope(|scope| {
        let fake = scope.spawn(|| {
            let (stream, _) = listener.accept().unwrap();
            let (hello, _) = read_frame(&stream);
            assert!(contains(&hello, "HELLO"));
            reply(&stream);
            read_all(&stream).0
        });
        let result = take_over(&rig.address(), &PeerPolicy::same_user(), "new", STEP);
        let err = result.expect_err("a take-over from garbage must fail");
        (err, fake.join().unwrap())
    });
    drop((listener, rig));
    assert_eq!(open_fds(), before, "descriptors leaked ({err})");
    (err, back)
}

fn manifest(fds: &str) -> Vec<u8> {
    frame(
        format!(r#"{{"type":"MANIFEST","version":1,"label":"fake","pid":1,"fds":[{fds}]}}"#)
            .as_bytes(),
    )
}

#[test]
fn the_new_side_refuses_garbage_and_keeps_no_descriptor() {
    let _s = serial();
    let rig = Rig::new();
    let listener_fd = rig.admin.as_fd();
    let pipe = spare();
    let (pipe_r, pipe_w) = (pipe.0.as_fd(), pipe.1.as_fd());
    let admin = r#"{"name":"admin","kind":"listener"}"#;
    let cases: Vec<(&str, Peer, &str, bool)> = vec![
        (
            "oversize",
            Box::new(|s| send_raw(s, &[0x7f, 0, 0, 0], &[listener_fd]).unwrap()),
            "frame of 2130706432 bytes announced",
            false,
        ),
        (
            "bad JSON",
            Box::new(|s| send_raw(s, &frame(b"[1,2"), &[]).unwrap()),
            "frame is not JSON",
            false,
        ),
        (
            "wrong version",
            Box::new(|s| {
                send_raw(s, &frame(br#"{"type":"MANIFEST","version":0}"#), &[]).unwrap();
            }),
            "frame of protocol version 0",
            false,
        ),
        (
            "not a message",
            Box::new(|s| send_raw(s, &frame(br#"{"type":"MANIFEST","version":1}"#), &[]).unwrap()),
            "frame is not a valid message: missing field `label`",
            false,
        ),
        (
            "more fds than declared",
            Box::new(move |s| {
                send_raw(s, &manifest(admin), &[listener_fd, pipe_r]).unwrap();
            }),
            "MANIFEST declares 1 descriptors but 2 came with it; all were closed",
            false,
        ),
        (
            "fewer fds than declared",
            Box::new(move |s| send_raw(s, &manifest(admin), &[]).unwrap()),
            "MANIFEST declares 1 descriptors but 0 came with it",
            false,
        ),
        (
            "wrong kind",
            Box::new(move |s| send_raw(s, &manifest(admin), &[pipe_r]).unwrap()),
            "descriptor \"admin\" should be a listening socket but is not a socket (pipe:[",
            true,
        ),
        (
            "duplicate names",
            Box::new(move |s| {
                let two = format!("{admin},{admin}");
                send_raw(s, &manifest(&two), &[listener_fd, listener_fd]).unwrap();
            }),
            "the manifest names \"admin\" twice",
            true,
        ),
        (
            "fds on QUIESCED",
            Box::new(move |s| {
                send_raw(s, &manifest(admin), &[listener_fd]).unwrap();
                let (ready, _) = read_frame(s);
                assert!(contains(&ready, "READY_TO_TAKE_OVER"));
                send_raw(s, &frame(br#"{"type":"QUIESCED","version":1}"#), &[pipe_w]).unwrap();
            }),
            "QUIESCED declares 0 descriptors but 1 came with it",
            false,
        ),
        (
            "MANIFEST twice",
            Box::new(move |s| {
                send_raw(s, &manifest(admin), &[listener_fd]).unwrap();
                drop(read_frame(s));
                send_raw(s, &manifest(admin), &[listener_fd]).unwrap();
            }),
            "expected QUIESCED, got MANIFEST",
            true,
        ),
    ];
    for (name, reply, want, aborts) in cases {
        let (err, back) = new_facing(|s| reply(s));
        let text = err.to_string();
        assert!(text.contains(want), "{name}: {text:?} should say {want:?}");
        assert_eq!(err.fallback(), Fallback::Exit, "{name}: {err}");
        assert!(err.into_salvaged().is_empty(), "{name}");
        if aborts {
            assert!(
                contains(&back, r#""type":"ABORT""#),
                "{name}: the old side is told: {back:?}"
            );
        }
    }
}

#[test]
fn an_old_side_that_hangs_up_while_alive_is_a_rejection() {
    let _s = serial();
    let (err, _) = new_facing(|s| s.shutdown(std::net::Shutdown::Write).unwrap());
    assert!(matches!(err, TakeOverError::Rejected { .. }), "{err}");
    assert!(err.to_string().contains("rejected this process"), "{err}");
    assert_eq!(err.fallback(), Fallback::Exit);
}
