//! Adversarial peers (issue 13): a scripted malicious client, written here
//! from docs/PROTOCOL.md (3.2, 3.4, 4.1, 4.2, 5.1, 5.2, 7.2), that holds
//! its own session keys and forges, replays, splices, reorders and
//! withholds frames against a real `Server`, while an honest client
//! (the in-memory harness `Net`, deterministic: seeded RNGs, injected
//! time) keeps a session on the **same** server. Each case asserts the
//! exact typed outcome, that the honest session beside it is unharmed
//! (its bytes arrive exactly both ways: the harness checks every byte read
//! against the writer's pattern) and that nothing unauthenticated reaches
//! an application.
//!
//! Cases of the issue already tested elsewhere, referenced instead of
//! repeated:
//!
//! | case | where |
//! |---|---|
//! | pinned key mismatch (a relaying MITM, a server with another key, none) | `mitm.rs`: `pinned_client_detects_a_relaying_mitm`, `pinned_client_connects_only_to_the_key_it_pins`, `pinning_a_server_without_static_key_is_rejected` |
//! | forged MACs: every bit of DATA, ACK, ABORT frames flipped | `frame_integrity.rs` (`every_bit_of_a_data_and_an_ack_frame`, ...) |
//! | forged frames against a pinned client cost only the transport | `break_findings.rs`: `f5_forged_frames_end_a_pinned_session` |
//! | every bit of every handshake / resume message flipped | `handshake_tamper.rs` |
//! | replayed resume request (attached and detached), replayed resume messages | `resume_attacks.rs`: `replayed_resume_request_is_rejected_and_session_continues`; `handshake_tamper.rs`: `replayed_resume_messages_are_rejected` |
//! | replayed ClientHello (hello cache, Stale / Replayed) | `freshness.rs` |
//! | resume with an unknown id, a wrong MAC, a stale time | `resume_attacks.rs` |
//! | truncated frame / message followed by a break, then resume exact | `hostile_input.rs`: `frame_cut_short_then_resume`, `resume_request_cut_short_keeps_the_session`, `*_cut_short_*` |
//! | length fields out of range (0, max+1, 0xFFFF ... for every type) | `hostile_input.rs`: `bad_frame_headers_at_the_server`, `bad_frame_headers_at_the_client` |
//! | forged rekey frames, ACK with an unsent `rx_epoch` | `review11b.rs` |
//!
//! Added here: an authenticated ACK beyond the bytes sent or going back
//! (`BadAck`), a peer that never acknowledges (the sender stops at its cap,
//! memory does not grow), frames of one session spliced into another and
//! replayed from an earlier session, reordered and duplicated frames,
//! a ClientConfirm replayed onto another handshake, a resume request for
//! another session's id under the attacker's own keys, DATA lengths at
//! the in-range boundaries (1, max-1, max) next to the out-of-range ones,
//! and a slowloris handshake (one byte per second).
//!
//! The scripted malicious server (end of file) is a real seeded `Server`
//! whose ephemeral secret the test finds in its RNG's output, so it holds
//! the session keys and forges server frames: an ACK of client bytes never
//! sent or going back (`BadAck` at the client), ACKs that never come (the
//! client stops at its `send_buffer`), and another session's server frames
//! replayed to a pinned client (`AuthFailed`, the transport only).

use relink::{Config, Duration, Error, ProtocolError, ServerEvent, SessionId, TransportId};
use relink_test_support::harness::Net;

// ----- the spec's primitives (PROTOCOL.md 2, 4.5) -------------------------------

fn derive(ctx: &str, m: &[u8]) -> [u8; 32] {
    blake3::derive_key(ctx, m)
}
fn mac16(key: &[u8; 32], input: &[u8]) -> [u8; 16] {
    let mut t = [0u8; 16];
    t.copy_from_slice(&blake3::keyed_hash(key, input).as_bytes()[..16]);
    t
}
fn hash(input: &[u8]) -> [u8; 32] {
    *blake3::hash(input).as_bytes()
}
fn public(secret: [u8; 32]) -> [u8; 32] {
    x25519_dalek::x25519(secret, x25519_dalek::X25519_BASEPOINT_BYTES)
}

/// A ClientHello (3.2) of ephemeral `secret`, stamped `time` (µs).
fn client_hello(secret: [u8; 32], time: u64) -> Vec<u8> {
    let mut ch = vec![0u8; 43];
    ch[1] = 2;
    ch[3..35].copy_from_slice(&public(secret));
    ch[35..43].copy_from_slice(&time.to_le_bytes());
    ch
}

