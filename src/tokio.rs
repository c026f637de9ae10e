//! Async driver over tokio (`tokio` feature): reconnecting, resuming
//! [`ClientStream`]s and a [`Listener`] that yields [`ServerStream`]s, both
//! implementing [`AsyncRead`] + [`AsyncWrite`].
//!
//! All protocol logic stays in the sans-IO core ([`crate::Client`] on the
//! client; [`crate::Endpoint`] and [`crate::Connection`] on the server); this
//! module only moves bytes, sleeps until the core's `poll_timeout` and opens
//! new transports.
//!
//! # Client
//! [`ClientStream::connect`] opens TCP connections to an address;
//! [`ClientStream::connect_with`] takes any async function returning an
//! `AsyncRead + AsyncWrite` transport (TLS, a Unix socket, an in-memory
//! pipe). A background task owns the transport: when it breaks, stalls
//! (idle timeout) or delivers bytes that fail authentication, the task opens
//! a new one following a [`Backoff`] policy (immediate first retry,
//! capped exponential delays with jitter) and the core resumes the session.
//! It keeps trying until the core closes the session (the server's
//! advertised resume timeout passed without contact); then the stream fails
//! with an [`io::Error`] saying why. Every attempt resolves the server's
//! name again and is bounded by [`ClientBuilder::connect_timeout`]. Before a
//! session exists the first connection fails at once with a
//! [`SessionError::Connect`] naming the address (refused, no answer, not a
//! relink server, pinned key not proven); with
//! [`ClientBuilder::wait_for_server`] it retries instead, up to
//! `Backoff::max_attempts` failures in a row. [`ClientBuilder`] holds these
//! options.
//!
//! # Server
//! [`Listener::bind`] listens on TCP; [`Listener::serve_transport`] adds a
//! transport accepted any other way. [`Listener::accept`] yields each new
//! session once. The structure follows quinn's: the endpoint lock covers
//! only accept, handshakes and routing; every session has its own lock and
//! its own timer, so sessions progress in parallel on a multi-thread
//! runtime.
//! - **Endpoint state**, behind one mutex: the core [`crate::Endpoint`]
//!   (accept, handshakes, routing of resume requests, its deadline index),
//!   the wakers of the transports it still holds, the map of sessions and
//!   the accept queue.
//! - **Session state**, one per session behind its own mutex: the session's
//!   [`crate::Connection`] (all frame encryption and decryption happens in
//!   it) and its slot data: the stream's wakers, the wakers of the
//!   transport tasks attached to it, the close reason, abort and drop flags.
//! - **Tasks**: one per transport. While the endpoint holds the transport
//!   (first message, handshake) the task locks the endpoint for each core
//!   call; once the endpoint hands the transport over (a new session, or a
//!   resume routed to a session) it locks only that session. Socket reads
//!   and writes run with no lock held: a step under the lock feeds the
//!   buffered input and fetches the next output, then the task does its
//!   I/O. One timer task per session runs its timers (ACK delay, keepalive,
//!   idle timeout while attached; expiry while detached; the wait for the
//!   answer to an ABORT), with or without a transport, and ends when the
//!   session is drained. One endpoint timer task runs the handshake
//!   deadlines and locks only the endpoint.
//! - [`ServerStats`] are counted with atomics, outside any lock.
//!
//! **Lock rule**: the endpoint lock and a session lock are never held at
//! the same time, and no lock is held across socket I/O. Work on a session
//! collects what the endpoint must learn (the connection's
//! [`crate::EndpointEvent`]s, that the session was drained and leaves the
//! map) under the session lock; it is applied under the endpoint lock once
//! the session lock was released. A resume routed by the endpoint is passed
//! to its session after the endpoint lock was released.
//!
//! # Semantics
//! `write`, `flush`, `shutdown`, `close`, `abort`, drop and errors behave
//! as in the blocking driver, written once in [`crate::driver`]: `flush`
//! completes once the peer acknowledged every byte written, `poll_shutdown`
//! half-closes and completes once the peer acknowledged the CLOSE (like
//! tokio's `TcpStream`, it does not wait for the peer to close; keep
//! reading until EOF), and `close().await` waits for the clean end,
//! discarding unread input. Reads and writes are cancellation safe:
//! dropping a pending `read`/`write` future loses nothing. Dropping the
//! [`Listener`] ends all its transports and sessions.
//!
//! Every function that spawns tasks must be called within a tokio runtime.
//!
//! # Example
//! ```
//! use relink::tokio::{ClientStream, Listener};
//! use relink::Config;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let server = Listener::bind("127.0.0.1:0", Config::default()).await?;
//! let addr = server.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok(mut stream) = server.accept().await {
//!         tokio::spawn(async move {
//!             let mut data = Vec::new();
//!             stream.read_to_end(&mut data).await?; // until the client closes
//!             stream.write_all(&data).await?;
//!             stream.close().await // done once both sides closed
//!         });
//!     }
//! });
//! // Reconnects and resumes by itself whenever the TCP connection breaks.
//! let mut client = ClientStream::connect(addr, Config::default()).await?;
//! client.write_all(b"hello over relink").await?;
//! client.shutdown().await?;
//! let mut echo = Vec::new();
//! client.read_to_end(&mut echo).await?;
//! assert_eq!(echo, b"hello over relink");
//! # Ok(()) }
//! ```

use core::future::{poll_fn, Future};
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::boxed::Box;
use std::collections::{HashMap, VecDeque};
use std::format;
use std::io;
use std::net::SocketAddr;
use std::string::{String, ToString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use ::tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use ::tokio::task::JoinHandle;
use ::tokio::time::{Instant as TokioInstant, Sleep};

use crate::driver::{
    self, add, AuthFn, ClientCore, DriverClock, ProgressFn, Reconnect, ServerCounters, SessionSlot,
};
pub use crate::driver::{
    close_reason_text, ClientStats, Decision, Progress, Resolve, ServerAddr, ServerStats,
    SessionError,
};
use crate::wire::RESUME_REQUEST_LEN;
use crate::{
    AbortCode, Backoff, ByteRange, CloseReason, Config, Connection, Dispatch, Endpoint,
    EndpointEvent, Instant, OsRng, Rejection, ServerEvent, SessionId, TransportId,
};

/// Bytes read from or written to a transport per system call at most.
const IO_BUF: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// shared helpers

/// The core's clock (suspend-aware, see [`DriverClock`]) and the way to
/// tokio's timer, which runs on another clock: a core deadline becomes a
/// tokio instant relative to the current reading of both.
#[derive(Clone, Copy, Debug)]
struct Clock {
    core: DriverClock,
}

impl Clock {
    fn new() -> Self {
        Clock {
            core: DriverClock::new(),
        }
    }
    fn now(&self) -> Instant {
        self.core.now()
    }
    fn to_tokio(self, t: Instant) -> TokioInstant {
        TokioInstant::now() + self.core.until(t)
    }
}

fn wake(slot: &mut Option<Waker>) {
    if let Some(w) = slot.take() {
        w.wake();
    }
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The longest a driver waits before looking at timers again when the core
/// reports work it cannot do yet (the transport does not accept writes).
fn fallback_tick(c: &Config) -> std::time::Duration {
    let d = (c.idle_timeout.as_micros() / 8)
        .min(c.keepalive_interval.as_micros())
        .max(1_000);
    std::time::Duration::from_micros(d)
}

std::thread_local! {
    /// Per worker thread: where transports read into and where the core
    /// writes frames, before the bytes are consumed or written (see
    /// [`TransportIo`]).
    static SCRATCH_IN: core::cell::Cell<Option<Box<[u8]>>> = const { core::cell::Cell::new(None) };
    static SCRATCH_OUT: core::cell::Cell<Option<Box<[u8]>>> = const { core::cell::Cell::new(None) };
}

/// Run `f` with this thread's scratch buffer from `slot` (allocated once
/// per thread, `IO_BUF` bytes).
fn with_scratch<R>(
    slot: &'static std::thread::LocalKey<core::cell::Cell<Option<Box<[u8]>>>>,
    f: impl FnOnce(&mut [u8]) -> R,
) -> R {
    let mut buf = slot
        .with(|c| c.take())
        .unwrap_or_else(|| std::vec![0u8; IO_BUF].into_boxed_slice());
    let r = f(&mut buf);
    slot.with(|c| c.set(Some(buf)));
    r
}

/// One transport's byte buffers. Only ever touched by its own task.
///
/// Reads go into a per-thread scratch buffer and frames are written into
/// another; only what is left over (input the core did not take yet,
/// output the socket did not take yet) is copied into the transport's own
/// buffers, which are freed once empty. An idle transport holds no buffer
/// (memory per idle session, issue 12).
struct TransportIo<T> {
    t: T,
    /// Input not yet consumed: `inbuf[in_start..]`.
    inbuf: std::vec::Vec<u8>,
    in_start: usize,
    /// Output not yet written: `outbuf[out_start..]`.
    outbuf: std::vec::Vec<u8>,
    out_start: usize,
    /// The transport broke (I/O error, or writes refused): why.
    lost: Option<String>,
    /// The peer closed its sending side (read EOF); writing may still work,
    /// and an answer already queued is written before the transport closes.
    eof: bool,
    /// The core ended the transport.
    core_ended: bool,
    write_blocked: bool,
    needs_flush: bool,
    /// Bytes were written to it (for the endpoint: our ServerHello).
    wrote_any: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> TransportIo<T> {
    fn new(t: T) -> Self {
        TransportIo {
            t,
            inbuf: std::vec::Vec::new(),
            in_start: 0,
            outbuf: std::vec::Vec::new(),
            out_start: 0,
            lost: None,
            eof: false,
            core_ended: false,
            write_blocked: false,
            needs_flush: false,
            wrote_any: false,
        }
    }

    fn input(&self) -> &[u8] {
        &self.inbuf[self.in_start..]
    }

    fn input_pending(&self) -> bool {
        self.in_start < self.inbuf.len()
    }

    fn consume(&mut self, n: usize) {
        self.in_start += n;
        if self.in_start >= self.inbuf.len() {
            self.inbuf = std::vec::Vec::new();
            self.in_start = 0;
        }
    }

    fn output_pending(&self) -> bool {
        self.out_start < self.outbuf.len()
    }

    /// Keep `rest` as the output still to write.
    fn hold_output(&mut self, rest: &[u8]) {
        self.outbuf.clear();
        self.outbuf.extend_from_slice(rest);
        self.out_start = 0;
    }

    /// `n` more output bytes were written; free the buffer once empty.
    fn wrote(&mut self, n: usize) {
        self.out_start += n;
        if self.out_start >= self.outbuf.len() {
            self.outbuf = std::vec::Vec::new();
            self.out_start = 0;
        }
    }

    /// Read from the transport when all earlier input was consumed.
    /// Returns whether something happened.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> bool {
        if self.input_pending() || self.lost.is_some() || self.eof || self.core_ended {
            return false;
        }
        let t = &mut self.t;
        let (r, inbuf) = with_scratch(&SCRATCH_IN, |buf| {
            let mut rb = ReadBuf::new(buf);
            match Pin::new(t).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let data = rb.filled();
                    (Poll::Ready(Ok(data.len())), data.to_vec())
                }
                Poll::Ready(Err(e)) => (Poll::Ready(Err(e)), std::vec::Vec::new()),
                Poll::Pending => (Poll::Pending, std::vec::Vec::new()),
            }
        });
        self.inbuf = inbuf;
        self.in_start = 0;
        match r {
            Poll::Ready(Ok(n)) => {
                if n == 0 {
                    self.eof = true;
                }
                true
            }
            Poll::Ready(Err(e)) => {
                self.lost = Some(e.to_string());
                true
            }
            Poll::Pending => false,
        }
    }

    /// Write `data` to the transport as far as it takes it now. Returns
    /// how many bytes were written (0 when blocked or lost).
    fn write_now(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let mut n = 0;
        while n < data.len() && self.lost.is_none() {
            match Pin::new(&mut self.t).poll_write(cx, &data[n..]) {
                Poll::Ready(Ok(0)) => self.lost = Some("transport accepts no more bytes".into()),
                Poll::Ready(Ok(k)) => {
                    n += k;
                    self.needs_flush = true;
                    self.wrote_any = true;
                }
                Poll::Ready(Err(e)) => self.lost = Some(e.to_string()),
                Poll::Pending => {
                    self.write_blocked = true;
                    break;
                }
            }
        }
        n
    }

    /// Write pending output, asking `fill` for more whenever the buffer is
    /// empty. Returns whether something was written.
    fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        mut fill: impl FnMut(&mut [u8]) -> usize,
    ) -> bool {
        let mut progress = false;
        self.write_blocked = false;
        while self.lost.is_none() && !self.write_blocked {
            if self.output_pending() {
                let held = core::mem::take(&mut self.outbuf);
                let n = self.write_now(cx, &held[self.out_start..]);
                self.outbuf = held;
                self.wrote(n);
                progress |= n > 0;
                continue;
            }
            // Frames go into the scratch buffer and straight to the socket;
            // only what it does not take is kept.
            let wrote = with_scratch(&SCRATCH_OUT, |buf| {
                let n = fill(buf);
                if n == 0 {
                    return None;
                }
                let k = self.write_now(cx, &buf[..n]);
                if k < n {
                    self.hold_output(&buf[k..n]);
                }
                Some(k)
            });
            match wrote {
                None => break,
                Some(k) => progress |= k > 0,
            }
        }
        if self.needs_flush && !self.output_pending() && self.lost.is_none() {
            match Pin::new(&mut self.t).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(e)) => self.lost = Some(e.to_string()),
                Poll::Pending => {}
            }
        }
        progress
    }

    /// Refill the (empty) output buffer with what `fill` writes into it.
    /// Returns how many bytes it wrote.
    fn fill_output(&mut self, fill: impl FnOnce(&mut [u8]) -> usize) -> usize {
        if self.output_pending() {
            return 0;
        }
        with_scratch(&SCRATCH_OUT, |buf| {
            let n = fill(buf);
            self.hold_output(&buf[..n]);
            if n == 0 {
                self.outbuf = std::vec::Vec::new();
            }
            n
        })
    }

    /// Best effort: signal the end of the transport to the peer.
    fn poll_close(&mut self, cx: &mut Context<'_>) {
        let _ = Pin::new(&mut self.t).poll_shutdown(cx);
    }
}

