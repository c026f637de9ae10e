//! Man in the middle and pinned server keys (issue #2, acceptance 3).
//!
//! A relaying man in the middle runs its own `Server` toward the victim
//! client and its own `Client` toward the real server, and copies the
//! plaintext between the two sessions. Against a client that pins the real
//! server's static key it cannot complete the handshake: the client reports
//! `AuthFailed` and nothing reaches either application. Without pinning the
//! same relay succeeds and reads everything: the documented limitation of the
//! anonymous mode. Cruder attacks that substitute ephemeral keys in transit
//! fail too, and a client pinning a server that has no static key is
//! refused with `HandshakeRejected(NoStaticKey)`.
//!
//! Since issue 9 a server registers a session when it sends its ServerHello
//! (so that a lost ClientConfirm does not cost a young session). A failed
//! handshake therefore leaves an unconfirmed session on the server that
//! answered: counted by `session_count`, never reported to its application
//! (no `HandshakeDone`, nothing readable), expiring silently after
//! `resume_timeout`. The tests assert exactly that.
//!
//! Issue 9, section 1: an on-path attacker that cuts a pinned client's
//! transport and answers its resume with a forged "unknown session" cannot
//! end the session (the genuine answer carries the session's reset token,
//! which only the real server's static key yields) and so cannot make the
//! client send its bytes twice.

mod common;
mod support_c;

use common::rng;
use relink::wire::{CLIENT_HELLO_LEN, SERVER_HELLO_LEN, VERSION};
use relink::{
    Client, CloseReason, Config, Duration, Error, Event, HandshakeStatus, Instant, Server,
    ServerEvent, SessionId, StaticKeypair, TransportId,
};
use support_c::*;

const T0: Instant = Instant::from_micros(5_000_000);
const SECRET: &[u8] = b"the victim's secret: 4716-1234-5678-9012";
const REPLY: &[u8] = b"the real server's answer";

/// The real server's long-term key.
fn real_key() -> StaticKeypair {
    StaticKeypair::from_secret_bytes([0x11; 32])
}

/// The man in the middle's own long-term key.
fn mitm_key() -> StaticKeypair {
    StaticKeypair::from_secret_bytes([0x66; 32])
}

fn server_config(key: Option<StaticKeypair>) -> Config {
    Config {
        server_static: key,
        ..Config::default()
    }
}

fn client_config(pinned: Option<[u8; 32]>) -> Config {
    Config {
        pinned_server_key: pinned,
        ..Config::default()
    }
}

/// victim ⇄ (mitm_server | mitm_client) ⇄ real server.
struct Relay {
    victim: TestClient,
    mitm_server: TestServer,
    mitm_client: TestClient,
    real: TestServer,
    /// Victim ⇄ MITM.
    a: TransportId,
    /// MITM ⇄ real server.
    b: TransportId,
    now: Instant,
    /// What the victim's `handle_input` returned when it failed.
    victim_error: Option<Error>,
    victim_events: Vec<Event>,
    /// The MITM's session with the victim.
    mitm_session: Option<SessionId>,
    /// The real server's session (with the MITM's client).
    real_session: Option<SessionId>,
    /// Plaintext the MITM read from the victim.
    mitm_read: Vec<u8>,
    /// Plaintext the real server's application received.
    real_read: Vec<u8>,
    /// Plaintext the victim received.
    victim_read: Vec<u8>,
}

impl Relay {
    fn new(victim_pins: Option<[u8; 32]>, mitm_key: Option<StaticKeypair>) -> Relay {
        let mut victim = Client::new(client_config(victim_pins), rng(1));
        let mut mitm_server = Server::new(server_config(mitm_key), rng(2));
        // The MITM knows the real server's public key and may pin it.
        let mut mitm_client = Client::new(client_config(Some(real_key().public_key())), rng(3));
        let mut real = Server::new(server_config(Some(real_key())), rng(4));
        let a = mitm_server.accept(T0).unwrap();
        let b = real.accept(T0).unwrap();
        victim.new_transport(T0).unwrap();
        mitm_client.new_transport(T0).unwrap();
        assert_eq!(victim.send(SECRET), Ok(SECRET.len()));
        Relay {
            victim,
            mitm_server,
            mitm_client,
            real,
            a,
            b,
            now: T0,
            victim_error: None,
            victim_events: Vec::new(),
            mitm_session: None,
            real_session: None,
            mitm_read: Vec::new(),
            real_read: Vec::new(),
            victim_read: Vec::new(),
        }
    }

