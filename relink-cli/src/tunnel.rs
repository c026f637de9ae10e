//! `relink forward` and `relink serve-forward`: TCP tunnels over relink
//! sessions, one session per tunnelled TCP connection, on the tokio driver
//! (`relink::tokio`).
//!
//! Everything runs on one small multi-thread runtime (`worker_threads`
//! = half the CPUs, at least 1, at most [`MAX_WORKERS`], or
//! `RELINK_TUNNEL_THREADS` from the environment; at most
//! [`MAX_BLOCKING`] blocking threads for the driver's address resolution),
//! so the thread count does not grow with the number of tunnels. Each
//! tunnel is one task that copies both directions itself ([`pump`]); it
//! holds no buffer while idle (bytes read but not yet taken by the other
//! side are kept in a `Vec` that is freed once written).
//!
//! Ends of a tunnel, both directions alike:
//! - EOF (FIN) on one side becomes a half-close on the other (the session's
//!   CLOSE, the TCP connection's `shutdown(Write)`); the tunnel ends once
//!   both directions ended.
//! - A reset (or any error) of the TCP connection aborts the session with
//!   [`AbortCode::TARGET_RESET`]; a session that fails (aborted by the
//!   peer, lost, expired) resets the TCP connection (SO_LINGER 0 then
//!   close: an RST, never a FIN that would look like a clean end).
//! - `serve-forward`: a target that cannot be connected is logged with its
//!   address and the session aborted, so the client's TCP connection is
//!   reset. `forward`: a session that cannot be opened is logged with the
//!   server's address and the local connection is reset.
//! - SIGINT/SIGTERM abort every session with [`AbortCode::INTERRUPTED`],
//!   wait (at most 0.8 s) for the peers to acknowledge, and exit 130.
//!
//! Logs: each tunnel's lines are in a span naming it (`forward`: `tunnel`
//! = a counter of accepted local connections, `local_peer`, and `session`
//! once it exists; `serve-forward`: `session` and the client's `peer`,
//! see `log`); a failed tunnel is a WARN line, a clean end an INFO line
//! (`-v`), as are the drivers' own lines (sessions established, transports
//! lost, resumes). A failing `accept` is logged once per
//! [`ACCEPT_ERROR_EVERY`] at most.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration as StdDuration;

use relink::tokio::{ClientBuilder, ListenerBuilder};
use relink::{AbortCode, Backoff, CloseReason, Config};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{info, warn, Instrument};

use crate::{log, progress, status};

/// Runtime worker threads at most (fewer on machines with fewer CPUs).
pub const MAX_WORKERS: usize = 4;
/// Blocking threads at most (the driver resolves the server's address on
/// one before every connect attempt).
pub const MAX_BLOCKING: usize = 2;
/// Bytes read from one side per system call (a per-thread buffer: nothing is
/// held while a tunnel is idle).
const CHUNK: usize = 16 * 1024;
std::thread_local! {
    /// Per runtime thread: where [`Pump::poll`] reads into (see [`CHUNK`]).
    static COPY_BUF: std::cell::Cell<Option<Box<[u8]>>> = const { std::cell::Cell::new(None) };
}
/// Copy steps of one tunnel before it yields to the other tasks.
const STEPS_PER_POLL: usize = 64;
/// How long SIGINT/SIGTERM wait for the peers to acknowledge the aborts.
const INTERRUPT_WAIT: StdDuration = StdDuration::from_millis(800);
/// A failing `accept` (e.g. out of file descriptors, retried every 20 ms)
/// is logged once per this period at most.
pub const ACCEPT_ERROR_EVERY: StdDuration = StdDuration::from_secs(5);

/// The settings of `forward`.
pub struct Forward<'a> {
    pub config: Config,
    pub backoff: Backoff,
    pub wait: bool,
    /// Where to accept the local TCP connections (already a full address).
    pub local: &'a str,
    /// The `serve-forward` server, as given (for messages).
    pub remote: &'a str,
}

