//! Issue 14: graceful drain in both server drivers (`Listener::drain`,
//! `Listener::abort_all`, `session_count`). A drained listener keeps
//! serving the resumes of its sessions (through a relay that cuts the
//! transports) until they end byte-exact, answers a new session Busy so
//! that the client's next transport goes elsewhere (here: a second
//! listener, as a balancer would pick), and at the deadline aborts every
//! session, attached or detached, with `AbortCode::SHUTTING_DOWN`, which
//! the client sees.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use relink::driver::SessionError;
use relink::{AbortCode, Backoff, Config, Duration};
use relink_test_support::harness::{check_pattern, pattern};
use relink_test_support::relay::{FaultPlan, Relay};

const BYTES: usize = 512 * 1024;
const SALT: u64 = 0xD7A1_0014;

fn cfg() -> Config {
    Config {
        handshake_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(2),
        keepalive_interval: Duration::from_millis(400),
        resume_timeout: Duration::from_secs(30),
        ..Config::default()
    }
}

fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(100),
        max_attempts: Some(50),
    }
}

fn cutting() -> FaultPlan {
    FaultPlan {
        cut_after_bytes: Some((24_000, 96_000)),
        ..FaultPlan::default()
    }
}

fn data() -> Vec<u8> {
    let mut d = vec![0u8; BYTES];
    pattern(SALT, 0, &mut d);
    d
}

fn session_error(e: &io::Error) -> SessionError {
    e.get_ref()
        .and_then(|e| e.downcast_ref::<SessionError>())
        .cloned()
        .unwrap_or_else(|| panic!("no SessionError inside {e:?} ({e})"))
}

/// Wait (at most `within`) until `f` holds.
fn eventually(within: StdDuration, what: &str, mut f: impl FnMut() -> bool) {
    let end = StdInstant::now() + within;
    while !f() {
        assert!(StdInstant::now() < end, "timed out waiting until {what}");
        thread::sleep(StdDuration::from_millis(10));
    }
}

/// The first transport goes to `first`, every later one to `then` (what a
/// balancer does with a client whose server answered Busy).
fn redirect(first: SocketAddr, then: SocketAddr, attempts: &Arc<AtomicUsize>) -> SocketAddr {
    if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
        first
    } else {
        then
    }
}