    fn step(&mut self) {
        self.now = self.now.saturating_add(Duration::from_micros(100));
        let now = self.now;
        // Victim ⇄ MITM.
        let up = client_tx(&mut self.victim, now);
        if !up.is_empty() {
            let _ = self.mitm_server.handle_input(self.a, now, &up);
        }
        let down = server_tx(&mut self.mitm_server, self.a, now);
        if !down.is_empty() && self.victim_error.is_none() {
            if let Err(e) = self.victim.handle_input(now, &down) {
                self.victim_error = Some(e);
            }
        }
        // MITM ⇄ real server.
        let up = client_tx(&mut self.mitm_client, now);
        if !up.is_empty() {
            self.real
                .handle_input(self.b, now, &up)
                .expect("real server");
        }
        let down = server_tx(&mut self.real, self.b, now);
        if !down.is_empty() {
            self.mitm_client
                .handle_input(now, &down)
                .expect("mitm client");
        }
        // Events.
        self.victim_events.extend(client_events(&mut self.victim));
        client_events(&mut self.mitm_client);
        for e in server_events(&mut self.mitm_server) {
            if let ServerEvent::HandshakeDone { session, .. } = e {
                self.mitm_session = Some(session);
            }
        }
        for e in server_events(&mut self.real) {
            if let ServerEvent::HandshakeDone { session, .. } = e {
                self.real_session = Some(session);
                assert_eq!(self.real.send(session, REPLY), Ok(REPLY.len()));
            }
        }
        // The MITM copies plaintext both ways and keeps a copy.
        if let Some(ms) = self.mitm_session {
            let up = server_recv_all(&mut self.mitm_server, ms);
            self.mitm_read.extend_from_slice(&up);
            if !up.is_empty() {
                assert_eq!(self.mitm_client.send(&up), Ok(up.len()));
            }
            let down = client_recv_all(&mut self.mitm_client);
            if !down.is_empty() {
                assert_eq!(self.mitm_server.send(ms, &down), Ok(down.len()));
            }
        }
        if let Some(rs) = self.real_session {
            self.real_read.extend(server_recv_all(&mut self.real, rs));
        }
        self.victim_read.extend(client_recv_all(&mut self.victim));
    }

    fn run(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.step();
        }
    }
}

/// Without pinning, a relaying man in the middle completes both handshakes
/// and reads the victim's plaintext: anonymous mode protects only against
/// passive eavesdroppers. The two sessions have different connection ids.
#[test]
fn unpinned_client_is_open_to_a_relaying_mitm() {
    let mut r = Relay::new(None, None);
    r.run(50);
    assert_eq!(r.victim_error, None);
    assert!(r.victim.is_connected());
    let victim_id = r.victim.conn_id().expect("victim completed its handshake");
    assert!(r
        .victim_events
        .contains(&Event::HandshakeDone { conn_id: victim_id }));
    assert_eq!(r.mitm_read, SECRET, "the MITM reads the plaintext");
    assert_eq!(r.real_read, SECRET, "and relays it unnoticed");
    assert_eq!(r.victim_read, REPLY, "the answer comes back through it");
    let real_id = r.real.conn_id(r.real_session.unwrap()).unwrap();
    let mitm_id = r.mitm_server.conn_id(r.mitm_session.unwrap()).unwrap();
    assert_eq!(victim_id, mitm_id, "the victim's session is with the MITM");
    assert_ne!(victim_id, real_id);
}

