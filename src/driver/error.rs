//! The drivers' one error type, [`SessionError`], and the one table that
//! maps each way a session or a call can end to an [`io::ErrorKind`].

use std::format;
use std::io;
use std::string::{String, ToString};

use crate::{AbortCode, ByteRange, CloseReason, Error};

/// Why a call of a driver failed: the inner error of every [`io::Error`]
/// that [`crate::blocking`] and [`crate::tokio`] return
/// (`err.get_ref().and_then(|e| e.downcast_ref::<SessionError>())` finds
/// it). [`SessionError::kind`] is the [`io::ErrorKind`] of those errors; the
/// table is in the [module docs](crate::driver#errors).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// Opening a transport failed `attempts` times in a row and the backoff
    /// policy gave up (only before a session exists, with
    /// `wait_for_server`).
    GaveUp {
        /// Consecutive failed attempts.
        attempts: u32,
        /// The last failure, naming the address.
        last_error: String,
    },
    /// A server session ended for good, other than cleanly.
    Closed(CloseReason),
    /// The client's session ended other than cleanly: why, and which of the
    /// bytes written may or may not have reached the server application
    /// (`[acknowledged, written)`; relink does not resend them in another
    /// session, the application decides).
    Ended {
        /// Why it ended.
        reason: CloseReason,
        /// The written-but-unacknowledged data offsets, if the core knows.
        in_doubt: Option<ByteRange>,
    },
    /// The server session waited longer than `resume_timeout` for a
    /// transport and was freed.
    Expired,
    /// The driver was shut down: the client's stream was dropped, or the
    /// listener that served the session was dropped.
    Shutdown,
    /// The first connection failed before any session existed, and the
    /// driver did not retry (see `wait_for_server` on the client builders):
    /// the server refused it, did not answer within the connect or
    /// handshake timeout, is not a relink server, or did not prove the
    /// pinned key. The message names the address (and the pinned key).
    Connect {
        /// The kind of the [`io::Error`]s carrying it:
        /// [`io::ErrorKind::ConnectionRefused`] (refused, or closed without
        /// answering the handshake), [`io::ErrorKind::TimedOut`],
        /// [`io::ErrorKind::InvalidData`] (not a relink server),
        /// [`io::ErrorKind::PermissionDenied`] (the pinned key was not
        /// proven), or the kind of another connect error.
        kind: io::ErrorKind,
        /// What happened, naming the address.
        message: String,
        /// The core's error, if one ended the attempt
        /// ([`Error::ServerKeyMismatch`] for a wrong pinned key,
        /// [`Error::HandshakeRejected`] when the server refused the
        /// handshake, e.g. `NoStaticKey`: an anonymous server cannot prove
        /// a pinned key).
        cause: Option<Error>,
    },
    /// A call the session cannot serve while it lives, e.g. a write after
    /// `shutdown` ([`Error::Closed`]).
    Call(Error),
    /// The server refused this client's credential or token before
    /// accepting the session (client drivers; PROTOCOL.md 6.9): its ABORT
    /// `code` (5 credential rejected, 6 token invalid, 7 token expired, or
    /// an application code). No application byte was delivered either way.
    /// Kind [`io::ErrorKind::PermissionDenied`].
    Rejected {
        /// The server's reason code.
        code: AbortCode,
        /// What happened, naming the server's address and the code.
        message: String,
    },
}

/// The message of [`SessionError::Rejected`]: the server's address, what
/// this client presented (`presented`: its configured credential) and the
/// server's code.
pub(crate) fn rejected_message(
    peer: Option<std::net::SocketAddr>,
    code: AbortCode,
    presented: Option<&crate::Credential>,
) -> String {
    let addr = peer.map_or_else(|| "the server".to_string(), |a| a.to_string());
    let what = match presented {
        Some(crate::Credential::Secret(_)) => "the credential",
        Some(crate::Credential::Token(_)) => "the token",
        None => "this client (it presented no credential and the server asks for one)",
    };
    format!("relink: {addr} refused {what}: {code}")
}

