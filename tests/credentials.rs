//! Client credentials and tokens (PROTOCOL.md 6.9, 4.8), over the
//! in-memory harness: the server decides on every session before any
//! application byte flows; a rejected session delivers nothing either way;
//! tokens are bound to the server's static key and expire.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use relink::wire::{
    FrameHeader, FrameType, CLIENT_CONFIRM_LEN, CLIENT_HELLO_LEN, SERVER_HELLO_LEN,
};
use relink::{
    AbortCode, ByteRange, ClientCredential, CloseReason, Config, Credential, Duration, Error,
    Event, ServerEvent, SessionId, StaticKeypair, TokenGrant, UnixTime, WallClock,
};
use relink_test_support::harness::{Net, T0};

const SECRET: &[u8] = b"alice:correct horse";
const HOUR: Duration = Duration::from_secs(3600);

/// A wall clock the test moves.
struct ManualClock(AtomicU64);

impl WallClock for ManualClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.0.load(Ordering::SeqCst))
    }
}

fn manual_clock(at: u64) -> Arc<ManualClock> {
    Arc::new(ManualClock(AtomicU64::new(at)))
}

fn key(seed: u8) -> StaticKeypair {
    StaticKeypair::from_secret_bytes([seed; 32])
}

fn server_cfg(kp: Option<&StaticKeypair>) -> Config {
    Config {
        client_auth: true,
        server_static: kp.cloned(),
        ..Config::default()
    }
}

fn client_cfg(kp: Option<&StaticKeypair>, cred: Option<Credential>) -> Config {
    Config {
        pinned_server_key: kp.map(StaticKeypair::public_key),
        credential: cred,
        ..Config::default()
    }
}

/// `ccfg` reading the same wall clock as the server (`scfg`): the hello's
/// time is then fresh whatever the test does to that clock.
fn same_clock(mut ccfg: Config, scfg: &Config) -> Config {
    ccfg.wall_clock = scfg.wall_clock.clone();
    ccfg
}

/// A pinned pair whose client presents `cred`.
fn net(seed: u64, cred: Option<Credential>) -> Net {
    let kp = key(7);
    Net::new(seed, client_cfg(Some(&kp), cred), server_cfg(Some(&kp)))
}

fn client_auths(net: &Net) -> Vec<SessionId> {
    net.sev
        .iter()
        .filter_map(|e| match e {
            ServerEvent::ClientAuth { session, .. } => Some(*session),
            _ => None,
        })
        .collect()
}

fn accepted_events(net: &Net) -> Vec<bool> {
    net.cev
        .iter()
        .filter_map(|e| match e {
            Event::Accepted { token } => Some(*token),
            _ => None,
        })
        .collect()
}

/// Step until the server reported `ClientAuth` (panics after 200 steps).
fn until_client_auth(net: &mut Net) -> SessionId {
    for _ in 0..200 {
        net.step();
        if let Some(s) = client_auths(net).first() {
            return *s;
        }
    }
    panic!("no ClientAuth: {:?} {:?}", net.cev, net.sev);
}

fn client_closed(net: &Net) -> Option<CloseReason> {
    net.cev.iter().find_map(|e| match e {
        Event::Closed { reason } => Some(*reason),
        _ => None,
    })
}

fn server_closed(net: &Net, sid: SessionId) -> Option<CloseReason> {
    net.sev.iter().find_map(|e| match e {
        ServerEvent::Closed { session, reason } if *session == sid => Some(*reason),
        _ => None,
    })
}

/// Every frame type in a stream of frames.
fn frame_types(bytes: &[u8]) -> Vec<FrameType> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 <= bytes.len() {
        let h = FrameHeader::decode(&[bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]])
            .expect("frame header");
        out.push(h.frame_type);
        i += h.wire_len();
    }
    assert_eq!(i, bytes.len(), "a partial frame");
    out
}

/// What went over the wire each way since the transport opened.
#[derive(Default)]
struct Wire {
    c2s: Vec<u8>,
    s2c: Vec<u8>,
}