/// The malicious client: its own session on the server `Net` shares with
/// the honest client, with the keys it derived itself.
struct Forger {
    tid: TransportId,
    sid: SessionId,
    master: [u8; 32],
    /// c2s MAC key, epoch 0.
    mac: [u8; 32],
    /// Frames sent on the current transport (the tag's `sequence`).
    seq: u64,
    /// The ClientConfirm it sent.
    confirm: Vec<u8>,
}

/// Everything the server writes on `t` now.
fn server_out(n: &mut Net, t: TransportId) -> Vec<u8> {
    let mut buf = vec![0u8; 1 << 16];
    let mut out = Vec::new();
    while let Ok(k) = n.server.poll_transmit(t, n.snow, &mut buf) {
        if k == 0 {
            break;
        }
        out.extend(&buf[..k]);
    }
    out
}

impl Forger {
    /// Handshake by hand (ephemeral `secret`) on a new transport of
    /// `n.server`; the harness forgets the session again so that its
    /// applications only ever touch the honest one.
    fn connect(n: &mut Net, secret: [u8; 32]) -> Forger {
        let honest = n.session;
        let tid = n.server.accept(n.snow).expect("accept");
        let ch = client_hello(secret, n.snow.as_micros());
        assert_eq!(n.server.handle_input(tid, n.snow, &ch), Ok(43));
        let sh = server_out(n, tid);
        assert_eq!(sh.len(), 107, "ServerHello");
        let ee = x25519_dalek::x25519(secret, sh[2..34].try_into().unwrap());
        let th1 = hash(&[&ch[..], &sh[..67]].concat());
        let prk = derive(
            "relink v1 2026-11 handshake secret",
            &[&ee[..], &th1[..]].concat(),
        );
        let th3 = hash(&[&ch[..], &sh[..]].concat());
        let confirm = mac16(&derive("relink v1 2026-11 client confirm", &prk), &th3).to_vec();
        let master = derive(
            "relink v1 2026-11 session master",
            &[&prk[..], &th3[..]].concat(),
        );
        assert_eq!(n.server.handle_input(tid, n.snow, &confirm), Ok(16));
        n.drain();
        let sid = n.server.session_of(tid).expect("forger's session");
        assert_ne!(Some(sid), honest);
        forget(n, sid, honest);
        Forger {
            tid,
            sid,
            master,
            mac: derive("relink v1 2026-11 c2s mac", &master),
            seq: 0,
            confirm,
        }
    }

    /// A frame (5.1) of `ty` with `payload`, tagged (5.2) for epoch 0,
    /// generation 0, data offset `offset`.
    fn frame(&mut self, ty: u8, payload: &[u8], offset: u64) -> Vec<u8> {
        let header = [ty, 0, payload.len() as u8, (payload.len() >> 8) as u8];
        let mut input = payload.to_vec();
        input.push(1);
        input.extend(0u32.to_le_bytes());
        input.extend(0u64.to_le_bytes());
        input.extend(self.seq.to_le_bytes());
        input.extend(offset.to_le_bytes());
        input.extend(header);
        self.seq += 1;
        let mut f = header.to_vec();
        f.extend(payload);
        f.extend(mac16(&self.mac, &input));
        f
    }

    /// An ACK (13 bytes: read count, rx_epoch 0, flags 0).
    fn ack(&mut self, read_count: u64) -> Vec<u8> {
        let mut p = read_count.to_le_bytes().to_vec();
        p.extend(0u32.to_le_bytes());
        p.push(0);
        self.frame(2, &p, 0)
    }

    /// A PING stamped `time`.
    fn ping(&mut self, time: u64) -> Vec<u8> {
        self.frame(3, &time.to_le_bytes(), 0)
    }
}

/// The harness logs every `HandshakeDone` as a session of the honest
/// client: take the forger's out again and restore the honest one.
fn forget(n: &mut Net, sid: SessionId, honest: Option<SessionId>) {
    n.sessions.retain(|s| s.sid != sid);
    n.session = honest;
}

/// An honest session, established, with data flowed both ways.
fn honest(seed: u64, scfg: Config) -> (Net, SessionId) {
    let mut n = Net::new(seed, Config::default(), scfg);
    let sid = n.handshake();
    n.client_write(10_000);
    n.server_write(10_000);
    n.settle(200);
    (n, sid)
}

