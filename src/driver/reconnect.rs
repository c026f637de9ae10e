//! What the drivers share: the reconnect policy (capped exponential backoff
//! with jitter; pure arithmetic, the drivers do the sleeping) and, with
//! `std`, the clock whose readings they pass to the core.

use crate::time::Duration;
use rand_core::Rng;

/// How a driver spaces out attempts to open a new transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the second attempt (the first is immediate).
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Failed attempts in a row before giving up on opening the *first*
    /// transport, while no session exists yet (`None`: never give up). The
    /// drivers retry a first connect only with `wait_for_server` on their
    /// client builders (or when the server answered Busy); by default it
    /// fails at once, naming the address. Once
    /// a session exists the drivers retry until the core closes it (the
    /// server's advertised resume timeout), whatever this says.
    pub max_attempts: Option<u32>,
}

/// 100 ms after the first failure, doubling up to 5 s; before a session
/// exists (when the driver retries then: `wait_for_server`), give up after 8
/// failed attempts in a row (about 6 to 11 s); once a session exists, never
/// by a count (see below).
///
/// Why these values: the drivers do not decide when a session is lost, the
/// core does (`Client::give_up_at`, from the resume timeout the server
/// advertised), so the backoff only spaces attempts out. 100 ms makes a
/// quick flap (a NAT rebinding, a Wi-Fi hand-over) cost almost nothing;
/// the cap of 5 s bounds how long a client stays offline after the network
/// came back while keeping a refused or unreachable server at one attempt
/// per 2.5 to 5 s per client (the jitter spreads clients that lost the same
/// network at once). `max_attempts` counts only attempts before a session
/// exists: once there is one, only the core ends it.
impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_attempts: Some(8),
        }
    }
}

impl Backoff {
    /// The policy that applies while a session exists (`has_session`): the
    /// same delays without the attempt limit, because then only the core
    /// decides that the session is lost (its give-up deadline from the
    /// server's advertised resume timeout, PROTOCOL.md 7.6). Before, `self`.
    #[cfg(feature = "std")]
    pub(crate) fn with_session(self, has_session: bool) -> Backoff {
        if has_session {
            Backoff {
                max_attempts: None,
                ..self
            }
        } else {
            self
        }
    }

    /// Delay before attempt number `attempt` (0-based; attempt 0 is
    /// immediate), or `None` once the limit is reached. The delay doubles
    /// per attempt up to `max`, then a random jitter picks a value in
    /// `[d/2, d]` so that many clients do not reconnect in lockstep.
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Option<Duration> {
        if self.max_attempts.is_some_and(|m| attempt >= m) {
            return None;
        }
        if attempt == 0 {
            return Some(Duration::from_micros(0));
        }
        let shift = (attempt - 1).min(32);
        let d = self
            .initial
            .as_micros()
            .saturating_mul(1u64 << shift)
            .min(self.max.as_micros());
        let half = d / 2;
        let jitter = if half == 0 {
            0
        } else {
            rng.next_u64() % (half + 1)
        };
        Some(Duration::from_micros(half + jitter))
    }
}

/// The clock the drivers read for every [`crate::Instant`] they pass to the
/// core: microseconds since the clock was created, counted by a clock that
/// keeps running while the machine is suspended where the OS has one
/// (Linux and Android `CLOCK_BOOTTIME`; std's `Instant` elsewhere, which on
/// macOS and Windows counts suspend already). A phone that slept 10 minutes
/// thus sees 10 minutes pass, like the server did, and its estimate of the
/// server's clock stays right.
///
/// Sleeps are measured with other clocks (the OS's condition variables,
/// tokio's timer): convert a core deadline with [`DriverClock::until`] right
/// before sleeping and re-read the clock after waking.
#[cfg(feature = "std")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct DriverClock {
    origin: u64,
}

#[cfg(feature = "std")]
impl DriverClock {
    /// A clock reading zero now.
    pub(crate) fn new() -> Self {
        DriverClock {
            origin: raw_micros(),
        }
    }

    /// Microseconds since [`DriverClock::new`].
    pub(crate) fn now(&self) -> crate::Instant {
        crate::Instant::from_micros(raw_micros().saturating_sub(self.origin))
    }

    /// How long from now until `deadline` (zero when it passed).
    pub(crate) fn until(&self, deadline: crate::Instant) -> std::time::Duration {
        deadline.saturating_since(self.now()).into()
    }
}

