//! The client state machine: opens a session with a handshake on its first
//! transport and resumes it on every later one.
//!
//! Phases of the current transport:
//!
//! ```text
//!            new_transport (no session)           ServerHello ok
//!   Idle ─────────────────────────────▶ Hello ────────────────────▶ Open
//!    ▲  new_transport (session)                   ResumeResponse ok  ▲
//!    ├────────────────────────────────▶ Resume ──────────────────────┘
//!    │ transport_lost          any error / timeout
//!    └──────────────── Dead ◀──────────────────────────────── (any phase)
//! ```

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use rand_core::CryptoRng;
use zeroize::Zeroize;

use crate::config::Config;
use crate::credential::{encode_credential, CredentialKeys};
use crate::error::Error;
use crate::event::{ByteRange, CloseReason, Event};
use crate::handshake::ClientHandshake;
use crate::keys::Secret;
use crate::rekey::{KeyRing, RekeyEnv, Side};
use crate::resume::{
    reject_mac, request_mac, response_mac, REJECT_MAC_INPUT, REQUEST_MAC_INPUT, RESPONSE_MAC_INPUT,
};
use crate::stream::{Gate, Stream, StreamEvent, StreamLimits};
use crate::time::{Duration, Instant};
use crate::timer::{Timer, TimerTable};
use crate::wire::{
    hello_with_cookie, resume_response_len, server_hello_len, AbortCode, AuthenticatedReject,
    HandshakeStatus, HelloCookie, HelloStale, ResumeRequest, ResumeResponse, ResumeStatus,
    UnknownSessionReject, HELLO_COOKIE_LEN, HELLO_STALE_LEN, RESUME_REQUEST_LEN,
    RESUME_RESPONSE_LEN, SERVER_HELLO_LEN, TAG_LEN, VERSION,
};
use crate::MIN_TRANSMIT_BUFFER;

/// What the client keeps of an established session.
struct SessionState {
    conn_id: u64,
    /// How long the server keeps the session without transport (advertised,
    /// authenticated, in ServerHello and ResumeResponse).
    resume_timeout: Duration,
    /// Last time something authenticated arrived from the server.
    last_contact: Instant,
    /// Proves an "unknown session" answer genuine (pinned mode only).
    reset_token: [u8; TAG_LEN],
}

enum Phase {
    /// No transport.
    Idle,
    /// The core ended the transport; the driver must drop it.
    Dead,
    /// ClientHello sent, waiting for the ServerHello.
    Hello {
        hs: ClientHandshake,
        reply: [u8; SERVER_HELLO_LEN],
        have: usize,
        deadline: Instant,
        /// The hello was repeated with a cookie on this transport
        /// (PROTOCOL.md 3.7).
        cookie_sent: bool,
    },
    /// ResumeRequest sent, waiting for the response.
    Resume {
        request: [u8; RESUME_REQUEST_LEN],
        reply: [u8; RESUME_RESPONSE_LEN],
        have: usize,
        deadline: Instant,
        counter: u64,
    },
    /// Frames flow.
    Open,
}

/// A relink client: one session over a succession of transports.
///
/// # Calling contract
/// - **transports**: [`new_transport`](Self::new_transport) when a transport
///   to the server is open (the first starts the handshake, later ones
///   resume); [`transport_lost`](Self::transport_lost) when it ends;
///   [`connect_failed`](Self::connect_failed) when opening one failed.
/// - **input**: [`handle_input`](Self::handle_input) with received bytes (it
///   returns how many it took; offer the rest again after `recv`);
///   [`handle_timeout`](Self::handle_timeout) once
///   [`poll_timeout`](Self::poll_timeout) has passed.
/// - **output**, after any input: [`poll_transmit`](Self::poll_transmit)
///   until it returns 0, [`poll_event`](Self::poll_event) until `None`, then
///   `poll_timeout` for the next wake-up.
/// - **application**: [`send`](Self::send), [`recv`](Self::recv),
///   [`close`](Self::close), [`abort`](Self::abort) at any time.
/// - **getters**: [`is_connected`](Self::is_connected),
///   [`is_closed`](Self::is_closed), [`close_reason`](Self::close_reason),
///   [`in_doubt`](Self::in_doubt), [`give_up_at`](Self::give_up_at),
///   [`conn_id`](Self::conn_id), [`unacked`](Self::unacked), ...
///
/// A transport's end is reported one way each direction: the driver calls
/// `transport_lost`; the client ends a transport by returning `Err` from
/// `handle_input` (then [`transport_ended`](Self::transport_ended) is true).
pub struct Client<R: CryptoRng> {
    config: Config,
    rng: R,
    stream: Stream,
    session: Option<SessionState>,
    phase: Phase,
    /// Handshake or resume bytes not yet handed to `poll_transmit`.
    control: [u8; RESUME_REQUEST_LEN],
    control_len: usize,
    control_sent: usize,
    events: VecDeque<Event>,
    closed: Option<CloseReason>,
    resume_counter: u64,
    /// Resume attempts in a row that the server answered with a rejection
    /// (or with an answer whose MAC failed).
    resume_attempts: u32,
    /// Unauthenticated final rejections of resume attempts in a row.
    unauth_rejections: u32,
    /// The current transport attempt began after the give-up deadline had
    /// passed: if it fails without an authenticated answer, the session is
    /// given up (PROTOCOL.md 7.6).
    final_attempt: bool,
    /// A give-up deadline `handle_timeout` saw pass (no longer a timer).
    deadline_noted: Option<Instant>,
    /// The token the server granted on acceptance, until taken.
    token: Option<Vec<u8>>,
    /// The server's time from a Stale answer to a hello, with the instant
    /// it arrived: the time of the next hello only (never the session's
    /// clock base: the answer is unauthenticated).
    hello_base: Option<(u64, Instant)>,
}

