//! Integrity of established frames (issue #2, acceptance 2).
//!
//! A sender's frames are captured from `poll_transmit`, one bit of one frame
//! is flipped (header, body or tag; DATA or ACK frame), and the stream is fed
//! to the receiver in random chunks. The receiver must deliver exactly the
//! data of the frames before the corrupted one (an exact prefix of what was
//! sent, never a corrupted byte), end the transport with the typed error the
//! flipped field calls for (`AuthFailed`, or `BadLength` / `UnknownFrameType`
//! / `BadFlags` for header fields checked before the MAC), and after a resume
//! on a new transport the whole stream must arrive byte-exactly.
//!
//! The expected error is derived here from the frame layout (type, flags,
//! little-endian length, body, 16-byte tag) and the length rules of each
//! frame type, independently of the crate's decoder (protocol version 2:
//! ACK 13 bytes, PING and CLOSE 8, ABORT 12, the rekey frames 45, 44 and 12,
//! CREDENTIAL 1..=513, ACCEPT 8..=520). A type flipped to another known type
//! gives `BadLength` unless the length suits the new type too; then the
//! header is valid and only the MAC (which covers the header) rejects it.

mod common;
mod support_c;

use chacha20::ChaCha20Rng;
use common::{between, pattern, rng, Net};
use proptest::prelude::*;
use relink::{AbortCode, CloseReason, Error, Event, ProtocolError, ServerEvent};
use support_c::*;

/// Frame header length, tag length and largest DATA payload, from the
/// protocol's layout.
const HEADER: usize = 4;
const TAG: usize = 16;
const MAX_PAYLOAD: usize = 16 * 1024;
/// Data sent after the corrupted part: more than one maximal frame, so that
/// a length field flipped to a larger valid value is always completed by
/// later bytes and verified (rather than left waiting).
const FILLER: usize = MAX_PAYLOAD + 1000;
/// Stream content of each direction.
const SALT_DATA: u64 = 0xD1;
const SALT_BACK: u64 = 0xB2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ClientToServer,
    ServerToClient,
}

/// One frame of a captured byte stream.
#[derive(Clone, Copy, Debug)]
struct Frame {
    start: usize,
    frame_type: u8,
    len: usize,
}

impl Frame {
    fn wire_len(&self) -> usize {
        HEADER + self.len + TAG
    }
}

/// Split a genuine byte stream into frames (header: type, flags, LE length).
fn parse_frames(bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let len = u16::from_le_bytes([bytes[pos + 2], bytes[pos + 3]]) as usize;
        assert_eq!(bytes[pos + 1], 0, "genuine frames have no flags");
        let f = Frame {
            start: pos,
            frame_type: bytes[pos],
            len,
        };
        pos += f.wire_len();
        out.push(f);
    }
    assert_eq!(pos, bytes.len(), "stream ends on a frame boundary");
    out
}

/// Whether `len` is allowed for frame type `t` (PROTOCOL.md 5.1: DATA
/// 1..=16384, ACK 13, PING and CLOSE 8, ABORT 12, REKEY_INIT 45,
/// REKEY_REPLY 44, REKEY_SWITCH 12, CREDENTIAL 1..=513, ACCEPT 8..=520);
/// `None` for an unknown type.
fn len_ok(t: u8, len: usize) -> Option<bool> {
    match t {
        1 => Some((1..=MAX_PAYLOAD).contains(&len)),
        2 => Some(len == 13),
        3 | 4 => Some(len == 8),
        5 => Some(len == 12),
        6 => Some(len == 45),
        7 => Some(len == 44),
        8 => Some(len == 12),
        9 => Some((1..=513).contains(&len)),
        10 => Some((8..=520).contains(&len)),
        _ => None,
    }
}

