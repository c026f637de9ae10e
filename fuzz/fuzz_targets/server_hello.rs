//! `ServerHello::decode` and `server_hello_len` on arbitrary bytes, checked
//! against the layout (version 2, status 0, key 32, challenge 16, time 8,
//! resume timeout 8, flags 1 (only bit 0 known), conn id 8, reset token 16,
//! confirm 16 = 107 bytes; a Stale rejection is 10 bytes, a Cookie answer
//! 18) written out here,
//! plus round trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relink::wire::{server_hello_len, HandshakeStatus, HelloCookie, HelloStale, ServerHello};

fuzz_target!(|data: &[u8]| {
    let expect_ok = data.len() == 107 && data[0] == 2 && data[1] == 0 && data[66] & !0x01 == 0;
    match ServerHello::decode(data) {
        Ok(h) => {
            assert!(expect_ok, "accepted invalid ServerHello {data:?}");
            assert_eq!(&h.encode()[..], data, "encode(decode(x)) != x");
            assert_eq!(&h.ephemeral[..], &data[2..34]);
            assert_eq!(&h.challenge[..], &data[34..50]);
            let time: [u8; 8] = data[50..58].try_into().expect("8 bytes");
            assert_eq!(h.server_time, u64::from_le_bytes(time));
            let timeout: [u8; 8] = data[58..66].try_into().expect("8 bytes");
            assert_eq!(h.resume_timeout, u64::from_le_bytes(timeout));
            assert_eq!(h.flags, data[66]);
            assert_eq!(&h.encrypted_conn_id[..], &data[67..75]);
            assert_eq!(&h.encrypted_reset_token[..], &data[75..91]);
            assert_eq!(&h.confirm[..], &data[91..107]);
            assert_eq!(server_hello_len(data[0], data[1]), Ok(107));
        }
        Err(_) => assert!(!expect_ok, "rejected valid ServerHello {data:?}"),
    }
    if let [version, status, ..] = *data {
        // Statuses 0..=7 exist; 0 (accepted) is followed by the full hello,
        // Stale (5) by the server's time, Cookie (7) by the cookie, the
        // other rejections are just version and status.
        let expect = (version == 2 && status <= 7).then_some(match status {
            0 => 107,
            5 => 10,
            7 => 18,
            _ => 2,
        });
        assert_eq!(server_hello_len(version, status).ok(), expect);
        if let Ok(s) = HandshakeStatus::from_byte(status) {
            assert_eq!(s.to_byte(), status);
        }
        // Round-trip a hello built from the input's bytes.
        let at = |i: usize| data.get(i).copied().unwrap_or(i as u8);
        let mut h = ServerHello {
            ephemeral: [0; 32],
            challenge: [0; 16],
            server_time: u64::from_le_bytes(core::array::from_fn(|i| at(50 + i))),
            resume_timeout: u64::from_le_bytes(core::array::from_fn(|i| at(58 + i))),
            flags: at(66) & 0x01,
            encrypted_conn_id: [0; 8],
            encrypted_reset_token: [0; 16],
            confirm: [0; 16],
        };
        h.ephemeral = core::array::from_fn(|i| at(2 + i));
        h.challenge = core::array::from_fn(|i| at(34 + i));
        h.encrypted_conn_id = core::array::from_fn(|i| at(67 + i));
        h.encrypted_reset_token = core::array::from_fn(|i| at(75 + i));
        h.confirm = core::array::from_fn(|i| at(91 + i));
        let enc = h.encode();
        assert_eq!(ServerHello::decode(&enc), Ok(h));
        assert_eq!(server_hello_len(enc[0], enc[1]), Ok(enc.len()));
    }
    // The Stale rejection: decoded exactly when its layout fits.
    let stale_ok = data.len() == 10 && data[0] == 2 && data[1] == 5;
    match HelloStale::decode(data) {
        Ok(r) => {
            assert!(stale_ok, "accepted invalid Stale answer {data:?}");
            assert_eq!(&r.encode()[..], data);
            let time: [u8; 8] = data[2..10].try_into().expect("8 bytes");
            assert_eq!(r.server_time, u64::from_le_bytes(time));
        }
        Err(_) => assert!(!stale_ok, "rejected valid Stale answer {data:?}"),
    }
    // The Cookie answer: decoded exactly when its layout fits.
    let cookie_ok = data.len() == 18 && data[0] == 2 && data[1] == 7;
    match HelloCookie::decode(data) {
        Ok(c) => {
            assert!(cookie_ok, "accepted invalid Cookie answer {data:?}");
            assert_eq!(&c.encode()[..], data);
            assert_eq!(&c.cookie[..], &data[2..]);
        }
        Err(_) => assert!(!cookie_ok, "rejected valid Cookie answer {data:?}"),
    }
});
