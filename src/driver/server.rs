//! The server half of the driver core: what both server drivers keep about
//! one session next to its [`crate::Connection`] ([`SessionSlot`]: event
//! reduction, statistics, logs, end-of-session rules, the answers of the
//! stream calls). Plain sync state behind each driver's session lock.

use std::net::SocketAddr;

use super::auth::{self, AuthFn};
use super::events::{self, ProgressFn, ServerCounters};
use super::{Progress, SessionError};
use crate::{AbortCode, CloseReason, Connection, Error, Instant, ServerEvent, TransportId};

/// What a drain of a session's events changed, for the drivers.
#[derive(Default)]
pub(crate) struct SlotChanges {
    /// The session was just established: queue it for `accept`.
    pub(crate) accept: bool,
    /// Transports the core ended (their writers flush and close them).
    pub(crate) close_transports: std::vec::Vec<TransportId>,
    /// Something the application may wait for changed (input, end).
    pub(crate) changed: bool,
}

/// The driver's data about one server session.
#[derive(Default)]
pub(crate) struct SessionSlot {
    /// How it ended, once it has (`Expired` for an expiry).
    pub(crate) end: Option<CloseReason>,
    /// The session waits for the application's decision on its client
    /// (`client_auth`): not yet handed to `accept`.
    pub(crate) awaiting_auth: bool,
    /// Remote address of the transport that last carried it.
    pub(crate) peer: Option<SocketAddr>,
    /// The application half-closed.
    pub(crate) close_requested: bool,
    /// The client half-closed.
    pub(crate) peer_closed: bool,
    /// The application (or the drop) aborted it.
    pub(crate) aborted: Option<AbortCode>,
    /// The application dropped its stream: discard unread input.
    pub(crate) dropped: bool,
    /// The transport that carries the session now, if any.
    current: Option<TransportId>,
    /// When its last transport was lost (for `detached_ms`).
    detached_at: Option<Instant>,
    /// When authenticated input last arrived.
    contact: events::Contact,
}

impl SessionSlot {
    /// A new session first carried by a transport from `peer`.
    pub(crate) fn new(peer: Option<SocketAddr>) -> Self {
        SessionSlot {
            peer,
            ..SessionSlot::default()
        }
    }

    /// Drain the connection's events: counters, flags, logs, the progress
    /// callback. `peer_of` names a transport's remote address.
    pub(crate) fn drain(
        &mut self,
        conn: &mut Connection,
        now: Instant,
        stats: &ServerCounters,
        progress: Option<&ProgressFn>,
        authenticate: Option<&AuthFn>,
        peer_of: impl Fn(TransportId) -> Option<SocketAddr>,
    ) -> SlotChanges {
        let mut ch = SlotChanges::default();
        let conn_id = conn.conn_id();
        let mut resumed = false;
        let mut resent = 0u64;
        self.contact.note(conn.timer(crate::timer::Timer::Idle));
        if self.dropped && !conn.is_routable() && conn.readable() > 0 {
            // Nobody can read these bytes any more.
            let mut scratch = [0u8; 4096];
            while matches!(conn.recv(&mut scratch), Ok(n) if n > 0) {}
        }
        while let Some(e) = conn.poll_event() {
            stats.count(&e);
            ch.changed = true;
            match e {
                ServerEvent::HandshakeDone { transport, .. } => {
                    // The session's own generator draws its rekey keys:
                    // mix OS entropy in at its start (PROTOCOL.md 4.7).
                    add_os_entropy(conn);
                    self.peer = peer_of(transport).or(self.peer);
                    self.current = Some(transport);
                    // A gated session is handed out once accepted.
                    self.awaiting_auth = !conn.is_accepted();
                    ch.accept = !self.awaiting_auth;
                    events::log_established(conn_id, self.peer, "server");
                }
                ServerEvent::ClientAuth { .. } => {
                    let accepted = match authenticate {
                        Some(f) => auth::decide(conn, f),
                        // No callback (client_auth set in the Config by
                        // hand): nobody can decide, refuse.
                        None => {
                            conn.reject_client(AbortCode::CREDENTIAL_REJECTED);
                            false
                        }
                    };
                    if accepted && std::mem::take(&mut self.awaiting_auth) {
                        ch.accept = true;
                    } else if !accepted {
                        // Never handed out: nobody reads it; the core answers
                        // the client and frees the session.
                        self.dropped = true;
                    }
                }
                ServerEvent::Resumed { transport, .. } => {
                    // The client's new transport took over before this side
                    // noticed the old one broke: that loss is logged here,
                    // with the old peer (the driver's own report of the old
                    // transport comes after and finds it no longer current).
                    if let Some(old) = self.current.filter(|&o| o != transport) {
                        self.lost(
                            conn_id,
                            old,
                            now,
                            None,
                            "replaced by a new transport of the client",
                        );
                    }
                    self.peer = peer_of(transport).or(self.peer);
                    self.current = Some(transport);
                    resumed = true;
                }
                ServerEvent::ResendRange { start, end, .. } => resent += end.saturating_sub(start),
                ServerEvent::CloseTransport { transport, error } => {
                    ch.close_transports.push(transport);
                    if error.is_some() {
                        self.lost(conn_id, transport, now, error.as_ref(), "");
                    }
                }
                ServerEvent::PeerClosed { .. } => self.peer_closed = true,
                // ... and after every rekey, so that a memory read of the
                // session is healed by the next one (PROTOCOL.md 9).
                ServerEvent::Rekeyed { .. } => add_os_entropy(conn),
                ServerEvent::Closed { reason, .. } => {
                    self.end.get_or_insert(reason);
                    events::log_ended(Some(conn_id), &reason);
                }
                ServerEvent::SessionExpired { .. } => {
                    self.end.get_or_insert(CloseReason::Expired);
                    events::log_ended(Some(conn_id), &CloseReason::Expired);
                }
                _ => {}
            }
            if let Some(f) = progress {
                f(&Progress::Server(e));
            }
        }
        if resumed {
            let detached = self
                .detached_at
                .take()
                .map_or(0, |t| now.saturating_since(t).as_micros() / 1000);
            events::log_resumed(conn_id, self.peer, detached, resent);
        }
        ch
    }

