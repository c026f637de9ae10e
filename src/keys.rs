//! Key schedule and the per-direction record protection.
//!
//! Owns every secret of a session: derivation of all keys from the X25519
//! secrets and the handshake transcript (BLAKE3 `derive_key`, one context
//! string per key), the ChaCha20 keystream addressed by stream offset, and
//! the BLAKE3 keyed MAC over frames. Secrets are zeroized on drop and never
//! appear in `Debug` output. Every X25519 operation of the crate goes
//! through [`x25519_public`] and [`x25519`] here, and every tag comparison
//! through [`tags_equal`].
//!
//! # Fuzzing build (`cfg(fuzzing)`)
//!
//! `cargo fuzz` compiles with `--cfg fuzzing`; only then (never in a normal
//! build: the cfg is not a feature and nothing else sets it) three
//! shortcuts let the fuzzer past the cryptography, as rustls's fuzzing
//! crypto provider does (the module `fuzzing`, re-exported as
//! `relink::fuzzing` in that build only):
//! - **zero tags pass**: [`tags_equal`] also accepts an all-zero tag (frame
//!   MACs, confirms, resume MACs, reset tokens, token MACs, admission
//!   cookies) while `fuzzing::set_zero_tags_accepted` is on (the default).
//!   A genuine tag still verifies and a corrupted genuine tag still fails,
//!   so targets that check "nothing unauthenticated is delivered" turn the
//!   bypass off;
//! - **identity stream cipher**: frame bodies are sent in plaintext, so the
//!   fuzzer writes frame contents directly;
//! - **cheap Diffie-Hellman**: the public key is the clamped secret and
//!   `dh(a, B) = clamp(a) XOR B` (commutative, so genuine handshakes and
//!   rekeys still agree); an all-zero peer key gives the all-zero,
//!   non-contributory result that X25519 gives for low-order points, so the
//!   weak-key refusals stay reachable. The state-machine targets run
//!   thousands of executions per second instead of hundreds.
//!
//! `tests/fuzzing_build.rs` checks that the normal build has none of them.

use alloc::boxed::Box;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::ChaCha20;
use core::fmt;
use rand_core::CryptoRng;
#[cfg(not(fuzzing))]
use x25519_dalek::PublicKey;
use x25519_dalek::StaticSecret;
use zeroize::Zeroize;

use crate::wire::{FRAME_HEADER_LEN, TAG_LEN};

/// BLAKE3 `derive_key` context strings, one per derived value.
pub mod context {
    /// Handshake secret from the DH outputs and transcript hash 1.
    pub const HANDSHAKE: &str = "relink v1 2026-11 handshake secret";
    /// Mask that encrypts the connection id (bytes 0..8) and the reset
    /// token (bytes 8..24) in the ServerHello.
    pub const CONN_ID_MASK: &str = "relink v1 2026-11 connection id mask";
    /// The server's reset secret, from its static secret key: the key of
    /// the reset tokens that authenticate "unknown session" answers.
    pub const RESET_SECRET: &str = "relink v1 2026-11 reset secret";
    /// Server key-confirmation MAC key.
    pub const SERVER_CONFIRM: &str = "relink v1 2026-11 server confirm";
    /// Client key-confirmation MAC key.
    pub const CLIENT_CONFIRM: &str = "relink v1 2026-11 client confirm";
    /// Session master secret from the handshake secret and transcript hash 3.
    pub const MASTER: &str = "relink v1 2026-11 session master";
    /// Client-to-server ChaCha20 key.
    pub const C2S_ENC: &str = "relink v1 2026-11 c2s encryption";
    /// Client-to-server MAC key.
    pub const C2S_MAC: &str = "relink v1 2026-11 c2s mac";
    /// Server-to-client ChaCha20 key.
    pub const S2C_ENC: &str = "relink v1 2026-11 s2c encryption";
    /// Server-to-client MAC key.
    pub const S2C_MAC: &str = "relink v1 2026-11 s2c mac";
    /// Resume MAC key.
    pub const RESUME: &str = "relink v1 2026-11 resume";
    /// The chain secret of the next epoch, from the current one and a
    /// rekey exchange (PROTOCOL.md 4.7).
    #[allow(dead_code)] // the rekey exchange lands next
    pub const REKEY: &str = "relink v2 2026-12 rekey chain";
    /// A server connection's random generator: the output of one draw.
    pub const CONN_RNG_OUTPUT: &str = "relink v2 2026-12 connection rng output";
    /// A server connection's random generator: the next state (after a
    /// draw, or mixed with added entropy).
    pub const CONN_RNG_STATE: &str = "relink v2 2026-12 connection rng state";

