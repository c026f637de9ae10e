//! Many sessions, many cores (issue 10): how the server's timer work, its
//! memory and its throughput scale with the number of sessions and of
//! threads.
//!
//! ```text
//! cargo bench --bench scale --features tokio              # full suite (about 25 s)
//! cargo bench --bench scale --features tokio -- --quick   # tiny sizes (CI: checks it runs)
//! RELINK_BENCH_QUICK=1 cargo bench --bench scale --features tokio
//! ```
//!
//! Without `--features tokio` the loopback TCP case is skipped (it runs the
//! `relink::tokio` driver).
//!
//! Cases (`docs/PERFORMANCE.md`, "Many sessions, many cores", explains them
//! and records a run):
//!
//! 1. **Timer step** of a [`relink::Server`] holding 1k, 10k and 100k idle
//!    established sessions (transport attached, nothing flowing; the
//!    clients are dropped after their handshake). A step is what a driver
//!    does when it wakes up: `poll_timeout`, `handle_timeout(now)`, and
//!    `poll_transmit` of the transports of the connections that were due
//!    (their keepalive PING is written into a scratch buffer). Measured with
//!    nothing due and with 1 % of the sessions due. The three servers are
//!    built first and then measured side by side (their samples
//!    interleaved).
//! 2. **Threads**: 64 sessions handshaken through one [`relink::Endpoint`],
//!    their [`relink::Connection`]s and clients then pumped in memory (16 KiB
//!    writes client → server, the server's ACKs back) by 1 thread, and by 2
//!    threads with half of the sessions each. Aggregate MB/s, wall clock.
//! 3. **Memory**: live heap bytes per idle session of the 100k server
//!    (counting global allocator), growth during its set-up divided by n.
//! 4. **Loopback TCP** with the tokio driver: 64 clients in a separate
//!    process (this binary re-executed with `--tcp-client`) write bulk data
//!    to one `relink::tokio::Listener` in this process, run with 1 and with 2
//!    tokio worker threads. Aggregate MB/s and the CPU time of each process
//!    (`/proc/self/stat`).

use std::hint::black_box;
use std::time::Instant as StdInstant;

use chacha20::ChaCha20Rng;
use relink::wire::{FRAME_OVERHEAD, MAX_FRAME_PAYLOAD};
use relink::{
    Client, Config, Connection, Dispatch, Duration, Endpoint, Instant, Server, ServerEvent,
    SessionId, TransportId,
};
use relink_test_support::harness::rng;

// ----- counting allocator ------------------------------------------------------

#[path = "shared/measure.rs"]
#[allow(dead_code)] // allocations(): used by compare.rs only
mod measure;
use measure::{cpu_secs as thread_cpu_secs, live_bytes};

// ----- sizes -----------------------------------------------------------------------

/// How much work each case does; `--quick` shrinks everything.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    /// Sessions of the three timer-step servers (the last one also gives
    /// the memory figure).
    timer_sessions: [usize; 3],
    /// Nothing-due steps per sample.
    idle_steps: u32,
    /// Samples of the nothing-due step (median reported).
    idle_samples: usize,
    /// Sessions pumped by 1 and by 2 threads.
    bulk_sessions: usize,
    /// Application bytes per session per bulk sample.
    bulk_per_session: u64,
    /// Bulk samples per thread count (median reported).
    bulk_samples: usize,
    /// Client sessions of the TCP case.
    tcp_clients: usize,
    /// Bytes each TCP client writes per run.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    tcp_per_client: u64,
    /// TCP runs per worker count (median reported).
    tcp_samples: usize,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            timer_sessions: [1_000, 10_000, 100_000],
            idle_steps: 100_000,
            idle_samples: 9,
            bulk_sessions: 64,
            bulk_per_session: 4 << 20,
            bulk_samples: 9,
            tcp_clients: 64,
            tcp_per_client: 16 << 20,
            tcp_samples: 3,
        }
    }
    fn quick() -> Sizes {
        Sizes {
            timer_sessions: [100, 300, 1_000],
            idle_steps: 1_000,
            idle_samples: 3,
            bulk_sessions: 64,
            bulk_per_session: 64 << 10,
            bulk_samples: 3,
            tcp_clients: 64,
            tcp_per_client: 64 << 10,
            tcp_samples: 1,
        }
    }
}