/// The honest session is still the one it was, on its transport, and
/// carries more bytes exactly both ways; nothing foreign was read.
#[track_caller]
fn assert_honest_unharmed(n: &mut Net, sid: SessionId) {
    assert!(n.client.is_connected(), "honest client lost: {:?}", n.cev);
    assert_eq!(n.current_session(), Some(sid));
    assert_eq!(n.tid.and_then(|t| n.server.session_of(t)), Some(sid));
    assert_eq!(n.client_write(30_000), 30_000);
    assert_eq!(n.server_write(30_000), 30_000);
    n.settle(500);
    let g = n.generation;
    assert_eq!(n.up[&g].read, n.up[&g].written, "client → server");
    assert_eq!(n.down[&g].read, n.down[&g].written, "server → client");
    n.assert_no_violations();
    assert_eq!(n.sessions_of_generation(), 1);
}

/// What the server application can read of the forger's session.
fn readable(n: &Net, f: &Forger) -> usize {
    n.server.readable(f.sid)
}

fn ended_transport(n: &Net, t: TransportId) -> Vec<Option<Error>> {
    n.sev
        .iter()
        .filter_map(|e| match e {
            ServerEvent::CloseTransport { transport, error } if *transport == t => Some(*error),
            _ => None,
        })
        .collect()
}

// ----- ACKs -------------------------------------------------------------------

/// 6.2: an ACK beyond what the server sent (one past, far past) or below
/// an earlier ACK ends the forger's transport with `BadAck`; its session
/// lives on (the ACK verified, nothing unauthenticated), nothing is
/// delivered, the honest session beside it is untouched.
#[test]
fn an_ack_of_bytes_never_sent_or_going_back_is_bad_ack() {
    let scfg = Config::default();
    for (case, acks) in [
        ("one past", vec![101u64]),
        ("far past", vec![u64::MAX]),
        ("going back", vec![60, 59]),
    ] {
        let (mut n, sid) = honest(1, scfg.clone());
        let mut f = Forger::connect(&mut n, [7; 32]);
        assert_eq!(n.server.send(f.sid, &[0xAB; 100]), Ok(100));
        let sent = server_out(&mut n, f.tid);
        assert!(sent.len() > 100, "{case}: DATA written");
        let (last, ok) = acks.split_last().unwrap();
        for &v in ok {
            let a = f.ack(v);
            assert_eq!(n.server.handle_input(f.tid, n.snow, &a), Ok(a.len()));
        }
        let a = f.ack(*last);
        let r = n.server.handle_input(f.tid, n.snow, &a);
        n.drain();
        assert_eq!(r, Err(Error::Protocol(ProtocolError::BadAck)), "{case}");
        assert!(n.server.transport_ended(f.tid), "{case}");
        assert_eq!(
            ended_transport(&n, f.tid),
            vec![Some(Error::Protocol(ProtocolError::BadAck))],
            "{case}"
        );
        assert!(
            n.server.has_session(f.sid),
            "{case}: a verified ACK costs the transport only"
        );
        assert_eq!(readable(&n, &f), 0);
        assert_honest_unharmed(&mut n, sid);
    }
}

/// 6.3: a peer that never acknowledges. The server application writes to
/// its session as long as `send` accepts: exactly `send_buffer` bytes are
/// taken, then `send` takes nothing; the forger keeps its transport alive
/// with PINGs while the server keeps trying and the session's buffer
/// memory does not grow. The honest session beside it flows meanwhile.
#[test]
fn a_peer_that_never_acknowledges_stops_the_sender_at_its_cap() {
    let cap = 200_000;
    let scfg = Config {
        send_buffer: cap,
        ..Config::default()
    };
    let (mut n, sid) = honest(2, scfg);
    let mut f = Forger::connect(&mut n, [8; 32]);
    let chunk = vec![0x5A; 30_000];
    let mut accepted = 0usize;
    let mut mem = None;
    for round in 0..200 {
        accepted += n.server.send(f.sid, &chunk).expect("send");
        let _ = server_out(&mut n, f.tid);
        assert!(n.server.unacked(f.sid) <= cap, "round {round}");
        if round % 10 == 0 {
            // Keep the transport alive (idle timeout), honest traffic on.
            let p = f.ping(n.snow.as_micros());
            assert_eq!(n.server.handle_input(f.tid, n.snow, &p), Ok(p.len()));
            n.client_write(1000);
            n.server_write(1000);
        }
        n.step();
        if accepted == cap {
            let m = n.server.buffer_memory(f.sid);
            assert!(
                *mem.get_or_insert(m) >= m,
                "round {round}: memory grew to {m}"
            );
        }
    }
    assert_eq!(accepted, cap, "send takes exactly the cap, then nothing");
    assert_eq!(n.server.unacked(f.sid), cap);
    assert_eq!(n.server.send(f.sid, &chunk), Ok(0));
    assert!(
        !n.server.transport_ended(f.tid),
        "the silent reader is not punished"
    );
    let m = mem.expect("cap reached");
    assert!(
        m <= cap + Config::default().recv_buffer,
        "buffer memory {m} beyond send_buffer + recv_buffer"
    );
    assert_honest_unharmed(&mut n, sid);
}

