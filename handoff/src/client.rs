//! The new process's side: take the descriptors over, say when serving, and learn
//! whether the old daemon let go.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use crate::address::{self, Address, AddressError, ConnectError};
use crate::manifest::{self, Manifest, ManifestError, NamedFds};
use crate::policy::{self, Peer, PeerPolicy, Rejection};
use crate::protocol::{Conn, Message, ProtocolError};
use crate::step::{Step, reached};
use crate::sys;

/// How long a vanished peer gets to show up as exited before we assume it lives.
const EXIT_WAIT: Duration = Duration::from_secs(1);

/// What the caller must do after a failed take-over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// No old daemon serves (none was there, or it died): start fresh from the
    /// pins, using any descriptors the error salvaged.
    StartFresh,
    /// The old daemon serves on (it refused, called it off, or may still be
    /// alive): do not serve; finish anything begun and exit.
    Exit,
}

/// Why a take-over did not happen (or did not complete).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TakeOverError {
    /// Nobody listens at the address.
    #[error("no daemon to take over from at {address}: {source}")]
    NoOldProcess {
        /// The address.
        address: Address,
        /// The failed connect.
        #[source]
        source: io::Error,
    },
    /// Connecting failed for another reason than nobody listening (permissions,
    /// resources): whether an old daemon serves is unknown.
    #[error("connecting to {address}: {source}")]
    Connect {
        /// The address.
        address: Address,
        /// The failed connect.
        #[source]
        source: io::Error,
    },
    /// The address is unsafe to use.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The process listening there is not trusted.
    #[error("the process serving {address} is not trusted: {rejection}")]
    UntrustedOld {
        /// The address.
        address: Address,
        /// Why.
        #[source]
        rejection: Rejection,
    },
    /// The old daemon closed the connection without sending anything and is still
    /// alive: it rejected us (see its log).
    #[error("the daemon at {address} (pid {}) closed the connection without a manifest: it rejected this process (see its log)", old.pid)]
    Rejected {
        /// The address.
        address: Address,
        /// The old daemon.
        old: Peer,
    },
    /// The old daemon died during the transfer.
    #[error("the old daemon (pid {}) died while we waited for {waiting_for}; start fresh from the pins", old.pid)]
    OldDied {
        /// The old daemon.
        old: Peer,
        /// The message waited for.
        waiting_for: &'static str,
        /// The manifest, if it arrived.
        manifest: Option<Box<Manifest>>,
        /// The descriptors that arrived (listeners keep their queued connections).
        salvaged: NamedFds,
    },
    /// The old daemon called it off and serves on.
    #[error("the old daemon (pid {}) called the take-over off: {reason}", old.pid)]
    Aborted {
        /// The old daemon.
        old: Peer,
        /// Its reason.
        reason: String,
    },
    /// The manifest did not hold: we told the old daemon so; it serves on.
    #[error("refused the old daemon's manifest: {source}")]
    InvalidManifest {
        /// What is wrong.
        #[source]
        source: ManifestError,
    },
    /// The old daemon broke the protocol, went quiet, or closed while alive.
    #[error("take-over from pid {} failed: {source}", old.pid)]
    Protocol {
        /// The old daemon.
        old: Peer,
        /// What went wrong.
        #[source]
        source: ProtocolError,
    },
}

impl TakeOverError {
    /// What the caller must do now.
    #[must_use]
    pub fn fallback(&self) -> Fallback {
        match self {
            Self::NoOldProcess { .. } | Self::OldDied { .. } => Fallback::StartFresh,
            _ => Fallback::Exit,
        }
    }

    /// The descriptors that arrived before the old daemon died (empty otherwise).
    #[must_use]
    pub fn into_salvaged(self) -> NamedFds {
        match self {
            Self::OldDied { salvaged, .. } => salvaged,
            _ => NamedFds::default(),
        }
    }
}

/// The descriptors taken over, with the old daemon quiesced. Reconcile state,
/// start serving on the listeners, then call [`Received::serving`]. Dropping it
/// instead calls the handover off: the old daemon resumes.
#[derive(Debug)]
pub struct Received {
    /// What the old daemon sent.
    pub manifest: Manifest,
    /// The descriptors, by name, each checked to be the kind the manifest says.
    pub fds: NamedFds,
    conn: Conn,
    old: Peer,
}

