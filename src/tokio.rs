//! Async driver over tokio (`tokio` feature): reconnecting, resuming
//! [`ClientStream`]s and a [`Server`] that yields [`ServerStream`]s, both
//! implementing [`AsyncRead`] + [`AsyncWrite`].
//!
//! All protocol logic stays in the sans-IO core ([`crate::Client`],
//! [`crate::Server`]); this module only moves bytes, sleeps until the core's
//! `poll_timeout` and opens new transports.
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
//! advertised resume timeout passed without contact); only the very first
//! connection gives up after `Backoff::max_attempts` failures in a row.
//! Then the stream fails with an [`io::Error`] saying why.
//!
//! # Server
//! [`Server::bind`] listens on TCP; [`Server::serve_transport`] adds a
//! transport accepted any other way. One task per transport and one timer
//! task share the core `Server` behind a mutex; the core routes resumes to
//! their session. [`Server::accept`] yields each new session once.
//!
//! # Semantics
//! - `poll_write` accepts bytes into the session's send history and returns
//!   `Poll::Pending` when `Config::send_buffer` unacknowledged bytes are
//!   held (back-pressure); it is woken when ACKs free room.
//! - `poll_flush` returns at once: accepted bytes are in the session's
//!   history and are delivered (resent if needed) as long as the session
//!   lives. Use `poll_shutdown` to wait for delivery.
//! - `poll_shutdown` closes the sending side (CLOSE frame) and completes
//!   when the session ended cleanly, i.e. once the peer closed its side too
//!   and both CLOSEs were acknowledged. Keep reading meanwhile if the peer
//!   may send more than `Config::recv_buffer` bytes before it closes.
//! - Reads and writes are cancellation safe: dropping a pending
//!   `read`/`write` future loses nothing.
//! - `abort(code)` ends a session at once, like a TCP reset: the peer's
//!   reads and writes fail with [`io::ErrorKind::ConnectionReset`] and the
//!   inner [`SessionError`] names the [`AbortCode`]. A session that ends
//!   other than cleanly fails with a [`SessionError`] stating why (and, on
//!   the client, the in-doubt range of written bytes).
//! - Dropping a [`ClientStream`] or [`ServerStream`] that was neither
//!   closed nor aborted aborts the session with [`AbortCode::DROPPED`]; the
//!   background tasks keep serving it until the peer acknowledged.
//!   Dropping the [`Server`] ends all its transports and sessions.
//!
//! Every function that spawns tasks must be called within a tokio runtime.
//!
//! # Example
//! ```
//! use relink::tokio::{ClientStream, Server};
//! use relink::Config;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let server = Server::bind("127.0.0.1:0", Config::default()).await?;
//! let addr = server.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok(mut stream) = server.accept().await {
//!         tokio::spawn(async move {
//!             let mut data = Vec::new();
//!             stream.read_to_end(&mut data).await?; // until the client closes
//!             stream.write_all(&data).await?;
//!             stream.shutdown().await // done once both sides closed
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
use std::sync::{Arc, Mutex, MutexGuard};

use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use ::tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use ::tokio::task::JoinHandle;
use ::tokio::time::{Instant as TokioInstant, Sleep};

pub use crate::blocking::SessionError;
use crate::reconnect::DriverClock;
use crate::{
    AbortCode, Backoff, ByteRange, CloseReason, Config, Duration, Error, Event, Instant, OsRng,
    ResumeStatus, ServerEvent, SessionId, TransportId,
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

/// A sticky failure reported to every later read and write: an
/// [`io::Error`] whose inner error is the [`SessionError`].
#[derive(Clone, Debug)]
struct Failure {
    kind: io::ErrorKind,
    err: SessionError,
}

impl Failure {
    fn io(&self) -> io::Error {
        io::Error::new(self.kind, self.err.clone())
    }
    fn of(err: SessionError) -> Failure {
        Failure {
            kind: err.io_kind(),
            err,
        }
    }
    /// A server session that ended other than cleanly.
    fn closed(reason: CloseReason) -> Failure {
        Failure::of(SessionError::Closed(reason))
    }
    /// The client's session ended other than cleanly.
    fn ended(core: &crate::Client<OsRng>, reason: CloseReason) -> Failure {
        Failure::of(SessionError::Ended {
            reason,
            in_doubt: core.in_doubt(),
        })
    }
}

fn core_error(e: Error) -> io::Error {
    let kind = match e {
        Error::Closed => io::ErrorKind::BrokenPipe,
        Error::Aborted(_) => io::ErrorKind::ConnectionAborted,
        Error::UnknownSession => io::ErrorKind::NotConnected,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("relink: {e}"))
}

/// How a transport was lost, for the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LossKind {
    Io,
    Auth,
    Protocol,
    Timeout,
    Other,
}

fn classify(e: Option<Error>) -> LossKind {
    match e {
        Some(Error::AuthFailed) | Some(Error::ResumeRejected(ResumeStatus::AuthFailed)) => {
            LossKind::Auth
        }
        Some(Error::Protocol(_)) => LossKind::Protocol,
        Some(Error::TimedOut) => LossKind::Timeout,
        _ => LossKind::Other,
    }
}