// ----- clocks ------------------------------------------------------------------

/// CPU time (user + system) of this whole process, every thread included,
/// in seconds, from `/proc/self/stat` (clock ticks of 1/100 s, the
/// `USER_HZ` of Linux on every architecture Rust supports). `None` where
/// there is no `/proc`.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), ... utime (14), stime (15).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

// ----- shared helpers ------------------------------------------------------------

/// Transmit buffer: one maximum DATA frame plus an ACK frame.
const WIRE: usize = FRAME_OVERHEAD + MAX_FRAME_PAYLOAD + FRAME_OVERHEAD + 8;

/// The server's configuration: no cap on sessions or pending transports,
/// default timers (keepalive 5 s, idle timeout 15 s).
fn server_config() -> Config {
    Config {
        max_sessions: usize::MAX,
        max_pending_transports: usize::MAX,
        ..Config::default()
    }
}

/// Run a handshake through a `Server` bundle. Returns the transport and
/// session; the server's first output (its PING) is delivered.
fn handshake_server(
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
        while client.poll_event().is_some() {}
        if let (Some(sid), true) = (sid, client.is_connected()) {
            return (tid, sid);
        }
    }
    panic!("handshake did not complete");
}

/// Run a handshake through an `Endpoint`. Returns the transport and the
/// session's connection, whose first output (its PING) is delivered.
fn handshake_endpoint(
    client: &mut Client<ChaCha20Rng>,
    endpoint: &mut Endpoint<ChaCha20Rng>,
    now: Instant,
    wire: &mut [u8],
) -> (TransportId, Box<Connection>) {
    let tid = endpoint.accept(now).expect("accept");
    client.new_transport(now).expect("new_transport");
    for _ in 0..4 {
        let n = client.poll_transmit(now, wire).expect("client tx");
        if n > 0 {
            match endpoint.handle_input(tid, now, &wire[..n]).expect("rx") {
                Dispatch::Pending(k) => assert_eq!(k, n),
                Dispatch::NewConnection {
                    consumed,
                    mut connection,
                } => {
                    assert_eq!(consumed, n);
                    while endpoint.poll_event().is_some() {}
                    let m = connection.poll_transmit(tid, now, wire).expect("tx");
                    assert_eq!(client.handle_input(now, &wire[..m]).expect("rx"), m);
                    while connection.poll_event().is_some() {}
                    while client.poll_event().is_some() {}
                    assert!(client.is_connected(), "client not connected");
                    return (tid, connection);
                }
                Dispatch::Resume { .. } => panic!("unexpected resume"),
            }
        }
        let m = endpoint.poll_transmit(tid, wire).expect("server tx");
        while endpoint.poll_event().is_some() {}
        if m > 0 {
            assert_eq!(client.handle_input(now, &wire[..m]).expect("rx"), m);
        }
        while client.poll_event().is_some() {}
    }
    panic!("handshake did not complete");
}

// ----- 1 + 3: timer step, memory ---------------------------------------------------

/// Steps of the 1 %-due measurement (each session is due once every 100
/// steps; two rounds fit before the idle timeout).
const DUE_STEPS: u32 = 200;

/// A server with `n` idle established sessions whose creation times are
/// spread evenly over one keepalive interval, so that their keepalive
/// deadlines are too: stepping the clock by 1 % of the interval makes 1 %
/// of the sessions due at each step.
struct TimerBed {
    server: Server<ChaCha20Rng>,
    /// Transports in creation order (= keepalive order).
    tids: Vec<TransportId>,
    /// Creation time of the first session.
    start: Instant,
    /// The keepalive interval (µs).
    interval: u64,
    /// Live heap bytes the set-up added, per session.
    bytes_per_session: f64,
    /// `buffer_memory` per session after the set-up.
    buffers_per_session: f64,
    /// Next session whose keepalive is not handled yet, and the step count.
    cursor: usize,
    step: u32,
    /// Due transports of the current step (driver's scratch list).
    due: Vec<TransportId>,
    wire: Vec<u8>,
}

