//! One server-side session: its stream, keys, resume checks, timers and
//! events, as a value the driver owns and runs on any thread, independently
//! of every other session (quinn-proto's `Connection` is the model).
//!
//! An [`Endpoint`](crate::Endpoint) creates a `Connection` when a handshake
//! completes and hands it to the driver together with the transport it
//! arrived on. Later transports reach it through the endpoint's routing: the
//! endpoint reads a ResumeRequest, names the session, and the driver passes
//! the request to [`Connection::handle_resume`]. From then on the connection
//! needs nothing from the endpoint, except that the driver tells the endpoint
//! when the session can no longer be resumed and when its last bytes were
//! read ([`EndpointEvent`]): until then it counts against `max_sessions`.
//!
//! ```text
//!          handshake done             transport lost / failed
//!  (endpoint) ──────────▶ Attached ──────────────────────────▶ Detached
//!                            ▲        valid resume request         │
//!                            └─────────────────────────────────────┘
//!  Attached/Detached ── expiry, DataUnavailable ──▶ Ended (unroutable)
//!  Ended ── application read every byte, events polled ──▶ drained (drop it)
//! ```
//!
//! A session that *finished* (clean close of both directions, or an ABORT
//! either way; its `Closed` event was reported) stays resumable, and keeps
//! its slot in `Config::max_sessions`, until its `resume_timeout` passes
//! without transport: the client may still need a resume to receive the
//! acknowledgement of its CLOSE or the answer to its ABORT (PROTOCOL.md 6.4,
//! 6.6, 8). Its buffers are freed while it waits; only the connection value
//! (about 0.7 KiB) remains. Size `max_sessions` for the sessions that end in
//! a `resume_timeout` window, or lower `resume_timeout`.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use zeroize::Zeroize;

use crate::config::Config;
use crate::credential::{
    ClientCredential, CredentialHeld, CredentialKeys, KIND_SECRET, KIND_TOKEN,
};
use crate::error::Error;
use crate::event::{CloseReason, ServerEvent};
use crate::ids::{SessionId, TransportId};
use crate::keys::{tags_equal, ConnRng, Secret};
use crate::rekey::{KeyRing, RekeyEnv};
use crate::resume::{
    authenticated_reject, check_request, request_mac, response_mac, SessionCounters,
    REQUEST_MAC_INPUT, RESPONSE_MAC_INPUT,
};
use crate::stream::{Gate, StampClock, Stream, StreamEvent, StreamLimits};
use crate::time::{Duration, Instant};
use crate::timer::{Timer, TimerTable};
use crate::token::{
    xor_zero_nonce, TokenError, TokenGrant, TokenKey, MAX_TOKEN_IDENTITY, TOKEN_NONCE_LEN,
};
use crate::wire::{
    AbortCode, ResumeRequest, ResumeResponse, ResumeStatus, UnknownSessionReject, REJECT_AUTH_LEN,
    RESUME_REQUEST_LEN, RESUME_RESPONSE_LEN, TAG_LEN, VERSION,
};
use crate::MIN_TRANSMIT_BUFFER;

/// What every connection of an endpoint shares: one allocation each, not
/// a copy per session.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    pub(crate) limits: Arc<StreamLimits>,
    /// The token key, derived once from the static key (client
    /// credentials with a static key only).
    pub(crate) token_key: Option<Arc<TokenKey>>,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Self {
        let limits = Arc::new(StreamLimits::from_config(&config));
        let token_key = config
            .server_static
            .as_ref()
            .filter(|_| config.client_auth)
            .map(|kp| Arc::new(TokenKey::from_static(kp)));
        Shared {
            config: Arc::new(config),
            limits,
            token_key,
        }
    }
}

/// A rejection answer for one transport: write [`Rejection::reply`] to it,
/// then close it. Returned by [`Connection::handle_resume`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    error: Error,
    reply: [u8; REJECT_AUTH_LEN],
    len: u8,
}

impl core::fmt::Debug for Rejection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Rejection")
            .field("error", &self.error)
            .field("len", &self.len)
            .finish()
    }
}

impl Rejection {
    pub(crate) fn new(error: Error, reply: &[u8]) -> Self {
        let mut r = [0u8; REJECT_AUTH_LEN];
        let len = reply.len().min(REJECT_AUTH_LEN);
        r[..len].copy_from_slice(&reply[..len]);
        Rejection {
            error,
            reply: r,
            len: len as u8,
        }
    }
    /// Why the transport was refused.
    pub fn error(&self) -> Error {
        self.error
    }
    /// The bytes to write to the refused transport before closing it
    /// (PROTOCOL.md 3.6).
    pub fn reply(&self) -> &[u8] {
        &self.reply[..usize::from(self.len)]
    }
}

