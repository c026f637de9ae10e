//! Sessions of one blocking `Listener` progress independently: a session
//! whose driver thread is held up does not hold up the others.
//!
//! The hook is the progress callback (`ListenerBuilder::on_progress`): the
//! driver calls it from the thread that processed the event, with the
//! locks that thread held. The callback blocks for one event of session A,
//! so A's server-side reader stops right there, in the middle of processing
//! A's input (as a reader stuck in slow frame processing would), while A's
//! client has sent data. Meanwhile session B connects, completes a full
//! echo and closes cleanly. The tests assert the *order*: B finished before
//! A's callback was released. The callback gives up blocking after
//! `FAILSAFE` so that a driver that serialises sessions fails the assertion
//! instead of hanging; no timing threshold decides the outcome.
//!
//! Checked against the old driver (main at 1125700, where the whole server
//! sat behind one `Mutex<ServerState>` and the callback ran with it held):
//! both `a_session_stuck_*` tests fail there. B's handshake cannot even
//! start until A's callback returns, so the log reads
//! `["A released", "B done"]` after the failsafe. With one lock per session
//! they pass: `["B done", "A released"]`.
//!
//! The other tests guard the per-session structure itself: many sessions
//! resuming across cuts at once (each resume routed by the endpoint to its
//! own session while the others run), and the timers of a session that has
//! no transport (its expiry). They pass on the old driver too.

use std::io::{Read, Write};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use relink::blocking::{ClientBuilder, ListenerBuilder, Progress, ServerStream};
use relink::{Backoff, Config, Duration, ServerEvent, SessionId};

/// How long the callback blocks at most (only a failing driver gets there).
const FAILSAFE: StdDuration = StdDuration::from_secs(10);

#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    cond: Condvar,
}

#[derive(Default)]
struct GateState {
    /// The session whose callback is (or was) blocked.
    blocked: Option<SessionId>,
    released: bool,
    log: Vec<&'static str>,
}

impl Gate {
    fn log(&self, what: &'static str) {
        self.state.lock().unwrap().log.push(what);
    }

    /// Block the first session for which `hit` holds, until released (or
    /// the failsafe passed).
    fn hold(&self, session: SessionId) {
        let mut st = self.state.lock().unwrap();
        if st.blocked.is_some() {
            return;
        }
        st.blocked = Some(session);
        self.cond.notify_all();
        let end = StdInstant::now() + FAILSAFE;
        while !st.released {
            let left = end.saturating_duration_since(StdInstant::now());
            if left.is_zero() {
                break;
            }
            st = self.cond.wait_timeout(st, left).unwrap().0;
        }
        st.log.push("A released");
    }

    fn wait_blocked(&self) -> SessionId {
        let mut st = self.state.lock().unwrap();
        let end = StdInstant::now() + FAILSAFE;
        while st.blocked.is_none() {
            let left = end.saturating_duration_since(StdInstant::now());
            assert!(!left.is_zero(), "the callback for session A never ran");
            st = self.cond.wait_timeout(st, left).unwrap().0;
        }
        st.blocked.unwrap()
    }

    fn release(&self) {
        self.state.lock().unwrap().released = true;
        self.cond.notify_all();
    }
}

fn config() -> Config {
    Config {
        handshake_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(200),
        max_attempts: Some(20),
    }
}

/// Echo every byte back until EOF, then close cleanly.
fn echo(s: ServerStream) {
    let mut buf = [0u8; 4096];
    loop {
        let n = (&s).read(&mut buf).expect("server read");
        if n == 0 {
            break;
        }
        (&s).write_all(&buf[..n]).expect("server write");
    }
    s.close().expect("server close");
}

/// A client session: write `msg`, half-close, read the echo to EOF, close.
fn echo_client(addr: std::net::SocketAddr, msg: &'static [u8], wrote: Option<mpsc::Sender<()>>) {
    let c = ClientBuilder::new(config())
        .backoff(backoff())
        .connect(addr)
        .expect("connect");
    (&c).write_all(msg).expect("client write");
    // (before the half-close: `shutdown_write` returns only once the
    // server acknowledged the CLOSE, which a stuck session cannot do)
    if let Some(tx) = wrote {
        let _ = tx.send(());
    }
    c.shutdown_write().expect("client shutdown");
    let mut got = Vec::new();
    (&c).read_to_end(&mut got).expect("client read");
    assert_eq!(got, msg);
    c.close().expect("client close");
}