/// One flush step that records the bytes on the wire.
fn step_recorded(net: &mut Net, wire: &mut Wire) {
    net.tick(Duration::from_millis(1));
    let (c, s) = (net.c2s.len(), net.s2c.len());
    net.transmit();
    wire.c2s.extend_from_slice(&net.c2s[c..]);
    wire.s2c.extend_from_slice(&net.s2c[s..]);
    net.deliver(u64::MAX);
    net.server_read();
    net.client_read();
    net.timers();
}

#[test]
fn accepted_client_sees_its_exact_bytes_then_data_flows() {
    let mut net = net(1, Some(Credential::Secret(SECRET.to_vec())));
    net.open_transport();
    let sid = until_client_auth(&mut net);
    assert_eq!(
        net.server.client_credential(sid),
        Some(ClientCredential::Secret(SECRET))
    );
    assert!(!net.server.is_accepted(sid));
    assert!(!net.client.is_accepted());
    // Both applications write before the decision: nothing moves yet.
    assert_eq!(net.client_write(5000), 5000);
    assert_eq!(net.server_write(3000), 3000);
    net.settle(50);
    assert_eq!(net.up_read(), 0);
    assert_eq!(net.down[&0].read, 0);
    net.server.accept_client(sid, None).unwrap();
    assert_eq!(net.server.client_credential(sid), None, "decided");
    assert_eq!(
        net.server.accept_client(sid, None),
        Err(Error::InvalidState),
        "one decision"
    );
    net.settle(200);
    assert!(net.client.is_accepted() && net.server.is_accepted(sid));
    assert_eq!(accepted_events(&net), vec![false]);
    assert_eq!(net.client.take_token(), None);
    assert_eq!(net.up_read(), 5000);
    assert_eq!(net.down[&0].read, 3000);
    assert_eq!(client_auths(&net).len(), 1);
    net.assert_no_violations();
}

#[test]
fn client_without_credential_presents_none() {
    let mut net = net(2, None);
    net.open_transport();
    let sid = until_client_auth(&mut net);
    assert_eq!(
        net.server.client_credential(sid),
        Some(ClientCredential::None)
    );
}

#[test]
fn server_that_does_not_ask_never_sees_the_credential() {
    let kp = key(7);
    let mut scfg = server_cfg(Some(&kp));
    scfg.client_auth = false;
    let mut net = Net::new(
        3,
        client_cfg(Some(&kp), Some(Credential::Secret(SECRET.to_vec()))),
        scfg,
    );
    let sid = net.handshake();
    assert!(net.client.is_accepted() && net.server.is_accepted(sid));
    assert!(client_auths(&net).is_empty());
    assert!(accepted_events(&net).is_empty());
    assert_eq!(net.server.client_credential(sid), None);
    net.client_write(100);
    net.settle(100);
    assert_eq!(net.up_read(), 100);
}

/// Reject with `code`; both sides wrote before the decision. Returns the
/// bytes on the wire after the handshake messages.
fn rejected_session(seed: u64, code: AbortCode) -> (Net, SessionId, Wire) {
    let mut net = net(seed, Some(Credential::Secret(b"mallory:guess".to_vec())));
    net.open_transport();
    let mut wire = Wire::default();
    let sid = loop {
        step_recorded(&mut net, &mut wire);
        if let Some(s) = client_auths(&net).first() {
            break *s;
        }
        assert!(wire.c2s.len() < 100_000, "no ClientAuth");
    };
    assert_eq!(net.client_write(4000), 4000);
    assert_eq!(net.server_write(4000), 4000);
    net.client.close();
    net.server.close(sid).unwrap();
    for _ in 0..20 {
        step_recorded(&mut net, &mut wire);
    }
    net.server.reject_client(sid, code).unwrap();
    for _ in 0..100 {
        step_recorded(&mut net, &mut wire);
    }
    (net, sid, wire)
}

