//! Session tokens (PROTOCOL.md 4.8): what a server hands an accepted client
//! in its ACCEPT frame, and what the client presents in later handshakes
//! instead of its credential.
//!
//! Owns the token format and its keys. A token is opaque to the client; it
//! is specified so that servers sharing one static key accept each other's
//! tokens:
//!
//! ```text
//! token_key = derive_key(TOKEN_KEY, server_static_secret)
//! enc_key   = derive_key(TOKEN_ENC, token_key || nonce)
//! mac_key   = derive_key(TOKEN_MAC, token_key || nonce)
//! plain     = issued_at u64 || expires_at u64 || identity_len u16 || identity
//! token     = 0x01 || nonce[16] || (plain XOR ChaCha20(enc_key, 12 zero bytes, counter 0))
//!                  || MAC16(mac_key, 0x01 || nonce || ciphertext)
//! ```
//!
//! Times are the server's freshness clock in microseconds since the Unix
//! epoch. The MAC is checked (in constant time) before anything is
//! decrypted; a token minted under another static key fails it.

use alloc::vec::Vec;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use core::fmt;
use zeroize::Zeroize;

use crate::keys::{context, tags_equal, Secret, StaticKeypair};
use crate::time::{Duration, UnixTime};
use crate::wire::TAG_LEN;

/// Version byte of the token format.
pub(crate) const TOKEN_VERSION: u8 = 0x01;
/// Bytes of the per-token nonce.
pub(crate) const TOKEN_NONCE_LEN: usize = 16;
/// Longest identity a token carries, in bytes.
pub const MAX_TOKEN_IDENTITY: usize = 256;
/// Fixed bytes of the plaintext: `issued_at`, `expires_at`, `identity_len`.
const PLAIN_FIXED: usize = 8 + 8 + 2;
/// Bytes of a token with an empty identity (the shortest valid token).
pub(crate) const MIN_TOKEN_LEN: usize = 1 + TOKEN_NONCE_LEN + PLAIN_FIXED + TAG_LEN;

/// What a server grants an accepted client: a token naming `identity`,
/// valid for `lifetime` from now (see `Connection::accept_client`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenGrant<'a> {
    /// The identity the token carries (at most [`MAX_TOKEN_IDENTITY`]
    /// bytes), e.g. the user name the credential proved.
    pub identity: &'a [u8],
    /// How long the token stays valid after it is issued.
    pub lifetime: Duration,
}

impl fmt::Debug for TokenGrant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGrant")
            .field("identity_len", &self.identity.len())
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// Why a presented token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// Not a token of this server's key: wrong length or version, a MAC
    /// that fails, an inconsistent identity length, or issued in the future.
    Invalid,
    /// The token verified but its expiry passed.
    Expired,
}

/// The contents of a token that verified.
pub(crate) struct VerifiedToken {
    pub(crate) identity: Vec<u8>,
    pub(crate) issued_at: UnixTime,
    pub(crate) expires_at: UnixTime,
}

impl Drop for VerifiedToken {
    fn drop(&mut self) {
        self.identity.zeroize();
    }
}

