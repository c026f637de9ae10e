//! Configuration shared by clients and servers: every buffer, table and timer
//! is bounded by a value here.

use alloc::sync::Arc;

use crate::credential::Credential;
use crate::keys::StaticKeypair;
use crate::routing::RoutableId;
use crate::time::{Duration, Instant, UnixTime, WallClock};
use crate::wire::MAX_FRAME_PAYLOAD;

/// Limits and timers of a relink endpoint. `Config::default()` suits most
/// applications; every field bounds memory or time, nothing grows beyond it.
#[derive(Clone)]
pub struct Config {
    /// Largest payload of a DATA frame this side sends (1..=16384).
    /// Default: 16384.
    pub max_frame_payload: usize,
    /// Cap on sent-but-unacknowledged bytes kept for resending. `send`
    /// accepts no more once this many bytes are unacknowledged.
    /// Default: 1 MiB.
    pub send_buffer: usize,
    /// Size of the receive buffer (verified bytes not yet read by the
    /// application, plus one partial frame). At least one maximum frame.
    /// Default: 1 MiB.
    pub recv_buffer: usize,
    /// Send an ACK once this many verified bytes have not been acknowledged.
    /// Default: 64 KiB.
    pub ack_threshold: usize,
    /// Send an ACK at most this long after unacknowledged data arrived.
    /// Default: 20 ms.
    pub ack_delay: Duration,
    /// Send a PING when nothing was sent on the transport for this long.
    /// Default: 5 s.
    pub keepalive_interval: Duration,
    /// Declare the transport dead when nothing arrived for this long.
    /// Default: 15 s.
    pub idle_timeout: Duration,
    /// A handshake or resume must complete within this time.
    /// Default: 10 s.
    pub handshake_timeout: Duration,
    /// Server: how long a session without transport waits to be resumed
    /// (default 10 minutes: long enough for the outages a phone meets in a
    /// lift, a tunnel or an underground ride, and for a laptop lid closed for a
    /// coffee break; raise it to hours for terminal-like sessions, at the cost
    /// of holding each detached session's unacknowledged bytes that long).
    /// The server advertises it to clients (ServerHello, ResumeResponse), and
    /// clients keep trying to resume for that long.
    pub resume_timeout: Duration,
    /// How far the time stamp of a message that changes state (new-session
    /// hello, resume request, CLOSE, ABORT) may lie from the receiver's
    /// reading of the server's clock (PROTOCOL.md 6.7). The server refuses
    /// stamps outside `now ± window` (a CLOSE or ABORT that waited behind
    /// input this side held back gets that much more); the client refuses
    /// server stamps older than its estimate minus the window.
    /// Default: 60 s.
    pub freshness_window: Duration,
    /// Server: most ClientHellos remembered (by a fingerprint of their
    /// ephemeral key) within `freshness_window` to refuse replays without
    /// any key computation (PROTOCOL.md 3.3); when full, the oldest is
    /// forgotten and hellos stamped at or before it are refused Stale.
    /// About 64 bytes each.
    /// Default: 65,536.
    pub hello_cache: usize,
    /// Client: consecutive resume attempts that the server answered with a
    /// rejection before giving up (PROTOCOL.md 7.6); Replayed answers never
    /// count (only someone racing the client's own requests causes them). In anonymous mode
    /// answers that nothing authenticates (no MAC, or a MAC that failed)
    /// count too; with a pinned server key they only cost their transport.
    /// Attempts that got no answer (refused, cut, timed out) never count:
    /// those continue until the server's advertised resume timeout passed
    /// ([`crate::Client::give_up_at`]).
    /// Default: 16.
    pub max_resume_attempts: u32,
    /// Client, anonymous mode only: consecutive transports ended by a frame
    /// whose tag failed before the session is closed. A server never ends a
    /// session for failed frame tags, nor does a client that pins the server
    /// key: such frames are unauthenticated input and cost only their
    /// transport (PROTOCOL.md 5.2, 7.7).
    /// Default: 8.
    pub max_auth_failures: u32,
    /// Client, anonymous mode only: unauthenticated "unknown session" (or
    /// "unsupported version", "malformed") answers to resume attempts in a
    /// row before the session is given up. With a pinned server key an
    /// "unknown session" answer is authenticated by the session's reset
    /// token (PROTOCOL.md 3.6) and ends the session at once, and answers
    /// without a valid token only cost their transport.
    /// Default: 3.
    pub max_unauthenticated_rejections: u32,
    /// Server: most sessions at once.
    /// Default: 10,000.
    pub max_sessions: usize,
    /// Server: most transports that have not yet completed a handshake or resume.
    /// Default: 1,000.
    pub max_pending_transports: usize,
    /// Server: most handshakes in progress per source (an IPv4 address or
    /// an IPv6 /64, PROTOCOL.md 3.7), counted twice over: transports of the
    /// source not yet past their handshake or resume (a new one beyond the
    /// limit is refused with [`crate::Error::SourceLimit`]), and sessions
    /// whose ServerHello went to the source and whose ClientConfirm has not
    /// arrived (a new hello beyond the limit evicts the oldest of them that
    /// has no transport, else it is answered Busy). Keeps one source from
    /// filling `max_pending_transports` or `max_sessions` for everyone.
    /// Honest clients finish a handshake in one round trip, so even a large
    /// NAT rarely has many in progress at once. Applies to transports the
    /// driver registered with [`crate::Endpoint::accept_from`]. At most
    /// half of the smaller of `max_pending_transports` and `max_sessions`
    /// (a larger value is lowered to that), so that one source never holds
    /// every slot.
    /// Default: 32.
    pub max_handshakes_per_source: usize,
    /// Server: most sessions (confirmed or not, until they can no longer
    /// be resumed) whose handshake came from one source (PROTOCOL.md 3.7):
    /// a new hello beyond it evicts the source's oldest unconfirmed session
    /// without transport, else it is answered Busy. Keeps one source from
    /// filling `max_sessions` with complete handshakes. Many clients behind
    /// one address (a carrier-grade NAT) share it: raise it for such
    /// clienteles. At most half of `max_sessions` (a larger value is
    /// lowered to that).
    /// Default: 1,000.
    pub max_sessions_per_source: usize,
    /// Server: the load at which ClientHellos must carry a cookie
    /// (PROTOCOL.md 3.7): once this many transports are pending
    /// ([`crate::Endpoint::pending_transports`], the new one included), a
    /// hello without a valid cookie is answered with one — a MAC, no key
    /// computation, no random draw, no state — and the client repeats it
    /// with the cookie on the same transport (one more round trip). 0: always;
    /// `usize::MAX`: never.
    /// Default: 256.
    pub cookie_threshold: usize,
    /// Whether this side starts rekey exchanges by its policy
    /// (`rekey_after_bytes`, `rekey_after_time`) and, on the server, orders
    /// them at the hard limits (PROTOCOL.md 4.7). With `false` a side still
    /// answers the peer's rekey, and `send` fails with
    /// [`crate::Error::KeyLimitReached`] once `key_lifetime_bytes` were
    /// sent under one key.
    /// Default: `true`.
    pub rekey: bool,
    /// Soft limit: start a rekey once this side sent this many DATA bytes
    /// under its current send epoch.
    /// Default: 2^30 (1 GiB).
    pub rekey_after_bytes: u64,
    /// Soft limit: start a rekey once the current epoch is this old
    /// (attached or not; a side that comes due while detached starts right
    /// after the next resume). The server waits 1.1 times as long, so that
    /// the client normally starts.
    /// Default: 10 minutes.
    pub rekey_after_time: Duration,
    /// Hard limit, time: an epoch this old is expired. The server orders a
    /// rekey and aborts the session with `KEY_EXPIRED` when none completed
    /// within `rekey_grace` of attached time.
    /// Default: 30 minutes.
    pub key_lifetime: Duration,
    /// Hard limit, bytes sent under one epoch: the sender writes no further
    /// DATA until its send epoch advances (`send` keeps buffering up to
    /// `send_buffer`; nothing is lost). With `rekey == false`, `send` fails
    /// with [`crate::Error::KeyLimitReached`] instead.
    /// Default: 2^36 (64 GiB).
    pub key_lifetime_bytes: u64,
    /// Attached time allowed to complete a rekey after a hard limit was
    /// hit (paused while the peer has not read up to the order).
    /// Default: 60 s.
    pub rekey_grace: Duration,
    /// Server: its static key pair, if clients pin it. Client: unused.
    /// Default: none.
    pub server_static: Option<StaticKeypair>,
    /// Client: the server's pinned public key. Without it the handshake is
    /// anonymous and open to an active man in the middle.
    /// Default: none.
    pub pinned_server_key: Option<[u8; 32]>,
    /// Server: the wall clock used for freshness (the time announced to
    /// clients, the time stamps of its control frames and the window of
    /// resume requests). `None`: the monotonic `Instant` passed to each call
    /// stands in for it (see [`crate::time`] module docs). The drivers
    /// install [`crate::SystemWallClock`] when this is `None`.
    /// Client: stamps the ClientHello of a new session (0 without it).
    pub wall_clock: Option<Arc<dyn WallClock>>,
    /// Server: decide on every session before data flows (ServerHello flag
    /// `CLIENT_AUTH`, PROTOCOL.md 6.9). Each client must present a
    /// credential ([`crate::ServerEvent::ClientAuth`]); the application
    /// accepts or rejects it (`Connection::accept_client`,
    /// `Connection::reject_client`). No application byte flows either way
    /// before acceptance. Client: unused.
    /// Default: false.
    pub client_auth: bool,
    /// Client: the credential presented to a server that asks for one
    /// (sent encrypted, after the server proved its key when pinned; in
    /// anonymous mode an active man in the middle could read it). Never
    /// sent to a server that does not ask. A secret is 1..=512 bytes, a
    /// token 51..=512; one outside its range is never sent (nor
    /// truncated): the client's session ends at once with
    /// `CloseReason::Error(Error::TooLong)`. Server: unused.
    /// Default: none.
    pub credential: Option<Credential>,
    /// Server: the server id (and config rotation) written into every
    /// connection id it issues, so that a load balancer in front of
    /// several servers sends each resume to the server that holds its
    /// session (PROTOCOL.md 3.8, [`crate::routing`]). `None`: connection
    /// ids are random. Client: unused.
    /// Default: none.
    pub routable_id: Option<RoutableId>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_payload: MAX_FRAME_PAYLOAD,
            send_buffer: 1 << 20,
            recv_buffer: 1 << 20,
            ack_threshold: 64 * 1024,
            ack_delay: Duration::from_millis(20),
            keepalive_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(10),
            resume_timeout: Duration::from_secs(600),
            freshness_window: Duration::from_secs(60),
            hello_cache: 65_536,
            max_resume_attempts: 16,
            max_auth_failures: 8,
            max_unauthenticated_rejections: 3,
            max_sessions: 10_000,
            max_pending_transports: 1_000,
            max_handshakes_per_source: 32,
            max_sessions_per_source: 1_000,
            cookie_threshold: 256,
            rekey: true,
            rekey_after_bytes: 1 << 30,
            rekey_after_time: Duration::from_secs(600),
            key_lifetime: Duration::from_secs(1800),
            key_lifetime_bytes: 1 << 36,
            rekey_grace: Duration::from_secs(60),
            server_static: None,
            pinned_server_key: None,
            wall_clock: None,
            client_auth: false,
            credential: None,
            routable_id: None,
        }
    }
}

