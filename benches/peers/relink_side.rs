//! relink's columns: a `Client` and a `Server` driven directly, the way a
//! driver does (poll_transmit into a buffer, handle_input on the other
//! side, recv into an application buffer, ACKs flowing back).

use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;
use relink::wire::{FrameHeader, FrameType, FRAME_HEADER_LEN, FRAME_OVERHEAD, MAX_FRAME_PAYLOAD};
use relink::{
    Client, Config, Duration, Event, Instant, Server, ServerEvent, SessionId, StaticKeypair,
    TransportId,
};

use crate::Sample;

/// Transmit buffer: one maximum DATA frame plus an ACK frame.
const WIRE: usize = FRAME_OVERHEAD + MAX_FRAME_PAYLOAD + FRAME_OVERHEAD + 8;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn server_config(pinned: Option<&StaticKeypair>) -> Config {
    Config {
        server_static: pinned.cloned(),
        max_sessions: usize::MAX,
        max_pending_transports: usize::MAX,
        // The handshake figures keep hundreds of handshakes in progress at
        // once: no cookie round (the admission rows measure it).
        cookie_threshold: usize::MAX,
        ..Config::default()
    }
}

fn client_config(pinned: Option<&StaticKeypair>) -> Config {
    Config {
        pinned_server_key: pinned.map(|k| k.public_key()),
        ..Config::default()
    }
}

/// An established client/server pair with its buffers.
pub struct Bulk {
    client: Client<ChaCha20Rng>,
    server: Server<ChaCha20Rng>,
    tid: TransportId,
    sid: SessionId,
    now: Instant,
    wire: Vec<u8>,
    app: Vec<u8>,
    data: Vec<u8>,
    both: bool,
}

impl Bulk {
    /// Handshake a pair; `both`: `run` sends both ways at once.
    pub fn new(seed: u64, both: bool) -> Bulk {
        Bulk::with_configs(seed, both, client_config(None), server_config(None))
    }

    /// [`Bulk::new`] with these configurations.
    fn with_configs(seed: u64, both: bool, ccfg: Config, scfg: Config) -> Bulk {
        let mut client = Client::new(ccfg, rng(seed));
        let mut server = Server::new(scfg, rng(seed + 1000));
        let now = Instant::from_micros(1_000_000);
        let mut wire = vec![0u8; WIRE];
        let (tid, sid) = handshake(&mut client, &mut server, now, &mut wire);
        Bulk {
            client,
            server,
            tid,
            sid,
            now,
            wire,
            app: vec![0u8; 64 * 1024],
            data: (0..MAX_FRAME_PAYLOAD).map(|i| (i * 7) as u8).collect(),
            both,
        }
    }

    /// Client's output to the server until it has nothing more; returns
    /// application bytes the server read.
    fn client_to_server(&mut self) -> u64 {
        let mut got = 0;
        loop {
            let n = self
                .client
                .poll_transmit(self.now, &mut self.wire)
                .expect("client poll_transmit");
            if n == 0 {
                return got;
            }
            let mut off = 0;
            while off < n {
                let k = self
                    .server
                    .handle_input(self.tid, self.now, &self.wire[off..n])
                    .expect("server handle_input");
                off += k;
                let r = drain_server(&mut self.server, self.sid, &mut self.app);
                assert!(k > 0 || r > 0, "server stuck");
                got += r;
            }
        }
    }

    /// Server's output to the client; returns application bytes read.
    fn server_to_client(&mut self) -> u64 {
        let mut got = 0;
        loop {
            let n = self
                .server
                .poll_transmit(self.tid, self.now, &mut self.wire)
                .expect("server poll_transmit");
            if n == 0 {
                return got;
            }
            let mut off = 0;
            while off < n {
                let k = self
                    .client
                    .handle_input(self.now, &self.wire[off..n])
                    .expect("client handle_input");
                off += k;
                let r = drain_client(&mut self.client, &mut self.app);
                assert!(k > 0 || r > 0, "client stuck");
                got += r;
            }
        }
    }

    /// Move `total` bytes (each way when `both`) in `write`-byte writes.
    pub fn run(&mut self, total: u64, write: usize) -> Sample {
        Sample::time(|| {
            let (mut up_sent, mut up_got, mut down_sent, mut down_got) = (0, 0, 0, 0);
            let down_total = if self.both { total } else { 0 };
            while up_got < total || down_got < down_total {
                if up_sent < total {
                    let len = write.min((total - up_sent) as usize);
                    up_sent += self.client.send(&self.data[..len]).expect("send") as u64;
                }
                if down_sent < down_total {
                    let len = write.min((down_total - down_sent) as usize);
                    down_sent +=
                        self.server.send(self.sid, &self.data[..len]).expect("send") as u64;
                }
                up_got += self.client_to_server();
                down_got += self.server_to_client();
                self.now = self.now.saturating_add(Duration::from_micros(1));
            }
            up_got + down_got
        })
    }

