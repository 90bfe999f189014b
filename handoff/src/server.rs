//! The old daemon's side: listen, check the peer, hand over, and step back only
//! when the successor serves.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use crate::address::{self, Address, AddressError, FileId};
use crate::manifest::{self, FdEntry, FdKind, Manifest, ManifestError, NamedFds};
use crate::policy::{self, Peer, PeerPolicy, Rejection};
use crate::protocol::{Conn, Message, ProtocolError};
use crate::step::{Step, reached};
use crate::sys;

/// What the old daemon offers: named descriptors (each checked to be its kind when
/// added) and a label and extra data for the manifest.
#[derive(Debug, Default)]
pub struct Offer {
    label: String,
    extra: serde_json::Value,
    fds: NamedFds,
}

impl Offer {
    /// An empty offer; `label` names the sender in logs.
    #[must_use]
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            ..Self::default()
        }
    }

    /// Adds a duplicate of `fd` under `name`, after checking it is a `kind`. The
    /// caller keeps its own descriptor and goes on using it until the handover.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        kind: FdKind,
        fd: impl AsFd,
    ) -> Result<&mut Self, ManifestError> {
        let name = name.into();
        manifest::check_kind(&name, kind, fd.as_fd())?;
        let mut entries = self.fds.manifest_entries();
        entries.push(FdEntry {
            name: name.clone(),
            kind,
        });
        manifest::check_entries(&entries)?;
        let dup = fd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| ManifestError::Inspect {
                name: name.clone(),
                source,
            })?;
        self.fds.push(FdEntry { name, kind }, dup);
        Ok(self)
    }

    /// Sets the application data sent along in the manifest.
    pub fn set_extra(&mut self, extra: serde_json::Value) -> &mut Self {
        self.extra = extra;
        self
    }

    fn manifest(&self) -> Manifest {
        Manifest {
            label: self.label.clone(),
            pid: std::process::id(),
            fds: self.fds.manifest_entries(),
            extra: self.extra.clone(),
        }
    }
}

/// What the old daemon does when the successor asks it to stop writing state, and
/// when a handover is called off after that.
pub trait Callbacks {
    /// Stop writing to maps (and any other handed-over state) and return once no
    /// write is in flight. An error calls the handover off; the successor is told
    /// the reason.
    fn on_quiesce(&mut self) -> Result<(), String>;

    /// The handover failed after `on_quiesce`: start writing again. The successor
    /// may have reconciled state in between, so re-sync rather than assume.
    fn on_resume(&mut self);
}

/// Why a handover with a trusted peer did not happen; the old daemon serves on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffFailed {
    /// The peer broke the protocol, vanished or was too slow.
    #[error("handoff with pid {} failed: {source}", peer.pid)]
    Protocol {
        /// The peer.
        peer: Peer,
        /// What went wrong.
        #[source]
        source: ProtocolError,
    },
    /// The peer called it off.
    #[error("pid {} called the handoff off: {reason}", peer.pid)]
    PeerAborted {
        /// The peer.
        peer: Peer,
        /// Its reason.
        reason: String,
    },
    /// `on_quiesce` refused.
    #[error("quiescing failed, handoff to pid {} called off: {reason}", peer.pid)]
    QuiesceFailed {
        /// The peer.
        peer: Peer,
        /// The callback's reason.
        reason: String,
    },
}

/// How one [`HandoffServer::serve_one`] ended.
#[derive(Debug)]
#[must_use]
pub enum Outcome {
    /// The successor serves. Stop accepting, finish in-flight work, then call
    /// [`Handover::finish`] and exit unless it reports the successor died.
    HandedOver(Handover),
    /// The handover failed; `on_resume` ran if `on_quiesce` had. Keep serving.
    Resumed(HandoffFailed),
    /// A peer was turned away before anything was sent to it. Keep serving.
    Rejected(Rejection),
    /// Nobody connected within the accept timeout.
    NoPeer,
}

/// The server could not go on (the listening socket failed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// `accept` or `poll` failed.
    #[error("{address}: accepting a handoff connection: {source}")]
    Accept {
        /// The address.
        address: Address,
        /// The failed call.
        #[source]
        source: io::Error,
    },
}

/// The old daemon's end of a finished handover; keep it until exit.
#[derive(Debug)]
pub struct Handover {
    conn: Conn,
    peer: Peer,
}

/// Whether the successor survived the old daemon's drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// It is alive: exit.
    SuccessorAlive,
    /// It died after taking over: resume accepting (and call `on_resume`).
    SuccessorDied,
}

