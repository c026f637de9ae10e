//! Blocking driver over `std::io` transports (`std` feature).
//!
//! [`ClientStream`] and [`ServerStream`] are relink sessions with the
//! [`std::io::Read`] and [`std::io::Write`] traits (also implemented for
//! `&ClientStream` / `&ServerStream`, so one thread can read while another
//! writes). Background threads move the bytes: per transport one reader
//! (blocking reads, feeds the core) and one writer (waits on a condition
//! variable until the core has something to send or a timer is due, then
//! writes without holding any lock). All protocol decisions stay in the
//! sans-IO core ([`crate::Client`]; [`crate::Endpoint`] and
//! [`crate::Connection`] on the server).
//!
//! The client reconnects by itself: when a transport breaks (error, EOF,
//! idle timeout, a frame that fails authentication) it opens a new one with
//! the user's connect function, spacing attempts with [`crate::Backoff`], and
//! resumes the session; `read` and `write` just continue. It keeps trying
//! until the core ends the session (the server's advertised resume timeout
//! passed without contact). Every attempt resolves the server's name again
//! and each TCP connect is bounded by [`ClientBuilder::connect_timeout`].
//! Before a session exists, `connect` fails at once with a
//! [`SessionError::Connect`] naming the address when the server refuses,
//! does not answer, is not a relink server, or does not prove the pinned
//! key; with [`ClientBuilder::wait_for_server`] it retries instead, up to
//! `Backoff::max_attempts` failures in a row. When the session is over for
//! good, every call returns an [`io::Error`] whose inner error is a
//! [`SessionError`].
//!
//! The core's clock is `CLOCK_BOOTTIME` on Linux and Android (it keeps
//! counting while the machine sleeps), std's `Instant` elsewhere.
//!
//! # Semantics
//! Written once for both drivers in [`crate::driver`]: `write` blocks at
//! `Config::send_buffer` unacknowledged bytes; `flush` blocks until every
//! byte written was acknowledged; `read` returns `Ok(0)` once the peer
//! closed its side; `shutdown_write` half-closes and returns once the peer
//! acknowledged the CLOSE (reading goes on until the peer's EOF); `close`
//! half-closes and waits until the session ended cleanly, discarding
//! unread input; `abort(code)` ends the session like a TCP reset; dropping
//! a stream that was neither closed nor aborted aborts with
//! [`AbortCode::DROPPED`]; after an unclean end every call fails with the
//! same [`SessionError`].
//!
//! Timers: the client's writer thread waits on the condition variable until
//! `poll_timeout`; the server has one timer thread for all sessions (see
//! below). Writes use a short write timeout so that a writer blocked by a
//! stalled path still notices the idle timeout.
//!
//! # Server structure and locks
//! A [`Listener`] runs an accept thread, a timer thread, and a reader and a
//! writer thread per transport. Its state is split by what it serves:
//! - **the endpoint lock** guards the [`crate::Endpoint`] (handshakes in
//!   progress, routing table, its deadline index), the transports it still
//!   holds, the map from session id to session, and the accept queue. It is
//!   held only to accept, run a handshake step, route a resume request or
//!   apply what a session asks of the endpoint: never across socket I/O or
//!   a session's frame processing;
//! - **one lock per session** guards its [`crate::Connection`] (stream,
//!   keys, timers) and the driver's data about it (how it ended, peer
//!   address, half-closes). Once the endpoint handed a transport to a
//!   session, the transport's reader and writer, the application's
//!   [`ServerStream`] and the timer thread take that lock only, so no
//!   session waits for another one's frame processing or progress
//!   callback (which runs with the session's lock held);
//! - **the timer index** (a small lock of its own) orders the sessions'
//!   next deadlines and holds the endpoint's.
//!
//! **Rule: a thread never holds the endpoint lock and a session lock at the
//! same time.** What a session call produces for the endpoint (an
//! [`crate::EndpointEvent`], a new session for the accept queue, the
//! removal of a drained session) is collected under the session lock and
//! applied under the endpoint lock after the session lock is released.
//! The timer-index lock may be taken while holding either, never the other
//! way round. Statistics are atomics.
//!
//! A transport starts with the endpoint: its reader feeds the endpoint, its
//! writer sends the endpoint's bytes (ServerHello, rejections). When the
//! endpoint completes a handshake (`Dispatch::NewConnection`) the new
//! session takes the transport; when it routes a resume request
//! (`Dispatch::Resume`) the reader passes it to the session's connection,
//! which accepts the transport or refuses it (the writer then sends the
//! refusal and closes).
//!
//! The timer thread sleeps until the first deadline of the index. It runs
//! the endpoint's timers under the endpoint lock, and visits each due
//! session, and only those, under that session's lock; a session whose lock
//! is busy is retried shortly after instead of holding up the others (any
//! thread that holds a session's lock also runs its due timers). A
//! session's timers run without any transport too (its expiry).
//!
//! ```
//! use std::io::{Read, Write};
//! use relink::blocking::{connect, Listener};
//! use relink::Config;
//!
//! # fn main() -> std::io::Result<()> {
//! let listener = Listener::bind("127.0.0.1:0", Config::default())?;
//! let addr = listener.local_addr();
//! let t = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
//!     let mut session = listener.accept()?;
//!     let mut got = Vec::new();
//!     session.read_to_end(&mut got)?; // until the client closed
//!     session.close()?;
//!     Ok(got)
//! });
//! let mut client = connect(addr, Config::default())?;
//! client.write_all(b"survives broken connections")?;
//! client.close()?; // waits for the clean end
//! assert_eq!(t.join().unwrap()?, b"survives broken connections");
//! # Ok(()) }
//! ```

use std::boxed::Box;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::thread::{self, JoinHandle};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use std::vec;
use std::vec::Vec;

use crate::driver::{
    self, AuthFn, ClientCore, DriverClock, ProgressFn, Reconnect, ServerCounters, SessionSlot, Step,
};
use crate::{
    os_rng, AbortCode, Backoff, ByteRange, CloseReason, Config, Connection, Dispatch, Endpoint,
    EndpointEvent, Error, Instant, OsRng, Rejection, ServerEvent, SessionId, TransportId,
    MIN_TRANSMIT_BUFFER,
};

/// How long a blocked socket write waits before the writer re-checks the
/// session (idle timeout, shutdown) and tries again.
const WRITE_CHECK: StdDuration = StdDuration::from_millis(200);
/// How long dropping a [`Listener`] waits for answers still being written.
const LINGER: StdDuration = StdDuration::from_secs(1);
/// Bytes the writer collects from the core before one socket write.
const WRITE_CHUNK: usize = 256 * 1024;
/// Bytes read from a socket at once.
const READ_CHUNK: usize = 64 * 1024;
/// Floor of a timer wait whose deadline already passed (the due work is the
/// writer's, which is busy): keeps a blocked writer from making us spin.
const OVERDUE_WAIT: StdDuration = StdDuration::from_millis(20);

/// A byte-stream transport the blocking driver can run relink over.
///
/// Implemented for [`TcpStream`] and (on Unix)
/// [`std::os::unix::net::UnixStream`]; implement it for an in-memory pipe or
/// any other duplex stream to use [`ClientBuilder::connect_with`].
pub trait Transport: Read + Write + Send + Sized + 'static {
    /// A second handle to the same connection (one thread reads, another
    /// writes).
    fn try_clone(&self) -> io::Result<Self>;
    /// Bound how long one `write` may block (`None`: forever). The driver
    /// sets a short timeout and retries, so that a writer stuck on a stalled
    /// path still notices timeouts.
    fn set_write_timeout(&self, timeout: Option<StdDuration>) -> io::Result<()>;
    /// Shut the connection down both ways: a thread blocked in `read` or
    /// `write` on any handle must return.
    fn shutdown(&self) -> io::Result<()>;
}

impl Transport for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }
    fn set_write_timeout(&self, timeout: Option<StdDuration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
    }
    fn shutdown(&self) -> io::Result<()> {
        TcpStream::shutdown(self, Shutdown::Both)
    }
}

#[cfg(unix)]
impl Transport for std::os::unix::net::UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        std::os::unix::net::UnixStream::try_clone(self)
    }
    fn set_write_timeout(&self, timeout: Option<StdDuration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_write_timeout(self, timeout)
    }
    fn shutdown(&self) -> io::Result<()> {
        std::os::unix::net::UnixStream::shutdown(self, Shutdown::Both)
    }
}

pub use crate::driver::{
    close_reason_text, ClientStats, Decision, Progress, Resolve, ServerAddr, ServerStats,
    SessionError,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait<'a, T>(c: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    c.wait(g).unwrap_or_else(|e| e.into_inner())
}

fn wait_for<'a, T>(c: &Condvar, g: MutexGuard<'a, T>, d: StdDuration) -> MutexGuard<'a, T> {
    c.wait_timeout(g, d).unwrap_or_else(|e| e.into_inner()).0
}