/// One transport's byte buffers. Only ever touched by its own task.
struct TransportIo<T> {
    t: T,
    inbuf: Box<[u8]>,
    in_start: usize,
    in_end: usize,
    outbuf: Box<[u8]>,
    out_start: usize,
    out_end: usize,
    /// The transport broke (I/O error, or writes refused): why.
    lost: Option<String>,
    /// The peer closed its sending side (read EOF); writing may still work,
    /// and an answer already queued is written before the transport closes.
    eof: bool,
    /// The core ended the transport.
    core_ended: bool,
    write_blocked: bool,
    needs_flush: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> TransportIo<T> {
    fn new(t: T) -> Self {
        TransportIo {
            t,
            inbuf: std::vec![0u8; IO_BUF].into_boxed_slice(),
            in_start: 0,
            in_end: 0,
            outbuf: std::vec![0u8; IO_BUF].into_boxed_slice(),
            out_start: 0,
            out_end: 0,
            lost: None,
            eof: false,
            core_ended: false,
            write_blocked: false,
            needs_flush: false,
        }
    }

    fn input(&self) -> &[u8] {
        &self.inbuf[self.in_start..self.in_end]
    }

    fn input_pending(&self) -> bool {
        self.in_start < self.in_end
    }

    fn consume(&mut self, n: usize) {
        self.in_start += n;
    }

    fn output_pending(&self) -> bool {
        self.out_start < self.out_end
    }

    /// Read from the transport when all earlier input was consumed.
    /// Returns whether something happened.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> bool {
        if self.input_pending() || self.lost.is_some() || self.eof || self.core_ended {
            return false;
        }
        self.in_start = 0;
        self.in_end = 0;
        let mut rb = ReadBuf::new(&mut self.inbuf);
        match Pin::new(&mut self.t).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    self.eof = true;
                }
                self.in_end = n;
                true
            }
            Poll::Ready(Err(e)) => {
                self.lost = Some(e.to_string());
                true
            }
            Poll::Pending => false,
        }
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
        while self.lost.is_none() {
            if !self.output_pending() {
                let n = fill(&mut self.outbuf);
                if n == 0 {
                    break;
                }
                self.out_start = 0;
                self.out_end = n;
            }
            match Pin::new(&mut self.t).poll_write(cx, &self.outbuf[self.out_start..self.out_end]) {
                Poll::Ready(Ok(0)) => self.lost = Some("transport accepts no more bytes".into()),
                Poll::Ready(Ok(n)) => {
                    self.out_start += n;
                    self.needs_flush = true;
                    progress = true;
                }
                Poll::Ready(Err(e)) => self.lost = Some(e.to_string()),
                Poll::Pending => {
                    self.write_blocked = true;
                    break;
                }
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

/// Counters of a [`ClientStream`], taken from the driver and the core's
/// events (nothing estimated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Transports handed to the core (connections opened).
    pub transports: u64,
    /// Connection attempts that failed or timed out before a transport existed.
    pub connect_failures: u64,
    /// Completed handshakes (1 once connected).
    pub handshakes: u64,
    /// Completed resumes (`Event::Resumed`).
    pub resumes: u64,
    /// Sum of the lengths of `Event::ResendRange`: bytes from what the server
    /// had received to what the application had written, (re)sent after resumes.
    pub resend_bytes: u64,
    /// Transports that ended with EOF or an I/O error (cut connections).
    pub lost_io: u64,
    /// Transports the core ended because bytes failed authentication (corruption).
    pub lost_auth: u64,
    /// Transports the core ended because of malformed frames (corrupted headers).
    pub lost_protocol: u64,
    /// Transports the core ended because nothing arrived in time (stalls).
    pub lost_timeout: u64,
    /// Transports the core ended for another reason (e.g. a rejected resume).
    pub lost_other: u64,
    /// Application bytes accepted by `poll_write`.
    pub bytes_sent: u64,
    /// Application bytes returned by `poll_read`.
    pub bytes_received: u64,
}

impl ClientStats {
    fn count_loss(&mut self, k: LossKind) {
        match k {
            LossKind::Io => self.lost_io += 1,
            LossKind::Auth => self.lost_auth += 1,
            LossKind::Protocol => self.lost_protocol += 1,
            LossKind::Timeout => self.lost_timeout += 1,
            LossKind::Other => self.lost_other += 1,
        }
    }
}

struct ClientShared {
    core: crate::Client<OsRng>,
    clock: Clock,
    send_cap: usize,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    close_waker: Option<Waker>,
    ready_waker: Option<Waker>,
    driver_waker: Option<Waker>,
    /// The driver holds input the core could not take (receive buffer full).
    input_blocked: bool,
    handshake_done: bool,
    /// The last transport was refused as Stale (clock estimate corrected).
    retry_now: bool,
    /// The server half-closed.
    peer_closed: bool,
    /// The application (or the drop) aborted the session.
    aborted: bool,
    /// The current transport completed its handshake or resume.
    established: bool,
    close_requested: bool,
    failure: Option<Failure>,
    stats: ClientStats,
}

impl ClientShared {
    fn process_events(&mut self) {
        while let Some(e) = self.core.poll_event() {
            match e {
                Event::HandshakeDone { .. } => {
                    self.stats.handshakes += 1;
                    self.handshake_done = true;
                    self.established = true;
                    wake(&mut self.ready_waker);
                }
                Event::Resumed { .. } => {
                    self.stats.resumes += 1;
                    self.established = true;
                }
                Event::ResendRange { start, end } => {
                    self.stats.resend_bytes += end.saturating_sub(start);
                }
                Event::TransportLost { error } => {
                    if error == Some(Error::ResumeRejected(ResumeStatus::Stale)) {
                        self.retry_now = true;
                    }
                    self.stats.count_loss(classify(error))
                }
                Event::PeerClosed => {
                    self.peer_closed = true;
                    wake(&mut self.read_waker)
                }
                Event::Closed { reason } => {
                    if reason != CloseReason::Clean && self.failure.is_none() {
                        self.failure = Some(Failure::ended(&self.core, reason));
                    }
                    self.wake_app();
                }
                _ => {}
            }
        }
        if self.write_waker.is_some() && self.core.unacked() < self.send_cap {
            wake(&mut self.write_waker);
        }
        if self.read_waker.is_some() && self.core.readable() > 0 {
            wake(&mut self.read_waker);
        }
    }

    fn wake_app(&mut self) {
        wake(&mut self.read_waker);
        wake(&mut self.write_waker);
        wake(&mut self.close_waker);
        wake(&mut self.ready_waker);
    }

    fn fail(&mut self, f: Failure) {
        if self.failure.is_none() {
            self.failure = Some(f);
        }
        self.wake_app();
    }
}

/// A client's end of a relink session over tokio. Reconnects and resumes by
/// itself; see the [module docs](self) for the exact semantics.
pub struct ClientStream {
    shared: Arc<Mutex<ClientShared>>,
    task: JoinHandle<()>,
}

impl core::fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let st = lock(&self.shared);
        f.debug_struct("ClientStream")
            .field("conn_id", &st.core.conn_id())
            .field("connected", &st.core.is_connected())
            .field("stats", &st.stats)
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

impl ClientStream {
    /// Connect over TCP to `addr` (resolved again for every reconnect) with
    /// the default [`Backoff`]; returns once the handshake completed.
    pub async fn connect<A>(addr: A, config: Config) -> io::Result<ClientStream>
    where
        A: ToSocketAddrs + Clone + Send + Sync + 'static,
    {
        Self::connect_with(config, Backoff::default(), move || {
            let addr = addr.clone();
            async move {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Ok(s)
            }
        })
        .await
    }

    /// Connect over transports opened by `connect` (called again for every
    /// reconnect), spacing failed attempts by `backoff`; returns once the
    /// handshake completed, or the error that made the driver give up.
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
        let shared = Arc::new(Mutex::new(ClientShared {
            core: crate::Client::new(config.clone(), crate::os_rng()),
            clock: Clock::new(),
            send_cap: config.send_buffer.max(1),
            read_waker: None,
            write_waker: None,
            close_waker: None,
            ready_waker: None,
            driver_waker: None,
            input_blocked: false,
            handshake_done: false,
            retry_now: false,
            peer_closed: false,
            aborted: false,
            established: false,
            close_requested: false,
            failure: None,
            stats: ClientStats::default(),
        }));
        let task = ::tokio::spawn(drive_client(shared.clone(), config, backoff, connect));
        let stream = ClientStream { shared, task };
        poll_fn(|cx| {
            let mut st = lock(&stream.shared);
            if st.handshake_done {
                return Poll::Ready(Ok(()));
            }
            if let Some(f) = &st.failure {
                return Poll::Ready(Err(f.io()));
            }
            register(&mut st.ready_waker, cx);
            Poll::Pending
        })
        .await?;
        Ok(stream)
    }

    /// The driver's counters so far.
    pub fn stats(&self) -> ClientStats {
        lock(&self.shared).stats
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
        lock(&self.shared).core.conn_id()
    }

    /// Whether a transport is attached right now (false while reconnecting).
    pub fn is_connected(&self) -> bool {
        lock(&self.shared).core.is_connected()
    }

    /// Bytes written but not yet acknowledged by the server.
    pub fn unacked(&self) -> usize {
        lock(&self.shared).core.unacked()
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.shared).core.close_reason()
    }
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
        lock(&self.shared).stats
    }

    /// Whether a transport is attached right now.
    pub fn is_connected(&self) -> bool {
        lock(&self.shared).core.is_connected()
    }
}

