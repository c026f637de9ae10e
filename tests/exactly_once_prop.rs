//! Issue 9, acceptance: a property test. A client and a server go through
//! random sequences of writes both ways, reads, cuts, in-flight bytes lost
//! in either direction, session expiry, server restarts (a fresh `Server`
//! with the same static key), clock jumps of either side (seconds to hours;
//! one side's clock runs while the other's stands still, so the client's
//! estimate of the server clock goes wrong either way), forged
//! unauthenticated answers to resume attempts, half-open transports whose
//! in-flight bytes reach the server late (after the session moved to a new
//! transport), aborts and closes.
//!
//! After every step:
//! - every byte an application read is the peer's byte at that offset, over
//!   every server session and every server incarnation: a prefix of what the
//!   peer wrote, nothing twice, nothing foreign (`relink_test_support::harness::Net`);
//! - the server never registers a second session for one client (the
//!   client never starts over on its own);
//! - the client never counts as acknowledged a byte the server did not
//!   verify;
//! - once the client's session ended other than cleanly, `in_doubt()` is
//!   exactly `[acknowledged, written)`: it ends at the bytes written, starts
//!   at the client's acknowledged count (never below an acknowledgement it
//!   had seen) and everything below its start was verified by the server.
//!
//! At the end of each case the faults stop: a client whose session is
//! still alive must complete the transfer both ways (or end with a typed
//! close satisfying the same invariants).
//!
//! Deterministic: a fixed proptest seed and seeded RNGs everywhere. With
//! `EO_STATS=1` (and `--nocapture`) every case prints a summary line, to
//! review what the generator covers.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, RngSeed};
use relink::{AbortCode, CloseReason, Config, Duration, Instant, StaticKeypair};
use relink_test_support::harness::*;

#[derive(Debug, Clone)]
enum Op {
    ClientWrite(u16),
    ServerWrite(u16),
    /// Run this many 1 ms rounds.
    Pump(u8),
    /// Deliver a prefix of what is in flight each way (parts per 256), lose
    /// the rest, break.
    Cut(u8, u8),
    /// Everything in flight towards the server (`true`) or the client is
    /// lost; the transport breaks.
    Lose(bool),
    /// The client driver opens a transport (a new client once the last
    /// session ended) and runs until connected or failed.
    Reconnect,
    /// Both clocks run past the server's resume timeout.
    Expire,
    /// A fresh server process (same static key); `true`: its clock restarts
    /// from zero too (a reboot).
    RestartServer(bool),
    /// Only one side's clock advances, by this many seconds: `true` the
    /// client's.
    ClockJump(bool, u32),
    /// Both clocks advance (seconds); timers run.
    Idle(u16),
    /// A resume (or handshake) attempt answered by an attacker.
    Forged(u8, u64),
    AbortClient(u16),
    AbortServer(u16),
    CloseClient,
    CloseServer,
    /// The client's end of the transport dies unnoticed by the server (half
    /// open); its in-flight bytes stay on the old transport.
    HalfOpen,
    /// Half-open transports deliver their late bytes, then close.
    DeliverStale,
    /// The server application stops (`false`) or resumes reading: its
    /// receive buffer fills and back-pressure reaches the client.
    ServerReads(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (1u16..20_000).prop_map(Op::ClientWrite),
        8 => (1u16..20_000).prop_map(Op::ServerWrite),
        16 => (1u8..60).prop_map(Op::Pump),
        6 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Cut(a, b)),
        4 => any::<bool>().prop_map(Op::Lose),
        16 => Just(Op::Reconnect),
        1 => Just(Op::Expire),
        1 => any::<bool>().prop_map(Op::RestartServer),
        6 => (any::<bool>(), prop_oneof![1u32..120, 120u32..3_600, 3_600u32..4 * 3_600])
            .prop_map(|(c, s)| Op::ClockJump(c, s)),
        4 => (1u16..30).prop_map(Op::Idle),
        5 => (0u8..6, any::<u64>()).prop_map(|(k, s)| Op::Forged(k, s)),
        1 => (0u16..0x200).prop_map(Op::AbortClient),
        1 => (0u16..0x200).prop_map(Op::AbortServer),
        1 => Just(Op::CloseClient),
        1 => Just(Op::CloseServer),
        2 => any::<bool>().prop_map(Op::ServerReads),
        3 => Just(Op::HalfOpen),
        3 => Just(Op::DeliverStale),
    ]
}