    /// Whether a drain may stop waiting for the session (see
    /// `Listener::active_session_count`): the application read every byte
    /// the session received, and it is over or freed, or both
    /// sides closed it and no transport carries it: the client's CLOSE
    /// was verified and read, our CLOSE was requested. Such a session can
    /// make no more progress unless its client comes back: a client that
    /// has everything (it verified our CLOSE, its own was acknowledged)
    /// never does, even when its last ACK was cut and part of what we
    /// wrote is still unacknowledged here ([`Self::unconfirmed`]); a
    /// client that misses something resumes at once, which attaches a
    /// transport and makes the session active again.
    pub(crate) fn settled(&self, conn: Option<&Connection>) -> bool {
        let Some(c) = conn else {
            return true;
        };
        if c.transport().is_some() {
            return false;
        }
        // Bytes the session verified (and acknowledged: its client was
        // told they arrived) that the application has not read yet hold
        // the drain, whether the session ended or not: exiting now would
        // lose them. (Once the application dropped its stream nobody will
        // read them.)
        (c.readable() == 0 || self.dropped)
            && (self.end.is_some()
                || (self.aborted.is_none() && self.peer_closed && self.close_requested))
    }

    /// Of the [`Self::settled`] sessions, one closed both ways whose
    /// client has not acknowledged everything we wrote (a cut took its
    /// last ACK, or it is about to resume): the bytes we cannot confirm,
    /// and our CLOSE. `None` when there is nothing unconfirmed.
    pub(crate) fn unconfirmed(&self, conn: Option<&Connection>) -> Option<usize> {
        let c = conn?;
        (self.end.is_none() && self.settled(conn) && !c.close_acked()).then(|| c.unacked())
    }

    /// Time since authenticated input from the client last arrived (as of
    /// the last drain); `None` before the first.
    pub(crate) fn last_received(&self) -> Option<std::time::Duration> {
        self.contact.since()
    }

    /// The transport `tid` of the session is gone (`why`, or the core's
    /// `error`): log it once if it carried the session.
    pub(crate) fn lost(
        &mut self,
        conn_id: u64,
        tid: TransportId,
        now: Instant,
        error: Option<&Error>,
        why: &str,
    ) {
        if self.current != Some(tid) || self.end.is_some() {
            return;
        }
        self.current = None;
        self.detached_at = Some(now);
        events::log_lost(conn_id, self.peer, &events::CauseDisplay(error, why));
    }

    /// The error every call reports once the session is over other than
    /// cleanly (or the listener stopped).
    pub(crate) fn error(&self, stopped: bool) -> Option<SessionError> {
        match self.end {
            Some(CloseReason::Clean) => None,
            Some(CloseReason::Expired) => Some(SessionError::Expired),
            Some(r) => Some(SessionError::Closed(r)),
            None if stopped => Some(SessionError::Shutdown),
            None => self.aborted.map(|code| {
                SessionError::Closed(CloseReason::Aborted {
                    code,
                    by_peer: false,
                })
            }),
        }
    }

    /// `abort(code)`: once, while the session lives. Whether this call
    /// aborted it.
    pub(crate) fn abort(&mut self, conn: Option<&mut Connection>, code: AbortCode) -> bool {
        if self.end.is_none() && self.aborted.is_none() {
            self.aborted = Some(code);
            if let Some(c) = conn {
                c.abort(code);
            }
            return true;
        }
        false
    }

