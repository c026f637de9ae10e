//! `ClientHello::decode`, `split_hello_cookie` and `client_first_len` on
//! arbitrary bytes, checked
//! against the layout (tag 0x00, version, flags, 32-byte key, time 8 = 43
//! bytes)
//! written out here, plus encode/decode round trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relink::wire::{
    client_first_len, hello_with_cookie, split_hello_cookie, ClientHello, CLIENT_HELLO_LEN,
    FLAG_PINNED, VERSION,
};

fuzz_target!(|data: &[u8]| {
    let expect_ok = data.len() == 43 && data[0] == 0x00 && data[2] & !0x01 == 0;
    match ClientHello::decode(data) {
        Ok(h) => {
            assert!(expect_ok, "accepted invalid hello {data:?}");
            assert_eq!(&h.encode()[..], data, "encode(decode(x)) != x");
            assert_eq!(h.version, data[1]);
            assert_eq!(h.flags & !FLAG_PINNED, 0);
            assert_eq!(&h.ephemeral[..], &data[3..35]);
            let time: [u8; 8] = data[35..43].try_into().expect("8 bytes");
            assert_eq!(h.time, u64::from_le_bytes(time));
            assert_eq!(
                client_first_len(data[0], h.version),
                Ok((h.version == VERSION).then_some(CLIENT_HELLO_LEN))
            );
        }
        Err(_) => assert!(!expect_ok, "rejected valid hello {data:?}"),
    }
    if let [tag, version, ..] = *data {
        let expect = match tag {
            0x00 => Some(43),
            0x01 => Some(59), // with a cookie (PROTOCOL.md 3.7)
            0xFF => Some(62),
            _ => None,
        };
        match client_first_len(tag, version) {
            Ok(len) => {
                let want = expect.expect("accepted unknown tag");
                assert_eq!(len, (version == 2).then_some(want));
            }
            Err(_) => assert!(expect.is_none(), "rejected known tag {tag}"),
        }
        // Build a hello from the input's fields and round-trip it.
        let mut ephemeral = [0u8; 32];
        for (i, e) in ephemeral.iter_mut().enumerate() {
            *e = data.get(2 + i).copied().unwrap_or(i as u8);
        }
        let h = ClientHello {
            version,
            flags: tag & FLAG_PINNED,
            ephemeral,
            time: u64::from_le_bytes(core::array::from_fn(|i| {
                data.get(34 + i).copied().unwrap_or(i as u8)
            })),
        };
        assert_eq!(ClientHello::decode(&h.encode()), Ok(h));
        // The same hello with a cookie from the input splits back.
        let cookie: [u8; 16] = core::array::from_fn(|i| data.get(43 + i).copied().unwrap_or(0));
        let with = hello_with_cookie(&h.encode(), &cookie);
        assert_eq!(with[0], 0x01);
        assert_eq!(split_hello_cookie(&with), Ok((h.encode(), cookie)));
    }
    // A hello with a cookie: 59 bytes, tag 0x01; the plain hello gets tag 0.
    let cookie_ok = data.len() == 59 && data[0] == 0x01;
    match split_hello_cookie(data) {
        Ok((hello, cookie)) => {
            assert!(cookie_ok, "accepted invalid hello with cookie {data:?}");
            assert_eq!(hello[0], 0x00);
            assert_eq!(&hello[1..], &data[1..43]);
            assert_eq!(&cookie[..], &data[43..]);
            assert_eq!(&hello_with_cookie(&hello, &cookie)[..], data);
        }
        Err(_) => assert!(!cookie_ok, "rejected valid hello with cookie {data:?}"),
    }
});