/// The same relay against a client that pins the real server's key: the
/// MITM answers with its own static key, the client's check of the
/// ServerHello fails, and nothing reaches anyone.
#[test]
fn pinned_client_detects_a_relaying_mitm() {
    let mut r = Relay::new(Some(real_key().public_key()), Some(mitm_key()));
    r.run(50);
    assert_eq!(r.victim_error, Some(Error::AuthFailed));
    assert_eq!(
        r.victim_events,
        vec![
            Event::AuthFailed {
                reason: Error::AuthFailed
            },
            Event::TransportLost {
                error: Some(Error::AuthFailed)
            },
        ]
    );
    assert!(r.victim.transport_ended());
    assert_eq!(r.victim.conn_id(), None);
    assert!(!r.victim.is_closed(), "the client may retry another path");
    assert_eq!(r.mitm_session, None, "no ClientConfirm reached the MITM");
    // The MITM's server registered the session when it sent its ServerHello
    // (issue 9); it stays unconfirmed: no HandshakeDone, nothing to read.
    assert_eq!(r.mitm_server.session_count(), 1);
    assert!(r.mitm_read.is_empty());
    assert!(r.real_read.is_empty());
    assert!(r.victim_read.is_empty());
    let mut buf = [0u8; 64];
    assert_eq!(r.victim.recv(&mut buf), Err(Error::WouldBlock));
    // A retry through the same MITM fails the same way.
    r.victim.transport_lost(r.now);
    r.mitm_server.transport_lost(r.a, r.now);
    r.a = r.mitm_server.accept(r.now).unwrap();
    r.victim.new_transport(r.now).unwrap();
    r.victim_error = None;
    r.run(20);
    assert_eq!(r.victim_error, Some(Error::AuthFailed));
    assert_eq!(r.mitm_session, None);
    assert_eq!(r.mitm_server.session_count(), 2, "two unconfirmed sessions");
    assert!(r.mitm_read.is_empty() && r.victim_read.is_empty());
    // Both expire silently once `resume_timeout` passed without transport.
    r.mitm_server.transport_lost(r.a, r.now);
    let expiry = r.now.saturating_add(Config::default().resume_timeout);
    r.mitm_server.handle_timeout(expiry);
    assert_eq!(r.mitm_server.session_count(), 0);
    for e in server_events(&mut r.mitm_server) {
        assert!(
            matches!(e, ServerEvent::CloseTransport { .. }),
            "unconfirmed sessions end silently: {e:?}"
        );
    }
}

/// A MITM without any static key cannot even answer a pinned hello.
#[test]
fn pinned_client_and_keyless_mitm() {
    let mut r = Relay::new(Some(real_key().public_key()), None);
    r.run(20);
    let rejected = Error::HandshakeRejected(HandshakeStatus::NoStaticKey);
    assert_eq!(r.victim_error, Some(rejected));
    assert_eq!(r.victim.close_reason(), Some(CloseReason::Error(rejected)));
    assert_eq!(r.mitm_server.session_count(), 0);
    assert!(r.mitm_read.is_empty() && r.victim_read.is_empty());
}

/// Cruder attacks: substituting an ephemeral key in transit (in the
/// ClientHello toward the real server, or in the ServerHello toward the
/// client) breaks the transcript; the pinned client fails with AuthFailed
/// and sends nothing more.
#[test]
fn substituted_ephemeral_keys_fail() {
    let attacker = StaticKeypair::from_secret_bytes([0x77; 32]).public_key();
    for pinned in [true, false] {
        for substitute_in_client_hello in [true, false] {
            let what = format!("pinned {pinned} in client hello {substitute_in_client_hello}");
            let pin = pinned.then(|| real_key().public_key());
            let mut victim = Client::new(client_config(pin), rng(10));
            let mut real = Server::new(server_config(Some(real_key())), rng(11));
            victim.send(SECRET).unwrap();
            let t = real.accept(T0).unwrap();
            victim.new_transport(T0).unwrap();
            let mut hello = client_tx(&mut victim, T0);
            assert_eq!(hello.len(), CLIENT_HELLO_LEN);
            if substitute_in_client_hello {
                hello[3..35].copy_from_slice(&attacker);
            }
            assert_eq!(real.handle_input(t, T0, &hello), Ok(CLIENT_HELLO_LEN));
            let mut sh = server_tx(&mut real, t, T0);
            assert_eq!(sh.len(), SERVER_HELLO_LEN);
            if !substitute_in_client_hello {
                sh[2..34].copy_from_slice(&attacker);
            }
            assert_eq!(
                victim.handle_input(T0, &sh),
                Err(Error::AuthFailed),
                "{what}"
            );
            assert_eq!(victim.conn_id(), None, "{what}");
            assert!(client_tx(&mut victim, T0).is_empty(), "{what}");
            // The real server registered a session with its ServerHello
            // (issue 9); no ClientConfirm comes, so it stays unconfirmed:
            // invisible to the application, and it expires silently.
            assert_eq!(real.session_count(), 1, "{what}");
            assert_eq!(real.session_of(t), None, "{what}");
            assert!(server_events(&mut real).is_empty(), "{what}");
            real.transport_lost(t, T0);
            let rt = Config::default().resume_timeout;
            let just_before = Instant::from_micros(T0.saturating_add(rt).as_micros() - 1);
            real.handle_timeout(just_before);
            assert_eq!(real.session_count(), 1, "{what}");
            real.handle_timeout(T0.saturating_add(rt));
            assert_eq!(real.session_count(), 0, "{what}");
            assert!(server_events(&mut real).is_empty(), "{what}");
        }
    }
}

