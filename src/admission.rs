//! Admission control of the server endpoint (PROTOCOL.md 3.7): what keeps
//! one source, or a flood of bogus hellos, from locking honest clients out.
//!
//! - [`Sources`] counts, per source, the transports that have not finished
//!   their handshake or resume and the unconfirmed sessions (ServerHello
//!   sent, ClientConfirm not yet verified). `Config::max_handshakes_per_source`
//!   bounds both. A source is an IPv4 address or an IPv6 /64 prefix (one
//!   host usually holds a whole /64); IPv4-mapped IPv6 addresses count as
//!   IPv4. Entries exist only while a count is non-zero, so the table is
//!   bounded by `max_pending_transports + max_sessions`.
//! - [`CookieKeys`] makes and checks the stateless cookie that a server
//!   under load (`Config::cookie_threshold`) asks for before it does any
//!   Diffie-Hellman: `cookie = MAC16(cookie_key(period), address ‖
//!   client_ephemeral)`, where `cookie_key(period) = derive_key("relink v2
//!   2026-12 cookie key", base ‖ LE64(period))`, `period` counts
//!   [`COOKIE_PERIOD`]s of the endpoint's monotonic clock, and `base` is 32
//!   random bytes drawn when the endpoint is created. A cookie is accepted
//!   in its period and the next, so it lives one to two periods; the
//!   endpoint keeps nothing per cookie. The construction is the server's
//!   own business (the client echoes the bytes): PROTOCOL.md documents it
//!   for review, not for interoperability.

use alloc::collections::BTreeMap;
use core::net::IpAddr;

use crate::keys::{context::COOKIE_KEY, tags_equal, Secret};
use crate::time::{Duration, Instant};
use crate::wire::COOKIE_LEN;

/// How long one cookie secret is current; a cookie is accepted during its
/// period and the next (PROTOCOL.md 3.7).
pub const COOKIE_PERIOD: Duration = Duration::from_secs(120);

/// The 16-byte form of a peer address: IPv6, with IPv4 as IPv4-mapped
/// (`::ffff:a.b.c.d`). All zero when the driver did not say.
pub(crate) fn address_bytes(addr: Option<IpAddr>) -> [u8; 16] {
    match addr.map(|a| a.to_canonical()) {
        Some(IpAddr::V4(v4)) => v4.to_ipv6_mapped().octets(),
        Some(IpAddr::V6(v6)) => v6.octets(),
        None => [0; 16],
    }
}

/// The source a peer address counts against: the IPv4 address, or the
/// IPv6 /64 prefix (PROTOCOL.md 3.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SourceKey([u8; 16]);

impl SourceKey {
    pub(crate) fn of(addr: IpAddr) -> SourceKey {
        let mut b = address_bytes(Some(addr));
        if !matches!(addr.to_canonical(), IpAddr::V4(_)) {
            b[8..].fill(0);
        }
        SourceKey(b)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    transports: u32,
    unconfirmed: u32,
}

/// Handshakes in progress per source (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Sources {
    map: BTreeMap<SourceKey, Counts>,
}

impl Sources {
    /// Transports of `key` not yet past their handshake or resume.
    pub(crate) fn transports(&self, key: SourceKey) -> usize {
        self.map.get(&key).map_or(0, |c| c.transports as usize)
    }

    /// Unconfirmed sessions whose hello came from `key`.
    pub(crate) fn unconfirmed(&self, key: SourceKey) -> usize {
        self.map.get(&key).map_or(0, |c| c.unconfirmed as usize)
    }

    /// Sources with something in progress.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn add_transport(&mut self, key: Option<SourceKey>) {
        if let Some(k) = key {
            let c = self.map.entry(k).or_default();
            c.transports = c.transports.saturating_add(1);
        }
    }

    pub(crate) fn remove_transport(&mut self, key: Option<SourceKey>) {
        self.change(key, |c| c.transports = c.transports.saturating_sub(1));
    }

    pub(crate) fn add_unconfirmed(&mut self, key: Option<SourceKey>) {
        if let Some(k) = key {
            let c = self.map.entry(k).or_default();
            c.unconfirmed = c.unconfirmed.saturating_add(1);
        }
    }

    pub(crate) fn remove_unconfirmed(&mut self, key: Option<SourceKey>) {
        self.change(key, |c| c.unconfirmed = c.unconfirmed.saturating_sub(1));
    }

    fn change(&mut self, key: Option<SourceKey>, f: impl FnOnce(&mut Counts)) {
        let Some(k) = key else { return };
        if let Some(c) = self.map.get_mut(&k) {
            f(c);
            if c.transports == 0 && c.unconfirmed == 0 {
                self.map.remove(&k);
            }
        }
    }
}

