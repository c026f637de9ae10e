//! Typed errors. Messages name what went wrong, never key material or which
//! byte of a MAC differed.

use crate::wire::{AbortCode, HandshakeStatus, ResumeStatus};
use core::fmt;

/// A malformed message or frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The first byte of a transport is neither new (0x00) nor resume (0xFF).
    UnknownTag(u8),
    /// The peer speaks another protocol version.
    UnsupportedVersion(u8),
    /// An unknown status code.
    UnknownStatus(u8),
    /// An unknown frame type.
    UnknownFrameType(u8),
    /// Reserved flag bits were set.
    BadFlags(u8),
    /// A frame length out of range for its type.
    BadLength {
        /// Frame type byte.
        frame_type: u8,
        /// Length field.
        len: usize,
    },
    /// A message shorter than its fixed length.
    Truncated {
        /// Bytes required.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// A peer's public key gave a non-contributory (all-zero) shared secret.
    WeakKey,
    /// Bytes arrived when the protocol expects none (e.g. after a rejection).
    UnexpectedData,
    /// An ACK acknowledged bytes that were never sent.
    BadAck,
    /// Data arrived after the peer closed its stream.
    DataAfterClose,
}

/// Everything that can go wrong in relink's state machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Malformed input from the peer; the transport must be closed.
    Protocol(ProtocolError),
    /// A MAC did not verify: the transport must be closed. Nothing of the
    /// offending message reached the application.
    AuthFailed,
    /// The server refused the handshake.
    HandshakeRejected(HandshakeStatus),
    /// The server refused the resume.
    ResumeRejected(ResumeStatus),
    /// The operation does not fit the current state (e.g. `new_transport`
    /// while a transport is attached, `send` after close).
    InvalidState,
    /// `poll_transmit` needs a larger buffer.
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
    },
    /// The stream reached the per-key byte limit.
    KeyLimitReached,
    /// The session is closed (cleanly or for good).
    Closed,
    /// The transport id is not known to the server.
    UnknownTransport,
    /// The session id is not known to the server.
    UnknownSession,
    /// The server's table of pending transports is full.
    TooManyTransports,
    /// The transport's source (IPv4 address or IPv6 /64) already has
    /// `Config::max_handshakes_per_source` transports in progress
    /// (PROTOCOL.md 3.7): close it.
    SourceLimit,
    /// The transport has already been ended; drop it.
    TransportEnded,
    /// Nothing arrived on the transport within the idle timeout, or the
    /// handshake/resume did not complete in time.
    TimedOut,
    /// No data is available now (not the end of the stream).
    WouldBlock,
    /// The session was aborted (by this side or the peer) with this code.
    Aborted(AbortCode),
    /// The server's answer to the first handshake did not prove the pinned
    /// server key (`Config::pinned_server_key`): a server with another key,
    /// or a man in the middle. The core itself reports such an answer as
    /// [`Error::AuthFailed`] (it costs the transport only, PROTOCOL.md 7.7);
    /// the drivers name it so when it ends the first connect.
    ServerKeyMismatch,
    /// A token was granted (`Connection::accept_client`) on a server
    /// without a static key: tokens are keyed by it.
    NoStaticKey,
    /// A value longer than the protocol allows (a token grant's identity
    /// over 256 bytes).
    TooLong,
    /// An authenticated message whose time stamp lies outside the
    /// freshness window (PROTOCOL.md 6.7): it was held back or replayed, or
    /// the clocks are apart. Nothing of it was acted on; the transport
    /// ends, the session survives (the sender re-sends it, freshly stamped,
    /// on the next transport).
    Stale,
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Protocol(e)
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::UnknownTag(t) => write!(f, "unknown transport tag 0x{t:02x}"),
            ProtocolError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            ProtocolError::UnknownStatus(s) => write!(f, "unknown status code {s}"),
            ProtocolError::UnknownFrameType(t) => write!(f, "unknown frame type {t}"),
            ProtocolError::BadFlags(b) => write!(f, "reserved flags set: 0x{b:02x}"),
            ProtocolError::BadLength { frame_type, len } => {
                write!(f, "length {len} out of range for frame type {frame_type}")
            }
            ProtocolError::Truncated { need, have } => {
                write!(f, "message truncated: need {need} bytes, have {have}")
            }
            ProtocolError::WeakKey => write!(f, "peer key gives a non-contributory secret"),
            ProtocolError::UnexpectedData => write!(f, "unexpected data"),
            ProtocolError::BadAck => write!(f, "acknowledgement beyond bytes sent"),
            ProtocolError::DataAfterClose => write!(f, "data after the peer closed"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Protocol(e) => write!(f, "protocol error: {e}"),
            Error::AuthFailed => write!(f, "authentication failed"),
            Error::HandshakeRejected(s) => write!(f, "handshake rejected by server: {s}"),
            Error::ResumeRejected(s) => write!(f, "resume rejected by server: {s}"),
            Error::InvalidState => write!(f, "operation not valid in the current state"),
            Error::BufferTooSmall { need } => write!(f, "transmit buffer too small: need {need}"),
            Error::KeyLimitReached => write!(f, "per-key byte limit reached"),
            Error::Closed => write!(f, "session closed"),
            Error::UnknownTransport => write!(f, "unknown transport"),
            Error::UnknownSession => write!(f, "unknown session"),
            Error::TooManyTransports => write!(f, "too many pending transports"),
            Error::SourceLimit => write!(
                f,
                "too many handshakes in progress from this source address"
            ),
            Error::TransportEnded => write!(f, "transport ended"),
            Error::TimedOut => write!(f, "timed out"),
            Error::WouldBlock => write!(f, "no data available yet"),
            Error::Aborted(code) => write!(f, "session aborted: {code}"),
            Error::ServerKeyMismatch => write!(f, "the server did not prove the pinned key"),
            Error::NoStaticKey => write!(f, "no static key: this server cannot issue tokens"),
            Error::TooLong => write!(f, "value longer than the protocol allows"),
            Error::Stale => write!(
                f,
                "stale: a time stamp outside the freshness window (held back, replayed, or clocks apart)"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ProtocolError {}
#[cfg(feature = "std")]
impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn rejections_read_as_words_not_variant_names() {
        let h = Error::HandshakeRejected(HandshakeStatus::NoStaticKey).to_string();
        assert!(h.contains("no static key"), "{h}");
        assert!(!h.contains("NoStaticKey"), "{h}");
        let r = Error::ResumeRejected(ResumeStatus::Stale).to_string();
        assert!(r.starts_with("resume rejected by server: stale"), "{r}");
        assert!(!r.contains("Stale"), "{r}");
        for s in [
            ResumeStatus::UnknownSession,
            ResumeStatus::DataUnavailable,
            ResumeStatus::Replayed,
        ] {
            let t = Error::ResumeRejected(s).to_string();
            assert!(!t.contains(&alloc::format!("{s:?}")), "{t}");
        }
    }
}
