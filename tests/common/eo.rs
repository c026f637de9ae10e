//! Harness of the exactly-once tests (`tests/exactly_once*.rs`): one
//! [`Client`] at a time and one [`Server`] (replaceable by a fresh one with
//! the same configuration: a restart), joined by a simulated transport of
//! two byte pipes, with **two clocks**: `cnow` is what the client's driver
//! passes, `snow` what the server's driver passes. A sleeping phone is
//! `snow` advancing while `cnow` stands still.
//!
//! The applications write deterministic patterns and every byte they read
//! is checked against the pattern at the reader's running offset. That
//! offset is counted per *client generation* across every server session
//! and every server incarnation, so a byte delivered twice (in the same or
//! in a new session) is a mismatch, recorded in `violations`.
//!
//! Included with `#[path = "common/eo.rs"] mod eo;`.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use relink::{
    Client, Config, Duration, Error, Event, Instant, Server, ServerEvent, SessionId, TransportId,
};

/// The client type of these tests.
pub type TestClient = Client<ChaCha20Rng>;
/// The server type of these tests.
pub type TestServer = Server<ChaCha20Rng>;

/// A seeded CSPRNG.
pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// An integer in `lo..=hi`.
pub fn between(rng: &mut ChaCha20Rng, lo: u64, hi: u64) -> u64 {
    lo + rng.next_u64() % (hi - lo + 1)
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Content of stream `salt` at `offset..offset + out.len()`.
pub fn pattern(salt: u64, offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let o = offset + i as u64;
        *b = mix((o >> 3) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes()
            [(o & 7) as usize];
    }
}

/// Pattern salt of generation `g`'s client→server stream.
pub fn up_salt(g: u64) -> u64 {
    0x5550_0000 + 2 * g
}
/// Pattern salt of generation `g`'s server→client stream.
pub fn down_salt(g: u64) -> u64 {
    0x5550_0001 + 2 * g
}

/// One direction of one client generation's stream.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Bytes the writing application handed to its side.
    pub written: u64,
    /// Bytes the reading application(s) read, over all sessions.
    pub read: u64,
}

/// A server session the harness has seen (`HandshakeDone`).
#[derive(Clone, Copy, Debug)]
pub struct SessionLog {
    /// Server incarnation it belongs to.
    pub incarnation: u64,
    /// Its id there.
    pub sid: SessionId,
    /// Client generation that opened it.
    pub generation: u64,
    /// Bytes its application read.
    pub read: u64,
    /// Bytes its application wrote.
    pub written: u64,
}

/// Client, server, transport, two clocks, applications.
pub struct Net {
    pub client: TestClient,
    pub server: TestServer,
    pub ccfg: Config,
    pub scfg: Config,
    /// The server's clock.
    pub snow: Instant,
    /// The client's clock.
    pub cnow: Instant,
    pub tid: Option<TransportId>,
    pub c2s: Vec<u8>,
    pub s2c: Vec<u8>,
    /// Bytes the server wrote on the current transport.
    pub s2c_pushed: u64,
    /// Server bytes beyond this count on the current transport are lost
    /// (an on-path attacker or a broken route).
    pub s2c_limit: Option<u64>,
    /// Client bytes are lost on the current transport.
    pub c2s_blackhole: bool,
    pub rng: ChaCha20Rng,
    /// Server incarnation (restarts).
    pub incarnation: u64,
    /// Client generation (a new `Client` after the last one ended).
    pub generation: u64,
    /// Per generation: client→server and server→client flows.
    pub up: BTreeMap<u64, Flow>,
    pub down: BTreeMap<u64, Flow>,
    pub sessions: Vec<SessionLog>,
    /// Connection id of each client generation's session (server sessions
    /// are attributed by it: a late ClientConfirm may arrive after a newer
    /// client started).
    pub conn_generation: BTreeMap<u64, u64>,
    /// Client events (of the current generation).
    pub cev: Vec<Event>,
    /// Server events (all incarnations).
    pub sev: Vec<ServerEvent>,
    /// A core ended the current transport.
    pub ended: bool,
    /// `new_transport` calls of the current client.
    pub attempts: u32,
    /// Whether the server application reads.
    pub server_reads: bool,
    /// Transports the client gave up but the server still holds (half
    /// open), with the client bytes still in flight on them.
    pub stale: Vec<(TransportId, Vec<u8>)>,
    /// Broken invariants (duplicates, gaps, foreign bytes).
    pub violations: Vec<String>,
    /// Largest chunk handed to `handle_input` at once.
    pub max_chunk: u64,
    client_seed: u64,
    server_seed: u64,
    buf: Vec<u8>,
}

