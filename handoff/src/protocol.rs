//! Frames and messages: a 4-byte big-endian length, then that many bytes of JSON
//! holding a `version` and a `type`; descriptors ride on the first byte of the frame
//! that declares them (only MANIFEST does).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;
use crate::sys;

/// The protocol version this crate speaks; a frame with another is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame body accepted, in bytes. A manifest of the most descriptors one
/// message carries, with long names, fits easily.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Message {
    /// New → old: who is asking.
    Hello { pid: u32, label: String },
    /// Old → new, with the descriptors.
    Manifest(Manifest),
    /// New → old: the descriptors are valid; stop writing state.
    ReadyToTakeOver,
    /// Old → new: state writes stopped.
    Quiesced,
    /// New → old: serving on the received listeners.
    Serving,
    /// Old → new: the old stopped accepting and will exit.
    Released,
    /// Either way: giving up; the old keeps (or goes back to) serving.
    Abort { reason: String },
}

impl Message {
    pub(crate) const fn name(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "HELLO",
            Self::Manifest(_) => "MANIFEST",
            Self::ReadyToTakeOver => "READY_TO_TAKE_OVER",
            Self::Quiesced => "QUIESCED",
            Self::Serving => "SERVING",
            Self::Released => "RELEASED",
            Self::Abort { .. } => "ABORT",
        }
    }

    /// How many descriptors travel with this message.
    fn fd_count(&self) -> usize {
        match self {
            Self::Manifest(m) => m.fds.len(),
            _ => 0,
        }
    }
}

/// A peer broke the protocol, went away, or was too slow.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A socket call failed.
    #[error("{doing}: {source}")]
    Io {
        /// What was being done (`sending MANIFEST`).
        doing: String,
        /// The failed call.
        #[source]
        source: io::Error,
    },
    /// Nothing (or not all of a frame) arrived in time.
    #[error("no {waiting_for} within {after:?}")]
    Timeout {
        /// The message waited for.
        waiting_for: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The peer closed the connection between frames.
    #[error("the peer closed the connection while we waited for {waiting_for}")]
    Closed {
        /// The message waited for.
        waiting_for: &'static str,
    },
    /// The peer closed the connection inside a frame.
    #[error(
        "the connection closed inside a frame (waiting for {waiting_for}): {got} of {expected} bytes"
    )]
    Truncated {
        /// The message waited for.
        waiting_for: &'static str,
        /// Bytes of the frame part that arrived.
        got: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// A frame length above the cap.
    #[error("frame of {len} bytes announced; the limit is {max}")]
    Oversize {
        /// The announced length.
        len: u64,
        /// [`MAX_FRAME_LEN`].
        max: usize,
    },
    /// A frame of length 0.
    #[error("empty frame")]
    Empty,
    /// The frame body is not JSON.
    #[error("frame is not JSON: {source}")]
    BadJson {
        /// The parser's error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The frame has no numeric `version`.
    #[error("frame has no numeric \"version\" field")]
    NoVersion,
    /// Another protocol version.
    #[error("frame of protocol version {got}; this side speaks version {supported}")]
    WrongVersion {
        /// The frame's version.
        got: u64,
        /// [`PROTOCOL_VERSION`].
        supported: u32,
    },
    /// JSON that is no message of this protocol.
    #[error("frame is not a valid message: {source}")]
    BadMessage {
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A valid message, but not one that may come now.
    #[error("expected {expected}, got {got}")]
    Unexpected {
        /// What the protocol allows here.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
    /// Descriptors that do not match what the frame declares; all were closed.
    #[error(
        "{message} declares {declared} descriptors but {received} came with it; all were closed"
    )]
    FdCount {
        /// The message.
        message: &'static str,
        /// How many it declares.
        declared: usize,
        /// How many arrived.
        received: usize,
    },
    /// The kernel dropped descriptors that did not fit the control buffer.
    #[error("more descriptors than one message can carry arrived; all were closed")]
    ControlTruncated,
}

impl ProtocolError {
    /// The peer is gone: it closed, reset, or the pipe broke.
    pub(crate) fn peer_gone(&self) -> bool {
        match self {
            Self::Closed { .. } | Self::Truncated { .. } => true,
            Self::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::NotConnected
            ),
            _ => false,
        }
    }
}

/// Encodes `message` as one frame.
pub(crate) fn encode(message: &Message) -> Vec<u8> {
    let mut value = serde_json::to_value(message).unwrap_or_default();
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("version".into(), PROTOCOL_VERSION.into());
    }
    let body = serde_json::to_vec(&value).unwrap_or_default();
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Decodes a frame body (without its length prefix).
pub(crate) fn decode(body: &[u8]) -> Result<Message, ProtocolError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|source| ProtocolError::BadJson { source })?;
    let version = value
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .ok_or(ProtocolError::NoVersion)?;
    if version != u64::from(PROTOCOL_VERSION) {
        return Err(ProtocolError::WrongVersion {
            got: version,
            supported: PROTOCOL_VERSION,
        });
    }
    serde_json::from_value(value).map_err(|source| ProtocolError::BadMessage { source })
}

/// One end of a handoff connection, with the timeout every wait on it gets.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: UnixStream,
    timeout: Duration,
}