/// The error a receiver must report for frame `f` with bit `bit` (counted
/// from the frame's first byte) flipped.
fn expected_error(f: &Frame, bit: usize) -> Error {
    let (byte, mask) = (bit / 8, 1u8 << (bit % 8));
    match byte {
        0 => {
            let t = f.frame_type ^ mask;
            match len_ok(t, f.len) {
                None => ProtocolError::UnknownFrameType(t).into(),
                Some(false) => ProtocolError::BadLength {
                    frame_type: t,
                    len: f.len,
                }
                .into(),
                // Another known type with a valid length for it: only the
                // MAC can tell (see `type_flips_that_yield_a_valid_header`).
                Some(true) => Error::AuthFailed,
            }
        }
        1 => ProtocolError::BadFlags(mask).into(),
        2 | 3 => {
            let len = f.len ^ ((mask as usize) << (8 * (byte - 2)));
            if len_ok(f.frame_type, len) == Some(true) {
                // A different frame boundary: the tag is read from the wrong
                // bytes and does not verify.
                Error::AuthFailed
            } else {
                ProtocolError::BadLength {
                    frame_type: f.frame_type,
                    len,
                }
                .into()
            }
        }
        _ => Error::AuthFailed,
    }
}

/// Which part of the chosen frame gets the flipped bit.
#[derive(Clone, Copy, Debug)]
enum Region {
    Header,
    Body,
    Tag,
}

/// One corruption experiment.
#[derive(Clone, Debug)]
struct Case {
    dir: Dir,
    seed: u64,
    /// Sizes of the application's writes.
    writes: Vec<usize>,
    /// Size of the sender's `poll_transmit` buffer (shapes the frames).
    tx_buf: usize,
    /// The receiver sent data first, so an ACK frame leads the capture.
    with_ack: bool,
    /// Which frame (taken modulo the number of frames).
    frame: u64,
    region: Region,
    /// Which bit of the region (taken modulo its size in bits).
    bit: u64,
    /// Largest chunk handed to the receiver at once.
    max_chunk: usize,
    /// The (type, length) of every captured frame, when the test knows it.
    layout: Option<Vec<(u8, usize)>>,
}

struct Sides<'a> {
    p: &'a mut Net,
    dir: Dir,
}

impl Sides<'_> {
    fn sid(&self) -> relink::SessionId {
        self.p.session.expect("session")
    }
    fn tid(&self) -> relink::TransportId {
        self.p.tid.expect("transport")
    }
    fn send(&mut self, data: &[u8]) {
        let sid = self.sid();
        let n = match self.dir {
            Dir::ClientToServer => self.p.client.send(data),
            Dir::ServerToClient => self.p.server.send(sid, data),
        };
        assert_eq!(n, Ok(data.len()));
    }
    /// The sender's output with a `poll_transmit` buffer of `buf_len`.
    fn sender_tx(&mut self, buf_len: usize) -> Vec<u8> {
        let (now, tid) = (self.p.now(), self.tid());
        let mut buf = vec![0u8; buf_len];
        let mut out = Vec::new();
        loop {
            let n = match self.dir {
                Dir::ClientToServer => self.p.client.poll_transmit(now, &mut buf),
                Dir::ServerToClient => self.p.server.poll_transmit(tid, now, &mut buf),
            }
            .expect("poll_transmit");
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }
    fn receiver_input(&mut self, bytes: &[u8]) -> Result<usize, Error> {
        let (now, tid) = (self.p.now(), self.tid());
        match self.dir {
            Dir::ClientToServer => self.p.server.handle_input(tid, now, bytes),
            Dir::ServerToClient => self.p.client.handle_input(now, bytes),
        }
    }
    fn receiver_recv(&mut self) -> Vec<u8> {
        let sid = self.sid();
        match self.dir {
            Dir::ClientToServer => server_recv_all(&mut self.p.server, sid),
            Dir::ServerToClient => client_recv_all(&mut self.p.client),
        }
    }
    /// The receiver sends `n` bytes which the sender verifies and reads,
    /// so that the sender owes an ACK.
    fn receiver_sends_first(&mut self, n: usize) {
        let (now, tid, sid) = (self.p.now(), self.tid(), self.sid());
        let mut data = vec![0u8; n];
        pattern(SALT_BACK, 0, &mut data);
        let got = match self.dir {
            Dir::ClientToServer => {
                self.p.server.send(sid, &data).unwrap();
                let out = server_tx(&mut self.p.server, tid, now);
                assert_eq!(self.p.client.handle_input(now, &out), Ok(out.len()));
                client_recv_all(&mut self.p.client)
            }
            Dir::ServerToClient => {
                self.p.client.send(&data).unwrap();
                let out = client_tx(&mut self.p.client, now);
                assert_eq!(self.p.server.handle_input(tid, now, &out), Ok(out.len()));
                server_recv_all(&mut self.p.server, sid)
            }
        };
        assert_eq!(got, data);
    }
}

