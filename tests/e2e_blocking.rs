//! End to end over loopback TCP: the blocking driver (`relink::blocking`)
//! through the fault-injecting relay (`relink_test_support::relay`): byte-exact transfers
//! across forced cuts, corruption and stalls, retried first handshakes, and
//! the give-up limit.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;

use relink::blocking::{ClientBuilder, ClientStream, Listener, ServerStream, SessionError};
use relink::{Backoff, Config, Duration, StaticKeypair};
use relink_test_support::relay::{FaultPlan, Relay};

/// Deterministic stream content: byte `i` of stream `salt`.
fn pattern(salt: u8, offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let x = (offset + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (salt as u64) << 56;
        *b = (x >> 29) as u8 ^ (x >> 47) as u8;
    }
}

/// Short timers so that dead transports are noticed quickly.
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

fn fast_backoff(max_attempts: Option<u32>) -> Backoff {
    Backoff {
        initial: Duration::from_millis(2),
        max: Duration::from_millis(50),
        max_attempts,
    }
}

/// Write `total` pattern bytes in writes of varying size (seeded).
fn write_pattern(mut w: impl Write, salt: u8, total: u64, seed: u64) {
    let mut buf = vec![0u8; 100_000];
    let mut x = seed | 1;
    let mut sent = 0u64;
    while sent < total {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (1 + x % buf.len() as u64).min(total - sent) as usize;
        pattern(salt, sent, &mut buf[..len]);
        w.write_all(&buf[..len]).expect("write");
        sent += len as u64;
    }
}

/// Read exactly `total` pattern bytes (checking each), then expect EOF if asked.
fn read_pattern(mut r: impl Read, salt: u8, total: u64, expect_eof: bool) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    while got < total {
        let n = r.read(&mut buf).expect("read");
        assert!(n > 0, "early EOF at {got} of {total}");
        assert!(got + n as u64 <= total, "more bytes than sent");
        pattern(salt, got, &mut want[..n]);
        if buf[..n] != want[..n] {
            let i = (0..n).find(|&i| buf[i] != want[i]).unwrap();
            panic!("stream {salt} differs at offset {}", got + i as u64);
        }
        got += n as u64;
    }
    if expect_eof {
        assert_eq!(r.read(&mut buf).expect("read EOF"), 0, "EOF expected");
    }
    got
}

/// Server side of a transfer: read `up` bytes and EOF while writing `down`
/// bytes, then close cleanly.
fn serve(session: ServerStream, up: u64, down: u64) {
    thread::scope(|s| {
        let w = s.spawn(|| write_pattern(&session, 2, down, 99));
        read_pattern(&session, 1, up, true);
        w.join().unwrap();
    });
    session.close().expect("server clean close");
}

/// Client side: write `up` bytes while reading `down` bytes, then close.
fn run_client(client: &ClientStream, up: u64, down: u64) {
    thread::scope(|s| {
        let r = s.spawn(|| read_pattern(client, 2, down, false));
        write_pattern(client, 1, up, 7);
        client.shutdown_write().unwrap();
        assert_eq!(r.join().unwrap(), down);
    });
    (&*client).flush().expect("flush");
    assert_eq!(client.unacked(), 0);
    client.close().expect("client clean close");
}

#[test]
fn sixty_four_mib_across_a_hundred_cuts_byte_exact() {
    const UP: u64 = 64 * 1024 * 1024 + 777;
    const DOWN: u64 = 8 * 1024 * 1024 + 333;
    let listener = Listener::bind("127.0.0.1:0", fast_config()).unwrap();
    let plan = FaultPlan {
        cut_after_bytes: Some((64 * 1024, 576 * 1024)),
        corrupt_probability: 0.05,
        ..FaultPlan::default()
    };
    let relay = Relay::start(listener.local_addr(), plan, 0xC0FFEE).unwrap();
    // The listener outlives the client's close: a final ACK lost in a cut
    // is answered by a resume, which needs the listener (tests/soak.rs).
    let server = thread::spawn(move || {
        let session = listener.accept().unwrap();
        serve(session, UP, DOWN);
        (listener.stats(), listener)
    });
    let client = ClientBuilder::new(fast_config())
        .backoff(fast_backoff(Some(40)))
        .connect(relay.local_addr())
        .expect("connect");
    run_client(&client, UP, DOWN);
    let (server_stats, _listener) = server.join().unwrap();
    let rs = relay.stats();
    let cs = client.stats();
    eprintln!("relay {rs:?}\nclient {cs:?}\nserver {server_stats:?}");
    assert!(rs.cuts >= 100, "only {} cuts", rs.cuts);
    assert!(rs.bytes >= UP + DOWN, "relay forwarded {} bytes", rs.bytes);
    // Every cut of the established session forces a resume.
    assert!(cs.resumes >= 90, "{cs:?}");
    // A resume response lost in a cut counts on the server only.
    assert!(server_stats.resumes >= cs.resumes, "{server_stats:?}");
    assert_eq!(server_stats.sessions, 1);
}