/// A one-connection TCP forwarder to `target` whose client→server
/// direction can be turned into a black hole (bytes read and dropped), and
/// which can cut the connection.
struct Forwarder {
    addr: SocketAddr,
    blackhole: Arc<std::sync::atomic::AtomicBool>,
    socks: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Forwarder {
    fn start(target: SocketAddr) -> Forwarder {
        use std::net::{TcpListener, TcpStream};
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let blackhole = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let socks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (bh, ss) = (blackhole.clone(), socks.clone());
        thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let Ok(s) = TcpStream::connect(target) else {
                    continue;
                };
                ss.lock()
                    .unwrap()
                    .extend([c.try_clone().unwrap(), s.try_clone().unwrap()]);
                let pipe =
                    |mut r: TcpStream,
                     mut w: TcpStream,
                     hole: Option<Arc<std::sync::atomic::AtomicBool>>| {
                        thread::spawn(move || {
                            let mut buf = [0u8; 16 * 1024];
                            while let Ok(n) = r.read(&mut buf) {
                                if n == 0 {
                                    break;
                                }
                                if hole.as_ref().is_some_and(|h| h.load(Ordering::SeqCst)) {
                                    continue;
                                }
                                if w.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                            let _ = w.shutdown(std::net::Shutdown::Both);
                        })
                    };
                pipe(
                    c.try_clone().unwrap(),
                    s.try_clone().unwrap(),
                    Some(bh.clone()),
                );
                pipe(s, c, None);
            }
        });
        Forwarder {
            addr,
            blackhole,
            socks,
        }
    }

    fn blackhole(&self) {
        self.blackhole.store(true, Ordering::SeqCst);
    }

    fn cut(&self) {
        for s in self.socks.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

mod on_blocking {
    use super::*;
    use relink::blocking::{ClientBuilder, Listener};
    use std::net::TcpStream;

    #[test]
    fn a_draining_listener_serves_resumes_and_sends_new_sessions_elsewhere() {
        let a = Listener::bind("127.0.0.1:0", cfg()).unwrap();
        let b = Listener::bind("127.0.0.1:0", cfg()).unwrap();
        let relay = Relay::start(a.local_addr(), cutting(), 14).unwrap();
        let client = ClientBuilder::new(cfg())
            .backoff(backoff())
            .connect(relay.local_addr())
            .unwrap();
        let old = a.accept().unwrap();
        a.drain();
        assert!(a.is_draining() && !b.is_draining());
        let server = thread::spawn(move || -> io::Result<Vec<u8>> {
            let mut got = Vec::new();
            (&old).read_to_end(&mut got)?;
            old.close()?;
            Ok(got)
        });
        // A new session during the drain: Busy from `a`, done on `b`.
        let attempts = Arc::new(AtomicUsize::new(0));
        let (aa, ba, n) = (a.local_addr(), b.local_addr(), attempts.clone());
        let newcomer = ClientBuilder::new(cfg())
            .backoff(backoff())
            .connect_with(move || TcpStream::connect(redirect(aa, ba, &n)))
            .unwrap();
        let on_b = b.accept().unwrap();
        assert!(
            attempts.load(Ordering::SeqCst) >= 2,
            "the first try was not refused"
        );
        assert_eq!(on_b.conn_id(), newcomer.conn_id());
        (&newcomer).write_all(b"elsewhere").unwrap();
        let mut got = [0u8; 9];
        (&on_b).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"elsewhere");

        // The old session goes on through cuts, byte-exact.
        let d = data();
        (&client).write_all(&d).unwrap();
        client.close().unwrap();
        let got = server.join().unwrap().unwrap();
        assert_eq!(got.len(), BYTES);
        check_pattern(SALT, 0, &got);
        assert!(relay.stats().cuts > 0, "the relay never cut");
        let st = a.stats();
        assert!(st.resumes > 0, "no resume on the draining listener: {st:?}");
        assert_eq!(st.sessions, 1, "the draining listener took a new session");
        assert_eq!(b.stats().sessions, 1);
        eventually(
            StdDuration::from_secs(10),
            "the drained listener is empty",
            || a.active_session_count() == 0,
        );
    }

    #[test]
    fn at_the_deadline_every_session_is_aborted_with_shutting_down() {
        let a = Listener::bind("127.0.0.1:0", cfg()).unwrap();
        let attached = ClientBuilder::new(cfg())
            .backoff(backoff())
            .connect(a.local_addr())
            .unwrap();
        let s1 = a.accept().unwrap();
        // A second session whose client lost its path (the relay is gone,
        // its reconnects are refused): detached on the server.
        let relay = Relay::start(a.local_addr(), FaultPlan::default(), 1).unwrap();
        let detached = ClientBuilder::new(cfg())
            .backoff(backoff())
            .connect(relay.local_addr())
            .unwrap();
        let s2 = a.accept().unwrap();
        drop(relay);
        eventually(
            StdDuration::from_secs(10),
            "the second client is detached",
            || !detached.is_connected(),
        );
        (&attached).write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        (&s1).read_exact(&mut one).unwrap();

        a.drain();
        assert_eq!(a.abort_all(AbortCode::SHUTTING_DOWN), 2);
        assert_eq!(a.abort_all(AbortCode::SHUTTING_DOWN), 0, "aborted twice");
        let e = (&attached).read(&mut one).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
        assert_eq!(
            session_error(&e).abort_code(),
            Some(AbortCode::SHUTTING_DOWN)
        );
        let e = (&s1).read(&mut one).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");
        assert_eq!(
            session_error(&(&s2).write(b"y").unwrap_err()).abort_code(),
            Some(AbortCode::SHUTTING_DOWN)
        );
        // The detached one ends once the wait for its answer ran out.
        eventually(StdDuration::from_secs(10), "the attached one ended", || {
            s1.close_reason().is_some()
        });
        eventually(StdDuration::from_secs(10), "both sessions are gone", || {
            a.active_session_count() == 0
        });
    }

    /// The client is done (it read our CLOSE, its own was acknowledged) but
    /// its acknowledgement of our CLOSE was lost, and then its transport:
    /// it never resumes. Every byte was delivered both ways, so the drain
    /// does not wait for it (the core would keep it until resume_timeout).
    #[test]
    fn a_session_missing_only_the_ack_of_our_close_does_not_hold_the_drain() {
        let a = Listener::bind("127.0.0.1:0", cfg()).unwrap();
        let fwd = Forwarder::start(a.local_addr());
        let client = ClientBuilder::new(cfg())
            .backoff(backoff())
            .connect(fwd.addr)
            .unwrap();
        let server = a.accept().unwrap();
        (&client).write_all(b"request").unwrap();
        client.shutdown_write().unwrap();
        let mut got = Vec::new();
        (&server).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"request");
        (&server).write_all(b"reply").unwrap();
        (&server).flush().unwrap(); // acknowledged
        a.drain();
        assert_eq!(a.active_session_count(), 1);
        // From now on nothing of the client reaches the server.
        fwd.blackhole();
        let closing = thread::spawn(move || server.shutdown_write());
        let mut reply = Vec::new();
        (&client).read_to_end(&mut reply).unwrap();
        assert_eq!(reply, b"reply");
        client.close().unwrap(); // done for the client
        fwd.cut();
        eventually(
            StdDuration::from_secs(10),
            "the session no longer counts",
            || a.active_session_count() == 0,
        );
        assert_eq!(a.session_count(), 1, "the core still holds it");
        drop(client);
        drop(a);
        assert!(
            closing.join().unwrap().is_err(),
            "our CLOSE was never acknowledged"
        );
    }

    /// As above, but the cut also took the client's acknowledgement of our
    /// last bytes: the client has them and is done, the server cannot
    /// know. The drain does not wait for the session either (nothing can
    /// make progress but a client that comes back), and names it among
    /// the unconfirmed sessions with the bytes it cannot confirm.
    #[test]
    fn a_closed_session_whose_last_ack_was_cut_is_reported_unconfirmed() {
        let a = Listener::bind("127.0.0.1:0", cfg()).unwrap();
        let fwd = Forwarder::start(a.local_addr());
        let client = ClientBuilder::new(cfg())
            .backoff(backoff())
            .connect(fwd.addr)
            .unwrap();
        let server = a.accept().unwrap();
        (&client).write_all(b"request").unwrap();
        client.shutdown_write().unwrap();
        let mut got = Vec::new();
        (&server).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"request");
        a.drain();
        assert!(a.unconfirmed_sessions().is_empty());
        // From now on nothing of the client reaches the server: not its
        // acknowledgement of the reply either.
        fwd.blackhole();
        (&server).write_all(b"reply").unwrap();
        let closing = thread::spawn(move || server.shutdown_write());
        let mut reply = Vec::new();
        (&client).read_to_end(&mut reply).unwrap();
        assert_eq!(reply, b"reply");
        client.close().unwrap(); // done for the client
        fwd.cut();
        eventually(
            StdDuration::from_secs(10),
            "the session no longer counts",
            || a.active_session_count() == 0,
        );
        let left = a.unconfirmed_sessions();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].1, b"reply".len(), "the bytes it cannot confirm");
        assert_eq!(a.session_count(), 1, "the core still holds it");
        drop(client);
        drop(a);
        assert!(closing.join().unwrap().is_err());
    }
}

