//! The client half of the driver core: the session state both client
//! drivers keep behind their own mutex ([`ClientCore`]: event reduction,
//! statistics, logs, end-of-session rules, the answers of every stream
//! call) and the reconnect policy ([`Reconnect`]). Plain sync code: the
//! drivers add only I/O, threads or tasks, and wake-ups.

use std::net::SocketAddr;
use std::string::String;
use std::time::Duration as StdDuration;
use std::vec::Vec;

use super::events::{self, ProgressFn};
use super::{ClientStats, Progress, SessionError};
use crate::{
    os_rng, AbortCode, Backoff, Client, CloseReason, Config, Error, Event, Instant, OsRng,
    ResumeStatus,
};

/// What a drain of core events changed, for the drivers' wake-ups.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Changes {
    /// The first handshake completed.
    pub(crate) handshake: bool,
    /// The peer half-closed.
    pub(crate) peer_closed: bool,
    /// The session is over.
    pub(crate) closed: bool,
}

/// The answer of a stream call that may have to wait.
pub(crate) enum Step<T> {
    /// Done.
    Ready(T),
    /// Wait for a change of the session, then ask again.
    Wait,
}

/// The client session as both drivers keep it.
pub(crate) struct ClientCore {
    pub(crate) core: Client<OsRng>,
    pub(crate) stats: ClientStats,
    progress: Option<ProgressFn>,
    /// The first handshake completed (the connect call returns).
    pub(crate) handshake_done: bool,
    /// The current transport completed its handshake or resume.
    pub(crate) established: bool,
    /// The last transport was refused as Stale: the core corrected its
    /// estimate of the server clock, try again without waiting.
    pub(crate) retry_now: bool,
    /// The server half-closed.
    pub(crate) peer_closed: bool,
    /// The application (or the drop) aborted the session.
    pub(crate) aborted: bool,
    /// The application half-closed.
    pub(crate) close_requested: bool,
    /// The error the core ended the current transport with, if any.
    pub(crate) last_loss: Option<Error>,
    /// Why the session is over for the application, once it is.
    pub(crate) failure: Option<SessionError>,
    /// The remote address of the current (or last) transport.
    pub(crate) peer: Option<SocketAddr>,
    /// A transport is attached (for the `transport lost` line).
    attached: bool,
    /// When the last established transport was lost (for `detached_ms`).
    detached_at: Option<Instant>,
    /// The options (for the messages of a first connect that fails).
    config: Config,
    /// When authenticated input last arrived.
    contact: events::Contact,
    /// The token the server granted on acceptance.
    pub(crate) token: Option<Vec<u8>>,
    /// The core's clock base offset `stats.clock_offset_us` was computed
    /// from (recomputed only when it changes).
    clock_base: Option<i64>,
}

/// The drivers' builders refuse a credential that cannot be sent (its
/// length is outside its kind's range) before any connection is made:
/// `InvalidInput`, saying which and why (never its bytes).
pub(crate) fn check_credential(config: &Config) -> std::io::Result<()> {
    match &config.credential {
        Some(c) if !c.is_valid() => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            std::format!("relink: {}", c.describe()),
        )),
        _ => Ok(()),
    }
}

impl ClientCore {
    pub(crate) fn new(mut config: Config, progress: Option<ProgressFn>) -> Self {
        // The client stamps its hellos with the wall clock (PROTOCOL.md 3.2).
        if config.wall_clock.is_none() {
            config.wall_clock = Some(alloc::sync::Arc::new(crate::SystemWallClock));
        }
        ClientCore {
            core: Client::new(config.clone(), os_rng()),
            stats: ClientStats::default(),
            progress,
            handshake_done: false,
            established: false,
            retry_now: false,
            peer_closed: false,
            aborted: false,
            close_requested: false,
            last_loss: None,
            failure: None,
            peer: None,
            attached: false,
            detached_at: None,
            config,
            contact: events::Contact::default(),
            token: None,
            clock_base: None,
        }
    }

    /// Refresh `stats.clock_offset_us` when the core's estimate of the
    /// server's clock moved: the estimate at `now` minus the wall clock.
    fn note_clock_offset(&mut self, now: Instant) {
        let base = self.core.server_clock_offset();
        if base == self.clock_base {
            return;
        }
        self.clock_base = base;
        let (Some(server), Some(wall)) = (self.core.server_time(now), &self.config.wall_clock)
        else {
            return;
        };
        let d = i128::from(server.as_micros()) - i128::from(wall.now().as_micros());
        self.stats.clock_offset_us =
            Some(d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64);
    }

    /// The session exists and data may flow (a server that decides on
    /// clients accepted this one): the connect call returns.
    pub(crate) fn ready(&self) -> bool {
        self.handshake_done && self.core.is_accepted()
    }

