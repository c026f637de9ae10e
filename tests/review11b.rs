//! Review of issue 11 (rekey, credentials) as an adversary: an
//! authenticated client written here from PROTOCOL.md (3.2, 3.4, 4.1, 4.2,
//! 5.1, 5.2, 6.8) that holds the session keys and forges any REKEY_* or ACK
//! frame against a real `Server`. Each test states what the spec requires;
//! one that fails on main is a finding and carries `#[ignore = "review11b
//! finding: ..."]`.

use relink::{Config, Instant, Server, ServerEvent, SessionId, TransportId};

const NOW: u64 = 1_000_000_000;

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

/// A forging client: holds the epoch-0 c2s MAC key and its sequence.
struct Forger {
    server: Server<relink::OsRng>,
    tid: TransportId,
    mac: [u8; 32],
    seq: u64,
    out: Vec<u8>,
    sid: Option<SessionId>,
    master: [u8; 32],
    /// The time (µs) of what the forger sends next.
    t: u64,
    /// The epoch of the forger's send keys (`mac`).
    epoch: u32,
}

impl Forger {
    fn new() -> Self {
        Self::with(false)
    }

    fn with(client_auth: bool) -> Self {
        let cfg = Config {
            rekey: false,
            client_auth,
            ..Config::default()
        };
        let mut server = Server::new(cfg, relink::os_rng());
        let now = Instant::from_micros(NOW);
        let tid = server.accept(now).unwrap();
        let secret = [7u8; 32];
        let mut ch = [0u8; 43];
        ch[1] = 2;
        ch[3..35].copy_from_slice(&public(secret));
        ch[35..43].copy_from_slice(&NOW.to_le_bytes());
        assert_eq!(server.handle_input(tid, now, &ch), Ok(43));
        let mut buf = vec![0u8; 4096];
        let n = server.poll_transmit(tid, now, &mut buf).unwrap();
        assert_eq!(n, 107, "ServerHello");
        let sh = &buf[..107];
        let spub: [u8; 32] = sh[2..34].try_into().unwrap();
        let ee = x25519_dalek::x25519(secret, spub);
        assert_eq!(sh[66] & 1, u8::from(client_auth), "CLIENT_AUTH flag");
        let th1 = hash(&[&ch[..], &sh[..67]].concat());
        let prk = derive(
            "relink v1 2026-11 handshake secret",
            &[&ee[..], &th1[..]].concat(),
        );
        let th3 = hash(&[&ch[..], sh].concat());
        let cconf = mac16(&derive("relink v1 2026-11 client confirm", &prk), &th3);
        let master = derive(
            "relink v1 2026-11 session master",
            &[&prk[..], &th3[..]].concat(),
        );
        let mac = derive("relink v1 2026-11 c2s mac", &master);
        assert_eq!(server.handle_input(tid, now, &cconf), Ok(16));
        let mut f = Forger {
            server,
            tid,
            mac,
            seq: 0,
            out: Vec::new(),
            sid: None,
            master,
            t: NOW + 1000,
            epoch: 0,
        };
        f.sid = f.events().iter().find_map(|e| match e {
            ServerEvent::HandshakeDone { session, .. } => Some(*session),
            _ => None,
        });
        assert!(f.sid.is_some(), "handshake done");
        f
    }

    /// A frame of `ty` with `payload`, epoch 0, generation 0, offset 0.
    fn frame(&mut self, ty: u8, payload: &[u8]) -> Vec<u8> {
        let header = [ty, 0, payload.len() as u8, (payload.len() >> 8) as u8];
        let mut input = payload.to_vec();
        input.push(1);
        input.extend(self.epoch.to_le_bytes());
        input.extend(0u64.to_le_bytes());
        input.extend(self.seq.to_le_bytes());
        input.extend(0u64.to_le_bytes());
        input.extend(header);
        self.seq += 1;
        let mut f = header.to_vec();
        f.extend(payload);
        f.extend(mac16(&self.mac, &input));
        f
    }

    fn send(&mut self, ty: u8, payload: &[u8]) -> Result<usize, relink::Error> {
        let f = self.frame(ty, payload);
        let now = Instant::from_micros(self.t);
        let r = self.server.handle_input(self.tid, now, &f);
        self.drain();
        r
    }