/// What a [`Connection`] asks of the [`Endpoint`](crate::Endpoint) that
/// routes to it. The driver passes each one to
/// [`Endpoint::handle_event`](crate::Endpoint::handle_event). A connection
/// produces `Unroutable` once, then `Released` once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointEvent {
    /// The session can no longer be resumed: remove its route. It still
    /// counts against `max_sessions` (its unread bytes are held).
    Unroutable {
        /// The session.
        session: SessionId,
        /// Its connection id.
        conn_id: u64,
    },
    /// The application read every byte of the ended session: it no longer
    /// counts against `max_sessions` (the driver drops the connection once
    /// [`Connection::is_drained`]).
    Released {
        /// The session.
        session: SessionId,
    },
}

/// One session of a server endpoint. See the [module docs](crate::connection).
///
/// # Calling contract
/// The driver owns the value and calls, for the session's current transport
/// (the one [`Connection::transport`] names):
/// - **input**: [`handle_input`](Self::handle_input) with received bytes
///   (it returns how many it took; offer the rest again after the
///   application read), [`handle_resume`](Self::handle_resume) with a resume
///   request the endpoint routed here, [`handle_timeout`](Self::handle_timeout)
///   once [`poll_timeout`](Self::poll_timeout) has passed, and
///   [`transport_lost`](Self::transport_lost) when a transport ends (EOF,
///   error, or the driver closed it after a `CloseTransport` event);
/// - **output**, after any input: [`poll_transmit`](Self::poll_transmit)
///   until it returns 0, [`poll_event`](Self::poll_event) and
///   [`poll_endpoint_event`](Self::poll_endpoint_event) until `None`, then
///   [`poll_timeout`](Self::poll_timeout) for the next wake-up;
/// - **application**: [`send`](Self::send), [`recv`](Self::recv),
///   [`close`](Self::close), [`abort`](Self::abort) at any time (then the
///   output calls again);
/// - **getters**: [`session`](Self::session), [`conn_id`](Self::conn_id),
///   [`transport`](Self::transport), [`unacked`](Self::unacked),
///   [`readable`](Self::readable), [`is_drained`](Self::is_drained)...
///
/// A transport's end is reported one way each direction: the driver calls
/// `transport_lost`; the connection emits `ServerEvent::CloseTransport` (and
/// its calls for that transport return `Err(TransportEnded)`).
/// Once [`is_drained`](Self::is_drained) the value can be dropped.
pub struct Connection {
    session: SessionId,
    conn_id: u64,
    config: Arc<Config>,
    stream: Stream,
    reset_token: [u8; TAG_LEN],
    last_counter: u64,
    /// The current transport, while attached.
    transport: Option<TransportId>,
    /// The ResumeResponse for the current transport, until transmitted
    /// (boxed: an idle session carries none).
    control: Option<Box<[u8; RESUME_RESPONSE_LEN]>>,
    /// The session ended (clean close, or an ABORT either way) and its
    /// `Closed` event was reported; it stays resumable until it expires so
    /// that the client can complete the ending after a cut.
    finished: bool,
    /// No longer resumable; kept only until the application has read the
    /// bytes it was still holding.
    unroutable: bool,
    /// An [`EndpointEvent::Unroutable`] waits for `poll_endpoint_event`.
    endpoint_event: bool,
    /// [`EndpointEvent::Released`] was produced.
    released: bool,
    events: VecDeque<ServerEvent>,
    timers: TimerTable,
    /// The session's own random generator (rekey ephemerals, token
    /// nonces), seeded by the endpoint.
    pub(crate) rng: ConnRng,
    /// The acceptance of the client (`Config::client_auth` only).
    auth: Option<Box<ServerAuth>>,
}

