//! The Endpoint + Connection split (issue 10): timer work visits only due
//! sessions, and the sessions of one endpoint run on different threads at
//! once.

use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;
use relink::{
    Client, Config, Connection, Dispatch, Duration, Endpoint, Instant, Server, ServerEvent,
    SessionId, TransportId, MIN_TRANSMIT_BUFFER,
};
use std::sync::{Arc, Barrier};

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Open `n` sessions on `server`, session `i` at `start + i * gap`, and
/// drop their clients (the transports stay attached and idle). Returns
/// (session, transport) pairs and the time after the last one.
fn open_idle_sessions(
    server: &mut Server<ChaCha20Rng>,
    cfg: &Config,
    n: usize,
    start: Instant,
    gap: Duration,
) -> (Vec<(SessionId, TransportId)>, Instant) {
    let mut wire = vec![0u8; 4096];
    let mut out = Vec::with_capacity(n);
    let mut now = start;
    for i in 0..n {
        // The server reads no wall clock: its freshness clock is `now`,
        // which the client's hello carries.
        let ccfg = Config {
            wall_clock: relink_test_support::harness::wall_at(now.as_micros()),
            ..cfg.clone()
        };
        let mut client = Client::new(ccfg, rng(1_000_000 + i as u64));
        let tid = server.accept(now).expect("accept");
        client.new_transport(now).expect("new_transport");
        let mut sid = None;
        for _ in 0..3 {
            let k = client.poll_transmit(now, &mut wire).expect("client tx");
            assert_eq!(server.handle_input(tid, now, &wire[..k]).expect("rx"), k);
            let k = server
                .poll_transmit(tid, now, &mut wire)
                .expect("server tx");
            assert_eq!(client.handle_input(now, &wire[..k]).expect("rx"), k);
            while let Some(e) = server.poll_event() {
                if let ServerEvent::HandshakeDone { session, .. } = e {
                    sid = Some(session);
                }
            }
        }
        out.push((sid.expect("handshake"), tid));
        now = now.saturating_add(gap);
    }
    (out, now)
}

/// Sessions whose next deadline is due at `now`, counted from the outside
/// (each connection's own timer table).
fn due_at(
    server: &Server<ChaCha20Rng>,
    sessions: &[(SessionId, TransportId)],
    now: Instant,
) -> u64 {
    sessions
        .iter()
        .filter(|(sid, _)| {
            server
                .connection(*sid)
                .and_then(|c| c.poll_timeout())
                .is_some_and(|d| d <= now)
        })
        .count() as u64
}

/// 100,000 idle sessions, created 10 µs apart so that their keepalive
/// deadlines are spread over one second. Time then advances in steps; each
/// `handle_timeout` must run exactly the connections that were due (counted
/// through `Server::timer_visits`, not by time), and `poll_timeout` must be
/// the earliest deadline. The old `Server` scanned every session on every
/// call: it would have visited 100,000 per step.
#[test]
fn timer_steps_visit_only_due_sessions_at_100k() {
    let n: usize = std::env::var("RELINK_TIMER_TEST_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let cfg = Config {
        max_sessions: n + 1,
        max_pending_transports: n + 1,
        ..Config::default()
    };
    let mut server = Server::new(cfg.clone(), rng(7));
    let start = Instant::from_micros(1_000_000);
    let (sessions, after) =
        open_idle_sessions(&mut server, &cfg, n, start, Duration::from_micros(10));
    assert_eq!(server.session_count(), n);
    // The handshake PING was the last thing sent: keepalives fall due
    // `keepalive_interval` after each session's creation.
    let first_due = server.poll_timeout().expect("a deadline");
    assert_eq!(
        first_due,
        start.saturating_add(cfg.keepalive_interval),
        "poll_timeout is the earliest deadline"
    );
    let mut buf = vec![0u8; MIN_TRANSMIT_BUFFER * 4];
    assert!(
        after < first_due,
        "all sessions exist before the first keepalive"
    );
    let mut total_due = 0;
    let mut steps_with_nothing_due = 0;
    // 40 steps of 50 ms over the second in which keepalives fall due:
    // about 5,000 sessions due per step, none at the first steps.
    for step in 0..40u64 {
        let now = start
            .saturating_add(cfg.keepalive_interval)
            .saturating_add(Duration::from_millis(50 * step))
            .saturating_sub_or(Duration::from_millis(100));
        let expected = due_at(&server, &sessions, now);
        let before = server.timer_visits();
        server.handle_timeout(now);
        let visits = server.timer_visits() - before;
        assert_eq!(
            visits, expected,
            "step {step}: visited {visits} connections, {expected} were due"
        );
        if expected == 0 {
            steps_with_nothing_due += 1;
        }
        total_due += expected;
        // A driver then writes what is due (the keepalive PINGs), which
        // moves those deadlines on; the server names exactly those
        // transports.
        let mut written = 0;
        while let Some(tid) = server.poll_writable() {
            let k = server.poll_transmit(tid, now, &mut buf).expect("tx");
            assert!(k > 0, "a writable transport has bytes");
            written += 1;
        }
        assert_eq!(
            written, expected,
            "step {step}: every due keepalive is written"
        );
        for (_, tid) in &sessions {
            assert!(!server.wants_transmit(*tid, now), "nothing left to write");
        }
        assert!(
            server.poll_timeout().is_none_or(|d| d > now),
            "step {step}: nothing due is left after the step"
        );
        assert!(server.poll_event().is_none(), "no session times out");
    }
    assert!(steps_with_nothing_due >= 2, "some steps had nothing due");
    assert_eq!(total_due, n as u64, "every session was due exactly once");
}

