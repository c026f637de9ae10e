//! The in-memory client/server harness: one [`Client`] at a time and one
//! [`Server`] (replaceable by a fresh one with the same configuration: a
//! restart), joined by a simulated transport of two byte pipes, with
//! **two virtual clocks** (`cnow` is what the client's driver passes, `snow`
//! what the server's driver passes: a sleeping phone is `snow` advancing
//! while `cnow` stands still) and seeded RNGs, so every run is
//! deterministic.
//!
//! One type, [`Net`], with two paces (see [`Pace`]):
//! - [`Net::new`] ([`Pace::Flush`]): each [`Net::step`] advances both clocks
//!   by 1 ms and delivers everything in flight in random chunks of up to
//!   `max_chunk` bytes; the applications write deterministic patterns
//!   ([`Net::client_write`], [`Net::server_write`]) and every byte they read
//!   is checked against the pattern at the reader's running offset. That
//!   offset is counted per *client generation* across every server session
//!   and every server incarnation, so a byte delivered twice (in the same or
//!   in a new session) is a mismatch, recorded in `violations`.
//! - [`Net::pair`] ([`Pace::Chunk`]): each step advances both clocks by
//!   50 µs and delivers one random chunk each way, with at most `window`
//!   bytes in flight per direction (a TCP window); the test reads itself
//!   (see [`pump_client_to_server`] and [`pump_server_to_client`]).
//!
//! Faults: break the transport ([`Net::brk`], in-flight bytes are lost),
//! a half-open transport whose late bytes arrive later ([`Net::half_open`],
//! [`Net::deliver_stale`]), server restarts ([`Net::restart_server`]),
//! lost server bytes beyond a count (`s2c_limit`), a client direction that
//! loses everything (`c2s_blackhole`), and direct access to the pipes
//! (`c2s`, `s2c`) to truncate, flip or inject between [`Net::transmit`] and
//! [`Net::deliver`].
//!
//! The primitives ([`rng`], [`between`], [`pattern`], [`check_pattern`])
//! are shared with the fuzz targets.

use std::collections::BTreeMap;
use std::fmt::Debug;

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use relink::{
    Client, Config, Duration, Error, Event, Instant, Server, ServerEvent, SessionId, TransportId,
};

/// The client type of the harness.
pub type TestClient = Client<ChaCha20Rng>;
/// The server type of the harness.
pub type TestServer = Server<ChaCha20Rng>;

/// Where both virtual clocks start (1 s).
pub const T0: Instant = Instant::from_micros(1_000_000);

/// A wall clock that always reads `micros` (µs since the Unix epoch): for
/// a test client facing a server with a wall clock, so that its hellos
/// carry a fresh time (PROTOCOL.md 3.2).
#[derive(Clone, Copy, Debug)]
pub struct FixedWall(pub u64);

impl relink::WallClock for FixedWall {
    fn now(&self) -> relink::UnixTime {
        relink::UnixTime::from_micros(self.0)
    }
}

/// `Config::wall_clock` that always reads `micros`.
pub fn wall_at(micros: u64) -> Option<std::sync::Arc<dyn relink::WallClock>> {
    Some(std::sync::Arc::new(FixedWall(micros)))
}

/// A seeded CSPRNG (for the state machines and for the test's own choices).
pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// An integer in `lo..=hi` (one draw of `rng`), of any integer type that
/// converts to and from `u64` (`lo..=hi` must fit both).
pub fn between<T>(rng: &mut ChaCha20Rng, lo: T, hi: T) -> T
where
    T: TryInto<u64> + TryFrom<u64>,
    <T as TryInto<u64>>::Error: Debug,
    <T as TryFrom<u64>>::Error: Debug,
{
    let lo: u64 = lo.try_into().expect("between: lo fits u64");
    let hi: u64 = hi.try_into().expect("between: hi fits u64");
    T::try_from(lo + rng.next_u64() % (hi - lo + 1)).expect("between: result fits")
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Deterministic stream content: bytes `offset..offset + out.len()` of the
/// stream `salt`.
pub fn pattern(salt: u64, offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let o = offset + i as u64;
        *b = mix((o >> 3) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes()
            [(o & 7) as usize];
    }
}

/// Whether `got` is the content of stream `salt` at `offset`.
pub fn matches_pattern(salt: u64, offset: u64, got: &[u8]) -> bool {
    let mut want = vec![0u8; got.len()];
    pattern(salt, offset, &mut want);
    want == got
}

/// Panic unless `got` is the content of stream `salt` at `offset`.
pub fn check_pattern(salt: u64, offset: u64, got: &[u8]) {
    assert!(
        matches_pattern(salt, offset, got),
        "forged, corrupted or duplicated application data at offset {offset} (stream {salt})"
    );
}

/// Pattern salt of generation `g`'s client→server stream.
pub fn up_salt(g: u64) -> u64 {
    0x5550_0000 + 2 * g
}
/// Pattern salt of generation `g`'s server→client stream.
pub fn down_salt(g: u64) -> u64 {
    0x5550_0001 + 2 * g
}

/// One direction of one stream.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Bytes the writing application handed to its side.
    pub written: u64,
    /// Bytes the reading application(s) read (and checked).
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

/// How [`Net::step`] and [`Net::settle`] move bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// 1 ms per step; everything in flight is delivered (random chunks);
    /// the applications read and check after every chunk.
    Flush,
    /// 50 µs per step; one random chunk each way, at most `window` bytes in
    /// flight per direction; the test reads itself.
    Chunk,
}