impl TimerBed {
    fn new(n: usize, seed: u64) -> TimerBed {
        let cfg = server_config();
        let interval = cfg.keepalive_interval.as_micros();
        let start = Instant::from_micros(1_000_000);
        let mut wire = vec![0u8; WIRE];
        // bookkeeping allocated before the baseline
        let mut tids = Vec::with_capacity(n);
        let mut sids = Vec::with_capacity(n);
        let due = Vec::with_capacity(n);
        let base = live_bytes();
        let mut server = Server::new(cfg, rng(seed));
        for i in 0..n {
            let now = Instant::from_micros(start.as_micros() + i as u64 * interval / n as u64);
            let mut client = Client::new(Config::default(), rng(seed << 24 | i as u64));
            let (tid, sid) = handshake_server(&mut client, &mut server, now, &mut wire);
            // the bench's assumption: the session is next due for its keepalive
            let want = now.saturating_add(Duration::from_micros(interval));
            let conn = server.connection(sid).expect("connection");
            assert_eq!(conn.poll_timeout(), Some(want), "idle session's deadline");
            drop(client);
            tids.push(tid);
            sids.push(sid);
        }
        while server.poll_event().is_some() {}
        let grown = live_bytes() - base;
        let buffers: usize = sids.iter().map(|&s| server.buffer_memory(s)).sum();
        assert_eq!(server.session_count(), n);
        TimerBed {
            server,
            tids,
            start,
            interval,
            bytes_per_session: grown as f64 / n as f64,
            buffers_per_session: buffers as f64 / n as f64,
            cursor: 0,
            step: 0,
            due,
            wire,
        }
    }

    fn n(&self) -> usize {
        self.tids.len()
    }

    /// Keepalive deadline (µs) of session `i` in round `round` of the
    /// 1 %-due steps.
    fn deadline(&self, i: usize, round: u64) -> u64 {
        let n = self.n() as u64;
        let created = self.start.as_micros() + i as u64 * self.interval / n;
        if round == 0 {
            created + self.interval
        } else {
            // handled at the step that covered its first deadline: the PING
            // written then re-armed it one interval later
            let k = (i as u64 * self.interval / n) * 100 / self.interval;
            self.step_time(k as u32) + self.interval
        }
    }

    /// The clock of 1 %-due step `k`.
    fn step_time(&self, k: u32) -> u64 {
        self.start.as_micros() + self.interval + (u64::from(k) + 1) * self.interval / 100 - 1
    }

    /// The clock at which nothing is due (just before the first deadline).
    fn quiet_time(&self) -> Instant {
        Instant::from_micros(self.start.as_micros() + self.interval - 1)
    }

    /// `steps` driver wake-ups with nothing due; CPU seconds per step.
    fn idle_steps(&mut self, steps: u32) -> f64 {
        let now = self.quiet_time();
        let visits = self.server.timer_visits();
        let t = thread_cpu_secs();
        for _ in 0..steps {
            let next = black_box(self.server.poll_timeout());
            assert!(next.is_some_and(|at| at > now));
            self.server.handle_timeout(black_box(now));
        }
        let secs = thread_cpu_secs() - t;
        assert_eq!(self.server.timer_visits(), visits, "nothing was due");
        secs / f64::from(steps)
    }

