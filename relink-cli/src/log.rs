//! Where everything the CLI says on stderr goes: the `tracing` subscriber
//! (the library's events and the CLI's own lines in one format), the
//! plain messages scripts read (`listening on ADDR`, the public key), and
//! the live status line of `-v` on a terminal, which is cleared before any
//! other line is printed and redrawn after it.
//!
//! A log line reads
//! `2026-11-30T10:15:02.123Z  INFO session established session=d868947bcc4e3e08 peer=10.0.0.2:7000`:
//! an RFC 3339 UTC timestamp (milliseconds), the level, the message, the
//! fields (`session`: the connection id, 16 hex digits, the same on both
//! sides; `peer`: the other side's address; `addr`: an address tried;
//! `tunnel`: which local connection of a tunnel). Levels: WARN by default
//! (errors and warnings), `-v` INFO for relink, `-vv` DEBUG, `-vvv` TRACE;
//! `RUST_LOG` (an `EnvFilter` directive such as `relink=debug`) overrides
//! them.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The filter of `-v` repeated `verbosity` times (0 = no `-v`).
fn default_filter(verbosity: u8) -> &'static str {
    match verbosity {
        0 => "warn",
        1 => "warn,relink=info",
        2 => "warn,relink=debug",
        _ => "trace",
    }
}