    /// `n` messages of `len` bytes client → server, each transmitted and
    /// delivered before the next is written; the server's ACKs flow back.
    pub fn messages(&mut self, n: u64, len: usize) -> Sample {
        Sample::time(|| {
            for _ in 0..n {
                let k = self.client.send(&self.data[..len]).expect("send");
                assert_eq!(k, len);
                let got = self.client_to_server();
                assert_eq!(got, len as u64);
                self.server_to_client();
                self.now = self.now.saturating_add(Duration::from_micros(1));
            }
            n
        })
    }
}

fn drain_server(server: &mut Server<ChaCha20Rng>, sid: SessionId, app: &mut [u8]) -> u64 {
    let mut got = 0;
    while let Ok(n) = server.recv(sid, app) {
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    got
}

fn drain_client(client: &mut Client<ChaCha20Rng>, app: &mut [u8]) -> u64 {
    let mut got = 0;
    while let Ok(n) = client.recv(app) {
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    got
}

/// Run a handshake to completion. Returns the transport and session.
fn handshake(
    client: &mut Client<ChaCha20Rng>,
    server: &mut Server<ChaCha20Rng>,
    now: Instant,
    wire: &mut [u8],
) -> (TransportId, SessionId) {
    let tid = server.accept(now).expect("accept");
    client.new_transport(now).expect("new_transport");
    let mut sid = None;
    for _ in 0..4 {
        let n = client.poll_transmit(now, wire).expect("client tx");
        if n > 0 {
            assert_eq!(server.handle_input(tid, now, &wire[..n]).expect("rx"), n);
        }
        let m = server.poll_transmit(tid, now, wire).expect("server tx");
        while let Some(e) = server.poll_event() {
            if let ServerEvent::HandshakeDone { session, .. } = e {
                sid = Some(session);
            }
        }
        if m > 0 {
            assert_eq!(client.handle_input(now, &wire[..m]).expect("rx"), m);
        }
        while let Some(e) = client.poll_event() {
            assert!(
                matches!(e, Event::HandshakeDone { .. }),
                "unexpected client event {e:?}"
            );
        }
        if let (Some(sid), true) = (sid, client.is_connected()) {
            return (tid, sid);
        }
    }
    panic!("relink handshake did not complete");
}

/// Full handshakes with a fresh client each time.
pub struct Handshakes {
    seed: u64,
    static_key: Option<StaticKeypair>,
    wire: Vec<u8>,
}

impl Handshakes {
    /// `pinned`: the server has a static key and clients pin it.
    pub fn new(seed: u64, pinned: bool) -> Handshakes {
        Handshakes {
            seed,
            static_key: pinned.then(|| StaticKeypair::generate(&mut rng(seed ^ 0x5747))),
            wire: vec![0u8; WIRE],
        }
    }

    /// Both sides, handshakes per second.
    pub fn both(&mut self, n: u64) -> Sample {
        self.seed += 1;
        let mut server = Server::new(server_config(self.static_key.as_ref()), rng(self.seed));
        let ccfg = client_config(self.static_key.as_ref());
        let s = Sample::time(|| {
            for i in 0..n {
                let now = Instant::from_micros(1_000_000 + i);
                let mut client = Client::new(ccfg.clone(), rng(self.seed << 20 | i));
                handshake(&mut client, &mut server, now, &mut self.wire);
            }
            n
        });
        drop(server);
        s
    }

    /// The server's work alone, in phases: `n` clients write their hellos
    /// (not timed), the server accepts `n` transports, reads the hellos and
    /// writes its replies (timed), the clients answer (not timed), the
    /// server reads the confirmations and reports the sessions (timed).
    pub fn server_only(&mut self, n: u64) -> Sample {
        self.seed += 1;
        let mut server = Server::new(server_config(self.static_key.as_ref()), rng(self.seed));
        let ccfg = client_config(self.static_key.as_ref());
        let now = Instant::from_micros(1_000_000);
        let mut clients: Vec<_> = (0..n)
            .map(|i| Client::new(ccfg.clone(), rng(self.seed << 20 | i)))
            .collect();
        let mut msgs: Vec<Vec<u8>> = clients
            .iter_mut()
            .map(|c| {
                c.new_transport(now).expect("new_transport");
                let k = c.poll_transmit(now, &mut self.wire).expect("tx");
                self.wire[..k].to_vec()
            })
            .collect();
        let mut tids = Vec::with_capacity(n as usize);
        let t = crate::cpu_secs();
        for m in msgs.iter_mut() {
            let tid = server.accept(now).expect("accept");
            assert_eq!(server.handle_input(tid, now, m).expect("rx"), m.len());
            let k = server.poll_transmit(tid, now, &mut self.wire).expect("tx");
            m.clear();
            m.extend_from_slice(&self.wire[..k]);
            tids.push(tid);
        }
        let mut secs = crate::cpu_secs() - t;
        for (c, m) in clients.iter_mut().zip(msgs.iter_mut()) {
            assert_eq!(c.handle_input(now, m).expect("rx"), m.len());
            let k = c.poll_transmit(now, &mut self.wire).expect("tx");
            m.clear();
            m.extend_from_slice(&self.wire[..k]);
        }
        let t = crate::cpu_secs();
        let mut done = 0;
        for (tid, m) in tids.iter().zip(msgs.iter()) {
            assert_eq!(server.handle_input(*tid, now, m).expect("rx"), m.len());
            while let Some(e) = server.poll_event() {
                if let ServerEvent::HandshakeDone { .. } = e {
                    done += 1;
                }
            }
        }
        secs += crate::cpu_secs() - t;
        assert_eq!(done, n);
        assert!(clients.iter().all(|c| c.is_connected()));
        drop((server, clients));
        Sample {
            units: n as f64,
            secs,
        }
    }
}

/// Resumes: `sessions` established sessions, each resumed on a new
/// transport per round (transport lost on both sides, new transport,
/// request, response, both sides resumed).
pub struct Resumes {
    clients: Vec<Client<ChaCha20Rng>>,
    server: Server<ChaCha20Rng>,
    tids: Vec<TransportId>,
    now: Instant,
    wire: Vec<u8>,
}

impl Resumes {
    /// `sessions` established sessions.
    pub fn new(seed: u64, sessions: usize) -> Resumes {
        let mut server = Server::new(server_config(None), rng(seed + 1000));
        let now = Instant::from_micros(1_000_000);
        let mut wire = vec![0u8; WIRE];
        let mut clients = Vec::with_capacity(sessions);
        let mut tids = Vec::with_capacity(sessions);
        for i in 0..sessions {
            let mut client = Client::new(client_config(None), rng(seed << 20 | i as u64));
            let (tid, _) = handshake(&mut client, &mut server, now, &mut wire);
            clients.push(client);
            tids.push(tid);
        }
        Resumes {
            clients,
            server,
            tids,
            now,
            wire,
        }
    }

    /// Resume every session once, one after the other, both sides timed.
    pub fn both(&mut self) -> Sample {
        self.now = self.now.saturating_add(Duration::from_micros(10));
        let now = self.now;
        let (server, wire) = (&mut self.server, &mut self.wire);
        let n = self.clients.len() as u64;
        Sample::time(|| {
            for (client, tid) in self.clients.iter_mut().zip(self.tids.iter_mut()) {
                client.transport_lost(now);
                server.transport_lost(*tid, now);
                *tid = server.accept(now).expect("accept");
                client.new_transport(now).expect("new_transport");
                let k = client.poll_transmit(now, wire).expect("tx");
                assert_eq!(server.handle_input(*tid, now, &wire[..k]).expect("rx"), k);
                let m = server.poll_transmit(*tid, now, wire).expect("tx");
                let mut resumed = false;
                while let Some(e) = server.poll_event() {
                    resumed |= matches!(e, ServerEvent::Resumed { .. });
                }
                assert!(resumed, "server did not resume");
                assert_eq!(client.handle_input(now, &wire[..m]).expect("rx"), m);
                let mut resumed = false;
                while let Some(e) = client.poll_event() {
                    resumed |= matches!(e, Event::Resumed { .. });
                }
                assert!(resumed && client.is_connected(), "client did not resume");
            }
            n
        })
    }

    /// The server's work alone, in phases like `Handshakes::server_only`:
    /// the clients write their requests (not timed); the server drops the
    /// old transports, accepts new ones, reads the requests and writes
    /// its responses (timed); the clients read the responses (not timed).
    pub fn server_only(&mut self) -> Sample {
        self.now = self.now.saturating_add(Duration::from_micros(10));
        let now = self.now;
        let wire = &mut self.wire;
        let mut msgs: Vec<Vec<u8>> = self
            .clients
            .iter_mut()
            .map(|c| {
                c.transport_lost(now);
                c.new_transport(now).expect("new_transport");
                let k = c.poll_transmit(now, wire).expect("tx");
                wire[..k].to_vec()
            })
            .collect();
        let t = crate::cpu_secs();
        let mut resumed = 0;
        for (tid, m) in self.tids.iter_mut().zip(msgs.iter_mut()) {
            self.server.transport_lost(*tid, now);
            *tid = self.server.accept(now).expect("accept");
            assert_eq!(self.server.handle_input(*tid, now, m).expect("rx"), m.len());
            let k = self.server.poll_transmit(*tid, now, wire).expect("tx");
            m.clear();
            m.extend_from_slice(&wire[..k]);
            while let Some(e) = self.server.poll_event() {
                resumed += matches!(e, ServerEvent::Resumed { .. }) as u64;
            }
        }
        let secs = crate::cpu_secs() - t;
        let n = self.clients.len() as u64;
        assert_eq!(resumed, n);
        for (c, m) in self.clients.iter_mut().zip(msgs.iter()) {
            assert_eq!(c.handle_input(now, m).expect("rx"), m.len());
            while c.poll_event().is_some() {}
            assert!(c.is_connected());
        }
        Sample {
            units: n as f64,
            secs,
        }
    }
}

/// When each side sends its first resent byte after a break.
pub struct ResendTiming {
    /// Client, in round trips after it sent its resume request.
    pub client_rtt: f64,
    /// Server, in round trips after the client sent its resume request.
    pub server_rtt: f64,
    /// Bytes the client resent.
    pub client_resent: u64,
    /// Bytes the server resent.
    pub server_resent: u64,
}

/// DATA payload bytes in `bytes` (a sequence of whole frames).
fn data_bytes(mut bytes: &[u8]) -> u64 {
    let mut total = 0;
    while bytes.len() >= FRAME_HEADER_LEN {
        let h = FrameHeader::decode(&[bytes[0], bytes[1], bytes[2], bytes[3]]).expect("frame");
        if h.frame_type == FrameType::Data {
            total += h.len as u64;
        }
        bytes = &bytes[h.wire_len()..];
    }
    total
}

/// Both sides write, nothing is delivered, the transport breaks; then the
/// client resumes and flights alternate (a flight = everything one side has
/// to send, delivered whole half a round trip later). Half round trip `k`
/// is the k-th flight: the client's resume request is flight 0.
pub fn first_resent_byte() -> ResendTiming {
    let mut client = Client::new(client_config(None), rng(77));
    let mut server = Server::new(server_config(None), rng(78));
    let now = Instant::from_micros(1_000_000);
    let mut wire = vec![0u8; WIRE];
    let (_tid, sid) = handshake(&mut client, &mut server, now, &mut wire);
    let data = [0x5Au8; 3000];
    assert_eq!(client.send(&data).expect("send"), data.len());
    assert_eq!(server.send(sid, &data).expect("send"), data.len());
    // transmitted, then lost with the transport
    while client.poll_transmit(now, &mut wire).expect("tx") > 0 {}
    while server.poll_transmit(_tid, now, &mut wire).expect("tx") > 0 {}
    client.transport_lost(now);
    server.transport_lost(_tid, now);

    let tid = server.accept(now).expect("accept");
    client.new_transport(now).expect("new_transport");
    let (mut client_at, mut server_at) = (None, None);
    let (mut client_resent, mut server_resent) = (0, 0);
    let mut first_client = true;
    let mut first_server = true;
    for flight in 0..8u32 {
        let client_turn = flight % 2 == 0;
        let mut out = Vec::new();
        loop {
            let n = if client_turn {
                client.poll_transmit(now, &mut wire).expect("tx")
            } else {
                server.poll_transmit(tid, now, &mut wire).expect("tx")
            };
            if n == 0 {
                break;
            }
            out.extend_from_slice(&wire[..n]);
        }
        // skip the resume request / response heading the first flights
        let frames = if client_turn && first_client && !out.is_empty() {
            first_client = false;
            &out[relink::wire::RESUME_REQUEST_LEN..]
        } else if !client_turn && first_server && !out.is_empty() {
            first_server = false;
            &out[relink::wire::RESUME_RESPONSE_LEN..]
        } else {
            &out[..]
        };
        let d = data_bytes(frames);
        if client_turn {
            client_resent += d;
            if d > 0 && client_at.is_none() {
                client_at = Some(flight);
            }
            let k = server.handle_input(tid, now, &out).expect("server rx");
            assert_eq!(k, out.len());
        } else {
            server_resent += d;
            if d > 0 && server_at.is_none() {
                server_at = Some(flight);
            }
            let k = client.handle_input(now, &out).expect("client rx");
            assert_eq!(k, out.len());
        }
        if client_at.is_some() && server_at.is_some() {
            break;
        }
    }
    let half = |f: Option<u32>| f.map_or(f64::INFINITY, |f| f as f64 / 2.0);
    ResendTiming {
        client_rtt: half(client_at),
        server_rtt: half(server_at),
        client_resent,
        server_resent,
    }
}

/// Heap bytes per server session.
pub struct Memory {
    /// Right after the handshake.
    pub fresh: f64,
    /// After data flowed both ways and was read (buffers still allocated).
    pub after_data: f64,
    /// `buffer_memory` per session at that point.
    pub buffers_after_data: f64,
    /// After the idle timer trimmed the buffers.
    pub idle_trimmed: f64,
    /// `buffer_memory` per session after the trim.
    pub buffers_trimmed: f64,
}

/// `n` established sessions in one server, each with its transport still
/// attached. Per session: handshake, 300 bytes each way, read by both
/// applications and acknowledged, then the client is dropped. Only the
/// server's growth of live heap bytes is counted (the client's memory is
/// freed before each reading). The ACK delay is 0 so that every byte is
/// acknowledged at once; the idle trim runs 6 s later (after the
/// keepalive interval, before the idle timeout).
pub fn idle_memory(n: usize) -> Memory {
    let cfg = Config {
        ack_delay: Duration::from_micros(0),
        ..Config::default()
    };
    let mut server = Server::new(cfg.clone(), rng(99));
    let mut wire = vec![0u8; WIRE];
    let mut app = vec![0u8; 4096];
    let data = [0x33u8; 300];
    let mut now = Instant::from_micros(1_000_000);
    let mut sids = Vec::with_capacity(n);
    // fresh sessions: handshake only, clients dropped at once
    let fresh = {
        let mut server = Server::new(cfg.clone(), rng(98));
        let base = crate::live_bytes();
        for i in 0..n {
            let mut client = Client::new(cfg.clone(), rng(3 << 32 | i as u64));
            handshake(&mut client, &mut server, now, &mut wire);
            while server.poll_event().is_some() {}
        }
        (crate::live_bytes() - base) as f64 / n as f64
    };
    let base = crate::live_bytes();
    for i in 0..n {
        now = now.saturating_add(Duration::from_micros(10));
        let mut client = Client::new(cfg.clone(), rng(1 << 32 | i as u64));
        let (tid, sid) = handshake(&mut client, &mut server, now, &mut wire);
        assert_eq!(client.send(&data).expect("send"), data.len());
        assert_eq!(server.send(sid, &data).expect("send"), data.len());
        let (mut up, mut down) = (0, 0);
        for _ in 0..6 {
            while let Ok(k) = client.poll_transmit(now, &mut wire) {
                if k == 0 {
                    break;
                }
                assert_eq!(server.handle_input(tid, now, &wire[..k]).expect("rx"), k);
                up += drain_server(&mut server, sid, &mut app);
            }
            while let Ok(k) = server.poll_transmit(tid, now, &mut wire) {
                if k == 0 {
                    break;
                }
                assert_eq!(client.handle_input(now, &wire[..k]).expect("rx"), k);
                down += drain_client(&mut client, &mut app);
            }
        }
        assert_eq!((up, down), (300, 300));
        assert_eq!(server.unacked(sid), 0, "server data not acknowledged");
        assert_eq!(client.unacked(), 0, "client data not acknowledged");
        while server.poll_event().is_some() {}
        drop(client);
        sids.push(sid);
    }
    let per = |total: i64| total as f64 / n as f64;
    let buffers = |server: &Server<ChaCha20Rng>| {
        sids.iter().map(|&s| server.buffer_memory(s)).sum::<usize>() as f64 / n as f64
    };
    // (`sids` was allocated before `base`)
    let after_data = per(crate::live_bytes() - base);
    let buffers_after_data = buffers(&server);
    server.handle_timeout(now.saturating_add(Duration::from_secs(6)));
    if let Some(e) = server.poll_event() {
        panic!("unexpected server event during trim: {e:?}");
    }
    assert_eq!(server.session_count(), n);
    let idle_trimmed = per(crate::live_bytes() - base);
    let buffers_trimmed = buffers(&server);
    drop(server);
    Memory {
        fresh,
        after_data,
        buffers_after_data,
        idle_trimmed,
        buffers_trimmed,
    }
}

// ----- client credentials -------------------------------------------------------

/// Pinned handshakes whose server decides on clients: the client presents
/// a 32-byte secret, the server application accepts it at once (no token);
/// a handshake counts once the client verified the ACCEPT. The same without
/// credentials (`credential: false`) is the baseline of the same run.
pub struct CredentialHandshakes {
    seed: u64,
    static_key: StaticKeypair,
    credential: bool,
    wire: Vec<u8>,
}

impl CredentialHandshakes {
    /// With (`credential`) or without client credentials.
    pub fn new(seed: u64, credential: bool) -> CredentialHandshakes {
        CredentialHandshakes {
            seed,
            static_key: StaticKeypair::generate(&mut rng(seed ^ 0x5747)),
            credential,
            wire: vec![0u8; WIRE],
        }
    }

    /// Both sides, handshakes (until data may flow) per second.
    pub fn both(&mut self, n: u64) -> Sample {
        self.seed += 1;
        let mut scfg = server_config(Some(&self.static_key));
        scfg.client_auth = self.credential;
        let mut server = Server::new(scfg, rng(self.seed));
        let mut ccfg = client_config(Some(&self.static_key));
        ccfg.credential = self
            .credential
            .then(|| relink::Credential::Secret(vec![0x5a; 32]));
        let s = Sample::time(|| {
            for i in 0..n {
                let now = Instant::from_micros(1_000_000 + i);
                let mut client = Client::new(ccfg.clone(), rng(self.seed << 20 | i));
                accepted_handshake(&mut client, &mut server, now, &mut self.wire);
            }
            n
        });
        drop(server);
        s
    }
}

/// A handshake until the client may send data: with credentials, the
/// CREDENTIAL → ClientAuth → accept → ACCEPT round trip included.
fn accepted_handshake(
    client: &mut Client<ChaCha20Rng>,
    server: &mut Server<ChaCha20Rng>,
    now: Instant,
    wire: &mut [u8],
) {
    let tid = server.accept(now).expect("accept");
    client.new_transport(now).expect("new_transport");
    for _ in 0..8 {
        let n = client.poll_transmit(now, wire).expect("client tx");
        if n > 0 {
            assert_eq!(server.handle_input(tid, now, &wire[..n]).expect("rx"), n);
        }
        while let Some(e) = server.poll_event() {
            if let ServerEvent::ClientAuth { session, .. } = e {
                server.accept_client(session, None).expect("accept_client");
            }
        }
        let m = server.poll_transmit(tid, now, wire).expect("server tx");
        if m > 0 {
            assert_eq!(client.handle_input(now, &wire[..m]).expect("rx"), m);
        }
        while client.poll_event().is_some() {}
        if client.is_accepted() {
            return;
        }
    }
    panic!("relink handshake with credential did not complete");
}

// ----- issue 11: rekey -------------------------------------------------------------

impl Bulk {
    /// A one-way pair with the rekey policy of `policy` on both sides
    /// (`rekey`, `rekey_after_bytes`; the rest default).
    pub fn with_policy(seed: u64, policy: &Config) -> Bulk {
        let with = |c: Config| Config {
            rekey: policy.rekey,
            rekey_after_bytes: policy.rekey_after_bytes,
            ..c
        };
        Bulk::with_configs(
            seed,
            false,
            with(client_config(None)),
            with(server_config(None)),
        )
    }

    /// Completed rekeys so far (client events; the server's match them).
    pub fn client_epoch(&self) -> u32 {
        self.client.epoch()
    }
}

/// An idle established pair that rekeys on request (issue 11): the CPU
/// time of each side's calls, measured separately.
pub struct Rekeys {
    client: Client<ChaCha20Rng>,
    server: Server<ChaCha20Rng>,
    tid: TransportId,
    sid: SessionId,
    now: Instant,
    wire: Vec<u8>,
    /// What timing a call adds to it: one read of the CPU clock (seconds,
    /// subtracted per timed call).
    clock: f64,
}

/// One exchange's CPU time on each side.
pub struct RekeyCost {
    /// Client seconds.
    pub client: Sample,
    /// Server seconds.
    pub server: Sample,
}

impl Rekeys {
    /// A pair, anonymous or with a pinned server key (`es` in every
    /// exchange), no automatic rekeys.
    pub fn new(seed: u64, pinned: bool) -> Rekeys {
        let key = pinned.then(|| StaticKeypair::generate(&mut rng(seed ^ 0x7e4e)));
        let manual = |c: Config| Config { rekey: false, ..c };
        let mut client = Client::new(manual(client_config(key.as_ref())), rng(seed));
        let mut server = Server::new(manual(server_config(key.as_ref())), rng(seed + 1000));
        let now = Instant::from_micros(1_000_000);
        let mut wire = vec![0u8; WIRE];
        let (tid, sid) = handshake(&mut client, &mut server, now, &mut wire);
        // What timing a call adds to it: about one clock read.
        let reps = 10_000;
        let t = crate::cpu_secs();
        for _ in 0..reps {
            std::hint::black_box(crate::cpu_secs());
        }
        let clock = (crate::cpu_secs() - t) / reps as f64;
        Rekeys {
            client,
            server,
            tid,
            sid,
            now,
            wire,
            clock,
        }
    }

    /// `n` exchanges started by the client, each run until both sides
    /// reported `Rekeyed` and nothing is left to send.
    pub fn run(&mut self, n: u64) -> RekeyCost {
        let (mut cs, mut ss) = (0.0f64, 0.0f64);
        let clock = self.clock;
        let timed = |acc: &mut f64, f: &mut dyn FnMut()| {
            let t = crate::cpu_secs();
            f();
            *acc += (crate::cpu_secs() - t - clock).max(0.0);
        };
        for _ in 0..n {
            let target = self.client.epoch() + 1;
            let (mut c_epoch, mut s_epoch) = (0, 0);
            let Rekeys {
                client,
                server,
                tid,
                sid,
                now,
                wire,
                ..
            } = self;
            let (tid, sid, now) = (*tid, *sid, *now);
            timed(&mut cs, &mut || {
                client.request_rekey().expect("request_rekey")
            });
            let mut rounds = 0;
            loop {
                let mut moved = 0;
                let mut len = 0;
                timed(&mut cs, &mut || {
                    len = client.poll_transmit(now, wire).expect("client tx");
                });
                if len > 0 {
                    moved += len;
                    timed(&mut ss, &mut || {
                        let mut off = 0;
                        while off < len {
                            off += server
                                .handle_input(tid, now, &wire[off..len])
                                .expect("server rx");
                        }
                        while let Some(e) = server.poll_event() {
                            if let ServerEvent::Rekeyed { session, epoch } = e {
                                assert_eq!(session, sid);
                                s_epoch = epoch;
                            }
                        }
                    });
                }
                timed(&mut ss, &mut || {
                    len = server.poll_transmit(tid, now, wire).expect("server tx");
                });
                if len > 0 {
                    moved += len;
                    timed(&mut cs, &mut || {
                        let mut off = 0;
                        while off < len {
                            off += client
                                .handle_input(now, &wire[off..len])
                                .expect("client rx");
                        }
                        while let Some(e) = client.poll_event() {
                            if let Event::Rekeyed { epoch } = e {
                                c_epoch = epoch;
                            }
                        }
                    });
                }
                if moved == 0 && c_epoch >= target && s_epoch >= target {
                    break;
                }
                rounds += 1;
                assert!(rounds < 32, "rekey to epoch {target} did not complete");
            }
            self.now = self.now.saturating_add(Duration::from_micros(1));
        }
        let units = n as f64;
        RekeyCost {
            client: Sample { units, secs: cs },
            server: Sample { units, secs: ss },
        }
    }
}

/// What the server spends on input from a sender that holds no key
/// (issue 13; PROTOCOL.md §9 "Denial of service"): only the server's
/// calls are timed (thread CPU time), from `accept_from` to
/// `transport_lost`, one transport per input.
pub struct Admission {
    seed: u64,
    wire: Vec<u8>,
    /// Established sessions for the bogus-frame figure.
    clients: Vec<Client<ChaCha20Rng>>,
    server: Server<ChaCha20Rng>,
    tids: Vec<TransportId>,
    now: Instant,
}

/// A distinct IPv4 source per index (no per-source limit is reached).
fn source(i: u64) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::from(
        0x0a00_0000 | (i as u32 & 0x00ff_ffff),
    ))
}

