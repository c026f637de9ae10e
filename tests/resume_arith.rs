//! Property test of the resend arithmetic (issue #3, criterion 1).
//!
//! Random frame sizes, ACK timing (threshold, delay, time advance per
//! step), buffer caps, delivery chunking and a random schedule of breaks:
//! cut inside a frame, inside the ResumeRequest, inside the ResumeResponse
//! (after the server already accepted the resume), right after the resume
//! exchange while resent frames are in flight, or losing everything in
//! flight. On every `ResendRange` of either side the harness asserts
//! (see `support_d.rs`):
//! - `start` equals the read count the peer had verified, which is one of
//!   the frame boundaries the receiver was seen at;
//! - `start` is not below the sender's acknowledged count (the range lies
//!   in retained history) and `end` equals the sender's bytes written;
//!
//! and at the end both streams are byte-exact (every byte read is checked
//! against the writer's pattern at its offset).

#[path = "support_d.rs"]
mod support_d;

use proptest::collection::vec;
use proptest::prelude::*;
use relink::wire::{RESUME_REQUEST_LEN, RESUME_RESPONSE_LEN};
use relink::{Config, Duration, ServerEvent};
use support_d::*;

/// Where one break happens.
#[derive(Clone, Copy, Debug)]
enum BreakKind {
    /// A random prefix of the bytes in flight arrives (usually ending
    /// inside a frame), the rest is lost.
    MidFrame,
    /// Everything in flight is lost.
    LoseAll,
    /// The next transport breaks after this many bytes of the
    /// ResumeRequest arrived (0..RESUME_REQUEST_LEN).
    MidRequest(usize),
    /// The next transport breaks after the server accepted the request
    /// and this many bytes of its response arrived.
    MidResponse(usize),
    /// The next transport completes the resume, then breaks with a random
    /// part of the resent frames delivered.
    AfterResume,
}

#[derive(Clone, Copy, Debug)]
struct Break {
    /// Steps of normal operation before the break.
    steps: u16,
    kind: BreakKind,
}

fn break_strategy() -> impl Strategy<Value = Break> {
    let kind = prop_oneof![
        3 => Just(BreakKind::MidFrame),
        1 => Just(BreakKind::LoseAll),
        2 => (0..RESUME_REQUEST_LEN).prop_map(BreakKind::MidRequest),
        2 => (0..RESUME_RESPONSE_LEN).prop_map(BreakKind::MidResponse),
        2 => Just(BreakKind::AfterResume),
    ];
    (0u16..120, kind).prop_map(|(steps, kind)| Break { steps, kind })
}

#[derive(Clone, Copy, Debug)]
struct Caps {
    send_buffer: usize,
    recv_buffer: usize,
}

fn caps_strategy() -> impl Strategy<Value = Caps> {
    (
        prop_oneof![64usize..=4096, 4097usize..=262_144],
        // Below one maximum frame the core raises it (normalization).
        prop_oneof![1usize..=16_404, 16_405usize..=262_144],
    )
        .prop_map(|(send_buffer, recv_buffer)| Caps {
            send_buffer,
            recv_buffer,
        })
}

fn config(frame: usize, caps: Caps, ack_threshold: usize, ack_delay: u64) -> Config {
    Config {
        max_frame_payload: frame,
        send_buffer: caps.send_buffer,
        recv_buffer: caps.recv_buffer,
        ack_threshold,
        ack_delay: Duration::from_micros(ack_delay),
        ..Config::default()
    }
}