    fn drain(&mut self) {
        let now = Instant::from_micros(self.t);
        let mut buf = vec![0u8; 65536];
        loop {
            match self.server.poll_transmit(self.tid, now, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.out.extend(&buf[..n]),
            }
        }
    }

    fn events(&mut self) -> Vec<ServerEvent> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }

    /// (type, payload) of every frame the server wrote.
    fn frames(&self) -> Vec<(u8, Vec<u8>)> {
        let mut b = &self.out[..];
        let mut v = Vec::new();
        while b.len() >= 20 {
            let len = u16::from_le_bytes([b[2], b[3]]) as usize;
            if b.len() < 4 + len + 16 {
                break;
            }
            v.push((b[0], b[4..4 + len].to_vec()));
            b = &b[4 + len + 16..];
        }
        v
    }

    fn aborted_with_violation(&self) -> bool {
        self.frames()
            .iter()
            .any(|(t, p)| *t == 5 && p[..4] == 9u32.to_le_bytes())
    }
}

fn init(n: u32, flags: u8, public: &[u8; 32]) -> Vec<u8> {
    [
        &n.to_le_bytes()[..],
        &[flags],
        public,
        &(NOW + 1000).to_le_bytes(),
    ]
    .concat()
}

fn a_public() -> [u8; 32] {
    public([9u8; 32])
}

/// 6.8 rule 3: INIT beyond newest + 1 (2 and u32::MAX) is a violation.
#[test]
fn init_far_ahead_is_a_protocol_violation() {
    for n in [2u32, 1000, u32::MAX] {
        let mut f = Forger::new();
        let _ = f.send(6, &init(n, 0, &a_public()));
        assert!(f.aborted_with_violation(), "INIT n={n}: {:?}", f.frames());
    }
}

/// 4.4 / 6.8: a low-order X25519 key (all-zero result) is a violation.
#[test]
fn init_with_a_low_order_key_is_a_protocol_violation() {
    let zero = [0u8; 32];
    let mut one = [0u8; 32];
    one[0] = 1;
    for p in [zero, one] {
        let mut f = Forger::new();
        let _ = f.send(6, &init(1, 0, &p));
        assert!(f.aborted_with_violation(), "INIT key {p:?}");
        assert!(
            !f.frames().iter().any(|(t, _)| *t == 7),
            "no REPLY to a low-order key"
        );
    }
}

/// 6.8 rule 3: ORDERED from the client is a violation.
#[test]
fn init_ordered_from_the_client_is_a_protocol_violation() {
    let mut f = Forger::new();
    let _ = f.send(6, &init(1, 1, &a_public()));
    assert!(f.aborted_with_violation());
}

/// 6.8 rule 3: REPLY without an INIT and SWITCH without an exchange.
#[test]
fn reply_and_switch_out_of_sequence_are_protocol_violations() {
    let mut f = Forger::new();
    let mut p = 1u32.to_le_bytes().to_vec();
    p.extend(a_public());
    p.extend((NOW + 1000).to_le_bytes());
    let _ = f.send(7, &p);
    assert!(f.aborted_with_violation(), "REPLY without INIT");
    for n in [0u32, 1, 2, u32::MAX] {
        let mut f = Forger::new();
        let p = [&n.to_le_bytes()[..], &(NOW + 1000).to_le_bytes()].concat();
        let _ = f.send(8, &p);
        assert!(f.aborted_with_violation(), "SWITCH {n} without exchange");
    }
}

/// 6.8: SWITCH for another epoch than the one the server replied to.
#[test]
fn switch_for_the_wrong_epoch_is_a_protocol_violation() {
    for n in [0u32, 2, u32::MAX] {
        let mut f = Forger::new();
        let _ = f.send(6, &init(1, 0, &a_public()));
        assert!(f.frames().iter().any(|(t, _)| *t == 7), "server replies");
        let p = [&n.to_le_bytes()[..], &(NOW + 1000).to_le_bytes()].concat();
        let _ = f.send(8, &p);
        assert!(f.aborted_with_violation(), "SWITCH {n} after REPLY 1");
    }
}

