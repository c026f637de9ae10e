//! Reconnect and resume through the in-memory harness (issue #3): bulk
//! transfer across hundreds of resumes with bounded memory, reconnects
//! before the application drained its buffer, silently dead transports,
//! and clean close versus break.

#[path = "support_d.rs"]
mod support_d;

use relink::{CloseReason, Config, Duration, Error, Event, ServerEvent};
use support_d::*;

/// Criterion 2: 64 MiB each way, the transport breaks after every 1–500 KiB
/// delivered (a random prefix of what is in flight arrives, usually ending
/// inside a frame; the rest is lost). Both streams are checked byte by byte
/// (no duplicate, no gap), every resend range is checked against the
/// peer's verified count, and both sides' `buffer_memory()` is checked
/// against `send_buffer + recv_buffer + one maximum frame` after every
/// delivery and every step (see `support_d::mem_bound`).
#[test]
fn sixty_four_mib_each_way_across_hundreds_of_resumes() {
    const TOTAL: u64 = 64 << 20;
    let mut sim = Sim::default_sim(0x64_4D1B);
    sim.set_totals(TOTAL, TOTAL);
    sim.handshake();
    let mut next_break = between(&mut sim.rng, 1024, 500 * 1024);
    let mut breaks = 0u64;
    sim.run(50_000_000, |s| {
        assert!(!s.ended, "transport ended: {:?}", s.tail_events());
        if s.c2s.delivered + s.s2c.delivered >= next_break {
            s.transmit();
            s.cut();
            s.open();
            breaks += 1;
            next_break = between(&mut s.rng, 1024, 500 * 1024);
        }
    });
    sim.finish_resume();
    sim.settle(10_000);
    assert_eq!(sim.up.received, TOTAL);
    assert_eq!(sim.down.received, TOTAL);
    assert!(breaks >= 200, "only {breaks} breaks");
    // Every break was followed by exactly one resume on each side.
    assert_eq!(sim.stats.client_resumes, breaks);
    assert_eq!(sim.stats.server_resumes, breaks);
    assert!(sim.client.close_reason().is_none());
    let bound = mem_bound(&Config::default());
    assert!(sim.stats.client_mem_peak <= bound && sim.stats.server_mem_peak <= bound);
    eprintln!(
        "64 MiB each way: {breaks} resumes, memory peak client {} server {} (bound {bound})",
        sim.stats.client_mem_peak, sim.stats.server_mem_peak
    );
}

/// Lesson (a) of the original implementation: its read count ignored bytes
/// received but not yet read, so two reconnects in a row before the
/// application drained its buffer delivered bytes twice. Here the
/// applications stop reading, the transport breaks twice (inside frames)
/// with unread data buffered on both sides, then everything is read and
/// checked: nothing twice, nothing missing.
#[test]
fn two_reconnects_before_the_application_reads_deliver_nothing_twice() {
    for seed in 0..24u64 {
        let cfg = Config {
            max_frame_payload: 1000 + seed as usize * 37,
            recv_buffer: 40_000,
            send_buffer: 60_000,
            ..Config::default()
        };
        let mut sim = Sim::new(seed, cfg.clone(), cfg);
        sim.set_totals(300_000, 300_000);
        sim.max_write = 5_000;
        sim.max_chunk = 3_000;
        let sid = sim.handshake();
        sim.client_reads = false;
        sim.server_reads = false;
        let warmup = between(&mut sim.rng, 5, 80);
        for _ in 0..warmup {
            sim.step();
        }
        assert!(sim.client.readable() > 0 && sim.server.readable(sid) > 0);
        let (client_before, server_before) =
            (sim.stats.client_ranges.len(), sim.stats.server_ranges.len());
        for _ in 0..2 {
            sim.transmit();
            sim.cut();
            sim.open();
            sim.finish_resume();
            let k = between(&mut sim.rng, 0, 10);
            for _ in 0..k {
                sim.step();
            }
        }
        // Both resumes started the resends beyond what the applications
        // read: the unread, buffered bytes counted as received.
        for &(start, _) in &sim.stats.server_ranges[server_before..] {
            assert!(
                start > sim.down.received,
                "seed {seed}: unread bytes not counted"
            );
        }
        for &(start, _) in &sim.stats.client_ranges[client_before..] {
            assert!(
                start > sim.up.received,
                "seed {seed}: unread bytes not counted"
            );
        }
        assert!(sim.client.readable() > 0 && sim.server.readable(sid) > 0);
        sim.client_reads = true;
        sim.server_reads = true;
        sim.run(1_000_000, |s| assert!(!s.ended));
        assert_eq!(sim.up.received, 300_000);
        assert_eq!(sim.down.received, 300_000);
    }
}

