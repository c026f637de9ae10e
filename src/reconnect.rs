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
    /// transport, while no session exists yet (`None`: never give up). Once
    /// a session exists the drivers retry until the core closes it (the
    /// server's advertised resume timeout), whatever this says.
    pub max_attempts: Option<u32>,
}

/// 100 ms after the first failure, doubling up to 5 s; before a session
/// exists, give up after 8 failed attempts in a row (about 6 to 11 s: a wrong
/// address or a wrong pinned key must not block `connect` for ever); once a
/// session exists, never by a count (see below).
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
