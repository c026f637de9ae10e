//! Several servers ("nodes") behind a layer-4 load balancer (issue 14,
//! PROTOCOL.md 3.8): routable connection ids, resumes routed by the first
//! bytes of the stream, a node that does not hold the session, node loss,
//! graceful drain. The in-memory harness plays the balancer
//! ([`Net::fleet`], [`Net::open_routed`]) with the rule the shipped HAProxy
//! configuration uses (examples/fleet/): a stream starting `FF` goes to the
//! node named by byte 3 (the server id, one byte), anything else round
//! robin over the nodes in service.

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, RngSeed};
use relink::routing::server_id_of;
use relink::{CloseReason, Config, RoutableId, StaticKeypair};
use relink_test_support::harness::*;

const NODES: usize = 3;

/// Node `i` has server id `i + 1`; every node holds the fleet's static key,
/// which the client pins (so any node's UnknownSession is authenticated).
fn fleet_configs() -> (Config, Vec<Config>) {
    let key = StaticKeypair::from_secret_bytes([0x5A; 32]);
    let ccfg = Config {
        pinned_server_key: Some(key.public_key()),
        ..Config::default()
    };
    let nodes = (0..NODES)
        .map(|i| Config {
            server_static: Some(key.clone()),
            routable_id: Some(RoutableId::new(i as u32 + 1, 1).unwrap()),
            ..Config::default()
        })
        .collect();
    (ccfg, nodes)
}

/// The balancer: resumes by server id, new sessions round robin over the
/// nodes in `up`.
struct Balancer {
    next: usize,
    up: Vec<bool>,
    /// Send resumes to this node instead (a misconfigured balancer).
    misroute: Option<usize>,
}

impl Balancer {
    fn new() -> Balancer {
        Balancer {
            next: 0,
            up: vec![true; NODES],
            misroute: None,
        }
    }

    fn round_robin(&mut self) -> usize {
        loop {
            let n = self.next % NODES;
            self.next += 1;
            if self.up[n] {
                return n;
            }
        }
    }

    fn route(&mut self, first: &[u8]) -> usize {
        if first.len() >= 4 && first[0] == 0xFF {
            if let Some(n) = self.misroute {
                return n;
            }
            let node = usize::from(first[3]).wrapping_sub(1);
            // HAProxy ignores a use-server rule naming a server that is
            // down and balances the transport instead.
            if node < NODES && self.up[node] {
                return node;
            }
        }
        self.round_robin()
    }
}

/// Open a transport through the balancer and run until the client is
/// connected or the transport ended (flushed and broken). Returns whether
/// it connected and the node it reached.
fn connect_routed(net: &mut Net, lb: &mut Balancer) -> (bool, usize) {
    if !net.open_routed(&mut |b| lb.route(b)) {
        return (false, net.node);
    }
    let node = net.node;
    for _ in 0..200 {
        net.step();
        if net.client.is_connected() {
            // Until the server session exists too (its ClientConfirm).
            for _ in 0..10 {
                if net.current_session().is_some() {
                    break;
                }
                net.step();
            }
            return (true, node);
        }
        if net.ended {
            net.flush_break();
            return (false, node);
        }
    }
    net.brk();
    (false, node)
}

/// The node whose server id `net.client`'s connection id carries.
fn owner(net: &Net) -> usize {
    let cid = net.client.conn_id().expect("a session");
    server_id_of(cid, 1).1 as usize - 1
}

fn closed_reason(net: &Net) -> Option<CloseReason> {
    net.cev.iter().find_map(|e| match e {
        relink::Event::Closed { reason } => Some(*reason),
        _ => None,
    })
}

