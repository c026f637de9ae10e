//! Encode → decode round trips of every wire message and frame payload
//! (handshake, resume, rejections, and the frame payloads of version 2:
//! ServerHello flags, HelloStale, HelloCookie and the hello with a cookie, ACK, PING/CLOSE/ABORT stamps, REKEY_INIT,
//! REKEY_REPLY, REKEY_SWITCH, CREDENTIAL, ACCEPT, and frame headers), built
//! by `arbitrary` from the input; and decode → encode on raw bytes: a
//! message that decodes must encode back to exactly the same bytes.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use relink::wire::{
    client_first_len, hello_with_cookie, split_hello_cookie, AbortFrame, AcceptFrame, AckFrame,
    AuthenticatedReject, ClientHello, CredentialFrame, FrameHeader, FrameType, HelloCookie,
    HelloStale, RekeyInit, RekeyReply, RekeySwitch, ResumeRequest, ResumeResponse, ResumeStatus,
    ServerHello, StampFrame, UnknownSessionReject, CLIENT_HELLO_COOKIE_LEN, COOKIE_LEN,
    FLAG_PINNED, MAX_CREDENTIAL_LEN, MAX_FRAME_PAYLOAD, MAX_TOKEN_LEN, SH_FLAGS_KNOWN, TAG_LEN,
    VERSION,
};
use relink::AbortCode;

/// One message with every field chosen by the fuzzer.
#[derive(Arbitrary, Debug)]
enum Msg {
    ClientHello {
        pinned: bool,
        ephemeral: [u8; 32],
        time: u64,
    },
    ServerHello {
        ephemeral: [u8; 32],
        challenge: [u8; 16],
        server_time: u64,
        resume_timeout: u64,
        flags: u8,
        conn_id: [u8; 8],
        reset_token: [u8; TAG_LEN],
        confirm: [u8; TAG_LEN],
    },
    HelloStale(u64),
    HelloCookie([u8; COOKIE_LEN]),
    HelloWithCookie {
        pinned: bool,
        ephemeral: [u8; 32],
        time: u64,
        cookie: [u8; COOKIE_LEN],
    },
    ResumeRequest {
        version: u8,
        conn_id: u64,
        counter: u64,
        client_written: u64,
        client_read: u64,
        time: u64,
        rx_epoch: u32,
        mac: [u8; TAG_LEN],
    },
    ResumeResponse {
        server_written: u64,
        server_read: u64,
        server_time: u64,
        resume_timeout: u64,
        rx_epoch: u32,
        mac: [u8; TAG_LEN],
    },
    AuthenticatedReject {
        status: u8,
        server_time: u64,
        mac: [u8; TAG_LEN],
    },
    UnknownSessionReject([u8; TAG_LEN]),
    Ack {
        read_count: u64,
        rx_epoch: u32,
        flags: u8,
    },
    /// PING or CLOSE.
    Stamp(u64),
    Abort {
        code: u32,
        time: u64,
    },
    RekeyInit {
        new_epoch: u32,
        flags: u8,
        ephemeral_public: [u8; 32],
        time: u64,
    },
    RekeyReply {
        new_epoch: u32,
        ephemeral_public: [u8; 32],
        time: u64,
    },
    RekeySwitch {
        new_epoch: u32,
        time: u64,
    },
    Credential {
        kind: u8,
        bytes: Vec<u8>,
    },
    Accept {
        time: u64,
        token: Vec<u8>,
    },
    Header {
        frame_type: u8,
        len: u16,
    },
    /// Raw bytes offered to the decoder `which` selects.
    Raw {
        which: u8,
        bytes: Vec<u8>,
    },
}

