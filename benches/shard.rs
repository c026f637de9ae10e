//! Sharded endpoint (issue 14): does one endpoint per core (each owning the
//! sessions whose connection id carries its shard, [`relink::RoutableId`])
//! serve many cores better than one endpoint behind one lock?
//!
//! ```text
//! cargo bench --bench shard --features tokio              # full suite (about 40 s)
//! cargo bench --bench shard --features tokio -- --quick   # tiny sizes (CI: checks it runs)
//! RELINK_BENCH_QUICK=1 cargo bench --bench shard --features tokio
//! ```
//!
//! Without `--features tokio` the loopback TCP case is skipped.
//!
//! Cases (`docs/PERFORMANCE.md`, "Sharded endpoint (issue 14)", explains
//! them and records a run), each in three layouts measured side by side
//! (samples interleaved, medians):
//!
//! - **one**: 1 thread, 1 [`relink::Endpoint`];
//! - **shared**: 2 threads, 1 endpoint behind one `Mutex`, as the drivers
//!   keep it (every endpoint call under the lock; the [`relink::Connection`]
//!   work of a session outside it);
//! - **sharded**: 2 threads, 2 endpoints (one per thread, each behind its
//!   own, uncontended `Mutex`), endpoint `k` configured with server id `k`
//!   ([`relink::Config::routable_id`], 1 byte): its sessions' connection ids
//!   carry `k`, and every resume request is checked to carry the shard of
//!   the thread that serves it (what an in-process router would read).
//!
//! 1. **Handshakes in memory**: full handshakes (hello, ServerHello,
//!    ClientConfirm, the connection's first output). *Server side*: in
//!    phases, the clients' work untimed (hellos, then confirmations), the
//!    server's timed (wall clock from the start to the end of the slowest
//!    thread); *both sides*: each thread runs fresh clients one after the
//!    other against its endpoint.
//! 2. **Resumes in memory**: established sessions (owned by the thread that
//!    handshook them) resumed on a new transport: the old transport lost,
//!    a new one accepted, the request routed by the endpoint
//!    ([`relink::Dispatch::Resume`]), `Connection::handle_resume` and its
//!    response outside the endpoint lock. Server side alone and both sides.
//! 3. **Loopback TCP** with the tokio driver: a client process (this binary
//!    re-executed with `--tcp-client`) runs handshakes (connect, drop) as
//!    fast as it can against one `relink::tokio::Listener` on a runtime
//!    with 1 or 2 worker threads, or against 2 listeners (one per thread,
//!    each on a current-thread runtime, the client alternating between
//!    them as a balancer would). Handshakes the server accepted per second
//!    and the CPU time of each process.
//!
//! Lock statistics (time waiting for and holding the endpoint lock) are
//! taken in every layout, so that the instrumentation costs each the same.

use std::sync::{Barrier, Mutex, MutexGuard, PoisonError};
use std::time::Instant as StdInstant;

use chacha20::ChaCha20Rng;
use relink::routing::server_id_of;
use relink::wire::{FRAME_OVERHEAD, MAX_FRAME_PAYLOAD, RESUME_REQUEST_LEN};
use relink::{
    Client, Config, Connection, Dispatch, Duration, Endpoint, Event, Instant, RoutableId,
    ServerEvent, StaticKeypair, TransportId,
};
use relink_test_support::harness::rng;

#[path = "shared/measure.rs"]
#[allow(dead_code)] // allocations(), live_bytes(): used by the other benches
mod measure;
use measure::cpu_secs as thread_cpu_secs;

// ----- sizes -----------------------------------------------------------------------

/// How much work each case does; `--quick` shrinks everything.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    /// Handshakes per thread per sample.
    handshakes: usize,
    /// Established sessions per thread for the resume case.
    resume_sessions: usize,
    /// Times each session is resumed per sample.
    resume_rounds: usize,
    /// Samples per layout (after one warm-up round), medians reported.
    samples: usize,
    /// Handshakes per TCP run.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    tcp_handshakes: usize,
    /// Concurrent clients of the TCP client process.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    tcp_concurrency: usize,
    /// TCP runs per layout (median reported).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    tcp_samples: usize,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            handshakes: 1_000,
            resume_sessions: 500,
            resume_rounds: 10,
            samples: 9,
            tcp_handshakes: 8_000,
            tcp_concurrency: 32,
            tcp_samples: 3,
        }
    }
    fn quick() -> Sizes {
        Sizes {
            handshakes: 20,
            resume_sessions: 50,
            resume_rounds: 2,
            samples: 2,
            tcp_handshakes: 100,
            tcp_concurrency: 8,
            tcp_samples: 1,
        }
    }
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

// ----- layouts ---------------------------------------------------------------------

/// Threads and endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// 1 thread, 1 endpoint.
    One,
    /// 2 threads, 1 endpoint behind one lock.
    Shared,
    /// 2 threads, 1 endpoint each.
    Sharded,
}

impl Layout {
    const ALL: [Layout; 3] = [Layout::One, Layout::Shared, Layout::Sharded];

    fn threads(self) -> usize {
        match self {
            Layout::One => 1,
            Layout::Shared | Layout::Sharded => 2,
        }
    }

    fn endpoints(self) -> usize {
        match self {
            Layout::Sharded => 2,
            Layout::One | Layout::Shared => 1,
        }
    }

    /// The endpoint (= shard = server id) thread `t` uses.
    fn endpoint_of(self, t: usize) -> usize {
        match self {
            Layout::Sharded => t,
            Layout::One | Layout::Shared => 0,
        }
    }
}

