//! Adversarial sweeps (branch `review-break`): abort and close endings with
//! the transport cut at every position of the final exchange. These held
//! up in the review; they stay as regression tests.

use relink::{AbortCode, CloseReason, Config, Duration, Event, ServerEvent, SessionId};
use relink_test_support::harness::*;

fn established(seed: u64) -> Net {
    let mut net = Net::new(seed, Config::default(), Config::default());
    assert!(net.connect());
    net.client_write(2_000);
    net.server_write(2_000);
    for _ in 0..20 {
        net.settle(500);
        net.tick(Duration::from_millis(30));
        net.timers();
    }
    net
}

fn server_ends(net: &Net, sid: SessionId) -> Vec<ServerEvent> {
    net.sev
        .iter()
        .filter(|e| match e {
            ServerEvent::Closed { session, .. } | ServerEvent::SessionExpired { session } => {
                *session == sid
            }
            _ => false,
        })
        .cloned()
        .collect()
}

/// Drive the client like a driver until it is closed (at most `n` attempts).
fn drive_until_closed(net: &mut Net, n: usize) {
    for _ in 0..n {
        if net.client.is_closed() {
            break;
        }
        net.brk();
        if net.connect() {
            net.settle(300);
            net.tick(Duration::from_millis(50));
            net.settle(300);
        }
    }
}

fn expire_server(net: &mut Net) {
    net.brk();
    net.tick(Duration::from_secs(620));
    net.timers();
    net.tick(Duration::from_secs(1));
    net.timers();
}

/// who: 1 client aborts, 2 server aborts, 3 both at once. The final write of
/// each side is cut after `kc` / `ks` bytes.
fn abort_case(who: u8, kc: usize, ks: usize) {
    let mut net = established(0xAB00 + who as u64);
    let sid = net.current_session().unwrap();
    net.client_write(1_000);
    net.server_write(1_000);
    let (ca, sa) = (AbortCode(0x111), AbortCode(0x222));
    if who & 1 != 0 {
        net.client.abort(ca);
    }
    if who & 2 != 0 {
        net.server.abort(sid, sa).unwrap();
    }
    net.transmit();
    net.c2s.truncate(kc);
    net.s2c.truncate(ks);
    net.deliver(u64::MAX);
    net.drain();
    net.brk();
    drive_until_closed(&mut net, 30);
    let ctx = format!(
        "who {who} kc {kc} ks {ks}: client {:?} in doubt {:?}; client events {:?}; server {:?}",
        net.client.close_reason(),
        net.client.in_doubt(),
        net.cev,
        server_ends(&net, sid)
    );
    assert!(net.client.is_closed(), "client never closed: {ctx}");
    let cr = net.client.close_reason().unwrap();
    assert!(matches!(cr, CloseReason::Aborted { .. }), "client: {ctx}");
    expire_server(&mut net);
    let ends = server_ends(&net, sid);
    assert_eq!(ends.len(), 1, "exactly one server ending: {ctx}");
    assert!(
        matches!(
            ends[0],
            ServerEvent::Closed {
                reason: CloseReason::Aborted { .. },
                ..
            }
        ),
        "server: {ctx}"
    );
    if std::env::var_os("SWEEP_LOG").is_some() {
        eprintln!("{ctx}");
    }
    // Both sides name a code one of them sent.
    if let CloseReason::Aborted { code, by_peer } = cr {
        match who {
            1 => assert!(code == ca && !by_peer, "{ctx}"),
            2 => assert!(code == sa && by_peer, "{ctx}"),
            _ => assert!(code == ca || code == sa, "{ctx}"),
        }
    }
    net.assert_no_violations();
}

#[test]
fn aborts_with_cuts_at_every_position() {
    for who in 1..=3u8 {
        for kc in [0usize, 1, 10, 20, 24, 44, 100, 600, 1_040, 1_100, 10_000] {
            for ks in [0usize, 1, 10, 20, 24, 44, 100, 600, 1_040, 1_100, 10_000] {
                abort_case(who, kc, ks);
            }
        }
    }
}