    // Client credentials and tokens (version 2, PROTOCOL.md 6.9, 4.8).
    /// Key of the CREDENTIAL frame's encryption, from the session master.
    pub const CREDENTIAL: &str = "relink v2 2026-12 credential";
    /// Key of the ACCEPT frame's token encryption, from the session master.
    pub const GRANT: &str = "relink v2 2026-12 token grant";
    /// The server's token key, from its static secret key.
    pub const TOKEN_KEY: &str = "relink v2 2026-12 token key";
    /// A token's encryption key, from the token key and its nonce.
    pub const TOKEN_ENC: &str = "relink v2 2026-12 token encryption";
    /// A token's MAC key, from the token key and its nonce.
    pub const TOKEN_MAC: &str = "relink v2 2026-12 token mac";

    // Admission control (version 2, PROTOCOL.md 3.7).
    /// The cookie key of one period, from the endpoint's cookie base.
    pub const COOKIE_KEY: &str = "relink v2 2026-12 cookie key";
}

/// Direction byte mixed into every frame MAC.
pub(crate) const DIR_C2S: u8 = 0x01;
/// Direction byte mixed into every frame MAC.
pub(crate) const DIR_S2C: u8 = 0x02;

/// log2 of the bytes one ChaCha20 nonce covers here (the IETF 32-bit block
/// counter would allow 2^38; 2^32 stays clear of the counter's end).
const SEGMENT_BITS: u32 = 32;

/// A server's long-term X25519 key pair, for clients that pin its public key.
#[derive(Clone)]
pub struct StaticKeypair {
    secret: StaticSecret,
    public: [u8; 32],
}

impl StaticKeypair {
    /// Generate a key pair from the caller's CSPRNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let kp = Self::from_secret_bytes(bytes);
        bytes.zeroize();
        kp
    }
    /// Rebuild a key pair from its 32 secret bytes.
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = x25519_public(&secret);
        StaticKeypair { secret, public }
    }
    /// The public key clients pin.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }
    /// The secret bytes, for storing in a key file.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }
    /// The reset secret derived from this key pair (PROTOCOL.md 3.6): the
    /// same after a restart, so a restarted server can still prove that it
    /// no longer holds a session.
    pub(crate) fn reset_secret(&self) -> Secret {
        let mut bytes = self.secret.to_bytes();
        let s = Secret::derive(context::RESET_SECRET, &[&bytes]);
        bytes.zeroize();
        s
    }
    /// X25519 with this key; all-zero when non-contributory.
    pub(crate) fn diffie_hellman(&self, peer: &[u8; 32]) -> [u8; 32] {
        x25519(&self.secret, peer).unwrap_or([0u8; 32])
    }
}

impl fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// A 32-byte secret that is zeroized when dropped and redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) [u8; 32]);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    pub(crate) fn derive(context: &str, material: &[&[u8]]) -> Secret {
        let mut h = blake3::Hasher::new_derive_key(context);
        for m in material {
            h.update(m);
        }
        Secret(*h.finalize().as_bytes())
    }
    /// The reset token of connection `conn_id` under this reset secret:
    /// `MAC16(reset_secret, LE64(conn_id))`.
    pub(crate) fn reset_token(&self, conn_id: u64) -> [u8; TAG_LEN] {
        self.mac(&[&conn_id.to_le_bytes()])
    }
    /// Truncated keyed BLAKE3 over the concatenation of `parts`.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        for p in parts {
            h.update(p);
        }
        truncate(&h.finalize())
    }
}

pub(crate) fn truncate(h: &blake3::Hash) -> [u8; TAG_LEN] {
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(&h.as_bytes()[..TAG_LEN]);
    t
}

