//! Issue 11, acceptance: a property test of rekeying. Random rekey points
//! (client or server initiates, the application asks, the byte and time
//! policies fire, the server orders at a hard limit) interleaved with
//! writes both ways, partial deliveries, breaks and resumes, and time
//! passing, under small random byte and time policies.
//!
//! Checked:
//! - both streams stay byte-exact (the harness checks every byte read
//!   against the writer's pattern) and complete once the faults stop;
//! - the keystream logs of both sides never show one (key, offset) pair
//!   with two different plaintext bytes ("no keystream position is used
//!   twice under one key"; identical resends are the only repeats, design
//!   §2.3 / R10), and the two directions never share a key;
//! - at quiescence neither side holds a retired key (one epoch each, the
//!   same one).
//!
//! Deterministic: a fixed proptest seed and seeded RNGs. Needs the
//! `test-hooks` feature (`cargo test --all-features`).
#![cfg(feature = "test-hooks")]

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, RngSeed};
use relink::{Config, Duration, KeyEpochs};
use relink_test_support::harness::Net;

#[derive(Debug, Clone)]
enum Op {
    SendClient(u16),
    SendServer(u16),
    /// Transmit, then deliver up to this many bytes each way.
    Deliver(u16),
    /// Transmit, then deliver up to this many bytes one way only (`true`:
    /// client to server).
    DeliverOneWay(bool, u16),
    Break,
    Resume,
    ClientRekey,
    ServerRekey,
    /// Both clocks pass the current epoch's hard time limit: the server
    /// orders a rekey.
    ServerOrder,
    /// Both clocks advance (ms); timers run.
    Advance(u16),
    /// One side closes its stream (`true`: the client); only the first
    /// close of a case is carried out, so the session stays half open and
    /// keeps rekeying (PROTOCOL.md 6.8 rule 8; a marker written after the
    /// CLOSE, lost in a break, is the issue 13 soak finding).
    Close(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u16>().prop_map(Op::SendClient),
        4 => any::<u16>().prop_map(Op::SendServer),
        4 => any::<u16>().prop_map(Op::Deliver),
        4 => (any::<bool>(), any::<u16>()).prop_map(|(d, k)| Op::DeliverOneWay(d, k)),
        1 => Just(Op::Break),
        2 => Just(Op::Resume),
        2 => Just(Op::ClientRekey),
        2 => Just(Op::ServerRekey),
        1 => Just(Op::ServerOrder),
        2 => (1u16..5000).prop_map(Op::Advance),
        1 => any::<bool>().prop_map(Op::Close),
    ]
}

/// Policy of one side: `bytes` KiB soft, `secs` s soft, hard at twice.
fn policy(bytes: u64, secs: u64) -> Config {
    Config {
        rekey_after_bytes: bytes * 1024,
        key_lifetime_bytes: bytes * 2048,
        rekey_after_time: Duration::from_secs(secs),
        key_lifetime: Duration::from_secs(secs * 2),
        rekey_grace: Duration::from_secs(3600),
        ..Config::default()
    }
}

type Log = Vec<([u8; 8], u64, u8)>;

/// Every (key, offset) carries one plaintext byte.
fn check_log(all: &mut BTreeMap<([u8; 8], u64), u8>, log: Log) -> Result<(), TestCaseError> {
    for (id, off, b) in log {
        if let Some(old) = all.insert((id, off), b) {
            prop_assert_eq!(old, b, "key {:?} offset {} carried two bytes", id, off);
        }
    }
    Ok(())
}

fn idle(e: u32) -> KeyEpochs {
    KeyEpochs {
        tx: [Some(e), None],
        rx: [Some(e), None],
        resume: [Some(e), None],
        chain: e,
        ephemeral_held: false,
    }
}

