//! The server endpoint: many sessions, each reachable over a succession of
//! transports.
//!
//! Every accepted transport gets a [`TransportId`]. Its first byte decides
//! what it is: `0x00` opens a new session (handshake), `0xFF` resumes one.
//! A transport is *pending* until its handshake or resume is authenticated,
//! then *attached* to a session ([`SessionId`]). A session whose transport
//! broke stays registered for `resume_timeout`, then expires.
//!
//! A session is registered (and counts against `max_sessions`) as soon as
//! its ServerHello is sent, *unconfirmed*: the server already holds its keys,
//! so if the ClientConfirm is lost with its transport, the client's resume
//! request (which proves the same keys) confirms it. The application hears
//! of a session (`HandshakeDone`) only once it is confirmed; an unconfirmed
//! session that expires goes silently. This is what lets the client never
//! start a second session with bytes the first may have delivered
//! (PROTOCOL.md 7.7). When `max_sessions` is reached, a new ClientHello
//! evicts the oldest unconfirmed session that has no transport, so that
//! abandoned hellos cannot lock clients out for `resume_timeout`.
//!
//! ```text
//!  accept ─▶ First ──hello──▶ Confirm ──valid confirm──▶ Attached(session)
//!              │ └─valid resume request─────────────────▶ Attached(session)
//!              └─ anything else (reject sent) ─▶ Ended ◀── error / timeout / replaced
//! ```

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use rand_core::CryptoRng;

use crate::config::Config;
use crate::error::{Error, ProtocolError};
use crate::event::{CloseReason, ServerEvent};
use crate::handshake::{server_respond, ServerRandom};
use crate::keys::{tags_equal, Secret};
use crate::resume::{
    check_request, reject_mac, request_mac, response_mac, SessionCounters, REJECT_MAC_INPUT,
    REQUEST_MAC_INPUT, RESPONSE_MAC_INPUT,
};
use crate::stream::{Stream, StreamEvent, StreamKeys, StreamLimits};
use crate::time::{earliest, Instant};
use crate::wire::{
    client_first_len, AbortCode, AuthenticatedReject, HandshakeStatus, ResumeRequest,
    ResumeResponse, ResumeStatus, UnknownSessionReject, CLIENT_CONFIRM_LEN, CLIENT_HELLO_LEN,
    REJECT_AUTH_LEN, RESUME_REQUEST_LEN, SERVER_HELLO_LEN, TAG_LEN, TAG_NEW, VERSION,
};
use crate::MIN_TRANSMIT_BUFFER;

/// Identifies one transport (connection) accepted by a [`Server`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransportId(pub u64);

/// Identifies one session of a [`Server`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

enum Phase {
    /// Waiting for the first message (ClientHello or ResumeRequest).
    First {
        buf: [u8; RESUME_REQUEST_LEN],
        have: usize,
    },
    /// ServerHello sent (the unconfirmed session is registered), waiting
    /// for the ClientConfirm.
    Confirm {
        session: SessionId,
        expected: [u8; CLIENT_CONFIRM_LEN],
        got: [u8; CLIENT_CONFIRM_LEN],
        have: usize,
    },
    /// Carries the frames of a session.
    Attached(SessionId),
    /// Finished: flush `poll_transmit` (maybe a rejection), then close.
    Ended,
}

struct Transport {
    phase: Phase,
    control: [u8; SERVER_HELLO_LEN],
    control_len: usize,
    control_sent: usize,
    /// Handshake/resume deadline while pending.
    deadline: Instant,
}

impl Transport {
    fn is_pending(&self) -> bool {
        matches!(self.phase, Phase::First { .. } | Phase::Confirm { .. })
    }
    fn set_control(&mut self, bytes: &[u8]) {
        self.control[..bytes.len()].copy_from_slice(bytes);
        self.control_len = bytes.len();
        self.control_sent = 0;
    }
}

