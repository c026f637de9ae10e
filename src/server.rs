//! A single-threaded server: one [`Endpoint`] plus the [`Connection`]s it
//! produced, kept in one value and driven through one set of calls keyed by
//! [`TransportId`] and [`SessionId`].
//!
//! It is the convenient shape for a driver that runs every session on one
//! thread (custom event loops, tests, the benchmarks). A driver that wants
//! many cores owns the endpoint and the connections itself instead, each
//! behind its own lock (as `relink::tokio` and `relink::blocking` do).
//!
//! Timers: the endpoint keeps its own deadline index, and the server keeps
//! an ordered index of each connection's next deadline, updated after every
//! call that touches the connection. [`Server::poll_timeout`] is the first
//! entry of the two indexes (O(log n)); [`Server::handle_timeout`] visits
//! only the connections that are due ([`Server::timer_visits`] counts them).

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use rand_core::CryptoRng;

use crate::config::Config;
use crate::connection::{Connection, Rejection};
use crate::endpoint::{Dispatch, Endpoint};
use crate::error::Error;
use crate::event::ServerEvent;
pub use crate::ids::{SessionId, TransportId};
use crate::time::{earliest, Instant};
use crate::wire::AbortCode;
use crate::MIN_TRANSMIT_BUFFER;

struct Slot {
    conn: Box<Connection>,
    /// The connection's deadline as entered in the index (`NEVER`: none).
    due: Instant,
}

/// `Slot::due` of a connection without deadline (8 bytes, not 16).
const NEVER: Instant = Instant(u64::MAX);

/// A relink server endpoint with its sessions, for single-threaded drivers.
/// See the [module docs](crate::server).
///
/// # Calling contract
/// For each transport: [`accept`](Self::accept), then feed received bytes to
/// [`handle_input`](Self::handle_input) (it returns how many it took),
/// write what [`poll_transmit`](Self::poll_transmit) fills until it returns
/// 0, drain [`poll_event`](Self::poll_event), and report the transport's end
/// with [`transport_lost`](Self::transport_lost) (EOF, error, or after a
/// `CloseTransport` event). Sleep until [`poll_timeout`](Self::poll_timeout)
/// and call [`handle_timeout`](Self::handle_timeout). The application side
/// ([`send`](Self::send), [`recv`](Self::recv), [`close`](Self::close),
/// [`abort`](Self::abort)) works by session at any time.
pub struct Server<R: CryptoRng> {
    endpoint: Endpoint<R>,
    connections: BTreeMap<SessionId, Slot>,
    /// Transports handed to a connection, until `transport_lost`.
    attached: BTreeMap<TransportId, SessionId>,
    /// Transports a connection refused (resume rejected): the reply to
    /// write, whether it was written.
    refused: BTreeMap<TransportId, (Rejection, bool)>,
    index: BTreeSet<(Instant, SessionId)>,
    events: VecDeque<ServerEvent>,
    /// Scratch list of due connections (kept to avoid allocating per call).
    due: Vec<SessionId>,
    /// Transports with bytes to send after `handle_timeout` (at most one
    /// entry per connection visited).
    writable: VecDeque<TransportId>,
    timer_visits: u64,
}

impl<R: CryptoRng> core::fmt::Debug for Server<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server")
            .field("endpoint", &self.endpoint)
            .field("sessions", &self.connections.len())
            .finish_non_exhaustive()
    }
}

impl<R: CryptoRng> Server<R> {
    /// A server with no transports or sessions.
    pub fn new(config: Config, rng: R) -> Self {
        Server {
            endpoint: Endpoint::new(config, rng),
            connections: BTreeMap::new(),
            attached: BTreeMap::new(),
            refused: BTreeMap::new(),
            index: BTreeSet::new(),
            events: VecDeque::new(),
            due: Vec::new(),
            writable: VecDeque::new(),
            timer_visits: 0,
        }
    }

    /// The endpoint (routing table, handshakes in progress).
    pub fn endpoint(&self) -> &Endpoint<R> {
        &self.endpoint
    }

    /// The connection of `session`, if it exists.
    pub fn connection(&self, session: SessionId) -> Option<&Connection> {
        self.connections.get(&session).map(|s| &*s.conn)
    }

    /// Register a newly accepted transport. Fails when too many transports
    /// are still pending (not yet authenticated): close it then.
    pub fn accept(&mut self, now: Instant) -> Result<TransportId, Error> {
        self.endpoint.accept(now)
    }