/// Client, server, transport, two clocks, applications.
pub struct Net {
    /// The current client.
    pub client: TestClient,
    /// The current server incarnation.
    pub server: TestServer,
    /// The client's configuration (for [`Net::new_client`]).
    pub ccfg: Config,
    /// The server's configuration (for [`Net::restart_server`]).
    pub scfg: Config,
    /// The server's clock.
    pub snow: Instant,
    /// The client's clock.
    pub cnow: Instant,
    /// The current transport's id at the server.
    pub tid: Option<TransportId>,
    /// The session of the latest `HandshakeDone`.
    pub session: Option<SessionId>,
    /// Bytes written by the client not yet delivered to the server.
    pub c2s: Vec<u8>,
    /// Bytes written by the server not yet delivered to the client.
    pub s2c: Vec<u8>,
    /// Bytes the server wrote on the current transport.
    pub s2c_pushed: u64,
    /// Server bytes beyond this count on the current transport are lost
    /// (an on-path attacker or a broken route).
    pub s2c_limit: Option<u64>,
    /// Client bytes are lost on the current transport.
    pub c2s_blackhole: bool,
    /// The harness's own choices (chunk sizes) and the test's.
    pub rng: ChaCha20Rng,
    /// How steps move bytes.
    pub pace: Pace,
    /// Largest chunk handed to `handle_input` at once.
    pub max_chunk: usize,
    /// Bytes kept in flight per direction at most (a TCP window).
    pub window: usize,
    /// Server incarnation (restarts).
    pub incarnation: u64,
    /// Client generation (a new `Client` after the last one ended).
    pub generation: u64,
    /// Per generation: client→server flows of [`Net::client_write`].
    pub up: BTreeMap<u64, Flow>,
    /// Per generation: server→client flows of [`Net::server_write`].
    pub down: BTreeMap<u64, Flow>,
    /// Every server session seen.
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
    /// Whether the server application reads during steps ([`Pace::Flush`]).
    pub server_reads: bool,
    /// Whether the client application reads during steps ([`Pace::Flush`]).
    pub client_reads: bool,
    /// Transports the client gave up but the server still holds (half
    /// open), with the client bytes still in flight on them.
    pub stale: Vec<(TransportId, Vec<u8>)>,
    /// Broken invariants (duplicates, gaps, foreign bytes).
    pub violations: Vec<String>,
    /// A fleet ([`Net::fleet`]): the nodes other than the current one
    /// (`server`), by node number; `None` at the current node's place and
    /// at a node that was taken away ([`Net::remove_node`]).
    pub parked: Vec<Option<TestServer>>,
    /// A fleet: the current node's number.
    pub node: usize,
    client_seed: u64,
    server_seed: u64,
    buf: Vec<u8>,
}

impl Net {
    /// A client and a server, no transport, both clocks at [`T0`], paced
    /// by [`Pace::Flush`] with chunks of up to 4 KiB; both applications
    /// read during steps.
    pub fn new(seed: u64, ccfg: Config, scfg: Config) -> Net {
        Net::with_seeds(seed, ccfg, scfg, seed ^ 0xC11E, seed ^ 0x5E7E)
    }

