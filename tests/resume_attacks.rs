//! Hostile and stale resumes (issue #3, criteria 5, 6, 7b, 7d): replayed
//! requests, wrong MACs, unknown connection ids, stale timestamps, expired
//! sessions and a rolled-back client. Each is rejected with the right
//! `ResumeStatus` (the bytes the server answers are checked), and the real
//! session continues unharmed: a genuine resume afterwards carries data
//! byte-exact both ways.

#[path = "support_d.rs"]
mod support_d;

use relink::wire::{
    ResumeRequest, ResumeStatus, REJECT_AUTH_LEN, REJECT_LEN, RESUME_REQUEST_LEN,
    RESUME_RESPONSE_LEN, SERVER_HELLO_LEN, VERSION,
};
use relink::{
    ByteRange, Client, CloseReason, Config, Duration, Error, Event, Instant, Server, ServerEvent,
    StaticKeypair, TransportId,
};
use support_d::*;

/// An attacker opens its own transport, sends `bytes`, reads the answer
/// and hangs up. Returns the server's verdict, its answer, the transport.
fn attacker_send(sim: &mut Sim, bytes: &[u8]) -> (Result<usize, Error>, Vec<u8>, TransportId) {
    let t = sim.server.accept(sim.now).expect("accept");
    let r = sim.server.handle_input(t, sim.now, bytes);
    let mut out = vec![0u8; 4096];
    let n = sim.server.poll_transmit(t, sim.now, &mut out).expect("tx");
    out.truncate(n);
    sim.drain_events();
    sim.server.transport_lost(t, sim.now);
    (r, out, t)
}

/// Break, then start a resume and return the request the client sent
/// (still in flight).
fn start_resume(sim: &mut Sim) -> Vec<u8> {
    sim.transmit();
    sim.cut();
    sim.open();
    sim.transmit();
    let req = sim.c2s.pending().to_vec();
    assert_eq!(req.len(), RESUME_REQUEST_LEN);
    req
}

/// Move more data both ways (byte-exact) on the current transport.
fn more_data(sim: &mut Sim, bytes: u64) {
    let (up, down) = (sim.up.total + bytes, sim.down.total + bytes);
    sim.set_totals(up, down);
    sim.run(1_000_000, |s| assert!(!s.ended, "{:?}", s.tail_events()));
}

/// The "unknown session" answer: `01 02 || token` (18 bytes).
fn unknown_answer(token: [u8; 16]) -> Vec<u8> {
    [
        &[VERSION, ResumeStatus::UnknownSession.to_byte()][..],
        &token,
    ]
    .concat()
}

fn rejection(status: ResumeStatus) -> Result<usize, Error> {
    Err(Error::ResumeRejected(status))
}

/// The server clock an authenticated rejection carries (bytes 2..10 of its
/// 26 bytes, issue 9).
fn reject_time(reply: &[u8]) -> u64 {
    assert_eq!(reply.len(), REJECT_AUTH_LEN);
    u64::from_le_bytes(reply[2..10].try_into().unwrap())
}

/// Criterion 5 and lesson (d): a recorded resume request sent again later
/// on a new transport, both while the session is attached and while it
/// waits for a transport, is rejected as `Replayed` with an authenticated
/// rejection; the real transport is not disturbed, and the recorded
/// rejection fed to the client's next resume fails authentication.
#[test]
fn replayed_resume_request_is_rejected_and_session_continues() {
    let mut sim = Sim::default_sim(0x2E91A);
    sim.set_totals(100_000, 100_000);
    let sid = sim.handshake();
    sim.run(1_000_000, |s| assert!(!s.ended));
    let first = start_resume(&mut sim);
    sim.finish_resume();
    more_data(&mut sim, 100_000);
    let second = start_resume(&mut sim);
    sim.finish_resume();
    let real = sim.tid.expect("transport");

    // While attached: an older and the latest request.
    let mut recorded_reject = Vec::new();
    for req in [&first, &second] {
        let resumes = sim.stats.server_resumes;
        let (r, reply, t) = attacker_send(&mut sim, req);
        assert_eq!(r, rejection(ResumeStatus::Replayed));
        assert_eq!(reply.len(), REJECT_AUTH_LEN);
        assert_eq!(&reply[..2], &[VERSION, ResumeStatus::Replayed.to_byte()]);
        assert_eq!(reject_time(&reply), sim.now.as_micros());
        assert!(sim.sev.contains(&ServerEvent::CloseTransport {
            transport: t,
            error: Some(Error::ResumeRejected(ResumeStatus::Replayed))
        }));
        assert_eq!(sim.stats.server_resumes, resumes, "no resume accepted");
        assert_eq!(sim.server.session_of(real), Some(sid));
        assert!(!sim.server.transport_ended(real));
        recorded_reject = reply;
    }
    more_data(&mut sim, 100_000);

    // While detached.
    sim.transmit();
    sim.cut();
    let (r, _, _) = attacker_send(&mut sim, &second);
    assert_eq!(r, rejection(ResumeStatus::Replayed));
    assert!(sim.server.has_session(sid));

    // The recorded (authenticated) rejection does not fool the client's
    // next attempt: its MAC covers the request it answered.
    sim.open();
    sim.transmit();
    sim.c2s.truncate(0);
    let r = sim.client.handle_input(sim.now, &recorded_reject);
    assert_eq!(r, Err(Error::AuthFailed));
    sim.drain_events();
    assert!(sim.cev.contains(&Event::TransportLost {
        error: Some(Error::AuthFailed)
    }));
    assert!(!sim.client.is_closed());

    sim.brk();
    sim.open();
    sim.finish_resume();
    more_data(&mut sim, 200_000);
    assert!(sim.client.close_reason().is_none());
}