impl core::fmt::Display for SessionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SessionError::GaveUp {
                attempts,
                last_error,
            } => write!(
                f,
                "relink: no session could be opened: gave up connecting after {attempts} failed attempts (last error: {last_error})"
            ),
            SessionError::Closed(r) => {
                write!(f, "relink session closed for good: {}", close_reason_text(r))
            }
            SessionError::Ended { reason, in_doubt } => {
                write!(f, "relink session ended: {}", close_reason_text(reason))?;
                match in_doubt {
                    Some(r) if !r.is_empty() => write!(
                        f,
                        "; bytes {r} of what was written may or may not have been delivered"
                    ),
                    Some(_) => write!(
                        f,
                        "; everything written was acknowledged by the peer's relink endpoint"
                    ),
                    None => Ok(()),
                }
            }
            SessionError::Expired => write!(f, "relink session expired waiting for a resume"),
            SessionError::Shutdown => write!(f, "relink driver shut down"),
            SessionError::Connect { message, .. } => f.write_str(message),
            SessionError::Call(Error::Closed) => {
                write!(f, "relink: the sending side was shut down")
            }
            SessionError::Call(e) => write!(f, "relink: {e}"),
            SessionError::Rejected { message, .. } => f.write_str(message),
        }
    }
}

/// A close reason in words (for error messages and logs).
pub fn close_reason_text(r: &CloseReason) -> String {
    match r {
        CloseReason::Clean => "closed cleanly".into(),
        CloseReason::SessionUnknown => "the server no longer knows the session".into(),
        CloseReason::DataUnavailable => {
            "the other side no longer holds data this side still needs".into()
        }
        CloseReason::TooManyFailures => "too many failed attempts or forged frames in a row".into(),
        CloseReason::Expired => "no connection for longer than the resume timeout".into(),
        CloseReason::Aborted {
            code,
            by_peer: true,
        } => format!("aborted by the peer: {code}"),
        CloseReason::Aborted {
            code,
            by_peer: false,
        } => format!("aborted by this side: {code}"),
        CloseReason::Error(e) => e.to_string(),
        CloseReason::Rejected { code } => format!("refused by the server: {code}"),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SessionError::Closed(CloseReason::Error(e))
            | SessionError::Ended {
                reason: CloseReason::Error(e),
                ..
            } => Some(e),
            SessionError::Connect { cause: Some(e), .. } => Some(e),
            SessionError::Call(e) => Some(e),
            _ => None,
        }
    }
}

impl SessionError {
    /// The error of a first connect that failed before any session existed
    /// (both drivers): the driver's own message when it already says
    /// `relink:` (and names the address), else a generic prefix.
    pub(crate) fn first_connect(e: &io::Error) -> SessionError {
        let message = e.to_string();
        let message = if message.starts_with("relink:") {
            message
        } else {
            format!("relink: cannot connect to the server: {message}")
        };
        SessionError::Connect {
            kind: e.kind(),
            message,
            cause: None,
        }
    }

    /// This error as the [`io::Error`] the drivers return.
    pub(crate) fn to_io(&self) -> io::Error {
        io::Error::new(self.kind(), self.clone())
    }

    /// The [`io::ErrorKind`] of the [`io::Error`]s carrying it (the table
    /// in the [module docs](crate::driver#errors)).
    pub fn kind(&self) -> io::ErrorKind {
        use io::ErrorKind as K;
        match self {
            SessionError::GaveUp { .. } | SessionError::Expired => K::TimedOut,
            SessionError::Shutdown => K::NotConnected,
            SessionError::Connect { kind, .. } => *kind,
            SessionError::Rejected { .. } => K::PermissionDenied,
            SessionError::Closed(r) | SessionError::Ended { reason: r, .. } => match r {
                CloseReason::Aborted { by_peer: true, .. } => K::ConnectionReset,
                // The server no longer knows it: it expired there.
                CloseReason::Expired | CloseReason::SessionUnknown => K::TimedOut,
                _ => K::ConnectionAborted,
            },
            SessionError::Call(e) => match e {
                Error::Closed => K::BrokenPipe,
                Error::Aborted(_) => K::ConnectionAborted,
                Error::TimedOut => K::TimedOut,
                Error::UnknownSession => K::NotConnected,
                _ => K::Other,
            },
        }
    }

    /// The reason the core gave, if the session ended that way.
    pub fn close_reason(&self) -> Option<CloseReason> {
        match self {
            SessionError::Closed(r) | SessionError::Ended { reason: r, .. } => Some(*r),
            SessionError::Expired => Some(CloseReason::Expired),
            SessionError::Rejected { code, .. } => Some(CloseReason::Rejected { code: *code }),
            _ => None,
        }
    }

    /// The abort code, if the session was aborted (by either side).
    pub fn abort_code(&self) -> Option<AbortCode> {
        match self.close_reason() {
            Some(CloseReason::Aborted { code, .. }) => Some(code),
            _ => None,
        }
    }
}
