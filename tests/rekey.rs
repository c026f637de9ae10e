//! The rekey exchange end to end (PROTOCOL.md 4.8, 5.4, 5.5, 6.8, 7.8), on
//! the in-memory harness: epochs advance with data flowing both ways, old
//! keys are gone, stolen resume keys stop working, a break after any frame
//! of an exchange resumes byte-exact, crossing and duplicate INITs make
//! one exchange, pinned sessions rekey with `es`, and the policy: byte and
//! time triggers, the server's order, the grace and `KEY_EXPIRED`, the
//! hard byte limit's back-pressure, `rekey = false`.
//!
//! Needs the `test-hooks` feature (`cargo test --all-features`).
#![cfg(feature = "test-hooks")]

use relink::time::Duration;
use relink::wire::{ResumeRequest, ResumeStatus, RESUME_REQUEST_LEN, VERSION};
use relink::{
    AbortCode, CloseReason, Config, Event, KeyEpochs, ServerEvent, SessionId, StaticKeypair,
};
use relink_test_support::harness::Net;

/// One epoch held, nothing transitional: the state of an idle session.
fn idle(epoch: u32) -> KeyEpochs {
    KeyEpochs {
        tx: [Some(epoch), None],
        rx: [Some(epoch), None],
        resume: [Some(epoch), None],
        chain: epoch,
        ephemeral_held: false,
    }
}

fn client_rekeyed(n: &Net) -> Vec<u32> {
    n.cev
        .iter()
        .filter_map(|e| match e {
            Event::Rekeyed { epoch } => Some(*epoch),
            _ => None,
        })
        .collect()
}

fn server_rekeyed(n: &Net) -> Vec<u32> {
    n.sev
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Rekeyed { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect()
}

fn server_epochs(n: &Net, sid: SessionId) -> KeyEpochs {
    n.server
        .connection(sid)
        .and_then(|c| c.key_epochs())
        .expect("session keys")
}

/// Both streams complete and byte-exact (the harness checks every byte it
/// reads against the writer's pattern).
fn assert_streams_exact(n: &Net) {
    n.assert_no_violations();
    let g = n.generation;
    assert_eq!(n.up[&g].read, n.up[&g].written, "client → server complete");
    assert_eq!(
        n.down[&g].read, n.down[&g].written,
        "server → client complete"
    );
}

/// Frames (type, payload) in a captured byte stream of one direction.
fn frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_le_bytes([b[2], b[3]]) as usize;
        let total = 4 + len + 16;
        if b.len() < total {
            break;
        }
        out.push((b[0], b[4..4 + len].to_vec()));
        b = &b[total..];
    }
    out
}

fn no_policy() -> Config {
    Config {
        rekey: false,
        ..Config::default()
    }
}

#[test]
fn client_and_server_rekey_with_data_flowing_both_ways() {
    for server_starts in [false, true] {
        let mut n = Net::new(11, no_policy(), no_policy());
        let sid = n.handshake();
        n.client_write(100_000);
        n.server_write(100_000);
        n.transmit();
        n.deliver(30_000);
        if server_starts {
            n.server.request_rekey(sid).unwrap();
        } else {
            n.client.request_rekey().unwrap();
        }
        n.client_write(50_000);
        n.server_write(50_000);
        n.settle(2000);
        assert_streams_exact(&n);
        assert_eq!(client_rekeyed(&n), vec![1], "server_starts={server_starts}");
        assert_eq!(server_rekeyed(&n), vec![1]);
        assert_eq!(n.client.epoch(), 1);
        assert_eq!(n.server.epoch(sid), Some(1));
        assert_eq!(n.client.key_epochs(), Some(idle(1)));
        assert_eq!(server_epochs(&n, sid), idle(1));
        // A second and a third exchange.
        for e in 2..=3 {
            n.client.request_rekey().unwrap();
            n.client_write(10_000);
            n.server_write(10_000);
            n.settle(2000);
            assert_eq!(n.client.epoch(), e);
            assert_eq!(server_epochs(&n, sid), idle(e));
        }
        assert_streams_exact(&n);
    }
}

