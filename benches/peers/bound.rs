//! The bound: exactly the primitives relink uses, without relink around
//! them. Per frame the sender creates an IETF ChaCha20 at the frame's stream
//! offset (key + nonce + seek, as `keys.rs` does), encrypts in place and
//! computes the BLAKE3 keyed MAC (ciphertext + the 33 fixed bytes, truncated
//! to 16 bytes); the receiver recomputes and compares the MAC and
//! decrypts in place. X25519: x25519-dalek key generation and DH.

use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::ChaCha20;
use std::hint::black_box;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::Sample;

const ENC_KEY: [u8; 32] = [0x42; 32];
const MAC_KEY: [u8; 32] = [0x24; 32];

fn cipher_at(offset: u64) -> ChaCha20 {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&(offset >> 32).to_le_bytes());
    let mut c = ChaCha20::new((&ENC_KEY).into(), (&nonce).into());
    c.seek(offset & 0xFFFF_FFFF);
    c
}

fn mac(seq: u64, offset: u64, body: &[u8]) -> [u8; 16] {
    let mut prefix = [0u8; 33];
    prefix[0] = 1;
    prefix[13..21].copy_from_slice(&seq.to_le_bytes());
    prefix[21..29].copy_from_slice(&offset.to_le_bytes());
    prefix[29..33].copy_from_slice(&(body.len() as u32).to_le_bytes());
    let mut h = blake3::Hasher::new_keyed(&MAC_KEY);
    h.update(body);
    h.update(&prefix);
    let mut t = [0u8; 16];
    t.copy_from_slice(&h.finalize().as_bytes()[..16]);
    t
}