impl Net {
    /// A client and a server, no transport; both clocks at 1 s.
    pub fn new(seed: u64, ccfg: Config, scfg: Config) -> Net {
        let mut up = BTreeMap::new();
        up.insert(0, Flow::default());
        let down = up.clone();
        Net {
            client: Client::new(ccfg.clone(), rng(seed ^ 0xC11E)),
            server: Server::new(scfg.clone(), rng(seed ^ 0x5E7E)),
            ccfg,
            scfg,
            snow: Instant::from_micros(1_000_000),
            cnow: Instant::from_micros(1_000_000),
            tid: None,
            c2s: Vec::new(),
            s2c: Vec::new(),
            s2c_pushed: 0,
            s2c_limit: None,
            c2s_blackhole: false,
            rng: rng(seed),
            incarnation: 0,
            generation: 0,
            up,
            down,
            sessions: Vec::new(),
            conn_generation: BTreeMap::new(),
            cev: Vec::new(),
            sev: Vec::new(),
            ended: false,
            attempts: 0,
            server_reads: true,
            stale: Vec::new(),
            violations: Vec::new(),
            max_chunk: 4096,
            client_seed: seed ^ 0xC11E,
            server_seed: seed ^ 0x5E7E,
            buf: vec![0; 64 * 1024],
        }
    }

    // ----- clocks -------------------------------------------------------------

    /// Both clocks advance by `d`.
    pub fn tick(&mut self, d: Duration) {
        self.snow = self.snow.saturating_add(d);
        self.cnow = self.cnow.saturating_add(d);
    }

    /// Only the server's clock advances (the client sleeps).
    pub fn tick_server(&mut self, d: Duration) {
        self.snow = self.snow.saturating_add(d);
    }

    /// Only the client's clock advances.
    pub fn tick_client(&mut self, d: Duration) {
        self.cnow = self.cnow.saturating_add(d);
    }

    /// Run due timers of both sides.
    pub fn timers(&mut self) {
        if self.client.poll_timeout().is_some_and(|d| d <= self.cnow) {
            self.client.handle_timeout(self.cnow);
        }
        if self.server.poll_timeout().is_some_and(|d| d <= self.snow) {
            self.server.handle_timeout(self.snow);
        }
        self.drain();
    }

    // ----- transports ---------------------------------------------------------

    /// A new transport: the server accepts it, the client starts a
    /// handshake or resume on it. False when the client refused
    /// (`new_transport` failed: its session is over).
    pub fn open(&mut self) -> bool {
        self.c2s.clear();
        self.s2c.clear();
        self.s2c_pushed = 0;
        self.ended = false;
        self.attempts += 1;
        if self.client.new_transport(self.cnow).is_err() {
            self.drain();
            return false;
        }
        self.tid = Some(self.server.accept(self.snow).expect("server accept"));
        true
    }

    /// The client opens a transport the server never sees (refused
    /// connect, or an attacker answers): call `client_attempt_*` next.
    pub fn open_client_only(&mut self) -> bool {
        self.c2s.clear();
        self.s2c.clear();
        self.ended = false;
        self.attempts += 1;
        let ok = self.client.new_transport(self.cnow).is_ok();
        self.drain();
        ok
    }

    /// The transport breaks: both drivers notice; in-flight bytes are lost.
    pub fn brk(&mut self) {
        if let Some(t) = self.tid.take() {
            self.server.transport_lost(t, self.snow);
        }
        self.client.transport_lost(self.cnow);
        self.c2s.clear();
        self.s2c.clear();
        self.s2c_limit = None;
        self.c2s_blackhole = false;
        self.drain();
    }