#[test]
fn stalled_paths_are_detected_by_the_idle_timeout() {
    const UP: u64 = 2 * 1024 * 1024;
    const DOWN: u64 = 512 * 1024;
    let listener = Listener::bind("127.0.0.1:0", fast_config()).unwrap();
    // Every connection stalls (no FIN, no RST) after 128..256 KiB.
    let plan = FaultPlan {
        cut_after_bytes: Some((128 * 1024, 256 * 1024)),
        stall_probability: 1.0,
        ..FaultPlan::default()
    };
    let relay = Relay::start(listener.local_addr(), plan, 5).unwrap();
    let server = thread::spawn(move || {
        let session = listener.accept().unwrap();
        serve(session, UP, DOWN);
        listener
    });
    let client = ClientBuilder::new(fast_config())
        .backoff(fast_backoff(Some(40)))
        .connect(relay.local_addr())
        .expect("connect");
    run_client(&client, UP, DOWN);
    let _listener = server.join().unwrap();
    let rs = relay.stats();
    let cs = client.stats();
    eprintln!("relay {rs:?}\nclient {cs:?}");
    assert_eq!(rs.cuts, 0);
    assert!(rs.stalls >= 5, "{rs:?}");
    // Every stall was noticed (idle timeout) and replaced by a new transport.
    assert!(cs.transports >= rs.stalls, "{cs:?}");
    assert!(cs.resumes >= 5, "{cs:?}");
}

#[test]
fn first_handshake_is_retried_until_the_path_works() {
    let listener = Listener::bind("127.0.0.1:0", fast_config()).unwrap();
    // Cut during the handshake (ClientHello 35 B, ServerHello 82 B).
    let plan = FaultPlan {
        cut_after_bytes: Some((10, 60)),
        ..FaultPlan::default()
    };
    let relay = Arc::new(Relay::start(listener.local_addr(), plan, 9).unwrap());
    let r2 = relay.clone();
    let healer = thread::spawn(move || {
        while r2.stats().cuts < 3 {
            thread::sleep(std::time::Duration::from_millis(2));
        }
        r2.set_plan(FaultPlan::default());
    });
    let server = thread::spawn(move || {
        let mut s = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.close().unwrap();
        got
    });
    // A first handshake cut looks like a peer that hangs up without
    // answering: retried only when waiting for the server.
    let mut client = ClientBuilder::new(fast_config())
        .backoff(fast_backoff(None))
        .wait_for_server(true)
        .connect(relay.local_addr())
        .expect("connect");
    healer.join().unwrap();
    client.write_all(b"after a few failed handshakes").unwrap();
    client.close().unwrap();
    assert_eq!(server.join().unwrap(), b"after a few failed handshakes");
    assert!(relay.stats().cuts >= 3);
    assert!(client.stats().transports >= 4, "{:?}", client.stats());
}

#[test]
fn gives_up_after_the_backoff_limit() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }; // nothing listens there any more
    let err = ClientBuilder::new(fast_config())
        .backoff(fast_backoff(Some(3)))
        .wait_for_server(true)
        .connect(addr)
        .expect_err("nothing listens");
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<SessionError>())
        .expect("SessionError inside");
    assert!(
        matches!(inner, SessionError::GaveUp { attempts: 3, .. }),
        "{inner:?}"
    );
    assert!(err.to_string().contains("gave up"), "{err}");
}

#[test]
fn pinned_server_key_accepts_the_right_server_only() {
    let mut rng = relink::os_rng();
    let key = StaticKeypair::generate(&mut rng);
    let other = StaticKeypair::generate(&mut rng);
    let listener = Listener::bind(
        "127.0.0.1:0",
        Config {
            server_static: Some(key.clone()),
            ..fast_config()
        },
    )
    .unwrap();
    let addr = listener.local_addr();
    let server = thread::spawn(move || {
        let mut s = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.close().unwrap();
        got
    });
    let wrong = ClientBuilder::new(Config {
        pinned_server_key: Some(other.public_key()),
        ..fast_config()
    })
    .backoff(fast_backoff(Some(2)))
    .connect(addr);
    assert!(
        wrong.is_err(),
        "a client pinning another key must not connect"
    );
    let mut right = ClientBuilder::new(Config {
        pinned_server_key: Some(key.public_key()),
        ..fast_config()
    })
    .connect(addr)
    .expect("pinned connect");
    right.write_all(b"pinned").unwrap();
    right.close().unwrap();
    assert_eq!(server.join().unwrap(), b"pinned");
}