impl Admission {
    /// `sessions`: established sessions that receive the bogus frames.
    pub fn new(seed: u64, sessions: usize) -> Admission {
        let r = Resumes::new(seed, sessions);
        Admission {
            seed,
            wire: vec![0u8; WIRE],
            clients: r.clients,
            server: r.server,
            tids: r.tids,
            now: r.now,
        }
    }

    /// `n` ClientHellos with random keys (never echoed, never confirmed),
    /// the server under load (`cookie`: `cookie_threshold = 0`) or not.
    pub fn bogus_hellos(&mut self, n: u64, cookie: bool) -> Sample {
        use rand_core::Rng;
        self.seed += 1;
        let cfg = Config {
            cookie_threshold: if cookie { 0 } else { usize::MAX },
            ..server_config(None)
        };
        let mut server = Server::new(cfg, rng(self.seed));
        let now = Instant::from_micros(1_000_000_000);
        let mut r = rng(self.seed ^ 0xbad);
        let hellos: Vec<[u8; relink::wire::CLIENT_HELLO_LEN]> = (0..n)
            .map(|_| {
                let mut ephemeral = [0u8; 32];
                r.fill_bytes(&mut ephemeral);
                relink::wire::ClientHello {
                    version: relink::wire::VERSION,
                    flags: 0,
                    ephemeral,
                    time: now.as_micros(),
                }
                .encode()
            })
            .collect();
        let wire = &mut self.wire;
        let s = Sample::time(|| {
            for (i, h) in hellos.iter().enumerate() {
                let tid = server.accept_from(now, source(i as u64)).expect("accept");
                let _ = server.handle_input(tid, now, h);
                let k = server.poll_transmit(tid, now, wire).expect("tx");
                assert!(k == relink::wire::HELLO_COOKIE_LEN || !cookie);
                server.transport_lost(tid, now);
                while server.poll_event().is_some() {}
            }
            n
        });
        drop(server);
        s
    }