impl Config {
    /// The freshness clock's reading: `wall_clock`, else `now` (see
    /// [`crate::time`]).
    pub(crate) fn wall_now(&self, now: Instant) -> UnixTime {
        self.wall_clock
            .as_ref()
            .map_or(UnixTime(now.as_micros()), |c| c.now())
    }

    /// Clamp fields to the ranges the protocol supports.
    pub(crate) fn normalized(mut self) -> Config {
        self.max_frame_payload = self.max_frame_payload.clamp(1, MAX_FRAME_PAYLOAD);
        let min_recv = crate::wire::FRAME_OVERHEAD + MAX_FRAME_PAYLOAD;
        self.recv_buffer = self.recv_buffer.max(min_recv);
        self.send_buffer = self.send_buffer.max(1);
        self.ack_threshold = self.ack_threshold.clamp(1, self.recv_buffer);
        self.max_resume_attempts = self.max_resume_attempts.max(1);
        self.max_auth_failures = self.max_auth_failures.max(1);
        self.max_unauthenticated_rejections = self.max_unauthenticated_rejections.max(1);
        self.hello_cache = self.hello_cache.max(1);
        let smaller = self.max_pending_transports.min(self.max_sessions);
        self.max_handshakes_per_source = self
            .max_handshakes_per_source
            .clamp(1, (smaller / 2).max(1));
        self.max_sessions_per_source = self
            .max_sessions_per_source
            .clamp(1, (self.max_sessions / 2).max(1));
        self.key_lifetime_bytes = self.key_lifetime_bytes.max(1);
        self.rekey_after_bytes = self.rekey_after_bytes.clamp(1, self.key_lifetime_bytes);
        self.rekey_after_time = self.rekey_after_time.min(self.key_lifetime);
        self
    }
}