    /// The next 1 %-due step: the driver's wake-up, `handle_timeout`, then
    /// `poll_transmit` of every transport `poll_writable` names (a PING
    /// each; checked against the bench's own schedule). Returns CPU seconds and due sessions.
    fn due_step(&mut self) -> (f64, usize) {
        assert!(self.step < DUE_STEPS, "the idle timeout would fire");
        let now_us = self.step_time(self.step);
        let round = u64::from(self.step / 100);
        let n = self.n();
        self.due.clear();
        while self.cursor < n && self.deadline(self.cursor, round) <= now_us {
            self.due.push(self.tids[self.cursor]);
            self.cursor += 1;
        }
        let now = Instant::from_micros(now_us);
        let visits = self.server.timer_visits();
        let t = thread_cpu_secs();
        let next = black_box(self.server.poll_timeout());
        assert!(next.is_some_and(|at| at <= now), "a session is due");
        self.server.handle_timeout(now);
        let mut written = 0;
        while let Some(tid) = self.server.poll_writable() {
            let k = self
                .server
                .poll_transmit(tid, now, &mut self.wire)
                .expect("tx");
            assert!(k > 0, "a due keepalive is written");
            written += 1;
        }
        let secs = thread_cpu_secs() - t;
        assert_eq!(
            written,
            self.due.len(),
            "exactly the due transports are writable"
        );
        let visited = (self.server.timer_visits() - visits) as usize;
        assert_eq!(visited, self.due.len(), "only the due sessions are visited");
        if let Some(e) = self.server.poll_event() {
            panic!("unexpected event in a timer step: {e:?}");
        }
        self.step += 1;
        if self.step % 100 == 0 {
            assert_eq!(self.cursor, n, "every session was due once per round");
            self.cursor = 0;
        }
        (secs, visited)
    }
}

struct TimerFigures {
    n: [usize; 3],
    /// µs per step, nothing due.
    idle_us: [f64; 3],
    /// µs per step, 1 % due (median step).
    due_us: [f64; 3],
    /// Due sessions per step (mean).
    due_per_step: [f64; 3],
    /// Live heap bytes and buffer bytes per session, by size.
    bytes_per_session: [f64; 3],
    buffers_per_session: [f64; 3],
}

fn timer_case(sz: &Sizes) -> TimerFigures {
    let t = StdInstant::now();
    let mut beds: Vec<TimerBed> = sz
        .timer_sessions
        .iter()
        .enumerate()
        .map(|(k, &n)| TimerBed::new(n, 100 + k as u64))
        .collect();
    println!(
        "  timer beds of {:?} sessions set up in {:.1} s",
        sz.timer_sessions,
        t.elapsed().as_secs_f64()
    );
    // nothing due: samples interleaved across the sizes, one warm-up round
    let mut idle = vec![Vec::new(); beds.len()];
    for s in 0..=sz.idle_samples {
        for (b, bed) in beds.iter_mut().enumerate() {
            let x = bed.idle_steps(sz.idle_steps);
            if s > 0 {
                idle[b].push(x);
            }
        }
    }
    // 1 % due: step k of every size, then step k + 1, ...
    let mut due = vec![Vec::new(); beds.len()];
    let mut due_count = vec![0usize; beds.len()];
    for _ in 0..DUE_STEPS {
        for (b, bed) in beds.iter_mut().enumerate() {
            let (secs, visited) = bed.due_step();
            due[b].push(secs);
            due_count[b] += visited;
        }
    }
    let fig = TimerFigures {
        n: sz.timer_sessions,
        idle_us: [0, 1, 2].map(|b| median(idle[b].clone()) * 1e6),
        due_us: [0, 1, 2].map(|b| median(due[b].clone()) * 1e6),
        due_per_step: [0, 1, 2].map(|b| due_count[b] as f64 / f64::from(DUE_STEPS)),
        bytes_per_session: [0, 1, 2].map(|b| beds[b].bytes_per_session),
        buffers_per_session: [0, 1, 2].map(|b| beds[b].buffers_per_session),
    };
    drop(beds);
    fig
}

// ----- 2: one endpoint's connections on 1 and 2 threads ---------------------------

/// One session: its client and the server's connection, pumped in memory.
struct Pair {
    client: Client<ChaCha20Rng>,
    conn: Box<Connection>,
    tid: TransportId,
    now: Instant,
    sent: u64,
    got: u64,
}

/// A thread's buffers.
struct Scratch {
    wire: Vec<u8>,
    app: Vec<u8>,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            wire: vec![0u8; WIRE],
            app: vec![0u8; 64 * 1024],
        }
    }
}