    /// The client's side of the transport dies, the server does not notice
    /// (half open): what the client wrote stays in flight towards the
    /// server, to be delivered late by [`Net::deliver_stale`].
    pub fn half_open(&mut self) {
        self.transmit();
        if let Some(t) = self.tid.take() {
            let inflight = std::mem::take(&mut self.c2s);
            self.stale.push((t, inflight));
        }
        self.client.transport_lost(self.cnow);
        self.c2s.clear();
        self.s2c.clear();
        self.s2c_limit = None;
        self.c2s_blackhole = false;
        self.drain();
    }

    /// The half-open transports deliver their late bytes to the server,
    /// then close.
    pub fn deliver_stale(&mut self) {
        for (t, bytes) in std::mem::take(&mut self.stale) {
            if !bytes.is_empty() && !self.server.transport_ended(t) {
                let _ = self.server.handle_input(t, self.snow, &bytes);
            }
            self.drain();
            self.server_read();
            self.server.transport_lost(t, self.snow);
            self.drain();
        }
    }

    /// What drivers do when a core ended the transport: flush what is
    /// left (a rejection), let the peer read it, then close.
    pub fn flush_break(&mut self) {
        self.transmit();
        self.deliver(u64::MAX);
        self.brk();
    }

    /// The client's transport fails before the server sees anything (a
    /// refused connect): open and lose it at once.
    pub fn failed_connect(&mut self) -> bool {
        if !self.open_client_only() {
            return false;
        }
        self.client.transport_lost(self.cnow);
        self.drain();
        true
    }

    /// The client sends its first message to an attacker, who answers
    /// `answer` and hangs up. Returns the client's first message (the
    /// ResumeRequest, usually) and its verdict on the answer.
    pub fn forged_answer(&mut self, answer: &[u8]) -> Option<(Vec<u8>, Result<usize, Error>)> {
        if !self.open_client_only() {
            return None;
        }
        let mut sent = Vec::new();
        loop {
            let n = self
                .client
                .poll_transmit(self.cnow, &mut self.buf)
                .expect("client poll_transmit");
            if n == 0 {
                break;
            }
            sent.extend_from_slice(&self.buf[..n]);
        }
        let r = self.client.handle_input(self.cnow, answer);
        self.drain();
        self.client.transport_lost(self.cnow);
        self.drain();
        Some((sent, r))
    }

    // ----- moving bytes -------------------------------------------------------

