//! Review of issue 11's freshness and wire-v2 work (design §1 and §3;
//! PROTOCOL.md 3.3, 6.7, 10.10), written as an adversary: every test here
//! states what the protocol promises and attacks it. A test marked
//! `#[ignore = "review11 finding: ..."]` fails on the code it was written
//! against; the others are fixed findings or regression guards at the
//! boundaries (times at 0 and `u64::MAX`, huge windows).
//!
//! Clocks are injected (no wall clock unless a test gives one: the
//! server's freshness clock is then its monotonic `now`, and client and
//! server share one time line).

mod common;
mod support_c;

use relink::wire::{CLIENT_HELLO_LEN, SERVER_HELLO_LEN, VERSION};
use relink::{
    Client, Config, Duration, Error, HandshakeStatus, Instant, Server, ServerEvent, SessionId,
    TransportId, UnixTime, HELLO_MAX_AHEAD,
};
use support_c::*;

const T0: Instant = Instant::from_micros(1_000_000);
const WINDOW: Duration = Duration::from_secs(60);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn at(s: u64) -> Instant {
    T0.saturating_add(secs(s))
}

/// The ClientHello of a fresh client whose wall clock reads `time`.
fn hello_at(time: u64, seed: u64) -> Vec<u8> {
    hello_at_time(T0, time, seed)
}

/// Offer `hello` on a new transport of `server` at `now`: the result and
/// the server's reply.
fn offer(server: &mut TestServer, now: Instant, hello: &[u8]) -> (Result<usize, Error>, Vec<u8>) {
    let t = server.accept(now).unwrap();
    let r = server.handle_input(t, now, hello);
    let reply = server_tx(server, t, now);
    server_events(server);
    (r, reply)
}

/// One honest handshake attempt of `client` against `server` at `now`:
/// the server's verdict on the hello.
fn attempt(client: &mut TestClient, server: &mut TestServer, now: Instant) -> Result<usize, Error> {
    client.new_transport(now).unwrap();
    let hello = client_tx(client, now);
    let (r, reply) = offer(server, now, &hello);
    // The client reads the answer (a Stale one re-bases its next hello).
    let _ = client.handle_input(now, &reply);
    client_events(client);
    r
}

// ---------------------------------------------------------------------------
// Hello: the replay cache's floor

/// Finding (medium, DoS), fixed: hellos stamped `server_now + window`
/// used to be accepted and, once they overflowed the cache, pinned the
/// replay cache's floor a whole window into the future: every honest hello
/// was then Stale, its retry with the server's own time included (65,536 /
/// 60 s ≈ 1,100 hellos/s kept every new client out). Now a hello may be
/// stamped at most `HELLO_MAX_AHEAD` ahead of the server's clock
/// (PROTOCOL.md 3.3): a hello at the window's future edge is Stale, and a
/// flood at the allowed edge cannot raise the floor above an honest retry.
#[test]
fn future_stamped_hellos_cannot_pin_the_floor_beyond_the_allowed_skew() {
    let base = 1_790_000_000_000_000u64;
    let wall = ManualWall::new(base);
    let scfg = wall_config(
        &wall,
        Config {
            hello_cache: 4,
            ..Config::default()
        },
    );
    let mut server = Server::new(scfg, common::rng(1));
    // The flood: five distinct hellos at the future edge of the window
    // (one more than the cache holds).
    let far = base + WINDOW.as_micros();
    let (r, _) = offer(&mut server, T0, &hello_at(far, 99));
    assert_eq!(
        r,
        Err(Error::HandshakeRejected(HandshakeStatus::Stale)),
        "a hello a whole window ahead of the server's clock"
    );
    let edge = base + HELLO_MAX_AHEAD.as_micros();
    for seed in 0..5 {
        let (r, reply) = offer(&mut server, T0, &hello_at(edge, 100 + seed));
        assert_eq!(
            r,
            Ok(CLIENT_HELLO_LEN),
            "the flood's hellos are at the allowed edge"
        );
        assert_eq!(reply.len(), SERVER_HELLO_LEN);
    }
    // An honest client whose wall clock agrees with the server's, once the
    // flood stopped: the floor is at most HELLO_MAX_AHEAD ahead of the
    // server's clock at the flood, so within that time a retry stamped
    // with the server's clock gets through (before the fix the floor sat a
    // whole window ahead).
    let later = base + HELLO_MAX_AHEAD.as_micros() + 1_000;
    wall.set(later);
    let mut client = Client::new(wall_config(&wall, Config::default()), common::rng(2));
    let first = attempt(&mut client, &mut server, at(6));
    assert!(
        first.is_ok() || first == Err(Error::HandshakeRejected(HandshakeStatus::Stale)),
        "{first:?}"
    );
    if first.is_err() {
        // The retry is stamped from the server's own clock (PROTOCOL.md 3.3).
        wall.set(later + 1_000);
        let retry = attempt(
            &mut client,
            &mut server,
            at(6).saturating_add(Duration::from_millis(1)),
        );
        assert_eq!(
            retry,
            Ok(CLIENT_HELLO_LEN),
            "honest retry locked out by the floor"
        );
    }
}

