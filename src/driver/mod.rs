//! The driver core: what [`crate::blocking`] (std threads) and
//! [`crate::tokio`] share, written once. It owns the client's reconnect
//! policy ([`Backoff`], attempt counting, `wait_for_server`, the
//! classification of a failed first connect), the reduction of core events
//! into statistics, progress callbacks, close reasons and log lines, the
//! end-of-session rules, the error type and its mapping to
//! [`std::io::ErrorKind`], and the clock. The two drivers keep this state
//! behind their own locks and add only I/O, threads or tasks, and wake-ups.
//!
//! Both drivers have the same names: `ClientBuilder` (`new`, `backoff`,
//! `wait_for_server`, `connect_timeout`, `on_progress`, `connect`,
//! `connect_with`), `ClientStream` (with `token`), `ListenerBuilder` (`new`,
//! `on_progress`, `authenticate`, `proxy_protocol`, `bind`), `Listener`
//! (`bind`, `local_addr`, `accept`, `stats`, `session_count`,
//! `active_session_count`, `drain`, `is_draining`, `abort_all`), `ServerStream` and `AbortHandle`; and they
//! re-export the types of this module.
//!
//! # Drain
//! Taking a server out of service without losing data (PROTOCOL.md 3.8),
//! the same in both drivers:
//! 1. `Listener::drain()`: new sessions are answered Busy (their clients
//!    retry on a new transport, which a load balancer sends to another
//!    server); the listener keeps accepting transports, so the sessions it
//!    holds resume after a cut and finish as usual. `accept` still yields
//!    sessions whose handshake had started before.
//! 2. Watch `Listener::active_session_count()` fall to 0 (a session that
//!    still holds received bytes the application has not read stays in
//!    it: its client was told they arrived; otherwise sessions leave
//!    it once they ended, both sides closed and acknowledged, or aborted
//!    and answered, or expired, and their last transport is gone; or, with
//!    no transport, when every byte both ways was delivered and only the
//!    client's acknowledgement of our CLOSE is missing: a client that is
//!    done never comes back for it, one that is not resumes at once and
//!    counts again, so wait until it stayed 0 for a moment). `Listener::session_count()` falls to 0
//!    later: the core keeps a finished session resumable for
//!    `Config::resume_timeout`, in case the client's last acknowledgement
//!    was lost in a cut. A drain need not wait that long: every byte was
//!    delivered; only a client whose last acknowledgement is lost in a cut
//!    within the moment before the server stops finds its session unknown
//!    when it resumes (its `close` then fails although its data arrived).
//!    A short grace after the last end narrows that window.
//! 3. At the deadline, `Listener::abort_all(AbortCode::SHUTTING_DOWN)`:
//!    attached clients get the ABORT at once (their calls fail with
//!    [`std::io::ErrorKind::ConnectionReset`] and
//!    [`SessionError::abort_code`] says `SHUTTING_DOWN`); a detached
//!    session keeps its ABORT for its client's resume until the wait for
//!    the answer (`Config::idle_timeout`) runs out, then ends. Keep the
//!    listener a moment longer (until `session_count()` is 0, or a grace
//!    period; `active_session_count()` falls as the answers arrive) so
//!    that the ABORTs reach the clients; dropping it ends
//!    whatever is left without telling anyone, and the clients of those
//!    sessions learn it on their next resume (an unknown session, from
//!    whichever server the balancer picks).
//!
//! [`ServerStats`] counts, per node, what a fleet operator watches:
//! `sessions`, `resumes`, `unknown_session_answers` and
//! `misrouted_resumes` (resumes the balancer sent to the wrong node).
//!
//! # Behind a load balancer
//! `ListenerBuilder::proxy_protocol(true)` reads a PROXY protocol v2
//! header (HAProxy's `send-proxy-v2`) at the start of each TCP transport
//! and counts the transport against the client address it names rather
//! than the balancer's (see `ListenerBuilder::proxy_protocol` for the
//! rules).
//!
//! # Semantics
//! The same in both drivers, following the conventions of `TcpStream`
//! (std's and tokio's):
//! - **write** accepts bytes into the session's send history; it waits
//!   (blocks, or returns `Pending`) while `Config::send_buffer`
//!   unacknowledged bytes are held (back-pressure) and continues when ACKs
//!   free room.
//! - **flush** completes once every byte written so far was acknowledged
//!   by the peer's relink endpoint (not necessarily read by its
//!   application).
//! - **read** waits until data arrives; it returns 0 once the peer
//!   half-closed and everything before was read.
//! - **shutdown** (blocking: `shutdown_write`; tokio: `poll_shutdown`)
//!   half-closes: a CLOSE frame follows the last byte written, and the call
//!   completes once the peer acknowledged that CLOSE (it received every
//!   byte). It does **not** wait for the peer to close its side: reading
//!   goes on until the peer's EOF. Writing after it fails with
//!   [`std::io::ErrorKind::BrokenPipe`].
//! - **close** (blocking: `close()`; tokio: `async fn close(&mut self)`)
//!   half-closes, then waits until the session ended cleanly (both sides
//!   closed, everything acknowledged), discarding input not read yet.
//! - **No bound of their own**: flush, shutdown and close wait on the
//!   peer (its application reading, or closing its side) for as long as
//!   the session lives, like their TCP counterparts. To bound them, use
//!   `tokio::time::timeout` (tokio) or call `abort` from another thread
//!   through an `AbortHandle` (blocking).
//! - **abort(code)** ends the session at once, like a TCP reset: the
//!   peer's calls fail with [`std::io::ErrorKind::ConnectionReset`] and
//!   [`SessionError::abort_code`] names the code; this side's later calls
//!   fail with [`std::io::ErrorKind::ConnectionAborted`] (a `read` first
//!   returns bytes that were already received). The driver keeps serving
//!   the session until the peer acknowledged the ABORT. Known limit: an
//!   ABORT queued behind data the peer's application does not read can
//!   only arrive once that data was read (see `tests/review12.rs`).
//! - **drop**: dropping a stream that was neither closed nor aborted aborts
//!   the session with [`crate::AbortCode::DROPPED`], unless both sides had
//!   already half-closed (then it ends cleanly by itself).
//! - Once a session ended other than cleanly, **every call** fails with
//!   the same [`SessionError`] (on the client it names the in-doubt range
//!   of written bytes, `[acknowledged, written)`).
//!
//! # Errors
//! Every [`std::io::Error`] of a driver carries a [`SessionError`]
//! (`err.get_ref()` and `downcast_ref`); its kind is
//! [`SessionError::kind`]:
//!
//! | cause | [`std::io::ErrorKind`] |
//! |---|---|
//! | first connect refused, or the peer closed it without answering the handshake ([`SessionError::Connect`]) | `ConnectionRefused` |
//! | first connect or handshake timed out ([`SessionError::Connect`]) | `TimedOut` |
//! | first peer is not a relink server ([`SessionError::Connect`]) | `InvalidData` |
//! | pinned server key not proven ([`SessionError::Connect`]) | `PermissionDenied` |
//! | the server refused the credential or token ([`SessionError::Rejected`]) | `PermissionDenied` |
//! | reconnecting gave up ([`SessionError::GaveUp`]) | `TimedOut` |
//! | session expired (server: [`SessionError::Expired`]; client: reason `Expired`, or `SessionUnknown` when the server no longer knows it) | `TimedOut` |
//! | aborted by the peer (reason `Aborted { by_peer: true }`) | `ConnectionReset` |
//! | aborted by this side, or ended for another reason | `ConnectionAborted` |
//! | the stream's driver or listener is gone ([`SessionError::Shutdown`]) | `NotConnected` |
//! | write after shutdown ([`SessionError::Call`]`(Error::Closed)`) | `BrokenPipe` |
//!
//! # Logs
//! With the `std` feature the drivers log through the `tracing` crate
//! (install any subscriber to see them). The `session` field is the
//! session's connection id as 16 hex digits, the same on the client and
//! on the server; `peer` is the remote address (`unknown` for a transport
//! without one). Values are formatted with `Display`.
//!
//! | level | message | fields |
//! |---|---|---|
//! | INFO | `session established` | `session`, `peer`, `role` (`client` or `server`) |
//! | INFO | `transport lost` | `session`, `peer`, `cause` |
//! | INFO | `session accepted` (client; the server accepted its credential) | `session`, `peer`, `token` (whether it granted one) |
//! | INFO | `session resumed` | `session`, `peer`, `detached_ms` (ms without a transport), `resent` (bytes this side resent) |
//! | INFO | `session ended` | `session`, `cause` |
//! | INFO | `connect attempt failed` (each address a TCP `connect` tried; the caller gets the error too) | `addr`, `error` |
//! | INFO | `draining: new sessions are refused` (server, `Listener::drain`) | `sessions` (sessions held then) |
//! | DEBUG | `transport refused` (server: admission limits, or a missing or bad PROXY header with `proxy_protocol`) | `peer` (the TCP peer), `error` |
//! | WARN | `handshake abandoned right after our ServerHello; the client may pin a different server key` (server; at most one line per 10 s per process, the others at DEBUG) | `peer`, `server_key` (first 8 hex digits of our public key), `suppressed` (lines not logged since the last one) |

