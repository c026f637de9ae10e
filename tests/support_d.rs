//! Harness of the resume tests (`tests/resume*.rs`): one [`Client`] and one
//! [`Server`] joined by a simulated transport (two byte pipes) whose bytes a
//! test can deliver in any chunking, cut at any point (losing the suffix
//! still in flight), flip or extend with injected bytes; injected time and
//! seeded RNGs, so every run is deterministic.
//!
//! Besides moving bytes, [`Sim`] checks on every step what must hold however
//! the transport breaks:
//! - both streams are byte-exact: every byte the applications read is
//!   compared with the pattern the other side wrote at that offset, so a
//!   duplicate or a gap is a mismatch;
//! - every `ResendRange { start, end }` (client and server) starts exactly
//!   at the peer's verified read count (a frame boundary the receiver
//!   recorded), not below what the sender still retains (its acknowledged
//!   count), and ends at the sender's bytes written;
//! - `buffer_memory()` of both sides never exceeds [`mem_bound`].
//!
//! The file is included with `#[path = "support_d.rs"] mod support_d;`;
//! compiled on its own it is an empty test binary.
#![allow(dead_code)]

use std::collections::BTreeSet;

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use relink::wire::{FRAME_OVERHEAD, MAX_FRAME_PAYLOAD};
use relink::{
    Client, Config, Duration, Error, Event, Instant, Server, ServerEvent, SessionId, TransportId,
    MIN_TRANSMIT_BUFFER,
};

/// Pattern salt of the client→server stream.
pub const UP: u64 = 0x5550;
/// Pattern salt of the server→client stream.
pub const DOWN: u64 = 0xD0D0;

/// The client type of these tests.
pub type TestClient = Client<ChaCha20Rng>;
/// The server type of these tests.
pub type TestServer = Server<ChaCha20Rng>;

/// A seeded CSPRNG.
pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// An integer in `lo..=hi` (modulo bias is irrelevant here).
pub fn between(rng: &mut ChaCha20Rng, lo: u64, hi: u64) -> u64 {
    debug_assert!(lo <= hi);
    let span = hi - lo;
    if span == u64::MAX {
        return rng.next_u64();
    }
    lo + rng.next_u64() % (span + 1)
}

/// An integer in `lo..=hi` whose logarithm is roughly uniform: small and
/// large values are both common.
pub fn log_between(rng: &mut ChaCha20Rng, lo: u64, hi: u64) -> u64 {
    let lo_bits = 64 - lo.max(1).leading_zeros() as u64;
    let hi_bits = 64 - hi.max(1).leading_zeros() as u64;
    let bits = between(rng, lo_bits, hi_bits);
    let top = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    between(rng, lo, hi.min(top).max(lo))
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Content of stream `salt` at `offset..offset + out.len()`: a hash of the
/// offset, so a byte delivered twice or skipped shows as a mismatch.
pub fn pattern(salt: u64, offset: u64, out: &mut [u8]) {
    let mut o = offset;
    let mut i = 0;
    while i < out.len() {
        let word = mix((o >> 3) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes();
        let k = (o & 7) as usize;
        let n = (8 - k).min(out.len() - i);
        out[i..i + n].copy_from_slice(&word[k..k + n]);
        i += n;
        o += n as u64;
    }
}

/// The most heap memory a session's buffers may hold under `cfg`: the send
/// history cap, the receive buffer, and one partial incoming frame (the
/// core reserves room for the largest frame *any* peer may send,
/// `FRAME_OVERHEAD + MAX_FRAME_PAYLOAD`, independent of this side's
/// `max_frame_payload`). No further constant: the buffers are the only heap
/// the stream holds and they are grown with `reserve_exact`, clamped to
/// their caps.
pub fn mem_bound(cfg: &Config) -> usize {
    let frame = FRAME_OVERHEAD + MAX_FRAME_PAYLOAD;
    cfg.send_buffer.max(1) + cfg.recv_buffer.max(frame) + frame
}

/// One direction of the simulated transport: bytes written by one side and
/// not yet delivered to the other.
#[derive(Default, Debug)]
pub struct Pipe {
    buf: Vec<u8>,
    head: usize,
    /// Bytes handed to the receiver on the current transport.
    pub delivered: u64,
    /// Bytes written by the sender on the current transport.
    pub pushed: u64,
}

impl Pipe {
    /// Bytes in flight.
    pub fn len(&self) -> usize {
        self.buf.len() - self.head
    }
    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The bytes in flight.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.head..]
    }
    /// Append bytes the sender wrote.
    pub fn push(&mut self, b: &[u8]) {
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        } else if self.head > (1 << 20) {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        self.buf.extend_from_slice(b);
        self.pushed += b.len() as u64;
    }
    /// The receiver took `n` bytes.
    pub fn consume(&mut self, n: usize) {
        self.head += n;
        self.delivered += n as u64;
    }
    /// A new transport: nothing in flight, counters at zero.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.head = 0;
        self.delivered = 0;
        self.pushed = 0;
    }
    /// Flip bit `bit` (0..8) of the in-flight byte `at`.
    pub fn flip(&mut self, at: usize, bit: u32) {
        self.buf[self.head + at] ^= 1 << bit;
    }
    /// Insert a byte the sender never wrote before in-flight byte `at`
    /// (`at == len()` appends).
    pub fn inject(&mut self, at: usize, byte: u8) {
        self.buf.insert(self.head + at, byte);
    }
    /// Lose everything in flight after the first `keep` bytes.
    pub fn truncate(&mut self, keep: usize) {
        let keep = keep.min(self.len());
        self.buf.truncate(self.head + keep);
    }
}

