//! Adapter of the one-body-two-drivers suite (`tests/drivers.rs`, issue 12):
//! the [`Driver`] trait, one implementation per driver ([`Blocking`] over
//! `relink::blocking`, [`Tokio`] over `relink::tokio`), and the test tools
//! both use (watchdog, background threads, patterns, fault plans).
//!
//! Every call of the adapter is plain synchronous code: the tokio
//! implementation owns a multi-thread runtime and `block_on`s each
//! operation, so a test body is written once and runs unchanged on both
//! drivers. **All code that depends on the drivers' names lives here**; when
//! an API is renamed (tokio's `Server` becomes `Listener`, tokio streams get
//! `close().await`, the stats types are unified...), only this file changes.
//! Places that follow today's API and must change then are marked
//! `ISSUE 12:`.
//!
//! `driver_tests!` (end of file) turns a list of bodies `fn name<D:
//! Driver>(d: &D, t: &Steps)` into `blocking::name` and `tokio::name`
//! tests, each run by [`run`] under a watchdog: a body that hangs fails
//! its test after the limit, naming the last [`Steps::step`] it recorded.
//! Each tokio test gets a runtime of its own (2 workers).
#![allow(dead_code)]

use std::any::TypeId;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration as StdDuration;

use relink::{AbortCode, Backoff, Config, Duration};

/// The types both drivers share, under one name for the test bodies.
/// ISSUE 12: `Progress` is `relink::blocking`'s (tokio has no observer
/// yet); the fault relay moves to a test-support crate (change the path
/// here only).
pub use relink::blocking::{Progress, Resolve, ServerAddr, SessionError};
pub use relink_test_support::relay::{FaultPlan, Relay};

/// A progress observer (`on_progress` of the client builders).
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Client options of one connect.
#[derive(Clone)]
pub struct ClientOpts {
    pub config: Config,
    pub backoff: Backoff,
    pub wait_for_server: bool,
    pub connect_timeout: Option<StdDuration>,
    pub on_progress: Option<ProgressFn>,
}

impl ClientOpts {
    /// `config` with a fast backoff (attempts 10..100 ms apart, unbounded:
    /// the session's resume timeout bounds them), no observer.
    pub fn new(config: Config) -> Self {
        ClientOpts {
            config,
            backoff: fast_backoff(),
            wait_for_server: false,
            connect_timeout: None,
            on_progress: None,
        }
    }
}

/// Client counters under the names both drivers are to share.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub transports: u64,
    pub resumes: u64,
    pub resent_bytes: u64,
    pub connect_failures: u64,
    pub epoch: u32,
    pub rekeys: u64,
}

/// One end of a session, client or server. Blocking calls; the tokio
/// implementation runs each on its runtime.
pub trait Stream: Send {
    /// `Read::read` / `AsyncReadExt::read`.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// `Write::write` / `AsyncWriteExt::write` (back-pressure: blocks while
    /// the send buffer is full).
    fn write(&mut self, data: &[u8]) -> io::Result<usize>;
    /// `Write::flush` / `AsyncWriteExt::flush`.
    fn flush(&mut self) -> io::Result<()>;
    /// Half-close: blocking `shutdown_write`, tokio `AsyncWriteExt::shutdown`.
    fn shutdown(&mut self) -> io::Result<()>;
    /// Close: half-close, then wait for the clean end discarding unread
    /// input. Blocking `close()`, tokio `close().await` (see the impl).
    fn close(&mut self) -> io::Result<()>;
    /// Abort with `code`.
    fn abort(&mut self, code: AbortCode);
    /// The session's connection id.
    fn conn_id(&self) -> Option<u64>;
    /// Write all of `send` while reading exactly `recv.len()` bytes, both
    /// at once (the write result, the read result).
    fn duplex(&mut self, send: &[u8], recv: &mut [u8]) -> (io::Result<()>, io::Result<()>);

    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.write(data)? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => data = &data[n..],
            }
        }
        Ok(())
    }

    fn read_exact(&mut self, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read(buf)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => buf = &mut buf[n..],
            }
        }
        Ok(())
    }

    /// Read until EOF; returns everything read.
    fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }
}