/// Lesson (d): a recorded request cannot be made fresh. Raising its
/// counter or moving its time breaks its MAC (`AuthFailed`, unauthenticated
/// 2-byte rejection); as recorded it is `Replayed`. This includes a
/// request that never reached the server (its transport broke) once the
/// client resumed with a later one.
#[test]
fn replayed_request_does_not_pass_authentication_or_acceptance() {
    let mut sim = Sim::default_sim(0x7D);
    sim.set_totals(50_000, 50_000);
    let sid = sim.handshake();
    sim.run(1_000_000, |s| assert!(!s.ended));
    // A request lost in flight: recorded by an eavesdropper, never delivered.
    let lost = start_resume(&mut sim);
    sim.brk();
    sim.open();
    sim.finish_resume();
    more_data(&mut sim, 50_000);
    let real = sim.tid.expect("transport");

    let (r, reply, _) = attacker_send(&mut sim, &lost);
    assert_eq!(r, rejection(ResumeStatus::Replayed));
    assert_eq!(&reply[..2], &[VERSION, ResumeStatus::Replayed.to_byte()]);

    let decoded = ResumeRequest::decode(&lost).expect("decode");
    let tampered = [
        ResumeRequest {
            counter: decoded.counter + 1000,
            ..decoded
        },
        ResumeRequest {
            time: sim.now.as_micros(),
            ..decoded
        },
        ResumeRequest {
            client_read: 0,
            ..decoded
        },
        // A receive epoch the server holds no key for (only 0 exists).
        ResumeRequest {
            rx_epoch: 1,
            ..decoded
        },
    ];
    for req in tampered {
        let events = sim.sev.len();
        let (r, reply, t) = attacker_send(&mut sim, &req.encode());
        assert_eq!(r, rejection(ResumeStatus::AuthFailed));
        assert_eq!(reply, vec![VERSION, ResumeStatus::AuthFailed.to_byte()]);
        assert_eq!(reply.len(), REJECT_LEN);
        assert!(sim.sev[events..].contains(&ServerEvent::AuthFailed {
            transport: t,
            reason: Error::AuthFailed
        }));
    }
    assert_eq!(sim.server.session_of(real), Some(sid));
    more_data(&mut sim, 100_000);
}

/// Criterion 5: a resume request with a wrong MAC (one bit of the client's
/// genuine request flipped in flight) gets an unauthenticated `AuthFailed`
/// rejection; the client reports it and survives, the next resume works.
#[test]
fn resume_with_wrong_mac_is_rejected_and_session_continues() {
    let mut sim = Sim::default_sim(0x3AC);
    sim.set_totals(80_000, 80_000);
    let sid = sim.handshake();
    sim.run(1_000_000, |s| assert!(!s.ended));
    start_resume(&mut sim);
    sim.c2s.flip(RESUME_REQUEST_LEN - 3, 5);
    let tid = sim.tid.expect("transport");
    sim.deliver_c2s(usize::MAX);
    assert!(sim.sev.contains(&ServerEvent::AuthFailed {
        transport: tid,
        reason: Error::AuthFailed
    }));
    sim.transmit();
    assert_eq!(
        sim.s2c.pending(),
        &[VERSION, ResumeStatus::AuthFailed.to_byte()]
    );
    let r = sim.client.handle_input(sim.now, sim.s2c.pending());
    assert_eq!(r, rejection(ResumeStatus::AuthFailed));
    sim.drain_events();
    let e = Error::ResumeRejected(ResumeStatus::AuthFailed);
    assert!(sim.cev.contains(&Event::AuthFailed { reason: e }));
    assert!(sim.cev.contains(&Event::TransportLost { error: Some(e) }));
    assert!(!sim.client.is_closed() && sim.server.has_session(sid));
    sim.brk();
    sim.open();
    sim.finish_resume();
    more_data(&mut sim, 200_000);
}

/// Criterion 5: a resume request for a connection id the server does not
/// know gets an unauthenticated `UnknownSession` rejection (18 bytes: the
/// status and the reset token of the id, zero here: no static key) and
/// touches no session; the real one carries on.
#[test]
fn resume_with_unknown_connection_id_is_rejected() {
    let mut sim = Sim::default_sim(0xC0DE);
    sim.set_totals(80_000, 80_000);
    let sid = sim.handshake();
    sim.run(1_000_000, |s| assert!(!s.ended));
    let real_id = sim.client.conn_id().expect("conn id");
    for conn_id in [real_id ^ 1, real_id.wrapping_add(1 << 40), 0, u64::MAX] {
        let req = ResumeRequest {
            version: VERSION,
            conn_id,
            counter: 1,
            client_written: 0,
            client_read: 0,
            time: sim.now.as_micros(),
            rx_epoch: 0,
            mac: [0x42; 16],
        };
        let (r, reply, _) = attacker_send(&mut sim, &req.encode());
        assert_eq!(r, rejection(ResumeStatus::UnknownSession));
        // `01 02 || reset_token(conn_id)`: all zero without a static key.
        assert_eq!(reply, unknown_answer([0; 16]));
    }
    assert_eq!(sim.server.session_count(), 1);
    assert_eq!(sim.server.session_of(sim.tid.expect("t")), Some(sid));
    more_data(&mut sim, 100_000);
    start_resume(&mut sim);
    sim.finish_resume();
    more_data(&mut sim, 100_000);
}