/// How long to wait for `deadline` (at least [`OVERDUE_WAIT`] when it is
/// already due, at most a minute).
fn until(deadline: Option<Instant>, now: Instant) -> StdDuration {
    match deadline {
        Some(d) if d > now => StdDuration::from_micros(d.saturating_since(now).as_micros()),
        Some(_) => OVERDUE_WAIT,
        None => StdDuration::from_secs(60),
    }
    .min(StdDuration::from_secs(60))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Write `data` fully with write timeouts; after each timeout `alive` says
/// whether to keep trying.
fn write_all_checked<T: Write>(
    t: &mut T,
    mut data: &[u8],
    mut alive: impl FnMut() -> bool,
) -> io::Result<()> {
    while !data.is_empty() {
        match t.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if is_timeout(&e) => {
                if !alive() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ===========================================================================
// Client
// ===========================================================================

/// Connect to a relink server at `addr` over TCP with the default options
/// (see [`ClientBuilder`]) and wait until the first handshake completed.
pub fn connect<A: ServerAddr>(addr: A, config: Config) -> io::Result<ClientStream> {
    ClientBuilder::new(config).connect(addr)
}

/// Options of a [`ClientStream`].
///
/// # Before a session exists
/// By default the first connection fails **at once**, with an
/// [`io::Error`] whose inner error is [`SessionError::Connect`] and whose
/// message names the address, when:
/// - the server refuses it ([`io::ErrorKind::ConnectionRefused`],
///   `relink: connection to 127.0.0.1:7000 refused`), or the TCP connect
///   does not complete within the connect timeout
///   ([`io::ErrorKind::TimedOut`]);
/// - the peer accepts the connection and closes it without a whole answer
///   to the handshake, like a port forward with nothing behind it
///   ([`io::ErrorKind::ConnectionRefused`], cause `None`; the message says
///   it did not answer the relink handshake);
/// - the peer is not a relink server: it answers the handshake with
///   something else ([`io::ErrorKind::InvalidData`]), or does not answer
///   within `Config::handshake_timeout` ([`io::ErrorKind::TimedOut`]);
/// - with a pinned server key, the answer does not prove that key
///   ([`io::ErrorKind::PermissionDenied`], cause
///   [`Error::ServerKeyMismatch`]; the message names the key's first 8 hex
///   digits). This one fails at once whatever the options.
///
/// With [`ClientBuilder::wait_for_server`] the driver instead keeps trying
/// (the server may not be up yet) following the [`Backoff`], whose
/// `max_attempts` then bounds the attempts; when it gives up after peers
/// that closed without answering, [`SessionError::GaveUp`] names the
/// address and says the peer did not answer the relink handshake. A
/// server that answers Busy is always retried that way.
///
/// # Once a session exists
/// Nothing of the above applies: every failure costs one transport, and
/// the driver reconnects until the core ends the session.
pub struct ClientBuilder {
    config: Config,
    backoff: Backoff,
    progress: Option<ProgressFn>,
    wait_for_server: bool,
    connect_timeout: Option<StdDuration>,
}

driver::client_builder_common!();

impl ClientBuilder {
    /// The longest one TCP connect (per address) of
    /// [`ClientBuilder::connect`] may take, so that a host that drops SYNs
    /// does not block for the OS's minutes. Default:
    /// `Config::handshake_timeout` (10 s), at least 100 ms. A transport of
    /// [`ClientBuilder::connect_with`] is opened by the caller's function,
    /// which bounds it itself.
    pub fn connect_timeout(mut self, timeout: StdDuration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Connect over TCP and wait for the first handshake. `addr` is
    /// resolved again before every attempt (the first and each reconnect);
    /// the addresses are tried in order, each bounded by the connect
    /// timeout.
    pub fn connect<A: ServerAddr>(self, addr: A) -> io::Result<ClientStream> {
        let resolver = addr.into_resolver();
        let timeout = self
            .connect_timeout
            .unwrap_or_else(|| driver::default_connect_timeout(&self.config));
        self.start(move || {
            let addrs = driver::resolve_now(&resolver)?;
            let mut last = None;
            for a in addrs {
                match TcpStream::connect_timeout(&a, timeout) {
                    Ok(s) => {
                        s.set_nodelay(true)?;
                        return Ok((s, Some(a)));
                    }
                    Err(e) => last = Some(driver::connect_error(a, &e, timeout)),
                }
            }
            Err(last.unwrap_or_else(|| io::Error::other("relink: no address to connect to")))
        })
    }

    /// Open every transport with `connect` (the first for the handshake,
    /// later ones to resume) and wait for the first handshake.
    pub fn connect_with<T, F>(self, mut connect: F) -> io::Result<ClientStream>
    where
        T: Transport,
        F: FnMut() -> io::Result<T> + Send + 'static,
    {
        self.start(move || connect().map(|t| (t, None)))
    }

    fn start<T, F>(self, connect: F) -> io::Result<ClientStream>
    where
        T: Transport,
        F: FnMut() -> io::Result<(T, Option<SocketAddr>)> + Send + 'static,
    {
        crate::driver::check_credential(&self.config)?;
        let shared = Arc::new(ClientShared {
            state: Mutex::new(ClientState {
                c: ClientCore::new(self.config.clone(), self.progress),
                lost: false,
                stopping: false,
                done: false,
                kill: None,
                writer_parked: false,
            }),
            cond: Condvar::new(),
            clock: DriverClock::new(),
        });
        let s = shared.clone();
        let policy = Reconnect::new(self.backoff, self.wait_for_server, self.config);
        let driver = thread::Builder::new()
            .name("relink-client".into())
            .spawn(move || client_driver(s, connect, policy))?;
        let stream = ClientStream {
            shared,
            driver: Some(driver),
        };
        {
            let mut st = lock(&stream.shared.state);
            while !st.c.ready() {
                if let Some(f) = &st.c.failure {
                    return Err(f.to_io());
                }
                st = wait(&stream.shared.cond, st);
            }
        }
        Ok(stream)
    }
}

struct ClientShared {
    state: Mutex<ClientState>,
    cond: Condvar,
    clock: DriverClock,
}

impl ClientShared {
    fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Wait on the session's condition until `step` is ready.
    fn wait_until<R>(
        &self,
        mut step: impl FnMut(&mut ClientState) -> Step<Result<R, SessionError>>,
    ) -> io::Result<R> {
        let mut st = lock(&self.state);
        loop {
            match step(&mut st) {
                Step::Ready(r) => {
                    drop(st);
                    self.cond.notify_all();
                    return r.map_err(|e| e.to_io());
                }
                Step::Wait => {
                    // The call may have queued output (a CLOSE, a window
                    // update) before deciding to wait: a writer asleep with
                    // nothing to send must not wait for its next timer.
                    if st.writer_parked && st.c.core.wants_transmit(self.now()) {
                        st.writer_parked = false;
                        self.cond.notify_all();
                    }
                    st = wait(&self.cond, st);
                }
            }
        }
    }
}

struct ClientState {
    /// The session (shared driver core).
    c: ClientCore,
    /// The reader reported the current transport broken.
    lost: bool,
    /// The stream was dropped.
    stopping: bool,
    /// The driver thread finished (after flushing the clean end).
    done: bool,
    /// Shuts the current transport down.
    kill: Option<Box<dyn Fn() + Send>>,
    /// The writer found nothing to send and waits on the condition (not
    /// woken since): a call that gives the core output must wake it.
    writer_parked: bool,
}

impl ClientState {
    /// No more progress will come from the driver thread.
    fn stopped(&self) -> bool {
        self.done || self.stopping
    }
}

/// `Read` and `Write` for a stream type and for shared references to it
/// (one thread may read while another writes), from its `read_inner`,
/// `write_inner` and `flush_inner`.
macro_rules! impl_read_write {
    ($ty:ty) => {
        impl Read for $ty {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.read_inner(buf)
            }
        }
        impl Read for &$ty {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.read_inner(buf)
            }
        }
        impl Write for $ty {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.write_inner(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                self.flush_inner()
            }
        }
        impl Write for &$ty {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.write_inner(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                self.flush_inner()
            }
        }
    };
}

/// A relink client session over a succession of transports that the driver
/// opens by itself. Implements [`Read`] and [`Write`] (also for
/// `&ClientStream`); the semantics are those of [`crate::driver`].
///
/// Dropping it while the session lives aborts the session with
/// [`AbortCode::DROPPED`] (unless both sides already half-closed): the
/// driver thread keeps going until the server acknowledged the ABORT, so
/// the server learns at once. Call [`ClientStream::close`] first to end
/// the session cleanly.
pub struct ClientStream {
    shared: Arc<ClientShared>,
    driver: Option<JoinHandle<()>>,
}

impl fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.shared.state);
        f.debug_struct("ClientStream")
            .field("client", &st.c.core)
            .field("stats", &st.c.stats)
            .finish_non_exhaustive()
    }
}

impl ClientStream {
    /// The session's connection id.
    pub fn conn_id(&self) -> Option<u64> {
        lock(&self.shared.state).c.core.conn_id()
    }

    /// Whether a transport is attached and frames flow right now.
    pub fn is_connected(&self) -> bool {
        lock(&self.shared.state).c.core.is_connected()
    }

    /// Counters: transports, resumes, resent bytes, failed connects.
    pub fn stats(&self) -> ClientStats {
        lock(&self.shared.state).c.stats
    }