/// Finding (low), fixed: the floor never came down. A server whose clock was
/// ahead (here by ten minutes) and is corrected by a step back keeps the
/// floor its overflowing cache raised before the step: every honest hello,
/// including the retry stamped with the server's (new) clock from the
/// Stale answer, is refused until the clock has caught up with the floor
/// again (ten minutes without new sessions). Entries and a floor more than
/// a window ahead of the server's clock can only come from a clock that
/// went back; the server now drops such a floor (PROTOCOL.md 3.3).
#[test]
fn floor_survives_a_server_clock_step_back() {
    let base = 1_790_000_000_000_000u64;
    let wall = ManualWall::new(base);
    let scfg = wall_config(
        &wall,
        Config {
            hello_cache: 1,
            ..Config::default()
        },
    );
    let mut server = Server::new(scfg, common::rng(70));
    // Two honest hellos overflow the one-entry cache: floor = base.
    for seed in 0..2 {
        let (r, _) = offer(&mut server, T0, &hello_at(base + seed, 71 + seed));
        assert_eq!(r, Ok(CLIENT_HELLO_LEN));
    }
    // The server's clock is stepped back by ten minutes.
    let stepped = base - 600_000_000;
    wall.set(stepped);
    let mut client = Client::new(wall_config(&wall, Config::default()), common::rng(73));
    let first = attempt(&mut client, &mut server, at(1));
    assert!(
        first.is_ok() || first == Err(Error::HandshakeRejected(HandshakeStatus::Stale)),
        "{first:?}"
    );
    if first.is_err() {
        wall.set(stepped + 1_000);
        let retry = attempt(
            &mut client,
            &mut server,
            at(1).saturating_add(Duration::from_millis(1)),
        );
        assert_eq!(
            retry,
            Ok(CLIENT_HELLO_LEN),
            "honest retry locked out by an old floor"
        );
    }
}

/// Regression guard: hellos stamped 0 and `u64::MAX`, a server wall clock
/// at 0 and at `u64::MAX`, and a window of `u64::MAX` µs: no arithmetic
/// overflow, no panic, and the window check is exact at its edges.
#[test]
fn hello_times_at_the_extremes_never_overflow() {
    for server_wall in [0u64, 1, u64::MAX - 1, u64::MAX] {
        let wall = ManualWall::new(server_wall);
        let mut server = Server::new(wall_config(&wall, Config::default()), common::rng(3));
        for (seed, time) in [0u64, 1, u64::MAX - 1, u64::MAX].into_iter().enumerate() {
            let (r, reply) = offer(&mut server, T0, &hello_at(time, 10 + seed as u64));
            let fresh = time <= server_wall.saturating_add(HELLO_MAX_AHEAD.as_micros())
                && server_wall.saturating_sub(time) <= WINDOW.as_micros();
            if fresh {
                assert_eq!(r, Ok(CLIENT_HELLO_LEN), "wall {server_wall} time {time}");
            } else {
                assert_eq!(
                    r,
                    Err(Error::HandshakeRejected(HandshakeStatus::Stale)),
                    "wall {server_wall} time {time}"
                );
                assert_eq!(reply, stale_answer(server_wall));
            }
        }
        // Pruning at the extremes (handle_timeout computes `wall − window`).
        server.handle_timeout(at(1));
        server.handle_timeout(Instant::from_micros(u64::MAX));
    }
    // A window of u64::MAX µs accepts every time up to HELLO_MAX_AHEAD
    // ahead and prunes nothing.
    let wall = ManualWall::new(u64::MAX / 2);
    let cfg = wall_config(
        &wall,
        Config {
            freshness_window: Duration::from_micros(u64::MAX),
            ..Config::default()
        },
    );
    let mut server = Server::new(cfg, common::rng(4));
    let ahead = u64::MAX / 2 + HELLO_MAX_AHEAD.as_micros();
    for (seed, time) in [0u64, ahead].into_iter().enumerate() {
        let (r, _) = offer(&mut server, T0, &hello_at(time, 20 + seed as u64));
        assert_eq!(r, Ok(CLIENT_HELLO_LEN));
    }
    let (r, _) = offer(&mut server, T0, &hello_at(ahead + 1, 22));
    assert_eq!(r, Err(Error::HandshakeRejected(HandshakeStatus::Stale)));
    server.handle_timeout(Instant::from_micros(u64::MAX));
    assert_eq!(server.endpoint().remembered_hellos(), 2);
}

