//! The server endpoint: accepts transports, runs new-session handshakes,
//! answers what needs no session, and routes resume requests to the session
//! that owns their connection id (quinn-proto's `Endpoint` is the model).
//!
//! The endpoint holds only a routing table (connection id → session) and
//! the handshakes in progress. Every established session is a
//! [`Connection`] that the driver owns and runs on its own, on any thread.
//!
//! Every accepted transport gets a [`TransportId`]. Its first byte decides
//! what it is: `0x00` opens a new session (handshake), `0xFF` resumes one.
//!
//! A session is registered (routable, and counted against `max_sessions`)
//! as soon as its ServerHello is sent, *unconfirmed*: the endpoint already
//! holds its keys, so if the ClientConfirm is lost with its transport, the
//! client's resume request (which proves the same keys) confirms it. The
//! driver hears of a session (a [`Connection`]) only once it is confirmed;
//! an unconfirmed session that expires goes silently. This is what lets the
//! client never start a second session with bytes the first may have
//! delivered (PROTOCOL.md 7.7). When `max_sessions` is reached, a new
//! ClientHello evicts the oldest unconfirmed session that has no transport,
//! so that abandoned hellos cannot lock clients out for `resume_timeout`.
//!
//! ```text
//!  accept ─▶ First ──hello──▶ Confirm ──valid confirm──▶ Dispatch::NewConnection
//!              │ └─resume of an unconfirmed session────▶ Dispatch::NewConnection
//!              ├─resume of a confirmed session─────────▶ Dispatch::Resume
//!              └─anything else (reject sent)──▶ Ended ◀── error / timeout
//! ```
//!
//! Deadlines (handshake timeouts of transports, expiry of unconfirmed
//! sessions without transport) sit in an ordered index, so
//! [`Endpoint::poll_timeout`] is O(log n) and [`Endpoint::handle_timeout`]
//! touches only what is due.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::sync::Arc;
use core::net::IpAddr;
use rand_core::CryptoRng;

use crate::admission::{address_bytes, CookieKeys, SourceKey, Sources};
use crate::config::Config;
use crate::connection::{Connection, EndpointEvent, Rejection, Shared};
use crate::credential::CredentialKeys;
use crate::error::{Error, ProtocolError};
use crate::event::ServerEvent;
use crate::handshake::{server_respond, ServerRandom};
use crate::ids::{SessionId, TransportId};
use crate::keys::{tags_equal, Secret};
use crate::rekey::{KeyRing, Side};
use crate::resume::{
    authenticated_reject, check_request, request_mac, SessionCounters, REQUEST_MAC_INPUT,
};
use crate::time::{Duration, Instant};
use crate::wire::{
    client_first_len, split_hello_cookie, ClientHello, HandshakeStatus, HelloCookie, HelloStale,
    ResumeRequest, ResumeStatus, UnknownSessionReject, CLIENT_CONFIRM_LEN, CLIENT_HELLO_LEN,
    COOKIE_LEN, RESUME_REQUEST_LEN, SERVER_HELLO_LEN, SH_FLAG_CLIENT_AUTH, TAG_LEN, TAG_NEW,
    TAG_NEW_COOKIE, VERSION,
};
use crate::MIN_TRANSMIT_BUFFER;

/// What the driver does with a transport after
/// [`Endpoint::handle_input`].
#[derive(Debug)]
#[must_use]
pub enum Dispatch {
    /// `n` bytes were consumed; the transport still belongs to the
    /// endpoint (feed it more, flush `poll_transmit`).
    Pending(usize),
    /// A session was established on the transport (its ClientConfirm
    /// verified, or a resume request proved the keys of a session whose
    /// confirm was lost). The transport now belongs to `connection`: feed
    /// the bytes after `consumed` and everything later to it.
    NewConnection {
        /// Bytes of the input used by the endpoint.
        consumed: usize,
        /// The new session, attached to the transport.
        connection: Box<Connection>,
    },
    /// A resume request for `session`: pass `request` (the whole message,
    /// [`crate::wire::RESUME_REQUEST_LEN`] bytes) to that
    /// session's [`Connection::handle_resume`] with the same transport; if
    /// the driver no longer has that session, write
    /// [`Endpoint::unknown_session`]'s reply and close the transport. The
    /// transport no longer belongs to the endpoint.
    Resume {
        /// Bytes of the input used by the endpoint.
        consumed: usize,
        /// The session that owns the request's connection id.
        session: SessionId,
        /// The request.
        request: [u8; RESUME_REQUEST_LEN],
    },
}

enum Phase {
    /// Waiting for the first message (ClientHello or ResumeRequest).
    First {
        buf: [u8; RESUME_REQUEST_LEN],
        have: usize,
    },
    /// ServerHello sent, waiting for the ClientConfirm.
    Confirm {
        session: SessionId,
        got: [u8; CLIENT_CONFIRM_LEN],
        have: usize,
    },
    /// Finished: flush `poll_transmit` (maybe a rejection), then close.
    Ended,
}

struct Pending {
    phase: Phase,
    control: [u8; SERVER_HELLO_LEN],
    control_len: usize,
    control_sent: usize,
    /// Handshake/resume deadline (in the index while not ended).
    deadline: Instant,
    /// The source it counts against (`accept_from`), if known.
    source: Option<SourceKey>,
    /// The peer address a cookie is bound to (zero if unknown).
    address: [u8; 16],
    /// A cookie was sent on this transport: a second hello without a valid
    /// one ends it.
    cookie_sent: bool,
}

impl Pending {
    fn set_control(&mut self, bytes: &[u8]) {
        self.control[..bytes.len()].copy_from_slice(bytes);
        self.control_len = bytes.len();
        self.control_sent = 0;
    }
}

