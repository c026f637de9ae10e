//! Client credentials (PROTOCOL.md 6.9): what a client presents to a server
//! that decides on every session (`Config::client_auth`), and how the
//! CREDENTIAL and ACCEPT frame payloads are encrypted.
//!
//! Owns [`Credential`] (the client's configuration), [`ClientCredential`]
//! (what the server application sees), the server's held copy until the
//! application decides, and the two session keys of the exchange:
//!
//! ```text
//! cred_key  = derive_key(CREDENTIAL, master)
//! grant_key = derive_key(GRANT, master)
//! CREDENTIAL payload = kind u8 || (credential XOR ChaCha20(cred_key, 12 zero bytes, counter 0))
//! ACCEPT payload     = time u64 || (token XOR ChaCha20(grant_key, 12 zero bytes, counter 0))
//! ```
//!
//! Every credential byte is zeroized when its holder is dropped, and no
//! `Debug` output shows one.

use alloc::vec::Vec;
use core::fmt;
use zeroize::Zeroize;

use crate::keys::{context, Secret};
use crate::time::UnixTime;
use crate::token::{xor_zero_nonce, VerifiedToken, MIN_TOKEN_LEN};

/// Longest credential (secret or token) a CREDENTIAL frame carries, in bytes.
pub(crate) const MAX_CREDENTIAL_BYTES: usize = 512;
/// Longest token an ACCEPT frame carries, in bytes.
pub(crate) const MAX_TOKEN_BYTES: usize = 512;

/// CREDENTIAL kind: the client has no credential.
pub(crate) const KIND_NONE: u8 = 0;
/// CREDENTIAL kind: an opaque secret (e.g. `user:password`).
pub(crate) const KIND_SECRET: u8 = 1;
/// CREDENTIAL kind: a token from an earlier ACCEPT.
pub(crate) const KIND_TOKEN: u8 = 2;

/// A client's credential (`Config::credential`), sent to servers that ask
/// for one (ServerHello flag `CLIENT_AUTH`). The bytes are zeroized on
/// drop and `Debug` prints only which kind is set.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Opaque application bytes (1..=512), e.g. `user:password`.
    Secret(Vec<u8>),
    /// A token an earlier session received ([`crate::Client::take_token`]),
    /// 51..=512 bytes.
    Token(Vec<u8>),
}

impl Credential {
    /// What the credential is, its length and the range it must fit, for
    /// error messages (never its bytes).
    pub fn describe(&self) -> alloc::string::String {
        match self {
            Credential::Secret(b) => alloc::format!(
                "the credential is {} bytes; a credential is 1 to {MAX_CREDENTIAL_BYTES} bytes",
                b.len()
            ),
            Credential::Token(b) => alloc::format!(
                "the token is {} bytes; a token is {MIN_TOKEN_LEN} to {MAX_CREDENTIAL_BYTES} bytes",
                b.len()
            ),
        }
    }

    /// The kind byte and the bytes sent.
    pub(crate) fn parts(&self) -> (u8, &[u8]) {
        match self {
            Credential::Secret(b) => (KIND_SECRET, b),
            Credential::Token(b) => (KIND_TOKEN, b),
        }
    }

    /// Whether the bytes fit the kind's length range: a secret is 1 to 512
    /// bytes, a token 51 to 512 (PROTOCOL.md 6.9). [`crate::Client::new`]
    /// closes a client whose credential does not fit (`Error::TooLong`),
    /// and the drivers' builders refuse it (`InvalidInput`).
    pub fn is_valid(&self) -> bool {
        match self {
            Credential::Secret(b) => (1..=MAX_CREDENTIAL_BYTES).contains(&b.len()),
            Credential::Token(b) => (MIN_TOKEN_LEN..=MAX_CREDENTIAL_BYTES).contains(&b.len()),
        }
    }
}

impl Drop for Credential {
    fn drop(&mut self) {
        match self {
            Credential::Secret(b) | Credential::Token(b) => b.zeroize(),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Secret(_) => f.write_str("Secret(<set>)"),
            Credential::Token(_) => f.write_str("Token(<set>)"),
        }
    }
}

/// The credential a client presented, as the server application sees it
/// (`Connection::client_credential`), borrowed until it decides.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ClientCredential<'a> {
    /// The client has none (kind 0).
    None,
    /// The client's secret bytes, exactly as configured on the client.
    Secret(&'a [u8]),
    /// A token this server (or one sharing its static key) issued, already
    /// verified and not expired.
    Token {
        /// The identity the token was granted for.
        identity: &'a [u8],
        /// When it was issued (server freshness clock).
        issued_at: UnixTime,
        /// When it expires (server freshness clock).
        expires_at: UnixTime,
    },
}