/// Constant-time tag comparison. (Fuzzing build: an all-zero `a` or `b`
/// also passes while `fuzzing::set_zero_tags_accepted` is on; see the
/// module docs.)
pub(crate) fn tags_equal(a: &[u8; TAG_LEN], b: &[u8; TAG_LEN]) -> bool {
    #[cfg(fuzzing)]
    if fuzzing::zero_tags_accepted() && (*a == [0u8; TAG_LEN] || *b == [0u8; TAG_LEN]) {
        return true;
    }
    constant_time_eq::constant_time_eq_16(a, b)
}

/// The X25519 public key of `secret`. (Fuzzing build: the clamped secret
/// bytes; see the module docs.)
pub(crate) fn x25519_public(secret: &StaticSecret) -> [u8; 32] {
    #[cfg(fuzzing)]
    return fuzzing::clamp(secret.to_bytes());
    #[cfg(not(fuzzing))]
    PublicKey::from(secret).to_bytes()
}

/// X25519 of `secret` and the peer's public key, or `None` when the result
/// is all-zero (non-contributory: a low-order peer key). (Fuzzing build:
/// `clamp(secret) XOR peer`, `None` for an all-zero peer key; see the
/// module docs.)
pub(crate) fn x25519(secret: &StaticSecret, peer: &[u8; 32]) -> Option<[u8; 32]> {
    #[cfg(fuzzing)]
    return fuzzing::dh(secret.to_bytes(), peer);
    #[cfg(not(fuzzing))]
    {
        let shared = secret.diffie_hellman(&PublicKey::from(*peer));
        shared.was_contributory().then(|| shared.to_bytes())
    }
}

/// The shortcuts of the fuzzing build (`--cfg fuzzing`, set by
/// `cargo fuzz`; absent from every normal build). See the module docs of
/// `keys` for what they replace. The crate re-exports this module as
/// `relink::fuzzing` in that build only.
#[cfg(fuzzing)]
pub mod fuzzing {
    use core::sync::atomic::{AtomicBool, Ordering};

    static ZERO_TAGS: AtomicBool = AtomicBool::new(true);

    /// Whether an all-zero tag passes every tag check (on by default in the
    /// fuzzing build). Targets that check that nothing unauthenticated is
    /// delivered turn it off; a genuine tag passes either way.
    pub fn set_zero_tags_accepted(on: bool) {
        ZERO_TAGS.store(on, Ordering::Relaxed);
    }

    /// See [`set_zero_tags_accepted`].
    pub fn zero_tags_accepted() -> bool {
        ZERO_TAGS.load(Ordering::Relaxed)
    }

    /// X25519's clamping of a secret scalar (the stand-in public key).
    pub(crate) fn clamp(mut k: [u8; 32]) -> [u8; 32] {
        k[0] &= 248;
        k[31] &= 127;
        k[31] |= 64;
        k
    }

    /// The stand-in DH: `clamp(secret) XOR peer`; `None` for an all-zero
    /// peer key (as X25519 for a low-order point) or an all-zero result.
    pub(crate) fn dh(secret: [u8; 32], peer: &[u8; 32]) -> Option<[u8; 32]> {
        if *peer == [0u8; 32] {
            return None;
        }
        let mut out = clamp(secret);
        out.iter_mut().zip(peer).for_each(|(o, p)| *o ^= p);
        (out != [0u8; 32]).then_some(out)
    }
}

/// Encryption and MAC keys of one direction.
#[derive(Debug)]
pub(crate) struct DirectionKeys {
    enc: Secret,
    mac: Secret,
    dir: u8,
    /// The epoch these keys belong to: in every frame MAC input.
    epoch: u32,
    /// Keystream generated ahead for small frames (allocated on the first
    /// small frame, freed by [`DirectionKeys::drop_cache`] when idle).
    cache: Option<Box<KeystreamCache>>,
}

/// Bytes of keystream generated at once for small frames.
const CACHE_LEN: usize = 1024;
/// Frames up to this size take their keystream from the cache: setting up
/// ChaCha20 costs as much as generating a few hundred bytes.
const SMALL_FRAME: usize = 256;