mod reconnect;

pub use reconnect::Backoff;

#[cfg(feature = "std")]
mod auth;
#[cfg(feature = "std")]
mod client;
#[cfg(feature = "std")]
mod error;
#[cfg(feature = "std")]
mod events;
#[cfg(feature = "std")]
pub(crate) mod proxy;
#[cfg(feature = "std")]
mod server;

#[cfg(feature = "std")]
pub(crate) use auth::AuthFn;
#[cfg(feature = "std")]
pub use auth::Decision;
#[cfg(feature = "std")]
pub(crate) use client::{check_credential, ClientCore, Reconnect, Step};
#[cfg(feature = "std")]
pub use error::{close_reason_text, SessionError};
#[cfg(feature = "tokio")]
pub(crate) use events::add;
#[cfg(feature = "std")]
pub(crate) use events::log_abandoned_hello;
#[cfg(feature = "std")]
pub(crate) use events::log_refused;
#[cfg(feature = "std")]
pub use events::{ClientStats, Progress, ServerStats};
#[cfg(feature = "std")]
pub(crate) use events::{ProgressFn, ServerCounters};
#[cfg(feature = "std")]
pub use proxy::MAX_HEADER_LEN as MAX_PROXY_HEADER_LEN;
#[cfg(feature = "std")]
pub(crate) use reconnect::{connect_error, default_connect_timeout, resolve_now, DriverClock};
#[cfg(feature = "std")]
pub use reconnect::{Resolve, ServerAddr};
#[cfg(feature = "std")]
pub(crate) use server::SessionSlot;