/// Arm `sleep` for `deadline` (or `now + tick` when the deadline already
/// passed: the core wants to transmit but the transport is full) and poll
/// it. Returns true when it already fired.
fn poll_timer(
    sleep: &mut Pin<Box<Sleep>>,
    cx: &mut Context<'_>,
    clock: Clock,
    now: Instant,
    deadline: Option<Instant>,
    tick: std::time::Duration,
) -> bool {
    let Some(d) = deadline else {
        return false;
    };
    let target = if d <= now {
        TokioInstant::now() + tick
    } else {
        clock.to_tokio(d)
    };
    // The target moves by the microseconds between two clock readings:
    // re-arm only when it really changed.
    let current = sleep.deadline();
    let drift = target
        .checked_duration_since(current)
        .or_else(|| current.checked_duration_since(target))
        .unwrap_or_default();
    if drift > std::time::Duration::from_micros(500) || sleep.is_elapsed() {
        sleep.as_mut().reset(target);
    }
    sleep.as_mut().poll(cx).is_ready()
}

// ---------------------------------------------------------------------------
// client

/// The client session (shared driver core) and the wakers of the stream
/// and the driver task.
struct ClientShared {
    c: ClientCore,
    clock: Clock,
    send_cap: usize,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    /// `flush`, `shutdown` and `close` wait here.
    close_waker: Option<Waker>,
    ready_waker: Option<Waker>,
    driver_waker: Option<Waker>,
    /// The driver holds input the core could not take (receive buffer full).
    input_blocked: bool,
    /// The driver task ended.
    done: bool,
}

impl ClientShared {
    fn process_events(&mut self) {
        let ch = self.c.drain(self.clock.now());
        if ch.handshake {
            wake(&mut self.ready_waker);
        }
        if ch.peer_closed {
            wake(&mut self.read_waker);
        }
        if ch.closed {
            self.wake_app();
        }
        let core = &self.c.core;
        if self.write_waker.is_some() && core.unacked() < self.send_cap {
            wake(&mut self.write_waker);
        }
        if self.read_waker.is_some() && core.readable() > 0 {
            wake(&mut self.read_waker);
        }
        if self.close_waker.is_some() && (core.unacked() == 0 || core.close_acked()) {
            wake(&mut self.close_waker);
        }
    }

    fn wake_app(&mut self) {
        wake(&mut self.read_waker);
        wake(&mut self.write_waker);
        wake(&mut self.close_waker);
        wake(&mut self.ready_waker);
    }
}

/// A client's end of a relink session over tokio. Reconnects and resumes by
/// itself; the semantics are those of [`crate::driver`].
pub struct ClientStream {
    shared: Arc<Mutex<ClientShared>>,
    task: JoinHandle<()>,
}

impl core::fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let st = lock(&self.shared);
        f.debug_struct("ClientStream")
            .field("conn_id", &st.c.core.conn_id())
            .field("connected", &st.c.core.is_connected())
            .field("stats", &st.c.stats)
            .finish()
    }
}

/// What ended one transport of the client driver.
enum TransportEnd {
    /// Try another transport.
    Lost(String),
    /// The session is over; the driver stops.
    SessionOver,
}

/// Options of a [`ClientStream`], like the blocking driver's
/// [`crate::blocking::ClientBuilder`].
///
/// # Before a session exists
/// By default the first connection fails **at once**, with an
/// [`io::Error`] whose inner error is [`SessionError::Connect`] and whose
/// message names the address, when the server refuses it
/// ([`io::ErrorKind::ConnectionRefused`]) or the connect does not complete
/// within the connect timeout ([`io::ErrorKind::TimedOut`]); when the peer
/// is not a relink server (it answers the handshake with something else,
/// [`io::ErrorKind::InvalidData`]; it does not answer within
/// `Config::handshake_timeout`, [`io::ErrorKind::TimedOut`]);
/// and, whatever the options, when the answer does not prove the pinned
/// server key ([`io::ErrorKind::PermissionDenied`], cause
/// [`crate::Error::ServerKeyMismatch`], the message names the key's first 8 hex
/// digits). With [`ClientBuilder::wait_for_server`] the driver keeps trying
/// instead, following the [`Backoff`]. A peer that closes the connection
/// without a whole answer fails at once with
/// [`io::ErrorKind::ConnectionRefused`] naming the address, unless waiting
/// for the server. A server that answers Busy is always retried; when the
/// backoff gives up, [`SessionError::GaveUp`] names the address. Once a
/// session exists every failure costs one transport only.
#[derive(Clone)]
pub struct ClientBuilder {
    config: Config,
    backoff: Backoff,
    wait_for_server: bool,
    connect_timeout: Option<std::time::Duration>,
    progress: Option<ProgressFn>,
}

driver::client_builder_common!();

impl ClientBuilder {
    /// The longest one connect attempt may take: per address for
    /// [`ClientBuilder::connect`], the whole future of the function for
    /// [`ClientBuilder::connect_with`]. Default: `Config::handshake_timeout`
    /// (10 s), at least 100 ms.
    pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    fn timeout(&self) -> std::time::Duration {
        self.connect_timeout
            .unwrap_or_else(|| driver::default_connect_timeout(&self.config))
    }