impl ClientStream {
    /// Abort the session (like a TCP reset): stop sending at once and tell
    /// the server with an authenticated ABORT carrying `code`; reads and
    /// writes fail from then on. The background task keeps reconnecting
    /// until the server acknowledged it or the session is given up, also
    /// after the stream is dropped.
    pub fn abort(&self, code: AbortCode) {
        let mut st = lock(&self.shared);
        if !st.aborted && !st.core.is_closed() {
            st.aborted = true;
            st.core.abort(code);
            st.process_events();
            wake(&mut st.driver_waker);
            st.wake_app();
        }
    }

    /// Once the session ended other than cleanly: the written bytes whose
    /// delivery is unknown, `[acknowledged, written)`.
    pub fn in_doubt(&self) -> Option<ByteRange> {
        lock(&self.shared).core.in_doubt()
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        let mut st = lock(&self.shared);
        // Dropped while the session lives and is not on its way to a clean
        // end (both sides half-closed): abort it; the task runs on until
        // the server acknowledged.
        let finishing = st.close_requested && st.peer_closed;
        if !st.core.is_closed() && st.failure.is_none() {
            if !st.aborted && !finishing {
                st.aborted = true;
                st.core.abort(AbortCode::DROPPED);
                st.process_events();
            }
            if !st.core.is_closed() {
                wake(&mut st.driver_waker);
                return;
            }
        }
        drop(st);
        self.task.abort();
    }
}

/// A connect attempt failed: counted, and reported to the core, which ends
/// the session once its give-up deadline has passed (the driver's wait loop
/// then sees it closed).
fn connect_failed(shared: &Mutex<ClientShared>, clock: &Clock) {
    let mut st = lock(shared);
    st.stats.connect_failures += 1;
    let now = clock.now();
    st.core.connect_failed(now);
    st.process_events();
}