// ----- replayed, spliced, reordered, duplicated frames ---------------------------------

/// The honest client's next DATA frames on its transport: written, taken
/// from the pipe before the server sees them.
fn capture_honest_frames(n: &mut Net, bytes: usize) -> Vec<u8> {
    assert_eq!(n.client_write(bytes), bytes);
    n.transmit();
    std::mem::take(&mut n.c2s)
}

/// Split a byte string into frames (5.1).
fn frames(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    while b.len() >= 20 {
        let len = u16::from_le_bytes([b[2], b[3]]) as usize;
        v.push(b[..4 + len + 16].to_vec());
        b = &b[4 + len + 16..];
    }
    assert!(b.is_empty(), "whole frames");
    v
}

/// 5.2: frames of the honest session spliced into the forger's transport
/// (right after its handshake, and after it sent frames of its own), and
/// the forger's own frames of an earlier session replayed in a later one:
/// `AuthFailed`, the transport ends, nothing is delivered to the session
/// they were spliced into, and the honest stream is unharmed: the captured
/// frames never reached its server session, yet after a break and resume
/// its bytes arrive exactly once.
#[test]
fn frames_spliced_from_another_session_or_replayed_from_an_earlier_one_fail_authentication() {
    let (mut n, sid) = honest(3, Config::default());
    let stolen = capture_honest_frames(&mut n, 5000);
    for own_frames_first in [false, true] {
        let mut f = Forger::connect(&mut n, [9 + own_frames_first as u8; 32]);
        if own_frames_first {
            let p = f.ping(n.snow.as_micros());
            assert_eq!(n.server.handle_input(f.tid, n.snow, &p), Ok(p.len()));
        }
        let r = n.server.handle_input(f.tid, n.snow, &stolen);
        n.drain();
        assert_eq!(
            r,
            Err(Error::AuthFailed),
            "spliced, own first {own_frames_first}"
        );
        assert!(n.server.transport_ended(f.tid));
        assert!(n.server.has_session(f.sid), "unauthenticated: session kept");
        assert_eq!(
            readable(&n, &f),
            0,
            "nothing of the spliced frames delivered"
        );
    }
    // Replayed from an earlier session: the forger's first session wrote
    // a PING and an ACK; a second session of the same forger gets them.
    let mut f1 = Forger::connect(&mut n, [20; 32]);
    let t = n.snow.as_micros();
    let old = [f1.ping(t), f1.ack(0)].concat();
    let f2 = Forger::connect(&mut n, [21; 32]);
    let r = n.server.handle_input(f2.tid, n.snow, &old);
    n.drain();
    assert_eq!(
        r,
        Err(Error::AuthFailed),
        "replayed from an earlier session"
    );
    assert!(n.server.has_session(f2.sid) && n.server.has_session(f1.sid));
    // The honest frames were lost with "the path": resume, all arrives once.
    n.brk();
    assert!(n.connect(), "honest resume");
    assert_honest_unharmed(&mut n, sid);
}

/// 5.2 (`sequence`, `offset` in the tag): the honest client's frames
/// reordered (the second first) or duplicated (the first twice) on its own
/// transport. The server delivers exactly the frames before the first one
/// out of place, ends the transport with `AuthFailed` and keeps the
/// session; after a resume the whole stream arrives exactly once.
#[test]
fn reordered_and_duplicated_frames_fail_authentication_and_resume_completes_exactly() {
    for case in ["swap", "duplicate", "first again at the end"] {
        let ccfg = Config {
            max_frame_payload: 1000,
            ..Config::default()
        };
        let mut n = Net::new(4, ccfg, Config::default());
        let sid = n.handshake();
        n.settle(100);
        let read0 = n.up_read();
        let fs = frames(&capture_honest_frames(&mut n, 3000));
        assert_eq!(fs.len(), 3, "three DATA frames of 1000 bytes");
        let (order, delivered) = match case {
            "swap" => (vec![1, 0, 2], 0),
            "duplicate" => (vec![0, 0, 1, 2], 1000),
            _ => (vec![0, 1, 2, 0], 3000),
        };
        let bytes: Vec<u8> = order.iter().flat_map(|&i| fs[i].clone()).collect();
        let t = n.tid.unwrap();
        let r = n.server.handle_input(t, n.snow, &bytes);
        n.drain();
        n.server_read();
        assert_eq!(r, Err(Error::AuthFailed), "{case}");
        assert!(n.server.transport_ended(t), "{case}");
        assert_eq!(n.up_read() - read0, delivered, "{case}: the exact prefix");
        n.assert_no_violations();
        n.brk();
        assert!(n.connect(), "{case}: resume");
        assert_honest_unharmed(&mut n, sid);
    }
}

