//! Timers of one session, on either side: one enum of timer kinds and a
//! fixed table of deadlines (the shape of quinn-proto's
//! `connection/timer.rs`). A server [`Connection`](crate::Connection) keeps
//! its table up to date after every call; the [`Client`](crate::Client)
//! reads its table off its state ([`Client::timers`](crate::Client::timers)).
//!
//! The table holds at most one deadline per kind, so a connection's
//! `poll_timeout` is the minimum of [`Timer::COUNT`] entries, O(1) in the
//! number of connections. The endpoint-wide index of deadlines (which
//! connection is due next) lives in [`crate::Server`] and in the drivers.

use crate::time::Instant;

/// The kinds of timer a connection runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// A pending acknowledgement must go out (`Config::ack_delay`).
    Ack,
    /// Nothing was sent for `Config::keepalive_interval`: send a PING.
    Keepalive,
    /// Nothing arrived for `Config::idle_timeout`: the transport is dead.
    Idle,
    /// This side's ABORT was not answered within `Config::idle_timeout`.
    AbortAnswer,
    /// Server: the connection waited `Config::resume_timeout` without
    /// transport.
    Expiry,
    /// Client: the handshake or resume on the current transport must
    /// complete by now (`Config::handshake_timeout`). (The endpoint keeps
    /// the same deadline for its pending transports in its index.)
    Handshake,
    /// Client: the session is given up after this instant once one more
    /// attempt fails (`Client::give_up_at`, PROTOCOL.md 7.6).
    GiveUp,
    /// Server, `Config::client_auth`: the client's CREDENTIAL must verify
    /// within `Config::handshake_timeout` of attached time after the
    /// session was confirmed, else the session is aborted with
    /// `CREDENTIAL_REJECTED` (PROTOCOL.md 6.9).
    Credential,
    /// A rekey is due by this side's time policy
    /// (`Config::rekey_after_time`, `Config::key_lifetime`).
    Rekey,
    /// The grace after a hard key limit ends: without a completed rekey
    /// the session is aborted with `KEY_EXPIRED` (`Config::rekey_grace`,
    /// counted in attached time).
    KeyExpiry,
}

impl Timer {
    /// Number of timer kinds.
    pub const COUNT: usize = 10;
    /// Every kind, in table order.
    pub const ALL: [Timer; Timer::COUNT] = [
        Timer::Ack,
        Timer::Keepalive,
        Timer::Idle,
        Timer::AbortAnswer,
        Timer::Expiry,
        Timer::Handshake,
        Timer::GiveUp,
        Timer::Credential,
        Timer::Rekey,
        Timer::KeyExpiry,
    ];
}

/// One optional deadline per [`Timer`]. `Instant(u64::MAX)` marks an unset
/// entry, which keeps the table at 8 bytes per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerTable([Instant; Timer::COUNT]);

const UNSET: Instant = Instant(u64::MAX);

impl Default for TimerTable {
    fn default() -> Self {
        TimerTable([UNSET; Timer::COUNT])
    }
}

impl TimerTable {
    /// Set (`Some`) or clear (`None`) the deadline of `timer`.
    pub fn set(&mut self, timer: Timer, at: Option<Instant>) {
        self.0[timer as usize] = at.unwrap_or(UNSET);
    }

    /// The deadline of `timer`, if set.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        let at = self.0[timer as usize];
        (at != UNSET).then_some(at)
    }

    /// Whether `timer` is set and due at `now`.
    pub fn is_due(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|at| at <= now)
    }

    /// The earliest deadline of all kinds.
    pub fn next(&self) -> Option<Instant> {
        let at = self.0.iter().copied().min().unwrap_or(UNSET);
        (at != UNSET).then_some(at)
    }

    /// Clear every deadline.
    pub fn clear(&mut self) {
        *self = TimerTable::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// `next` is the minimum of the set entries, and `is_due` agrees
        /// with `get`.
        #[test]
        fn next_is_the_minimum(entries in proptest::collection::vec(proptest::option::of(0u64..1_000_000), Timer::COUNT), now in 0u64..1_000_000) {
            let mut t = TimerTable::default();
            for (k, e) in Timer::ALL.iter().zip(&entries) {
                t.set(*k, e.map(Instant));
            }
            let want = entries.iter().flatten().min().copied().map(Instant);
            prop_assert_eq!(t.next(), want);
            for (k, e) in Timer::ALL.iter().zip(&entries) {
                prop_assert_eq!(t.get(*k), e.map(Instant));
                prop_assert_eq!(t.is_due(*k, Instant(now)), e.is_some_and(|x| x <= now));
            }
            t.clear();
            prop_assert_eq!(t.next(), None);
        }
    }
}