/// Session A's callback blocks on the first event `hit` accepts; B runs a
/// full echo meanwhile. Returns the log.
fn run(hit: fn(&ServerEvent) -> Option<SessionId>) -> Vec<&'static str> {
    let gate = Arc::new(Gate::default());
    let g = gate.clone();
    let listener = ListenerBuilder::new(config())
        .on_progress(move |p| {
            if let Progress::Server(e) = p {
                if let Some(session) = hit(e) {
                    g.hold(session);
                }
            }
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = listener.local_addr();
    let server = thread::spawn(move || {
        let mut handlers = Vec::new();
        for _ in 0..2 {
            let s = listener.accept().expect("accept");
            handlers.push(thread::spawn(move || echo(s)));
        }
        for h in handlers {
            h.join().unwrap();
        }
    });

    let (tx, rx) = mpsc::channel();
    let a = thread::spawn(move || {
        echo_client(addr, b"from A, sent while A's reader is stuck", Some(tx))
    });
    let blocked = gate.wait_blocked();
    // A's client wrote while A's server side is stuck.
    rx.recv_timeout(FAILSAFE).expect("client A could not write");

    let g = gate.clone();
    let b = thread::spawn(move || {
        echo_client(addr, b"B: a full echo and a clean close", None);
        g.log("B done");
    });
    b.join().unwrap();
    gate.release();
    a.join().unwrap();
    server.join().unwrap();
    let log = gate.state.lock().unwrap().log.clone();
    eprintln!("blocked {blocked:?}: {log:?}");
    log
}

/// A's callback blocks on its `HandshakeDone`: the reader that verified A's
/// ClientConfirm is stuck before A reaches the accept queue.
#[test]
fn a_session_stuck_at_its_handshake_does_not_hold_up_another() {
    let log = run(|e| match e {
        ServerEvent::HandshakeDone { session, .. } => Some(*session),
        _ => None,
    });
    assert_eq!(log, ["B done", "A released"]);
}

/// A's callback blocks on its `PeerClosed`: A's reader is stuck right after
/// decrypting A's data and CLOSE, with A's application waiting to read.
#[test]
fn a_session_stuck_mid_stream_does_not_hold_up_another() {
    let log = run(|e| match e {
        ServerEvent::PeerClosed { session } => Some(*session),
        _ => None,
    });
    assert_eq!(log, ["B done", "A released"]);
}

/// Deterministic stream content: byte `i` of stream `salt`.
fn pattern(salt: u8, offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let x = (offset + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (salt as u64) << 56;
        *b = (x >> 29) as u8 ^ (x >> 47) as u8;
    }
}

fn write_pattern(mut w: impl Write, salt: u8, total: u64) {
    let mut buf = vec![0u8; 50_000];
    let mut sent = 0u64;
    while sent < total {
        let len = (buf.len() as u64).min(total - sent) as usize;
        pattern(salt, sent, &mut buf[..len]);
        w.write_all(&buf[..len]).expect("write");
        sent += len as u64;
    }
}

fn read_pattern(mut r: impl Read, salt: u8, total: u64) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        pattern(salt, got, &mut want[..n]);
        assert!(buf[..n] == want[..n], "stream {salt} differs near {got}");
        got += n as u64;
    }
    assert_eq!(got, total, "stream {salt}");
}

/// Short timers so that cut transports are noticed quickly.
fn fast_config() -> Config {
    Config {
        ack_delay: Duration::from_millis(2),
        keepalive_interval: Duration::from_millis(50),
        idle_timeout: Duration::from_millis(400),
        handshake_timeout: Duration::from_millis(1000),
        resume_timeout: Duration::from_secs(30),
        max_resume_attempts: 64,
        ..Config::default()
    }
}

