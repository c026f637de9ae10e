//! The new-session handshake: ClientHello, ServerHello, ClientConfirm.
//!
//! Pure computations: every random value (ephemeral secrets, challenge,
//! connection id) and the server time are inputs, so the same inputs always
//! give the same bytes (the test vectors in `docs/PROTOCOL.md` rely on it).
//! The key schedule:
//!
//! ```text
//! th1    = BLAKE3(ClientHello || ServerHello[0..67])
//! prk    = derive_key(HANDSHAKE, ee || es? || th1)
//! mask   = derive_key(CONN_ID_MASK, prk)   [0..8] conn id, [8..24] reset token
//! th2    = BLAKE3(ClientHello || ServerHello[0..91])
//! sconf  = keyed(derive_key(SERVER_CONFIRM, prk), th2)[0..16]
//! th3    = BLAKE3(ClientHello || ServerHello)
//! cconf  = keyed(derive_key(CLIENT_CONFIRM, prk), th3)[0..16]
//! master = derive_key(MASTER, prk || th3)
//! ```

use x25519_dalek::StaticSecret;
use zeroize::Zeroize;

use crate::credential::CredentialKeys;
use crate::error::{Error, ProtocolError};
use crate::keys::{context, tags_equal, Chain, Secret, StaticKeypair};
use crate::wire::{
    ClientHello, ServerHello, CLIENT_HELLO_LEN, FLAG_PINNED, SERVER_HELLO_KEYED_PREFIX,
    SERVER_HELLO_LEN, SH_FLAG_CLIENT_AUTH, TAG_LEN, VERSION,
};

/// What both sides know once the handshake's keys are derived.
pub(crate) struct Established {
    pub(crate) conn_id: u64,
    /// `chain_0 = master`: every key of the session's first epoch.
    pub(crate) chain: Chain,
    pub(crate) server_time: u64,
    /// How long (µs) the server keeps the session without a transport.
    pub(crate) resume_timeout: u64,
    /// The session's reset token: an "unknown session" answer that carries
    /// it comes from the server (PROTOCOL.md 3.6).
    pub(crate) reset_token: [u8; TAG_LEN],
    /// The ServerHello's flags (authenticated by the server's confirm).
    #[allow(dead_code)] // the client reads `credential`, derived from it
    pub(crate) server_flags: u8,
    /// The keys of the credential exchange, when the ServerHello carries
    /// `CLIENT_AUTH` (PROTOCOL.md 6.9).
    pub(crate) credential: Option<CredentialKeys>,
}

/// Where the masked connection id sits in the ServerHello; the masked reset
/// token and then the confirm follow.
const CONN_ID_AT: usize = SERVER_HELLO_KEYED_PREFIX;
const TOKEN_AT: usize = CONN_ID_AT + 8;
const CONFIRM_AT: usize = TOKEN_AT + TAG_LEN;

/// X25519 with the all-zero (non-contributory) result rejected.
fn dh(secret: &StaticSecret, peer: &[u8; 32]) -> Result<[u8; 32], Error> {
    crate::keys::x25519(secret, peer).ok_or_else(|| ProtocolError::WeakKey.into())
}

fn non_zero(x: [u8; 32]) -> Result<[u8; 32], Error> {
    if x == [0u8; 32] {
        Err(ProtocolError::WeakKey.into())
    } else {
        Ok(x)
    }
}

struct Transcript {
    prk: Secret,
    th2: blake3::Hash,
    th3: blake3::Hash,
}

/// Derive the handshake secret and transcript hashes from the two messages
/// (the ServerHello's mask and confirm fields are filled in afterwards by the
/// server, so `sh` is passed whole and th2/th3 hashed from it as given).
fn prk(
    ch: &[u8; CLIENT_HELLO_LEN],
    sh_prefix: &[u8],
    ee: &[u8; 32],
    es: Option<&[u8; 32]>,
) -> Secret {
    let th1 = blake3::Hasher::new()
        .update(ch)
        .update(sh_prefix)
        .finalize();
    let mut ikm = [0u8; 96];
    ikm[..32].copy_from_slice(ee);
    let n = match es {
        Some(es) => {
            ikm[32..64].copy_from_slice(es);
            64
        }
        None => 32,
    };
    ikm[n..n + 32].copy_from_slice(th1.as_bytes());
    let s = Secret::derive(context::HANDSHAKE, &[&ikm[..n + 32]]);
    ikm.zeroize();
    s
}

fn transcript(ch: &[u8; CLIENT_HELLO_LEN], sh: &[u8; SERVER_HELLO_LEN], prk: Secret) -> Transcript {
    let th2 = blake3::Hasher::new()
        .update(ch)
        .update(&sh[..CONFIRM_AT])
        .finalize();
    let th3 = blake3::Hasher::new().update(ch).update(sh).finalize();
    Transcript { prk, th2, th3 }
}

