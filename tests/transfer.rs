//! Byte-exact transfer through the in-memory harness (issue #2 acceptance:
//! ≥ 10 MiB both ways, random write sizes, random transport chunks).

mod common;

use common::*;
use relink::{CloseReason, Event, ServerEvent};

#[test]
fn handshake_establishes_matching_session() {
    let mut p = Net::default_pair(1);
    let s = p.handshake();
    let id = p.client.conn_id().expect("client conn id");
    assert_eq!(p.server.conn_id(s), Some(id));
    assert!(p.cev.contains(&Event::HandshakeDone { conn_id: id }));
}

#[test]
fn ten_mib_both_ways_random_writes_and_chunks() {
    const TOTAL: u64 = 10 * 1024 * 1024 + 12345;
    let mut p = Net::default_pair(7);
    p.handshake();
    let mut up = Flow::default();
    let mut down = Flow::default();
    let mut buf = vec![0u8; 100_000];
    let mut rounds = 0u64;
    while up.read < TOTAL || down.read < TOTAL {
        // vary transport chunk sizes over time, down to 1 byte
        if rounds % 500 == 0 {
            p.max_chunk = [1, 7, 100, 1500, 16_000, 64 * 1024][(rounds / 500 % 6) as usize];
        }
        pump_client_to_server(&mut p, &mut up, TOTAL, 70_000, &mut buf);
        pump_server_to_client(&mut p, &mut down, TOTAL, 70_000, &mut buf);
        p.step();
        assert!(!p.ended, "transport ended: {:?}", p.cev);
        rounds += 1;
        assert!(rounds < 2_000_000, "no progress: up {up:?} down {down:?}");
    }
    assert_eq!(up.read, TOTAL);
    assert_eq!(down.read, TOTAL);
}

#[test]
fn clean_close_both_ways() {
    let mut p = Net::default_pair(3);
    let s = p.handshake();
    p.client.send(b"hello server").unwrap();
    p.server.send(s, b"hello client").unwrap();
    p.client.close();
    p.settle(200);
    let mut buf = [0u8; 64];
    assert_eq!(p.server.recv(s, &mut buf).unwrap(), 12);
    assert_eq!(&buf[..12], b"hello server");
    assert_eq!(
        p.server.recv(s, &mut buf).unwrap(),
        0,
        "EOF after client close"
    );
    assert!(p.sev.contains(&ServerEvent::PeerClosed { session: s }));
    p.server.close(s).unwrap();
    p.settle(200);
    assert_eq!(p.client.recv(&mut buf).unwrap(), 12);
    assert_eq!(p.client.recv(&mut buf).unwrap(), 0);
    assert_eq!(p.client.close_reason(), Some(CloseReason::Clean));
    assert!(p.sev.contains(&ServerEvent::Closed {
        session: s,
        reason: CloseReason::Clean
    }));
}