/// The client's end.
pub trait ClientSide: Stream {
    /// Counters, under the shared names.
    fn stats(&self) -> Stats;
    /// `Debug` of the driver's own stats value (to check its field names).
    fn stats_debug(&self) -> String;
    /// Bytes written, not yet acknowledged by the server.
    fn unacked(&self) -> usize;
}

/// The server's end.
pub trait ServerSide: Stream {
    /// The address of the client's transport.
    fn peer_addr(&self) -> Option<SocketAddr>;
}

/// A server listening on TCP.
pub trait Listener: Send + Sync {
    type Stream: ServerSide + 'static;
    fn local_addr(&self) -> SocketAddr;
    /// The next new session.
    fn accept(&self) -> io::Result<Self::Stream>;
    /// `ServerStats::{epoch, rekeys}`: the highest key epoch a session
    /// reached, rekeys completed by all sessions.
    fn rekeys(&self) -> (u32, u64);
}

/// One driver of relink.
pub trait Driver: Clone + Send + Sync + 'static {
    /// Its module name (`blocking`, `tokio`).
    const NAME: &'static str;
    type Listener: Listener + 'static;
    type Client: ClientSide + 'static;
    fn new() -> Self;
    /// A server on 127.0.0.1:0.
    fn listen(&self, config: Config) -> Self::Listener;
    /// Connect a client (returns once the handshake completed).
    fn connect<A: ServerAddr + Send + 'static>(
        &self,
        addr: A,
        opts: ClientOpts,
    ) -> io::Result<Self::Client>;
    /// The driver's client stats type (one type for both drivers is a goal).
    fn client_stats_type(&self) -> TypeId;
}

// ---------------------------------------------------------------------------
// blocking

/// `relink::blocking`.
#[derive(Clone, Copy, Debug)]
pub struct Blocking;

pub struct BlockingClient(relink::blocking::ClientStream);
pub struct BlockingServer(relink::blocking::ServerStream);
pub struct BlockingListener(relink::blocking::Listener);

/// `duplex` over a stream whose `&S` is `Read + Write`: the write in a
/// scoped thread, the read here.
fn duplex_shared<S>(s: &S, send: &[u8], recv: &mut [u8]) -> (io::Result<()>, io::Result<()>)
where
    S: Sync,
    for<'a> &'a S: Read + Write,
{
    thread::scope(|scope| {
        let w = scope.spawn(|| {
            let mut s = s;
            s.write_all(send)
        });
        let mut r = s;
        let read = r.read_exact(recv);
        let write = w
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("writer thread panicked")));
        (write, read)
    })
}

macro_rules! blocking_stream {
    ($t:ty) => {
        impl Stream for $t {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0.read(buf)
            }
            fn write(&mut self, data: &[u8]) -> io::Result<usize> {
                self.0.write(data)
            }
            fn flush(&mut self) -> io::Result<()> {
                self.0.flush()
            }
            fn shutdown(&mut self) -> io::Result<()> {
                self.0.shutdown_write()
            }
            fn close(&mut self) -> io::Result<()> {
                self.0.close()
            }
            fn abort(&mut self, code: AbortCode) {
                self.0.abort(code)
            }
            fn conn_id(&self) -> Option<u64> {
                self.0.conn_id()
            }
            fn duplex(&mut self, send: &[u8], recv: &mut [u8]) -> (io::Result<()>, io::Result<()>) {
                duplex_shared(&self.0, send, recv)
            }
        }
    };
}

blocking_stream!(BlockingClient);
blocking_stream!(BlockingServer);

impl ClientSide for BlockingClient {
    fn stats(&self) -> Stats {
        let s = self.0.stats();
        Stats {
            transports: s.transports,
            resumes: s.resumes,
            resent_bytes: s.resent_bytes,
            connect_failures: s.connect_failures,
            epoch: s.epoch,
            rekeys: s.rekeys,
        }
    }
    fn stats_debug(&self) -> String {
        format!("{:?}", self.0.stats())
    }
    fn unacked(&self) -> usize {
        self.0.unacked()
    }
}

impl ServerSide for BlockingServer {
    fn peer_addr(&self) -> Option<SocketAddr> {
        self.0.peer_addr()
    }
}

impl Listener for BlockingListener {
    type Stream = BlockingServer;
    fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }
    fn accept(&self) -> io::Result<BlockingServer> {
        self.0.accept().map(BlockingServer)
    }
    fn rekeys(&self) -> (u32, u64) {
        let s = self.0.stats();
        (s.epoch, s.rekeys)
    }
}