async fn drive_client<F, Fut, T>(
    shared: Arc<Mutex<ClientShared>>,
    config: Config,
    backoff: Backoff,
    mut connect: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<T>> + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let clock = lock(&shared).clock;
    let tick = fallback_tick(&config);
    let connect_timeout: std::time::Duration = config.handshake_timeout.into();
    let mut jitter = crate::os_rng();
    let mut attempt: u32 = 0;
    let mut last_error = String::from("none");
    let mut immediate_retry = false;
    let mut sleep = Box::pin(::tokio::time::sleep_until(TokioInstant::now()));
    loop {
        // Before a session exists the backoff's attempt limit applies; once
        // there is one, only the core ends it (its give-up deadline, from the
        // server's advertised resume timeout, is part of `poll_timeout`).
        let (has_session, retry_now) = {
            let mut st = lock(&shared);
            let has = st.handshake_done || st.core.conn_id().is_some();
            (has, core::mem::take(&mut st.retry_now))
        };
        let policy = backoff.with_session(has_session);
        let Some(delay) = policy.delay(attempt, &mut jitter) else {
            let mut st = lock(&shared);
            st.fail(Failure {
                kind: io::ErrorKind::TimedOut,
                err: SessionError::GaveUp {
                    attempts: attempt,
                    last_error,
                },
            });
            return;
        };
        // A Stale refusal corrected the clock estimate: once in a row, retry
        // at once.
        let delay: std::time::Duration = if retry_now && !immediate_retry {
            immediate_retry = true;
            std::time::Duration::ZERO
        } else {
            immediate_retry = false;
            delay.into()
        };
        let wake_at = TokioInstant::now() + delay;
        loop {
            let until = {
                let mut st = lock(&shared);
                let now = clock.now();
                if st.core.poll_timeout().is_some_and(|d| d <= now) {
                    st.core.handle_timeout(now);
                    st.process_events();
                }
                if st.core.is_closed() {
                    let reason = st
                        .core
                        .close_reason()
                        .unwrap_or(CloseReason::TooManyFailures);
                    if reason != CloseReason::Clean {
                        let f = Failure::ended(&st.core, reason);
                        st.fail(f);
                    }
                    st.wake_app();
                    return;
                }
                if TokioInstant::now() >= wake_at {
                    break;
                }
                // (at least 1 ms: a deadline the core did not move must not
                // make this loop spin)
                let floor = TokioInstant::now() + std::time::Duration::from_millis(1);
                let core_at = st.core.poll_timeout().map(|d| clock.to_tokio(d).max(floor));
                core_at.map_or(wake_at, |c| c.min(wake_at))
            };
            ::tokio::time::sleep_until(until).await;
        }
        attempt += 1;
        let t = match ::tokio::time::timeout(connect_timeout, connect()).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                connect_failed(&shared, &clock);
                last_error = e.to_string();
                continue;
            }
            Err(_) => {
                connect_failed(&shared, &clock);
                last_error = "connect timed out".to_string();
                continue;
            }
        };
        {
            let mut st = lock(&shared);
            let now = clock.now();
            if let Err(e) = st.core.new_transport(now) {
                st.process_events();
                let reason = st.core.close_reason().unwrap_or(CloseReason::Error(e));
                let f = Failure::ended(&st.core, reason);
                st.fail(f);
                return;
            }
            st.stats.transports += 1;
            st.established = false;
        }
        let mut io = TransportIo::new(t);
        let end = poll_fn(|cx| client_poll(&shared, &mut io, &mut sleep, tick, cx)).await;
        match end {
            TransportEnd::SessionOver => return,
            TransportEnd::Lost(why) => {
                let mut st = lock(&shared);
                if st.established {
                    attempt = 0;
                }
                st.established = false;
                last_error = why;
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
                match st.core.handle_input(now, io.input()) {
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
        if st.core.poll_timeout().is_some_and(|d| d <= now) {
            st.core.handle_timeout(now);
            st.process_events();
        }
        if !io.core_ended && !st.core.transport_ended() {
            let core = &mut st.core;
            progress |= io.poll_drain(cx, |buf| core.poll_transmit(now, buf).unwrap_or(0));
        }
        let lost = io
            .lost
            .take()
            .or_else(|| io.eof.then(|| "transport closed by the peer".to_string()));
        if let Some(why) = lost {
            if !st.core.transport_ended() && !st.core.is_closed() {
                st.stats.count_loss(LossKind::Io);
            }
            st.core.transport_lost(now);
            st.process_events();
            if st.core.is_closed() {
                return Poll::Ready(TransportEnd::SessionOver);
            }
            return Poll::Ready(TransportEnd::Lost(why));
        }
        if st.core.is_closed() {
            // A clean end and the answer to the server's ABORT still have
            // frames to write (the last ACK, the ABORT echo).
            let flush = matches!(
                st.core.close_reason(),
                Some(CloseReason::Clean | CloseReason::Aborted { by_peer: true, .. })
            );
            if !flush || (!io.output_pending() && !st.core.wants_transmit(now)) {
                io.poll_close(cx);
                return Poll::Ready(TransportEnd::SessionOver);
            }
        } else if io.core_ended || st.core.transport_ended() {
            st.core.transport_lost(now);
            st.process_events();
            return Poll::Ready(TransportEnd::Lost("ended by the relink core".into()));
        }
        if progress {
            continue;
        }
        if poll_timer(sleep, cx, clock, now, st.core.poll_timeout(), tick) {
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
        let dst = buf.initialize_unfilled();
        match st.core.recv(dst) {
            Ok(n) => {
                buf.advance(n);
                st.stats.bytes_received += n as u64;
                if n > 0 && st.input_blocked {
                    wake(&mut st.driver_waker);
                }
                Poll::Ready(Ok(()))
            }
            Err(Error::WouldBlock) => {
                if let Some(f) = &st.failure {
                    return Poll::Ready(Err(f.io()));
                }
                register(&mut st.read_waker, cx);
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(st.failure.as_ref().map_or(core_error(e), Failure::io))),
        }
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
        if let Some(f) = &st.failure {
            return Poll::Ready(Err(f.io()));
        }
        match st.core.send(buf) {
            Ok(0) if !buf.is_empty() => {
                register(&mut st.write_waker, cx);
                Poll::Pending
            }
            Ok(n) => {
                st.stats.bytes_sent += n as u64;
                wake(&mut st.driver_waker);
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(core_error(e))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &lock(&self.shared).failure {
            Some(f) => Poll::Ready(Err(f.io())),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut guard = lock(&self.shared);
        let st = &mut *guard;
        if !st.close_requested {
            st.close_requested = true;
            st.core.close();
            wake(&mut st.driver_waker);
        }
        match st.core.close_reason() {
            Some(CloseReason::Clean) => Poll::Ready(Ok(())),
            Some(r) => Poll::Ready(Err(Failure::ended(&st.core, r).io())),
            None => {
                if let Some(f) = &st.failure {
                    return Poll::Ready(Err(f.io()));
                }
                register(&mut st.close_waker, cx);
                Poll::Pending
            }
        }
    }
}

// ---------------------------------------------------------------------------
// server

/// Counters of a [`Server`], taken from the core's events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Transports accepted.
    pub transports: u64,
    /// Transports refused because too many were pending.
    pub transports_refused: u64,
    /// Sessions established by a handshake.
    pub handshakes: u64,
    /// Resumes accepted.
    pub resumes: u64,
    /// Sum of the lengths of `ServerEvent::ResendRange`.
    pub resend_bytes: u64,
    /// `ServerEvent::AuthFailed` events (corrupted or forged bytes).
    pub auth_failures: u64,
    /// Transports the core ended because of malformed bytes (e.g. a
    /// corrupted frame header or first message).
    pub lost_protocol: u64,
    /// Transports the core ended because nothing arrived in time.
    pub timeouts: u64,
    /// Transports that ended with EOF or an I/O error.
    pub lost_io: u64,
    /// Sessions that expired without being resumed.
    pub expired: u64,
}

#[derive(Default)]
struct TransportSlot {
    waker: Option<Waker>,
    input_blocked: bool,
}

#[derive(Default)]
struct SessionSlot {
    transport: Option<TransportId>,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    close_waker: Option<Waker>,
    peer_closed: bool,
    closed: Option<CloseReason>,
    close_requested: bool,
    /// The application (or the drop) aborted the session.
    aborted: Option<AbortCode>,
    /// The application dropped its stream: discard what arrives.
    dropped: bool,
}

impl SessionSlot {
    fn wake_all(&mut self) {
        wake(&mut self.read_waker);
        wake(&mut self.write_waker);
        wake(&mut self.close_waker);
    }
}

struct ServerShared {
    core: crate::Server<OsRng>,
    clock: Clock,
    send_cap: usize,
    /// The shortest timer of the config: after any core call, the next
    /// deadline is no earlier than `now + min_timer`, unless it was already.
    min_timer: Duration,
    tick: std::time::Duration,
    transports: HashMap<TransportId, TransportSlot>,
    sessions: HashMap<SessionId, SessionSlot>,
    accept_queue: VecDeque<SessionId>,
    accept_waker: Option<Waker>,
    timer_waker: Option<Waker>,
    timer_armed: Option<Instant>,
    stats: ServerStats,
    stopped: bool,
}

impl ServerShared {
    fn process_events(&mut self) {
        while let Some(e) = self.core.poll_event() {
            match e {
                ServerEvent::HandshakeDone { transport, session } => {
                    self.stats.handshakes += 1;
                    self.sessions.insert(
                        session,
                        SessionSlot {
                            transport: Some(transport),
                            ..SessionSlot::default()
                        },
                    );
                    self.accept_queue.push_back(session);
                    wake(&mut self.accept_waker);
                }
                ServerEvent::Resumed {
                    transport, session, ..
                } => {
                    self.stats.resumes += 1;
                    if let Some(s) = self.sessions.get_mut(&session) {
                        s.transport = Some(transport);
                    }
                }
                ServerEvent::ResendRange { start, end, .. } => {
                    self.stats.resend_bytes += end.saturating_sub(start);
                }
                ServerEvent::CloseTransport { transport, error } => {
                    match classify(error) {
                        LossKind::Timeout => self.stats.timeouts += 1,
                        LossKind::Protocol => self.stats.lost_protocol += 1,
                        _ => {}
                    }
                    if let Some(t) = self.transports.get_mut(&transport) {
                        wake(&mut t.waker);
                    }
                }
                ServerEvent::AuthFailed { .. } => self.stats.auth_failures += 1,
                ServerEvent::PeerClosed { session } => {
                    if let Some(s) = self.sessions.get_mut(&session) {
                        s.peer_closed = true;
                        wake(&mut s.read_waker);
                    }
                }
                ServerEvent::Closed { session, reason } => self.session_over(session, reason),
                ServerEvent::SessionExpired { session } => {
                    self.stats.expired += 1;
                    self.session_over(session, CloseReason::Expired);
                }
                // The server stream's own in-doubt range; the driver does
                // not report it yet (the core event carries it).
                ServerEvent::InDoubt { .. } => {}
            }
        }
    }

    fn session_over(&mut self, sid: SessionId, reason: CloseReason) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.closed = Some(reason);
        s.wake_all();
        if s.dropped {
            self.sessions.remove(&sid);
        }
    }

    /// After bytes moved for `sid`: wake its reader and writer if they can
    /// go on; throw away input of sessions nobody reads any more.
    fn after_io(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.dropped {
            let mut scratch = [0u8; 4096];
            while matches!(self.core.recv(sid, &mut scratch), Ok(n) if n > 0) {}
            return;
        }
        if s.write_waker.is_some() && self.core.unacked(sid) < self.send_cap {
            wake(&mut s.write_waker);
        }
        if s.read_waker.is_some() && self.core.readable(sid) > 0 {
            wake(&mut s.read_waker);
        }
    }

    /// Make sure the timer task looks at the core's deadlines again by
    /// `now + min_timer`.
    fn nudge_timer(&mut self, now: Instant) {
        let hint = now.saturating_add(self.min_timer);
        if self.timer_armed.is_none_or(|a| hint < a) {
            self.timer_armed = Some(hint);
            wake(&mut self.timer_waker);
        }
    }

    fn wake_transport_of(&mut self, sid: SessionId) {
        let t = self.sessions.get(&sid).and_then(|s| s.transport);
        if let Some(slot) = t.and_then(|t| self.transports.get_mut(&t)) {
            wake(&mut slot.waker);
        }
    }

    fn stop(&mut self) {
        self.stopped = true;
        for t in self.transports.values_mut() {
            wake(&mut t.waker);
        }
        for s in self.sessions.values_mut() {
            s.wake_all();
        }
        wake(&mut self.accept_waker);
        wake(&mut self.timer_waker);
    }

    /// The error a stream of `sid` reports once its session is gone.
    fn gone(&self, sid: SessionId) -> io::Error {
        if self.stopped {
            return io::Error::new(io::ErrorKind::ConnectionAborted, "relink server dropped");
        }
        let slot = self.sessions.get(&sid);
        match (slot.and_then(|s| s.closed), slot.and_then(|s| s.aborted)) {
            (Some(r), _) => Failure::closed(r).io(),
            (None, Some(code)) => Failure::closed(CloseReason::Aborted {
                code,
                by_peer: false,
            })
            .io(),
            (None, None) => core_error(Error::UnknownSession),
        }
    }
}

/// A relink server over tokio: accepts transports, lets the core route
/// handshakes and resumes, and yields each new session as a [`ServerStream`].
pub struct Server {
    shared: Arc<Mutex<ServerShared>>,
    local_addr: Option<SocketAddr>,
    tasks: std::vec::Vec<JoinHandle<()>>,
}

impl core::fmt::Debug for Server {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let st = lock(&self.shared);
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("sessions", &st.core.session_count())
            .field("stats", &st.stats)
            .finish()
    }
}

impl Server {
    /// A server without a listener: feed it transports with
    /// [`Server::serve_transport`].
    pub fn new(config: Config) -> Server {
        let min_timer = [
            config.ack_delay,
            config.keepalive_interval,
            config.idle_timeout,
            config.handshake_timeout,
            config.resume_timeout,
        ]
        .into_iter()
        .min()
        .unwrap_or(Duration::from_millis(1))
        .max(Duration::from_millis(1));
        let shared = Arc::new(Mutex::new(ServerShared {
            core: crate::Server::new(config.clone(), crate::os_rng()),
            clock: Clock::new(),
            send_cap: config.send_buffer.max(1),
            min_timer,
            tick: fallback_tick(&config)
                .min(config.ack_delay.into())
                .max(std::time::Duration::from_millis(1)),
            transports: HashMap::new(),
            sessions: HashMap::new(),
            accept_queue: VecDeque::new(),
            accept_waker: None,
            timer_waker: None,
            timer_armed: None,
            stats: ServerStats::default(),
            stopped: false,
        }));
        let timer = ::tokio::spawn(drive_server_timer(shared.clone()));
        Server {
            shared,
            local_addr: None,
            tasks: std::vec![timer],
        }
    }

    /// Listen for TCP connections on `addr`.
    pub async fn bind<A: ToSocketAddrs>(addr: A, config: Config) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let mut server = Server::new(config);
        server.local_addr = Some(listener.local_addr()?);
        let shared = server.shared.clone();
        server.tasks.push(::tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((sock, _)) => {
                        let _ = sock.set_nodelay(true);
                        if serve(&shared, sock).is_err() {
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

    /// The address the listener is bound to (servers made with [`Server::bind`]).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.local_addr
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "relink server has no listener"))
    }

    /// Serve a transport accepted by other means (e.g. a TLS or Unix stream).
    /// Fails when too many transports are pending (the transport is dropped).
    pub fn serve_transport<T>(&self, transport: T) -> io::Result<()>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        serve(&self.shared, transport)
    }

    /// The next new session. Cancellation safe.
    pub async fn accept(&self) -> io::Result<ServerStream> {
        poll_fn(|cx| {
            let mut st = lock(&self.shared);
            if let Some(sid) = st.accept_queue.pop_front() {
                return Poll::Ready(Ok(ServerStream {
                    shared: self.shared.clone(),
                    sid,
                }));
            }
            if st.stopped {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "relink server stopped",
                )));
            }
            register(&mut st.accept_waker, cx);
            Poll::Pending
        })
        .await
    }

    /// The counters so far.
    pub fn stats(&self) -> ServerStats {
        lock(&self.shared).stats
    }

    /// Sessions registered in the core (including ones waiting for a resume).
    pub fn session_count(&self) -> usize {
        lock(&self.shared).core.session_count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        lock(&self.shared).stop();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Register `transport` with the core and spawn its task.
fn serve<T>(shared: &Arc<Mutex<ServerShared>>, transport: T) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tid = {
        let mut st = lock(shared);
        if st.stopped {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "relink server stopped",
            ));
        }
        let now = st.clock.now();
        match st.core.accept(now) {
            Ok(tid) => {
                st.stats.transports += 1;
                st.transports.insert(tid, TransportSlot::default());
                st.nudge_timer(now);
                tid
            }
            Err(e) => {
                st.stats.transports_refused += 1;
                // Too many pending transports: refuse this one, keep serving.
                drop(transport);
                let _ = e;
                return Ok(());
            }
        }
    };
    let shared = shared.clone();
    ::tokio::spawn(async move {
        let mut io = TransportIo::new(transport);
        let mut linger = None;
        poll_fn(|cx| server_transport_poll(&shared, tid, &mut io, &mut linger, cx)).await;
    });
    Ok(())
}