fn run(case: &Case) {
    let mut p = Net::default_pair(case.seed);
    p.handshake();
    p.settle(100);
    assert!(p.c2s.is_empty() && p.s2c.is_empty() && !p.ended);
    p.cev.clear();
    p.sev.clear();
    let mut s = Sides {
        p: &mut p,
        dir: case.dir,
    };
    if case.with_ack {
        s.receiver_sends_first(300);
    }
    // The part in which a bit is flipped, then the filler.
    let payload: usize = case.writes.iter().sum();
    let mut data = vec![0u8; payload + FILLER];
    pattern(SALT_DATA, 0, &mut data);
    let mut off = 0;
    for &w in &case.writes {
        s.send(&data[off..off + w]);
        off += w;
    }
    let mut wire = s.sender_tx(case.tx_buf);
    let frames = parse_frames(&wire);
    s.send(&data[payload..]);
    wire.extend(s.sender_tx(case.tx_buf));
    assert_eq!(
        frames
            .iter()
            .filter(|f| f.frame_type == 1)
            .map(|f| f.len)
            .sum::<usize>(),
        payload
    );
    assert_eq!(frames[0].frame_type, if case.with_ack { 2 } else { 1 });
    if let Some(layout) = &case.layout {
        let got: Vec<_> = frames.iter().map(|f| (f.frame_type, f.len)).collect();
        assert_eq!(&got, layout);
    }

    // Corrupt one bit of one frame of the first part.
    let k = pick(case.frame, frames.len());
    let f = frames[k];
    let bit = match case.region {
        Region::Header => pick(case.bit, HEADER * 8),
        Region::Body if f.len > 0 => HEADER * 8 + pick(case.bit, f.len * 8),
        Region::Body | Region::Tag => (HEADER + f.len) * 8 + pick(case.bit, TAG * 8),
    };
    let what = format!("{case:?}: frame {k} of {} {f:?} bit {bit}", frames.len());
    wire[f.start + bit / 8] ^= 1 << (bit % 8);
    let expected = expected_error(&f, bit);
    let delivered_before: usize = frames[..k]
        .iter()
        .filter(|f| f.frame_type == 1)
        .map(|f| f.len)
        .sum();

    // Feed it in random chunks; read after every call.
    let mut chooser: ChaCha20Rng = rng(case.seed ^ 0xC4);
    let mut delivered = Vec::new();
    let mut pos = 0;
    let err = loop {
        assert!(pos < wire.len(), "{what}: corruption not detected");
        let end = (pos + between(&mut chooser, 1, case.max_chunk)).min(wire.len());
        let r = s.receiver_input(&wire[pos..end]);
        delivered.extend(s.receiver_recv());
        match r {
            Ok(n) => pos += n,
            Err(e) => break e,
        }
    };
    assert_eq!(err, expected, "{what}");
    assert_eq!(delivered.len(), delivered_before, "{what}");
    assert!(matches_pattern(SALT_DATA, 0, &delivered), "{what}");
    assert_eq!(
        s.receiver_input(&wire[pos..]),
        Err(Error::TransportEnded),
        "{what}"
    );
    p.drain();
    match case.dir {
        Dir::ClientToServer => {
            let t = p.tid.unwrap();
            assert!(
                p.sev.contains(&ServerEvent::CloseTransport {
                    transport: t,
                    error: Some(err)
                }),
                "{what}"
            );
            assert_eq!(
                p.sev.contains(&ServerEvent::AuthFailed {
                    transport: t,
                    reason: Error::AuthFailed
                }),
                err == Error::AuthFailed,
                "{what}"
            );
        }
        Dir::ServerToClient => {
            let mut want = vec![Event::TransportLost { error: Some(err) }];
            if err == Error::AuthFailed {
                want.insert(0, Event::AuthFailed { reason: err });
            }
            assert_eq!(p.cev, want, "{what}");
            assert!(p.client.transport_ended());
        }
    }

    // Resume on a new transport: the sender resends from exactly the
    // verified prefix and the whole stream arrives byte-exactly.
    p.cev.clear();
    p.sev.clear();
    p.break_transport();
    p.open_transport();
    let total = payload + FILLER;
    let mut s = Sides {
        p: &mut p,
        dir: case.dir,
    };
    let mut rounds = 0;
    while delivered.len() < total {
        s.p.step();
        assert!(!s.p.ended, "{what}: resumed transport ended");
        delivered.extend(s.receiver_recv());
        rounds += 1;
        assert!(rounds < 20_000, "{what}: stuck at {}", delivered.len());
    }
    assert_eq!(delivered.len(), total, "{what}");
    assert!(delivered == data, "{what}: stream differs after resume");
    // A corrupted frame never aborts or closes the session (a flip can
    // make a header look like an ABORT's, see above).
    p.drain();
    assert_eq!(p.client.close_reason(), None, "{what}");
    assert!(
        !p.sev
            .iter()
            .any(|e| matches!(e, ServerEvent::Closed { .. })),
        "{what}: {:?}",
        p.sev
    );
    let range = (delivered_before as u64, total as u64);
    match case.dir {
        Dir::ClientToServer => assert!(
            p.cev.contains(&Event::ResendRange {
                start: range.0,
                end: range.1
            }),
            "{what}: {:?}",
            p.cev
        ),
        Dir::ServerToClient => assert!(
            p.sev.contains(&ServerEvent::ResendRange {
                session: p.session.unwrap(),
                start: range.0,
                end: range.1
            }),
            "{what}: {:?}",
            p.sev
        ),
    }
}