trait SubOr {
    fn saturating_sub_or(self, d: Duration) -> Instant;
}
impl SubOr for Instant {
    fn saturating_sub_or(self, d: Duration) -> Instant {
        Instant::from_micros(self.as_micros().saturating_sub(d.as_micros()))
    }
}

/// One endpoint, two sessions: the connections leave the endpoint and run
/// on two threads at the same time (a barrier makes both threads sit in
/// the middle of their transfer at once), each carrying 2 MiB each way
/// byte-exact. Nothing is shared between them: `Connection` is `Send` and
/// owned by its thread.
#[test]
fn two_sessions_of_one_endpoint_run_on_two_threads_at_once() {
    let cfg = Config::default();
    let mut endpoint = Endpoint::new(cfg.clone(), rng(3));
    let now = Instant::from_micros(1_000);
    let mut pairs: Vec<(Client<ChaCha20Rng>, Box<Connection>, TransportId)> = Vec::new();
    let mut wire = vec![0u8; 4096];
    for i in 0..2u64 {
        let mut client = Client::new(cfg.clone(), rng(100 + i));
        let tid = endpoint.accept(now).expect("accept");
        client.new_transport(now).expect("new_transport");
        let k = client.poll_transmit(now, &mut wire).expect("hello");
        match endpoint
            .handle_input(tid, now, &wire[..k])
            .expect("hello in")
        {
            Dispatch::Pending(m) => assert_eq!(m, k),
            other => panic!("unexpected {other:?}"),
        }
        let k = endpoint
            .poll_transmit(tid, &mut wire)
            .expect("server hello");
        client
            .handle_input(now, &wire[..k])
            .expect("server hello in");
        let k = client.poll_transmit(now, &mut wire).expect("confirm");
        let conn = match endpoint
            .handle_input(tid, now, &wire[..k])
            .expect("confirm in")
        {
            Dispatch::NewConnection {
                consumed,
                connection,
            } => {
                assert_eq!(consumed, k);
                connection
            }
            other => panic!("unexpected {other:?}"),
        };
        pairs.push((client, conn, tid));
    }
    assert_eq!(endpoint.session_count(), 2);
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = pairs
        .into_iter()
        .enumerate()
        .map(|(i, (mut client, mut conn, tid))| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                const TOTAL: usize = 2 << 20;
                let salt = i as u8 + 1;
                let byte = |o: usize| (o as u8).wrapping_mul(31).wrapping_add(salt);
                let (mut up_sent, mut down_sent, mut up_got, mut down_got) = (0, 0, 0, 0);
                let mut wire = vec![0u8; 64 * 1024];
                let mut app = vec![0u8; 64 * 1024];
                let mut chunk = vec![0u8; 16 * 1024];
                let mut met = false;
                let mut t = now;
                while up_got < TOTAL || down_got < TOTAL {
                    t = t.saturating_add(Duration::from_micros(50));
                    if !met && up_got > TOTAL / 2 {
                        // Both threads are mid-transfer, each inside its
                        // own connection, at the same moment.
                        barrier.wait();
                        met = true;
                    }
                    if up_sent < TOTAL {
                        let n = chunk.len().min(TOTAL - up_sent);
                        for (k, b) in chunk[..n].iter_mut().enumerate() {
                            *b = byte(up_sent + k);
                        }
                        up_sent += client.send(&chunk[..n]).expect("client send");
                    }
                    if down_sent < TOTAL {
                        let n = chunk.len().min(TOTAL - down_sent);
                        for (k, b) in chunk[..n].iter_mut().enumerate() {
                            *b = byte(down_sent + k) ^ 0x5a;
                        }
                        down_sent += conn.send(&chunk[..n]).expect("server send");
                    }
                    let k = client.poll_transmit(t, &mut wire).expect("client tx");
                    assert_eq!(conn.handle_input(tid, t, &wire[..k]).expect("server rx"), k);
                    while let Ok(m) = conn.recv(&mut app) {
                        if m == 0 {
                            break;
                        }
                        for (k, b) in app[..m].iter().enumerate() {
                            assert_eq!(*b, byte(up_got + k), "upstream byte {}", up_got + k);
                        }
                        up_got += m;
                    }
                    let k = conn.poll_transmit(tid, t, &mut wire).expect("server tx");
                    assert_eq!(client.handle_input(t, &wire[..k]).expect("client rx"), k);
                    while let Ok(m) = client.recv(&mut app) {
                        if m == 0 {
                            break;
                        }
                        for (k, b) in app[..m].iter().enumerate() {
                            assert_eq!(*b, byte(down_got + k) ^ 0x5a, "downstream");
                        }
                        down_got += m;
                    }
                    while conn.poll_event().is_some() {}
                }
                assert!(met, "thread {i} met the other mid-transfer");
                (up_got, down_got)
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("thread"), (2 << 20, 2 << 20));
    }
}