    /// Connect over TCP to `addr` and return once the handshake completed.
    /// `addr` is resolved again before every attempt (the first and each
    /// reconnect); the addresses are tried in order, each bounded by the
    /// connect timeout.
    pub async fn connect<A: ServerAddr>(self, addr: A) -> io::Result<ClientStream> {
        let resolver = addr.into_resolver();
        let timeout = self.timeout();
        let connect = move || {
            let resolver = resolver.clone();
            async move {
                let addrs = ::tokio::task::spawn_blocking(move || driver::resolve_now(&resolver))
                    .await
                    .map_err(io::Error::other)??;
                let mut last = None;
                for a in addrs {
                    let r = match ::tokio::time::timeout(timeout, TcpStream::connect(a)).await {
                        Ok(r) => r,
                        Err(_) => Err(io::Error::from(io::ErrorKind::TimedOut)),
                    };
                    match r {
                        Ok(s) => {
                            s.set_nodelay(true)?;
                            return Ok((s, Some(a)));
                        }
                        Err(e) => last = Some(driver::connect_error(a, &e, timeout)),
                    }
                }
                Err(last.unwrap_or_else(|| io::Error::other("relink: no address to connect to")))
            }
        };
        self.start(None, connect).await
    }

    /// Connect over transports opened by `connect` (called again for every
    /// reconnect, each call bounded by the connect timeout); returns once
    /// the handshake completed, or the error that ended the first connect.
    pub async fn connect_with<F, Fut, T>(self, mut connect: F) -> io::Result<ClientStream>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<T>> + Send + 'static,
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let timeout = self.timeout();
        self.start(Some(timeout), move || {
            let f = connect();
            async move { f.await.map(|t| (t, None)) }
        })
        .await
    }

    async fn start<F, Fut, T>(
        self,
        outer_timeout: Option<std::time::Duration>,
        connect: F,
    ) -> io::Result<ClientStream>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<(T, Option<SocketAddr>)>> + Send + 'static,
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        crate::driver::check_credential(&self.config)?;
        let config = self.config.clone();
        let shared = Arc::new(Mutex::new(ClientShared {
            c: ClientCore::new(config.clone(), self.progress),
            clock: Clock::new(),
            send_cap: config.send_buffer.max(1),
            read_waker: None,
            write_waker: None,
            close_waker: None,
            ready_waker: None,
            driver_waker: None,
            input_blocked: false,
            done: false,
        }));
        let tick = fallback_tick(&config);
        let policy = Reconnect::new(self.backoff, self.wait_for_server, config);
        // The driver task logs inside the caller's span (e.g. a tunnel's),
        // so its lines carry the caller's fields too.
        let task = ::tokio::spawn(tracing::Instrument::in_current_span(drive_client(
            shared.clone(),
            policy,
            tick,
            outer_timeout,
            connect,
        )));
        let stream = ClientStream { shared, task };
        poll_fn(|cx| {
            let mut st = lock(&stream.shared);
            if st.c.ready() {
                return Poll::Ready(Ok(()));
            }
            if let Some(f) = &st.c.failure {
                return Poll::Ready(Err(f.to_io()));
            }
            register(&mut st.ready_waker, cx);
            Poll::Pending
        })
        .await?;
        Ok(stream)
    }
}

impl ClientStream {
    /// Connect over TCP to `addr` (resolved again before every attempt)
    /// with the default options of [`ClientBuilder`]; returns once the
    /// handshake completed.
    pub async fn connect<A: ServerAddr>(addr: A, config: Config) -> io::Result<ClientStream> {
        ClientBuilder::new(config).connect(addr).await
    }

    /// Connect over transports opened by `connect` (called again for every
    /// reconnect), spacing failed attempts by `backoff`, with the other
    /// options of [`ClientBuilder`] at their defaults; returns once the
    /// handshake completed, or the error that ended the first connect.
    pub async fn connect_with<F, Fut, T>(
        config: Config,
        backoff: Backoff,
        connect: F,
    ) -> io::Result<ClientStream>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<T>> + Send + 'static,
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        ClientBuilder::new(config)
            .backoff(backoff)
            .connect_with(connect)
            .await
    }

    /// The driver's counters so far.
    pub fn stats(&self) -> ClientStats {
        lock(&self.shared).c.stats
    }

    /// A handle that reads this stream's counters and state from elsewhere
    /// (e.g. a progress task) while the stream itself is busy or split.
    pub fn monitor(&self) -> ClientMonitor {
        ClientMonitor {
            shared: self.shared.clone(),
        }
    }

    /// The session's connection id.
    pub fn conn_id(&self) -> Option<u64> {
        lock(&self.shared).c.core.conn_id()
    }

    /// Whether a transport is attached right now (false while reconnecting).
    pub fn is_connected(&self) -> bool {
        lock(&self.shared).c.core.is_connected()
    }

    /// Bytes written but not yet acknowledged by the server.
    pub fn unacked(&self) -> usize {
        lock(&self.shared).c.core.unacked()
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.shared).c.core.close_reason()
    }

    /// Abort the session (like a TCP reset): stop sending at once and tell
    /// the server with an authenticated ABORT carrying `code`; reads and
    /// writes fail from then on. The background task keeps reconnecting
    /// until the server acknowledged it or the session is given up, also
    /// after the stream is dropped.
    pub fn abort(&self, code: AbortCode) {
        abort_client(&self.shared, code);
    }

    /// A handle that can abort this session from another task while the
    /// stream is in use.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle(HandleInner::Client(self.shared.clone()))
    }

    /// Once the session ended other than cleanly: the written bytes whose
    /// delivery is unknown, `[acknowledged, written)`.
    pub fn in_doubt(&self) -> Option<ByteRange> {
        lock(&self.shared).c.core.in_doubt()
    }

    /// Close the session cleanly: half-close, then wait until the server
    /// closed its side too and both CLOSEs were acknowledged. Input not read
    /// yet is discarded. Errors when the session is lost instead.
    pub async fn close(&mut self) -> io::Result<()> {
        {
            let mut st = lock(&self.shared);
            st.c.start_shutdown().map_err(|e| e.to_io())?;
            wake(&mut st.driver_waker);
        }
        poll_fn(|cx| {
            let mut guard = lock(&self.shared);
            let st = &mut *guard;
            let stopped = st.done;
            let before = st.c.core.readable();
            let step = st.c.close(true, stopped);
            if before > 0 && st.input_blocked {
                wake(&mut st.driver_waker);
            }
            poll_step(cx, step, &mut st.close_waker)
        })
        .await
    }

    /// Time since authenticated input from the server last arrived (data,
    /// an acknowledgement, a keepalive, or the answer to a handshake or
    /// resume), by the process's monotonic clock; `None` before the first.
    /// For "last contact" displays.
    pub fn last_received(&self) -> Option<std::time::Duration> {
        lock(&self.shared).c.last_received()
    }

    /// The token the server granted when it accepted this client (servers
    /// that decide on clients, `ListenerBuilder::authenticate`), if any:
    /// present it in later sessions as [`crate::Credential::Token`].
    /// Opaque bytes; keep them as private as the credential.
    pub fn token(&self) -> Option<std::vec::Vec<u8>> {
        lock(&self.shared).c.token.clone()
    }
}

fn abort_client(shared: &Mutex<ClientShared>, code: AbortCode) {
    let mut st = lock(shared);
    let now = st.clock.now();
    st.c.abort(code, now);
    st.process_events();
    wake(&mut st.driver_waker);
    st.wake_app();
}

/// Read-only view of a [`ClientStream`]'s counters and state; see
/// [`ClientStream::monitor`]. It does not keep the session alive.
#[derive(Clone)]
pub struct ClientMonitor {
    shared: Arc<Mutex<ClientShared>>,
}

impl core::fmt::Debug for ClientMonitor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientMonitor")
            .field("stats", &self.stats())
            .finish()
    }
}

impl ClientMonitor {
    /// The driver's counters so far.
    pub fn stats(&self) -> ClientStats {
        lock(&self.shared).c.stats
    }

    /// Whether a transport is attached right now.
    pub fn is_connected(&self) -> bool {
        lock(&self.shared).c.core.is_connected()
    }

    /// See [`ClientStream::last_received`].
    pub fn last_received(&self) -> Option<std::time::Duration> {
        lock(&self.shared).c.last_received()
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        let mut st = lock(&self.shared);
        // Dropped while the session lives: the task runs on until the
        // server acknowledged the ABORT (or the clean end).
        let now = st.clock.now();
        if st.c.on_drop(now) {
            st.process_events();
            wake(&mut st.driver_waker);
            return;
        }
        drop(st);
        self.task.abort();
    }
}

/// The driver task is over: mark it and wake the stream.
fn finish(shared: &Mutex<ClientShared>) {
    let mut st = lock(shared);
    st.done = true;
    st.wake_app();
}

async fn drive_client<F, Fut, T>(
    shared: Arc<Mutex<ClientShared>>,
    mut policy: Reconnect,
    tick: std::time::Duration,
    outer_timeout: Option<std::time::Duration>,
    mut connect: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<(T, Option<SocketAddr>)>> + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let clock = lock(&shared).clock;
    let mut sleep = Box::pin(::tokio::time::sleep_until(TokioInstant::now()));
    loop {
        let delay = {
            let mut st = lock(&shared);
            match policy.next_delay(&mut st.c) {
                Ok(d) => d,
                Err(_) => {
                    drop(st);
                    return finish(&shared);
                }
            }
        };
        let wake_at = TokioInstant::now() + delay;
        loop {
            let until = {
                let mut st = lock(&shared);
                if st.c.tick(clock.now()) {
                    drop(st);
                    return finish(&shared);
                }
                if TokioInstant::now() >= wake_at {
                    st.c.report(Progress::Connecting {
                        attempt: policy.attempt,
                        delay,
                    });
                    break;
                }
                // (at least 1 ms: a deadline the core did not move must not
                // make this loop spin)
                let floor = TokioInstant::now() + std::time::Duration::from_millis(1);
                let core_at =
                    st.c.core
                        .poll_timeout()
                        .map(|d| clock.to_tokio(d).max(floor));
                core_at.map_or(wake_at, |c| c.min(wake_at))
            };
            ::tokio::time::sleep_until(until).await;
        }
        let r = match outer_timeout {
            Some(d) => match ::tokio::time::timeout(d, connect()).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("relink: connecting to the server timed out after {d:?}"),
                )),
            },
            None => connect().await,
        };
        let (t, peer) = match r {
            Ok(x) => x,
            Err(e) => {
                let mut st = lock(&shared);
                let now = clock.now();
                let r = policy.connect_failed(&mut st.c, &e, now);
                st.process_events();
                drop(st);
                if r.is_err() {
                    return finish(&shared);
                }
                continue;
            }
        };
        {
            let mut st = lock(&shared);
            let now = clock.now();
            let r = st.c.new_transport(now, peer);
            st.process_events();
            drop(st);
            if r.is_err() {
                return finish(&shared);
            }
        }
        let mut io = TransportIo::new(t);
        let end = poll_fn(|cx| client_poll(&shared, &mut io, &mut sleep, tick, cx)).await;
        match end {
            TransportEnd::SessionOver => return finish(&shared),
            TransportEnd::Lost(why) => {
                let mut st = lock(&shared);
                let r = policy.transport_ended(&mut st.c, &why);
                st.process_events();
                drop(st);
                if r.is_err() {
                    return finish(&shared);
                }
            }
        }
    }
}