/// The builder methods both drivers' `ClientBuilder`s share (fields
/// `config`, `backoff`, `wait_for_server`, `connect_timeout`, `progress`).
#[cfg(feature = "std")]
macro_rules! client_builder_common {
    () => {
        impl core::fmt::Debug for ClientBuilder {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_struct("ClientBuilder")
                    .field("config", &self.config)
                    .field("backoff", &self.backoff)
                    .field("wait_for_server", &self.wait_for_server)
                    .field("connect_timeout", &self.connect_timeout)
                    .finish_non_exhaustive()
            }
        }

        impl ClientBuilder {
            /// Options with `config` and the default [`Backoff`]; the first
            /// connection fails at once (no `wait_for_server`); connects time
            /// out after `config.handshake_timeout`.
            pub fn new(config: Config) -> Self {
                ClientBuilder {
                    config,
                    backoff: Backoff::default(),
                    wait_for_server: false,
                    connect_timeout: None,
                    progress: None,
                }
            }

            /// Reconnect policy: delays between attempts and when to give up.
            pub fn backoff(mut self, backoff: Backoff) -> Self {
                self.backoff = backoff;
                self
            }

            /// Whether the first connection waits for the server to appear: with
            /// `true`, a refused, timed-out or unanswered first connect is retried
            /// following the [`Backoff`] (its `max_attempts` bounds the tries, then
            /// [`SessionError::GaveUp`]); with `false` (the default) it fails at
            /// once with [`SessionError::Connect`] naming the address. A wrong
            /// pinned key fails at once either way. No effect once a session exists.
            pub fn wait_for_server(mut self, wait: bool) -> Self {
                self.wait_for_server = wait;
                self
            }

            /// Call `f` for every driver step and core event (from the driver's
            /// threads or task, with the session lock held: keep it short, e.g. a
            /// log line).
            pub fn on_progress(mut self, f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
                self.progress = Some(std::sync::Arc::new(f));
                self
            }
        }
    };
}
#[cfg(feature = "std")]
pub(crate) use client_builder_common;