struct Session {
    conn_id: u64,
    stream: Stream,
    resume_key: Secret,
    last_counter: u64,
    transport: Option<TransportId>,
    detached_since: Option<Instant>,
    /// The ClientConfirm or a valid resume request proved the client holds
    /// the keys; the application knows the session.
    confirmed: bool,
    /// The session ended (clean close, or an ABORT either way) and its
    /// `Closed` event was reported; it stays resumable until it expires so
    /// that the client can complete the ending after a cut.
    finished: bool,
    /// No longer resumable (expired); kept only until the application has
    /// read the bytes it was still holding.
    expired: bool,
}

/// A relink server endpoint.
pub struct Server<R: CryptoRng> {
    config: Config,
    rng: R,
    transports: BTreeMap<TransportId, Box<Transport>>,
    /// Boxed: B-tree leaves are half empty on average, and an inline
    /// session would waste that space several hundred bytes at a time.
    sessions: BTreeMap<SessionId, Box<Session>>,
    by_conn_id: BTreeMap<u64, SessionId>,
    next_transport: u64,
    next_session: u64,
    pending: usize,
    events: VecDeque<ServerEvent>,
    /// Key of the reset tokens, from the static key (none without one).
    reset_secret: Option<Secret>,
    /// Sessions not confirmed yet, oldest first (ids only grow).
    unconfirmed: BTreeSet<SessionId>,
}