fn client_poll<T: AsyncRead + AsyncWrite + Unpin>(
    shared: &Mutex<ClientShared>,
    io: &mut TransportIo<T>,
    sleep: &mut Pin<Box<Sleep>>,
    tick: std::time::Duration,
    cx: &mut Context<'_>,
) -> Poll<TransportEnd> {
    let mut guard = lock(shared);
    let st = &mut *guard;
    let clock = st.clock;
    loop {
        let now = clock.now();
        let mut progress = false;
        // Input: what is buffered first, then the transport.
        loop {
            if io.input_pending() && !io.core_ended {
                match st.c.core.handle_input(now, io.input()) {
                    Ok(n) => {
                        io.consume(n);
                        progress |= n > 0;
                    }
                    Err(_) => io.core_ended = true,
                }
            }
            st.input_blocked = io.input_pending() && !io.core_ended;
            if !io.poll_fill(cx) {
                break;
            }
            progress = true;
        }
        st.process_events();
        if st.c.core.poll_timeout().is_some_and(|d| d <= now) {
            st.c.core.handle_timeout(now);
            st.process_events();
        }
        if !io.core_ended && !st.c.core.transport_ended() {
            let core = &mut st.c.core;
            progress |= io.poll_drain(cx, |buf| core.poll_transmit(now, buf).unwrap_or(0));
        }
        let lost = io
            .lost
            .take()
            .or_else(|| io.eof.then(|| "transport closed by the peer".to_string()));
        if let Some(why) = lost {
            st.c.transport_lost(now, &why);
            st.process_events();
            if st.c.core.is_closed() {
                return Poll::Ready(TransportEnd::SessionOver);
            }
            return Poll::Ready(TransportEnd::Lost(why));
        }
        if st.c.core.is_closed() {
            // A clean end and the answer to the server's ABORT still have
            // frames to write (the last ACK, the ABORT echo).
            let flush = matches!(
                st.c.core.close_reason(),
                Some(CloseReason::Clean | CloseReason::Aborted { by_peer: true, .. })
            );
            if !flush || (!io.output_pending() && !st.c.core.wants_transmit(now)) {
                io.poll_close(cx);
                return Poll::Ready(TransportEnd::SessionOver);
            }
        } else if io.core_ended || st.c.core.transport_ended() {
            st.c.transport_lost(now, "ended by the relink core");
            st.process_events();
            return Poll::Ready(TransportEnd::Lost("ended by the relink core".into()));
        }
        if progress {
            continue;
        }
        if poll_timer(sleep, cx, clock, now, st.c.core.poll_timeout(), tick) {
            continue;
        }
        register(&mut st.driver_waker, cx);
        return Poll::Pending;
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut guard = lock(&self.shared);
        let st = &mut *guard;
        let stopped = st.done;
        let step = st.c.read(buf.initialize_unfilled(), stopped);
        if let driver::Step::Ready(Ok(n)) = step {
            buf.advance(n);
            if n > 0 && st.input_blocked {
                wake(&mut st.driver_waker);
            }
            return Poll::Ready(Ok(()));
        }
        poll_step(cx, step, &mut st.read_waker).map_ok(|_| ())
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut guard = lock(&self.shared);
        let st = &mut *guard;
        let stopped = st.done;
        let step = st.c.write(buf, stopped);
        if matches!(step, driver::Step::Ready(Ok(n)) if n > 0) {
            wake(&mut st.driver_waker);
        }
        poll_step(cx, step, &mut st.write_waker)
    }

    /// Completes once every byte written so far was acknowledged.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut guard = lock(&self.shared);
        let st = &mut *guard;
        let step = st.c.flush(st.done);
        poll_step(cx, step, &mut st.close_waker)
    }

    /// Half-closes; completes once the server acknowledged the CLOSE.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut guard = lock(&self.shared);
        let st = &mut *guard;
        if !st.c.close_requested {
            if let Err(e) = st.c.start_shutdown() {
                return Poll::Ready(Err(e.to_io()));
            }
            wake(&mut st.driver_waker);
        }
        let step = st.c.shutdown(st.done);
        poll_step(cx, step, &mut st.close_waker)
    }
}

// ---------------------------------------------------------------------------
// server
//
// Structure (quinn's model): `Inner::ep` is the endpoint lock. It guards the
// core `Endpoint` (accept, handshakes, routing, its deadline index), the
// wakers of the transports the endpoint still holds, the map of sessions and
// the accept queue. Each session is an `Arc<SessionShared>` whose own mutex
// guards its `Connection` and the session's slot data (wakers, flags). A
// transport task holds the endpoint lock while its transport is pending
// (handshake, first message) and only its session's lock once attached;
// socket I/O runs with no lock held. Statistics are atomics.
//
// Lock rule: the endpoint lock and a session lock are never held at the same
// time. Work on a session collects what the endpoint must learn (its
// `EndpointEvent`s, that it was drained, that it is new) in an `Outcome`
// under the session lock; the outcome is applied under the endpoint lock
// after the session lock was released.

/// What every task of a server shares. Only `ep` is a lock.
struct Inner {
    ep: Mutex<EndpointState>,
    clock: Clock,
    send_cap: usize,
    tick: std::time::Duration,
    stats: ServerCounters,
    stopped: AtomicBool,
    progress: Option<ProgressFn>,
    /// Decides on clients (`ListenerBuilder::authenticate`).
    authenticate: Option<AuthFn>,
    /// Our static public key, to name it in logs.
    server_key: Option<[u8; 32]>,
}

impl Inner {
    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Stop every task and fail every stream (the `Listener` was dropped).
    /// The flag is set before any lock is taken: a task that checks it under
    /// a lock either sees it or registered its waker before the wake below.
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let sessions = {
            let mut ep = lock(&self.ep);
            for w in ep.transports.values_mut() {
                wake(w);
            }
            wake(&mut ep.accept_waker);
            wake(&mut ep.timer_waker);
            ep.accept_queue.clear();
            core::mem::take(&mut ep.sessions)
        };
        for s in sessions.into_values() {
            let mut st = lock(&s.state);
            st.wake_all();
            for (_, slot) in st.transports.iter_mut() {
                wake(&mut slot.waker);
            }
            wake(&mut st.timer_waker);
        }
    }
}

/// The endpoint and what routes to the sessions. Behind `Inner::ep`.
struct EndpointState {
    endpoint: Endpoint<OsRng>,
    /// Wakers of the tasks whose transport the endpoint still holds.
    transports: HashMap<TransportId, Option<Waker>>,
    /// Sessions until drained (their connection is dropped then).
    sessions: HashMap<SessionId, Arc<SessionShared>>,
    accept_queue: VecDeque<Arc<SessionShared>>,
    accept_waker: Option<Waker>,
    timer_waker: Option<Waker>,
    /// The deadline the endpoint timer task sleeps until.
    timer_armed: Option<Instant>,
}

impl EndpointState {
    /// After any endpoint call: count and route its events, and wake the
    /// endpoint timer if its next deadline moved earlier.
    fn settle(&mut self, stats: &ServerCounters, progress: Option<&ProgressFn>) {
        stats.sync_routing(&self.endpoint);
        while let Some(e) = self.endpoint.poll_event() {
            stats.count(&e);
            if let ServerEvent::CloseTransport { transport, .. } = e {
                if let Some(w) = self.transports.get_mut(&transport) {
                    wake(w);
                }
            }
            if let Some(f) = progress {
                f(&Progress::Server(e));
            }
        }
        if let Some(next) = self.endpoint.poll_timeout() {
            if self.timer_armed.is_none_or(|a| next < a) {
                self.timer_armed = Some(next);
                wake(&mut self.timer_waker);
            }
        }
    }
}

/// One session: its connection and slot data behind its own lock.
struct SessionShared {
    sid: SessionId,
    state: Mutex<SessionState>,
}

#[derive(Default)]
struct TransportSlot {
    waker: Option<Waker>,
    input_blocked: bool,
    /// The remote address, if the transport has one.
    peer: Option<SocketAddr>,
}

struct SessionState {
    conn: Box<Connection>,
    /// The tasks of the transports attached to this session (the current
    /// one, and replaced ones until they closed).
    transports: std::vec::Vec<(TransportId, TransportSlot)>,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    close_waker: Option<Waker>,
    timer_waker: Option<Waker>,
    /// The deadline the session's timer task sleeps until.
    timer_armed: Option<Instant>,
    /// The driver core's data about the session.
    info: SessionSlot,
    /// The connection was drained and left the endpoint's map.
    gone: bool,
}

/// What the endpoint must learn after work on a session, applied under the
/// endpoint lock once the session lock was released.
#[derive(Default)]
#[must_use]
struct Outcome {
    endpoint_events: std::vec::Vec<EndpointEvent>,
    /// The session was just established: queue it for `accept`.
    accept: bool,
    /// The connection is drained: remove it from the map.
    drained: bool,
}