#[test]
fn rejected_with_code_5_delivers_no_byte_either_way() {
    let (net, sid, wire) = rejected_session(4, AbortCode::CREDENTIAL_REJECTED);
    assert_eq!(
        client_closed(&net),
        Some(CloseReason::Rejected {
            code: AbortCode::CREDENTIAL_REJECTED
        })
    );
    assert_eq!(
        server_closed(&net, sid),
        Some(CloseReason::Aborted {
            code: AbortCode::CREDENTIAL_REJECTED,
            by_peer: false
        })
    );
    // Nothing readable on either side, nothing read.
    assert_eq!(net.client.readable(), 0);
    assert_eq!(net.server.readable(sid), 0);
    assert_eq!(net.up_read(), 0);
    assert_eq!(net.down[&0].read, 0);
    // Nothing this side wrote is in doubt: none of it left.
    assert_eq!(net.client.in_doubt(), Some(ByteRange::default()));
    assert!(!net
        .sev
        .iter()
        .any(|e| matches!(e, ServerEvent::InDoubt { .. })));
    // No DATA and no CLOSE frame on the wire, either way.
    let up = frame_types(&wire.c2s[CLIENT_HELLO_LEN + CLIENT_CONFIRM_LEN..]);
    let down = frame_types(&wire.s2c[SERVER_HELLO_LEN..]);
    for t in up.iter().chain(&down) {
        assert!(
            !matches!(t, FrameType::Data | FrameType::Close),
            "{t:?} on the wire: up {up:?} down {down:?}"
        );
    }
    assert_eq!(up.first(), Some(&FrameType::Credential), "{up:?}");
    assert!(down.contains(&FrameType::Abort) && up.contains(&FrameType::Abort));
    assert!(!down.contains(&FrameType::Accept));
    // The application learns why, and its calls fail.
    let mut net = net;
    assert_eq!(
        net.client.send(b"x"),
        Err(Error::Aborted(AbortCode::CREDENTIAL_REJECTED))
    );
    net.assert_no_violations();
}

#[test]
fn rejected_with_an_application_code() {
    let code = AbortCode(AbortCode::APPLICATION_MIN + 0x42);
    let (net, sid, wire) = rejected_session(5, code);
    assert_eq!(client_closed(&net), Some(CloseReason::Rejected { code }));
    assert_eq!(
        server_closed(&net, sid),
        Some(CloseReason::Aborted {
            code,
            by_peer: false
        })
    );
    assert!(!frame_types(&wire.s2c[SERVER_HELLO_LEN..]).contains(&FrameType::Data));
    assert_eq!(net.up_read() + net.down[&0].read, 0);
}

#[test]
fn data_before_accept_is_a_protocol_violation() {
    let mut net = net(6, Some(Credential::Secret(SECRET.to_vec())));
    // A client that ignores the gate (test hook): its DATA verifies but
    // comes before the ACCEPT.
    net.client.set_ignore_gate_for_test(true);
    net.client_write(100);
    net.open_transport();
    net.settle(200);
    let sid = net.session.expect("session");
    assert_eq!(
        server_closed(&net, sid),
        Some(CloseReason::Aborted {
            code: AbortCode::PROTOCOL_VIOLATION,
            by_peer: false
        })
    );
    assert_eq!(
        client_closed(&net),
        Some(CloseReason::Rejected {
            code: AbortCode::PROTOCOL_VIOLATION
        })
    );
    assert_eq!(net.server.readable(sid), 0);
    assert_eq!(net.up_read(), 0);
    assert_eq!(
        net.server.accept_client(sid, None),
        Err(Error::InvalidState)
    );
}

/// Hello to the server, ServerHello to the client, then the client's
/// second flight (ClientConfirm and CREDENTIAL) into `c2s`, undelivered.
fn second_flight(net: &mut Net) {
    net.transmit();
    net.deliver(u64::MAX);
    net.transmit();
    net.deliver(u64::MAX);
    assert!(net.client.is_connected());
    net.transmit();
}

#[test]
fn no_credential_within_handshake_timeout_is_rejected() {
    let mut net = net(7, Some(Credential::Secret(SECRET.to_vec())));
    net.open_transport();
    // The client's second flight is ClientConfirm + CREDENTIAL: only the
    // confirm arrives.
    second_flight(&mut net);
    assert!(net.c2s.len() > CLIENT_CONFIRM_LEN);
    net.c2s.truncate(CLIENT_CONFIRM_LEN);
    net.deliver(u64::MAX);
    // Nothing more of the client arrives (a frame missing in the middle
    // would fail the next one's tag instead).
    net.c2s_blackhole = true;
    let sid = net.session.expect("confirmed");
    let deadline = net
        .server
        .connection(sid)
        .unwrap()
        .timer(relink::timer::Timer::Credential)
        .expect("credential timer");
    assert_eq!(
        deadline,
        T0.saturating_add(Config::default().handshake_timeout)
    );
    // The server's idle timeout (15 s) is later.
    for _ in 0..11 {
        net.tick(Duration::from_secs(1));
        net.transmit();
        net.deliver(u64::MAX);
        net.timers();
    }
    net.settle(50);
    assert!(client_auths(&net).is_empty());
    assert_eq!(
        client_closed(&net),
        Some(CloseReason::Rejected {
            code: AbortCode::CREDENTIAL_REJECTED
        })
    );
}

