//! End-to-end tests of the tokio driver (`relink::tokio`) over real loopback
//! TCP, through the fault-injecting relay: bulk transfer across forced cuts,
//! stall detection, cancellation safety, back-pressure, giving up.
#![cfg(feature = "tokio")]

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use relink::tokio::{ClientStream, Listener, ServerStream};
use relink::{Backoff, Config, Duration};
use relink_test_support::relay::{FaultPlan, Relay};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Byte `offset` of test stream `salt`: a keyed mix of the offset, so that
/// a lost, duplicated or reordered chunk shows up as a mismatch.
fn fill(salt: u64, offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let o = offset + i as u64;
        let mut x = (o / 8) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        *b = (x >> ((o % 8) * 8)) as u8;
    }
}

/// Write bytes `[from, total)` of stream `salt` in writes of varying size.
async fn write_stream<W: AsyncWrite + Unpin>(
    w: &mut W,
    salt: u64,
    from: u64,
    total: u64,
) -> io::Result<()> {
    let mut buf = vec![0u8; 100_000];
    let mut sent = from;
    let mut k = 0usize;
    while sent < total {
        k += 1;
        let len = [100_000, 1, 4096, 65_537, 777, 16_384][k % 6].min((total - sent) as usize);
        fill(salt, sent, &mut buf[..len]);
        w.write_all(&buf[..len]).await?;
        sent += len as u64;
    }
    Ok(())
}

/// Read until EOF, checking every byte against stream `salt`; returns the count.
async fn check_stream<R: AsyncRead + Unpin>(r: &mut R, salt: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 70_000];
    let mut want = vec![0u8; 70_000];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(got);
        }
        fill(salt, got, &mut want[..n]);
        assert!(
            buf[..n] == want[..n],
            "stream {salt} differs in [{got}, {})",
            got + n as u64
        );
        got += n as u64;
    }
}

/// Short timers so that stalls are detected within a second.
fn fast_config() -> Config {
    Config {
        keepalive_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(600),
        handshake_timeout: Duration::from_millis(600),
        ..Config::default()
    }
}

/// Backoff that retries quickly and never gives up (the relay cuts a lot).
fn patient() -> Backoff {
    Backoff {
        initial: relink::Duration::from_millis(2),
        max: relink::Duration::from_millis(50),
        max_attempts: Some(200),
    }
}

async fn connect_via(addr: SocketAddr, config: Config) -> ClientStream {
    ClientStream::connect_with(config, patient(), move || async move {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    })
    .await
    .expect("connect")
}

/// Server side of the bulk tests: send stream 2 while checking stream 1.
async fn serve_both_ways(s: ServerStream, total: u64) -> u64 {
    let (mut r, mut w) = tokio::io::split(s);
    let writer = async {
        write_stream(&mut w, 2, 0, total)
            .await
            .expect("server write");
    };
    let reader = async { check_stream(&mut r, 1).await.expect("server read") };
    let ((), got) = tokio::join!(writer, reader);
    let mut s = r.unsplit(w);
    s.shutdown().await.expect("server shutdown");
    got
}

async fn client_both_ways(c: ClientStream, total: u64) -> (u64, ClientStream) {
    let (mut r, mut w) = tokio::io::split(c);
    let writer = async {
        write_stream(&mut w, 1, 0, total)
            .await
            .expect("client write");
        w.shutdown().await.expect("client shutdown");
    };
    let reader = async { check_stream(&mut r, 2).await.expect("client read") };
    let ((), got) = tokio::join!(writer, reader);
    (got, r.unsplit(w))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_and_clean_shutdown() {
    let server = Listener::bind("127.0.0.1:0", Config::default())
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let srv = tokio::spawn(async move {
        let mut s = server.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(&got).await.unwrap();
        s.shutdown().await.unwrap();
        (got, server.stats())
    });
    let mut c = ClientStream::connect(addr, Config::default())
        .await
        .unwrap();
    c.write_all(b"hello relink").await.unwrap();
    c.shutdown().await.unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"hello relink");
    let (got, stats) = srv.await.unwrap();
    assert_eq!(got, b"hello relink");
    assert_eq!(stats.sessions, 1);
    assert_eq!(c.stats().transports, 1);
}