/// 3.4: the forger's ClientConfirm replayed onto another handshake (the
/// honest client's new hello and its own): the MAC binds the transcript,
/// the server ends that transport with `AuthFailed` and no session of it
/// is ever confirmed to an application.
#[test]
fn a_client_confirm_replayed_onto_another_handshake_fails() {
    let (mut n, sid) = honest(5, Config::default());
    let f = Forger::connect(&mut n, [30; 32]);
    let before = n.server.session_count();
    let t = n.server.accept(n.snow).unwrap();
    let ch = client_hello([31; 32], n.snow.as_micros());
    assert_eq!(n.server.handle_input(t, n.snow, &ch), Ok(43));
    assert_eq!(server_out(&mut n, t).len(), 107);
    let r = n.server.handle_input(t, n.snow, &f.confirm);
    n.drain();
    assert_eq!(r, Err(Error::AuthFailed));
    assert!(n.server.transport_ended(t));
    assert!(
        !n.sev.iter().any(|e| matches!(
            e,
            ServerEvent::HandshakeDone { session, .. } if Some(*session) == n.server.session_of(t)
        )),
        "no HandshakeDone for the replayed confirm"
    );
    let done = n
        .sev
        .iter()
        .filter(|e| matches!(e, ServerEvent::HandshakeDone { .. }))
        .count();
    assert_eq!(done, 2, "the honest and the forger's handshakes only");
    assert!(n.server.session_count() <= before + 1);
    let _ = f;
    assert_honest_unharmed(&mut n, sid);
}

// ----- resume requests for another session -----------------------------------

/// A ResumeRequest (3.5, MAC 7.2) for `conn_id` under `key`.
fn resume_request(conn_id: u64, counter: u64, time: u64, key: &[u8; 32]) -> Vec<u8> {
    let mut r = vec![0xFF, 2];
    r.extend(conn_id.to_le_bytes());
    r.extend(counter.to_le_bytes());
    r.extend(0u64.to_le_bytes()); // client_written
    r.extend(0u64.to_le_bytes()); // client_read
    r.extend(time.to_le_bytes());
    r.extend(0u32.to_le_bytes()); // rx_epoch
    let mac = mac16(key, &[&[1u8][..], &r[..]].concat());
    r.extend(mac);
    r
}

/// 7.3: the forger asks to resume the honest session (its connection id
/// is not secret: it travels in clear) with a request MACed under the
/// forger's own resume key, while the honest session is attached and
/// again while it is detached. The server rejects it with `AuthFailed`
/// and an unauthenticated 2-byte rejection, does not move or end the
/// honest session, and the honest client resumes and carries on exactly.
/// Control: the same request with the forger's own id is accepted.
#[test]
fn a_resume_request_for_another_sessions_id_is_rejected_and_harms_nothing() {
    let (mut n, sid) = honest(6, Config::default());
    let f = Forger::connect(&mut n, [40; 32]);
    let key = derive("relink v1 2026-11 resume", &f.master);
    let victim = n.server.conn_id(sid).unwrap();
    for attached in [true, false] {
        if !attached {
            n.brk();
        }
        let t = n.server.accept(n.snow).unwrap();
        let req = resume_request(victim, 1, n.snow.as_micros(), &key);
        let r = n.server.handle_input(t, n.snow, &req);
        let answer = server_out(&mut n, t);
        n.drain();
        assert_eq!(
            r,
            Err(Error::ResumeRejected(relink::ResumeStatus::AuthFailed)),
            "attached {attached}"
        );
        assert_eq!(
            answer,
            vec![2, relink::ResumeStatus::AuthFailed.to_byte()],
            "attached {attached}"
        );
        assert!(n.server.has_session(sid));
        if attached {
            assert_eq!(n.tid.and_then(|t| n.server.session_of(t)), Some(sid));
        }
        n.server.transport_lost(t, n.snow);
    }
    assert!(n.connect(), "honest resume");
    assert_honest_unharmed(&mut n, sid);
    // Control: the forger's own id with the same key resumes.
    let own = n.server.conn_id(f.sid).unwrap();
    n.server.transport_lost(f.tid, n.snow);
    let t = n.server.accept(n.snow).unwrap();
    let req = resume_request(own, 1, n.snow.as_micros(), &key);
    assert_eq!(n.server.handle_input(t, n.snow, &req), Ok(req.len()));
    n.drain();
    assert_eq!(n.server.session_of(t), Some(f.sid));
}