impl Pair {
    /// Client's output to the connection until it has nothing more; returns
    /// application bytes the connection's reader got.
    fn client_to_server(&mut self, s: &mut Scratch) -> u64 {
        let mut got = 0;
        loop {
            let n = self
                .client
                .poll_transmit(self.now, &mut s.wire)
                .expect("client tx");
            if n == 0 {
                return got;
            }
            let mut off = 0;
            while off < n {
                let k = self
                    .conn
                    .handle_input(self.tid, self.now, &s.wire[off..n])
                    .expect("server rx");
                off += k;
                let mut r = 0;
                while let Ok(m) = self.conn.recv(&mut s.app) {
                    if m == 0 {
                        break;
                    }
                    r += m as u64;
                }
                assert!(k > 0 || r > 0, "server stuck");
                got += r;
            }
        }
    }

    /// The connection's output (ACKs) to the client.
    fn server_to_client(&mut self, s: &mut Scratch) {
        loop {
            let n = self
                .conn
                .poll_transmit(self.tid, self.now, &mut s.wire)
                .expect("server tx");
            if n == 0 {
                return;
            }
            let k = self
                .client
                .handle_input(self.now, &s.wire[..n])
                .expect("client rx");
            assert_eq!(k, n, "client took the ACKs");
        }
    }

    /// One round: one write of up to `data.len()` bytes, everything
    /// delivered both ways.
    fn round(&mut self, total: u64, data: &[u8], s: &mut Scratch) {
        if self.sent < total {
            let len = data.len().min((total - self.sent) as usize);
            self.sent += self.client.send(&data[..len]).expect("send") as u64;
        }
        self.got += self.client_to_server(s);
        self.server_to_client(s);
        self.now = self.now.saturating_add(Duration::from_micros(1));
    }
}

/// Pump `total` bytes through each of `pairs`, round robin, on this thread.
fn pump(pairs: &mut [Pair], total: u64, data: &[u8]) -> u64 {
    let mut s = Scratch::new();
    for p in pairs.iter_mut() {
        p.sent = 0;
        p.got = 0;
    }
    loop {
        let mut active = false;
        for p in pairs.iter_mut() {
            if p.got < total {
                p.round(total, data, &mut s);
                active = true;
            }
        }
        if !active {
            break;
        }
    }
    pairs.iter().map(|p| p.got).sum()
}

struct ThreadFigures {
    /// MB/s with 1 and 2 threads.
    one: f64,
    two: f64,
}

fn threads_case(sz: &Sizes) -> ThreadFigures {
    let mut endpoint = Endpoint::new(server_config(), rng(7));
    let now = Instant::from_micros(1_000_000);
    let mut wire = vec![0u8; WIRE];
    let mut pairs: Vec<Pair> = (0..sz.bulk_sessions)
        .map(|i| {
            let mut client = Client::new(Config::default(), rng(8 << 24 | i as u64));
            let (tid, conn) = handshake_endpoint(&mut client, &mut endpoint, now, &mut wire);
            Pair {
                client,
                conn,
                tid,
                now,
                sent: 0,
                got: 0,
            }
        })
        .collect();
    let data: Vec<u8> = (0..MAX_FRAME_PAYLOAD).map(|i| (i * 7) as u8).collect();
    let total = sz.bulk_per_session;
    let want = total * pairs.len() as u64;
    let half = pairs.len() / 2;
    let mut one = Vec::new();
    let mut two = Vec::new();
    // one warm-up round, then samples interleaved
    for s in 0..=sz.bulk_samples {
        let t = StdInstant::now();
        assert_eq!(pump(&mut pairs, total, &data), want);
        let secs_one = t.elapsed().as_secs_f64();
        let t = StdInstant::now();
        let (a, b) = pairs.split_at_mut(half);
        let got = std::thread::scope(|scope| {
            let other = scope.spawn(|| pump(a, total, &data));
            pump(b, total, &data) + other.join().expect("pump thread")
        });
        assert_eq!(got, want);
        let secs_two = t.elapsed().as_secs_f64();
        if s > 0 {
            one.push(want as f64 / secs_one / 1e6);
            two.push(want as f64 / secs_two / 1e6);
        }
    }
    for p in &mut pairs {
        while p.conn.poll_event().is_some() {}
        assert!(p.conn.poll_endpoint_event().is_none());
    }
    ThreadFigures {
        one: median(one),
        two: median(two),
    }
}