impl<R: CryptoRng> core::fmt::Debug for Server<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server")
            .field("transports", &self.transports.len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl<R: CryptoRng> Server<R> {
    /// A server with no transports or sessions.
    pub fn new(config: Config, rng: R) -> Self {
        Server {
            reset_secret: config.server_static.as_ref().map(|kp| kp.reset_secret()),
            unconfirmed: BTreeSet::new(),
            config: config.normalized(),
            rng,
            transports: BTreeMap::new(),
            sessions: BTreeMap::new(),
            by_conn_id: BTreeMap::new(),
            next_transport: 0,
            next_session: 0,
            pending: 0,
            events: VecDeque::new(),
        }
    }

    /// Register a newly accepted transport. Fails when too many transports
    /// are still pending (not yet authenticated): close it then.
    pub fn accept(&mut self, now: Instant) -> Result<TransportId, Error> {
        if self.pending >= self.config.max_pending_transports {
            return Err(Error::TooManyTransports);
        }
        self.next_transport += 1;
        let id = TransportId(self.next_transport);
        self.transports.insert(
            id,
            Box::new(Transport {
                phase: Phase::First {
                    buf: [0; RESUME_REQUEST_LEN],
                    have: 0,
                },
                control: [0; SERVER_HELLO_LEN],
                control_len: 0,
                control_sent: 0,
                deadline: now.saturating_add(self.config.handshake_timeout),
            }),
        );
        self.pending += 1;
        Ok(id)
    }

    /// The driver lost `transport` (EOF, error, or it closed it after a
    /// `CloseTransport` event). Its session, if any, waits to be resumed.
    pub fn transport_lost(&mut self, transport: TransportId, now: Instant) {
        let Some(t) = self.transports.remove(&transport) else {
            return;
        };
        if t.is_pending() {
            self.pending -= 1;
        }
        if let Phase::Attached(sid) | Phase::Confirm { session: sid, .. } = t.phase {
            self.detach(sid, now);
        }
    }

    /// Bytes received on `transport`. Returns how many were consumed (offer
    /// the rest again after `recv`). `Err` means the transport is finished:
    /// flush `poll_transmit` (it may hold a rejection), then close it.
    pub fn handle_input(
        &mut self,
        transport: TransportId,
        now: Instant,
        input: &[u8],
    ) -> Result<usize, Error> {
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
                            return Ok(consumed);
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
                        return Ok(consumed);
                    }
                    let msg = *buf;
                    if msg[0] == TAG_NEW {
                        let mut hello = [0u8; CLIENT_HELLO_LEN];
                        hello.copy_from_slice(&msg[..CLIENT_HELLO_LEN]);
                        self.on_client_hello(transport, now, &hello)?;
                    } else {
                        self.on_resume_request(transport, now, &msg)?;
                    }
                }
                Phase::Confirm { got, have, .. } => {
                    let rest = &input[consumed..];
                    let n = (CLIENT_CONFIRM_LEN - *have).min(rest.len());
                    got[*have..*have + n].copy_from_slice(&rest[..n]);
                    *have += n;
                    consumed += n;
                    if *have < CLIENT_CONFIRM_LEN {
                        return Ok(consumed);
                    }
                    self.on_client_confirm(transport, now)?;
                }
                Phase::Attached(sid) => {
                    let sid = *sid;
                    let session = self.sessions.get_mut(&sid).ok_or(Error::UnknownSession)?;
                    let r = session.stream.handle_input(now, &input[consumed..]);
                    self.drain_stream_events(sid);
                    return match r {
                        Ok(n) => Ok(consumed + n),
                        Err(e) => Err(self.fail_attached(transport, sid, now, e)),
                    };
                }
            }
        }
    }

    fn on_client_hello(
        &mut self,
        transport: TransportId,
        now: Instant,
        hello: &[u8; CLIENT_HELLO_LEN],
    ) -> Result<(), Error> {
        // Unconfirmed sessions count: the cap holds at every moment.
        if self.sessions.len() >= self.config.max_sessions && !self.evict_unconfirmed() {
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
        random.reset_token = self.reset_token(random.conn_id);
        let result = server_respond(
            hello,
            &random,
            now.as_micros(),
            self.config.resume_timeout.as_micros(),
            self.config.server_static.as_ref(),
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
        let est = hs.established;
        let mut stream = Stream::new(StreamLimits::from_config(&self.config));
        stream.set_keys(StreamKeys {
            tx: est.keys.s2c.clone(),
            rx: est.keys.c2s.clone(),
        });
        stream.attach(0, now, 0)?;
        self.next_session += 1;
        let sid = SessionId(self.next_session);
        t.set_control(&hs.reply);
        t.phase = Phase::Confirm {
            session: sid,
            expected: hs.expected_confirm,
            got: [0; CLIENT_CONFIRM_LEN],
            have: 0,
        };
        self.by_conn_id.insert(est.conn_id, sid);
        self.unconfirmed.insert(sid);
        self.sessions.insert(
            sid,
            Box::new(Session {
                conn_id: est.conn_id,
                stream,
                resume_key: est.keys.resume.clone(),
                last_counter: 0,
                transport: Some(transport),
                detached_since: None,
                confirmed: false,
                finished: false,
                expired: false,
            }),
        );
        Ok(())
    }

    fn reject_hello(&mut self, transport: TransportId, status: HandshakeStatus) -> Error {
        if let Some(t) = self.transports.get_mut(&transport) {
            t.set_control(&[VERSION, status.to_byte()]);
        }
        self.end_transport(transport, Error::HandshakeRejected(status))
    }

    fn fresh_conn_id(&mut self) -> u64 {
        loop {
            let id = self.rng.next_u64();
            if id != 0 && !self.by_conn_id.contains_key(&id) {
                return id;
            }
        }
    }

    fn on_client_confirm(&mut self, transport: TransportId, now: Instant) -> Result<(), Error> {
        let t = self
            .transports
            .get_mut(&transport)
            .ok_or(Error::UnknownTransport)?;
        let Phase::Confirm {
            session: sid,
            expected,
            got,
            ..
        } = &t.phase
        else {
            return Err(Error::InvalidState);
        };
        let sid = *sid;
        if !tags_equal(expected, got) {
            // The session stays registered, unconfirmed: a corrupted confirm
            // must not cost a young session; a valid resume confirms it.
            self.events.push_back(ServerEvent::AuthFailed {
                transport,
                reason: Error::AuthFailed,
            });
            let e = self.end_transport(transport, Error::AuthFailed);
            self.detach(sid, now);
            return Err(e);
        }
        t.phase = Phase::Attached(sid);
        self.pending -= 1;
        let s = self.sessions.get_mut(&sid).ok_or(Error::UnknownSession)?;
        s.confirmed = true;
        self.unconfirmed.remove(&sid);
        // Show the client at once that its confirm arrived (a keepalive
        // it verifies); data flows either way.
        s.stream.ping_soon();
        self.events.push_back(ServerEvent::HandshakeDone {
            transport,
            session: sid,
        });
        Ok(())
    }

    fn on_resume_request(
        &mut self,
        transport: TransportId,
        now: Instant,
        msg: &[u8; RESUME_REQUEST_LEN],
    ) -> Result<(), Error> {
        let req = ResumeRequest::decode(msg).map_err(Error::from)?;
        let Some(session) = self
            .by_conn_id
            .get(&req.conn_id)
            .and_then(|sid| self.sessions.get_mut(sid))
        else {
            return Err(self.reject_unknown(transport, req.conn_id));
        };
        let sid = self.by_conn_id[&req.conn_id];
        if !tags_equal(
            &request_mac(&session.resume_key, &msg[..REQUEST_MAC_INPUT]),
            &req.mac,
        ) {
            self.events.push_back(ServerEvent::AuthFailed {
                transport,
                reason: Error::AuthFailed,
            });
            return Err(self.reject_resume(transport, ResumeStatus::AuthFailed, None));
        }
        let counters = SessionCounters {
            last_counter: session.last_counter,
            server_acked: session.stream.acked(),
            server_end: session.stream.write_end(),
            server_read: session.stream.read_count(),
        };
        let window = self.config.resume_window.as_micros();
        if let Err(status) = check_request(&req, &counters, now.as_micros(), window) {
            let e = self.reject_resume(transport, status, Some((sid, msg, now)));
            if status == ResumeStatus::DataUnavailable {
                self.close_session(sid, CloseReason::DataUnavailable);
            }
            return Err(e);
        }
        // Authenticated and fresh: this transport takes over the session.
        session.last_counter = req.counter;
        let server_written = session.stream.write_end();
        let server_read = session.stream.read_count();
        let (start, end) = session.stream.attach(req.counter, now, req.client_read)?;
        let old = session.transport.replace(transport);
        session.detached_since = None;
        let newly_confirmed = !core::mem::replace(&mut session.confirmed, true);
        let mut resp = ResumeResponse {
            server_written,
            server_read,
            server_time: now.as_micros(),
            resume_timeout: self.config.resume_timeout.as_micros(),
            mac: [0; TAG_LEN],
        }
        .encode();
        let mac = response_mac(&session.resume_key, msg, &resp[..RESPONSE_MAC_INPUT]);
        resp[RESPONSE_MAC_INPUT..].copy_from_slice(&mac);
        let t = self
            .transports
            .get_mut(&transport)
            .ok_or(Error::UnknownTransport)?;
        t.set_control(&resp);
        t.phase = Phase::Attached(sid);
        self.pending -= 1;
        if let Some(old) = old.filter(|&o| o != transport) {
            if let Some(ot) = self.transports.get_mut(&old) {
                if ot.is_pending() {
                    // Still waiting for the ClientConfirm of this session.
                    self.pending -= 1;
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
        if newly_confirmed {
            // The ClientConfirm was lost; this request proves the same keys.
            self.unconfirmed.remove(&sid);
            self.events.push_back(ServerEvent::HandshakeDone {
                transport,
                session: sid,
            });
        }
        self.events.push_back(ServerEvent::Resumed {
            transport,
            session: sid,
            counter: req.counter,
        });
        self.events.push_back(ServerEvent::ResendRange {
            session: sid,
            start,
            end,
        });
        Ok(())
    }

    /// The reset token of `conn_id` (zero without a static key).
    fn reset_token(&self, conn_id: u64) -> [u8; TAG_LEN] {
        self.reset_secret
            .as_ref()
            .map_or([0; TAG_LEN], |s| s.reset_token(conn_id))
    }

    /// Answer "unknown session" with the connection's reset token, which a
    /// pinning client checks (PROTOCOL.md 3.6), and end the transport.
    fn reject_unknown(&mut self, transport: TransportId, conn_id: u64) -> Error {
        let reply = UnknownSessionReject {
            reset_token: self.reset_token(conn_id),
        }
        .encode();
        if let Some(t) = self.transports.get_mut(&transport) {
            t.set_control(&reply);
        }
        self.end_transport(
            transport,
            Error::ResumeRejected(ResumeStatus::UnknownSession),
        )
    }

    /// Answer a resume request with a rejection and end the transport.
    /// When the request was authenticated the rejection carries the server's
    /// clock and a MAC (PROTOCOL.md 3.6).
    fn reject_resume(
        &mut self,
        transport: TransportId,
        status: ResumeStatus,
        authenticated: Option<(SessionId, &[u8; RESUME_REQUEST_LEN], Instant)>,
    ) -> Error {
        let mut reply = [0u8; REJECT_AUTH_LEN];
        reply[0] = VERSION;
        reply[1] = status.to_byte();
        let mut len = 2;
        if let Some((sid, request, now)) = authenticated {
            if let Some(s) = self.sessions.get(&sid) {
                let mut rej = AuthenticatedReject {
                    status,
                    server_time: now.as_micros(),
                    mac: [0; TAG_LEN],
                };
                let mut prefix = [0u8; REJECT_MAC_INPUT];
                prefix.copy_from_slice(&rej.encode()[..REJECT_MAC_INPUT]);
                rej.mac = reject_mac(&s.resume_key, request, &prefix);
                reply = rej.encode();
                len = reply.len();
            }
        }
        if let Some(t) = self.transports.get_mut(&transport) {
            t.set_control(&reply[..len]);
        }
        self.end_transport(transport, Error::ResumeRejected(status))
    }

    /// Mark a transport finished and tell the driver to close it.
    fn end_transport(&mut self, transport: TransportId, error: Error) -> Error {
        if let Some(t) = self.transports.get_mut(&transport) {
            if t.is_pending() {
                self.pending -= 1;
            }
            t.phase = Phase::Ended;
            self.events.push_back(ServerEvent::CloseTransport {
                transport,
                error: Some(error),
            });
        }
        error
    }

    /// An attached transport failed: the session loses it but survives
    /// (unless authentication failed too often in a row).
    fn fail_attached(
        &mut self,
        transport: TransportId,
        sid: SessionId,
        now: Instant,
        e: Error,
    ) -> Error {
        self.end_transport(transport, e);
        self.detach(sid, now);
        if e == Error::AuthFailed {
            self.events.push_back(ServerEvent::AuthFailed {
                transport,
                reason: e,
            });
            // Counted, but never a reason to end the session: a frame that
            // fails its tag is unauthenticated input, and the client may pin
            // our key (PROTOCOL.md 5.2, 7.7). The session ends by its
            // deadline if the client cannot get through.
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.stream.note_auth_failure();
            }
        }
        e
    }

    fn detach(&mut self, sid: SessionId, now: Instant) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.stream.detach();
            if s.finished {
                s.stream.trim();
            }
            s.transport = None;
            s.detached_since = Some(now);
        }
    }

    /// End a session for good and free it.
    /// Verified bytes the application has not read stay readable, as after
    /// an expiry (PROTOCOL.md 7.7: acknowledged bytes are never dropped).
    fn close_session(&mut self, sid: SessionId, reason: CloseReason) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let (conn_id, transport, confirmed) = (s.conn_id, s.transport.take(), s.confirmed);
        if confirmed && reason != CloseReason::Clean {
            push_in_doubt(&mut self.events, sid, &s.stream);
        }
        if confirmed && s.stream.readable() > 0 {
            s.stream.detach();
            s.stream.trim();
            s.expired = true;
            s.detached_since = None;
        } else {
            self.sessions.remove(&sid);
        }
        self.by_conn_id.remove(&conn_id);
        self.unconfirmed.remove(&sid);
        if let Some(t) = transport {
            self.end_transport(t, Error::Closed);
        }
        if confirmed {
            self.events.push_back(ServerEvent::Closed {
                session: sid,
                reason,
            });
        }
    }

    /// Free the oldest unconfirmed session that has no transport (no
    /// application has seen it; its client, if genuine, learns "unknown
    /// session" on its next resume and reports its in-doubt bytes). Returns
    /// whether one was freed.
    fn evict_unconfirmed(&mut self) -> bool {
        let victim = self.unconfirmed.iter().copied().find(|sid| {
            self.sessions
                .get(sid)
                .is_some_and(|s| s.transport.is_none())
        });
        let Some(sid) = victim else {
            return false;
        };
        self.unconfirmed.remove(&sid);
        if let Some(s) = self.sessions.remove(&sid) {
            self.by_conn_id.remove(&s.conn_id);
        }
        true
    }

    fn drain_stream_events(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        while let Some(e) = s.stream.take_event() {
            match e {
                StreamEvent::PeerClosed => self
                    .events
                    .push_back(ServerEvent::PeerClosed { session: sid }),
                StreamEvent::CleanClose => {
                    s.finished = true;
                    self.events.push_back(ServerEvent::Closed {
                        session: sid,
                        reason: CloseReason::Clean,
                    });
                }
                StreamEvent::PeerAborted(code) => {
                    // Kept (finished) so that our answer reaches the client
                    // even across a cut: it resends its ABORT after a resume.
                    s.finished = true;
                    push_in_doubt(&mut self.events, sid, &s.stream);
                    self.events.push_back(ServerEvent::Closed {
                        session: sid,
                        reason: CloseReason::Aborted {
                            code,
                            by_peer: true,
                        },
                    });
                }
                StreamEvent::AbortDone(code) => {
                    s.finished = true;
                    push_in_doubt(&mut self.events, sid, &s.stream);
                    self.events.push_back(ServerEvent::Closed {
                        session: sid,
                        reason: CloseReason::Aborted {
                            code,
                            by_peer: false,
                        },
                    });
                }
            }
        }
    }

    /// Fill `out` with bytes for `transport`; 0 when nothing is due.
    pub fn poll_transmit(
        &mut self,
        transport: TransportId,
        now: Instant,
        out: &mut [u8],
    ) -> Result<usize, Error> {
        if out.len() < MIN_TRANSMIT_BUFFER {
            return Err(Error::BufferTooSmall {
                need: MIN_TRANSMIT_BUFFER,
            });
        }
        let t = self
            .transports
            .get_mut(&transport)
            .ok_or(Error::UnknownTransport)?;
        let pending = &t.control[t.control_sent..t.control_len];
        let mut n = pending.len();
        out[..n].copy_from_slice(pending);
        t.control_sent = t.control_len;
        if let Phase::Attached(sid) = t.phase {
            if let Some(s) = self.sessions.get_mut(&sid) {
                n += s.stream.poll_transmit(now, &mut out[n..]);
            }
        }
        Ok(n)
    }

    /// Whether `poll_transmit(transport, ..)` would write something now.
    pub fn wants_transmit(&self, transport: TransportId, now: Instant) -> bool {
        let Some(t) = self.transports.get(&transport) else {
            return false;
        };
        t.control_sent < t.control_len
            || match t.phase {
                Phase::Attached(sid) => self
                    .sessions
                    .get(&sid)
                    .is_some_and(|s| s.stream.wants_transmit(now)),
                _ => false,
            }
    }

    /// Queue bytes for `session`. Returns how many were accepted (0 when its
    /// send buffer is full).
    pub fn send(&mut self, session: SessionId, data: &[u8]) -> Result<usize, Error> {
        self.sessions
            .get_mut(&session)
            .ok_or(Error::UnknownSession)?
            .stream
            .send(data)
    }

    /// Read verified bytes of `session`. `Ok(0)`: the client closed and
    /// everything was read. `Err(WouldBlock)`: nothing yet.
    pub fn recv(&mut self, session: SessionId, out: &mut [u8]) -> Result<usize, Error> {
        let s = self
            .sessions
            .get_mut(&session)
            .ok_or(Error::UnknownSession)?;
        let r = s.stream.recv(out);
        if s.expired && s.stream.readable() == 0 {
            self.sessions.remove(&session);
            if matches!(r, Err(Error::WouldBlock)) {
                return Err(Error::Closed);
            }
        }
        r
    }

    /// Abort `session`: stop sending its data at once and tell the client
    /// with an authenticated ABORT frame carrying `code` (PROTOCOL.md 6.6),
    /// resent after resumes until the client answers it. The session's
    /// `Closed { reason: Aborted { by_peer: false, .. } }` event follows the
    /// answer; until then keep serving its transports.
    pub fn abort(&mut self, session: SessionId, code: AbortCode) -> Result<(), Error> {
        self.sessions
            .get_mut(&session)
            .ok_or(Error::UnknownSession)?
            .stream
            .abort(code);
        Ok(())
    }

    /// Close the sending side of `session` (a CLOSE frame follows its data).
    pub fn close(&mut self, session: SessionId) -> Result<(), Error> {
        self.sessions
            .get_mut(&session)
            .ok_or(Error::UnknownSession)?
            .stream
            .close();
        Ok(())
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When [`Server::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = None;
        for t in self.transports.values() {
            if t.is_pending() {
                next = earliest(next, Some(t.deadline));
            }
        }
        for s in self.sessions.values() {
            // An unconfirmed session's stream carries no frames yet: its
            // transport's handshake deadline is its only timer.
            if s.confirmed {
                next = earliest(next, s.stream.poll_timeout());
                next = earliest(
                    next,
                    s.stream.abort_answer_deadline(self.config.idle_timeout),
                );
            }
            if let Some(since) = s.detached_since {
                next = earliest(next, Some(since.saturating_add(self.config.resume_timeout)));
            }
        }
        next
    }

    /// Advance timers: handshake deadlines of pending transports, idle
    /// timeouts of attached ones, expiry of sessions without transport.
    pub fn handle_timeout(&mut self, now: Instant) {
        let late: Vec<(TransportId, Option<SessionId>)> = self
            .transports
            .iter()
            .filter(|(_, t)| t.is_pending() && now >= t.deadline)
            .map(|(id, t)| match t.phase {
                Phase::Confirm { session, .. } => (*id, Some(session)),
                _ => (*id, None),
            })
            .collect();
        for (id, sid) in late {
            self.end_transport(id, Error::TimedOut);
            if let Some(sid) = sid {
                self.detach(sid, now);
            }
        }
        let mut idle = Vec::new();
        let mut expired = Vec::new();
        for (sid, s) in self.sessions.iter_mut() {
            // The client did not answer our ABORT in time (it may sit behind
            // data its application does not read): the abort is complete.
            if let Some(code) = s.stream.abort_timed_out(now, self.config.idle_timeout) {
                s.finished = true;
                push_in_doubt(&mut self.events, *sid, &s.stream);
                self.events.push_back(ServerEvent::Closed {
                    session: *sid,
                    reason: CloseReason::Aborted {
                        code,
                        by_peer: false,
                    },
                });
            }
            if let Some(since) = s.detached_since {
                if now >= since.saturating_add(self.config.resume_timeout) {
                    expired.push(*sid);
                }
            } else if s.confirmed && s.stream.handle_timeout(now).is_err() {
                if let Some(t) = s.transport {
                    idle.push((t, *sid));
                }
            }
        }
        for (t, sid) in idle {
            self.fail_attached(t, sid, now, Error::TimedOut);
        }
        for sid in expired {
            self.expire(sid);
        }
    }

    /// A session waited `resume_timeout` without transport: it can no longer
    /// be resumed. A finished one goes quietly (its `Closed` event was
    /// reported), so does an unconfirmed one (the application never saw it);
    /// bytes the application has not read yet stay readable.
    ///
    /// A session whose every data byte was acknowledged both ways and whose
    /// two CLOSEs were sent and the client's verified ended cleanly even
    /// though the ACK of our CLOSE never came (the client verified it and
    /// stopped, PROTOCOL.md 6.4): it is reported `Closed { Clean }`.
    fn expire(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        self.by_conn_id.remove(&s.conn_id);
        self.unconfirmed.remove(&sid);
        let quiet = s.finished || !s.confirmed;
        let clean = s.stream.all_delivered_but_close_ack();
        // Our ABORT was never answered (the answer was lost, or the client
        // never came back): the session still ended by our abort.
        let aborted = s.stream.abort_unanswered();
        let clean_end = clean && aborted.is_none();
        if !quiet && !clean_end {
            push_in_doubt(&mut self.events, sid, &s.stream);
        }
        if s.stream.readable() > 0 && s.confirmed {
            s.expired = true;
            s.detached_since = None;
            s.stream.trim();
        } else {
            self.sessions.remove(&sid);
        }
        if quiet {
            return;
        }
        self.events.push_back(if let Some(code) = aborted {
            ServerEvent::Closed {
                session: sid,
                reason: CloseReason::Aborted {
                    code,
                    by_peer: false,
                },
            }
        } else if clean {
            ServerEvent::Closed {
                session: sid,
                reason: CloseReason::Clean,
            }
        } else {
            ServerEvent::SessionExpired { session: sid }
        });
    }

    /// The session `transport` carries, if attached.
    pub fn session_of(&self, transport: TransportId) -> Option<SessionId> {
        match self.transports.get(&transport)?.phase {
            Phase::Attached(sid) => Some(sid),
            _ => None,
        }
    }

    /// Whether the server ended `transport` (or does not know it).
    pub fn transport_ended(&self, transport: TransportId) -> bool {
        self.transports
            .get(&transport)
            .is_none_or(|t| matches!(t.phase, Phase::Ended))
    }

    /// The connection id of `session`.
    pub fn conn_id(&self, session: SessionId) -> Option<u64> {
        self.sessions.get(&session).map(|s| s.conn_id)
    }

    /// Whether `session` is still registered.
    pub fn has_session(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    /// Number of registered sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of transports that have not completed a handshake or resume.
    pub fn pending_transports(&self) -> usize {
        self.pending
    }

    /// Bytes of `session` not yet acknowledged by the client.
    pub fn unacked(&self, session: SessionId) -> usize {
        self.sessions
            .get(&session)
            .map_or(0, |s| s.stream.unacked())
    }

    /// Verified bytes of `session` not yet read.
    pub fn readable(&self, session: SessionId) -> usize {
        self.sessions
            .get(&session)
            .map_or(0, |s| s.stream.readable())
    }

    /// Heap bytes held by `session`'s buffers.
    pub fn buffer_memory(&self, session: SessionId) -> usize {
        self.sessions.get(&session).map_or(0, |s| s.stream.memory())
    }
}

/// Report the server's in-doubt range of `sid` (if not empty) before the
/// event that ends the session.
fn push_in_doubt(events: &mut VecDeque<ServerEvent>, sid: SessionId, stream: &Stream) {
    let range = stream.in_doubt();
    if !range.is_empty() {
        events.push_back(ServerEvent::InDoubt {
            session: sid,
            range,
        });
    }
}