impl core::fmt::Debug for Connection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Connection")
            .field("session", &self.session)
            .field("transport", &self.transport)
            .field("unroutable", &self.unroutable)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A session whose keys were just proved by the client: attached to
    /// `transport` when the ClientConfirm arrived on it, detached when a
    /// resume request is about to attach it (`handle_resume` follows).
    /// Keys are moved in, never copied; `rng_seed` seeds the connection's
    /// [`ConnRng`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        session: SessionId,
        conn_id: u64,
        shared: &Shared,
        keys: KeyRing,
        reset_token: [u8; TAG_LEN],
        rng_seed: [u8; 32],
        credential: Option<CredentialKeys>,
        transport: Option<TransportId>,
        now: Instant,
    ) -> Result<Self, Error> {
        let mut stream = Stream::new(shared.limits.clone());
        let config = shared.config.clone();
        stream.set_keys(keys);
        stream.set_stamp_clock(StampClock::Server(config.wall_clock.clone()));
        let mut c = Connection {
            session,
            conn_id,
            config,
            stream,
            reset_token,
            last_counter: 0,
            transport,
            control: None,
            finished: false,
            unroutable: false,
            endpoint_event: false,
            released: false,
            events: VecDeque::new(),
            timers: TimerTable::default(),
            rng: ConnRng::from_seed(rng_seed),
            auth: None,
        };
        if let Some(ck) = credential {
            let CredentialKeys { cred, grant } = ck;
            c.stream.set_gate(Gate::ServerWaiting { cred });
            c.auth = Some(ServerAuth::new(
                grant,
                shared.token_key.clone(),
                c.config.handshake_timeout,
                transport.map(|_| now),
                now,
            ));
        }
        if let Some(t) = transport {
            c.stream.attach(0, now, 0, 0)?;
            // Show the client at once that its confirm arrived (a keepalive
            // it verifies); data flows either way.
            c.stream.ping_soon();
            c.events.push_back(ServerEvent::HandshakeDone {
                transport: t,
                session,
            });
        } else {
            c.timers.set(
                Timer::Expiry,
                Some(now.saturating_add(c.config.resume_timeout)),
            );
        }
        c.update_timers();
        Ok(c)
    }

    /// Report the session to the application without a transport yet (its
    /// ClientConfirm was lost; the resume request that follows proves the
    /// same keys).
    pub(crate) fn announce(&mut self, transport: TransportId) {
        self.events.push_back(ServerEvent::HandshakeDone {
            transport,
            session: self.session,
        });
    }

    // ----- input ----------------------------------------------------------

    /// Bytes received on `transport`, which must be the current one. Returns
    /// how many were consumed. `Err` means the transport is finished (a
    /// `CloseTransport` event says so too): flush `poll_transmit`, then close
    /// it. The session survives a transport's failure.
    pub fn handle_input(
        &mut self,
        transport: TransportId,
        now: Instant,
        input: &[u8],
    ) -> Result<usize, Error> {
        if self.transport != Some(transport) {
            return Err(Error::TransportEnded);
        }
        let rng = &mut self.rng;
        let mut fill = |b: &mut [u8; 32]| *b = rng.draw();
        let mut env = RekeyEnv {
            fill: &mut fill,
            server_static: self.config.server_static.as_ref(),
            pinned_server_key: None,
        };
        let r = self.stream.handle_input(now, input, &mut env);
        self.check_credential(transport, now);
        self.drain_stream_events();
        let r = match r {
            Ok(n) => Ok(n),
            Err(e) => Err(self.fail_attached(transport, now, e)),
        };
        self.update_timers();
        r
    }

    /// A resume request the endpoint routed to this session, received on
    /// `transport`. On success `transport` becomes the current one (the
    /// previous one, if any, gets a `CloseTransport` event) and the
    /// ResumeResponse waits in `poll_transmit`. On failure write
    /// [`Rejection::reply`] to `transport` and close it (PROTOCOL.md 7.3):
    /// the transport then belongs to nobody (no `transport_lost` is needed;
    /// it is harmless).
    pub fn handle_resume(
        &mut self,
        transport: TransportId,
        now: Instant,
        request: &[u8; RESUME_REQUEST_LEN],
    ) -> Result<(), Rejection> {
        let wall = self.config.wall_now(now).as_micros();
        self.handle_resume_at(transport, now, wall, request)
    }

    /// [`Connection::handle_resume`] with the wall-clock reading `wall`
    /// (microseconds) the caller already checked the request against: the
    /// endpoint confirming a session by a resume must not read the clock a
    /// second time (a later reading can turn its fresh request Stale).
    pub(crate) fn handle_resume_at(
        &mut self,
        transport: TransportId,
        now: Instant,
        wall: u64,
        request: &[u8; RESUME_REQUEST_LEN],
    ) -> Result<(), Rejection> {
        let r = self.resume(transport, now, wall, request);
        if let Err(rej) = &r {
            self.events.push_back(ServerEvent::CloseTransport {
                transport,
                error: Some(rej.error),
            });
        }
        self.update_timers();
        r
    }

    fn resume(
        &mut self,
        transport: TransportId,
        now: Instant,
        wall: u64,
        msg: &[u8; RESUME_REQUEST_LEN],
    ) -> Result<(), Rejection> {
        let req = ResumeRequest::decode(msg).map_err(|e| {
            Rejection::new(
                Error::from(e),
                &[VERSION, ResumeStatus::Malformed.to_byte()],
            )
        })?;
        if self.unroutable || req.conn_id != self.conn_id {
            // Raced with the end of the session: the endpoint's route was
            // still there. Answer as the endpoint would now.
            let reply = UnknownSessionReject {
                reset_token: self.reset_token,
            }
            .encode();
            return Err(Rejection::new(
                Error::ResumeRejected(ResumeStatus::UnknownSession),
                &reply,
            ));
        }
        // The key of the client's receive epoch (PROTOCOL.md 7.8): a
        // request naming an epoch this side holds no key for fails. A copy
        // (zeroized on drop): the stream changes below.
        let key = self
            .stream
            .ring()
            .and_then(|r| r.resume_key(req.rx_epoch))
            .cloned();
        let Some(key) =
            key.filter(|k| tags_equal(&request_mac(k, &msg[..REQUEST_MAC_INPUT]), &req.mac))
        else {
            self.events.push_back(ServerEvent::AuthFailed {
                transport,
                reason: Error::AuthFailed,
            });
            return Err(Rejection::new(
                Error::ResumeRejected(ResumeStatus::AuthFailed),
                &[VERSION, ResumeStatus::AuthFailed.to_byte()],
            ));
        };
        let counters = SessionCounters {
            last_counter: self.last_counter,
            server_acked: self.stream.acked(),
            server_end: self.stream.write_end(),
            server_read: self.stream.read_count(),
        };
        let window = self.config.freshness_window.as_micros();
        if let Err(status) = check_request(&req, &counters, wall, window) {
            let reply = authenticated_reject(&key, msg, status, wall);
            let rej = Rejection::new(Error::ResumeRejected(status), &reply);
            if status == ResumeStatus::DataUnavailable {
                self.end_session(CloseReason::DataUnavailable);
            }
            return Err(rej);
        }
        // Authenticated and fresh: this transport takes over the session.
        self.last_counter = req.counter;
        let server_written = self.stream.write_end();
        let server_read = self.stream.read_count();
        let (start, end) = match self
            .stream
            .attach(req.counter, now, req.client_read, req.rx_epoch)
        {
            Ok(r) => r,
            Err(_) => {
                // The client's (rx_epoch, read count) lies on the wrong side
                // of a switch point (PROTOCOL.md 7.8 rule 1): like a read
                // count out of range, the session cannot be continued.
                let status = ResumeStatus::DataUnavailable;
                let reply = authenticated_reject(&key, msg, status, wall);
                self.end_session(CloseReason::DataUnavailable);
                return Err(Rejection::new(Error::ResumeRejected(status), &reply));
            }
        };
        let old = self.transport.replace(transport);
        self.credential_clock(now, true);
        self.timers.set(Timer::Expiry, None);
        let rx_epoch = self.stream.ring().map_or(0, KeyRing::rx_epoch);
        let mut resp = ResumeResponse {
            rx_epoch,
            server_written,
            server_read,
            server_time: wall,
            resume_timeout: self.config.resume_timeout.as_micros(),
            mac: [0; TAG_LEN],
        }
        .encode();
        let mac = response_mac(&key, msg, &resp[..RESPONSE_MAC_INPUT]);
        resp[RESPONSE_MAC_INPUT..].copy_from_slice(&mac);
        self.control = Some(Box::new(resp));
        if let Some(old) = old.filter(|&o| o != transport) {
            self.events.push_back(ServerEvent::CloseTransport {
                transport: old,
                error: None,
            });
        }
        self.events.push_back(ServerEvent::Resumed {
            transport,
            session: self.session,
            counter: req.counter,
        });
        self.events.push_back(ServerEvent::ResendRange {
            session: self.session,
            start,
            end,
        });
        Ok(())
    }

    /// `transport` ended (EOF, error, or the driver closed it). If it was
    /// the current one, the session waits to be resumed.
    pub fn transport_lost(&mut self, transport: TransportId, now: Instant) {
        if self.transport == Some(transport) {
            self.detach(now);
            self.update_timers();
        }
    }

    /// Advance timers: idle timeout of the transport, expiry of a detached
    /// session, the wait for the answer to this side's ABORT. Due ACKs and
    /// keepalives are then written by `poll_transmit`.
    pub fn handle_timeout(&mut self, now: Instant) {
        // The client did not answer our ABORT in time (it may sit behind
        // data its application does not read): the abort is complete.
        if let Some(code) = self.stream.abort_timed_out(now, self.config.idle_timeout) {
            self.finished = true;
            self.push_in_doubt();
            self.events.push_back(ServerEvent::Closed {
                session: self.session,
                reason: CloseReason::Aborted {
                    code,
                    by_peer: false,
                },
            });
        }
        if self.transport.is_none() {
            // Detached: the only timer left is the expiry.
            if self.timers.is_due(Timer::Expiry, now) {
                self.expire();
            }
        } else if let Some(t) = self.transport {
            self.credential_timeout(now);
            if self.stream.handle_timeout(now).is_err() {
                self.fail_attached(t, now, Error::TimedOut);
            }
        }
        self.update_timers();
    }

    // ----- output ---------------------------------------------------------

    /// Fill `out` with bytes for `transport`; 0 when nothing is due (or the
    /// transport is not the current one). `out` must hold at least
    /// [`MIN_TRANSMIT_BUFFER`] bytes.
    #[must_use = "the bytes written to `out` must be sent"]
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
        if self.transport != Some(transport) {
            return Ok(0);
        }
        let mut n = 0;
        if let Some(control) = self.control.take() {
            n = control.len();
            out[..n].copy_from_slice(&control[..]);
        }
        let rng = &mut self.rng;
        let mut fill = |b: &mut [u8; 32]| *b = rng.draw();
        let mut env = RekeyEnv {
            fill: &mut fill,
            server_static: self.config.server_static.as_ref(),
            pinned_server_key: None,
        };
        n += self.stream.poll_transmit(now, &mut out[n..], &mut env);
        // Writing our SWITCH completes an exchange (`Rekeyed`).
        self.drain_stream_events();
        self.update_timers();
        Ok(n)
    }

    /// Whether `poll_transmit(transport, ..)` would write something now.
    pub fn wants_transmit(&self, transport: TransportId, now: Instant) -> bool {
        self.transport == Some(transport)
            && (self.control.is_some() || self.stream.wants_transmit(now))
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        let e = self.events.pop_front();
        if e.is_none() && self.events.capacity() > 0 {
            // Events are rare (session changes, never per frame): an idle
            // session keeps no queue allocated.
            self.events = VecDeque::new();
        }
        e
    }

    /// The next request for the endpoint, if any: pass it to
    /// [`Endpoint::handle_event`](crate::Endpoint::handle_event).
    #[must_use]
    pub fn poll_endpoint_event(&mut self) -> Option<EndpointEvent> {
        if core::mem::take(&mut self.endpoint_event) {
            return Some(EndpointEvent::Unroutable {
                session: self.session,
                conn_id: self.conn_id,
            });
        }
        if self.unroutable && !self.released && self.stream.readable() == 0 {
            self.released = true;
            return Some(EndpointEvent::Released {
                session: self.session,
            });
        }
        None
    }

    /// When [`Connection::handle_timeout`] should be called next: the
    /// earliest entry of the connection's timer table.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The deadline of one timer kind (for inspection and tests).
    pub fn timer(&self, timer: Timer) -> Option<Instant> {
        self.timers.get(timer)
    }

    // ----- application ----------------------------------------------------

    /// Queue bytes for the client. Returns how many were accepted (0 when
    /// the send buffer is full).
    pub fn send(&mut self, data: &[u8]) -> Result<usize, Error> {
        let r = self.stream.send(data);
        self.update_timers();
        r
    }

    /// Read verified bytes. `Ok(0)`: the client closed and everything was
    /// read. `Err(WouldBlock)`: nothing yet. `Err(Closed)`: the session
    /// ended and nothing is left to read.
    pub fn recv(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        let r = self.stream.recv(out);
        self.update_timers();
        if self.unroutable && self.stream.readable() == 0 && matches!(r, Err(Error::WouldBlock)) {
            return Err(Error::Closed);
        }
        r
    }

    /// Abort the session: stop sending data at once and tell the client
    /// with an authenticated ABORT frame carrying `code` (PROTOCOL.md 6.6),
    /// resent after resumes until the client answers it. The
    /// `Closed { reason: Aborted { by_peer: false, .. } }` event follows the
    /// answer; until then keep serving the session's transports.
    pub fn abort(&mut self, code: AbortCode) {
        self.stream.abort(code);
        self.update_timers();
    }

    /// Mix 32 bytes of outside randomness (e.g. from the OS) into the
    /// session's own random generator, which draws its rekey keys. Without
    /// it the generator runs on the seed the endpoint gave it; the std
    /// drivers call it after creation and after every rekey.
    pub fn add_entropy(&mut self, entropy: &[u8; 32]) {
        self.rng.add_entropy(entropy);
    }

    /// Test hook (feature `test-hooks`): shift this side's outgoing time
    /// stamps by `skew` µs.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn set_stamp_skew(&mut self, skew: i64) {
        self.stream.set_stamp_skew(skew);
    }

    /// Close the sending side (a CLOSE frame follows the data).
    pub fn close(&mut self) {
        self.stream.close();
        self.update_timers();
    }

    // ----- getters --------------------------------------------------------

    /// The session's id (unique within its endpoint).
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The session's connection id (PROTOCOL.md 3.4).
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    /// The current transport, if attached.
    pub fn transport(&self) -> Option<TransportId> {
        self.transport
    }

    /// Bytes not yet acknowledged by the client.
    pub fn unacked(&self) -> usize {
        self.stream.unacked()
    }

    /// Whether this side half-closed ([`Connection::close`]) and the client
    /// acknowledged the CLOSE: it read every byte written, and the end.
    pub fn close_acked(&self) -> bool {
        self.stream.close_acked()
    }

    /// Verified bytes not yet read.
    pub fn readable(&self) -> usize {
        self.stream.readable()
    }

    /// Heap bytes held by the session's buffers.
    pub fn buffer_memory(&self) -> usize {
        self.stream.memory()
    }

    /// The session's key epoch: the newest epoch both directions switched
    /// to (0 before the first rekey).
    pub fn epoch(&self) -> u32 {
        self.stream.ring().map_or(0, KeyRing::epoch)
    }

    /// Ask for a rekey (PROTOCOL.md 6.8): this side starts an exchange as
    /// soon as it may (attached, no exchange in progress), even with
    /// `Config::rekey == false`. [`ServerEvent::Rekeyed`] reports its end.
    pub fn request_rekey(&mut self) {
        self.stream.request_rekey();
        self.update_timers();
    }

    /// Test hook: the epochs whose keys the server side holds right now.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn key_epochs(&self) -> Option<crate::KeyEpochs> {
        self.stream.ring().map(KeyRing::key_epochs)
    }

    /// Test hook: every `(key id, offset, plaintext byte)` this side
    /// encrypted since the last call; the key id is `BLAKE3(key)[0..8]`.
    /// The first call switches recording on (and returns nothing).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn take_keystream_log(&mut self) -> alloc::vec::Vec<([u8; 8], u64, u8)> {
        self.stream.take_keystream_log()
    }

    /// Whether the session can still be resumed.
    pub fn is_routable(&self) -> bool {
        !self.unroutable
    }

    /// The session can no longer be resumed (it expired, or ended by
    /// DataUnavailable), the application read every byte, and every event
    /// and endpoint event was polled: drop the value. A cleanly closed session is drained only
    /// after it expired (see the [module docs](crate::connection)).
    pub fn is_drained(&self) -> bool {
        self.released && self.events.is_empty()
    }

    // ----- internals ------------------------------------------------------

    fn update_timers(&mut self) {
        if self.unroutable {
            self.timers.clear();
            return;
        }
        let link = self.stream.timers();
        self.timers.set(Timer::Ack, link.ack);
        self.timers.set(Timer::Keepalive, link.keepalive);
        self.timers.set(Timer::Idle, link.idle);
        self.timers.set(Timer::Rekey, link.rekey);
        self.timers.set(Timer::KeyExpiry, link.key_expiry);
        self.timers.set(
            Timer::AbortAnswer,
            self.stream.abort_answer_deadline(self.config.idle_timeout),
        );
        self.timers
            .set(Timer::Credential, self.credential_deadline());
        // Timer::Expiry is set by `detach` and cleared by a resume.
    }

    fn detach(&mut self, now: Instant) {
        self.credential_clock(now, false);
        self.stream.detach();
        if self.finished {
            self.stream.trim();
        }
        self.transport = None;
        self.control = None;
        if !self.unroutable {
            self.timers.set(
                Timer::Expiry,
                Some(now.saturating_add(self.config.resume_timeout)),
            );
        }
    }

    /// The current transport failed: the session loses it but survives.
    fn fail_attached(&mut self, transport: TransportId, now: Instant, e: Error) -> Error {
        self.events.push_back(ServerEvent::CloseTransport {
            transport,
            error: Some(e),
        });
        self.detach(now);
        if e == Error::AuthFailed {
            self.events.push_back(ServerEvent::AuthFailed {
                transport,
                reason: e,
            });
            // Counted, but never a reason to end the session: a frame that
            // fails its tag is unauthenticated input, and the client may pin
            // our key (PROTOCOL.md 5.2, 7.7). The session ends by its
            // deadline if the client cannot get through.
            self.stream.note_auth_failure();
        }
        e
    }

    fn make_unroutable(&mut self) {
        if !self.unroutable {
            self.unroutable = true;
            self.endpoint_event = true;
        }
        self.timers.clear();
    }

    /// End the session for good. Verified bytes the application has not
    /// read stay readable (PROTOCOL.md 7.7: acknowledged bytes are never
    /// dropped).
    fn end_session(&mut self, reason: CloseReason) {
        if reason != CloseReason::Clean {
            self.push_in_doubt();
        }
        if let Some(t) = self.transport.take() {
            self.events.push_back(ServerEvent::CloseTransport {
                transport: t,
                error: Some(Error::Closed),
            });
        }
        self.stream.detach();
        self.stream.trim();
        self.make_unroutable();
        self.events.push_back(ServerEvent::Closed {
            session: self.session,
            reason,
        });
    }

    /// The session waited `resume_timeout` without transport: it can no
    /// longer be resumed. A finished one goes quietly (its `Closed` event
    /// was reported); bytes the application has not read yet stay readable.
    ///
    /// A session whose every data byte was acknowledged both ways and whose
    /// two CLOSEs were sent and the client's verified ended cleanly even
    /// though the ACK of our CLOSE never came (the client verified it and
    /// stopped, PROTOCOL.md 6.4): it is reported `Closed { Clean }`.
    fn expire(&mut self) {
        let quiet = self.finished;
        let clean = self.stream.all_delivered_but_close_ack();
        // Our ABORT was never answered (the answer was lost, or the client
        // never came back): the session still ended by our abort.
        let aborted = self.stream.abort_unanswered();
        let clean_end = clean && aborted.is_none();
        if !quiet && !clean_end {
            self.push_in_doubt();
        }
        self.stream.trim();
        self.make_unroutable();
        if quiet {
            return;
        }
        self.events.push_back(if let Some(code) = aborted {
            ServerEvent::Closed {
                session: self.session,
                reason: CloseReason::Aborted {
                    code,
                    by_peer: false,
                },
            }
        } else if clean {
            ServerEvent::Closed {
                session: self.session,
                reason: CloseReason::Clean,
            }
        } else {
            ServerEvent::SessionExpired {
                session: self.session,
            }
        });
    }

    fn drain_stream_events(&mut self) {
        let sid = self.session;
        while let Some(e) = self.stream.take_event() {
            match e {
                StreamEvent::PeerClosed => self
                    .events
                    .push_back(ServerEvent::PeerClosed { session: sid }),
                StreamEvent::CleanClose => {
                    self.finished = true;
                    self.events.push_back(ServerEvent::Closed {
                        session: sid,
                        reason: CloseReason::Clean,
                    });
                }
                StreamEvent::Rekeyed(epoch) => self.events.push_back(ServerEvent::Rekeyed {
                    session: sid,
                    epoch,
                }),
                StreamEvent::PeerAborted(code) | StreamEvent::AbortDone(code) => {
                    // Kept (finished) so that our answer reaches the client
                    // even across a cut: it resends its ABORT after a resume.
                    self.finished = true;
                    self.push_in_doubt();
                    self.events.push_back(ServerEvent::Closed {
                        session: sid,
                        reason: CloseReason::Aborted {
                            code,
                            by_peer: matches!(e, StreamEvent::PeerAborted(_)),
                        },
                    });
                }
            }
        }
    }

    /// Report the server's in-doubt range (if not empty) before the event
    /// that ends the session.
    fn push_in_doubt(&mut self) {
        if !self.stream.is_accepted() {
            // Never accepted: the gate kept every DATA frame back, so
            // nothing is in doubt (all of it is certainly undelivered).
            return;
        }
        let range = self.stream.in_doubt();
        if !range.is_empty() {
            self.events.push_back(ServerEvent::InDoubt {
                session: self.session,
                range,
            });
        }
    }
}