/// XOR the connection id and the reset token with the mask derived from
/// `prk` (it encrypts on the server and decrypts on the client).
fn apply_mask(prk: &Secret, conn_id: &mut [u8; 8], token: &mut [u8; TAG_LEN]) {
    let m = Secret::derive(context::CONN_ID_MASK, &[&prk.0]);
    for (b, k) in conn_id.iter_mut().zip(&m.0[..8]) {
        *b ^= k;
    }
    for (b, k) in token.iter_mut().zip(&m.0[8..8 + TAG_LEN]) {
        *b ^= k;
    }
}

impl Transcript {
    fn server_confirm(&self) -> [u8; TAG_LEN] {
        Secret::derive(context::SERVER_CONFIRM, &[&self.prk.0]).mac(&[self.th2.as_bytes()])
    }
    fn client_confirm(&self) -> [u8; TAG_LEN] {
        Secret::derive(context::CLIENT_CONFIRM, &[&self.prk.0]).mac(&[self.th3.as_bytes()])
    }
    /// `cred_key` and `grant_key` from `master` (PROTOCOL.md 6.9).
    fn credential_keys(&self) -> CredentialKeys {
        let master = Secret::derive(context::MASTER, &[&self.prk.0, self.th3.as_bytes()]);
        CredentialKeys::from_master(&master)
    }
    fn chain(&self) -> Chain {
        let master = Secret::derive(context::MASTER, &[&self.prk.0, self.th3.as_bytes()]);
        Chain::from_master(master)
    }
}

/// Client side of a handshake in progress.
pub(crate) struct ClientHandshake {
    ephemeral: StaticSecret,
    hello: [u8; CLIENT_HELLO_LEN],
    pinned: Option<[u8; 32]>,
}

/// What the client sends after a valid ServerHello.
pub(crate) struct ClientFinish {
    pub(crate) established: Established,
    pub(crate) confirm: [u8; TAG_LEN],
}

impl ClientHandshake {
    /// Start from a fresh ephemeral secret; `time` is the client's reading
    /// of the server's freshness clock (µs), 0 when it has none.
    pub(crate) fn new(mut ephemeral_secret: [u8; 32], pinned: Option<[u8; 32]>, time: u64) -> Self {
        let ephemeral = StaticSecret::from(ephemeral_secret);
        ephemeral_secret.zeroize();
        let hello = ClientHello {
            version: VERSION,
            flags: if pinned.is_some() { FLAG_PINNED } else { 0 },
            ephemeral: crate::keys::x25519_public(&ephemeral),
            time,
        }
        .encode();
        ClientHandshake {
            ephemeral,
            hello,
            pinned,
        }
    }

    /// The ClientHello bytes.
    pub(crate) fn hello(&self) -> &[u8; CLIENT_HELLO_LEN] {
        &self.hello
    }

    /// Check an accepted ServerHello; on success the session keys and the
    /// ClientConfirm to send.
    pub(crate) fn finish(&self, sh_bytes: &[u8; SERVER_HELLO_LEN]) -> Result<ClientFinish, Error> {
        let sh = ServerHello::decode(sh_bytes)?;
        let ee = dh(&self.ephemeral, &sh.ephemeral)?;
        let es = match &self.pinned {
            Some(server_static) => Some(dh(&self.ephemeral, server_static)?),
            None => None,
        };
        let t = transcript(
            &self.hello,
            sh_bytes,
            prk(
                &self.hello,
                &sh_bytes[..SERVER_HELLO_KEYED_PREFIX],
                &ee,
                es.as_ref(),
            ),
        );
        if !tags_equal(&t.server_confirm(), &sh.confirm) {
            return Err(Error::AuthFailed);
        }
        let mut id = sh.encrypted_conn_id;
        let mut reset_token = sh.encrypted_reset_token;
        apply_mask(&t.prk, &mut id, &mut reset_token);
        Ok(ClientFinish {
            established: Established {
                conn_id: u64::from_le_bytes(id),
                chain: t.chain(),
                server_time: sh.server_time,
                resume_timeout: sh.resume_timeout,
                reset_token,
                server_flags: sh.flags,
                credential: (sh.flags & SH_FLAG_CLIENT_AUTH != 0).then(|| t.credential_keys()),
            },
            confirm: t.client_confirm(),
        })
    }
}

/// Random inputs of the server's answer.
pub(crate) struct ServerRandom {
    pub(crate) ephemeral_secret: [u8; 32],
    pub(crate) challenge: [u8; 16],
    pub(crate) conn_id: u64,
    /// The reset token of `conn_id` (all zero when the server has no reset
    /// secret, i.e. no static key).
    pub(crate) reset_token: [u8; TAG_LEN],
}

impl Drop for ServerRandom {
    fn drop(&mut self) {
        self.ephemeral_secret.zeroize();
    }
}