/// Regression guard: a forged Stale answer carrying `u64::MAX` (or 0) as
/// the server's time costs the client one more refused hello, never a
/// panic or a stuck client: the real server's Stale answer re-bases it and
/// the third hello gets a session, whose clock base is the ServerHello's
/// authenticated time, not the forged one.
#[test]
fn forged_stale_with_extreme_server_time_costs_one_more_hello() {
    for forged in [u64::MAX, 0] {
        let base = 1_790_000_000_000_000u64;
        let wall = ManualWall::new(base);
        let mut server = Server::new(wall_config(&wall, Config::default()), common::rng(5));
        let mut client = Client::new(wall_config(&wall, Config::default()), common::rng(6));
        // The attacker answers the first hello.
        client.new_transport(T0).unwrap();
        let _ = client_tx(&mut client, T0);
        assert_eq!(
            client.handle_input(T0, &stale_answer(forged)),
            Err(Error::HandshakeRejected(HandshakeStatus::Stale))
        );
        client_events(&mut client);
        assert_eq!(client.server_clock_offset(), None, "unauthenticated");
        // The next hello carries the forged time: the real server refuses it.
        let r = attempt(&mut client, &mut server, at(1));
        assert_eq!(r, Err(Error::HandshakeRejected(HandshakeStatus::Stale)));
        // The one after carries the real server's time.
        let r = attempt(&mut client, &mut server, at(2));
        assert_eq!(r, Ok(CLIENT_HELLO_LEN), "forged {forged}");
        assert!(client.is_connected());
        let est = client.server_time(at(2)).unwrap().as_micros();
        assert_eq!(est, base, "the session's base is the ServerHello's time");
    }
}

/// A hand-made ClientHello (anonymous) with this ephemeral key and time.
fn raw_hello(ephemeral: [u8; 32], time: u64) -> Vec<u8> {
    let mut h = vec![0x00, VERSION, 0x00];
    h.extend_from_slice(&ephemeral);
    h.extend_from_slice(&time.to_le_bytes());
    assert_eq!(h.len(), CLIENT_HELLO_LEN);
    h
}

/// Finding (low): the replay cache keys a hello by
/// `BLAKE3(client_ephemeral_public)`, but X25519 ignores bit 255 of a
/// public key and reads values `≥ 2^255 − 19` modulo p (RFC 7748 5), so one
/// key has several encodings. A captured hello with bit 255 of its key set
/// (or, for keys below 19, the key plus p) is the same key exchange yet
/// misses the cache: the server does the DH and spends a session slot on
/// it, which PROTOCOL.md 3.3 says a replay never costs. Fixed by
/// fingerprinting the canonical encoding.
#[test]
fn replay_with_a_non_canonical_key_encoding_is_still_a_replay() {
    let mut server = Server::new(Config::default(), common::rng(40));
    let now = T0;
    let hello = hello_at(now.as_micros(), 41);
    let (r, _) = offer(&mut server, now, &hello);
    assert_eq!(r, Ok(CLIENT_HELLO_LEN));
    assert_eq!(server.session_count(), 1);
    // Bit 255 of the key (byte 34 of the hello, its top bit).
    let mut flipped = hello.clone();
    flipped[34] ^= 0x80;
    let (r, reply) = offer(&mut server, at(1), &flipped);
    assert_eq!(r, Err(Error::HandshakeRejected(HandshakeStatus::Replayed)));
    assert_eq!(reply, vec![VERSION, HandshakeStatus::Replayed.to_byte()]);
    assert_eq!(server.session_count(), 1, "a replay takes no session slot");
    // u = 9 (the base point) and its non-canonical encoding 9 + p, with and
    // without bit 255.
    let mut nine = [0u8; 32];
    nine[0] = 9;
    let mut nine_plus_p = [0xFFu8; 32];
    nine_plus_p[0] = 0xED + 9;
    nine_plus_p[31] = 0x7F;
    let mut nine_plus_p_high = nine_plus_p;
    nine_plus_p_high[31] = 0xFF;
    let (r, _) = offer(&mut server, at(2), &raw_hello(nine, at(2).as_micros()));
    assert_eq!(r, Ok(CLIENT_HELLO_LEN));
    for (k, other) in [nine_plus_p, nine_plus_p_high].into_iter().enumerate() {
        let (r, _) = offer(&mut server, at(3), &raw_hello(other, at(3).as_micros()));
        assert_eq!(
            r,
            Err(Error::HandshakeRejected(HandshakeStatus::Replayed)),
            "encoding {k}"
        );
    }
    assert_eq!(server.session_count(), 2);
}