/// Keystream bytes `[start, start + CACHE_LEN)` of a direction. Secret:
/// zeroized on drop, redacted in `Debug`.
struct KeystreamCache {
    start: u64,
    bytes: [u8; CACHE_LEN],
}

impl Drop for KeystreamCache {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for KeystreamCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeystreamCache(<redacted>)")
    }
}

/// XOR the keystream at stream offset `offset` into `buf`.
#[cfg_attr(fuzzing, allow(dead_code))]
fn xor_keystream(enc: &Secret, offset: u64, buf: &mut [u8]) {
    let mut done = 0usize;
    while done < buf.len() {
        let off = offset.wrapping_add(done as u64);
        let (mut cipher, room) = cipher_at(enc, off);
        let n = core::cmp::min(room, (buf.len() - done) as u64) as usize;
        cipher.apply_keystream(&mut buf[done..done + n]);
        done += n;
    }
}

/// A cipher positioned at `offset` and how many bytes remain in its segment.
#[cfg_attr(fuzzing, allow(dead_code))]
fn cipher_at(enc: &Secret, offset: u64) -> (ChaCha20, u64) {
    let segment = offset >> SEGMENT_BITS;
    let pos = offset & ((1u64 << SEGMENT_BITS) - 1);
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&segment.to_le_bytes());
    let mut cipher = ChaCha20::new((&enc.0).into(), (&nonce).into());
    cipher.seek(pos);
    (cipher, (1u64 << SEGMENT_BITS) - pos)
}

/// Fixed part of the frame MAC input: direction, key epoch, transport
/// generation, frame sequence number, stream offset, frame header.
pub(crate) struct FrameAad {
    pub(crate) generation: u64,
    pub(crate) sequence: u64,
    pub(crate) offset: u64,
    pub(crate) header: [u8; FRAME_HEADER_LEN],
}

impl DirectionKeys {
    /// The epoch of these keys.
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The direction byte of these keys.
    pub(crate) fn dir(&self) -> u8 {
        self.dir
    }