/// A session whose ServerHello was sent and whose client has not proved
/// its keys yet. Consumed into a [`Connection`] when it does.
struct Handshake {
    conn_id: u64,
    keys: KeyRing,
    /// Seed of the connection's own random generator (drawn right after
    /// the connection id).
    rng_seed: Secret,
    reset_token: [u8; TAG_LEN],
    /// The keys of the credential exchange (`Config::client_auth`).
    credential: Option<CredentialKeys>,
    expected_confirm: [u8; TAG_LEN],
    transport: Option<TransportId>,
    /// Expiry while it has no transport (in the index).
    expires: Option<Instant>,
    /// The source its hello came from, if known.
    source: Option<SourceKey>,
}

impl Handshake {
    /// The client proved its keys: the handshake state is consumed into the
    /// session's connection, and the keys move (snow's
    /// `into_transport_mode(self)`), nothing is copied.
    fn into_connection(
        self,
        sid: SessionId,
        shared: &Shared,
        transport: Option<TransportId>,
        now: Instant,
    ) -> Result<Box<Connection>, Error> {
        let Handshake {
            conn_id,
            keys,
            reset_token,
            rng_seed,
            credential,
            ..
        } = self;
        Connection::new(
            sid,
            conn_id,
            shared,
            keys,
            reset_token,
            rng_seed.0,
            credential,
            transport,
            now,
        )
        .map(Box::new)
    }
}

/// How far ahead of the server's clock a ClientHello may be stamped
/// (PROTOCOL.md 3.3; at most `freshness_window`). Small, so that a flood
/// of hellos stamped ahead cannot raise the replay cache's floor above what
/// an honest client stamps: such a flood must turn the whole cache over
/// within this time (plus a round trip) to lock clients out. A client whose
/// clock runs further ahead is answered Stale once and retries with the
/// server's time.
pub const HELLO_MAX_AHEAD: Duration = Duration::from_secs(5);

/// The ClientHellos seen within the freshness window, by a fingerprint of
/// their ephemeral key (PROTOCOL.md 3.3): a replayed hello is refused
/// (Replayed) with no key computation, no random draw and no session slot.
/// Bounded by `Config::hello_cache`; when full, the oldest entry goes and
/// `floor` rises to its time: a hello stamped at or before `floor` could be
/// a replay of an entry no longer held, so it is refused Stale. (No floor
/// until the cache first overflowed.)
#[derive(Debug, Default)]
struct HelloCache {
    by_fp: BTreeSet<[u8; 16]>,
    by_time: BTreeSet<(u64, [u8; 16])>,
    floor: Option<u64>,
}

impl HelloCache {
    /// `BLAKE3(canonical client_ephemeral_public)[0..16]`: unkeyed (a
    /// collision costs 2^64 work and only makes one honest hello retry).
    /// Canonical: X25519 ignores bit 255 and reads values `≥ p = 2^255 − 19`
    /// modulo p (RFC 7748 5), so every encoding of one key has one
    /// fingerprint; a replay cannot miss the cache by re-encoding the key.
    fn fingerprint(ephemeral: &[u8; 32]) -> [u8; 16] {
        let mut u = *ephemeral;
        u[31] &= 0x7F;
        // u ≥ p exactly when u = p + k, k < 19: bytes 1..31 are 0xFF, byte
        // 31 is 0x7F and byte 0 is at least 0xED.
        if u[31] == 0x7F && u[1..31].iter().all(|&b| b == 0xFF) && u[0] >= 0xED {
            u = [0; 32];
            u[0] = ephemeral[0] - 0xED;
        }
        let mut fp = [0u8; 16];
        fp.copy_from_slice(&blake3::hash(&u).as_bytes()[..16]);
        fp
    }

    /// Forget entries older than `oldest` (they are outside the window:
    /// a replay of them is refused Stale anyway).
    fn prune(&mut self, oldest: u64) {
        while let Some(&(t, fp)) = self.by_time.first() {
            if t >= oldest {
                break;
            }
            self.by_time.pop_first();
            self.by_fp.remove(&fp);
        }
    }

    /// Remember a hello stamped `time`; `false` if it was seen before.
    fn insert(&mut self, time: u64, fp: [u8; 16], capacity: usize) -> bool {
        if self.by_fp.contains(&fp) {
            return false;
        }
        while self.by_fp.len() >= capacity {
            let Some((t, old)) = self.by_time.pop_first() else {
                break;
            };
            self.by_fp.remove(&old);
            self.floor = Some(self.floor.map_or(t, |f| f.max(t)));
        }
        self.by_fp.insert(fp);
        self.by_time.insert((time, fp));
        true
    }
}

/// An entry of the deadline index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    Transport(TransportId),
    Handshake(SessionId),
}

