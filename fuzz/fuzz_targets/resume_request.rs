//! `ResumeRequest::decode` and `client_first_len` on arbitrary bytes,
//! checked against the layout (tag 0xFF, version, conn id, counter,
//! written, read, time: 8 bytes each, receive epoch 4, MAC 16 = 62 bytes)
//! written out here, plus round trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relink::wire::{client_first_len, ResumeRequest};

fn le(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fuzz_target!(|data: &[u8]| {
    let expect_ok = data.len() == 62 && data[0] == 0xFF;
    match ResumeRequest::decode(data) {
        Ok(r) => {
            assert!(expect_ok, "accepted invalid request {data:?}");
            assert_eq!(&r.encode()[..], data, "encode(decode(x)) != x");
            assert_eq!(r.version, data[1]);
            assert_eq!(r.conn_id, le(data, 2));
            assert_eq!(r.counter, le(data, 10));
            assert_eq!(r.client_written, le(data, 18));
            assert_eq!(r.client_read, le(data, 26));
            assert_eq!(r.time, le(data, 34));
            let epoch: [u8; 4] = data[42..46].try_into().expect("4 bytes");
            assert_eq!(r.rx_epoch, u32::from_le_bytes(epoch));
            assert_eq!(&r.mac[..], &data[46..62]);
            assert_eq!(
                client_first_len(data[0], data[1]),
                Ok((data[1] == 2).then_some(62))
            );
        }
        Err(_) => assert!(!expect_ok, "rejected valid request {data:?}"),
    }
    // Round-trip a request built from the input's bytes.
    let mut padded = [0u8; 62];
    for (i, p) in padded.iter_mut().enumerate() {
        *p = data.get(i).copied().unwrap_or(0xA5 ^ i as u8);
    }
    let r = ResumeRequest {
        version: padded[1],
        conn_id: le(&padded, 2),
        counter: le(&padded, 10),
        client_written: le(&padded, 18),
        client_read: le(&padded, 26),
        time: le(&padded, 34),
        rx_epoch: u32::from_le_bytes(padded[42..46].try_into().expect("4 bytes")),
        mac: padded[46..62].try_into().expect("16 bytes"),
    };
    let enc = r.encode();
    assert_eq!(enc[0], 0xFF);
    assert_eq!(&enc[1..], &padded[1..]);
    assert_eq!(ResumeRequest::decode(&enc), Ok(r));
});