#[test]
fn credential_after_a_lost_client_confirm_arrives_by_the_resume() {
    let mut net = net(8, Some(Credential::Secret(SECRET.to_vec())));
    net.open_transport();
    second_flight(&mut net);
    // ClientConfirm and CREDENTIAL are lost with the transport.
    net.c2s.clear();
    net.brk();
    assert!(net.session.is_none());
    assert!(net.client.conn_id().is_some());
    assert!(net.reconnect());
    let sid = until_client_auth(&mut net);
    assert_eq!(
        net.server.client_credential(sid),
        Some(ClientCredential::Secret(SECRET))
    );
    net.server.accept_client(sid, None).unwrap();
    net.client_write(700);
    net.settle(200);
    assert_eq!(accepted_events(&net), vec![false]);
    assert_eq!(client_auths(&net).len(), 1);
    assert_eq!(net.up_read(), 700);
}

#[test]
fn break_between_credential_and_accept() {
    let mut net = net(9, Some(Credential::Secret(SECRET.to_vec())));
    net.open_transport();
    let sid = until_client_auth(&mut net);
    net.brk();
    // Decided while the session has no transport; the ACCEPT waits.
    net.server.accept_client(sid, None).unwrap();
    assert!(net.reconnect());
    net.client_write(300);
    net.server_write(200);
    net.settle(300);
    // The client re-sent its CREDENTIAL on the new link: ignored.
    assert_eq!(client_auths(&net), vec![sid]);
    assert_eq!(accepted_events(&net), vec![false]);
    assert_eq!((net.up_read(), net.down[&0].read), (300, 200));
    net.assert_no_violations();
}

#[test]
fn break_between_accept_and_its_ack() {
    let mut net = net(10, Some(Credential::Secret(SECRET.to_vec())));
    net.open_transport();
    let sid = until_client_auth(&mut net);
    net.server.accept_client(sid, None).unwrap();
    // The ACCEPT reaches the client; its ACK (ACCEPTED) is lost.
    net.transmit();
    net.deliver(u64::MAX);
    assert!(net.client.is_accepted());
    net.transmit();
    net.c2s.clear();
    net.brk();
    assert!(net.reconnect());
    net.client_write(400);
    net.server_write(100);
    net.settle(300);
    assert_eq!(client_auths(&net).len(), 1);
    assert_eq!(
        accepted_events(&net),
        vec![false],
        "one Accepted: {:?}",
        net.cev
    );
    assert_eq!((net.up_read(), net.down[&0].read), (400, 100));
    // After the ACK with ACCEPTED the server stops re-sending ACCEPT.
    let mut wire = Wire::default();
    net.brk();
    assert!(net.reconnect());
    for _ in 0..30 {
        step_recorded(&mut net, &mut wire);
    }
    assert!(
        !frame_types(&wire.s2c[relink::wire::RESUME_RESPONSE_LEN..]).contains(&FrameType::Accept)
    );
    net.assert_no_violations();
}

#[test]
fn credential_never_in_debug_output() {
    let secret = b"zebra:hunter2-very-secret";
    let mut net = net(11, Some(Credential::Secret(secret.to_vec())));
    net.open_transport();
    let sid = until_client_auth(&mut net);
    let cred = net.server.client_credential(sid).unwrap();
    let texts = [
        format!("{:?}", net.ccfg),
        format!("{:?}", net.ccfg.credential),
        format!("{:?}", net.client),
        format!("{:?}", net.server.connection(sid).unwrap()),
        format!("{cred:?}"),
        format!("{:?} {:?}", net.cev, net.sev),
        format!("{:?}", Credential::Token(secret.to_vec())),
    ];
    let as_bytes = format!("{:?}", &secret[..4])
        .trim_end_matches(']')
        .to_string();
    for t in texts {
        assert!(!t.contains("hunter2") && !t.contains("zebra"), "{t}");
        assert!(!t.contains(&as_bytes), "{t}");
    }
}