/// What the checks remember between steps, per client generation.
#[derive(Default)]
struct Track {
    /// Highest acknowledged count the client showed while alive.
    acked_seen: BTreeMap<u64, u64>,
    /// Highest count of client bytes the server verified (read by its
    /// application or buffered for it).
    verified_max: BTreeMap<u64, u64>,
    /// Generations whose server session the server application aborted:
    /// from then on the server verifies and counts the client's bytes but
    /// discards them (nobody will read them), so "verified" is unknown.
    server_aborted: BTreeSet<u64>,
}

fn forged_bytes(kind: u8, seed: u64) -> Vec<u8> {
    let mut r = rng(seed);
    let mut random = |n: usize| {
        let mut v = vec![0u8; n];
        for b in v.iter_mut() {
            *b = between(&mut r, 0, 255) as u8;
        }
        v
    };
    match kind {
        0 => vec![0x01, 0x02], // unknown session
        1 => vec![0x01, 0x03], // auth failed
        2 => vec![0x01, 0x01], // unsupported version
        3 => {
            let n = (seed % 90) as usize + 1;
            random(n)
        }
        4 => {
            // "Stale" with a made-up server time and tag.
            let mut v = vec![0x01, 0x05];
            v.extend(random(64));
            v
        }
        _ => {
            // "Ok" with made-up counts and tag.
            let mut v = vec![0x01, 0x00];
            v.extend(random(80));
            v
        }
    }
}

fn apply(net: &mut Net, tr: &mut Track, op: &Op) {
    match *op {
        Op::ClientWrite(n) => {
            net.client_write(n as usize);
        }
        Op::ServerWrite(n) => {
            net.server_write(n as usize);
        }
        Op::Pump(n) => {
            for _ in 0..n {
                net.step();
                if net.ended {
                    net.flush_break();
                    break;
                }
            }
        }
        Op::Cut(a, b) => {
            net.transmit();
            let keep = net.c2s.len() * a as usize / 256;
            net.c2s.truncate(keep);
            let keep = net.s2c.len() * b as usize / 256;
            net.s2c.truncate(keep);
            net.deliver(u64::MAX);
            net.brk();
        }
        Op::Lose(to_server) => {
            net.transmit();
            if to_server {
                net.c2s.clear();
            } else {
                net.s2c.clear();
            }
            net.deliver(u64::MAX);
            net.brk();
        }
        Op::Reconnect => {
            if net.tid.is_some() {
                if !net.ended {
                    return;
                }
                net.flush_break();
            }
            if net.client.is_closed() {
                net.new_client();
            }
            net.connect();
        }
        Op::Expire => {
            net.brk();
            let d = net.scfg.resume_timeout.as_micros() + 1_000_000;
            net.tick(Duration::from_micros(d));
            net.timers();
        }
        Op::RestartServer(reboot) => {
            net.restart_server();
            if reboot {
                net.snow = Instant::from_micros(1_000_000);
            }
        }
        Op::ClockJump(client, s) => {
            if client {
                net.tick_client(Duration::from_secs(s as u64));
            } else {
                net.tick_server(Duration::from_secs(s as u64));
            }
            net.timers();
            if net.ended {
                net.flush_break();
            }
        }
        Op::Idle(s) => {
            net.tick(Duration::from_secs(s as u64));
            net.timers();
            if net.ended {
                net.flush_break();
            }
        }
        Op::Forged(kind, seed) => {
            if net.client.is_closed() {
                return;
            }
            net.brk(); // the attacker cuts the real transport
            net.forged_answer(&forged_bytes(kind, seed));
        }
        Op::AbortClient(code) => net.client.abort(AbortCode(code as u32)),
        Op::AbortServer(code) => {
            if let Some(s) = net.current_session() {
                if net.server.abort(s, AbortCode(code as u32)).is_ok() {
                    tr.server_aborted.insert(net.generation);
                }
            }
        }
        Op::CloseClient => net.client.close(),
        Op::CloseServer => {
            if let Some(s) = net.current_session() {
                let _ = net.server.close(s);
            }
        }
        Op::ServerReads(on) => net.server_reads = on,
        Op::HalfOpen => net.half_open(),
        Op::DeliverStale => net.deliver_stale(),
    }
}

