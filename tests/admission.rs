//! Admission control of the server endpoint (issue 13, PROTOCOL.md 3.7):
//! the stateless cookie a server under load asks for before any
//! Diffie-Hellman, and the per-source limits on handshakes in progress.
//! The flood acceptance test (10,000 half-open handshakes from one source
//! while 100 honest clients connect) is `flood_from_one_source_*` here; its
//! memory bound is measured in tests/alloc.rs.

mod common;
mod support_c;

use std::net::IpAddr;

use relink::wire::{
    CLIENT_HELLO_COOKIE_LEN, CLIENT_HELLO_LEN, HELLO_COOKIE_LEN, TAG_NEW, TAG_NEW_COOKIE, VERSION,
};
use relink::{Config, Duration, Error, HandshakeStatus, Instant, TransportId, COOKIE_PERIOD};
use support_c::admission::{always_cookie, at, bogus_hello, client, connect, exchange, ip, server};
use support_c::{client_tx, server_tx, TestServer};

/// Under load the server answers the hello with `02 07 cookie`; the client
/// core repeats the same hello (tag 0x01) with the cookie on the same
/// transport, and the session then works.
#[test]
fn client_repeats_its_hello_with_the_cookie_and_the_session_works() {
    let (mut s, wall) = server(always_cookie());
    let mut c = client(&wall, 2);
    let now = at(&wall, Instant::from_micros(1_000));
    let t = s.accept_from(now, ip(10, 0, 0, 1)).unwrap();
    c.new_transport(now).unwrap();
    let hello = client_tx(&mut c, now);
    assert_eq!((hello.len(), hello[0]), (CLIENT_HELLO_LEN, TAG_NEW));
    s.handle_input(t, now, &hello).unwrap();
    let answer = server_tx(&mut s, t, now);
    assert_eq!(answer.len(), HELLO_COOKIE_LEN);
    assert_eq!(answer[..2], [VERSION, HandshakeStatus::Cookie.to_byte()]);
    assert_eq!(
        (
            s.endpoint().handshake_count(),
            s.endpoint().remembered_hellos()
        ),
        (0, 0),
        "no handshake state and no cache entry for a hello without cookie"
    );
    assert_eq!(c.handle_input(now, &answer), Ok(answer.len()));
    let again = client_tx(&mut c, now);
    assert_eq!(
        (again.len(), again[0]),
        (CLIENT_HELLO_COOKIE_LEN, TAG_NEW_COOKIE)
    );
    assert_eq!(again[1..CLIENT_HELLO_LEN], hello[1..], "the same hello");
    assert_eq!(again[CLIENT_HELLO_LEN..], answer[2..], "echoes the cookie");
    s.handle_input(t, now, &again).unwrap();
    let sh = server_tx(&mut s, t, now);
    assert_eq!(sh[..2], [VERSION, HandshakeStatus::Ok.to_byte()]);
    c.handle_input(now, &sh).unwrap();
    assert!(c.is_connected());
    let confirm = client_tx(&mut c, now);
    s.handle_input(t, now, &confirm).unwrap();
    let sid = s.session_of(t).expect("session");
    exchange(&mut s, &mut c, t, sid);
    assert_eq!(s.endpoint().cookies_sent(), 1);
}

/// Below the threshold no cookie is asked for (the default threshold is
/// not reached by one client).
#[test]
fn no_cookie_below_the_threshold() {
    let (mut s, wall) = server(Config::default());
    let mut c = client(&wall, 3);
    let now = at(&wall, Instant::from_micros(1_000));
    let (t, sid) = connect(&mut s, &mut c, ip(10, 0, 0, 1), now).unwrap();
    exchange(&mut s, &mut c, t, sid);
    assert_eq!(s.endpoint().cookies_sent(), 0);
}

/// 2,000 hellos that never echo their cookie leave nothing behind: no
/// handshake, no session slot, no replay-cache entry.
#[test]
fn bogus_hellos_under_load_leave_no_state() {
    let (mut s, wall) = server(always_cookie());
    let mut r = common::rng(9);
    let now = at(&wall, Instant::from_micros(1_000));
    for i in 0..2_000u32 {
        let t = s
            .accept_from(now, ip(10, 1, (i >> 8) as u8, i as u8))
            .unwrap();
        let h = bogus_hello(&wall, &mut r);
        assert_eq!(s.handle_input(t, now, &h), Ok(h.len()));
        let a = server_tx(&mut s, t, now);
        assert_eq!(a[..2], [VERSION, HandshakeStatus::Cookie.to_byte()]);
        assert_eq!(s.endpoint().handshake_count(), 0);
        // The bogus client leaves without echoing.
        s.transport_lost(t, now);
    }
    let e = s.endpoint();
    assert_eq!(e.cookies_sent(), 2_000);
    assert_eq!((e.handshake_count(), e.session_count()), (0, 0));
    assert_eq!(e.remembered_hellos(), 0);
    assert_eq!(e.pending_transports(), 0);
    assert_eq!(s.endpoint().active_sources(), 0, "the source table empties");
}