/// Microseconds on the suspend-aware clock, from an arbitrary origin.
#[cfg(all(feature = "std", any(target_os = "linux", target_os = "android")))]
fn raw_micros() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
}

/// Microseconds on std's monotonic clock, from the first call.
#[cfg(all(feature = "std", not(any(target_os = "linux", target_os = "android"))))]
fn raw_micros() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Where a driver's `connect` dials: a name or addresses that it resolves
/// again before **every** attempt (the first connect and each reconnect),
/// trying the addresses in the order the resolver returns them. A server
/// whose name moves to a new address is thus found again after the next
/// broken transport.
///
/// Implemented for what [`std::net::ToSocketAddrs`] takes (`"host:port"`
/// strings, `(host, port)`, socket addresses, lists of them); borrowed
/// forms are copied. Wrap any other [`std::net::ToSocketAddrs`] (a custom
/// resolver) in [`Resolve`].
#[cfg(feature = "std")]
pub trait ServerAddr {
    /// The resolver the driver calls before every attempt.
    #[doc(hidden)]
    fn into_resolver(self) -> Resolver;
}

/// A resolver the drivers call before every connect attempt.
#[cfg(feature = "std")]
#[doc(hidden)]
pub type Resolver =
    std::sync::Arc<dyn Fn() -> std::io::Result<std::vec::Vec<std::net::SocketAddr>> + Send + Sync>;

/// Any [`std::net::ToSocketAddrs`] as a [`ServerAddr`]: its
/// `to_socket_addrs` is called before every connect attempt.
#[cfg(feature = "std")]
#[derive(Clone, Debug)]
pub struct Resolve<T>(pub T);

#[cfg(feature = "std")]
fn resolver_of<T>(t: T) -> Resolver
where
    T: std::net::ToSocketAddrs + Send + Sync + 'static,
{
    std::sync::Arc::new(move || t.to_socket_addrs().map(|a| a.collect()))
}

#[cfg(feature = "std")]
impl<T: std::net::ToSocketAddrs + Send + Sync + 'static> ServerAddr for Resolve<T> {
    fn into_resolver(self) -> Resolver {
        resolver_of(self.0)
    }
}

#[cfg(feature = "std")]
macro_rules! owned_server_addr {
    ($($t:ty),*) => {$(
        impl ServerAddr for $t {
            fn into_resolver(self) -> Resolver {
                resolver_of(self)
            }
        }
    )*};
}

#[cfg(feature = "std")]
owned_server_addr!(
    std::net::SocketAddr,
    std::net::SocketAddrV4,
    std::net::SocketAddrV6,
    std::string::String,
    (std::string::String, u16),
    (std::net::IpAddr, u16),
    (std::net::Ipv4Addr, u16),
    (std::net::Ipv6Addr, u16)
);

#[cfg(feature = "std")]
impl ServerAddr for std::vec::Vec<std::net::SocketAddr> {
    fn into_resolver(self) -> Resolver {
        std::sync::Arc::new(move || Ok(self.clone()))
    }
}

#[cfg(feature = "std")]
impl ServerAddr for &str {
    fn into_resolver(self) -> Resolver {
        resolver_of(std::string::String::from(self))
    }
}

#[cfg(feature = "std")]
impl ServerAddr for &std::string::String {
    fn into_resolver(self) -> Resolver {
        resolver_of(self.clone())
    }
}

#[cfg(feature = "std")]
impl ServerAddr for (&str, u16) {
    fn into_resolver(self) -> Resolver {
        resolver_of((std::string::String::from(self.0), self.1))
    }
}

#[cfg(feature = "std")]
impl ServerAddr for &std::net::SocketAddr {
    fn into_resolver(self) -> Resolver {
        resolver_of(*self)
    }
}

#[cfg(feature = "std")]
impl ServerAddr for &[std::net::SocketAddr] {
    fn into_resolver(self) -> Resolver {
        self.to_vec().into_resolver()
    }
}

/// Resolve for one attempt: the addresses, or an error saying the name
/// resolved to nothing.
#[cfg(feature = "std")]
pub(crate) fn resolve_now(r: &Resolver) -> std::io::Result<std::vec::Vec<std::net::SocketAddr>> {
    let addrs = r().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            std::format!("relink: cannot resolve the server's address: {e}"),
        )
    })?;
    if addrs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "relink: the server's address resolved to nothing",
        ));
    }
    Ok(addrs)
}