/// Nine clients one after the other, each with four breaks while bytes
/// flow both ways: every new session lands round robin, every resume on
/// the node that issued the session's id, all bytes exact, no node ever
/// answers UnknownSession.
#[test]
fn every_resume_lands_on_its_node() {
    let (ccfg, nodes) = fleet_configs();
    let mut net = Net::fleet(14, ccfg, &nodes);
    let mut lb = Balancer::new();
    let mut resumes = 0u64;
    let mut sessions_per_node = [0usize; NODES];
    for client in 0..9 {
        if client > 0 {
            net.new_client();
        }
        let (ok, node) = connect_routed(&mut net, &mut lb);
        assert!(ok, "client {client}: handshake failed: {:?}", net.cev);
        assert_eq!(owner(&net), node, "the id names the node that issued it");
        assert!(nodes[node]
            .routable_id
            .unwrap()
            .owns(net.client.conn_id().unwrap()));
        sessions_per_node[node] += 1;
        for _ in 0..4 {
            net.client_write(20_000);
            net.server_write(20_000);
            for _ in 0..3 {
                net.step();
            }
            net.brk();
            let (ok, at) = connect_routed(&mut net, &mut lb);
            assert!(ok, "client {client}: resume failed: {:?}", net.cev);
            assert_eq!(at, node, "a resume reached node {at}, not its node {node}");
            resumes += 1;
        }
        net.settle(500);
        assert_eq!(net.up_read(), 80_000, "client {client}: c2s exact");
        assert_eq!(
            net.down[&net.generation].read, 80_000,
            "client {client}: s2c exact"
        );
        net.assert_no_violations();
    }
    assert_eq!(sessions_per_node, [3, 3, 3], "new sessions round robin");
    let mut routed = 0;
    for i in 0..NODES {
        let (r, unknown, misrouted) = net.node_server(i).routing_counters();
        assert_eq!((unknown, misrouted), (0, 0), "node {i}");
        routed += r;
    }
    assert_eq!(routed, resumes, "every resume was routed to a session");
}

/// A balancer that sends a resume to a node that does not hold its
/// session: that node answers UnknownSession at once, but without the
/// session's reset token (16 zero bytes: the id is another node's, and only
/// the owner may authenticate the end of its session, PROTOCOL.md 3.8,
/// 4.6). The pinning client does not end the session on it: the answer
/// costs one transport, and the next one, routed right, resumes the session
/// byte-exact. The wrong node counts it as misrouted.
#[test]
fn a_resume_at_the_wrong_node_is_unauthenticated_and_the_session_goes_on() {
    let (ccfg, nodes) = fleet_configs();
    let mut net = Net::fleet(15, ccfg, &nodes);
    let mut lb = Balancer::new();
    let (ok, node) = connect_routed(&mut net, &mut lb);
    assert!(ok);
    net.client_write(50_000);
    net.server_write(20_000);
    net.step();
    net.brk();
    let wrong = (node + 1) % NODES;
    lb.misroute = Some(wrong);
    let (ok, at) = connect_routed(&mut net, &mut lb);
    assert!(!ok, "a node without the session must not resume it");
    assert_eq!(at, wrong);
    assert_eq!(
        closed_reason(&net),
        None,
        "an UnknownSession from a node that does not own the id ended the session: {:?}",
        net.cev
    );
    assert!(!net.client.is_closed());
    assert_eq!(net.node_server(wrong).routing_counters(), (0, 1, 1));
    lb.misroute = None;
    let (ok, at) = connect_routed(&mut net, &mut lb);
    assert!(ok && at == node, "{:?}", net.cev);
    net.settle(500);
    assert_eq!(net.up_read(), 50_000);
    assert_eq!(net.down[&0].read, 20_000);
    net.assert_no_violations();
}

/// The answer of a node that does not own a connection id carries no
/// token, for any id of any other node (and any rotation other than its
/// own), so nobody can obtain a live session's reset token by sending its
/// id to another node; the owner's answer (a session it no longer holds)
/// carries the token the client holds from its ServerHello.
#[test]
fn only_the_owning_node_reveals_a_reset_token() {
    let (ccfg, nodes) = fleet_configs();
    let mut net = Net::fleet(17, ccfg, &nodes);
    let mut lb = Balancer::new();
    let (ok, node) = connect_routed(&mut net, &mut lb);
    assert!(ok);
    let cid = net.client.conn_id().unwrap();
    let ask = |net: &mut Net, i: usize, cid: u64| -> Vec<u8> {
        let mut req = [0u8; 62];
        req[0] = 0xFF;
        req[1] = 2;
        req[2..10].copy_from_slice(&cid.to_le_bytes());
        let s = net.node_server_mut(i);
        let t = s.accept(T0).unwrap();
        assert!(s.handle_input(t, T0, &req).is_err());
        let mut out = [0u8; 1024];
        let n = s.poll_transmit(t, T0, &mut out).unwrap();
        out[..n].to_vec()
    };
    for i in (0..NODES).filter(|&i| i != node) {
        let answer = ask(&mut net, i, cid);
        assert_eq!(answer, [&[2u8, 2][..], &[0; 16]].concat(), "node {i}");
    }
    // Another rotation of the owner's own server id is not the owner's.
    let other_rotation = (cid & !0xE0) | (((cid & 0xE0) + 0x20) & 0xE0);
    let answer = ask(&mut net, node, other_rotation);
    assert_eq!(&answer[2..], &[0; 16]);
    // The owner, asked about an id of its own it does not hold: the token.
    let unheld = cid ^ 0x00FF_0000_0000_0000;
    let answer = ask(&mut net, node, unheld);
    assert_eq!(&answer[..2], &[2, 2]);
    assert_ne!(&answer[2..], &[0; 16], "the owner authenticates its answer");
    assert_eq!(net.node_server(node).routing_counters().2, 1);
}

