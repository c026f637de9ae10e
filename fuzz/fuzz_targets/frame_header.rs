//! `FrameHeader::decode` on 4-byte inputs, checked against the header rules
//! written out independently here, plus encode/decode round trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relink::wire::{FrameHeader, FrameType, FRAME_HEADER_LEN, FRAME_OVERHEAD, MAX_FRAME_PAYLOAD};

/// The header rules (version 2): type 1..=10, zero flags, and a
/// little-endian length of 1..=16384 for DATA, 13 for ACK, 8 for PING and
/// CLOSE, 12 for ABORT, 45 for REKEY_INIT, 44 for REKEY_REPLY, 12 for
/// REKEY_SWITCH, 1..=513 for CREDENTIAL, 8..=520 for ACCEPT.
fn expected_valid(b: &[u8; 4]) -> bool {
    let len = u16::from_le_bytes([b[2], b[3]]) as usize;
    b[1] == 0
        && match b[0] {
            1 => (1..=16 * 1024).contains(&len),
            2 => len == 13,
            3 | 4 => len == 8,
            5 => len == 12,
            6 => len == 45,
            7 => len == 44,
            8 => len == 12,
            9 => (1..=513).contains(&len),
            10 => (8..=520).contains(&len),
            _ => false,
        }
}

fuzz_target!(|data: &[u8]| {
    let Some(bytes) = data.get(..FRAME_HEADER_LEN) else {
        return;
    };
    let bytes: [u8; FRAME_HEADER_LEN] = bytes.try_into().expect("4 bytes");
    match FrameHeader::decode(&bytes) {
        Ok(h) => {
            assert!(expected_valid(&bytes), "accepted invalid header {bytes:?}");
            assert_eq!(h.encode(), bytes, "encode(decode(x)) != x");
            assert_eq!(h.frame_type.to_byte(), bytes[0]);
            assert_eq!(h.len, u16::from_le_bytes([bytes[2], bytes[3]]) as usize);
            assert!(h.len <= MAX_FRAME_PAYLOAD);
            assert_eq!(h.wire_len(), FRAME_OVERHEAD + h.len);
            assert_eq!(FrameHeader::decode(&h.encode()), Ok(h));
        }
        Err(_) => {
            assert!(!expected_valid(&bytes), "rejected valid header {bytes:?}");
            if let Ok(t) = FrameType::from_byte(bytes[0]) {
                assert_eq!(t.to_byte(), bytes[0]);
            }
        }
    }
    // The other direction: every header built from a valid type and length
    // must survive a round trip.
    let raw = u16::from_le_bytes([bytes[2], bytes[3]]) as usize;
    let frame_type = match bytes[0] % 10 {
        0 => FrameType::Data,
        1 => FrameType::Ack,
        2 => FrameType::Ping,
        3 => FrameType::Close,
        4 => FrameType::Abort,
        5 => FrameType::RekeyInit,
        6 => FrameType::RekeyReply,
        7 => FrameType::RekeySwitch,
        8 => FrameType::Credential,
        _ => FrameType::Accept,
    };
    let len = match frame_type {
        FrameType::Data => 1 + raw % MAX_FRAME_PAYLOAD,
        FrameType::Ack => 13,
        FrameType::Ping | FrameType::Close => 8,
        FrameType::Abort | FrameType::RekeySwitch => 12,
        FrameType::RekeyInit => 45,
        FrameType::RekeyReply => 44,
        FrameType::Credential => 1 + raw % 513,
        FrameType::Accept => 8 + raw % 513,
    };
    let h = FrameHeader { frame_type, len };
    assert_eq!(FrameHeader::decode(&h.encode()), Ok(h));
});