/// A failed TCP connect to `a` as an error naming the address.
#[cfg(feature = "std")]
pub(crate) fn connect_error(
    a: std::net::SocketAddr,
    e: &std::io::Error,
    timeout: std::time::Duration,
) -> std::io::Error {
    use std::io::{Error as IoError, ErrorKind};
    super::events::log_connect_failed(&a, e);
    match e.kind() {
        ErrorKind::ConnectionRefused => IoError::new(
            ErrorKind::ConnectionRefused,
            std::format!("relink: connection to {a} refused"),
        ),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => IoError::new(
            ErrorKind::TimedOut,
            std::format!("relink: connecting to {a} timed out after {timeout:?}"),
        ),
        k => IoError::new(k, std::format!("relink: cannot connect to {a}: {e}")),
    }
}

/// The default bound of one TCP connect attempt: the handshake timeout
/// (at least 100 ms).
#[cfg(feature = "std")]
pub(crate) fn default_connect_timeout(config: &crate::Config) -> std::time::Duration {
    std::time::Duration::from(config.handshake_timeout).max(std::time::Duration::from_millis(100))
}

/// The first 8 hex digits of a public key, to name it in messages.
#[cfg(feature = "std")]
pub(crate) fn short_fingerprint(key: &[u8; 32]) -> std::string::String {
    key[..4].iter().map(|b| std::format!("{b:02x}")).collect()
}

/// The last error of a first transport that was closed without a whole
/// answer to the handshake.
#[cfg(feature = "std")]
pub(crate) fn unanswered_text(peer: Option<std::net::SocketAddr>) -> std::string::String {
    match peer {
        Some(a) => std::format!(
            "the server at {a} closed the connection without answering the relink handshake; is it a relink server (or one refusing this address: too many handshakes in progress from it, Config::max_handshakes_per_source; or a PROXY protocol mismatch between a load balancer and the node: see the node's log)?"
        ),
        None => std::string::String::from(
            "the server closed the connection without answering the relink handshake; is it a relink server (or one refusing this address: too many handshakes in progress from it, Config::max_handshakes_per_source; or a PROXY protocol mismatch between a load balancer and the node: see the node's log)?",
        ),
    }
}