/// A node is killed while one of its clients is between transports: the
/// balancer marks it down and sends the client's resumes to a live node,
/// whose UnknownSession is not authenticated (not the owner), so the client
/// keeps trying; the node's process is restarted with the same key and
/// server id, the next resume reaches it, and its authenticated
/// UnknownSession ends the session at once with the typed error and the
/// in-doubt range. The application then opens a new session (on request),
/// which lands on a live node.
#[test]
fn a_restarted_node_ends_its_lost_sessions_with_the_typed_error() {
    let (ccfg, nodes) = fleet_configs();
    let mut net = Net::fleet(16, ccfg, &nodes);
    let mut lb = Balancer::new();
    // Client 0 on node 0.
    let (ok, victim) = connect_routed(&mut net, &mut lb);
    assert!(ok && victim == 0);
    net.client_write(30_000);
    for _ in 0..50 {
        net.step();
    }
    net.client_write(10_000);
    net.step();
    net.brk();
    // Node 0 dies while its client is between transports.
    net.switch_node(1);
    net.remove_node(victim);
    lb.up[victim] = false;
    for _ in 0..3 {
        let (ok, at) = connect_routed(&mut net, &mut lb);
        assert!(!ok);
        assert_ne!(at, victim);
        assert_eq!(closed_reason(&net), None, "{:?}", net.cev);
    }
    // The supervisor restarts it: same key, same server id, no session.
    net.restart_node(victim, nodes[victim].clone());
    lb.up[victim] = true;
    let attempts = net.attempts;
    let (ok, at) = connect_routed(&mut net, &mut lb);
    assert!(!ok);
    assert_eq!(at, victim);
    assert_eq!(closed_reason(&net), Some(CloseReason::SessionUnknown));
    assert_eq!(net.attempts, attempts + 1, "ended at its first answer");
    let doubt = net.client.in_doubt().expect("in-doubt range");
    assert!(doubt.start >= 30_000 && doubt.end == 40_000, "{doubt:?}");
    // The application asks for a new session: a live node serves it.
    net.switch_node(1);
    net.new_client();
    let (ok, node) = connect_routed(&mut net, &mut lb);
    assert!(ok, "{:?}", net.cev);
    assert!(net.has_node(node));
    net.client_write(40_000);
    net.server_write(40_000);
    net.brk();
    assert!(connect_routed(&mut net, &mut lb).0);
    net.settle(500);
    assert_eq!(net.up_read(), net.up_written());
    net.assert_no_violations();
}

/// A node gone for good: the client of a lost session hears only
/// unauthenticated UnknownSession answers from the other nodes, which do
/// not end it (an attacker could forge them), and gives the session up at
/// its deadline (last authenticated contact + the advertised
/// `resume_timeout` + its own `idle_timeout`, PROTOCOL.md 7.6) with reason
/// `Expired` and the in-doubt range: bounded, typed, nothing duplicated.
#[test]
fn a_node_gone_for_good_ends_its_sessions_at_the_give_up_deadline() {
    let (ccfg, nodes) = fleet_configs();
    let half = relink::Duration::from_micros(nodes[0].resume_timeout.as_micros() / 2);
    let idle_timeout = Config::default().idle_timeout;
    let mut net = Net::fleet(18, ccfg, &nodes);
    let mut lb = Balancer::new();
    let (ok, victim) = connect_routed(&mut net, &mut lb);
    assert!(ok && victim == 0);
    net.client_write(25_000);
    for _ in 0..50 {
        net.step();
    }
    net.client_write(5_000);
    net.step();
    net.brk();
    net.switch_node(2);
    net.remove_node(victim);
    lb.up[victim] = false;
    // Retries inside the deadline: the session lives on.
    let (ok, _) = connect_routed(&mut net, &mut lb);
    assert!(!ok);
    net.tick_client(half);
    let (ok, _) = connect_routed(&mut net, &mut lb);
    assert!(!ok);
    assert_eq!(closed_reason(&net), None, "{:?}", net.cev);
    // Past the deadline, one more unanswered attempt ends it.
    net.tick_client(relink::Duration::from_micros(
        half.as_micros() + idle_timeout.as_micros() + 1_000_000,
    ));
    let (ok, _) = connect_routed(&mut net, &mut lb);
    assert!(!ok);
    assert_eq!(
        closed_reason(&net),
        Some(CloseReason::Expired),
        "{:?}",
        net.cev
    );
    let doubt = net.client.in_doubt().expect("in-doubt range");
    assert!(doubt.start >= 25_000 && doubt.end == 30_000, "{doubt:?}");
    net.assert_no_violations();
}