/// The old daemon let go (or vanished): this process is the one serving.
#[derive(Debug)]
pub struct Released {
    conn: Option<Conn>,
    old: Peer,
}

impl Released {
    /// The old daemon.
    #[must_use]
    pub fn old(&self) -> Peer {
        self.old
    }

    /// Whether the old daemon died before confirming (it stopped accepting either
    /// way).
    #[must_use]
    pub fn old_vanished(&self) -> bool {
        self.conn.is_none()
    }

    /// Waits up to `timeout` (`None`: forever) for the old daemon to exit (its end
    /// of the connection closes). Until then keep this value: the old daemon
    /// takes back if this end closes while it drains. Returns whether it exited.
    pub fn wait_old_exit(self, timeout: Option<Duration>) -> bool {
        let Some(conn) = &self.conn else { return true };
        match sys::poll_readable(conn.fd(), timeout) {
            Ok(true) => match conn.recv("the old daemon's exit") {
                Err(e) if e.peer_gone() => true,
                Err(e) => {
                    tracing::warn!(error = %e, "the old daemon sent garbage after releasing");
                    false
                }
                Ok((m, _)) => {
                    tracing::warn!(
                        message = m.name(),
                        "the old daemon sent a message after releasing"
                    );
                    false
                }
            },
            Ok(false) => false,
            Err(_) => true,
        }
    }
}

impl Received {
    /// The old daemon.
    #[must_use]
    pub fn old(&self) -> Peer {
        self.old
    }

    /// Tells the old daemon this process serves, and waits for it to let go.
    /// `Ok` means serve on (the old released, or died); an error means the old
    /// daemon resumed: stop accepting, finish in-flight work, and exit
    /// ([`Fallback::Exit`]).
    pub fn serving(self) -> Result<Released, TakeOverError> {
        let old = self.old;
        // A failed send may follow an ABORT the old daemon sent before closing:
        // the receive below still reads it.
        match self.conn.send(&Message::Serving, &[]) {
            Err(e) if !e.peer_gone() => return Err(TakeOverError::Protocol { old, source: e }),
            _ => {}
        }
        reached(Step::NewServingSent);
        match self.conn.recv("RELEASED") {
            Ok((Message::Released, _)) => {}
            Ok((Message::Abort { reason }, _)) => {
                return Err(TakeOverError::Aborted { old, reason });
            }
            Ok((other, _)) => {
                return Err(TakeOverError::Protocol {
                    old,
                    source: ProtocolError::Unexpected {
                        expected: "RELEASED",
                        got: other.name(),
                    },
                });
            }
            Err(e) if e.peer_gone() && policy::process_exited(old.pid, EXIT_WAIT) => {
                tracing::warn!(
                    pid = old.pid,
                    "the old daemon died before RELEASED; serving alone"
                );
                return Ok(Released { conn: None, old });
            }
            Err(source) => return Err(TakeOverError::Protocol { old, source }),
        }
        reached(Step::NewReleasedReceived);
        tracing::info!(pid = old.pid, "the old daemon released; serving");
        Ok(Released {
            conn: Some(self.conn),
            old,
        })
    }

    /// Calls the handover off, telling the old daemon why; it resumes.
    pub fn abort(self, reason: &str) {
        let _ = self.conn.send(
            &Message::Abort {
                reason: reason.to_owned(),
            },
            &[],
        );
    }
}