// ----- lengths at the boundaries --------------------------------------------

/// The `len` fields of the DATA frames in `b` (an ACK may precede them).
fn data_lens(b: &[u8]) -> Vec<usize> {
    frames(b)
        .iter()
        .filter(|f| f[0] == 1)
        .map(|f| u16::from_le_bytes([f[2], f[3]]) as usize)
        .collect()
}

/// 5.1: DATA payload lengths 1, max-1 and max (16384) are taken and
/// delivered exactly (the out-of-range ones, 0, max+1 ... 0xFFFF, are
/// `BadLength` before any buffer: `hostile_input.rs`); every frame on the
/// wire has the length the sender chose.
#[test]
fn data_frames_at_the_in_range_length_boundaries_deliver_exactly() {
    let (mut n, sid) = honest(7, Config::default());
    for len in [1usize, 16_383, 16_384] {
        let before = n.up_read();
        let bytes = capture_honest_frames(&mut n, len);
        assert_eq!(data_lens(&bytes), vec![len]);
        let t = n.tid.unwrap();
        assert_eq!(n.server.handle_input(t, n.snow, &bytes), Ok(bytes.len()));
        n.drain();
        n.server_read();
        assert_eq!(n.up_read() - before, len as u64);
    }
    // max+1 written at once goes out as max and 1.
    let bytes = capture_honest_frames(&mut n, 16_385);
    assert_eq!(data_lens(&bytes), vec![16_384, 1]);
    n.c2s = bytes;
    n.settle(100);
    assert_honest_unharmed(&mut n, sid);
}

// ----- slowloris ------------------------------------------------------------

/// 8.2: a peer that sends its ClientHello one byte per second. The
/// server ends that transport at `handshake_timeout` (10 s) with
/// `TimedOut`, before the hello is complete, answers nothing and frees
/// its pending slot; a new client completes its handshake meanwhile (its
/// session and transport live on) and the honest session already running
/// carries its bytes exactly throughout.
#[test]
fn a_slowloris_handshake_is_ended_by_the_handshake_timeout() {
    let (mut n, sid) = honest(8, Config::default());
    let t = n.server.accept(n.snow).unwrap();
    let start = n.snow;
    let pending = n.server.pending_transports();
    let ch = client_hello([50; 32], n.snow.as_micros());
    let mut fed = 0;
    let mut late = None;
    for (i, b) in ch.iter().enumerate() {
        if n.server.transport_ended(t) {
            break;
        }
        if i == 5 {
            // A new client completes its handshake meanwhile.
            late = Some(Forger::connect(&mut n, [51; 32]));
        }
        assert_eq!(n.server.handle_input(t, n.snow, &[*b]), Ok(1), "byte {i}");
        fed += 1;
        // One second passes, the honest session keeps flowing.
        for _ in 0..10 {
            n.tick(Duration::from_millis(100));
            n.client_write(500);
            n.server_write(500);
            n.settle(5);
            n.timers();
        }
    }
    assert!(
        n.server.transport_ended(t),
        "ended before the hello was complete"
    );
    assert_eq!(ended_transport(&n, t), vec![Some(Error::TimedOut)]);
    assert_eq!(fed, 10, "one byte per second for handshake_timeout (10 s)");
    assert!(n.snow.saturating_since(start) >= Config::default().handshake_timeout);
    assert!(n.server.pending_transports() < pending);
    assert_eq!(server_out(&mut n, t), Vec::<u8>::new(), "nothing answered");
    let late = late.expect("late client");
    assert!(n.server.has_session(late.sid) && !n.server.transport_ended(late.tid));
    assert_honest_unharmed(&mut n, sid);
}

// ----- the malicious server --------------------------------------------------

/// Seed of the server whose keys the scripted malicious server knows.
const KNOWN_SERVER_SEED: u64 = 0x13AD;

/// The malicious server: a real `Server` (seeded, so that its ephemeral
/// secret can be found in its RNG's output) whose session keys the test
/// holds, so that it can forge any frame of its own to the client.
struct EvilServer {
    /// s2c MAC key, epoch 0.
    mac: [u8; 32],
    /// Every byte the server wrote on the handshake's transport after its
    /// ServerHello.
    rec: Vec<u8>,
}