/// The builder methods and `Debug` both drivers' `ListenerBuilder`s share
/// (fields `config`, `progress`, `authenticate`, `proxy_protocol`).
#[cfg(feature = "std")]
macro_rules! listener_builder_common {
    () => {
        impl core::fmt::Debug for ListenerBuilder {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_struct("ListenerBuilder")
                    .field("config", &self.config)
                    .field("proxy_protocol", &self.proxy_protocol)
                    .finish_non_exhaustive()
            }
        }

        impl ListenerBuilder {
            /// Options with `config` (set `server_static` for pinned clients).
            pub fn new(config: Config) -> Self {
                ListenerBuilder {
                    config,
                    progress: None,
                    authenticate: None,
                    proxy_protocol: false,
                }
            }

            /// Expect a PROXY protocol v2 header (HAProxy's `send-proxy-v2`)
            /// at the start of every accepted TCP transport, for a listener
            /// behind a load balancer: the per-source limits
            /// (`Config::max_handshakes_per_source`,
            /// `Config::max_sessions_per_source`, PROTOCOL.md 3.7) then count
            /// the client address the header carries instead of the
            /// balancer's, and logs and `peer_addr` name it. A LOCAL header
            /// (health checks) counts the real peer. A transport without a
            /// valid header (binary v2, at most
            /// [`MAX_PROXY_HEADER_LEN`](crate::driver::MAX_PROXY_HEADER_LEN)
            /// bytes, complete within `Config::handshake_timeout`) is closed
            /// and counted in [`ServerStats::transports_refused`]. Only for
            /// listeners that every client reaches through the balancer:
            /// the header is trusted as it comes. Transports an application
            /// hands over itself (tokio's `Listener::serve_transport` and
            /// `serve_transport_from`) are not affected. Default: off.
            pub fn proxy_protocol(mut self, on: bool) -> Self {
                self.proxy_protocol = on;
                self
            }

            /// Decide on every client before data flows (PROTOCOL.md 6.9):
            /// `f` gets the credential the client presented (a secret, a
            /// token this server issued, already verified, or none) and
            /// returns a [`Decision`]. Sets `Config::client_auth`; `accept`
            /// then returns only accepted sessions, and a rejected client's
            /// connect fails with [`std::io::ErrorKind::PermissionDenied`].
            /// Called from the driver's threads or tasks with the session's
            /// lock held: keep it short (no I/O that can block for long).
            pub fn authenticate(
                mut self,
                f: impl Fn(&crate::ClientCredential<'_>) -> Decision + Send + Sync + 'static,
            ) -> Self {
                self.config.client_auth = true;
                self.authenticate = Some(std::sync::Arc::new(f));
                self
            }

            /// Call `f` for every server core event, from the driver's
            /// threads or tasks. A session's events are reported in order
            /// with that session's lock held: keep it short (e.g. a log
            /// line), as the session waits for it; other sessions do not.
            pub fn on_progress(mut self, f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
                self.progress = Some(std::sync::Arc::new(f));
                self
            }
        }
    };
}
#[cfg(feature = "std")]
pub(crate) use listener_builder_common;