// ----- client credentials (PROTOCOL.md 6.9) -----------------------------------

/// The server's side of the acceptance of one client (`Config::client_auth`
/// only; boxed in the connection, so an ungated session pays a pointer).
pub(crate) struct ServerAuth {
    /// The credential the application decides on, from `ClientAuth` until
    /// the decision (zeroized on drop).
    held: Option<CredentialHeld>,
    /// The key of the ACCEPT's token (`grant_key`), until the decision.
    grant: Option<Secret>,
    /// The endpoint's token key (`None` without a static key).
    token_key: Option<Arc<TokenKey>>,
    /// Attached time left for the CREDENTIAL to verify.
    budget: Duration,
    /// Since when the current transport counts against `budget`.
    attached_at: Option<Instant>,
    /// The latest instant a call brought (the token's issue time).
    last_now: Instant,
}

impl core::fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerAuth")
            .field("held", &self.held)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl ServerAuth {
    pub(crate) fn new(
        grant: Secret,
        token_key: Option<Arc<TokenKey>>,
        budget: Duration,
        attached_at: Option<Instant>,
        now: Instant,
    ) -> Box<Self> {
        Box::new(ServerAuth {
            held: None,
            grant: Some(grant),
            token_key,
            budget,
            attached_at,
            last_now: now,
        })
    }
}

