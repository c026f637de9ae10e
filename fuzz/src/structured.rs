//! The structured target's plan and its run: an `arbitrary` sequence of
//! operations on a client and a server joined by the shared in-memory
//! harness ([`Net`] at flush pace), then a heal and the stream invariant.
//!
//! Operations: either application writes `n` bytes of its pattern; either
//! application stops or resumes reading (back-pressure); steps of 1 ms
//! (transmit, deliver in random chunks, read, timers); the transport is cut
//! (in-flight bytes lost) or goes half-open (late bytes arrive later); the
//! client reconnects (handshake or resume); bytes in flight are lost from
//! the tail of a pipe while the transport lives on (the receiver sees a
//! frame cut short and then the next one); clock steps on both clocks or on
//! the server's alone (a sleeping client); `request_rekey`, `close` and
//! `abort` on either side; a server restart.
//!
//! Checks, with the fuzzing build's zero-tag bypass off (see
//! [`crate::allow_forgery`]):
//! - byte-exact, no duplicate, nothing foreign: every byte either
//!   application reads equals the writer's pattern at that offset, counted
//!   across sessions and restarts (the harness's `violations`);
//! - no side ever ends the session `DataUnavailable` (every loss here is
//!   in flight, so the bytes are still in the sender's buffer);
//! - after the heal (a fresh transport, faithful delivery, both
//!   applications reading) everything written arrived, unless the client's
//!   session ended with a reason other than `Clean` or the server's session
//!   ended with one (expired, aborted, restarted, too many failures).
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use relink::{AbortCode, CloseReason, Duration, Event, ServerEvent};

use crate::{allow_forgery, configs, Net};

/// Bytes either application writes at most (volume costs speed and finds
/// nothing that a few frames do not).
pub const WRITE_CAP: u64 = 32 * 1024;

/// One operation of a [`Plan`].
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// The client's application writes `n % 20_000` bytes (at most
    /// [`WRITE_CAP`] in all).
    ClientWrite(u16),
    /// The server's application writes `n % 20_000` bytes (at most
    /// [`WRITE_CAP`] in all).
    ServerWrite(u16),
    /// `1 + n % 32` harness steps of 1 ms.
    Steps(u8),
    /// The client's application reads during steps (or stops reading).
    ClientReads(bool),
    /// The server's application reads during steps (or stops reading).
    ServerReads(bool),
    /// The transport breaks; in-flight bytes are lost.
    Cut,
    /// The client's side breaks, the server does not notice; what the
    /// client wrote stays in flight.
    HalfOpen,
    /// The half-open transports deliver their late bytes, then close.
    DeliverStale,
    /// The client opens a new transport (handshake or resume) and runs
    /// until connected or refused.
    Connect,
    /// Both sides transmit, then the last `n % 4096` bytes in flight
    /// towards the server (`up`) or the client are lost; the transport
    /// lives on.
    Lose {
        /// The client-to-server pipe (else server-to-client).
        up: bool,
        /// Bytes lost (modulo 4096).
        n: u16,
    },
    /// Clocks advance by `ms * 50` ms (both, or the server's alone), then
    /// due timers run.
    Clock {
        /// Only the server's clock (the client sleeps).
        server_only: bool,
        /// Units of 50 ms.
        ms: u16,
    },
    /// `request_rekey` on the client or on the server's session.
    Rekey {
        /// The client (else the server).
        client: bool,
    },
    /// `close` on the client or on the server's session.
    Close {
        /// The client (else the server).
        client: bool,
    },
    /// `abort` on the client or on the server's session.
    Abort {
        /// The client (else the server).
        client: bool,
        /// The application's code.
        code: u32,
    },
    /// The server restarts: every session is gone.
    RestartServer,
}

/// What the structured target runs: a seed (RNGs, chunk sizes), a
/// configuration (see [`crate::configs`]) and up to 64 operations.
#[derive(Arbitrary, Debug, Clone)]
pub struct Plan {
    /// Seeds the harness.
    pub seed: u8,
    /// Picks the configuration.
    pub config: u8,
    /// The operations, in order (the first 64 run).
    pub ops: Vec<Op>,
}