/// A relink server endpoint. See the [module docs](crate::endpoint).
///
/// # Calling contract
/// - **input**: [`accept`](Self::accept) each new transport, then
///   [`handle_input`](Self::handle_input) with its bytes until it returns
///   [`Dispatch::NewConnection`] or [`Dispatch::Resume`] (the transport then
///   leaves the endpoint) or an error; [`transport_lost`](Self::transport_lost)
///   when a transport the endpoint still holds ends;
///   [`handle_timeout`](Self::handle_timeout) once
///   [`poll_timeout`](Self::poll_timeout) has passed;
///   [`handle_event`](Self::handle_event) with every [`EndpointEvent`] a
///   connection produced.
/// - **output**, after any input: [`poll_transmit`](Self::poll_transmit) for
///   the transports it holds until 0, [`poll_event`](Self::poll_event) until
///   `None` (`CloseTransport`, `AuthFailed`), then `poll_timeout`.
/// - **getters**: [`session_count`](Self::session_count),
///   [`pending_transports`](Self::pending_transports), ...
///
/// The endpoint is small and its calls are short (one X25519 key generation
/// and two DH per hello at most): a multi-threaded driver keeps it behind
/// one lock and the connections behind their own. Its event queue is shared
/// by every transport it holds (a timer step may end any of them), so a
/// task that serves one transport can instead ask
/// [`transport_ended`](Self::transport_ended) after each call; either way
/// works. `examples/threaded_server.rs` is such a driver over `std::net`.
pub struct Endpoint<R: CryptoRng> {
    shared: Shared,
    rng: R,
    transports: BTreeMap<TransportId, Box<Pending>>,
    handshakes: BTreeMap<SessionId, Box<Handshake>>,
    /// Every resumable session, confirmed or not.
    routes: BTreeMap<u64, SessionId>,
    deadlines: BTreeSet<(Instant, Deadline)>,
    next_transport: u64,
    next_session: u64,
    /// Transports not yet ended.
    pending: usize,
    /// Sessions that can no longer be resumed but still hold unread bytes
    /// (between `EndpointEvent::Unroutable` and `EndpointEvent::Released`).
    ended: usize,
    events: VecDeque<ServerEvent>,
    /// Key of the reset tokens, from the static key (none without one).
    reset_secret: Option<Secret>,
    /// The hellos seen within the freshness window.
    hellos: HelloCache,
    /// Handshakes in progress and sessions per source.
    sources: Sources,
    /// The source of each confirmed, routable session that has one.
    session_sources: BTreeMap<SessionId, SourceKey>,
    /// The cookie keys (drawn the first time the endpoint is under load).
    cookies: Option<CookieKeys>,
    /// Cookie answers sent.
    cookies_sent: u64,
    /// Transports refused by `max_handshakes_per_source`, and hellos
    /// answered Busy by it.
    source_refusals: u64,
    /// Taken out of service ([`Endpoint::drain`]): new sessions are
    /// answered Busy.
    draining: bool,
    /// Resume requests handed to (or confirming) a session.
    resumes_routed: u64,
    /// Resume requests answered UnknownSession.
    unknown_session_answers: u64,
    /// Of those, the ones whose connection id carries another server id.
    misrouted_resumes: u64,
}