/// Handshake one client through `endpoint` on a fresh transport; returns
/// the connection.
fn establish(
    endpoint: &mut Endpoint<ChaCha20Rng>,
    client: &mut Client<ChaCha20Rng>,
    now: Instant,
) -> (Box<Connection>, TransportId) {
    let mut wire = vec![0u8; 4096];
    let tid = endpoint.accept(now).expect("accept");
    client.new_transport(now).expect("new_transport");
    let k = client.poll_transmit(now, &mut wire).expect("hello");
    assert!(matches!(
        endpoint
            .handle_input(tid, now, &wire[..k])
            .expect("hello in"),
        Dispatch::Pending(_)
    ));
    let k = endpoint
        .poll_transmit(tid, &mut wire)
        .expect("server hello");
    client
        .handle_input(now, &wire[..k])
        .expect("server hello in");
    let k = client.poll_transmit(now, &mut wire).expect("confirm");
    match endpoint
        .handle_input(tid, now, &wire[..k])
        .expect("confirm in")
    {
        Dispatch::NewConnection { connection, .. } => (connection, tid),
        other => panic!("unexpected {other:?}"),
    }
}

/// The client's resume request on a new transport, as the endpoint routes it.
fn resume_request(
    endpoint: &mut Endpoint<ChaCha20Rng>,
    client: &mut Client<ChaCha20Rng>,
    now: Instant,
) -> (TransportId, Dispatch) {
    let mut wire = vec![0u8; 4096];
    client.transport_lost(now);
    let tid = endpoint.accept(now).expect("accept");
    client.new_transport(now).expect("new_transport");
    let k = client.poll_transmit(now, &mut wire).expect("request");
    (
        tid,
        endpoint.handle_input(tid, now, &wire[..k]).expect("routed"),
    )
}

/// A resume goes through the endpoint's routing table to the session's
/// connection, which takes the transport over; the endpoint keeps nothing
/// of it.
#[test]
fn resume_is_routed_to_the_owning_connection() {
    let cfg = Config::default();
    let mut endpoint = Endpoint::new(cfg.clone(), rng(11));
    let mut client = Client::new(cfg, rng(12));
    let now = Instant::from_micros(1_000);
    let (mut conn, first) = establish(&mut endpoint, &mut client, now);
    assert_eq!(endpoint.route(conn.conn_id()), Some(conn.session()));
    assert_eq!(endpoint.pending_transports(), 0);
    let (tid, d) = resume_request(&mut endpoint, &mut client, now);
    let Dispatch::Resume {
        session, request, ..
    } = d
    else {
        panic!("expected a resume, got {d:?}");
    };
    assert_eq!(session, conn.session());
    assert!(
        !endpoint.holds_transport(tid),
        "the transport left the endpoint"
    );
    conn.handle_resume(tid, now, &request).expect("accepted");
    assert_eq!(conn.transport(), Some(tid));
    let mut closed_old = false;
    while let Some(e) = conn.poll_event() {
        if let ServerEvent::CloseTransport { transport, error } = e {
            assert_eq!((transport, error), (first, None));
            closed_old = true;
        }
    }
    assert!(closed_old, "the replaced transport is closed");
    let mut wire = vec![0u8; 4096];
    let k = conn.poll_transmit(tid, now, &mut wire).expect("response");
    client.handle_input(now, &wire[..k]).expect("response in");
    assert!(client.is_connected());
}