#[test]
fn oversized_credential_is_never_sent() {
    let mut net = net(23, Some(Credential::Secret(vec![b'x'; 513])));
    assert!(!net.open(), "the client refuses to start");
    assert_eq!(
        client_closed(&net),
        Some(CloseReason::Error(Error::TooLong))
    );
    assert!(net.sev.is_empty());
}

#[test]
fn credential_budget_counts_attached_time_only() {
    let mut net = net(24, Some(Credential::Secret(SECRET.to_vec())));
    net.open_transport();
    second_flight(&mut net);
    net.c2s.truncate(CLIENT_CONFIRM_LEN);
    net.deliver(u64::MAX);
    let sid = net.session.expect("confirmed");
    let timer = |net: &Net| {
        net.server
            .connection(sid)
            .unwrap()
            .timer(relink::timer::Timer::Credential)
    };
    // 4 s attached, then the transport breaks: no deadline while detached.
    net.tick(Duration::from_secs(4));
    net.brk();
    assert_eq!(timer(&net), None);
    // A minute without a transport costs nothing of the budget.
    net.tick(Duration::from_secs(60));
    let back = net.now();
    assert!(net.reconnect());
    // The resume request attaches the session (the CREDENTIAL follows
    // only after the client read the answer).
    net.transmit();
    net.deliver(u64::MAX);
    assert_eq!(
        timer(&net),
        Some(back.saturating_add(Duration::from_secs(6))),
        "10 s budget, 4 s used"
    );
}

// ----- tokens ---------------------------------------------------------------

/// Accept `net`'s client with a token for `identity`; returns the token.
fn grant(net: &mut Net, identity: &[u8], lifetime: Duration) -> Vec<u8> {
    net.open_transport();
    let sid = until_client_auth(net);
    net.server
        .accept_client(sid, Some(TokenGrant { identity, lifetime }))
        .unwrap();
    net.settle(200);
    assert_eq!(accepted_events(net), vec![true]);
    let token = net.client.take_token().expect("token");
    assert_eq!(net.client.take_token(), None, "taken once");
    token
}

#[test]
fn token_round_trip() {
    let kp = key(7);
    let clock = manual_clock(1_900_000_000_000_000);
    let mut scfg = server_cfg(Some(&kp));
    scfg.wall_clock = Some(clock.clone());
    let mut first = Net::new(
        12,
        same_clock(
            client_cfg(Some(&kp), Some(Credential::Secret(SECRET.to_vec()))),
            &scfg,
        ),
        scfg.clone(),
    );
    let token = grant(&mut first, b"alice", HOUR);
    assert!(!token.windows(5).any(|w| w == b"alice"));
    // A later session (another server process with the same key)
    // presents the token instead of the secret.
    clock.0.fetch_add(60_000_000, Ordering::SeqCst);
    let mut second = Net::new(
        13,
        same_clock(client_cfg(Some(&kp), Some(Credential::Token(token))), &scfg),
        scfg,
    );
    second.open_transport();
    let sid = until_client_auth(&mut second);
    assert_eq!(
        second.server.client_credential(sid),
        Some(ClientCredential::Token {
            identity: b"alice",
            issued_at: UnixTime(1_900_000_000_000_000),
            expires_at: UnixTime(1_900_000_000_000_000 + HOUR.as_micros()),
        })
    );
    second.server.accept_client(sid, None).unwrap();
    second.client_write(10);
    second.settle(100);
    assert_eq!(second.up_read(), 10);
}

/// A client pinning `kp` presents `token` to a server with config `scfg`;
/// the harness runs until quiet.
fn present_token(seed: u64, kp: Option<&StaticKeypair>, scfg: Config, token: Vec<u8>) -> Net {
    let ccfg = same_clock(client_cfg(kp, Some(Credential::Token(token))), &scfg);
    let mut net = Net::new(seed, ccfg, scfg);
    net.open_transport();
    net.settle(300);
    net
}