impl Outcome {
    fn apply(self, inner: &Inner, sess: &Arc<SessionShared>) {
        if self.endpoint_events.is_empty() && !self.accept && !self.drained {
            return;
        }
        let mut guard = lock(&inner.ep);
        let ep = &mut *guard;
        for e in self.endpoint_events {
            ep.endpoint.handle_event(e);
        }
        if self.accept && !inner.stopped() {
            ep.accept_queue.push_back(sess.clone());
            wake(&mut ep.accept_waker);
        }
        if self.drained
            && ep
                .sessions
                .get(&sess.sid)
                .is_some_and(|s| Arc::ptr_eq(s, sess))
        {
            ep.sessions.remove(&sess.sid);
        }
        ep.settle(&inner.stats, inner.progress.as_ref());
    }
}

impl SessionState {
    fn new(conn: Box<Connection>) -> Self {
        SessionState {
            conn,
            transports: std::vec::Vec::new(),
            read_waker: None,
            write_waker: None,
            close_waker: None,
            timer_waker: None,
            timer_armed: None,
            info: SessionSlot::new(None),
            gone: false,
        }
    }

    fn wake_all(&mut self) {
        wake(&mut self.read_waker);
        wake(&mut self.write_waker);
        wake(&mut self.close_waker);
    }

    fn slot_mut(&mut self, tid: TransportId) -> Option<&mut TransportSlot> {
        self.transports
            .iter_mut()
            .find(|(t, _)| *t == tid)
            .map(|(_, s)| s)
    }

    fn wake_slot(&mut self, tid: TransportId) {
        if let Some(slot) = self.slot_mut(tid) {
            wake(&mut slot.waker);
        }
    }

    fn wake_transport(&mut self) {
        if let Some(t) = self.conn.transport() {
            self.wake_slot(t);
        }
    }

    /// After any call on the connection: handle its events, pass on its
    /// endpoint events, notice when it is drained, re-arm its timer.
    fn settle(&mut self, inner: &Inner, out: &mut Outcome) {
        if !self.gone {
            let now = inner.clock.now();
            let transports = &self.transports;
            let peer_of = |t: TransportId| {
                transports
                    .iter()
                    .find(|(id, _)| *id == t)
                    .and_then(|(_, s)| s.peer)
            };
            let ch = self.info.drain(
                &mut self.conn,
                now,
                &inner.stats,
                inner.progress.as_ref(),
                inner.authenticate.as_ref(),
                peer_of,
            );
            out.accept |= ch.accept;
            for t in ch.close_transports {
                self.wake_slot(t);
            }
            if ch.changed {
                self.wake_all();
            }
        }
        while let Some(e) = self.conn.poll_endpoint_event() {
            out.endpoint_events.push(e);
        }
        if !self.gone && self.conn.is_drained() {
            self.gone = true;
            out.drained = true;
            self.wake_all();
            wake(&mut self.timer_waker);
        }
        self.nudge_timer();
    }

    /// After bytes moved on a transport: wake the reader and writer if they
    /// can go on; throw away input of a session nobody reads any more.
    fn after_io(&mut self, send_cap: usize) {
        if self.gone {
            return;
        }
        if self.info.dropped {
            let mut scratch = [0u8; 4096];
            while matches!(self.conn.recv(&mut scratch), Ok(n) if n > 0) {}
            return;
        }
        if self.write_waker.is_some() && self.conn.unacked() < send_cap {
            wake(&mut self.write_waker);
        }
        if self.read_waker.is_some() && self.conn.readable() > 0 {
            wake(&mut self.read_waker);
        }
        // `flush` and `shutdown` wait for ACKs, which raise no event.
        if self.close_waker.is_some() && (self.conn.unacked() == 0 || self.conn.close_acked()) {
            wake(&mut self.close_waker);
        }
    }

    /// Wake the session's timer task if the connection's next deadline is
    /// earlier than the one it sleeps until.
    fn nudge_timer(&mut self) {
        if let Some(next) = self.conn.poll_timeout() {
            if self.timer_armed.is_none_or(|a| next < a) {
                self.timer_armed = Some(next);
                wake(&mut self.timer_waker);
            }
        }
    }
}

/// A stream call's answer, or `Pending` with the task's waker in `slot`.
fn poll_step<R>(
    cx: &Context<'_>,
    step: driver::Step<Result<R, SessionError>>,
    slot: &mut Option<Waker>,
) -> Poll<io::Result<R>> {
    match step {
        driver::Step::Ready(r) => Poll::Ready(r.map_err(|e| e.to_io())),
        driver::Step::Wait => {
            register(slot, cx);
            Poll::Pending
        }
    }
}

/// Options of a [`Listener`], like the blocking driver's
/// [`crate::blocking::ListenerBuilder`].
#[derive(Clone)]
pub struct ListenerBuilder {
    config: Config,
    progress: Option<ProgressFn>,
    authenticate: Option<AuthFn>,
    /// Every TCP transport starts with a PROXY v2 header.
    proxy_protocol: bool,
}

driver::listener_builder_common!();

impl ListenerBuilder {
    /// A listener without a TCP socket: feed it transports with
    /// [`Listener::serve_transport`].
    pub fn build(self) -> Listener {
        let mut config = self.config;
        if config.wall_clock.is_none() {
            config.wall_clock = Some(Arc::new(crate::SystemWallClock));
        }
        let inner = Arc::new(Inner {
            clock: Clock::new(),
            send_cap: config.send_buffer.max(1),
            tick: fallback_tick(&config)
                .min(config.ack_delay.into())
                .max(std::time::Duration::from_millis(1)),
            stats: ServerCounters::default(),
            stopped: AtomicBool::new(false),
            progress: self.progress,
            authenticate: self.authenticate,
            server_key: config.server_static.as_ref().map(|k| k.public_key()),
            ep: Mutex::new(EndpointState {
                endpoint: Endpoint::new(config, crate::os_rng()),
                transports: HashMap::new(),
                sessions: HashMap::new(),
                accept_queue: VecDeque::new(),
                accept_waker: None,
                timer_waker: None,
                timer_armed: None,
            }),
        });
        let timer = ::tokio::spawn(drive_endpoint_timer(inner.clone()));
        Listener {
            inner,
            local_addr: None,
            tasks: std::vec![timer],
        }
    }

    /// Listen for TCP connections on `addr`.
    pub async fn bind<A: ToSocketAddrs>(self, addr: A) -> io::Result<Listener> {
        let listener = TcpListener::bind(addr).await?;
        let proxy = self.proxy_protocol.then(|| {
            (
                std::time::Duration::from(self.config.handshake_timeout),
                self.config.max_pending_transports,
            )
        });
        let mut server = self.build();
        server.local_addr = Some(listener.local_addr()?);
        let inner = server.inner.clone();
        let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        server.tasks.push(::tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((sock, peer)) => {
                        let _ = sock.set_nodelay(true);
                        if let Some((timeout, max)) = proxy {
                            // The header is read by a task of its own (a
                            // slow peer must not hold up the accept loop),
                            // at most `max_pending_transports` at a time.
                            if inner.stopped() {
                                return;
                            }
                            let slot = ProxyWaiting::enter(&waiting, max);
                            let inner = inner.clone();
                            ::tokio::spawn(async move {
                                let Some(_slot) = slot else {
                                    add(&inner.stats.transports_refused, 1);
                                    driver::log_refused(
                                        Some(peer),
                                        &crate::Error::TooManyTransports,
                                    );
                                    return;
                                };
                                serve_proxied(&inner, sock, peer, timeout).await;
                            });
                            continue;
                        }
                        if serve(&inner, sock, Some(peer)).is_err() {
                            return;
                        }
                    }
                    // e.g. out of file descriptors: retry a little later
                    Err(_) => ::tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                }
            }
        }));
        Ok(server)
    }
}

/// A transport whose PROXY header is being read (counted while it lives).
struct ProxyWaiting(Arc<std::sync::atomic::AtomicUsize>);

impl ProxyWaiting {
    fn enter(n: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<ProxyWaiting> {
        let before = n.fetch_add(1, Ordering::SeqCst);
        let me = ProxyWaiting(n.clone());
        (before < max).then_some(me)
    }
}

impl Drop for ProxyWaiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Read the PROXY v2 header of `sock` (from the balancer at `peer`)
/// within `timeout`, then serve it as a transport from the source the
/// header names; a transport without a valid header is closed, counted
/// as refused and logged (WARN for bytes that are not a PROXY header, rate-limited; DEBUG for a peer that sent nothing).
async fn serve_proxied(
    inner: &Arc<Inner>,
    mut sock: TcpStream,
    peer: SocketAddr,
    timeout: std::time::Duration,
) {
    use driver::proxy::ProxyError;
    let r = match ::tokio::time::timeout(timeout, read_proxy_header(&mut sock)).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::TimedOut),
    };
    match r {
        Ok(source) => {
            let _ = serve(inner, sock, Some(source.unwrap_or(peer)));
        }
        Err(e) => {
            add(&inner.stats.transports_refused, 1);
            driver::proxy::log_refused(Some(peer), &e);
            drop(sock);
        }
    }
}

/// Read exactly one PROXY v2 header: the source it names (`None`: the
/// real peer counts).
async fn read_proxy_header(
    sock: &mut TcpStream,
) -> Result<Option<SocketAddr>, driver::proxy::ProxyError> {
    use ::tokio::io::AsyncReadExt;
    use driver::proxy::{self, ProxyError, FIXED_LEN};
    let eof = |before: usize, e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => ProxyError::Eof(before),
        _ => ProxyError::Io(e),
    };
    let mut fixed = [0u8; FIXED_LEN];
    // Counts what arrived before an early EOF for the message.
    let mut n = 0;
    while n < FIXED_LEN {
        match sock.read(&mut fixed[n..]).await {
            Ok(0) => return Err(ProxyError::Eof(n)),
            Ok(k) => n += k,
            Err(e) => return Err(eof(n, e)),
        }
    }
    let len = proxy::header_len(&fixed)?;
    let mut header = std::vec![0u8; len];
    header[..FIXED_LEN].copy_from_slice(&fixed);
    sock.read_exact(&mut header[FIXED_LEN..])
        .await
        .map_err(|e| eof(FIXED_LEN, e))?;
    proxy::parse(&header)
}

