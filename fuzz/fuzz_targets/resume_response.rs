//! `ResumeResponse::decode` and `resume_response_len` on arbitrary bytes,
//! checked against the layout (version 2, status 0, server written, server
//! read, server time, resume timeout: 8 bytes each, receive epoch 4, MAC 16
//! = 54 bytes) and the
//! rejection lengths written out here, plus round trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relink::wire::{
    resume_response_len, AuthenticatedReject, ResumeResponse, ResumeStatus, UnknownSessionReject,
};

fn le(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fuzz_target!(|data: &[u8]| {
    let expect_ok = data.len() == 54 && data[0] == 2 && data[1] == 0;
    match ResumeResponse::decode(data) {
        Ok(r) => {
            assert!(expect_ok, "accepted invalid response {data:?}");
            assert_eq!(&r.encode()[..], data, "encode(decode(x)) != x");
            assert_eq!(r.server_written, le(data, 2));
            assert_eq!(r.server_read, le(data, 10));
            assert_eq!(r.server_time, le(data, 18));
            assert_eq!(r.resume_timeout, le(data, 26));
            let epoch: [u8; 4] = data[34..38].try_into().expect("4 bytes");
            assert_eq!(r.rx_epoch, u32::from_le_bytes(epoch));
            assert_eq!(&r.mac[..], &data[38..54]);
            assert_eq!(resume_response_len(data[0], data[1]), Ok(54));
        }
        Err(_) => assert!(!expect_ok, "rejected valid response {data:?}"),
    }
    if let [version, status, ..] = *data {
        // Statuses 0..=7 exist. Accepted: the full response. Rejections the
        // server authenticated (Replayed 4, Stale 5, DataUnavailable 6)
        // carry the server's time (8) and a 16-byte MAC; UnknownSession (2)
        // carries the 16-byte reset token; the others are version and
        // status only.
        let expect = (version == 2 && status <= 7).then_some(match status {
            0 => 54,
            2 => 18,
            4..=6 => 26,
            _ => 2,
        });
        assert_eq!(resume_response_len(version, status).ok(), expect);
        if let Ok(s) = ResumeStatus::from_byte(status) {
            assert_eq!(s.to_byte(), status);
            assert_eq!(s.is_authenticated(), (4..=6).contains(&status));
        }
    }
    // Round-trip a response built from the input's bytes.
    let mut padded = [0u8; 54];
    for (i, p) in padded.iter_mut().enumerate() {
        *p = data.get(i).copied().unwrap_or(0x5A ^ i as u8);
    }
    let r = ResumeResponse {
        server_written: le(&padded, 2),
        server_read: le(&padded, 10),
        server_time: le(&padded, 18),
        resume_timeout: le(&padded, 26),
        rx_epoch: u32::from_le_bytes(padded[34..38].try_into().expect("4 bytes")),
        mac: padded[38..54].try_into().expect("16 bytes"),
    };
    let enc = r.encode();
    assert_eq!(&enc[..2], &[2, 0]);
    assert_eq!(&enc[2..], &padded[2..]);
    assert_eq!(ResumeResponse::decode(&enc), Ok(r));
    // The rejections with a body: decoded exactly when their layout fits
    // (26 bytes, version 2, status 4..=6; 18 bytes, version 2, status 2),
    // and encode(decode(x)) == x.
    let auth_ok = data.len() == 26 && data[0] == 2 && (4..=6).contains(&data[1]);
    match AuthenticatedReject::decode(data) {
        Ok(r) => {
            assert!(auth_ok, "accepted invalid rejection {data:?}");
            assert_eq!(&r.encode()[..], data);
            assert_eq!(r.server_time, le(data, 2));
        }
        Err(_) => assert!(!auth_ok, "rejected valid rejection {data:?}"),
    }
    let unknown_ok = data.len() == 18 && data[0] == 2 && data[1] == 2;
    match UnknownSessionReject::decode(data) {
        Ok(r) => {
            assert!(unknown_ok, "accepted invalid answer {data:?}");
            assert_eq!(&r.encode()[..], data);
        }
        Err(_) => assert!(!unknown_ok, "rejected valid answer {data:?}"),
    }
});