// ----- 4: loopback TCP with the tokio driver ---------------------------------------

/// One run of the TCP case.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
#[derive(Clone, Copy, Debug, Default)]
struct TcpRun {
    /// Aggregate MB/s the server read.
    mbps: f64,
    /// Server process CPU seconds per wall second (1.0 = one core busy).
    server_cpu: f64,
    /// Client process CPU seconds per wall second, whole run.
    client_cpu: f64,
    /// Server CPU seconds per GB received.
    server_cpu_per_gb: f64,
}

#[cfg(feature = "tokio")]
mod tcp {
    use super::{median, process_cpu_secs, Sizes, TcpRun};
    use relink::Config;
    use std::io;
    use std::process::{Command, Stdio};
    use std::time::Instant as StdInstant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The server side of one run: `workers` tokio worker threads, the
    /// clients in a child process.
    fn run(workers: usize, clients: usize, per_client: u64) -> io::Result<TcpRun> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?;
        let exe = std::env::current_exe()?;
        rt.block_on(async move {
            // Every client of the child process comes from 127.0.0.1: one
            // source (PROTOCOL.md 3.7). Its limits are at most half of the
            // tables, so the tables are doubled and the source may use that.
            let config = Config {
                max_sessions: 2 * (clients + 16),
                max_pending_transports: 2 * (clients + 16),
                max_handshakes_per_source: usize::MAX,
                max_sessions_per_source: usize::MAX,
                cookie_threshold: usize::MAX,
                ..Config::default()
            };
            let server = relink::tokio::Listener::bind("127.0.0.1:0", config).await?;
            let addr = server.local_addr()?;
            let mut child = Command::new(exe)
                .arg("--tcp-client")
                .arg(addr.to_string())
                .arg(clients.to_string())
                .arg(per_client.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            // The client process exits when this pipe closes: if this
            // process dies, its clients do not keep reconnecting.
            let lifeline = child.stdin.take();
            let mut readers = tokio::task::JoinSet::new();
            let mut started = None;
            for _ in 0..clients {
                let mut stream = server.accept().await?;
                started.get_or_insert_with(|| (StdInstant::now(), process_cpu_secs()));
                readers.spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut got = 0u64;
                    loop {
                        let n = stream.read(&mut buf).await?;
                        if n == 0 {
                            break;
                        }
                        got += n as u64;
                    }
                    io::Result::Ok((got, stream))
                });
            }
            let mut total = 0;
            let mut streams = Vec::with_capacity(clients);
            while let Some(r) = readers.join_next().await {
                let (got, stream) = r.map_err(io::Error::other)??;
                total += got;
                streams.push(stream);
            }
            let (t0, cpu0) = started.expect("a client connected");
            let wall = t0.elapsed().as_secs_f64();
            let cpu = process_cpu_secs().zip(cpu0).map(|(b, a)| b - a);
            // end the sessions cleanly (the clients wait for it)
            for mut s in streams {
                s.shutdown().await?;
            }
            let out = tokio::task::spawn_blocking(move || child.wait_with_output())
                .await
                .map_err(io::Error::other)??;
            drop(lifeline);
            if !out.status.success() {
                return Err(io::Error::other(format!("client process: {}", out.status)));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let client = parse_client_report(&text);
            assert_eq!(total, clients as u64 * per_client, "every byte arrived");
            let cpu = cpu.unwrap_or(f64::NAN);
            Ok(TcpRun {
                mbps: total as f64 / wall / 1e6,
                server_cpu: cpu / wall,
                client_cpu: client.map_or(f64::NAN, |(c, w)| c / w),
                server_cpu_per_gb: cpu / (total as f64 / 1e9),
            })
        })
    }

    /// `cpu <secs> wall <secs>` printed by the client process.
    fn parse_client_report(text: &str) -> Option<(f64, f64)> {
        let line = text.lines().find(|l| l.starts_with("cpu "))?;
        let w: Vec<&str> = line.split_whitespace().collect();
        Some((w.get(1)?.parse().ok()?, w.get(3)?.parse().ok()?))
    }

    /// The client process: `clients` sessions, each writes `per_client`
    /// bytes, closes and waits for the server's close.
    pub fn client_main(args: &[String]) -> io::Result<()> {
        let addr: std::net::SocketAddr = args[0].parse().map_err(io::Error::other)?;
        let clients: usize = args[1].parse().map_err(io::Error::other)?;
        let per_client: u64 = args[2].parse().map_err(io::Error::other)?;
        // the parent's lifeline (our stdin): end at once when it closes
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            std::process::exit(2);
        });
        let t0 = StdInstant::now();
        let cpu0 = process_cpu_secs();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..clients {
                tasks.spawn(async move {
                    let mut s =
                        relink::tokio::ClientStream::connect(addr, Config::default()).await?;
                    let data: Vec<u8> = (0..64 * 1024).map(|k| (k * 7 + i) as u8).collect();
                    let mut sent = 0u64;
                    while sent < per_client {
                        let len = data.len().min((per_client - sent) as usize);
                        s.write_all(&data[..len]).await?;
                        sent += len as u64;
                    }
                    s.shutdown().await?;
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest).await?;
                    io::Result::Ok(())
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.map_err(io::Error::other)??;
            }
            io::Result::Ok(())
        })?;
        let cpu = process_cpu_secs()
            .zip(cpu0)
            .map_or(f64::NAN, |(b, a)| b - a);
        println!("cpu {cpu:.3} wall {:.3}", t0.elapsed().as_secs_f64());
        Ok(())
    }

    /// Runs with 1 and with 2 worker threads, interleaved; the median run
    /// (by throughput) of each.
    pub fn case(sz: &Sizes) -> io::Result<[TcpRun; 2]> {
        let mut runs: [Vec<TcpRun>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..sz.tcp_samples {
            for (k, workers) in [1, 2].into_iter().enumerate() {
                runs[k].push(run(workers, sz.tcp_clients, sz.tcp_per_client)?);
            }
        }
        Ok(runs.map(|mut v| {
            let m = median(v.iter().map(|r| r.mbps).collect());
            v.sort_by(|a, b| {
                (a.mbps - m)
                    .abs()
                    .partial_cmp(&(b.mbps - m).abs())
                    .expect("no NaN")
            });
            v[0]
        }))
    }
}