#[test]
fn keys_during_and_after_an_exchange() {
    let mut n = Net::new(12, no_policy(), no_policy());
    let sid = n.handshake();
    n.settle(100);
    assert_eq!(n.client.key_epochs(), Some(idle(0)));
    n.client.request_rekey().unwrap();
    n.transmit();
    // INIT written: the client holds its ephemeral, still one epoch.
    let k = n.client.key_epochs().unwrap();
    assert!(k.ephemeral_held);
    assert_eq!((k.chain, k.tx, k.rx), (0, [Some(0), None], [Some(0), None]));
    n.deliver(u64::MAX);
    n.transmit();
    // The server answered: epoch 1 derived, old keys kept, at most two.
    let s = server_epochs(&n, sid);
    assert_eq!(s.chain, 1);
    assert_eq!(
        s.tx,
        [Some(1), Some(0)],
        "REPLY written: send 0 below S, 1 above"
    );
    assert_eq!(s.rx, [Some(0), Some(1)], "the client's SWITCH not seen yet");
    assert_eq!(s.resume, [Some(1), Some(0)]);
    assert!(!s.ephemeral_held);
    n.settle(200);
    assert_eq!(n.client.key_epochs(), Some(idle(1)));
    assert_eq!(server_epochs(&n, sid), idle(1));
}

/// Keys of epoch N do not verify frames of epoch N+1 and the reverse: two
/// sessions from the same seeds reach the same transport position, one of
/// them after a rekey; a DATA frame of one fed to the other fails its tag.
#[test]
fn epoch_isolation() {
    let run = |rekey: bool| {
        let mut n = Net::new(13, no_policy(), no_policy());
        let sid = n.handshake();
        if rekey {
            n.client.request_rekey().unwrap();
        }
        n.settle(200);
        assert_eq!(n.client.epoch(), rekey as u32);
        n.brk();
        assert!(n.connect(), "resume");
        n.settle(50);
        // Same generation, sequence and offset in both sessions.
        n.server_write(1000);
        n.transmit();
        let captured = n.s2c.clone();
        (n, sid, captured)
    };
    let (mut a, _, frame0) = run(false);
    let (mut b, _, frame1) = run(true);
    assert_eq!(frames(&frame0)[0].0, 1, "a DATA frame");
    assert_eq!(frames(&frame1)[0].0, 1, "a DATA frame");
    assert_eq!(frame0.len(), frame1.len());
    assert_ne!(frame0, frame1, "different keys, different bytes");
    // Control: each frame verifies in its own session (the runs are
    // deterministic: a second run writes the same bytes).
    for (rekey, frame) in [(false, &frame0), (true, &frame1)] {
        let (mut c, _, again) = run(rekey);
        assert_eq!(&again, frame);
        let got = c.client.handle_input(c.cnow, frame);
        assert_eq!(got, Ok(frame.len()), "own frame verifies (rekey={rekey})");
        assert_eq!(c.client.readable(), 1000);
    }
    // Swapped: the tag fails, nothing is delivered.
    let before = a.client.readable();
    assert_eq!(
        a.client.handle_input(a.cnow, &frame1),
        Err(relink::Error::AuthFailed),
        "an epoch-1 frame under epoch-0 keys"
    );
    assert_eq!(a.client.readable(), before);
    assert_eq!(
        b.client.handle_input(b.cnow, &frame0),
        Err(relink::Error::AuthFailed),
        "an epoch-0 frame under epoch-1 keys"
    );
}