    /// Bytes written but not yet acknowledged by the server.
    pub fn unacked(&self) -> usize {
        lock(&self.shared.state).c.core.unacked()
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.shared.state).c.core.close_reason()
    }

    /// Half-close: a CLOSE frame follows the last byte written; returns
    /// once the server acknowledged it (it received everything). Reading
    /// continues until the server closes too.
    pub fn shutdown_write(&self) -> io::Result<()> {
        let mut st = lock(&self.shared.state);
        st.c.start_shutdown().map_err(|e| e.to_io())?;
        drop(st);
        self.shared.cond.notify_all();
        self.shared.wait_until(|st| {
            let stopped = st.stopped();
            st.c.shutdown(stopped)
        })
    }

    /// Abort the session (like a TCP reset): stop sending at once and tell
    /// the server with an authenticated ABORT carrying `code`; its reads and
    /// writes fail with [`io::ErrorKind::ConnectionReset`]. Returns at once;
    /// the driver keeps reconnecting until the server acknowledged the
    /// ABORT or the session is given up (see [`ClientStream::wait_closed`]),
    /// also after the stream is dropped. Later calls of this stream fail.
    pub fn abort(&self, code: AbortCode) {
        abort_client(&self.shared, code);
    }

    /// Wait until the session is over (closed cleanly, aborted and
    /// acknowledged, or lost for good), at most `timeout`. Returns whether
    /// it is over.
    pub fn wait_closed(&self, timeout: StdDuration) -> bool {
        wait_client_closed(&self.shared, timeout)
    }

    /// A handle that can abort this session from another thread (e.g. a
    /// signal handler thread) while the stream is in use.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle(HandleInner::Client(self.shared.clone()))
    }

    /// Once the session ended other than cleanly: the written bytes whose
    /// delivery is unknown, `[acknowledged, written)`.
    pub fn in_doubt(&self) -> Option<ByteRange> {
        lock(&self.shared.state).c.core.in_doubt()
    }

    /// Close the session cleanly: half-close, then wait until the server
    /// closed its side too and both CLOSEs were acknowledged. Input not read
    /// yet is discarded. Errors when the session is lost instead.
    pub fn close(&self) -> io::Result<()> {
        lock(&self.shared.state)
            .c
            .start_shutdown()
            .map_err(|e| e.to_io())?;
        self.shared.cond.notify_all();
        self.shared.wait_until(|st| {
            let (done, stopped) = (st.done, st.stopped());
            let unread = st.c.core.readable() > 0;
            let step = st.c.close(done, stopped);
            if unread {
                // Room was freed: wake the reader thread waiting for it.
                self.shared.cond.notify_all();
            }
            step
        })
    }

    fn read_inner(&self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        self.shared.wait_until(|st| {
            let stopped = st.stopped();
            st.c.read(out, stopped)
        })
    }

    fn write_inner(&self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        self.shared.wait_until(|st| {
            let stopped = st.stopped();
            st.c.write(data, stopped)
        })
    }

    fn flush_inner(&self) -> io::Result<()> {
        self.shared.wait_until(|st| st.c.flush(st.stopped()))
    }

    /// Time since authenticated input from the server last arrived (data,
    /// an acknowledgement, a keepalive, or the answer to a handshake or
    /// resume), by the process's monotonic clock; `None` before the first.
    /// For "last contact" displays.
    pub fn last_received(&self) -> Option<StdDuration> {
        lock(&self.shared.state).c.last_received()
    }

    /// The token the server granted when it accepted this client (servers
    /// that decide on clients, `ListenerBuilder::authenticate`), if any:
    /// present it in later sessions as [`crate::Credential::Token`].
    /// Opaque bytes; keep them as private as the credential.
    pub fn token(&self) -> Option<Vec<u8>> {
        lock(&self.shared.state).c.token.clone()
    }
}

impl_read_write!(ClientStream);

fn abort_client(shared: &ClientShared, code: AbortCode) {
    lock(&shared.state).c.abort(code, shared.now());
    shared.cond.notify_all();
}

fn wait_client_closed(shared: &ClientShared, timeout: StdDuration) -> bool {
    let end = StdInstant::now() + timeout;
    let mut st = lock(&shared.state);
    loop {
        // `done`: the driver thread also wrote what the end still owed the
        // peer (the last ACK, the answer to its ABORT).
        if st.done || (st.c.failure.is_some() && !st.c.core.is_closed()) {
            return true;
        }
        let left = end.saturating_duration_since(StdInstant::now());
        if left.is_zero() {
            return false;
        }
        st = wait_for(&shared.cond, st, left);
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        let mut st = lock(&self.shared.state);
        // Dropped while the session lives: the driver thread runs on until
        // the server acknowledged the ABORT (or the clean end).
        if !st.done && st.c.on_drop(self.shared.now()) {
            drop(st);
            self.shared.cond.notify_all();
            return;
        }
        st.stopping = true;
        if let Some(kill) = &st.kill {
            kill();
        }
        let done = st.done;
        drop(st);
        self.shared.cond.notify_all();
        if done {
            if let Some(h) = self.driver.take() {
                let _ = h.join();
            }
        }
    }
}

/// How one transport of the client ended.
enum Outcome {
    /// Broken; open another one.
    Lost,
    /// The session is over (clean end flushed, closed for good, or dropped).
    Finished,
}

/// The driver thread is over: mark it and wake every waiter.
fn finish(shared: &ClientShared, mut st: MutexGuard<'_, ClientState>) {
    st.done = true;
    drop(st);
    shared.cond.notify_all();
}

fn client_driver<T, F>(shared: Arc<ClientShared>, mut connect: F, mut policy: Reconnect)
where
    T: Transport,
    F: FnMut() -> io::Result<(T, Option<SocketAddr>)>,
{
    loop {
        let delay = {
            let mut st = lock(&shared.state);
            match policy.next_delay(&mut st.c) {
                Ok(d) => d,
                Err(_) => return finish(&shared, st),
            }
        };
        {
            let deadline = StdInstant::now() + delay;
            let mut st = lock(&shared.state);
            loop {
                // Timers run while detached too: the core closes the session
                // once the server can no longer hold it.
                if st.stopping || st.c.tick(shared.now()) {
                    return finish(&shared, st);
                }
                let left = deadline.saturating_duration_since(StdInstant::now());
                if left.is_zero() {
                    break;
                }
                let core_wait = st.c.core.poll_timeout().map_or(left, |d| {
                    shared.clock.until(d).max(StdDuration::from_millis(1))
                });
                st = wait_for(&shared.cond, st, left.min(core_wait));
            }
            st.c.report(Progress::Connecting {
                attempt: policy.attempt,
                delay,
            });
        }
        let transport = connect().and_then(|(t, a)| {
            let r = t.try_clone()?;
            t.set_write_timeout(Some(WRITE_CHECK))?;
            let k = t.try_clone()?;
            Ok((t, r, k, a))
        });
        let (mut t, reader, killer, peer) = match transport {
            Ok(x) => x,
            Err(e) => {
                let mut st = lock(&shared.state);
                if policy.connect_failed(&mut st.c, &e, shared.now()).is_err() {
                    return finish(&shared, st);
                }
                drop(st);
                shared.cond.notify_all();
                continue;
            }
        };
        {
            let mut st = lock(&shared.state);
            if st.stopping || st.c.new_transport(shared.now(), peer).is_err() {
                let _ = t.shutdown();
                return finish(&shared, st);
            }
            st.lost = false;
            st.kill = Some(Box::new(move || {
                let _ = killer.shutdown();
            }));
        }
        let s = shared.clone();
        let reader = thread::Builder::new()
            .name("relink-client-rx".into())
            .spawn(move || client_reader(s, reader));
        let outcome = match &reader {
            Ok(_) => client_writer(&shared, &mut t),
            Err(_) => Outcome::Lost,
        };
        // Stop the reader before the next transport starts.
        let _ = t.shutdown();
        lock(&shared.state).lost = true;
        shared.cond.notify_all();
        if let Ok(h) = reader {
            let _ = h.join();
        }
        let mut st = lock(&shared.state);
        st.kill = None;
        match outcome {
            Outcome::Finished => return finish(&shared, st),
            Outcome::Lost => {
                st.c.transport_lost(shared.now(), "the connection broke");
                let why = "transport broke before the handshake/resume completed";
                if policy.transport_ended(&mut st.c, why).is_err() {
                    return finish(&shared, st);
                }
                drop(st);
                shared.cond.notify_all();
            }
        }
    }
}