proptest! {
    #![proptest_config(PtConfig {
        cases: 64,
        rng_seed: RngSeed::Fixed(0x0011_4E4E),
        failure_persistence: None,
        ..PtConfig::default()
    })]

    #[test]
    fn rekeys_under_random_breaks_keep_streams_exact_and_keystream_unique(
        seed in any::<u64>(),
        cbytes in 1u64..=64,
        sbytes in 1u64..=64,
        csecs in 1u64..=30,
        ssecs in 1u64..=30,
        ops in prop::collection::vec(op(), 1..48),
    ) {
        let mut n = Net::new(seed, policy(cbytes, csecs), policy(sbytes, ssecs));
        let sid = n.handshake();
        // The first call switches recording on.
        let _ = n.client.take_keystream_log();
        let _ = n.server.take_keystream_log(sid);
        let mut up: BTreeMap<([u8; 8], u64), u8> = BTreeMap::new();
        let mut down: BTreeMap<([u8; 8], u64), u8> = BTreeMap::new();
        let mut closed = false;
        for op in ops {
            match op {
                Op::SendClient(k) => {
                    n.client_write(usize::from(k));
                }
                Op::SendServer(k) => {
                    n.server_write(usize::from(k));
                }
                Op::Deliver(k) => {
                    n.transmit();
                    n.deliver(u64::from(k));
                    n.timers();
                }
                Op::DeliverOneWay(c2s, k) => {
                    n.transmit();
                    let (keep_up, keep_down) = (n.c2s.clone(), n.s2c.clone());
                    if c2s {
                        n.s2c.clear();
                    } else {
                        n.c2s.clear();
                    }
                    n.deliver(u64::from(k));
                    if c2s {
                        n.s2c = keep_down;
                    } else {
                        n.c2s = keep_up;
                    }
                    n.timers();
                }
                Op::Break => n.brk(),
                Op::Resume => {
                    if !n.client.is_connected() {
                        n.connect();
                    }
                }
                Op::ClientRekey => {
                    let _ = n.client.request_rekey();
                }
                Op::ServerRekey => {
                    let _ = n.server.request_rekey(sid);
                }
                Op::ServerOrder => {
                    n.tick(Duration::from_secs(ssecs * 2));
                    n.timers();
                }
                Op::Advance(ms) => {
                    n.tick(Duration::from_millis(u64::from(ms)));
                    n.timers();
                }
                Op::Close(client) if !closed => {
                    closed = true;
                    if client {
                        n.client.close();
                    } else {
                        let _ = n.server.close(sid);
                    }
                }
                Op::Close(_) => {}
            }
            check_log(&mut up, n.client.take_keystream_log())?;
            check_log(&mut down, n.server.take_keystream_log(sid).unwrap_or_default())?;
            prop_assert!(n.client.close_reason().is_none(), "closed: {:?}", n.cev);
        }
        // Faults stop: resume and run to quiescence.
        for _ in 0..10 {
            if n.client.is_connected() || n.connect() {
                break;
            }
        }
        prop_assert!(n.client.is_connected(), "{:?}", n.cev);
        n.settle(20_000);
        check_log(&mut up, n.client.take_keystream_log())?;
        check_log(&mut down, n.server.take_keystream_log(sid).unwrap_or_default())?;
        n.assert_no_violations();
        let g = n.generation;
        prop_assert_eq!(n.up[&g].read, n.up[&g].written);
        prop_assert_eq!(n.down[&g].read, n.down[&g].written);
        // The directions never share a key.
        let up_keys: std::collections::BTreeSet<_> = up.keys().map(|k| k.0).collect();
        prop_assert!(down.keys().all(|k| !up_keys.contains(&k.0)));
        // Quiescent: one epoch on both sides, no retired key held.
        let e = n.client.epoch();
        if std::env::var_os("REKEY_STATS").is_some() {
            eprintln!("epoch {e} keys {} up {} down {}", up.len(), n.up[&g].written, n.down[&g].written);
        }
        prop_assert_eq!(n.client.key_epochs(), Some(idle(e)));
        let s = n.server.connection(sid).and_then(|c| c.key_epochs());
        prop_assert_eq!(s, Some(idle(e)));
        // Each key protected at most the hard byte limit of its side.
        let mut span: BTreeMap<[u8; 8], (u64, u64)> = BTreeMap::new();
        for (id, off) in up.keys().chain(down.keys()) {
            let s = span.entry(*id).or_insert((*off, *off));
            s.0 = s.0.min(*off);
            s.1 = s.1.max(*off);
        }
        let limit = cbytes.max(sbytes) * 2048;
        prop_assert!(span.values().all(|(lo, hi)| hi - lo < limit));
    }
}
