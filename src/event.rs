//! Events the state machines report to their driver.

use crate::error::Error;
use crate::ids::{SessionId, TransportId};
use crate::wire::AbortCode;

/// A range of stream offsets `[start, end)` of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ByteRange {
    /// First offset in the range.
    pub start: u64,
    /// One past the last offset.
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    /// Whether the range holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl core::fmt::Display for ByteRange {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "[{}, {}) ({} bytes)", self.start, self.end, self.len())
    }
}

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
    /// The session waited longer than `resume_timeout` for a transport
    /// (server), or the server's advertised resume timeout passed without a
    /// successful resume (client).
    Expired,
    /// A side aborted the session with an ABORT frame (PROTOCOL.md 6.6).
    Aborted {
        /// The reason code it carried.
        code: AbortCode,
        /// Whether the peer aborted (else this side did).
        by_peer: bool,
    },
    /// A fatal error.
    Error(Error),
    /// Client: the server refused this client before accepting it (an
    /// ABORT with `code` verified before the server's ACCEPT, PROTOCOL.md
    /// 6.7): typically `CREDENTIAL_REJECTED` (5), `TOKEN_INVALID` (6),
    /// `TOKEN_EXPIRED` (7) or an application code. No application byte
    /// was delivered either way: the acceptance gate kept every DATA frame
    /// back, so nothing this side wrote is in doubt (every byte is
    /// certainly undelivered; `Client::in_doubt` is an empty range).
    Rejected {
        /// The reason code of the server's ABORT.
        code: AbortCode,
    },
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
    /// The server accepted this client's credential (its ACCEPT frame
    /// verified): data flows from now on. Reported once per session, only
    /// by servers that decide on clients (`Config::client_auth`).
    Accepted {
        /// The server granted a token: take it with `Client::take_token`.
        token: bool,
    },
    /// Both directions of the session switched to key epoch `epoch` (a
    /// rekey exchange completed on this side, PROTOCOL.md 6.8). Reported
    /// once per epoch.
    Rekeyed {
        /// The new epoch (1 after the first rekey).
        epoch: u32,
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
    /// The client of `session` presented its credential (once per
    /// session, `Config::client_auth` only): read it with
    /// `Connection::client_credential`, then call `accept_client` or
    /// `reject_client`. No application byte flows either way before.
    ClientAuth {
        /// The session.
        session: SessionId,
        /// The transport it arrived on.
        transport: TransportId,
    },
    /// Right before `SessionExpired` or a `Closed` that is not clean: the
    /// data offsets `[acknowledged, written)` of the server's stream of
    /// `session`, which the client application may or may not have received
    /// (PROTOCOL.md 7.7). Not reported when that range is empty.
    InDoubt {
        /// The session.
        session: SessionId,
        /// The range.
        range: ByteRange,
    },
    /// Both directions of `session` switched to key epoch `epoch` (a rekey
    /// exchange completed on this side, PROTOCOL.md 6.8). Reported once per
    /// epoch. Drivers mix OS entropy into the connection here
    /// ([`crate::Connection::add_entropy`]).
    Rekeyed {
        /// The session.
        session: SessionId,
        /// The new epoch (1 after the first rekey).
        epoch: u32,
    },
}