/// 6.8 rule 3: duplicates of an answered INIT are ignored: one REPLY, no
/// growth of the session's memory however many arrive.
#[test]
fn an_init_storm_makes_one_reply_and_no_growth() {
    let mut f = Forger::new();
    let _ = f.send(6, &init(1, 0, &a_public()));
    let sid = f.sid.unwrap();
    let mem0 = f.server.connection(sid).unwrap().buffer_memory();
    for i in 0..2000u32 {
        let p = public([(i % 200) as u8 + 10; 32]);
        let _ = f.send(6, &init(1, 0, &p));
    }
    let replies = f.frames().iter().filter(|(t, _)| *t == 7).count();
    assert_eq!(replies, 1, "one REPLY");
    assert!(!f.aborted_with_violation());
    assert_eq!(f.server.connection(sid).unwrap().buffer_memory(), mem0);
}

/// 6.8 ACK rule: `rx_epoch` above the newest marker the server wrote
/// ends the transport.
#[test]
fn ack_with_an_rx_epoch_never_sent_ends_the_transport() {
    for e in [1u32, u32::MAX] {
        let mut f = Forger::new();
        let mut p = 0u64.to_le_bytes().to_vec();
        p.extend(e.to_le_bytes());
        p.push(0);
        let r = f.send(2, &p);
        let ended = r.is_err()
            || f.events()
                .iter()
                .any(|ev| matches!(ev, ServerEvent::CloseTransport { .. }));
        assert!(ended, "ACK rx_epoch={e}: {r:?}");
    }
}

/// The server's REKEY_REPLY public key, once it wrote one.
fn reply_public(f: &Forger) -> [u8; 32] {
    let (_, p) = f
        .frames()
        .into_iter()
        .find(|(t, _)| *t == 7)
        .expect("a REPLY");
    p[4..36].try_into().unwrap()
}

/// A ResumeRequest (3.5) MACed under `key`.
fn resume_request(conn_id: u64, client_read: u64, rx_epoch: u32, key: &[u8; 32]) -> Vec<u8> {
    resume_request_at(conn_id, client_read, rx_epoch, key, NOW + 2000)
}

fn resume_request_at(
    conn_id: u64,
    client_read: u64,
    rx_epoch: u32,
    key: &[u8; 32],
    time: u64,
) -> Vec<u8> {
    let mut r = vec![0xFF, 2];
    r.extend(conn_id.to_le_bytes());
    r.extend(1u64.to_le_bytes()); // counter
    r.extend(0u64.to_le_bytes()); // client_written
    r.extend(client_read.to_le_bytes());
    r.extend(time.to_le_bytes());
    r.extend(rx_epoch.to_le_bytes());
    let mac = mac16(key, &[&[1u8][..], &r[..]].concat());
    r.extend(mac);
    r
}

