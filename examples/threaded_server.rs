//! A multi-threaded echo server over `std::net`, built directly on
//! `relink::Endpoint` + `relink::Connection` (not on `relink::blocking`).
//!
//! - The acceptor thread registers each TCP connection with the endpoint and
//!   starts a *reader* thread for it.
//! - A reader feeds its transport's bytes to the endpoint (under the
//!   endpoint lock) until the endpoint dispatches it: a new session gets its
//!   own *session thread*, which owns the `Connection`; a resume is handed to
//!   the session's thread (`Attach`). From then on the reader forwards bytes
//!   to that thread over a channel.
//! - A session thread is the only one that touches its `Connection`: it
//!   feeds input, echoes what it reads, writes `poll_transmit` to the
//!   current socket, runs the connection's timers, and closes sockets the
//!   connection asks to close. It ends when the connection `is_drained`.
//! - A small timer thread runs the endpoint's timers.
//!
//! Clients (`relink::blocking`) send data, cut their TCP connection half-way
//! (`TcpStream::shutdown` on the socket the driver uses) and check that the
//! echo arrives exactly once after the resume.
//!
//! ```sh
//! cargo run --example threaded_server
//! ```

use std::collections::HashMap;
use std::io::ErrorKind::{TimedOut, WouldBlock};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration as StdDuration;

use relink::{
    os_rng, Config, Connection, Dispatch, Endpoint, Instant, OsRng, ServerEvent, SessionId,
    TransportId,
};

/// The core's monotonic clock: microseconds since the first call.
fn now() -> Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    Instant::from_micros(origin.elapsed().as_micros() as u64)
}

/// What a session thread receives.
enum Msg {
    /// Bytes read from one of its transports.
    Input(TransportId, Vec<u8>),
    /// That transport hit EOF or an error.
    Lost(TransportId),
    /// The endpoint routed a resume request on `transport` to this session.
    Attach {
        transport: TransportId,
        socket: TcpStream,
        request: Box<[u8; relink::wire::RESUME_REQUEST_LEN]>,
        rest: Vec<u8>,
    },
}

struct Shared {
    endpoint: Mutex<Endpoint<OsRng>>,
    sessions: Mutex<HashMap<SessionId, Sender<Msg>>>,
    live: AtomicUsize,
}

fn serve(listener: TcpListener, shared: Arc<Shared>) {
    // The endpoint's timers (handshake deadlines, unconfirmed sessions).
    let s = shared.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(StdDuration::from_millis(20));
        let mut ep = s.endpoint.lock().unwrap();
        if ep.poll_timeout().is_some_and(|t| t <= now()) {
            ep.handle_timeout(now());
        }
        while let Some(e) = ep.poll_event() {
            eprintln!("[endpoint] {e:?}");
        }
    });
    for socket in listener.incoming() {
        let Ok(socket) = socket else { continue };
        // With the peer's address the endpoint applies its per-source
        // limits and binds cookies to it (PROTOCOL.md 3.7).
        let peer = socket.peer_addr();
        let accepted = match &peer {
            Ok(p) => shared.endpoint.lock().unwrap().accept_from(now(), p.ip()),
            Err(_) => shared.endpoint.lock().unwrap().accept(now()),
        };
        match accepted {
            Ok(t) => {
                let s = shared.clone();
                std::thread::spawn(move || reader(socket, t, s));
            }
            Err(e) => match peer {
                Ok(p) => eprintln!("[acceptor] refused {p}: {e}"),
                Err(_) => eprintln!("[acceptor] refused: {e}"),
            },
        }
    }
}

