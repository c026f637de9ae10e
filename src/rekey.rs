//! The epoch ring of one session (design issue 11, PROTOCOL.md 4.7).
//!
//! Owns every key of an established session by epoch: the newest chain
//! secret, the send keys of this side's direction and the receive keys of
//! the peer's, each with its epoch, the switch offset that separates two
//! send epochs while both are held, the resume keys by epoch, the state of
//! a rekey exchange in progress, and the retirement (zeroization) of keys
//! no frame can still need.
//!
//! Per frame the sender compares the frame's stream offset with one switch
//! offset and the receiver uses its current receive keys: no lookup, so a
//! session that is not rekeying pays nothing. Everything transitional (the
//! old send keys, the next receive keys, the exchange) is boxed and `None`
//! while idle, so an idle session holds one epoch: the chain, four traffic
//! keys and one resume key.

use crate::keys::{Chain, DirectionKeys, Secret, SessionKeys};

/// Which end of the session this ring belongs to: it picks the direction
/// of the send and receive keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The client: sends c2s, receives s2c.
    Client,
    /// The server: sends s2c, receives c2s.
    Server,
}

/// The keys of a session, by epoch. See the module docs.
#[derive(Debug)]
pub(crate) struct KeyRing {
    /// The newest derived chain secret.
    chain: Chain,
    /// Send keys of DATA at offsets `>= tx_switch` and of control frames
    /// once the link carried our switch marker.
    tx: DirectionKeys,
    /// Below this offset DATA is protected by the old send keys (0 when
    /// none are held: the one compare of the per-frame path).
    tx_switch: u64,
    /// Receive keys of the peer's frames (`rx_cur`).
    rx: DirectionKeys,
    /// The resume key of `resume_epoch`.
    resume: Secret,
    resume_epoch: u32,
}

impl KeyRing {
    /// The ring of a new session: epoch 0 from `chain_0 = master`.
    pub(crate) fn new(chain: Chain, side: Side) -> Self {
        let SessionKeys { c2s, s2c, resume } = chain.epoch_keys();
        let (tx, rx) = match side {
            Side::Client => (c2s, s2c),
            Side::Server => (s2c, c2s),
        };
        let resume_epoch = chain.epoch();
        KeyRing {
            chain,
            tx,
            tx_switch: 0,
            rx,
            resume,
            resume_epoch,
        }
    }

    /// The keys of a DATA frame at stream offset `offset` of our
    /// direction, and the offset the frame must not reach (the next switch
    /// point, `u64::MAX` when none).
    #[inline]
    pub(crate) fn tx_data(&mut self, offset: u64) -> (&mut DirectionKeys, u64) {
        debug_assert!(offset >= self.tx_switch || self.tx_switch == 0);
        (&mut self.tx, u64::MAX)
    }

    /// The keys of our control frames on the current link.
    #[inline]
    pub(crate) fn tx_control(&self) -> &DirectionKeys {
        &self.tx
    }

    /// The keys every incoming frame is verified (and DATA decrypted) with.
    #[inline]
    pub(crate) fn rx(&mut self) -> &mut DirectionKeys {
        &mut self.rx
    }

    /// This side's receive epoch (`rx_cur`): the epoch of the peer's
    /// frames, stated in ACKs and resume messages.
    pub(crate) fn rx_epoch(&self) -> u32 {
        self.rx.epoch()
    }

    /// This side's newest send epoch in use.
    pub(crate) fn tx_epoch(&self) -> u32 {
        self.tx.epoch()
    }

    /// The session's epoch: both directions have reached it
    /// (`min(tx_cur, rx_cur)`).
    pub(crate) fn epoch(&self) -> u32 {
        self.tx_epoch().min(self.rx_epoch())
    }

    /// The resume key of `epoch`, if this side still (or already) holds it.
    pub(crate) fn resume_key(&self, epoch: u32) -> Option<&Secret> {
        (epoch == self.resume_epoch).then_some(&self.resume)
    }

    /// The resume key a client MACs its ResumeRequest with: the one of its
    /// receive epoch.
    pub(crate) fn client_resume_key(&self) -> Option<(u32, &Secret)> {
        let e = self.rx_epoch();
        self.resume_key(e).map(|k| (e, k))
    }

    /// Free the keystream caches (idle).
    pub(crate) fn drop_caches(&mut self) {
        self.tx.drop_cache();
        self.rx.drop_cache();
    }

    /// Which epochs' keys are held right now (test hook).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn key_epochs(&self) -> KeyEpochs {
        KeyEpochs {
            tx: [Some(self.tx.epoch()), None],
            rx: [Some(self.rx.epoch()), None],
            resume: [Some(self.resume_epoch), None],
            chain: self.chain.epoch(),
            ephemeral_held: false,
        }
    }
}

