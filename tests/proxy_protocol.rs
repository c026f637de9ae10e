//! Issue 14: `ListenerBuilder::proxy_protocol` in both server drivers.
//! Behind a balancer every transport comes from the balancer's address;
//! the PROXY v2 header carries the client's, and the per-source admission
//! limit (`Config::max_handshakes_per_source`, 32 by default, PROTOCOL.md
//! 3.7) must count that one: 40 pending transports "from" 40 addresses
//! behind one TCP peer are all admitted, 40 from one address are not.
//! A session through a header knows the client's address and resumes
//! through headers too; a transport without a valid header (none, garbage,
//! too long, too slow) is closed and counted as refused; a LOCAL header
//! (health checks) is admitted as the real peer.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use relink::driver::ServerStats;
use relink::{Backoff, Config, Duration};
use relink_test_support::relay::{FaultPlan, Relay};

const SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A PROXY v2 header: command PROXY over TCP from `src` (to 192.0.2.1:7000).
fn proxy_header(src: SocketAddr) -> Vec<u8> {
    let mut h = SIG.to_vec();
    h.push(0x21);
    match src.ip() {
        IpAddr::V4(ip) => {
            h.extend([0x11, 0, 12]);
            h.extend(ip.octets());
            h.extend([192, 0, 2, 1]);
        }
        IpAddr::V6(ip) => {
            h.extend([0x21, 0, 36]);
            h.extend(ip.octets());
            h.extend(Ipv6Addr::LOCALHOST.octets());
        }
    }
    h.extend(src.port().to_be_bytes());
    h.extend(7000u16.to_be_bytes());
    h
}

/// A LOCAL header (HAProxy's health check), with an unspecified family.
fn local_header() -> Vec<u8> {
    let mut h = SIG.to_vec();
    h.extend([0x20, 0x00, 0, 0]);
    h
}

fn cfg() -> Config {
    Config {
        handshake_timeout: Duration::from_millis(1500),
        idle_timeout: Duration::from_secs(3),
        keepalive_interval: Duration::from_millis(500),
        ..Config::default()
    }
}

fn eventually(within: StdDuration, what: &str, mut f: impl FnMut() -> bool) {
    let end = StdInstant::now() + within;
    while !f() {
        assert!(StdInstant::now() < end, "timed out waiting until {what}");
        thread::sleep(StdDuration::from_millis(10));
    }
}

fn client_addr(i: u8) -> SocketAddr {
    SocketAddr::from((
        Ipv4Addr::new(10, 0, i / 200, 1 + i % 200),
        40_000 + u16::from(i),
    ))
}

/// 40 pending transports (header, then nothing) from 40 sources, then 40
/// from one: (stats after the first batch, stats after both).
fn admission(addr: SocketAddr, stats: &dyn Fn() -> ServerStats) {
    let mut held = Vec::new();
    for i in 0..40u8 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&proxy_header(client_addr(i))).unwrap();
        held.push(s);
    }
    eventually(
        StdDuration::from_secs(5),
        "40 distinct sources admitted",
        || stats().transports == 40,
    );
    assert_eq!(stats().transports_refused, 0, "{:?}", stats());
    let one = SocketAddr::from(([198, 51, 100, 9], 1234));
    for _ in 0..40 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&proxy_header(one)).unwrap();
        held.push(s);
    }
    eventually(StdDuration::from_secs(5), "40 more seen", || {
        let st = stats();
        st.transports + st.transports_refused == 80
    });
    let st = stats();
    let limit = Config::default().max_handshakes_per_source as u64;
    assert_eq!(st.transports, 40 + limit, "{st:?}");
    assert_eq!(st.transports_refused, 40 - limit, "{st:?}");
}

/// Whether the server closed `s` (EOF or reset) within `within`.
fn closed_by_server(s: &mut TcpStream, within: StdDuration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

/// No header, garbage, a header announcing too much, a header that never
/// completes: each closed and counted refused. A LOCAL header: admitted.
fn refusals(addr: SocketAddr, stats: &dyn Fn() -> ServerStats) {
    let mut refused = 0;
    let mut check = |bytes: &[u8], what: &str| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(bytes).unwrap();
        assert!(
            closed_by_server(&mut s, StdDuration::from_secs(5)),
            "{what}: not closed"
        );
        refused += 1;
        eventually(StdDuration::from_secs(5), what, || {
            stats().transports_refused == refused
        });
    };
    check(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "an HTTP request");
    check(b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n", "a v1 header");
    let mut long = proxy_header(client_addr(1));
    long[14..16].copy_from_slice(&8000u16.to_be_bytes());
    check(&long, "a header announcing 8000 bytes");
    let mut udp = proxy_header(client_addr(1));
    udp[13] = 0x12;
    check(&udp, "a UDP header");
    // The signature and then silence: closed at the handshake timeout.
    check(&SIG[..5], "an incomplete header");
    assert_eq!(stats().transports, 0, "{:?}", stats());
    // A health check is admitted (as the balancer itself).
    let mut hc = TcpStream::connect(addr).unwrap();
    hc.write_all(&local_header()).unwrap();
    eventually(
        StdDuration::from_secs(5),
        "the health check admitted",
        || stats().transports == 1,
    );
    assert_eq!(stats().transports_refused, refused);
}

fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(100),
        max_attempts: Some(20),
    }
}

