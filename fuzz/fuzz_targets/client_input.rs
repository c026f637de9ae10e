//! A `Client` fed arbitrary bytes as the server's side of the transport.
//! It must never panic, must never hand the application a byte the genuine
//! server did not send, and the driver-facing invariants of `relink_fuzz`
//! must hold.
//!
//! Input: `[mode, seed, ..]`; scenario `mode % 4`, configuration `mode / 4`:
//! - 0: right after `new_transport` (the reply to a ClientHello);
//! - 1: after a genuine handshake and a broken transport, the reply to the
//!   client's ResumeRequest (accepted, authenticated and plain rejections);
//! - 2: after a genuine handshake, arbitrary bytes as frames (reaches the
//!   frame parser and the MAC check behind it);
//! - 3: [`relink_fuzz::script`]: operations on a genuine pair in which the
//!   fuzzer injects, flips, drops and delivers bytes of the server-to-client
//!   pipe while real frames (data, ACKs, CLOSE) and reconnects with resumes
//!   flow; afterwards the transport is healed and every byte written by
//!   either side must arrive intact unless the session legitimately ended.
//!
//! Scenarios 0 to 2 then read `[split count, split bytes.., payload..]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relink_fuzz::{
    client_feed, client_flush, configs, established, rng, script, split_input, Hostile, Input, T0,
    TICK,
};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.byte();
    let seed = u64::from(input.byte());
    let sel = mode / 4;
    let (mut client, mut now) = match mode % 4 {
        0 => {
            let (c, _) = configs(sel);
            let mut client = relink::Client::new(c, rng(seed));
            client.new_transport(T0).expect("new_transport");
            (client, T0)
        }
        1 => {
            let mut p = established(seed, sel);
            let _ = p.client.send(&[7; 500]);
            let _ = p.client_output();
            assert!(p.reconnect(), "reconnect");
            let _ = p.client_output(); // the ResumeRequest
            let now = p.now();
            (p.client, now)
        }
        2 => {
            let mut p = established(seed, sel);
            let _ = p.client.send(&[7; 500]);
            let _ = p.client_output();
            let now = p.now();
            (p.client, now)
        }
        _ => {
            script(seed, sel, Hostile::Down, &mut input);
            return;
        }
    };
    let mut rx_offset = 0;
    for c in split_input(&mut input) {
        if c.tick {
            now = now.saturating_add(TICK);
            client.handle_timeout(now);
        }
        let alive = client_feed(&mut client, now, c.bytes, &mut rx_offset);
        client_flush(&mut client, now);
        if !alive {
            assert!(client.handle_input(now, b"x").is_err());
            break;
        }
    }
    // Nothing the fuzzer wrote can be authentic application data.
    let mut buf = [0u8; 64];
    assert!(!matches!(client.recv(&mut buf), Ok(n) if n > 0));
});