/// The settings of `serve-forward`.
pub struct ServeForward<'a> {
    pub config: Config,
    /// Where to accept relink clients (already a full address).
    pub addr: &'a str,
    /// The TCP service, as given (for messages).
    pub target: &'a str,
    /// The decision on clients (`--credentials`), if any.
    pub authenticate: Option<crate::Authenticate>,
    /// `--server-id` (already in `config`), `--proxy-protocol`,
    /// `--drain-timeout`.
    pub fleet: crate::node::Fleet,
}

/// The runtime every tunnel runs on.
fn runtime() -> io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = std::env::var("RELINK_TUNNEL_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        // Half the CPUs: a tunnel's tasks hand each message on to one
        // another (tunnel → session driver → socket), and with more
        // workers than the load needs, every hand-off wakes an idle worker
        // (futex, context switch): on 2 CPUs 1 worker carried 38k req/s
        // where 2 carried 28k (benches/tunnel/run.sh, docs/PERFORMANCE.md).
        .unwrap_or(cpus / 2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::clamp(workers, 1, MAX_WORKERS))
        .max_blocking_threads(MAX_BLOCKING)
        .thread_name("relink-tunnel")
        .enable_all()
        .build()
}

/// Resolve `name` once (at start), the error naming it.
fn resolve(name: &str) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(name)
        .map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name}: no address"),
        ));
    }
    Ok(addrs)
}

/// `relink forward`: accept TCP connections on `f.local` and carry each
/// over its own relink session to `f.remote`. `announce` is called with
/// the bound address before the first connection is accepted. Runs until
/// the process is interrupted (or binding fails).
pub fn forward(f: Forward<'_>, announce: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let remote = resolve(f.remote)?;
    let rt = runtime()?;
    rt.block_on(async move {
        // Before the address is announced: a client told where to connect
        // may send a signal at once.
        let tunnels = Tunnels::install(None)?;
        let listener = TcpListener::bind(f.local)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", f.local)))?;
        announce(listener.local_addr()?);
        let remote_name: Arc<str> = f.remote.into();
        let mut accept_errors = Throttle::new(ACCEPT_ERROR_EVERY);
        let mut tunnel = 0u64;
        loop {
            let (conn, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // e.g. out of file descriptors: not the end of the tunnel.
                    accept_failed(&mut accept_errors, f.local, &e);
                    tokio::time::sleep(StdDuration::from_millis(20)).await;
                    continue;
                }
            };
            tunnel += 1;
            let span = log::tunnel_span(tunnel, Some(peer));
            let builder = ClientBuilder::new(f.config.clone())
                .backoff(f.backoff)
                .wait_for_server(f.wait);
            let (remote, remote_name, tunnels) =
                (remote.clone(), remote_name.clone(), tunnels.clone());
            let task = async move {
                let _ = conn.set_nodelay(true);
                let r = match builder.connect(remote).await {
                    Ok(mut session) => {
                        if let Some(id) = session.conn_id() {
                            tracing::Span::current().record(
                                "session",
                                tracing::field::display(progress::session_hex(id)),
                            );
                        }
                        info!("tunnel open");
                        tunnels.run(&mut session, conn).await
                    }
                    Err(e) => {
                        // No session, so no tunnel: the local client must see
                        // a reset, not an empty reply ending in a FIN that
                        // looks like a service with nothing to say.
                        reset(conn);
                        Err(io::Error::new(
                            e.kind(),
                            crate::connect_error(&remote_name, &e),
                        ))
                    }
                };
                match r {
                    Ok(s) => info!("tunnel closed: {s}"),
                    Err(e) => warn!("tunnel failed: {e}"),
                }
            };
            tokio::spawn(task.instrument(span));
        }
    })
}