/// How long a transport that is over waits for its last answer (a
/// rejection, DataUnavailable) to be written when the socket is full.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

fn server_transport_poll<T: AsyncRead + AsyncWrite + Unpin>(
    shared: &Mutex<ServerShared>,
    tid: TransportId,
    io: &mut TransportIo<T>,
    linger: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let mut guard = lock(shared);
    let st = &mut *guard;
    loop {
        if st.stopped {
            return Poll::Ready(());
        }
        let now = st.clock.now();
        let mut progress = false;
        loop {
            if io.input_pending() && !io.core_ended {
                match st.core.handle_input(tid, now, io.input()) {
                    Ok(n) => {
                        io.consume(n);
                        progress |= n > 0;
                    }
                    Err(_) => io.core_ended = true,
                }
                if let Some(sid) = st.core.session_of(tid) {
                    st.after_io(sid);
                }
            }
            let blocked = io.input_pending() && !io.core_ended;
            if let Some(slot) = st.transports.get_mut(&tid) {
                slot.input_blocked = blocked;
            }
            if !io.poll_fill(cx) {
                break;
            }
            progress = true;
        }
        st.process_events();
        let core = &mut st.core;
        progress |= io.poll_drain(cx, |buf| core.poll_transmit(tid, now, buf).unwrap_or(0));
        if progress {
            if let Some(sid) = st.core.session_of(tid) {
                st.after_io(sid);
            }
            st.nudge_timer(now);
        }
        // A transport the core ended, or whose peer stopped sending, is
        // closed once everything queued for it (a rejection, a last answer)
        // was written, or writing blocks.
        let ended = st.core.transport_ended(tid);
        // An answer still being written when the socket is full: wait for
        // the socket (its waker is registered) up to LINGER.
        let lingering = (ended || io.eof) && io.output_pending() && io.write_blocked && {
            let sleep = linger.get_or_insert_with(|| Box::pin(::tokio::time::sleep(LINGER)));
            sleep.as_mut().poll(cx).is_pending()
        };
        if lingering && io.lost.is_none() {
            return Poll::Pending;
        }
        if io.lost.is_some() || ((ended || io.eof) && (!io.output_pending() || io.write_blocked)) {
            if (io.lost.is_some() || io.eof) && !ended {
                st.stats.lost_io += 1;
            }
            if io.lost.is_none() {
                io.poll_close(cx);
            }
            st.core.transport_lost(tid, now);
            st.transports.remove(&tid);
            st.process_events();
            st.nudge_timer(now);
            return Poll::Ready(());
        }
        if progress {
            continue;
        }
        if let Some(slot) = st.transports.get_mut(&tid) {
            register(&mut slot.waker, cx);
        }
        return Poll::Pending;
    }
}