impl Driver for Blocking {
    const NAME: &'static str = "blocking";
    type Listener = BlockingListener;
    type Client = BlockingClient;

    fn new() -> Self {
        Blocking
    }

    fn listen(&self, config: Config) -> BlockingListener {
        BlockingListener(relink::blocking::Listener::bind("127.0.0.1:0", config).expect("bind"))
    }

    fn connect<A: ServerAddr + Send + 'static>(
        &self,
        addr: A,
        opts: ClientOpts,
    ) -> io::Result<BlockingClient> {
        let mut b = relink::blocking::ClientBuilder::new(opts.config)
            .backoff(opts.backoff)
            .wait_for_server(opts.wait_for_server);
        if let Some(t) = opts.connect_timeout {
            b = b.connect_timeout(t);
        }
        if let Some(f) = opts.on_progress {
            b = b.on_progress(move |p| f(p));
        }
        b.connect(addr).map(BlockingClient)
    }

    fn client_stats_type(&self) -> TypeId {
        TypeId::of::<relink::blocking::ClientStats>()
    }
}

// ---------------------------------------------------------------------------
// tokio

/// `relink::tokio`, run on a 2-worker multi-thread runtime of its own (one
/// per test); every call `block_on`s.
#[derive(Clone)]
pub struct Tokio {
    rt: Arc<::tokio::runtime::Runtime>,
}

/// A value of the tokio driver, dropped inside its runtime (the drivers'
/// `Drop` may spawn or wake tasks).
struct InRt<T> {
    rt: Arc<::tokio::runtime::Runtime>,
    v: Option<T>,
}

impl<T> InRt<T> {
    fn new(rt: &Arc<::tokio::runtime::Runtime>, v: T) -> Self {
        InRt {
            rt: rt.clone(),
            v: Some(v),
        }
    }
    fn get(&self) -> &T {
        self.v.as_ref().expect("present until dropped")
    }
    fn get_mut(&mut self) -> &mut T {
        self.v.as_mut().expect("present until dropped")
    }
}

impl<T> Drop for InRt<T> {
    fn drop(&mut self) {
        let _g = self.rt.enter();
        drop(self.v.take());
    }
}

pub struct TokioClient(InRt<relink::tokio::ClientStream>);
pub struct TokioServer(InRt<relink::tokio::ServerStream>);
pub struct TokioListener(InRt<relink::tokio::Listener>);

macro_rules! tokio_stream {
    ($t:ty) => {
        impl Stream for $t {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                use ::tokio::io::AsyncReadExt;
                let InRt { rt, v } = &mut self.0;
                rt.block_on(v.as_mut().expect("stream").read(buf))
            }
            fn write(&mut self, data: &[u8]) -> io::Result<usize> {
                use ::tokio::io::AsyncWriteExt;
                let InRt { rt, v } = &mut self.0;
                rt.block_on(v.as_mut().expect("stream").write(data))
            }
            fn flush(&mut self) -> io::Result<()> {
                use ::tokio::io::AsyncWriteExt;
                let InRt { rt, v } = &mut self.0;
                rt.block_on(v.as_mut().expect("stream").flush())
            }
            fn shutdown(&mut self) -> io::Result<()> {
                use ::tokio::io::AsyncWriteExt;
                let InRt { rt, v } = &mut self.0;
                rt.block_on(v.as_mut().expect("stream").shutdown())
            }
            fn close(&mut self) -> io::Result<()> {
                // Half-close, wait for the clean end, discard unread input.
                let InRt { rt, v } = &mut self.0;
                rt.block_on(v.as_mut().expect("stream").close())
            }
            fn abort(&mut self, code: AbortCode) {
                let _g = self.0.rt.enter();
                self.0.get().abort(code)
            }
            fn conn_id(&self) -> Option<u64> {
                self.0.get().conn_id()
            }
            fn duplex(&mut self, send: &[u8], recv: &mut [u8]) -> (io::Result<()>, io::Result<()>) {
                use ::tokio::io::{AsyncReadExt, AsyncWriteExt};
                let InRt { rt, v } = &mut self.0;
                let s = v.as_mut().expect("stream");
                rt.block_on(async move {
                    let (mut r, mut w) = ::tokio::io::split(s);
                    let (write, read) = ::tokio::join!(w.write_all(send), r.read_exact(recv));
                    (write, read.map(|_| ()))
                })
            }
        }
    };
}