/// Regression: when a resume replaces a session's transport, the old
/// transport ends; the flush the driver does on `CloseTransport`
/// (`poll_transmit`) must return nothing, not panic (it once sliced
/// `control[82..0]`, seen in the writer threads during cut tests).
#[test]
fn flushing_a_transport_replaced_by_resume_sends_nothing() {
    use chacha20::ChaCha20Rng;
    use rand_core::SeedableRng;
    use relink::{Client, Instant, Server};
    let mut c = Client::new(Config::default(), ChaCha20Rng::seed_from_u64(1));
    let mut s = Server::new(Config::default(), ChaCha20Rng::seed_from_u64(2));
    let now = Instant::from_micros(1_000_000);
    let mut buf = vec![0u8; 4096];
    let t1 = s.accept(now).unwrap();
    c.new_transport(now).unwrap();
    for _ in 0..3 {
        let n = c.poll_transmit(now, &mut buf).unwrap();
        s.handle_input(t1, now, &buf[..n]).unwrap();
        let n = s.poll_transmit(t1, now, &mut buf).unwrap();
        c.handle_input(now, &buf[..n]).unwrap();
    }
    assert!(c.is_connected() && s.session_of(t1).is_some());
    // The client's path died silently; it resumes on t2 while the server
    // still has t1 attached.
    c.transport_lost(now);
    let t2 = s.accept(now).unwrap();
    c.new_transport(now).unwrap();
    let n = c.poll_transmit(now, &mut buf).unwrap();
    s.handle_input(t2, now, &buf[..n]).unwrap();
    assert!(s.transport_ended(t1), "t1 replaced");
    // CloseTransport { t1 }: flush, then close. Must not panic.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        s.poll_transmit(t1, now, &mut buf)
    }));
    assert!(
        matches!(r, Ok(Ok(0))),
        "poll_transmit on the replaced transport panicked or failed"
    );
}

/// The inner `SessionError` of a driver's `io::Error`.
fn session_error(e: &std::io::Error) -> &SessionError {
    e.get_ref()
        .and_then(|e| e.downcast_ref::<SessionError>())
        .unwrap_or_else(|| panic!("no SessionError inside {e:?}"))
}

