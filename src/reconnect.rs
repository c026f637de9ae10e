//! Reconnect policy shared by the drivers: exponential backoff with jitter
//! and a give-up limit. Pure arithmetic; the drivers do the sleeping.

use crate::time::Duration;
use rand_core::Rng;

/// How a driver spaces out attempts to open a new transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the second attempt (the first is immediate).
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Attempts in a row before giving up (`None`: never give up).
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(5),
            max_attempts: Some(30),
        }
    }
}

impl Backoff {
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

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::ChaCha20Rng;
    use proptest::prelude::*;
    use rand_core::SeedableRng;

    proptest! {
        #[test]
        fn delay_is_bounded_and_grows(seed in any::<u64>(), attempt in 1u32..64) {
            let b = Backoff::default();
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let d = b.delay(attempt, &mut rng);
            if attempt >= 30 {
                prop_assert!(d.is_none());
            } else {
                let d = d.unwrap().as_micros();
                let nominal = (50_000u64 << (attempt - 1).min(32)).min(5_000_000);
                prop_assert!(d >= nominal / 2 && d <= nominal, "{} vs {}", d, nominal);
            }
        }
    }

    #[test]
    fn first_attempt_is_immediate_and_unbounded_never_gives_up() {
        let b = Backoff {
            max_attempts: None,
            ..Backoff::default()
        };
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        assert_eq!(b.delay(0, &mut rng), Some(Duration::from_micros(0)));
        assert!(b.delay(1_000_000, &mut rng).is_some());
    }
}