/// Why the first transport failed before any session existed, as the
/// drivers report it: the [`std::io::ErrorKind`], a message naming the peer,
/// and the typed cause. `None` when it is retried following the backoff
/// whatever the options (the server answered Busy).
///
/// `cause` is the error the core ended the transport with. `None`: the
/// peer closed it (or the socket failed) without a whole answer, reported
/// like a refused connect ([`std::io::ErrorKind::ConnectionRefused`], cause
/// `None`): it fails at once unless the client waits for the server, which
/// then retries it like a refused connect. That is what a port forward with
/// nothing behind it, or a service that is not relink and hangs up, looks
/// like; a relink server that is up answers (Busy at worst), and a path
/// cut during the very first handshake is rare enough to be the caller's
/// to retry (with `wait_for_server`, or by connecting again).
#[cfg(feature = "std")]
pub(crate) fn first_transport_failure(
    peer: Option<std::net::SocketAddr>,
    cause: Option<crate::Error>,
    config: &crate::Config,
) -> Option<(
    std::io::ErrorKind,
    std::string::String,
    Option<crate::Error>,
)> {
    use crate::{Error, HandshakeStatus};
    use std::io::ErrorKind;
    let p = peer.map_or_else(
        || std::string::String::from("the server"),
        |a| std::format!("the server at {a}"),
    );
    let t = std::time::Duration::from(config.handshake_timeout);
    Some(match cause {
        Some(Error::HandshakeRejected(HandshakeStatus::Busy | HandshakeStatus::Cookie)) => {
            return None
        }
        Some(e @ Error::HandshakeRejected(HandshakeStatus::NoStaticKey)) => {
            match &config.pinned_server_key {
                Some(key) => (
                    ErrorKind::PermissionDenied,
                    std::format!(
                        "relink: {p} is anonymous (it has no static key), so it cannot prove the pinned key {}...; wrong server, or a server started without its key",
                        short_fingerprint(key)
                    ),
                    Some(e),
                ),
                None => (
                    ErrorKind::Other,
                    std::format!("relink: the handshake with {p} failed: {e}"),
                    Some(e),
                ),
            }
        }
        Some(Error::AuthFailed) => match &config.pinned_server_key {
            Some(key) => (
                ErrorKind::PermissionDenied,
                std::format!(
                    "relink: {p} did not prove the pinned key {}...; wrong --server-key or a man in the middle",
                    short_fingerprint(key)
                ),
                Some(Error::ServerKeyMismatch),
            ),
            None => (
                ErrorKind::InvalidData,
                std::format!(
                    "relink: {p} answered the handshake with a reply that failed authentication (not a relink server, or the path corrupts data)"
                ),
                Some(Error::AuthFailed),
            ),
        },
        Some(Error::TimedOut) => (
            ErrorKind::TimedOut,
            std::format!(
                "relink: {p} did not answer the relink handshake within the handshake timeout ({t:?}); is it a relink server?"
            ),
            Some(Error::TimedOut),
        ),
        Some(e @ Error::Protocol(_)) => (
            ErrorKind::InvalidData,
            std::format!("relink: {p} is not a relink server (its answer to the handshake: {e})"),
            Some(e),
        ),
        // Closed or reset without a (whole) answer: nobody there speaks
        // relink (see above).
        None => (
            ErrorKind::ConnectionRefused,
            std::format!("relink: {}", unanswered_text(peer)),
            None,
        ),
        Some(e) => (
            ErrorKind::Other,
            std::format!("relink: the handshake with {p} failed: {e}"),
            Some(e),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::ChaCha20Rng;
    use proptest::prelude::*;
    use rand_core::SeedableRng;

    proptest! {
        #[test]
        fn with_a_session_never_gives_up_and_stays_within_the_cap(seed in any::<u64>(), attempt in 1u32..u32::MAX) {
            let b = Backoff::default().with_session(true);
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let d = b.delay(attempt, &mut rng).expect("never gives up with a session").as_micros();
            let nominal = (100_000u64.saturating_mul(1 << (attempt - 1).min(32))).min(5_000_000);
            prop_assert!(d >= nominal / 2 && d <= nominal, "{} vs {}", d, nominal);
        }

        #[test]
        fn a_limit_gives_up_exactly_there(seed in any::<u64>(), limit in 1u32..100, attempt in 0u32..200) {
            let b = Backoff { max_attempts: Some(limit), ..Backoff::default() };
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            prop_assert_eq!(b.delay(attempt, &mut rng).is_none(), attempt >= limit);
        }
    }

    #[test]
    fn first_attempt_is_immediate_and_the_default_survives_long_outages() {
        // Before a session: a bounded first connect (about 6 to 11 s).
        let first = Backoff::default();
        assert_eq!(first.max_attempts, Some(8));
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let total: u64 = (0..8)
            .map(|a| first.delay(a, &mut rng).unwrap().as_micros())
            .sum();
        assert!((5_000_000..=12_000_000).contains(&total), "{total}");
        assert_eq!(first.delay(8, &mut rng), None);
        // With a session: only the core ends it.
        let b = Backoff::default().with_session(true);
        assert_eq!(b.max_attempts, None);
        assert_eq!(b.delay(0, &mut rng), Some(Duration::from_micros(0)));
        assert_eq!(
            b.delay(1, &mut rng).map(|d| d.as_micros() <= 100_000),
            Some(true)
        );
        // An hour of refused connects is far from the end of the policy.
        let mut total = 0u64;
        for attempt in 0..2_000 {
            total += b.delay(attempt, &mut rng).unwrap().as_micros();
        }
        assert!(total >= 3_600_000_000 / 2, "{total}");
        assert!(b.delay(u32::MAX, &mut rng).unwrap() <= b.max);
    }

    #[cfg(feature = "std")]
    #[test]
    fn driver_clock_is_monotonic_and_counts() {
        let c = DriverClock::new();
        let a = c.now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = c.now();
        assert!(b.saturating_since(a).as_micros() >= 15_000, "{a:?} {b:?}");
        assert!(b.as_micros() < 60_000_000);
        let d = c.until(b.saturating_add(Duration::from_secs(2)));
        assert!(d <= std::time::Duration::from_secs(2) && d > std::time::Duration::from_secs(1));
        assert_eq!(c.until(a), std::time::Duration::ZERO);
    }
}
