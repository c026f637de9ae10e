//! A `Server` fed arbitrary bytes on one transport, in chunk splits chosen
//! by the input, with `poll_transmit`, `poll_event` and `handle_timeout`
//! called in between. It must never panic, and the driver-facing
//! invariants of `relink_fuzz` must hold.
//!
//! Input: `[mode, seed, split count, split bytes.., payload..]`. Scenario
//! (`mode % 5`): 0 a fresh transport (first message parsing, handshake);
//! 1 the transport of a genuinely established session (frame parsing);
//! 2 a new transport after the session's transport broke (resume request
//! parsing against a live session); 3 the transport after a genuine resume
//! (frames of generation 1); 4 [`relink_fuzz::script`] with a hostile
//! client-to-server pipe (the input is then a list of operations: genuine
//! traffic, resumes, injected, flipped and dropped bytes, followed by a
//! check that everything written arrives). `mode / 5` picks the
//! configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relink::{Server, TransportId};
use relink_fuzz::{
    configs, established, rng, script, server_feed, server_flush, split_input, Hostile, Input, T0,
    TICK,
};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.byte();
    let seed = u64::from(input.byte());
    let sel = mode / 5;
    let (mut server, tid, mut now): (Server<_>, TransportId, _) = match mode % 5 {
        0 => {
            let (_, s) = configs(sel);
            let mut server = Server::new(s, rng(seed));
            let tid = server.accept(T0).expect("accept");
            (server, tid, T0)
        }
        4 => {
            script(seed, sel, Hostile::Up, &mut input);
            return;
        }
        scenario => {
            let mut p = established(seed, sel);
            let sid = p.session.expect("session");
            // Outgoing data so that ACK validation has something to check.
            let _ = p.server.send(sid, &[0x33; 3000]);
            let _ = p.server_output();
            if scenario == 2 {
                let (tid, now) = (p.tid.expect("transport"), p.now());
                p.server.transport_lost(tid, now);
                p.tid = Some(p.server.accept(now).expect("accept"));
            } else if scenario == 3 {
                assert!(p.reconnect(), "reconnect");
                p.exchange_until_open();
            }
            let (tid, now) = (p.tid.expect("transport"), p.now());
            (p.server, tid, now)
        }
    };
    let chunks = split_input(&mut input);
    let mut rx_offset = 0;
    for c in chunks {
        if c.tick {
            now = now.saturating_add(TICK);
            server.handle_timeout(now);
        }
        let alive = server_feed(&mut server, tid, now, c.bytes, &mut rx_offset);
        server_flush(&mut server, tid, now);
        if !alive {
            assert!(server.transport_ended(tid));
            assert!(server.handle_input(tid, now, b"x").is_err());
            break;
        }
    }
    let _ = server.poll_timeout();
    assert!(server.session_count() <= 1);
});