/// Reads one TCP connection: first for the endpoint, then for a session.
fn reader(mut socket: TcpStream, t: TransportId, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = vec![0u8; 4096];
    let _ = socket.set_read_timeout(Some(StdDuration::from_millis(50)));
    let mut pending = Vec::new();
    // Phase 1: the transport belongs to the endpoint.
    let session: Sender<Msg> = loop {
        let n = match socket.read(&mut buf) {
            Ok(0) => return shared.endpoint.lock().unwrap().transport_lost(t, now()),
            Ok(n) => n,
            Err(e) if [WouldBlock, TimedOut].contains(&e.kind()) => 0,
            Err(_) => return shared.endpoint.lock().unwrap().transport_lost(t, now()),
        };
        pending.extend_from_slice(&buf[..n]);
        let mut ep = shared.endpoint.lock().unwrap();
        let dispatch = if pending.is_empty() {
            Ok(Dispatch::Pending(0))
        } else {
            ep.handle_input(t, now(), &pending)
        };
        let mut reply = Vec::new();
        if ep.holds_transport(t) {
            while let Ok(k @ 1..) = ep.poll_transmit(t, &mut out) {
                reply.extend_from_slice(&out[..k]);
            }
        }
        let ended = ep.holds_transport(t) && ep.transport_ended(t);
        match dispatch {
            Ok(Dispatch::Pending(k)) => drop(pending.drain(..k)),
            Ok(Dispatch::NewConnection {
                consumed,
                connection,
            }) => {
                drop(ep);
                pending.drain(..consumed);
                let (tx, rx) = channel();
                let sid = connection.session();
                shared.sessions.lock().unwrap().insert(sid, tx.clone());
                shared.live.fetch_add(1, Ordering::SeqCst);
                let (s, w) = (shared.clone(), socket.try_clone().unwrap());
                std::thread::spawn(move || session_thread(connection, t, w, rx, s));
                let _ = tx.send(Msg::Input(t, std::mem::take(&mut pending)));
                break tx;
            }
            Ok(Dispatch::Resume {
                consumed,
                session,
                request,
            }) => {
                pending.drain(..consumed);
                let tx = shared.sessions.lock().unwrap().get(&session).cloned();
                let w = socket.try_clone().unwrap();
                let msg = Msg::Attach {
                    transport: t,
                    socket: w,
                    request: Box::new(request),
                    rest: std::mem::take(&mut pending),
                };
                match tx.map(|tx| tx.send(msg).map(|()| tx)) {
                    Some(Ok(tx)) => break tx,
                    // The session's thread is gone: "unknown session".
                    _ => {
                        let _ = socket.write_all(ep.unknown_session(&request).reply());
                        let _ = socket.shutdown(Shutdown::Both);
                        return;
                    }
                }
            }
            Err(e) => {
                eprintln!("[transport {}] refused: {e}", t.0);
                ep.transport_lost(t, now());
                drop(ep);
                let _ = socket.write_all(&reply);
                let _ = socket.shutdown(Shutdown::Both);
                return;
            }
        }
        if ended {
            ep.transport_lost(t, now());
        }
        drop(ep);
        if socket.write_all(&reply).is_err() || ended {
            let _ = socket.shutdown(Shutdown::Both);
            return;
        }
    };
    // Phase 2: the transport belongs to a session; forward its bytes.
    let _ = socket.set_read_timeout(None);
    loop {
        match socket.read(&mut buf) {
            Ok(n @ 1..) if session.send(Msg::Input(t, buf[..n].to_vec())).is_ok() => {}
            _ => {
                let _ = session.send(Msg::Lost(t));
                let _ = socket.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Owns one session's `Connection`: echoes everything the client sends.
fn session_thread(
    mut conn: Box<Connection>,
    t: TransportId,
    socket: TcpStream,
    rx: std::sync::mpsc::Receiver<Msg>,
    shared: Arc<Shared>,
) {
    let sid = conn.session();
    let _ = socket.set_write_timeout(Some(StdDuration::from_secs(1)));
    // Sockets and unconsumed input of the transports this session holds.
    let mut sockets: HashMap<TransportId, (TcpStream, Vec<u8>)> =
        HashMap::from([(t, (socket, Vec::new()))]);
    let (mut buf, mut echo, mut closing) = (vec![0u8; 64 * 1024], Vec::<u8>::new(), false);
    while !conn.is_drained() {
        let wait = conn
            .poll_timeout()
            .map_or(StdDuration::from_millis(200), |d| {
                StdDuration::from_micros(d.as_micros().saturating_sub(now().as_micros()))
                    .min(StdDuration::from_millis(200))
            });
        let mut lost = Vec::new();
        match rx.recv_timeout(wait) {
            Ok(Msg::Input(t, bytes)) => {
                if let Some((_, pending)) = sockets.get_mut(&t) {
                    pending.extend_from_slice(&bytes);
                }
            }
            Ok(Msg::Lost(t)) => lost.push(t),
            Ok(Msg::Attach {
                transport,
                socket,
                request,
                rest,
            }) => match conn.handle_resume(transport, now(), &request) {
                Ok(()) => {
                    let _ = socket.set_write_timeout(Some(StdDuration::from_secs(1)));
                    sockets.insert(transport, (socket, rest));
                }
                Err(rejection) => {
                    eprintln!("[session {}] resume refused: {}", sid.0, rejection.error());
                    let _ = (&socket).write_all(rejection.reply());
                    let _ = socket.shutdown(Shutdown::Both);
                }
            },
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => unreachable!("the sessions map holds a sender"),
        }
        if conn.poll_timeout().is_some_and(|d| d <= now()) {
            conn.handle_timeout(now());
        }
        // Feed input and echo until neither makes progress.
        let cur = conn.transport();
        loop {
            let mut progress = false;
            if let Some((_, pending)) = cur.and_then(|c| sockets.get_mut(&c)) {
                if !pending.is_empty() {
                    match conn.handle_input(cur.unwrap(), now(), pending) {
                        Ok(k) => progress |= k > 0 && pending.drain(..k).len() > 0,
                        Err(e) => eprintln!(
                            "[session {}] transport {} failed: {e}",
                            sid.0,
                            cur.unwrap().0
                        ),
                    }
                }
            }
            if echo.is_empty() {
                match conn.recv(&mut buf) {
                    Ok(n @ 1..) => echo.extend_from_slice(&buf[..n]),
                    Ok(0) if !closing => {
                        conn.close(); // the client closed and we echoed everything
                        closing = true;
                    }
                    _ => {}
                }
            }
            if !echo.is_empty() {
                let k = conn.send(&echo).unwrap_or(0);
                progress |= echo.drain(..k).len() > 0;
            }
            if !progress {
                break;
            }
        }
        // Output: bytes for the current socket, then events.
        if let Some(c) = conn.transport() {
            let mut out = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = conn.poll_transmit(c, now(), &mut out) {
                if (&sockets[&c].0).write_all(&out[..n]).is_err() {
                    lost.push(c);
                    break;
                }
            }
        }
        while let Some(e) = conn.poll_event() {
            eprintln!("[session {}] {e:?}", sid.0);
            if let ServerEvent::CloseTransport { transport, .. } = e {
                lost.push(transport);
            }
        }
        for t in lost {
            if let Some((s, _)) = sockets.remove(&t) {
                let _ = s.shutdown(Shutdown::Both);
                conn.transport_lost(t, now());
            }
        }
        while let Some(e) = conn.poll_endpoint_event() {
            shared.endpoint.lock().unwrap().handle_event(e);
        }
    }
    eprintln!("[session {}] drained, thread ends", sid.0);
    shared.sessions.lock().unwrap().remove(&sid);
    for (s, _) in sockets.values() {
        let _ = s.shutdown(Shutdown::Both);
    }
    shared.live.fetch_sub(1, Ordering::SeqCst);
}

/// One client: sends `total` bytes, cuts its TCP connection half-way,
/// checks the echo.
fn client(addr: std::net::SocketAddr, id: u8, total: usize) -> std::io::Result<u64> {
    let current: Arc<Mutex<Option<TcpStream>>> = Arc::default();
    let slot = current.clone();
    let stream = relink::blocking::ClientBuilder::new(Config {
        send_buffer: 64 << 10,
        recv_buffer: 64 << 10,
        ..Config::default()
    })
    .connect_with(move || {
        let s = TcpStream::connect(addr)?;
        *slot.lock().unwrap() = Some(s.try_clone()?);
        Ok(s)
    })?;
    let data: Vec<u8> = (0..total)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(id))
        .collect();
    // Cut the TCP connection half-way through the writes; small buffers
    // keep data in flight both ways at that moment.
    let reader = std::thread::scope(|sc| -> std::io::Result<Vec<u8>> {
        let h = sc.spawn(|| {
            let mut echo = Vec::new();
            (&stream).read_to_end(&mut echo).map(|_| echo)
        });
        for (i, chunk) in data.chunks(4096).enumerate() {
            if i == total / 4096 / 2 {
                eprintln!("[client {id}] cutting the TCP connection");
                if let Some(s) = current.lock().unwrap().take() {
                    s.shutdown(Shutdown::Both)?;
                }
            }
            (&stream).write_all(chunk)?;
        }
        stream.shutdown_write()?;
        h.join().unwrap()
    })?;
    assert_eq!(reader.len(), data.len(), "client {id}: echo length");
    assert!(reader == data, "client {id}: echo differs");
    stream.close()?;
    Ok(stream.stats().resumes)
}

fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // A session that ended cleanly stays resumable (and its `Connection`
    // undrained) for `resume_timeout`, so that a client whose last ACK was
    // lost can still finish; shorten it so that this example sees every
    // session thread end.
    let config = Config {
        resume_timeout: relink::Duration::from_secs(2),
        ..Config::default()
    };
    let shared = Arc::new(Shared {
        endpoint: Mutex::new(Endpoint::new(config, os_rng())),
        sessions: Mutex::default(),
        live: AtomicUsize::new(0),
    });
    let s = shared.clone();
    std::thread::spawn(move || serve(listener, s));

    const CLIENTS: u8 = 4;
    let handles: Vec<_> = (0..CLIENTS)
        .map(|id| std::thread::spawn(move || client(addr, id, 1 << 20)))
        .collect();
    for (id, h) in handles.into_iter().enumerate() {
        let resumes = h.join().unwrap().unwrap();
        eprintln!("[client {id}] echo verified, {resumes} resume(s)");
        assert!(resumes >= 1, "client {id} should have resumed");
    }
    // Something that is not relink: the endpoint refuses it, we close it.
    let mut junk = TcpStream::connect(addr).unwrap();
    junk.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    junk.set_read_timeout(Some(StdDuration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    junk.read_to_end(&mut answer)
        .expect("the server closes a non-relink transport");
    eprintln!("[junk] closed by the server after {} byte(s)", answer.len());
    // Every session ends (cleanly) and its thread exits.
    let deadline = std::time::Instant::now() + StdDuration::from_secs(10);
    while shared.live.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(StdDuration::from_millis(10));
    }
    assert_eq!(shared.live.load(Ordering::SeqCst), 0, "sessions still live");
    assert_eq!(shared.endpoint.lock().unwrap().pending_transports(), 0);
    assert_eq!(shared.endpoint.lock().unwrap().session_count(), 0);
    println!("{CLIENTS} clients: 1 MiB each echoed exactly once across a cut TCP connection");
}