    pub(crate) fn report(&self, p: Progress) {
        if let Some(f) = &self.progress {
            f(&p);
        }
    }

    /// Whether a session exists (the first handshake completed).
    pub(crate) fn has_session(&self) -> bool {
        self.handshake_done || self.core.conn_id().is_some()
    }

    /// Drain core events into counters, flags, logs and the progress
    /// callback; once the session ended other than cleanly, `failure`.
    pub(crate) fn drain(&mut self, now: Instant) -> Changes {
        let mut ch = Changes::default();
        let mut resumed = false;
        let mut resent = 0u64;
        self.contact
            .note(self.core.timers().get(crate::timer::Timer::Idle));
        while let Some(e) = self.core.poll_event() {
            self.stats.count(&e);
            match e {
                Event::HandshakeDone { conn_id } => {
                    self.handshake_done = true;
                    self.established = true;
                    ch.handshake = self.core.is_accepted();
                    events::log_established(conn_id, self.peer, "client");
                }
                Event::Accepted { token } => {
                    if token {
                        self.token = self.core.take_token();
                    }
                    ch.handshake = true;
                    if let Some(id) = self.core.conn_id() {
                        events::log_accepted(id, self.peer, token);
                    }
                }
                Event::Resumed { .. } => {
                    self.established = true;
                    resumed = true;
                }
                Event::ResendRange { start, end } => resent += end.saturating_sub(start),
                Event::TransportLost { error } => {
                    self.last_loss = error;
                    if matches!(
                        error,
                        Some(Error::ResumeRejected(ResumeStatus::Stale))
                            | Some(Error::HandshakeRejected(crate::HandshakeStatus::Stale))
                    ) {
                        self.retry_now = true;
                    }
                    self.log_lost(now, error.as_ref(), "ended by the relink core");
                }
                Event::PeerClosed => {
                    self.peer_closed = true;
                    ch.peer_closed = true;
                }
                Event::Closed { reason } => {
                    ch.closed = true;
                    events::log_ended(self.core.conn_id(), &reason);
                }
                _ => {}
            }
            self.report(Progress::Client(e));
        }
        self.note_clock_offset(now);
        if resumed {
            let detached = self
                .detached_at
                .take()
                .map_or(0, |t| now.saturating_since(t).as_micros() / 1000);
            if let Some(id) = self.core.conn_id() {
                events::log_resumed(id, self.peer, detached, resent);
            }
        }
        if self.failure.is_none() {
            if let Some(reason) = self
                .core
                .close_reason()
                .filter(|r| *r != CloseReason::Clean)
            {
                self.failure = Some(match reason {
                    CloseReason::Rejected { code } => SessionError::Rejected {
                        code,
                        message: super::error::rejected_message(
                            self.peer,
                            code,
                            self.config.credential.as_ref(),
                        ),
                    },
                    _ => self.no_session(reason).unwrap_or(SessionError::Ended {
                        reason,
                        in_doubt: self.core.in_doubt(),
                    }),
                });
                ch.closed = true;
            }
        }
        ch
    }

    /// The core ended the session with `reason` before it existed (e.g. the
    /// server rejected the first handshake): a failed connect naming the
    /// server, not a session that ended (nothing was delivered, nothing to
    /// acknowledge).
    fn no_session(&self, reason: CloseReason) -> Option<SessionError> {
        let CloseReason::Error(e) = reason else {
            return None;
        };
        if self.has_session() {
            return None;
        }
        let (kind, message, cause) =
            super::reconnect::first_transport_failure(self.peer, Some(e), &self.config)?;
        Some(SessionError::Connect {
            kind,
            message,
            cause,
        })
    }

    /// Time since authenticated input from the server last arrived (as of
    /// the last drain); `None` before the first.
    pub(crate) fn last_received(&self) -> Option<StdDuration> {
        self.contact.since()
    }

    /// Log the loss of the attached transport once, if a session exists.
    fn log_lost(&mut self, now: Instant, error: Option<&Error>, why: &str) {
        if !core::mem::take(&mut self.attached) {
            return;
        }
        if self.established {
            self.detached_at = Some(now);
        }
        if let Some(id) = self.core.conn_id() {
            events::log_lost(id, self.peer, &events::CauseDisplay(error, why));
        }
    }

    /// A new transport to `peer` is open: hand it to the core. `Err` ends
    /// the session (the core closed it meanwhile).
    pub(crate) fn new_transport(
        &mut self,
        now: Instant,
        peer: Option<SocketAddr>,
    ) -> Result<(), SessionError> {
        self.peer = peer.or(self.peer);
        if let Err(e) = self.core.new_transport(now) {
            self.drain(now);
            let reason = self.core.close_reason().unwrap_or(CloseReason::Error(e));
            let in_doubt = self.core.in_doubt();
            let f = self
                .failure
                .get_or_insert(SessionError::Ended { reason, in_doubt });
            return Err(f.clone());
        }
        self.drain(now);
        self.stats.transports += 1;
        self.established = false;
        self.last_loss = None;
        self.attached = true;
        Ok(())
    }

