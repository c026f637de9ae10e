//! A server command as one node of a fleet behind a load balancer
//! (`listen`, `serve-forward`): the flags (`--server-id`,
//! `--proxy-protocol`, `--drain-timeout`), the graceful drain that SIGTERM
//! starts with `--drain-timeout`, and the one summary line the node prints
//! on stderr when it exits, as its last line whatever the exit path (a
//! drain, SIGINT or SIGTERM aborting, an error):
//!
//! ```text
//! relink: node summary: server_id=1 sessions=12 resumes=340 unknown_session=0 misrouted=0 refused=0 aborted_at_drain=0 unconfirmed_at_drain=0
//! ```
//!
//! `server_id` is `none` without `--server-id`; `sessions` counts sessions
//! established by a handshake, `resumes` accepted resumes,
//! `unknown_session` resumes answered "unknown session", `misrouted` those
//! of them carrying another node's server id (the balancer sent them to
//! the wrong node), `refused` transports refused at accept (admission
//! limits, missing PROXY header), `aborted_at_drain` sessions aborted with
//! SHUTTING_DOWN at the drain's deadline, `unconfirmed_at_drain` sessions
//! closed both ways that the drain left with part of what the node wrote
//! unacknowledged (the client's last ACK was cut: it has the bytes and
//! ended cleanly, or it reports the session lost when it comes back; each
//! is logged with its connection id and byte count). Every value is a decimal integer
//! (but `server_id=none`), in this order, `key=value` separated by single
//! spaces.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration as StdDuration, Instant};

use relink::driver::ServerStats;
use relink::{AbortCode, Config, Duration, RoutableId, RoutableIdError};

use crate::log;

/// The fleet flags of the server commands.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Fleet {
    /// This node's server id, written into every connection id it issues
    /// so that a load balancer sends each resume to the node holding its
    /// session (see docs/DEPLOYMENT.md): ID in decimal, from 1 (1 to 255
    /// with the default LEN 1), LEN its length in bytes, 1 to 4: e.g. `3`,
    /// `300/2` or `70000/3`. Every node behind one balancer uses the same
    /// LEN and its own ID.
    #[arg(long, value_name = "ID[/LEN]", value_parser = parse_server_id)]
    pub server_id: Option<RoutableId>,
    /// Every connection starts with a PROXY protocol v2 header (HAProxy's
    /// `send-proxy-v2`): per-client limits and logs use the client address
    /// it carries instead of the balancer's. Connections without one are
    /// closed. Only behind a balancer that sends it on every connection.
    #[arg(long)]
    pub proxy_protocol: bool,
    /// SIGTERM drains instead of aborting: new sessions are refused (Busy:
    /// clients go to another node), running ones go on (and resume) until
    /// they end; after SECS the rest are aborted with code 10 (shutting
    /// down). Exits 0 once all ended cleanly, 4 if sessions were aborted
    /// or failed. A second SIGTERM, or SIGINT, aborts at once (exit 130).
    /// Without it SIGTERM aborts at once.
    #[arg(long, value_name = "SECS", value_parser = crate::parse_secs)]
    pub drain_timeout: Option<Duration>,
}

impl Fleet {
    /// Apply `--server-id` to a server's configuration.
    pub fn configure(&self, cfg: &mut Config) {
        cfg.routable_id = self.server_id;
    }
}

/// `ID[/LEN]`.
fn parse_server_id(s: &str) -> Result<RoutableId, String> {
    let (id, len) = match s.split_once('/') {
        Some((id, len)) => (id, len),
        None => (s, "1"),
    };
    let id: u32 = id
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: the server id is not a decimal number"))?;
    let len: usize = len
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: the length is not a number of bytes (1 to 4)"))?;
    if id == 0 {
        // The library takes 0, but fleets (and the HAProxy rules of
        // docs/DEPLOYMENT.md) number their nodes from 1.
        return Err(format!(
            "{s:?}: server ids start at 1 (number the nodes of a fleet 1, 2, 3, ...)"
        ));
    }
    RoutableId::new(id, len).map_err(|e| match e {
        RoutableIdError::TooLarge { .. } => {
            // The shortest length that holds the id.
            let fits = (1..=4usize)
                .find(|&l| l == 4 || id >> (8 * l) == 0)
                .unwrap_or(4);
            format!(
                "{s:?}: {e}; use `{id}/{fits}`, a {fits}-byte server id (every node of the fleet then gives /{fits}, and the balancer's rules test {fits} bytes: docs/DEPLOYMENT.md)"
            )
        }
        _ => format!("{s:?}: {e}"),
    })
}

/// The summary line (see the module docs).
pub fn summary(server_id: Option<RoutableId>, st: &ServerStats, aborted_at_drain: u64) -> String {
    let id = server_id.map_or_else(|| "none".to_string(), |r| r.server_id().to_string());
    format!(
        "relink: node summary: server_id={id} sessions={} resumes={} unknown_session={} misrouted={} refused={} aborted_at_drain={aborted_at_drain} unconfirmed_at_drain={}",
        st.sessions,
        st.resumes,
        st.unknown_session_answers,
        st.misrouted_resumes,
        st.transports_refused,
        UNCONFIRMED_AT_DRAIN.load(Ordering::SeqCst),
    )
}

/// Produces the summary line of the running server (set once it listens).
type SummaryFn = Box<dyn Fn() -> String + Send>;