// ----- main --------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--tcp-client") {
        #[cfg(feature = "tokio")]
        if let Err(e) = tcp::client_main(&args[1..]) {
            eprintln!("tcp client: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: cargo bench --bench scale --features tokio [-- --quick]");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var("RELINK_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let sz = if quick { Sizes::quick() } else { Sizes::full() };
    let started = StdInstant::now();
    println!(
        "relink scaling benchmark, issue 10 ({})",
        if quick {
            "quick mode: tiny sizes, the figures mean nothing"
        } else {
            "full mode"
        }
    );
    println!("built with --cfg chacha20_avx512: {}", avx512_cfg());
    println!(
        "cores: {}; size of a Connection value (boxed in the Server): {} B",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::mem::size_of::<Connection>()
    );

    println!("timer steps ...");
    let tf = timer_case(&sz);
    println!("threads ...");
    let th = threads_case(&sz);
    println!("loopback TCP ...");
    #[cfg(feature = "tokio")]
    let tcp: Option<[TcpRun; 2]> = Some(tcp::case(&sz).expect("TCP case"));
    #[cfg(not(feature = "tokio"))]
    let tcp: Option<[TcpRun; 2]> = None;

    let verdict = |pass: bool| {
        if quick {
            "n/a (quick)"
        } else if pass {
            "PASS"
        } else {
            "MISS"
        }
    };
    let k = |n: usize| {
        if n % 1000 == 0 {
            format!("{}k", n / 1000)
        } else {
            n.to_string()
        }
    };
    let [a, b, c] = tf.n;

    println!();
    println!(
        "| timer step [µs per step] | {} sessions | {} sessions | {} sessions | {}/{} | target |",
        k(a),
        k(b),
        k(c),
        k(c),
        k(a)
    );
    println!("|---|---:|---:|---:|---:|---|");
    let idle_ratio = tf.idle_us[2] / tf.idle_us[0];
    println!(
        "| nothing due: poll_timeout + handle_timeout | {:.3} | {:.3} | {:.3} | {:.2}× | ≤ 2×: {} |",
        tf.idle_us[0],
        tf.idle_us[1],
        tf.idle_us[2],
        idle_ratio,
        verdict(idle_ratio <= 2.0)
    );
    println!(
        "| 1 % due: + poll_transmit of each due transport (a PING) | {:.1} | {:.1} | {:.1} | {:.1}× | grows with the due sessions ({:.0}, {:.0}, {:.0} per step) |",
        tf.due_us[0],
        tf.due_us[1],
        tf.due_us[2],
        tf.due_us[2] / tf.due_us[0],
        tf.due_per_step[0],
        tf.due_per_step[1],
        tf.due_per_step[2]
    );
    let per_due = [0, 1, 2].map(|i| tf.due_us[i] / tf.due_per_step[i].max(1.0));
    let due_ratio = per_due[2] / per_due[0];
    println!(
        "| 1 % due, per due session | {:.2} | {:.2} | {:.2} | {:.2}× | ≤ 2×: {} |",
        per_due[0],
        per_due[1],
        per_due[2],
        due_ratio,
        verdict(due_ratio <= 2.0)
    );
    println!();
    println!("| case | figure | target |");
    println!("|---|---:|---|");
    for (i, &n) in tf.n.iter().enumerate() {
        let last = i == tf.n.len() - 1;
        println!(
            "| idle session in a `Server`, {} sessions: live heap per session [B] | {:.0} (buffers {:.0}) | {} |",
            k(n),
            tf.bytes_per_session[i],
            tf.buffers_per_session[i],
            if last {
                format!("≤ 832 B: {}", verdict(tf.bytes_per_session[i] <= 832.0))
            } else {
                String::new()
            }
        );
    }
    let th_ratio = th.two / th.one;
    println!(
        "| {} sessions in memory, 16 KiB writes, 1 thread [MB/s] | {:.0} | |",
        sz.bulk_sessions, th.one
    );
    println!(
        "| {} sessions in memory, 16 KiB writes, 2 threads [MB/s] | {:.0} | |",
        sz.bulk_sessions, th.two
    );
    println!(
        "| 2 threads / 1 thread | {:.2}× | ≥ 1.7×: {} |",
        th_ratio,
        verdict(th_ratio >= 1.7)
    );
    match tcp {
        Some(runs) => {
            for (w, r) in [1, 2].iter().zip(runs.iter()) {
                println!(
                    "| loopback TCP, tokio driver, {} clients in another process, {} worker thread{} [MB/s] | {:.0} | server CPU {:.2} cores ({:.2} CPU-s/GB), client process {:.2} cores |",
                    sz.tcp_clients,
                    w,
                    if *w == 1 { "" } else { "s" },
                    r.mbps,
                    r.server_cpu,
                    r.server_cpu_per_gb,
                    r.client_cpu
                );
            }
            println!(
                "| loopback TCP, 2 workers / 1 worker | {:.2}× | |",
                runs[1].mbps / runs[0].mbps
            );
        }
        None => println!("| loopback TCP, tokio driver | skipped: build with --features tokio | |"),
    }
    println!();
    println!(
        "timer steps: medians of {} samples of {} steps (nothing due) and of {} steps (1 % due, \
         each session due once per 100 steps), CPU time of the thread; threads: medians of {} \
         samples, wall clock; TCP: median of {} runs",
        sz.idle_samples, sz.idle_steps, DUE_STEPS, sz.bulk_samples, sz.tcp_samples
    );
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
}

/// Whether the build set `RUSTFLAGS='--cfg chacha20_avx512'` (chacha20's
/// AVX-512 backend; the flag is not a Cargo feature, hence the allow).
#[allow(unexpected_cfgs)]
fn avx512_cfg() -> bool {
    cfg!(chacha20_avx512)
}