/// A relink server over tokio: accepts transports, lets the core route
/// handshakes and resumes, and yields each new session as a [`ServerStream`].
pub struct Listener {
    inner: Arc<Inner>,
    local_addr: Option<SocketAddr>,
    tasks: std::vec::Vec<JoinHandle<()>>,
}

impl core::fmt::Debug for Listener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.local_addr)
            .field("sessions", &self.session_count())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Listener {
    /// A listener without a TCP socket: feed it transports with
    /// [`Listener::serve_transport`] (see [`ListenerBuilder::build`]).
    pub fn new(config: Config) -> Listener {
        ListenerBuilder::new(config).build()
    }

    /// Listen for TCP connections on `addr` (see [`ListenerBuilder`] for
    /// options).
    pub async fn bind<A: ToSocketAddrs>(addr: A, config: Config) -> io::Result<Listener> {
        ListenerBuilder::new(config).bind(addr).await
    }

    /// The address the listener is bound to (listeners made with
    /// [`Listener::bind`]).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.local_addr
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "relink listener has no socket"))
    }

    /// Serve a transport accepted by other means (e.g. a TLS or Unix stream).
    /// Fails when too many transports are pending (the transport is dropped).
    /// The transport counts against no source (no per-source limit, its
    /// cookies bound to no address, PROTOCOL.md 3.7): use
    /// [`serve_transport_from`](Self::serve_transport_from) when the peer's
    /// address is known.
    pub fn serve_transport<T>(&self, transport: T) -> io::Result<()>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        serve(&self.inner, transport, None)
    }

    /// [`serve_transport`](Self::serve_transport) for a transport whose
    /// peer is `peer` (e.g. the TCP address under a TLS stream): it counts
    /// against the peer's source (`Config::max_handshakes_per_source`,
    /// `Config::max_sessions_per_source`) and its cookies are bound to the
    /// address. A transport refused by those limits is dropped (`Ok`, like
    /// a full table).
    pub fn serve_transport_from<T>(&self, transport: T, peer: SocketAddr) -> io::Result<()>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        serve(&self.inner, transport, Some(peer))
    }

    /// The next new session. Cancellation safe.
    pub async fn accept(&self) -> io::Result<ServerStream> {
        poll_fn(|cx| {
            let mut ep = lock(&self.inner.ep);
            if let Some(sess) = ep.accept_queue.pop_front() {
                return Poll::Ready(Ok(ServerStream {
                    inner: self.inner.clone(),
                    sess,
                }));
            }
            if self.inner.stopped() {
                return Poll::Ready(Err(SessionError::Shutdown.to_io()));
            }
            register(&mut ep.accept_waker, cx);
            Poll::Pending
        })
        .await
    }

    /// The counters so far.
    pub fn stats(&self) -> ServerStats {
        self.inner.stats.snapshot()
    }

    /// Sessions registered in the core (including ones waiting for a resume).
    pub fn session_count(&self) -> usize {
        let ep = lock(&self.inner.ep);
        ep.sessions.len() + ep.endpoint.handshake_count()
    }

    /// Sessions not over yet (neither ended cleanly, nor aborted and
    /// answered, nor expired), still attached to a transport, or holding
    /// received bytes the application has not read (unless it dropped the
    /// stream), and handshakes in progress: what a drain waits for (see the
    /// [driver docs](crate::driver#drain)). Unlike
    /// [`Listener::session_count`] it does not count finished, detached
    /// sessions, which the core keeps resumable for
    /// `Config::resume_timeout` (in case a client's last acknowledgement
    /// was lost in a cut), nor detached sessions closed both ways (the
    /// client's CLOSE verified and read, ours requested) whose client may
    /// never come back: it has everything, even when its last
    /// acknowledgement was cut ([`Listener::unconfirmed_sessions`] names
    /// those whose acknowledgement is missing).
    pub fn active_session_count(&self) -> usize {
        let (sessions, handshakes) = {
            let ep = lock(&self.inner.ep);
            let s: std::vec::Vec<_> = ep.sessions.values().cloned().collect();
            (s, ep.endpoint.handshake_count())
        };
        let live = sessions
            .iter()
            .filter(|s| {
                let st = lock(&s.state);
                !st.info.settled((!st.gone).then_some(&*st.conn))
            })
            .count();
        live + handshakes
    }

    /// The sessions a drain does not wait for although part of what this
    /// side wrote is unacknowledged: closed both ways, detached, and the
    /// client's last acknowledgement missing (a cut took it from a client
    /// that has everything and will not come back, or the client is about
    /// to resume). For each, its connection id and the bytes not
    /// acknowledged (plus the CLOSE): what a drain that ends now cannot
    /// confirm. The client holds them, or reports the session lost when
    /// it comes back to a node without it (PROTOCOL.md 3.8).
    pub fn unconfirmed_sessions(&self) -> std::vec::Vec<(u64, usize)> {
        let sessions: std::vec::Vec<_> = lock(&self.inner.ep).sessions.values().cloned().collect();
        sessions
            .iter()
            .filter_map(|s| {
                let st = lock(&s.state);
                let conn = (!st.gone).then_some(&*st.conn);
                st.info
                    .unconfirmed(conn)
                    .map(|n| (conn.map_or(0, |c| c.conn_id()), n))
            })
            .collect()
    }

    /// Take the listener out of service, for a graceful drain (see the
    /// [driver docs](crate::driver#drain)): from now on every new session a
    /// client asks for is answered Busy (the client retries on a new
    /// transport, which a load balancer sends to another server), while
    /// the sessions it holds go on and resume as before; the listener keeps
    /// accepting transports for them. Irreversible; calling it again does
    /// nothing. Watch [`Listener::active_session_count`] reach 0, or end the rest
    /// with [`Listener::abort_all`] at a deadline.
    pub fn drain(&self) {
        let mut ep = lock(&self.inner.ep);
        if !ep.endpoint.is_draining() {
            ep.endpoint.drain();
            tracing::info!(
                sessions = ep.sessions.len(),
                "draining: new sessions are refused"
            );
        }
    }

    /// Whether [`Listener::drain`] was called.
    pub fn is_draining(&self) -> bool {
        lock(&self.inner.ep).endpoint.is_draining()
    }

    /// Abort every session the listener holds with `code` (at a drain's
    /// deadline: [`AbortCode::SHUTTING_DOWN`]), including sessions not
    /// yet taken by [`Listener::accept`] and detached ones: an attached
    /// client gets the ABORT at once; a detached one when it resumes within
    /// the wait for the ABORT's answer (`Config::idle_timeout`), after which
    /// the session ends anyway. Their streams' calls fail with
    /// [`io::ErrorKind::ConnectionAborted`]. Returns how many sessions this
    /// call aborted (not those already over or aborted). Handshakes still
    /// in progress are not sessions yet: they complete or time out
    /// (`Config::handshake_timeout`); after [`Listener::drain`] no new one
    /// starts. Returns at once; the listener keeps serving the aborted
    /// sessions until their clients acknowledged.
    pub fn abort_all(&self, code: AbortCode) -> usize {
        let sessions: std::vec::Vec<_> = lock(&self.inner.ep).sessions.values().cloned().collect();
        sessions
            .iter()
            .filter(|s| abort_server(&self.inner, s, code))
            .count()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.inner.stop();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Register `transport` (from `peer`) with the endpoint and spawn its task.
fn serve<T>(inner: &Arc<Inner>, transport: T, peer: Option<SocketAddr>) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tid = {
        let mut ep = lock(&inner.ep);
        if inner.stopped() {
            return Err(SessionError::Shutdown.to_io());
        }
        let now = inner.clock.now();
        let accepted = match peer {
            Some(p) => ep.endpoint.accept_from(now, p.ip()),
            None => ep.endpoint.accept(now),
        };
        match accepted {
            Ok(tid) => {
                add(&inner.stats.transports, 1);
                ep.transports.insert(tid, None);
                ep.settle(&inner.stats, inner.progress.as_ref());
                tid
            }
            Err(e) => {
                add(&inner.stats.transports_refused, 1);
                crate::driver::log_refused(peer, &e);
                // Too many pending transports (in all, or from this
                // source): refuse this one, keep serving.
                drop(ep);
                drop(transport);
                return Ok(());
            }
        }
    };
    let inner = inner.clone();
    ::tokio::spawn(async move {
        let mut io = TransportIo::new(transport);
        let mut route = Route::Endpoint;
        let mut linger = None;
        poll_fn(|cx| {
            server_transport_poll(&inner, tid, peer, &mut io, &mut route, &mut linger, cx)
        })
        .await;
    });
    Ok(())
}

/// How long a transport that is over waits for its last answer (a
/// rejection, DataUnavailable) to be written when the socket is full.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Who a transport's bytes go to.
enum Route {
    /// The endpoint holds it (first message, handshake).
    Endpoint,
    /// It carries this session.
    Session(Arc<SessionShared>),
    /// A resume was refused: write the reply (once), then close.
    Refused(Rejection, bool),
}

/// What the endpoint decided about a transport.
enum Handover {
    /// A new session on it.
    Session(Arc<SessionShared>),
    /// A resume request for a known session, to pass to its connection.
    Resume(Arc<SessionShared>, [u8; RESUME_REQUEST_LEN]),
    /// A resume request the driver cannot route (the session is gone).
    Refused(Rejection),
}

/// The result of one locked step of a transport task.
struct Step {
    /// The core is done with the transport.
    ended: bool,
    /// Input was consumed or output produced.
    progress: bool,
}

