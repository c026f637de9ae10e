//! In-memory client/server harness: one `Client`, one `Server`, a simulated
//! transport between them (two byte pipes), injected time and seeded RNGs.
//! Fault injection: `break_transport` (in-flight bytes are lost); tests
//! that need finer faults use `tests/support_d.rs`.
#![allow(dead_code)]

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// Uniform-ish integer in `lo..=hi`.
pub fn between(rng: &mut ChaCha20Rng, lo: usize, hi: usize) -> usize {
    lo + (rng.next_u64() % (hi - lo + 1) as u64) as usize
}
use relink::{
    Client, Config, Duration, Event, Instant, Server, ServerEvent, SessionId, TransportId,
};

/// Seeded CSPRNG for the state machines and for the test's own choices.
pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Deterministic pseudo-random stream content: byte `i` of stream `salt`.
pub fn pattern(salt: u8, offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let x = (offset + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (salt as u64) << 56;
        *b = (x >> 29) as u8 ^ (x >> 47) as u8;
    }
}

/// Harness state.
pub struct Pair {
    pub client: Client<ChaCha20Rng>,
    pub server: Server<ChaCha20Rng>,
    pub now: Instant,
    pub transport: Option<TransportId>,
    pub session: Option<SessionId>,
    /// Bytes written by the client not yet delivered to the server.
    pub c2s: Vec<u8>,
    /// Bytes written by the server not yet delivered to the client.
    pub s2c: Vec<u8>,
    pub rng: ChaCha20Rng,
    /// Largest chunk delivered at once (random 1..=max_chunk).
    pub max_chunk: usize,
    /// Bytes kept in flight per direction at most (a TCP window).
    pub window: usize,
    pub client_events: Vec<Event>,
    pub server_events: Vec<ServerEvent>,
    /// Whether the last transport was ended by one side's core.
    pub ended: bool,
    buf: Vec<u8>,
}

impl Pair {
    pub fn new(seed: u64, client_cfg: Config, server_cfg: Config) -> Pair {
        Pair {
            client: Client::new(client_cfg, rng(seed ^ 0xC1)),
            server: Server::new(server_cfg, rng(seed ^ 0x5E)),
            now: Instant::from_micros(1_000_000),
            transport: None,
            session: None,
            c2s: Vec::new(),
            s2c: Vec::new(),
            rng: rng(seed),
            max_chunk: 64 * 1024,
            window: 256 * 1024,
            client_events: Vec::new(),
            server_events: Vec::new(),
            ended: false,
            buf: vec![0u8; 64 * 1024],
        }
    }

    pub fn default_pair(seed: u64) -> Pair {
        Pair::new(seed, Config::default(), Config::default())
    }

    /// Open a transport: server accepts, client starts handshake/resume.
    pub fn open_transport(&mut self) {
        self.c2s.clear();
        self.s2c.clear();
        self.ended = false;
        self.transport = Some(self.server.accept(self.now).expect("accept"));
        self.client.new_transport(self.now).expect("new_transport");
    }

