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
//! both tests fail there. B's handshake cannot even start until A's
//! callback returns, so the log reads `["A released", "B done"]` after the
//! failsafe. With one lock per session they pass: `["B done", "A released"]`.

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
    c.shutdown_write().expect("client shutdown");
    if let Some(tx) = wrote {
        let _ = tx.send(());
    }
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
    // A's client wrote (and half-closed) while A's server side is stuck.
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