/// Deliver the first whole frame waiting in one direction (`c2s`: client
/// to server). Returns whether one was delivered.
fn deliver_one(n: &mut Net, c2s: bool) -> bool {
    let pipe = if c2s { &n.c2s } else { &n.s2c };
    if pipe.len() < 4 {
        return false;
    }
    let total = 4 + u16::from_le_bytes([pipe[2], pipe[3]]) as usize + 16;
    if pipe.len() < total {
        return false;
    }
    let bytes: Vec<u8> = pipe[..total].to_vec();
    let r = if c2s {
        let t = n.tid.expect("transport");
        n.server.handle_input(t, n.snow, &bytes)
    } else {
        n.client.handle_input(n.cnow, &bytes)
    };
    let took = match r {
        Ok(k) => k,
        Err(_) => {
            n.ended = true;
            total
        }
    };
    if c2s {
        n.c2s.drain(..took);
    } else {
        n.s2c.drain(..took);
    }
    n.drain();
    n.server_read();
    n.client_read();
    took > 0
}

/// How frames move in a round: `(c2s, s2c)` frames, the client's first
/// when `c2s_first`.
#[derive(Clone, Copy, Debug)]
struct Pattern {
    c2s: usize,
    s2c: usize,
    c2s_first: bool,
}

const PATTERNS: [Pattern; 4] = [
    Pattern {
        c2s: 1,
        s2c: 1,
        c2s_first: true,
    },
    Pattern {
        c2s: 1,
        s2c: 1,
        c2s_first: false,
    },
    Pattern {
        c2s: 3,
        s2c: 1,
        c2s_first: true,
    },
    Pattern {
        c2s: 1,
        s2c: 3,
        c2s_first: false,
    },
];

/// Move frames one at a time in rounds of `p` until `count` were
/// delivered or nothing moves.
fn deliver_frames(n: &mut Net, count: usize, p: Pattern) {
    let mut done = 0;
    while done < count {
        n.transmit();
        let mut moved = false;
        let order = if p.c2s_first {
            [(true, p.c2s), (false, p.s2c)]
        } else {
            [(false, p.s2c), (true, p.c2s)]
        };
        for (dir, k) in order {
            for _ in 0..k {
                if done < count && deliver_one(n, dir) {
                    done += 1;
                    moved = true;
                }
            }
        }
        if !moved {
            break;
        }
    }
}

/// Reconnect (a few attempts) and run to quiescence.
fn resume_and_settle(n: &mut Net) {
    for _ in 0..5 {
        if n.connect() {
            break;
        }
    }
    assert!(n.client.is_connected(), "resumed: {:?} {:?}", n.cev, n.sev);
    n.settle(5000);
}