/// Takes over from the daemon serving `address`: connects, checks that the
/// process there passes `policy`, and runs the protocol up to QUIESCED; `timeout`
/// bounds each wait. `label` names this process in the old daemon's log.
pub fn take_over(
    address: &Address,
    policy: &PeerPolicy,
    label: &str,
    timeout: Duration,
) -> Result<Received, TakeOverError> {
    let stream = match address::connect(address) {
        Ok(s) => s,
        Err(ConnectError::Unsafe(e)) => return Err(e.into()),
        Err(ConnectError::Io(source))
            if matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(TakeOverError::NoOldProcess {
                address: address.clone(),
                source,
            });
        }
        Err(ConnectError::Io(source)) => {
            return Err(TakeOverError::Connect {
                address: address.clone(),
                source,
            });
        }
    };
    reached(Step::NewConnected);
    let old = policy
        .check(stream.as_fd())
        .map_err(|rejection| TakeOverError::UntrustedOld {
            address: address.clone(),
            rejection,
        })?;
    let conn = Conn::new(stream, timeout).map_err(|source| TakeOverError::Protocol {
        old,
        source: ProtocolError::Io {
            doing: "setting the send timeout".into(),
            source,
        },
    })?;
    // Before the manifest a hang-up is a rejection if the old daemon lives on.
    let before_manifest = |e: ProtocolError, waiting_for| {
        if !e.peer_gone() {
            TakeOverError::Protocol { old, source: e }
        } else if policy::process_exited(old.pid, EXIT_WAIT) {
            TakeOverError::OldDied {
                old,
                waiting_for,
                manifest: None,
                salvaged: NamedFds::default(),
            }
        } else {
            TakeOverError::Rejected {
                address: address.clone(),
                old,
            }
        }
    };
    conn.send(
        &Message::Hello {
            pid: std::process::id(),
            label: label.to_owned(),
        },
        &[],
    )
    .map_err(|e| before_manifest(e, "MANIFEST"))?;
    reached(Step::NewHelloSent);
    let (manifest, fds) = match conn.recv("MANIFEST") {
        Ok((Message::Manifest(m), fds)) => (m, fds),
        Ok((Message::Abort { reason }, _)) => return Err(TakeOverError::Aborted { old, reason }),
        Ok((other, _)) => {
            return Err(TakeOverError::Protocol {
                old,
                source: conn.refuse("MANIFEST", &other),
            });
        }
        Err(e) => return Err(before_manifest(e, "MANIFEST")),
    };
    reached(Step::NewManifestReceived);
    let fds = match validate(&manifest, fds) {
        Ok(fds) => fds,
        Err(source) => {
            tracing::warn!(pid = old.pid, error = %source, "refusing the old daemon's manifest");
            let _ = conn.send(
                &Message::Abort {
                    reason: source.to_string(),
                },
                &[],
            );
            return Err(TakeOverError::InvalidManifest { source });
        }
    };
    tracing::info!(
        pid = old.pid,
        label = manifest.label,
        fds = fds.len(),
        "manifest received"
    );
    match conn.send(&Message::ReadyToTakeOver, &[]) {
        // As for SERVING: an ABORT may wait to be read.
        Err(e) if !e.peer_gone() => return Err(TakeOverError::Protocol { old, source: e }),
        _ => {}
    }
    reached(Step::NewReadySent);
    match conn.recv("QUIESCED") {
        Ok((Message::Quiesced, _)) => {}
        Ok((Message::Abort { reason }, _)) => return Err(TakeOverError::Aborted { old, reason }),
        Ok((other, _)) => {
            return Err(TakeOverError::Protocol {
                old,
                source: conn.refuse("QUIESCED", &other),
            });
        }
        Err(e) => return Err(lost(old, e, "QUIESCED", manifest, fds)),
    }
    reached(Step::NewQuiescedReceived);
    Ok(Received {
        manifest,
        fds,
        conn,
        old,
    })
}

/// The connection failed after the manifest: a dead old daemon leaves us its
/// descriptors; a live one (or garbage) means it serves on.
fn lost(
    old: Peer,
    e: ProtocolError,
    waiting_for: &'static str,
    manifest: Manifest,
    fds: NamedFds,
) -> TakeOverError {
    if e.peer_gone() && policy::process_exited(old.pid, EXIT_WAIT) {
        TakeOverError::OldDied {
            old,
            waiting_for,
            manifest: Some(Box::new(manifest)),
            salvaged: fds,
        }
    } else {
        TakeOverError::Protocol { old, source: e }
    }
}

/// Pairs the received descriptors with the manifest and checks each one's kind.
fn validate(
    manifest: &Manifest,
    fds: Vec<std::os::fd::OwnedFd>,
) -> Result<NamedFds, ManifestError> {
    manifest::check_entries(&manifest.fds)?;
    let mut named = NamedFds::default();
    for (entry, fd) in manifest.fds.iter().zip(fds) {
        manifest::check_kind(&entry.name, entry.kind, fd.as_fd())?;
        named.push(entry.clone(), fd);
    }
    Ok(named)
}
