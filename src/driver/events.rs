//! What the drivers report: the observer hook ([`Progress`]), the counters
//! ([`ClientStats`], [`ServerStats`]) and the `tracing` lines (see the
//! [module docs](crate::driver#logs)).

use core::fmt;
use std::net::SocketAddr;
use std::string::String;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::{Error, Event, ResumeStatus, ServerEvent};

/// Something the driver did or the core reported, for logs and progress
/// displays (`on_progress` of the client and listener builders of both
/// drivers). Called from the driver's threads or tasks with the session's
/// lock held: keep it short (a log line, a counter).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Progress {
    /// The client opens transport attempt `attempt` (0 = first in a row)
    /// after waiting `delay`.
    Connecting {
        /// Attempt number since the last established transport.
        attempt: u32,
        /// Backoff delay waited before it.
        delay: std::time::Duration,
    },
    /// Opening a transport failed.
    ConnectFailed {
        /// Attempt number.
        attempt: u32,
        /// The error, naming the address.
        error: String,
    },
    /// An event of the client core.
    Client(Event),
    /// An event of the server core.
    Server(ServerEvent),
}

/// The observer callback.
pub(crate) type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Counters of a client stream, from the driver and the core's events
/// (nothing estimated). The same type in both drivers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Transports opened and handed to the core (handshake or resume).
    pub transports: u64,
    /// Failed attempts to open a transport.
    pub connect_failures: u64,
    /// Completed handshakes (1 once connected).
    pub handshakes: u64,
    /// Completed resumes (`Event::Resumed`).
    pub resumes: u64,
    /// Bytes this side resent after resumes (sum of `Event::ResendRange`).
    pub resent_bytes: u64,
    /// Transports that ended with EOF or an I/O error (cut connections).
    pub lost_io: u64,
    /// Transports the core ended because bytes failed authentication.
    pub lost_auth: u64,
    /// Transports the core ended because of malformed frames.
    pub lost_protocol: u64,
    /// Transports the core ended because nothing arrived in time (stalls).
    pub lost_timeout: u64,
    /// Transports the core ended for another reason (e.g. a rejected resume).
    pub lost_other: u64,
    /// Application bytes accepted by writes.
    pub bytes_sent: u64,
    /// Application bytes returned by reads.
    pub bytes_received: u64,
    /// The server's freshness clock minus this client's wall clock
    /// (`Config::wall_clock`, the system clock unless set), in µs, as of
    /// the client's last authenticated reading of the server's clock
    /// ([`Client::server_clock_offset`](crate::Client::server_clock_offset)
    /// re-based on the wall clock; positive: the server's clock is ahead).
    /// `None` before the first handshake.
    pub clock_offset_us: Option<i64>,
    /// The session's key epoch (`Event::Rekeyed`; 0 before the first rekey).
    pub epoch: u32,
    /// Completed rekey exchanges (`Event::Rekeyed`).
    pub rekeys: u64,
}

/// How a transport was lost, for the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LossKind {
    Auth,
    Protocol,
    Timeout,
    Other,
}

pub(crate) fn classify(e: Option<Error>) -> LossKind {
    match e {
        Some(Error::AuthFailed) | Some(Error::ResumeRejected(ResumeStatus::AuthFailed)) => {
            LossKind::Auth
        }
        Some(Error::Protocol(_)) => LossKind::Protocol,
        Some(Error::TimedOut) => LossKind::Timeout,
        _ => LossKind::Other,
    }
}

impl ClientStats {
    /// Count a core event.
    pub(crate) fn count(&mut self, e: &Event) {
        match *e {
            Event::HandshakeDone { .. } => self.handshakes += 1,
            Event::Resumed { .. } => self.resumes += 1,
            Event::ResendRange { start, end } => self.resent_bytes += end.saturating_sub(start),
            Event::Rekeyed { epoch } => {
                self.epoch = epoch;
                self.rekeys += 1;
            }
            Event::TransportLost { error } => match classify(error) {
                LossKind::Auth => self.lost_auth += 1,
                LossKind::Protocol => self.lost_protocol += 1,
                LossKind::Timeout => self.lost_timeout += 1,
                LossKind::Other => self.lost_other += 1,
            },
            _ => {}
        }
    }
}