impl fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedToken")
            .field("identity", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A server's token key, derived once from its static secret.
#[derive(Clone)]
pub(crate) struct TokenKey(Secret);

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

/// Per-token encryption and MAC keys.
fn per_token_keys(key: &TokenKey, nonce: &[u8; TOKEN_NONCE_LEN]) -> (Secret, Secret) {
    (
        Secret::derive(context::TOKEN_ENC, &[&key.0 .0, nonce]),
        Secret::derive(context::TOKEN_MAC, &[&key.0 .0, nonce]),
    )
}

/// XOR `ChaCha20(key, 12 zero bytes, counter 0)` into `buf`.
pub(crate) fn xor_zero_nonce(key: &Secret, buf: &mut [u8]) {
    let mut cipher = ChaCha20::new((&key.0).into(), (&[0u8; 12]).into());
    cipher.apply_keystream(buf);
}

impl TokenKey {
    /// `derive_key(TOKEN_KEY, server_static_secret)`.
    pub(crate) fn from_static(kp: &StaticKeypair) -> Self {
        let mut bytes = kp.secret_bytes();
        let key = Secret::derive(context::TOKEN_KEY, &[&bytes]);
        bytes.zeroize();
        TokenKey(key)
    }

    /// Mint a token for `identity`, issued at `issued_at` and valid for
    /// `lifetime` (`expires_at` saturates). `None` if the identity is longer
    /// than [`MAX_TOKEN_IDENTITY`].
    pub(crate) fn mint(
        &self,
        nonce: &[u8; TOKEN_NONCE_LEN],
        identity: &[u8],
        issued_at: UnixTime,
        lifetime: Duration,
    ) -> Option<Vec<u8>> {
        if identity.len() > MAX_TOKEN_IDENTITY {
            return None;
        }
        let expires_at = issued_at.0.saturating_add(lifetime.0);
        let mut out = Vec::with_capacity(MIN_TOKEN_LEN + identity.len());
        out.push(TOKEN_VERSION);
        out.extend_from_slice(nonce);
        let body = out.len();
        out.extend_from_slice(&issued_at.0.to_le_bytes());
        out.extend_from_slice(&expires_at.to_le_bytes());
        out.extend_from_slice(&(identity.len() as u16).to_le_bytes());
        out.extend_from_slice(identity);
        let (enc, mac) = per_token_keys(self, nonce);
        xor_zero_nonce(&enc, &mut out[body..]);
        let tag = mac.mac(&[&out]);
        out.extend_from_slice(&tag);
        Some(out)
    }

    /// Verify `token` at `now`: MAC first (constant time), then decrypt and
    /// check the contents. `window` is the allowed clock difference for
    /// `issued_at` lying in the future.
    pub(crate) fn verify(
        &self,
        token: &[u8],
        now: UnixTime,
        window: Duration,
    ) -> Result<VerifiedToken, TokenError> {
        if token.len() < MIN_TOKEN_LEN || token[0] != TOKEN_VERSION {
            return Err(TokenError::Invalid);
        }
        let (authed, tag) = token.split_at(token.len() - TAG_LEN);
        let mut nonce = [0u8; TOKEN_NONCE_LEN];
        nonce.copy_from_slice(&authed[1..1 + TOKEN_NONCE_LEN]);
        let (enc, mac) = per_token_keys(self, &nonce);
        let mut want = [0u8; TAG_LEN];
        want.copy_from_slice(tag);
        if !tags_equal(&mac.mac(&[authed]), &want) {
            return Err(TokenError::Invalid);
        }
        let mut plain = authed[1 + TOKEN_NONCE_LEN..].to_vec();
        xor_zero_nonce(&enc, &mut plain);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&plain[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let issued_at = UnixTime(u64_at(0));
        let expires_at = UnixTime(u64_at(8));
        let id_len = usize::from(u16::from_le_bytes([plain[16], plain[17]]));
        let consistent = id_len <= MAX_TOKEN_IDENTITY && plain.len() == PLAIN_FIXED + id_len;
        let from_future = issued_at.0 > now.0.saturating_add(window.0);
        if !consistent || from_future {
            plain.zeroize();
            return Err(TokenError::Invalid);
        }
        let identity = plain[PLAIN_FIXED..].to_vec();
        plain.zeroize();
        let verified = VerifiedToken {
            identity,
            issued_at,
            expires_at,
        };
        if now > expires_at {
            return Err(TokenError::Expired);
        }
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const WINDOW: Duration = Duration::from_secs(60);
    const T0: UnixTime = UnixTime(1_800_000_000_000_000);

    fn key(seed: u8) -> TokenKey {
        TokenKey::from_static(&StaticKeypair::from_secret_bytes([seed; 32]))
    }

    fn token(identity: &[u8]) -> Vec<u8> {
        key(1).mint(&[5; 16], identity, T0, HOUR).unwrap()
    }

    #[test]
    fn round_trip_returns_identity_and_times() {
        let t = token(b"alice");
        assert_eq!(t.len(), MIN_TOKEN_LEN + 5);
        assert_eq!(t[0], TOKEN_VERSION);
        let v = key(1).verify(&t, UnixTime(T0.0 + 10), WINDOW).unwrap();
        assert_eq!(v.identity, b"alice");
        assert_eq!(v.issued_at, T0);
        assert_eq!(v.expires_at, UnixTime(T0.0 + HOUR.0));
        // the identity does not appear in clear
        assert!(!t.windows(5).any(|w| w == b"alice"));
    }

    #[test]
    fn empty_and_longest_identity() {
        let t = token(b"");
        assert_eq!(t.len(), MIN_TOKEN_LEN);
        assert!(key(1).verify(&t, T0, WINDOW).unwrap().identity.is_empty());
        let long = [b'x'; MAX_TOKEN_IDENTITY];
        let t = token(&long);
        assert_eq!(key(1).verify(&t, T0, WINDOW).unwrap().identity, long);
        assert!(key(1)
            .mint(&[0; 16], &[0; MAX_TOKEN_IDENTITY + 1], T0, HOUR)
            .is_none());
    }

    #[test]
    fn another_server_key_refuses_it() {
        let t = token(b"alice");
        assert_eq!(
            key(2).verify(&t, T0, WINDOW).unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn expired_after_lifetime_not_before() {
        let t = token(b"alice");
        let end = T0.0 + HOUR.0;
        assert!(key(1).verify(&t, UnixTime(end), WINDOW).is_ok());
        assert_eq!(
            key(1).verify(&t, UnixTime(end + 1), WINDOW).unwrap_err(),
            TokenError::Expired
        );
    }

    #[test]
    fn issued_in_the_future_is_invalid() {
        let t = token(b"alice");
        assert!(key(1).verify(&t, UnixTime(T0.0 - WINDOW.0), WINDOW).is_ok());
        assert_eq!(
            key(1)
                .verify(&t, UnixTime(T0.0 - WINDOW.0 - 1), WINDOW)
                .unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn lifetime_saturates() {
        let t = key(1).mint(&[1; 16], b"a", T0, Duration(u64::MAX)).unwrap();
        let v = key(1).verify(&t, UnixTime(u64::MAX), WINDOW).unwrap();
        assert_eq!(v.expires_at, UnixTime(u64::MAX));
    }

    #[test]
    fn short_or_wrong_version_is_invalid() {
        let t = token(b"");
        for n in 0..t.len() {
            assert_eq!(
                key(1).verify(&t[..n], T0, WINDOW).unwrap_err(),
                TokenError::Invalid
            );
        }
        let mut v2 = t.clone();
        v2[0] = 2;
        assert_eq!(
            key(1).verify(&v2, T0, WINDOW).unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn debug_hides_identity() {
        let v = key(1).verify(&token(b"alice"), T0, WINDOW).unwrap();
        assert!(!alloc::format!("{v:?}").contains("alice"));
        assert!(!alloc::format!("{v:?}").contains("97"));
        let g = TokenGrant {
            identity: b"alice",
            lifetime: HOUR,
        };
        assert!(!alloc::format!("{g:?}").contains("97"));
        assert!(alloc::format!("{:?}", key(1)).contains("redacted"));
    }

    proptest! {
        /// Any byte changed anywhere in the token makes it invalid
        /// (never accepted, never "expired").
        #[test]
        fn every_flipped_byte_is_invalid(
            identity in proptest::collection::vec(any::<u8>(), 0..40),
            pos in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let mut t = token(&identity);
            let i = pos.index(t.len());
            t[i] ^= flip;
            prop_assert_eq!(key(1).verify(&t, T0, WINDOW).unwrap_err(), TokenError::Invalid);
        }

        /// Appending or dropping bytes makes it invalid too.
        #[test]
        fn resized_is_invalid(extra in proptest::collection::vec(any::<u8>(), 1..8), cut in 1usize..8) {
            let t = token(b"bob");
            let mut longer = t.clone();
            longer.extend_from_slice(&extra);
            prop_assert_eq!(key(1).verify(&longer, T0, WINDOW).unwrap_err(), TokenError::Invalid);
            prop_assert_eq!(key(1).verify(&t[..t.len() - cut], T0, WINDOW).unwrap_err(), TokenError::Invalid);
        }
    }
}