/// Acceptance: ≥ 64 MiB each way, byte-exact, across ≥ 100 forced cuts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_both_ways_through_cuts() {
    const TOTAL: u64 = 64 << 20;
    let server = Listener::bind("127.0.0.1:0", Config::default())
        .await
        .unwrap();
    let plan = FaultPlan {
        cut_after_bytes: Some((128 << 10, 1 << 20)),
        ..FaultPlan::default()
    };
    let relay = Relay::start(server.local_addr().unwrap(), plan, 42).unwrap();
    let srv = tokio::spawn(async move {
        let s = server.accept().await.unwrap();
        let got = serve_both_ways(s, TOTAL).await;
        (got, server.stats())
    });
    let c = connect_via(relay.local_addr(), Config::default()).await;
    let (got, c) = client_both_ways(c, TOTAL).await;
    let (srv_got, sstats) = srv.await.unwrap();
    let cstats = c.stats();
    let rstats = relay.stats();
    eprintln!("client {cstats:?}\nserver {sstats:?}\nrelay {rstats:?}");
    assert_eq!(got, TOTAL);
    assert_eq!(srv_got, TOTAL);
    assert!(rstats.cuts >= 100, "only {} cuts", rstats.cuts);
    // Every cut the relay made is a transport the client saw die and resumed.
    assert!(cstats.resumes >= 100, "resumes {}", cstats.resumes);
    assert_eq!(cstats.resumes, sstats.resumes);
    assert_eq!(cstats.bytes_sent, TOTAL);
    assert_eq!(cstats.bytes_received, TOTAL);
    assert!(cstats.resent_bytes > 0 && sstats.resent_bytes > 0);
}

/// Corrupted bytes fail authentication: the transport is dropped, the
/// session resumes, nothing corrupted reaches the application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_is_detected_and_survived() {
    const TOTAL: u64 = 8 << 20;
    let server = Listener::bind("127.0.0.1:0", fast_config()).await.unwrap();
    // Every other connection gets one bit flipped somewhere.
    let plan = FaultPlan {
        cut_after_bytes: Some((512 << 10, 2 << 20)),
        corrupt_probability: 0.5,
        ..FaultPlan::default()
    };
    let relay = Relay::start(server.local_addr().unwrap(), plan, 7).unwrap();
    let srv = tokio::spawn(async move {
        let s = server.accept().await.unwrap();
        let got = serve_both_ways(s, TOTAL).await;
        (got, server.stats())
    });
    let c = connect_via(relay.local_addr(), fast_config()).await;
    let (got, c) = client_both_ways(c, TOTAL).await;
    let (srv_got, sstats) = srv.await.unwrap();
    let cstats = c.stats();
    let rstats = relay.stats();
    eprintln!("client {cstats:?}\nserver {sstats:?}\nrelay {rstats:?}");
    assert_eq!((got, srv_got), (TOTAL, TOTAL));
    assert!(rstats.corruptions > 0);
    let detected =
        cstats.lost_auth + cstats.lost_protocol + cstats.lost_other + sstats.auth_failures;
    assert!(detected > 0, "no corruption detected");
    assert!(cstats.resumes > 0);
}

/// A transport that goes silent (no FIN, no RST) is detected by the idle
/// timeout (keepalives keep a healthy one busy) and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_is_detected_and_recovered() {
    const TOTAL: u64 = 4 << 20;
    let server = Listener::bind("127.0.0.1:0", fast_config()).await.unwrap();
    // Every connection stalls (instead of being cut) after 256 KiB - 1 MiB.
    let plan = FaultPlan {
        cut_after_bytes: Some((256 << 10, 1 << 20)),
        stall_probability: 1.0,
        ..FaultPlan::default()
    };
    let relay = Arc::new(Relay::start(server.local_addr().unwrap(), plan, 3).unwrap());
    let srv = tokio::spawn(async move {
        let s = server.accept().await.unwrap();
        let got = serve_both_ways(s, TOTAL).await;
        (got, server.stats())
    });
    // Lift the faults after two stalls so the test ends quickly.
    let r2 = relay.clone();
    let lifter = tokio::spawn(async move {
        while r2.stats().stalls < 2 {
            tokio::time::sleep(StdDuration::from_millis(10)).await;
        }
        r2.set_plan(FaultPlan::default());
    });
    let c = connect_via(relay.local_addr(), fast_config()).await;
    let (got, c) = client_both_ways(c, TOTAL).await;
    let (srv_got, sstats) = srv.await.unwrap();
    lifter.await.unwrap();
    let cstats = c.stats();
    eprintln!(
        "client {cstats:?}\nserver {sstats:?}\nrelay {:?}",
        relay.stats()
    );
    assert_eq!((got, srv_got), (TOTAL, TOTAL));
    assert!(relay.stats().stalls >= 2);
    assert!(
        cstats.lost_timeout + sstats.timeouts >= 2,
        "stalls not detected by timeouts"
    );
    assert!(cstats.resumes >= 2);
}