fn roundtrip(m: Msg) {
    match m {
        Msg::ClientHello {
            pinned,
            ephemeral,
            time,
        } => {
            let h = ClientHello {
                version: VERSION,
                flags: if pinned { FLAG_PINNED } else { 0 },
                ephemeral,
                time,
            };
            assert_eq!(ClientHello::decode(&h.encode()), Ok(h));
        }
        Msg::ServerHello {
            ephemeral,
            challenge,
            server_time,
            resume_timeout,
            flags,
            conn_id,
            reset_token,
            confirm,
        } => {
            let h = ServerHello {
                ephemeral,
                challenge,
                server_time,
                resume_timeout,
                flags,
                encrypted_conn_id: conn_id,
                encrypted_reset_token: reset_token,
                confirm,
            };
            // Unknown flag bits are refused, known ones round-trip.
            match ServerHello::decode(&h.encode()) {
                Ok(d) => {
                    assert_eq!(flags & !SH_FLAGS_KNOWN, 0);
                    assert_eq!(d, h);
                }
                Err(_) => assert_ne!(flags & !SH_FLAGS_KNOWN, 0),
            }
        }
        Msg::HelloStale(server_time) => {
            let r = HelloStale { server_time };
            assert_eq!(HelloStale::decode(&r.encode()), Ok(r));
        }
        Msg::HelloCookie(cookie) => {
            let c = HelloCookie { cookie };
            assert_eq!(HelloCookie::decode(&c.encode()), Ok(c));
        }
        Msg::HelloWithCookie {
            pinned,
            ephemeral,
            time,
            cookie,
        } => {
            let h = ClientHello {
                version: VERSION,
                flags: if pinned { FLAG_PINNED } else { 0 },
                ephemeral,
                time,
            }
            .encode();
            let with = hello_with_cookie(&h, &cookie);
            assert_eq!(split_hello_cookie(&with), Ok((h, cookie)));
            assert_eq!(
                client_first_len(with[0], with[1]),
                Ok(Some(CLIENT_HELLO_COOKIE_LEN))
            );
        }
        Msg::ResumeRequest {
            version,
            conn_id,
            counter,
            client_written,
            client_read,
            time,
            rx_epoch,
            mac,
        } => {
            let r = ResumeRequest {
                version,
                conn_id,
                counter,
                client_written,
                client_read,
                time,
                rx_epoch,
                mac,
            };
            assert_eq!(ResumeRequest::decode(&r.encode()), Ok(r));
        }
        Msg::ResumeResponse {
            server_written,
            server_read,
            server_time,
            resume_timeout,
            rx_epoch,
            mac,
        } => {
            let r = ResumeResponse {
                server_written,
                server_read,
                server_time,
                resume_timeout,
                rx_epoch,
                mac,
            };
            assert_eq!(ResumeResponse::decode(&r.encode()), Ok(r));
        }
        Msg::AuthenticatedReject {
            status,
            server_time,
            mac,
        } => {
            let Ok(status) = ResumeStatus::from_byte(status) else {
                return;
            };
            let r = AuthenticatedReject {
                status,
                server_time,
                mac,
            };
            match AuthenticatedReject::decode(&r.encode()) {
                Ok(d) => {
                    assert!(status.is_authenticated());
                    assert_eq!(d, r);
                }
                Err(_) => assert!(!status.is_authenticated()),
            }
        }
        Msg::UnknownSessionReject(reset_token) => {
            let r = UnknownSessionReject { reset_token };
            assert_eq!(UnknownSessionReject::decode(&r.encode()), Ok(r));
        }
        Msg::Ack {
            read_count,
            rx_epoch,
            flags,
        } => {
            let a = AckFrame {
                read_count,
                rx_epoch,
                flags,
            };
            assert_eq!(AckFrame::decode(&a.encode()), Ok(a));
        }
        Msg::Stamp(time) => {
            let s = StampFrame { time };
            assert_eq!(StampFrame::decode(&s.encode()), Ok(s));
        }
        Msg::Abort { code, time } => {
            let a = AbortFrame {
                code: AbortCode(code),
                time,
            };
            assert_eq!(AbortFrame::decode(&a.encode()), Ok(a));
        }
        Msg::RekeyInit {
            new_epoch,
            flags,
            ephemeral_public,
            time,
        } => {
            let r = RekeyInit {
                new_epoch,
                flags,
                ephemeral_public,
                time,
            };
            assert_eq!(RekeyInit::decode(&r.encode()), Ok(r));
        }
        Msg::RekeyReply {
            new_epoch,
            ephemeral_public,
            time,
        } => {
            let r = RekeyReply {
                new_epoch,
                ephemeral_public,
                time,
            };
            assert_eq!(RekeyReply::decode(&r.encode()), Ok(r));
        }
        Msg::RekeySwitch { new_epoch, time } => {
            let r = RekeySwitch { new_epoch, time };
            assert_eq!(RekeySwitch::decode(&r.encode()), Ok(r));
        }
        Msg::Credential { kind, bytes } => {
            let c = CredentialFrame {
                kind,
                bytes: &bytes,
            };
            let mut out = [0u8; 1 + MAX_CREDENTIAL_LEN];
            match c.encode_into(&mut out) {
                Ok(n) => {
                    assert!(bytes.len() <= MAX_CREDENTIAL_LEN);
                    assert_eq!(n, c.len());
                    assert_eq!(CredentialFrame::decode(&out[..n]), Ok(c));
                    header_roundtrip(FrameType::Credential, n);
                }
                Err(_) => assert!(bytes.len() > MAX_CREDENTIAL_LEN),
            }
            // A buffer one byte short is refused, never overrun.
            if let Some(short) = c.len().checked_sub(1) {
                assert!(c.encode_into(&mut vec![0u8; short]).is_err());
            }
        }
        Msg::Accept { time, token } => {
            let a = AcceptFrame {
                time,
                token: &token,
            };
            let mut out = [0u8; 8 + MAX_TOKEN_LEN];
            match a.encode_into(&mut out) {
                Ok(n) => {
                    assert!(token.len() <= MAX_TOKEN_LEN);
                    assert_eq!(n, a.len());
                    assert_eq!(AcceptFrame::decode(&out[..n]), Ok(a));
                    header_roundtrip(FrameType::Accept, n);
                }
                Err(_) => assert!(token.len() > MAX_TOKEN_LEN),
            }
            assert!(a.encode_into(&mut vec![0u8; a.len() - 1]).is_err());
        }
        Msg::Header { frame_type, len } => {
            let Ok(t) = FrameType::from_byte(frame_type) else {
                return;
            };
            let len = usize::from(len);
            let h = FrameHeader { frame_type: t, len };
            if let Ok(d) = FrameHeader::decode(&h.encode()) {
                assert_eq!(d, h);
                assert!(len <= MAX_FRAME_PAYLOAD);
            }
        }
        Msg::Raw { which, bytes } => decode_encode(which, &bytes),
    }
}