/// One resume attempt on a new transport with the server at `sim.now` and
/// the client at its own clock `cnow` (the two may disagree: a clock that
/// jumped or stood still). An accepted attempt delivers the ResumeResponse
/// (the client is connected); a rejection is delivered too and must be
/// reported as such, with the client keeping the session. Both sides then
/// drop the transport. Returns the server's verdict.
fn attempt_with_clock(sim: &mut Sim, cnow: Instant) -> Result<usize, Error> {
    let t = sim.server.accept(sim.now).expect("accept");
    sim.tid = Some(t);
    sim.client.new_transport(cnow).expect("new transport");
    let mut buf = vec![0u8; 64 * 1024];
    let n = sim.client.poll_transmit(cnow, &mut buf).expect("tx");
    assert_eq!(n, RESUME_REQUEST_LEN);
    let r = sim.server.handle_input(t, sim.now, &buf[..n]);
    let n = sim.server.poll_transmit(t, sim.now, &mut buf).expect("tx");
    match r {
        Ok(_) => {
            assert!(n >= RESUME_RESPONSE_LEN);
            assert_eq!(
                sim.client.handle_input(cnow, &buf[..RESUME_RESPONSE_LEN]),
                Ok(RESUME_RESPONSE_LEN)
            );
            assert!(sim.client.is_connected());
        }
        Err(e) => {
            if e == Error::ResumeRejected(ResumeStatus::Stale) {
                assert_eq!(n, REJECT_AUTH_LEN);
                assert_eq!(&buf[..2], &[VERSION, ResumeStatus::Stale.to_byte()]);
                assert_eq!(reject_time(&buf[..n]), sim.now.as_micros());
            }
            assert_eq!(sim.client.handle_input(cnow, &buf[..n]), Err(e));
            assert!(!sim.client.is_closed(), "{e:?}");
        }
    }
    sim.drain_events();
    sim.server.transport_lost(t, sim.now);
    sim.client.transport_lost(cnow);
    sim.tid = None;
    sim.c2s.reset();
    sim.s2c.reset();
    sim.drain_events();
    r
}

/// Criterion 5 and issue 9 section 2: a resume whose time (the client's
/// estimate of the server clock) is off by more than `freshness_window`,
/// because the client's clock jumped ahead or stood still (a phone asleep
/// for 10 minutes while the server keeps sessions for an hour), gets an
/// authenticated `Stale` rejection that carries the server's clock. Changed
/// on purpose in issue 9: the client corrects its estimate from it, so after
/// each clock jump exactly one attempt is Stale and the next one, with the
/// same (still skewed) clock, is accepted. The session never ends; data
/// continues byte-exact.
#[test]
fn resume_with_stale_timestamp_is_rejected_and_session_continues() {
    let window = Config::default().freshness_window;
    let scfg = Config {
        resume_timeout: Duration::from_secs(3600),
        ..Config::default()
    };
    let mut sim = Sim::new(0x57A1E, Config::default(), scfg);
    sim.set_totals(80_000, 80_000);
    let sid = sim.handshake();
    sim.run(1_000_000, |s| assert!(!s.ended));
    start_resume(&mut sim);
    sim.finish_resume();
    more_data(&mut sim, 50_000);
    sim.settle(1000);
    sim.brk();
    let stale = rejection(ResumeStatus::Stale);
    let second = Duration::from_secs(1);
    // The client's own clock, in sync so far.
    let mut cnow = sim.now;
    for (what, jump) in [
        ("client clock jumps ahead", true),
        ("client clock stands still for 10 minutes", false),
    ] {
        if jump {
            cnow = cnow.saturating_add(window).saturating_add(second);
        } else {
            sim.now = sim.now.saturating_add(Duration::from_secs(600));
        }
        let resumes = (sim.stats.server_resumes, sim.stats.client_resumes);
        assert_eq!(attempt_with_clock(&mut sim, cnow), stale, "{what}");
        assert!(
            sim.cev.ends_with(&[Event::TransportLost {
                error: Some(Error::ResumeRejected(ResumeStatus::Stale))
            }]),
            "{what}"
        );
        assert!(!sim.client.is_closed() && sim.server.has_session(sid));
        // The next attempt, one second later on both clocks, is fresh.
        sim.now = sim.now.saturating_add(second);
        cnow = cnow.saturating_add(second);
        assert_eq!(
            attempt_with_clock(&mut sim, cnow),
            Ok(RESUME_REQUEST_LEN),
            "{what}"
        );
        assert_eq!(
            (sim.stats.server_resumes, sim.stats.client_resumes),
            (resumes.0 + 1, resumes.1 + 1),
            "{what}"
        );
    }
    // The client's clock is behind by 10 minutes minus the earlier jump;
    // back in sync with the server's (a forward jump): once more Stale,
    // then fresh.
    sim.now = sim.now.saturating_add(second);
    let cnow = sim.now;
    assert_eq!(attempt_with_clock(&mut sim, cnow), stale);
    sim.now = sim.now.saturating_add(second);
    let cnow = sim.now;
    assert_eq!(attempt_with_clock(&mut sim, cnow), Ok(RESUME_REQUEST_LEN));
    assert!(sim.client.close_reason().is_none());
    sim.open();
    sim.finish_resume();
    more_data(&mut sim, 200_000);
    assert!(sim.client.close_reason().is_none());
}