fn client_writer<T: Transport>(shared: &ClientShared, t: &mut T) -> Outcome {
    let mut buf = vec![0u8; WRITE_CHUNK];
    let mut st = lock(&shared.state);
    loop {
        if st.stopping {
            return Outcome::Finished;
        }
        let now = shared.now();
        st.c.tick(now);
        let mut n = 0;
        while buf.len() - n >= MIN_TRANSMIT_BUFFER {
            match st.c.core.poll_transmit(now, &mut buf[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        if n > 0 {
            drop(st);
            let r = write_all_checked(t, &buf[..n], || {
                let mut st = lock(&shared.state);
                st.c.tick(shared.now());
                !(st.stopping || st.lost || st.c.core.transport_ended())
            });
            st = lock(&shared.state);
            if r.is_err() {
                drop(st);
                shared.cond.notify_all();
                return Outcome::Lost;
            }
            continue;
        }
        if st.c.core.is_closed() {
            // Clean end (its last ACK just went out) or closed for good.
            return Outcome::Finished;
        }
        if st.lost || st.c.core.transport_ended() {
            return Outcome::Lost;
        }
        let d = until(st.c.core.poll_timeout(), now);
        st.writer_parked = true;
        st = wait_for(&shared.cond, st, d);
    }
}

fn client_reader<T: Transport>(shared: Arc<ClientShared>, mut t: T) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let r = t.read(&mut buf);
        let mut st = lock(&shared.state);
        if st.lost || st.stopping {
            return;
        }
        let n = match r {
            Ok(n) if n > 0 => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            _ => {
                st.lost = true;
                drop(st);
                shared.cond.notify_all();
                return;
            }
        };
        let mut off = 0;
        loop {
            let now = shared.now();
            let r = st.c.core.handle_input(now, &buf[off..n]);
            st.c.drain(now);
            match r {
                Ok(k) => off += k,
                Err(_) => {
                    st.lost = true;
                    drop(st);
                    shared.cond.notify_all();
                    return;
                }
            }
            shared.cond.notify_all();
            if off >= n {
                break;
            }
            // Receive buffer full: wait until the application read.
            st = wait(&shared.cond, st);
            if st.lost || st.stopping {
                return;
            }
        }
    }
}

// ===========================================================================
// Server
// ===========================================================================

/// Options of a [`Listener`].
pub struct ListenerBuilder {
    config: Config,
    progress: Option<ProgressFn>,
    authenticate: Option<AuthFn>,
    /// Every transport starts with a PROXY v2 header.
    proxy_protocol: bool,
}

driver::listener_builder_common!();

impl ListenerBuilder {
    /// Bind a TCP listener on `addr` and start accepting transports.
    pub fn bind<A: ToSocketAddrs>(self, addr: A) -> io::Result<Listener> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let mut config = self.config;
        if config.wall_clock.is_none() {
            config.wall_clock = Some(Arc::new(crate::SystemWallClock));
        }
        let proxy = self.proxy_protocol.then(|| ProxyGate {
            timeout: config.handshake_timeout.into(),
            max_waiting: config.max_pending_transports,
            waiting: std::sync::atomic::AtomicUsize::new(0),
        });
        let shared = Arc::new(ServerShared {
            proxy,
            ep: Mutex::new(EndpointState {
                endpoint: Endpoint::new(config, os_rng()),
                links: HashMap::new(),
                sessions: HashMap::new(),
                incoming: VecDeque::new(),
            }),
            incoming_cond: Condvar::new(),
            timers: Mutex::new(TimerIndex::default()),
            timer_cond: Condvar::new(),
            stopping: AtomicBool::new(false),
            stats: ServerCounters::default(),
            progress: self.progress,
            authenticate: self.authenticate,
            clock: DriverClock::new(),
        });
        let s = shared.clone();
        let accept = thread::Builder::new()
            .name("relink-accept".into())
            .spawn(move || server_accept(s, listener))?;
        let s = shared.clone();
        let timer = thread::Builder::new()
            .name("relink-timer".into())
            .spawn(move || server_timer(s));
        let timer = match timer {
            Ok(t) => t,
            Err(e) => {
                // Stop the accept thread again (Listener's drop does this).
                drop(Listener {
                    shared,
                    addr,
                    threads: vec![accept],
                });
                return Err(e);
            }
        };
        Ok(Listener {
            shared,
            addr,
            threads: vec![accept, timer],
        })
    }
}

/// What the listener's threads share. Locks: `ep` (the endpoint), one per
/// session ([`SessionShared`]), and `timers`; see the module docs for the
/// rule that orders them.
struct ServerShared {
    /// `ListenerBuilder::proxy_protocol`: how transports' headers are read.
    proxy: Option<ProxyGate>,
    ep: Mutex<EndpointState>,
    /// `Listener::accept` waits here for the accept queue.
    incoming_cond: Condvar,
    timers: Mutex<TimerIndex>,
    timer_cond: Condvar,
    stopping: AtomicBool,
    stats: ServerCounters,
    progress: Option<ProgressFn>,
    /// Decides on clients (`ListenerBuilder::authenticate`).
    authenticate: Option<AuthFn>,
    clock: DriverClock,
}

impl ServerShared {
    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn report(&self, e: ServerEvent) {
        self.stats.count(&e);
        if let Some(f) = &self.progress {
            f(&Progress::Server(e));
        }
    }
}

/// The endpoint and its routing, behind `ServerShared::ep`. Held only for
/// accepting, handshakes and routing, never across socket I/O or a
/// session's frame processing, and never together with a session lock.
struct EndpointState {
    endpoint: Endpoint<OsRng>,
    /// Every transport whose writer thread runs, and who serves it.
    links: HashMap<TransportId, LinkEntry>,
    /// Sessions the endpoint routes to (until their connection is drained).
    sessions: HashMap<SessionId, Arc<SessionShared>>,
    /// New sessions not yet taken by `Listener::accept`.
    incoming: VecDeque<Arc<SessionShared>>,
}

struct LinkEntry {
    link: Arc<Link>,
    owner: Owner,
}

/// Who serves a transport: it starts with the endpoint and moves, once,
/// to a session or to a refusal.
enum Owner {
    /// Handshake, resume request not complete yet, or ended by the endpoint.
    Endpoint,
    /// The endpoint routed a resume request; the reader is passing it to the
    /// session.
    Handoff,
    /// The session's connection serves it.
    Session(Arc<SessionShared>),
    /// A resume refused after routing: write the reply, then close.
    Refused { reply: Rejection, sent: bool },
}

/// One accepted TCP transport.
struct Link {
    id: TransportId,
    /// A handle to shut the socket down.
    socket: TcpStream,
    /// The remote address.
    peer: Option<SocketAddr>,
    /// The reader saw EOF or an error, or the writer failed.
    lost: AtomicBool,
    /// The core ended it (its writer flushes the last bytes and closes).
    ending: AtomicBool,
    /// The writer waits here (with the endpoint lock) while the endpoint
    /// serves the transport or hands it over.
    cond: Condvar,
}

impl Link {
    fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// Deadlines of the sessions and of the endpoint, for the timer thread.
/// A session's entry is at or before its connection's next deadline
/// (entries are moved earlier at once, later only by the visit they cause).
#[derive(Default)]
struct TimerIndex {
    sessions: BTreeMap<(Instant, SessionId), Arc<SessionShared>>,
    endpoint: Option<Instant>,
}

/// One session: its connection and the driver's data about it, behind its
/// own lock. Every thread serving the session (the reader and writer of
/// its transports, the application, the timer thread) takes only this lock.
struct SessionShared {
    sid: SessionId,
    state: Mutex<SessionState>,
    /// Every change of the session (input, output room, events, end).
    cond: Condvar,
}

impl SessionShared {
    fn lock(&self) -> MutexGuard<'_, SessionState> {
        lock(&self.state)
    }
}

struct SessionState {
    /// `None` once drained (ended, everything read): the endpoint no longer
    /// routes to it.
    conn: Option<Box<Connection>>,
    /// The driver core's data about the session.
    info: SessionSlot,
    /// Transports handed to the session, until their writer ends.
    links: HashMap<TransportId, Arc<Link>>,
    /// The session's entry in the timer index.
    due: Option<Instant>,
    /// Work for the endpoint, applied once the lock is released.
    pending: Deferred,
    /// A writer found nothing to send and waits on the session's condition
    /// (not woken since): the next call that gives the connection output
    /// must wake it (see [`after`]).
    writer_parked: bool,
}

/// What a call on a session owes the endpoint (applied under the endpoint
/// lock after the session lock is released) and its waiters.
#[derive(Default)]
struct Deferred {
    endpoint_events: Vec<EndpointEvent>,
    /// A new session for the accept queue.
    accept: bool,
    /// The connection was drained: remove the session from the routing map.
    freed: bool,
    /// Events changed the session: wake its waiters.
    changed: bool,
}

impl Deferred {
    fn needs_endpoint(&self) -> bool {
        !self.endpoint_events.is_empty() || self.accept || self.freed
    }

    fn apply(self, shared: &ServerShared, sess: &Arc<SessionShared>) {
        if !self.needs_endpoint() {
            return;
        }
        let mut ep = lock(&shared.ep);
        for e in self.endpoint_events {
            ep.endpoint.handle_event(e);
        }
        if self.freed
            && ep
                .sessions
                .get(&sess.sid)
                .is_some_and(|s| Arc::ptr_eq(s, sess))
        {
            ep.sessions.remove(&sess.sid);
        }
        if self.accept {
            ep.incoming.push_back(sess.clone());
        }
        drop(ep);
        if self.accept {
            shared.incoming_cond.notify_one();
        }
    }
}

impl SessionShared {
    fn new(connection: Box<Connection>, link: &Arc<Link>) -> Self {
        let mut links = HashMap::new();
        links.insert(link.id, link.clone());
        SessionShared {
            sid: connection.session(),
            state: Mutex::new(SessionState {
                conn: Some(connection),
                info: SessionSlot::new(link.peer),
                links,
                due: None,
                pending: Deferred::default(),
                writer_parked: false,
            }),
            cond: Condvar::new(),
        }
    }
}

/// After any call on a session's connection, with its lock held: run its
/// due timers, move its events into the session's data (and the progress
/// callback), queue its requests for the endpoint, re-index its deadline
/// (at `overdue` if it is still due), and free the connection once drained.
fn after(
    shared: &ServerShared,
    sess: &Arc<SessionShared>,
    st: &mut SessionState,
    now: Instant,
    overdue: Option<Instant>,
) {
    let Some(conn) = st.conn.as_mut() else {
        return;
    };
    if conn.poll_timeout().is_some_and(|d| d <= now) {
        conn.handle_timeout(now);
    }
    let links = &st.links;
    let ch = st.info.drain(
        conn,
        now,
        &shared.stats,
        shared.progress.as_ref(),
        shared.authenticate.as_ref(),
        |t| links.get(&t).and_then(|l| l.peer),
    );
    for t in &ch.close_transports {
        if let Some(l) = st.links.get(t) {
            l.ending.store(true, Ordering::SeqCst);
        }
    }
    st.pending.accept |= ch.accept;
    st.pending.changed |= ch.changed;
    // Output for a writer that went to sleep with nothing to send (a CLOSE,
    // an ABORT, an ACK or a window update that a stream call just queued):
    // wake it now, not at the session's next deadline (a keepalive away).
    if st.writer_parked
        && conn
            .transport()
            .is_some_and(|t| conn.wants_transmit(t, now))
    {
        st.writer_parked = false;
        st.pending.changed = true;
    }
    while let Some(e) = conn.poll_endpoint_event() {
        st.pending.endpoint_events.push(e);
    }
    if conn.is_drained() {
        if let Some(old) = st.due.take() {
            lock(&shared.timers).sessions.remove(&(old, sess.sid));
        }
        st.conn = None;
        st.pending.freed = true;
        st.pending.changed = true;
        return;
    }
    let Some(next) = conn.poll_timeout() else {
        return; // an entry left in the index finds nothing due
    };
    let next = match overdue {
        Some(at) if next <= now => at,
        _ => next,
    };
    if st.due.is_some_and(|d| d <= next) {
        return; // the earlier entry's visit re-indexes
    }
    let mut t = lock(&shared.timers);
    if let Some(old) = st.due {
        t.sessions.remove(&(old, sess.sid));
    }
    t.sessions.insert((next, sess.sid), sess.clone());
    let first = t.sessions.first_key_value().map(|(k, _)| *k) == Some((next, sess.sid));
    drop(t);
    st.due = Some(next);
    if first {
        shared.timer_cond.notify_one();
    }
}