static SUMMARY: Mutex<Option<SummaryFn>> = Mutex::new(None);
static PRINTED: AtomicBool = AtomicBool::new(false);
/// Sessions aborted at the drain's deadline.
pub static ABORTED_AT_DRAIN: AtomicU64 = AtomicU64::new(0);
/// Sessions the drain left closed both ways but not fully acknowledged.
pub static UNCONFIRMED_AT_DRAIN: AtomicU64 = AtomicU64::new(0);

/// The running server's summary: `f` reads its counters.
pub fn set_summary(f: impl Fn() -> String + Send + 'static) {
    *SUMMARY.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(f));
}

/// Print the summary line (once per process; nothing before the server
/// listens).
pub fn print_summary() {
    let g = SUMMARY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = g.as_ref() {
        if !PRINTED.swap(true, Ordering::SeqCst) {
            log::say(f());
        }
    }
}

/// What a drain needs of a listener (of either driver).
pub struct Drainable {
    /// Refuse new sessions.
    pub drain: Box<dyn Fn() + Send>,
    /// Sessions not over yet.
    pub active: Box<dyn Fn() -> usize + Send>,
    /// Abort every session with a code; how many.
    pub abort_all: Box<dyn Fn(AbortCode) -> usize + Send>,
    /// Sessions closed both ways, detached, with bytes of ours not
    /// acknowledged: (connection id, bytes).
    pub unconfirmed: Box<dyn Fn() -> Vec<(u64, usize)> + Send>,
}

/// How long the ABORTs sent at the deadline may take to be acknowledged
/// before the process exits anyway.
const ABORT_GRACE: StdDuration = StdDuration::from_secs(2);
/// How long no session may be active before the drain is over: a client
/// whose last frame was lost in a cut resumes within it (its first
/// reconnect is immediate), and counts again.
const END_GRACE: StdDuration = StdDuration::from_secs(2);

/// Drain (on this thread): refuse new sessions, wait until the running
/// ones ended or `timeout` passed, then abort the rest with SHUTTING_DOWN
/// and give their clients [`ABORT_GRACE`] to acknowledge. Returns how
/// many were aborted.
pub fn drain(d: &Drainable, timeout: Duration, which: &str) -> u64 {
    let timeout = StdDuration::from(timeout);
    (d.drain)();
    log::say(format!(
        "relink: {which}: draining: new sessions are refused, {} session(s) running; the rest are aborted in {:.1} s",
        (d.active)(),
        timeout.as_secs_f64()
    ));
    let end = Instant::now() + timeout;
    // Done once nothing was active for END_GRACE in a row (a client that
    // missed our last frame comes back within it, and counts again).
    let mut quiet_since: Option<Instant> = None;
    while Instant::now() < end {
        if (d.active)() > 0 {
            quiet_since = None;
        } else if quiet_since.get_or_insert_with(Instant::now).elapsed() >= END_GRACE {
            report_unconfirmed(d);
            return 0;
        }
        std::thread::sleep(StdDuration::from_millis(20));
    }
    if (d.active)() == 0 {
        report_unconfirmed(d);
        return 0;
    }
    let aborted = (d.abort_all)(AbortCode::SHUTTING_DOWN) as u64;
    ABORTED_AT_DRAIN.fetch_add(aborted, Ordering::SeqCst);
    log::say(format!(
        "relink: drain deadline: aborted {aborted} session(s) (shutting down)"
    ));
    let grace = Instant::now() + ABORT_GRACE;
    while (d.active)() > 0 && Instant::now() < grace {
        std::thread::sleep(StdDuration::from_millis(20));
    }
    aborted
}

/// Log each session the drain leaves closed but not fully acknowledged,
/// and count them for the summary line.
fn report_unconfirmed(d: &Drainable) {
    let left = (d.unconfirmed)();
    for (conn_id, bytes) in &left {
        log::say(format!(
            "relink: drain: session {conn_id:016x} closed both ways; its client did not acknowledge our last {bytes} byte(s) and our CLOSE (its last ACK was cut): it holds them and ended cleanly, or it reports the session lost"
        ));
    }
    UNCONFIRMED_AT_DRAIN.fetch_add(left.len() as u64, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_parse_with_and_without_a_length() {
        let r = parse_server_id("3").unwrap();
        assert_eq!((r.server_id(), r.len()), (3, 1));
        let r = parse_server_id("70000/3").unwrap();
        assert_eq!((r.server_id(), r.len()), (70000, 3));
        for bad in ["256", "1/5", "1/0", "x", "1/y", "-1", "0", "0/2"] {
            assert!(parse_server_id(bad).is_err(), "{bad}");
        }
        // Too large for its length: the error names the length that fits.
        let e = parse_server_id("300").unwrap_err();
        assert!(e.contains("`300/2`"), "{e}");
        let e = parse_server_id("70000/2").unwrap_err();
        assert!(e.contains("`70000/3`"), "{e}");
        assert!(parse_server_id("0").unwrap_err().contains("start at 1"));
    }

    #[test]
    fn the_summary_line_has_every_counter_in_order() {
        let st = ServerStats {
            sessions: 12,
            resumes: 340,
            unknown_session_answers: 2,
            misrouted_resumes: 1,
            transports_refused: 4,
            ..ServerStats::default()
        };
        let id = RoutableId::new(1, 1).ok();
        assert_eq!(
            summary(id, &st, 5),
            "relink: node summary: server_id=1 sessions=12 resumes=340 unknown_session=2 misrouted=1 refused=4 aborted_at_drain=5 unconfirmed_at_drain=0"
        );
        assert!(summary(None, &st, 0).contains("server_id=none "));
    }
}
