//! The bodies of the raw-input state-machine targets (`server_input`,
//! `client_input`), here so that [`crate::seeds`] can replay its seeds
//! through exactly the code the fuzzer runs. See each target's docs.
use relink::{Server, TransportId};

use crate::{
    allow_forgery, client_feed, client_flush, client_read, configs, established, script,
    server_feed, server_flush, server_read, split_input, Hostile, Input, Net, TICK,
};

/// The server's setup for scenario `mode % 5` with configuration
/// `mode / 5` (see the `server_input` target): the pair the seeds are
/// recorded on, its transport at the server, and the time. Scenario 0
/// with `mode / 5 >= 3` registers the transport with `accept_from` and
/// demands a cookie for every hello (`cookie_threshold` 0).
pub fn server_setup(mode: u8, seed: u64) -> Net {
    let sel = mode / 5;
    let (c, s) = configs(sel);
    match mode % 5 {
        0 if sel >= 3 => {
            // Admission control: the transport registered with its source
            // address, every hello answered with a cookie first, at most
            // two handshakes in progress per source.
            let mut s = s;
            s.cookie_threshold = 0;
            s.max_handshakes_per_source = 2;
            let mut p = Net::pair(seed, c, s);
            assert!(p.client.new_transport(p.cnow).is_ok(), "new_transport");
            let peer = std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));
            p.tid = Some(p.server.accept_from(p.snow, peer).expect("accept_from"));
            p
        }
        0 => {
            let mut p = Net::pair(seed, c, s);
            p.open_transport();
            p
        }
        scenario => {
            let mut p = established(seed, sel);
            let sid = p.session.expect("session");
            // Outgoing data so that ACK validation has something to check.
            let _ = p.server.send(sid, &[0x33; 3000]);
            let down = p.server_output();
            // The genuine client got it (what the target's server does
            // not know and the seeds' client needs for its ACKs).
            let _ = p.client.handle_input(p.cnow, &down);
            if scenario == 2 {
                let (tid, now) = (p.tid.expect("transport"), p.now());
                p.server.transport_lost(tid, now);
                p.tid = Some(p.server.accept(now).expect("accept"));
                p.client.transport_lost(now);
                let _ = p.client.new_transport(now);
            } else if scenario == 3 {
                assert!(p.reconnect(), "reconnect");
                p.exchange_until_open();
            }
            p.drain();
            p
        }
    }
}

/// The `server_input` target: returns the bytes the server's application
/// read.
pub fn server_input(data: &[u8]) -> u64 {
    // The raw scenarios let forged (zero-tag) frames pass; `script` turns
    // forgery off again.
    allow_forgery(true);
    let mut input = Input::new(data);
    let mode = input.byte();
    let seed = u64::from(input.byte());
    if mode % 5 == 4 {
        return script(seed, mode / 5, Hostile::Up, &mut input).up.1;
    }
    let p = server_setup(mode, seed);
    let (mut server, tid, mut now): (Server<_>, TransportId, _) =
        (p.server, p.tid.expect("transport"), p.snow);
    let mut rx_offset = 0;
    for c in split_input(&mut input) {
        if c.tick {
            now = now.saturating_add(TICK);
            server.handle_timeout(now);
        }
        let alive = server_feed(&mut server, tid, now, c.bytes, &mut rx_offset);
        if let Some(sid) = server.session_of(tid) {
            server_read(&mut server, sid, &mut rx_offset);
        }
        server_flush(&mut server, tid, now);
        if !alive {
            assert!(server.transport_ended(tid));
            assert!(server.handle_input(tid, now, b"x").is_err());
            break;
        }
    }
    let _ = server.poll_timeout();
    // The setup's session, plus one the fuzzer may complete on a fresh
    // transport (scenario 2; with forgery a zero ClientConfirm passes:
    // fuzz/regressions/server_input/forged-second-session-on-new-transport).
    let most = if mode % 5 == 2 { 2 } else { 1 };
    assert!(
        server.session_count() <= most,
        "{} sessions",
        server.session_count()
    );
    rx_offset
}

/// The client's setup for scenario `mode % 4` with configuration
/// `mode / 4` (see the `client_input` target).
pub fn client_setup(mode: u8, seed: u64) -> Net {
    let sel = mode / 4;
    let (c, s) = configs(sel);
    match mode % 4 {
        0 => {
            let mut p = Net::pair(seed, c, s);
            p.open_transport();
            let up = p.client_output(); // the ClientHello
            let _ = p
                .server
                .handle_input(p.tid.expect("transport"), p.snow, &up);
            p
        }
        scenario => {
            let mut p = established(seed, sel);
            let _ = p.client.send(&[7; 500]);
            let up = p.client_output();
            let _ = p
                .server
                .handle_input(p.tid.expect("transport"), p.snow, &up);
            if scenario == 1 {
                assert!(p.reconnect(), "reconnect");
                let up = p.client_output(); // the ResumeRequest
                let _ = p
                    .server
                    .handle_input(p.tid.expect("transport"), p.snow, &up);
            }
            p.drain();
            p
        }
    }
}

/// The `client_input` target: returns the bytes the client's application
/// read.
pub fn client_input(data: &[u8]) -> u64 {
    allow_forgery(true);
    let mut input = Input::new(data);
    let mode = input.byte();
    let seed = u64::from(input.byte());
    if mode % 4 == 3 {
        return script(seed, mode / 4, Hostile::Down, &mut input).down.1;
    }
    let p = client_setup(mode, seed);
    let (mut client, mut now) = (p.client, p.cnow);
    let mut rx_offset = 0;
    for c in split_input(&mut input) {
        if c.tick {
            now = now.saturating_add(TICK);
            client.handle_timeout(now);
        }
        let alive = client_feed(&mut client, now, c.bytes, &mut rx_offset);
        client_read(&mut client, &mut rx_offset);
        client_flush(&mut client, now);
        if !alive {
            assert!(client.handle_input(now, b"x").is_err());
            break;
        }
    }
    rx_offset
}
