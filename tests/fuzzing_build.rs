//! The fuzzing build's shortcuts (src/keys.rs, `cfg(fuzzing)`: zero tags
//! pass, identity stream cipher, cheap Diffie-Hellman) are absent from the
//! normal build: an all-zero tag is refused wherever a tag is checked
//! (frames, the server's confirm), the stream is encrypted, and public keys
//! are real X25519.

use relink::wire::{FrameHeader, FrameType, ServerHello, FRAME_HEADER_LEN, TAG_LEN};
use relink::{Config, Event, ServerEvent, StaticKeypair};
use relink_test_support::harness::Net;

/// A DATA frame with `body` in plaintext and an all-zero tag: what the
/// fuzzing build accepts as authentic.
fn zero_tag_data_frame(body: &[u8]) -> Vec<u8> {
    let h = FrameHeader {
        frame_type: FrameType::Data,
        len: body.len(),
    };
    let mut f = h.encode().to_vec();
    f.extend_from_slice(body);
    f.extend_from_slice(&[0u8; TAG_LEN]);
    f
}

#[test]
fn a_zero_tag_frame_is_refused_by_the_server_and_nothing_is_delivered() {
    let mut p = Net::pair(5, Config::default(), Config::default());
    p.open_transport();
    p.exchange_until_open();
    let sid = p.session.expect("session");
    let tid = p.tid.expect("transport");
    let frame = zero_tag_data_frame(b"forged bytes");
    assert!(frame.len() == FRAME_HEADER_LEN + 12 + TAG_LEN);
    let r = p.server.handle_input(tid, p.snow, &frame);
    assert!(r.is_err(), "a zero-tag frame was accepted: {r:?}");
    assert!(p.server.transport_ended(tid));
    let mut events = Vec::new();
    while let Some(e) = p.server.poll_event() {
        events.push(e);
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ServerEvent::AuthFailed { .. })),
        "{events:?}"
    );
    let mut buf = [0u8; 64];
    assert!(!matches!(p.server.recv(sid, &mut buf), Ok(n) if n > 0));
}

#[test]
fn a_zero_tag_frame_is_refused_by_the_client() {
    let mut p = Net::pair(6, Config::default(), Config::default());
    p.open_transport();
    p.exchange_until_open();
    let r = p
        .client
        .handle_input(p.cnow, &zero_tag_data_frame(b"forged bytes"));
    assert!(r.is_err(), "a zero-tag frame was accepted: {r:?}");
    let mut events = Vec::new();
    while let Some(e) = p.client.poll_event() {
        events.push(e);
    }
    assert!(
        events.iter().any(|e| matches!(e, Event::AuthFailed { .. })),
        "{events:?}"
    );
    let mut buf = [0u8; 64];
    assert!(!matches!(p.client.recv(&mut buf), Ok(n) if n > 0));
}

#[test]
fn a_server_hello_with_a_zero_confirm_is_refused() {
    let mut p = Net::pair(7, Config::default(), Config::default());
    p.open_transport();
    let hello = p.client_output();
    p.server
        .handle_input(p.tid.expect("transport"), p.snow, &hello)
        .expect("genuine hello");
    let answer = p.server_output();
    let mut sh = ServerHello::decode(&answer).expect("genuine ServerHello");
    sh.confirm = [0u8; TAG_LEN];
    let r = p.client.handle_input(p.cnow, &sh.encode());
    assert!(r.is_err(), "a zero confirm was accepted: {r:?}");
    assert!(!p.client.is_connected());
}

#[test]
fn the_stream_is_encrypted_and_keys_are_real_x25519() {
    let mut p = Net::pair(8, Config::default(), Config::default());
    p.open_transport();
    p.exchange_until_open();
    let plain = b"a plaintext that must not appear on the wire".repeat(4);
    assert_eq!(p.client.send(&plain).expect("send"), plain.len());
    let wire = p.client_output();
    assert!(wire.len() > plain.len());
    assert!(
        !wire.windows(16).any(|w| plain.windows(16).any(|q| q == w)),
        "plaintext on the wire"
    );
    // X25519 of secret 9 (clamped) with the base point: not the clamped
    // secret, which is the fuzzing build's stand-in.
    let mut clamped = [9u8; 32];
    clamped[0] &= 248;
    clamped[31] &= 127;
    clamped[31] |= 64;
    let public = StaticKeypair::from_secret_bytes([9u8; 32]).public_key();
    assert_ne!(public, clamped);
    assert_ne!(public, [9u8; 32]);
}