/// Transmit buffer: one maximum DATA frame plus an ACK frame.
const WIRE: usize = FRAME_OVERHEAD + MAX_FRAME_PAYLOAD + FRAME_OVERHEAD + 8;

/// Bytes of the server id in the connection ids (one byte: up to 256
/// shards).
const SHARD_ID_LEN: usize = 1;

/// Endpoint `shard`'s configuration: no cap on sessions or pending
/// transports, no cookie round (the server-side phases keep a thousand
/// handshakes in progress), its shard as the server id of its connection
/// ids.
fn shard_config(shard: usize) -> Config {
    Config {
        max_sessions: usize::MAX,
        max_pending_transports: usize::MAX,
        cookie_threshold: usize::MAX,
        routable_id: Some(RoutableId::new(shard as u32, SHARD_ID_LEN).expect("server id")),
        ..Config::default()
    }
}

type Ep = Endpoint<ChaCha20Rng>;

/// The endpoints of a layout, each behind its lock; with the static key
/// `key` if given.
fn endpoints(layout: Layout, seed: u64, key: Option<&StaticKeypair>) -> Vec<Mutex<Ep>> {
    (0..layout.endpoints())
        .map(|k| {
            let cfg = Config {
                server_static: key.cloned(),
                ..shard_config(k)
            };
            Mutex::new(Endpoint::new(cfg, rng(seed + k as u64)))
        })
        .collect()
}

/// The clients' configuration: pinning `key` if given.
fn client_config(key: Option<&StaticKeypair>) -> Config {
    Config {
        pinned_server_key: key.map(StaticKeypair::public_key),
        ..Config::default()
    }
}

/// Time spent waiting for and holding the endpoint lock, in seconds.
#[derive(Clone, Copy, Debug, Default)]
struct LockTimes {
    wait: f64,
    held: f64,
}

impl LockTimes {
    fn add(&mut self, o: LockTimes) {
        self.wait += o.wait;
        self.held += o.held;
    }
}

/// Run `f` on the endpoint under its lock, as the drivers do; the time
/// waited for the lock and held is added to `times`.
fn locked<R>(ep: &Mutex<Ep>, times: &mut LockTimes, f: impl FnOnce(&mut Ep) -> R) -> R {
    let t0 = StdInstant::now();
    let mut guard: MutexGuard<'_, Ep> = ep.lock().unwrap_or_else(PoisonError::into_inner);
    let t1 = StdInstant::now();
    let r = f(&mut guard);
    let t2 = StdInstant::now();
    drop(guard);
    times.wait += (t1 - t0).as_secs_f64();
    times.held += (t2 - t1).as_secs_f64();
    r
}

/// What one thread reports of one sample.
#[derive(Clone, Debug, Default)]
struct ThreadOut {
    /// By kind of timed phase (handshakes: 0 hello, 1 confirm).
    lock: [LockTimes; 2],
    /// The thread's CPU time, by kind of timed phase.
    cpu: [f64; 2],
    /// Start and end of each timed phase, in order (read by the thread
    /// itself: the coordinating thread may not run when the barrier opens).
    spans: Vec<(StdInstant, StdInstant)>,
}

impl ThreadOut {
    /// Start the next timed phase: wait for the other threads, then read
    /// the clocks.
    fn start(&mut self, barrier: &Barrier) -> f64 {
        barrier.wait();
        let t = StdInstant::now();
        self.spans.push((t, t));
        thread_cpu_secs()
    }

    /// End the timed phase (of kind `k`, started at CPU time `cpu`), then
    /// wait for the other threads.
    fn end(&mut self, k: usize, cpu: f64, barrier: &Barrier) {
        self.cpu[k] += thread_cpu_secs() - cpu;
        if let Some((_, end)) = self.spans.last_mut() {
            *end = StdInstant::now();
        }
        barrier.wait();
    }
}

/// One sample of a layout: the timed wall clock, and its threads summed.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    /// Operations (handshakes, resumes) of all threads.
    ops: usize,
    wall: f64,
    /// By timed phase, all threads.
    lock: [LockTimes; 2],
    /// CPU seconds of all threads, by timed phase.
    cpu: [f64; 2],
}

impl Sample {
    /// Operations per second (k/s).
    fn rate(&self) -> f64 {
        self.ops as f64 / self.wall / 1e3
    }

    /// Lock time of all phases.
    fn lock(&self) -> LockTimes {
        let mut l = self.lock[0];
        l.add(self.lock[1]);
        l
    }
}