/// Drive the next transport through the interrupted resume of `kind`
/// (the previous one is already broken) and break it.
fn interrupted_resume(sim: &mut Sim, kind: BreakKind) {
    match kind {
        BreakKind::MidFrame | BreakKind::LoseAll => {}
        BreakKind::MidRequest(k) => {
            sim.open();
            sim.transmit();
            assert_eq!(sim.c2s.len(), RESUME_REQUEST_LEN, "request alone in flight");
            assert_eq!(sim.deliver_c2s(k), k);
            assert!(!sim.ended, "a partial request ends nothing");
            sim.brk();
        }
        BreakKind::MidResponse(k) => {
            sim.open();
            sim.transmit();
            let resumes = sim.stats.server_resumes;
            sim.deliver_c2s(RESUME_REQUEST_LEN);
            assert_eq!(sim.stats.server_resumes, resumes + 1, "server accepts");
            sim.transmit();
            assert!(sim.s2c.len() >= RESUME_RESPONSE_LEN);
            sim.deliver_s2c(k);
            assert!(!sim.client.is_connected(), "response incomplete");
            sim.brk();
        }
        BreakKind::AfterResume => {
            sim.open();
            sim.transmit();
            sim.deliver_c2s(RESUME_REQUEST_LEN);
            sim.transmit();
            sim.deliver_s2c(RESUME_RESPONSE_LEN);
            assert!(sim.client.is_connected(), "resume completes");
            sim.transmit();
            sim.cut();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn resend_ranges_start_at_verified_boundaries(
        seed in any::<u64>(),
        frame in prop_oneof![1usize..=64, 65usize..=16_384, Just(16_384usize)],
        client_caps in caps_strategy(),
        server_caps in caps_strategy(),
        ack_threshold in prop_oneof![1usize..=2048, 2049usize..=131_072],
        ack_delay in 0u64..=50_000,
        dt_max in 1u64..=20_000,
        chunk in prop_oneof![1usize..=64, 65usize..=65_536],
        totals in (0u64..=262_144, 0u64..=262_144),
        breaks in vec(break_strategy(), 1..12),
    ) {
        let ccfg = config(frame, client_caps, ack_threshold, ack_delay);
        let scfg = config(frame, server_caps, ack_threshold, ack_delay);
        let mut sim = Sim::new(seed, ccfg, scfg);
        // Tiny frames or chunks cost a step per few bytes: keep such runs
        // short (the arithmetic is the same at every size).
        let limit = (frame.min(chunk) as u64 * 1024).max(8192);
        sim.set_totals(totals.0.min(limit), totals.1.min(limit));
        sim.max_chunk = chunk;
        // A link of at least ~0.25 byte/µs with at most 64 chunks in
        // flight: a frame's latency stays far below the idle timeout
        // (a slower link would time out legitimately).
        sim.dt_max = dt_max.min(4 * chunk as u64);
        sim.window = (64 * chunk).clamp(256, 256 * 1024);
        // Spread the writes over the break schedule so that breaks find
        // data in flight and unacknowledged.
        let planned: u64 = breaks.iter().map(|b| b.steps as u64 + 4).sum();
        let biggest = sim.up.total.max(sim.down.total);
        sim.max_write = (2 * biggest / planned).clamp(1, 64 * 1024) as usize;
        sim.track_boundaries();
        sim.handshake();
        for b in &breaks {
            for _ in 0..b.steps {
                sim.step();
                prop_assert!(!sim.ended, "transport ended: {:?}", sim.tail_events());
            }
            if matches!(b.kind, BreakKind::LoseAll) {
                sim.brk();
            } else {
                sim.transmit();
                sim.cut();
            }
            interrupted_resume(&mut sim, b.kind);
            sim.open();
        }
        sim.finish_resume();
        sim.run(2_000_000, |s| assert!(!s.ended, "transport ended: {:?}", s.tail_events()));
        sim.settle(10_000);
        prop_assert_eq!(sim.up.received, sim.up.total);
        prop_assert_eq!(sim.down.received, sim.down.total);
        prop_assert!(sim.client.close_reason().is_none());
        // Every transport after the first resumed, and each side reported
        // one range per resume it accepted.
        prop_assert_eq!(sim.stats.client_ranges.len() as u64, sim.stats.client_resumes);
        prop_assert_eq!(sim.stats.server_ranges.len() as u64, sim.stats.server_resumes);
        prop_assert!(sim.stats.client_resumes >= 1 && sim.client.is_connected());
        let accepted = sim
            .sev
            .iter()
            .filter(|e| matches!(e, ServerEvent::Resumed { .. }))
            .count() as u64;
        prop_assert_eq!(accepted, sim.stats.server_resumes);
    }
}