mod on_tokio {
    use super::*;
    use ::tokio::io::{AsyncReadExt, AsyncWriteExt};
    use ::tokio::net::TcpStream;
    use relink::tokio::{ClientBuilder, Listener};

    async fn eventually_async(within: StdDuration, what: &str, mut f: impl FnMut() -> bool) {
        let end = StdInstant::now() + within;
        while !f() {
            assert!(StdInstant::now() < end, "timed out waiting until {what}");
            ::tokio::time::sleep(StdDuration::from_millis(10)).await;
        }
    }

    #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_draining_listener_serves_resumes_and_sends_new_sessions_elsewhere() {
        let a = Listener::bind("127.0.0.1:0", cfg()).await.unwrap();
        let b = Listener::bind("127.0.0.1:0", cfg()).await.unwrap();
        let relay = Relay::start(a.local_addr().unwrap(), cutting(), 15).unwrap();
        let mut client = ClientBuilder::new(cfg())
            .backoff(backoff())
            .connect(relay.local_addr())
            .await
            .unwrap();
        let mut old = a.accept().await.unwrap();
        a.drain();
        assert!(a.is_draining() && !b.is_draining());
        let server = ::tokio::spawn(async move {
            let mut got = Vec::new();
            old.read_to_end(&mut got).await?;
            old.close().await?;
            io::Result::Ok(got)
        });
        let attempts = Arc::new(AtomicUsize::new(0));
        let (aa, ba, n) = (
            a.local_addr().unwrap(),
            b.local_addr().unwrap(),
            attempts.clone(),
        );
        let mut newcomer = ClientBuilder::new(cfg())
            .backoff(backoff())
            .connect_with(move || TcpStream::connect(redirect(aa, ba, &n)))
            .await
            .unwrap();
        let mut on_b = b.accept().await.unwrap();
        assert!(
            attempts.load(Ordering::SeqCst) >= 2,
            "the first try was not refused"
        );
        assert_eq!(on_b.conn_id(), newcomer.conn_id());
        newcomer.write_all(b"elsewhere").await.unwrap();
        let mut got = [0u8; 9];
        on_b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"elsewhere");

        let d = data();
        client.write_all(&d).await.unwrap();
        client.close().await.unwrap();
        let got = server.await.unwrap().unwrap();
        assert_eq!(got.len(), BYTES);
        check_pattern(SALT, 0, &got);
        assert!(relay.stats().cuts > 0, "the relay never cut");
        let st = a.stats();
        assert!(st.resumes > 0, "no resume on the draining listener: {st:?}");
        assert_eq!(st.sessions, 1, "the draining listener took a new session");
        assert_eq!(b.stats().sessions, 1);
        eventually_async(
            StdDuration::from_secs(10),
            "the drained listener is empty",
            || a.active_session_count() == 0,
        )
        .await;
    }

    #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_the_deadline_every_session_is_aborted_with_shutting_down() {
        let a = Listener::bind("127.0.0.1:0", cfg()).await.unwrap();
        let addr = a.local_addr().unwrap();
        let mut attached = ClientBuilder::new(cfg())
            .backoff(backoff())
            .connect(addr)
            .await
            .unwrap();
        let mut s1 = a.accept().await.unwrap();
        let relay = Relay::start(addr, FaultPlan::default(), 2).unwrap();
        let detached = ClientBuilder::new(cfg())
            .backoff(backoff())
            .connect(relay.local_addr())
            .await
            .unwrap();
        let mut s2 = a.accept().await.unwrap();
        drop(relay);
        eventually_async(
            StdDuration::from_secs(10),
            "the second client is detached",
            || !detached.is_connected(),
        )
        .await;
        attached.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        s1.read_exact(&mut one).await.unwrap();

        a.drain();
        assert_eq!(a.abort_all(AbortCode::SHUTTING_DOWN), 2);
        assert_eq!(a.abort_all(AbortCode::SHUTTING_DOWN), 0, "aborted twice");
        let e = attached.read(&mut one).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
        assert_eq!(
            session_error(&e).abort_code(),
            Some(AbortCode::SHUTTING_DOWN)
        );
        let e = s1.read(&mut one).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");
        let e = s2.write(b"y").await.unwrap_err();
        assert_eq!(
            session_error(&e).abort_code(),
            Some(AbortCode::SHUTTING_DOWN)
        );
        eventually_async(StdDuration::from_secs(10), "both sessions are gone", || {
            a.active_session_count() == 0
        })
        .await;
    }

    #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_missing_only_the_ack_of_our_close_does_not_hold_the_drain() {
        let a = Listener::bind("127.0.0.1:0", cfg()).await.unwrap();
        let fwd = Forwarder::start(a.local_addr().unwrap());
        let mut client = ClientBuilder::new(cfg())
            .backoff(backoff())
            .connect(fwd.addr)
            .await
            .unwrap();
        let mut server = a.accept().await.unwrap();
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        server.write_all(b"reply").await.unwrap();
        server.flush().await.unwrap();
        a.drain();
        assert_eq!(a.active_session_count(), 1);
        fwd.blackhole();
        let closing = ::tokio::spawn(async move {
            let r = server.shutdown().await;
            (r, server)
        });
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"reply");
        client.close().await.unwrap();
        fwd.cut();
        eventually_async(
            StdDuration::from_secs(10),
            "the session no longer counts",
            || a.active_session_count() == 0,
        )
        .await;
        assert_eq!(a.session_count(), 1, "the core still holds it");
        assert!(
            !closing.is_finished(),
            "our CLOSE was acknowledged after all"
        );
        closing.abort();
    }
}