/// Run `work(thread, barrier)` on the layout's threads, each of which
/// brackets its timed phases with [`ThreadOut::start`] and
/// [`ThreadOut::end`]. The wall clock of a phase runs from the first
/// thread's start to the last thread's end.
fn run_threads<F>(layout: Layout, ops: usize, work: F) -> Sample
where
    F: Fn(usize, &Barrier) -> ThreadOut + Sync,
{
    let n = layout.threads();
    let barrier = Barrier::new(n);
    let outs: Vec<ThreadOut> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|t| {
                let (work, barrier) = (&work, &barrier);
                s.spawn(move || work(t, barrier))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let mut s = Sample {
        ops,
        ..Sample::default()
    };
    let phases = outs.iter().map(|o| o.spans.len()).max().unwrap_or(0);
    for k in 0..phases {
        let spans: Vec<(StdInstant, StdInstant)> = outs
            .iter()
            .filter_map(|o| o.spans.get(k).copied())
            .collect();
        if let (Some(a), Some(b)) = (
            spans.iter().map(|x| x.0).min(),
            spans.iter().map(|x| x.1).max(),
        ) {
            s.wall += (b - a).as_secs_f64();
        }
    }
    for o in &outs {
        s.lock[0].add(o.lock[0]);
        s.lock[1].add(o.lock[1]);
        s.cpu[0] += o.cpu[0];
        s.cpu[1] += o.cpu[1];
    }
    s
}

/// The median sample of each layout (by throughput).
fn medians(samples: &[Vec<Sample>; 3]) -> [Sample; 3] {
    [0, 1, 2].map(|k| {
        let v = &samples[k];
        let m = median(v.iter().map(|s| s.ops as f64 / s.wall).collect());
        *v.iter()
            .min_by(|a, b| {
                let da = (a.ops as f64 / a.wall - m).abs();
                let db = (b.ops as f64 / b.wall - m).abs();
                da.partial_cmp(&db).expect("no NaN")
            })
            .expect("a sample")
    })
}

// ----- 1: handshakes ---------------------------------------------------------------

/// Unique client seeds: no two hellos of one endpoint may share an
/// ephemeral key (the second would be refused as a replay).
fn client_seed(layout: Layout, sample: usize, thread: usize, i: usize) -> u64 {
    (layout as u64) << 56 | (sample as u64) << 40 | (thread as u64) << 32 | i as u64
}

/// The endpoint's answer to a whole hello: still pending (ServerHello
/// queued).
fn expect_pending(d: Dispatch, len: usize) {
    match d {
        Dispatch::Pending(k) => assert_eq!(k, len, "hello consumed"),
        other => panic!("unexpected dispatch after a hello: {other:?}"),
    }
}

/// The endpoint's answer to a whole ClientConfirm: the new connection.
fn expect_connection(d: Dispatch, len: usize) -> Box<Connection> {
    match d {
        Dispatch::NewConnection {
            consumed,
            connection,
        } => {
            assert_eq!(consumed, len, "confirm consumed");
            connection
        }
        other => panic!("unexpected dispatch after a confirm: {other:?}"),
    }
}

/// The connection's work after the handover, outside the endpoint lock:
/// its events (HandshakeDone) and its first output (a PING). Checks the
/// connection id carries `shard`.
fn settle_new(
    conn: &mut Connection,
    tid: TransportId,
    now: Instant,
    shard: usize,
    wire: &mut [u8],
) {
    assert_eq!(
        server_id_of(conn.conn_id(), SHARD_ID_LEN).1,
        shard as u32,
        "the conn id carries its shard"
    );
    let mut done = false;
    while let Some(e) = conn.poll_event() {
        done |= matches!(e, ServerEvent::HandshakeDone { .. });
    }
    assert!(done, "handshake done");
    conn.poll_transmit(tid, now, wire).expect("first output");
}

/// Server side of `n` handshakes per thread, in phases (two timed), by
/// clients of configuration `ccfg`.
fn handshakes_server(
    layout: Layout,
    eps: &[Mutex<Ep>],
    n: usize,
    sample: usize,
    ccfg: &Config,
) -> Sample {
    let now = Instant::from_micros(1_000_000 + sample as u64);
    run_threads(layout, n * layout.threads(), |t, barrier| {
        let shard = layout.endpoint_of(t);
        let ep = &eps[shard];
        let mut wire = vec![0u8; WIRE];
        let mut clients: Vec<Client<ChaCha20Rng>> = (0..n)
            .map(|i| Client::new(ccfg.clone(), rng(client_seed(layout, sample, t, i))))
            .collect();
        let mut msgs: Vec<Vec<u8>> = clients
            .iter_mut()
            .map(|c| {
                c.new_transport(now).expect("new_transport");
                let k = c.poll_transmit(now, &mut wire).expect("hello");
                wire[..k].to_vec()
            })
            .collect();
        let mut tids = Vec::with_capacity(n);
        let mut out = ThreadOut::default();
        // timed: accept, hello, ServerHello
        let cpu = out.start(barrier);
        for m in msgs.iter_mut() {
            let (tid, k) = locked(ep, &mut out.lock[0], |ep| {
                let tid = ep.accept(now).expect("accept");
                expect_pending(ep.handle_input(tid, now, m).expect("hello"), m.len());
                let k = ep.poll_transmit(tid, &mut wire).expect("ServerHello");
                while ep.poll_event().is_some() {}
                (tid, k)
            });
            m.clear();
            m.extend_from_slice(&wire[..k]);
            tids.push(tid);
        }
        out.end(0, cpu, barrier);
        // untimed: the clients confirm
        for (c, m) in clients.iter_mut().zip(msgs.iter_mut()) {
            assert_eq!(c.handle_input(now, m).expect("ServerHello"), m.len());
            let k = c.poll_transmit(now, &mut wire).expect("confirm");
            m.clear();
            m.extend_from_slice(&wire[..k]);
        }
        let mut conns = Vec::with_capacity(n);
        // timed: confirm, the connection's first steps
        let cpu = out.start(barrier);
        for (&tid, m) in tids.iter().zip(msgs.iter()) {
            let mut conn = locked(ep, &mut out.lock[1], |ep| {
                let c = expect_connection(ep.handle_input(tid, now, m).expect("confirm"), m.len());
                while ep.poll_event().is_some() {}
                c
            });
            settle_new(&mut conn, tid, now, shard, &mut wire);
            conns.push(conn);
        }
        out.end(1, cpu, barrier);
        for c in clients.iter_mut() {
            while c.poll_event().is_some() {}
            assert!(c.is_connected(), "client connected");
        }
        out
    })
}

/// Both sides of `n` handshakes per thread, one after the other.
fn handshakes_both(layout: Layout, eps: &[Mutex<Ep>], n: usize, sample: usize) -> Sample {
    // other seeds than the server-side samples (same endpoints)
    let sample = sample + 1_000;
    let now = Instant::from_micros(1_000_000 + sample as u64);
    run_threads(layout, n * layout.threads(), |t, barrier| {
        let shard = layout.endpoint_of(t);
        let ep = &eps[shard];
        let mut wire = vec![0u8; WIRE];
        let mut out = ThreadOut::default();
        let mut conns = Vec::with_capacity(n);
        let cpu = out.start(barrier);
        for i in 0..n {
            let mut c = Client::new(Config::default(), rng(client_seed(layout, sample, t, i)));
            c.new_transport(now).expect("new_transport");
            let k = c.poll_transmit(now, &mut wire).expect("hello");
            let hello = wire[..k].to_vec();
            let (tid, k) = locked(ep, &mut out.lock[0], |ep| {
                let tid = ep.accept(now).expect("accept");
                expect_pending(ep.handle_input(tid, now, &hello).expect("hello"), k);
                let k = ep.poll_transmit(tid, &mut wire).expect("ServerHello");
                while ep.poll_event().is_some() {}
                (tid, k)
            });
            assert_eq!(c.handle_input(now, &wire[..k]).expect("ServerHello"), k);
            let k = c.poll_transmit(now, &mut wire).expect("confirm");
            let confirm = wire[..k].to_vec();
            let mut conn = locked(ep, &mut out.lock[0], |ep| {
                let c = expect_connection(ep.handle_input(tid, now, &confirm).expect("confirm"), k);
                while ep.poll_event().is_some() {}
                c
            });
            settle_new(&mut conn, tid, now, shard, &mut wire);
            let m = conn.poll_transmit(tid, now, &mut wire).expect("tx");
            assert_eq!(c.handle_input(now, &wire[..m]).expect("rx"), m);
            while c.poll_event().is_some() {}
            assert!(c.is_connected(), "client connected");
            conns.push(conn);
        }
        out.end(0, cpu, barrier);
        out
    })
}

// ----- 2: resumes ------------------------------------------------------------------

/// An established session: the client, the server's connection, its
/// transport.
struct Session {
    client: Client<ChaCha20Rng>,
    conn: Box<Connection>,
    tid: TransportId,
}

/// A layout's endpoints and, per thread, the sessions it owns.
struct ResumeBed {
    layout: Layout,
    eps: Vec<Mutex<Ep>>,
    sessions: Vec<Vec<Session>>,
    now: Instant,
}

impl ResumeBed {
    fn new(layout: Layout, n: usize, seed: u64) -> ResumeBed {
        let eps = endpoints(layout, seed, None);
        let now = Instant::from_micros(1_000_000);
        let mut wire = vec![0u8; WIRE];
        let sessions = (0..layout.threads())
            .map(|t| {
                let shard = layout.endpoint_of(t);
                let mut ep = eps[shard].lock().expect("endpoint");
                (0..n)
                    .map(|i| {
                        let mut client = Client::new(
                            Config::default(),
                            rng(client_seed(layout, 2_000, t, i) ^ seed),
                        );
                        let tid = ep.accept(now).expect("accept");
                        client.new_transport(now).expect("new_transport");
                        let k = client.poll_transmit(now, &mut wire).expect("hello");
                        expect_pending(ep.handle_input(tid, now, &wire[..k]).expect("hello"), k);
                        let k = ep.poll_transmit(tid, &mut wire).expect("ServerHello");
                        client.handle_input(now, &wire[..k]).expect("ServerHello");
                        let k = client.poll_transmit(now, &mut wire).expect("confirm");
                        let mut conn = expect_connection(
                            ep.handle_input(tid, now, &wire[..k]).expect("confirm"),
                            k,
                        );
                        while ep.poll_event().is_some() {}
                        settle_new(&mut conn, tid, now, shard, &mut wire);
                        let m = conn.poll_transmit(tid, now, &mut wire).expect("tx");
                        client.handle_input(now, &wire[..m]).expect("rx");
                        while client.poll_event().is_some() {}
                        assert!(client.is_connected());
                        Session { client, conn, tid }
                    })
                    .collect()
            })
            .collect();
        ResumeBed {
            layout,
            eps,
            sessions,
            now,
        }
    }

    /// Resume every session `rounds` times; `both`: the clients' work is
    /// timed too, else only the server's (the clients write their requests
    /// before each round and read the responses after it).
    fn sample(&mut self, both: bool, rounds: usize) -> Sample {
        let (layout, base, eps) = (self.layout, self.now, &self.eps);
        self.now = self
            .now
            .saturating_add(Duration::from_micros(rounds as u64 + 10));
        let n = self.sessions.iter().map(Vec::len).sum::<usize>() * rounds;
        let per: Vec<Mutex<&mut Vec<Session>>> = self.sessions.iter_mut().map(Mutex::new).collect();
        run_threads(layout, n, |t, barrier| {
            let shard = layout.endpoint_of(t);
            let ep = &eps[shard];
            let mut sessions = per[t].lock().expect("sessions");
            let mut wire = vec![0u8; WIRE];
            let mut out = ThreadOut::default();
            let mut reqs: Vec<[u8; RESUME_REQUEST_LEN]> = Vec::with_capacity(sessions.len());
            let mut resps: Vec<Vec<u8>> = Vec::with_capacity(sessions.len());
            for r in 0..rounds {
                let now = base.saturating_add(Duration::from_micros(r as u64));
                reqs.clear();
                resps.clear();
                if !both {
                    for s in sessions.iter_mut() {
                        reqs.push(client_request(s, now, &mut wire));
                    }
                }
                let cpu = out.start(barrier);
                for (i, s) in sessions.iter_mut().enumerate() {
                    let req = if both {
                        client_request(s, now, &mut wire)
                    } else {
                        reqs[i]
                    };
                    let k = server_resume(s, ep, shard, now, &req, &mut wire, &mut out.lock[0]);
                    if both {
                        client_response(s, now, &wire[..k]);
                    } else {
                        resps.push(wire[..k].to_vec());
                    }
                }
                out.end(0, cpu, barrier);
                for (s, r) in sessions.iter_mut().zip(resps.iter()) {
                    client_response(s, now, r);
                }
            }
            out
        })
    }
}

/// The client's transport broke: it opens a new one and writes its
/// resume request.
fn client_request(s: &mut Session, now: Instant, wire: &mut [u8]) -> [u8; RESUME_REQUEST_LEN] {
    s.client.transport_lost(now);
    s.client.new_transport(now).expect("new_transport");
    let k = s.client.poll_transmit(now, wire).expect("request");
    assert_eq!(k, RESUME_REQUEST_LEN);
    let mut req = [0u8; RESUME_REQUEST_LEN];
    req.copy_from_slice(&wire[..k]);
    req
}

/// The client reads the server's response: resumed.
fn client_response(s: &mut Session, now: Instant, resp: &[u8]) {
    assert_eq!(
        s.client.handle_input(now, resp).expect("response"),
        resp.len()
    );
    let mut resumed = false;
    while let Some(e) = s.client.poll_event() {
        resumed |= matches!(e, Event::Resumed { .. });
    }
    assert!(resumed && s.client.is_connected(), "client resumed");
}

/// The server's side of a resume of `s` with request `req`: the old
/// transport lost, a new one accepted and the request routed by the
/// endpoint under its lock, then the connection's work outside it. The
/// response is in `wire`; returns its length.
fn server_resume(
    s: &mut Session,
    ep: &Mutex<Ep>,
    shard: usize,
    now: Instant,
    req: &[u8; RESUME_REQUEST_LEN],
    wire: &mut [u8],
    lock: &mut LockTimes,
) -> usize {
    // The old transport broke (under the session's own lock in a driver).
    s.conn.transport_lost(s.tid, now);
    while s.conn.poll_event().is_some() {}
    // The in-process router: the shard is in the conn id.
    let cid = u64::from_le_bytes(req[2..10].try_into().expect("8 bytes"));
    assert_eq!(server_id_of(cid, SHARD_ID_LEN).1, shard as u32, "routed");
    let (tid, request) = locked(ep, lock, |ep| {
        let tid = ep.accept(now).expect("accept");
        let routed = match ep.handle_input(tid, now, req).expect("request") {
            Dispatch::Resume {
                consumed,
                session,
                request,
            } => {
                assert_eq!(consumed, RESUME_REQUEST_LEN);
                assert_eq!(session, s.conn.session(), "routed to its session");
                request
            }
            other => panic!("unexpected dispatch after a request: {other:?}"),
        };
        while ep.poll_event().is_some() {}
        (tid, routed)
    });
    // The session's work, outside the endpoint lock.
    s.conn.handle_resume(tid, now, &request).expect("resume");
    s.tid = tid;
    let k = s.conn.poll_transmit(tid, now, wire).expect("response");
    let mut resumed = false;
    while let Some(e) = s.conn.poll_event() {
        resumed |= matches!(e, ServerEvent::Resumed { .. });
    }
    assert!(resumed, "server resumed");
    let mut events = Vec::new();
    while let Some(e) = s.conn.poll_endpoint_event() {
        events.push(e);
    }
    if !events.is_empty() {
        locked(ep, lock, |ep| {
            events.into_iter().for_each(|e| ep.handle_event(e))
        });
    }
    k
}

// ----- in-memory cases, side by side ----------------------------------------------------

/// The medians of the in-memory rows, per layout.
struct MemFigures {
    hs_server: [Sample; 3],
    hs_pinned: [Sample; 3],
    hs_both: [Sample; 3],
    resume_server: [Sample; 3],
    resume_both: [Sample; 3],
    /// X25519 on one thread: µs per key generation, per DH.
    keygen_us: f64,
    dh_us: f64,
}

/// `n` X25519 key generations and `n` DHs on this thread (as the server's
/// half of a handshake does them): CPU µs per key generation, per DH.
fn x25519_costs(n: u32) -> (f64, f64) {
    use std::hint::black_box;
    use x25519_dalek::{PublicKey, StaticSecret};
    let mut seed = [7u8; 32];
    let t = thread_cpu_secs();
    for i in 0..n {
        seed[..4].copy_from_slice(&i.to_le_bytes());
        black_box(PublicKey::from(&StaticSecret::from(black_box(seed))));
    }
    let keygen = (thread_cpu_secs() - t) / f64::from(n) * 1e6;
    let s = StaticSecret::from([9u8; 32]);
    let mut peer = PublicKey::from(&StaticSecret::from([5u8; 32])).to_bytes();
    let t = thread_cpu_secs();
    for _ in 0..n {
        let shared = s.diffie_hellman(&PublicKey::from(black_box(peer)));
        peer[0] ^= shared.as_bytes()[0] & 1;
    }
    black_box(peer);
    let dh = (thread_cpu_secs() - t) / f64::from(n) * 1e6;
    (keygen, dh)
}

fn memory_cases(sz: &Sizes) -> MemFigures {
    let key = StaticKeypair::generate(&mut rng(0x5747));
    let anon = client_config(None);
    let pinned = client_config(Some(&key));
    let eps: Vec<Vec<Mutex<Ep>>> = Layout::ALL
        .iter()
        .map(|&l| endpoints(l, 10 + 10 * l as u64, None))
        .collect();
    let eps_pinned: Vec<Vec<Mutex<Ep>>> = Layout::ALL
        .iter()
        .map(|&l| endpoints(l, 50 + 10 * l as u64, Some(&key)))
        .collect();
    let t = StdInstant::now();
    let mut beds: Vec<ResumeBed> = Layout::ALL
        .iter()
        .map(|&l| ResumeBed::new(l, sz.resume_sessions, 100 + l as u64))
        .collect();
    println!(
        "  resume beds ({} sessions per thread) set up in {:.1} s",
        sz.resume_sessions,
        t.elapsed().as_secs_f64()
    );
    let mut rows: [[Vec<Sample>; 3]; 5] = Default::default();
    let mut x25519 = (Vec::new(), Vec::new());
    // one warm-up round, then sample s of every layout and row, s + 1, ...
    for s in 0..=sz.samples {
        let (kg, dh) = x25519_costs(if sz.samples > 2 { 1_000 } else { 20 });
        x25519.0.push(kg);
        x25519.1.push(dh);
        for (k, &l) in Layout::ALL.iter().enumerate() {
            let got = [
                handshakes_server(l, &eps[k], sz.handshakes, s, &anon),
                handshakes_server(l, &eps_pinned[k], sz.handshakes, s, &pinned),
                handshakes_both(l, &eps[k], sz.handshakes, s),
                beds[k].sample(false, sz.resume_rounds),
                beds[k].sample(true, sz.resume_rounds),
            ];
            if s > 0 {
                for (row, x) in rows.iter_mut().zip(got) {
                    row[k].push(x);
                }
            }
        }
    }
    let [hs_server, hs_pinned, hs_both, resume_server, resume_both] = rows.map(|r| medians(&r));
    MemFigures {
        hs_server,
        hs_pinned,
        hs_both,
        resume_server,
        resume_both,
        keygen_us: median(x25519.0),
        dh_us: median(x25519.1),
    }
}

// ----- 3: loopback TCP with the tokio driver ---------------------------------------

/// How the TCP server is laid out.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
#[derive(Clone, Copy, Debug)]
enum TcpLayout {
    /// One listener on a multi-thread runtime with this many workers.
    Single(usize),
    /// This many listeners, each on a current-thread runtime of its own
    /// thread, its shard as its server id.
    Sharded(usize),
}

/// One run of the TCP case.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
#[derive(Clone, Copy, Debug, Default)]
struct TcpRun {
    /// Handshakes the server accepted per second (first to last accept).
    per_sec: f64,
    /// Server process CPU seconds per wall second (1.0 = one core busy).
    server_cores: f64,
    /// Server CPU µs per handshake.
    server_us: f64,
    /// Client process CPU seconds per wall second, whole run.
    client_cores: f64,
}

#[cfg(feature = "tokio")]
mod tcp {
    use super::{median, shard_config, Sizes, TcpLayout, TcpRun};
    use relink::{Backoff, Config};
    use std::io;
    use std::net::SocketAddr;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, OnceLock};
    use std::time::Instant as StdInstant;

    /// CPU time (user + system) of this whole process in seconds, from
    /// `/proc/self/stat` (ticks of 1/100 s); `None` without `/proc`.
    fn process_cpu_secs() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) as f64 / 100.0)
    }

    /// A listener's configuration: every client comes from 127.0.0.1 (one
    /// source), so the per-source limits are lifted; sessions dropped by
    /// both sides leave quickly, the tables are large anyway.
    fn config(shard: usize) -> Config {
        Config {
            max_sessions: 1 << 20,
            max_pending_transports: 1 << 16,
            max_handshakes_per_source: usize::MAX,
            max_sessions_per_source: usize::MAX,
            cookie_threshold: usize::MAX,
            ..shard_config(shard)
        }
    }

    /// What the accept loops share.
    struct Count {
        accepted: AtomicUsize,
        target: usize,
        first: OnceLock<StdInstant>,
        last: OnceLock<StdInstant>,
    }

    /// Accept (and drop) sessions until `target` were accepted by all
    /// listeners together.
    async fn accept_loop(listener: relink::tokio::Listener, count: Arc<Count>) {
        let tick = std::time::Duration::from_millis(50);
        while count.accepted.load(Ordering::SeqCst) < count.target {
            let Ok(r) = tokio::time::timeout(tick, listener.accept()).await else {
                continue;
            };
            let stream = r.expect("accept");
            count.first.get_or_init(StdInstant::now);
            if count.accepted.fetch_add(1, Ordering::SeqCst) + 1 == count.target {
                count.last.get_or_init(StdInstant::now);
            }
            drop(stream);
        }
    }

    fn runtime(workers: usize) -> io::Result<tokio::runtime::Runtime> {
        if workers == 0 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
        }
    }

    /// One run: the server laid out as `layout`, the clients in a child
    /// process.
    fn run(layout: TcpLayout, sz: &Sizes) -> io::Result<TcpRun> {
        let count = Arc::new(Count {
            accepted: AtomicUsize::new(0),
            target: sz.tcp_handshakes,
            first: OnceLock::new(),
            last: OnceLock::new(),
        });
        // (runtime workers, shard) of each listener
        let listeners: Vec<(usize, usize)> = match layout {
            TcpLayout::Single(w) => vec![(w, 0)],
            TcpLayout::Sharded(n) => (0..n).map(|k| (0, k)).collect(),
        };
        let (tx, rx) = std::sync::mpsc::channel::<io::Result<SocketAddr>>();
        let cpu0 = process_cpu_secs();
        let threads: Vec<_> = listeners
            .into_iter()
            .map(|(workers, shard)| {
                let (tx, count) = (tx.clone(), count.clone());
                std::thread::spawn(move || -> io::Result<()> {
                    let rt = runtime(workers)?;
                    rt.block_on(async move {
                        let l = match relink::tokio::Listener::bind("127.0.0.1:0", config(shard))
                            .await
                        {
                            Ok(l) => l,
                            Err(e) => {
                                let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                                return Err(e);
                            }
                        };
                        let _ = tx.send(l.local_addr());
                        accept_loop(l, count).await;
                        Ok(())
                    })
                })
            })
            .collect();
        drop(tx);
        let mut addrs = Vec::new();
        for r in rx.iter().take(threads.len()) {
            addrs.push(r?.to_string());
        }
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--tcp-client")
            .arg(addrs.join(","))
            .arg(sz.tcp_handshakes.to_string())
            .arg(sz.tcp_concurrency.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        // The client process exits when this pipe closes.
        let lifeline = child.stdin.take();
        for t in threads {
            t.join()
                .map_err(|_| io::Error::other("listener thread"))??;
        }
        let cpu = process_cpu_secs()
            .zip(cpu0)
            .map_or(f64::NAN, |(b, a)| b - a);
        let out = child.wait_with_output()?;
        drop(lifeline);
        if !out.status.success() {
            return Err(io::Error::other(format!("client process: {}", out.status)));
        }
        let client = parse_client_report(&String::from_utf8_lossy(&out.stdout));
        let first = *count.first.get().expect("a session was accepted");
        let last = *count.last.get().expect("all sessions were accepted");
        let wall = (last - first).as_secs_f64();
        let n = sz.tcp_handshakes as f64;
        Ok(TcpRun {
            per_sec: n / wall,
            server_cores: cpu / wall,
            server_us: cpu / n * 1e6,
            client_cores: client.map_or(f64::NAN, |(c, w)| c / w),
        })
    }

    /// `cpu <secs> wall <secs>` printed by the client process.
    fn parse_client_report(text: &str) -> Option<(f64, f64)> {
        let line = text.lines().find(|l| l.starts_with("cpu "))?;
        let w: Vec<&str> = line.split_whitespace().collect();
        Some((w.get(1)?.parse().ok()?, w.get(3)?.parse().ok()?))
    }

    /// The client process: `total` handshakes (connect, drop) by
    /// `concurrency` tasks, alternating over the comma-separated addresses.
    pub fn client_main(args: &[String]) -> io::Result<()> {
        let addrs: Vec<SocketAddr> = args[0]
            .split(',')
            .map(|a| a.parse().map_err(io::Error::other))
            .collect::<io::Result<_>>()?;
        let total: usize = args[1].parse().map_err(io::Error::other)?;
        let concurrency: usize = args[2].parse().map_err(io::Error::other)?;
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
        let next = Arc::new(AtomicUsize::new(0));
        rt.block_on(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..concurrency {
                let (next, addrs) = (next.clone(), addrs.clone());
                tasks.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= total {
                            return io::Result::Ok(());
                        }
                        let addr = addrs[i % addrs.len()];
                        let s = relink::tokio::ClientStream::connect_with(
                            Config::default(),
                            Backoff::default(),
                            move || async move {
                                let s = tokio::net::TcpStream::connect(addr).await?;
                                s.set_nodelay(true)?;
                                io::Result::Ok(s)
                            },
                        )
                        .await?;
                        drop(s);
                    }
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

    /// The layouts, runs interleaved; the median run (by rate) of each.
    pub fn case(sz: &Sizes, layouts: &[TcpLayout]) -> io::Result<Vec<TcpRun>> {
        let mut runs: Vec<Vec<TcpRun>> = vec![Vec::new(); layouts.len()];
        for _ in 0..sz.tcp_samples {
            for (k, &l) in layouts.iter().enumerate() {
                runs[k].push(run(l, sz)?);
            }
        }
        Ok(runs
            .into_iter()
            .map(|mut v| {
                let m = median(v.iter().map(|r| r.per_sec).collect());
                v.sort_by(|a, b| {
                    (a.per_sec - m)
                        .abs()
                        .partial_cmp(&(b.per_sec - m).abs())
                        .expect("no NaN")
                });
                v[0]
            })
            .collect())
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
        println!("usage: cargo bench --bench shard --features tokio [-- --quick]");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var("RELINK_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let sz = if quick { Sizes::quick() } else { Sizes::full() };
    let started = StdInstant::now();
    println!(
        "relink sharded-endpoint benchmark, issue 14 ({})",
        if quick {
            "quick mode: tiny sizes, the figures mean nothing"
        } else {
            "full mode"
        }
    );
    println!("built with --cfg chacha20_avx512: {}", avx512_cfg());
    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("in memory ...");
    let mem = memory_cases(&sz);
    let tcp_layouts = [
        TcpLayout::Single(1),
        TcpLayout::Single(2),
        TcpLayout::Sharded(2),
    ];
    println!("loopback TCP ...");
    #[cfg(feature = "tokio")]
    let tcp: Option<Vec<TcpRun>> = Some(tcp::case(&sz, &tcp_layouts).expect("TCP case"));
    #[cfg(not(feature = "tokio"))]
    let tcp: Option<Vec<TcpRun>> = None;

    println!();
    println!(
        "| in memory [k/s, wall clock] | 1 thread, 1 endpoint | 2 threads, 1 shared endpoint | 2 threads, 2 endpoints (sharded) | shared / one | sharded / one | sharded / shared | shared / one at best (lock share of 1 thread) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let rows = [
        ("handshakes, server side", &mem.hs_server),
        ("handshakes, server side, pinned key", &mem.hs_pinned),
        ("handshakes, both sides", &mem.hs_both),
        ("resumes, server side", &mem.resume_server),
        ("resumes, both sides", &mem.resume_both),
    ];
    for (name, s) in rows {
        let [a, b, c] = [s[0].rate(), s[1].rate(), s[2].rate()];
        // Amdahl: the share f of one thread's time spent under the lock is
        // serial; 2 threads sharing the lock gain at most 1 / (f + (1-f)/2).
        let f = (s[0].lock().held / s[0].wall).min(1.0);
        println!(
            "| {name} | {a:.1} | {b:.1} | {c:.1} | {:.2}× | {:.2}× | {:.2}× | {:.2}× ({:.0} %) |",
            b / a,
            c / a,
            c / b,
            1.0 / (f + (1.0 - f) / 2.0),
            f * 100.0
        );
    }
    println!();
    println!(
        "| endpoint lock per operation; CPU of the threads | 1 thread, 1 endpoint | 2 threads, 1 shared endpoint | 2 threads, 2 endpoints (sharded) |"
    );
    println!("|---|---:|---:|---:|");
    for (name, s) in rows {
        let cell = |x: &Sample| {
            let l = x.lock();
            format!(
                "held {:.2} µs, waited {:.2} µs; cores {:.2}",
                l.held / x.ops as f64 * 1e6,
                l.wait / x.ops as f64 * 1e6,
                (x.cpu[0] + x.cpu[1]) / x.wall
            )
        };
        println!(
            "| {name} | {} | {} | {} |",
            cell(&s[0]),
            cell(&s[1]),
            cell(&s[2])
        );
    }
    let one = |s: &Sample, phase: usize| s.lock[phase].held / s.ops as f64 * 1e6;
    let (hs, pin, res) = (&mem.hs_server[0], &mem.hs_pinned[0], &mem.resume_server[0]);
    println!();
    println!(
        "X25519 on one thread: key generation {:.1} µs, DH {:.1} µs",
        mem.keygen_us, mem.dh_us
    );
    // The hello phase runs under the lock but for copying the reply: its
    // CPU time is the critical section, unlike the lock's wall clock not
    // stretched by preemption on a busy machine.
    for (name, s, dh) in [("anonymous", hs, 1.0), ("pinned", pin, 2.0)] {
        let hello = s.cpu[0] / s.ops as f64 * 1e6;
        let confirm = one(s, 1);
        let x = mem.keygen_us + dh * mem.dh_us;
        println!(
            "endpoint lock held per {name} handshake (1 thread): {:.1} µs (hello {:.1} CPU µs, of which X25519 {:.1}; \
             confirm {:.1}; by the lock's wall clock {:.1}): one endpoint's ceiling {:.1} k handshakes/s per process, \
             whatever its cores",
            hello + confirm,
            hello,
            x,
            confirm,
            one(s, 0) + confirm,
            1e3 / (hello + confirm)
        );
    }
    println!(
        "endpoint lock held per resume (1 thread): {:.2} µs: ceiling {:.0} k resumes/s per process",
        one(res, 0),
        1e3 / one(res, 0)
    );
    match tcp {
        Some(runs) => {
            println!();
            println!("| loopback TCP, tokio driver, client process: {} handshakes, {} at a time (connect, drop) | handshakes/s | server CPU [cores] | server CPU per handshake [µs] | client process [cores] |", sz.tcp_handshakes, sz.tcp_concurrency);
            println!("|---|---:|---:|---:|---:|");
            for (l, r) in tcp_layouts.iter().zip(runs.iter()) {
                let name = match l {
                    TcpLayout::Single(1) => "1 listener, 1 worker thread".to_string(),
                    TcpLayout::Single(w) => format!("1 listener, {w} worker threads"),
                    TcpLayout::Sharded(n) => {
                        format!("{n} listeners (sharded), 1 current-thread runtime each")
                    }
                };
                println!(
                    "| {name} | {:.0} | {:.2} | {:.0} | {:.2} |",
                    r.per_sec, r.server_cores, r.server_us, r.client_cores
                );
            }
            println!(
                "| 1 listener, 2 workers / 1 worker | {:.2}× | | | |",
                runs[1].per_sec / runs[0].per_sec
            );
            println!(
                "| sharded / 1 listener with 2 workers | {:.2}× | | | |",
                runs[2].per_sec / runs[1].per_sec
            );
        }
        None => {
            println!();
            println!("loopback TCP case skipped: build with --features tokio");
        }
    }
    println!();
    println!(
        "in memory: medians of {} samples ({} handshakes per thread, {} sessions per thread \
         resumed {} times), samples of the layouts interleaved; TCP: median of {} runs",
        sz.samples, sz.handshakes, sz.resume_sessions, sz.resume_rounds, sz.tcp_samples
    );
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
}

/// Whether the build set `RUSTFLAGS='--cfg chacha20_avx512'`.
#[allow(unexpected_cfgs)]
fn avx512_cfg() -> bool {
    cfg!(chacha20_avx512)
}
