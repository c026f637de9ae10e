//! Events the state machines report to their driver.

use crate::error::Error;
use crate::server::{SessionId, TransportId};

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// Both sides closed their streams with authenticated CLOSE frames.
    Clean,
    /// The server no longer knows the session (expired or never existed).
    SessionUnknown,
    /// The server cannot provide the data the client is missing (or vice versa).
    DataUnavailable,
    /// Too many consecutive authentication failures or resume attempts.
    TooManyFailures,
    /// The session waited longer than `resume_timeout` for a transport.
    Expired,
    /// A fatal error.
    Error(Error),
}

/// Something the client state machine reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The first handshake completed; data flows.
    HandshakeDone {
        /// The session's connection id.
        conn_id: u64,
    },
    /// A resume completed on a new transport.
    Resumed {
        /// Resume counter of the new transport.
        counter: u64,
    },
    /// This side resends `[start, end)` of its stream after a resume.
    ResendRange {
        /// First resent stream offset (a frame boundary).
        start: u64,
        /// End of the resent range (own bytes written).
        end: u64,
    },
    /// The current transport must be dropped: it broke, timed out, or
    /// delivered bytes that failed authentication. The session survives;
    /// open a new transport and call `new_transport`.
    TransportLost {
        /// What ended it.
        error: Option<Error>,
    },
    /// The peer closed its stream: after the buffered bytes, `recv` returns 0.
    PeerClosed,
    /// The session is over for good.
    Closed {
        /// Why.
        reason: CloseReason,
    },
    /// A handshake or resume message failed authentication.
    AuthFailed {
        /// What failed.
        reason: Error,
    },
}

/// Something the server state machine reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A new session was established on `transport`.
    HandshakeDone {
        /// The transport.
        transport: TransportId,
        /// The new session.
        session: SessionId,
    },
    /// `session` resumed on `transport`.
    Resumed {
        /// The transport.
        transport: TransportId,
        /// The session.
        session: SessionId,
        /// Resume counter accepted.
        counter: u64,
    },
    /// The server resends `[start, end)` of `session`'s stream.
    ResendRange {
        /// The session.
        session: SessionId,
        /// First resent offset.
        start: u64,
        /// End of the range.
        end: u64,
    },
    /// The driver must close `transport` (after flushing `poll_transmit`,
    /// which may hold a rejection message). The session, if any, survives.
    CloseTransport {
        /// The transport.
        transport: TransportId,
        /// Why, if it was an error.
        error: Option<Error>,
    },
    /// A handshake or resume attempt failed authentication.
    AuthFailed {
        /// The transport it arrived on.
        transport: TransportId,
        /// What failed.
        reason: Error,
    },
    /// The client closed its stream of `session`.
    PeerClosed {
        /// The session.
        session: SessionId,
    },
    /// `session` ended for good and its memory was freed (or will be once
    /// its last data is read).
    Closed {
        /// The session.
        session: SessionId,
        /// Why.
        reason: CloseReason,
    },
    /// `session` waited longer than `resume_timeout` for a transport: it can
    /// no longer be resumed and its memory is freed. Bytes the application
    /// had not read yet stay readable with `recv` until drained.
    SessionExpired {
        /// The session.
        session: SessionId,
    },
}