/// A header of type `t` and payload length `len` round-trips.
fn header_roundtrip(t: FrameType, len: usize) {
    let h = FrameHeader { frame_type: t, len };
    assert_eq!(FrameHeader::decode(&h.encode()), Ok(h));
}

/// Whatever decodes encodes back to the very same bytes.
fn decode_encode(which: u8, b: &[u8]) {
    fn same(b: &[u8], enc: &[u8]) {
        assert_eq!(enc, b, "encode(decode(x)) != x");
    }
    match which % 18 {
        0 => {
            if let Ok(m) = ClientHello::decode(b) {
                same(b, &m.encode());
            }
        }
        1 => {
            if let Ok(m) = ServerHello::decode(b) {
                same(b, &m.encode());
            }
        }
        2 => {
            if let Ok(m) = HelloStale::decode(b) {
                same(b, &m.encode());
            }
        }
        3 => {
            if let Ok(m) = ResumeRequest::decode(b) {
                same(b, &m.encode());
            }
        }
        4 => {
            if let Ok(m) = ResumeResponse::decode(b) {
                same(b, &m.encode());
            }
        }
        5 => {
            if let Ok(m) = AuthenticatedReject::decode(b) {
                same(b, &m.encode());
            }
        }
        6 => {
            if let Ok(m) = UnknownSessionReject::decode(b) {
                same(b, &m.encode());
            }
        }
        7 => {
            if let Ok(m) = AckFrame::decode(b) {
                same(b, &m.encode());
            }
        }
        8 => {
            if let Ok(m) = StampFrame::decode(b) {
                same(b, &m.encode());
            }
        }
        9 => {
            if let Ok(m) = AbortFrame::decode(b) {
                same(b, &m.encode());
            }
        }
        10 => {
            if let Ok(m) = RekeyInit::decode(b) {
                same(b, &m.encode());
            }
        }
        11 => {
            if let Ok(m) = RekeyReply::decode(b) {
                same(b, &m.encode());
            }
        }
        12 => {
            if let Ok(m) = RekeySwitch::decode(b) {
                same(b, &m.encode());
            }
        }
        13 => {
            if let Ok(m) = CredentialFrame::decode(b) {
                let mut out = vec![0u8; m.len()];
                assert_eq!(m.encode_into(&mut out), Ok(b.len()));
                same(b, &out);
            }
        }
        14 => {
            if let Ok(m) = AcceptFrame::decode(b) {
                let mut out = vec![0u8; m.len()];
                assert_eq!(m.encode_into(&mut out), Ok(b.len()));
                same(b, &out);
            }
        }
        15 => {
            if let Ok(m) = HelloCookie::decode(b) {
                same(b, &m.encode());
            }
        }
        16 => {
            if let Ok((hello, cookie)) = split_hello_cookie(b) {
                same(b, &hello_with_cookie(&hello, &cookie));
            }
        }
        _ => {
            if let Ok(Ok(h)) = <[u8; 4]>::try_from(b).map(|a| FrameHeader::decode(&a)) {
                same(b, &h.encode());
            }
        }
    }
}

fuzz_target!(|msgs: Vec<Msg>| {
    for m in msgs {
        roundtrip(m);
    }
});