/// What a [`Fault`] does to the byte stream of a transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Flip this bit (0..8) of the byte.
    Flip(u32),
    /// Insert this byte before it.
    Inject(u8),
}

/// One corruption of the current transport: at byte `at` of one
/// direction (counted from the transport's first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Client→server (else server→client).
    pub to_server: bool,
    /// Offset in that direction's bytes of the current transport.
    pub at: u64,
    /// Flip or inject.
    pub kind: FaultKind,
}

/// Bytes of one direction of the session.
#[derive(Default, Clone, Copy, Debug)]
pub struct Flow {
    /// Bytes the sending application wrote (accepted by `send`).
    pub sent: u64,
    /// Bytes the receiving application read and checked.
    pub received: u64,
    /// Bytes the sending application writes in total.
    pub total: u64,
}

impl Flow {
    /// Everything was written and read.
    pub fn done(&self) -> bool {
        self.received == self.total
    }
}

/// Counts of what happened during a run.
#[derive(Default, Clone, Debug)]
pub struct Stats {
    /// `ResendRange` events of the client (start, end).
    pub client_ranges: Vec<(u64, u64)>,
    /// `ResendRange` events of the server (start, end).
    pub server_ranges: Vec<(u64, u64)>,
    /// Completed resumes seen by the client.
    pub client_resumes: u64,
    /// Resumes the server accepted.
    pub server_resumes: u64,
    /// Transports opened (handshake and resumes).
    pub transports: u64,
    /// Largest `client.buffer_memory()` seen.
    pub client_mem_peak: usize,
    /// Largest `server.buffer_memory(sid)` seen.
    pub server_mem_peak: usize,
}

/// What the ResendRange checks compare with: values before an input call.
#[derive(Clone, Copy, Debug)]
struct Snap {
    client_acked: u64,
    server_acked: u64,
    client_verified: u64,
    server_verified: u64,
}

/// Read counts each receiver reported after every input call (frame
/// boundaries of verified data).
#[derive(Default, Debug)]
pub struct Boundaries {
    /// Verified counts of the client→server stream at the server.
    pub at_server: BTreeSet<u64>,
    /// Verified counts of the server→client stream at the client.
    pub at_client: BTreeSet<u64>,
}