/// `relink serve-forward`: accept relink sessions on `s.addr` and connect
/// each to `s.target` by TCP. `announce` is called with the bound address
/// first. Runs until the process is interrupted (or binding fails).
pub fn serve_forward(s: ServeForward<'_>, announce: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let target = resolve(s.target)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let slot = Arc::new(std::sync::OnceLock::new());
        let tunnels = Tunnels::install(drain_on_term(s.fleet.drain_timeout, &slot))?;
        let mut builder = ListenerBuilder::new(s.config).proxy_protocol(s.fleet.proxy_protocol);
        if let Some(f) = s.authenticate {
            builder = builder.authenticate(f);
        }
        let server =
            Arc::new(builder.bind(s.addr).await.map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {}: {e}", s.addr))
            })?);
        let _ = slot.set(server.clone());
        let (l, server_id) = (server.clone(), s.fleet.server_id);
        crate::node::set_summary(move || {
            crate::node::summary(
                server_id,
                &l.stats(),
                crate::node::ABORTED_AT_DRAIN.load(Ordering::SeqCst),
            )
        });
        announce(server.local_addr()?);
        let target_name: Arc<str> = s.target.into();
        loop {
            let mut session = server.accept().await?;
            let (target, target_name, tunnels) =
                (target.clone(), target_name.clone(), tunnels.clone());
            // Named as the client and the drivers name it.
            let id = session.conn_id().map_or_else(
                || format!("#{}", session.session_id().0),
                progress::session_hex,
            );
            let span = log::session_span(&id, session.peer_addr());
            let task = async move {
                let r = match connect_any(&target).await {
                    Ok(tcp) => {
                        let _ = tcp.set_nodelay(true);
                        tunnels.run(&mut session, tcp).await
                    }
                    Err(e) => {
                        // The client's TCP connection must not look accepted.
                        session.abort(AbortCode::TARGET_RESET);
                        Err(io::Error::new(
                            e.kind(),
                            format!("connecting to {target_name}: {e}"),
                        ))
                    }
                };
                match r {
                    Ok(st) => info!("tunnel closed: {st}"),
                    Err(e) => warn!("tunnel failed: {e}"),
                }
            };
            tokio::spawn(task.instrument(span));
        }
    })
}

/// `serve-forward --drain-timeout`: what the first SIGTERM runs (on a
/// thread of its own): drain the listener (once bound, into `slot`), then
/// print the summary and exit: 0 when every session ended by itself, 4
/// when some were aborted at the deadline.
fn drain_on_term(
    timeout: Option<relink::Duration>,
    slot: &Arc<std::sync::OnceLock<Arc<relink::tokio::Listener>>>,
) -> Option<Box<dyn FnOnce() + Send>> {
    let slot = slot.clone();
    let timeout = timeout?;
    Some(Box::new(move || {
        let aborted = match slot.get() {
            Some(l) => {
                let (a, b, c, d) = (l.clone(), l.clone(), l.clone(), l.clone());
                crate::node::drain(
                    &crate::node::Drainable {
                        drain: Box::new(move || a.drain()),
                        active: Box::new(move || b.active_session_count()),
                        abort_all: Box::new(move |code| c.abort_all(code)),
                        unconfirmed: Box::new(move || d.unconfirmed_sessions()),
                    },
                    timeout,
                    "SIGTERM",
                )
            }
            None => 0,
        };
        log::end_status();
        crate::node::print_summary();
        std::process::exit(if aborted == 0 {
            0
        } else {
            status::SESSION_LOST.into()
        });
    }))
}

/// Log a failed `accept` on `local`, once per `throttle`'s period at most
/// (with how many failed meanwhile).
fn accept_failed(throttle: &mut Throttle, local: &str, e: &io::Error) {
    if let Some(more) = throttle.hit(std::time::Instant::now()) {
        if more > 0 {
            warn!(addr = %local, "accept failed: {e} ({more} more since the last line)");
        } else {
            warn!(addr = %local, "accept failed: {e}");
        }
    }
}