/// Read and write futures dropped half-way (by `timeout` and `select!`)
/// lose and duplicate nothing, also across cuts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_futures_lose_nothing() {
    const TOTAL: u64 = 8 << 20;
    let server = Listener::bind("127.0.0.1:0", Config::default())
        .await
        .unwrap();
    let plan = FaultPlan {
        cut_after_bytes: Some((256 << 10, 2 << 20)),
        ..FaultPlan::default()
    };
    let relay = Relay::start(server.local_addr().unwrap(), plan, 9).unwrap();
    let srv = tokio::spawn(async move {
        let s = server.accept().await.unwrap();
        serve_both_ways(s, TOTAL).await
    });
    let c = connect_via(relay.local_addr(), Config::default()).await;
    let (mut r, mut w) = tokio::io::split(c);
    let cancelled = Arc::new(AtomicU32::new(0));
    let cw = cancelled.clone();
    let writer = async move {
        let mut buf = vec![0u8; 200_000];
        let mut sent = 0u64;
        let mut i = 0u64;
        while sent < TOTAL {
            i += 1;
            let len = (1 + (i * 7919) % 200_000).min(TOTAL - sent) as usize;
            fill(1, sent, &mut buf[..len]);
            // A single `write` may accept part of the buffer; a dropped one accepted nothing.
            let wait = StdDuration::from_micros(i % 300);
            match tokio::time::timeout(wait, w.write(&buf[..len])).await {
                Ok(n) => sent += n.unwrap() as u64,
                Err(_) => {
                    cw.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        w.shutdown().await.unwrap();
        w
    };
    let cr = cancelled.clone();
    let reader = async move {
        let mut buf = vec![0u8; 50_000];
        let mut want = vec![0u8; 50_000];
        let mut got = 0u64;
        let mut i = 0u64;
        loop {
            i += 1;
            let tick = tokio::time::sleep(StdDuration::from_micros(i % 500));
            tokio::select! {
                n = r.read(&mut buf) => {
                    let n = n.unwrap();
                    if n == 0 { break; }
                    fill(2, got, &mut want[..n]);
                    assert!(buf[..n] == want[..n], "s2c differs at {got}");
                    got += n as u64;
                }
                _ = tick => { cr.fetch_add(1, Ordering::Relaxed); }
            }
        }
        (got, r)
    };
    let (w, (got, r)) = tokio::join!(writer, reader);
    let c = r.unsplit(w);
    assert_eq!(got, TOTAL);
    assert_eq!(srv.await.unwrap(), TOTAL);
    assert!(
        cancelled.load(Ordering::Relaxed) > 10,
        "too few dropped futures: {}",
        cancelled.load(Ordering::Relaxed)
    );
    assert!(c.stats().resumes > 0);
}

/// `poll_write` blocks once the send history is full: while the server
/// application reads nothing, the client accepts at most its send buffer
/// plus what the server verified (at most the server's receive buffer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure_reaches_poll_write() {
    const TOTAL: u64 = 4 << 20;
    const SERVER_RECV: usize = 64 << 10;
    const CLIENT_SEND: usize = 64 << 10;
    let server_cfg = Config {
        recv_buffer: SERVER_RECV,
        ..Config::default()
    };
    let client_cfg = Config {
        send_buffer: CLIENT_SEND,
        ..Config::default()
    };
    let server = Listener::bind("127.0.0.1:0", server_cfg).await.unwrap();
    let addr = server.local_addr().unwrap();
    let mut c = ClientStream::connect(addr, client_cfg).await.unwrap();
    let mut s = server.accept().await.unwrap();
    // Nobody reads on the server: the write must get stuck (and the
    // dropped write_all future must not lose what was accepted).
    let stuck = tokio::time::timeout(
        StdDuration::from_millis(500),
        write_stream(&mut c, 1, 0, TOTAL),
    )
    .await;
    assert!(
        stuck.is_err(),
        "4 MiB were accepted although nothing was read"
    );
    let accepted = c.stats().bytes_sent;
    assert!(accepted > 0);
    assert!(
        accepted <= (CLIENT_SEND + SERVER_RECV) as u64,
        "accepted {accepted} bytes, more than the buffers allow"
    );
    assert!(c.unacked() <= CLIENT_SEND);
    let reader = tokio::spawn(async move { check_until(&mut s, 1, TOTAL).await });
    write_stream(&mut c, 1, accepted, TOTAL).await.unwrap();
    assert_eq!(reader.await.unwrap(), TOTAL);
    assert_eq!(c.stats().bytes_sent, TOTAL);
}

async fn check_until(s: &mut ServerStream, salt: u64, total: u64) -> u64 {
    let mut buf = vec![0u8; 70_000];
    let mut want = vec![0u8; 70_000];
    let mut got = 0u64;
    while got < total {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        fill(salt, got, &mut want[..n]);
        assert!(buf[..n] == want[..n]);
        got += n as u64;
    }
    got
}

/// With nothing listening and `wait_for_server`, the client gives up after
/// `max_attempts` connection attempts and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_with_a_clear_error() {
    let attempts = Arc::new(AtomicU32::new(0));
    let a2 = attempts.clone();
    let backoff = Backoff {
        initial: relink::Duration::from_millis(1),
        max: relink::Duration::from_millis(4),
        max_attempts: Some(4),
    };
    let r = relink::tokio::ClientBuilder::new(Config::default())
        .backoff(backoff)
        .wait_for_server(true)
        .connect_with(move || {
            a2.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<tokio::net::TcpStream, _>(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "nobody home",
                ))
            }
        })
        .await;
    let e = r.expect_err("must give up");
    assert_eq!(attempts.load(Ordering::SeqCst), 4);
    let msg = e.to_string();
    assert!(
        msg.contains("gave up") && msg.contains("nobody home"),
        "{msg}"
    );
}