/// Buffer with the payload 16-byte aligned (where relink's frames are not
/// necessarily: that difference is part of what relink costs).
fn buffer(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

/// Seal and open `frames` frames of `len` bytes: bytes (payload) per second
/// of one core doing both sides.
pub fn seal_open(len: usize, frames: u64) -> Sample {
    let mut buf = buffer(len);
    let mut offset = 0u64;
    Sample::time(|| {
        for seq in 0..frames {
            // sender
            cipher_at(offset).apply_keystream(&mut buf);
            let tag = mac(seq, offset, &buf);
            // receiver
            let check = mac(seq, offset, black_box(&buf));
            assert!(constant_time_eq::constant_time_eq_16(&tag, &check));
            cipher_at(offset).apply_keystream(&mut buf);
            offset += len as u64;
        }
        black_box(&buf);
        frames * len as u64
    })
}

/// ChaCha20 alone (setup per frame included).
pub fn chacha_only(len: usize, frames: u64) -> Sample {
    let mut buf = buffer(len);
    Sample::time(|| {
        for i in 0..frames {
            cipher_at(i * len as u64).apply_keystream(&mut buf);
        }
        black_box(&buf);
        frames * len as u64
    })
}

/// BLAKE3 keyed MAC alone.
pub fn blake3_only(len: usize, frames: u64) -> Sample {
    let buf = buffer(len);
    Sample::time(|| {
        let mut acc = 0u8;
        for i in 0..frames {
            acc ^= mac(i, 0, black_box(&buf))[0];
        }
        black_box(acc);
        frames * len as u64
    })
}

/// BLAKE3 keyed MAC with the 33 fixed bytes *before* the body (the frame
/// layout before the change: the body's 1 KiB chunks then straddle chunk
/// boundaries and part of them misses the wide SIMD path).
pub fn blake3_aad_last(len: usize, frames: u64) -> Sample {
    let buf = buffer(len);
    let prefix = [0u8; 33];
    Sample::time(|| {
        let mut acc = 0u8;
        for _ in 0..frames {
            let mut h = blake3::Hasher::new_keyed(&MAC_KEY);
            h.update(&prefix);
            h.update(black_box(&buf));
            acc ^= h.finalize().as_bytes()[0];
        }
        black_box(acc);
        frames * len as u64
    })
}

/// Encrypt + MAC (the sender's half).
pub fn seal_only(len: usize, frames: u64) -> Sample {
    let mut buf = buffer(len);
    Sample::time(|| {
        let mut acc = 0u8;
        for i in 0..frames {
            cipher_at(i * len as u64).apply_keystream(&mut buf);
            acc ^= mac(i, 0, &buf)[0];
        }
        black_box(acc);
        frames * len as u64
    })
}

/// X25519 key generations (secret from bytes + public key), per second.
pub fn x25519_keygen(n: u64) -> Sample {
    let mut seed = [7u8; 32];
    Sample::time(|| {
        for i in 0..n {
            seed[..8].copy_from_slice(&i.to_le_bytes());
            let s = StaticSecret::from(black_box(seed));
            black_box(PublicKey::from(&s));
        }
        n
    })
}

/// X25519 Diffie-Hellman operations, per second.
pub fn x25519_dh(n: u64) -> Sample {
    let s = StaticSecret::from([9u8; 32]);
    let mut peer = PublicKey::from(&StaticSecret::from([5u8; 32])).to_bytes();
    Sample::time(|| {
        for _ in 0..n {
            let shared = s.diffie_hellman(&PublicKey::from(black_box(peer)));
            // chain the outputs so nothing can be hoisted
            peer[0] ^= shared.as_bytes()[0] & 1;
        }
        black_box(peer);
        n
    })
}

/// `n` times: `keygens` X25519 key generations and `dhs` DHs (the X25519
/// work of one handshake side or of both), per second.
pub fn x25519_work(n: u64, keygens: u32, dhs: u32) -> Sample {
    let mut seed = [7u8; 32];
    let s = StaticSecret::from([9u8; 32]);
    let mut peer = PublicKey::from(&StaticSecret::from([5u8; 32])).to_bytes();
    Sample::time(|| {
        for i in 0..n {
            for k in 0..keygens {
                seed[..8].copy_from_slice(&(i << 8 | k as u64).to_le_bytes());
                let s = StaticSecret::from(black_box(seed));
                black_box(PublicKey::from(&s));
            }
            for _ in 0..dhs {
                let shared = s.diffie_hellman(&PublicKey::from(black_box(peer)));
                peer[0] ^= shared.as_bytes()[0] & 1;
            }
        }
        black_box(peer);
        n
    })
}

/// BLAKE3 keyed MAC as one call over a contiguous copy of prefix and body
/// (`blake3::keyed_hash`), for small frames.
pub fn blake3_oneshot(len: usize, frames: u64) -> Sample {
    let buf = buffer(len);
    let mut joined = vec![0u8; 33 + len];
    Sample::time(|| {
        let mut acc = 0u8;
        for i in 0..frames {
            joined[13..21].copy_from_slice(&i.to_le_bytes());
            joined[33..].copy_from_slice(black_box(&buf));
            acc ^= blake3::keyed_hash(&MAC_KEY, &joined).as_bytes()[0];
        }
        black_box(acc);
        frames * len as u64
    })
}

/// ChaCha20 for `len`-byte frames taken from a keystream generated
/// `batch` bytes at a time (one cipher set-up per batch), as a core could
/// do since the keystream is addressed by stream offset.
pub fn chacha_batched(len: usize, batch: usize, frames: u64) -> Sample {
    let mut buf = buffer(len);
    let mut ks = vec![0u8; batch];
    Sample::time(|| {
        let mut used = batch;
        let mut offset = 0u64;
        for _ in 0..frames {
            if used + len > batch {
                ks.fill(0);
                cipher_at(offset).apply_keystream(&mut ks);
                used = 0;
            }
            for (b, k) in buf.iter_mut().zip(&ks[used..used + len]) {
                *b ^= k;
            }
            used += len;
            offset += len as u64;
        }
        black_box(&buf);
        frames * len as u64
    })
}