/// An authenticated rejection whose server time was changed in transit
/// fails its MAC: the client reports `AuthFailed`, does NOT adopt the forged
/// time (its next attempt is as Stale as before) and keeps the session.
#[test]
fn forged_time_in_a_stale_rejection_is_not_adopted() {
    let mut sim = Sim::default_sim(0xF0F0);
    sim.set_totals(30_000, 30_000);
    let sid = sim.handshake();
    sim.run(1_000_000, |s| assert!(!s.ended));
    sim.settle(1000);
    sim.brk();
    let window = Config::default().freshness_window;
    let cnow = sim
        .now
        .saturating_add(window)
        .saturating_add(Duration::from_secs(1));
    for forged in [0u64, cnow.as_micros(), sim.now.as_micros() + 1] {
        let t = sim.server.accept(sim.now).expect("accept");
        sim.client.new_transport(cnow).expect("new transport");
        let mut buf = vec![0u8; 4096];
        let n = sim.client.poll_transmit(cnow, &mut buf).expect("tx");
        assert_eq!(
            sim.server.handle_input(t, sim.now, &buf[..n]),
            rejection(ResumeStatus::Stale)
        );
        let n = sim.server.poll_transmit(t, sim.now, &mut buf).expect("tx");
        assert_eq!(reject_time(&buf[..n]), sim.now.as_micros());
        // An attacker rewrites the clock, e.g. to the client's own view.
        buf[2..10].copy_from_slice(&forged.to_le_bytes());
        assert_eq!(
            sim.client.handle_input(cnow, &buf[..n]),
            Err(Error::AuthFailed)
        );
        sim.drain_events();
        assert!(sim.cev.ends_with(&[
            Event::AuthFailed {
                reason: Error::AuthFailed
            },
            Event::TransportLost {
                error: Some(Error::AuthFailed)
            },
        ]));
        assert!(!sim.client.is_closed());
        sim.server.transport_lost(t, sim.now);
        sim.client.transport_lost(cnow);
        sim.drain_events();
    }
    // Still Stale at the skewed clock: nothing was adopted. (This genuine
    // answer is not delivered: it would correct the estimate to the skewed
    // clock.)
    let t = sim.server.accept(sim.now).expect("accept");
    sim.client.new_transport(cnow).expect("new transport");
    let mut buf = vec![0u8; 4096];
    let n = sim.client.poll_transmit(cnow, &mut buf).expect("tx");
    assert_eq!(
        sim.server.handle_input(t, sim.now, &buf[..n]),
        rejection(ResumeStatus::Stale)
    );
    sim.server.transport_lost(t, sim.now);
    sim.client.transport_lost(cnow);
    sim.drain_events();
    // In sync, the session resumes and data continues.
    assert!(sim.server.has_session(sid));
    sim.open();
    sim.finish_resume();
    more_data(&mut sim, 50_000);
}

/// Handshake a second client with `sim`'s server by hand (its session must
/// exist before `sim`'s own, whose id `sim.sid` keeps).
fn second_session(sim: &mut Sim) -> (Client<chacha20::ChaCha20Rng>, TransportId) {
    let mut c = Client::new(Config::default(), rng(0x2D2D));
    let t = sim.server.accept(sim.now).expect("accept");
    c.new_transport(sim.now).expect("new transport");
    let mut buf = vec![0u8; 4096];
    for _ in 0..4 {
        let n = c.poll_transmit(sim.now, &mut buf).expect("tx");
        sim.server
            .handle_input(t, sim.now, &buf[..n])
            .expect("server");
        let n = sim.server.poll_transmit(t, sim.now, &mut buf).expect("tx");
        c.handle_input(sim.now, &buf[..n]).expect("client");
    }
    assert!(c.is_connected());
    (c, t)
}

/// Resume after the session is gone: the server answers `UnknownSession`
/// (checked on the wire) and the client ends with `SessionUnknown`
/// (possibly after retrying on fresh transports, which a client that does
/// not trust an unauthenticated answer at once may do).
fn resume_until_unknown(sim: &mut Sim) {
    // Anonymous mode (no static key): the answer carries the all-zero
    // token and nothing authenticates it, so the client believes only
    // `max_unauthenticated_rejections` of them in a row.
    assert!(sim.ccfg.pinned_server_key.is_none());
    let attempts = sim.ccfg.max_unauthenticated_rejections;
    let conn_id = sim.client.conn_id().expect("conn id");
    let written = sim.client.bytes_written();
    let acked = written - sim.client.unacked() as u64;
    for i in 1..=attempts {
        assert!(!sim.client.is_closed(), "closed after {} answers", i - 1);
        sim.open();
        sim.transmit();
        assert_eq!(
            u64::from_le_bytes(sim.c2s.pending()[2..10].try_into().unwrap()),
            conn_id
        );
        sim.deliver_c2s(usize::MAX);
        sim.transmit();
        assert_eq!(sim.s2c.pending(), &unknown_answer([0; 16])[..]);
        sim.deliver_s2c(usize::MAX);
        sim.brk();
    }
    assert_eq!(sim.client.close_reason(), Some(CloseReason::SessionUnknown));
    assert_eq!(
        sim.client.in_doubt(),
        Some(ByteRange {
            start: acked,
            end: written
        })
    );
    assert!(sim.cev.contains(&Event::Closed {
        reason: CloseReason::SessionUnknown
    }));
    assert_eq!(sim.client.new_transport(sim.now), Err(Error::Closed));
}