/// A node taken out of service: new sessions routed to it are answered
/// Busy (the client tries a new transport, which goes elsewhere); its own
/// session still resumes after breaks and finishes byte-exact; once that
/// session closed the node holds nothing and can exit.
#[test]
fn drain_refuses_new_sessions_and_lets_existing_ones_finish() {
    let (ccfg, nodes) = fleet_configs();
    let mut net = Net::fleet(17, ccfg, &nodes);
    let mut lb = Balancer::new();
    let (ok, draining) = connect_routed(&mut net, &mut lb);
    assert!(ok && draining == 0);
    net.node_server_mut(draining).drain();
    assert!(net.node_server(draining).is_draining());
    net.client_write(60_000);
    net.server_write(60_000);
    for _ in 0..3 {
        net.step();
        net.brk();
        let (ok, at) = connect_routed(&mut net, &mut lb);
        assert!(ok && at == draining, "a draining node still serves resumes");
    }
    net.settle(500);
    net.client.close();
    let sid = net.current_session().expect("server session");
    net.settle(500);
    net.server.close(sid).expect("server close");
    net.settle(500);
    assert_eq!(net.up_read(), 60_000);
    assert_eq!(net.down[&0].read, 60_000);
    assert_eq!(closed_reason(&net), Some(CloseReason::Clean));
    net.assert_no_violations();
    // A new client whose hello the balancer sends to the draining node.
    net.new_client();
    lb.next = draining;
    let (ok, at) = connect_routed(&mut net, &mut lb);
    assert!(!ok && at == draining, "a draining node starts no session");
    assert!(
        net.cev.iter().any(|e| matches!(
            e,
            relink::Event::TransportLost {
                error: Some(relink::Error::HandshakeRejected(
                    relink::HandshakeStatus::Busy
                ))
            }
        )),
        "{:?}",
        net.cev
    );
    let (ok, at) = connect_routed(&mut net, &mut lb);
    assert!(ok && at != draining, "the retry lands on another node");
    // The draining node's session finished cleanly; after its
    // resume_timeout without transport it is gone and the node is empty.
    assert!(net.sev.iter().any(|e| matches!(
        e,
        relink::ServerEvent::Closed { session, reason: CloseReason::Clean } if *session == sid
    )));
    net.switch_node(draining);
    net.tick(relink::Duration::from_secs(601));
    net.timers();
    assert_eq!(net.node_server(draining).session_count(), 0);
}

proptest! {
    #![proptest_config(PtConfig {
        cases: 512,
        rng_seed: RngSeed::Fixed(0x0014_C1D0),
        failure_persistence: None,
        ..PtConfig::default()
    })]

    /// The layout (PROTOCOL.md 3.8): a generated id carries the server id
    /// big-endian in bytes 1..1+len of its wire encoding and the rotation in
    /// the top 3 bits of byte 0; every other bit is the random input's; no
    /// other server id or rotation owns it.
    #[test]
    fn routable_id_layout(random in any::<u64>(), id in any::<u32>(), len in 1usize..=4,
                          rotation in 0u8..=6, other in any::<u32>()) {
        let id = if len == 4 { id } else { id & ((1u32 << (8 * len)) - 1) };
        let r = RoutableId::new(id, len).unwrap().with_rotation(rotation).unwrap();
        let cid = r.generate(random);
        prop_assert!(r.owns(cid));
        prop_assert_eq!(server_id_of(cid, len), (rotation, id));
        let wire = cid.to_le_bytes();
        let rnd = random.to_le_bytes();
        prop_assert_eq!(wire[0] & 0x1f, rnd[0] & 0x1f);
        prop_assert_eq!(&wire[1 + len..], &rnd[1 + len..]);
        prop_assert_eq!(&wire[1..1 + len], &r.server_id_bytes()[..len]);
        let other = if len == 4 { other } else { other & ((1u32 << (8 * len)) - 1) };
        if other != id {
            let o = RoutableId::new(other, len).unwrap().with_rotation(rotation).unwrap();
            prop_assert!(!o.owns(cid));
        }
    }
}