/// The transport breaks after every frame of an exchange (both
/// initiators, both delivery orders, data in flight both ways, and a
/// second cut on the resumed transport while the marker may be re-sent):
/// both streams stay byte-exact, each side reports `Rekeyed { 1 }` exactly
/// once and ends with one epoch of keys (PROTOCOL.md 7.8 table).
#[test]
fn a_break_after_any_frame_of_an_exchange_resumes_byte_exact() {
    let cfg = Config {
        max_frame_payload: 4096,
        ..no_policy()
    };
    let mut cases = 0;
    for server_starts in [false, true] {
        for p in PATTERNS {
            for cut in 0..40 {
                let mut n = Net::new(20 + cut as u64, cfg.clone(), cfg.clone());
                let sid = n.handshake();
                n.settle(50);
                n.client_write(40_000);
                n.server_write(40_000);
                n.transmit();
                if server_starts {
                    n.server.request_rekey(sid).unwrap();
                } else {
                    n.client.request_rekey().unwrap();
                }
                n.client_write(20_000);
                n.server_write(20_000);
                deliver_frames(&mut n, cut, p);
                n.brk();
                // Second cut on the resumed transport, after a few frames
                // (while the marker may be being re-sent).
                if n.connect() {
                    deliver_frames(&mut n, cut % 7, PATTERNS[cut % 4]);
                    n.brk();
                }
                n.client_write(5_000);
                n.server_write(5_000);
                resume_and_settle(&mut n);
                let what = format!("server_starts={server_starts} {p:?} cut={cut}");
                n.assert_no_violations();
                let g = n.generation;
                assert_eq!(n.up[&g].read, n.up[&g].written, "{what}");
                assert_eq!(n.down[&g].read, n.down[&g].written, "{what}");
                assert_eq!(client_rekeyed(&n), vec![1], "{what}");
                assert_eq!(server_rekeyed(&n), vec![1], "{what}");
                assert_eq!(n.client.key_epochs(), Some(idle(1)), "{what}");
                assert_eq!(server_epochs(&n, sid), idle(1), "{what}");
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 320);
}

/// A client's stolen resume key stops working once the rekey completed
/// (PROTOCOL.md 7.8): a ResumeRequest MACed under `resume_key(0)` is
/// refused with AuthFailed; the same forgery before the rekey (a twin
/// session from the same seeds) is accepted.
#[test]
fn stolen_resume_key_is_refused_after_the_rekey() {
    let forge = |n: &mut Net, epoch: u32, key: &[u8; 32], counter: u64| -> u8 {
        let g = n.generation;
        let mut req = ResumeRequest {
            version: VERSION,
            conn_id: n.client.conn_id().unwrap(),
            counter,
            client_written: n.up[&g].written,
            client_read: n.down[&g].written,
            time: n.snow.as_micros(),
            rx_epoch: epoch,
            mac: [0; 16],
        };
        let unsigned = req.encode();
        let mut input = vec![0x01u8];
        input.extend_from_slice(&unsigned[..RESUME_REQUEST_LEN - 16]);
        req.mac
            .copy_from_slice(&blake3::keyed_hash(key, &input).as_bytes()[..16]);
        let t = n.server.accept(n.snow).unwrap();
        let _ = n.server.handle_input(t, n.snow, &req.encode());
        let mut out = vec![0u8; 4096];
        let len = n.server.poll_transmit(t, n.snow, &mut out).unwrap_or(0);
        n.drain();
        assert!(len >= 2, "an answer");
        out[1]
    };
    let setup = || {
        let mut n = Net::new(31, no_policy(), no_policy());
        n.handshake();
        n.client_write(1000);
        n.server_write(1000);
        n.settle(100);
        let (e, key) = n.client.export_resume_key_for_test().unwrap();
        assert_eq!(e, 0);
        (n, key)
    };
    // Control: before the rekey the stolen key takes the session over.
    let (mut twin, key0) = setup();
    twin.brk();
    assert_eq!(forge(&mut twin, 0, &key0, 100), ResumeStatus::Ok.to_byte());
    // After the rekey (and the retiring ACKs) it does not.
    let (mut n, key0b) = setup();
    assert_eq!(key0, key0b);
    n.client.request_rekey().unwrap();
    n.settle(200);
    assert_eq!(n.client.epoch(), 1);
    let (e1, key1) = n.client.export_resume_key_for_test().unwrap();
    assert_eq!(e1, 1);
    assert_ne!(key1, key0);
    n.brk();
    let auth_failed = ResumeStatus::AuthFailed.to_byte();
    assert_eq!(forge(&mut n, 0, &key0, 100), auth_failed);
    assert_eq!(forge(&mut n, 1, &key0, 101), auth_failed);
    // The session is intact for its real client.
    resume_and_settle(&mut n);
    n.client_write(1000);
    n.settle(100);
    assert_streams_exact(&n);
}

/// Record both directions' bytes while running to quiescence.
fn settle_recording(n: &mut Net, c2s: &mut Vec<u8>, s2c: &mut Vec<u8>) {
    for _ in 0..500 {
        n.tick(Duration::from_millis(1));
        n.transmit();
        if n.c2s.is_empty() && n.s2c.is_empty() {
            n.timers();
            n.transmit();
            if n.c2s.is_empty() && n.s2c.is_empty() {
                return;
            }
        }
        c2s.extend_from_slice(&n.c2s);
        s2c.extend_from_slice(&n.s2c);
        n.deliver(u64::MAX);
    }
}

#[test]
fn crossing_inits_make_one_exchange_the_clients() {
    let mut n = Net::new(41, no_policy(), no_policy());
    let sid = n.handshake();
    n.settle(50);
    n.client.request_rekey().unwrap();
    n.server.request_rekey(sid).unwrap();
    let (mut up, mut down) = (Vec::new(), Vec::new());
    settle_recording(&mut n, &mut up, &mut down);
    let up = frames(&up);
    let down = frames(&down);
    let kinds = |f: &[(u8, Vec<u8>)], t: u8| f.iter().filter(|x| x.0 == t).count();
    assert_eq!(
        (kinds(&up, 6), kinds(&up, 7), kinds(&up, 8)),
        (1, 0, 1),
        "client: INIT, SWITCH"
    );
    assert_eq!(
        (kinds(&down, 6), kinds(&down, 7), kinds(&down, 8)),
        (1, 1, 0),
        "server: INIT, REPLY"
    );
    let s_init = &down.iter().find(|x| x.0 == 6).unwrap().1;
    let s_reply = &down.iter().find(|x| x.0 == 7).unwrap().1;
    assert_eq!(
        s_init[5..37],
        s_reply[4..36],
        "the server reused its unused ephemeral"
    );
    assert_eq!(client_rekeyed(&n), vec![1]);
    assert_eq!(server_rekeyed(&n), vec![1]);
    assert_eq!(n.client.key_epochs(), Some(idle(1)));
    assert_eq!(server_epochs(&n, sid), idle(1));
}

/// A REPLY lost with its transport: the client re-sends its INIT (ignored:
/// the epoch was derived), the server re-sends its REPLY; one exchange.
/// INIT bytes replayed on a later transport fail their tag.
#[test]
fn duplicate_and_replayed_inits_do_not_restart_the_exchange() {
    let mut n = Net::new(42, no_policy(), no_policy());
    let sid = n.handshake();
    n.settle(50);
    n.client.request_rekey().unwrap();
    n.transmit();
    let init = n.c2s.clone();
    assert_eq!(frames(&init).last().map(|f| f.0), Some(6));
    n.deliver(u64::MAX); // INIT reaches the server ...
    n.server
        .poll_transmit(n.tid.unwrap(), n.snow, &mut vec![0; 4096])
        .unwrap(); // ... its REPLY is lost
    n.brk();
    // The new transport: the client's request, the server's response
    // (with the re-sent REPLY behind it); the client writes before it
    // reads the REPLY, so it re-sends its outstanding INIT.
    assert!(n.open());
    n.transmit();
    n.deliver(u64::MAX);
    n.transmit();
    let response = n
        .s2c
        .drain(..relink::wire::RESUME_RESPONSE_LEN)
        .collect::<Vec<u8>>();
    assert_eq!(n.client.handle_input(n.cnow, &response), Ok(response.len()));
    assert!(frames(&n.s2c).iter().any(|f| f.0 == 7), "REPLY re-sent");
    n.transmit();
    assert!(frames(&n.c2s).iter().any(|f| f.0 == 6), "INIT re-sent");
    n.settle(500);
    assert_eq!(client_rekeyed(&n), vec![1]);
    assert_eq!(server_rekeyed(&n), vec![1]);
    assert_eq!(server_epochs(&n, sid), idle(1));
    // The old INIT frame on the current transport: its tag fails, the
    // transport ends, the session stays at epoch 1.
    let t = n.tid.unwrap();
    let init_frame = &init[init.len() - (4 + 45 + 16)..];
    assert!(n.server.handle_input(t, n.snow, init_frame).is_err());
    n.drain();
    n.brk();
    resume_and_settle(&mut n);
    assert_eq!(server_rekeyed(&n), vec![1]);
    assert_eq!(n.client.epoch(), 1);
}

/// A stale REKEY_INIT (its stamp 2 windows ahead of the server's clock)
/// ends the transport without effect; the INIT re-sent on the next
/// transport, freshly stamped, completes the exchange.
#[test]
fn a_stale_init_ends_the_transport_and_the_resent_one_completes() {
    let mut n = Net::new(44, no_policy(), no_policy());
    let sid = n.handshake();
    n.settle(50);
    n.client.set_stamp_skew(120_000_000);
    n.client.request_rekey().unwrap();
    n.transmit();
    assert_eq!(frames(&n.c2s).last().map(|f| f.0), Some(6), "INIT written");
    let t = n.tid.unwrap();
    let init = std::mem::take(&mut n.c2s);
    assert_eq!(
        n.server.handle_input(t, n.snow, &init),
        Err(relink::Error::Stale)
    );
    n.drain();
    assert_eq!(server_epochs(&n, sid), idle(0), "nothing derived");
    n.brk();
    n.client.set_stamp_skew(0);
    resume_and_settle(&mut n);
    assert_eq!(client_rekeyed(&n), vec![1]);
    assert_eq!(server_rekeyed(&n), vec![1]);
    assert_eq!(server_epochs(&n, sid), idle(1));
}

#[test]
fn pinned_sessions_rekey_end_to_end() {
    let kp = StaticKeypair::from_secret_bytes([0x42; 32]);
    let ccfg = Config {
        pinned_server_key: Some(kp.public_key()),
        ..no_policy()
    };
    let scfg = Config {
        server_static: Some(kp),
        ..no_policy()
    };
    let mut n = Net::new(43, ccfg, scfg);
    let sid = n.handshake();
    for e in 1..=2 {
        n.client_write(30_000);
        n.server_write(30_000);
        if e == 1 {
            n.client.request_rekey().unwrap();
        } else {
            n.server.request_rekey(sid).unwrap();
        }
        n.settle(2000);
        assert_eq!(n.client.epoch(), e);
        assert_eq!(server_epochs(&n, sid), idle(e));
    }
    assert_streams_exact(&n);
}

// ----- policy (PROTOCOL.md 5.4) ---------------------------------------------

#[test]
fn byte_policy_starts_rekeys_on_either_side() {
    for server_sends in [false, true] {
        let cfg = Config {
            rekey_after_bytes: 64 * 1024,
            ..Config::default()
        };
        let mut n = Net::new(50, cfg.clone(), cfg);
        let sid = n.handshake();
        for _ in 0..20 {
            if server_sends {
                n.server_write(16 * 1024);
            } else {
                n.client_write(16 * 1024);
            }
            n.settle(200);
        }
        assert_streams_exact(&n);
        // 320 KiB one way at 64 KiB per epoch: 4 or 5 rekeys.
        let e = n.client.epoch();
        assert!(
            (4..=5).contains(&e),
            "epoch {e} (server_sends={server_sends})"
        );
        assert_eq!(n.server.epoch(sid), Some(e));
        assert_eq!(client_rekeyed(&n), (1..=e).collect::<Vec<_>>());
    }
}

/// Keep a transport alive while time passes (keepalives, no idle timeout).
fn pass_time(n: &mut Net, total: Duration, step: Duration) {
    let mut t = 0;
    while t < total.as_micros() {
        n.tick(step);
        n.timers();
        n.settle(20);
        t += step.as_micros();
    }
}

#[test]
fn time_policy_starts_rekeys_only_while_attached() {
    let cfg = Config {
        rekey_after_time: Duration::from_secs(60),
        ..Config::default()
    };
    let mut n = Net::new(51, cfg.clone(), cfg);
    let sid = n.handshake();
    pass_time(&mut n, Duration::from_secs(59), Duration::from_secs(1));
    assert_eq!(n.client.epoch(), 0);
    pass_time(&mut n, Duration::from_secs(3), Duration::from_secs(1));
    assert_eq!(
        n.client.epoch(),
        1,
        "the client's soft limit (the server waits 66 s)"
    );
    assert_eq!(n.server.epoch(sid), Some(1));
    // Detached past the next deadline: nothing happens until the resume.
    n.brk();
    n.tick(Duration::from_secs(120));
    n.timers();
    assert_eq!(n.client.epoch(), 1);
    resume_and_settle(&mut n);
    assert_eq!(
        n.client.epoch(),
        2,
        "due while detached: right after the resume"
    );
}

fn aborted_with(reason: Option<CloseReason>, by_peer: bool) -> bool {
    reason
        == Some(CloseReason::Aborted {
            code: AbortCode::KEY_EXPIRED,
            by_peer,
        })
}

fn server_closed(n: &Net) -> Option<CloseReason> {
    n.sev.iter().find_map(|e| match e {
        ServerEvent::Closed { reason, .. } => Some(*reason),
        _ => None,
    })
}

fn expiry_pair(seed: u64) -> Net {
    let ccfg = no_policy();
    let scfg = Config {
        key_lifetime: Duration::from_secs(30),
        rekey_after_time: Duration::from_secs(30),
        rekey_grace: Duration::from_secs(10),
        ..Config::default()
    };
    Net::new(seed, ccfg, scfg)
}

/// A client that ignores the server's order is disconnected with
/// `KEY_EXPIRED` on both sides after `rekey_grace` of attached time.
#[test]
fn a_client_that_ignores_the_order_is_disconnected() {
    let mut n = expiry_pair(52);
    n.handshake();
    n.client.set_ignore_rekey(true);
    pass_time(&mut n, Duration::from_secs(31), Duration::from_secs(1));
    assert!(n.client.close_reason().is_none(), "ordered, grace running");
    pass_time(&mut n, Duration::from_secs(8), Duration::from_secs(1));
    assert!(n.client.close_reason().is_none(), "within the grace");
    pass_time(&mut n, Duration::from_secs(4), Duration::from_secs(1));
    assert!(aborted_with(n.client.close_reason(), true), "{:?}", n.cev);
    assert!(aborted_with(server_closed(&n), false), "{:?}", n.sev);
    // An honest client answers the order: no abort.
    let mut h = expiry_pair(53);
    h.handshake();
    pass_time(&mut h, Duration::from_secs(50), Duration::from_secs(1));
    assert!(h.client.close_reason().is_none());
    assert!(h.client.epoch() >= 1);
}

/// The grace counts attached time only: a client offline for ten times the
/// grace is not punished; the clock runs again once it is back.
#[test]
fn the_grace_pauses_while_detached() {
    let mut n = expiry_pair(54);
    n.handshake();
    n.client.set_ignore_rekey(true);
    pass_time(&mut n, Duration::from_secs(35), Duration::from_secs(1));
    n.brk();
    n.tick(Duration::from_secs(100));
    n.timers();
    resume_and_settle(&mut n);
    assert!(n.client.close_reason().is_none(), "{:?}", n.cev);
    pass_time(&mut n, Duration::from_secs(8), Duration::from_secs(1));
    assert!(aborted_with(n.client.close_reason(), true), "{:?}", n.cev);
}

/// The grace also pauses while the client has not read up to the order:
/// its input is held back behind data its application does not read.
#[test]
fn the_grace_pauses_while_the_client_holds_input_back() {
    let ccfg = Config {
        recv_buffer: 20_000,
        ..no_policy()
    };
    let scfg = Config {
        key_lifetime: Duration::from_secs(30),
        rekey_after_time: Duration::from_secs(30),
        rekey_grace: Duration::from_secs(10),
        ..Config::default()
    };
    let mut n = Net::new(55, ccfg, scfg);
    n.handshake();
    n.client.set_ignore_rekey(true);
    n.client_reads = false;
    n.server_write(100_000);
    pass_time(&mut n, Duration::from_secs(60), Duration::from_secs(1));
    assert!(n.client.close_reason().is_none(), "held back: {:?}", n.cev);
    n.client_reads = true;
    n.client_read();
    pass_time(&mut n, Duration::from_secs(15), Duration::from_secs(1));
    assert!(aborted_with(n.client.close_reason(), true), "{:?}", n.cev);
}

/// At `key_lifetime_bytes` a sender holds DATA back until its send epoch
/// advances: no key protects more than the limit, nothing is lost.
#[test]
fn the_hard_byte_limit_holds_data_back_and_loses_nothing() {
    let limit = 32 * 1024;
    let cfg = Config {
        key_lifetime_bytes: limit,
        rekey_after_bytes: limit,
        ..Config::default()
    };
    let mut n = Net::new(56, cfg.clone(), cfg);
    let sid = n.handshake();
    let _ = n.client.take_keystream_log();
    let _ = n.server.take_keystream_log(sid);
    n.client_write(200_000);
    n.server_write(200_000);
    n.settle(5000);
    assert_streams_exact(&n);
    for log in [
        n.client.take_keystream_log(),
        n.server.take_keystream_log(sid).unwrap(),
    ] {
        let mut span = std::collections::BTreeMap::new();
        for (id, off, _) in log {
            let e = span.entry(id).or_insert((off, off));
            e.0 = e.0.min(off);
            e.1 = e.1.max(off);
        }
        assert!(span.len() >= 6, "{} keys", span.len());
        for (lo, hi) in span.values() {
            assert!(hi - lo < limit, "a key protected {} bytes", hi - lo + 1);
        }
    }
}

#[test]
fn without_rekey_the_byte_limit_refuses_more_data() {
    let cfg = Config {
        rekey: false,
        key_lifetime_bytes: 1000,
        ..Config::default()
    };
    let mut n = Net::new(57, cfg.clone(), cfg);
    n.handshake();
    assert_eq!(n.client.send(&[1; 600]), Ok(600));
    assert_eq!(n.client.send(&[1; 600]), Ok(400));
    assert_eq!(n.client.send(&[1; 1]), Err(relink::Error::KeyLimitReached));
}

/// Issue 13 soak finding: a side that closed its stream and then writes its
/// switch marker (at `S = written`, after its CLOSE, PROTOCOL.md 6.8 rule 8)
/// loses the marker in a break. The peer has read the CLOSE — its read
/// count is `written + 1` — under the old epoch. The resume must go on (the
/// marker is re-sent at `S`), not end DataUnavailable as a read count "past
/// the switch point" did (PROTOCOL.md 7.8 rule 1 counts the CLOSE as
/// `written`). Both roles of the closed side, both initiators.
#[test]
fn marker_after_close_lost_in_a_break_resumes() {
    for (server_closes, closed_side_starts) in
        [(true, false), (true, true), (false, false), (false, true)]
    {
        let what = format!("server_closes={server_closes} closed_side_starts={closed_side_starts}");
        let mut n = Net::new(12, no_policy(), no_policy());
        let sid = n.handshake();
        n.client_write(5_000);
        n.server_write(5_000);
        if server_closes {
            n.server.close(sid).unwrap();
        } else {
            n.client.close();
        }
        n.settle(200);
        // The closed side's marker (REPLY or SWITCH) is the last thing it
        // writes on this transport: drop everything it writes from now on.
        if closed_side_starts == server_closes {
            n.server.request_rekey(sid).unwrap();
        } else {
            n.client.request_rekey().unwrap();
        }
        // The INIT goes out (when the closed side starts, it is the last
        // frame of that side that arrives).
        n.transmit();
        if server_closes {
            n.s2c_limit = Some(n.s2c_pushed);
        } else {
            n.c2s_blackhole = true;
        }
        n.settle(200);
        assert!(!n.ended, "{what}: {:?}", n.cev);
        // The closed side wrote its marker: it sends under epoch 1.
        let closed_tx = if server_closes {
            server_epochs(&n, sid).tx[0]
        } else {
            n.client.key_epochs().expect("keys").tx[0]
        };
        assert_eq!(closed_tx, Some(1), "{what}: the closed side switched");
        n.brk();
        n.open_transport();
        n.settle(400);
        assert!(
            !n.cev.iter().any(|e| matches!(
                e,
                Event::Closed {
                    reason: CloseReason::DataUnavailable
                }
            )),
            "{what}: {:?}",
            n.cev
        );
        assert!(
            !n.client.is_closed() || n.client.close_reason() == Some(CloseReason::Clean),
            "{what}: {:?}",
            n.client.close_reason()
        );
        assert_streams_exact(&n);
        assert_eq!(n.client.epoch(), 1, "{what}");
        assert_eq!(n.server.epoch(sid), Some(1), "{what}");
    }
}