/// Criterion 6: a session without transport for `resume_timeout` expires
/// (injected time): `SessionExpired`, `has_session` false, the session
/// count drops, its memory is gone; other sessions stay. A resume after
/// expiry gets `UnknownSession`, the client ends with `SessionUnknown`.
#[test]
fn session_expires_after_resume_timeout() {
    let cfg = Config::default();
    let mut sim = Sim::default_sim(0xE1);
    let (_other_client, other_t) = second_session(&mut sim);
    sim.drain_events();
    sim.sid = None;
    sim.set_totals(60_000, 60_000);
    let sid = sim.handshake();
    let other = sim.server.session_of(other_t).expect("other session");
    assert_ne!(other, sid);
    assert_eq!(sim.server.session_count(), 2);
    sim.run(1_000_000, |s| assert!(!s.ended));
    sim.transmit();
    sim.cut();
    let lost_at = sim.now;
    let expiry = lost_at.saturating_add(cfg.resume_timeout);
    assert!(sim.server.buffer_memory(sid) > 0 || sim.server.has_session(sid));
    // Just before: still there (the other session's transport times out
    // meanwhile and starts its own, later, expiry).
    sim.now = Instant::from_micros(expiry.as_micros() - 1);
    sim.server.handle_timeout(sim.now);
    sim.drain_events();
    assert!(sim.server.has_session(sid));
    assert_eq!(sim.server.session_count(), 2);
    assert!(sim.server.poll_timeout().is_some_and(|t| t <= expiry));
    sim.now = expiry;
    sim.server.handle_timeout(sim.now);
    sim.drain_events();
    assert!(sim
        .sev
        .contains(&ServerEvent::SessionExpired { session: sid }));
    assert!(!sim.server.has_session(sid));
    assert_eq!(sim.server.session_count(), 1);
    assert!(sim.server.has_session(other));
    assert_eq!(sim.server.buffer_memory(sid), 0);
    assert_eq!(sim.server.send(sid, b"x"), Err(Error::UnknownSession));
    let expired = sim
        .sev
        .iter()
        .filter(|e| matches!(e, ServerEvent::SessionExpired { .. }))
        .count();
    assert_eq!(expired, 1);
    resume_until_unknown(&mut sim);
}

/// Lesson (b): when the missing range cannot be served, the session dies
/// on both sides, with no zombie server session. Forged through the public
/// API with a rolled-back client: a second client with the same RNG seed
/// fed the same ServerHello holds the same session as it was at the
/// handshake (like a restored VM snapshot). After the real client moved
/// data (acknowledged), the stale twin resumes: its counts cannot be
/// reconciled, the server answers an authenticated `DataUnavailable` and
/// frees the session (`Closed { DataUnavailable }`), the twin closes with
/// `DataUnavailable`, and the real client's next resume finds no session.
#[test]
fn irreconcilable_resume_kills_the_session_on_both_sides() {
    let cfg = Config::default();
    let mut sim = Sim::default_sim(0x2B);
    let mut twin = Client::new(cfg.clone(), rng(sim.client_seed));
    sim.open();
    sim.transmit();
    let hello = sim.c2s.pending().to_vec();
    twin.new_transport(sim.now).expect("twin transport");
    let mut buf = vec![0u8; 4096];
    let n = twin.poll_transmit(sim.now, &mut buf).expect("tx");
    assert_eq!(&buf[..n], &hello[..], "same seed, same hello");
    sim.deliver_c2s(usize::MAX);
    sim.transmit();
    let server_hello = sim.s2c.pending()[..SERVER_HELLO_LEN].to_vec();
    assert_eq!(
        twin.handle_input(sim.now, &server_hello),
        Ok(SERVER_HELLO_LEN)
    );
    for _ in 0..100 {
        if sim.client.is_connected() && sim.sid.is_some() {
            break;
        }
        sim.step();
    }
    let sid = sim.sid.expect("session");
    assert_eq!(twin.conn_id(), sim.client.conn_id());

    sim.set_totals(100_000, 100_000);
    sim.run(1_000_000, |s| assert!(!s.ended));
    sim.settle(1000);
    assert_eq!(sim.server.unacked(sid), 0, "all acknowledged");
    sim.brk();

    // The stale twin resumes first.
    twin.transport_lost(sim.now);
    let t = sim.server.accept(sim.now).expect("accept");
    twin.new_transport(sim.now).expect("twin resume");
    let n = twin.poll_transmit(sim.now, &mut buf).expect("tx");
    let r = sim.server.handle_input(t, sim.now, &buf[..n]);
    assert_eq!(r, rejection(ResumeStatus::DataUnavailable));
    let n = sim.server.poll_transmit(t, sim.now, &mut buf).expect("tx");
    assert_eq!(n, REJECT_AUTH_LEN);
    assert_eq!(
        &buf[..2],
        &[VERSION, ResumeStatus::DataUnavailable.to_byte()]
    );
    assert_eq!(reject_time(&buf[..n]), sim.now.as_micros());
    assert_eq!(
        twin.handle_input(sim.now, &buf[..n]),
        rejection(ResumeStatus::DataUnavailable)
    );
    assert_eq!(twin.close_reason(), Some(CloseReason::DataUnavailable));
    sim.drain_events();
    sim.server.transport_lost(t, sim.now);
    assert!(sim.sev.contains(&ServerEvent::Closed {
        session: sid,
        reason: CloseReason::DataUnavailable
    }));
    assert!(!sim.server.has_session(sid), "no zombie session");
    assert_eq!(sim.server.session_count(), 0);
    // Nothing left to expire later either.
    assert_eq!(sim.server.poll_timeout(), None);
    resume_until_unknown(&mut sim);
}

// ---------------------------------------------------------------------------
// Reset tokens: "unknown session" answers with a pinned server key (issue 9)

/// The server's static secret in the pinned tests.
const SERVER_SECRET: [u8; 32] = [0x5A; 32];

/// Client pinning the key of [`SERVER_SECRET`], server holding it. The
/// client's retry limits are set as low as they go: in pinned mode no
/// unauthenticated answer may count toward them.
fn pinned_configs() -> (Config, Config) {
    let kp = StaticKeypair::from_secret_bytes(SERVER_SECRET);
    let ccfg = Config {
        pinned_server_key: Some(kp.public_key()),
        max_resume_attempts: 1,
        max_unauthenticated_rejections: 1,
        max_auth_failures: 1,
        ..Config::default()
    };
    let scfg = Config {
        server_static: Some(kp),
        ..Config::default()
    };
    (ccfg, scfg)
}