/// Counters of a listener, from the core's events. The same type in both
/// drivers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Transports accepted.
    pub transports: u64,
    /// Transports refused at accept: too many were pending, in all
    /// (`Config::max_pending_transports`) or from their source
    /// (`Config::max_handshakes_per_source`, PROTOCOL.md 3.7).
    pub transports_refused: u64,
    /// Sessions established by a handshake.
    pub sessions: u64,
    /// Resumes accepted.
    pub resumes: u64,
    /// Bytes the server resent after resumes (sum of `ServerEvent::ResendRange`).
    pub resent_bytes: u64,
    /// `ServerEvent::AuthFailed` events (corrupted or forged bytes).
    pub auth_failures: u64,
    /// Transports the core ended because of malformed bytes.
    pub lost_protocol: u64,
    /// Transports the core ended because nothing arrived in time.
    pub timeouts: u64,
    /// Transports that ended with EOF or an I/O error.
    pub lost_io: u64,
    /// Sessions that expired without being resumed.
    pub expired: u64,
    /// The highest key epoch any session reached (`ServerEvent::Rekeyed`).
    pub epoch: u32,
    /// Completed rekey exchanges, all sessions (`ServerEvent::Rekeyed`).
    pub rekeys: u64,
    /// Resume requests answered "unknown session" (the session expired,
    /// was freed, or lives on another server;
    /// [`Endpoint::unknown_session_answers`](crate::Endpoint::unknown_session_answers)).
    pub unknown_session_answers: u64,
    /// Of those, the ones whose connection id carries another server id
    /// than this listener's `Config::routable_id`: resumes a load balancer
    /// sent to the wrong node (0 without a routable id;
    /// [`Endpoint::misrouted_resumes`](crate::Endpoint::misrouted_resumes)).
    pub misrouted_resumes: u64,
}

/// [`ServerStats`] counted with atomics, outside any lock.
#[derive(Default)]
pub(crate) struct ServerCounters {
    pub(crate) transports: AtomicU64,
    pub(crate) transports_refused: AtomicU64,
    sessions: AtomicU64,
    resumes: AtomicU64,
    resent_bytes: AtomicU64,
    auth_failures: AtomicU64,
    lost_protocol: AtomicU64,
    timeouts: AtomicU64,
    pub(crate) lost_io: AtomicU64,
    expired: AtomicU64,
    epoch: AtomicU64,
    rekeys: AtomicU64,
    unknown_session_answers: AtomicU64,
    misrouted_resumes: AtomicU64,
}

/// Add `n` to a counter.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl ServerCounters {
    pub(crate) fn snapshot(&self) -> ServerStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerStats {
            transports: g(&self.transports),
            transports_refused: g(&self.transports_refused),
            sessions: g(&self.sessions),
            resumes: g(&self.resumes),
            resent_bytes: g(&self.resent_bytes),
            auth_failures: g(&self.auth_failures),
            lost_protocol: g(&self.lost_protocol),
            timeouts: g(&self.timeouts),
            lost_io: g(&self.lost_io),
            expired: g(&self.expired),
            epoch: u32::try_from(g(&self.epoch)).unwrap_or(u32::MAX),
            rekeys: g(&self.rekeys),
            unknown_session_answers: g(&self.unknown_session_answers),
            misrouted_resumes: g(&self.misrouted_resumes),
        }
    }

    /// Copy the endpoint's routing counters (after an endpoint call, with
    /// its lock held), so that `stats` reads them without that lock.
    pub(crate) fn sync_routing<R: rand_core::CryptoRng>(&self, ep: &crate::Endpoint<R>) {
        let s = |c: &AtomicU64, v: u64| c.store(v, Ordering::Relaxed);
        s(&self.unknown_session_answers, ep.unknown_session_answers());
        s(&self.misrouted_resumes, ep.misrouted_resumes());
    }

    /// Count a core event (of the endpoint or of a session).
    pub(crate) fn count(&self, e: &ServerEvent) {
        match *e {
            ServerEvent::HandshakeDone { .. } => add(&self.sessions, 1),
            ServerEvent::Resumed { .. } => add(&self.resumes, 1),
            ServerEvent::ResendRange { start, end, .. } => {
                add(&self.resent_bytes, end.saturating_sub(start))
            }
            ServerEvent::AuthFailed { .. } => add(&self.auth_failures, 1),
            ServerEvent::CloseTransport { error, .. } => match classify(error) {
                LossKind::Timeout => add(&self.timeouts, 1),
                LossKind::Protocol => add(&self.lost_protocol, 1),
                _ => {}
            },
            ServerEvent::SessionExpired { .. } => add(&self.expired, 1),
            ServerEvent::Rekeyed { epoch, .. } => {
                self.epoch.fetch_max(u64::from(epoch), Ordering::Relaxed);
                add(&self.rekeys, 1);
            }
            _ => {}
        }
    }
}

/// When authenticated input last arrived on a session (for "last
/// contact" displays): noticed when the core's idle deadline moves later,
/// which only a verified frame (or a new link after an accepted handshake
/// or resume) does. Read after each drain of events, which the drivers do
/// right after handing input to the core. The time is the process's
/// monotonic clock (it may not count a suspend).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Contact {
    /// The latest idle deadline seen.
    idle: Option<crate::Instant>,
    /// When it moved last.
    at: Option<std::time::Instant>,
}

impl Contact {
    /// The core's idle deadline is `idle` now.
    pub(crate) fn note(&mut self, idle: Option<crate::Instant>) {
        if let Some(d) = idle {
            if self.idle.is_none_or(|seen| d > seen) {
                self.idle = Some(d);
                self.at = Some(std::time::Instant::now());
            }
        }
    }

    /// Time since authenticated input last arrived; `None` before any.
    pub(crate) fn since(&self) -> Option<std::time::Duration> {
        self.at.map(|t| t.elapsed())
    }
}

/// A connection id as the logs' `session` field: 16 hex digits, the same
/// on the client and the server.
#[derive(Clone, Copy)]
pub(crate) struct SessionHex(pub(crate) u64);