    /// The stream is dropped: abort with [`AbortCode::DROPPED`] unless the
    /// session is over or on its way to a clean end (both sides
    /// half-closed); unread input is discarded from now on.
    pub(crate) fn on_drop(&mut self, conn: Option<&mut Connection>) {
        self.dropped = true;
        let finishing = self.close_requested && self.peer_closed;
        if conn.is_some() && !finishing {
            self.abort(conn, AbortCode::DROPPED);
        }
    }

    /// Start the half-close (a CLOSE frame follows the last byte). Once.
    pub(crate) fn start_shutdown(
        &mut self,
        conn: Option<&mut Connection>,
        stopped: bool,
    ) -> Result<(), SessionError> {
        if let Some(e) = self.error(stopped) {
            return Err(e);
        }
        if !self.close_requested {
            self.close_requested = true;
            // Without a connection it already ended cleanly and was freed.
            if let Some(c) = conn {
                c.close();
            }
        }
        Ok(())
    }

    /// `read` on the connection (`None`: drained, freed).
    pub(crate) fn read(
        &self,
        conn: Option<&mut Connection>,
        out: &mut [u8],
        stopped: bool,
    ) -> super::Step<Result<usize, SessionError>> {
        use super::Step;
        if stopped {
            return Step::Ready(Err(SessionError::Shutdown));
        }
        let r = match conn {
            Some(c) => c.recv(out),
            None => Err(Error::UnknownSession),
        };
        match r {
            Ok(n) => Step::Ready(Ok(n)),
            Err(Error::WouldBlock) => match self.error(stopped) {
                Some(e) => Step::Ready(Err(e)),
                None => Step::Wait,
            },
            // A cleanly ended session is freed once everything was read.
            Err(Error::UnknownSession) if self.end == Some(CloseReason::Clean) => {
                Step::Ready(Ok(0))
            }
            Err(e) => Step::Ready(Err(self.error(stopped).unwrap_or(SessionError::Call(e)))),
        }
    }

    /// `write`: bytes accepted, or wait (back-pressure).
    pub(crate) fn write(
        &self,
        conn: Option<&mut Connection>,
        data: &[u8],
        stopped: bool,
    ) -> super::Step<Result<usize, SessionError>> {
        use super::Step;
        if let Some(e) = self.error(stopped) {
            return Step::Ready(Err(e));
        }
        let r = match conn {
            Some(c) => c.send(data),
            None => Err(Error::Closed),
        };
        match r {
            Ok(0) if !data.is_empty() => Step::Wait,
            Ok(n) => Step::Ready(Ok(n)),
            Err(e) => Step::Ready(Err(self.error(stopped).unwrap_or(SessionError::Call(e)))),
        }
    }

    /// `flush`: done once every byte written was acknowledged.
    pub(crate) fn flush(
        &self,
        conn: Option<&Connection>,
        stopped: bool,
    ) -> super::Step<Result<(), SessionError>> {
        use super::Step;
        if conn.is_none_or(|c| c.unacked() == 0) {
            return Step::Ready(Ok(()));
        }
        match self.error(stopped) {
            Some(e) => Step::Ready(Err(e)),
            None => Step::Wait,
        }
    }

    /// `shutdown` (after [`SessionSlot::start_shutdown`]): done once our
    /// CLOSE was acknowledged.
    pub(crate) fn shutdown(
        &self,
        conn: Option<&Connection>,
        stopped: bool,
    ) -> super::Step<Result<(), SessionError>> {
        use super::Step;
        let acked = match conn {
            Some(c) => c.close_acked(),
            None => self.end == Some(CloseReason::Clean),
        };
        if acked || self.end == Some(CloseReason::Clean) {
            return Step::Ready(Ok(()));
        }
        match self.error(stopped) {
            Some(e) => Step::Ready(Err(e)),
            None => Step::Wait,
        }
    }

    /// `close` (after [`SessionSlot::start_shutdown`]): discard unread
    /// input; done once the session ended cleanly.
    pub(crate) fn close(
        &self,
        conn: Option<&mut Connection>,
        stopped: bool,
    ) -> super::Step<Result<(), SessionError>> {
        use super::Step;
        if let Some(c) = conn {
            let mut scratch = [0u8; 4096];
            while matches!(c.recv(&mut scratch), Ok(n) if n > 0) {}
        }
        if self.end == Some(CloseReason::Clean) {
            return Step::Ready(Ok(()));
        }
        match self.error(stopped) {
            Some(e) => Step::Ready(Err(e)),
            None => Step::Wait,
        }
    }
}

/// Mix 32 bytes of OS randomness into a connection's generator.
fn add_os_entropy(conn: &mut Connection) {
    fn fill<R: rand_core::CryptoRng>(rng: &mut R, out: &mut [u8; 32]) {
        rng.fill_bytes(out);
    }
    let mut e = [0u8; 32];
    fill(&mut crate::os_rng(), &mut e);
    conn.add_entropy(&e);
    zeroize::Zeroize::zeroize(&mut e);
}