/// A session that expired tells the endpoint to forget its route; until
/// the driver passed that on, a resume that still reaches the connection
/// gets the same "unknown session" answer (with the reset token) that the
/// endpoint gives afterwards.
#[test]
fn an_expired_connection_is_unroutable_before_and_after_the_endpoint_hears_of_it() {
    let cfg = Config::default();
    let mut endpoint = Endpoint::new(cfg.clone(), rng(21));
    let mut client = Client::new(cfg.clone(), rng(22));
    let t0 = Instant::from_micros(1_000);
    let (mut conn, first) = establish(&mut endpoint, &mut client, t0);
    conn.transport_lost(first, t0);
    assert_eq!(
        conn.poll_timeout(),
        Some(t0.saturating_add(cfg.resume_timeout)),
        "a detached session's only timer is its expiry"
    );
    let late = t0.saturating_add(cfg.resume_timeout);
    conn.handle_timeout(late);
    assert!(!conn.is_routable());
    // Race: the endpoint still routes to the connection.
    let (tid, d) = resume_request(&mut endpoint, &mut client, late);
    let Dispatch::Resume { request, .. } = d else {
        panic!("expected a resume, got {d:?}");
    };
    let rej = conn
        .handle_resume(tid, late, &request)
        .expect_err("unknown");
    assert_eq!(
        rej.error(),
        relink::Error::ResumeRejected(relink::ResumeStatus::UnknownSession)
    );
    assert_eq!(rej.reply().len(), 18, "status + reset token");
    assert_eq!(rej.reply(), endpoint.unknown_session(&request).reply());
    // The driver passes the connection's requests on: the route is gone,
    // and (nothing was left to read) the session no longer counts.
    let mut forwarded = Vec::new();
    while let Some(e) = conn.poll_endpoint_event() {
        endpoint.handle_event(e);
        forwarded.push(e);
    }
    assert_eq!(
        forwarded,
        [
            relink::EndpointEvent::Unroutable {
                session: conn.session(),
                conn_id: conn.conn_id()
            },
            relink::EndpointEvent::Released {
                session: conn.session()
            }
        ]
    );
    assert_eq!(endpoint.session_count(), 0);
    assert_eq!(endpoint.route(conn.conn_id()), None);
    while conn.poll_event().is_some() {}
    assert!(conn.is_drained());
    let mut wire = vec![0u8; 4096];
    client.transport_lost(late);
    let tid = endpoint.accept(late).expect("accept");
    client.new_transport(late).expect("new_transport");
    let k = client.poll_transmit(late, &mut wire).expect("request");
    let e = endpoint
        .handle_input(tid, late, &wire[..k])
        .expect_err("the endpoint answers itself");
    assert_eq!(e, rej.error());
    let k = endpoint.poll_transmit(tid, &mut wire).expect("reply");
    assert_eq!(&wire[..k], rej.reply(), "the same answer either way");
}

/// The client reads its deadlines off the same `Timer` kinds: a handshake
/// deadline while the hello is out, the link timers once open, the give-up
/// deadline while it has no transport; `poll_timeout` is the earliest.
#[test]
fn client_timer_table_follows_its_phase() {
    use relink::timer::Timer;
    let cfg = Config::default();
    let mut endpoint = Endpoint::new(cfg.clone(), rng(31));
    let mut client = Client::new(cfg.clone(), rng(32));
    let t0 = Instant::from_micros(5_000);
    let tid = endpoint.accept(t0).expect("accept");
    client.new_transport(t0).expect("new_transport");
    let t = client.timers();
    assert_eq!(
        t.get(Timer::Handshake),
        Some(t0.saturating_add(cfg.handshake_timeout))
    );
    assert_eq!(t.get(Timer::Idle), None);
    assert_eq!(client.poll_timeout(), t.get(Timer::Handshake));
    let mut wire = vec![0u8; 4096];
    let k = client.poll_transmit(t0, &mut wire).expect("hello");
    let _ = endpoint
        .handle_input(tid, t0, &wire[..k])
        .expect("hello in");
    let k = endpoint
        .poll_transmit(tid, &mut wire)
        .expect("server hello");
    client
        .handle_input(t0, &wire[..k])
        .expect("server hello in");
    let t = client.timers();
    assert_eq!(t.get(Timer::Handshake), None, "open: no handshake deadline");
    assert_eq!(
        t.get(Timer::Idle),
        Some(t0.saturating_add(cfg.idle_timeout))
    );
    assert!(t.get(Timer::Keepalive).is_some());
    assert_eq!(client.poll_timeout(), t.next());
    client.transport_lost(t0);
    let t = client.timers();
    assert_eq!(t.get(Timer::Idle), None);
    assert_eq!(
        t.get(Timer::GiveUp),
        client.give_up_at(),
        "detached: the give-up deadline is the timer"
    );
    assert!(t.get(Timer::GiveUp).is_some());
}