tokio_stream!(TokioClient);
tokio_stream!(TokioServer);

impl ClientSide for TokioClient {
    fn stats(&self) -> Stats {
        let s = self.0.get().stats();
        Stats {
            transports: s.transports,
            resumes: s.resumes,
            resent_bytes: s.resent_bytes,
            connect_failures: s.connect_failures,
            epoch: s.epoch,
            rekeys: s.rekeys,
        }
    }
    fn stats_debug(&self) -> String {
        format!("{:?}", self.0.get().stats())
    }
    fn unacked(&self) -> usize {
        self.0.get().unacked()
    }
}

impl ServerSide for TokioServer {
    fn peer_addr(&self) -> Option<SocketAddr> {
        self.0.get().peer_addr()
    }
}

impl Listener for TokioListener {
    type Stream = TokioServer;
    fn local_addr(&self) -> SocketAddr {
        self.0.get().local_addr().expect("bound to TCP")
    }
    fn accept(&self) -> io::Result<TokioServer> {
        let s = self.0.rt.block_on(self.0.get().accept())?;
        Ok(TokioServer(InRt::new(&self.0.rt, s)))
    }
    fn rekeys(&self) -> (u32, u64) {
        let s = self.0.get().stats();
        (s.epoch, s.rekeys)
    }
}

impl Driver for Tokio {
    const NAME: &'static str = "tokio";
    type Listener = TokioListener;
    type Client = TokioClient;

    fn new() -> Self {
        let rt = ::tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        Tokio { rt: Arc::new(rt) }
    }

    fn listen(&self, config: Config) -> TokioListener {
        let server = self
            .rt
            .block_on(relink::tokio::Listener::bind("127.0.0.1:0", config))
            .expect("bind");
        TokioListener(InRt::new(&self.rt, server))
    }

    fn connect<A: ServerAddr + Send + 'static>(
        &self,
        addr: A,
        opts: ClientOpts,
    ) -> io::Result<TokioClient> {
        let mut b = relink::tokio::ClientBuilder::new(opts.config)
            .backoff(opts.backoff)
            .wait_for_server(opts.wait_for_server);
        if let Some(t) = opts.connect_timeout {
            b = b.connect_timeout(t);
        }
        if let Some(f) = opts.on_progress {
            b = b.on_progress(move |p| f(p));
        }
        let c = self.rt.block_on(b.connect(addr))?;
        Ok(TokioClient(InRt::new(&self.rt, c)))
    }

    fn client_stats_type(&self) -> TypeId {
        TypeId::of::<relink::tokio::ClientStats>()
    }
}

// ---------------------------------------------------------------------------
// test tools

/// Run `body` for driver `D` in a thread of its own, failing the test when
/// it does not finish within `limit`, naming the step it was at (see
/// [`Steps::step`]). A panic of the body fails the test with its message.
pub fn run<D: Driver>(test: &str, limit: StdDuration, body: fn(&D, &Steps)) {
    let steps = Steps::default();
    let what = format!("{}::{test}", D::NAME);
    let s = steps.clone();
    let started = std::time::Instant::now();
    let job = bg(&what, move || {
        let d = D::new();
        body(&d, &s);
        // The driver (and its runtime) is dropped in this thread, outside
        // any runtime.
        drop(d);
    });
    match job.rx.recv_timeout(limit) {
        Ok(()) => eprintln!("{what}: passed in {:?}", started.elapsed()),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!(
            "{what}: still running after {limit:?}; hung at: {}",
            steps.current()
        ),
        Err(mpsc::RecvTimeoutError::Disconnected) => job.propagate_panic(),
    }
}

/// The step a test body is at, for the watchdog's message.
#[derive(Clone, Default)]
pub struct Steps(Arc<Mutex<String>>);

impl Steps {
    /// Record that the body now does `what`.
    pub fn step(&self, what: impl Into<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = what.into();
    }
    fn current(&self) -> String {
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if s.is_empty() {
            "(no step recorded)".into()
        } else {
            s
        }
    }
}