fn region() -> impl Strategy<Value = Region> {
    prop_oneof![Just(Region::Header), Just(Region::Body), Just(Region::Tag)]
}

fn case(dir: Dir) -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        proptest::collection::vec(1usize..20_000, 1..5),
        1024usize..40_000,
        any::<bool>(),
        any::<u64>(),
        region(),
        any::<u64>(),
        prop_oneof![1usize..64, 64usize..70_000],
    )
        .prop_map(
            move |(seed, writes, tx_buf, with_ack, frame, region, bit, max_chunk)| Case {
                dir,
                seed,
                writes,
                tx_buf,
                with_ack,
                frame,
                region,
                bit,
                max_chunk,
                layout: None,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn client_to_server_bit_flip_is_detected(c in case(Dir::ClientToServer)) {
        run(&c);
    }

    #[test]
    fn server_to_client_bit_flip_is_detected(c in case(Dir::ServerToClient)) {
        run(&c);
    }
}

/// Every bit of a small DATA frame and of an ACK frame, both directions,
/// delivered in one piece and byte by byte.
#[test]
fn every_bit_of_a_data_and_an_ack_frame() {
    for dir in [Dir::ClientToServer, Dir::ServerToClient] {
        // Frame 0: ACK (8-byte body), frame 1: DATA of 10 bytes.
        for (frame, len) in [(0usize, 8usize), (1, 10)] {
            for bit in 0..(HEADER + len + TAG) * 8 {
                let region = if bit < HEADER * 8 {
                    Region::Header
                } else if bit < (HEADER + len) * 8 {
                    Region::Body
                } else {
                    Region::Tag
                };
                let within = match region {
                    Region::Header => bit,
                    Region::Body => bit - HEADER * 8,
                    Region::Tag => bit - (HEADER + len) * 8,
                };
                run(&Case {
                    dir,
                    seed: bit as u64,
                    writes: vec![10],
                    tx_buf: 1024,
                    with_ack: true,
                    frame: frame as u64,
                    region,
                    bit: within as u64,
                    max_chunk: if bit % 2 == 0 { 1 } else { 100_000 },
                    layout: Some(vec![(2, 13), (1, 10)]),
                });
            }
        }
    }
}

/// `raw` reduced to `0..n`.
fn pick(raw: u64, n: usize) -> usize {
    (raw % n as u64) as usize
}

/// Which single flips of a genuine frame's type byte give another known
/// type with a length valid for it (only the MAC, which covers the header,
/// rejects those); every other flip is refused by the header checks. The
/// table is written out from PROTOCOL.md 5.1 (version 2), not computed.
#[test]
fn type_flips_that_yield_a_valid_header() {
    // (genuine type, its length, the bits whose flip gives a valid header)
    let table: [(u8, usize, &[usize]); 9] = [
        // DATA -> CREDENTIAL (9, 1..=513)
        (1, 1, &[3]),
        (1, 4, &[3]),
        // DATA -> PING (3, 8) and -> CREDENTIAL
        (1, 8, &[1, 3]),
        // DATA -> ABORT (5, 12) and -> CREDENTIAL
        (1, 12, &[2, 3]),
        // A maximal DATA frame fits no other type.
        (1, MAX_PAYLOAD, &[]),
        // ACK (13) -> ACCEPT (10, 8..=520)
        (2, 13, &[3]),
        // PING (8) -> DATA
        (3, 8, &[1]),
        // CLOSE (8): ABORT needs 12, REKEY_INIT 45; 0 and 12 are unknown.
        (4, 8, &[]),
        // ABORT (12) -> DATA
        (5, 12, &[2]),
    ];
    for (t, len, valid) in table {
        for bit in 0..8 {
            let f = Frame {
                start: 0,
                frame_type: t,
                len,
            };
            let e = expected_error(&f, bit);
            if valid.contains(&bit) {
                assert_eq!(e, Error::AuthFailed, "{t} {len} {bit}");
            } else {
                assert_ne!(e, Error::AuthFailed, "{t} {len} {bit}");
            }
        }
    }
    let close = Frame {
        start: 0,
        frame_type: 4,
        len: 8,
    };
    assert_eq!(
        expected_error(&close, 0),
        Error::Protocol(ProtocolError::BadLength {
            frame_type: 5,
            len: 8
        })
    );
    assert_eq!(
        expected_error(&close, 3),
        Error::Protocol(ProtocolError::UnknownFrameType(12))
    );
    let data = Frame {
        start: 0,
        frame_type: 1,
        len: 10,
    };
    assert_eq!(
        expected_error(&data, 2),
        Error::Protocol(ProtocolError::BadLength {
            frame_type: 5,
            len: 10
        })
    );
}

/// Every bit of a 4-byte DATA frame (behind an ACK), both directions: in
/// particular the type flip that turns it into a well-formed CREDENTIAL
/// header (type 9, length 4) is caught by the MAC (`AuthFailed`), nothing of
/// it is delivered and no abort happens; the stream resumes byte-exactly.
#[test]
fn every_bit_of_a_four_byte_data_frame() {
    for dir in [Dir::ClientToServer, Dir::ServerToClient] {
        let len = 4;
        for bit in 0..(HEADER + len + TAG) * 8 {
            let (region, within) = if bit < HEADER * 8 {
                (Region::Header, bit)
            } else if bit < (HEADER + len) * 8 {
                (Region::Body, bit - HEADER * 8)
            } else {
                (Region::Tag, bit - (HEADER + len) * 8)
            };
            run(&Case {
                dir,
                seed: 7_000 + bit as u64,
                writes: vec![len],
                tx_buf: 1024,
                with_ack: true,
                frame: 1,
                region,
                bit: within as u64,
                max_chunk: if bit % 2 == 0 { 1 } else { 100_000 },
                layout: Some(vec![(2, 13), (1, len)]),
            });
        }
    }
}

/// Every bit of a genuine ABORT frame (type 5, the reason code and the
/// sender's time, 12 bytes), both directions: the receiver ends the
/// transport with the typed error of the flipped field (a DATA header where
/// the type flipped to 1, which only the MAC rejects), and a corrupted ABORT
/// aborts nothing.
/// The sender resends its ABORT after the resume; only that genuine one
/// ends the session, as `Aborted` on both sides.
#[test]
fn every_bit_of_an_abort_frame() {
    let code = AbortCode(0x0102_0304);
    for dir in [Dir::ClientToServer, Dir::ServerToClient] {
        for bit in 0..(HEADER + 12 + TAG) * 8 {
            let what = format!("{dir:?} ABORT bit {bit}");
            let mut p = Net::default_pair(9_000 + bit as u64);
            let sid = p.handshake();
            p.settle(100);
            assert!(p.c2s.is_empty() && p.s2c.is_empty() && !p.ended);
            p.cev.clear();
            p.sev.clear();
            match dir {
                Dir::ClientToServer => p.client.abort(code),
                Dir::ServerToClient => p.server.abort(sid, code).unwrap(),
            }
            let mut s = Sides { p: &mut p, dir };
            let mut wire = s.sender_tx(4096);
            let frames = parse_frames(&wire);
            let layout: Vec<_> = frames.iter().map(|f| (f.frame_type, f.len)).collect();
            assert_eq!(layout, vec![(5, 12)], "{what}");
            let f = frames[0];
            wire[bit / 8] ^= 1 << (bit % 8);
            let expected = expected_error(&f, bit);
            assert_eq!(s.receiver_input(&wire), Err(expected), "{what}");
            assert!(s.receiver_recv().is_empty(), "{what}");
            p.drain();
            // Nothing aborted at the receiver.
            match dir {
                Dir::ClientToServer => assert!(
                    !p.sev
                        .iter()
                        .any(|e| matches!(e, ServerEvent::Closed { .. })),
                    "{what}: {:?}",
                    p.sev
                ),
                Dir::ServerToClient => {
                    assert_eq!(p.client.close_reason(), None, "{what}");
                    let mut want = vec![Event::TransportLost {
                        error: Some(expected),
                    }];
                    if expected == Error::AuthFailed {
                        want.insert(0, Event::AuthFailed { reason: expected });
                    }
                    assert_eq!(p.cev, want, "{what}");
                }
            }
            // Resume: the genuine ABORT goes out again and is answered.
            p.break_transport();
            p.open_transport();
            let closed = |p: &Net| {
                p.client.is_closed()
                    && p.sev
                        .iter()
                        .any(|e| matches!(e, ServerEvent::Closed { .. }))
            };
            for _ in 0..2000 {
                p.step();
                if closed(&p) {
                    break;
                }
            }
            assert!(closed(&p), "{what}: {:?}", p.cev);
            let (client_by_peer, server_by_peer) = match dir {
                Dir::ClientToServer => (false, true),
                Dir::ServerToClient => (true, false),
            };
            assert_eq!(
                p.client.close_reason(),
                Some(CloseReason::Aborted {
                    code,
                    by_peer: client_by_peer
                }),
                "{what}"
            );
            let server_closed: Vec<_> = p
                .sev
                .iter()
                .filter(|e| matches!(e, ServerEvent::Closed { .. }))
                .collect();
            assert_eq!(
                server_closed,
                vec![&ServerEvent::Closed {
                    session: sid,
                    reason: CloseReason::Aborted {
                        code,
                        by_peer: server_by_peer
                    }
                }],
                "{what}"
            );
        }
    }
}