impl Handover {
    /// The successor.
    #[must_use]
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// Checks, after the drain and waiting at most `grace`, whether the successor
    /// is still there: it keeps its end open while it lives, so a hang-up from a
    /// process that has exited means it died and the old daemon must take back.
    pub fn finish(self, grace: Duration) -> Finish {
        let hung_up = match sys::poll_readable(self.conn.fd(), Some(grace)) {
            Ok(false) => false,
            Ok(true) => match self.conn.recv("nothing") {
                Err(e) if e.peer_gone() => true,
                Err(e) => {
                    tracing::warn!(pid = self.peer.pid, error = %e, "successor sent garbage after the handover");
                    false
                }
                Ok((m, _)) => {
                    tracing::warn!(
                        pid = self.peer.pid,
                        message = m.name(),
                        "successor sent a message after the handover"
                    );
                    false
                }
            },
            Err(_) => true,
        };
        if hung_up && policy::process_exited(self.peer.pid, Duration::from_secs(1)) {
            tracing::warn!(
                pid = self.peer.pid,
                "the successor died after taking over; taking back"
            );
            Finish::SuccessorDied
        } else {
            tracing::info!(pid = self.peer.pid, "successor serving; handover complete");
            Finish::SuccessorAlive
        }
    }
}

/// The old daemon's handoff socket.
#[derive(Debug)]
pub struct HandoffServer {
    listener: UnixListener,
    address: Address,
    policy: PeerPolicy,
    file: Option<FileId>,
    accept_timeout: Option<Duration>,
}

impl HandoffServer {
    /// Listens at `address` for a successor, trusting peers that pass `policy`. A
    /// path's directory must be ours with mode 0700; a socket file left by a crash
    /// is replaced, a live server is refused.
    pub fn bind(address: &Address, policy: PeerPolicy) -> Result<Self, AddressError> {
        let (listener, file) = address::bind(address)?;
        tracing::info!(address = %address, "handoff socket listening");
        Ok(Self::from_parts(listener, address, policy, file))
    }

    /// Listens at `address` after taking over from the daemon that listened there:
    /// its socket file is replaced atomically; an abstract name is retried for up
    /// to `wait` while the old process still holds it.
    pub fn bind_after_takeover(
        address: &Address,
        policy: PeerPolicy,
        wait: Duration,
    ) -> Result<Self, AddressError> {
        let (listener, file) = address::bind_replacing(address, wait)?;
        tracing::info!(address = %address, "handoff socket listening (took the address over)");
        Ok(Self::from_parts(listener, address, policy, file))
    }

    fn from_parts(
        listener: UnixListener,
        address: &Address,
        policy: PeerPolicy,
        file: Option<FileId>,
    ) -> Self {
        Self {
            listener,
            address: address.clone(),
            policy,
            file,
            accept_timeout: None,
        }
    }

    /// Makes [`HandoffServer::serve_one`] return [`Outcome::NoPeer`] when nobody
    /// connects within `timeout` (`None`, the default: wait forever).
    pub fn set_accept_timeout(&mut self, timeout: Option<Duration>) {
        self.accept_timeout = timeout;
    }

    /// The address served.
    #[must_use]
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Waits for one peer and runs the protocol with it; `timeout` bounds each
    /// wait for the peer's next message. See the crate docs for the sequence.
    pub fn serve_one(
        &self,
        offer: &Offer,
        callbacks: &mut dyn Callbacks,
        timeout: Duration,
    ) -> Result<Outcome, ServeError> {
        let accept_err = |source| ServeError::Accept {
            address: self.address.clone(),
            source,
        };
        if !sys::poll_readable(self.listener.as_fd(), self.accept_timeout).map_err(accept_err)? {
            return Ok(Outcome::NoPeer);
        }
        let stream = match self.listener.accept() {
            Ok((s, _)) => s,
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    || e.kind() == io::ErrorKind::ConnectionAborted =>
            {
                return Ok(Outcome::NoPeer);
            }
            Err(e) => return Err(accept_err(e)),
        };
        reached(Step::OldAccepted);
        let peer = match self.policy.check(stream.as_fd()) {
            Ok(peer) => peer,
            Err(rejection) => {
                // Nothing is sent: the connection closes when `stream` drops.
                tracing::warn!(address = %self.address, reason = %rejection, "handoff peer rejected");
                return Ok(Outcome::Rejected(rejection));
            }
        };
        let conn = match Conn::new(stream, timeout) {
            Ok(c) => c,
            Err(source) => {
                return Ok(self.failed(HandoffFailed::Protocol {
                    peer,
                    source: ProtocolError::Io {
                        doing: "setting the send timeout".into(),
                        source,
                    },
                }));
            }
        };
        Ok(match self.run(&conn, peer, offer, callbacks) {
            Ok(()) => Outcome::HandedOver(Handover { conn, peer }),
            Err(failure) => self.failed(failure),
        })
    }