/// The reset token of `conn_id` under the server secret `sk`, computed
/// here from the spec (PROTOCOL.md 3.6), not by the crate:
/// `MAC16(derive_key("relink v1 2026-11 reset secret", sk), LE64(conn_id))`.
fn spec_reset_token(sk: &[u8; 32], conn_id: u64) -> [u8; 16] {
    let secret = blake3::derive_key("relink v1 2026-11 reset secret", sk);
    let mut t = [0u8; 16];
    t.copy_from_slice(&blake3::keyed_hash(&secret, &conn_id.to_le_bytes()).as_bytes()[..16]);
    t
}

/// A pinned session with data in flight both ways, then cut; the client
/// application wrote more while detached, so bytes are in doubt. Returns
/// the sim and the session.
fn pinned_cut_session(seed: u64) -> (Sim, relink::SessionId) {
    let (ccfg, scfg) = pinned_configs();
    let mut sim = Sim::new(seed, ccfg, scfg);
    sim.max_write = 2000;
    sim.max_chunk = 1500;
    sim.set_totals(200_000, 200_000);
    let sid = sim.handshake();
    for _ in 0..40 {
        sim.step();
    }
    sim.transmit();
    sim.cut();
    sim.app_send();
    sim.drain_events();
    assert!(!sim.client.is_closed());
    assert!(
        sim.client.unacked() > 0,
        "bytes in doubt needed: {}",
        sim.client.bytes_written()
    );
    (sim, sid)
}

/// The client's in-doubt range as it stands: `[acked, written)`.
fn doubt_now(client: &Client<chacha20::ChaCha20Rng>) -> ByteRange {
    let written = client.bytes_written();
    ByteRange {
        start: written - client.unacked() as u64,
        end: written,
    }
}

/// One resume attempt against whatever server `sim.server` now is; its
/// answer goes to the client. Checks the answer is the 18-byte
/// `UnknownSession` with the spec's token for the client's connection id.
fn resume_gets_genuine_unknown(sim: &mut Sim) {
    let conn_id = sim.client.conn_id().expect("conn id");
    sim.open();
    sim.transmit();
    assert_eq!(sim.c2s.pending().len(), RESUME_REQUEST_LEN);
    sim.deliver_c2s(usize::MAX);
    sim.transmit();
    assert_eq!(
        sim.s2c.pending(),
        &unknown_answer(spec_reset_token(&SERVER_SECRET, conn_id))[..],
        "the answer carries the session's reset token"
    );
    let r = sim.client.handle_input(sim.now, sim.s2c.pending());
    assert_eq!(r, rejection(ResumeStatus::UnknownSession));
    sim.drain_events();
}

/// The client ended the session at once with `SessionUnknown`: one
/// `Closed` event (no TransportLost before it), the in-doubt range is
/// exactly what was written and not acknowledged, and nothing is ever
/// resent: no new transport, no send, nothing to transmit.
fn assert_ended_unknown(sim: &mut Sim, doubt: ByteRange, cev_before: usize) {
    assert_eq!(sim.client.close_reason(), Some(CloseReason::SessionUnknown));
    assert_eq!(
        &sim.cev[cev_before..],
        &[Event::Closed {
            reason: CloseReason::SessionUnknown
        }]
    );
    assert_eq!(sim.client.in_doubt(), Some(doubt));
    assert!(!doubt.is_empty(), "{doubt:?}");
    assert_eq!(sim.client.give_up_at(), None);
    let mut buf = vec![0u8; 64 * 1024];
    assert_eq!(sim.client.poll_transmit(sim.now, &mut buf), Ok(0));
    assert_eq!(sim.client.send(b"again"), Err(Error::Closed));
    sim.brk();
    assert_eq!(sim.client.new_transport(sim.now), Err(Error::Closed));
}

/// Issue 9, pinned mode: the server restarted (a fresh `Server` with the
/// same static key). It does not know the session but proves it with the
/// session's reset token; the client ends the session at the first such
/// answer with `SessionUnknown` and reports `[acked, written)` in doubt.
/// The restarted server registers nothing and reports nothing.
#[test]
fn pinned_client_ends_at_once_when_the_restarted_server_proves_unknown_session() {
    let (mut sim, _) = pinned_cut_session(0x7E5E7);
    let doubt = doubt_now(&sim.client);
    sim.server = Server::new(sim.scfg.clone(), rng(0x7E5E7 ^ 0xFFFF));
    sim.sid = None;
    let (cev, sev) = (sim.cev.len(), sim.sev.len());
    resume_gets_genuine_unknown(&mut sim);
    assert_ended_unknown(&mut sim, doubt, cev);
    assert_eq!(sim.server.session_count(), 0);
    assert!(
        !sim.sev[sev..].iter().any(|e| matches!(
            e,
            ServerEvent::HandshakeDone { .. } | ServerEvent::Resumed { .. }
        )),
        "{:?}",
        &sim.sev[sev..]
    );
}