async fn drive_server_timer(shared: Arc<Mutex<ServerShared>>) {
    let mut sleep = Box::pin(::tokio::time::sleep_until(TokioInstant::now()));
    poll_fn(|cx| {
        let mut guard = lock(&shared);
        let st = &mut *guard;
        let clock = st.clock;
        loop {
            if st.stopped {
                return Poll::Ready(());
            }
            let now = clock.now();
            if st.core.poll_timeout().is_some_and(|d| d <= now) {
                st.core.handle_timeout(now);
                st.process_events();
                // Due ACKs and keepalives are written by the transport tasks.
                let ServerShared {
                    core, transports, ..
                } = st;
                for (tid, slot) in transports.iter_mut() {
                    if core.wants_transmit(*tid, now) || core.transport_ended(*tid) {
                        wake(&mut slot.waker);
                    }
                }
            }
            let next = st.core.poll_timeout();
            st.timer_armed = next.map(|d| {
                if d <= now {
                    now.saturating_add(st.tick.into())
                } else {
                    d
                }
            });
            if poll_timer(&mut sleep, cx, clock, now, next, st.tick) {
                continue;
            }
            register(&mut st.timer_waker, cx);
            return Poll::Pending;
        }
    })
    .await;
}

/// The server's end of one session. See the [module docs](self) for the
/// exact semantics.
pub struct ServerStream {
    shared: Arc<Mutex<ServerShared>>,
    sid: SessionId,
}