    /// The driver lost the transport (I/O error, EOF, or the core ended
    /// it): tell the core, count and log it.
    pub(crate) fn transport_lost(&mut self, now: Instant, why: &str) {
        if !self.core.is_closed() {
            if self.attached && !self.core.transport_ended() {
                self.stats.lost_io += 1;
            }
            self.log_lost(now, None, why);
            self.core.transport_lost(now);
        }
        self.attached = false;
        self.drain(now);
    }

    /// Run due timers (also while detached: the core ends the session once
    /// the server can no longer hold it). Returns whether the session is
    /// over.
    pub(crate) fn tick(&mut self, now: Instant) -> bool {
        if self.core.poll_timeout().is_some_and(|d| d <= now) {
            self.core.handle_timeout(now);
            self.drain(now);
        }
        self.core.is_closed() || self.failure.is_some()
    }

    // ----- stream calls -----------------------------------------------------

    /// `read`: bytes, `Ok(0)` at the peer's end, or wait. `stopped`: the
    /// driver is gone (nothing will arrive any more).
    pub(crate) fn read(
        &mut self,
        out: &mut [u8],
        stopped: bool,
    ) -> Step<Result<usize, SessionError>> {
        match self.core.recv(out) {
            Ok(n) => {
                self.stats.bytes_received += n as u64;
                Step::Ready(Ok(n))
            }
            Err(Error::WouldBlock) => match &self.failure {
                Some(f) => Step::Ready(Err(f.clone())),
                None if stopped => Step::Ready(Err(SessionError::Shutdown)),
                None => Step::Wait,
            },
            Err(e) => Step::Ready(Err(self.failure.clone().unwrap_or(SessionError::Call(e)))),
        }
    }

    /// `write`: bytes accepted, or wait (back-pressure at
    /// `Config::send_buffer` unacknowledged bytes).
    pub(crate) fn write(
        &mut self,
        data: &[u8],
        stopped: bool,
    ) -> Step<Result<usize, SessionError>> {
        if let Some(f) = &self.failure {
            return Step::Ready(Err(f.clone()));
        }
        match self.core.send(data) {
            Ok(0) if !data.is_empty() => {
                if stopped {
                    Step::Ready(Err(SessionError::Shutdown))
                } else {
                    Step::Wait
                }
            }
            Ok(n) => {
                self.stats.bytes_sent += n as u64;
                Step::Ready(Ok(n))
            }
            Err(e) => Step::Ready(Err(self.failure.clone().unwrap_or(SessionError::Call(e)))),
        }
    }

    /// `flush`: done once every byte written so far was acknowledged.
    pub(crate) fn flush(&self, stopped: bool) -> Step<Result<(), SessionError>> {
        if self.core.unacked() == 0 {
            return Step::Ready(Ok(()));
        }
        match &self.failure {
            Some(f) => Step::Ready(Err(f.clone())),
            None if stopped => Step::Ready(Err(SessionError::Shutdown)),
            None => Step::Wait,
        }
    }

    /// Start the half-close (a CLOSE frame follows the last byte). Once.
    pub(crate) fn start_shutdown(&mut self) -> Result<(), SessionError> {
        if let Some(f) = &self.failure {
            return Err(f.clone());
        }
        if !self.close_requested {
            self.close_requested = true;
            self.core.close();
        }
        Ok(())
    }

    /// `shutdown`: done once our CLOSE was acknowledged by the peer.
    pub(crate) fn shutdown(&self, stopped: bool) -> Step<Result<(), SessionError>> {
        if self.core.close_acked() {
            return Step::Ready(Ok(()));
        }
        match &self.failure {
            Some(f) => Step::Ready(Err(f.clone())),
            None if stopped => Step::Ready(Err(SessionError::Shutdown)),
            None => Step::Wait,
        }
    }

    /// `close` (after [`ClientCore::start_shutdown`]): discard unread input;
    /// done once the session ended cleanly and `flushed` (the driver wrote
    /// the last frames it owed the peer).
    pub(crate) fn close(&mut self, flushed: bool, stopped: bool) -> Step<Result<(), SessionError>> {
        let mut scratch = [0u8; 4096];
        while matches!(self.core.recv(&mut scratch), Ok(n) if n > 0) {}
        if flushed && self.core.close_reason() == Some(CloseReason::Clean) {
            return Step::Ready(Ok(()));
        }
        match &self.failure {
            Some(f) => Step::Ready(Err(f.clone())),
            None if stopped => Step::Ready(Err(SessionError::Shutdown)),
            None => Step::Wait,
        }
    }