/// A cookie is bound to the address it was sent to and to the hello's key;
/// a transport gets one cookie round, after which a hello without a valid
/// cookie ends it (Cookie, retryable) — and the client core retries.
#[test]
fn cookie_is_bound_to_address_and_key_and_one_round_per_transport() {
    let (mut s, wall) = server(always_cookie());
    let mut r = common::rng(4);
    let now = at(&wall, Instant::from_micros(1_000));
    let a = s.accept_from(now, ip(10, 0, 0, 1)).unwrap();
    let hello = bogus_hello(&wall, &mut r);
    s.handle_input(a, now, &hello).unwrap();
    let cookie: [u8; 16] = server_tx(&mut s, a, now)[2..].try_into().unwrap();
    let with = relink::wire::hello_with_cookie(&hello.clone().try_into().unwrap(), &cookie);
    // From another address: a fresh cookie, no handshake.
    let b = s.accept_from(now, ip(10, 0, 0, 2)).unwrap();
    s.handle_input(b, now, &with).unwrap();
    let other = server_tx(&mut s, b, now);
    assert_eq!(other[1], HandshakeStatus::Cookie.to_byte());
    assert_ne!(other[2..], cookie, "bound to the address");
    assert_eq!(s.endpoint().handshake_count(), 0);
    // Again without a valid cookie on b: answered, and b ends.
    assert_eq!(
        s.handle_input(b, now, &with),
        Err(Error::HandshakeRejected(HandshakeStatus::Cookie))
    );
    assert_eq!(server_tx(&mut s, b, now).len(), HELLO_COOKIE_LEN);
    assert!(s.transport_ended(b));
    // Another key with a's cookie, on a: refused the same way.
    let mut other_key = with;
    other_key[3] ^= 1;
    assert_eq!(
        s.handle_input(a, now, &other_key),
        Err(Error::HandshakeRejected(HandshakeStatus::Cookie))
    );
    assert_eq!(s.endpoint().handshake_count(), 0);
    // The genuine echo on a new transport from a's address is accepted.
    let a2 = s.accept_from(now, ip(10, 0, 0, 1)).unwrap();
    s.handle_input(a2, now, &with).unwrap();
    let sh = server_tx(&mut s, a2, now);
    assert_eq!(sh[1], HandshakeStatus::Ok.to_byte());
    assert_eq!(s.endpoint().handshake_count(), 1);

    // The client core: a second cookie answer ends the transport with a
    // retryable error, and the next transport succeeds.
    let mut c = client(&wall, 5);
    let t = s.accept_from(now, ip(10, 0, 0, 3)).unwrap();
    c.new_transport(now).unwrap();
    let h = client_tx(&mut c, now);
    s.handle_input(t, now, &h).unwrap();
    let mut forged = server_tx(&mut s, t, now);
    forged[5] ^= 0xFF; // a cookie the server will not accept
    c.handle_input(now, &forged).unwrap();
    let again = client_tx(&mut c, now);
    assert_eq!(
        s.handle_input(t, now, &again),
        Err(Error::HandshakeRejected(HandshakeStatus::Cookie))
    );
    let answer = server_tx(&mut s, t, now);
    assert_eq!(
        c.handle_input(now, &answer),
        Err(Error::HandshakeRejected(HandshakeStatus::Cookie))
    );
    assert!(!c.is_closed(), "retryable");
    s.transport_lost(t, now);
    c.transport_lost(now);
    let (t, sid) = connect(&mut s, &mut c, ip(10, 0, 0, 3), now).unwrap();
    exchange(&mut s, &mut c, t, sid);
}

/// A cookie is accepted in its period and the next, not later.
#[test]
fn cookie_expires_after_two_periods() {
    let (mut s, wall) = server(Config {
        freshness_window: Duration::from_secs(3_600),
        ..always_cookie()
    });
    let mut r = common::rng(6);
    let p = COOKIE_PERIOD.as_micros();
    let now = at(&wall, Instant::from_micros(10 * p + 1));
    let t = s.accept_from(now, ip(10, 0, 0, 1)).unwrap();
    let hello = bogus_hello(&wall, &mut r);
    s.handle_input(t, now, &hello).unwrap();
    let cookie: [u8; 16] = server_tx(&mut s, t, now)[2..].try_into().unwrap();
    let with = relink::wire::hello_with_cookie(&hello.clone().try_into().unwrap(), &cookie);
    s.transport_lost(t, now);
    // Two periods on (the hello's time stays inside the long window).
    let late = at(&wall, Instant::from_micros(12 * p));
    let t = s.accept_from(late, ip(10, 0, 0, 1)).unwrap();
    s.handle_input(t, late, &with).unwrap();
    assert_eq!(
        server_tx(&mut s, t, late)[1],
        HandshakeStatus::Cookie.to_byte()
    );
    s.transport_lost(t, late);
    // The next period: still good.
    let next = at(&wall, Instant::from_micros(11 * p + 5));
    let t = s.accept_from(next, ip(10, 0, 0, 1)).unwrap();
    s.handle_input(t, next, &with).unwrap();
    assert_eq!(server_tx(&mut s, t, next)[1], HandshakeStatus::Ok.to_byte());
}