impl Conn {
    pub(crate) fn new(stream: UnixStream, timeout: Duration) -> io::Result<Self> {
        stream.set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        Ok(Self { stream, timeout })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// Sends `message` with `fds` (which must be as many as it declares).
    pub(crate) fn send(
        &self,
        message: &Message,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ProtocolError> {
        debug_assert_eq!(message.fd_count(), fds.len());
        sys::send_with_fds(self.fd(), &encode(message), fds).map_err(|source| ProtocolError::Io {
            doing: format!("sending {}", message.name()),
            source,
        })
    }

    /// Answers `got`, which may not come now, with ABORT; returns the error.
    pub(crate) fn refuse(&self, expected: &'static str, got: &Message) -> ProtocolError {
        let error = ProtocolError::Unexpected {
            expected,
            got: got.name(),
        };
        let _ = self.send(
            &Message::Abort {
                reason: error.to_string(),
            },
            &[],
        );
        error
    }

    /// Receives one frame, waiting at most the connection's timeout for all of it.
    /// Returns the message and exactly the descriptors it declares; any other
    /// descriptors that came are closed and make this an error.
    pub(crate) fn recv(
        &self,
        waiting_for: &'static str,
    ) -> Result<(Message, Vec<OwnedFd>), ProtocolError> {
        let deadline = Instant::now() + self.timeout;
        let mut fds = Vec::new();
        let mut head = [0u8; 4];
        self.fill(&mut head, &mut fds, deadline, waiting_for, true)?;
        let len = u32::from_be_bytes(head);
        let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
        if len_usize > MAX_FRAME_LEN {
            return Err(ProtocolError::Oversize {
                len: u64::from(len),
                max: MAX_FRAME_LEN,
            });
        }
        if len == 0 {
            return Err(ProtocolError::Empty);
        }
        let mut body = vec![0u8; len_usize];
        self.fill(&mut body, &mut fds, deadline, waiting_for, false)?;
        let message = decode(&body)?;
        if fds.len() != message.fd_count() {
            return Err(ProtocolError::FdCount {
                message: message.name(),
                declared: message.fd_count(),
                received: fds.len(),
            });
        }
        Ok((message, fds))
    }

    /// Reads exactly `buf.len()` bytes, collecting descriptors into `fds`.
    fn fill(
        &self,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
        deadline: Instant,
        waiting_for: &'static str,
        frame_start: bool,
    ) -> Result<(), ProtocolError> {
        let mut got = 0;
        while got < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ProtocolError::Timeout {
                    waiting_for,
                    after: self.timeout,
                });
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|source| ProtocolError::Io {
                    doing: "setting the receive timeout".into(),
                    source,
                })?;
            let rest = buf.get_mut(got..).unwrap_or_default();
            let r = match sys::recv_with_fds(self.fd(), rest, fds) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ProtocolError::Timeout {
                        waiting_for,
                        after: self.timeout,
                    });
                }
                Err(source) => {
                    return Err(ProtocolError::Io {
                        doing: format!("receiving {waiting_for}"),
                        source,
                    });
                }
            };
            if r.truncated {
                return Err(ProtocolError::ControlTruncated);
            }
            if r.len == 0 {
                return Err(if frame_start && got == 0 {
                    ProtocolError::Closed { waiting_for }
                } else {
                    ProtocolError::Truncated {
                        waiting_for,
                        got,
                        expected: buf.len(),
                    }
                });
            }
            got += r.len;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{FdEntry, FdKind};

    #[test]
    fn messages_round_trip_through_frames() {
        let messages = [
            Message::Hello {
                pid: 7,
                label: "new".into(),
            },
            Message::Manifest(Manifest {
                label: "old".into(),
                pid: 3,
                fds: vec![FdEntry {
                    name: "admin".into(),
                    kind: FdKind::Listener,
                }],
                extra: serde_json::json!({"generation": 1}),
            }),
            Message::ReadyToTakeOver,
            Message::Quiesced,
            Message::Serving,
            Message::Released,
            Message::Abort {
                reason: "no".into(),
            },
        ];
        for m in messages {
            let frame = encode(&m);
            let (head, body) = frame.split_at(4);
            assert_eq!(
                u32::from_be_bytes(head.try_into().unwrap()) as usize,
                body.len()
            );
            assert_eq!(decode(body).unwrap(), m);
        }
    }

    #[test]
    fn the_wire_form_is_documented_json() {
        let frame = encode(&Message::ReadyToTakeOver);
        assert_eq!(
            std::str::from_utf8(frame.get(4..).unwrap()).unwrap(),
            r#"{"type":"READY_TO_TAKE_OVER","version":1}"#
        );
    }

    #[test]
    fn bad_bodies_are_refused_with_what_is_wrong() {
        let cases: [(&[u8], &str); 5] = [
            (b"{nope", "not JSON"),
            (br#"{"type":"SERVING"}"#, "no numeric \"version\""),
            (
                br#"{"type":"SERVING","version":2}"#,
                "version 2; this side speaks version 1",
            ),
            (br#"{"type":"TEA","version":1}"#, "not a valid message"),
            (br#"{"type":"HELLO","version":1}"#, "not a valid message"),
        ];
        for (body, want) in cases {
            let err = decode(body).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should say {want:?}");
        }
    }
}