/// Many sessions at once, each across many cuts (every resume goes through
/// the endpoint's routing to its own session, concurrently with the
/// others' traffic): every byte arrives once, in order, on the right
/// session, and each session ends cleanly.
#[test]
fn many_sessions_across_cuts_each_byte_exact() {
    use relink_test_support::relay::{FaultPlan, Relay};
    const SESSIONS: u8 = 6;
    const UP: u64 = 1024 * 1024 + 17;
    const DOWN: u64 = 512 * 1024 + 5;
    let listener = ListenerBuilder::new(fast_config())
        .bind("127.0.0.1:0")
        .unwrap();
    let plan = FaultPlan {
        cut_after_bytes: Some((32 * 1024, 256 * 1024)),
        corrupt_probability: 0.02,
        ..FaultPlan::default()
    };
    let relay = Relay::start(listener.local_addr(), plan, 0xB10C).unwrap();
    let server = thread::spawn(move || {
        let mut handlers = Vec::new();
        for _ in 0..SESSIONS {
            let s = listener.accept().expect("accept");
            handlers.push(thread::spawn(move || {
                // The client names its stream in its first byte.
                let mut salt = [0u8; 1];
                (&s).read_exact(&mut salt).unwrap();
                thread::scope(|scope| {
                    scope.spawn(|| write_pattern(&s, salt[0] + 100, DOWN));
                    read_pattern(&s, salt[0], UP);
                });
                s.close().expect("server close");
            }));
        }
        for h in handlers {
            h.join().unwrap();
        }
        listener.stats()
    });
    let addr = relay.local_addr();
    let clients: Vec<_> = (1..=SESSIONS)
        .map(|salt| {
            thread::spawn(move || {
                let c = ClientBuilder::new(fast_config())
                    .backoff(Backoff {
                        initial: Duration::from_millis(2),
                        max: Duration::from_millis(50),
                        max_attempts: Some(40),
                    })
                    .connect(addr)
                    .expect("connect");
                (&c).write_all(&[salt]).unwrap();
                thread::scope(|scope| {
                    scope.spawn(|| read_pattern(&c, salt + 100, DOWN));
                    write_pattern(&c, salt, UP);
                    c.shutdown_write().unwrap();
                });
                c.close().expect("client close");
                c.stats().resumes
            })
        })
        .collect();
    let resumes: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let stats = server.join().unwrap();
    eprintln!(
        "client resumes {resumes}, relay {:?}, server {stats:?}",
        relay.stats()
    );
    assert_eq!(stats.sessions, u64::from(SESSIONS));
    assert!(
        resumes >= u64::from(SESSIONS),
        "too few cuts to test: {resumes}"
    );
    assert!(stats.resumes >= resumes, "{stats:?}");
}

/// A session's timers run without any transport: a client that vanishes
/// (every reconnect refused) is expired by the server after its
/// `resume_timeout`, and the application's read fails with `Expired`;
/// the session is then freed.
#[test]
fn a_session_without_transport_expires() {
    use relink::blocking::SessionError;
    use relink_test_support::relay::{FaultPlan, Relay};
    let server_cfg = Config {
        resume_timeout: Duration::from_millis(600),
        ..fast_config()
    };
    let listener = ListenerBuilder::new(server_cfg)
        .bind("127.0.0.1:0")
        .unwrap();
    let relay = Relay::start(listener.local_addr(), FaultPlan::default(), 3).unwrap();
    let target = Arc::new(Mutex::new(Some(relay.local_addr())));
    let t = target.clone();
    let client = ClientBuilder::new(fast_config())
        .backoff(Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
            max_attempts: None,
        })
        .connect_with(move || match *t.lock().unwrap() {
            Some(a) => std::net::TcpStream::connect(a),
            None => Err(std::io::ErrorKind::ConnectionRefused.into()),
        })
        .unwrap();
    (&client).write_all(b"hi").unwrap();
    let server = listener.accept().unwrap();
    let mut got = [0u8; 2];
    (&server).read_exact(&mut got).unwrap();
    assert_eq!(listener.session_count(), 1);
    *target.lock().unwrap() = None;
    drop(relay); // the transport is cut; no new one ever arrives
    let e = (&server).read(&mut got).unwrap_err();
    let inner = e
        .get_ref()
        .and_then(|e| e.downcast_ref::<SessionError>())
        .unwrap_or_else(|| panic!("no SessionError in {e:?}"));
    assert!(matches!(inner, SessionError::Expired), "{inner:?}");
    assert!(server.wait_closed(StdDuration::ZERO));
    // Freed right after (the endpoint learns it once the session's lock is
    // released).
    let end = StdInstant::now() + StdDuration::from_secs(5);
    while listener.session_count() != 0 {
        assert!(
            StdInstant::now() < end,
            "the expired session is never freed"
        );
        thread::sleep(StdDuration::from_millis(1));
    }
    drop(client);
}