/// Lets a repeated event through once per `every`, counting the others.
struct Throttle {
    every: StdDuration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl Throttle {
    fn new(every: StdDuration) -> Self {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// The event happened at `now`: `Some(n)` to report it (`n` = events
    /// held back since the last report), `None` to keep quiet.
    fn hit(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Connect to the first of `addrs` that accepts; the last error otherwise.
async fn connect_any(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// End `tcp` with a reset: SO_LINGER 0, then close.
fn reset(tcp: TcpStream) {
    let _ = socket2::SockRef::from(&tcp).set_linger(Some(StdDuration::ZERO));
    drop(tcp);
}

/// A relink stream of either side, as the tunnels need it.
pub trait Session: AsyncRead + AsyncWrite + Unpin + Send {
    /// Abort the session with `code` (see the drivers' `abort`).
    fn abort_with(&self, code: AbortCode);
    /// Why the session ended, once it has.
    fn ended(&self) -> Option<CloseReason>;
}

impl Session for relink::tokio::ClientStream {
    fn abort_with(&self, code: AbortCode) {
        self.abort(code);
    }
    fn ended(&self) -> Option<CloseReason> {
        self.close_reason()
    }
}

impl Session for relink::tokio::ServerStream {
    fn abort_with(&self, code: AbortCode) {
        self.abort(code);
    }
    fn ended(&self) -> Option<CloseReason> {
        self.close_reason()
    }
}

/// The running tunnels, as far as SIGINT/SIGTERM need them: the signal
/// sets `interrupt`; each tunnel aborts its session, waits for the
/// acknowledgement and counts itself out of `live`.
#[derive(Clone)]
struct Tunnels {
    interrupt: watch::Receiver<bool>,
    live: Arc<AtomicUsize>,
    acked: Arc<AtomicUsize>,
}

impl Tunnels {
    /// Take over SIGINT and SIGTERM (a task of the current runtime). With
    /// `on_term`, the first SIGTERM runs it on a thread of its own instead
    /// (a drain, which ends the process itself); the next signal aborts.
    fn install(on_term: Option<Box<dyn FnOnce() + Send>>) -> io::Result<Tunnels> {
        let (tx, rx) = watch::channel(false);
        let me = Tunnels {
            interrupt: rx,
            live: Arc::new(AtomicUsize::new(0)),
            acked: Arc::new(AtomicUsize::new(0)),
        };
        #[cfg(unix)]
        let (mut int, mut term) = {
            use tokio::signal::unix::{signal, SignalKind};
            (
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            )
        };
        let (live, acked) = (me.live.clone(), me.acked.clone());
        tokio::spawn(async move {
            #[cfg(unix)]
            let which = {
                let mut on_term = on_term;
                loop {
                    let which = tokio::select! {
                        _ = int.recv() => "SIGINT",
                        _ = term.recv() => "SIGTERM",
                    };
                    match on_term.take() {
                        Some(f) if which == "SIGTERM" => {
                            let _ = std::thread::Builder::new()
                                .name("relink-drain".into())
                                .spawn(f);
                        }
                        _ => break which,
                    }
                }
            };
            #[cfg(not(unix))]
            drop(on_term);
            #[cfg(not(unix))]
            let which = {
                let _ = tokio::signal::ctrl_c().await;
                "Ctrl-C"
            };
            let n = live.load(Ordering::SeqCst);
            let _ = tx.send(true);
            let end = tokio::time::Instant::now() + INTERRUPT_WAIT;
            while live.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < end {
                tokio::time::sleep(StdDuration::from_millis(5)).await;
            }
            log::end_status();
            log::say(format!(
                "relink: {which}: aborted {n} session(s) ({} acknowledged by the peer)",
                acked.load(Ordering::SeqCst)
            ));
            // The node's summary is its last line on every exit path.
            crate::node::print_summary();
            std::process::exit(status::INTERRUPTED);
        });
        Ok(me)
    }

    /// Run one tunnel between `session` and `tcp` until both directions
    /// ended or one side failed (see the module docs).
    async fn run<S: Session>(&self, session: &mut S, mut tcp: TcpStream) -> io::Result<Spliced> {
        let _live = Live::new(&self.live);
        let mut interrupt = self.interrupt.clone();
        let r = {
            let mut pump = Pump::new(session, &mut tcp);
            tokio::select! {
                r = poll_fn(|cx| pump.poll(cx)) => Some(r),
                _ = async {
                    // The signal task never drops its sender (it ends the
                    // process); should it, that is no interrupt.
                    if interrupt.wait_for(|v| *v).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => None,
            }
        };
        match r {
            Some(Ok(stats)) => Ok(stats),
            Some(Err(Failed::Tcp(e))) => {
                session.abort_with(AbortCode::TARGET_RESET);
                reset(tcp);
                Err(io::Error::new(
                    e.kind(),
                    format!("tunnelled TCP connection: {e}; session aborted"),
                ))
            }
            Some(Err(Failed::Session(e))) => {
                reset(tcp);
                Err(e)
            }
            None => {
                session.abort_with(AbortCode::INTERRUPTED);
                reset(tcp);
                // Keep the session until the peer acknowledged (the
                // signal task exits the process after a while anyway).
                let end = tokio::time::Instant::now() + INTERRUPT_WAIT;
                while session.ended().is_none() && tokio::time::Instant::now() < end {
                    tokio::time::sleep(StdDuration::from_millis(5)).await;
                }
                if session.ended().is_some() {
                    self.acked.fetch_add(1, Ordering::SeqCst);
                }
                Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"))
            }
        }
    }
}

/// Counts a running tunnel while it lives.
struct Live<'a>(&'a AtomicUsize);

impl<'a> Live<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Live(n)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bytes carried by a tunnel that ended cleanly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spliced {
    /// From the TCP connection into the session.
    pub to_session: u64,
    /// From the session out to the TCP connection.
    pub from_session: u64,
}

impl std::fmt::Display for Spliced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes into the session, {} bytes out of it",
            self.to_session, self.from_session
        )
    }
}

/// Which side of a tunnel failed.
#[derive(Debug)]
enum Failed {
    /// The TCP connection (reset, or broken): the session is to be aborted.
    Tcp(io::Error),
    /// The session (aborted by the peer, lost): the TCP connection is to be
    /// reset.
    Session(io::Error),
}

/// One direction of a tunnel: bytes read from one side that the other did
/// not take yet, and how far the direction got.
#[derive(Default)]
struct Direction {
    /// Read but not yet written (empty, with no allocation, while idle).
    held: Vec<u8>,
    /// How much of `held` was written.
    off: usize,
    /// The source reached EOF.
    eof: bool,
    /// The destination was half-closed after EOF: this direction is done.
    done: bool,
    /// Bytes carried.
    total: u64,
}

impl Direction {
    fn holding(&self) -> bool {
        self.off < self.held.len()
    }