    /// Break the transport: both sides are told it is gone; in-flight
    /// bytes are lost.
    pub fn break_transport(&mut self) {
        if let Some(t) = self.transport.take() {
            self.server.transport_lost(t, self.now);
        }
        self.client.transport_lost(self.now);
        self.c2s.clear();
        self.s2c.clear();
    }

    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.saturating_add(d);
    }

    /// One round: both sides transmit, a random chunk is delivered each way,
    /// events drained, timers run.
    pub fn step(&mut self) {
        self.now = self.now.saturating_add(Duration::from_micros(50));
        let Some(t) = self.transport else {
            return;
        };
        // transmit
        while self.c2s.len() < self.window {
            let n = self
                .client
                .poll_transmit(self.now, &mut self.buf)
                .expect("client tx");
            if n == 0 {
                break;
            }
            self.c2s.extend_from_slice(&self.buf[..n]);
        }
        while self.s2c.len() < self.window {
            match self.server.poll_transmit(t, self.now, &mut self.buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.s2c.extend_from_slice(&self.buf[..n]),
            }
        }
        // deliver
        if !self.c2s.is_empty() {
            let n = between(&mut self.rng, 1, self.max_chunk).min(self.c2s.len());
            match self.server.handle_input(t, self.now, &self.c2s[..n]) {
                Ok(k) => {
                    self.c2s.drain(..k);
                }
                Err(_) => self.ended = true,
            }
        }
        if !self.s2c.is_empty() {
            let n = between(&mut self.rng, 1, self.max_chunk).min(self.s2c.len());
            match self.client.handle_input(self.now, &self.s2c[..n]) {
                Ok(k) => {
                    self.s2c.drain(..k);
                }
                Err(_) => self.ended = true,
            }
        }
        self.drain_events();
        if self.client.poll_timeout().is_some_and(|d| d <= self.now) {
            self.client.handle_timeout(self.now);
        }
        if self.server.poll_timeout().is_some_and(|d| d <= self.now) {
            self.server.handle_timeout(self.now);
        }
        self.drain_events();
    }

    pub fn drain_events(&mut self) {
        while let Some(e) = self.client.poll_event() {
            self.client_events.push(e);
        }
        while let Some(e) = self.server.poll_event() {
            if let ServerEvent::HandshakeDone { session, .. } = e {
                self.session = Some(session);
            }
            if let ServerEvent::CloseTransport { transport, .. } = e {
                if Some(transport) == self.transport {
                    self.ended = true;
                }
            }
            self.server_events.push(e);
        }
        if self.client.transport_ended() {
            self.ended = true;
        }
    }

    /// Flush: run rounds until nothing moves (or `max` rounds).
    pub fn settle(&mut self, max: usize) {
        for _ in 0..max {
            let before = (self.c2s.len(), self.s2c.len());
            self.step();
            let idle = self.c2s.is_empty()
                && self.s2c.is_empty()
                && !self
                    .transport
                    .is_some_and(|t| self.server.wants_transmit(t, self.now))
                && !self.client.wants_transmit(self.now);
            if idle && before == (0, 0) {
                return;
            }
        }
    }

    /// Open a transport and run until the handshake completes.
    pub fn handshake(&mut self) -> SessionId {
        self.open_transport();
        for _ in 0..1000 {
            self.step();
            if let (Some(s), true) = (self.session, self.client.is_connected()) {
                return s;
            }
        }
        panic!(
            "handshake did not complete: {:?} {:?}",
            self.client_events, self.server_events
        );
    }
}

/// A one-direction transfer in progress: what was sent and what was checked.
#[derive(Default, Clone, Copy, Debug)]
pub struct Flow {
    pub sent: u64,
    pub received: u64,
}

/// Move up to `max_write` random-sized pattern bytes into `send`, read what
/// `recv` gives and check it against the pattern. Returns false when the
/// stream's content mismatched.
pub fn pump_client_to_server(
    p: &mut Pair,
    f: &mut Flow,
    total: u64,
    max_write: usize,
    buf: &mut [u8],
) {
    if f.sent < total {
        let len = between(&mut p.rng, 1, max_write).min((total - f.sent) as usize);
        pattern(1, f.sent, &mut buf[..len]);
        f.sent += p.client.send(&buf[..len]).expect("client send") as u64;
    }
    if let Some(s) = p.session {
        loop {
            match p.server.recv(s, buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut want = vec![0u8; n];
                    pattern(1, f.received, &mut want);
                    assert_eq!(
                        &buf[..n],
                        &want[..],
                        "c2s mismatch at offset {}",
                        f.received
                    );
                    f.received += n as u64;
                }
            }
        }
    }
}

pub fn pump_server_to_client(
    p: &mut Pair,
    f: &mut Flow,
    total: u64,
    max_write: usize,
    buf: &mut [u8],
) {
    if let Some(s) = p.session {
        if f.sent < total {
            let len = between(&mut p.rng, 1, max_write).min((total - f.sent) as usize);
            pattern(2, f.sent, &mut buf[..len]);
            if let Ok(n) = p.server.send(s, &buf[..len]) {
                f.sent += n as u64;
            }
        }
    }
    loop {
        match p.client.recv(buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut want = vec![0u8; n];
                pattern(2, f.received, &mut want);
                assert_eq!(
                    &buf[..n],
                    &want[..],
                    "s2c mismatch at offset {}",
                    f.received
                );
                f.received += n as u64;
            }
        }
    }
}