/// One step of a transport the endpoint holds, under the endpoint lock:
/// feed input, fetch output, register the task's waker.
fn endpoint_step<T: AsyncRead + AsyncWrite + Unpin>(
    inner: &Arc<Inner>,
    tid: TransportId,
    peer: Option<SocketAddr>,
    io: &mut TransportIo<T>,
    cx: &Context<'_>,
) -> Result<Step, Handover> {
    let mut guard = lock(&inner.ep);
    let ep = &mut *guard;
    let now = inner.clock.now();
    let mut progress = false;
    let mut handover = None;
    if io.input_pending() && !io.core_ended {
        match ep.endpoint.handle_input(tid, now, io.input()) {
            Ok(Dispatch::Pending(n)) => {
                io.consume(n);
                progress |= n > 0;
            }
            Ok(Dispatch::NewConnection {
                consumed,
                connection,
            }) => {
                io.consume(consumed);
                ep.transports.remove(&tid);
                let sess = new_session(inner, ep, tid, peer, connection);
                handover = Some(Handover::Session(sess));
            }
            Ok(Dispatch::Resume {
                consumed,
                session,
                request,
            }) => {
                io.consume(consumed);
                ep.transports.remove(&tid);
                handover = Some(match ep.sessions.get(&session) {
                    Some(s) => Handover::Resume(s.clone(), request),
                    None => Handover::Refused(ep.endpoint.unknown_session(&request)),
                });
            }
            Err(_) => {
                // A balancer sending PROXY headers to a listener without
                // `proxy_protocol`: say so (WARN, rate-limited).
                if driver::proxy::looks_like_header(io.input()) {
                    driver::proxy::log_unexpected_header(peer);
                }
                io.core_ended = true;
            }
        }
    }
    if handover.is_none() {
        if !io.output_pending() && io.lost.is_none() {
            let endpoint = &mut ep.endpoint;
            progress |= io.fill_output(|buf| endpoint.poll_transmit(tid, buf).unwrap_or(0)) > 0;
        }
        if let Some(w) = ep.transports.get_mut(&tid) {
            register(w, cx);
        }
    }
    ep.settle(&inner.stats, inner.progress.as_ref());
    match handover {
        Some(h) => Err(h),
        None => Ok(Step {
            ended: ep.endpoint.transport_ended(tid),
            progress,
        }),
    }
}

/// A connection the endpoint just produced on `tid`: its session's shared
/// state (not yet shared: built without its lock), entered in the map and
/// the accept queue, with its timer task.
fn new_session(
    inner: &Arc<Inner>,
    ep: &mut EndpointState,
    tid: TransportId,
    peer: Option<SocketAddr>,
    connection: Box<Connection>,
) -> Arc<SessionShared> {
    let sid = connection.session();
    let mut st = SessionState::new(connection);
    st.info = SessionSlot::new(peer);
    st.transports.push((
        tid,
        TransportSlot {
            peer,
            ..TransportSlot::default()
        },
    ));
    let mut out = Outcome::default();
    st.settle(inner, &mut out);
    for e in out.endpoint_events {
        ep.endpoint.handle_event(e);
    }
    let sess = Arc::new(SessionShared {
        sid,
        state: Mutex::new(st),
    });
    if !out.drained {
        ep.sessions.insert(sid, sess.clone());
    }
    if out.accept {
        ep.accept_queue.push_back(sess.clone());
        wake(&mut ep.accept_waker);
    }
    ::tokio::spawn(drive_session_timer(inner.clone(), sess.clone()));
    sess
}

/// Pass a routed resume request to its session (under the session lock
/// only). Returns the transport's new route.
fn resume_session(
    inner: &Inner,
    tid: TransportId,
    peer: Option<SocketAddr>,
    sess: Arc<SessionShared>,
    request: &[u8; RESUME_REQUEST_LEN],
) -> Route {
    let mut out = Outcome::default();
    let result = {
        let mut st = lock(&sess.state);
        let r = st.conn.handle_resume(tid, inner.clock.now(), request);
        if r.is_ok() {
            st.transports.push((
                tid,
                TransportSlot {
                    peer,
                    ..TransportSlot::default()
                },
            ));
        }
        st.settle(inner, &mut out);
        r
    };
    out.apply(inner, &sess);
    match result {
        Ok(()) => Route::Session(sess),
        Err(rej) => Route::Refused(rej, false),
    }
}

/// One step of a transport attached to `sess`, under that session's lock
/// only: feed input (frame decryption), fetch output (frame encryption),
/// register the task's waker.
fn session_step<T: AsyncRead + AsyncWrite + Unpin>(
    inner: &Inner,
    sess: &Arc<SessionShared>,
    tid: TransportId,
    io: &mut TransportIo<T>,
    cx: &Context<'_>,
) -> Step {
    let mut out = Outcome::default();
    let step = {
        let mut guard = lock(&sess.state);
        let st = &mut *guard;
        let now = inner.clock.now();
        let mut progress = false;
        if io.input_pending() && !io.core_ended {
            match st.conn.handle_input(tid, now, io.input()) {
                Ok(n) => {
                    io.consume(n);
                    progress |= n > 0;
                }
                Err(_) => io.core_ended = true,
            }
        }
        st.after_io(inner.send_cap);
        if !io.output_pending() && io.lost.is_none() {
            let conn = &mut st.conn;
            progress |= io.fill_output(|buf| conn.poll_transmit(tid, now, buf).unwrap_or(0)) > 0;
        }
        let ended = st.conn.transport() != Some(tid);
        let blocked = io.input_pending() && !io.core_ended;
        if let Some(slot) = st.slot_mut(tid) {
            slot.input_blocked = blocked;
            register(&mut slot.waker, cx);
        }
        st.settle(inner, &mut out);
        if progress {
            st.after_io(inner.send_cap);
        }
        Step { ended, progress }
    };
    out.apply(inner, sess);
    step
}

fn server_transport_poll<T: AsyncRead + AsyncWrite + Unpin>(
    inner: &Arc<Inner>,
    tid: TransportId,
    peer: Option<SocketAddr>,
    io: &mut TransportIo<T>,
    route: &mut Route,
    linger: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    loop {
        if inner.stopped() {
            return Poll::Ready(());
        }
        // Core work, under one lock: the endpoint's or the session's.
        let step = match route {
            Route::Endpoint => match endpoint_step(inner, tid, peer, io, cx) {
                Ok(step) => step,
                Err(Handover::Session(sess)) => {
                    *route = Route::Session(sess);
                    continue;
                }
                Err(Handover::Resume(sess, request)) => {
                    *route = resume_session(inner, tid, peer, sess, &request);
                    continue;
                }
                Err(Handover::Refused(rej)) => {
                    *route = Route::Refused(rej, false);
                    continue;
                }
            },
            Route::Session(sess) => session_step(inner, sess, tid, io, cx),
            Route::Refused(rej, sent) => {
                // Nothing more is read from a refused transport.
                io.core_ended = true;
                let mut progress = false;
                if !*sent && !io.output_pending() && io.lost.is_none() {
                    *sent = true;
                    let reply = rej.reply();
                    progress = io.fill_output(|buf| {
                        buf[..reply.len()].copy_from_slice(reply);
                        reply.len()
                    }) > 0;
                }
                Step {
                    ended: true,
                    progress,
                }
            }
        };
        let ended = step.ended;
        let mut progress = step.progress;
        // Socket I/O, with no lock held.
        progress |= io.poll_drain(cx, |_| 0);
        if !io.input_pending() {
            progress |= io.poll_fill(cx);
        }
        // A transport the core ended, or whose peer stopped sending, is
        // closed once everything queued for it (a rejection, a last answer)
        // was written, or writing blocks.
        // An answer still being written when the socket is full: wait for
        // the socket (its waker is registered) up to LINGER.
        let lingering = (ended || io.eof) && io.output_pending() && io.write_blocked && {
            let sleep = linger.get_or_insert_with(|| Box::pin(::tokio::time::sleep(LINGER)));
            sleep.as_mut().poll(cx).is_pending()
        };
        if lingering && io.lost.is_none() {
            return Poll::Pending;
        }
        let over = io.lost.is_some()
            || (!progress && (ended || io.eof) && (!io.output_pending() || io.write_blocked));
        if over {
            if (io.lost.is_some() || io.eof) && !ended {
                add(&inner.stats.lost_io, 1);
            }
            if io.lost.is_none() {
                io.poll_close(cx);
            }
            let abandoned = io.wrote_any && (io.eof || io.lost.is_some());
            release_transport(inner, tid, peer, route, abandoned);
            return Poll::Ready(());
        }
        if progress {
            continue;
        }
        // Checked again after the waker was registered under a lock: see
        // `Inner::stop`.
        if inner.stopped() {
            return Poll::Ready(());
        }
        return Poll::Pending;
    }
}

/// The transport task is over: tell the core.
fn release_transport(
    inner: &Inner,
    tid: TransportId,
    peer: Option<SocketAddr>,
    route: &Route,
    abandoned: bool,
) {
    let now = inner.clock.now();
    match route {
        Route::Endpoint => {
            let mut ep = lock(&inner.ep);
            if abandoned && !ep.endpoint.transport_ended(tid) {
                // Our ServerHello went out and the peer hung up without an
                // answer: typically a client that pins another key.
                driver::log_abandoned_hello(peer, inner.server_key.as_ref());
            }
            ep.endpoint.transport_lost(tid, now);
            ep.transports.remove(&tid);
            ep.settle(&inner.stats, inner.progress.as_ref());
        }
        Route::Session(sess) => {
            let mut out = Outcome::default();
            {
                let mut guard = lock(&sess.state);
                let st = &mut *guard;
                if !st.gone {
                    let id = st.conn.conn_id();
                    st.info.lost(id, tid, now, None, "the connection broke");
                }
                st.conn.transport_lost(tid, now);
                st.transports.retain(|(t, _)| *t != tid);
                st.settle(inner, &mut out);
            }
            out.apply(inner, sess);
        }
        Route::Refused(..) => {}
    }
}