    /// Keep `rest` (what the destination did not take yet).
    fn hold(&mut self, rest: &[u8]) {
        self.held.clear();
        self.held.extend_from_slice(rest);
        self.off = 0;
    }

    /// `n` more bytes of `held` were written; free it once all were.
    fn wrote(&mut self, n: usize) {
        self.off += n;
        if self.off >= self.held.len() {
            self.held = Vec::new();
            self.off = 0;
        }
    }
}

/// Both directions of one tunnel, driven by one task ([`Pump::poll`]).
struct Pump<'a, S> {
    session: &'a mut S,
    tcp: &'a mut TcpStream,
    /// TCP → session.
    up: Direction,
    /// Session → TCP.
    down: Direction,
}

/// Write as much of `data` as `w` takes now: `Ok(n)` (0 when it takes
/// nothing yet).
fn write_now<W: AsyncWrite + Unpin>(
    w: &mut W,
    cx: &mut Context<'_>,
    data: &[u8],
) -> io::Result<usize> {
    let mut n = 0;
    while n < data.len() {
        match Pin::new(&mut *w).poll_write(cx, &data[n..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(k)) => n += k,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    Ok(n)
}

/// One step of a direction from `r` to `w`: write what is held, else read
/// and write, else (at EOF) half-close `w`. `Ok(true)` when something
/// happened. Errors: `Err((true, e))` when reading `r` failed,
/// `Err((false, e))` when writing `w` failed.
fn step<R, W>(
    d: &mut Direction,
    r: &mut R,
    w: &mut W,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Result<bool, (bool, io::Error)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if d.done {
        return Ok(false);
    }
    if d.holding() {
        let n = write_now(w, cx, &d.held[d.off..]).map_err(|e| (false, e))?;
        d.wrote(n);
        return Ok(n > 0);
    }
    if !d.eof {
        let mut rb = ReadBuf::new(buf);
        match Pin::new(&mut *r).poll_read(cx, &mut rb) {
            Poll::Pending => return Ok(false),
            Poll::Ready(Err(e)) => return Err((true, e)),
            Poll::Ready(Ok(())) => {}
        }
        let data = rb.filled();
        if data.is_empty() {
            d.eof = true;
            return Ok(true);
        }
        d.total += data.len() as u64;
        let n = write_now(w, cx, data).map_err(|e| (false, e))?;
        if n < data.len() {
            d.hold(&data[n..]);
        }
        return Ok(true);
    }
    match Pin::new(&mut *w).poll_shutdown(cx) {
        Poll::Pending => Ok(false),
        Poll::Ready(Ok(())) => {
            d.done = true;
            Ok(true)
        }
        Poll::Ready(Err(e)) => Err((false, e)),
    }
}

impl<'a, S: Session> Pump<'a, S> {
    fn new(session: &'a mut S, tcp: &'a mut TcpStream) -> Self {
        Pump {
            session,
            tcp,
            up: Direction::default(),
            down: Direction::default(),
        }
    }

    /// Copy both ways until both directions are done or a side failed.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Spliced, Failed>> {
        // This thread's copy buffer, zeroed once per thread (a fresh
        // 16 KiB stack array cost a memset on every poll).
        let mut buf = COPY_BUF
            .with(|c| c.take())
            .unwrap_or_else(|| vec![0u8; CHUNK].into_boxed_slice());
        let r = self.poll_with(cx, &mut buf);
        COPY_BUF.with(|c| c.set(Some(buf)));
        r
    }

    fn poll_with(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<Spliced, Failed>> {
        for _ in 0..STEPS_PER_POLL {
            let up =
                step(&mut self.up, self.tcp, self.session, cx, buf).map_err(|(reading, e)| {
                    if reading {
                        Failed::Tcp(e)
                    } else {
                        Failed::Session(e)
                    }
                })?;
            let down =
                step(&mut self.down, self.session, self.tcp, cx, buf).map_err(|(reading, e)| {
                    if reading {
                        Failed::Session(e)
                    } else {
                        Failed::Tcp(e)
                    }
                })?;
            if self.up.done && self.down.done {
                return Poll::Ready(Ok(Spliced {
                    to_session: self.up.total,
                    from_session: self.down.total,
                }));
            }
            if !up && !down {
                return Poll::Pending;
            }
        }
        // Busy: let the other tunnels run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_one_event_through_per_period_and_counts_the_rest() {
        let mut t = Throttle::new(StdDuration::from_secs(5));
        let t0 = std::time::Instant::now();
        let at = |ms: u64| t0 + StdDuration::from_millis(ms);
        assert_eq!(t.hit(at(0)), Some(0));
        // Every 20 ms for the next 5 s: quiet.
        let quiet = (1..250).filter(|i| t.hit(at(i * 20)).is_some()).count();
        assert_eq!(quiet, 0);
        assert_eq!(t.hit(at(5_000)), Some(249));
        assert_eq!(t.hit(at(5_001)), None);
        assert_eq!(t.hit(at(20_000)), Some(1));
    }
}