impl core::fmt::Debug for Config {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Config")
            .field("max_frame_payload", &self.max_frame_payload)
            .field("send_buffer", &self.send_buffer)
            .field("recv_buffer", &self.recv_buffer)
            .field("ack_threshold", &self.ack_threshold)
            .field("ack_delay", &self.ack_delay)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("resume_timeout", &self.resume_timeout)
            .field("freshness_window", &self.freshness_window)
            .field("hello_cache", &self.hello_cache)
            .field("max_resume_attempts", &self.max_resume_attempts)
            .field("max_auth_failures", &self.max_auth_failures)
            .field(
                "max_unauthenticated_rejections",
                &self.max_unauthenticated_rejections,
            )
            .field("max_sessions", &self.max_sessions)
            .field("max_pending_transports", &self.max_pending_transports)
            .field("max_handshakes_per_source", &self.max_handshakes_per_source)
            .field("max_sessions_per_source", &self.max_sessions_per_source)
            .field("cookie_threshold", &self.cookie_threshold)
            .field("rekey", &self.rekey)
            .field("rekey_after_bytes", &self.rekey_after_bytes)
            .field("rekey_after_time", &self.rekey_after_time)
            .field("key_lifetime", &self.key_lifetime)
            .field("key_lifetime_bytes", &self.key_lifetime_bytes)
            .field("rekey_grace", &self.rekey_grace)
            .field(
                "server_static",
                &self.server_static.as_ref().map(|_| "<set>"),
            )
            .field("pinned_server_key", &self.pinned_server_key.is_some())
            .field("wall_clock", &self.wall_clock.is_some())
            .field("client_auth", &self.client_auth)
            .field("credential", &self.credential)
            .field("routable_id", &self.routable_id)
            .finish()
    }
}