/// The epochs whose keys one side holds (test hook, feature `test-hooks`):
/// at most two per direction and only during an exchange; an idle session
/// holds one of each.
#[cfg(feature = "test-hooks")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyEpochs {
    /// Send key epochs held (newest first).
    pub tx: [Option<u32>; 2],
    /// Receive key epochs held (current first, then the derived next one).
    pub rx: [Option<u32>; 2],
    /// Resume key epochs held (newest first).
    pub resume: [Option<u32>; 2],
    /// The epoch of the chain secret held (only the newest is kept).
    pub chain: u32,
    /// A rekey ephemeral secret is held (between sending INIT and the DH).
    pub ephemeral_held: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{context, FrameAad};

    /// v1's derivation, written out: `derive_key(ctx, master)`.
    fn v1(ctx: &str, master: &[u8; 32]) -> [u8; 32] {
        blake3::derive_key(ctx, master)
    }

    fn aad() -> FrameAad {
        FrameAad {
            generation: 3,
            sequence: 4,
            offset: 5,
            header: [1, 0, 3, 0],
        }
    }

    /// `chain_0 = master`: epoch 0's keys are v1's, byte for byte (tags
    /// under v1's MAC key with epoch field 0, keystream under v1's key).
    #[test]
    fn chain_0_gives_v1_keys() {
        let master = [0x5au8; 32];
        let mut ring = KeyRing::new(Chain::from_master(Secret(master)), Side::Client);
        assert_eq!(ring.epoch(), 0);
        assert_eq!(
            ring.resume_key(0).map(|k| k.0),
            Some(v1(context::RESUME, &master))
        );
        assert!(ring.resume_key(1).is_none());
        // The tag equals keyed BLAKE3 under v1's c2s MAC key over the
        // documented input with epoch bytes 0.
        let mut fixed = alloc::vec![0x01u8, 0, 0, 0, 0];
        fixed.extend_from_slice(&3u64.to_le_bytes());
        fixed.extend_from_slice(&4u64.to_le_bytes());
        fixed.extend_from_slice(&5u64.to_le_bytes());
        fixed.extend_from_slice(&[1, 0, 3, 0]);
        let mac_key = v1(context::C2S_MAC, &master);
        let want = blake3::Hasher::new_keyed(&mac_key)
            .update(b"abc")
            .update(&fixed)
            .finalize();
        assert_eq!(
            ring.tx_control().frame_tag(&aad(), b"abc"),
            want.as_bytes()[..16]
        );
        // Keystream: ChaCha20 under v1's key, nonce 0, from position 0.
        let mut got = [0u8; 64];
        ring.tx_data(0).0.apply_keystream(0, &mut got);
        let mut want = [0u8; 64];
        use chacha20::cipher::{KeyIvInit, StreamCipher};
        let key = v1(context::C2S_ENC, &master);
        chacha20::ChaCha20::new((&key).into(), (&[0u8; 12]).into()).apply_keystream(&mut want);
        assert_eq!(got, want);
        // The server's ring sends what the client's receives.
        let mut server = KeyRing::new(Chain::from_master(Secret(master)), Side::Server);
        assert_eq!(
            server.rx().frame_tag(&aad(), b"abc"),
            ring.tx_control().frame_tag(&aad(), b"abc")
        );
        assert_eq!(
            server.tx_control().frame_tag(&aad(), b"abc"),
            ring.rx().frame_tag(&aad(), b"abc")
        );
    }

    /// The ratchet: a new chain per exchange; `es` changes it; epoch 1's
    /// keys share nothing with epoch 0's and carry their epoch in the tag.
    #[test]
    fn ratchet_separates_epochs() {
        let c0 = || Chain::from_master(Secret([1u8; 32]));
        let ee = [2u8; 32];
        let es = [3u8; 32];
        let rth = crate::keys::rekey_transcript(1, &[4u8; 32], &[5u8; 32]);
        let c1 = c0().ratchet(&ee, None, &rth).unwrap();
        let c1p = c0().ratchet(&ee, Some(&es), &rth).unwrap();
        assert_eq!(c1.epoch(), 1);
        let k0 = c0().epoch_keys();
        let k1 = c1.epoch_keys();
        let k1p = c1p.epoch_keys();
        assert_ne!(k1.resume, k1p.resume, "es must change chain_1");
        assert_ne!(k0.resume, k1.resume);
        assert_ne!(
            k0.c2s.frame_tag(&aad(), b"x"),
            k1.c2s.frame_tag(&aad(), b"x")
        );
        // Independent re-derivation of chain_1 from the formula.
        let mut m = alloc::vec::Vec::new();
        m.extend_from_slice(&[1u8; 32]);
        m.extend_from_slice(&ee);
        m.extend_from_slice(&rth);
        let chain1 = blake3::derive_key(context::REKEY, &m);
        assert_eq!(k1.resume.0, v1(context::RESUME, &chain1));
        // rth = BLAKE3(LE32(n) || c_pub || s_pub)
        let mut t = alloc::vec::Vec::from(1u32.to_le_bytes());
        t.extend_from_slice(&[4u8; 32]);
        t.extend_from_slice(&[5u8; 32]);
        assert_eq!(rth, *blake3::hash(&t).as_bytes());
    }
}
