//! Sessions of one `relink::tokio::Listener` progress independently on a
//! multi-thread runtime: a transport whose `poll_read` or `poll_write`
//! blocks its worker thread (standing in for slow crypto or a slow socket)
//! stalls only its own session.
//!
//! Session A's server transport is wrapped in a [`Gate`] that, once armed,
//! blocks the thread inside one `poll_read` (or `poll_write`) until session
//! B completed an echo round trip, or 10 s passed. The test asserts on the
//! order of events: B's echo finished *before* A's blocked poll returned.
//!
//! Before/after: with the old driver (main at 1125700, one `Mutex` around
//! the whole core `Server`, held across frame crypto and socket I/O by every
//! transport task) both tests fail: the worker running session B's transport
//! task blocks on the shared mutex while A's task holds it inside the gated
//! poll, so B's echo only completes after the gate gave up waiting (10 s)
//! ("session B waited for session A's blocked transport"). With one lock per
//! session and no lock held across socket I/O they pass in well under a
//! second. (Recorded: on 1125700 `cargo test --all-features --test
//! tokio_concurrency` gives 3 passed, 2 failed in 10.3 s, the two failures
//! being the blocked-read and blocked-write tests; on the ported driver all
//! 5 pass in 0.3 s.)
//!
//! The other tests check that the timers and teardown of the per-session
//! structure behave as the single-mutex driver did (they pass on both): a
//! detached session expires by its own timer, the endpoint's timer ends a
//! silent transport, dropping the server fails its streams.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::Duration as StdDuration;

use relink::tokio::{ClientStream, Listener};
use relink::{Backoff, Config};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::mpsc;

/// How long the gate blocks at most when nobody releases it.
const GATE_TIMEOUT: StdDuration = StdDuration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Read,
    Write,
}

/// Shared between the gate (in the server's transport task) and the test.
#[derive(Default)]
struct GateState {
    /// The next `poll_read`/`poll_write` on the gated side blocks.
    armed: AtomicBool,
    /// The blocking poll returned.
    returned: AtomicBool,
    /// The blocking poll gave up waiting for the release.
    timed_out: AtomicBool,
    /// Set by the test to let the blocked poll return.
    release: Mutex<bool>,
    cv: Condvar,
}

impl GateState {
    fn open(&self) {
        *self.release.lock().unwrap() = true;
        self.cv.notify_all();
    }

    /// Block the calling thread until `open` or the timeout.
    fn block(&self, entered: &mpsc::UnboundedSender<()>) {
        let _ = entered.send(());
        let guard = self.release.lock().unwrap();
        let (_guard, r) = self
            .cv
            .wait_timeout_while(guard, GATE_TIMEOUT, |open| !*open)
            .unwrap();
        self.timed_out.store(r.timed_out(), Ordering::SeqCst);
        self.returned.store(true, Ordering::SeqCst);
    }
}

/// A transport whose gated side blocks its thread once when armed.
struct Gate {
    inner: DuplexStream,
    side: Side,
    state: Arc<GateState>,
    entered: mpsc::UnboundedSender<()>,
}

impl Gate {
    fn maybe_block(&self, side: Side) {
        if self.side == side && self.state.armed.swap(false, Ordering::SeqCst) {
            self.state.block(&self.entered);
        }
    }
}