    /// `abort(code)`: once, while the session lives.
    pub(crate) fn abort(&mut self, code: AbortCode, now: Instant) {
        if !self.aborted && !self.core.is_closed() {
            self.aborted = true;
            self.core.abort(code);
            self.drain(now);
        }
    }

    /// The stream is dropped: abort with [`AbortCode::DROPPED`] unless the
    /// session is over or on its way to a clean end (both sides
    /// half-closed). Returns whether the driver must keep running until
    /// the peer acknowledged.
    pub(crate) fn on_drop(&mut self, now: Instant) -> bool {
        if self.core.is_closed() || self.failure.is_some() {
            return false;
        }
        let finishing = self.close_requested && self.peer_closed;
        if !finishing {
            self.abort(AbortCode::DROPPED, now);
        }
        !self.core.is_closed()
    }
}

/// The client's reconnect policy: attempt counting, backoff, the Stale
/// retry, `wait_for_server` and the classification of a failed first
/// connect. The driver asks it before and after every attempt.
pub(crate) struct Reconnect {
    backoff: Backoff,
    wait_for_server: bool,
    config: Config,
    rng: OsRng,
    pub(crate) attempt: u32,
    last_error: String,
    immediate_retry: bool,
}

impl Reconnect {
    pub(crate) fn new(backoff: Backoff, wait_for_server: bool, config: Config) -> Self {
        Reconnect {
            backoff,
            wait_for_server,
            config,
            rng: os_rng(),
            attempt: 0,
            last_error: String::from("none"),
            immediate_retry: false,
        }
    }

    /// How long to wait before the next attempt, or the error that ends the
    /// session (the backoff gave up before a session existed).
    pub(crate) fn next_delay(&mut self, c: &mut ClientCore) -> Result<StdDuration, SessionError> {
        // Before a session exists the backoff's attempt limit applies; once
        // there is one, only the core ends it (its give-up deadline, from the
        // server's advertised resume timeout, is part of `poll_timeout`).
        let policy = self.backoff.with_session(c.has_session());
        let retry_now = core::mem::take(&mut c.retry_now);
        let Some(delay) = policy.delay(self.attempt, &mut self.rng) else {
            let e = SessionError::GaveUp {
                attempts: self.attempt,
                last_error: self.last_error.clone(),
            };
            return Err(c.failure.get_or_insert(e).clone());
        };
        // A Stale refusal corrected the clock estimate: retry at once, but
        // only once in a row (a server that keeps answering Stale gets the
        // ordinary backoff).
        Ok(if retry_now && !self.immediate_retry {
            self.immediate_retry = true;
            StdDuration::ZERO
        } else {
            self.immediate_retry = false;
            delay.into()
        })
    }

    /// Opening a transport failed with `e`. `Err`: the first connect fails
    /// for good (no session yet, not waiting for the server).
    pub(crate) fn connect_failed(
        &mut self,
        c: &mut ClientCore,
        e: &std::io::Error,
        now: Instant,
    ) -> Result<(), SessionError> {
        c.stats.connect_failures += 1;
        if !c.has_session() && !self.wait_for_server {
            return Err(c
                .failure
                .get_or_insert(SessionError::first_connect(e))
                .clone());
        }
        // Past the give-up deadline this ends the session.
        c.core.connect_failed(now);
        c.drain(now);
        self.last_error = std::string::ToString::to_string(e);
        c.report(Progress::ConnectFailed {
            attempt: self.attempt,
            error: self.last_error.clone(),
        });
        self.attempt += 1;
        Ok(())
    }

    /// A transport ended (after [`ClientCore::transport_lost`]), `why` in
    /// words. `Err`: the first connect fails for good (a wrong pinned key
    /// always; the rest unless waiting for the server), naming the peer.
    pub(crate) fn transport_ended(
        &mut self,
        c: &mut ClientCore,
        why: &str,
    ) -> Result<(), SessionError> {
        if !c.established && c.core.conn_id().is_none() && !c.core.is_closed() {
            let first =
                super::reconnect::first_transport_failure(c.peer, c.last_loss, &self.config);
            if let Some((kind, message, cause)) = first {
                if !self.wait_for_server || cause == Some(Error::ServerKeyMismatch) {
                    let e = SessionError::Connect {
                        kind,
                        message,
                        cause,
                    };
                    return Err(c.failure.get_or_insert(e).clone());
                }
            }
        }
        if c.established {
            self.attempt = 0;
        } else {
            self.attempt += 1;
            self.last_error = if c.core.conn_id().is_none() && c.last_loss.is_none() {
                super::reconnect::unanswered_text(c.peer)
            } else {
                String::from(why)
            };
        }
        c.established = false;
        Ok(())
    }
}