    /// Register a newly accepted transport from `peer`: like
    /// [`accept`](Self::accept), with the per-source limit and cookie
    /// binding of [`Endpoint::accept_from`].
    pub fn accept_from(
        &mut self,
        now: Instant,
        peer: core::net::IpAddr,
    ) -> Result<TransportId, Error> {
        self.endpoint.accept_from(now, peer)
    }

    /// The driver lost `transport` (EOF, error, or it closed it after a
    /// `CloseTransport` event). Its session, if any, waits to be resumed.
    pub fn transport_lost(&mut self, transport: TransportId, now: Instant) {
        if let Some(sid) = self.attached.remove(&transport) {
            if let Some(slot) = self.connections.get_mut(&sid) {
                slot.conn.transport_lost(transport, now);
            }
            self.after(sid);
        } else if self.refused.remove(&transport).is_none() {
            self.endpoint.transport_lost(transport, now);
            self.pull_endpoint_events();
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
        if let Some(&sid) = self.attached.get(&transport) {
            let Some(slot) = self.connections.get_mut(&sid) else {
                return Err(Error::TransportEnded);
            };
            let r = slot.conn.handle_input(transport, now, input);
            self.after(sid);
            return r;
        }
        if self.refused.contains_key(&transport) {
            return Err(Error::TransportEnded);
        }
        let r = self.endpoint.handle_input(transport, now, input);
        self.pull_endpoint_events();
        let (consumed, sid) = match r? {
            Dispatch::Pending(n) => return Ok(n),
            Dispatch::NewConnection {
                consumed,
                connection,
            } => {
                let sid = connection.session();
                self.connections.insert(
                    sid,
                    Slot {
                        conn: connection,
                        due: NEVER,
                    },
                );
                (consumed, sid)
            }
            Dispatch::Resume {
                consumed,
                session,
                request,
            } => {
                let result = match self.connections.get_mut(&session) {
                    Some(slot) => slot.conn.handle_resume(transport, now, &request),
                    None => Err(self.endpoint.unknown_session(&request)),
                };
                if let Err(rej) = result {
                    if !self.connections.contains_key(&session) {
                        self.events.push_back(ServerEvent::CloseTransport {
                            transport,
                            error: Some(rej.error()),
                        });
                    }
                    self.refused.insert(transport, (rej, false));
                    self.after(session);
                    return Err(rej.error());
                }
                (consumed, session)
            }
        };
        self.attached.insert(transport, sid);
        self.after(sid);
        if consumed == input.len() {
            return Ok(consumed);
        }
        self.handle_input(transport, now, &input[consumed..])
            .map(|n| consumed + n)
    }

    /// After a call on `sid`'s connection: move its events out, pass its
    /// requests to the endpoint, re-index its deadline, free it once drained.
    fn after(&mut self, sid: SessionId) {
        let Some(slot) = self.connections.get_mut(&sid) else {
            return;
        };
        while let Some(e) = slot.conn.poll_event() {
            self.events.push_back(e);
        }
        while let Some(e) = slot.conn.poll_endpoint_event() {
            self.endpoint.handle_event(e);
        }
        let next = slot.conn.poll_timeout().unwrap_or(NEVER);
        if next != slot.due {
            if slot.due != NEVER {
                self.index.remove(&(slot.due, sid));
            }
            if next != NEVER {
                self.index.insert((next, sid));
            }
            slot.due = next;
        }
        if slot.conn.is_drained() {
            if slot.due != NEVER {
                self.index.remove(&(slot.due, sid));
            }
            self.connections.remove(&sid);
        }
    }

    fn pull_endpoint_events(&mut self) {
        while let Some(e) = self.endpoint.poll_event() {
            self.events.push_back(e);
        }
    }

    /// Fill `out` with bytes for `transport`; 0 when nothing is due.
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
        if let Some(&sid) = self.attached.get(&transport) {
            let Some(slot) = self.connections.get_mut(&sid) else {
                return Ok(0);
            };
            let r = slot.conn.poll_transmit(transport, now, out);
            self.after(sid);
            return r;
        }
        if let Some((rej, sent)) = self.refused.get_mut(&transport) {
            if *sent {
                return Ok(0);
            }
            *sent = true;
            let reply = rej.reply();
            out[..reply.len()].copy_from_slice(reply);
            return Ok(reply.len());
        }
        if !self.endpoint.holds_transport(transport) {
            return Err(Error::UnknownTransport);
        }
        self.endpoint.poll_transmit(transport, out)
    }