#[test]
fn token_from_another_server_key_is_refused() {
    let mut first = net(14, Some(Credential::Secret(SECRET.to_vec())));
    let token = grant(&mut first, b"alice", HOUR);
    let other = key(8);
    let net = present_token(15, Some(&other), server_cfg(Some(&other)), token);
    assert!(
        client_auths(&net).is_empty(),
        "refused before the application"
    );
    assert_eq!(
        client_closed(&net),
        Some(CloseReason::Rejected {
            code: AbortCode::TOKEN_INVALID
        })
    );
}

#[test]
fn expired_token_is_refused() {
    let kp = key(7);
    let clock = manual_clock(2_000_000_000_000_000);
    let mut scfg = server_cfg(Some(&kp));
    scfg.wall_clock = Some(clock.clone());
    let mut first = Net::new(
        16,
        same_clock(
            client_cfg(Some(&kp), Some(Credential::Secret(SECRET.to_vec()))),
            &scfg,
        ),
        scfg.clone(),
    );
    let token = grant(&mut first, b"alice", HOUR);
    // One microsecond past expires_at.
    clock.0.fetch_add(HOUR.as_micros() + 1, Ordering::SeqCst);
    let net = present_token(17, Some(&kp), scfg.clone(), token.clone());
    assert!(client_auths(&net).is_empty());
    assert_eq!(
        client_closed(&net),
        Some(CloseReason::Rejected {
            code: AbortCode::TOKEN_EXPIRED
        })
    );
    // At expires_at exactly it was still good.
    clock.0.fetch_sub(1, Ordering::SeqCst);
    let net = present_token(18, Some(&kp), scfg, token);
    assert_eq!(client_auths(&net).len(), 1);
}

#[test]
fn server_without_static_key_issues_and_accepts_no_tokens() {
    let mut first = net(19, Some(Credential::Secret(SECRET.to_vec())));
    let token = grant(&mut first, b"alice", HOUR);
    // Anonymous server: refuses every token.
    let net = present_token(20, None, server_cfg(None), token);
    assert_eq!(
        client_closed(&net),
        Some(CloseReason::Rejected {
            code: AbortCode::TOKEN_INVALID
        })
    );
    // And cannot grant one.
    let mut anon = Net::new(
        21,
        client_cfg(None, Some(Credential::Secret(SECRET.to_vec()))),
        server_cfg(None),
    );
    anon.open_transport();
    let sid = until_client_auth(&mut anon);
    let g = TokenGrant {
        identity: b"alice",
        lifetime: HOUR,
    };
    assert_eq!(
        anon.server.accept_client(sid, Some(g)),
        Err(Error::NoStaticKey)
    );
    // Nothing changed: accepting without a token still works.
    assert!(!anon.server.is_accepted(sid));
    anon.server.accept_client(sid, None).unwrap();
    anon.settle(100);
    assert_eq!(accepted_events(&anon), vec![false]);
}

#[test]
fn token_identity_longer_than_256_bytes_is_refused() {
    let mut net = net(22, Some(Credential::Secret(SECRET.to_vec())));
    net.open_transport();
    let sid = until_client_auth(&mut net);
    let long = [b'a'; 257];
    let g = TokenGrant {
        identity: &long,
        lifetime: HOUR,
    };
    assert_eq!(net.server.accept_client(sid, Some(g)), Err(Error::TooLong));
    assert_eq!(
        net.server.client_credential(sid),
        Some(ClientCredential::Secret(SECRET))
    );
}

// ----- drivers ------------------------------------------------------------------

mod drivers {
    use std::io::{Read, Write};

    use relink::blocking::{ClientBuilder, Decision, ListenerBuilder};
    use relink::{AbortCode, ClientCredential, Config, Credential, Duration, StaticKeypair};

    fn decide(c: &ClientCredential<'_>) -> Decision {
        match c {
            ClientCredential::Secret(b"alice:pw") => {
                Decision::Accept(Some((b"alice".to_vec(), Duration::from_secs(60))))
            }
            ClientCredential::Token {
                identity: b"alice", ..
            } => Decision::Accept(None),
            _ => Decision::Reject(AbortCode::CREDENTIAL_REJECTED),
        }
    }