    /// A public name of the encryption key for the keystream log of the
    /// tests: `BLAKE3(enc)[0..8]` (reveals nothing of the key).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn key_id(&self) -> [u8; 8] {
        let h = blake3::hash(&self.enc.0);
        let mut id = [0u8; 8];
        id.copy_from_slice(&h.as_bytes()[..8]);
        id
    }

    /// ChaCha20 keystream at stream offset `offset` XORed into `buf`.
    ///
    /// Byte `o` of a direction's stream is always encrypted with keystream
    /// byte `o mod 2^32` of nonce `o >> 32`, so a keystream byte is only
    /// ever reused for the very same plaintext byte (a resend).
    pub(crate) fn apply_keystream(&mut self, offset: u64, buf: &mut [u8]) {
        #[cfg(fuzzing)]
        let _ = (offset, buf); // identity cipher (module docs)
        #[cfg(not(fuzzing))]
        match self.cached_keystream(offset, buf.len()) {
            Some(ks) => buf.iter_mut().zip(ks).for_each(|(b, k)| *b ^= k),
            None => xor_keystream(&self.enc, offset, buf),
        };
    }

    /// Like [`Self::apply_keystream`] but reads `input` and writes `output`
    /// (same length) in one pass.
    pub(crate) fn apply_keystream_b2b(&mut self, offset: u64, input: &[u8], output: &mut [u8]) {
        debug_assert_eq!(input.len(), output.len());
        let len = input.len().min(output.len());
        #[cfg(fuzzing)]
        {
            // identity cipher (module docs)
            let _ = offset;
            output[..len].copy_from_slice(&input[..len]);
        }
        #[cfg(not(fuzzing))]
        self.keystream_b2b(offset, input, output, len);
    }

    #[cfg(not(fuzzing))]
    fn keystream_b2b(&mut self, offset: u64, input: &[u8], output: &mut [u8], len: usize) {
        if let Some(ks) = self.cached_keystream(offset, len) {
            for ((o, i), k) in output.iter_mut().zip(input).zip(ks) {
                *o = i ^ k;
            }
            return;
        }
        let mut done = 0usize;
        while done < len {
            let off = offset.wrapping_add(done as u64);
            let (mut cipher, room) = cipher_at(&self.enc, off);
            let n = core::cmp::min(room, (len - done) as u64) as usize;
            cipher.apply_keystream_b2b(&input[done..done + n], &mut output[done..done + n]);
            done += n;
        }
    }

    /// Keystream bytes `[offset, offset + len)` from the cache, refilled
    /// from `offset` when they are not in it; `None` for large frames.
    #[cfg_attr(fuzzing, allow(dead_code))]
    fn cached_keystream(&mut self, offset: u64, len: usize) -> Option<&[u8]> {
        if len > SMALL_FRAME {
            return None;
        }
        let end = offset.checked_add(len as u64)?;
        let hit = self
            .cache
            .as_ref()
            .is_some_and(|c| offset >= c.start && end <= c.start.saturating_add(CACHE_LEN as u64));
        let cache = self.cache.get_or_insert_with(|| {
            Box::new(KeystreamCache {
                start: 0,
                bytes: [0; CACHE_LEN],
            })
        });
        if !hit {
            cache.bytes = [0; CACHE_LEN];
            cache.start = offset;
            xor_keystream(&self.enc, offset, &mut cache.bytes);
        }
        let from = (offset - cache.start) as usize;
        Some(&cache.bytes[from..from + len])
    }

    /// Free (and zeroize) the keystream cache.
    pub(crate) fn drop_cache(&mut self) {
        self.cache = None;
    }

    /// The frame tag over `body` (ciphertext) followed by the fixed fields.
    /// The body comes first so that BLAKE3 hashes it in whole chunks (its
    /// SIMD path); the 33 fixed bytes end the input.
    pub(crate) fn frame_tag(&self, aad: &FrameAad, body: &[u8]) -> [u8; TAG_LEN] {
        let mut fixed = [0u8; 1 + 4 + 8 + 8 + 8 + FRAME_HEADER_LEN];
        fixed[0] = self.dir;
        fixed[1..5].copy_from_slice(&self.epoch.to_le_bytes());
        fixed[5..13].copy_from_slice(&aad.generation.to_le_bytes());
        fixed[13..21].copy_from_slice(&aad.sequence.to_le_bytes());
        fixed[21..29].copy_from_slice(&aad.offset.to_le_bytes());
        fixed[29..33].copy_from_slice(&aad.header);
        let mut h = blake3::Hasher::new_keyed(&self.mac.0);
        h.update(body);
        h.update(&fixed);
        truncate(&h.finalize())
    }
}

/// All keys of one epoch of a session.
#[derive(Debug)]
pub(crate) struct SessionKeys {
    pub(crate) c2s: DirectionKeys,
    pub(crate) s2c: DirectionKeys,
    pub(crate) resume: Secret,
}