/// Release a session's lock, then apply its pending endpoint work (never
/// both locks at once) and wake its waiters (who then see the endpoint
/// updated too, e.g. a freed session no longer counted).
fn unlock(shared: &ServerShared, sess: &Arc<SessionShared>, mut st: MutexGuard<'_, SessionState>) {
    let pending = std::mem::take(&mut st.pending);
    drop(st);
    let changed = pending.changed;
    pending.apply(shared, sess);
    if changed {
        sess.cond.notify_all();
    }
}

/// Wait for a change of the session. If the caller's own calls changed it
/// (events to announce, work for the endpoint), that is done instead and
/// the call returns without waiting: callers loop and check their
/// condition again.
fn wait_session<'a>(
    shared: &ServerShared,
    sess: &'a Arc<SessionShared>,
    st: MutexGuard<'a, SessionState>,
) -> MutexGuard<'a, SessionState> {
    if st.pending.needs_endpoint() || st.pending.changed {
        unlock(shared, sess, st);
        return sess.lock();
    }
    wait(&sess.cond, st)
}

/// Whether the session no longer sends on `link`.
fn transport_gone(shared: &ServerShared, st: &SessionState, link: &Link) -> bool {
    shared.stopping()
        || link.lost()
        || st
            .conn
            .as_ref()
            .is_none_or(|c| c.transport() != Some(link.id))
}

/// Move the endpoint's events out (to report once its lock is released),
/// marking the transports it ended and waking their writers.
fn drain_endpoint(ep: &mut EndpointState) -> Vec<ServerEvent> {
    let mut out = Vec::new();
    while let Some(e) = ep.endpoint.poll_event() {
        if let ServerEvent::CloseTransport { transport, .. } = e {
            if let Some(l) = ep.links.get(&transport) {
                l.link.ending.store(true, Ordering::SeqCst);
                l.link.cond.notify_all();
            }
        }
        out.push(e);
    }
    out
}

/// After any endpoint call, with its lock held: tell the timer thread the
/// endpoint's next deadline.
fn sync_endpoint_timer(shared: &ServerShared, ep: &EndpointState) {
    shared.stats.sync_routing(&ep.endpoint);
    let next = ep.endpoint.poll_timeout();
    let mut t = lock(&shared.timers);
    if t.endpoint == next {
        return;
    }
    let sooner = next.is_some_and(|n| t.endpoint.is_none_or(|o| n < o));
    t.endpoint = next;
    drop(t);
    if sooner {
        shared.timer_cond.notify_one();
    }
}

fn report_all(shared: &ServerShared, events: Vec<ServerEvent>) {
    for e in events {
        shared.report(e);
    }
}