impl<R: CryptoRng> core::fmt::Debug for Client<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Client")
            .field("conn_id", &self.conn_id())
            .field("connected", &self.is_connected())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl<R: CryptoRng> Client<R> {
    /// A client with no transport yet. Call [`Client::new_transport`] once a
    /// transport to the server is open.
    pub fn new(config: Config, rng: R) -> Self {
        let config = config.normalized();
        let mut c = Client {
            stream: Stream::new(alloc::sync::Arc::new(StreamLimits::from_config(&config))),
            config,
            rng,
            session: None,
            phase: Phase::Idle,
            control: [0; RESUME_REQUEST_LEN],
            control_len: 0,
            control_sent: 0,
            events: VecDeque::new(),
            closed: None,
            resume_counter: 0,
            resume_attempts: 0,
            unauth_rejections: 0,
            final_attempt: false,
            deadline_noted: None,
            token: None,
            hello_base: None,
        };
        if c.config
            .credential
            .as_ref()
            .is_some_and(|cr| !cr.is_valid())
        {
            // Never truncated, never sent: a session that cannot present
            // its credential does not start.
            c.close_for_good(CloseReason::Error(Error::TooLong));
        }
        c
    }

    /// A fresh transport to the server is open: the first one starts the
    /// handshake, later ones resume the session. Any transport still
    /// attached is considered lost.
    pub fn new_transport(&mut self, now: Instant) -> Result<(), Error> {
        if self.closed.is_some() {
            return Err(Error::Closed);
        }
        self.stream.detach();
        self.control_sent = 0;
        let deadline = now.saturating_add(self.config.handshake_timeout);
        let Some(session) = &self.session else {
            let mut secret = [0u8; 32];
            self.rng.fill_bytes(&mut secret);
            let time = self.hello_time(now);
            let hs = ClientHandshake::new(secret, self.config.pinned_server_key, time);
            secret.zeroize();
            self.set_control(hs.hello());
            self.phase = Phase::Hello {
                hs,
                reply: [0; SERVER_HELLO_LEN],
                have: 0,
                deadline,
                cookie_sent: false,
            };
            return Ok(());
        };
        // Past the deadline the client still makes its attempts: its clock may
        // have jumped while the server's did not. Only one that then fails
        // without an authenticated answer gives the session up.
        self.final_attempt = self.give_up_at().is_some_and(|g| now >= g);
        self.resume_counter += 1;
        // The estimate of the server's clock from the stream's clock base
        // (the last ServerHello, ResumeResponse, authenticated rejection or
        // server PING).
        let time = self.stream.clock_estimate(now).unwrap_or(0);
        let (rx_epoch, key) = resume_key(&self.stream)?;
        let mut req = ResumeRequest {
            rx_epoch,
            version: VERSION,
            conn_id: session.conn_id,
            counter: self.resume_counter,
            client_written: self.stream.write_end(),
            client_read: self.stream.read_count(),
            time,
            mac: [0; TAG_LEN],
        };
        let unsigned = req.encode();
        req.mac = request_mac(key, &unsigned[..REQUEST_MAC_INPUT]);
        let request = req.encode();
        self.set_control(&request);
        self.phase = Phase::Resume {
            request,
            reply: [0; RESUME_RESPONSE_LEN],
            have: 0,
            deadline,
            counter: self.resume_counter,
        };
        Ok(())
    }

    /// The driver lost the transport (error, EOF, it gave up on it). The
    /// session survives; call [`Client::new_transport`] with a new one.
    pub fn transport_lost(&mut self, _now: Instant) {
        let attempt = matches!(self.phase, Phase::Hello { .. } | Phase::Resume { .. });
        if matches!(self.phase, Phase::Open) {
            self.note_contact();
        }
        self.stream.detach();
        self.control_len = 0;
        self.control_sent = 0;
        self.phase = Phase::Idle;
        if attempt && self.final_attempt {
            self.close_for_good(CloseReason::Expired);
        }
    }

    /// The driver could not open a transport to the server (refused,
    /// unreachable, timed out). Once the give-up deadline has passed
    /// ([`Client::give_up_at`]) this ends the session (reason
    /// [`CloseReason::Expired`]); before, it changes nothing. Drivers call it
    /// for every failed connect, so that a client whose server is gone gives
    /// up, while a client whose clock merely jumped past the deadline gets one
    /// more real attempt (PROTOCOL.md 7.6).
    pub fn connect_failed(&mut self, now: Instant) {
        if self.give_up_at().is_some_and(|g| now >= g) {
            self.close_for_good(CloseReason::Expired);
        }
    }

    /// Bytes received from the transport. Returns how many were consumed;
    /// offer the rest again after [`Client::recv`] freed room. `Err` means
    /// the transport is finished (the event queue says whether the session
    /// survives): flush `poll_transmit`, then drop it.
    pub fn handle_input(&mut self, now: Instant, input: &[u8]) -> Result<usize, Error> {
        let mut consumed = 0;
        loop {
            let rest = &input[consumed..];
            let filled = match &mut self.phase {
                Phase::Idle => return Err(Error::InvalidState),
                Phase::Dead => return Err(Error::TransportEnded),
                Phase::Hello { reply, have, .. } => fill_reply(reply, have, rest, server_hello_len),
                Phase::Resume { reply, have, .. } => {
                    fill_reply(reply, have, rest, resume_response_len)
                }
                Phase::Open => {
                    let rng = &mut self.rng;
                    let mut fill = |b: &mut [u8; 32]| rng.fill_bytes(b);
                    let mut env = RekeyEnv {
                        fill: &mut fill,
                        server_static: None,
                        pinned_server_key: self.config.pinned_server_key,
                    };
                    let r = self.stream.handle_input(now, rest, &mut env);
                    self.check_accepted();
                    self.note_contact();
                    self.drain_stream_events();
                    return match r {
                        Ok(n) => Ok(consumed + n),
                        Err(e) => Err(self.fail_transport(e)),
                    };
                }
            };
            let (taken, complete) = match filled {
                Ok(t) => t,
                Err(e) => return Err(self.fail_transport(e.into())),
            };
            consumed += taken;
            if !complete {
                return Ok(consumed);
            }
            if matches!(self.phase, Phase::Hello { .. }) {
                self.finish_hello(now)?;
            } else {
                self.finish_resume(now)?;
            }
        }
    }

    fn finish_hello(&mut self, now: Instant) -> Result<(), Error> {
        let Phase::Hello {
            hs,
            reply,
            have,
            cookie_sent,
            ..
        } = &mut self.phase
        else {
            return Err(Error::InvalidState);
        };
        if reply[1] == HandshakeStatus::Cookie.to_byte() && !*cookie_sent {
            // The server is under load: the same hello again, with its
            // cookie, on this transport (PROTOCOL.md 3.7). A second cookie
            // answer ends the transport below (retryable).
            let answer = HelloCookie::decode(&reply[..HELLO_COOKIE_LEN]);
            let cookie = match answer {
                Ok(a) => a.cookie,
                Err(e) => return Err(self.fail_transport(e.into())),
            };
            let again = hello_with_cookie(hs.hello(), &cookie);
            *have = 0;
            *cookie_sent = true;
            self.set_control(&again);
            return Ok(());
        }
        if reply[1] != HandshakeStatus::Ok.to_byte() {
            let status = HandshakeStatus::from_byte(reply[1]).map_err(Error::from)?;
            let e = Error::HandshakeRejected(status);
            if status == HandshakeStatus::Stale {
                // The answer carries the server's clock: the next hello is
                // stamped from it. (The drivers retry at once after it, once
                // in a row, then with their backoff.)
                let stale = HelloStale::decode(&reply[..HELLO_STALE_LEN]).map_err(Error::from);
                let stale = match stale {
                    Ok(s) => s,
                    Err(e) => return Err(self.fail_transport(e)),
                };
                self.hello_base = Some((stale.server_time, now));
                return Err(self.fail_transport(e));
            }
            if status.is_retryable() {
                // Busy, Replayed: a new hello may succeed.
                return Err(self.fail_transport(e));
            }
            self.close_for_good(CloseReason::Error(e));
            return Err(e);
        }
        let finish = match hs.finish(reply) {
            Ok(f) => f,
            Err(e) => return Err(self.fail_transport(e)),
        };
        let est = finish.established;
        self.hello_base = None;
        // The handshake's keys move into the session, nothing is copied.
        self.stream.set_keys(KeyRing::new(
            est.chain,
            Side::Client,
            self.config.pinned_server_key.is_some(),
        ));
        self.stream.set_clock_base(est.server_time, now);
        if let Some(ck) = est.credential {
            // The server decides on its clients (ServerHello flag
            // CLIENT_AUTH, authenticated by its confirm): our credential
            // (kind 0 without one) is the first frame of every link.
            let CredentialKeys { cred, grant } = ck;
            let credential = encode_credential(self.config.credential.as_ref(), &cred);
            self.stream
                .set_gate(Gate::ClientWaiting { credential, grant });
        }
        self.stream.attach(0, now, 0, 0)?;
        self.session = Some(SessionState {
            conn_id: est.conn_id,
            resume_timeout: Duration::from_micros(est.resume_timeout),
            last_contact: now,
            reset_token: est.reset_token,
        });
        self.set_control(&finish.confirm);
        self.phase = Phase::Open;
        self.events.push_back(Event::HandshakeDone {
            conn_id: est.conn_id,
        });
        Ok(())
    }

    fn finish_resume(&mut self, now: Instant) -> Result<(), Error> {
        let (
            Phase::Resume {
                request,
                reply,
                have,
                counter,
                ..
            },
            Some(session),
        ) = (&self.phase, &mut self.session)
        else {
            return Err(Error::InvalidState);
        };
        let (request, reply, have, counter) = (*request, *reply, *have, *counter);
        let status = ResumeStatus::from_byte(reply[1]).map_err(Error::from)?;
        if status == ResumeStatus::Ok {
            let resp = ResumeResponse::decode(&reply[..have]).map_err(Error::from)?;
            let (_, key) = resume_key(&self.stream)?;
            let mac = response_mac(key, &request, &reply[..RESPONSE_MAC_INPUT]);
            if !crate::keys::tags_equal(&mac, &resp.mac) {
                return Err(self.fail_unauthenticated(Error::AuthFailed));
            }
            if resp.server_written < self.stream.read_count() {
                self.close_for_good(CloseReason::DataUnavailable);
                return Err(Error::ResumeRejected(ResumeStatus::DataUnavailable));
            }
            self.stream.set_clock_base(resp.server_time, now);
            session.last_contact = now;
            self.final_attempt = false;
            self.deadline_noted = None;
            session.resume_timeout = Duration::from_micros(resp.resume_timeout);
            let (start, end) =
                match self
                    .stream
                    .attach(counter, now, resp.server_read, resp.rx_epoch)
                {
                    Ok(r) => r,
                    Err(_) => {
                        self.close_for_good(CloseReason::DataUnavailable);
                        return Err(Error::ResumeRejected(ResumeStatus::DataUnavailable));
                    }
                };
            self.resume_attempts = 0;
            self.unauth_rejections = 0;
            self.phase = Phase::Open;
            self.events.push_back(Event::Resumed { counter });
            self.events.push_back(Event::ResendRange { start, end });
            return Ok(());
        }
        let e = Error::ResumeRejected(status);
        if status.is_authenticated() {
            let rej = AuthenticatedReject::decode(&reply[..have]).map_err(Error::from)?;
            let mut prefix = [0u8; REJECT_MAC_INPUT];
            prefix.copy_from_slice(&reply[..REJECT_MAC_INPUT]);
            let (_, key) = resume_key(&self.stream)?;
            let mac = reject_mac(key, &request, &prefix);
            if !crate::keys::tags_equal(&mac, &rej.mac) {
                return Err(self.fail_unauthenticated(Error::AuthFailed));
            }
            // Authentic and bound to this request: the server's clock as it
            // answered corrects our estimate (a client whose clock stood still
            // while it slept was Stale; its next attempt is fresh).
            self.stream.set_clock_base(rej.server_time, now);
            session.last_contact = now;
            // The server holds the session: not a reason to give it up.
            self.final_attempt = false;
            self.deadline_noted = None;
            if status == ResumeStatus::DataUnavailable {
                self.close_for_good(CloseReason::DataUnavailable);
                return Err(e);
            }
            if status == ResumeStatus::Replayed {
                // Our counters only grow, so a genuine Replayed means someone
                // delivered a copy of one of our requests first (an on-path
                // attacker racing us). It proves the server still holds the
                // session; retrying is all we can do, and it must not count
                // toward giving up.
                return Err(self.fail_transport(e));
            }
            return Err(self.fail_answered(e));
        }
        let pinned = self.config.pinned_server_key.is_some();
        if status == ResumeStatus::UnknownSession && pinned {
            let rej = UnknownSessionReject::decode(&reply[..have]).map_err(Error::from)?;
            if crate::keys::tags_equal(&rej.reset_token, &session.reset_token) {
                // Only the holder of the server's static key can produce
                // the token: the server no longer holds the session.
                self.close_for_good(CloseReason::SessionUnknown);
                return Err(e);
            }
        }
        if status == ResumeStatus::AuthFailed {
            self.events.push_back(Event::AuthFailed { reason: e });
        }
        if pinned || status == ResumeStatus::AuthFailed {
            return Err(self.fail_unauthenticated(e));
        }
        // Anonymous mode: nothing authenticates the server, so an active
        // attacker could end the session anyway (PROTOCOL.md 9); give up only
        // after several in a row. The client never starts a new session on
        // its own: bytes it wrote may have reached the server application
        // (PROTOCOL.md 7.7), so the application decides.
        self.unauth_rejections += 1;
        if self.unauth_rejections < self.config.max_unauthenticated_rejections {
            return Err(self.fail_transport(e));
        }
        let reason = if status == ResumeStatus::UnknownSession {
            CloseReason::SessionUnknown
        } else {
            CloseReason::Error(e)
        };
        self.close_for_good(reason);
        Err(e)
    }

    /// Fill `out` with bytes for the transport. Returns 0 when there is
    /// nothing to send now. `out` must hold at least
    /// [`MIN_TRANSMIT_BUFFER`](crate::MIN_TRANSMIT_BUFFER) bytes.
    #[must_use = "the bytes written to `out` must be sent"]
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Result<usize, Error> {
        if out.len() < MIN_TRANSMIT_BUFFER {
            return Err(Error::BufferTooSmall {
                need: MIN_TRANSMIT_BUFFER,
            });
        }
        if matches!(self.phase, Phase::Idle | Phase::Dead) {
            return Ok(0);
        }
        let pending = &self.control[self.control_sent..self.control_len];
        let mut n = pending.len();
        out[..n].copy_from_slice(pending);
        self.control_sent = self.control_len;
        if matches!(self.phase, Phase::Open) {
            let rng = &mut self.rng;
            let mut fill = |b: &mut [u8; 32]| rng.fill_bytes(b);
            let mut env = RekeyEnv {
                fill: &mut fill,
                server_static: None,
                pinned_server_key: self.config.pinned_server_key,
            };
            n += self.stream.poll_transmit(now, &mut out[n..], &mut env);
            // Writing our SWITCH completes an exchange (`Rekeyed`).
            self.drain_stream_events();
        }
        Ok(n)
    }

    /// Queue application bytes. Returns how many were accepted (0 when the
    /// send buffer is full: wait for ACKs). Works before the handshake too.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, Error> {
        match self.closed {
            Some(CloseReason::Aborted { code, .. } | CloseReason::Rejected { code }) => {
                return Err(Error::Aborted(code))
            }
            Some(_) => return Err(Error::Closed),
            None => {}
        }
        self.stream.send(data)
    }

    /// Copy received, verified bytes into `out`. `Ok(0)` means the server
    /// closed its stream and everything was read; `Err(WouldBlock)` means
    /// nothing is available yet.
    pub fn recv(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        match self.stream.recv(out) {
            Err(Error::WouldBlock) if matches!(self.closed, Some(r) if r != CloseReason::Clean) => {
                Err(Error::Closed)
            }
            r => r,
        }
    }

    /// Abort the session: stop sending data at once and tell the server with
    /// an authenticated ABORT frame carrying `code` (PROTOCOL.md 6.6). Keep
    /// driving the client (transports, resumes) until [`Client::is_closed`]:
    /// the ABORT is resent after a resume until the server answers it, or
    /// until the session is given up. `send` and `recv` then fail with
    /// [`Error::Aborted`]. No effect on a closed session.
    pub fn abort(&mut self, code: AbortCode) {
        if self.closed.is_some() {
            return;
        }
        if self.session.is_none() {
            // No server knows this session: nothing to tell anyone.
            self.stream.abort(code);
            self.close_for_good(CloseReason::Aborted {
                code,
                by_peer: false,
            });
            return;
        }
        self.stream.abort(code);
    }

    /// Close the sending side: a CLOSE frame follows the last byte written.
    /// The session ends cleanly once the server closed too.
    pub fn close(&mut self) {
        self.stream.close();
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] should be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers().next()
    }

    /// The client's deadlines by [`Timer`] kind, read off its state (the
    /// same table the server's connections keep).
    pub fn timers(&self) -> TimerTable {
        let mut t = TimerTable::default();
        match &self.phase {
            Phase::Hello { deadline, .. } => t.set(Timer::Handshake, Some(*deadline)),
            Phase::Resume { deadline, .. } => {
                t.set(Timer::Handshake, Some(*deadline));
                t.set(Timer::GiveUp, self.give_up_timer());
            }
            Phase::Open => {
                let link = self.stream.timers();
                t.set(Timer::Ack, link.ack);
                t.set(Timer::Keepalive, link.keepalive);
                t.set(Timer::Idle, link.idle);
                t.set(Timer::Rekey, link.rekey);
                t.set(Timer::KeyExpiry, link.key_expiry);
            }
            Phase::Idle | Phase::Dead => t.set(Timer::GiveUp, self.give_up_timer()),
        }
        if self.closed.is_none() {
            t.set(
                Timer::AbortAnswer,
                self.stream.abort_answer_deadline(self.config.idle_timeout),
            );
        }
        t
    }

    /// The give-up deadline as a timer: until `handle_timeout` saw it pass.
    fn give_up_timer(&self) -> Option<Instant> {
        self.give_up_at()
            .filter(|g| self.deadline_noted != Some(*g))
    }

    /// While the session has no working transport: the instant after which
    /// the server has surely freed the session, by this side's clock. It is
    /// the last authenticated contact with the server plus the server's
    /// advertised resume timeout plus this side's idle timeout (the server
    /// may notice the loss that much later). `None` while a transport is
    /// open, before the handshake and once closed.
    ///
    /// Past it the client gives the session up (reason
    /// [`CloseReason::Expired`]) as soon as one more attempt fails without an
    /// authenticated answer: a transport attempt begun after the deadline
    /// that ends without success, or a failed connect reported with
    /// [`Client::connect_failed`]. A client whose clock jumped forward (the
    /// server's did not) thus still resumes. Drivers keep opening transports
    /// until the session is closed (PROTOCOL.md 7.6).
    pub fn give_up_at(&self) -> Option<Instant> {
        if self.closed.is_some() || matches!(self.phase, Phase::Open) {
            return None;
        }
        let s = self.session.as_ref()?;
        Some(
            s.last_contact
                .saturating_add(s.resume_timeout)
                .saturating_add(self.config.idle_timeout),
        )
    }

    /// The bytes whose delivery is unknown once the session ended other
    /// than cleanly: data offsets `[acknowledged, written)` of this side's
    /// stream. The server application may have received any prefix of them.
    /// relink never resends them in another session; the application
    /// decides (PROTOCOL.md 7.7). `None` while the session is alive or after
    /// a clean close.
    pub fn in_doubt(&self) -> Option<ByteRange> {
        match self.closed {
            None | Some(CloseReason::Clean) => None,
            // The gate kept every DATA frame back: nothing is in doubt.
            Some(CloseReason::Rejected { .. }) => Some(ByteRange::default()),
            Some(_) => Some(self.stream.in_doubt()),
        }
    }

    /// Advance timers: handshake/resume deadline, idle timeout. Due ACKs and
    /// keepalives are then written by `poll_transmit`.
    pub fn handle_timeout(&mut self, now: Instant) {
        // The server did not answer our ABORT in time (it may sit behind
        // data its application does not read): the abort is complete.
        if let Some(code) = self.stream.abort_timed_out(now, self.config.idle_timeout) {
            self.close_for_good(CloseReason::Aborted {
                code,
                by_peer: false,
            });
            return;
        }
        if let Some(g) = self.give_up_at().filter(|g| now >= *g) {
            // No longer a timer; the next failed attempt ends the session.
            self.deadline_noted = Some(g);
        }
        match &self.phase {
            Phase::Hello { deadline, .. } | Phase::Resume { deadline, .. } => {
                if now >= *deadline {
                    self.fail_transport(Error::TimedOut);
                }
            }
            Phase::Open => {
                if let Err(e) = self.stream.handle_timeout(now) {
                    self.fail_transport(e);
                }
            }
            Phase::Idle | Phase::Dead => {}
        }
    }

    /// Remember the last frame that verified on the open transport.
    fn note_contact(&mut self) {
        if let (Some(s), Some(t)) = (&mut self.session, self.stream.last_rx()) {
            s.last_contact = s.last_contact.max(t);
        }
    }

    /// An answer to this resume attempt that nothing authenticates (a
    /// status without MAC, a MAC that failed). With a pinned server key such
    /// an answer is forged, corrupted, or from a server with another key: it
    /// costs this transport only, and the session ends by an authenticated
    /// answer or by the deadline (`give_up_at`). In anonymous mode it counts
    /// like any answered failure (nothing authenticates the server there,
    /// PROTOCOL.md 9).
    fn fail_unauthenticated(&mut self, e: Error) -> Error {
        if self.config.pinned_server_key.is_some() {
            self.fail_transport(e)
        } else {
            self.fail_answered(e)
        }
    }

    /// The server answered this resume attempt, but not with Ok: end the
    /// transport, and the session after `max_resume_attempts` such answers in
    /// a row.
    fn fail_answered(&mut self, e: Error) -> Error {
        self.resume_attempts += 1;
        let e = self.fail_transport(e);
        if self.resume_attempts >= self.config.max_resume_attempts {
            self.close_for_good(CloseReason::TooManyFailures);
        }
        e
    }

    /// The client's estimate of the server's clock offset: server freshness
    /// clock minus this client's monotonic clock, in µs, from the last
    /// authenticated reading of the server's clock (ServerHello,
    /// ResumeResponse, authenticated resume rejection, a server PING, or a
    /// server stamp ahead of the estimate; PROTOCOL.md 6.7). `None` before
    /// the handshake. The server PINGs every `keepalive_interval` of
    /// silence, so an idle client's offset is at most that old.
    pub fn server_clock_offset(&self) -> Option<i64> {
        let (t, at) = self.stream.clock_base()?;
        let d = i128::from(t) - i128::from(at.as_micros());
        Some(d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
    }

    /// The client's estimate of the server's freshness clock at `now` (the
    /// time it stamps its messages with); `None` before the handshake.
    pub fn server_time(&self, now: Instant) -> Option<crate::UnixTime> {
        self.stream
            .clock_estimate(now)
            .map(crate::UnixTime::from_micros)
    }

    /// The session's connection id once the handshake completed.
    pub fn conn_id(&self) -> Option<u64> {
        self.session.as_ref().map(|s| s.conn_id)
    }

    /// Whether a transport is attached and frames flow.
    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    /// Whether the current transport was ended by the core (drop it, then
    /// call `new_transport` unless the session is closed).
    pub fn transport_ended(&self) -> bool {
        matches!(self.phase, Phase::Dead)
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed
    }

    /// Whether the session ended (cleanly or not).
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Whether `poll_transmit` has something to write right now.
    pub fn wants_transmit(&self, now: Instant) -> bool {
        match self.phase {
            Phase::Hello { .. } | Phase::Resume { .. } => self.control_sent < self.control_len,
            Phase::Open => self.control_sent < self.control_len || self.stream.wants_transmit(now),
            _ => false,
        }
    }

    /// Whether data may flow: from the verified ServerHello on when the
    /// server does not decide on clients; else once its ACCEPT verified
    /// ([`Event::Accepted`]). False before the handshake.
    pub fn is_accepted(&self) -> bool {
        self.session.is_some() && self.stream.is_accepted()
    }

    /// The token the server granted when it accepted this client
    /// ([`Event::Accepted`] with `token: true`), once: present it in later
    /// sessions as [`crate::Credential::Token`]. Opaque bytes (at most 512).
    pub fn take_token(&mut self) -> Option<Vec<u8>> {
        self.token.take()
    }

    /// Test hook (feature `test-hooks`): send DATA and CLOSE before the
    /// server's ACCEPT, breaking the protocol (for the server's gate tests).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn set_ignore_gate_for_test(&mut self, ignore: bool) {
        self.stream.set_ignore_gate(ignore);
    }

    /// After input: report the server's ACCEPT once it verified.
    fn check_accepted(&mut self) {
        if let Some(token) = self.stream.take_accept_news() {
            let has = token.is_some();
            self.token = token;
            self.events.push_back(Event::Accepted { token: has });
        }
    }

    /// Bytes written but not yet acknowledged by the server.
    pub fn unacked(&self) -> usize {
        self.stream.unacked()
    }

    /// Whether this side half-closed ([`Client::close`]) and the server
    /// acknowledged the CLOSE: it read every byte written, and the end.
    pub fn close_acked(&self) -> bool {
        self.stream.close_acked()
    }

    /// Bytes received and verified but not yet read.
    pub fn readable(&self) -> usize {
        self.stream.readable()
    }

    /// Total application bytes accepted by `send`.
    pub fn bytes_written(&self) -> u64 {
        self.stream.written()
    }

    /// Heap bytes held by this session's buffers.
    pub fn buffer_memory(&self) -> usize {
        self.stream.memory()
    }

    /// The session's key epoch: the newest epoch both directions switched
    /// to (0 before the first rekey and before the handshake).
    pub fn epoch(&self) -> u32 {
        self.stream.ring().map_or(0, KeyRing::epoch)
    }

    /// Ask for a rekey (PROTOCOL.md 6.8): the client starts an exchange as
    /// soon as it may (a transport attached, no exchange in progress), even
    /// with `Config::rekey == false`. [`Event::Rekeyed`] reports its end.
    /// `Err(Closed)` once the session ended.
    pub fn request_rekey(&mut self) -> Result<(), Error> {
        if self.closed.is_some() {
            return Err(Error::Closed);
        }
        self.stream.request_rekey();
        Ok(())
    }

    /// Test hook: answer no REKEY_INIT (a client that ignores the server's
    /// order, for the key-expiry tests).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn set_ignore_rekey(&mut self, ignore: bool) {
        self.stream.set_ignore_rekey(ignore);
    }

    /// Test hook: a copy of the client's current resume key and its epoch
    /// (for the stolen-resume-key tests).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn export_resume_key_for_test(&self) -> Option<(u32, [u8; 32])> {
        resume_key(&self.stream).ok().map(|(e, k)| (e, k.0))
    }

    /// Test hook: the epochs whose keys the client holds right now.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn key_epochs(&self) -> Option<crate::KeyEpochs> {
        self.stream.ring().map(KeyRing::key_epochs)
    }

    /// Test hook: every `(key id, offset, plaintext byte)` the client
    /// encrypted since the last call; the key id is `BLAKE3(key)[0..8]`.
    /// The first call switches recording on (and returns nothing).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn take_keystream_log(&mut self) -> alloc::vec::Vec<([u8; 8], u64, u8)> {
        self.stream.take_keystream_log()
    }

    /// The time a new ClientHello carries (PROTOCOL.md 3.2): the server's
    /// clock from a Stale answer to the previous hello, advanced by the time
    /// since (used once), else the wall clock if configured, else 0.
    fn hello_time(&mut self, now: Instant) -> u64 {
        if let Some((t, at)) = self.hello_base.take() {
            return t.saturating_add(now.saturating_since(at).as_micros());
        }
        self.config
            .wall_clock
            .as_ref()
            .map_or(0, |c| c.now().as_micros())
    }

    /// Test hook (feature `test-hooks`): shift this side's outgoing time
    /// stamps by `skew` µs.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn set_stamp_skew(&mut self, skew: i64) {
        self.stream.set_stamp_skew(skew);
    }

    fn set_control(&mut self, bytes: &[u8]) {
        self.control[..bytes.len()].copy_from_slice(bytes);
        self.control_len = bytes.len();
        self.control_sent = 0;
    }

    /// End the current transport; the session survives unless too many
    /// authentication failures happened in a row. Returns `e`.
    fn fail_transport(&mut self, e: Error) -> Error {
        let was_open = matches!(self.phase, Phase::Open);
        let attempt = matches!(self.phase, Phase::Hello { .. } | Phase::Resume { .. });
        if was_open {
            self.note_contact();
        }
        self.stream.detach();
        self.control_len = 0;
        self.control_sent = 0;
        self.phase = Phase::Dead;
        if e == Error::AuthFailed {
            self.events.push_back(Event::AuthFailed { reason: e });
            if was_open {
                self.stream.note_auth_failure();
            }
        }
        if self.closed.is_none() {
            self.events
                .push_back(Event::TransportLost { error: Some(e) });
            // With a pinned key a frame that fails its tag is unauthenticated
            // input like a forged answer: it costs the transport, never the
            // session (PROTOCOL.md 7.7); in anonymous mode the count bounds it.
            if self.config.pinned_server_key.is_none()
                && self.stream.auth_failures() >= self.config.max_auth_failures
            {
                self.close_for_good(CloseReason::TooManyFailures);
            } else if attempt && self.final_attempt {
                self.close_for_good(CloseReason::Expired);
            }
        }
        e
    }

    fn close_for_good(&mut self, reason: CloseReason) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(reason);
        // A clean close and an answer to the server's ABORT still have frames
        // to flush on the open transport (the last ACK, our ABORT answer).
        let flush = matches!(
            reason,
            CloseReason::Clean
                | CloseReason::Aborted { by_peer: true, .. }
                | CloseReason::Rejected { .. }
        );
        if !flush {
            self.stream.detach();
            self.phase = Phase::Dead;
        }
        self.events.push_back(Event::Closed { reason });
    }

    fn drain_stream_events(&mut self) {
        while let Some(e) = self.stream.take_event() {
            match e {
                StreamEvent::PeerClosed => self.events.push_back(Event::PeerClosed),
                StreamEvent::CleanClose => self.close_for_good(CloseReason::Clean),
                // Refused before the server's ACCEPT: a rejection.
                StreamEvent::PeerAborted(code) if !self.stream.is_accepted() => {
                    self.close_for_good(CloseReason::Rejected { code })
                }
                StreamEvent::PeerAborted(code) => self.close_for_good(CloseReason::Aborted {
                    code,
                    by_peer: true,
                }),
                StreamEvent::AbortDone(code) => self.close_for_good(CloseReason::Aborted {
                    code,
                    by_peer: false,
                }),
                StreamEvent::Rekeyed(epoch) => self.events.push_back(Event::Rekeyed { epoch }),
            }
        }
    }
}