    /// `n` ResumeRequests for connection ids the server does not hold.
    pub fn bogus_resumes(&mut self, n: u64) -> Sample {
        use rand_core::Rng;
        self.seed += 1;
        let mut server = Server::new(server_config(None), rng(self.seed));
        let now = Instant::from_micros(1_000_000_000);
        let mut r = rng(self.seed ^ 0xbad);
        let reqs: Vec<[u8; relink::wire::RESUME_REQUEST_LEN]> = (0..n)
            .map(|_| {
                let mut b = [0u8; relink::wire::RESUME_REQUEST_LEN];
                r.fill_bytes(&mut b);
                b[0] = relink::wire::TAG_RESUME;
                b[1] = relink::wire::VERSION;
                b
            })
            .collect();
        let wire = &mut self.wire;
        Sample::time(|| {
            for (i, q) in reqs.iter().enumerate() {
                let tid = server.accept_from(now, source(i as u64)).expect("accept");
                assert!(server.handle_input(tid, now, q).is_err());
                let _ = server.poll_transmit(tid, now, wire).expect("tx");
                server.transport_lost(tid, now);
                while server.poll_event().is_some() {}
            }
            n
        })
    }

    /// One 1 KiB DATA frame with a wrong tag on each session's transport
    /// (its transport ends; the sessions are resumed, untimed, first).
    pub fn bogus_frames(&mut self) -> Sample {
        self.now = self.now.saturating_add(Duration::from_micros(10));
        let now = self.now;
        let wire = &mut self.wire;
        for (client, tid) in self.clients.iter_mut().zip(self.tids.iter_mut()) {
            client.transport_lost(now);
            self.server.transport_lost(*tid, now);
            *tid = self.server.accept(now).expect("accept");
            client.new_transport(now).expect("new_transport");
            let k = client.poll_transmit(now, wire).expect("tx");
            assert_eq!(
                self.server.handle_input(*tid, now, &wire[..k]).expect("rx"),
                k
            );
            let m = self.server.poll_transmit(*tid, now, wire).expect("tx");
            assert_eq!(client.handle_input(now, &wire[..m]).expect("rx"), m);
            while client.poll_event().is_some() {}
            while self.server.poll_event().is_some() {}
        }
        let mut frame = vec![0u8; FRAME_OVERHEAD + 1024];
        let h = FrameHeader {
            frame_type: FrameType::Data,
            len: 1024,
        };
        frame[..FRAME_HEADER_LEN].copy_from_slice(&h.encode());
        let n = self.tids.len() as u64;
        let t = crate::cpu_secs();
        for tid in &self.tids {
            assert!(self.server.handle_input(*tid, now, &frame).is_err());
        }
        let secs = crate::cpu_secs() - t;
        while self.server.poll_event().is_some() {}
        Sample {
            units: n as f64,
            secs,
        }
    }
}