/// A client, a server and the transport between them. See the module docs.
pub struct Sim {
    /// The client.
    pub client: TestClient,
    /// The server.
    pub server: TestServer,
    /// The client's configuration.
    pub ccfg: Config,
    /// The server's configuration.
    pub scfg: Config,
    /// Current time of both sides.
    pub now: Instant,
    /// The current transport's id at the server.
    pub tid: Option<TransportId>,
    /// The session at the server.
    pub sid: Option<SessionId>,
    /// Client→server bytes in flight.
    pub c2s: Pipe,
    /// Server→client bytes in flight.
    pub s2c: Pipe,
    /// The test's own choices.
    pub rng: ChaCha20Rng,
    /// Client→server application stream.
    pub up: Flow,
    /// Server→client application stream.
    pub down: Flow,
    /// Whether the client application reads in `step`.
    pub client_reads: bool,
    /// Whether the server application reads in `step`.
    pub server_reads: bool,
    /// Largest application write.
    pub max_write: usize,
    /// Largest chunk delivered at once per direction and step.
    pub max_chunk: usize,
    /// Bytes kept in flight per direction at most (like a TCP window).
    pub window: usize,
    /// Largest time advance per step (µs); at least 1.
    pub dt_max: u64,
    /// Client→server bytes silently vanish (a dead transport nobody noticed).
    pub silent_c2s: bool,
    /// Server→client bytes silently vanish.
    pub silent_s2c: bool,
    /// A corruption pending on the current transport (cleared by `open`).
    pub fault: Option<Fault>,
    /// Faults applied so far.
    pub faults_applied: u64,
    /// Every client event, in order.
    pub cev: Vec<Event>,
    /// Every server event, in order.
    pub sev: Vec<ServerEvent>,
    /// The current transport was ended by a core (or the server told the
    /// driver to close it).
    pub ended: bool,
    /// The client saw `PeerClosed`.
    pub client_peer_closed: bool,
    /// The server saw `PeerClosed`.
    pub server_peer_closed: bool,
    /// The client application read the end of the stream.
    pub client_eof: bool,
    /// The server application read the end of the stream.
    pub server_eof: bool,
    /// Counts of the run.
    pub stats: Stats,
    /// Frame boundaries, when tracked.
    pub boundaries: Option<Boundaries>,
    /// Seed of the client's RNG (a second client with it behaves alike).
    pub client_seed: u64,
    tx: Vec<u8>,
    got: Vec<u8>,
    want: Vec<u8>,
}

impl Sim {
    /// A client and a server with the given configurations, no transport.
    pub fn new(seed: u64, ccfg: Config, scfg: Config) -> Sim {
        let client_seed = seed ^ 0xC11E;
        Sim {
            client: Client::new(ccfg.clone(), rng(client_seed)),
            server: Server::new(scfg.clone(), rng(seed ^ 0x5E7E)),
            ccfg,
            scfg,
            now: Instant::from_micros(1_000_000),
            tid: None,
            sid: None,
            c2s: Pipe::default(),
            s2c: Pipe::default(),
            rng: rng(seed),
            up: Flow::default(),
            down: Flow::default(),
            client_reads: true,
            server_reads: true,
            max_write: 64 * 1024,
            max_chunk: 64 * 1024,
            window: 256 * 1024,
            dt_max: 200,
            silent_c2s: false,
            silent_s2c: false,
            fault: None,
            faults_applied: 0,
            cev: Vec::new(),
            sev: Vec::new(),
            ended: false,
            client_peer_closed: false,
            server_peer_closed: false,
            client_eof: false,
            server_eof: false,
            stats: Stats::default(),
            boundaries: None,
            client_seed,
            tx: vec![0; 64 * 1024],
            got: vec![0; 64 * 1024],
            want: vec![0; 64 * 1024],
        }
    }

    /// Both sides with `Config::default()`.
    pub fn default_sim(seed: u64) -> Sim {
        Sim::new(seed, Config::default(), Config::default())
    }

    /// Record read counts after every input call (for the frame-boundary
    /// check of resend ranges).
    pub fn track_boundaries(&mut self) {
        let mut b = Boundaries::default();
        b.at_server.insert(0);
        b.at_client.insert(0);
        self.boundaries = Some(b);
    }

    /// Set how many bytes each application writes in total.
    pub fn set_totals(&mut self, up: u64, down: u64) {
        self.up.total = up;
        self.down.total = down;
    }

    // ----- transports -------------------------------------------------------

    /// Open a transport: the server accepts it, the client starts the
    /// handshake (first time) or a resume.
    pub fn open(&mut self) {
        self.c2s.reset();
        self.s2c.reset();
        self.ended = false;
        self.silent_c2s = false;
        self.silent_s2c = false;
        self.fault = None;
        self.tid = Some(self.server.accept(self.now).expect("server accept"));
        self.client
            .new_transport(self.now)
            .expect("client new_transport");
        self.stats.transports += 1;
    }

