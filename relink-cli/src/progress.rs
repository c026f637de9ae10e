//! What happens to a session, told on stderr beyond the drivers' own log
//! lines: the progress events they do not log (warnings, debug detail;
//! `tracing`, fields `session`, `peer`), readable counters (no Rust
//! `Debug` text), and the live meter of `-v` during a transfer (a status
//! line redrawn on a terminal, a plain line every few seconds otherwise).

use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use relink::blocking::{ClientStats, Progress};
use relink::{Event, ServerEvent};
use tracing::{debug, info, warn};

use crate::log;

/// `n` bytes for people: `512 B`, `1.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `n` things, plural when not 1: `1 resume`, `2 resumes`.
fn count(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// A session id for logs: the connection id, 16 hex digits (what both
/// sides print).
pub fn session_hex(conn_id: u64) -> String {
    format!("{conn_id:016x}")
}

/// A client's counters: `3 transports, 2 resumes, 1.2 MiB resent, 0 failed
/// connects, key epoch 4`.
pub fn client_stats_text(s: &ClientStats) -> String {
    format!(
        "{}, {}, {} resent, {}, key epoch {}",
        count(s.transports, "transport"),
        count(s.resumes, "resume"),
        bytes(s.resent_bytes),
        count(s.connect_failures, "failed connect"),
        s.epoch
    )
}

/// A clock offset of `us` µs for people, signed, in ms with one decimal:
/// `+12.3 ms`, `-0.4 ms`.
pub fn offset_ms(us: i64) -> String {
    let sign = if us < 0 { '-' } else { '+' };
    let abs = us.unsigned_abs();
    // Round to 0.1 ms = 100 µs.
    let tenths = (abs + 50) / 100;
    format!("{sign}{}.{} ms", tenths / 10, tenths % 10)
}

/// `sent 6.0 MiB in 1.23 s (4.9 MiB/s)` at INFO.
pub fn throughput(session: &str, what: &str, n: u64, start: Instant) {
    let s = start.elapsed().as_secs_f64().max(1e-6);
    info!(
        %session,
        bytes = n,
        "{what} {} in {s:.2} s ({}/s)",
        bytes(n),
        bytes((n as f64 / s) as u64)
    );
}

// ---------------------------------------------------------------------------
// Progress events as log lines.

/// What the event logger remembers between events, and what the meter
/// reads. The drivers log the session's story themselves (`session
/// established`, `transport lost`, `session resumed`, `session ended`,
/// `connect attempt failed`: see `relink::driver`); the CLI adds only what
/// they do not say (authentication failures, expiry and in-doubt bytes as
/// warnings, resend ranges and connect attempts at DEBUG).
#[derive(Default)]
pub struct Track {
    st: Mutex<TrackState>,
}

#[derive(Default)]
struct TrackState {
    /// The client's session (16 hex digits), once established.
    session: Option<String>,
    /// The client's server address (as given).
    peer: Option<String>,
    /// Server: when authenticated input last arrived from the client of
    /// the session being served (see `contact_ago`), or a handshake or a
    /// resume. (A client's meter asks its stream: `Sample::last_received`.)
    contact: Option<Instant>,
    /// Server: sessions by the core's id.
    sessions: HashMap<u64, ServerSession>,
    /// `-v`: say `relink: rekeyed, epoch N` on each rekey.
    verbose: bool,
    /// Server: the core id and key epoch of the session that ended last
    /// (its entry in `sessions` is gone).
    last_closed: Option<(u64, u32)>,
}

#[derive(Default)]
struct ServerSession {
    /// Connection id in hex, once `listen` accepted it (see `register`).
    id: Option<String>,
    peer: Option<SocketAddr>,
    /// Its key epoch (`ServerEvent::Rekeyed`).
    epoch: u32,
}

impl Track {
    fn lock(&self) -> MutexGuard<'_, TrackState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The server accepted core session `sid` with connection id `conn_id`
    /// from `peer`: later lines of that session name both.
    pub fn register(&self, sid: u64, conn_id: Option<u64>, peer: Option<SocketAddr>) {
        let mut st = self.lock();
        let s = st.sessions.entry(sid).or_default();
        s.id = conn_id.map(session_hex);
        s.peer = peer;
    }

    /// `-v`: tell each rekey (`relink: rekeyed, epoch N`).
    pub fn set_verbose(&self, on: bool) {
        self.lock().verbose = on;
    }

    /// The key epoch server session `sid` reached (0 before a rekey).
    pub fn epoch(&self, sid: u64) -> u32 {
        let st = self.lock();
        match (st.sessions.get(&sid), st.last_closed) {
            (Some(s), _) => s.epoch,
            (None, Some((id, epoch))) if id == sid => epoch,
            _ => 0,
        }
    }

    /// Authenticated input last arrived from the peer `ago` (what the
    /// stream's `last_received` says).
    pub fn contact_ago(&self, ago: Duration) {
        self.lock().contact = Instant::now().checked_sub(ago);
    }

    fn last_contact(&self) -> Option<Instant> {
        self.lock().contact
    }
}

impl TrackState {
    /// `session` of server session `sid`: its connection id if known,
    /// else `#sid` (the server's own number).
    fn server_session(&self, sid: u64) -> (String, String) {
        match self.sessions.get(&sid) {
            Some(s) => (
                s.id.clone().unwrap_or_else(|| format!("#{sid}")),
                s.peer.map_or_else(|| "unknown".into(), |p| p.to_string()),
            ),
            None => (format!("#{sid}"), "unknown".into()),
        }
    }
}

/// A progress callback that logs the events of a client session to
/// `peer` or of a listener (`peer` = None), remembering what `track`
/// keeps.
pub fn events(
    track: Arc<Track>,
    peer: Option<String>,
) -> impl Fn(&Progress) + Send + Sync + 'static {
    track.lock().peer = peer;
    move |p: &Progress| match p {
        Progress::Client(e) => client_event(&track, e),
        Progress::Server(e) => server_event(&track, e),
        // The driver logs each failed attempt (`connect attempt failed`,
        // `addr`, `error`); the attempt number is debug detail.
        Progress::Connecting { attempt, delay } if *attempt > 0 => {
            let peer = track
                .lock()
                .peer
                .clone()
                .unwrap_or_else(|| "unknown".into());
            debug!(%peer, attempt, delay_ms = delay.as_millis() as u64, "connecting");
        }
        _ => {}
    }
}