// ---------------------------------------------------------------------------
// Client clock base: server PINGs that waited behind held-back input

/// A client and a server with one established session, no wall clocks.
struct Pair {
    client: TestClient,
    server: TestServer,
    t: TransportId,
    sid: SessionId,
}

impl Pair {
    fn new(seed: u64, ccfg: Config, scfg: Config) -> Pair {
        let mut client = Client::new(ccfg, common::rng(seed));
        let mut server = Server::new(scfg, common::rng(seed ^ 0xFFFF));
        let (t, sid) = handshake_by_hand(&mut client, &mut server, T0);
        // The server's PING right after the handshake, and the client's ACK.
        let down = server_tx(&mut server, t, T0);
        client.handle_input(T0, &down).unwrap();
        let up = client_tx(&mut client, T0);
        server.handle_input(t, T0, &up).unwrap();
        client_events(&mut client);
        server_events(&mut server);
        Pair {
            client,
            server,
            t,
            sid,
        }
    }
}

/// Finding (low-medium): PROTOCOL.md 6.7 makes a server PING the client's
/// clock base only if it "verified while the client's input was not held
/// back", and `Stream::open_frame` guards the PING with `was_held`. But
/// input is only ever held back at a DATA frame (`has_room` is true for
/// every other type), so the frame that takes `held_since` is always that
/// DATA frame: a PING queued behind it verifies next with `was_held ==
/// false` and moves the base back by the whole hold. The client's estimate
/// of the server's clock (`Client::server_time`, its stamps) is then
/// behind by as long as its application did not read; its CLOSE (and ABORT,
/// and later the rekey frames) is refused Stale by the server, which costs
/// a transport and a resume round trip.
#[test]
fn server_ping_queued_behind_held_back_data_does_not_move_the_clock_back() {
    let ccfg = Config {
        recv_buffer: 0, // the smallest: one maximal frame
        ..Config::default()
    };
    let mut p = Pair::new(30, ccfg, Config::default());
    assert_eq!(p.client.server_clock_offset(), Some(0), "one time line");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(p.server.send(p.sid, &data), Ok(data.len()));
    let mut down = server_tx(&mut p.server, p.t, at(1));
    // Five seconds of silence later the server's keepalive PING follows
    // the data on the same transport.
    p.server.handle_timeout(at(7));
    let ping = server_tx(&mut p.server, p.t, at(7));
    assert!(!ping.is_empty(), "a keepalive PING is due");
    down.extend_from_slice(&ping);
    // The client's application reads nothing until much later: its input
    // is held back at the second DATA frame.
    let mut rest: &[u8] = &down;
    let n = p.client.handle_input(at(1), rest).unwrap();
    assert!(n < rest.len(), "input held back");
    rest = &rest[n..];
    let late = at(200);
    let mut got = client_recv_all(&mut p.client);
    while !rest.is_empty() {
        let n = p.client.handle_input(late, rest).expect("verified");
        assert!(n > 0);
        rest = &rest[n..];
        got.extend(client_recv_all(&mut p.client));
    }
    assert_eq!(got, data);
    // The PING that waited 193 s behind the data says nothing about the
    // server's clock now.
    assert_eq!(
        p.client.server_clock_offset(),
        Some(0),
        "a PING that waited behind held-back input moved the clock base"
    );
    // The consequence: the client's CLOSE, stamped from that base, must be
    // fresh at the server.
    p.client.close();
    let up = client_tx(&mut p.client, late);
    assert_eq!(p.server.handle_input(p.t, late, &up), Ok(up.len()));
    assert!(server_events(&mut p.server).contains(&ServerEvent::PeerClosed { session: p.sid }));
}