/// What a [`run`] saw, for the tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Client bytes written / read by the server applications.
    pub up: (u64, u64),
    /// Server bytes written / read by the client.
    pub down: (u64, u64),
    /// Why the client's session ended, if it did.
    pub client_end: Option<CloseReason>,
    /// Why the server's session ended (the last one seen), if it did.
    pub server_end: Option<CloseReason>,
    /// Resumes the client completed.
    pub resumes: u32,
    /// Rekeys either side completed.
    pub rekeys: u32,
    /// Whether the final delivery check ran.
    pub delivery_checked: bool,
}

fn apply(net: &mut Net, op: Op) {
    match op {
        Op::ClientWrite(n) => {
            let room = WRITE_CAP.saturating_sub(net.up_written());
            net.client_write(usize::from(n % 20_000).min(room as usize));
        }
        Op::ServerWrite(n) => {
            let room = WRITE_CAP.saturating_sub(net.down[&net.generation].written);
            net.server_write(usize::from(n % 20_000).min(room as usize));
        }
        Op::Steps(n) => {
            for _ in 0..=(n % 32) {
                net.step();
            }
        }
        Op::ClientReads(on) => net.client_reads = on,
        Op::ServerReads(on) => net.server_reads = on,
        Op::Cut => net.brk(),
        Op::HalfOpen => net.half_open(),
        Op::DeliverStale => net.deliver_stale(),
        Op::Connect => {
            net.connect();
        }
        Op::Lose { up, n } => {
            net.transmit();
            let pipe = if up { &mut net.c2s } else { &mut net.s2c };
            let keep = pipe.len().saturating_sub(usize::from(n % 4096));
            pipe.truncate(keep);
        }
        Op::Clock { server_only, ms } => {
            let d = Duration::from_millis(u64::from(ms) * 50);
            if server_only {
                net.tick_server(d);
            } else {
                net.tick(d);
            }
            net.timers();
        }
        Op::Rekey { client } => {
            if client {
                let _ = net.client.request_rekey();
            } else if let Some(s) = net.current_session() {
                let _ = net.server.request_rekey(s);
            }
        }
        Op::Close { client } => {
            if client {
                net.client.close();
            } else if let Some(s) = net.current_session() {
                let _ = net.server.close(s);
            }
        }
        Op::Abort { client, code } => {
            if client {
                net.client.abort(AbortCode(code));
            } else if let Some(s) = net.current_session() {
                let _ = net.server.abort(s, AbortCode(code));
            }
        }
        Op::RestartServer => net.restart_server(),
    }
    net.drain();
}

/// Stop the faults: fresh transports, faithful delivery, both applications
/// reading, until everything written arrived or the client's session is
/// over.
fn heal(net: &mut Net) {
    net.client_reads = true;
    net.server_reads = true;
    net.deliver_stale();
    for _ in 0..100 {
        net.server_read();
        net.client_read();
        let g = net.generation;
        if net.up[&g].read == net.up[&g].written && net.down[&g].read == net.down[&g].written {
            break;
        }
        if net.client.is_closed() {
            break;
        }
        if net.tid.is_none() || net.ended || !net.client.is_connected() {
            net.brk();
            if !net.connect() {
                continue;
            }
        }
        net.settle(400);
        // A transport that lost bytes but lives on stalls until a timer
        // fires (keepalive, idle timeout): let time pass as it would.
        net.tick(Duration::from_secs(1));
        net.timers();
    }
    net.server_read();
    net.client_read();
}