    /// Whether `poll_transmit(transport, ..)` would write something now.
    pub fn wants_transmit(&self, transport: TransportId, now: Instant) -> bool {
        if let Some(sid) = self.attached.get(&transport) {
            return self
                .connections
                .get(sid)
                .is_some_and(|s| s.conn.wants_transmit(transport, now));
        }
        if let Some((_, sent)) = self.refused.get(&transport) {
            return !sent;
        }
        self.endpoint.wants_transmit(transport)
    }

    fn with_connection<T>(
        &mut self,
        session: SessionId,
        f: impl FnOnce(&mut Connection) -> T,
    ) -> Result<T, Error> {
        let slot = self
            .connections
            .get_mut(&session)
            .ok_or(Error::UnknownSession)?;
        let r = f(&mut slot.conn);
        self.after(session);
        Ok(r)
    }

    /// Queue bytes for `session`. Returns how many were accepted (0 when its
    /// send buffer is full).
    pub fn send(&mut self, session: SessionId, data: &[u8]) -> Result<usize, Error> {
        self.with_connection(session, |c| c.send(data))?
    }

    /// Read verified bytes of `session`. `Ok(0)`: the client closed and
    /// everything was read. `Err(WouldBlock)`: nothing yet.
    pub fn recv(&mut self, session: SessionId, out: &mut [u8]) -> Result<usize, Error> {
        self.with_connection(session, |c| c.recv(out))?
    }

    /// Abort `session`: stop sending its data at once and tell the client
    /// with an authenticated ABORT frame carrying `code` (PROTOCOL.md 6.6),
    /// resent after resumes until the client answers it. The session's
    /// `Closed { reason: Aborted { by_peer: false, .. } }` event follows the
    /// answer; until then keep serving its transports.
    pub fn abort(&mut self, session: SessionId, code: AbortCode) -> Result<(), Error> {
        self.with_connection(session, |c| c.abort(code))
    }