/// Lesson (c), first half: a transport that silently stops delivering (no
/// FIN, no RST, the drivers never call `transport_lost`) is detected by
/// both sides' idle timeout, within `idle_timeout` of the last byte that
/// arrived, while an idle but working transport is kept alive by
/// keepalives for many idle timeouts.
#[test]
fn silently_dead_transport_is_detected_by_idle_timeout_on_both_sides() {
    let cfg = Config::default();
    let idle = cfg.idle_timeout.as_micros();
    let keepalive = cfg.keepalive_interval.as_micros();
    let mut sim = Sim::default_sim(0x1D1E);
    sim.set_totals(200_000, 200_000);
    let sid = sim.handshake();
    sim.run(100_000, |s| assert!(!s.ended));
    // Idle but healthy: keepalives only (step() jumps to timers).
    let healthy_until = sim.now.as_micros() + 10 * idle;
    while sim.now.as_micros() < healthy_until {
        sim.step();
        assert!(
            !sim.ended,
            "healthy idle transport ended: {:?}",
            sim.tail_events()
        );
    }
    let tid = sim.tid.expect("transport");
    // Silence: both sides keep writing, nothing arrives.
    let dead_at = sim.now.as_micros();
    let (mut client_lost, mut server_lost) = (None, None);
    while client_lost.is_none() || server_lost.is_none() {
        sim.transmit();
        sim.c2s.truncate(0);
        sim.s2c.truncate(0);
        let next = [sim.client.poll_timeout(), sim.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .expect("a timer is armed while a transport is attached");
        sim.now = sim.now.max(next);
        let before = (sim.cev.len(), sim.sev.len());
        sim.timers();
        let t = sim.now.as_micros();
        if sim.cev[before.0..].contains(&Event::TransportLost {
            error: Some(Error::TimedOut),
        }) {
            client_lost.get_or_insert(t);
        }
        if sim.sev[before.1..].contains(&ServerEvent::CloseTransport {
            transport: tid,
            error: Some(Error::TimedOut),
        }) {
            server_lost.get_or_insert(t);
        }
        assert!(t <= dead_at + 2 * idle, "dead transport not detected");
    }
    for (side, t) in [("client", client_lost), ("server", server_lost)] {
        let after = t.expect("detected") - dead_at;
        assert!(after <= idle, "{side} detected after {after} µs");
        // Not premature: the last keepalive arrived at most one interval
        // (plus a step) before the silence.
        assert!(
            after + keepalive + 1_000 >= idle,
            "{side} detected after {after} µs"
        );
    }
    assert!(sim.client.transport_ended() && sim.server.transport_ended(tid));
    // The session survives: resume on a new transport and carry on.
    assert!(sim.server.has_session(sid));
    sim.brk();
    sim.open();
    sim.finish_resume();
    sim.set_totals(400_000, 300_000);
    sim.run(100_000, |s| assert!(!s.ended));
}

/// Lesson (c), second half: only the server→client direction dies
/// silently. The client times out first; its resume on a new transport
/// wins while the server still holds the old one, which the server then
/// tells the driver to close (`CloseTransport` without error).
#[test]
fn resume_while_the_server_still_holds_the_old_transport_wins() {
    let mut sim = Sim::default_sim(0x0D1E);
    sim.set_totals(100_000, 100_000);
    let sid = sim.handshake();
    sim.run(100_000, |s| assert!(!s.ended));
    let old = sim.tid.expect("transport");
    sim.silent_s2c = true;
    while !sim.client.transport_ended() {
        sim.step();
        assert!(!sim.server.transport_ended(old), "server still receives");
    }
    assert!(
        sim.cev.contains(&Event::TransportLost {
            error: Some(Error::TimedOut)
        }),
        "{:?}",
        sim.tail_events()
    );
    assert_eq!(sim.server.session_of(old), Some(sid));
    // The client's driver opens a new transport; nobody tells the server
    // about the old one.
    sim.tid = None;
    sim.open();
    let new = sim.tid.expect("new transport");
    sim.finish_resume();
    assert!(sim.sev.contains(&ServerEvent::CloseTransport {
        transport: old,
        error: None
    }));
    assert!(sim.server.transport_ended(old));
    assert_eq!(sim.server.session_of(new), Some(sid));
    sim.server.transport_lost(old, sim.now);
    assert_eq!(sim.server.session_of(new), Some(sid));
    sim.set_totals(300_000, 300_000);
    sim.run(100_000, |s| assert!(!s.ended));
}

/// Run until both sides closed; `breaks` random cuts happen meanwhile
/// (only while the client session is still open).
fn close_both(sim: &mut Sim, mut breaks: u32) {
    let sid = sim.sid.expect("session");
    let (mut client_closed, mut server_closed) = (false, false);
    for _ in 0..200_000 {
        sim.step();
        assert!(!sim.ended, "transport ended: {:?}", sim.tail_events());
        if sim.up.sent == sim.up.total && !client_closed {
            sim.client.close();
            client_closed = true;
        }
        if sim.down.sent == sim.down.total && !server_closed {
            sim.server.close(sid).expect("server close");
            server_closed = true;
        }
        let server_clean = sim.sev.contains(&ServerEvent::Closed {
            session: sid,
            reason: CloseReason::Clean,
        });
        if sim.client.is_closed() && server_clean {
            return;
        }
        if breaks > 0 && !sim.client.is_closed() && between(&mut sim.rng, 0, 15) == 0 {
            sim.transmit();
            sim.cut();
            if sim.client.is_closed() {
                // The cut still delivered the last frame the client needed
                // (the server's CLOSE or the ACK of its own): it is done and
                // resumes no more; the server ends clean at the latest when
                // the session expires (PROTOCOL.md 6.4).
                return;
            }
            sim.open();
            breaks -= 1;
        }
    }
    panic!("close did not complete: {:?}", sim.tail_events());
}

/// Criterion 8, first half: an authenticated close ends the session for
/// good on both sides: `Closed { Clean }` on both, end of stream for both
/// applications, no more resumes, the server session freed.
#[test]
fn authenticated_close_ends_the_session_for_good() {
    let mut sim = Sim::default_sim(0xC105E);
    sim.set_totals(150_000, 120_000);
    let sid = sim.handshake();
    close_both(&mut sim, 0);
    sim.settle(1000);
    assert_eq!(sim.client.close_reason(), Some(CloseReason::Clean));
    assert!(sim.cev.contains(&Event::Closed {
        reason: CloseReason::Clean
    }));
    assert!(
        sim.client_eof && sim.server_eof,
        "both read the end of stream"
    );
    assert_eq!((sim.up.received, sim.down.received), (150_000, 120_000));
    assert_eq!(sim.client.new_transport(sim.now), Err(Error::Closed));
    assert_eq!(sim.client.send(b"late"), Err(Error::Closed));
    sim.brk();
    assert_clean_session_freed_after_resume_timeout(&mut sim, sid);
}

/// A cleanly closed session stays registered (trimmed) for `resume_timeout`
/// after its transport is lost, because the client may still need its last
/// ACK; then it is freed quietly (no `SessionExpired`: it ended `Clean`).
fn assert_clean_session_freed_after_resume_timeout(sim: &mut Sim, sid: relink::SessionId) {
    assert!(sim.server.has_session(sid), "kept for a late resume");
    sim.now = sim.now.saturating_add(Config::default().resume_timeout);
    sim.server.handle_timeout(sim.now);
    assert!(!sim.server.has_session(sid), "clean session freed");
    assert_eq!(sim.server.session_count(), 0);
    while let Some(e) = sim.server.poll_event() {
        assert!(!matches!(e, ServerEvent::SessionExpired { .. }), "{e:?}");
    }
}

/// Criterion 8, second half: breaks while the streams are being closed
/// (CLOSE frames or their ACKs lost in flight) keep the session resumable;
/// the close completes cleanly on both sides after resuming.
#[test]
fn breaks_during_close_keep_the_session_resumable() {
    for seed in 0..40u64 {
        let mut sim = Sim::default_sim(0xB0C1 + seed);
        let up = between(&mut sim.rng, 0, 100_000);
        let down = between(&mut sim.rng, 0, 100_000);
        sim.set_totals(up, down);
        sim.max_write = 4_000;
        sim.max_chunk = 2_000;
        let sid = sim.handshake();
        close_both(&mut sim, 6);
        sim.settle(1000);
        assert_eq!(
            sim.client.close_reason(),
            Some(CloseReason::Clean),
            "seed {seed}: {:?}",
            sim.tail_events()
        );
        assert!(sim.client_eof && sim.server_eof, "seed {seed}");
        assert!(sim.up.done() && sim.down.done(), "seed {seed}");
        sim.brk();
        assert_clean_session_freed_after_resume_timeout(&mut sim, sid);
    }
}

/// The last ACK of a close lost in a break. The server closed first and
/// the client acknowledged that; then the client's CLOSE arrives: the
/// server is done (`Closed { Clean }`), but the transport breaks before its
/// ACK of the client's CLOSE reaches the client. The client, still
/// waiting for that ACK, resumes: the close must still end `Clean` on
/// the client too (not `SessionUnknown`).
/// The server keeps a cleanly closed session for `resume_timeout` for
/// exactly this case.
#[test]
fn close_ack_lost_in_a_break_still_ends_clean_on_the_client() {
    let mut sim = Sim::default_sim(0x1A57);
    sim.set_totals(50_000, 50_000);
    let sid = sim.handshake();
    sim.run(100_000, |s| assert!(!s.ended));
    sim.server.close(sid).expect("close");
    sim.settle(1000);
    assert!(sim.client_peer_closed && sim.client_eof);
    sim.client.close();
    sim.transmit();
    sim.deliver_c2s(usize::MAX);
    assert!(sim.sev.contains(&ServerEvent::Closed {
        session: sid,
        reason: CloseReason::Clean
    }));
    assert!(!sim.client.is_closed(), "its CLOSE is not acknowledged yet");
    // The server's ACK is lost.
    sim.brk();
    sim.open();
    for _ in 0..1000 {
        if sim.client.is_closed() {
            break;
        }
        sim.step();
    }
    assert_eq!(
        sim.client.close_reason(),
        Some(CloseReason::Clean),
        "client events: {:?}",
        sim.tail_events().0
    );
}

/// The ACK frames and the resume messages keep the send history bounded:
/// `send` refuses data beyond `send_buffer` (returns 0) while nothing is
/// acknowledged, across a break, and accepts again once the resume
/// acknowledged the bytes the server had verified.
#[test]
fn send_refuses_beyond_the_cap_until_acknowledged_across_a_resume() {
    let cfg = Config {
        max_frame_payload: 1_000,
        send_buffer: 10_000,
        ack_delay: Duration::from_secs(1),
        ack_threshold: 1 << 20,
        ..Config::default()
    };
    let mut sim = Sim::new(0xCA9, cfg.clone(), cfg);
    sim.server_reads = false;
    sim.handshake();
    let data = vec![7u8; 4_000];
    let mut accepted = 0;
    loop {
        let n = sim.client.send(&data).expect("send");
        if n == 0 {
            break;
        }
        accepted += n;
    }
    assert_eq!(accepted, 10_000);
    assert_eq!(sim.client.unacked(), 10_000);
    // Part of it reaches the server, then the transport breaks before any ACK.
    sim.transmit();
    sim.deliver_c2s(6_000);
    assert_eq!(sim.client.send(&data), Ok(0), "no ACK yet");
    sim.brk();
    assert_eq!(
        sim.client.send(&data),
        Ok(0),
        "still at the cap while detached"
    );
    sim.open();
    sim.finish_resume();
    // The resume acknowledged what the server verified (whole frames).
    let (start, end) = *sim.stats.client_ranges.last().expect("range");
    assert_eq!(end, 10_000);
    assert!(start > 0 && start <= 6_000);
    assert_eq!(sim.client.unacked() as u64, end - start);
    assert_eq!(sim.client.send(&data), Ok(start.min(4_000) as usize));
}