/// Run `plan` and check the stream invariant (panics on a violation).
pub fn run(plan: &Plan) -> Outcome {
    allow_forgery(false);
    let (c, s) = configs(plan.config);
    let mut net = Net::new(u64::from(plan.seed), c, s);
    // Connected, and the server has the session (the client's confirm
    // arrived).
    net.connect();
    net.settle(50);
    for &op in plan.ops.iter().take(64) {
        apply(&mut net, op);
        net.assert_no_violations();
    }
    heal(&mut net);
    net.assert_no_violations();

    let g = net.generation;
    let mut out = Outcome {
        up: (net.up[&g].written, net.up[&g].read),
        down: (net.down[&g].written, net.down[&g].read),
        client_end: net.client.close_reason(),
        ..Outcome::default()
    };
    for e in &net.cev {
        match e {
            Event::Resumed { .. } => out.resumes += 1,
            Event::Rekeyed { .. } => out.rekeys += 1,
            _ => {}
        }
    }
    for e in &net.sev {
        match e {
            ServerEvent::Closed { reason, .. } => out.server_end = Some(*reason),
            ServerEvent::SessionExpired { .. } => out.server_end = Some(CloseReason::Expired),
            ServerEvent::Rekeyed { .. } => out.rekeys += 1,
            _ => {}
        }
    }
    for reason in [&out.client_end, &out.server_end] {
        assert_ne!(
            *reason,
            Some(CloseReason::DataUnavailable),
            "data declared lost although every loss was in flight: {out:?}"
        );
    }
    assert!(out.up.1 <= out.up.0 && out.down.1 <= out.down.0, "{out:?}");
    let clean = |r: &Option<CloseReason>| matches!(r, None | Some(CloseReason::Clean));
    if clean(&out.client_end) && clean(&out.server_end) && net.incarnation == 0 {
        out.delivery_checked = true;
        assert_eq!(out.up.1, out.up.0, "client data not delivered: {out:?}");
        assert_eq!(out.down.1, out.down.0, "server data not delivered: {out:?}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(seed: u8, config: u8, ops: &[Op]) -> Plan {
        Plan {
            seed,
            config,
            ops: ops.to_vec(),
        }
    }

    #[test]
    fn delivers_everything_across_cuts_losses_and_rekeys() {
        let ops = [
            Op::ClientWrite(15_000),
            Op::ServerWrite(12_000),
            Op::Lose { up: true, n: 700 },
            Op::Steps(5),
            Op::Rekey { client: true },
            Op::ServerWrite(3000),
            Op::Steps(3),
            Op::Cut,
            Op::Connect,
            Op::Rekey { client: false },
            Op::ClientWrite(9000),
            Op::Steps(10),
        ];
        for config in 0..3 {
            let out = run(&plan(4, config, &ops));
            assert!(out.delivery_checked, "{out:?}");
            // (configuration 1 has a 4 KiB send buffer: writes are partial)
            assert!(out.up.0 >= 4096 && out.up.0 == out.up.1, "{out:?}");
            assert!(out.down.0 >= 4096 && out.down.0 == out.down.1, "{out:?}");
            if config != 1 {
                assert_eq!(out.up, (24_000, 24_000), "{out:?}");
                assert_eq!(out.down, (15_000, 15_000), "{out:?}");
            }
            assert!(out.resumes >= 1, "{out:?}");
            assert!(out.rekeys >= 1, "{out:?}");
        }
    }

    /// Found by the fuzzer (fuzz/regressions/structured/
    /// lost-tail-stalls-without-time): the tail of the server's last frame
    /// is lost while the transport lives on; the client waits for the rest
    /// of that frame, the server for an ACK. Only time (keepalive, idle
    /// timeout) ends the stall, so the heal lets time pass; then the data
    /// arrives by a resume.
    #[test]
    fn a_lost_tail_is_recovered_once_time_passes() {
        let ops = [Op::ServerWrite(16_841), Op::Lose { up: false, n: 1188 }];
        let out = run(&plan(47, 2, &ops));
        assert!(out.delivery_checked, "{out:?}");
        assert_eq!(out.down, (16_841, 16_841), "{out:?}");
        assert!(out.resumes >= 1, "{out:?}");
    }

    #[test]
    fn an_abort_ends_the_session_for_a_typed_reason() {
        let ops = [
            Op::ClientWrite(5000),
            Op::Abort {
                client: false,
                code: 7,
            },
            Op::Steps(3),
        ];
        let out = run(&plan(5, 0, &ops));
        assert!(
            matches!(out.client_end, Some(CloseReason::Aborted { .. })),
            "{out:?}"
        );
        assert!(!out.delivery_checked);
    }

    #[test]
    fn a_sleeping_client_finds_its_session_expired() {
        // 2500 * 50 ms = 125 s on the server alone: past the 120 s resume
        // timeout of the fuzz configurations.
        let ops = [
            Op::ServerWrite(100),
            Op::Cut,
            Op::Clock {
                server_only: true,
                ms: 2500,
            },
            Op::Connect,
        ];
        let out = run(&plan(6, 0, &ops));
        assert_eq!(out.server_end, Some(CloseReason::Expired), "{out:?}");
        assert!(out.client_end.is_some(), "{out:?}");
    }
}