    /// The credential the client of `session` presented, between
    /// [`ServerEvent::ClientAuth`] and the decision
    /// ([`Connection::client_credential`]).
    pub fn client_credential(&self, session: SessionId) -> Option<crate::ClientCredential<'_>> {
        self.connection(session)?.client_credential()
    }

    /// Accept the client of `session`, optionally granting a token
    /// ([`Connection::accept_client`]; [`Error::UnknownSession`] for an
    /// unknown session).
    pub fn accept_client(
        &mut self,
        session: SessionId,
        grant: Option<crate::TokenGrant<'_>>,
    ) -> Result<(), Error> {
        self.with_connection(session, |c| c.accept_client(grant))?
    }

    /// Reject the client of `session` with `code`
    /// ([`Connection::reject_client`]).
    pub fn reject_client(&mut self, session: SessionId, code: AbortCode) -> Result<(), Error> {
        self.with_connection(session, |c| c.reject_client(code))
    }

    /// Whether `session` exists and data may flow on it
    /// ([`Connection::is_accepted`]).
    pub fn is_accepted(&self, session: SessionId) -> bool {
        self.connection(session)
            .is_some_and(Connection::is_accepted)
    }

    /// Close the sending side of `session` (a CLOSE frame follows its data).
    pub fn close(&mut self, session: SessionId) -> Result<(), Error> {
        self.with_connection(session, |c| c.close())
    }

    /// Ask for a rekey of `session` ([`Connection::request_rekey`]).
    pub fn request_rekey(&mut self, session: SessionId) -> Result<(), Error> {
        self.with_connection(session, |c| c.request_rekey())
    }

    /// The key epoch of `session` ([`Connection::epoch`]).
    pub fn epoch(&self, session: SessionId) -> Option<u32> {
        self.connection(session).map(Connection::epoch)
    }

    /// Test hook: [`Connection::take_keystream_log`] of `session`.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn take_keystream_log(
        &mut self,
        session: SessionId,
    ) -> Result<alloc::vec::Vec<([u8; 8], u64, u8)>, Error> {
        self.with_connection(session, |c| c.take_keystream_log())
    }

    /// Test hook (feature `test-hooks`): shift the outgoing time stamps of
    /// `session` by `skew` µs.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn set_stamp_skew(&mut self, session: SessionId, skew: i64) -> Result<(), Error> {
        self.with_connection(session, |c| c.set_stamp_skew(skew))
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When [`Server::handle_timeout`] should be called next (O(log n)).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(
            self.endpoint.poll_timeout(),
            self.index.first().map(|(at, _)| *at),
        )
    }

    /// Advance timers: the endpoint's (handshake deadlines, unconfirmed
    /// sessions), then each connection whose deadline is due, and only
    /// those.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.pull_endpoint_events();
        let mut due = core::mem::take(&mut self.due);
        due.clear();
        due.extend(
            self.index
                .iter()
                .take_while(|(at, _)| *at <= now)
                .map(|(_, sid)| *sid),
        );
        self.writable.clear();
        for &sid in &due {
            if let Some(slot) = self.connections.get_mut(&sid) {
                self.timer_visits += 1;
                slot.conn.handle_timeout(now);
                if let Some(t) = slot.conn.transport() {
                    if slot.conn.wants_transmit(t, now) {
                        self.writable.push_back(t);
                    }
                }
                self.after(sid);
            }
        }
        self.due = due;
    }

    /// The next transport that has bytes to send because the last
    /// `handle_timeout` made them due (an ACK delay or a keepalive expired):
    /// call `poll_transmit` for it. Lets a driver write exactly the due
    /// transports instead of asking every one (`wants_transmit`). Ended
    /// transports are reported by `CloseTransport` events instead.
    #[must_use]
    pub fn poll_writable(&mut self) -> Option<TransportId> {
        self.writable.pop_front()
    }

    /// How many times `handle_timeout` ran a connection's timers so far (a
    /// measure of the timer work: it grows with due connections only).
    pub fn timer_visits(&self) -> u64 {
        self.timer_visits
    }

    /// The session `transport` carries, if attached.
    pub fn session_of(&self, transport: TransportId) -> Option<SessionId> {
        let sid = *self.attached.get(&transport)?;
        let slot = self.connections.get(&sid)?;
        (slot.conn.transport() == Some(transport)).then_some(sid)
    }

    /// Whether the server ended `transport` (or does not know it).
    pub fn transport_ended(&self, transport: TransportId) -> bool {
        if self.attached.contains_key(&transport) {
            return self.session_of(transport).is_none();
        }
        if self.refused.contains_key(&transport) {
            return true;
        }
        self.endpoint.transport_ended(transport)
    }

    /// The connection id of `session`.
    pub fn conn_id(&self, session: SessionId) -> Option<u64> {
        self.connections
            .get(&session)
            .map(|s| s.conn.conn_id())
            .or_else(|| self.endpoint.handshake_conn_id(session))
    }

    /// Whether `session` is still registered (confirmed or not, resumable
    /// or holding unread bytes).
    pub fn has_session(&self, session: SessionId) -> bool {
        self.connections.contains_key(&session) || self.endpoint.is_handshaking(session)
    }

    /// Number of registered sessions (unconfirmed ones, and ended ones whose
    /// bytes were not read yet, included).
    pub fn session_count(&self) -> usize {
        self.connections.len() + self.endpoint.handshake_count()
    }

    /// Take the server out of service ([`Endpoint::drain`]): new sessions
    /// are answered Busy, the existing ones resume and finish as before.
    pub fn drain(&mut self) {
        self.endpoint.drain();
    }

    /// Whether [`Server::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.endpoint.is_draining()
    }

    /// The endpoint's routing counters: resume requests routed to a
    /// session, answered UnknownSession, and of those the ones carrying
    /// another server id ([`Endpoint::resumes_routed`],
    /// [`Endpoint::unknown_session_answers`],
    /// [`Endpoint::misrouted_resumes`]).
    pub fn routing_counters(&self) -> (u64, u64, u64) {
        (
            self.endpoint.resumes_routed(),
            self.endpoint.unknown_session_answers(),
            self.endpoint.misrouted_resumes(),
        )
    }

    /// Number of transports that have not completed a handshake or resume.
    pub fn pending_transports(&self) -> usize {
        self.endpoint.pending_transports()
    }

    /// Bytes of `session` not yet acknowledged by the client.
    pub fn unacked(&self, session: SessionId) -> usize {
        self.connection(session).map_or(0, |c| c.unacked())
    }

    /// Verified bytes of `session` not yet read.
    pub fn readable(&self, session: SessionId) -> usize {
        self.connection(session).map_or(0, |c| c.readable())
    }

    /// Heap bytes held by `session`'s buffers.
    pub fn buffer_memory(&self, session: SessionId) -> usize {
        self.connection(session).map_or(0, |c| c.buffer_memory())
    }
}