impl<R: CryptoRng> core::fmt::Debug for Endpoint<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Endpoint")
            .field("transports", &self.transports.len())
            .field("handshakes", &self.handshakes.len())
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl<R: CryptoRng> Endpoint<R> {
    /// An endpoint with no transports or sessions.
    pub fn new(config: Config, rng: R) -> Self {
        Endpoint {
            reset_secret: config.server_static.as_ref().map(|kp| kp.reset_secret()),
            shared: Shared::new(config.normalized()),
            rng,
            transports: BTreeMap::new(),
            handshakes: BTreeMap::new(),
            routes: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            next_transport: 0,
            next_session: 0,
            pending: 0,
            ended: 0,
            events: VecDeque::new(),
            hellos: HelloCache::default(),
            sources: Sources::default(),
            session_sources: BTreeMap::new(),
            cookies: None,
            cookies_sent: 0,
            source_refusals: 0,
            draining: false,
            resumes_routed: 0,
            unknown_session_answers: 0,
            misrouted_resumes: 0,
        }
    }

    /// The configuration (normalized), shared with every connection.
    pub fn config(&self) -> &Arc<Config> {
        &self.shared.config
    }

    /// Register a newly accepted transport whose peer address is unknown
    /// (its handshake deadline enters the index: re-read
    /// [`poll_timeout`](Self::poll_timeout)). Fails with
    /// [`Error::TooManyTransports`] when `max_pending_transports` transports
    /// are still pending (not yet authenticated): close it then. Such a
    /// transport counts against no source and its cookies are bound to no
    /// address: drivers that know the peer call
    /// [`accept_from`](Self::accept_from).
    pub fn accept(&mut self, now: Instant) -> Result<TransportId, Error> {
        self.register(now, None)
    }

    /// Register a newly accepted transport from `peer` (the IP address of
    /// the TCP peer; the port plays no part). Like [`accept`](Self::accept),
    /// and fails with [`Error::SourceLimit`] when the peer's source (its
    /// IPv4 address or IPv6 /64) already has
    /// `Config::max_handshakes_per_source` transports pending: close it
    /// then (PROTOCOL.md 3.7). Cookies the transport gets are bound to
    /// `peer`.
    pub fn accept_from(&mut self, now: Instant, peer: IpAddr) -> Result<TransportId, Error> {
        self.register(now, Some(peer))
    }

    fn register(&mut self, now: Instant, peer: Option<IpAddr>) -> Result<TransportId, Error> {
        if self.pending >= self.shared.config.max_pending_transports {
            return Err(Error::TooManyTransports);
        }
        let source = peer.map(SourceKey::of);
        if source.is_some_and(|k| {
            self.sources.transports(k) >= self.shared.config.max_handshakes_per_source
        }) {
            self.source_refusals += 1;
            return Err(Error::SourceLimit);
        }
        self.next_transport += 1;
        let id = TransportId(self.next_transport);
        let deadline = now.saturating_add(self.shared.config.handshake_timeout);
        self.transports.insert(
            id,
            Box::new(Pending {
                phase: Phase::First {
                    buf: [0; RESUME_REQUEST_LEN],
                    have: 0,
                },
                control: [0; SERVER_HELLO_LEN],
                control_len: 0,
                control_sent: 0,
                deadline,
                source,
                address: address_bytes(peer),
                cookie_sent: false,
            }),
        );
        self.deadlines.insert((deadline, Deadline::Transport(id)));
        self.pending += 1;
        self.sources.add_transport(source);
        Ok(id)
    }

    /// A transport the endpoint holds ended (EOF, error, or the driver
    /// closed it after a `CloseTransport` event). An unconfirmed session
    /// waiting on it waits for a resume instead.
    pub fn transport_lost(&mut self, transport: TransportId, now: Instant) {
        let Some(t) = self.transports.remove(&transport) else {
            return;
        };
        if !matches!(t.phase, Phase::Ended) {
            self.pending -= 1;
            self.sources.remove_transport(t.source);
            self.deadlines
                .remove(&(t.deadline, Deadline::Transport(transport)));
        }
        if let Phase::Confirm { session, .. } = t.phase {
            self.detach_handshake(session, now);
        }
    }

    /// Bytes received on `transport`. See [`Dispatch`] for what follows.
    /// `Err` means the transport is finished: flush `poll_transmit` (it may
    /// hold a rejection), close it, then call
    /// [`transport_lost`](Self::transport_lost) (until then it counts
    /// against `max_pending_transports`). A call can add a deadline (a new
    /// handshake): re-read [`poll_timeout`](Self::poll_timeout) after it.
    pub fn handle_input(
        &mut self,
        transport: TransportId,
        now: Instant,
        input: &[u8],
    ) -> Result<Dispatch, Error> {
        let mut consumed = 0;
        loop {
            let t = self
                .transports
                .get_mut(&transport)
                .ok_or(Error::UnknownTransport)?;
            match &mut t.phase {
                Phase::Ended => return Err(Error::TransportEnded),
                Phase::First { buf, have } => {
                    let rest = &input[consumed..];
                    if *have < 2 {
                        let n = (2 - *have).min(rest.len());
                        buf[*have..*have + n].copy_from_slice(&rest[..n]);
                        *have += n;
                        consumed += n;
                        if *have < 2 {
                            return Ok(Dispatch::Pending(consumed));
                        }
                    }
                    let len = match client_first_len(buf[0], buf[1]) {
                        Ok(Some(len)) => len,
                        Ok(None) => {
                            let version = buf[1];
                            // Both status sets use 1 for "unsupported version".
                            t.set_control(&[
                                VERSION,
                                HandshakeStatus::UnsupportedVersion.to_byte(),
                            ]);
                            let e = ProtocolError::UnsupportedVersion(version).into();
                            return Err(self.end_transport(transport, e));
                        }
                        Err(e) => return Err(self.end_transport(transport, e.into())),
                    };
                    let rest = &input[consumed..];
                    let n = (len - *have).min(rest.len());
                    buf[*have..*have + n].copy_from_slice(&rest[..n]);
                    *have += n;
                    consumed += n;
                    if *have < len {
                        return Ok(Dispatch::Pending(consumed));
                    }
                    let msg = *buf;
                    if msg[0] == TAG_NEW {
                        let mut hello = [0u8; CLIENT_HELLO_LEN];
                        hello.copy_from_slice(&msg[..CLIENT_HELLO_LEN]);
                        self.on_client_hello(transport, now, &hello, None)?;
                    } else if msg[0] == TAG_NEW_COOKIE {
                        let (hello, cookie) = match split_hello_cookie(&msg[..len]) {
                            Ok(h) => h,
                            Err(e) => return Err(self.end_transport(transport, e.into())),
                        };
                        self.on_client_hello(transport, now, &hello, Some(cookie))?;
                    } else {
                        return self.on_resume_request(transport, now, consumed, msg);
                    }
                }
                Phase::Confirm { got, have, .. } => {
                    let rest = &input[consumed..];
                    let n = (CLIENT_CONFIRM_LEN - *have).min(rest.len());
                    got[*have..*have + n].copy_from_slice(&rest[..n]);
                    *have += n;
                    consumed += n;
                    if *have < CLIENT_CONFIRM_LEN {
                        return Ok(Dispatch::Pending(consumed));
                    }
                    return self.on_client_confirm(transport, now, consumed);
                }
            }
        }
    }

    fn on_client_hello(
        &mut self,
        transport: TransportId,
        now: Instant,
        hello: &[u8; CLIENT_HELLO_LEN],
        cookie: Option<[u8; COOKIE_LEN]>,
    ) -> Result<(), Error> {
        // The cheap checks, in this order, all before any key computation or
        // random draw (PROTOCOL.md 3.3, 3.7): version (checked by the
        // caller), flags, cookie (under load), time window, replay cache,
        // the source's and the server's capacity. A replayed or stale hello
        // thus never evicts a genuine unconfirmed session.
        let ch = match ClientHello::decode(hello) {
            Ok(ch) => ch,
            Err(_) => return Err(self.reject_hello(transport, HandshakeStatus::Malformed)),
        };
        let (source, address, cookie_sent) = match self.transports.get(&transport) {
            Some(t) => (t.source, t.address, t.cookie_sent),
            None => return Err(Error::UnknownTransport),
        };
        // Taken out of service: no new session (PROTOCOL.md 3.8). Busy
        // makes the client try a new transport, which the balancer sends
        // to another server.
        if self.draining {
            return Err(self.reject_hello(transport, HandshakeStatus::Busy));
        }
        if self.pending >= self.shared.config.cookie_threshold {
            let rng = &mut self.rng;
            let keys = self.cookies.get_or_insert_with(|| {
                let mut base = [0u8; 32];
                rng.fill_bytes(&mut base);
                let k = CookieKeys::new(base);
                zeroize::Zeroize::zeroize(&mut base);
                k
            });
            let valid =
                cookie.is_some_and(|c| keys.check(now, &address, &ch.ephemeral, ch.time, &c));
            if !valid {
                let answer = HelloCookie {
                    cookie: keys.make(now, &address, &ch.ephemeral, ch.time),
                }
                .encode();
                self.cookies_sent += 1;
                let t = self
                    .transports
                    .get_mut(&transport)
                    .ok_or(Error::UnknownTransport)?;
                t.set_control(&answer);
                if cookie_sent {
                    // One cookie round per transport: the client had its
                    // chance (its hello came back without a valid cookie).
                    let e = Error::HandshakeRejected(HandshakeStatus::Cookie);
                    return Err(self.end_transport(transport, e));
                }
                t.cookie_sent = true;
                // Back to waiting for a first message: the endpoint keeps
                // nothing of this hello.
                t.phase = Phase::First {
                    buf: [0; RESUME_REQUEST_LEN],
                    have: 0,
                };
                return Ok(());
            }
        }
        let wall = self.shared.config.wall_now(now).as_micros();
        let window = self.shared.config.freshness_window.as_micros();
        let ahead = window.min(HELLO_MAX_AHEAD.as_micros());
        // A floor further ahead than any hello may be stamped can only come
        // from a server clock that was stepped back: drop it, or every
        // honest hello would be Stale until the clock caught up
        // (PROTOCOL.md 3.3).
        if self
            .hellos
            .floor
            .is_some_and(|f| f > wall.saturating_add(ahead))
        {
            self.hellos.floor = None;
        }
        if ch.time > wall.saturating_add(ahead)
            || wall.saturating_sub(ch.time) > window
            || self.hellos.floor.is_some_and(|f| ch.time <= f)
        {
            return Err(self.reject_stale_hello(transport, wall));
        }
        self.hellos.prune(wall.saturating_sub(window));
        let fp = HelloCache::fingerprint(&ch.ephemeral);
        if !self
            .hellos
            .insert(ch.time, fp, self.shared.config.hello_cache)
        {
            return Err(self.reject_hello(transport, HandshakeStatus::Replayed));
        }
        // One source holds at most `max_handshakes_per_source` unconfirmed
        // sessions and `max_sessions_per_source` sessions in all: its
        // oldest unconfirmed one without a transport makes room, else Busy.
        if let Some(k) = source {
            let cfg = &self.shared.config;
            let full = self.sources.unconfirmed(k) >= cfg.max_handshakes_per_source
                || self.sources.weight(Some(k)) >= cfg.max_sessions_per_source;
            if full && !self.evict_unconfirmed(Some(k)) {
                self.source_refusals += 1;
                return Err(self.reject_hello(transport, HandshakeStatus::Busy));
            }
        }
        // Unconfirmed sessions count: the cap holds at every moment. The
        // source's own oldest goes first, else one of the source that holds
        // the most sessions (PROTOCOL.md 3.7).
        if self.session_count() >= self.shared.config.max_sessions
            && !(source.is_some() && self.evict_unconfirmed(source))
            && !self.evict_unconfirmed(None)
        {
            return Err(self.reject_hello(transport, HandshakeStatus::Busy));
        }
        let mut random = ServerRandom {
            ephemeral_secret: [0; 32],
            challenge: [0; 16],
            conn_id: 0,
            reset_token: [0; TAG_LEN],
        };
        self.rng.fill_bytes(&mut random.ephemeral_secret);
        self.rng.fill_bytes(&mut random.challenge);
        random.conn_id = self.fresh_conn_id();
        let mut rng_seed = Secret([0; 32]);
        self.rng.fill_bytes(&mut rng_seed.0);
        random.reset_token = self.reset_token(random.conn_id);
        let result = server_respond(
            hello,
            &random,
            wall,
            self.shared.config.resume_timeout.as_micros(),
            self.shared.config.server_static.as_ref(),
            if self.shared.config.client_auth {
                SH_FLAG_CLIENT_AUTH
            } else {
                0
            },
        );
        let hs = match result {
            Ok(hs) => hs,
            Err(Error::HandshakeRejected(s)) => return Err(self.reject_hello(transport, s)),
            Err(_) => return Err(self.reject_hello(transport, HandshakeStatus::Malformed)),
        };
        let t = self
            .transports
            .get_mut(&transport)
            .ok_or(Error::UnknownTransport)?;
        self.next_session += 1;
        let sid = SessionId(self.next_session);
        t.set_control(&hs.reply);
        t.phase = Phase::Confirm {
            session: sid,
            got: [0; CLIENT_CONFIRM_LEN],
            have: 0,
        };
        let est = hs.established;
        let pinned = crate::wire::ClientHello::decode(hello)
            .is_ok_and(|h| h.flags & crate::wire::FLAG_PINNED != 0);
        self.routes.insert(est.conn_id, sid);
        self.handshakes.insert(
            sid,
            Box::new(Handshake {
                conn_id: est.conn_id,
                keys: KeyRing::new(est.chain, Side::Server, pinned),
                rng_seed,
                reset_token: est.reset_token,
                credential: est.credential,
                expected_confirm: hs.expected_confirm,
                transport: Some(transport),
                expires: None,
                source,
            }),
        );
        self.sources.add_unconfirmed(source);
        Ok(())
    }

    /// Answer Stale with the server's clock (`02 05 || server_time`).
    fn reject_stale_hello(&mut self, transport: TransportId, wall: u64) -> Error {
        if let Some(t) = self.transports.get_mut(&transport) {
            t.set_control(&HelloStale { server_time: wall }.encode());
        }
        self.end_transport(transport, Error::HandshakeRejected(HandshakeStatus::Stale))
    }

    fn reject_hello(&mut self, transport: TransportId, status: HandshakeStatus) -> Error {
        if let Some(t) = self.transports.get_mut(&transport) {
            t.set_control(&[VERSION, status.to_byte()]);
        }
        self.end_transport(transport, Error::HandshakeRejected(status))
    }

    fn fresh_conn_id(&mut self) -> u64 {
        loop {
            let random = self.rng.next_u64();
            let id = self
                .shared
                .config
                .routable_id
                .map_or(random, |r| r.generate(random));
            if id != 0 && !self.routes.contains_key(&id) {
                return id;
            }
        }
    }

    fn on_client_confirm(
        &mut self,
        transport: TransportId,
        now: Instant,
        consumed: usize,
    ) -> Result<Dispatch, Error> {
        let t = self
            .transports
            .get(&transport)
            .ok_or(Error::UnknownTransport)?;
        let Phase::Confirm {
            session: sid, got, ..
        } = &t.phase
        else {
            return Err(Error::InvalidState);
        };
        let (sid, got) = (*sid, *got);
        let Some(hs) = self.handshakes.get(&sid) else {
            return Err(self.end_transport(transport, Error::UnknownSession));
        };
        if !tags_equal(&hs.expected_confirm, &got) {
            // The session stays registered, unconfirmed: a corrupted confirm
            // must not cost a young session; a valid resume confirms it.
            self.events.push_back(ServerEvent::AuthFailed {
                transport,
                reason: Error::AuthFailed,
            });
            let e = self.end_transport(transport, Error::AuthFailed);
            self.detach_handshake(sid, now);
            return Err(e);
        }
        self.release_transport(transport);
        let connection = self.confirm(sid, Some(transport), now)?;
        Ok(Dispatch::NewConnection {
            consumed,
            connection,
        })
    }

    /// Take the handshake state of `sid` out of the endpoint and turn it
    /// into its connection.
    fn confirm(
        &mut self,
        sid: SessionId,
        transport: Option<TransportId>,
        now: Instant,
    ) -> Result<Box<Connection>, Error> {
        let hs = self.handshakes.remove(&sid).ok_or(Error::UnknownSession)?;
        self.sources.remove_unconfirmed(hs.source);
        if let Some(at) = hs.expires {
            self.deadlines.remove(&(at, Deadline::Handshake(sid)));
        }
        let (conn_id, source) = (hs.conn_id, hs.source);
        let r = hs.into_connection(sid, &self.shared, transport, now);
        if r.is_err() {
            // No connection will ever report this session: no route may
            // outlive it.
            self.routes.remove(&conn_id);
        } else if let Some(k) = source {
            // Counted against its source until it can no longer be resumed.
            self.sources.add_session(k);
            self.session_sources.insert(sid, k);
        }
        r
    }

    fn on_resume_request(
        &mut self,
        transport: TransportId,
        now: Instant,
        consumed: usize,
        msg: [u8; RESUME_REQUEST_LEN],
    ) -> Result<Dispatch, Error> {
        let req = match ResumeRequest::decode(&msg) {
            Ok(r) => r,
            Err(e) => return Err(self.end_transport(transport, e.into())),
        };
        let Some(&sid) = self.routes.get(&req.conn_id) else {
            self.unknown_session_answers += 1;
            if self
                .shared
                .config
                .routable_id
                .is_some_and(|r| !r.owns(req.conn_id))
            {
                self.misrouted_resumes += 1;
            }
            return Err(self.reject_unknown(transport, req.conn_id));
        };
        let Some(hs) = self.handshakes.get(&sid) else {
            // A confirmed session: its connection decides.
            self.resumes_routed += 1;
            self.release_transport(transport);
            return Ok(Dispatch::Resume {
                consumed,
                session: sid,
                request: msg,
            });
        };
        // An unconfirmed session: its ClientConfirm was lost, and this
        // request proves the same keys. An unconfirmed session only ever
        // has epoch 0 (its ring holds no other resume key).
        let old_transport = hs.transport;
        let key = hs.keys.resume_key(req.rx_epoch).cloned();
        let Some(key) =
            key.filter(|k| tags_equal(&request_mac(k, &msg[..REQUEST_MAC_INPUT]), &req.mac))
        else {
            self.events.push_back(ServerEvent::AuthFailed {
                transport,
                reason: Error::AuthFailed,
            });
            let rej = Rejection::new(
                Error::ResumeRejected(ResumeStatus::AuthFailed),
                &[VERSION, ResumeStatus::AuthFailed.to_byte()],
            );
            return Err(self.reject(transport, rej));
        };
        let counters = SessionCounters {
            last_counter: 0,
            server_acked: 0,
            server_end: 0,
            server_read: 0,
        };
        let wall = self.shared.config.wall_now(now).as_micros();
        let window = self.shared.config.freshness_window.as_micros();
        if let Err(status) = check_request(&req, &counters, wall, window) {
            let reply = authenticated_reject(&key, &msg, status, wall);
            let rej = Rejection::new(Error::ResumeRejected(status), &reply);
            return Err(self.reject(transport, rej));
        }
        // The transport that carried the ServerHello, if still open, is
        // replaced: closed without error, nothing more written to it.
        if let Some(old) = old_transport.filter(|&o| o != transport) {
            if let Some(ot) = self.transports.get_mut(&old) {
                if !matches!(ot.phase, Phase::Ended) {
                    self.pending -= 1;
                    self.sources.remove_transport(ot.source);
                    self.deadlines
                        .remove(&(ot.deadline, Deadline::Transport(old)));
                }
                ot.phase = Phase::Ended;
                ot.control_len = 0;
                ot.control_sent = 0;
                self.events.push_back(ServerEvent::CloseTransport {
                    transport: old,
                    error: None,
                });
            }
        }
        self.release_transport(transport);
        self.resumes_routed += 1;
        let mut connection = self.confirm(sid, None, now)?;
        connection.announce(transport);
        // The same wall reading as the check above: a second reading could
        // turn the request Stale after the handshake was consumed.
        if let Err(rej) = connection.handle_resume_at(transport, now, wall, &msg) {
            // Cannot happen (the same checks, with the same clock reading,
            // passed above); the session is lost, reported as a rejection,
            // and its route goes with it (no route to a session that
            // exists nowhere).
            self.routes.remove(&req.conn_id);
            return Err(rej.error());
        }
        Ok(Dispatch::NewConnection {
            consumed,
            connection,
        })
    }

    /// The reset token of `conn_id` (zero without a static key).
    fn reset_token(&self, conn_id: u64) -> [u8; TAG_LEN] {
        self.reset_secret
            .as_ref()
            .map_or([0; TAG_LEN], |s| s.reset_token(conn_id))
    }

    /// The token an UnknownSession answer for `conn_id` carries
    /// (PROTOCOL.md 3.8, 4.6): the reset token when this endpoint issued
    /// the id, or could have (it has no routable id, or the id carries its
    /// server id and rotation); 16 zero bytes, which no pinning client
    /// accepts, for an id another node of the fleet issued. Every node
    /// holds the fleet's static key and could compute any id's token, but
    /// only the owner knows that the session is gone: another node
    /// revealing it would let anyone end a live session on its owner.
    fn unknown_session_token(&self, conn_id: u64) -> [u8; TAG_LEN] {
        match self.shared.config.routable_id {
            Some(r) if !r.owns(conn_id) => [0; TAG_LEN],
            _ => self.reset_token(conn_id),
        }
    }

    /// Answer "unknown session" (with the reset token if this endpoint
    /// owns the id, [`Self::unknown_session_token`]), which a pinning
    /// client checks (PROTOCOL.md 3.6), and end the transport.
    fn reject_unknown(&mut self, transport: TransportId, conn_id: u64) -> Error {
        let reply = UnknownSessionReject {
            reset_token: self.unknown_session_token(conn_id),
        }
        .encode();
        self.reject(
            transport,
            Rejection::new(Error::ResumeRejected(ResumeStatus::UnknownSession), &reply),
        )
    }

    fn reject(&mut self, transport: TransportId, rej: Rejection) -> Error {
        if let Some(t) = self.transports.get_mut(&transport) {
            t.set_control(rej.reply());
        }
        self.end_transport(transport, rej.error())
    }

    /// The transport leaves the endpoint (to a connection).
    fn release_transport(&mut self, transport: TransportId) {
        if let Some(t) = self.transports.remove(&transport) {
            if !matches!(t.phase, Phase::Ended) {
                self.pending -= 1;
                self.sources.remove_transport(t.source);
                self.deadlines
                    .remove(&(t.deadline, Deadline::Transport(transport)));
            }
        }
    }

    /// Mark a transport finished and tell the driver to close it.
    fn end_transport(&mut self, transport: TransportId, error: Error) -> Error {
        if let Some(t) = self.transports.get_mut(&transport) {
            if !matches!(t.phase, Phase::Ended) {
                self.pending -= 1;
                self.sources.remove_transport(t.source);
                self.deadlines
                    .remove(&(t.deadline, Deadline::Transport(transport)));
            }
            t.phase = Phase::Ended;
            self.events.push_back(ServerEvent::CloseTransport {
                transport,
                error: Some(error),
            });
        }
        error
    }

    /// An unconfirmed session lost its transport: it waits `resume_timeout`
    /// for a resume request.
    fn detach_handshake(&mut self, sid: SessionId, now: Instant) {
        if let Some(hs) = self.handshakes.get_mut(&sid) {
            hs.transport = None;
            if hs.expires.is_none() {
                let at = now.saturating_add(self.shared.config.resume_timeout);
                hs.expires = Some(at);
                self.deadlines.insert((at, Deadline::Handshake(sid)));
            }
        }
    }

    /// Free an unconfirmed session that has no transport — no application
    /// has seen it; its client, if genuine, learns "unknown session" on its
    /// next resume and reports its in-doubt bytes. With `source`: the
    /// oldest of that source; without: the oldest of the source that holds
    /// the most sessions (so that a flood evicts its own first). Returns
    /// whether one was freed. O(unconfirmed sessions).
    fn evict_unconfirmed(&mut self, source: Option<SourceKey>) -> bool {
        let victim = match source {
            Some(_) => self
                .handshakes
                .iter()
                .find(|(_, hs)| hs.transport.is_none() && hs.source == source)
                .map(|(sid, _)| *sid),
            None => {
                let mut best: Option<(usize, SessionId)> = None;
                for (sid, hs) in &self.handshakes {
                    if hs.transport.is_some() {
                        continue;
                    }
                    let w = self.sources.weight(hs.source);
                    if best.is_none_or(|(bw, _)| w > bw) {
                        best = Some((w, *sid));
                    }
                }
                best.map(|(_, sid)| sid)
            }
        };
        let Some(sid) = victim else {
            return false;
        };
        self.drop_handshake(sid);
        true
    }

    fn drop_handshake(&mut self, sid: SessionId) {
        if let Some(hs) = self.handshakes.remove(&sid) {
            self.sources.remove_unconfirmed(hs.source);
            self.routes.remove(&hs.conn_id);
            if let Some(at) = hs.expires {
                self.deadlines.remove(&(at, Deadline::Handshake(sid)));
            }
        }
    }

    /// A request of a connection (see [`EndpointEvent`]).
    pub fn handle_event(&mut self, event: EndpointEvent) {
        match event {
            EndpointEvent::Unroutable { session, conn_id } => {
                if self.routes.get(&conn_id) == Some(&session) {
                    self.routes.remove(&conn_id);
                }
                if let Some(k) = self.session_sources.remove(&session) {
                    self.sources.remove_session(k);
                }
                // Held until released: the bound covers unread bytes too.
                self.ended += 1;
            }
            EndpointEvent::Released { .. } => {
                self.ended = self.ended.saturating_sub(1);
            }
        }
    }

    /// Fill `out` with bytes for `transport` (a ServerHello or a
    /// rejection); 0 when nothing is due. `out` must hold at least
    /// [`MIN_TRANSMIT_BUFFER`] bytes.
    #[must_use = "the bytes written to `out` must be sent"]
    pub fn poll_transmit(
        &mut self,
        transport: TransportId,
        out: &mut [u8],
    ) -> Result<usize, Error> {
        if out.len() < MIN_TRANSMIT_BUFFER {
            return Err(Error::BufferTooSmall {
                need: MIN_TRANSMIT_BUFFER,
            });
        }
        let Some(t) = self.transports.get_mut(&transport) else {
            return Ok(0);
        };
        let pending = &t.control[t.control_sent..t.control_len];
        let n = pending.len();
        out[..n].copy_from_slice(pending);
        t.control_sent = t.control_len;
        Ok(n)
    }

    /// Whether `poll_transmit(transport, ..)` would write something now.
    pub fn wants_transmit(&self, transport: TransportId) -> bool {
        self.transports
            .get(&transport)
            .is_some_and(|t| t.control_sent < t.control_len)
    }

    /// The next event (`CloseTransport`, `AuthFailed`), if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] should be called next: the first
    /// entry of the deadline index (O(log n)).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Handshake deadlines of transports and expiry of unconfirmed sessions
    /// that are due at `now`; touches only those entries (and forgets the
    /// remembered hellos that left the freshness window).
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.hellos.by_time.is_empty() {
            let wall = self.shared.config.wall_now(now).as_micros();
            let window = self.shared.config.freshness_window.as_micros();
            self.hellos.prune(wall.saturating_sub(window));
        }
        while let Some(&(at, what)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            match what {
                Deadline::Transport(tid) => {
                    let session = match self.transports.get(&tid).map(|t| &t.phase) {
                        Some(Phase::Confirm { session, .. }) => Some(*session),
                        _ => None,
                    };
                    // Already out of the index: end_transport must not
                    // count it twice.
                    if let Some(t) = self.transports.get_mut(&tid) {
                        if !matches!(t.phase, Phase::Ended) {
                            self.pending -= 1;
                            self.sources.remove_transport(t.source);
                            t.phase = Phase::Ended;
                            self.events.push_back(ServerEvent::CloseTransport {
                                transport: tid,
                                error: Some(Error::TimedOut),
                            });
                        }
                    }
                    if let Some(sid) = session {
                        self.detach_handshake(sid, now);
                    }
                }
                Deadline::Handshake(sid) => {
                    if let Some(hs) = self.handshakes.get_mut(&sid) {
                        hs.expires = None;
                    }
                    self.drop_handshake(sid);
                }
            }
        }
    }

    /// Whether the endpoint ended `transport` (or does not hold it).
    pub fn transport_ended(&self, transport: TransportId) -> bool {
        self.transports
            .get(&transport)
            .is_none_or(|t| matches!(t.phase, Phase::Ended))
    }

    /// Whether the endpoint holds `transport` (pending or ended, until
    /// `transport_lost`).
    pub fn holds_transport(&self, transport: TransportId) -> bool {
        self.transports.contains_key(&transport)
    }

    /// Whether `session` is an unconfirmed session of this endpoint.
    pub fn is_handshaking(&self, session: SessionId) -> bool {
        self.handshakes.contains_key(&session)
    }

    /// The connection id of an unconfirmed session.
    pub fn handshake_conn_id(&self, session: SessionId) -> Option<u64> {
        self.handshakes.get(&session).map(|h| h.conn_id)
    }

    /// Take the endpoint out of service (a graceful drain, PROTOCOL.md
    /// 3.8): from now on every new-session ClientHello is answered Busy
    /// (the client retries on a new transport, which a load balancer sends
    /// to another server), while resume requests are served as before, so
    /// the sessions it holds can finish. Irreversible. The driver decides
    /// when to stop: when [`Endpoint::session_count`] and its own
    /// connections reach zero, or at a deadline (ending the rest with
    /// `AbortCode::SHUTTING_DOWN`).
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Whether [`Endpoint::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Resume requests handed to a session ([`Dispatch::Resume`], or a
    /// resume that confirmed a session whose ClientConfirm was lost).
    /// Behind a load balancer, every resume should land on its server.
    pub fn resumes_routed(&self) -> u64 {
        self.resumes_routed
    }

    /// Resume requests answered UnknownSession (the session expired, was
    /// freed, or lives on another server), replies a driver writes itself
    /// with [`Endpoint::unknown_session`] included (a resume routed to a
    /// session that went away before the driver handed it over; it also
    /// counts in [`Endpoint::resumes_routed`]).
    pub fn unknown_session_answers(&self) -> u64 {
        self.unknown_session_answers
    }

    /// Of [`Endpoint::unknown_session_answers`], those whose connection id
    /// carries another server id than `Config::routable_id` (0 without
    /// one): resumes a load balancer sent to the wrong server, or sent
    /// elsewhere because their server was down.
    pub fn misrouted_resumes(&self) -> u64 {
        self.misrouted_resumes
    }

    /// The session that owns `conn_id`, if routable.
    pub fn route(&self, conn_id: u64) -> Option<SessionId> {
        self.routes.get(&conn_id).copied()
    }

    /// Sessions held: resumable ones (confirmed or not) and ended ones whose
    /// bytes the application has not read yet. What `max_sessions` bounds.
    pub fn session_count(&self) -> usize {
        self.routes.len() + self.ended
    }

    /// ClientHellos remembered against replays (within the freshness
    /// window, at most `Config::hello_cache`).
    pub fn remembered_hellos(&self) -> usize {
        self.hellos.by_fp.len()
    }

    /// Unconfirmed sessions (handshakes in progress).
    pub fn handshake_count(&self) -> usize {
        self.handshakes.len()
    }

    /// Transports that have not completed a handshake or resume.
    pub fn pending_transports(&self) -> usize {
        self.pending
    }

    /// Sources (IPv4 addresses, IPv6 /64s) with a transport or an
    /// unconfirmed session in progress, or a resumable session
    /// (PROTOCOL.md 3.7).
    pub fn active_sources(&self) -> usize {
        self.sources.len()
    }

    /// Cookie answers sent to hellos since the endpoint was created
    /// (PROTOCOL.md 3.7).
    pub fn cookies_sent(&self) -> u64 {
        self.cookies_sent
    }

    /// Transports refused and hellos answered Busy because their source
    /// was at `Config::max_handshakes_per_source`, since the endpoint was
    /// created.
    pub fn source_refusals(&self) -> u64 {
        self.source_refusals
    }

    /// A rejection for a resume routed to a session that has since gone
    /// (the driver found no connection for it): "unknown session" with the
    /// reset token (the id is this endpoint's own: it was routed here).
    /// Counted in [`Endpoint::unknown_session_answers`].
    pub fn unknown_session(&mut self, request: &[u8; RESUME_REQUEST_LEN]) -> Rejection {
        let conn_id = ResumeRequest::decode(request).map_or(0, |r| r.conn_id);
        self.unknown_session_answers += 1;
        let reply = UnknownSessionReject {
            reset_token: self.unknown_session_token(conn_id),
        }
        .encode();
        Rejection::new(Error::ResumeRejected(ResumeStatus::UnknownSession), &reply)
    }
}