    /// A client and a server, no transport, paced by [`Pace::Chunk`]
    /// (chunks up to 64 KiB, a 256 KiB window); the test reads itself.
    pub fn pair(seed: u64, ccfg: Config, scfg: Config) -> Net {
        let mut n = Net::with_seeds(seed, ccfg, scfg, seed ^ 0xC1, seed ^ 0x5E);
        n.pace = Pace::Chunk;
        n.max_chunk = 64 * 1024;
        n.window = 256 * 1024;
        n.server_reads = false;
        n.client_reads = false;
        n
    }

    /// [`Net::pair`] with default configurations.
    pub fn default_pair(seed: u64) -> Net {
        Net::pair(seed, Config::default(), Config::default())
    }

    fn with_seeds(
        seed: u64,
        ccfg: Config,
        scfg: Config,
        client_seed: u64,
        server_seed: u64,
    ) -> Net {
        let mut up = BTreeMap::new();
        up.insert(0, Flow::default());
        let down = up.clone();
        Net {
            client: Client::new(ccfg.clone(), rng(client_seed)),
            server: Server::new(scfg.clone(), rng(server_seed)),
            ccfg,
            scfg,
            snow: T0,
            cnow: T0,
            tid: None,
            session: None,
            c2s: Vec::new(),
            s2c: Vec::new(),
            s2c_pushed: 0,
            s2c_limit: None,
            c2s_blackhole: false,
            rng: rng(seed),
            pace: Pace::Flush,
            max_chunk: 4096,
            window: usize::MAX,
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
            client_reads: true,
            stale: Vec::new(),
            violations: Vec::new(),
            parked: Vec::new(),
            node: 0,
            client_seed,
            server_seed,
            buf: vec![0; 64 * 1024],
        }
    }

    // ----- clocks -------------------------------------------------------------

    /// The time, for tests that keep both clocks together (the client's
    /// clock; equal to the server's unless a test moved one alone).
    pub fn now(&self) -> Instant {
        self.cnow
    }

    /// Set both clocks.
    pub fn set_now(&mut self, now: Instant) {
        self.cnow = now;
        self.snow = now;
    }

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

    /// Run due timers of both sides, then drain events.
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

    /// [`Net::open`], which must succeed.
    pub fn open_transport(&mut self) {
        assert!(self.open(), "new_transport refused: {:?}", self.cev);
    }

    /// A fleet of servers ("nodes") behind a load balancer that the test
    /// plays ([`Net::open_routed`]): node `i` runs `nodes[i]` (each its own
    /// `Config::routable_id`, typically the same static key), with its own
    /// seeded RNG; node 0 is current. In a fleet the *incarnation* of a
    /// session log is its node number (do not mix with
    /// [`Net::restart_server`]); only the current node's timers run.
    pub fn fleet(seed: u64, ccfg: Config, nodes: &[Config]) -> Net {
        assert!(!nodes.is_empty(), "a fleet needs a node");
        let mut net = Net::new(seed, ccfg, nodes[0].clone());
        net.parked = nodes
            .iter()
            .enumerate()
            .map(|(i, cfg)| {
                (i > 0).then(|| Server::new(cfg.clone(), rng(mix(seed ^ ((i as u64) << 8)))))
            })
            .collect();
        net
    }

    /// Make node `i` current (the server the transport reaches). Panics if
    /// it was removed.
    pub fn switch_node(&mut self, i: usize) {
        if i == self.node {
            return;
        }
        let next = self.parked[i].take().expect("node was removed");
        let prev = std::mem::replace(&mut self.server, next);
        self.parked[self.node] = Some(prev);
        self.node = i;
        self.incarnation = i as u64;
        self.drain();
    }

    /// Node `i` is gone for good (killed): its sessions with it. It must
    /// not be the current node.
    pub fn remove_node(&mut self, i: usize) {
        assert_ne!(i, self.node, "switch away from a node before removing it");
        self.parked[i] = None;
    }

    /// Node `i`, removed ([`Net::remove_node`]), comes back as a new
    /// process with `cfg` (typically its old configuration: the same
    /// static key and server id) and a fresh RNG; it holds no session.
    /// It must not be the current node.
    pub fn restart_node(&mut self, i: usize, cfg: Config) {
        assert_ne!(i, self.node, "switch away from a node before restarting it");
        self.server_seed = mix(self.server_seed);
        self.parked[i] = Some(Server::new(cfg, rng(self.server_seed)));
    }

    /// Whether node `i` is still there.
    pub fn has_node(&self, i: usize) -> bool {
        i == self.node || self.parked.get(i).is_some_and(Option::is_some)
    }