impl AsyncRead for Gate {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.maybe_block(Side::Read);
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Gate {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.maybe_block(Side::Write);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A client whose transports are in-memory pipes; the server half goes to
/// `to_server`, tagged with whether it is session A's (gated).
async fn connect(
    gated: bool,
    to_server: mpsc::UnboundedSender<(DuplexStream, bool)>,
) -> ClientStream {
    let backoff = Backoff {
        initial: relink::Duration::from_millis(2),
        max: relink::Duration::from_millis(50),
        max_attempts: Some(20),
    };
    ClientStream::connect_with(Config::default(), backoff, move || {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let sent = to_server.send((server, gated));
        async move {
            sent.map_err(|_| io::Error::other("server gone"))?;
            Ok(client)
        }
    })
    .await
    .expect("connect")
}

async fn round_trip(c: &mut ClientStream, msg: &[u8]) {
    c.write_all(msg).await.expect("write");
    let mut got = vec![0u8; msg.len()];
    c.read_exact(&mut got).await.expect("read echo");
    assert_eq!(got, msg);
}

/// What the client side observed.
struct Observed {
    /// B's echo completed while A's gated poll was still blocked.
    b_done_before_gate_returned: bool,
}

/// The clients, on their own thread and runtime (so that the only thing
/// blocked is a worker of the server's runtime).
fn run_clients(
    to_server: mpsc::UnboundedSender<(DuplexStream, bool)>,
    gate: Arc<GateState>,
    mut entered: mpsc::UnboundedReceiver<()>,
) -> std::thread::JoinHandle<Observed> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut a = connect(true, to_server.clone()).await;
            let mut b = connect(false, to_server).await;
            round_trip(&mut a, b"a1: both sessions up").await;
            round_trip(&mut b, b"b1: both sessions up").await;

            // Make A's server transport block a worker thread inside its
            // next gated poll: A's bytes (or their echo) get there.
            gate.armed.store(true, Ordering::SeqCst);
            a.write_all(b"a2: this one hits the gate").await.unwrap();
            entered.recv().await.expect("gate entered");

            // Meanwhile B must complete a whole echo round trip.
            round_trip(&mut b, b"b2: independent of session A").await;
            let b_done_before_gate_returned = !gate.returned.load(Ordering::SeqCst);
            gate.open();

            // A goes on once its transport returns.
            let mut got = vec![0u8; 26];
            a.read_exact(&mut got).await.expect("a2 echo");
            assert_eq!(&got, b"a2: this one hits the gate");
            a.shutdown().await.unwrap();
            b.shutdown().await.unwrap();
            Observed {
                b_done_before_gate_returned,
            }
        })
    })
}

async fn two_sessions_progress_independently(side: Side) {
    let server = Arc::new(Listener::new(Config::default()));
    let gate = Arc::new(GateState::default());
    let (entered_tx, entered_rx) = mpsc::unbounded_channel();
    let (to_server, mut transports) = mpsc::unbounded_channel::<(DuplexStream, bool)>();

    // Transports from the clients' runtime into the server.
    let srv = server.clone();
    let g = gate.clone();
    tokio::spawn(async move {
        while let Some((t, gated)) = transports.recv().await {
            if gated {
                let gate = Gate {
                    inner: t,
                    side,
                    state: g.clone(),
                    entered: entered_tx.clone(),
                };
                srv.serve_transport(gate).unwrap();
            } else {
                srv.serve_transport(t).unwrap();
            }
        }
    });
    // Echo every session until its client closes.
    let srv = server.clone();
    tokio::spawn(async move {
        while let Ok(mut s) = srv.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });

    let clients = run_clients(to_server, gate.clone(), entered_rx);
    let observed = tokio::task::spawn_blocking(move || clients.join().expect("clients"))
        .await
        .unwrap();
    assert!(
        gate.returned.load(Ordering::SeqCst),
        "the gate was never hit"
    );
    assert!(
        observed.b_done_before_gate_returned && !gate.timed_out.load(Ordering::SeqCst),
        "session B waited for session A's blocked transport ({side:?} side)"
    );
    assert_eq!(server.stats().sessions, 2);
}

/// A's transport blocks its thread inside `poll_read`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_read_does_not_stall_another_session() {
    two_sessions_progress_independently(Side::Read).await;
}

/// A's transport blocks its thread inside `poll_write`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_write_does_not_stall_another_session() {
    two_sessions_progress_independently(Side::Write).await;
}

// ---------------------------------------------------------------------------
// Timers and teardown of the per-session structure.

/// A server-side transport the test can cut (its reads fail from then on).
struct Cuttable {
    inner: DuplexStream,
    cut: Arc<CutSwitch>,
}

#[derive(Default)]
struct CutSwitch {
    cut: AtomicBool,
    waker: Mutex<Option<std::task::Waker>>,
}

impl CutSwitch {
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }
}