/// Install the subscriber: stderr, timestamps, `RUST_LOG` or the level of
/// `-v` repeated `verbosity` times. Call once, first thing in `main`.
pub fn init(verbosity: u8) {
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let filter = match &rust_log {
        Some(s) => EnvFilter::builder().parse_lossy(s),
        None => EnvFilter::new(default_filter(verbosity)),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_timer(Rfc3339Utc)
        .with_writer(StderrLines)
        .with_ansi(io::stderr().is_terminal())
        // Which module said it matters when debugging, not in `-v`'s story.
        .with_target(verbosity >= 2 || rust_log.is_some())
        .with_filter(filter);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// A message for the user or a script rather than a log line (no
/// timestamp): `listening on ADDR`, the public key, the final error.
pub fn say(msg: impl fmt::Display) {
    write_line(format!("{msg}\n").as_bytes());
}

/// The span of one tunnelled connection of `forward`: every event inside
/// it carries `tunnel=ID` (a counter per accepted local connection,
/// starting at 1) and `local_peer` (the local client's address), so the
/// lines of concurrent connections can be told apart; once its session exists,
/// `session` too (record it with `span.record("session", ...)`). The
/// tunnel code enters it around each connection's work (`let _g =
/// span.enter();` in a thread, or `.instrument(span)` on a future).
pub fn tunnel_span(id: u64, local_peer: Option<SocketAddr>) -> tracing::Span {
    let session = tracing::field::Empty;
    match local_peer {
        Some(p) => tracing::info_span!("tunnel", tunnel = id, local_peer = %p, session),
        None => tracing::info_span!("tunnel", tunnel = id, session),
    }
}

/// The span of one session of `serve-forward`: its events carry `session`
/// (the connection id, 16 hex digits, as on the client and in the
/// drivers' lines) and `peer` (the client's address).
pub fn session_span(session: &str, peer: Option<SocketAddr>) -> tracing::Span {
    match peer {
        Some(p) => tracing::info_span!("tunnel", session = %session, peer = %p),
        None => tracing::info_span!("tunnel", session = %session, peer = "unknown"),
    }
}

// ---------------------------------------------------------------------------
// Timestamps.

/// `2026-11-30T10:15:02.123Z`.
struct Rfc3339Utc;

impl FormatTime for Rfc3339Utc {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        w.write_str(&rfc3339(SystemTime::now()))
    }
}

/// `t` as RFC 3339 in UTC with milliseconds (`1970-01-01T00:00:00.000Z`
/// for times before the epoch).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Year, month, day of `days` since 1970-01-01 (proleptic Gregorian;
/// H. Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

// ---------------------------------------------------------------------------
// stderr and the status line.

/// The status line on a terminal: its text, and whether it is on screen.
struct Status {
    text: String,
    shown: bool,
    /// No status line any more: the process is ending.
    ended: bool,
}

static STATUS: Mutex<Status> = Mutex::new(Status {
    text: String::new(),
    shown: false,
    ended: false,
});

fn status() -> MutexGuard<'static, Status> {
    STATUS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Back to the start of the line, erase it.
const ERASE: &[u8] = b"\r\x1b[K";

/// Print `line` (ends in a newline) with the status line out of its way.
fn write_line(line: &[u8]) {
    let st = status();
    let mut e = io::stderr().lock();
    // Nothing useful to do if stderr is gone.
    if st.shown {
        let _ = e.write_all(ERASE);
    }
    let _ = e.write_all(line);
    if st.shown {
        let _ = e.write_all(st.text.as_bytes());
    }
    let _ = e.flush();
}

/// Show `text` (one line, no newline) as the status line on a terminal,
/// replacing the previous one.
pub fn set_status(text: String) {
    let mut st = status();
    if st.ended {
        return;
    }
    let mut e = io::stderr().lock();
    let _ = e.write_all(ERASE);
    let _ = e.write_all(text.as_bytes());
    let _ = e.flush();
    st.text = text;
    st.shown = true;
}

/// Erase the status line for good: the process is about to exit (a meter
/// still running draws no more).
pub fn end_status() {
    status().ended = true;
    clear_status();
}

/// Erase the status line, if one is shown; the next `set_status` draws it
/// again. Called when the meter stops and before the final message.
pub fn clear_status() {
    let mut st = status();
    if st.shown {
        let mut e = io::stderr().lock();
        let _ = e.write_all(ERASE);
        let _ = e.flush();
        st.shown = false;
    }
}

/// The subscriber's writer: each event is collected, then written as one
/// piece by `write_line` (log lines of threads do not interleave, and the
/// status line is redrawn below them).
struct StderrLines;

impl<'a> MakeWriter<'a> for StderrLines {
    type Writer = LineBuf;
    fn make_writer(&'a self) -> LineBuf {
        LineBuf(Vec::with_capacity(160))
    }
}

struct LineBuf(Vec<u8>);

impl Write for LineBuf {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineBuf {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            write_line(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_of_known_instants() {
        let at = |s: u64, ms: u64| {
            rfc3339(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day of a year divisible by 400).
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        // 2026-11-30T10:15:02.123Z.
        assert_eq!(at(1_796_033_702, 123), "2026-11-30T10:15:02.123Z");
        // The last second of 2099 and the first of 2100 (not a leap year).
        assert_eq!(at(4_102_444_799, 999), "2099-12-31T23:59:59.999Z");
        assert_eq!(at(5_107_881_600, 0), "2131-11-12T00:00:00.000Z");
    }

    /// A writer into a shared buffer (what the subscriber printed).
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_inside_a_tunnel_span_name_the_tunnel_and_its_local_peer() {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(sub, || {
            let span = tunnel_span(3, Some("127.0.0.1:5022".parse().unwrap()));
            let _g = span.enter();
            tracing::info!(session = %"00000000000000ab", "session established");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("tunnel=3"), "{text}");
        assert!(text.contains("local_peer=127.0.0.1:5022"), "{text}");
        assert!(text.contains("session=00000000000000ab"), "{text}");
    }

    #[test]
    fn a_recorded_session_is_on_every_later_line_of_the_tunnel() {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(sub, || {
            let span = tunnel_span(4, None);
            let _g = span.enter();
            tracing::info!("before");
            span.record("session", tracing::field::display("00000000000000cd"));
            tracing::info!("after");
            let s = session_span("00000000000000ef", Some("10.0.0.9:41000".parse().unwrap()));
            let _g = s.enter();
            tracing::info!("served");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line = |m: &str| text.lines().find(|l| l.ends_with(m)).unwrap().to_string();
        assert!(!line("before").contains("session="), "{text}");
        assert!(line("after").contains("tunnel=4"), "{text}");
        assert!(line("after").contains("session=00000000000000cd"), "{text}");
        assert!(
            line("served").contains("session=00000000000000ef"),
            "{text}"
        );
        assert!(line("served").contains("peer=10.0.0.9:41000"), "{text}");
    }
}