fn check(net: &Net, tr: &mut Track, ctx: &dyn Fn() -> String) {
    if !net.violations.is_empty() {
        panic!("{}\n{}", net.violations.join("\n"), ctx());
    }
    let g = net.generation;
    assert!(
        net.sessions_of_generation() <= 1,
        "the server registered {} sessions for one client\n{}",
        net.sessions_of_generation(),
        ctx()
    );
    let buffered: u64 = net
        .sessions
        .iter()
        .filter(|s| s.generation == g && s.incarnation == net.incarnation)
        .map(|s| net.server.readable(s.sid) as u64)
        .sum();
    let verified = tr.verified_max.entry(g).or_default();
    *verified = (*verified).max(net.up_read() + buffered);
    let verified = *verified;
    let written = net.client.bytes_written();
    assert_eq!(written, net.up_written(), "bytes_written\n{}", ctx());
    let acked = written - net.client.unacked() as u64;
    let discarding = tr.server_aborted.contains(&g);
    let seen = tr.acked_seen.entry(g).or_default();
    assert!(
        acked >= *seen,
        "acknowledged count went back from {} to {acked}\n{}",
        *seen,
        ctx()
    );
    assert!(
        acked <= verified || discarding,
        "client counts {acked} bytes as acknowledged, the server verified {verified}\n{}",
        ctx()
    );
    match net.client.close_reason() {
        None => {
            assert_eq!(net.client.in_doubt(), None, "{}", ctx());
            *seen = acked;
        }
        Some(CloseReason::Clean) => {
            assert_eq!(net.client.in_doubt(), None, "{}", ctx());
            assert_eq!(
                acked,
                written,
                "clean close with unacknowledged bytes\n{}",
                ctx()
            );
        }
        Some(reason) => {
            let d = net
                .client
                .in_doubt()
                .unwrap_or_else(|| panic!("closed {reason:?} without in_doubt\n{}", ctx()));
            assert_eq!(d.end, written, "in_doubt end ({reason:?})\n{}", ctx());
            assert_eq!(d.start, acked, "in_doubt start ({reason:?})\n{}", ctx());
            assert!(
                d.start <= verified || discarding,
                "in_doubt starts at {} but the server verified only {verified}\n{}",
                d.start,
                ctx()
            );
        }
    }
}

/// Faults stop: drive the client like a driver until the transfer is
/// complete both ways or the session ended.
fn finish(net: &mut Net, tr: &mut Track, ctx: &dyn Fn() -> String) {
    net.server_reads = true;
    for _ in 0..60 {
        if net.client.is_closed() {
            break;
        }
        if net.tid.is_none() || net.ended {
            if net.tid.is_some() {
                net.flush_break();
            }
            net.tick(Duration::from_secs(1));
            net.timers();
            net.connect();
        }
        net.settle(3_000);
        net.tick(Duration::from_millis(50));
        net.timers();
        check(net, tr, ctx);
        let g = net.generation;
        if net.up_read() == net.up_written()
            && net.down[&g].read == net.down[&g].written
            && net.client.unacked() == 0
        {
            break;
        }
    }
    check(net, tr, ctx);
    let g = net.generation;
    if !net.client.is_closed() {
        assert_eq!(
            net.up_read(),
            net.up_written(),
            "live session did not deliver the client's bytes\n{}",
            ctx()
        );
        assert_eq!(
            net.down[&g].read,
            net.down[&g].written,
            "live session did not deliver the server's bytes\n{}",
            ctx()
        );
    }
}