impl Connection {
    /// The credential the client presented, once
    /// [`ServerEvent::ClientAuth`] was reported and until the application
    /// decided (`accept_client` or `reject_client`). `None` otherwise, and
    /// always on a server without `Config::client_auth`.
    pub fn client_credential(&self) -> Option<ClientCredential<'_>> {
        self.auth.as_ref()?.held.as_ref().map(CredentialHeld::view)
    }

    /// Accept the client: an ACCEPT frame goes out (re-sent on every new
    /// transport until the client acknowledges it) and data flows both
    /// ways after it. With `grant`, the ACCEPT carries a token naming
    /// `grant.identity` for `grant.lifetime` (PROTOCOL.md 4.8), which the
    /// client may present in later sessions instead of its credential.
    ///
    /// Errors: [`Error::InvalidState`] when no decision is pending (no
    /// `ClientAuth` reported, or already decided); [`Error::NoStaticKey`]
    /// for a grant on a server without `Config::server_static` (tokens are
    /// keyed by it); [`Error::TooLong`] for an identity over
    /// [`crate::MAX_TOKEN_IDENTITY`] bytes. On error nothing changed.
    pub fn accept_client(&mut self, grant: Option<TokenGrant<'_>>) -> Result<(), Error> {
        let auth = self.auth.as_mut().ok_or(Error::InvalidState)?;
        if auth.held.is_none() {
            return Err(Error::InvalidState);
        }
        let grant_key = auth.grant.as_ref().ok_or(Error::InvalidState)?;
        let token = match grant {
            None => Vec::new(),
            Some(g) => {
                let key = auth.token_key.as_ref().ok_or(Error::NoStaticKey)?;
                if g.identity.len() > MAX_TOKEN_IDENTITY {
                    return Err(Error::TooLong);
                }
                let mut draw = self.rng.draw();
                let mut nonce = [0u8; TOKEN_NONCE_LEN];
                nonce.copy_from_slice(&draw[..TOKEN_NONCE_LEN]);
                draw.zeroize();
                let issued = self.config.wall_now(auth.last_now);
                let mut token = key
                    .mint(&nonce, g.identity, issued, g.lifetime)
                    .ok_or(Error::TooLong)?;
                xor_zero_nonce(grant_key, &mut token);
                token
            }
        };
        self.stream.accept_client(token)?;
        auth.held = None;
        auth.grant = None;
        self.update_timers();
        Ok(())
    }

    /// Reject the client: the session is aborted with `code` (typically
    /// [`AbortCode::CREDENTIAL_REJECTED`] or an application code ≥
    /// [`AbortCode::APPLICATION_MIN`]); the client's session closes with
    /// `CloseReason::Rejected { code }`. No application byte was delivered
    /// either way. The held credential is zeroized. Same as
    /// [`Connection::abort`] otherwise (also valid before `ClientAuth`).
    pub fn reject_client(&mut self, code: AbortCode) {
        if let Some(auth) = self.auth.as_mut() {
            auth.held = None;
            auth.grant = None;
        }
        self.abort(code);
    }

    /// Whether data may flow: always on a server without
    /// `Config::client_auth`; else once the application accepted the client.
    pub fn is_accepted(&self) -> bool {
        self.stream.is_accepted()
    }

    /// After input: a CREDENTIAL that just verified becomes the pending
    /// decision (`ClientAuth`), or ends the session when it is a token this
    /// server refuses.
    fn check_credential(&mut self, transport: TransportId, now: Instant) {
        let Some(auth) = self.auth.as_mut() else {
            return;
        };
        auth.last_now = now;
        let Some(mut p) = self.stream.take_arrived_credential() else {
            return;
        };
        if self.stream.aborted().is_some() {
            // The same input broke the protocol (DATA before ACCEPT): no
            // decision to make.
            auth.grant = None;
            return;
        }
        let held = match p.kind {
            KIND_SECRET => CredentialHeld::Secret(core::mem::take(&mut p.bytes)),
            KIND_TOKEN => {
                let wall = self.config.wall_now(now);
                let window = self.config.freshness_window;
                let verified = auth
                    .token_key
                    .as_ref()
                    .map_or(Err(TokenError::Invalid), |k| {
                        k.verify(&p.bytes, wall, window)
                    });
                match verified {
                    Ok(t) => CredentialHeld::Token(t),
                    Err(e) => {
                        auth.grant = None;
                        self.stream.abort(match e {
                            TokenError::Invalid => AbortCode::TOKEN_INVALID,
                            TokenError::Expired => AbortCode::TOKEN_EXPIRED,
                        });
                        return;
                    }
                }
            }
            _ => CredentialHeld::None,
        };
        auth.held = Some(held);
        self.events.push_back(ServerEvent::ClientAuth {
            session: self.session,
            transport,
        });
    }

    /// The deadline of the CREDENTIAL while it has not verified and a
    /// transport is attached.
    fn credential_deadline(&self) -> Option<Instant> {
        let auth = self.auth.as_ref()?;
        if !self.stream.awaits_credential() || self.stream.aborted().is_some() {
            return None;
        }
        Some(auth.attached_at?.saturating_add(auth.budget))
    }

    /// A transport attaches (`now`) or detaches (`None`): the credential's
    /// budget counts attached time only.
    fn credential_clock(&mut self, now: Instant, attached: bool) {
        if let Some(auth) = self.auth.as_mut() {
            if let Some(at) = auth.attached_at.take() {
                let used = now.saturating_since(at).as_micros();
                auth.budget = Duration::from_micros(auth.budget.as_micros().saturating_sub(used));
            }
            if attached {
                auth.attached_at = Some(now);
            }
        }
    }

    /// No CREDENTIAL verified within `handshake_timeout` of attached time:
    /// reject the client.
    fn credential_timeout(&mut self, now: Instant) {
        if self.credential_deadline().is_some_and(|d| d <= now) {
            self.reject_client(AbortCode::CREDENTIAL_REJECTED);
        }
    }
}

// ----- end client credentials ---------------------------------------------------