/// The cookie keys of an endpoint (see the module docs). The base secret
/// and the cached period keys are zeroized on drop.
pub(crate) struct CookieKeys {
    base: Secret,
    /// The period whose key is `current`, and `previous` = period − 1.
    period: u64,
    current: Secret,
    previous: Secret,
}

impl core::fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CookieKeys")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl CookieKeys {
    pub(crate) fn new(base: [u8; 32]) -> CookieKeys {
        let base = Secret(base);
        CookieKeys {
            current: Self::key(&base, 0),
            previous: Self::key(&base, u64::MAX),
            base,
            period: 0,
        }
    }

    fn key(base: &Secret, period: u64) -> Secret {
        Secret::derive(COOKIE_KEY, &[&base.0, &period.to_le_bytes()])
    }

    /// Bring the cached keys to the period of `now` (at most two
    /// derivations; nothing when the period did not change).
    fn advance(&mut self, now: Instant) {
        let p = now.as_micros() / COOKIE_PERIOD.as_micros();
        if p == self.period {
            return;
        }
        if p == self.period.wrapping_add(1) {
            self.previous = core::mem::replace(&mut self.current, Self::key(&self.base, p));
        } else {
            self.current = Self::key(&self.base, p);
            self.previous = Self::key(&self.base, p.wrapping_sub(1));
        }
        self.period = p;
    }

    /// The cookie for a hello with `ephemeral` from `address` at `now`.
    pub(crate) fn make(
        &mut self,
        now: Instant,
        address: &[u8; 16],
        ephemeral: &[u8; 32],
    ) -> [u8; COOKIE_LEN] {
        self.advance(now);
        self.current.mac(&[address, ephemeral])
    }

    /// Whether `cookie` was made for this `address` and `ephemeral` in the
    /// period of `now` or the one before (constant-time comparisons).
    pub(crate) fn check(
        &mut self,
        now: Instant,
        address: &[u8; 16],
        ephemeral: &[u8; 32],
        cookie: &[u8; COOKIE_LEN],
    ) -> bool {
        self.advance(now);
        let a = tags_equal(&self.current.mac(&[address, ephemeral]), cookie);
        let b = tags_equal(&self.previous.mac(&[address, ephemeral]), cookie);
        a | b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn cookie_lives_one_to_two_periods_and_binds_address_and_key() {
        let mut k = CookieKeys::new([7; 32]);
        let a = address_bytes(Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
        let b = address_bytes(Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))));
        let t0 = Instant::from_micros(5 * COOKIE_PERIOD.as_micros() + 1);
        let c = k.make(t0, &a, &[1; 32]);
        assert!(k.check(t0, &a, &[1; 32], &c));
        assert!(!k.check(t0, &b, &[1; 32], &c), "another address");
        assert!(!k.check(t0, &a, &[2; 32], &c), "another hello key");
        let next = Instant::from_micros(6 * COOKIE_PERIOD.as_micros());
        assert!(k.check(next, &a, &[1; 32], &c), "the next period");
        let later = Instant::from_micros(7 * COOKIE_PERIOD.as_micros());
        assert!(!k.check(later, &a, &[1; 32], &c), "two periods on");
        // Back to the issuing period after a jump: keys are recomputed.
        assert!(k.check(t0, &a, &[1; 32], &c));
        // Another endpoint (another base secret) refuses it.
        let mut other = CookieKeys::new([8; 32]);
        assert!(!other.check(t0, &a, &[1; 32], &c));
    }

    #[test]
    fn sources_group_ipv6_by_64_and_forget_empty_entries() {
        let v6 =
            |last: u16, sub: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, sub, 0, 0, 0, last));
        assert_eq!(SourceKey::of(v6(1, 0)), SourceKey::of(v6(2, 0)));
        assert_ne!(SourceKey::of(v6(1, 0)), SourceKey::of(v6(1, 1)));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(SourceKey::of(mapped), SourceKey::of(v4));
        assert_ne!(
            SourceKey::of(v4),
            SourceKey::of(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)))
        );
        let mut s = Sources::default();
        let key = SourceKey::of(v4);
        let k = Some(key);
        s.add_transport(k);
        s.add_transport(k);
        s.add_unconfirmed(k);
        assert_eq!((s.transports(key), s.unconfirmed(key)), (2, 1));
        s.remove_transport(k);
        s.remove_transport(k);
        assert_eq!(s.len(), 1);
        s.remove_unconfirmed(k);
        assert_eq!(s.len(), 0);
        s.remove_unconfirmed(k);
        assert_eq!(s.len(), 0, "no entry comes back from a removal");
        s.add_transport(None);
        assert_eq!(s.len(), 0, "unknown sources are not counted");
    }
}
