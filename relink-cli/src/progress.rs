//! What `-v` prints on stderr.

use std::time::Instant;

use relink::blocking::{close_reason_text, Progress};
use relink::{Event, ServerEvent};

/// A stderr logger for `-v`.
pub fn logger(verbose: bool) -> impl Fn(&Progress) + Send + Sync + 'static {
    move |p: &Progress| {
        if !verbose {
            return;
        }
        match p {
            Progress::Connecting { attempt, delay } if *attempt > 0 => {
                eprintln!("relink: connect attempt {attempt} after {delay:?}")
            }
            Progress::ConnectFailed { attempt, error } => {
                eprintln!("relink: connect attempt {attempt} failed: {error}")
            }
            Progress::Client(Event::HandshakeDone { conn_id }) => {
                eprintln!("relink: session {conn_id:016x} established")
            }
            Progress::Client(Event::Resumed { counter }) => {
                eprintln!("relink: resumed (transport #{counter})")
            }
            Progress::Client(Event::ResendRange { start, end }) => {
                eprintln!("relink: resending [{start}, {end}) ({} bytes)", end - start)
            }
            Progress::Client(Event::TransportLost { error }) => match error {
                Some(e) => eprintln!("relink: transport lost: {e}"),
                None => eprintln!("relink: transport lost"),
            },
            Progress::Client(Event::Closed { reason }) => {
                eprintln!("relink: session closed: {}", close_reason_text(reason))
            }
            Progress::Server(ServerEvent::HandshakeDone { session, .. }) => {
                eprintln!("relink: new session {}", session.0)
            }
            Progress::Server(ServerEvent::Resumed {
                session, counter, ..
            }) => eprintln!("relink: session {} resumed (#{counter})", session.0),
            Progress::Server(ServerEvent::ResendRange {
                session,
                start,
                end,
            }) => eprintln!(
                "relink: session {} resending [{start}, {end}) ({} bytes)",
                session.0,
                end - start
            ),
            Progress::Server(ServerEvent::CloseTransport { error: Some(e), .. }) => {
                eprintln!("relink: transport closed: {e}")
            }
            Progress::Server(ServerEvent::Closed { session, reason }) => eprintln!(
                "relink: session {} closed: {}",
                session.0,
                close_reason_text(reason)
            ),
            Progress::Server(ServerEvent::SessionExpired { session }) => {
                eprintln!("relink: session {} expired", session.0)
            }
            _ => {}
        }
    }
}

pub fn throughput(verbose: bool, what: &str, bytes: u64, start: Instant) {
    if verbose {
        let s = start.elapsed().as_secs_f64().max(1e-6);
        eprintln!(
            "relink: {what} {bytes} bytes in {s:.2} s ({:.1} MiB/s)",
            bytes as f64 / s / 1_048_576.0
        );
    }
}