    /// The transport breaks: both drivers notice and drop it; whatever was
    /// in flight is lost.
    pub fn brk(&mut self) {
        if let Some(t) = self.tid.take() {
            self.server.transport_lost(t, self.now);
        }
        self.client.transport_lost(self.now);
        self.c2s.reset();
        self.s2c.reset();
        self.drain_events();
    }

    /// Deliver a random prefix of what is in flight each way (typically
    /// ending inside a frame), lose the rest, break.
    pub fn cut(&mut self) {
        let k = between(&mut self.rng, 0, self.c2s.len() as u64) as usize;
        self.c2s.truncate(k);
        let k = between(&mut self.rng, 0, self.s2c.len() as u64) as usize;
        self.s2c.truncate(k);
        self.deliver_c2s(usize::MAX);
        self.deliver_s2c(usize::MAX);
        self.brk();
    }

    /// What a driver does when a core ended the transport: write what is
    /// left (maybe a rejection), let the other side read it, close.
    pub fn flush_break(&mut self) {
        self.transmit();
        self.deliver_c2s(usize::MAX);
        self.deliver_s2c(usize::MAX);
        self.brk();
    }

    /// Break (losing nothing already delivered) and open a new transport.
    pub fn reconnect(&mut self) {
        self.brk();
        self.open();
    }

    /// Open the first transport and run until the handshake completed.
    pub fn handshake(&mut self) -> SessionId {
        self.open();
        for _ in 0..1000 {
            self.step();
            if let (Some(sid), true) = (self.sid, self.client.is_connected()) {
                return sid;
            }
        }
        panic!("handshake did not complete: {:?} {:?}", self.cev, self.sev);
    }

    /// Run steps until the current resume completed (client connected).
    pub fn finish_resume(&mut self) {
        for _ in 0..1000 {
            if self.client.is_connected() {
                return;
            }
            assert!(!self.ended, "resume failed: {:?}", self.tail_events());
            self.step();
        }
        panic!("resume did not complete: {:?}", self.tail_events());
    }

    // ----- moving bytes -----------------------------------------------------