/// The chain secret of one epoch (PROTOCOL.md 4.7): `chain_0` is the
/// handshake's `master`, and every key of epoch `e` is derived from
/// `chain_e` exactly as v1 derives its keys from `master`. A rekey
/// exchange ratchets it forward; the old value is zeroized on the way.
pub(crate) struct Chain {
    secret: Secret,
    epoch: u32,
    /// The session's handshake was pinned: every rekey mixes `es` (kept
    /// here, in the padding after `epoch`).
    pub(crate) pinned: bool,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Chain {
    /// `chain_0 = master`.
    pub(crate) fn from_master(master: Secret) -> Self {
        Chain {
            secret: master,
            epoch: 0,
            pinned: false,
        }
    }

    /// The epoch this chain secret belongs to.
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The five keys of this epoch: v1's derivations with `chain_e` in
    /// place of `master`.
    pub(crate) fn epoch_keys(&self) -> SessionKeys {
        let d = |ctx| Secret::derive(ctx, &[&self.secret.0]);
        let dir = |enc, mac, dir| DirectionKeys {
            enc: d(enc),
            mac: d(mac),
            dir,
            epoch: self.epoch,
            cache: None,
        };
        SessionKeys {
            c2s: dir(context::C2S_ENC, context::C2S_MAC, DIR_C2S),
            s2c: dir(context::S2C_ENC, context::S2C_MAC, DIR_S2C),
            resume: d(context::RESUME),
        }
    }

    /// The chain secret of the next epoch,
    /// `derive_key(REKEY, chain_e || ee || es? || rth)`; `self` (and with
    /// it `chain_e`) is consumed and zeroized. `None` past epoch
    /// `u32::MAX` (never reached: a side does not initiate there).
    #[allow(dead_code)] // the rekey exchange lands next
    pub(crate) fn ratchet(
        self,
        ee: &[u8; 32],
        es: Option<&[u8; 32]>,
        rth: &[u8; 32],
    ) -> Option<Chain> {
        let epoch = self.epoch.checked_add(1)?;
        let es: &[u8] = es.map_or(&[], |e| &e[..]);
        let secret = Secret::derive(context::REKEY, &[&self.secret.0, ee, es, rth]);
        Some(Chain {
            secret,
            epoch,
            pinned: self.pinned,
        })
    }
}

/// The rekey transcript hash `BLAKE3(LE32(n) || c_pub || s_pub)` (full 32
/// bytes) of the exchange to epoch `n`.
#[allow(dead_code)] // the rekey exchange lands next
pub(crate) fn rekey_transcript(n: u32, c_pub: &[u8; 32], s_pub: &[u8; 32]) -> [u8; 32] {
    *blake3::Hasher::new()
        .update(&n.to_le_bytes())
        .update(c_pub)
        .update(s_pub)
        .finalize()
        .as_bytes()
}

// ----- ConnRng (PROTOCOL.md 4.7) -------------------------------------------

/// The random generator of one server [`crate::Connection`]: a
/// fast-key-erasure DRBG over BLAKE3 `derive_key`. Seeded with 32 bytes the
/// endpoint draws when it answers the hello; the drivers mix in OS entropy
/// with [`crate::Connection::add_entropy`].
///
/// ```text
/// draw:        out   = derive_key(CONN_RNG_OUTPUT, state)
///              state = derive_key(CONN_RNG_STATE,  state)
/// add_entropy: state = derive_key(CONN_RNG_STATE,  state || x)
/// ```
///
/// Every output is gone from the state once drawn (the state moves on
/// through a one-way function), so a later read of the state does not give
/// earlier outputs. Zeroized on drop, redacted in `Debug`.
pub(crate) struct ConnRng {
    state: Secret,
}

impl ConnRng {
    /// A generator seeded with `seed` (the caller zeroizes its copy).
    pub(crate) fn from_seed(seed: [u8; 32]) -> Self {
        ConnRng {
            state: Secret(seed),
        }
    }

    /// 32 fresh bytes (a rekey ephemeral secret; a token nonce takes the
    /// first 16).
    #[allow(dead_code)] // drawn by the rekey exchange (design issue 11, step 4)
    pub(crate) fn draw(&mut self) -> [u8; 32] {
        let out = Secret::derive(context::CONN_RNG_OUTPUT, &[&self.state.0]);
        self.state = Secret::derive(context::CONN_RNG_STATE, &[&self.state.0]);
        out.0
    }

    /// Mix 32 bytes of outside entropy into the state.
    pub(crate) fn add_entropy(&mut self, entropy: &[u8; 32]) {
        self.state = Secret::derive(context::CONN_RNG_STATE, &[&self.state.0, entropy]);
    }
}

impl fmt::Debug for ConnRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConnRng(<redacted>)")
    }
}