/// Regression guard (PROTOCOL.md 6.7): the client's monotonic clock stood
/// still for ten minutes (a suspend) while the transport survived. The
/// server's CLOSE, stamped ten minutes ahead of the client's estimate, is
/// accepted and becomes the client's clock base, so the client's own CLOSE
/// is fresh at the server and the session ends cleanly on this transport.
#[test]
fn client_clock_standing_still_keeps_the_link_and_rebases() {
    let mut p = Pair::new(50, Config::default(), Config::default());
    let server_now = at(600);
    let client_now = at(1);
    p.server.close(p.sid).unwrap();
    let down = server_tx(&mut p.server, p.t, server_now);
    assert_eq!(p.client.handle_input(client_now, &down), Ok(down.len()));
    assert_eq!(
        p.client.server_time(client_now),
        Some(UnixTime::from_micros(server_now.as_micros())),
        "the stamp ahead became the base"
    );
    p.client.close();
    let up = client_tx(&mut p.client, client_now);
    assert_eq!(p.server.handle_input(p.t, server_now, &up), Ok(up.len()));
    let evs = server_events(&mut p.server);
    assert!(
        evs.contains(&ServerEvent::PeerClosed { session: p.sid }),
        "{evs:?}"
    );
}

/// Regression guard: the server's clock steps back by three windows (an
/// NTP correction) during a session. The client's CLOSE, stamped from the
/// old base, is refused Stale; the resume is refused Stale with the
/// server's new clock (authenticated), which re-bases the client; the
/// CLOSE re-sent on the next transport is fresh. No livelock.
#[test]
fn server_clock_stepping_back_costs_one_resume_round_trip() {
    let base = 1_790_000_000_000_000u64;
    let wall = ManualWall::new(base);
    let mut client = Client::new(wall_config(&wall, Config::default()), common::rng(60));
    let mut server = Server::new(wall_config(&wall, Config::default()), common::rng(61));
    let (t, sid) = handshake_by_hand(&mut client, &mut server, T0);
    client_events(&mut client);
    server_events(&mut server);
    assert_eq!(client.server_time(T0), Some(UnixTime::from_micros(base)));
    // The step: the server's clock now reads three windows less.
    let now = at(10);
    wall.set(base + 10_000_000 - 3 * WINDOW.as_micros());
    client.close();
    let up = client_tx(&mut client, now);
    assert_eq!(server.handle_input(t, now, &up), Err(Error::Stale));
    server.transport_lost(t, now);
    client.transport_lost(now);
    server_events(&mut server);
    client_events(&mut client);
    let mut t = None;
    for attempt in 0..3 {
        let tr = server.accept(now).unwrap();
        client.new_transport(now).unwrap();
        let req = client_tx(&mut client, now);
        let r = server.handle_input(tr, now, &req);
        let reply = server_tx(&mut server, tr, now);
        let c = client.handle_input(now, &reply);
        server_events(&mut server);
        client_events(&mut client);
        if r.is_ok() && client.is_connected() {
            assert!(
                attempt >= 1,
                "the first resume is stamped from the old base"
            );
            t = Some(tr);
            break;
        }
        assert!(c.is_err(), "attempt {attempt}: {r:?} {c:?}");
        server.transport_lost(tr, now);
    }
    let t = t.expect("resumed after one Stale answer");
    // The CLOSE is re-sent, freshly stamped, and accepted.
    let mut closed = false;
    for _ in 0..5 {
        let up = client_tx(&mut client, now);
        if !up.is_empty() {
            assert_eq!(server.handle_input(t, now, &up), Ok(up.len()));
        }
        closed |= server_events(&mut server).contains(&ServerEvent::PeerClosed { session: sid });
        let down = server_tx(&mut server, t, now);
        if !down.is_empty() {
            client.handle_input(now, &down).unwrap();
        }
    }
    assert!(closed, "the re-sent CLOSE was accepted");
}
