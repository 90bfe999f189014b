//! The protocol steps, named, and the failpoints that can kill a process at each.

use std::fmt;

/// Environment variable naming the step at which this process kills itself
/// (`SIGKILL`), e.g. `HANDOVER_HANDOFF_FAILPOINT=old.manifest_sent`. Read only when
/// the crate is built with the `failpoints` feature.
pub const FAILPOINT_VAR: &str = "HANDOVER_HANDOFF_FAILPOINT";

/// Which process runs a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The running daemon that hands over.
    Old,
    /// The process that takes over.
    New,
}

/// A point in the protocol, just after the event it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Old: a connection was accepted; its credentials are not checked yet.
    OldAccepted,
    /// Old: the peer passed the credential check and said HELLO.
    OldHelloReceived,
    /// Old: the manifest and the descriptors were sent.
    OldManifestSent,
    /// Old: READY_TO_TAKE_OVER arrived; `on_quiesce` has not run yet.
    OldReadyReceived,
    /// Old: `on_quiesce` returned; QUIESCED is not sent yet.
    OldQuiesced,
    /// Old: QUIESCED was sent.
    OldQuiescedSent,
    /// Old: SERVING arrived; RELEASED is not sent yet.
    OldServingReceived,
    /// Old: RELEASED was sent; the old no longer accepts.
    OldReleasedSent,
    /// New: connected to the old daemon.
    NewConnected,
    /// New: HELLO was sent.
    NewHelloSent,
    /// New: the manifest and descriptors arrived, not validated yet.
    NewManifestReceived,
    /// New: READY_TO_TAKE_OVER was sent.
    NewReadySent,
    /// New: QUIESCED arrived; the caller reconciles and starts serving.
    NewQuiescedReceived,
    /// New: SERVING was sent.
    NewServingSent,
    /// New: RELEASED arrived.
    NewReleasedReceived,
}

impl Step {
    /// Every step in protocol order (old and new interleaved as they happen).
    pub const ALL: [Self; 15] = [
        Self::NewConnected,
        Self::OldAccepted,
        Self::NewHelloSent,
        Self::OldHelloReceived,
        Self::OldManifestSent,
        Self::NewManifestReceived,
        Self::NewReadySent,
        Self::OldReadyReceived,
        Self::OldQuiesced,
        Self::OldQuiescedSent,
        Self::NewQuiescedReceived,
        Self::NewServingSent,
        Self::OldServingReceived,
        Self::OldReleasedSent,
        Self::NewReleasedReceived,
    ];

    /// The failpoint name, `side.event`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::OldAccepted => "old.accepted",
            Self::OldHelloReceived => "old.hello_received",
            Self::OldManifestSent => "old.manifest_sent",
            Self::OldReadyReceived => "old.ready_received",
            Self::OldQuiesced => "old.quiesced",
            Self::OldQuiescedSent => "old.quiesced_sent",
            Self::OldServingReceived => "old.serving_received",
            Self::OldReleasedSent => "old.released_sent",
            Self::NewConnected => "new.connected",
            Self::NewHelloSent => "new.hello_sent",
            Self::NewManifestReceived => "new.manifest_received",
            Self::NewReadySent => "new.ready_sent",
            Self::NewQuiescedReceived => "new.quiesced_received",
            Self::NewServingSent => "new.serving_sent",
            Self::NewReleasedReceived => "new.released_received",
        }
    }

    /// The process that runs this step.
    #[must_use]
    pub const fn side(self) -> Side {
        match self {
            Self::OldAccepted
            | Self::OldHelloReceived
            | Self::OldManifestSent
            | Self::OldReadyReceived
            | Self::OldQuiesced
            | Self::OldQuiescedSent
            | Self::OldServingReceived
            | Self::OldReleasedSent => Side::Old,
            _ => Side::New,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Marks that this process reached `step`: a trace event, and with the `failpoints`
/// feature a `SIGKILL` of this process when [`FAILPOINT_VAR`] names the step.
pub(crate) fn reached(step: Step) {
    tracing::trace!(step = step.name(), "handoff step");
    #[cfg(feature = "failpoints")]
    if std::env::var(FAILPOINT_VAR).is_ok_and(|v| v == step.name()) {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "handoff failpoint {step}: killing process {}",
            std::process::id()
        );
        crate::sys::kill_self();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixed_by_side() {
        let mut names: Vec<_> = Step::ALL.iter().map(|s| s.name()).collect();
        for s in Step::ALL {
            let prefix = match s.side() {
                Side::Old => "old.",
                Side::New => "new.",
            };
            assert!(s.name().starts_with(prefix), "{s}");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Step::ALL.len());
    }
}