impl AsyncRead for Cuttable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        *self.cut.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.cut.cut.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Cuttable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.cut.cut.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A session whose transport is cut and never resumed expires by its own
/// timer (no transport task is left to drive it), is reported as expired
/// and leaves the server once drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_session_expires_by_its_own_timer() {
    let server = Arc::new(Listener::new(Config {
        resume_timeout: relink::Duration::from_millis(300),
        ..Config::default()
    }));
    let switch = Arc::new(CutSwitch::default());
    let srv = server.clone();
    let sw = switch.clone();
    let first = Arc::new(AtomicBool::new(true));
    let backoff = Backoff {
        initial: relink::Duration::from_millis(5),
        max: relink::Duration::from_millis(20),
        max_attempts: Some(3),
    };
    let connect = ClientStream::connect_with(Config::default(), backoff, move || {
        // The first transport goes to the server; every later one fails.
        let r = if first.swap(false, Ordering::SeqCst) {
            let (client, server_half) = tokio::io::duplex(64 * 1024);
            srv.serve_transport(Cuttable {
                inner: server_half,
                cut: sw.clone(),
            })
            .map(|()| client)
        } else {
            Err(io::Error::other("no more transports"))
        };
        async move { r }
    });
    let (client, stream) = tokio::join!(connect, server.accept());
    let mut client = client.expect("connect");
    let mut stream = stream.expect("accept");
    round_trip_server(&mut client, &mut stream, b"before the cut").await;
    assert_eq!(server.session_count(), 1);

    switch.cut();
    let mut buf = [0u8; 16];
    let err = tokio::time::timeout(StdDuration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("the session expired in time")
        .expect_err("the session expired");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert_eq!(stream.close_reason(), Some(relink::CloseReason::Expired));
    let stats = server.stats();
    assert_eq!(stats.expired, 1, "{stats:?}");
    assert_eq!(stats.lost_io, 1, "{stats:?}");
    // Drained (nothing left to read): gone from the server (right after
    // the session's lock was released: the endpoint learns it then).
    tokio::time::timeout(StdDuration::from_secs(10), async {
        while server.session_count() != 0 {
            tokio::time::sleep(StdDuration::from_millis(1)).await;
        }
    })
    .await
    .expect("the expired session left the server");
    drop(client);
}

async fn round_trip_server(c: &mut ClientStream, s: &mut relink::tokio::ServerStream, msg: &[u8]) {
    c.write_all(msg).await.expect("client write");
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).await.expect("server read");
    s.write_all(&got).await.expect("server write");
    c.read_exact(&mut got).await.expect("client read");
    assert_eq!(got, msg);
}

/// A transport that never sends its first message is ended by the
/// endpoint's timer and counted as a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_transport_times_out_by_the_endpoint_timer() {
    let server = Listener::new(Config {
        handshake_timeout: relink::Duration::from_millis(200),
        ..Config::default()
    });
    let (mut client, server_half) = tokio::io::duplex(1024);
    server.serve_transport(server_half).unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(StdDuration::from_secs(10), client.read(&mut buf))
        .await
        .expect("closed in time")
        .expect("EOF");
    assert_eq!(n, 0);
    let stats = server.stats();
    assert_eq!((stats.transports, stats.timeouts), (1, 1), "{stats:?}");
    assert_eq!(server.session_count(), 0);
}

/// Dropping the server fails its sessions' streams and ends their
/// transports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_server_ends_its_sessions() {
    let server = Arc::new(Listener::new(Config::default()));
    let weak = Arc::downgrade(&server);
    let backoff = Backoff {
        initial: relink::Duration::from_millis(5),
        max: relink::Duration::from_millis(20),
        max_attempts: Some(3),
    };
    let connect = ClientStream::connect_with(Config::default(), backoff, move || {
        let r = match weak.upgrade() {
            Some(srv) => {
                let (client, server_half) = tokio::io::duplex(64 * 1024);
                srv.serve_transport(server_half).map(|()| client)
            }
            None => Err(io::Error::other("server dropped")),
        };
        async move { r }
    });
    let (client, stream) = tokio::join!(connect, server.accept());
    let mut client = client.expect("connect");
    let mut stream = stream.expect("accept");
    round_trip_server(&mut client, &mut stream, b"hello").await;

    drop(Arc::into_inner(server).expect("the only strong reference"));
    let mut buf = [0u8; 16];
    let err = tokio::time::timeout(StdDuration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("not left pending")
        .expect_err("the server is gone");
    // `SessionError::Shutdown`, as in the blocking driver.
    assert_eq!(err.kind(), io::ErrorKind::NotConnected, "{err}");
    let err = stream
        .write_all(b"x")
        .await
        .expect_err("the server is gone");
    // `SessionError::Shutdown`, as in the blocking driver.
    assert_eq!(err.kind(), io::ErrorKind::NotConnected, "{err}");
    // The server's transport task ended: the client loses its transport
    // (and cannot open another one).
    tokio::time::timeout(StdDuration::from_secs(10), async {
        while client.is_connected() {
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
    })
    .await
    .expect("the client's transport was closed");
}