fn run_case(seed: u64, ops: &[Op]) {
    let key = StaticKeypair::from_secret_bytes([0x3C; 32]);
    let ccfg = Config {
        pinned_server_key: Some(key.public_key()),
        send_buffer: 64 * 1024,
        recv_buffer: 32 * 1024,
        ..Config::default()
    };
    let scfg = Config {
        server_static: Some(key),
        send_buffer: 64 * 1024,
        recv_buffer: 32 * 1024,
        resume_timeout: Duration::from_secs(600),
        ..Config::default()
    };
    let mut net = Net::new(seed, ccfg, scfg);
    let mut tr = Track::default();
    for (i, op) in ops.iter().enumerate() {
        apply(&mut net, &mut tr, op);
        let ctx = || {
            format!(
                "after step {i} {op:?} of {ops:?}\nclient {:?} close {:?} in_doubt {:?}, \
                 generation {}, incarnation {}\nclient events {:?}\nserver events {:?}",
                net.client,
                net.client.close_reason(),
                net.client.in_doubt(),
                net.generation,
                net.incarnation,
                &net.cev[net.cev.len().saturating_sub(6)..],
                &net.sev[net.sev.len().saturating_sub(6)..]
            )
        };
        check(&net, &mut tr, &ctx);
    }
    let summary = format!("{ops:?}");
    finish(&mut net, &mut tr, &|| summary.clone());
    if std::env::var_os("EO_STATS").is_some() {
        eprintln!(
            "STATS gens {} incarn {} up {:?} down {:?} close {:?} resumes {} sessions {}",
            net.generation,
            net.incarnation,
            net.up,
            net.down,
            net.client.close_reason(),
            net.sev
                .iter()
                .filter(|e| matches!(e, relink::ServerEvent::Resumed { .. }))
                .count(),
            net.sessions.len()
        );
    }
}

proptest! {
    #![proptest_config(PtConfig {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x0009_E0E0),
        failure_persistence: None,
        ..PtConfig::default()
    })]

    #[test]
    fn exactly_once_under_random_faults(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..64),
    ) {
        run_case(seed, &ops);
    }
}

/// A fixed long sequence (the property test's ops, written out), so one
/// scenario with every kind of fault always runs.
#[test]
fn every_fault_once() {
    use Op::*;
    run_case(
        7,
        &[
            ClientWrite(9_000),
            Reconnect,
            ServerWrite(5_000),
            Pump(20),
            Cut(100, 30),
            Forged(0, 1),
            Forged(4, 2),
            Forged(5, 3),
            Reconnect,
            Pump(10),
            ClockJump(false, 90),
            Lose(true),
            Reconnect,
            ClientWrite(3_000),
            Pump(30),
            ClockJump(true, 3_600),
            Reconnect,
            Pump(30),
            Lose(false),
            Forged(3, 9),
            Reconnect,
            ClientWrite(4_000),
            Pump(5),
            RestartServer(false),
            Reconnect,
            Reconnect,
            Reconnect,
            Reconnect,
            ClientWrite(2_000),
            Reconnect,
            Pump(20),
            Expire,
            Reconnect,
            Reconnect,
            Reconnect,
            Reconnect,
            Reconnect,
            ClientWrite(100),
            Pump(10),
            AbortClient(0x101),
            Pump(10),
            Reconnect,
            ClientWrite(700),
            Pump(10),
            AbortServer(4),
            Cut(200, 200),
            Reconnect,
            Pump(10),
            Reconnect,
            CloseClient,
            Pump(10),
            CloseServer,
            Pump(20),
        ],
    );
}