/// The server's answer to a ClientHello, waiting for ClientConfirm.
pub(crate) struct ServerHandshake {
    pub(crate) reply: [u8; SERVER_HELLO_LEN],
    pub(crate) expected_confirm: [u8; TAG_LEN],
    pub(crate) established: Established,
}

/// Answer a ClientHello (version already checked).
pub(crate) fn server_respond(
    ch_bytes: &[u8; CLIENT_HELLO_LEN],
    random: &ServerRandom,
    server_time: u64,
    resume_timeout: u64,
    server_static: Option<&StaticKeypair>,
    flags: u8,
) -> Result<ServerHandshake, Error> {
    let ch = ClientHello::decode(ch_bytes)?;
    let eph = StaticSecret::from(random.ephemeral_secret);
    let ee = dh(&eph, &ch.ephemeral)?;
    let es = if ch.flags & FLAG_PINNED != 0 {
        match server_static {
            Some(kp) => Some(non_zero(kp.diffie_hellman(&ch.ephemeral))?),
            None => {
                return Err(Error::HandshakeRejected(
                    crate::HandshakeStatus::NoStaticKey,
                ))
            }
        }
    } else {
        None
    };
    let mut sh = ServerHello {
        ephemeral: crate::keys::x25519_public(&eph),
        challenge: random.challenge,
        server_time,
        resume_timeout,
        flags,
        encrypted_conn_id: [0u8; 8],
        encrypted_reset_token: [0u8; TAG_LEN],
        confirm: [0u8; TAG_LEN],
    }
    .encode();
    let prk = prk(ch_bytes, &sh[..SERVER_HELLO_KEYED_PREFIX], &ee, es.as_ref());
    let mut id = random.conn_id.to_le_bytes();
    let mut token = random.reset_token;
    apply_mask(&prk, &mut id, &mut token);
    sh[CONN_ID_AT..TOKEN_AT].copy_from_slice(&id);
    sh[TOKEN_AT..CONFIRM_AT].copy_from_slice(&token);
    let th2 = blake3::Hasher::new()
        .update(ch_bytes)
        .update(&sh[..CONFIRM_AT])
        .finalize();
    let confirm = Secret::derive(context::SERVER_CONFIRM, &[&prk.0]).mac(&[th2.as_bytes()]);
    sh[CONFIRM_AT..].copy_from_slice(&confirm);
    let t = transcript(ch_bytes, &sh, prk);
    Ok(ServerHandshake {
        reply: sh,
        expected_confirm: t.client_confirm(),
        established: Established {
            conn_id: random.conn_id,
            chain: t.chain(),
            server_time,
            resume_timeout,
            reset_token: random.reset_token,
            server_flags: flags,
            credential: (flags & SH_FLAG_CLIENT_AUTH != 0).then(|| t.credential_keys()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random() -> ServerRandom {
        ServerRandom {
            ephemeral_secret: [2u8; 32],
            challenge: [3u8; 16],
            conn_id: 0x1122_3344_5566_7788,
            reset_token: [9u8; TAG_LEN],
        }
    }

    #[test]
    fn both_sides_derive_the_same_keys() {
        let c = ClientHandshake::new([1u8; 32], None, 0);
        let s = server_respond(c.hello(), &random(), 42, 7, None, 0).unwrap();
        let f = c.finish(&s.reply).unwrap();
        assert_eq!(f.established.conn_id, 0x1122_3344_5566_7788);
        assert_eq!(f.established.server_time, 42);
        assert_eq!(f.established.resume_timeout, 7);
        assert_eq!(f.established.reset_token, [9u8; TAG_LEN]);
        assert_eq!(f.confirm, s.expected_confirm);
        assert_eq!(
            f.established.chain.epoch_keys().resume,
            s.established.chain.epoch_keys().resume
        );
    }

    #[test]
    fn pinned_key_mismatch_fails_server_confirm() {
        let server_kp = StaticKeypair::from_secret_bytes([5u8; 32]);
        let other = StaticKeypair::from_secret_bytes([6u8; 32]);
        let c = ClientHandshake::new([1u8; 32], Some(other.public_key()), 0);
        let s = server_respond(c.hello(), &random(), 0, 0, Some(&server_kp), 0).unwrap();
        assert!(matches!(c.finish(&s.reply), Err(Error::AuthFailed)));
        let c = ClientHandshake::new([1u8; 32], Some(server_kp.public_key()), 0);
        let s = server_respond(c.hello(), &random(), 0, 0, Some(&server_kp), 0).unwrap();
        assert!(c.finish(&s.reply).is_ok());
    }

    #[test]
    fn low_order_peer_key_is_rejected() {
        let mut hello = ClientHandshake::new([1u8; 32], None, 0).hello;
        hello[3..35].copy_from_slice(&[0u8; 32]);
        assert!(matches!(
            server_respond(&hello, &random(), 0, 0, None, 0),
            Err(Error::Protocol(ProtocolError::WeakKey))
        ));
    }
}