mod on_blocking {
    use super::*;
    use relink::blocking::{ClientBuilder, ListenerBuilder};

    #[test]
    fn the_header_s_source_is_what_the_per_source_limit_counts() {
        let l = ListenerBuilder::new(cfg())
            .proxy_protocol(true)
            .bind("127.0.0.1:0")
            .unwrap();
        admission(l.local_addr(), &|| l.stats());
    }

    #[test]
    fn transports_without_a_valid_header_are_closed_and_counted() {
        let l = ListenerBuilder::new(cfg())
            .proxy_protocol(true)
            .bind("127.0.0.1:0")
            .unwrap();
        refusals(l.local_addr(), &|| l.stats());
    }

    #[test]
    fn a_session_through_headers_knows_its_client_and_resumes() {
        let l = ListenerBuilder::new(cfg())
            .proxy_protocol(true)
            .bind("127.0.0.1:0")
            .unwrap();
        // The relay cuts, the client's every transport starts with a header.
        let plan = FaultPlan {
            cut_after_bytes: Some((20_000, 50_000)),
            ..FaultPlan::default()
        };
        let relay = Relay::start(l.local_addr(), plan, 3).unwrap();
        let via = relay.local_addr();
        let me = SocketAddr::from(([203, 0, 113, 7], 4242));
        let client = ClientBuilder::new(cfg())
            .backoff(backoff())
            .connect_with(move || {
                let mut s = TcpStream::connect(via)?;
                s.write_all(&proxy_header(me))?;
                Ok(s)
            })
            .unwrap();
        let server = l.accept().unwrap();
        assert_eq!(server.peer_addr(), Some(me));
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let d = data.clone();
        let t = thread::spawn(move || {
            let mut got = Vec::new();
            (&server).read_to_end(&mut got).unwrap();
            server.close().unwrap();
            got
        });
        (&client).write_all(&d).unwrap();
        client.close().unwrap();
        assert!(t.join().unwrap() == data, "bytes differ");
        assert!(relay.stats().cuts > 0);
        assert!(l.stats().resumes > 0, "{:?}", l.stats());
        assert_eq!(l.stats().transports_refused, 0);
    }
}

mod on_tokio {
    use super::*;
    use relink::tokio::{ClientBuilder, ListenerBuilder};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_header_s_source_is_what_the_per_source_limit_counts() {
        let l = ListenerBuilder::new(cfg())
            .proxy_protocol(true)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = l.local_addr().unwrap();
        tokio::task::block_in_place(|| admission(addr, &|| l.stats()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transports_without_a_valid_header_are_closed_and_counted() {
        let l = ListenerBuilder::new(cfg())
            .proxy_protocol(true)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = l.local_addr().unwrap();
        tokio::task::block_in_place(|| refusals(addr, &|| l.stats()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_through_headers_knows_its_client_and_resumes() {
        let l = ListenerBuilder::new(cfg())
            .proxy_protocol(true)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let plan = FaultPlan {
            cut_after_bytes: Some((20_000, 50_000)),
            ..FaultPlan::default()
        };
        let relay = Relay::start(l.local_addr().unwrap(), plan, 4).unwrap();
        let via = relay.local_addr();
        let me = SocketAddr::from(([203, 0, 113, 8], 4243));
        let mut client = ClientBuilder::new(cfg())
            .backoff(backoff())
            .connect_with(move || async move {
                let mut s = tokio::net::TcpStream::connect(via).await?;
                s.write_all(&proxy_header(me)).await?;
                Ok(s)
            })
            .await
            .unwrap();
        let mut server = l.accept().await.unwrap();
        assert_eq!(server.peer_addr(), Some(me));
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let t = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            server.close().await.unwrap();
            got
        });
        client.write_all(&data).await.unwrap();
        client.close().await.unwrap();
        assert!(t.await.unwrap() == data, "bytes differ");
        assert!(relay.stats().cuts > 0);
        assert!(l.stats().resumes > 0, "{:?}", l.stats());
        assert_eq!(l.stats().transports_refused, 0);
    }
}
