//! Injected time: the core never reads a clock.
//!
//! Two clocks, passed separately (the models are quinn-proto's
//! `TimeSource` and rustls's `TimeProvider`):
//! - [`Instant`], a point on the caller's *monotonic* clock, in microseconds
//!   from an origin the caller chooses (process start, boot, a test's zero).
//!   Every call that can change state takes one; it drives every timer.
//! - [`UnixTime`], the *wall* clock, read through a [`WallClock`] the caller
//!   puts in `Config::wall_clock`. The server uses it only for freshness:
//!   the time it announces (ServerHello, ResumeResponse, rejections,
//!   PROTOCOL.md 3) and the time window of resume requests (7.3). Without a
//!   wall clock the monotonic `Instant` stands in for it, which is sound
//!   within one server process (clients extrapolate the server's clock from
//!   what it announced) but not across restarts or nodes. A server driver
//!   should set [`SystemWallClock`] (the crate's drivers do). A client reads
//!   its wall clock only to stamp a new session's ClientHello (0 without
//!   one); afterwards it extrapolates the server's clock.
//!
//! For the monotonic clock, prefer one that keeps counting while the
//! machine sleeps (Linux `CLOCK_BOOTTIME`; std's `Instant` stops on Linux),
//! so that a phone that slept estimates the server's clock right.

/// A point in time on the caller's clock, in microseconds since its origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub u64);

/// A span of time in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub u64);

impl Instant {
    /// The instant `micros` microseconds after the origin.
    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }
    /// Microseconds since the origin.
    pub const fn as_micros(self) -> u64 {
        self.0
    }
    /// `self + d`, saturating at the end of time.
    pub const fn saturating_add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.0))
    }
    /// Time elapsed from `earlier` to `self` (zero if `earlier` is later).
    pub const fn saturating_since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl Duration {
    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(ms.saturating_mul(1_000))
    }
    /// A duration of `s` seconds.
    pub const fn from_secs(s: u64) -> Self {
        Duration(s.saturating_mul(1_000_000))
    }
    /// A duration of `us` microseconds.
    pub const fn from_micros(us: u64) -> Self {
        Duration(us)
    }
    /// Length in microseconds.
    pub const fn as_micros(self) -> u64 {
        self.0
    }
}

#[cfg(feature = "std")]
impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

#[cfg(feature = "std")]
impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        std::time::Duration::from_micros(d.0)
    }
}

/// A point on the wall clock, in microseconds since the Unix epoch
/// (1970-01-01T00:00:00Z, leap seconds not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(pub u64);

impl UnixTime {
    /// The time `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: u64) -> Self {
        UnixTime(micros)
    }
    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }
}

/// A source of wall-clock time (`Config::wall_clock`). Implementations must
/// be cheap and must not block; the core calls it once per handshake and
/// resume, and on the server once per time-stamped control frame (PING,
/// CLOSE, ABORT), never per DATA frame. Tests inject a manual clock, drivers use [`SystemWallClock`].
pub trait WallClock: Send + Sync {
    /// The current wall-clock time.
    fn now(&self) -> UnixTime;
}

/// The operating system's wall clock (`std::time::SystemTime`), `std`
/// feature only.
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemWallClock;

#[cfg(feature = "std")]
impl WallClock for SystemWallClock {
    fn now(&self) -> UnixTime {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UnixTime(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

/// The earliest of two optional deadlines.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}