impl core::fmt::Debug for ServerStream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerStream")
            .field("session", &self.sid)
            .finish_non_exhaustive()
    }
}

impl ServerStream {
    /// The core's id of this session.
    pub fn session_id(&self) -> SessionId {
        self.sid
    }

    /// The session's connection id (while the session is registered).
    pub fn conn_id(&self) -> Option<u64> {
        lock(&self.shared).core.conn_id(self.sid)
    }

    /// Bytes written but not yet acknowledged by the client.
    pub fn unacked(&self) -> usize {
        lock(&self.shared).core.unacked(self.sid)
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.shared)
            .sessions
            .get(&self.sid)
            .and_then(|s| s.closed)
    }

    /// Abort the session (like a TCP reset): stop sending at once and tell
    /// the client with an authenticated ABORT carrying `code`; the client's
    /// reads and writes fail with [`io::ErrorKind::ConnectionReset`]. The
    /// server keeps serving the session until the client acknowledged.
    pub fn abort(&self, code: AbortCode) {
        let mut guard = lock(&self.shared);
        let st = &mut *guard;
        let sid = self.sid;
        let Some(slot) = st.sessions.get_mut(&sid) else {
            return;
        };
        if slot.aborted.is_some() || slot.closed.is_some() {
            return;
        }
        slot.aborted = Some(code);
        let _ = st.core.abort(sid, code);
        st.process_events();
        if let Some(slot) = st.sessions.get_mut(&sid) {
            slot.wake_all();
        }
        st.wake_transport_of(sid);
    }
}