impl fmt::Debug for ClientCredential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientCredential::None => f.write_str("None"),
            ClientCredential::Secret(b) => write!(f, "Secret(<redacted, {} bytes>)", b.len()),
            ClientCredential::Token {
                identity,
                issued_at,
                expires_at,
            } => f
                .debug_struct("Token")
                .field("identity_len", &identity.len())
                .field("issued_at", issued_at)
                .field("expires_at", expires_at)
                .finish(),
        }
    }
}

/// The server's copy of a presented credential until the application
/// decides. Zeroized on drop, redacted in `Debug`.
pub(crate) enum CredentialHeld {
    None,
    Secret(Vec<u8>),
    Token(VerifiedToken),
}

impl CredentialHeld {
    pub(crate) fn view(&self) -> ClientCredential<'_> {
        match self {
            CredentialHeld::None => ClientCredential::None,
            CredentialHeld::Secret(b) => ClientCredential::Secret(b),
            CredentialHeld::Token(t) => ClientCredential::Token {
                identity: &t.identity,
                issued_at: t.issued_at,
                expires_at: t.expires_at,
            },
        }
    }
}

impl Drop for CredentialHeld {
    fn drop(&mut self) {
        if let CredentialHeld::Secret(b) = self {
            b.zeroize();
        }
    }
}

impl fmt::Debug for CredentialHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.view(), f)
    }
}

/// The two keys of the credential exchange, derived from the session
/// master secret. Zeroized on drop (through [`Secret`]).
#[derive(Debug)]
pub(crate) struct CredentialKeys {
    pub(crate) cred: Secret,
    pub(crate) grant: Secret,
}

impl CredentialKeys {
    pub(crate) fn from_master(master: &Secret) -> Self {
        CredentialKeys {
            cred: Secret::derive(context::CREDENTIAL, &[&master.0]),
            grant: Secret::derive(context::GRANT, &[&master.0]),
        }
    }
}

/// A decrypted CREDENTIAL payload: the kind and its bytes (zeroized on drop).
pub(crate) struct CredentialPayload {
    pub(crate) kind: u8,
    pub(crate) bytes: Vec<u8>,
}

impl fmt::Debug for CredentialPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialPayload(kind {}, <redacted>)", self.kind)
    }
}

impl Drop for CredentialPayload {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

/// The CREDENTIAL payload for `cred` (kind 0 when `None`).
pub(crate) fn encode_credential(cred: Option<&Credential>, key: &Secret) -> Vec<u8> {
    let (kind, bytes) = cred.map_or((KIND_NONE, &[][..]), Credential::parts);
    let mut out = Vec::with_capacity(1 + bytes.len());
    out.push(kind);
    out.extend_from_slice(bytes);
    xor_zero_nonce(key, &mut out[1..]);
    out
}

/// Decrypt and check a CREDENTIAL payload; `None` for an unknown kind or a
/// length outside the kind's range (a protocol violation).
pub(crate) fn decode_credential(payload: &[u8], key: &Secret) -> Option<CredentialPayload> {
    let (&kind, body) = payload.split_first()?;
    let ok = match kind {
        KIND_NONE => body.is_empty(),
        KIND_SECRET => (1..=MAX_CREDENTIAL_BYTES).contains(&body.len()),
        KIND_TOKEN => (MIN_TOKEN_LEN..=MAX_CREDENTIAL_BYTES).contains(&body.len()),
        _ => false,
    };
    if !ok {
        return None;
    }
    let mut bytes = body.to_vec();
    xor_zero_nonce(key, &mut bytes);
    Some(CredentialPayload { kind, bytes })
}

/// The ACCEPT payload: the server's time and the token (may be empty).
/// (The stream writes it from the encrypted token it keeps.)
#[cfg(test)]
pub(crate) fn encode_accept(time: UnixTime, token: &[u8], key: &Secret) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + token.len());
    out.extend_from_slice(&time.0.to_le_bytes());
    out.extend_from_slice(token);
    xor_zero_nonce(key, &mut out[8..]);
    out
}