// ----- end ConnRng ----------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_rng_follows_its_spec_and_erases_outputs() {
        let seed = [4u8; 32];
        let mut r = ConnRng::from_seed(seed);
        let first = r.draw();
        let want = blake3::derive_key(context::CONN_RNG_OUTPUT, &seed);
        assert_eq!(first, want);
        let state1 = blake3::derive_key(context::CONN_RNG_STATE, &seed);
        assert_eq!(
            r.draw(),
            blake3::derive_key(context::CONN_RNG_OUTPUT, &state1)
        );
        assert_ne!(first, r.draw());
        // Added entropy changes every later output.
        let mut a = ConnRng::from_seed(seed);
        let mut b = ConnRng::from_seed(seed);
        b.add_entropy(&[1u8; 32]);
        assert_ne!(a.draw(), b.draw());
        assert!(alloc::format!("{a:?}").contains("redacted"));
    }

    fn keys() -> SessionKeys {
        Chain::from_master(Secret([7u8; 32])).epoch_keys()
    }

    #[test]
    fn directions_have_different_keystreams() {
        let mut k = keys();
        let mut a = [0u8; 256];
        let mut b = [0u8; 256];
        k.c2s.apply_keystream(0, &mut a);
        k.s2c.apply_keystream(0, &mut b);
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 256]);
    }

    #[test]
    fn keystream_is_addressed_by_offset() {
        let mut k = keys();
        let mut whole = [0u8; 300];
        k.c2s.apply_keystream(1000, &mut whole);
        let mut part = [0u8; 100];
        k.c2s.apply_keystream(1150, &mut part);
        assert_eq!(&whole[150..250], &part[..]);
    }

    #[test]
    fn keystream_crosses_segment_boundary_consistently() {
        let mut k = keys();
        let base = (1u64 << SEGMENT_BITS) - 10;
        let mut whole = [0u8; 40];
        k.s2c.apply_keystream(base, &mut whole);
        let mut tail = [0u8; 30];
        k.s2c.apply_keystream(base + 10, &mut tail);
        assert_eq!(&whole[10..], &tail[..]);
        // the next segment uses a new nonce, not the start of segment 0
        let mut seg0 = [0u8; 30];
        k.s2c.apply_keystream(0, &mut seg0);
        assert_ne!(tail, seg0);
        let mut out = [0u8; 40];
        k.s2c.apply_keystream_b2b(base, &[0u8; 40], &mut out);
        assert_eq!(out, whole);
    }

    proptest::proptest! {
        /// Small frames take their keystream from the cache: whatever the
        /// order of offsets (sequential, resends going back, jumps across
        /// a nonce segment), the bytes equal the directly computed ones.
        #[test]
        fn cached_keystream_equals_direct(
            ops in proptest::collection::vec((0u64..4000, 1usize..=300, proptest::bool::ANY), 1..40),
            near_segment in proptest::bool::ANY,
        ) {
            let mut k = keys();
            let base = if near_segment { (1u64 << SEGMENT_BITS) - 2000 } else { 0 };
            for (off, len, b2b) in ops {
                let offset = base + off;
                let mut direct = alloc::vec![0u8; len];
                xor_keystream(&k.c2s.enc, offset, &mut direct);
                let mut got = alloc::vec![0u8; len];
                if b2b {
                    k.c2s.apply_keystream_b2b(offset, &alloc::vec![0u8; len], &mut got);
                } else {
                    k.c2s.apply_keystream(offset, &mut got);
                }
                proptest::prop_assert_eq!(got, direct);
            }
        }
    }

    #[test]
    fn frame_tag_covers_every_field() {
        let k = keys();
        let aad = |g, s, o, h| FrameAad {
            generation: g,
            sequence: s,
            offset: o,
            header: h,
        };
        let base = k.c2s.frame_tag(&aad(1, 2, 3, [1, 0, 5, 0]), b"hello");
        assert_ne!(base, k.c2s.frame_tag(&aad(2, 2, 3, [1, 0, 5, 0]), b"hello"));
        assert_ne!(base, k.c2s.frame_tag(&aad(1, 3, 3, [1, 0, 5, 0]), b"hello"));
        assert_ne!(base, k.c2s.frame_tag(&aad(1, 2, 4, [1, 0, 5, 0]), b"hello"));
        assert_ne!(base, k.c2s.frame_tag(&aad(1, 2, 3, [2, 0, 5, 0]), b"hello"));
        assert_ne!(base, k.c2s.frame_tag(&aad(1, 2, 3, [1, 0, 5, 0]), b"hellp"));
        assert_ne!(base, k.s2c.frame_tag(&aad(1, 2, 3, [1, 0, 5, 0]), b"hello"));
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let k = keys();
        let s = alloc::format!("{k:?}");
        assert!(s.contains("redacted"));
        let first = alloc::format!("{}", k.c2s.enc.0[0]);
        assert!(!s.contains(&alloc::format!("[{first}, ")));
        let kp = StaticKeypair::from_secret_bytes([9u8; 32]);
        let s = alloc::format!("{kp:?}");
        assert!(!s.contains("9, 9, 9"));
    }
}