/// A client pinning a key while the server has none is refused with the
/// documented rejection [VERSION, NoStaticKey] and gives up for good.
#[test]
fn pinning_a_server_without_static_key_is_rejected() {
    let mut victim = Client::new(client_config(Some(real_key().public_key())), rng(20));
    let mut server = Server::new(server_config(None), rng(21));
    victim.send(SECRET).unwrap();
    let t = server.accept(T0).unwrap();
    victim.new_transport(T0).unwrap();
    let hello = client_tx(&mut victim, T0);
    assert_eq!(hello[2], relink::wire::FLAG_PINNED);
    let rejected = Error::HandshakeRejected(HandshakeStatus::NoStaticKey);
    assert_eq!(server.handle_input(t, T0, &hello), Err(rejected));
    assert_eq!(
        server_events(&mut server),
        vec![ServerEvent::CloseTransport {
            transport: t,
            error: Some(rejected)
        }]
    );
    let reply = server_tx(&mut server, t, T0);
    assert_eq!(reply, [VERSION, HandshakeStatus::NoStaticKey.to_byte()]);
    assert_eq!(victim.handle_input(T0, &reply), Err(rejected));
    assert_eq!(victim.close_reason(), Some(CloseReason::Error(rejected)));
    assert_eq!(
        client_events(&mut victim),
        vec![Event::Closed {
            reason: CloseReason::Error(rejected)
        }]
    );
    assert_eq!(victim.new_transport(T0), Err(Error::Closed));
    assert_eq!(server.session_count(), 0);
    assert!(client_recv_all(&mut victim).is_empty());
}

/// Control: pinning the right key works, pinning a stale key does not.
#[test]
fn pinned_client_connects_only_to_the_key_it_pins() {
    for (pin, ok) in [
        (real_key().public_key(), true),
        (mitm_key().public_key(), false),
    ] {
        let mut victim = Client::new(client_config(Some(pin)), rng(30));
        let mut real = Server::new(server_config(Some(real_key())), rng(31));
        victim.send(SECRET).unwrap();
        let t = real.accept(T0).unwrap();
        victim.new_transport(T0).unwrap();
        let hello = client_tx(&mut victim, T0);
        real.handle_input(t, T0, &hello).unwrap();
        let sh = server_tx(&mut real, t, T0);
        let r = victim.handle_input(T0, &sh);
        if !ok {
            assert_eq!(r, Err(Error::AuthFailed));
            continue;
        }
        assert_eq!(r, Ok(SERVER_HELLO_LEN));
        let out = client_tx(&mut victim, T0);
        assert_eq!(real.handle_input(t, T0, &out), Ok(out.len()));
        let sid = real.session_of(t).expect("attached");
        assert_eq!(real.conn_id(sid), victim.conn_id());
        assert_eq!(server_recv_all(&mut real, sid), SECRET);
    }
}

