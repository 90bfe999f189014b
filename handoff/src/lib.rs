//! Process handover: a running ("old") daemon passes its listening sockets and its
//! bpf map, program and link descriptors to the process replacing it ("new"), over
//! an authenticated Unix socket, so that no connection is refused and no state the
//! old daemon writes is lost.
//!
//! # Protocol, version 1
//!
//! The old daemon listens on a Unix stream socket: a socket file in a directory it
//! owns with mode 0700 ([`Address::Path`], checked before use on both sides), or a
//! name in the abstract namespace of its network namespace ([`Address::Abstract`]).
//! Every message is a frame: a 4-byte big-endian length (at most
//! [`MAX_FRAME_LEN`]), then a JSON object with `"version": 1` and a `"type"`.
//! Descriptors travel as `SCM_RIGHTS` attached to the first byte of the one frame
//! that declares them, MANIFEST; descriptors on any other frame, a count that does
//! not match, bad JSON, another version or an oversize length end the handoff with
//! an error naming the fault, and every descriptor that came is closed.
//!
//! ```text
//!  new                                    old
//!   | connect                              |
//!   |------------------------------------->| SO_PEERCRED: our uid or root, and the
//!   |                                      | expected executable if one is set.
//!   |                                      | Rejected: closed, logged, nothing sent.
//!   | SO_PEERCRED of the old, same rules   |
//!   | HELLO {pid, label}                   |
//!   |------------------------------------->|
//!   |         MANIFEST {label, pid, fds: [{name, kind}], extra} + SCM_RIGHTS
//!   |<-------------------------------------|
//!   | check: count, names, each kind       |
//!   |  (listener: SO_TYPE/SO_ACCEPTCONN;   |
//!   |   bpf: /proc/self/fd link target)    |
//!   | READY_TO_TAKE_OVER  (or ABORT)       |
//!   |------------------------------------->| on_quiesce(): stop writing state
//!   |                          QUIESCED    |
//!   |<-------------------------------------|
//!   | final reconcile; accept on the       |  (both accept from the shared
//!   | received listeners                   |   listening sockets meanwhile)
//!   | SERVING                              |
//!   |------------------------------------->| stop accepting
//!   |                          RELEASED    |
//!   |<-------------------------------------| finish in-flight requests within a
//!   | keep the connection open until the   | deadline; Handover::finish: if the new
//!   | old exits (Released::wait_old_exit)  | died meanwhile take back, else exit
//! ```
//!
//! Every wait has a timeout. The listening sockets are shared, not copied: a
//! connection queued on them is accepted by whichever process calls `accept`, so
//! the old simply stops calling it. Their file status flags (`O_NONBLOCK`) are
//! shared too: do not change them during a handover; wait with `poll` instead.
//!
//! # Failures
//!
//! - The new dies or fails before SERVING: the old sees the hang-up or the timeout,
//!   runs `on_resume` if it had quiesced, and serves on ([`Outcome::Resumed`]).
//!   After its own timeout the old sends ABORT, so a slow new steps back.
//! - The new dies after SERVING, while the old drains: [`Handover::finish`] reports
//!   [`Finish::SuccessorDied`] and the old takes back.
//! - The old dies mid-transfer: [`take_over`] or [`Received::serving`] notice the
//!   hang-up and that the process has exited; before QUIESCED this is
//!   [`TakeOverError::OldDied`] with [`Fallback::StartFresh`] (start from the pins;
//!   the descriptors that arrived are salvaged), after it the new simply serves.
//! - The old refuses, aborts or stays alive behind a closed connection:
//!   [`Fallback::Exit`], the new must not serve.
//!
//! # Test hooks
//!
//! With the `failpoints` feature, [`FAILPOINT_VAR`] names a [`Step`] at which the
//! process kills itself with `SIGKILL`, and [`testing`] writes raw frames.
#![deny(unsafe_code)]

mod address;
mod client;
mod manifest;
mod policy;
mod protocol;
mod server;
mod step;
mod sys;

pub use address::{Address, AddressError};
pub use client::{Fallback, Received, Released, TakeOverError, take_over};
pub use manifest::{FdEntry, FdKind, Manifest, ManifestError, NamedFds};
pub use policy::{Peer, PeerPolicy, Rejection};
pub use protocol::{MAX_FRAME_LEN, PROTOCOL_VERSION, ProtocolError};
pub use server::{
    Callbacks, Finish, HandoffFailed, HandoffServer, Handover, Offer, Outcome, ServeError,
};
pub use step::{FAILPOINT_VAR, Side, Step};

/// Raw frames for tests that play a misbehaving peer.
#[cfg(feature = "failpoints")]
pub mod testing {
    use std::io;
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::os::unix::net::UnixStream;

    /// Sends `bytes` as they are, with `fds` attached to the first byte.
    pub fn send_raw(stream: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        crate::sys::send_with_fds(stream.as_fd(), bytes, fds)
    }

    /// Receives what one `recvmsg` brings (at most `max` bytes) and the descriptors
    /// that came with it; an empty buffer is end of stream.
    pub fn recv_raw(stream: &UnixStream, max: usize) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
        let mut buf = vec![0u8; max];
        let mut fds = Vec::new();
        let got = crate::sys::recv_with_fds(stream.as_fd(), &mut buf, &mut fds)?;
        buf.truncate(got.len);
        Ok((buf, fds))
    }

    /// A frame: the big-endian length of `body`, then `body`.
    #[must_use]
    pub fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(body.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes()
            .to_vec();
        out.extend_from_slice(body);
        out
    }
}
