//! Client credentials in the drivers (PROTOCOL.md 6.9): the callback a
//! listener decides with (`ListenerBuilder::authenticate`), and how its
//! [`Decision`] is applied to the session's [`Connection`]. Sans-IO stays
//! in the core: the core reports `ServerEvent::ClientAuth`, the driver
//! calls the callback and then `accept_client` or `reject_client`.

use std::sync::Arc;
use std::vec::Vec;

use crate::{AbortCode, ClientCredential, Connection, Duration, TokenGrant};

/// A listener's answer to a client's credential
/// (`ListenerBuilder::authenticate`).
#[derive(Clone, PartialEq, Eq)]
pub enum Decision {
    /// Accept the session. With `Some((identity, lifetime))`, grant the
    /// client a token naming `identity` (at most 256 bytes), valid for
    /// `lifetime`; this needs the listener's `Config::server_static`
    /// (without it the session is accepted without a token and a warning
    /// is logged).
    Accept(Option<(Vec<u8>, Duration)>),
    /// Reject the session with this ABORT code (e.g.
    /// [`AbortCode::CREDENTIAL_REJECTED`], or an application code ≥
    /// [`AbortCode::APPLICATION_MIN`]).
    Reject(AbortCode),
}

impl core::fmt::Debug for Decision {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Decision::Accept(None) => f.write_str("Accept(no token)"),
            Decision::Accept(Some((id, life))) => write!(
                f,
                "Accept(token: {}-byte identity, {} s)",
                id.len(),
                life.as_micros() / 1_000_000
            ),
            Decision::Reject(code) => write!(f, "Reject({code})"),
        }
    }
}

/// The callback of `ListenerBuilder::authenticate`.
pub(crate) type AuthFn = Arc<dyn Fn(&ClientCredential<'_>) -> Decision + Send + Sync>;

/// Decide on the client of `conn` with `f` (after `ServerEvent::ClientAuth`)
/// and apply the decision. Returns whether the session was accepted.
pub(crate) fn decide(conn: &mut Connection, f: &AuthFn) -> bool {
    let Some(cred) = conn.client_credential() else {
        return conn.is_accepted();
    };
    let decision = f(&cred);
    match decision {
        Decision::Accept(grant) => {
            let r = match &grant {
                Some((identity, lifetime)) => conn.accept_client(Some(TokenGrant {
                    identity,
                    lifetime: *lifetime,
                })),
                None => conn.accept_client(None),
            };
            match r {
                Ok(()) => true,
                Err(e @ (crate::Error::NoStaticKey | crate::Error::TooLong)) => {
                    tracing::warn!(
                        session = %format_args!("{:016x}", conn.conn_id()),
                        error = %e,
                        "no token granted"
                    );
                    conn.accept_client(None).is_ok()
                }
                Err(_) => false,
            }
        }
        Decision::Reject(code) => {
            conn.reject_client(code);
            false
        }
    }
}