/// The endpoint's own deadlines (handshake timeouts, expiry of unconfirmed
/// sessions). Locks only the endpoint.
async fn drive_endpoint_timer(inner: Arc<Inner>) {
    let mut sleep = Box::pin(::tokio::time::sleep_until(TokioInstant::now()));
    let clock = inner.clock;
    poll_fn(|cx| {
        let mut guard = lock(&inner.ep);
        let ep = &mut *guard;
        loop {
            if inner.stopped() {
                return Poll::Ready(());
            }
            let now = clock.now();
            if ep.endpoint.poll_timeout().is_some_and(|d| d <= now) {
                ep.endpoint.handle_timeout(now);
                // CloseTransport events wake the transports' tasks.
                ep.settle(&inner.stats, inner.progress.as_ref());
            }
            let next = ep.endpoint.poll_timeout();
            ep.timer_armed = next;
            if poll_timer(&mut sleep, cx, clock, now, next, inner.tick) {
                continue;
            }
            register(&mut ep.timer_waker, cx);
            return Poll::Pending;
        }
    })
    .await;
}

/// One session's timers (ACK delay, keepalive, idle timeout while attached;
/// expiry while detached; the wait for the answer to an ABORT), whether or
/// not it has a transport. Locks only its session. Ends once the session
/// is drained or the server stopped.
async fn drive_session_timer(inner: Arc<Inner>, sess: Arc<SessionShared>) {
    let mut sleep = Box::pin(::tokio::time::sleep_until(TokioInstant::now()));
    let clock = inner.clock;
    poll_fn(|cx| loop {
        let mut out = Outcome::default();
        let fired = {
            let mut guard = lock(&sess.state);
            let st = &mut *guard;
            if inner.stopped() || st.gone {
                return Poll::Ready(());
            }
            let now = clock.now();
            if st.conn.poll_timeout().is_some_and(|d| d <= now) {
                st.conn.handle_timeout(now);
                st.settle(&inner, &mut out);
                // Due ACKs and keepalives are written by the transport tasks.
                let SessionState {
                    conn, transports, ..
                } = st;
                for (tid, slot) in transports.iter_mut() {
                    if conn.wants_transmit(*tid, now) || conn.transport() != Some(*tid) {
                        wake(&mut slot.waker);
                    }
                }
            }
            let next = st.conn.poll_timeout();
            st.timer_armed = next.map(|d| {
                if d <= now {
                    now.saturating_add(inner.tick.into())
                } else {
                    d
                }
            });
            let fired = poll_timer(&mut sleep, cx, clock, now, next, inner.tick);
            if !fired {
                register(&mut st.timer_waker, cx);
            }
            fired
        };
        out.apply(&inner, &sess);
        if !fired {
            return Poll::Pending;
        }
    })
    .await;
}

/// The server's end of one session. The semantics are those of
/// [`crate::driver`].
pub struct ServerStream {
    inner: Arc<Inner>,
    sess: Arc<SessionShared>,
}

impl core::fmt::Debug for ServerStream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerStream")
            .field("session", &self.sess.sid)
            .finish_non_exhaustive()
    }
}

/// Run `f` on a session under its lock, then settle it (events, endpoint
/// work) and apply what the endpoint must learn.
fn with_session<R>(
    inner: &Inner,
    sess: &Arc<SessionShared>,
    f: impl FnOnce(&mut SessionState) -> R,
) -> R {
    let mut out = Outcome::default();
    let r = {
        let mut guard = lock(&sess.state);
        let st = &mut *guard;
        let r = f(st);
        st.settle(inner, &mut out);
        r
    };
    out.apply(inner, sess);
    r
}

/// Abort a session with `code`; whether this call aborted a live session.
fn abort_server(inner: &Inner, sess: &Arc<SessionShared>, code: AbortCode) -> bool {
    with_session(inner, sess, |st| {
        let gone = st.gone;
        let aborted = st.info.abort((!gone).then_some(&mut *st.conn), code) && !gone;
        if aborted {
            // `abort` has no clock: start the wait for the client's answer
            // now (a detached session would otherwise wait for its expiry).
            st.conn.handle_timeout(inner.clock.now());
        }
        st.wake_all();
        st.wake_transport();
        aborted
    })
}

impl ServerStream {
    /// The core's id of this session.
    pub fn session_id(&self) -> SessionId {
        self.sess.sid
    }

    /// The session's connection id (while the session is registered).
    pub fn conn_id(&self) -> Option<u64> {
        let st = lock(&self.sess.state);
        (!st.gone).then(|| st.conn.conn_id())
    }

    /// The remote address of the transport that last carried the session
    /// (`None` for transports of [`Listener::serve_transport`]).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        lock(&self.sess.state).info.peer
    }

    /// The listener's counters.
    pub fn stats(&self) -> ServerStats {
        self.inner.stats.snapshot()
    }

    /// Bytes written but not yet acknowledged by the client.
    pub fn unacked(&self) -> usize {
        let st = lock(&self.sess.state);
        if st.gone {
            0
        } else {
            st.conn.unacked()
        }
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.sess.state).info.end
    }

    /// Abort the session (like a TCP reset): stop sending at once and tell
    /// the client with an authenticated ABORT carrying `code`; the client's
    /// reads and writes fail with [`io::ErrorKind::ConnectionReset`]. The
    /// server keeps serving the session until the client acknowledged.
    pub fn abort(&self, code: AbortCode) {
        abort_server(&self.inner, &self.sess, code);
    }

    /// A handle that can abort this session from another task.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle(HandleInner::Server(self.inner.clone(), self.sess.clone()))
    }

    /// Close cleanly: half-close, then wait until the client closed too and
    /// both CLOSEs were acknowledged. Unread input is discarded.
    pub async fn close(&mut self) -> io::Result<()> {
        let inner = &*self.inner;
        with_session(inner, &self.sess, |st| {
            let stopped = inner.stopped();
            let gone = st.gone;
            let r = st
                .info
                .start_shutdown((!gone).then_some(&mut *st.conn), stopped);
            st.wake_transport();
            r
        })
        .map_err(|e| e.to_io())?;
        poll_fn(|cx| {
            with_session(inner, &self.sess, |st| {
                let stopped = inner.stopped();
                let gone = st.gone;
                let step = st.info.close((!gone).then_some(&mut *st.conn), stopped);
                // Room was freed: let the transports feed what they hold.
                for (_, slot) in st.transports.iter_mut() {
                    if slot.input_blocked {
                        wake(&mut slot.waker);
                    }
                }
                poll_step(cx, step, &mut st.close_waker)
            })
        })
        .await
    }

    /// Time since authenticated input from the client last arrived (see
    /// [`ClientStream::last_received`]); `None` before the first.
    pub fn last_received(&self) -> Option<std::time::Duration> {
        lock(&self.sess.state).info.last_received()
    }
}

impl Drop for ServerStream {
    fn drop(&mut self) {
        let send_cap = self.inner.send_cap;
        with_session(&self.inner, &self.sess, |st| {
            let gone = st.gone;
            // The transport tasks keep serving an aborted session until the
            // client acknowledged.
            st.info.on_drop((!gone).then_some(&mut *st.conn));
            // Unread bytes are thrown away, so the connection drains.
            st.after_io(send_cap);
            st.wake_transport();
        });
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let inner = &*self.inner;
        with_session(inner, &self.sess, |st| {
            let stopped = inner.stopped();
            let gone = st.gone;
            let step = st.info.read(
                (!gone).then_some(&mut *st.conn),
                buf.initialize_unfilled(),
                stopped,
            );
            if let driver::Step::Ready(Ok(n)) = step {
                buf.advance(n);
                if n > 0 {
                    for (_, slot) in st.transports.iter_mut() {
                        if slot.input_blocked {
                            wake(&mut slot.waker);
                        }
                    }
                }
                return Poll::Ready(Ok(()));
            }
            poll_step(cx, step, &mut st.read_waker).map_ok(|_| ())
        })
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let inner = &*self.inner;
        with_session(inner, &self.sess, |st| {
            let stopped = inner.stopped();
            let gone = st.gone;
            let step = st
                .info
                .write((!gone).then_some(&mut *st.conn), buf, stopped);
            if matches!(step, driver::Step::Ready(Ok(n)) if n > 0) {
                st.wake_transport();
            }
            poll_step(cx, step, &mut st.write_waker)
        })
    }

    /// Completes once every byte written so far was acknowledged.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let inner = &*self.inner;
        with_session(inner, &self.sess, |st| {
            let conn = (!st.gone).then_some(&*st.conn);
            let step = st.info.flush(conn, inner.stopped());
            poll_step(cx, step, &mut st.close_waker)
        })
    }

    /// Half-closes; completes once the client acknowledged the CLOSE.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let inner = &*self.inner;
        with_session(inner, &self.sess, |st| {
            let stopped = inner.stopped();
            if !st.info.close_requested {
                let gone = st.gone;
                if let Err(e) = st
                    .info
                    .start_shutdown((!gone).then_some(&mut *st.conn), stopped)
                {
                    return Poll::Ready(Err(e.to_io()));
                }
                st.wake_transport();
            }
            let conn = (!st.gone).then_some(&*st.conn);
            let step = st.info.shutdown(conn, stopped);
            poll_step(cx, step, &mut st.close_waker)
        })
    }
}

/// Aborts a session from another task than the one using its stream (see
/// [`ClientStream::abort_handle`], [`ServerStream::abort_handle`]). It does
/// not keep the stream open.
#[derive(Clone)]
pub struct AbortHandle(HandleInner);

#[derive(Clone)]
enum HandleInner {
    Client(Arc<Mutex<ClientShared>>),
    Server(Arc<Inner>, Arc<SessionShared>),
}

impl core::fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AbortHandle").finish_non_exhaustive()
    }
}

impl AbortHandle {
    /// Abort the session with `code`, like the stream's `abort`.
    pub fn abort(&self, code: AbortCode) {
        match &self.0 {
            HandleInner::Client(s) => abort_client(s, code),
            HandleInner::Server(inner, sess) => {
                abort_server(inner, sess, code);
            }
        }
    }
}