/// Decrypt an ACCEPT payload: the server's time and the token (`None` when
/// empty). `None` overall when the payload is shorter than its time field
/// or the token longer than [`MAX_TOKEN_BYTES`].
pub(crate) fn decode_accept(payload: &[u8], key: &Secret) -> Option<(UnixTime, Option<Vec<u8>>)> {
    if payload.len() < 8 || payload.len() > 8 + MAX_TOKEN_BYTES {
        return None;
    }
    let mut t = [0u8; 8];
    t.copy_from_slice(&payload[..8]);
    let token = (payload.len() > 8).then(|| {
        let mut b = payload[8..].to_vec();
        xor_zero_nonce(key, &mut b);
        b
    });
    Some((UnixTime(u64::from_le_bytes(t)), token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec;

    fn keys() -> CredentialKeys {
        CredentialKeys::from_master(&Secret([3; 32]))
    }

    #[test]
    fn credential_payload_round_trips_and_hides_the_bytes() {
        let k = keys();
        let c = Credential::Secret(b"alice:correct horse".to_vec());
        let p = encode_credential(Some(&c), &k.cred);
        assert_eq!(p[0], KIND_SECRET);
        assert_eq!(p.len(), 1 + 19);
        assert!(!p.windows(5).any(|w| w == b"alice"));
        let d = decode_credential(&p, &k.cred).unwrap();
        assert_eq!(
            (d.kind, &d.bytes[..]),
            (KIND_SECRET, &b"alice:correct horse"[..])
        );
        // the grant key does not decrypt it
        assert_ne!(decode_credential(&p, &k.grant).unwrap().bytes, d.bytes);
        // same plaintext, same key: same ciphertext (resends are identical)
        assert_eq!(p, encode_credential(Some(&c), &k.cred));
    }

    #[test]
    fn credential_kinds_and_lengths_are_checked() {
        let k = keys();
        assert_eq!(encode_credential(None, &k.cred), vec![KIND_NONE]);
        assert_eq!(
            decode_credential(&[KIND_NONE], &k.cred).unwrap().kind,
            KIND_NONE
        );
        let bad: [&[u8]; 6] = [
            &[],
            &[KIND_NONE, 1],
            &[KIND_SECRET],
            &[KIND_TOKEN, 1, 2, 3],
            &[3, 1],
            &[0xFF],
        ];
        for p in bad {
            assert!(decode_credential(p, &k.cred).is_none(), "{p:?}");
        }
        let mut long = vec![KIND_SECRET];
        long.extend_from_slice(&[0; MAX_CREDENTIAL_BYTES]);
        assert!(decode_credential(&long, &k.cred).is_some());
        long.push(0);
        assert!(decode_credential(&long, &k.cred).is_none());
        let mut tok = vec![KIND_TOKEN];
        tok.extend_from_slice(&[0; MIN_TOKEN_LEN]);
        assert!(decode_credential(&tok, &k.cred).is_some());
        assert!(decode_credential(&tok[..tok.len() - 1], &k.cred).is_none());
    }

    #[test]
    fn accept_payload_round_trips() {
        let k = keys();
        let p = encode_accept(UnixTime(77), b"tok", &k.grant);
        assert_eq!(&p[..8], &77u64.to_le_bytes());
        assert_ne!(&p[8..], b"tok");
        let (t, tok) = decode_accept(&p, &k.grant).unwrap();
        assert_eq!(t, UnixTime(77));
        assert_eq!(tok.as_deref(), Some(&b"tok"[..]));
        let (_, none) = decode_accept(&77u64.to_le_bytes(), &k.grant).unwrap();
        assert!(none.is_none());
        assert!(decode_accept(&[0; 7], &k.grant).is_none());
        assert!(decode_accept(&[0; 8 + MAX_TOKEN_BYTES + 1], &k.grant).is_none());
    }

    #[test]
    fn debug_never_shows_credential_bytes() {
        let c = Credential::Secret(b"hunter2hunter2".to_vec());
        let t = Credential::Token(vec![0x68; 60]);
        for s in [format!("{c:?}"), format!("{t:?}")] {
            assert!(!s.contains("hunter2") && !s.contains("104"), "{s}");
        }
        let held = CredentialHeld::Secret(b"hunter2hunter2".to_vec());
        let s = format!("{held:?} {:?}", held.view());
        assert!(!s.contains("hunter2") && !s.contains("104"), "{s}");
        assert!(s.contains("redacted"), "{s}");
        assert!(format!("{:?}", keys()).contains("redacted"));
    }

    #[test]
    fn validity_of_configured_credentials() {
        assert!(Credential::Secret(vec![1]).is_valid());
        assert!(!Credential::Secret(vec![]).is_valid());
        assert!(!Credential::Secret(vec![1; MAX_CREDENTIAL_BYTES + 1]).is_valid());
        assert!(Credential::Token(vec![1; MIN_TOKEN_LEN]).is_valid());
        assert!(!Credential::Token(vec![1; MIN_TOKEN_LEN - 1]).is_valid());
    }
}