    /// Node `i`'s server (current or parked). Panics if it was removed.
    pub fn node_server(&self, i: usize) -> &TestServer {
        if i == self.node {
            &self.server
        } else {
            self.parked[i].as_ref().expect("node was removed")
        }
    }

    /// Node `i`'s server, mutable (current or parked).
    pub fn node_server_mut(&mut self, i: usize) -> &mut TestServer {
        if i == self.node {
            &mut self.server
        } else {
            self.parked[i].as_mut().expect("node was removed")
        }
    }

    /// A new transport through the load balancer: the client starts a
    /// handshake or resume, `route` sees the first bytes of its stream (as
    /// a layer-4 balancer inspecting them would) and names the node, which
    /// becomes current and accepts the transport. False when the client
    /// refused (its session is over).
    pub fn open_routed(&mut self, route: &mut dyn FnMut(&[u8]) -> usize) -> bool {
        self.c2s.clear();
        self.s2c.clear();
        self.s2c_pushed = 0;
        self.ended = false;
        self.attempts += 1;
        if self.client.new_transport(self.cnow).is_err() {
            self.drain();
            return false;
        }
        loop {
            let n = self
                .client
                .poll_transmit(self.cnow, &mut self.buf)
                .expect("client poll_transmit");
            if n == 0 {
                break;
            }
            self.c2s.extend_from_slice(&self.buf[..n]);
        }
        let node = route(&self.c2s);
        self.switch_node(node);
        self.tid = Some(self.server.accept(self.snow).expect("server accept"));
        true
    }

    /// The client opens a transport the server never sees (refused
    /// connect, or an attacker answers).
    pub fn open_client_only(&mut self) -> bool {
        self.c2s.clear();
        self.s2c.clear();
        self.ended = false;
        self.attempts += 1;
        let ok = self.client.new_transport(self.cnow).is_ok();
        self.drain();
        ok
    }

    /// The transport breaks: both sides are told it is gone; in-flight
    /// bytes are lost. Events are left queued (see [`Net::brk`]).
    pub fn break_transport(&mut self) {
        if let Some(t) = self.tid.take() {
            self.server.transport_lost(t, self.snow);
        }
        self.client.transport_lost(self.cnow);
        self.c2s.clear();
        self.s2c.clear();
        self.s2c_limit = None;
        self.c2s_blackhole = false;
    }