impl Drop for ServerStream {
    fn drop(&mut self) {
        let mut guard = lock(&self.shared);
        let st = &mut *guard;
        let sid = self.sid;
        let alive = st.core.has_session(sid);
        let Some(slot) = st.sessions.get_mut(&sid) else {
            return;
        };
        if !alive || slot.closed.is_some_and(|r| r != CloseReason::Clean) {
            st.sessions.remove(&sid);
            return;
        }
        slot.dropped = true;
        // Dropped while the session lives and is not on its way to a clean
        // end (both sides half-closed): abort it. The transport tasks keep
        // serving it until the client acknowledged.
        let finishing = slot.close_requested && slot.peer_closed;
        if slot.aborted.is_none() && !finishing && slot.closed.is_none() {
            slot.aborted = Some(AbortCode::DROPPED);
            let _ = st.core.abort(sid, AbortCode::DROPPED);
            st.process_events();
        }
        st.after_io(sid);
        st.wake_transport_of(sid);
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut guard = lock(&self.shared);
        let st = &mut *guard;
        let sid = self.sid;
        if st.stopped {
            return Poll::Ready(Err(st.gone(sid)));
        }
        let dst = buf.initialize_unfilled();
        match st.core.recv(sid, dst) {
            Ok(n) => {
                buf.advance(n);
                if n > 0 {
                    let t = st.sessions.get(&sid).and_then(|s| s.transport);
                    if let Some(slot) = t.and_then(|t| st.transports.get_mut(&t)) {
                        if slot.input_blocked {
                            wake(&mut slot.waker);
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            Err(Error::WouldBlock) => match st.sessions.get_mut(&sid) {
                Some(s) if s.closed.is_none_or(|r| r == CloseReason::Clean) => {
                    register(&mut s.read_waker, cx);
                    Poll::Pending
                }
                _ => Poll::Ready(Err(st.gone(sid))),
            },
            Err(Error::UnknownSession) if st.sessions.get(&sid).is_some_and(|s| s.peer_closed) => {
                // A cleanly closed session is freed once everything was read.
                Poll::Ready(Ok(()))
            }
            Err(_) => Poll::Ready(Err(st.gone(sid))),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut guard = lock(&self.shared);
        let st = &mut *guard;
        let sid = self.sid;
        if st.stopped {
            return Poll::Ready(Err(st.gone(sid)));
        }
        match st.core.send(sid, buf) {
            Ok(0) if !buf.is_empty() => match st.sessions.get_mut(&sid) {
                Some(s) => {
                    register(&mut s.write_waker, cx);
                    Poll::Pending
                }
                None => Poll::Ready(Err(st.gone(sid))),
            },
            Ok(n) => {
                st.wake_transport_of(sid);
                Poll::Ready(Ok(n))
            }
            Err(Error::UnknownSession | Error::Aborted(_)) => Poll::Ready(Err(st.gone(sid))),
            Err(e) => Poll::Ready(Err(core_error(e))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let st = lock(&self.shared);
        if st.stopped {
            return Poll::Ready(Err(st.gone(self.sid)));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut guard = lock(&self.shared);
        let st = &mut *guard;
        let sid = self.sid;
        if st.stopped {
            return Poll::Ready(Err(st.gone(sid)));
        }
        let Some(slot) = st.sessions.get_mut(&sid) else {
            return Poll::Ready(Err(st.gone(sid)));
        };
        match slot.closed {
            Some(CloseReason::Clean) => return Poll::Ready(Ok(())),
            Some(_) => return Poll::Ready(Err(st.gone(sid))),
            None => {}
        }
        register(&mut slot.close_waker, cx);
        if !slot.close_requested {
            slot.close_requested = true;
            let _ = st.core.close(sid);
            st.wake_transport_of(sid);
        }
        Poll::Pending
    }
}