    /// Write what both sides want to send into the pipes.
    pub fn transmit(&mut self) {
        let Some(t) = self.tid else {
            return;
        };
        loop {
            let n = self
                .client
                .poll_transmit(self.cnow, &mut self.buf)
                .expect("client poll_transmit");
            if n == 0 {
                break;
            }
            if !self.c2s_blackhole {
                self.c2s.extend_from_slice(&self.buf[..n]);
            }
        }
        loop {
            match self.server.poll_transmit(t, self.snow, &mut self.buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let keep = match self.s2c_limit {
                        Some(l) => (l.saturating_sub(self.s2c_pushed) as usize).min(n),
                        None => n,
                    };
                    self.s2c.extend_from_slice(&self.buf[..keep]);
                    self.s2c_pushed += n as u64;
                }
            }
        }
    }

    /// Hand up to `max` in-flight bytes each way to the other side, in
    /// random chunks.
    pub fn deliver(&mut self, max: u64) {
        let Some(t) = self.tid else {
            return;
        };
        let mut budget = max;
        while !self.c2s.is_empty() && budget > 0 && !self.server.transport_ended(t) {
            let n = between(&mut self.rng, 1, self.max_chunk)
                .min(self.c2s.len() as u64)
                .min(budget) as usize;
            match self.server.handle_input(t, self.snow, &self.c2s[..n]) {
                Ok(0) => break,
                Ok(k) => {
                    self.c2s.drain(..k);
                    budget -= k as u64;
                }
                Err(_) => {
                    self.c2s.clear();
                    self.ended = true;
                }
            }
            self.drain();
            self.server_read();
        }
        let mut budget = max;
        while !self.s2c.is_empty() && budget > 0 && !self.client.transport_ended() {
            let n = between(&mut self.rng, 1, self.max_chunk)
                .min(self.s2c.len() as u64)
                .min(budget) as usize;
            match self.client.handle_input(self.cnow, &self.s2c[..n]) {
                Ok(0) => break,
                Ok(k) => {
                    self.s2c.drain(..k);
                    budget -= k as u64;
                }
                Err(_) => {
                    self.s2c.clear();
                    self.ended = true;
                }
            }
            self.drain();
            self.client_read();
        }
    }

    /// One round: 1 ms on both clocks, transmit, deliver, read, timers.
    pub fn step(&mut self) {
        self.tick(Duration::from_millis(1));
        self.transmit();
        self.deliver(u64::MAX);
        self.server_read();
        self.client_read();
        self.timers();
    }

    /// Run rounds until nothing is in flight and nobody wants to send, or
    /// a core ended the transport, or `max` rounds.
    pub fn settle(&mut self, max: usize) {
        for _ in 0..max {
            self.step();
            if self.ended || self.tid.is_none() {
                return;
            }
            let quiet = self.c2s.is_empty()
                && self.s2c.is_empty()
                && !self.client.wants_transmit(self.cnow)
                && !self
                    .tid
                    .is_some_and(|t| self.server.wants_transmit(t, self.snow));
            if quiet {
                return;
            }
        }
    }

    /// Open a transport and run until the client is connected, or the
    /// transport ended (then flushed and broken). Returns whether it
    /// connected.
    pub fn connect(&mut self) -> bool {
        if !self.open() {
            return false;
        }
        for _ in 0..200 {
            self.step();
            if self.client.is_connected() {
                return true;
            }
            if self.ended {
                self.flush_break();
                return false;
            }
        }
        self.brk();
        false
    }

    // ----- applications -------------------------------------------------------

    /// The client application writes `n` pattern bytes (what `send`
    /// accepts). Returns how many were accepted.
    pub fn client_write(&mut self, n: usize) -> usize {
        let g = self.generation;
        let flow = self.up.get_mut(&g).expect("flow");
        let mut data = vec![0u8; n];
        pattern(up_salt(g), flow.written, &mut data);
        match self.client.send(&data) {
            Ok(k) => {
                flow.written += k as u64;
                k
            }
            Err(_) => 0,
        }
    }

    /// The current generation's newest live server session of the current
    /// incarnation, if any.
    pub fn current_session(&self) -> Option<SessionId> {
        self.sessions
            .iter()
            .rev()
            .find(|s| {
                s.incarnation == self.incarnation
                    && s.generation == self.generation
                    && self.server.has_session(s.sid)
            })
            .map(|s| s.sid)
    }

    /// The server application writes `n` pattern bytes to the current
    /// generation's session. Returns how many were accepted.
    pub fn server_write(&mut self, n: usize) -> usize {
        let Some(sid) = self.current_session() else {
            return 0;
        };
        let g = self.generation;
        let flow = self.down.get_mut(&g).expect("flow");
        let mut data = vec![0u8; n];
        pattern(down_salt(g), flow.written, &mut data);
        match self.server.send(sid, &data) {
            Ok(k) => {
                flow.written += k as u64;
                if let Some(l) = self
                    .sessions
                    .iter_mut()
                    .rev()
                    .find(|s| s.incarnation == self.incarnation && s.sid == sid)
                {
                    l.written += k as u64;
                }
                k
            }
            Err(_) => 0,
        }
    }

    /// The server application reads every session it knows (of the current
    /// incarnation) and checks the bytes.
    pub fn server_read(&mut self) {
        if !self.server_reads {
            return;
        }
        for i in 0..self.sessions.len() {
            let s = self.sessions[i];
            if s.incarnation != self.incarnation {
                continue;
            }
            loop {
                match self.server.recv(s.sid, &mut self.buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let flow = self.up.get_mut(&s.generation).expect("flow");
                        let mut want = vec![0u8; n];
                        pattern(up_salt(s.generation), flow.read, &mut want);
                        if want[..] != self.buf[..n] {
                            self.violations.push(format!(
                                "server session {:?} (incarnation {}) read {n} bytes at stream \
                                 offset {} of generation {} that are not the client's bytes \
                                 there (duplicate or foreign); client wrote {}",
                                s.sid, s.incarnation, flow.read, s.generation, flow.written
                            ));
                        }
                        flow.read += n as u64;
                        if flow.read > flow.written {
                            self.violations.push(format!(
                                "server applications read {} bytes of generation {}, client \
                                 wrote {}",
                                flow.read, s.generation, flow.written
                            ));
                        }
                        self.sessions[i].read += n as u64;
                    }
                }
            }
        }
    }

    /// The client application reads everything available and checks it.
    pub fn client_read(&mut self) {
        let g = self.generation;
        loop {
            match self.client.recv(&mut self.buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let flow = self.down.get_mut(&g).expect("flow");
                    let mut want = vec![0u8; n];
                    pattern(down_salt(g), flow.read, &mut want);
                    if want[..] != self.buf[..n] {
                        self.violations.push(format!(
                            "client read {n} bytes at offset {} that are not the server's bytes \
                             there; server wrote {}",
                            flow.read, flow.written
                        ));
                    }
                    flow.read += n as u64;
                    if flow.read > flow.written {
                        self.violations.push(format!(
                            "client read {} bytes, server wrote {}",
                            flow.read, flow.written
                        ));
                    }
                }
            }
        }
    }

    /// Bytes of the current generation's client stream the server
    /// applications read (all sessions, all incarnations).
    pub fn up_read(&self) -> u64 {
        self.up[&self.generation].read
    }

    /// Bytes the current client wrote.
    pub fn up_written(&self) -> u64 {
        self.up[&self.generation].written
    }

    // ----- events -------------------------------------------------------------

    /// Move queued events of both sides into `cev` / `sev`.
    pub fn drain(&mut self) {
        while let Some(e) = self.client.poll_event() {
            self.cev.push(e);
        }
        if let Some(c) = self.client.conn_id() {
            self.conn_generation.insert(c, self.generation);
        }
        while let Some(e) = self.server.poll_event() {
            match e {
                ServerEvent::HandshakeDone { session, .. } => {
                    let generation = self
                        .server
                        .conn_id(session)
                        .and_then(|c| self.conn_generation.get(&c).copied())
                        .unwrap_or(self.generation);
                    self.sessions.push(SessionLog {
                        incarnation: self.incarnation,
                        sid: session,
                        generation,
                        read: 0,
                        written: 0,
                    })
                }
                ServerEvent::CloseTransport { transport, .. } if Some(transport) == self.tid => {
                    self.ended = true;
                }
                _ => {}
            }
            self.sev.push(e);
        }
        if self.client.transport_ended() {
            self.ended = true;
        }
    }

    /// Sessions the server registered (HandshakeDone) for the current
    /// generation, over all incarnations.
    pub fn sessions_of_generation(&self) -> usize {
        self.sessions
            .iter()
            .filter(|s| s.generation == self.generation)
            .count()
    }

    // ----- restarts -----------------------------------------------------------

    /// The server process restarts: a fresh `Server` with the same
    /// configuration (same static key); every session is gone.
    pub fn restart_server(&mut self) {
        self.tid = None;
        self.stale.clear();
        self.c2s.clear();
        self.s2c.clear();
        self.client.transport_lost(self.cnow);
        self.incarnation += 1;
        self.server_seed = mix(self.server_seed);
        self.server = Server::new(self.scfg.clone(), rng(self.server_seed));
        self.drain();
    }

    /// The application gives the ended client up and starts a new one (a
    /// new stream: new generation, new patterns).
    pub fn new_client(&mut self) {
        self.brk();
        self.generation += 1;
        self.up.insert(self.generation, Flow::default());
        self.down.insert(self.generation, Flow::default());
        self.client_seed = mix(self.client_seed);
        self.client = Client::new(self.ccfg.clone(), rng(self.client_seed));
        self.cev.clear();
        self.attempts = 0;
    }

    /// Panic with every recorded violation.
    pub fn assert_no_violations(&self) {
        assert!(
            self.violations.is_empty(),
            "invariants broken:\n{}",
            self.violations.join("\n")
        );
    }
}