/// Both close; every flight of the closing exchange is cut after `k` bytes
/// in turn. The client never ends non-clean with bytes missing outside its
/// in-doubt range, and never spins.
fn close_case(flight: usize, k: usize, server_first: bool) {
    let mut net = established(0xC105 + flight as u64);
    let sid = net.current_session().unwrap();
    net.client_write(700);
    net.server_write(700);
    if server_first {
        net.server.close(sid).unwrap();
    } else {
        net.client.close();
    }
    let mut closed_other = false;
    for f in 0..6 {
        net.tick(Duration::from_millis(25));
        net.timers();
        net.transmit();
        if f == flight {
            net.c2s.truncate(k);
            net.s2c.truncate(k);
        }
        net.deliver(u64::MAX);
        net.drain();
        if f == flight {
            net.brk();
            break;
        }
        if !closed_other {
            closed_other = true;
            if server_first {
                net.client.close();
            } else {
                net.server.close(sid).unwrap();
            }
        }
    }
    if !closed_other {
        if server_first {
            net.client.close();
        } else {
            let _ = net.server.close(sid);
        }
    }
    drive_until_closed(&mut net, 30);
    let ctx = format!(
        "flight {flight} k {k} server_first {server_first}: client {:?} doubt {:?} events {:?}",
        net.client.close_reason(),
        net.client.in_doubt(),
        net.cev
    );
    assert!(net.client.is_closed(), "never closed: {ctx}");
    net.settle(200);
    expire_server(&mut net);
    net.server_read();
    net.client_read();
    net.assert_no_violations();
    let cr = net.client.close_reason().unwrap();
    if cr == CloseReason::Clean {
        assert_eq!(net.up_read(), net.up_written(), "{ctx}");
        assert_eq!(net.down[&0].read, net.down[&0].written, "{ctx}");
    } else {
        let d = net.client.in_doubt().unwrap();
        assert!(d.start <= net.up_read(), "silent loss: {ctx}");
    }
    assert!(
        !net.cev.iter().any(|e| matches!(e, Event::Closed { .. })) || net.client.is_closed(),
        "{ctx}"
    );
}

#[test]
fn closes_with_cuts_at_every_position() {
    for flight in 0..5 {
        for k in [0usize, 1, 20, 28, 44, 100, 700, 744, 800, 10_000] {
            close_case(flight, k, false);
            close_case(flight, k, true);
        }
    }
}

/// The client aborts; its ABORT reaches the server on each of five resumed
/// transports but every answer is lost; the sixth completes the abort.
/// Also: the server aborts at the same time on the second transport.
fn abort_answers_lost(server_also: bool) {
    let mut net = established(0xAB5E);
    let sid = net.current_session().unwrap();
    net.client_write(500);
    net.client.abort(AbortCode(0x300));
    for i in 0..5 {
        net.brk();
        assert!(net.open());
        net.s2c_limit = Some(54); // the ResumeResponse arrives, nothing after it
        for _ in 0..6 {
            net.tick(Duration::from_millis(5));
            net.transmit();
            net.deliver(u64::MAX);
        }
        assert!(
            net.client.is_connected() || net.client.transport_ended(),
            "round {i}"
        );
        if server_also && i == 1 {
            let _ = net.server.abort(sid, AbortCode(0x301));
        }
        net.drain();
        assert!(!net.client.is_closed(), "round {i}: {:?}", net.cev);
    }
    assert!(
        matches!(
            server_ends(&net, sid)[..],
            [ServerEvent::Closed {
                reason: CloseReason::Aborted { by_peer: true, .. },
                ..
            }]
        ),
        "the ABORT reached the server: {:?}",
        server_ends(&net, sid)
    );
    net.brk();
    drive_until_closed(&mut net, 5);
    assert_eq!(
        net.client.close_reason(),
        Some(CloseReason::Aborted {
            code: AbortCode(0x300),
            by_peer: false
        }),
        "{:?}",
        net.cev
    );
    expire_server(&mut net);
    let ends = server_ends(&net, sid);
    assert_eq!(ends.len(), 1, "{ends:?}");
    net.assert_no_violations();
}

#[test]
fn abort_with_every_answer_lost_several_times() {
    abort_answers_lost(false);
    abort_answers_lost(true);
}