/// One source holds at most `max_handshakes_per_source` pending
/// transports; other sources, and the source once a slot frees, are
/// unaffected. IPv6 sources are /64 prefixes.
#[test]
fn per_source_transport_limit() {
    let (mut s, wall) = server(Config::default());
    let now = at(&wall, Instant::from_micros(1_000));
    let limit = Config::default().max_handshakes_per_source;
    let src = ip(10, 0, 0, 1);
    let mut held: Vec<TransportId> = (0..limit)
        .map(|_| s.accept_from(now, src).unwrap())
        .collect();
    assert_eq!(s.accept_from(now, src), Err(Error::SourceLimit));
    assert_eq!(s.endpoint().source_refusals(), 1);
    // Another source is served.
    let mut c = client(&wall, 7);
    let (t, sid) = connect(&mut s, &mut c, ip(10, 0, 0, 2), now).unwrap();
    exchange(&mut s, &mut c, t, sid);
    // A slot frees: the source may open one more.
    s.transport_lost(held.pop().unwrap(), now);
    held.push(s.accept_from(now, src).unwrap());
    assert_eq!(s.accept_from(now, src), Err(Error::SourceLimit));
    // IPv6: one /64 is one source.
    let v6 = |host: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, host));
    for h in 0..limit as u16 {
        s.accept_from(now, v6(h)).unwrap();
    }
    assert_eq!(s.accept_from(now, v6(999)), Err(Error::SourceLimit));
    // Timed-out transports free their slots too.
    let later = at(&wall, now.saturating_add(Duration::from_secs(11)));
    s.handle_timeout(later);
    for t in held {
        s.transport_lost(t, later);
    }
    assert!(s.accept_from(later, src).is_ok());
}

/// A source that leaves unconfirmed sessions behind (ServerHello received,
/// transport dropped) evicts its own oldest beyond the limit, never
/// another source's: an honest client whose ClientConfirm was lost still
/// resumes.
#[test]
fn per_source_unconfirmed_sessions_evict_their_own_oldest() {
    let (mut s, wall) = server(Config::default());
    let mut r = common::rng(8);
    let now = at(&wall, Instant::from_micros(1_000));
    let limit = Config::default().max_handshakes_per_source;
    // The honest client gets its ServerHello; the confirm is lost with the
    // transport.
    let mut honest = client(&wall, 11);
    let ht = s.accept_from(now, ip(192, 0, 2, 1)).unwrap();
    honest.new_transport(now).unwrap();
    let h = client_tx(&mut honest, now);
    s.handle_input(ht, now, &h).unwrap();
    let sh = server_tx(&mut s, ht, now);
    honest.handle_input(now, &sh).unwrap();
    let _lost_confirm = client_tx(&mut honest, now);
    s.transport_lost(ht, now);
    honest.transport_lost(now);
    // The attacker: 5 × limit hellos, each transport dropped after its
    // ServerHello.
    for _ in 0..5 * limit {
        let t = s.accept_from(now, ip(10, 0, 0, 1)).unwrap();
        let h = bogus_hello(&wall, &mut r);
        s.handle_input(t, now, &h).unwrap();
        assert_eq!(server_tx(&mut s, t, now)[1], HandshakeStatus::Ok.to_byte());
        s.transport_lost(t, now);
        assert!(s.endpoint().handshake_count() <= limit + 1);
    }
    assert_eq!(s.endpoint().handshake_count(), limit + 1);
    // The honest client resumes its unconfirmed session.
    let (t, sid) = connect(&mut s, &mut honest, ip(192, 0, 2, 1), now).unwrap();
    exchange(&mut s, &mut honest, t, sid);
}