/// PROTOCOL.md 7.8 rule 1: on a resume, the client's `rx_epoch` and read
/// count must lie on the right side of the server's switch point `S`
/// (`rx_epoch = e` needs `client_read <= S`, `rx_epoch = n` needs
/// `client_read >= S`); "otherwise the session cannot be continued
/// (DataUnavailable, as a read count out of range)". The server here sent
/// 100 bytes under epoch 0, its REPLY at S = 100, then 100 bytes under
/// epoch 1; an authenticated client (it holds both resume keys) states a
/// pair no honest client can be in. The honest pair is accepted (control).
#[test]
fn resume_with_an_rx_epoch_on_the_wrong_side_of_the_switch_point_ends_the_session() {
    for (rx_epoch, client_read, honest) in [
        (0u32, 100u64, true),
        (1, 100, true),
        (0, 150, false),
        (1, 50, false),
    ] {
        let mut f = Forger::new();
        let sid = f.sid.unwrap();
        let conn_id = f.server.conn_id(sid).unwrap();
        assert_eq!(f.server.send(sid, &[0xAB; 100]), Ok(100));
        f.drain();
        let secret = [9u8; 32];
        let _ = f.send(6, &init(1, 0, &public(secret)));
        assert_eq!(f.server.send(sid, &[0xCD; 100]), Ok(100));
        f.drain();
        let s_pub = reply_public(&f);
        let c_pub = public(secret);
        let ee = x25519_dalek::x25519(secret, s_pub);
        let rth = hash(&[&1u32.to_le_bytes()[..], &c_pub, &s_pub].concat());
        let chain1 = derive(
            "relink v2 2026-12 rekey chain",
            &[&f.master[..], &ee, &rth].concat(),
        );
        let key = if rx_epoch == 0 {
            derive("relink v1 2026-11 resume", &f.master)
        } else {
            derive("relink v1 2026-11 resume", &chain1)
        };
        let now = Instant::from_micros(NOW + 2000);
        f.server.transport_lost(f.tid, now);
        let _ = f.events();
        let t2 = f.server.accept(now).unwrap();
        let req = resume_request(conn_id, client_read, rx_epoch, &key);
        let r = f.server.handle_input(t2, now, &req);
        let mut buf = vec![0u8; 65536];
        let n = f.server.poll_transmit(t2, now, &mut buf).unwrap_or(0);
        let ev = f.events();
        let what = format!(
            "rx_epoch {rx_epoch} read {client_read}: {r:?} reply {:?} {ev:?}",
            &buf[..n.min(2)]
        );
        if honest {
            assert!(
                r.is_ok() && n >= 54 && buf[1] == 0,
                "honest resume accepted: {what}"
            );
            continue;
        }
        assert!(
            ev.iter().any(|e| matches!(
                e,
                ServerEvent::Closed {
                    reason: relink::CloseReason::DataUnavailable,
                    ..
                }
            )),
            "session ended DataUnavailable: {what}"
        );
        assert!(f.server.epoch(sid).is_none(), "session gone: {what}");
    }
}