/// Regression: when a resume takes over a session whose old transport is
/// still registered, the driver's mandated "flush `poll_transmit`, then
/// close" on that ended transport must return nothing (it once panicked,
/// whenever a resume arrived before the old connection's EOF).
#[test]
fn poll_transmit_on_a_transport_replaced_by_resume_returns_nothing() {
    use relink::{Client, Instant, Server as CoreServer};
    let now = Instant::from_micros(1_000_000);
    let mut client = Client::new(Config::default(), relink::os_rng());
    let mut server = CoreServer::new(Config::default(), relink::os_rng());
    let mut wire = vec![0u8; 4096];
    // Move bytes both ways on `t` until nothing is left to move.
    let mut pump =
        |client: &mut Client<relink::OsRng>, server: &mut CoreServer<relink::OsRng>, t| {
            for _ in 0..10 {
                let n = client.poll_transmit(now, &mut wire).unwrap();
                server.handle_input(t, now, &wire[..n]).unwrap();
                let n = server.poll_transmit(t, now, &mut wire).unwrap();
                client.handle_input(now, &wire[..n]).unwrap();
            }
        };
    let old = server.accept(now).unwrap();
    client.new_transport(now).unwrap();
    pump(&mut client, &mut server, old);
    assert!(client.is_connected(), "handshake failed");
    // The client resumes on a new transport while the old one is still open.
    let new = server.accept(now).unwrap();
    client.new_transport(now).unwrap();
    pump(&mut client, &mut server, new);
    assert!(client.is_connected(), "resume failed");
    assert!(server.transport_ended(old));
    assert_eq!(server.poll_transmit(old, now, &mut wire), Ok(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborts_reach_the_peer_as_resets_naming_the_code() {
    use relink::tokio::SessionError;
    use relink::AbortCode;
    let server = Listener::bind("127.0.0.1:0", fast_config()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let mut client = ClientStream::connect(addr, fast_config()).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    let mut s = server.accept().await.unwrap();
    let mut got = [0u8; 5];
    s.read_exact(&mut got).await.unwrap();

    // The server aborts: the client's reads fail at once with a reset.
    s.abort(AbortCode(0x777));
    let mut buf = [0u8; 16];
    let e = tokio::time::timeout(StdDuration::from_secs(2), client.read(&mut buf))
        .await
        .expect("no news of the abort within 2 s")
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<SessionError>())
        .expect("SessionError inside");
    assert_eq!(inner.abort_code(), Some(AbortCode(0x777)));
    assert!(e.to_string().contains("aborted by the peer"), "{e}");

    // A dropped client stream aborts with DROPPED.
    let mut c2 = ClientStream::connect(addr, fast_config()).await.unwrap();
    c2.write_all(b"y").await.unwrap();
    let mut s2 = server.accept().await.unwrap();
    let mut one = [0u8; 1];
    s2.read_exact(&mut one).await.unwrap();
    drop(c2);
    let e = tokio::time::timeout(StdDuration::from_secs(2), s2.read(&mut one))
        .await
        .expect("no news of the drop within 2 s")
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<SessionError>())
        .expect("SessionError inside");
    assert_eq!(inner.abort_code(), Some(AbortCode::DROPPED));
}

/// A 2 s outage in which every connect is refused: far more attempts than
/// `max_attempts`, yet the client keeps going (the server holds the session
/// for its advertised resume timeout) and the session resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_does_not_make_the_client_give_up_by_count() {
    use std::sync::Mutex;
    let server = Listener::bind("127.0.0.1:0", fast_config()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let relay = Relay::start(addr, FaultPlan::default(), 5).unwrap();
    let target = Arc::new(Mutex::new(Some(relay.local_addr())));
    let t = target.clone();
    let backoff = Backoff {
        initial: relink::Duration::from_millis(2),
        max: relink::Duration::from_millis(50),
        max_attempts: Some(3),
    };
    let mut client = ClientStream::connect_with(fast_config(), backoff, move || {
        let a = *t.lock().unwrap();
        async move {
            match a {
                Some(a) => tokio::net::TcpStream::connect(a).await,
                None => Err(io::ErrorKind::ConnectionRefused.into()),
            }
        }
    })
    .await
    .unwrap();
    client.write_all(b"before").await.unwrap();
    let mut s = server.accept().await.unwrap();
    let mut got = [0u8; 6];
    s.read_exact(&mut got).await.unwrap();

    *target.lock().unwrap() = None;
    drop(relay);
    tokio::time::sleep(StdDuration::from_secs(2)).await;
    let relay = Relay::start(addr, FaultPlan::default(), 6).unwrap();
    *target.lock().unwrap() = Some(relay.local_addr());

    client.write_all(b"after").await.unwrap();
    let mut got = [0u8; 5];
    tokio::time::timeout(StdDuration::from_secs(5), s.read_exact(&mut got))
        .await
        .expect("no resume within 5 s")
        .unwrap();
    assert_eq!(&got, b"after");
    let stats = client.stats();
    assert!(stats.connect_failures > 3, "{stats:?}");
    assert!(stats.resumes >= 1, "{stats:?}");
}

/// Every answer the core queued is written before the transport closes,
/// also when the client already half-closed after its request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_reaches_a_half_closed_client_before_eof() {
    use relink::wire::{self, ResumeRequest, VERSION};
    let server = Listener::bind("127.0.0.1:0", fast_config()).await.unwrap();
    let addr = server.local_addr().unwrap();
    for half_close in [false, true] {
        let req = ResumeRequest {
            version: VERSION,
            conn_id: 42,
            counter: 1,
            client_written: 0,
            client_read: 0,
            time: 0,
            rx_epoch: 0,
            mac: [1; wire::TAG_LEN],
        }
        .encode();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&req).await.unwrap();
        if half_close {
            s.shutdown().await.unwrap();
        }
        let mut got = Vec::new();
        tokio::time::timeout(StdDuration::from_secs(3), s.read_to_end(&mut got))
            .await
            .expect("no EOF within 3 s")
            .unwrap();
        assert!(got.len() >= 2, "no answer (half_close {half_close})");
        assert_eq!(
            relink::ResumeStatus::from_byte(got[1]),
            Ok(relink::ResumeStatus::UnknownSession)
        );
        assert_eq!(Ok(got.len()), wire::resume_response_len(got[0], got[1]));
    }
}