/// Issue 9, pinned mode: the session expired on the server (the client
/// was away longer than `resume_timeout`, but not yet past its own
/// `give_up_at`). The first resume gets the genuine token and ends the
/// session at once with `SessionUnknown` and the in-doubt range.
#[test]
fn pinned_client_ends_at_once_when_its_expired_session_is_unknown() {
    let (mut sim, sid) = pinned_cut_session(0xE4B1);
    let doubt = doubt_now(&sim.client);
    let give_up = sim.client.give_up_at().expect("detached");
    let expiry = sim.now.saturating_add(sim.scfg.resume_timeout);
    assert!(expiry < give_up, "the client still tries after the expiry");
    sim.now = expiry;
    sim.server.handle_timeout(sim.now);
    sim.drain_events();
    assert!(sim
        .sev
        .contains(&ServerEvent::SessionExpired { session: sid }));
    // (Bytes its application has not read yet stay readable there; the
    // session can no longer be resumed.)
    sim.client.handle_timeout(sim.now);
    assert!(!sim.client.is_closed());
    let cev = sim.cev.len();
    resume_gets_genuine_unknown(&mut sim);
    assert_ended_unknown(&mut sim, doubt, cev);
}

/// The forged or corrupted answers of the pinned tests.
#[derive(Clone, Copy, Debug)]
enum Forged {
    /// `01 02` and 16 random bytes.
    UnknownRandomToken,
    /// `01 02`, then the transport ends (EOF).
    UnknownCutShort,
    /// `01 01`.
    UnsupportedVersion,
    /// `01 07`.
    Malformed,
    /// `01 03`.
    AuthFailedStatus,
    /// `01 02` and the session's genuine token with one bit flipped.
    UnknownFlippedToken,
    /// An Ok response (50 bytes) whose MAC does not verify.
    OkBadMac,
    /// Authenticated rejections (Replayed, Stale, DataUnavailable: 26
    /// bytes) whose MAC does not verify.
    AuthenticatedBadMac(ResumeStatus),
    /// A real relink server with another static key: it does not know the
    /// session and answers with its own token for the id.
    OtherServer,
}

/// Pinned mode: forged or corrupted answers to resume attempts, 50 of
/// each kind in a row (450 in all, with `max_resume_attempts` and
/// `max_unauthenticated_rejections` at 1 and `max_auth_failures` at 1),
/// never end the session, never move its `give_up_at` deadline, never
/// deliver a byte; each costs exactly its transport. A later genuine
/// resume succeeds and both streams complete byte-exact.
#[test]
fn pinned_client_survives_any_number_of_forged_answers() {
    let (mut sim, sid) = pinned_cut_session(0xF0463D);
    let conn_id = sim.client.conn_id().expect("conn id");
    let genuine = spec_reset_token(&SERVER_SECRET, conn_id);
    let give_up = sim.client.give_up_at().expect("detached");
    let doubt = doubt_now(&sim.client);
    // Verified before the cut, not yet read by the application.
    let readable = sim.client.readable();
    let mut other = Server::new(
        Config {
            server_static: Some(StaticKeypair::from_secret_bytes([0x77; 32])),
            ..Config::default()
        },
        rng(0x07E4),
    );
    let mut rnd = rng(0xF0463D);
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| between(&mut rnd, 0, 255) as u8)
            .collect::<Vec<u8>>()
    };
    let kinds = [
        Forged::UnknownRandomToken,
        Forged::UnknownCutShort,
        Forged::UnsupportedVersion,
        Forged::Malformed,
        Forged::AuthFailedStatus,
        Forged::UnknownFlippedToken,
        Forged::OkBadMac,
        Forged::AuthenticatedBadMac(ResumeStatus::Replayed),
        Forged::AuthenticatedBadMac(ResumeStatus::Stale),
        Forged::AuthenticatedBadMac(ResumeStatus::DataUnavailable),
        Forged::OtherServer,
    ];
    let status = |s: ResumeStatus| vec![VERSION, s.to_byte()];
    let mut buf = vec![0u8; 64 * 1024];
    for kind in kinds {
        for i in 0..50usize {
            let what = format!("{kind:?} #{i}");
            sim.now = sim.now.saturating_add(Duration::from_millis(50));
            sim.client.new_transport(sim.now).expect(&what);
            let n = sim.client.poll_transmit(sim.now, &mut buf).expect(&what);
            assert_eq!(n, RESUME_REQUEST_LEN, "{what}");
            let request = buf[..n].to_vec();
            assert_eq!(
                u64::from_le_bytes(request[2..10].try_into().unwrap()),
                conn_id
            );
            // The answer and the client's expected verdict (None: the
            // answer is incomplete, the transport then ends).
            let (answer, verdict) = match kind {
                Forged::UnknownRandomToken => (
                    [status(ResumeStatus::UnknownSession), random(16)].concat(),
                    Some(rejection(ResumeStatus::UnknownSession)),
                ),
                Forged::UnknownCutShort => (status(ResumeStatus::UnknownSession), None),
                Forged::UnsupportedVersion => (
                    status(ResumeStatus::UnsupportedVersion),
                    Some(rejection(ResumeStatus::UnsupportedVersion)),
                ),
                Forged::Malformed => (
                    status(ResumeStatus::Malformed),
                    Some(rejection(ResumeStatus::Malformed)),
                ),
                Forged::AuthFailedStatus => (
                    status(ResumeStatus::AuthFailed),
                    Some(rejection(ResumeStatus::AuthFailed)),
                ),
                Forged::UnknownFlippedToken => {
                    let mut t = genuine;
                    t[(i / 8) % 16] ^= 1 << (i % 8);
                    (
                        unknown_answer(t),
                        Some(rejection(ResumeStatus::UnknownSession)),
                    )
                }
                Forged::OkBadMac => (
                    [status(ResumeStatus::Ok), random(RESUME_RESPONSE_LEN - 2)].concat(),
                    Some(Err(Error::AuthFailed)),
                ),
                Forged::AuthenticatedBadMac(s) => (
                    [status(s), random(REJECT_AUTH_LEN - 2)].concat(),
                    Some(Err(Error::AuthFailed)),
                ),
                Forged::OtherServer => {
                    let t = other.accept(sim.now).expect("accept");
                    assert_eq!(
                        other.handle_input(t, sim.now, &request),
                        rejection(ResumeStatus::UnknownSession),
                        "{what}"
                    );
                    let n = other.poll_transmit(t, sim.now, &mut buf).expect("tx");
                    let answer = buf[..n].to_vec();
                    other.transport_lost(t, sim.now);
                    while other.poll_event().is_some() {}
                    assert_eq!(
                        answer,
                        unknown_answer(spec_reset_token(&[0x77; 32], conn_id)),
                        "{what}"
                    );
                    (answer, Some(rejection(ResumeStatus::UnknownSession)))
                }
            };
            let r = sim.client.handle_input(sim.now, &answer);
            let events: Vec<Event> = std::iter::from_fn(|| sim.client.poll_event()).collect();
            match verdict {
                None => {
                    assert_eq!(r, Ok(answer.len()), "{what}");
                    assert!(events.is_empty(), "{what}: {events:?}");
                    assert!(!sim.client.transport_ended(), "{what}");
                }
                Some(v) => {
                    assert_eq!(r, v, "{what}");
                    let e = v.unwrap_err();
                    let mut want = vec![Event::TransportLost { error: Some(e) }];
                    if matches!(
                        e,
                        Error::AuthFailed | Error::ResumeRejected(ResumeStatus::AuthFailed)
                    ) {
                        want.insert(0, Event::AuthFailed { reason: e });
                    }
                    assert_eq!(events, want, "{what}");
                    assert!(sim.client.transport_ended(), "{what}");
                }
            }
            assert_eq!(sim.client.close_reason(), None, "{what}");
            assert_eq!(sim.client.in_doubt(), None, "{what}");
            assert!(!sim.client.is_connected(), "{what}");
            assert_eq!(sim.client.readable(), readable, "{what}");
            sim.client.transport_lost(sim.now);
            assert_eq!(sim.client.give_up_at(), Some(give_up), "{what}");
        }
    }
    assert!(sim.now < give_up);
    // Nothing was acknowledged meanwhile.
    assert_eq!(doubt_now(&sim.client), doubt);
    // The genuine server still holds the session: the next resume
    // succeeds and both streams complete byte-exact.
    assert!(sim.server.has_session(sid));
    let resumes = sim.stats.server_resumes;
    sim.open();
    sim.finish_resume();
    assert_eq!(sim.stats.server_resumes, resumes + 1);
    sim.run(1_000_000, |s| assert!(!s.ended, "{:?}", s.tail_events()));
    assert!(sim.up.done() && sim.down.done());
    assert_eq!(sim.client.close_reason(), None);
}