fn client_event(track: &Track, e: &Event) {
    let mut st = track.lock();
    let peer = st.peer.clone().unwrap_or_else(|| "unknown".into());
    let session = st.session.clone().unwrap_or_else(|| "none".into());
    match e {
        Event::HandshakeDone { conn_id } => st.session = Some(session_hex(*conn_id)),
        Event::ResendRange { start, end } if end > start => {
            debug!(%session, start, end, "resending {}", bytes(end - start));
        }
        Event::AuthFailed { reason } => {
            warn!(%session, %peer, "authentication failed: {reason}");
        }
        Event::PeerClosed => debug!(%session, "the server closed its stream"),
        Event::Rekeyed { epoch } if st.verbose => {
            log::say(format!("relink: rekeyed, epoch {epoch}"))
        }
        _ => {}
    }
}

fn server_event(track: &Track, e: &ServerEvent) {
    let mut st = track.lock();
    match e {
        ServerEvent::HandshakeDone { session, .. } => {
            st.sessions.entry(session.0).or_default();
            st.contact = Some(Instant::now());
        }
        ServerEvent::Resumed { .. } => st.contact = Some(Instant::now()),
        ServerEvent::ResendRange {
            session,
            start,
            end,
        } if end > start => {
            let (session, peer) = st.server_session(session.0);
            debug!(%session, %peer, start, end, "resending {}", bytes(end - start));
        }
        ServerEvent::AuthFailed { transport, reason } => {
            warn!(transport = transport.0, "authentication failed: {reason}");
        }
        ServerEvent::Closed { session, .. } => {
            if let Some(s) = st.sessions.remove(&session.0) {
                st.last_closed = Some((session.0, s.epoch));
            }
        }
        ServerEvent::Rekeyed { session, epoch } => {
            st.sessions.entry(session.0).or_default().epoch = *epoch;
            if st.verbose {
                let (id, _) = st.server_session(session.0);
                log::say(format!("relink: rekeyed, epoch {epoch} (session {id})"));
            }
        }
        // The driver's `session ended` line is INFO: an expiry is worth a
        // warning without -v.
        ServerEvent::SessionExpired { session } => {
            let (session, peer) = st.server_session(session.0);
            warn!(%session, %peer, "session expired: no connection for longer than the resume timeout");
        }
        ServerEvent::InDoubt { session, range } => {
            let (session, peer) = st.server_session(session.0);
            warn!(
                %session, %peer, start = range.start, end = range.end,
                "{} sent to the client may or may not have reached it",
                bytes(range.end - range.start)
            );
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// The live meter of `-v`.

/// Bytes moved by the command, counted where it reads and writes.
#[derive(Default)]
pub struct Counts {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

impl Counts {
    pub fn add_sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub fn add_received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// What the meter shows besides the byte counts.
#[derive(Clone, Copy, Default)]
pub struct Sample {
    /// Transports replaced after the first (client: opened; server:
    /// resumes).
    pub reconnects: u64,
    pub resumes: u64,
    /// Bytes the peer acknowledged so far (sent − unacknowledged).
    pub acked: u64,
    /// Time since authenticated input last arrived from the peer, if the
    /// sampler knows (`ClientStream::last_received`); else the meter uses
    /// what `Track` was told.
    pub last_received: Option<Duration>,
}

/// How often a plain progress line is printed when stderr is not a
/// terminal: 5 s, or `RELINK_PROGRESS_MS` milliseconds (tests).
fn plain_interval() -> Duration {
    std::env::var("RELINK_PROGRESS_MS")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map_or(Duration::from_secs(5), Duration::from_millis)
}

/// Stops the meter (and erases its status line) when dropped.
pub struct Meter {
    stop: Option<mpsc::Sender<()>>,
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.stop = None; // disconnects: the thread ends at once
    }
}

/// Start the meter of `counts`/`track` on a thread of `scope`: a status
/// line on a terminal (redrawn 4 times a second), else an INFO line every
/// few seconds; `sample` reads the session's counters.
pub fn meter<'scope>(
    scope: &'scope thread::Scope<'scope, '_>,
    counts: &'scope Counts,
    track: &'scope Track,
    mut sample: impl FnMut() -> Sample + Send + 'scope,
) -> Meter {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(250)
    } else {
        plain_interval()
    };
    let (tx, rx) = mpsc::channel::<()>();
    scope.spawn(move || {
        // (when, acknowledged + received) over the last 3 s: the rate.
        let mut window: VecDeque<(Instant, u64)> = VecDeque::new();
        // The counters of the last plain line, and when it was printed.
        let mut printed: Option<((u64, u64, u64, u64), Instant)> = None;
        while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
            let s = sample();
            let sent = counts.sent.load(Ordering::Relaxed);
            let recv = counts.received.load(Ordering::Relaxed);
            let last = s
                .last_received
                .or_else(|| track.last_contact().map(|t| t.elapsed()));
            let now = Instant::now();
            // Sent bytes count once acknowledged: written ones may only sit
            // in the buffer.
            window.push_back((now, s.acked + recv));
            while window.len() > 2 && now - window[0].0 > Duration::from_secs(3) {
                window.pop_front();
            }
            let (t0, b0) = window[0];
            let rate = if now > t0 {
                (s.acked + recv).saturating_sub(b0) as f64 / (now - t0).as_secs_f64()
            } else {
                0.0
            };
            let contact = last.map_or_else(
                || "no contact yet".to_string(),
                |d| format!("last contact {:.1} s ago", d.as_secs_f64()),
            );
            let text = format!(
                "sent {}, received {}, {}/s, {contact}, {}, {}",
                bytes(sent),
                bytes(recv),
                bytes(rate as u64),
                count(s.reconnects, "reconnect"),
                count(s.resumes, "resume"),
            );
            if tty {
                log::set_status(format!("relink: {text}"));
                continue;
            }
            // A plain line when something changed, and once a minute
            // while nothing does; none before the first contact (a
            // listener waiting for its first client).
            let state = (sent, recv, s.reconnects, s.resumes);
            let due = match printed {
                _ if last.is_none() => false,
                Some((last, at)) => last != state || at.elapsed() >= Duration::from_secs(60),
                None => true,
            };
            if due {
                printed = Some((state, now));
                let session = track.lock().session.clone();
                let session = session.as_ref().map(tracing::field::display);
                info!(session, sent, received = recv, "progress: {text}");
            }
        }
        log::clear_status();
    });
    Meter { stop: Some(tx) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_like_sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1_258_291), "1.2 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(bytes(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn clock_offsets_read_as_signed_milliseconds() {
        assert_eq!(offset_ms(12_300), "+12.3 ms");
        assert_eq!(offset_ms(12_349), "+12.3 ms");
        assert_eq!(offset_ms(12_350), "+12.4 ms");
        assert_eq!(offset_ms(0), "+0.0 ms");
        assert_eq!(offset_ms(-400), "-0.4 ms");
        assert_eq!(offset_ms(-2_500_000), "-2500.0 ms");
        assert!(offset_ms(i64::MIN).starts_with('-'));
    }

    #[test]
    fn client_stats_read_as_text_not_debug() {
        let s = ClientStats {
            transports: 3,
            resumes: 1,
            resent_bytes: 1_258_291,
            connect_failures: 0,
            ..ClientStats::default()
        };
        assert_eq!(
            client_stats_text(&s),
            "3 transports, 1 resume, 1.2 MiB resent, 0 failed connects, key epoch 0"
        );
    }

    #[test]
    fn server_lines_name_the_registered_session_and_its_peer() {
        let t = Track::default();
        let peer: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        t.register(7, Some(0xd868_947b_cc4e_3e08), Some(peer));
        let (s, p) = t.lock().server_session(7);
        assert_eq!(
            (s.as_str(), p.as_str()),
            ("d868947bcc4e3e08", "10.0.0.2:5000")
        );
        let (s, p) = t.lock().server_session(8);
        assert_eq!((s.as_str(), p.as_str()), ("#8", "unknown"));
    }
}
