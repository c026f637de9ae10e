//! Helpers of the security tests (handshake tampering, frame integrity,
//! hostile input, man in the middle): capture what a state machine
//! transmits, flip bits, feed bytes in chunks, drain events and received
//! data, and classify errors.
//!
//! Every test file that uses this module also declares `mod common;`.
#![allow(dead_code)]

use chacha20::ChaCha20Rng;
use relink::{Client, Error, Event, Instant, Server, ServerEvent, SessionId, TransportId};

/// The client type of the tests.
pub type TestClient = Client<ChaCha20Rng>;
/// The server type of the tests.
pub type TestServer = Server<ChaCha20Rng>;

/// `msg` with bit `bit` flipped (bit 0 is the least significant bit of
/// byte 0, bit 8 the least significant bit of byte 1, ...).
pub fn flipped(msg: &[u8], bit: usize) -> Vec<u8> {
    let mut v = msg.to_vec();
    v[bit / 8] ^= 1 << (bit % 8);
    v
}

/// Everything the client wants to write now.
pub fn client_tx(c: &mut TestClient, now: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = c
            .poll_transmit(now, &mut buf)
            .expect("client poll_transmit");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Everything the server wants to write on `t` now (empty once it
/// forgot the transport).
pub fn server_tx(s: &mut TestServer, t: TransportId, now: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.poll_transmit(t, now, &mut buf) {
            Ok(0) | Err(Error::UnknownTransport) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("server poll_transmit: {e:?}"),
        }
    }
}

/// Drain the client's events.
pub fn client_events(c: &mut TestClient) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// Drain the server's events.
pub fn server_events(s: &mut TestServer) -> Vec<ServerEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Read everything the client has verified (stops at WouldBlock, EOF or
/// any error).
pub fn client_recv_all(c: &mut TestClient) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = c.recv(&mut buf) {
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// Read everything `sid` has verified (empty for an unknown session).
pub fn server_recv_all(s: &mut TestServer, sid: SessionId) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = s.recv(sid, &mut buf) {
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// Feed `input` to `handle` in chunks whose sizes `next_chunk` chooses,
/// calling `drain` after every call (it reads received data so that the
/// receive buffer never blocks). Returns the first error, or `Ok(())` once
/// everything was consumed.
pub fn feed_chunked(
    input: &[u8],
    mut next_chunk: impl FnMut() -> usize,
    mut handle: impl FnMut(&[u8]) -> Result<usize, Error>,
    mut drain: impl FnMut(),
) -> Result<(), Error> {
    let mut pos = 0;
    let mut stalled = 0;
    while pos < input.len() {
        let end = (pos + next_chunk().max(1)).min(input.len());
        let r = handle(&input[pos..end]);
        drain();
        let k = r?;
        assert!(k <= end - pos, "consumed more than offered");
        pos += k;
        stalled = if k == 0 { stalled + 1 } else { 0 };
        assert!(stalled < 3, "handle_input makes no progress at {pos}");
    }
    Ok(())
}

/// The errors a hostile or corrupted transport may cause: a malformed
/// message, a failed MAC, a (possibly forged) rejection, or the transport
/// having been ended by an earlier one of these.
pub fn is_hostile_input_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Protocol(_)
            | Error::AuthFailed
            | Error::HandshakeRejected(_)
            | Error::ResumeRejected(_)
            | Error::TransportEnded
    )
}

/// `got` is the deterministic stream `pattern(salt, ..)` at offset `start`.
#[allow(unused_imports)]
pub use crate::common::matches_pattern;

/// A genuine handshake over captured bytes on a new transport; returns the
/// transport and the server's session.
pub fn handshake_by_hand(
    client: &mut TestClient,
    server: &mut TestServer,
    now: Instant,
) -> (TransportId, SessionId) {
    let t = server.accept(now).expect("accept");
    client.new_transport(now).expect("new_transport");
    let hello = client_tx(client, now);
    assert_eq!(server.handle_input(t, now, &hello), Ok(hello.len()));
    let sh = server_tx(server, t, now);
    assert_eq!(client.handle_input(now, &sh), Ok(sh.len()));
    assert!(client.is_connected());
    let out = client_tx(client, now);
    assert_eq!(server.handle_input(t, now, &out), Ok(out.len()));
    let sid = server
        .session_of(t)
        .expect("server attached the new session");
    assert_eq!(server.conn_id(sid), client.conn_id());
    (t, sid)
}

/// Resume `p`'s session on a new transport and run until both sides are
/// attached and nothing is in flight.
pub fn reconnect(p: &mut crate::common::Net) {
    p.break_transport();
    p.open_transport();
    for _ in 0..200 {
        p.step();
        let t = p.tid.expect("transport");
        if p.client.is_connected() && p.server.session_of(t).is_some() {
            p.settle(50);
            assert!(!p.ended, "reconnect failed: {:?}", p.cev);
            return;
        }
    }
    panic!("resume did not complete: {:?}", p.cev);
}

/// Pump both pattern streams of `p` until `total` bytes arrived each way,
/// checking every byte (see `common::pump_*`).
pub fn finish_flows(
    p: &mut crate::common::Net,
    up: &mut crate::common::Flow,
    down: &mut crate::common::Flow,
    total: u64,
    what: &str,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut rounds = 0;
    while up.read < total || down.read < total {
        crate::common::pump_client_to_server(p, up, total, 4000, &mut buf);
        crate::common::pump_server_to_client(p, down, total, 4000, &mut buf);
        p.step();
        assert!(!p.ended, "{what}: transport ended: {:?}", p.cev);
        rounds += 1;
        assert!(rounds < 20_000, "{what}: stuck {up:?} {down:?}");
    }
    assert_eq!((up.read, down.read), (total, total), "{what}");
}

// ----- freshness (PROTOCOL.md 3.3, 6.7): tests/freshness.rs, tests/review11.rs

/// A wall clock the test sets (µs since the Unix epoch).
#[derive(Default)]
pub struct ManualWall(std::sync::atomic::AtomicU64);

impl ManualWall {
    pub fn new(t: u64) -> std::sync::Arc<ManualWall> {
        std::sync::Arc::new(ManualWall(std::sync::atomic::AtomicU64::new(t)))
    }
    pub fn set(&self, t: u64) {
        self.0.store(t, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl relink::WallClock for ManualWall {
    fn now(&self) -> relink::UnixTime {
        relink::UnixTime::from_micros(self.get())
    }
}

/// `base` with `wall` as its wall clock.
pub fn wall_config(wall: &std::sync::Arc<ManualWall>, base: relink::Config) -> relink::Config {
    relink::Config {
        wall_clock: Some(wall.clone() as std::sync::Arc<dyn relink::WallClock>),
        ..base
    }
}

/// The ClientHello, at `now`, of a fresh client whose wall clock reads
/// `time` (checked: the hello carries it at 35..43).
pub fn hello_at_time(now: Instant, time: u64, seed: u64) -> Vec<u8> {
    let mut c = Client::new(
        relink::Config {
            wall_clock: crate::common::wall_at(time),
            ..relink::Config::default()
        },
        crate::common::rng(seed),
    );
    c.new_transport(now).unwrap();
    let h = client_tx(&mut c, now);
    assert_eq!(h.len(), relink::wire::CLIENT_HELLO_LEN);
    assert_eq!(u64::from_le_bytes(h[35..43].try_into().unwrap()), time);
    h
}

/// The server's 10-byte Stale answer to a hello, carrying `server_time`.
pub fn stale_answer(server_time: u64) -> Vec<u8> {
    let mut v = vec![
        relink::wire::VERSION,
        relink::HandshakeStatus::Stale.to_byte(),
    ];
    v.extend(server_time.to_le_bytes());
    v
}

// ----- admission control (PROTOCOL.md 3.7): tests/admission.rs, tests/review13.rs

/// Helpers of the admission tests: a server and clients sharing a manual
/// wall clock, hellos by hand, a handshake from a given source address.
pub mod admission {
    use super::*;
    use rand_core::Rng;
    use relink::wire::{ClientHello, VERSION};
    use relink::Config;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    /// The wall clock's origin of the admission tests (µs since the Unix epoch).
    pub const T0: u64 = 1_800_000_000_000_000;

    pub fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    pub fn server(cfg: Config) -> (TestServer, Arc<ManualWall>) {
        let wall = ManualWall::new(T0);
        let s = Server::new(wall_config(&wall, cfg), crate::common::rng(1));
        (s, wall)
    }

    pub fn client(wall: &Arc<ManualWall>, seed: u64) -> TestClient {
        Client::new(
            wall_config(wall, Config::default()),
            crate::common::rng(seed),
        )
    }

    pub fn at(wall: &Arc<ManualWall>, now: Instant) -> Instant {
        wall.set(T0 + now.as_micros());
        now
    }

    pub fn hello_with(
        wall: &Arc<ManualWall>,
        rng: &mut chacha20::ChaCha20Rng,
        flags: u8,
    ) -> Vec<u8> {
        let mut ephemeral = [0u8; 32];
        rng.fill_bytes(&mut ephemeral);
        ClientHello {
            version: VERSION,
            flags,
            ephemeral,
            time: wall.get(),
        }
        .encode()
        .to_vec()
    }

    pub fn bogus_hello(wall: &Arc<ManualWall>, rng: &mut chacha20::ChaCha20Rng) -> Vec<u8> {
        hello_with(wall, rng, 0)
    }

    /// Run a client's handshake (or resume) on a new transport from `src`
    /// until both sides are attached.
    pub fn connect(
        s: &mut TestServer,
        c: &mut TestClient,
        src: IpAddr,
        now: Instant,
    ) -> Result<(TransportId, SessionId), Error> {
        let t = s.accept_from(now, src)?;
        c.new_transport(now).expect("new_transport");
        for _ in 0..8 {
            let out = client_tx(c, now);
            if !out.is_empty() {
                if let Err(e) = s.handle_input(t, now, &out) {
                    let answer = server_tx(s, t, now);
                    let _ = c.handle_input(now, &answer);
                    s.transport_lost(t, now);
                    c.transport_lost(now);
                    return Err(e);
                }
            }
            let back = server_tx(s, t, now);
            if !back.is_empty() {
                if let Err(e) = c.handle_input(now, &back) {
                    s.transport_lost(t, now);
                    c.transport_lost(now);
                    return Err(e);
                }
            }
            if let (Some(sid), true) = (s.session_of(t), c.is_connected()) {
                return Ok((t, sid));
            }
        }
        Err(Error::TimedOut)
    }

    pub fn exchange(s: &mut TestServer, c: &mut TestClient, t: TransportId, sid: SessionId) {
        let now = Instant::from_micros(0);
        assert_eq!(c.send(b"up").unwrap(), 2);
        assert_eq!(s.send(sid, b"down").unwrap(), 4);
        for _ in 0..4 {
            let out = client_tx(c, now);
            s.handle_input(t, now, &out).unwrap();
            let back = server_tx(s, t, now);
            c.handle_input(now, &back).unwrap();
        }
        assert_eq!(server_recv_all(s, sid), b"up");
        assert_eq!(client_recv_all(c), b"down");
    }

    pub fn always_cookie() -> Config {
        Config {
            cookie_threshold: 0,
            ..Config::default()
        }
    }
}