/// Issue 9 section 1, pinned mode, at the core level: an on-path attacker
/// relays the handshake and the victim's request line, drops everything
/// the real server sends after its ServerHello, cuts the transport and
/// answers every ResumeRequest itself with a forged "unknown session":
/// `01 02` and then EOF, or `01 02` and 16 bytes of its choosing (zeros,
/// random, or the token a server with its own key would send). The
/// attacker holds no key of the real server, so it cannot produce the
/// session's reset token: the client never gives the session up, never
/// starts a new one (no ClientHello, the request line is never sent
/// again), and its `give_up_at` deadline does not move. When the attacker
/// stops, the genuine resume completes; the real server's application got
/// the line exactly once.
#[test]
fn forged_unknown_session_cannot_make_a_pinned_client_send_twice() {
    const LINE: &[u8] = b"PAY 100 EUR TO BOB\n";
    let mut victim = Client::new(client_config(Some(real_key().public_key())), rng(90));
    let mut real = Server::new(server_config(Some(real_key())), rng(91));
    let mut attacker = Server::new(server_config(Some(mitm_key())), rng(92));
    let mut now = T0;
    // The handshake and the request line are relayed; the server's
    // answers after the ServerHello (ACKs) are dropped.
    let t = real.accept(now).unwrap();
    victim.new_transport(now).unwrap();
    let hello = client_tx(&mut victim, now);
    assert_eq!(hello.len(), CLIENT_HELLO_LEN);
    assert_eq!(real.handle_input(t, now, &hello), Ok(CLIENT_HELLO_LEN));
    let sh = server_tx(&mut real, t, now);
    assert_eq!(victim.handle_input(now, &sh), Ok(SERVER_HELLO_LEN));
    assert_eq!(victim.send(LINE).unwrap(), LINE.len());
    let out = client_tx(&mut victim, now);
    assert_eq!(real.handle_input(t, now, &out), Ok(out.len()));
    let sid = real.session_of(t).expect("attached");
    assert_eq!(server_recv_all(&mut real, sid), LINE);
    now = now.saturating_add(Duration::from_millis(5));
    let dropped = server_tx(&mut real, t, now);
    assert!(!dropped.is_empty(), "the server acknowledged");
    // The cut.
    real.transport_lost(t, now);
    victim.transport_lost(now);
    server_events(&mut real);
    client_events(&mut victim);
    assert_eq!(victim.unacked(), LINE.len(), "the victim never saw the ACK");
    let give_up = victim.give_up_at().expect("detached");
    let conn_id = victim.conn_id().expect("conn id");
    let mut rnd = rng(93);
    let rejected = Error::ResumeRejected(relink::ResumeStatus::UnknownSession);
    for i in 0..200u32 {
        now = now.saturating_add(Duration::from_millis(100));
        victim.new_transport(now).unwrap();
        let req = client_tx(&mut victim, now);
        assert_eq!(
            req.len(),
            relink::wire::RESUME_REQUEST_LEN,
            "#{i}: a resume"
        );
        assert_eq!(
            u64::from_le_bytes(req[2..10].try_into().unwrap()),
            conn_id,
            "#{i}: the same session"
        );
        let answer = match i % 4 {
            0 => vec![VERSION, 2],
            1 => [vec![VERSION, 2], vec![0; 16]].concat(),
            2 => {
                let mut a = vec![VERSION, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                for b in &mut a[2..] {
                    *b = common::between(&mut rnd, 0, 255) as u8;
                }
                a
            }
            _ => {
                // A relink server with the attacker's key answers for real.
                let at = attacker.accept(now).unwrap();
                assert_eq!(attacker.handle_input(at, now, &req), Err(rejected));
                let a = server_tx(&mut attacker, at, now);
                attacker.transport_lost(at, now);
                server_events(&mut attacker);
                assert_eq!(a.len(), 18, "#{i}");
                a
            }
        };
        let r = victim.handle_input(now, &answer);
        if answer.len() == 2 {
            // Incomplete (the answer is 18 bytes), then EOF.
            assert_eq!(r, Ok(2), "#{i}");
            assert!(client_events(&mut victim).is_empty(), "#{i}");
        } else {
            assert_eq!(r, Err(rejected), "#{i}");
            assert_eq!(
                client_events(&mut victim),
                vec![Event::TransportLost {
                    error: Some(rejected)
                }],
                "#{i}"
            );
        }
        victim.transport_lost(now);
        assert_eq!(victim.close_reason(), None, "#{i}");
        assert_eq!(victim.in_doubt(), None, "#{i}");
        assert_eq!(victim.give_up_at(), Some(give_up), "#{i}");
    }
    assert!(now < give_up);
    // The attacker gives up; the genuine resume completes, the line is
    // not delivered again, the ACK finally arrives.
    let t = real.accept(now).unwrap();
    victim.new_transport(now).unwrap();
    let req = client_tx(&mut victim, now);
    assert_eq!(
        real.handle_input(t, now, &req),
        Ok(relink::wire::RESUME_REQUEST_LEN)
    );
    let back = server_tx(&mut real, t, now);
    assert_eq!(victim.handle_input(now, &back), Ok(back.len()));
    assert!(victim.is_connected());
    let out = client_tx(&mut victim, now);
    assert_eq!(real.handle_input(t, now, &out), Ok(out.len()));
    assert!(server_recv_all(&mut real, sid).is_empty(), "delivered once");
    assert_eq!(real.session_count(), 1);
    let acks = server_tx(&mut real, t, now);
    victim.handle_input(now, &acks).unwrap();
    assert_eq!(victim.unacked(), 0);
    assert_eq!(victim.close_reason(), None);
    assert!(!server_events(&mut real)
        .iter()
        .any(|e| matches!(e, ServerEvent::HandshakeDone { .. })));
}