    /// Write what both sides want to send into the pipes (up to `window`).
    pub fn transmit(&mut self) {
        let Some(t) = self.tid else {
            return;
        };
        while self.c2s.len() < self.window {
            let room = (self.window - self.c2s.len()).clamp(MIN_TRANSMIT_BUFFER, self.tx.len());
            let n = self
                .client
                .poll_transmit(self.now, &mut self.tx[..room])
                .expect("client poll_transmit");
            if n == 0 {
                break;
            }
            self.c2s.push(&self.tx[..n]);
        }
        while self.s2c.len() < self.window {
            let room = (self.window - self.s2c.len()).clamp(MIN_TRANSMIT_BUFFER, self.tx.len());
            match self.server.poll_transmit(t, self.now, &mut self.tx[..room]) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.s2c.push(&self.tx[..n]),
            }
        }
    }

    fn snap(&self) -> Snap {
        let (server_acked, server_verified) = match self.sid {
            Some(s) => (
                self.down.sent - self.server.unacked(s) as u64,
                self.up.received + self.server.readable(s) as u64,
            ),
            None => (0, 0),
        };
        Snap {
            client_acked: self.client.bytes_written() - self.client.unacked() as u64,
            server_acked,
            client_verified: self.down.received + self.client.readable() as u64,
            server_verified,
        }
    }

    /// Hand up to `n` in-flight bytes to the server. Returns how many it
    /// consumed.
    pub fn deliver_c2s(&mut self, n: usize) -> usize {
        let Some(t) = self.tid else {
            return 0;
        };
        if self.silent_c2s {
            self.c2s.truncate(0);
        }
        self.apply_fault(true, n);
        let n = n.min(self.c2s.len());
        if n == 0 || self.server.transport_ended(t) {
            return 0;
        }
        let snap = self.snap();
        let k = match self
            .server
            .handle_input(t, self.now, &self.c2s.pending()[..n])
        {
            Ok(k) => k,
            Err(_) => {
                self.ended = true;
                n
            }
        };
        self.c2s.consume(k);
        self.after_input(snap);
        k
    }

    /// Hand up to `n` in-flight bytes to the client. Returns how many it
    /// consumed.
    pub fn deliver_s2c(&mut self, n: usize) -> usize {
        if self.silent_s2c {
            self.s2c.truncate(0);
        }
        self.apply_fault(false, n);
        let n = n.min(self.s2c.len());
        if n == 0 || self.client.transport_ended() || self.tid.is_none() {
            return 0;
        }
        let snap = self.snap();
        let k = match self.client.handle_input(self.now, &self.s2c.pending()[..n]) {
            Ok(k) => k,
            Err(_) => {
                self.ended = true;
                n
            }
        };
        self.s2c.consume(k);
        self.after_input(snap);
        k
    }

    /// Apply the pending fault if it falls into the next `n` bytes about
    /// to be delivered in that direction.
    fn apply_fault(&mut self, to_server: bool, n: usize) {
        let Some(f) = self.fault else {
            return;
        };
        if f.to_server != to_server {
            return;
        }
        let pipe = if to_server {
            &mut self.c2s
        } else {
            &mut self.s2c
        };
        let Some(rel) = f.at.checked_sub(pipe.delivered) else {
            self.fault = None;
            return;
        };
        let rel = rel as usize;
        if rel >= pipe.len().min(n) {
            return;
        }
        match f.kind {
            FaultKind::Flip(bit) => pipe.flip(rel, bit),
            FaultKind::Inject(b) => pipe.inject(rel, b),
        }
        self.fault = None;
        self.faults_applied += 1;
    }

    fn after_input(&mut self, snap: Snap) {
        self.drain_with(snap);
        if let Some(b) = &mut self.boundaries {
            if let Some(s) = self.sid {
                b.at_server
                    .insert(self.up.received + self.server.readable(s) as u64);
            }
            b.at_client
                .insert(self.down.received + self.client.readable() as u64);
        }
        self.check_memory();
    }

    /// One round: time advances, applications write, both sides transmit,
    /// a random chunk moves each way, applications read, timers run. When
    /// nothing at all moves, time jumps to the next timer.
    pub fn step(&mut self) {
        let dt = between(&mut self.rng, 1, self.dt_max.max(1));
        self.now = self.now.saturating_add(Duration::from_micros(dt));
        self.app_send();
        self.transmit();
        if self.c2s.is_empty() && self.s2c.is_empty() {
            self.jump_to_timer();
            self.transmit();
        }
        if !self.c2s.is_empty() {
            let n = between(&mut self.rng, 1, self.max_chunk as u64) as usize;
            self.deliver_c2s(n);
        }
        if !self.s2c.is_empty() {
            let n = between(&mut self.rng, 1, self.max_chunk as u64) as usize;
            self.deliver_s2c(n);
        }
        self.app_recv();
        self.timers();
        self.check_memory();
    }

    /// Set the time to the earliest timer of either side if it lies ahead
    /// and nothing is waiting to be sent.
    pub fn jump_to_timer(&mut self) {
        if self.tid.is_none() {
            return;
        }
        let wants = self.client.wants_transmit(self.now)
            || self
                .tid
                .is_some_and(|t| self.server.wants_transmit(t, self.now));
        if wants {
            return;
        }
        let next = match (self.client.poll_timeout(), self.server.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(next) = next {
            if next > self.now {
                self.now = next;
                self.timers();
            }
        }
    }

    /// Run due timers of both sides.
    pub fn timers(&mut self) {
        if self.client.poll_timeout().is_some_and(|d| d <= self.now) {
            self.client.handle_timeout(self.now);
        }
        if self.server.poll_timeout().is_some_and(|d| d <= self.now) {
            self.server.handle_timeout(self.now);
        }
        self.drain_events();
    }

    // ----- applications -----------------------------------------------------

    /// Both applications write a random amount of their pattern (within
    /// the send cap, which `send` must honour exactly).
    pub fn app_send(&mut self) {
        if self.up.sent < self.up.total && !self.client.is_closed() {
            let cap = self.ccfg.send_buffer.max(1);
            let room = cap.saturating_sub(self.client.unacked());
            // Offer one byte more than fits: `send` must take exactly
            // what fits (0 when the history is at its cap).
            let len = (between(&mut self.rng, 1, self.max_write as u64))
                .min(self.up.total - self.up.sent)
                .min(room as u64 + 1) as usize;
            pattern(UP, self.up.sent, &mut self.tx[..len]);
            let n = self.client.send(&self.tx[..len]).expect("client send");
            assert_eq!(n, len.min(room), "client send must fill the cap exactly");
            assert!(self.client.unacked() <= cap, "client history above cap");
            self.up.sent += n as u64;
        }
        if let Some(s) = self.sid {
            if self.down.sent < self.down.total && self.server.has_session(s) {
                let cap = self.scfg.send_buffer.max(1);
                let room = cap.saturating_sub(self.server.unacked(s));
                let len = (between(&mut self.rng, 1, self.max_write as u64))
                    .min(self.down.total - self.down.sent)
                    .min(room as u64 + 1) as usize;
                pattern(DOWN, self.down.sent, &mut self.tx[..len]);
                let n = self.server.send(s, &self.tx[..len]).expect("server send");
                assert_eq!(n, len.min(room), "server send must fill the cap exactly");
                assert!(self.server.unacked(s) <= cap, "server history above cap");
                self.down.sent += n as u64;
            }
        }
    }

    /// Both applications read (if they do) and check what they read.
    pub fn app_recv(&mut self) {
        if self.client_reads {
            self.client_read_all();
        }
        if self.server_reads {
            self.server_read_all();
        }
    }

    /// The client application reads everything available and checks it.
    pub fn client_read_all(&mut self) {
        let mut got = std::mem::take(&mut self.got);
        loop {
            match self.client.recv(&mut got) {
                Ok(0) => {
                    self.client_eof = true;
                    break;
                }
                Ok(n) => {
                    let off = self.down.received;
                    self.check(DOWN, off, &got[..n]);
                    self.down.received += n as u64;
                    assert!(
                        self.down.received <= self.down.sent,
                        "client read unsent bytes"
                    );
                }
                Err(Error::WouldBlock) | Err(Error::Closed) => break,
                Err(e) => panic!("client recv: {e:?}"),
            }
        }
        self.got = got;
    }

    /// The server application reads everything available and checks it.
    pub fn server_read_all(&mut self) {
        let Some(s) = self.sid else {
            return;
        };
        let mut got = std::mem::take(&mut self.got);
        loop {
            match self.server.recv(s, &mut got) {
                Ok(0) => {
                    self.server_eof = true;
                    break;
                }
                Ok(n) => {
                    let off = self.up.received;
                    self.check(UP, off, &got[..n]);
                    self.up.received += n as u64;
                    assert!(self.up.received <= self.up.sent, "server read unsent bytes");
                }
                Err(Error::WouldBlock) | Err(Error::UnknownSession) => break,
                Err(e) => panic!("server recv: {e:?}"),
            }
        }
        self.got = got;
    }

    fn check(&mut self, salt: u64, offset: u64, got: &[u8]) {
        let want = &mut self.want[..got.len()];
        pattern(salt, offset, want);
        if got != &want[..] {
            let i = got.iter().zip(want.iter()).position(|(a, b)| a != b);
            panic!(
                "{} stream corrupted at offset {} (read of {} bytes at {offset})",
                if salt == UP { "c2s" } else { "s2c" },
                offset + i.unwrap_or(0) as u64,
                got.len()
            );
        }
    }

    // ----- events and invariants ----------------------------------------------

    /// Move queued events of both sides into `cev`/`sev`, checking resend
    /// ranges against the current counts.
    pub fn drain_events(&mut self) {
        let snap = self.snap();
        self.drain_with(snap);
    }

    fn drain_with(&mut self, snap: Snap) {
        while let Some(e) = self.client.poll_event() {
            match e {
                Event::ResendRange { start, end } => self.check_client_range(snap, start, end),
                Event::Resumed { .. } => self.stats.client_resumes += 1,
                Event::PeerClosed => self.client_peer_closed = true,
                _ => {}
            }
            self.cev.push(e);
        }
        while let Some(e) = self.server.poll_event() {
            match e {
                ServerEvent::HandshakeDone { session, .. } => self.sid = Some(session),
                ServerEvent::CloseTransport { transport, .. } if Some(transport) == self.tid => {
                    self.ended = true;
                }
                ServerEvent::ResendRange {
                    session,
                    start,
                    end,
                } => {
                    assert_eq!(Some(session), self.sid, "resend of another session");
                    self.check_server_range(snap, start, end);
                }
                ServerEvent::Resumed { .. } => self.stats.server_resumes += 1,
                ServerEvent::PeerClosed { .. } => self.server_peer_closed = true,
                _ => {}
            }
            self.sev.push(e);
        }
        if self.client.transport_ended() {
            self.ended = true;
        }
    }

    fn check_client_range(&mut self, snap: Snap, start: u64, end: u64) {
        assert_eq!(
            start, snap.server_verified,
            "client resend must start at the server's verified count"
        );
        assert!(
            start >= snap.client_acked,
            "client resend from {start} below its acknowledged {}",
            snap.client_acked
        );
        assert_eq!(end, self.client.bytes_written(), "client resend end");
        assert!(end - start <= self.ccfg.send_buffer.max(1) as u64);
        if let Some(b) = &self.boundaries {
            assert!(
                b.at_server.contains(&start),
                "client resend start {start} is no boundary the server verified"
            );
        }
        self.stats.client_ranges.push((start, end));
    }

    fn check_server_range(&mut self, snap: Snap, start: u64, end: u64) {
        assert_eq!(
            start, snap.client_verified,
            "server resend must start at the client's verified count"
        );
        assert!(
            start >= snap.server_acked,
            "server resend from {start} below its acknowledged {}",
            snap.server_acked
        );
        assert_eq!(end, self.down.sent, "server resend end");
        assert!(end - start <= self.scfg.send_buffer.max(1) as u64);
        if let Some(b) = &self.boundaries {
            assert!(
                b.at_client.contains(&start),
                "server resend start {start} is no boundary the client verified"
            );
        }
        self.stats.server_ranges.push((start, end));
    }

    /// Assert both sides' buffer memory is within [`mem_bound`].
    pub fn check_memory(&mut self) {
        let c = self.client.buffer_memory();
        assert!(
            c <= mem_bound(&self.ccfg),
            "client buffer memory {c} above bound {}",
            mem_bound(&self.ccfg)
        );
        self.stats.client_mem_peak = self.stats.client_mem_peak.max(c);
        if let Some(s) = self.sid {
            let m = self.server.buffer_memory(s);
            assert!(
                m <= mem_bound(&self.scfg),
                "server buffer memory {m} above bound {}",
                mem_bound(&self.scfg)
            );
            self.stats.server_mem_peak = self.stats.server_mem_peak.max(m);
        }
    }

    /// The last few events of both sides, for failure messages.
    pub fn tail_events(&self) -> (Vec<Event>, Vec<ServerEvent>) {
        (
            self.cev[self.cev.len().saturating_sub(6)..].to_vec(),
            self.sev[self.sev.len().saturating_sub(6)..].to_vec(),
        )
    }

    /// Run steps until both flows are done; `on_step` may break or fault
    /// the transport (it is called after every step). Panics after
    /// `max_steps`.
    pub fn run(&mut self, max_steps: u64, mut on_step: impl FnMut(&mut Sim)) {
        let mut steps = 0u64;
        while !(self.up.done() && self.down.done()) {
            self.step();
            on_step(self);
            steps += 1;
            assert!(
                steps < max_steps,
                "no progress: up {:?} down {:?} events {:?}",
                self.up,
                self.down,
                self.tail_events()
            );
        }
    }

    /// Run steps until nothing is in flight and neither side wants to send
    /// (or `max` steps).
    pub fn settle(&mut self, max: usize) {
        for _ in 0..max {
            self.step();
            let quiet = self.c2s.is_empty()
                && self.s2c.is_empty()
                && !self.client.wants_transmit(self.now)
                && !self
                    .tid
                    .is_some_and(|t| self.server.wants_transmit(t, self.now));
            if quiet {
                return;
            }
        }
    }
}
