//! The new-session handshake: ClientHello, ServerHello, ClientConfirm.
//!
//! Pure computations: every random value (ephemeral secrets, challenge,
//! connection id) and the server time are inputs, so the same inputs always
//! give the same bytes (the test vectors in `docs/PROTOCOL.md` rely on it).
//! The key schedule:
//!
//! ```text
//! th1    = BLAKE3(ClientHello || ServerHello[0..66])
//! prk    = derive_key(HANDSHAKE, ee || es? || th1)
//! mask   = derive_key(CONN_ID_MASK, prk)[0..8]
//! th2    = BLAKE3(ClientHello || ServerHello[0..74])
//! sconf  = keyed(derive_key(SERVER_CONFIRM, prk), th2)[0..16]
//! th3    = BLAKE3(ClientHello || ServerHello)
//! cconf  = keyed(derive_key(CLIENT_CONFIRM, prk), th3)[0..16]
//! master = derive_key(MASTER, prk || th3)
//! ```

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

use crate::error::{Error, ProtocolError};
use crate::keys::{context, tags_equal, Secret, SessionKeys, StaticKeypair};
use crate::wire::{
    ClientHello, ServerHello, CLIENT_HELLO_LEN, FLAG_PINNED, SERVER_HELLO_KEYED_PREFIX,
    SERVER_HELLO_LEN, TAG_LEN, VERSION,
};

/// What both sides know once the handshake's keys are derived.
pub(crate) struct Established {
    pub(crate) conn_id: u64,
    pub(crate) keys: SessionKeys,
    pub(crate) server_time: u64,
    /// How long (µs) the server keeps the session without a transport.
    pub(crate) resume_timeout: u64,
}

/// Where the masked connection id sits in the ServerHello; the confirm follows.
const CONN_ID_AT: usize = SERVER_HELLO_KEYED_PREFIX;
const CONFIRM_AT: usize = CONN_ID_AT + 8;

/// X25519 with the all-zero (non-contributory) result rejected.
fn dh(secret: &StaticSecret, peer: &[u8; 32]) -> Result<[u8; 32], Error> {
    let shared = secret.diffie_hellman(&PublicKey::from(*peer));
    if !shared.was_contributory() {
        return Err(ProtocolError::WeakKey.into());
    }
    Ok(shared.to_bytes())
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

fn mask(prk: &Secret) -> [u8; 8] {
    let m = Secret::derive(context::CONN_ID_MASK, &[&prk.0]);
    let mut out = [0u8; 8];
    out.copy_from_slice(&m.0[..8]);
    out
}

impl Transcript {
    fn server_confirm(&self) -> [u8; TAG_LEN] {
        Secret::derive(context::SERVER_CONFIRM, &[&self.prk.0]).mac(&[self.th2.as_bytes()])
    }
    fn client_confirm(&self) -> [u8; TAG_LEN] {
        Secret::derive(context::CLIENT_CONFIRM, &[&self.prk.0]).mac(&[self.th3.as_bytes()])
    }
    fn session_keys(&self) -> SessionKeys {
        let master = Secret::derive(context::MASTER, &[&self.prk.0, self.th3.as_bytes()]);
        SessionKeys::from_master(&master)
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
    /// Start from a fresh ephemeral secret.
    pub(crate) fn new(mut ephemeral_secret: [u8; 32], pinned: Option<[u8; 32]>) -> Self {
        let ephemeral = StaticSecret::from(ephemeral_secret);
        ephemeral_secret.zeroize();
        let hello = ClientHello {
            version: VERSION,
            flags: if pinned.is_some() { FLAG_PINNED } else { 0 },
            ephemeral: PublicKey::from(&ephemeral).to_bytes(),
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
        let m = mask(&t.prk);
        let mut id = sh.encrypted_conn_id;
        for (b, k) in id.iter_mut().zip(m.iter()) {
            *b ^= k;
        }
        Ok(ClientFinish {
            established: Established {
                conn_id: u64::from_le_bytes(id),
                keys: t.session_keys(),
                server_time: sh.server_time,
                resume_timeout: sh.resume_timeout,
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
        ephemeral: PublicKey::from(&eph).to_bytes(),
        challenge: random.challenge,
        server_time,
        resume_timeout,
        encrypted_conn_id: [0u8; 8],
        confirm: [0u8; TAG_LEN],
    }
    .encode();
    let prk = prk(ch_bytes, &sh[..SERVER_HELLO_KEYED_PREFIX], &ee, es.as_ref());
    let m = mask(&prk);
    let mut id = random.conn_id.to_le_bytes();
    for (b, k) in id.iter_mut().zip(m.iter()) {
        *b ^= k;
    }
    sh[CONN_ID_AT..CONFIRM_AT].copy_from_slice(&id);
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
            keys: t.session_keys(),
            server_time,
            resume_timeout,
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
        }
    }

    #[test]
    fn both_sides_derive_the_same_keys() {
        let c = ClientHandshake::new([1u8; 32], None);
        let s = server_respond(c.hello(), &random(), 42, 7, None).unwrap();
        let f = c.finish(&s.reply).unwrap();
        assert_eq!(f.established.conn_id, 0x1122_3344_5566_7788);
        assert_eq!(f.established.server_time, 42);
        assert_eq!(f.established.resume_timeout, 7);
        assert_eq!(f.confirm, s.expected_confirm);
        assert_eq!(f.established.keys.resume, s.established.keys.resume);
    }

    #[test]
    fn pinned_key_mismatch_fails_server_confirm() {
        let server_kp = StaticKeypair::from_secret_bytes([5u8; 32]);
        let other = StaticKeypair::from_secret_bytes([6u8; 32]);
        let c = ClientHandshake::new([1u8; 32], Some(other.public_key()));
        let s = server_respond(c.hello(), &random(), 0, 0, Some(&server_kp)).unwrap();
        assert!(matches!(c.finish(&s.reply), Err(Error::AuthFailed)));
        let c = ClientHandshake::new([1u8; 32], Some(server_kp.public_key()));
        let s = server_respond(c.hello(), &random(), 0, 0, Some(&server_kp)).unwrap();
        assert!(c.finish(&s.reply).is_ok());
    }

    #[test]
    fn low_order_peer_key_is_rejected() {
        let mut hello = ClientHandshake::new([1u8; 32], None).hello;
        hello[3..35].copy_from_slice(&[0u8; 32]);
        assert!(matches!(
            server_respond(&hello, &random(), 0, 0, None),
            Err(Error::Protocol(ProtocolError::WeakKey))
        ));
    }
}