/// A background job (a thread) whose result is awaited with a bound.
pub struct Bg<T> {
    what: String,
    rx: mpsc::Receiver<T>,
    handle: Option<thread::JoinHandle<()>>,
}

/// Start `f` in a thread; `what` names it in failures.
pub fn bg<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> Bg<T> {
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name(what.chars().take(60).collect())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn");
    Bg {
        what: what.to_string(),
        rx,
        handle: Some(handle),
    }
}

impl<T> Bg<T> {
    /// Its result, failing the test when it takes longer than `limit`
    /// ("`what` still running: it hangs") or panicked.
    pub fn wait(mut self, limit: StdDuration) -> T {
        match self.rx.recv_timeout(limit) {
            Ok(v) => {
                if let Some(h) = self.handle.take() {
                    let _ = h.join();
                }
                v
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{}: still running after {limit:?}", self.what)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => self.propagate_panic(),
        }
    }

    /// Its result if it finished within `limit`, else the job back.
    pub fn try_wait(self, limit: StdDuration) -> Result<T, Bg<T>> {
        match self.rx.recv_timeout(limit) {
            Ok(v) => Ok(v),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(self),
            Err(mpsc::RecvTimeoutError::Disconnected) => self.propagate_panic(),
        }
    }

    fn propagate_panic(mut self) -> ! {
        let msg = match self.handle.take().map(|h| h.join()) {
            Some(Err(p)) => p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(non-string panic)".into()),
            _ => "(ended without a result)".into(),
        };
        panic!("{}: {msg}", self.what)
    }
}

/// Deterministic stream content: `len` bytes of stream `salt` (a byte's
/// value depends on its offset, so a duplicated, lost or reordered chunk
/// shows).
pub fn pattern(salt: u8, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((salt as u64) << 56);
            (x >> 29) as u8 ^ (x >> 47) as u8
        })
        .collect()
}

/// Assert `got` is exactly `want`, naming the first differing offset
/// (without printing megabytes).
#[track_caller]
pub fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: {} bytes received, {} expected; first difference at offset {at}",
        got.len(),
        want.len()
    );
}

/// The [`SessionError`] inside `e`, failing the test when there is none.
#[track_caller]
pub fn session_error(e: &io::Error) -> SessionError {
    e.get_ref()
        .and_then(|e| e.downcast_ref::<SessionError>())
        .cloned()
        .unwrap_or_else(|| panic!("no SessionError inside {e:?} ({e})"))
}

/// Short timers: a test that waits for one does so briefly.
pub fn fast_config() -> Config {
    Config {
        handshake_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(3),
        keepalive_interval: Duration::from_millis(500),
        resume_timeout: Duration::from_secs(30),
        ..Config::default()
    }
}

/// Reconnect 10..100 ms apart, without a bound of attempts.
pub fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(100),
        max_attempts: None,
    }
}

/// A relay plan cutting every connection after `lo..=hi` ms.
pub fn cut_every_ms(lo: u64, hi: u64) -> FaultPlan {
    FaultPlan {
        cut_after_ms: Some((lo, hi)),
        ..FaultPlan::default()
    }
}

/// A relay plan cutting every connection after `lo..=hi` forwarded bytes.
pub fn cut_every_bytes(lo: u64, hi: u64) -> FaultPlan {
    FaultPlan {
        cut_after_bytes: Some((lo, hi)),
        ..FaultPlan::default()
    }
}

/// A port where nothing listens (bound, then closed).
pub fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local addr")
}

/// Instantiate each test body once per driver: `blocking::NAME` and
/// `tokio::NAME`, each bounded by `$limit` seconds.
macro_rules! driver_tests {
    (limit = $limit:expr; $($name:ident),* $(,)?) => {
        mod blocking {
            $(
                #[test]
                fn $name() {
                    crate::adapter::run::<crate::adapter::Blocking>(
                        stringify!($name),
                        ::std::time::Duration::from_secs($limit),
                        super::$name,
                    );
                }
            )*
        }
        mod tokio {
            $(
                #[test]
                fn $name() {
                    crate::adapter::run::<crate::adapter::Tokio>(
                        stringify!($name),
                        ::std::time::Duration::from_secs($limit),
                        super::$name,
                    );
                }
            )*
        }
    };
}