    fn failed(&self, failure: HandoffFailed) -> Outcome {
        tracing::warn!(address = %self.address, error = %failure, "handoff failed; serving on");
        Outcome::Resumed(failure)
    }

    /// The protocol after the credential check. On every failure after
    /// `on_quiesce`, `on_resume` runs before returning, and a peer still there is
    /// told ABORT.
    fn run(
        &self,
        conn: &Conn,
        peer: Peer,
        offer: &Offer,
        callbacks: &mut dyn Callbacks,
    ) -> Result<(), HandoffFailed> {
        let proto = |source| HandoffFailed::Protocol { peer, source };
        match conn.recv("HELLO").map_err(proto)? {
            (Message::Hello { pid, label }, _) => {
                tracing::info!(
                    peer_pid = peer.pid,
                    claimed_pid = pid,
                    uid = peer.uid,
                    label,
                    "successor says hello"
                );
            }
            (other, _) => {
                return Err(HandoffFailed::Protocol {
                    peer,
                    source: conn.refuse("HELLO", &other),
                });
            }
        }
        reached(Step::OldHelloReceived);
        conn.send(&Message::Manifest(offer.manifest()), &offer.fds.borrowed())
            .map_err(proto)?;
        reached(Step::OldManifestSent);
        match conn.recv("READY_TO_TAKE_OVER").map_err(proto)? {
            (Message::ReadyToTakeOver, _) => {}
            (Message::Abort { reason }, _) => {
                return Err(HandoffFailed::PeerAborted { peer, reason });
            }
            (other, _) => {
                return Err(HandoffFailed::Protocol {
                    peer,
                    source: conn.refuse("READY_TO_TAKE_OVER", &other),
                });
            }
        }
        reached(Step::OldReadyReceived);
        if let Err(reason) = callbacks.on_quiesce() {
            let _ = conn.send(
                &Message::Abort {
                    reason: format!("the old daemon could not quiesce: {reason}"),
                },
                &[],
            );
            return Err(HandoffFailed::QuiesceFailed { peer, reason });
        }
        reached(Step::OldQuiesced);
        tracing::info!(
            pid = peer.pid,
            "quiesced; waiting for the successor to serve"
        );
        let after_quiesce = |failure: HandoffFailed, callbacks: &mut dyn Callbacks| {
            callbacks.on_resume();
            failure
        };
        if let Err(e) = conn.send(&Message::Quiesced, &[]) {
            return Err(after_quiesce(proto(e), callbacks));
        }
        reached(Step::OldQuiescedSent);
        match conn.recv("SERVING") {
            Ok((Message::Serving, _)) => {}
            Ok((Message::Abort { reason }, _)) => {
                return Err(after_quiesce(
                    HandoffFailed::PeerAborted { peer, reason },
                    callbacks,
                ));
            }
            Ok((other, _)) => {
                let failure = HandoffFailed::Protocol {
                    peer,
                    source: conn.refuse("SERVING", &other),
                };
                return Err(after_quiesce(failure, callbacks));
            }
            Err(e) => {
                // A slow successor may still start serving: tell it we go on, so it
                // steps back rather than serve beside us.
                if !e.peer_gone() {
                    let _ = conn.send(
                        &Message::Abort {
                            reason: format!("the old daemon resumes: {e}"),
                        },
                        &[],
                    );
                }
                return Err(after_quiesce(proto(e), callbacks));
            }
        }
        reached(Step::OldServingReceived);
        if let Err(e) = conn.send(&Message::Released, &[]) {
            return Err(after_quiesce(proto(e), callbacks));
        }
        reached(Step::OldReleasedSent);
        tracing::info!(
            pid = peer.pid,
            "successor serving; stop accepting and drain"
        );
        Ok(())
    }
}

impl Drop for HandoffServer {
    fn drop(&mut self) {
        // Remove the socket file only if it is still the one we bound: a successor
        // may have renamed its own over it.
        if let (Address::Path(path), Some(ours)) = (&self.address, self.file)
            && address::file_id(path) == Some(ours)
        {
            let _ = std::fs::remove_file(path);
        }
    }
}