/// A relink server: accepts TCP transports, runs handshakes and resumes
/// (the core routes each resume to its session), and hands the application
/// one [`ServerStream`] per new session.
///
/// Dropping it stops accepting and shuts every transport down; sessions
/// still held by the application fail from then on.
pub struct Listener {
    shared: Arc<ServerShared>,
    addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Bind on `addr` with `config` (see [`ListenerBuilder`] for options).
    pub fn bind<A: ToSocketAddrs>(addr: A, config: Config) -> io::Result<Listener> {
        ListenerBuilder::new(config).bind(addr)
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Wait for the next new session (handshake completed).
    pub fn accept(&self) -> io::Result<ServerStream> {
        let mut ep = lock(&self.shared.ep);
        loop {
            if let Some(session) = ep.incoming.pop_front() {
                return Ok(ServerStream {
                    shared: self.shared.clone(),
                    session,
                });
            }
            if self.shared.stopping() {
                return Err(SessionError::Shutdown.to_io());
            }
            ep = wait(&self.shared.incoming_cond, ep);
        }
    }

    /// Counters since start.
    pub fn stats(&self) -> ServerStats {
        self.shared.stats.snapshot()
    }

    /// Sessions registered in the server core (unconfirmed ones, and ended
    /// ones whose bytes were not read yet, included).
    pub fn session_count(&self) -> usize {
        let ep = lock(&self.shared.ep);
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
            let ep = lock(&self.shared.ep);
            let s: Vec<_> = ep.sessions.values().cloned().collect();
            (s, ep.endpoint.handshake_count())
        };
        let live = sessions
            .iter()
            .filter(|s| {
                let st = s.lock();
                !st.info.settled(st.conn.as_deref())
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
    pub fn unconfirmed_sessions(&self) -> Vec<(u64, usize)> {
        let sessions: Vec<_> = lock(&self.shared.ep).sessions.values().cloned().collect();
        sessions
            .iter()
            .filter_map(|s| {
                let st = s.lock();
                let conn = st.conn.as_deref();
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
    /// with [`Listener::abort_all`] at a deadline. Keep the listener alive
    /// meanwhile: dropping it ends every session at once.
    pub fn drain(&self) {
        let mut ep = lock(&self.shared.ep);
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
        lock(&self.shared.ep).endpoint.is_draining()
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
        let sessions: Vec<_> = lock(&self.shared.ep).sessions.values().cloned().collect();
        sessions
            .iter()
            .filter(|s| abort_server(&self.shared, s, code))
            .count()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let shared = &self.shared;
        // Transports the core already ended may still hold an answer (a
        // rejection, DataUnavailable), and aborted sessions their ABORT:
        // give them a moment to reach the peers before everything is shut
        // down.
        let grace = StdInstant::now() + LINGER;
        loop {
            let (ending, sessions) = {
                let ep = lock(&shared.ep);
                let ending = ep
                    .links
                    .values()
                    .any(|e| e.link.ending.load(Ordering::SeqCst));
                (ending, ep.sessions.values().cloned().collect::<Vec<_>>())
            };
            let aborting = !ending
                && sessions.iter().any(|s| {
                    let st = s.lock();
                    st.info.aborted.is_some() && st.info.end.is_none() && st.conn.is_some()
                });
            if !ending && !aborting {
                break;
            }
            let left = grace.saturating_duration_since(StdInstant::now());
            if left.is_zero() {
                break;
            }
            thread::sleep(left.min(StdDuration::from_millis(5)));
        }
        shared.stopping.store(true, Ordering::SeqCst);
        let sessions: Vec<_> = {
            let ep = lock(&shared.ep);
            for e in ep.links.values() {
                let _ = e.link.socket.shutdown(Shutdown::Both);
                e.link.cond.notify_all();
            }
            ep.sessions.values().cloned().collect()
        };
        shared.incoming_cond.notify_all();
        // Each waiter checks `stopping` under its session's lock: take it
        // once so that none misses the wake-up.
        for s in sessions {
            drop(s.lock());
            s.cond.notify_all();
        }
        drop(lock(&shared.timers));
        shared.timer_cond.notify_all();
        // Wake the accept loop with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, StdDuration::from_secs(1));
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

fn server_accept(shared: Arc<ServerShared>, listener: TcpListener) {
    for incoming in listener.incoming() {
        if shared.stopping() {
            return;
        }
        let sock = match incoming {
            Ok(s) => s,
            Err(_) => {
                // e.g. out of file descriptors: do not spin.
                thread::sleep(StdDuration::from_millis(10));
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let peer = sock.peer_addr().ok();
        if shared.proxy.is_none() {
            if !register_transport(&shared, sock, peer) {
                return;
            }
            continue;
        }
        // Behind a balancer: the header is read on a thread of its own (a
        // slow peer must not hold up the accept loop), at most
        // `max_pending_transports` at a time.
        let Some(waiting) = ProxyWaiting::enter(&shared) else {
            refuse_proxy(&shared, &sock, peer, None);
            continue;
        };
        let s = shared.clone();
        let spawned = thread::Builder::new()
            .name("relink-proxy".into())
            .spawn(move || {
                let Some(gate) = &s.proxy else { return };
                let mut sock = sock;
                let r = read_proxy_header(&mut sock, gate.timeout);
                drop(waiting);
                match r {
                    Ok(source) => {
                        register_transport(&s, sock, source.or(peer));
                    }
                    Err(e) => refuse_proxy(&s, &sock, peer, Some(&e)),
                }
            });
        if spawned.is_err() {
            // The closure (and the socket, and the slot) was dropped.
            shared
                .stats
                .transports_refused
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `ListenerBuilder::proxy_protocol`: how long a transport's header may
/// take, and how many may be read at once.
struct ProxyGate {
    timeout: StdDuration,
    max_waiting: usize,
    waiting: std::sync::atomic::AtomicUsize,
}

/// A transport whose PROXY header is being read (counted in
/// `ProxyGate::waiting` while it lives).
struct ProxyWaiting(Arc<ServerShared>);

impl ProxyWaiting {
    fn enter(shared: &Arc<ServerShared>) -> Option<ProxyWaiting> {
        let gate = shared.proxy.as_ref()?;
        let n = gate.waiting.fetch_add(1, Ordering::SeqCst);
        let me = ProxyWaiting(shared.clone());
        (n < gate.max_waiting).then_some(me)
    }
}

impl Drop for ProxyWaiting {
    fn drop(&mut self) {
        if let Some(gate) = &self.0.proxy {
            gate.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Close a transport refused for its PROXY header `e` (`None`: because
/// too many headers are being read already): counted and logged (WARN for bytes that are not a PROXY header, rate-limited; DEBUG otherwise,
/// naming the TCP peer).
fn refuse_proxy(
    shared: &ServerShared,
    sock: &TcpStream,
    peer: Option<SocketAddr>,
    e: Option<&driver::proxy::ProxyError>,
) {
    shared
        .stats
        .transports_refused
        .fetch_add(1, Ordering::Relaxed);
    match e {
        Some(e) => driver::proxy::log_refused(peer, e),
        None => crate::driver::log_refused(peer, &Error::TooManyTransports),
    }
    let _ = sock.shutdown(Shutdown::Both);
}

/// Read exactly one PROXY v2 header from `sock`, within `timeout` in all:
/// the source it names (`None`: the real peer counts).
fn read_proxy_header(
    sock: &mut TcpStream,
    timeout: StdDuration,
) -> Result<Option<SocketAddr>, driver::proxy::ProxyError> {
    use driver::proxy::{self, ProxyError, FIXED_LEN};
    let deadline = StdInstant::now() + timeout;
    let mut read_exact = |buf: &mut [u8], before: usize| -> Result<(), ProxyError> {
        let mut n = 0;
        while n < buf.len() {
            let left = deadline.saturating_duration_since(StdInstant::now());
            if left.is_zero() {
                return Err(ProxyError::TimedOut);
            }
            sock.set_read_timeout(Some(left)).map_err(ProxyError::Io)?;
            match sock.read(&mut buf[n..]) {
                Ok(0) => return Err(ProxyError::Eof(before + n)),
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(ProxyError::TimedOut),
                Err(e) => return Err(ProxyError::Io(e)),
            }
        }
        Ok(())
    };
    let mut fixed = [0u8; FIXED_LEN];
    read_exact(&mut fixed, 0)?;
    let len = proxy::header_len(&fixed)?;
    let mut header = vec![0u8; len];
    header[..FIXED_LEN].copy_from_slice(&fixed);
    read_exact(&mut header[FIXED_LEN..], FIXED_LEN)?;
    sock.set_read_timeout(None).map_err(ProxyError::Io)?;
    proxy::parse(&header)
}

/// Hand an accepted transport (from `peer`) to the endpoint and start its
/// reader and writer threads. `false` once the listener is stopping.
fn register_transport(
    shared: &Arc<ServerShared>,
    sock: TcpStream,
    peer: Option<SocketAddr>,
) -> bool {
    let handles = (|| {
        sock.set_write_timeout(Some(WRITE_CHECK))?;
        Ok::<_, io::Error>((sock.try_clone()?, sock.try_clone()?))
    })();
    let Ok((reader, control)) = handles else {
        return true;
    };
    let mut ep = lock(&shared.ep);
    if shared.stopping() {
        return false;
    }
    let now = shared.now();
    let accepted = match peer {
        Some(p) => ep.endpoint.accept_from(now, p.ip()),
        None => ep.endpoint.accept(now),
    };
    let tid = match accepted {
        Ok(tid) => tid,
        Err(e) => {
            shared
                .stats
                .transports_refused
                .fetch_add(1, Ordering::Relaxed);
            crate::driver::log_refused(peer, &e);
            let _ = sock.shutdown(Shutdown::Both);
            return true;
        }
    };
    shared.stats.transports.fetch_add(1, Ordering::Relaxed);
    let link = Arc::new(Link {
        id: tid,
        socket: control,
        peer,
        lost: AtomicBool::new(false),
        ending: AtomicBool::new(false),
        cond: Condvar::new(),
    });
    ep.links.insert(
        tid,
        LinkEntry {
            link: link.clone(),
            owner: Owner::Endpoint,
        },
    );
    sync_endpoint_timer(shared, &ep);
    drop(ep);
    let (s, l) = (shared.clone(), link.clone());
    let r = thread::Builder::new()
        .name("relink-server-rx".into())
        .spawn(move || server_reader(s, l, reader));
    let (s, l) = (shared.clone(), link.clone());
    let w = thread::Builder::new()
        .name("relink-server-tx".into())
        .spawn(move || server_writer(s, l, sock));
    if r.is_err() || w.is_err() {
        link.lost.store(true, Ordering::SeqCst);
        let _ = link.socket.shutdown(Shutdown::Both);
        let mut ep = lock(&shared.ep);
        if w.is_err() {
            // Nobody else will tell the endpoint.
            ep.links.remove(&tid);
            ep.endpoint.transport_lost(tid, shared.now());
            let events = drain_endpoint(&mut ep);
            sync_endpoint_timer(shared, &ep);
            drop(ep);
            report_all(shared, events);
        } else {
            drop(ep);
        }
        link.cond.notify_all();
    }
    true
}

/// The timer thread: sleeps until the first deadline of the index (the
/// endpoint's or a session's), then runs the endpoint's timers under its
/// lock and visits each due session under that session's lock only.
fn server_timer(shared: Arc<ServerShared>) {
    let mut due: Vec<Arc<SessionShared>> = Vec::new();
    loop {
        let endpoint_due;
        {
            let mut t = lock(&shared.timers);
            loop {
                if shared.stopping() {
                    return;
                }
                let now = shared.now();
                while let Some(entry) = t.sessions.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    due.push(entry.remove());
                }
                let ep_due = t.endpoint.is_some_and(|d| d <= now);
                if ep_due || !due.is_empty() {
                    endpoint_due = ep_due;
                    break;
                }
                let next = crate::time::earliest(
                    t.endpoint,
                    t.sessions.first_key_value().map(|(k, _)| k.0),
                );
                t = wait_for(&shared.timer_cond, t, until(next, now));
            }
        }
        let now = shared.now();
        if endpoint_due {
            let mut ep = lock(&shared.ep);
            ep.endpoint.handle_timeout(now);
            let events = drain_endpoint(&mut ep);
            sync_endpoint_timer(&shared, &ep);
            drop(ep);
            report_all(&shared, events);
        }
        for sess in due.drain(..) {
            visit(&shared, &sess, now);
        }
    }
}

/// Run the timers of one due session. A session whose lock is busy (its
/// lock holder runs due timers itself; or a slow progress callback holds
/// it) is retried a little later instead of holding up the others.
fn visit(shared: &ServerShared, sess: &Arc<SessionShared>, now: Instant) {
    let mut st = match sess.state.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => {
            let at = now.saturating_add(OVERDUE_WAIT.into());
            lock(&shared.timers)
                .sessions
                .insert((at, sess.sid), sess.clone());
            return;
        }
    };
    // This visit re-indexes the session from scratch.
    if let Some(old) = st.due.take() {
        lock(&shared.timers).sessions.remove(&(old, sess.sid));
    }
    // A deadline still due after this (work for the writer, which may be
    // busy writing) is visited again after OVERDUE_WAIT, not at once.
    let overdue = now.saturating_add(OVERDUE_WAIT.into());
    after(shared, sess, &mut st, now, Some(overdue));
    unlock(shared, sess, st);
    // Due ACKs and keepalives are the writer's to send.
    sess.cond.notify_all();
}

/// What the endpoint made of a transport's input.
enum EndpointStep {
    /// Everything consumed; the endpoint still holds the transport.
    More,
    /// The transport is finished (its writer flushes any answer, closes).
    Finished,
    /// A new session took the transport; feed it the input from
    /// `consumed` on.
    NewSession {
        session: Arc<SessionShared>,
        consumed: usize,
    },
    /// A resume request routed to `session` (handed over by the caller).
    Resume {
        session: Arc<SessionShared>,
        consumed: usize,
        request: [u8; crate::wire::RESUME_REQUEST_LEN],
    },
}

/// Feed bytes to the endpoint, under its lock.
fn endpoint_input(shared: &ServerShared, link: &Arc<Link>, input: &[u8]) -> EndpointStep {
    let tid = link.id;
    let mut ep = lock(&shared.ep);
    let mut events = Vec::new();
    let mut off = 0;
    let step = loop {
        let ours = matches!(ep.links.get(&tid).map(|e| &e.owner), Some(Owner::Endpoint));
        if !ours || shared.stopping() || link.lost() || ep.endpoint.transport_ended(tid) {
            break EndpointStep::Finished;
        }
        let now = shared.now();
        let r = ep.endpoint.handle_input(tid, now, &input[off..]);
        events.append(&mut drain_endpoint(&mut ep));
        match r {
            Err(_) => {
                // A balancer sending PROXY headers to a listener without
                // `proxy_protocol`: say so (WARN, rate-limited).
                if off == 0 && driver::proxy::looks_like_header(input) {
                    driver::proxy::log_unexpected_header(link.peer);
                }
                break EndpointStep::Finished;
            }
            Ok(Dispatch::Pending(n)) => {
                off += n;
                if off >= input.len() || n == 0 {
                    break EndpointStep::More;
                }
            }
            Ok(Dispatch::NewConnection {
                consumed,
                connection,
            }) => {
                let session = Arc::new(SessionShared::new(connection, link));
                ep.sessions.insert(session.sid, session.clone());
                if let Some(e) = ep.links.get_mut(&tid) {
                    e.owner = Owner::Session(session.clone());
                }
                break EndpointStep::NewSession {
                    session,
                    consumed: off + consumed,
                };
            }
            Ok(Dispatch::Resume {
                consumed,
                session,
                request,
            }) => {
                let Some(session) = ep.sessions.get(&session).cloned() else {
                    let unknown = ep.endpoint.unknown_session(&request);
                    link.ending.store(true, Ordering::SeqCst);
                    if let Some(e) = ep.links.get_mut(&tid) {
                        e.owner = Owner::Refused {
                            reply: unknown,
                            sent: false,
                        };
                    }
                    events.push(ServerEvent::CloseTransport {
                        transport: tid,
                        error: Some(unknown.error()),
                    });
                    break EndpointStep::Finished;
                };
                if let Some(e) = ep.links.get_mut(&tid) {
                    e.owner = Owner::Handoff;
                }
                break EndpointStep::Resume {
                    session,
                    consumed: off + consumed,
                    request,
                };
            }
        }
    };
    sync_endpoint_timer(shared, &ep);
    drop(ep);
    link.cond.notify_all();
    report_all(shared, events);
    step
}

/// Pass a routed resume request to its session (session lock), then record
/// the outcome for the transport's writer (endpoint lock). Returns whether
/// the session took the transport.
fn hand_over(
    shared: &ServerShared,
    link: &Arc<Link>,
    sess: &Arc<SessionShared>,
    request: &[u8; crate::wire::RESUME_REQUEST_LEN],
) -> bool {
    let tid = link.id;
    let now = shared.now();
    let mut st = sess.lock();
    st.links.insert(tid, link.clone());
    // `Err(None)`: the session was drained meanwhile.
    let r = match st.conn.as_mut() {
        Some(c) => c.handle_resume(tid, now, request).map_err(Some),
        None => Err(None),
    };
    after(shared, sess, &mut st, now, None);
    if r.is_err() {
        st.links.remove(&tid);
    }
    unlock(shared, sess, st);
    sess.cond.notify_all();
    let mut ep = lock(&shared.ep);
    let r = r.map_err(|rej| {
        let gone = rej.is_none();
        let rej = rej.unwrap_or_else(|| ep.endpoint.unknown_session(request));
        (rej, gone)
    });
    if let Some(e) = ep.links.get_mut(&tid) {
        e.owner = match r {
            Ok(()) => Owner::Session(sess.clone()),
            Err((reply, _)) => {
                link.ending.store(true, Ordering::SeqCst);
                Owner::Refused { reply, sent: false }
            }
        };
    }
    drop(ep);
    link.cond.notify_all();
    if let Err((rej, true)) = r {
        shared.report(ServerEvent::CloseTransport {
            transport: tid,
            error: Some(rej.error()),
        });
    }
    r.is_ok()
}

/// Run a new session's first events (HandshakeDone: accept queue, stats,
/// progress) and its timers.
fn kick(shared: &ServerShared, sess: &Arc<SessionShared>) {
    let mut st = sess.lock();
    after(shared, sess, &mut st, shared.now(), None);
    unlock(shared, sess, st);
    sess.cond.notify_all();
}

/// Feed bytes to a session, under its lock only; waits while its receive
/// buffer is full. Returns whether the transport is still usable.
fn session_input(
    shared: &ServerShared,
    sess: &Arc<SessionShared>,
    link: &Link,
    input: &[u8],
) -> bool {
    let mut off = 0;
    let mut st = sess.lock();
    loop {
        if transport_gone(shared, &st, link) {
            unlock(shared, sess, st);
            return false;
        }
        let now = shared.now();
        let r = match st.conn.as_mut() {
            Some(c) => c.handle_input(link.id, now, &input[off..]),
            None => Err(Error::TransportEnded),
        };
        after(shared, sess, &mut st, now, None);
        match r {
            Ok(n) => off += n,
            Err(_) => {
                // The writer flushes what is left, then closes.
                unlock(shared, sess, st);
                sess.cond.notify_all();
                return false;
            }
        }
        sess.cond.notify_all();
        if off >= input.len() {
            unlock(shared, sess, st);
            return true;
        }
        // Receive buffer full: wait until the application read.
        st = wait_session(shared, sess, st);
    }
}

/// The reader of a transport: hands its bytes to the endpoint until the
/// transport belongs to a session, then to that session.
fn server_reader(shared: Arc<ServerShared>, link: Arc<Link>, mut t: TcpStream) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut session: Option<Arc<SessionShared>> = None;
    loop {
        let n = match t.read(&mut buf) {
            Ok(n) if n > 0 && !shared.stopping() => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            _ => {
                lose(&shared, &link, session.as_ref());
                return;
            }
        };
        let mut off = 0;
        if session.is_none() {
            match endpoint_input(&shared, &link, &buf[..n]) {
                EndpointStep::More => continue,
                EndpointStep::Finished => return,
                EndpointStep::NewSession {
                    session: s,
                    consumed,
                } => {
                    kick(&shared, &s);
                    off = consumed;
                    session = Some(s);
                }
                EndpointStep::Resume {
                    session: s,
                    consumed,
                    request,
                } => {
                    if !hand_over(&shared, &link, &s, &request) {
                        return;
                    }
                    off = consumed;
                    session = Some(s);
                }
            }
        }
        let Some(sess) = &session else {
            continue;
        };
        if off < n && !session_input(&shared, sess, &link, &buf[off..n]) {
            return;
        }
    }
}

/// The reader saw EOF or an error: mark the transport lost and wake its
/// writer (under the lock it checks the mark with).
fn lose(shared: &ServerShared, link: &Link, session: Option<&Arc<SessionShared>>) {
    link.lost.store(true, Ordering::SeqCst);
    drop(lock(&shared.ep));
    link.cond.notify_all();
    if let Some(s) = session {
        drop(s.lock());
        s.cond.notify_all();
    }
}

/// The writer of a transport: sends what the endpoint has for it (its
/// ServerHello, a rejection) until a session takes it over, then what the
/// session has; flushes the last answer and closes.
fn server_writer(shared: Arc<ServerShared>, link: Arc<Link>, mut t: TcpStream) {
    let mut buf = vec![0u8; WRITE_CHUNK];
    if let Some(sess) = endpoint_writer(&shared, &link, &mut t, &mut buf) {
        session_writer(&shared, &sess, &link, &mut t, &mut buf);
    }
}

/// The writer while the endpoint serves the transport (endpoint lock).
/// Returns the session that took the transport over, or `None` once the
/// transport is finished and closed.
fn endpoint_writer(
    shared: &ServerShared,
    link: &Link,
    t: &mut TcpStream,
    buf: &mut [u8],
) -> Option<Arc<SessionShared>> {
    let tid = link.id;
    let mut hello_sent = false;
    let mut ep = lock(&shared.ep);
    loop {
        let stopping = shared.stopping();
        let ep_state = &mut *ep;
        let Some(entry) = ep_state.links.get_mut(&tid) else {
            break;
        };
        match &mut entry.owner {
            Owner::Session(s) => return Some(s.clone()),
            Owner::Handoff => {
                if stopping {
                    break;
                }
                ep = wait(&link.cond, ep);
            }
            Owner::Refused { reply, sent } => {
                if !*sent && !stopping {
                    *sent = true;
                    let reply = *reply;
                    drop(ep);
                    // Bounded: the transport is finished, so a write that
                    // blocks for WRITE_CHECK gives up.
                    let _ = write_all_checked(t, reply.reply(), || false);
                    ep = lock(&shared.ep);
                }
                break;
            }
            Owner::Endpoint => {
                let mut n = 0;
                while buf.len() - n >= MIN_TRANSMIT_BUFFER {
                    match ep_state.endpoint.poll_transmit(tid, &mut buf[n..]) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                }
                let gone = stopping || link.lost() || ep_state.endpoint.transport_ended(tid);
                // Written even when the reader saw EOF or the endpoint ended
                // the transport: a rejection must reach the peer before the
                // socket closes (bounded as in the session writer).
                if n > 0 && !stopping {
                    drop(ep);
                    let r = write_all_checked(t, &buf[..n], || {
                        let ep = lock(&shared.ep);
                        !(shared.stopping() || link.lost() || ep.endpoint.transport_ended(tid))
                    });
                    ep = lock(&shared.ep);
                    if r.is_err() {
                        link.lost.store(true, Ordering::SeqCst);
                        break;
                    }
                    hello_sent = true;
                    continue;
                }
                if gone {
                    break;
                }
                ep = wait(&link.cond, ep);
            }
        }
    }
    let _ = t.shutdown(Shutdown::Both);
    let now = shared.now();
    if let Some(LinkEntry {
        owner: Owner::Endpoint,
        ..
    }) = ep.links.remove(&tid)
    {
        if hello_sent && link.lost() && !ep.endpoint.transport_ended(tid) {
            // Our ServerHello went out and the peer hung up without an
            // answer: typically a client that pins another key.
            let key = ep
                .endpoint
                .config()
                .server_static
                .as_ref()
                .map(|k| k.public_key());
            driver::log_abandoned_hello(link.peer, key.as_ref());
        }
        ep.endpoint.transport_lost(tid, now);
    }
    let events = drain_endpoint(&mut ep);
    sync_endpoint_timer(shared, &ep);
    drop(ep);
    report_all(shared, events);
    None
}

/// The writer once a session serves the transport (that session's lock
/// only, released while writing).
fn session_writer(
    shared: &ServerShared,
    sess: &Arc<SessionShared>,
    link: &Link,
    t: &mut TcpStream,
    buf: &mut [u8],
) {
    let tid = link.id;
    let mut st = sess.lock();
    loop {
        let now = shared.now();
        let mut n = 0;
        if let Some(conn) = st.conn.as_mut() {
            while buf.len() - n >= MIN_TRANSMIT_BUFFER {
                match conn.poll_transmit(tid, now, &mut buf[n..]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
        }
        after(shared, sess, &mut st, now, None);
        let gone = transport_gone(shared, &st, link);
        // Written even when the reader saw EOF or the core ended the
        // transport: a rejection or a last answer must reach the peer
        // before the socket closes (bounded: once the transport is gone, a
        // write that blocks for WRITE_CHECK gives up).
        if n > 0 && !shared.stopping() {
            unlock(shared, sess, st);
            let r = write_all_checked(t, &buf[..n], || !transport_gone(shared, &sess.lock(), link));
            st = sess.lock();
            if r.is_err() {
                link.lost.store(true, Ordering::SeqCst);
                break;
            }
            continue;
        }
        if gone {
            break;
        }
        st.writer_parked = true;
        st = wait_session(shared, sess, st);
    }
    let _ = t.shutdown(Shutdown::Both);
    let now = shared.now();
    let st2 = &mut *st;
    if let Some(conn) = st2.conn.as_mut() {
        st2.info
            .lost(conn.conn_id(), tid, now, None, "the connection broke");
        conn.transport_lost(tid, now);
    }
    after(shared, sess, &mut st, now, None);
    st.links.remove(&tid);
    unlock(shared, sess, st);
    sess.cond.notify_all();
    lock(&shared.ep).links.remove(&tid);
}

/// One server session. Implements [`Read`] and [`Write`] (also for
/// `&ServerStream`). Dropping it while the session lives aborts it with
/// [`AbortCode::DROPPED`] (unless both sides already half-closed; the
/// listener keeps serving it until the client acknowledged).
pub struct ServerStream {
    shared: Arc<ServerShared>,
    session: Arc<SessionShared>,
}

impl fmt::Debug for ServerStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStream")
            .field("session", &self.session.sid)
            .finish_non_exhaustive()
    }
}

impl ServerStream {
    /// The core's id of this session.
    pub fn session_id(&self) -> SessionId {
        self.session.sid
    }

    /// Abort the session (like a TCP reset): stop sending at once and tell
    /// the client with an authenticated ABORT carrying `code`; the client's
    /// reads and writes fail with [`io::ErrorKind::ConnectionReset`].
    /// Returns at once; the listener keeps serving the session until the
    /// client acknowledged (see [`ServerStream::wait_closed`]).
    pub fn abort(&self, code: AbortCode) {
        abort_server(&self.shared, &self.session, code);
    }

    /// Wait until the session is over, at most `timeout`; whether it is.
    pub fn wait_closed(&self, timeout: StdDuration) -> bool {
        wait_server_closed(&self.shared, &self.session, timeout)
    }

    /// A handle that can abort this session from another thread.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle(HandleInner::Server(
            self.shared.clone(),
            self.session.clone(),
        ))
    }

    /// The remote address of the transport that last carried the session
    /// (the client's address, for logs).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.session.lock().info.peer
    }

    /// The session's connection id (while the core holds it).
    pub fn conn_id(&self) -> Option<u64> {
        self.session.lock().conn.as_ref().map(|c| c.conn_id())
    }

    /// Bytes written but not yet acknowledged by the client.
    pub fn unacked(&self) -> usize {
        self.session.lock().conn.as_ref().map_or(0, |c| c.unacked())
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.session.lock().info.end
    }

    /// The listener's counters.
    pub fn stats(&self) -> ServerStats {
        self.shared.stats.snapshot()
    }

    /// Run `f` on the session under its lock until it is ready, waiting
    /// for changes of the session in between.
    fn wait_until<R>(
        &self,
        mut f: impl FnMut(&mut SessionState, bool) -> Step<Result<R, SessionError>>,
    ) -> io::Result<R> {
        let (shared, sess) = (&*self.shared, &self.session);
        let mut st = sess.lock();
        loop {
            let r = f(&mut st, shared.stopping());
            after(shared, sess, &mut st, shared.now(), None);
            match r {
                Step::Ready(r) => {
                    unlock(shared, sess, st);
                    sess.cond.notify_all();
                    return r.map_err(|e| e.to_io());
                }
                Step::Wait => st = wait_session(shared, sess, st),
            }
        }
    }

    /// Half-close: a CLOSE frame follows the last byte written; returns
    /// once the client acknowledged it. Reading continues until the client
    /// closes too.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.half_close_then(|st, stopped| st.info.shutdown(st.conn.as_deref(), stopped))
    }

    /// Close cleanly: half-close, then wait until the client closed too and
    /// both CLOSEs were acknowledged. Unread input is discarded.
    pub fn close(&self) -> io::Result<()> {
        self.half_close_then(|st, stopped| {
            let unread = st.conn.as_ref().is_some_and(|c| c.readable() > 0);
            let step = st.info.close(st.conn.as_deref_mut(), stopped);
            if unread {
                // Room was freed: wake the reader thread waiting for it.
                self.session.cond.notify_all();
            }
            step
        })
    }

    /// Half-close (once), then wait until `done` is ready.
    fn half_close_then(
        &self,
        mut done: impl FnMut(&mut SessionState, bool) -> Step<Result<(), SessionError>>,
    ) -> io::Result<()> {
        let mut started = false;
        self.wait_until(|st, stopped| {
            if !std::mem::replace(&mut started, true) {
                if let Err(e) = st.info.start_shutdown(st.conn.as_deref_mut(), stopped) {
                    return Step::Ready(Err(e));
                }
            }
            done(st, stopped)
        })
    }

    fn read_inner(&self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        self.wait_until(|st, stopped| st.info.read(st.conn.as_deref_mut(), out, stopped))
    }

    fn write_inner(&self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        self.wait_until(|st, stopped| st.info.write(st.conn.as_deref_mut(), data, stopped))
    }

    fn flush_inner(&self) -> io::Result<()> {
        self.wait_until(|st, stopped| st.info.flush(st.conn.as_deref(), stopped))
    }

    /// Time since authenticated input from the client last arrived (see
    /// [`ClientStream::last_received`]); `None` before the first.
    pub fn last_received(&self) -> Option<StdDuration> {
        self.session.lock().info.last_received()
    }
}

impl_read_write!(ServerStream);

impl Drop for ServerStream {
    fn drop(&mut self) {
        let (shared, sess) = (&*self.shared, &self.session);
        let mut st = sess.lock();
        // The server's threads keep serving an aborted session until the
        // client acknowledged the ABORT.
        let st2 = &mut *st;
        st2.info.on_drop(st2.conn.as_deref_mut());
        // Also discards what is left unread of an ended session.
        after(shared, sess, &mut st, shared.now(), None);
        unlock(shared, sess, st);
        sess.cond.notify_all();
    }
}

/// Abort a session with `code`; whether this call aborted a live session.
fn abort_server(shared: &ServerShared, sess: &Arc<SessionShared>, code: AbortCode) -> bool {
    let mut st = sess.lock();
    let st2 = &mut *st;
    let live = st2.conn.is_some();
    let aborted = st2.info.abort(st2.conn.as_deref_mut(), code) && live;
    let now = shared.now();
    if aborted {
        // `abort` has no clock: start the wait for the client's answer now
        // (a detached session would otherwise wait for its expiry).
        if let Some(c) = st.conn.as_mut() {
            c.handle_timeout(now);
        }
    }
    after(shared, sess, &mut st, now, None);
    unlock(shared, sess, st);
    sess.cond.notify_all();
    aborted
}

fn wait_server_closed(
    shared: &ServerShared,
    sess: &Arc<SessionShared>,
    timeout: StdDuration,
) -> bool {
    let end = StdInstant::now() + timeout;
    let mut st = sess.lock();
    loop {
        if st.info.end.is_some() || st.conn.is_none() {
            unlock(shared, sess, st);
            return true;
        }
        if shared.stopping() {
            unlock(shared, sess, st);
            return false; // shut down before the peer acknowledged
        }
        let left = end.saturating_duration_since(StdInstant::now());
        if left.is_zero() {
            unlock(shared, sess, st);
            return false;
        }
        if st.pending.needs_endpoint() || st.pending.changed {
            unlock(shared, sess, st);
            st = sess.lock();
            continue;
        }
        st = wait_for(&sess.cond, st, left);
    }
}

/// Aborts a session from another thread than the one using its stream
/// (see [`ClientStream::abort_handle`], [`ServerStream::abort_handle`]).
/// It does not keep the stream open.
#[derive(Clone)]
pub struct AbortHandle(HandleInner);

#[derive(Clone)]
enum HandleInner {
    Client(Arc<ClientShared>),
    Server(Arc<ServerShared>, Arc<SessionShared>),
}

impl fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortHandle").finish_non_exhaustive()
    }
}

impl AbortHandle {
    /// Abort the session with `code`, like the stream's `abort`.
    pub fn abort(&self, code: AbortCode) {
        match &self.0 {
            HandleInner::Client(s) => abort_client(s, code),
            HandleInner::Server(s, sess) => {
                abort_server(s, sess, code);
            }
        }
    }

    /// Wait until the session is over, at most `timeout`; whether it is.
    pub fn wait_closed(&self, timeout: StdDuration) -> bool {
        match &self.0 {
            HandleInner::Client(s) => wait_client_closed(s, timeout),
            HandleInner::Server(s, sess) => wait_server_closed(s, sess, timeout),
        }
    }
}
