//! The server endpoint: many sessions, each reachable over a succession of
//! transports.
//!
//! Every accepted transport gets a [`TransportId`]. Its first byte decides
//! what it is: `0x00` opens a new session (handshake), `0xFF` resumes one.
//! A transport is *pending* until its handshake or resume is authenticated,
//! then *attached* to a session ([`SessionId`]). A session whose transport
//! broke stays registered for `resume_timeout`, then expires.
//!
//! ```text
//!  accept ─▶ First ──hello──▶ Confirm ──valid confirm──▶ Attached(session)
//!              │ └─valid resume request─────────────────▶ Attached(session)
//!              └─ anything else (reject sent) ─▶ Ended ◀── error / timeout / replaced
//! ```

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use rand_core::CryptoRng;

use crate::config::Config;
use crate::error::{Error, ProtocolError};
use crate::event::{CloseReason, ServerEvent};
use crate::handshake::{server_respond, ServerHandshake, ServerRandom};
use crate::keys::{tags_equal, Secret};
use crate::resume::{
    check_request, reject_mac, request_mac, response_mac, SessionCounters, REQUEST_MAC_INPUT,
    RESPONSE_MAC_INPUT,
};
use crate::stream::{Stream, StreamEvent, StreamKeys, StreamLimits};
use crate::time::{earliest, Instant};
use crate::wire::{
    client_first_len, HandshakeStatus, ResumeRequest, ResumeResponse, ResumeStatus,
    CLIENT_CONFIRM_LEN, CLIENT_HELLO_LEN, RESUME_REQUEST_LEN, SERVER_HELLO_LEN, TAG_LEN, TAG_NEW,
    VERSION,
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
    /// ServerHello sent, waiting for ClientConfirm.
    Confirm {
        hs: Box<ServerHandshake>,
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
    closed_clean: bool,
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
        if let Phase::Attached(sid) = t.phase {
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
        if self.sessions.len() >= self.config.max_sessions {
            return Err(self.reject_hello(transport, HandshakeStatus::Busy));
        }
        let mut random = ServerRandom {
            ephemeral_secret: [0; 32],
            challenge: [0; 16],
            conn_id: 0,
        };
        self.rng.fill_bytes(&mut random.ephemeral_secret);
        self.rng.fill_bytes(&mut random.challenge);
        random.conn_id = self.fresh_conn_id();
        let result = server_respond(
            hello,
            &random,
            now.as_micros(),
            self.config.server_static.as_ref(),
        );
        match result {
            Ok(hs) => {
                let t = self
                    .transports
                    .get_mut(&transport)
                    .ok_or(Error::UnknownTransport)?;
                t.set_control(&hs.reply);
                t.phase = Phase::Confirm {
                    hs: Box::new(hs),
                    got: [0; CLIENT_CONFIRM_LEN],
                    have: 0,
                };
                Ok(())
            }
            Err(Error::HandshakeRejected(s)) => Err(self.reject_hello(transport, s)),
            Err(_) => Err(self.reject_hello(transport, HandshakeStatus::Malformed)),
        }
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
        let Phase::Confirm { hs, got, .. } = &t.phase else {
            return Err(Error::InvalidState);
        };
        if !tags_equal(&hs.expected_confirm, got) {
            self.events.push_back(ServerEvent::AuthFailed {
                transport,
                reason: Error::AuthFailed,
            });
            return Err(self.end_transport(transport, Error::AuthFailed));
        }
        let est = &hs.established;
        let mut stream = Stream::new(StreamLimits::from_config(&self.config));
        stream.set_keys(StreamKeys {
            tx: est.keys.s2c.clone(),
            rx: est.keys.c2s.clone(),
        });
        stream.attach(0, now, 0)?;
        // Tell the client at once that the session is registered: until a
        // frame from us verifies, it treats the session as unconfirmed.
        stream.ping_soon();
        self.next_session += 1;
        let sid = SessionId(self.next_session);
        let session = Box::new(Session {
            conn_id: est.conn_id,
            stream,
            resume_key: est.keys.resume.clone(),
            last_counter: 0,
            transport: Some(transport),
            detached_since: None,
            closed_clean: false,
            expired: false,
        });
        t.phase = Phase::Attached(sid);
        self.pending -= 1;
        self.by_conn_id.insert(session.conn_id, sid);
        self.sessions.insert(sid, session);
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
        let Some(&sid) = self.by_conn_id.get(&req.conn_id) else {
            return Err(self.reject_resume(transport, ResumeStatus::UnknownSession, None));
        };
        let Some(session) = self.sessions.get_mut(&sid) else {
            return Err(self.reject_resume(transport, ResumeStatus::UnknownSession, None));
        };
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
            let e = self.reject_resume(transport, status, Some((sid, msg)));
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
        let mut resp = ResumeResponse {
            server_written,
            server_read,
            server_time: now.as_micros(),
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
                ot.phase = Phase::Ended;
                ot.control_len = 0;
                ot.control_sent = 0;
                self.events.push_back(ServerEvent::CloseTransport {
                    transport: old,
                    error: None,
                });
            }
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

    /// Answer a resume request with a rejection (with a MAC when the request
    /// was authenticated) and end the transport.
    fn reject_resume(
        &mut self,
        transport: TransportId,
        status: ResumeStatus,
        authenticated: Option<(SessionId, &[u8; RESUME_REQUEST_LEN])>,
    ) -> Error {
        let mut reply = [0u8; 2 + TAG_LEN];
        reply[0] = VERSION;
        reply[1] = status.to_byte();
        let mut len = 2;
        if let Some((sid, request)) = authenticated {
            if let Some(s) = self.sessions.get(&sid) {
                let mac = reject_mac(&s.resume_key, request, &[reply[0], reply[1]]);
                reply[2..].copy_from_slice(&mac);
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
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.stream.note_auth_failure();
                if s.stream.auth_failures() >= self.config.max_auth_failures {
                    self.close_session(sid, CloseReason::TooManyFailures);
                }
            }
        }
        e
    }

    fn detach(&mut self, sid: SessionId, now: Instant) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.stream.detach();
            if s.closed_clean {
                s.stream.trim();
            }
            s.transport = None;
            s.detached_since = Some(now);
        }
    }

    /// End a session for good and free it.
    fn close_session(&mut self, sid: SessionId, reason: CloseReason) {
        if let Some(s) = self.sessions.remove(&sid) {
            self.by_conn_id.remove(&s.conn_id);
            if let Some(t) = s.transport {
                self.end_transport(t, Error::Closed);
            }
            self.events.push_back(ServerEvent::Closed {
                session: sid,
                reason,
            });
        }
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
                    s.closed_clean = true;
                    self.events.push_back(ServerEvent::Closed {
                        session: sid,
                        reason: CloseReason::Clean,
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
            next = earliest(next, s.stream.poll_timeout());
            if let Some(since) = s.detached_since {
                next = earliest(next, Some(since.saturating_add(self.config.resume_timeout)));
            }
        }
        next
    }

    /// Advance timers: handshake deadlines of pending transports, idle
    /// timeouts of attached ones, expiry of sessions without transport.
    pub fn handle_timeout(&mut self, now: Instant) {
        let late: Vec<TransportId> = self
            .transports
            .iter()
            .filter(|(_, t)| t.is_pending() && now >= t.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.end_transport(id, Error::TimedOut);
        }
        let mut idle = Vec::new();
        let mut expired = Vec::new();
        for (sid, s) in self.sessions.iter_mut() {
            if let Some(since) = s.detached_since {
                if now >= since.saturating_add(self.config.resume_timeout) {
                    expired.push(*sid);
                }
            } else if s.stream.handle_timeout(now).is_err() {
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
    /// be resumed. A cleanly closed one goes quietly (its `Closed` event was
    /// reported); bytes the application has not read yet stay readable.
    fn expire(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        self.by_conn_id.remove(&s.conn_id);
        let clean = s.closed_clean;
        if s.stream.readable() > 0 {
            s.expired = true;
            s.detached_since = None;
            s.stream.trim();
        } else {
            self.sessions.remove(&sid);
        }
        if !clean {
            self.events
                .push_back(ServerEvent::SessionExpired { session: sid });
        }
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