/// Anonymous mode (nothing authenticates the server): forged
/// `UnknownSession` answers (`01 02` and any 16 bytes) end the session
/// after `max_unauthenticated_rejections` of them in a row, with
/// `SessionUnknown` and the in-doubt range; fewer in a row, then a
/// genuine resume, start the count again.
#[test]
fn anonymous_client_gives_up_after_max_unauthenticated_unknown_session_answers() {
    let ccfg = Config {
        max_unauthenticated_rejections: 4,
        ..Config::default()
    };
    let max = ccfg.max_unauthenticated_rejections;
    let mut sim = Sim::new(0xA404, ccfg, Config::default());
    sim.max_write = 2000;
    sim.max_chunk = 1500;
    sim.set_totals(200_000, 200_000);
    let sid = sim.handshake();
    for _ in 0..40 {
        sim.step();
    }
    let mut rnd = rng(0xA404);
    let mut buf = vec![0u8; 64 * 1024];
    let mut forge = |sim: &mut Sim, what: &str| {
        sim.now = sim.now.saturating_add(Duration::from_millis(50));
        sim.client.new_transport(sim.now).expect(what);
        let n = sim.client.poll_transmit(sim.now, &mut buf).expect(what);
        assert_eq!(n, RESUME_REQUEST_LEN, "{what}");
        let token: Vec<u8> = (0..16).map(|_| between(&mut rnd, 0, 255) as u8).collect();
        let answer = unknown_answer(token.try_into().unwrap());
        assert_eq!(
            sim.client.handle_input(sim.now, &answer),
            rejection(ResumeStatus::UnknownSession),
            "{what}"
        );
        sim.drain_events();
        sim.client.transport_lost(sim.now);
    };
    // Round 1: one short of the limit, then a genuine resume.
    sim.transmit();
    sim.cut();
    for i in 1..max {
        let cev = sim.cev.len();
        forge(&mut sim, &format!("round 1 #{i}"));
        assert_eq!(
            &sim.cev[cev..],
            &[Event::TransportLost {
                error: Some(Error::ResumeRejected(ResumeStatus::UnknownSession))
            }]
        );
        assert!(!sim.client.is_closed());
    }
    sim.open();
    sim.finish_resume();
    for _ in 0..40 {
        sim.step();
    }
    // Round 2: the count started again; the limit-th in a row ends it.
    sim.transmit();
    sim.cut();
    sim.app_send();
    sim.drain_events();
    let doubt = doubt_now(&sim.client);
    assert!(!doubt.is_empty(), "bytes in doubt needed");
    for i in 1..max {
        forge(&mut sim, &format!("round 2 #{i}"));
        assert!(!sim.client.is_closed(), "round 2 #{i}");
    }
    let cev = sim.cev.len();
    forge(&mut sim, "round 2, last");
    assert_ended_unknown(&mut sim, doubt, cev);
    // The server still held it: an active attacker can end an anonymous
    // session (PROTOCOL.md 9), but no byte is duplicated or resent.
    assert!(sim.server.has_session(sid));
}
