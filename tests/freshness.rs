//! Freshness (issue 11, design §3; PROTOCOL.md 3.2, 3.3, 6.7): the
//! time stamps of the messages that change state, the server's hello
//! checks before any key computation (window, replay cache and its floor),
//! the client's clock correction after a Stale hello, the stamps of CLOSE
//! and ABORT with the allowance for input held back, the client's clock
//! offset from the server's keepalives, and replays of stamped frames on a
//! later transport.
//!
//! Every test drives `Client` and `Server` by hand with injected clocks:
//! the server's freshness clock is its monotonic `now` unless a test gives
//! it a wall clock; stale stamps are produced with the `test-hooks` hook
//! `set_stamp_skew`.

mod common;
mod support_c;

use std::cell::Cell;
use std::convert::Infallible;
use std::rc::Rc;

use rand_core::{Rng, TryCryptoRng, TryRng};
use relink::wire::{CLIENT_HELLO_LEN, SERVER_HELLO_LEN, VERSION};
use relink::{
    AbortCode, Client, CloseReason, Config, Duration, Error, Event, HandshakeStatus, Instant,
    Server, ServerEvent, SessionId, TransportId, UnixTime,
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

// ---------------------------------------------------------------------------
// Helpers

/// A ChaCha20 RNG that counts the bytes drawn from it.
struct CountingRng {
    inner: chacha20::ChaCha20Rng,
    drawn: Rc<Cell<usize>>,
}

impl CountingRng {
    fn new(seed: u64) -> (CountingRng, Rc<Cell<usize>>) {
        let drawn = Rc::new(Cell::new(0));
        (
            CountingRng {
                inner: common::rng(seed),
                drawn: drawn.clone(),
            },
            drawn,
        )
    }
}

impl TryRng for CountingRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.drawn.set(self.drawn.get() + 4);
        Ok(self.inner.next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.drawn.set(self.drawn.get() + 8);
        Ok(self.inner.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.drawn.set(self.drawn.get() + dst.len());
        self.inner.fill_bytes(dst);
        Ok(())
    }
}

impl TryCryptoRng for CountingRng {}

/// Everything `server` transmits on `t` now.
fn stx<R: rand_core::CryptoRng>(s: &mut Server<R>, t: TransportId, now: Instant) -> Vec<u8> {
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::new();
    loop {
        match s.poll_transmit(t, now, &mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn sevents<R: rand_core::CryptoRng>(s: &mut Server<R>) -> Vec<ServerEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// The ClientHello of a fresh client whose wall clock reads `time`.
fn hello_at(time: u64, seed: u64) -> Vec<u8> {
    hello_at_time(T0, time, seed)
}

/// Offer `hello` on a new transport of `server`; returns the result, the
/// reply and the transport (ended or waiting for the confirm).
fn offer<R: rand_core::CryptoRng>(
    server: &mut Server<R>,
    now: Instant,
    hello: &[u8],
) -> (Result<usize, Error>, Vec<u8>, TransportId) {
    let t = server.accept(now).unwrap();
    let r = server.handle_input(t, now, hello);
    let reply = stx(server, t, now);
    (r, reply, t)
}

/// A client and a server with one established session (no wall clocks:
/// the server's freshness clock is `now`).
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
        client_events(&mut client);
        server_events(&mut server);
        Pair {
            client,
            server,
            t,
            sid,
        }
    }

    /// Both sides lose the transport; a new one resumes at `now`.
    fn resume(&mut self, now: Instant) {
        self.server.transport_lost(self.t, now);
        self.client.transport_lost(now);
        let t = self.server.accept(now).unwrap();
        self.client.new_transport(now).unwrap();
        let req = client_tx(&mut self.client, now);
        assert_eq!(self.server.handle_input(t, now, &req), Ok(req.len()));
        let resp = server_tx(&mut self.server, t, now);
        assert_eq!(self.client.handle_input(now, &resp), Ok(resp.len()));
        assert!(self.client.is_connected());
        self.t = t;
    }

    /// Deliver everything each side transmits at `now`, both ways, until
    /// quiet; `Err` of the first side whose input failed.
    fn exchange(&mut self, now: Instant) -> Result<(), Error> {
        for _ in 0..20 {
            let up = client_tx(&mut self.client, now);
            if !up.is_empty() {
                self.server.handle_input(self.t, now, &up)?;
            }
            let down = server_tx(&mut self.server, self.t, now);
            if !down.is_empty() {
                self.client.handle_input(now, &down)?;
            }
            if up.is_empty() && down.is_empty() {
                return Ok(());
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Hello: replay cache, window, floor

/// A ClientHello replayed within the window is answered `02 06` (Replayed)
/// without any random draw (so without a key generation), without a
/// session slot, and the genuine session is untouched. (Design §3.5.)
#[test]
fn replayed_hello_within_the_window_costs_no_draw_and_no_session() {
    let (srng, drawn) = CountingRng::new(1);
    let mut server = Server::new(Config::default(), srng);
    let hello = hello_at(T0.as_micros(), 2);
    let (r, reply, _t1) = offer(&mut server, T0, &hello);
    assert_eq!(r, Ok(CLIENT_HELLO_LEN));
    assert_eq!(reply.len(), SERVER_HELLO_LEN);
    let honest_draws = drawn.get();
    assert!(honest_draws >= 32 + 16 + 8 + 32, "{honest_draws}");
    assert_eq!(server.session_count(), 1);
    sevents(&mut server);
    // The same bytes, 10 s later (inside the window), on another transport.
    let now = at(10);
    let (r, reply, t2) = offer(&mut server, now, &hello);
    assert_eq!(r, Err(Error::HandshakeRejected(HandshakeStatus::Replayed)));
    assert_eq!(reply, vec![VERSION, HandshakeStatus::Replayed.to_byte()]);
    assert_eq!(drawn.get(), honest_draws, "a replay draws nothing");
    assert_eq!(server.session_count(), 1, "a replay takes no session slot");
    assert_eq!(
        sevents(&mut server),
        vec![ServerEvent::CloseTransport {
            transport: t2,
            error: Some(Error::HandshakeRejected(HandshakeStatus::Replayed))
        }]
    );
    assert_eq!(server.endpoint().remembered_hellos(), 1);
}

/// The same hello once the window has passed is refused Stale, with the
/// server's clock, again before any draw.
#[test]
fn replayed_hello_after_the_window_is_stale() {
    let (srng, drawn) = CountingRng::new(3);
    let mut server = Server::new(Config::default(), srng);
    let hello = hello_at(T0.as_micros(), 4);
    let (r, _, _) = offer(&mut server, T0, &hello);
    assert_eq!(r, Ok(CLIENT_HELLO_LEN));
    let draws = drawn.get();
    let late = T0.saturating_add(WINDOW).saturating_add(secs(1));
    let (r, reply, _) = offer(&mut server, late, &hello);
    assert_eq!(r, Err(Error::HandshakeRejected(HandshakeStatus::Stale)));
    assert_eq!(reply, stale_answer(late.as_micros()));
    assert_eq!(drawn.get(), draws);
    assert_eq!(server.session_count(), 1);
    // A hello from the future is Stale too.
    let future = hello_at(late.as_micros() + WINDOW.as_micros() + 1_000_000, 5);
    let (r, reply, _) = offer(&mut server, late, &future);
    assert_eq!(r, Err(Error::HandshakeRejected(HandshakeStatus::Stale)));
    assert_eq!(reply, stale_answer(late.as_micros()));
}

/// A full replay cache forgets its oldest hello and refuses, as Stale,
/// every hello stamped at or before that one (it could be its replay);
/// newer hellos are served. Entries that left the window are pruned.
#[test]
fn full_hello_cache_raises_a_floor() {
    let cfg = Config {
        hello_cache: 2,
        ..Config::default()
    };
    let (srng, drawn) = CountingRng::new(6);
    let mut server = Server::new(cfg, srng);
    let now = at(30);
    let t = |s: u64| at(s).as_micros();
    let h1 = hello_at(t(10), 7);
    let h2 = hello_at(t(11), 8);
    let h3 = hello_at(t(12), 9);
    for h in [&h1, &h2, &h3] {
        let (r, reply, _) = offer(&mut server, now, h);
        assert_eq!(r, Ok(CLIENT_HELLO_LEN));
        assert_eq!(reply.len(), SERVER_HELLO_LEN);
    }
    assert_eq!(server.endpoint().remembered_hellos(), 2);
    let draws = drawn.get();
    // h1 was forgotten: its replay is refused by the floor (Stale), not
    // served again.
    let (r, reply, _) = offer(&mut server, now, &h1);
    assert_eq!(r, Err(Error::HandshakeRejected(HandshakeStatus::Stale)));
    assert_eq!(reply, stale_answer(now.as_micros()));
    // So is any new hello stamped at the floor; h2 is still remembered.
    let (r, _, _) = offer(&mut server, now, &hello_at(t(10), 10));
    assert_eq!(r, Err(Error::HandshakeRejected(HandshakeStatus::Stale)));
    let (r, _, _) = offer(&mut server, now, &h2);
    assert_eq!(r, Err(Error::HandshakeRejected(HandshakeStatus::Replayed)));
    assert_eq!(drawn.get(), draws, "refusals draw nothing");
    // A hello stamped after the floor is served.
    let (r, _, _) = offer(&mut server, now, &hello_at(t(10) + 1, 11));
    assert_eq!(r, Ok(CLIENT_HELLO_LEN));
    // Much later every entry has left the window.
    let later = at(500);
    server.handle_timeout(later);
    assert_eq!(server.endpoint().remembered_hellos(), 0);
}

/// A client whose wall clock is 3 hours behind gets one Stale answer,
/// stamps its next hello from the server's time and gets a session; data
/// flows, and a later resume is fresh.
#[test]
fn client_three_hours_behind_works_after_one_stale() {
    let base = 1_790_000_000_000_000u64;
    let wall = ManualWall::new(base);
    let mut server = Server::new(wall_config(&wall, Config::default()), common::rng(12));
    let mut client = Client::new(
        Config {
            wall_clock: common::wall_at(base - 3 * 3_600_000_000),
            ..Config::default()
        },
        common::rng(13),
    );
    let t1 = server.accept(T0).unwrap();
    client.new_transport(T0).unwrap();
    let hello = client_tx(&mut client, T0);
    assert_eq!(
        server.handle_input(t1, T0, &hello),
        Err(Error::HandshakeRejected(HandshakeStatus::Stale))
    );
    let reply = server_tx(&mut server, t1, T0);
    assert_eq!(reply, stale_answer(base));
    let later = T0.saturating_add(Duration::from_millis(40));
    assert_eq!(
        client.handle_input(later, &reply),
        Err(Error::HandshakeRejected(HandshakeStatus::Stale))
    );
    assert!(!client.is_closed(), "a Stale hello costs one transport");
    assert_eq!(
        client_events(&mut client),
        vec![Event::TransportLost {
            error: Some(Error::HandshakeRejected(HandshakeStatus::Stale))
        }]
    );
    client.transport_lost(later);
    server.transport_lost(t1, later);
    // The second hello carries the server's time (+ 40 ms) and is served.
    wall.set(base + 60_000);
    let (t2, sid) = handshake_by_hand(&mut client, &mut server, later);
    assert_eq!(client.send(b"after correction"), Ok(16));
    let out = client_tx(&mut client, later);
    server.handle_input(t2, later, &out).unwrap();
    assert_eq!(server_recv_all(&mut server, sid), b"after correction");
    // A later resume is fresh: the session's clock base is the server's.
    let resume_at = later.saturating_add(secs(30));
    wall.set(base + 30_060_000);
    server.transport_lost(t2, resume_at);
    client.transport_lost(resume_at);
    let t3 = server.accept(resume_at).unwrap();
    client.new_transport(resume_at).unwrap();
    let req = client_tx(&mut client, resume_at);
    assert_eq!(server.handle_input(t3, resume_at, &req), Ok(req.len()));
    let resp = server_tx(&mut server, t3, resume_at);
    assert_eq!(client.handle_input(resume_at, &resp), Ok(resp.len()));
    assert!(client.is_connected());
}

/// A forged Stale answer with a bogus time costs one more retry only: the
/// next hello, stamped with the bogus time, gets the real server's Stale
/// answer with its real time, and the hello after that is served.
#[test]
fn forged_hello_stale_costs_one_retry() {
    let base = 1_790_000_000_000_000u64;
    let wall = ManualWall::new(base);
    let mut server = Server::new(wall_config(&wall, Config::default()), common::rng(14));
    let mut client = Client::new(
        Config {
            wall_clock: common::wall_at(base),
            ..Config::default()
        },
        common::rng(15),
    );
    // Attempt 1: a forger answers first.
    client.new_transport(T0).unwrap();
    let _ = client_tx(&mut client, T0);
    let bogus = 42u64;
    assert_eq!(
        client.handle_input(T0, &stale_answer(bogus)),
        Err(Error::HandshakeRejected(HandshakeStatus::Stale))
    );
    client.transport_lost(T0);
    // Attempt 2 reaches the real server (its clock reads `base`, far from
    // the forged 42 µs).
    let now = at(1000);
    let t = server.accept(now).unwrap();
    client.new_transport(now).unwrap();
    let hello = client_tx(&mut client, now);
    let stamped = u64::from_le_bytes(hello[35..43].try_into().unwrap());
    assert_eq!(stamped, bogus + secs(1000).as_micros());
    assert_eq!(
        server.handle_input(t, now, &hello),
        Err(Error::HandshakeRejected(HandshakeStatus::Stale))
    );
    let reply = server_tx(&mut server, t, now);
    assert_eq!(
        client.handle_input(now, &reply),
        Err(Error::HandshakeRejected(HandshakeStatus::Stale))
    );
    client.transport_lost(now);
    server.transport_lost(t, now);
    // Attempt 3 is served.
    handshake_by_hand(&mut client, &mut server, now);
    assert!(client.is_connected() && !client.is_closed());
}

// ---------------------------------------------------------------------------
// CLOSE and ABORT stamps

/// A CLOSE stamped outside the window is refused (`Error::Stale`, not an
/// authentication failure): the transport ends, the session survives, the
/// CLOSE is re-sent, freshly stamped, after the resume and the session
/// then ends cleanly. Both directions.
#[test]
fn stale_close_is_refused_then_resent_fresh() {
    for client_closes in [true, false] {
        let what = if client_closes { "client" } else { "server" };
        let mut p = Pair::new(16, Config::default(), Config::default());
        let skew = -(2 * WINDOW.as_micros() as i64);
        // Late enough that a stamp two windows back is still positive.
        let now = at(1000);
        if client_closes {
            p.client.set_stamp_skew(skew);
            p.client.close();
            let up = client_tx(&mut p.client, now);
            assert_eq!(
                p.server.handle_input(p.t, now, &up),
                Err(Error::Stale),
                "{what}"
            );
            assert_eq!(
                server_events(&mut p.server),
                vec![ServerEvent::CloseTransport {
                    transport: p.t,
                    error: Some(Error::Stale)
                }],
                "{what}: no PeerClosed"
            );
            p.client.set_stamp_skew(0);
        } else {
            p.server.set_stamp_skew(p.sid, skew).unwrap();
            p.server.close(p.sid).unwrap();
            let down = server_tx(&mut p.server, p.t, now);
            assert_eq!(
                p.client.handle_input(now, &down),
                Err(Error::Stale),
                "{what}"
            );
            assert_eq!(
                client_events(&mut p.client),
                vec![Event::TransportLost {
                    error: Some(Error::Stale)
                }],
                "{what}: no PeerClosed, no authentication failure"
            );
            p.server.set_stamp_skew(p.sid, 0).unwrap();
        }
        assert!(
            p.server.has_session(p.sid) && !p.client.is_closed(),
            "{what}"
        );
        // Resume: the CLOSE goes out again with a fresh stamp.
        let now = at(1001);
        p.resume(now);
        if client_closes {
            p.server.close(p.sid).unwrap();
        } else {
            p.client.close();
        }
        p.exchange(now).unwrap();
        assert_eq!(p.client.close_reason(), Some(CloseReason::Clean), "{what}");
        assert!(
            server_events(&mut p.server).contains(&ServerEvent::Closed {
                session: p.sid,
                reason: CloseReason::Clean
            }),
            "{what}"
        );
    }
}

/// The same for ABORT: a stale ABORT aborts nothing; the re-sent one after
/// the resume does, and is answered.
#[test]
fn stale_abort_is_refused_then_resent_fresh() {
    let code = AbortCode(0x777);
    for client_aborts in [true, false] {
        let what = if client_aborts { "client" } else { "server" };
        let mut p = Pair::new(17, Config::default(), Config::default());
        let skew = -(2 * WINDOW.as_micros() as i64);
        let now = at(1000);
        if client_aborts {
            p.client.set_stamp_skew(skew);
            p.client.abort(code);
            let up = client_tx(&mut p.client, now);
            assert_eq!(
                p.server.handle_input(p.t, now, &up),
                Err(Error::Stale),
                "{what}"
            );
            assert!(
                !server_events(&mut p.server)
                    .iter()
                    .any(|e| matches!(e, ServerEvent::Closed { .. })),
                "{what}"
            );
            p.client.set_stamp_skew(0);
        } else {
            p.server.set_stamp_skew(p.sid, skew).unwrap();
            p.server.abort(p.sid, code).unwrap();
            let down = server_tx(&mut p.server, p.t, now);
            assert_eq!(
                p.client.handle_input(now, &down),
                Err(Error::Stale),
                "{what}"
            );
            assert_eq!(p.client.close_reason(), None, "{what}");
            p.server.set_stamp_skew(p.sid, 0).unwrap();
        }
        let now = at(1001);
        p.resume(now);
        p.exchange(now).unwrap();
        assert_eq!(
            p.client.close_reason(),
            Some(CloseReason::Aborted {
                code,
                by_peer: !client_aborts
            }),
            "{what}"
        );
        assert!(
            server_events(&mut p.server).contains(&ServerEvent::Closed {
                session: p.sid,
                reason: CloseReason::Aborted {
                    code,
                    by_peer: client_aborts
                }
            }),
            "{what}"
        );
    }
}

/// A CLOSE that waited behind input the server held back (its application
/// did not read) for twice the window is accepted: the held time is
/// allowed on top of the window. Without the allowance it would be
/// refused, re-sent behind the same data and refused again.
#[test]
fn close_held_back_for_twice_the_window_is_accepted() {
    let scfg = Config {
        recv_buffer: 0, // the smallest: one maximal frame
        ..Config::default()
    };
    let mut p = Pair::new(18, Config::default(), scfg);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(p.client.send(&data), Ok(data.len()));
    p.client.close();
    let now = at(1);
    let up = client_tx(&mut p.client, now);
    // The server takes what fits and holds the rest back.
    let mut rest: &[u8] = &up;
    let n = p.server.handle_input(p.t, now, rest).unwrap();
    assert!(n < rest.len(), "input held back");
    rest = &rest[n..];
    // The application reads only after twice the window.
    let late = now
        .saturating_add(WINDOW)
        .saturating_add(WINDOW)
        .saturating_add(secs(5));
    let mut got = Vec::new();
    while !rest.is_empty() {
        got.extend(server_recv_all(&mut p.server, p.sid));
        let n = p.server.handle_input(p.t, late, rest).expect("accepted");
        assert!(n > 0);
        rest = &rest[n..];
    }
    got.extend(server_recv_all(&mut p.server, p.sid));
    assert_eq!(got, data);
    assert!(server_events(&mut p.server).contains(&ServerEvent::PeerClosed { session: p.sid }));
}

/// The refusal the allowance prevents: the same CLOSE, delayed as long but
/// not held back by this side (a withheld frame), is Stale.
#[test]
fn close_delayed_twice_the_window_without_holding_is_stale() {
    let mut p = Pair::new(19, Config::default(), Config::default());
    p.client.close();
    let now = at(1);
    let up = client_tx(&mut p.client, now);
    let late = now
        .saturating_add(WINDOW)
        .saturating_add(WINDOW)
        .saturating_add(secs(5));
    assert_eq!(p.server.handle_input(p.t, late, &up), Err(Error::Stale));
}

/// Frames are bound to their transport: CLOSE and ABORT bytes captured on
/// one transport fail the tag on a later one (another generation), so
/// they cannot be replayed there, whatever their stamp.
#[test]
fn replayed_close_and_abort_bytes_fail_on_a_later_transport() {
    for abort in [false, true] {
        let mut p = Pair::new(20 + abort as u64, Config::default(), Config::default());
        let now = at(1);
        if abort {
            p.client.abort(AbortCode(5));
        } else {
            p.client.close();
        }
        let captured = client_tx(&mut p.client, now);
        assert!(!captured.is_empty());
        // Never delivered: the transport breaks; the client resumes.
        p.resume(now);
        server_events(&mut p.server);
        // The captured bytes instead of the client's own resend.
        assert_eq!(
            p.server.handle_input(p.t, now, &captured),
            Err(Error::AuthFailed),
            "abort {abort}"
        );
        let evs = server_events(&mut p.server);
        assert!(
            !evs.iter().any(|e| matches!(
                e,
                ServerEvent::PeerClosed { .. } | ServerEvent::Closed { .. }
            )),
            "abort {abort}: {evs:?}"
        );
        assert!(p.server.has_session(p.sid));
    }
}

// ---------------------------------------------------------------------------
// Clock offset

/// The client's estimate of the server's clock follows the server's
/// keepalive PINGs: with the server's clock drifting away from the
/// client's, each verified PING re-bases the offset exactly.
#[test]
fn client_clock_offset_follows_server_pings() {
    // Client and server clocks differ by 7 s (the server's is ahead).
    let d = secs(7);
    let mut client = Client::new(Config::default(), common::rng(22));
    let mut server = Server::new(Config::default(), common::rng(23));
    assert_eq!(client.server_clock_offset(), None);
    let c0 = T0;
    let s0 = c0.saturating_add(d);
    let t = server.accept(s0).unwrap();
    client.new_transport(c0).unwrap();
    let hello = client_tx(&mut client, c0);
    server.handle_input(t, s0, &hello).unwrap();
    let sh = server_tx(&mut server, t, s0);
    client.handle_input(c0, &sh).unwrap();
    let cc = client_tx(&mut client, c0);
    server.handle_input(t, s0, &cc).unwrap();
    assert_eq!(client.server_clock_offset(), Some(d.as_micros() as i64));
    // The server's first PING (right after the handshake) and then one per
    // keepalive interval; its clock runs 1 ms per second faster.
    let mut drift = 0u64;
    for k in 0..4u64 {
        let c = c0.saturating_add(secs(6 * k + 1));
        let s = Instant::from_micros(c.as_micros() + d.as_micros() + drift);
        server.handle_timeout(s);
        let ping = server_tx(&mut server, t, s);
        assert!(!ping.is_empty(), "a PING is due at step {k}");
        assert_eq!(client.handle_input(c, &ping), Ok(ping.len()));
        assert_eq!(
            client.server_clock_offset(),
            Some((d.as_micros() + drift) as i64),
            "step {k}"
        );
        assert_eq!(
            client.server_time(c.saturating_add(secs(1))),
            Some(UnixTime::from_micros(s.as_micros() + 1_000_000))
        );
        // Keep the server's input side alive.
        let up = client_tx(&mut client, c);
        if !up.is_empty() {
            server.handle_input(t, s, &up).unwrap();
        }
        drift += 6_000;
    }
}