fn quarter(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

/// The first 64 keystream bytes of ChaCha20 (RFC 8439) under `key`, zero
/// nonce, counter 0: stream offset 0 (5.3) and the credential cipher (6.9).
fn keystream0(key: &[u8; 32]) -> [u8; 64] {
    let w = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut init = [0u32; 16];
    init[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
    for i in 0..8 {
        init[4 + i] = w(&key[4 * i..]);
    }
    let mut s = init;
    for _ in 0..10 {
        quarter(&mut s, 0, 4, 8, 12);
        quarter(&mut s, 1, 5, 9, 13);
        quarter(&mut s, 2, 6, 10, 14);
        quarter(&mut s, 3, 7, 11, 15);
        quarter(&mut s, 0, 5, 10, 15);
        quarter(&mut s, 1, 6, 11, 12);
        quarter(&mut s, 2, 7, 8, 13);
        quarter(&mut s, 3, 4, 9, 14);
    }
    let mut out = [0u8; 64];
    for i in 0..16 {
        out[4 * i..4 * i + 4].copy_from_slice(&s[i].wrapping_add(init[i]).to_le_bytes());
    }
    out
}

fn xor0(key: &[u8; 32], data: &[u8]) -> Vec<u8> {
    let ks = keystream0(key);
    data.iter().zip(ks.iter()).map(|(a, b)| a ^ b).collect()
}

impl Forger {
    /// DATA at offset 0 (at most 64 bytes).
    fn data0(&mut self, plain: &[u8]) -> Result<usize, relink::Error> {
        let enc = derive("relink v1 2026-11 c2s encryption", &self.master);
        let body = xor0(&enc, plain);
        self.send(1, &body)
    }

    /// CREDENTIAL of `kind` with `cred` (at most 64 bytes).
    fn credential(&mut self, kind: u8, cred: &[u8]) -> Result<usize, relink::Error> {
        let key = derive("relink v2 2026-12 credential", &self.master);
        let mut p = vec![kind];
        p.extend(xor0(&key, cred));
        self.send(9, &p)
    }

    fn readable(&mut self) -> Vec<u8> {
        let sid = self.sid.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while let Ok(n) = self.server.recv(sid, &mut buf) {
            if n == 0 {
                break;
            }
            got.extend(&buf[..n]);
        }
        got
    }
}

/// 6.9 rule 1: DATA before acceptance (before the CREDENTIAL, and after it
/// while the application decides) aborts with PROTOCOL_VIOLATION and
/// delivers nothing. Control: after `accept_client` the same DATA is
/// delivered (the forged frames verify).
#[test]
fn data_before_acceptance_is_a_violation_and_never_delivered() {
    for step in 0..3 {
        let mut f = Forger::with(true);
        let sid = f.sid.unwrap();
        if step >= 1 {
            f.credential(1, b"user:pw").unwrap();
            let ev = f.events();
            assert!(
                ev.iter()
                    .any(|e| matches!(e, ServerEvent::ClientAuth { .. })),
                "{ev:?}"
            );
        }
        if step == 2 {
            f.server.accept_client(sid, None).unwrap();
            f.drain();
        }
        let _ = f.data0(b"secret payload");
        let got = f.readable();
        if step == 2 {
            assert_eq!(got, b"secret payload", "accepted: delivered");
            assert!(!f.aborted_with_violation());
        } else {
            assert!(got.is_empty(), "step {step}: delivered {got:?}");
            assert!(f.aborted_with_violation(), "step {step}");
        }
    }
}

/// 6.9 rule 2: the server acts on the first CREDENTIAL and ignores later
/// ones, even with other bytes: one ClientAuth, the first credential held.
#[test]
fn a_second_credential_with_other_bytes_changes_nothing() {
    let mut f = Forger::with(true);
    let sid = f.sid.unwrap();
    f.credential(1, b"alice:pw").unwrap();
    let _ = f.credential(1, b"mallory:pw");
    let _ = f.credential(0, b"");
    let auths = f
        .events()
        .iter()
        .filter(|e| matches!(e, ServerEvent::ClientAuth { .. }))
        .count();
    assert_eq!(auths, 1);
    match f.server.client_credential(sid) {
        Some(relink::ClientCredential::Secret(b)) => assert_eq!(b, b"alice:pw"),
        other => panic!("held: {other:?}"),
    }
    assert!(!f.aborted_with_violation());
}

/// 6.9: malformed credentials (kind 0 with bytes, kind 1 empty, kind 2
/// shorter than a token, an unknown kind), an ACCEPT from the client, and a
/// CREDENTIAL to a server without CLIENT_AUTH are protocol violations.
#[test]
fn malformed_and_misdirected_gate_frames_are_violations() {
    for (kind, cred) in [
        (0u8, &b"x"[..]),
        (1, &b""[..]),
        (2, &[0u8; 50][..]),
        (3, &b"x"[..]),
    ] {
        let mut f = Forger::with(true);
        let _ = f.credential(kind, cred);
        assert!(f.aborted_with_violation(), "kind {kind} len {}", cred.len());
        assert!(!f
            .events()
            .iter()
            .any(|e| matches!(e, ServerEvent::ClientAuth { .. })));
    }
    let mut f = Forger::with(true);
    let _ = f.send(10, &(NOW + 1000).to_le_bytes());
    assert!(f.aborted_with_violation(), "ACCEPT from the client");
    let mut f = Forger::with(false);
    let _ = f.credential(1, b"user:pw");
    assert!(f.aborted_with_violation(), "CREDENTIAL without CLIENT_AUTH");
}

/// 6.9 rule 6: an ACK with ACCEPTED before the server's application
/// accepted ends the transport.
#[test]
fn an_ack_claiming_accepted_too_early_ends_the_transport() {
    let mut f = Forger::with(true);
    f.credential(1, b"user:pw").unwrap();
    let mut p = 0u64.to_le_bytes().to_vec();
    p.extend(0u32.to_le_bytes());
    p.push(1);
    let r = f.send(2, &p);
    let ended = r.is_err()
        || f.events()
            .iter()
            .any(|e| matches!(e, ServerEvent::CloseTransport { .. }));
    assert!(ended, "{r:?}");
}

/// 6.9 rule 3: the CREDENTIAL must verify within `handshake_timeout` of
/// *attached* time: 4 s attached, 56 s detached, resumed, then 5 s more
/// is 9 s (no abort); past 10 s attached the server aborts with
/// CREDENTIAL_REJECTED (5).
#[test]
fn the_credential_deadline_counts_attached_time_only() {
    let secs = |s: u64| NOW + s * 1_000_000;
    let mut f = Forger::with(true);
    let sid = f.sid.unwrap();
    let conn_id = f.server.conn_id(sid).unwrap();
    assert_eq!(
        Config::default().handshake_timeout,
        relink::Duration::from_secs(10)
    );
    f.server
        .transport_lost(f.tid, Instant::from_micros(secs(4)));
    let at = secs(60);
    let t2 = f.server.accept(Instant::from_micros(at)).unwrap();
    let key = derive("relink v1 2026-11 resume", &f.master);
    let req = resume_request_at(conn_id, 0, 0, &key, at);
    assert_eq!(
        f.server.handle_input(t2, Instant::from_micros(at), &req),
        Ok(62)
    );
    let mut buf = vec![0u8; 4096];
    let n = f
        .server
        .poll_transmit(t2, Instant::from_micros(at), &mut buf)
        .unwrap();
    assert!(n >= 54 && buf[1] == 0, "resumed");
    f.tid = t2;
    f.out = buf[54..n].to_vec();
    f.t = at + 5_000_000;
    f.server.handle_timeout(Instant::from_micros(f.t));
    f.drain();
    assert!(
        !f.frames().iter().any(|(t, _)| *t == 5),
        "no abort after 9 s attached: {:?}",
        f.frames()
    );
    f.t = at + 6_100_000;
    f.server.handle_timeout(Instant::from_micros(f.t));
    f.drain();
    assert!(
        f.frames()
            .iter()
            .any(|(t, p)| *t == 5 && p[..4] == 5u32.to_le_bytes()),
        "CREDENTIAL_REJECTED after 10.1 s attached: {:?}",
        f.frames()
    );
}

/// 6.9 rule 4 / 4.8: a kind-2 credential that is no token this server
/// issued aborts the session (6 or 7) without a ClientAuth; a CREDENTIAL
/// longer than 513 bytes ends the transport (bad length), not a
/// ClientAuth either.
#[test]
fn forged_tokens_and_oversize_credentials_reach_no_application() {
    for len in [51usize, 60] {
        let mut f = Forger::with(true);
        let junk: Vec<u8> = (0..len as u8).collect();
        let _ = f.credential(2, &junk);
        assert!(
            !f.events()
                .iter()
                .any(|e| matches!(e, ServerEvent::ClientAuth { .. })),
            "len {len}"
        );
        assert!(
            f.frames()
                .iter()
                .any(|(t, p)| *t == 5
                    && (p[..4] == 6u32.to_le_bytes() || p[..4] == 7u32.to_le_bytes())),
            "token refused: {:?}",
            f.frames()
        );
    }
    let mut f = Forger::with(true);
    let mut p = vec![1u8];
    p.extend([0x55u8; 513]);
    let r = f.send(9, &p);
    assert!(r.is_err(), "514-byte CREDENTIAL: {r:?}");
    assert!(!f
        .events()
        .iter()
        .any(|e| matches!(e, ServerEvent::ClientAuth { .. })));
}

/// 6.8 rule 4: an INIT for `n + 1` that arrives while the server still
/// holds keys of exchange `n` is kept and answered once they are dropped;
/// the session then completes epoch 2 (no abort, `Rekeyed` 1 and 2).
#[test]
fn an_init_kept_for_later_is_answered_once_the_old_keys_are_gone() {
    let mut f = Forger::new();
    let sid = f.sid.unwrap();
    let s1 = [9u8; 32];
    let s2 = [10u8; 32];
    let _ = f.send(6, &init(1, 0, &public(s1)));
    let sp1 = reply_public(&f);
    let ee = x25519_dalek::x25519(s1, sp1);
    let rth = hash(&[&1u32.to_le_bytes()[..], &public(s1), &sp1].concat());
    let chain1 = derive(
        "relink v2 2026-12 rekey chain",
        &[&f.master[..], &ee, &rth].concat(),
    );
    // INIT 2 before our SWITCH 1: kept.
    let _ = f.send(6, &init(2, 0, &public(s2)));
    assert_eq!(f.frames().iter().filter(|(t, _)| *t == 7).count(), 1);
    let p = [&1u32.to_le_bytes()[..], &(NOW + 1000).to_le_bytes()].concat();
    f.send(8, &p).unwrap();
    // From here on our frames are epoch 1.
    f.mac = derive("relink v1 2026-11 c2s mac", &chain1);
    f.epoch = 1;
    let mut ack = 0u64.to_le_bytes().to_vec();
    ack.extend(1u32.to_le_bytes());
    ack.push(0);
    f.send(2, &ack).unwrap();
    let replies: Vec<u32> = f
        .frames()
        .iter()
        .filter(|(t, _)| *t == 7)
        .map(|(_, p)| u32::from_le_bytes(p[..4].try_into().unwrap()))
        .collect();
    assert!(!f.aborted_with_violation(), "{:?}", f.frames());
    assert_eq!(replies, vec![1, 2], "the kept INIT 2 answered");
    let p = [&2u32.to_le_bytes()[..], &(NOW + 1000).to_le_bytes()].concat();
    f.send(8, &p).unwrap();
    let rekeyed: Vec<u32> = f
        .events()
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Rekeyed { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect();
    assert_eq!(rekeyed, vec![1, 2]);
    assert_eq!(f.server.epoch(sid), Some(2));
    assert!(!f.aborted_with_violation());
}

/// 7.8: once exchange 1 completed (the server saw our SWITCH and an ACK
/// with rx_epoch 1), `resume_key(0)` is gone: a resume MACed with it fails
/// authentication, as do epochs the server never derived; an ACK whose
/// rx_epoch goes back down ends the transport. Control: epoch 1 resumes.
#[test]
fn retired_epochs_neither_resume_nor_ack() {
    for case in 0..5 {
        let mut f = Forger::new();
        let sid = f.sid.unwrap();
        let conn_id = f.server.conn_id(sid).unwrap();
        let s1 = [9u8; 32];
        let _ = f.send(6, &init(1, 0, &public(s1)));
        let sp1 = reply_public(&f);
        let ee = x25519_dalek::x25519(s1, sp1);
        let rth = hash(&[&1u32.to_le_bytes()[..], &public(s1), &sp1].concat());
        let chain1 = derive(
            "relink v2 2026-12 rekey chain",
            &[&f.master[..], &ee, &rth].concat(),
        );
        let p = [&1u32.to_le_bytes()[..], &(NOW + 1000).to_le_bytes()].concat();
        f.send(8, &p).unwrap();
        f.mac = derive("relink v1 2026-11 c2s mac", &chain1);
        f.epoch = 1;
        let ack = |e: u32| [&0u64.to_le_bytes()[..], &e.to_le_bytes(), &[0]].concat();
        f.send(2, &ack(1)).unwrap();
        if case == 4 {
            let r = f.send(2, &ack(0));
            let ended = r.is_err()
                || f.events()
                    .iter()
                    .any(|e| matches!(e, ServerEvent::CloseTransport { .. }));
            assert!(ended, "ACK rx_epoch 1 then 0: {r:?}");
            continue;
        }
        let k0 = derive("relink v1 2026-11 resume", &f.master);
        let k1 = derive("relink v1 2026-11 resume", &chain1);
        let (rx, key, ok) = match case {
            0 => (1u32, k1, true),
            1 => (0, k0, false),
            2 => (0, k1, false),
            _ => (2, k1, false),
        };
        let now = Instant::from_micros(NOW + 2000);
        f.server.transport_lost(f.tid, now);
        let _ = f.events();
        let t2 = f.server.accept(now).unwrap();
        let r = f
            .server
            .handle_input(t2, now, &resume_request(conn_id, 0, rx, &key));
        let ev = f.events();
        let auth_failed = ev
            .iter()
            .any(|e| matches!(e, ServerEvent::AuthFailed { .. }));
        if ok {
            assert!(r.is_ok() && !auth_failed, "epoch 1 resumes: {r:?} {ev:?}");
        } else {
            assert!(r.is_err() && auth_failed, "case {case}: {r:?} {ev:?}");
        }
    }
}