/// Steps of the honest client against the server, recording what the
/// server writes (the malicious server then knows its `sequence` and
/// data `offset`).
fn step_recording(n: &mut Net, rec: &mut Vec<u8>) {
    n.tick(Duration::from_millis(1));
    n.transmit();
    rec.extend(&n.s2c);
    n.deliver(u64::MAX);
    n.server_read();
    n.client_read();
    n.timers();
}

impl EvilServer {
    /// A `Net` whose server the test knows the keys of, handshake done.
    fn net(seed: u64, ccfg: Config) -> (Net, EvilServer) {
        use rand_core::Rng;
        let scfg = Config::default();
        let mut n = Net::new(seed, ccfg, scfg.clone());
        n.server = relink::Server::new(scfg, relink_test_support::harness::rng(KNOWN_SERVER_SEED));
        n.open_transport();
        n.transmit();
        let ch = n.c2s.clone();
        assert_eq!(ch.len(), 43, "ClientHello");
        n.deliver(u64::MAX);
        n.transmit();
        let sh = n.s2c[..107].to_vec();
        let mut rec = n.s2c[107..].to_vec();
        n.deliver(u64::MAX);
        // The ephemeral secret is 32 bytes of the server RNG's output.
        let mut stream = vec![0u8; 4096];
        relink_test_support::harness::rng(KNOWN_SERVER_SEED).fill_bytes(&mut stream);
        let secret: [u8; 32] = (0..stream.len() - 32)
            .map(|i| <[u8; 32]>::try_from(&stream[i..i + 32]).unwrap())
            .find(|c| public(*c)[..] == sh[2..34])
            .expect("the server's ephemeral secret in its RNG output");
        let ee = x25519_dalek::x25519(secret, ch[3..35].try_into().unwrap());
        let th1 = hash(&[&ch[..], &sh[..67]].concat());
        let prk = derive(
            "relink v1 2026-11 handshake secret",
            &[&ee[..], &th1[..]].concat(),
        );
        let th3 = hash(&[&ch[..], &sh[..]].concat());
        let master = derive(
            "relink v1 2026-11 session master",
            &[&prk[..], &th3[..]].concat(),
        );
        for _ in 0..20 {
            step_recording(&mut n, &mut rec);
        }
        assert!(n.client.is_connected() && n.session.is_some());
        let mac = derive("relink v1 2026-11 s2c mac", &master);
        (n, EvilServer { mac, rec })
    }

    /// A server frame (5.1) of `ty` with `payload`, tagged (5.2) as the
    /// next frame of the handshake's transport (epoch 0, generation 0).
    fn frame(&mut self, ty: u8, payload: &[u8]) -> Vec<u8> {
        let fs = frames(&self.rec);
        let seq = fs.len() as u64;
        let offset: u64 = fs
            .iter()
            .filter(|f| f[0] == 1)
            .map(|f| u64::from(u16::from_le_bytes([f[2], f[3]])))
            .sum();
        let header = [ty, 0, payload.len() as u8, (payload.len() >> 8) as u8];
        let mut input = payload.to_vec();
        input.push(2);
        input.extend(0u32.to_le_bytes());
        input.extend(0u64.to_le_bytes());
        input.extend(seq.to_le_bytes());
        input.extend(offset.to_le_bytes());
        input.extend(header);
        let mut f = header.to_vec();
        f.extend(payload);
        f.extend(mac16(&self.mac, &input));
        self.rec.extend(&f);
        f
    }

    fn ack(&mut self, read_count: u64) -> Vec<u8> {
        let mut p = read_count.to_le_bytes().to_vec();
        p.extend(0u32.to_le_bytes());
        p.push(0);
        self.frame(2, &p)
    }
}

/// Control for [`EvilServer`]: a forged PING verifies at the client, so
/// the forged frames below fail for what they say, not for their tag.
#[test]
fn the_malicious_server_forges_frames_the_client_accepts() {
    let (mut n, mut evil) = EvilServer::net(10, Config::default());
    let p = evil.frame(3, &n.snow.as_micros().to_le_bytes());
    assert_eq!(n.client.handle_input(n.cnow, &p), Ok(p.len()));
    assert!(!n.client.transport_ended());
}