/// What a flood from one source does: `attempts` transports from
/// 10.0.0.1, each sending a hello (echoing a cookie when asked: the
/// attacker reads its replies), never confirming, holding its transport
/// until the server times it out; every `attempts / honest` attempts an
/// honest client from its own address connects and exchanges bytes. Time
/// advances 1 ms per attempt. Returns (honest successes, server).
fn flood(cfg: Config, attempts: usize, honest: usize) -> (usize, TestServer) {
    let (mut s, wall) = server(cfg);
    let mut r = common::rng(12);
    let mut now = Instant::from_micros(1_000);
    let mut held: Vec<TransportId> = Vec::new();
    let mut ok = 0;
    let every = attempts / honest;
    let (mut max_pending, mut max_hs) = (0, 0);
    for i in 0..attempts {
        now = at(&wall, now.saturating_add(Duration::from_millis(1)));
        s.handle_timeout(now);
        held.retain(|&t| {
            if s.transport_ended(t) {
                s.transport_lost(t, now);
                false
            } else {
                true
            }
        });
        if let Ok(t) = s.accept_from(now, ip(10, 0, 0, 1)) {
            let h = bogus_hello(&wall, &mut r);
            if s.handle_input(t, now, &h).is_ok() {
                let a = server_tx(&mut s, t, now);
                if a[1] == HandshakeStatus::Cookie.to_byte() {
                    let with = relink::wire::hello_with_cookie(
                        &h.clone().try_into().unwrap(),
                        &a[2..].try_into().unwrap(),
                    );
                    let _ = s.handle_input(t, now, &with);
                    let _ = server_tx(&mut s, t, now);
                }
            }
            held.push(t);
        }
        max_pending = max_pending.max(s.endpoint().pending_transports());
        max_hs = max_hs.max(s.endpoint().handshake_count());
        if i % every == every - 1 {
            let n = i / every;
            let mut c = client(&wall, 1_000 + n as u64);
            let src = ip(172, 16, (n >> 8) as u8, n as u8);
            if let Ok((t, sid)) = connect(&mut s, &mut c, src, now) {
                exchange(&mut s, &mut c, t, sid);
                ok += 1;
            }
        }
    }
    let limit = s.endpoint().config().max_handshakes_per_source;
    // The attacker never had more than its share in progress (plus the
    // honest client being served).
    assert!(max_pending <= limit + 1, "pending {max_pending}");
    assert!(max_hs <= limit + 1, "handshakes {max_hs}");
    (ok, s)
}

/// Issue 13 acceptance: 10,000 half-open handshakes from one source while
/// 100 honest clients from other sources connect: all 100 succeed.
#[test]
fn flood_from_one_source_honest_clients_all_succeed() {
    let (ok, s) = flood(Config::default(), 10_000, 100);
    assert_eq!(ok, 100);
    let refused = s.endpoint().source_refusals();
    assert!(
        refused > 9_000,
        "the source was held to its limit: {refused}"
    );
}

/// The same flood with the cookie always on: the attacker pays a round
/// trip per handshake, the honest clients one more round trip.
#[test]
fn flood_from_one_source_with_cookies_honest_clients_all_succeed() {
    let (ok, s) = flood(always_cookie(), 10_000, 100);
    assert_eq!(ok, 100);
    assert!(s.endpoint().cookies_sent() >= 100);
}

/// The drivers pass the TCP peer's address to the endpoint: 100 idle
/// connections from 127.0.0.2 (a slowloris source) get at most
/// `max_handshakes_per_source` slots, the rest are refused at accept, and
/// a client from 127.0.0.1 connects and exchanges bytes meanwhile.
#[test]
fn blocking_driver_limits_one_source_and_serves_another() {
    use std::io::{Read, Write};
    let cfg = Config {
        max_handshakes_per_source: 8,
        ..Config::default()
    };
    let listener = relink::blocking::Listener::bind("127.0.0.1:0", cfg.clone()).unwrap();
    let addr = listener.local_addr();
    let mut idle = Vec::new();
    for _ in 0..100 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&std::net::SocketAddr::from(([127, 0, 0, 2], 0)).into())
            .unwrap();
        s.connect(&addr.into()).unwrap();
        idle.push(std::net::TcpStream::from(s));
    }
    // The refused ones are closed by the server without a byte.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while listener.stats().transports_refused < 92 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let stats = listener.stats();
    assert_eq!(
        (stats.transports, stats.transports_refused),
        (8, 92),
        "{stats:?}"
    );
    let server = std::thread::spawn(move || {
        let mut session = listener.accept().unwrap();
        let mut got = [0u8; 5];
        session.read_exact(&mut got).unwrap();
        session.write_all(b"world").unwrap();
        session.flush().unwrap();
        (got, listener)
    });
    let mut client = relink::blocking::ClientBuilder::new(cfg)
        .connect(addr)
        .expect("an honest client from another source connects");
    client.write_all(b"hello").unwrap();
    client.flush().unwrap();
    let mut back = [0u8; 5];
    client.read_exact(&mut back).unwrap();
    let (got, _listener) = server.join().unwrap();
    assert_eq!((&got, &back), (b"hello", b"world"));
    drop(idle);
}