/// The resume key the client MACs with (and expects the answers under):
/// the one of its receive epoch (PROTOCOL.md 7.2), and that epoch.
fn resume_key(stream: &Stream) -> Result<(u32, &Secret), Error> {
    stream
        .ring()
        .and_then(KeyRing::client_resume_key)
        .ok_or(Error::InvalidState)
}

/// Copy bytes of a reply into `reply`: first its two leading bytes, then as
/// many as `len_of(version, status)` says. Returns (bytes taken, complete).
fn fill_reply<const N: usize>(
    reply: &mut [u8; N],
    have: &mut usize,
    input: &[u8],
    len_of: impl Fn(u8, u8) -> Result<usize, crate::ProtocolError>,
) -> Result<(usize, bool), crate::ProtocolError> {
    let mut taken = 0;
    if *have < 2 {
        let t = (2 - *have).min(input.len());
        reply[*have..*have + t].copy_from_slice(&input[..t]);
        *have += t;
        taken += t;
        if *have < 2 {
            return Ok((taken, false));
        }
    }
    let len = len_of(reply[0], reply[1])?.min(N);
    let t = (len - *have).min(input.len() - taken);
    reply[*have..*have + t].copy_from_slice(&input[taken..taken + t]);
    *have += t;
    taken += t;
    Ok((taken, *have == len))
}