/// 6.2 from the server's side: an authenticated server ACK of client bytes
/// never sent (one past, far past) or going back ends the client's
/// transport with `BadAck`; the client keeps its session, resumes on a
/// new transport and its stream arrives exactly once.
#[test]
fn a_server_ack_of_bytes_never_sent_or_going_back_is_bad_ack_at_the_client() {
    for (case, acks) in [
        ("one past", vec![5001u64]),
        ("far past", vec![u64::MAX]),
        ("going back", vec![3000, 2999]),
    ] {
        let (mut n, mut evil) = EvilServer::net(11, Config::default());
        // 5000 client bytes reach the server; what it answers is lost
        // (the malicious server speaks instead).
        assert_eq!(n.client_write(5000), 5000);
        n.transmit();
        let up = std::mem::take(&mut n.c2s);
        let t = n.tid.unwrap();
        assert_eq!(n.server.handle_input(t, n.snow, &up), Ok(up.len()));
        n.server_read();
        n.transmit();
        n.s2c.clear();
        let (last, ok) = acks.split_last().unwrap();
        for &v in ok {
            let a = evil.ack(v);
            assert_eq!(n.client.handle_input(n.cnow, &a), Ok(a.len()), "{case}");
        }
        let a = evil.ack(*last);
        let r = n.client.handle_input(n.cnow, &a);
        n.drain();
        assert_eq!(r, Err(Error::Protocol(ProtocolError::BadAck)), "{case}");
        assert!(n.client.transport_ended(), "{case}");
        assert!(!n.client.is_closed(), "{case}: the session lives on");
        n.brk();
        assert!(n.connect(), "{case}: resume");
        n.settle(200);
        let g = n.generation;
        assert_eq!(n.up[&g].read, 5000, "{case}: every byte arrived once");
        n.assert_no_violations();
    }
}

/// 6.3 from the client's side: a server whose ACKs never arrive (its
/// direction is black-holed). The client application's `send` takes
/// exactly `send_buffer` bytes, then nothing; the client's buffer memory
/// stays put while it keeps trying; after the path heals (resume) every
/// byte arrives exactly once.
#[test]
fn a_server_that_never_acknowledges_stops_the_client_at_its_cap() {
    let cap = 150_000;
    let ccfg = Config {
        send_buffer: cap,
        ..Config::default()
    };
    let mut n = Net::new(12, ccfg, Config::default());
    n.handshake();
    n.s2c_limit = Some(n.s2c_pushed);
    let mut accepted = 0;
    let mut mem = None;
    for round in 0..100 {
        accepted += n.client_write(20_000);
        n.step();
        assert!(n.client.unacked() <= cap, "round {round}");
        if accepted == cap {
            let m = n.client.buffer_memory();
            assert!(
                *mem.get_or_insert(m) >= m,
                "round {round}: memory grew to {m}"
            );
        }
    }
    assert_eq!(accepted, cap);
    assert_eq!(n.client.unacked(), cap);
    assert_eq!(n.client_write(1), 0);
    n.brk();
    assert!(n.connect(), "resume");
    n.settle(500);
    assert_eq!(n.up_read(), cap as u64);
    n.assert_no_violations();
}

/// 5.2 toward a client: a malicious server replays to client B the
/// frames another session's server (A) wrote to its client. Client B ends
/// the transport with `AuthFailed` and delivers nothing; a pinned client B
/// keeps its session and resumes exactly; client A is unharmed.
#[test]
fn server_frames_of_another_session_fail_authentication_at_the_client() {
    let key = relink::StaticKeypair::from_secret_bytes([0x42; 32]);
    let scfg = Config {
        server_static: Some(key.clone()),
        ..Config::default()
    };
    let ccfg = Config {
        pinned_server_key: Some(key.public_key()),
        ..Config::default()
    };
    let mut a = Net::new(13, ccfg.clone(), scfg.clone());
    let sid_a = a.handshake();
    let mut b = Net::new(14, ccfg, scfg);
    let sid_b = b.handshake();
    a.settle(50);
    b.settle(50);
    // A's server writes; the malicious server takes the frames off A's path.
    assert_eq!(a.server_write(4000), 4000);
    a.transmit();
    let stolen = std::mem::take(&mut a.s2c);
    let before = b.down[&0].read;
    let r = b.client.handle_input(b.cnow, &stolen);
    b.drain();
    b.client_read();
    assert_eq!(r, Err(Error::AuthFailed));
    assert!(b.client.transport_ended());
    assert!(
        !b.client.is_closed(),
        "pinned: a failed tag costs the transport only"
    );
    assert_eq!(b.down[&0].read, before, "nothing delivered");
    b.brk();
    assert!(b.connect());
    assert_honest_unharmed(&mut b, sid_b);
    // A lost its frames to the attacker: a resume brings them exactly once.
    a.brk();
    assert!(a.connect());
    assert_honest_unharmed(&mut a, sid_a);
}