impl fmt::Display for SessionHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A peer address for the logs' `peer` field (`unknown` for transports
/// without one, e.g. in-memory pipes).
#[derive(Clone, Copy)]
pub(crate) struct PeerDisplay(pub(crate) Option<SocketAddr>);

impl fmt::Display for PeerDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("unknown"),
        }
    }
}

/// A loss cause for the logs' `cause` field.
pub(crate) struct CauseDisplay<'a>(pub(crate) Option<&'a Error>, pub(crate) &'a str);

impl fmt::Display for CauseDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(e) => write!(f, "{e}"),
            None => f.write_str(self.1),
        }
    }
}

/// `session established`.
pub(crate) fn log_established(conn_id: u64, peer: Option<SocketAddr>, role: &'static str) {
    tracing::info!(
        session = %SessionHex(conn_id),
        peer = %PeerDisplay(peer),
        role = %role,
        "session established"
    );
}

/// `transport lost`.
pub(crate) fn log_lost(conn_id: u64, peer: Option<SocketAddr>, cause: &dyn fmt::Display) {
    tracing::info!(
        session = %SessionHex(conn_id),
        peer = %PeerDisplay(peer),
        cause = %cause,
        "transport lost"
    );
}

/// `session resumed`.
pub(crate) fn log_resumed(conn_id: u64, peer: Option<SocketAddr>, detached_ms: u64, resent: u64) {
    tracing::info!(
        session = %SessionHex(conn_id),
        peer = %PeerDisplay(peer),
        detached_ms,
        resent,
        "session resumed"
    );
}

/// `session accepted` (client: the server accepted its credential).
pub(crate) fn log_accepted(conn_id: u64, peer: Option<SocketAddr>, token: bool) {
    tracing::info!(
        session = %SessionHex(conn_id),
        peer = %PeerDisplay(peer),
        token,
        "session accepted"
    );
}

/// `session ended`.
pub(crate) fn log_ended(conn_id: Option<u64>, reason: &crate::CloseReason) {
    let cause = super::close_reason_text(reason);
    match conn_id {
        Some(id) => tracing::info!(session = %SessionHex(id), cause = %cause, "session ended"),
        None => tracing::info!(cause = %cause, "session ended"),
    }
}

/// `connect attempt failed`.
pub(crate) fn log_connect_failed(addr: &dyn fmt::Display, error: &dyn fmt::Display) {
    tracing::info!(addr = %addr, error = %error, "connect attempt failed");
}

/// At most one `handshake abandoned` WARN per this interval, process-wide:
/// any client (a scanner, a peer pinning another key) can trigger it at
/// the rate it connects, so unlimited lines would let it flood the logs.
const ABANDONED_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The `handshake abandoned` WARNs' rate limit.
static ABANDONED_WARN: WarnLimit = WarnLimit::new(ABANDONED_WARN_EVERY);

/// A process-wide rate limit for a WARN that anyone reaching the port can
/// trigger: at most one per `every`; the ones in between are counted and
/// reported with the next.
pub(crate) struct WarnLimit {
    every: std::time::Duration,
    /// When the last WARN was logged, and how many were suppressed since.
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl WarnLimit {
    pub(crate) const fn new(every: std::time::Duration) -> WarnLimit {
        WarnLimit {
            every,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed)` when the WARN may be logged now (and how many
    /// were suppressed since the last one), `None` when it is limited away.
    pub(crate) fn allow(&self) -> Option<u64> {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        match g.0 {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                g.1 += 1;
                None
            }
            _ => {
                let n = g.1;
                *g = (Some(now), 0);
                Some(n)
            }
        }
    }
}

/// `handshake abandoned after ServerHello` (server), rate-limited to one
/// WARN per [`ABANDONED_WARN_EVERY`]; the others are DEBUG lines, counted
/// in the next WARN's `suppressed` field.
pub(crate) fn log_abandoned_hello(peer: Option<SocketAddr>, key: Option<&[u8; 32]>) {
    let key = key.map_or_else(
        || String::from("none (no static key)"),
        super::reconnect::short_fingerprint,
    );
    let suppressed = ABANDONED_WARN.allow();
    match suppressed {
        Some(n) => tracing::warn!(
            peer = %PeerDisplay(peer),
            server_key = %key,
            suppressed = n,
            "handshake abandoned right after our ServerHello; the client may pin a different server key"
        ),
        None => tracing::debug!(
            peer = %PeerDisplay(peer),
            server_key = %key,
            "handshake abandoned right after our ServerHello (WARN rate-limited)"
        ),
    }
}

/// A transport refused before its first byte was read: the endpoint's
/// table of pending transports is full, or its source is at
/// `Config::max_handshakes_per_source` (PROTOCOL.md 3.7). Debug level: a
/// flood would otherwise flood the log too.
pub(crate) fn log_refused(peer: Option<SocketAddr>, error: &crate::Error) {
    match peer {
        Some(p) => tracing::debug!(peer = %p, error = %error, "transport refused"),
        None => tracing::debug!(error = %error, "transport refused"),
    }
}