    /// [`Net::break_transport`], then drain events.
    pub fn brk(&mut self) {
        self.break_transport();
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

    /// Write what both sides want to send into the pipes (up to `window`
    /// bytes in flight per direction).
    pub fn transmit(&mut self) {
        let Some(t) = self.tid else {
            return;
        };
        while self.c2s.len() < self.window {
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
        while self.s2c.len() < self.window {
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

    fn chunk_len(&mut self, pending: usize) -> usize {
        between(&mut self.rng, 1, self.max_chunk).min(pending)
    }

    /// Hand up to `max` in-flight bytes each way to the other side, in
    /// random chunks; the applications read after each chunk.
    pub fn deliver(&mut self, max: u64) {
        let Some(t) = self.tid else {
            return;
        };
        let mut budget = max;
        while !self.c2s.is_empty() && budget > 0 && !self.server.transport_ended(t) {
            let n = self
                .chunk_len(self.c2s.len())
                .min(usize::try_from(budget).unwrap_or(usize::MAX));
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
            let n = self
                .chunk_len(self.s2c.len())
                .min(usize::try_from(budget).unwrap_or(usize::MAX));
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

    /// Hand one random chunk each way to the other side ([`Pace::Chunk`]);
    /// what a side does not take stays in flight.
    pub fn deliver_chunk(&mut self) {
        let Some(t) = self.tid else {
            return;
        };
        if !self.c2s.is_empty() {
            let n = self.chunk_len(self.c2s.len());
            match self.server.handle_input(t, self.snow, &self.c2s[..n]) {
                Ok(k) => {
                    self.c2s.drain(..k);
                }
                Err(_) => self.ended = true,
            }
        }
        if !self.s2c.is_empty() {
            let n = self.chunk_len(self.s2c.len());
            match self.client.handle_input(self.cnow, &self.s2c[..n]) {
                Ok(k) => {
                    self.s2c.drain(..k);
                }
                Err(_) => self.ended = true,
            }
        }
    }

    /// One round at the harness's [`Pace`]: advance both clocks, transmit,
    /// deliver, (read,) run timers, drain events.
    pub fn step(&mut self) {
        match self.pace {
            Pace::Flush => {
                self.tick(Duration::from_millis(1));
                self.transmit();
                self.deliver(u64::MAX);
                self.server_read();
                self.client_read();
                self.timers();
            }
            Pace::Chunk => {
                self.tick(Duration::from_micros(50));
                if self.tid.is_none() {
                    return;
                }
                self.transmit();
                self.deliver_chunk();
                self.drain();
                self.timers();
            }
        }
    }

    fn quiet(&self) -> bool {
        self.c2s.is_empty()
            && self.s2c.is_empty()
            && !self.client.wants_transmit(self.cnow)
            && !self
                .tid
                .is_some_and(|t| self.server.wants_transmit(t, self.snow))
    }

    /// Run rounds until nothing is in flight and nobody wants to send (at
    /// [`Pace::Flush`] also: or a core ended the transport), or `max`
    /// rounds.
    pub fn settle(&mut self, max: usize) {
        for _ in 0..max {
            let before = (self.c2s.len(), self.s2c.len());
            self.step();
            match self.pace {
                Pace::Flush => {
                    if self.ended || self.tid.is_none() || self.quiet() {
                        return;
                    }
                }
                Pace::Chunk => {
                    if self.quiet() && before == (0, 0) {
                        return;
                    }
                }
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

    /// Open a transport and run until the handshake completed on both
    /// sides (panics otherwise). Returns the server's session.
    pub fn handshake(&mut self) -> SessionId {
        self.open_transport();
        for _ in 0..1000 {
            self.step();
            if let (Some(s), true) = (self.session, self.client.is_connected()) {
                return s;
            }
        }
        panic!("handshake did not complete: {:?} {:?}", self.cev, self.sev);
    }

    // ----- whole-message exchange (fuzz targets) -------------------------------

    /// Everything the client wants to transmit now (at most 64 buffers;
    /// an error ends the output instead of panicking: hostile input may
    /// have ended the transport).
    pub fn client_output(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..64 {
            match self.client.poll_transmit(self.cnow, &mut self.buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&self.buf[..n]),
            }
        }
        out
    }

    /// Everything the server wants to transmit on the current transport
    /// now (as [`Net::client_output`]).
    pub fn server_output(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let Some(t) = self.tid else {
            return out;
        };
        for _ in 0..64 {
            match self.server.poll_transmit(t, self.snow, &mut self.buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&self.buf[..n]),
            }
        }
        out
    }

    /// One lockstep round, bypassing the pipes: everything the client
    /// transmits goes to the server whole, then the other way round;
    /// events are drained.
    pub fn exchange(&mut self) {
        let c2s = self.client_output();
        if let (false, Some(t)) = (c2s.is_empty(), self.tid) {
            let _ = self.server.handle_input(t, self.snow, &c2s);
        }
        let s2c = self.server_output();
        if !s2c.is_empty() {
            let _ = self.client.handle_input(self.cnow, &s2c);
        }
        self.drain();
    }

    /// [`Net::exchange`] until both sides are open (panics after 8 rounds).
    pub fn exchange_until_open(&mut self) {
        for _ in 0..8 {
            self.exchange();
            let server_open = self
                .tid
                .is_some_and(|t| self.server.session_of(t).is_some());
            if self.client.is_connected() && server_open {
                return;
            }
        }
        panic!("genuine handshake/resume did not complete");
    }

    /// The transport broke and both sides are told (in-flight bytes stay
    /// in the pipes); the client opens a new one (starting a resume) and
    /// the server accepts it. False when the server refused the transport
    /// or the client's session is closed and cannot resume.
    pub fn reconnect(&mut self) -> bool {
        if let Some(t) = self.tid {
            self.server.transport_lost(t, self.snow);
        }
        self.client.transport_lost(self.cnow);
        self.drain();
        match self.server.accept(self.snow) {
            Ok(t) => self.tid = Some(t),
            Err(_) => return false,
        }
        self.ended = false;
        self.client.new_transport(self.cnow).is_ok()
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
    /// incarnation) and checks the bytes (unless `server_reads` is off).
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
                        if !matches_pattern(up_salt(s.generation), flow.read, &self.buf[..n]) {
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

    /// The client application reads everything available and checks it
    /// (unless `client_reads` is off).
    pub fn client_read(&mut self) {
        if !self.client_reads {
            return;
        }
        let g = self.generation;
        loop {
            match self.client.recv(&mut self.buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let flow = self.down.get_mut(&g).expect("flow");
                    if !matches_pattern(down_salt(g), flow.read, &self.buf[..n]) {
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

    /// Move queued events of both sides into `cev` / `sev`, log new server
    /// sessions, note a transport a core ended.
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
                    self.session = Some(session);
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

// ----- test-driven transfers ([`Pace::Chunk`]) -------------------------------------

/// Salt of [`pump_client_to_server`]'s stream.
pub const PUMP_UP: u64 = 1;
/// Salt of [`pump_server_to_client`]'s stream.
pub const PUMP_DOWN: u64 = 2;

/// Write up to `max_write` random-sized pattern bytes (stream
/// [`PUMP_UP`]) into the client until `total` were written, read what the
/// server's session gives and check it against the pattern (panics on a
/// mismatch).
pub fn pump_client_to_server(
    p: &mut Net,
    f: &mut Flow,
    total: u64,
    max_write: usize,
    buf: &mut [u8],
) {
    if f.written < total {
        let len = between(&mut p.rng, 1, max_write).min((total - f.written) as usize);
        pattern(PUMP_UP, f.written, &mut buf[..len]);
        f.written += p.client.send(&buf[..len]).expect("client send") as u64;
    }
    if let Some(s) = p.session {
        loop {
            match p.server.recv(s, buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    assert!(
                        matches_pattern(PUMP_UP, f.read, &buf[..n]),
                        "c2s mismatch at offset {}",
                        f.read
                    );
                    f.read += n as u64;
                }
            }
        }
    }
}

/// The other direction of [`pump_client_to_server`] (stream
/// [`PUMP_DOWN`]).
pub fn pump_server_to_client(
    p: &mut Net,
    f: &mut Flow,
    total: u64,
    max_write: usize,
    buf: &mut [u8],
) {
    if let Some(s) = p.session {
        if f.written < total {
            let len = between(&mut p.rng, 1, max_write).min((total - f.written) as usize);
            pattern(PUMP_DOWN, f.written, &mut buf[..len]);
            if let Ok(n) = p.server.send(s, &buf[..len]) {
                f.written += n as u64;
            }
        }
    }
    loop {
        match p.client.recv(buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                assert!(
                    matches_pattern(PUMP_DOWN, f.read, &buf[..n]),
                    "s2c mismatch at offset {}",
                    f.read
                );
                f.read += n as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn between_stays_in_range_for_every_type() {
        let mut r = rng(1);
        for _ in 0..1000 {
            let a: usize = between(&mut r, 3, 5);
            assert!((3..=5).contains(&a));
            let b: u64 = between(&mut r, 0, 1);
            assert!(b <= 1);
        }
    }

    #[test]
    fn patterns_differ_by_salt_and_offset() {
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        pattern(1, 0, &mut a);
        pattern(2, 0, &mut b);
        assert_ne!(a, b);
        pattern(1, 1, &mut b);
        assert_ne!(a, b);
        assert_eq!(a[1..], b[..63]);
        assert!(matches_pattern(1, 0, &a));
        assert!(!matches_pattern(1, 1, &a));
    }

    #[test]
    fn flush_pace_carries_both_streams_exactly_once_across_a_break() {
        let mut net = Net::new(7, Config::default(), Config::default());
        assert!(net.connect(), "{:?}", net.cev);
        assert_eq!(net.client_write(50_000), 50_000);
        net.settle(50); // the server registers the session (ClientConfirm)
        assert_eq!(net.server_write(30_000), 30_000);
        net.transmit();
        net.brk(); // everything in flight is lost
        assert!(net.connect(), "resume: {:?}", net.cev);
        for _ in 0..50 {
            net.settle(50);
        }
        assert_eq!(net.up_read(), 50_000);
        assert_eq!(net.down[&0].read, 30_000);
        assert_eq!(net.sessions_of_generation(), 1);
        net.assert_no_violations();
    }

    #[test]
    fn chunk_pace_handshakes_and_pumps() {
        let mut p = Net::default_pair(3);
        p.handshake();
        let (mut up, mut down) = (Flow::default(), Flow::default());
        let mut buf = vec![0u8; 8192];
        for _ in 0..10_000 {
            if up.read == 20_000 && down.read == 20_000 {
                break;
            }
            pump_client_to_server(&mut p, &mut up, 20_000, 4000, &mut buf);
            pump_server_to_client(&mut p, &mut down, 20_000, 4000, &mut buf);
            p.step();
        }
        assert_eq!((up.read, down.read), (20_000, 20_000));
    }
}