    fn client_cfg(kp: &StaticKeypair, cred: Credential) -> Config {
        Config {
            pinned_server_key: Some(kp.public_key()),
            credential: Some(cred),
            ..Config::default()
        }
    }

    /// New-user trial: a token of the wrong length (a garbage token file)
    /// made `connect` wait forever without a word. Both drivers' builders
    /// now refuse it at once, saying what and why (never the bytes), and
    /// connect to nothing (the address below has no listener).
    #[test]
    fn a_credential_that_cannot_be_sent_fails_the_builder_at_once() {
        let kp = StaticKeypair::from_secret_bytes([3; 32]);
        let addr = "127.0.0.1:9"; // discard port: nothing must be tried
        for (cred, what) in [
            (
                Credential::Token(b"garbage\n".to_vec()),
                "the token is 8 bytes",
            ),
            (Credential::Token(vec![7; 3000]), "the token is 3000 bytes"),
            (Credential::Secret(Vec::new()), "the credential is 0 bytes"),
            (
                Credential::Secret(vec![7; 513]),
                "the credential is 513 bytes",
            ),
        ] {
            assert!(!cred.is_valid());
            let e = ClientBuilder::new(client_cfg(&kp, cred.clone()))
                .connect(addr)
                .unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains(what), "{e}");
            assert!(!e.to_string().contains("garbage"), "never the bytes: {e}");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let e = rt
                .block_on(relink::tokio::ClientBuilder::new(client_cfg(&kp, cred)).connect(addr))
                .unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains(what), "{e}");
        }
    }

    #[test]
    fn blocking_accepts_grants_and_refuses() {
        let kp = StaticKeypair::from_secret_bytes([3; 32]);
        let listener = ListenerBuilder::new(Config {
            server_static: Some(kp.clone()),
            ..Config::default()
        })
        .authenticate(decide)
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = listener.local_addr();
        let server = std::thread::spawn(move || {
            // Only accepted sessions come out of accept: two of them.
            let mut got = Vec::new();
            for _ in 0..2 {
                let mut s = listener.accept().unwrap();
                let mut b = Vec::new();
                s.read_to_end(&mut b).unwrap();
                s.close().unwrap();
                got.push(b);
            }
            got
        });
        // Refused: the connect fails, naming the address and the code.
        let e = ClientBuilder::new(client_cfg(&kp, Credential::Secret(b"alice:nope".to_vec())))
            .connect(addr)
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&addr.to_string()) && msg.contains("code 5"),
            "{msg}"
        );
        // Accepted, with a token.
        let mut c = ClientBuilder::new(client_cfg(&kp, Credential::Secret(b"alice:pw".to_vec())))
            .connect(addr)
            .unwrap();
        let token = c.token().expect("token granted");
        c.write_all(b"one").unwrap();
        c.close().unwrap();
        // The token alone opens the next session.
        let mut c = ClientBuilder::new(client_cfg(&kp, Credential::Token(token)))
            .connect(addr)
            .unwrap();
        assert_eq!(c.token(), None);
        c.write_all(b"two").unwrap();
        c.close().unwrap();
        assert_eq!(
            server.join().unwrap(),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
    }

    #[test]
    fn tokio_refuses_with_permission_denied() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let kp = StaticKeypair::from_secret_bytes([4; 32]);
            let listener = relink::tokio::ListenerBuilder::new(Config {
                server_static: Some(kp.clone()),
                ..Config::default()
            })
            .authenticate(decide)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let mut s = listener.accept().await.unwrap();
                let mut b = Vec::new();
                s.read_to_end(&mut b).await.unwrap();
                s.shutdown().await.unwrap();
                b
            });
            let e = relink::tokio::ClientBuilder::new(client_cfg(
                &kp,
                Credential::Secret(b"mallory:x".to_vec()),
            ))
            .connect(addr)
            .await
            .unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
            let mut c = relink::tokio::ClientBuilder::new(client_cfg(
                &kp,
                Credential::Secret(b"alice:pw".to_vec()),
            ))
            .connect(addr)
            .await
            .unwrap();
            assert!(c.token().is_some());
            c.write_all(b"hi").await.unwrap();
            c.shutdown().await.unwrap();
            assert_eq!(server.await.unwrap(), b"hi");
        });
    }
}