#[test]
fn an_abort_reaches_the_peer_at_once_as_a_reset_naming_the_code() {
    use relink::AbortCode;
    let listener = Listener::bind("127.0.0.1:0", fast_config()).unwrap();
    let addr = listener.local_addr();
    let client = ClientBuilder::new(fast_config()).connect(addr).unwrap();
    (&client).write_all(b"hello").unwrap();
    let server = listener.accept().unwrap();
    let mut got = [0u8; 5];
    (&server).read_exact(&mut got).unwrap();
    // The client wrote more that the server will never acknowledge.
    (&client).write_all(&[7u8; 1000]).unwrap();
    let start = std::time::Instant::now();
    server.abort(AbortCode(0x1234));
    let mut buf = [0u8; 64];
    let e = loop {
        match (&client).read(&mut buf) {
            Ok(0) => panic!("a clean end of stream after an abort"),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    let inner = session_error(&e);
    assert_eq!(inner.abort_code(), Some(AbortCode(0x1234)));
    let text = e.to_string();
    assert!(text.contains("aborted by the peer"), "{text}");
    assert!(!text.contains("Aborted {"), "Debug output in {text}");
    // Writes fail the same way; the in-doubt range is stated.
    let w = (&client).write(b"more").unwrap_err();
    assert_eq!(w.kind(), std::io::ErrorKind::ConnectionReset);
    match session_error(&w) {
        SessionError::Ended {
            in_doubt: Some(r), ..
        } => {
            assert!(r.end == 1005 && r.start <= r.end, "{r:?}");
            assert!(
                w.to_string().contains(&format!("[{}, 1005)", r.start)),
                "{w}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.in_doubt().map(|r| r.end), Some(1005));
    assert!(server.wait_closed(std::time::Duration::from_secs(2)));
}

#[test]
fn a_dropped_client_stream_aborts_with_dropped() {
    use relink::AbortCode;
    let listener = Listener::bind("127.0.0.1:0", fast_config()).unwrap();
    let addr = listener.local_addr();
    let client = ClientBuilder::new(fast_config()).connect(addr).unwrap();
    (&client).write_all(b"x").unwrap();
    let server = listener.accept().unwrap();
    let mut one = [0u8; 1];
    (&server).read_exact(&mut one).unwrap();
    let start = std::time::Instant::now();
    drop(client); // neither closed nor aborted
    let e = (&server).read(&mut one).unwrap_err();
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    assert_eq!(session_error(&e).abort_code(), Some(AbortCode::DROPPED));
}

/// A 2 s outage in which every connect is refused costs dozens of attempts
/// (50 ms apart at most); the client keeps trying as long as the server
/// holds the session (its advertised resume timeout), not for a count of
/// attempts, and the session resumes.
#[test]
fn a_long_outage_does_not_make_the_client_give_up_by_count() {
    use std::sync::Mutex;
    let listener = Listener::bind("127.0.0.1:0", fast_config()).unwrap();
    let relay = Relay::start(listener.local_addr(), FaultPlan::default(), 9).unwrap();
    let target = Arc::new(Mutex::new(Some(relay.local_addr())));
    let t = target.clone();
    let client = ClientBuilder::new(fast_config())
        .backoff(fast_backoff(Some(3)))
        .connect_with(move || match *t.lock().unwrap() {
            Some(a) => std::net::TcpStream::connect(a),
            None => Err(std::io::ErrorKind::ConnectionRefused.into()),
        })
        .unwrap();
    (&client).write_all(b"before").unwrap();
    let server = listener.accept().unwrap();
    let mut got = [0u8; 6];
    (&server).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"before");

    *target.lock().unwrap() = None;
    drop(relay); // cuts the transport; every connect is refused now
    thread::sleep(std::time::Duration::from_secs(2));
    let relay = Relay::start(listener.local_addr(), FaultPlan::default(), 10).unwrap();
    *target.lock().unwrap() = Some(relay.local_addr());

    (&client).write_all(b"after").unwrap();
    let mut got = [0u8; 5];
    (&server).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"after");
    let stats = client.stats();
    assert!(stats.connect_failures > 3, "{stats:?}");
    assert!(stats.resumes >= 1, "{stats:?}");
}

/// When the server's advertised resume timeout passes without contact, the
/// core gives the session up (not the backoff) and the client's calls fail
/// with the reason and the in-doubt range of what it wrote.
#[test]
fn the_client_gives_up_when_the_server_can_no_longer_hold_the_session() {
    use std::sync::Mutex;
    let server_cfg = Config {
        resume_timeout: Duration::from_millis(800),
        ..fast_config()
    };
    let listener = Listener::bind("127.0.0.1:0", server_cfg).unwrap();
    let relay = Relay::start(listener.local_addr(), FaultPlan::default(), 11).unwrap();
    let target = Arc::new(Mutex::new(Some(relay.local_addr())));
    let t = target.clone();
    let client = ClientBuilder::new(fast_config())
        .backoff(fast_backoff(None))
        .connect_with(move || match *t.lock().unwrap() {
            Some(a) => std::net::TcpStream::connect(a),
            None => Err(std::io::ErrorKind::ConnectionRefused.into()),
        })
        .unwrap();
    (&client).write_all(b"acked").unwrap();
    (&client).flush().unwrap(); // acknowledged
    let _server = listener.accept().unwrap();
    *target.lock().unwrap() = None;
    drop(relay);
    (&client).write_all(b"in doubt").unwrap();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 8];
    let e = (&client).read(&mut buf).unwrap_err();
    let waited = start.elapsed();
    // resume timeout 0.8 s + idle timeout 0.4 s after the last contact.
    assert!(
        waited >= std::time::Duration::from_millis(700)
            && waited < std::time::Duration::from_secs(4),
        "{waited:?}"
    );
    match session_error(&e) {
        SessionError::Ended {
            reason: relink::CloseReason::Expired,
            in_doubt: Some(r),
        } => assert_eq!((r.start, r.end), (5, 13)),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("[5, 13)"), "{e}");
}

/// A new user's first mistake, a port where nothing listens, with every
/// default: `connect` fails at once with a typed error naming the address
/// (issue 12; waiting for the server is `wait_for_server`, bounded by the
/// backoff's attempts; after a session exists, only the core ends it).
#[test]
fn connect_to_a_dead_port_with_defaults_fails_within_seconds() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let started = std::time::Instant::now();
        let r = relink::blocking::connect(addr, Config::default());
        let _ = tx.send((r.map(|_| ()), started.elapsed()));
    });
    let (r, took) = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("connect to a dead port still blocks after 30 s");
    let e = r.expect_err("nothing listens there");
    assert!(
        matches!(session_error(&e), SessionError::Connect { .. }),
        "{e}"
    );
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    assert!(took < std::time::Duration::from_secs(15), "{took:?}");
}
