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

use alloc::boxed::Box;
use x25519_dalek::StaticSecret;

use crate::keys::{rekey_transcript, Chain, DirectionKeys, Secret, SessionKeys, StaticKeypair};

/// Which end of the session this ring belongs to: it picks the direction
/// of the send and receive keys and the role in the rekey transcript.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The client: sends c2s, receives s2c.
    Client,
    /// The server: sends s2c, receives c2s.
    Server,
}

/// What a side needs from its owner to take part in an exchange: fresh
/// randomness for its ephemeral key (the client's RNG, the server
/// connection's `ConnRng`) and, in pinned sessions, the static key for `es`.
pub(crate) struct RekeyEnv<'a> {
    /// Fills 32 bytes with fresh randomness.
    pub(crate) fill: &'a mut dyn FnMut(&mut [u8; 32]),
    /// The server's static key pair (server side of a pinned session).
    pub(crate) server_static: Option<&'a StaticKeypair>,
    /// The pinned server public key (client side of a pinned session).
    pub(crate) pinned_server_key: Option<[u8; 32]>,
}

/// A REKEY_* message's content (the frame layouts are in `wire.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RekeyMsg {
    /// REKEY_INIT: start the exchange to `n`.
    Init {
        n: u32,
        ordered: bool,
        public: [u8; 32],
    },
    /// REKEY_REPLY: the responder's answer and switch marker.
    Reply { n: u32, public: [u8; 32] },
    /// REKEY_SWITCH: the initiator's switch marker.
    Switch { n: u32 },
}

/// Why an authenticated REKEY_* message ends the session (ABORT
/// `PROTOCOL_VIOLATION`): out of sequence, or a low-order key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Violation;

/// What receiving a REKEY_* message did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// Nothing (a duplicate, the loser of a crossing, kept for later).
    Ignored,
    /// This side derived epoch `n` as responder: its REPLY is due.
    Replying(u32),
    /// The peer's switch marker for `n` verified: every later frame of
    /// the peer is epoch `n`; an ACK is due (PROTOCOL.md 6.2).
    Switched(u32),
}

/// The state of one exchange, boxed in the ring from its INIT until every
/// key of the old epoch is retired.
#[derive(Debug)]
struct Exchange {
    /// The epoch this exchange leads to.
    n: u32,
    /// This side sent the INIT (and has not become responder since).
    initiator: bool,
    /// Our INIT was ORDERED (server only).
    ordered: bool,
    /// Our ephemeral secret while our INIT is unanswered.
    eph: Option<Eph>,
    /// Our ephemeral public key (INIT or REPLY payload; public).
    public: [u8; 32],
    /// Our new send keys, derived, our marker not yet written.
    pending_tx: Option<DirectionKeys>,
    /// Our old send keys, below `KeyRing::tx_start`, until the peer's
    /// receive epoch reaches `n`.
    tx_old: Option<DirectionKeys>,
    /// The switch offset of our direction, once our marker was written.
    switch: Option<u64>,
    /// The peer's new keys, derived, its marker not yet verified.
    pending_rx: Option<DirectionKeys>,
    /// Client: `resume_key(n)` waiting for `rx_cur` to reach `n`.
    /// Server: `resume_key(n - 1)` until the client's receive epoch is `n`.
    resume_other: Option<Secret>,
    /// An INIT for `n + 1` that arrived while this exchange still held
    /// old keys (PROTOCOL.md 4.7 rule 4).
    pending_init: Option<(bool, [u8; 32])>,
}

/// An ephemeral X25519 secret, zeroized on drop (the type does it).
struct Eph(StaticSecret);

impl core::fmt::Debug for Eph {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Eph(<redacted>)")
    }
}

impl Eph {
    fn generate(env: &mut RekeyEnv<'_>) -> (Eph, [u8; 32]) {
        let mut bytes = [0u8; 32];
        (env.fill)(&mut bytes);
        let secret = StaticSecret::from(bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        let public = crate::keys::x25519_public(&secret);
        (Eph(secret), public)
    }
}

/// The keys of a session, by epoch. See the module docs.
#[derive(Debug)]
pub(crate) struct KeyRing {
    /// The newest derived chain secret.
    chain: Chain,
    /// Send keys of DATA at offsets `>= tx_start` and of control frames
    /// once the link carried our switch marker.
    tx: DirectionKeys,
    /// The switch point of the newest send epoch (0 for epoch 0). DATA
    /// below it is protected by the old send keys while they are held
    /// (once they are dropped the peer has read past it: nothing below is
    /// sent again). The one compare of the per-frame path; the policy
    /// counts the bytes of the epoch from here.
    tx_start: u64,
    /// Receive keys of the peer's frames (`rx_cur`).
    rx: DirectionKeys,
    /// The resume key of the client's receive epoch (client), of the
    /// newest derived epoch (server).
    resume: Secret,
    /// The exchange in progress, `None` when idle.
    x: Option<Box<Exchange>>,
}

impl KeyRing {
    /// The ring of a new session: epoch 0 from `chain_0 = master`.
    pub(crate) fn new(mut chain: Chain, side: Side, pinned: bool) -> Self {
        chain.pinned = pinned;
        let SessionKeys { c2s, s2c, resume } = chain.epoch_keys();
        let (tx, rx) = split(side, c2s, s2c);
        KeyRing {
            chain,
            tx,
            tx_start: 0,
            rx,
            resume,
            x: None,
        }
    }

    /// The keys of a DATA frame at stream offset `offset` of our
    /// direction, and the offset the frame must not reach (the next switch
    /// point, `u64::MAX` when none).
    #[inline]
    pub(crate) fn tx_data(&mut self, offset: u64) -> (&mut DirectionKeys, u64) {
        if offset < self.tx_start {
            if let Some(old) = self.x.as_mut().and_then(|x| x.tx_old.as_mut()) {
                return (old, self.tx_start);
            }
        }
        (&mut self.tx, u64::MAX)
    }

    /// The keys of our control frames on a link: the old send keys while
    /// the link has not carried our marker and the peer has not seen it
    /// (`link_switched == false`), the newest otherwise.
    #[inline]
    pub(crate) fn tx_control(&self, link_switched: bool) -> &DirectionKeys {
        if !link_switched {
            if let Some(old) = self.x.as_ref().and_then(|x| x.tx_old.as_ref()) {
                return old;
            }
        }
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

    /// The side this ring belongs to.
    pub(crate) fn side(&self) -> Side {
        // Read off the send keys' direction (one byte less per session).
        if self.tx.dir() == crate::keys::DIR_C2S {
            Side::Client
        } else {
            Side::Server
        }
    }

    /// The offset from which the newest send epoch protects DATA.
    pub(crate) fn tx_start(&self) -> u64 {
        self.tx_start
    }

    /// This side's newest send epoch in use (its newest written marker).
    pub(crate) fn tx_epoch(&self) -> u32 {
        self.tx.epoch()
    }

    /// The session's epoch: both directions have reached it
    /// (`min(tx_cur, rx_cur)`).
    pub(crate) fn epoch(&self) -> u32 {
        self.tx_epoch().min(self.rx_epoch())
    }

    /// The epoch of `resume`: the client's receive epoch (it switches its
    /// resume key with it), the server's newest derived epoch.
    fn resume_epoch(&self) -> u32 {
        match self.side() {
            Side::Client => self.rx.epoch(),
            Side::Server => self.chain.epoch(),
        }
    }

    /// The resume key of `epoch`, if this side holds it (the server holds
    /// the previous epoch's until the client's receive epoch passed it).
    pub(crate) fn resume_key(&self, epoch: u32) -> Option<&Secret> {
        if epoch == self.resume_epoch() {
            return Some(&self.resume);
        }
        match (self.side(), self.x.as_ref()) {
            (Side::Server, Some(x)) if epoch.checked_add(1) == Some(self.resume_epoch()) => {
                x.resume_other.as_ref()
            }
            _ => None,
        }
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
        if let Some(x) = &mut self.x {
            for k in [&mut x.tx_old, &mut x.pending_tx, &mut x.pending_rx]
                .into_iter()
                .flatten()
            {
                k.drop_cache();
            }
        }
    }

    // ----- the exchange ----------------------------------------------------

    /// Whether this side may start an exchange now (PROTOCOL.md 4.7 rule
    /// 1, the ring's part: no exchange in progress, no old key held).
    pub(crate) fn may_start(&self) -> bool {
        self.x.is_none() && self.chain.epoch() < u32::MAX
    }

    /// Whether an exchange is in progress (any transitional key held).
    #[cfg(test)]
    pub(crate) fn in_exchange(&self) -> bool {
        self.x.is_some()
    }

    /// Start an exchange as initiator: draws the ephemeral key. Returns the
    /// new epoch; `None` if this side may not start now.
    pub(crate) fn start(&mut self, ordered: bool, env: &mut RekeyEnv<'_>) -> Option<u32> {
        if !self.may_start() {
            return None;
        }
        let n = self.chain.epoch() + 1;
        let (eph, public) = Eph::generate(env);
        self.x = Some(Box::new(Exchange {
            n,
            initiator: true,
            ordered: ordered && self.side() == Side::Server,
            eph: Some(eph),
            public,
            pending_tx: None,
            tx_old: None,
            switch: None,
            pending_rx: None,
            resume_other: None,
            pending_init: None,
        }));
        Some(n)
    }

    /// Our outstanding INIT (written on every link until the REPLY
    /// verified): `(n, ordered, public)`.
    pub(crate) fn outstanding_init(&self) -> Option<RekeyMsg> {
        let x = self.x.as_ref()?;
        (x.initiator && x.eph.is_some()).then_some(RekeyMsg::Init {
            n: x.n,
            ordered: x.ordered,
            public: x.public,
        })
    }

    /// Our switch marker for the current exchange, once derived (written
    /// the first time, or re-sent on a link whose peer has not seen it).
    pub(crate) fn marker(&self) -> Option<RekeyMsg> {
        let x = self.x.as_ref()?;
        if x.pending_tx.is_none() && x.tx_old.is_none() {
            return None;
        }
        Some(if x.initiator {
            RekeyMsg::Switch { n: x.n }
        } else {
            RekeyMsg::Reply {
                n: x.n,
                public: x.public,
            }
        })
    }

    /// Our marker was derived but never written: write it now, at
    /// `S = tx_next`.
    pub(crate) fn marker_unwritten(&self) -> bool {
        self.x.as_ref().is_some_and(|x| x.pending_tx.is_some())
    }

    /// Our marker was written at `S` and the peer has not reported seeing
    /// it: `Some(S)` (a new link re-sends it at `S`).
    pub(crate) fn marker_unseen_at(&self) -> Option<u64> {
        let x = self.x.as_ref()?;
        x.tx_old.as_ref().and(x.switch)
    }

    /// Our marker is being written the first time at `tx_next`: DATA from
    /// `tx_next` on is protected by the new send keys. Returns the epoch
    /// reached by both directions if this completes them (the initiator's
    /// SWITCH), for the `Rekeyed` event.
    pub(crate) fn marker_written(&mut self, tx_next: u64) -> Option<u32> {
        let x = self.x.as_mut()?;
        let new = x.pending_tx.take()?;
        let old = core::mem::replace(&mut self.tx, new);
        x.tx_old = Some(old);
        x.switch = Some(tx_next);
        self.tx_start = tx_next;
        let n = x.n;
        // The peer may have reported epoch n already (it cannot, without
        // the marker; kept for symmetry with `peer_rx_is`).
        (self.rx.epoch() == n).then_some(n)
    }

    /// An authenticated REKEY_* message of the peer, verified under the
    /// current receive keys. `aborted`: this side aborted (it answers no
    /// INIT, rule 7).
    pub(crate) fn receive(
        &mut self,
        msg: RekeyMsg,
        aborted: bool,
        env: &mut RekeyEnv<'_>,
    ) -> Result<Received, Violation> {
        let side = self.side();
        match msg {
            RekeyMsg::Init { n, ordered, public } => {
                if ordered && side == Side::Server {
                    // Only the server orders.
                    return Err(Violation);
                }
                let newest = self.chain.epoch();
                if n <= newest || aborted {
                    return Ok(Received::Ignored);
                }
                if newest.checked_add(1) != Some(n) {
                    return Err(Violation);
                }
                match self.x.as_mut() {
                    Some(x) if x.n == n && x.initiator => {
                        // Crossing INITs: the client's wins.
                        if side == Side::Client {
                            return Ok(Received::Ignored);
                        }
                        let eph = x.eph.take();
                        self.x = None;
                        self.respond(n, public, eph, env)
                    }
                    Some(x) => {
                        // Old keys still held (a resume race): one slot.
                        x.pending_init = Some((ordered, public));
                        Ok(Received::Ignored)
                    }
                    None => self.respond(n, public, None, env),
                }
            }
            RekeyMsg::Reply { n, public } => {
                let x = self.x.as_mut().ok_or(Violation)?;
                if !(x.initiator && x.n == n) {
                    return Err(Violation);
                }
                let eph = x.eph.take().ok_or(Violation)?;
                let my_public = x.public;
                let keys = self.derive(n, &eph, &my_public, &public, env)?;
                drop(eph);
                let (tx, rx) = split(side, keys.c2s, keys.s2c);
                let x = self.x.as_mut().ok_or(Violation)?;
                x.pending_tx = Some(tx);
                // The REPLY is the responder's marker: its later frames
                // are epoch n.
                self.rx = rx;
                self.install_resume(keys.resume, true);
                Ok(Received::Switched(n))
            }
            RekeyMsg::Switch { n } => {
                let x = self.x.as_mut().ok_or(Violation)?;
                if x.initiator || x.n != n {
                    return Err(Violation);
                }
                let rx = x.pending_rx.take().ok_or(Violation)?;
                self.rx = rx;
                if side == Side::Client {
                    if let Some(k) = x.resume_other.take() {
                        self.resume = k;
                    }
                }
                self.maybe_finish();
                Ok(Received::Switched(n))
            }
        }
    }

    /// Become the responder for `n`: draw (or reuse) our ephemeral, derive
    /// `chain_n` and the epoch-`n` keys; our REPLY is due.
    fn respond(
        &mut self,
        n: u32,
        peer_public: [u8; 32],
        eph: Option<Eph>,
        env: &mut RekeyEnv<'_>,
    ) -> Result<Received, Violation> {
        let (eph, public) = match eph {
            Some(e) => {
                let p = crate::keys::x25519_public(&e.0);
                (e, p)
            }
            None => Eph::generate(env),
        };
        let keys = self.derive(n, &eph, &public, &peer_public, env)?;
        drop(eph);
        let (tx, rx) = split(self.side(), keys.c2s, keys.s2c);
        self.x = Some(Box::new(Exchange {
            n,
            initiator: false,
            ordered: false,
            eph: None,
            public,
            pending_tx: Some(tx),
            tx_old: None,
            switch: None,
            pending_rx: Some(rx),
            resume_other: None,
            pending_init: None,
        }));
        self.install_resume(keys.resume, false);
        Ok(Received::Replying(n))
    }

    /// `ee` (+ `es`), `rth`, `chain_n` (the old chain is zeroized), and the
    /// epoch-`n` keys.
    fn derive(
        &mut self,
        n: u32,
        eph: &Eph,
        my_public: &[u8; 32],
        peer_public: &[u8; 32],
        env: &RekeyEnv<'_>,
    ) -> Result<SessionKeys, Violation> {
        let ee = dh(&eph.0, peer_public)?;
        let es = if self.chain.pinned {
            Some(match self.side() {
                Side::Client => dh(&eph.0, &env.pinned_server_key.ok_or(Violation)?)?,
                Side::Server => {
                    let kp = env.server_static.ok_or(Violation)?;
                    let es = kp.diffie_hellman(peer_public);
                    if es == [0u8; 32] {
                        return Err(Violation);
                    }
                    es
                }
            })
        } else {
            None
        };
        let (c_pub, s_pub) = match self.side() {
            Side::Client => (my_public, peer_public),
            Side::Server => (peer_public, my_public),
        };
        let rth = rekey_transcript(n, c_pub, s_pub);
        let placeholder = Chain::from_master(Secret([0; 32]));
        let old = core::mem::replace(&mut self.chain, placeholder);
        let mut ee = ee;
        let next = old.ratchet(&ee, es.as_ref(), &rth);
        zeroize::Zeroize::zeroize(&mut ee);
        if let Some(mut es) = es {
            zeroize::Zeroize::zeroize(&mut es);
        }
        self.chain = next.ok_or(Violation)?;
        Ok(self.chain.epoch_keys())
    }

    /// Place `resume_key(n)`: the client switches at `rx_cur = n` (now if
    /// `rx_switched`, else it waits); the server switches at once and keeps
    /// the previous one until the client's receive epoch reaches `n`.
    fn install_resume(&mut self, key: Secret, rx_switched: bool) {
        let side = self.side();
        let Some(x) = self.x.as_mut() else { return };
        match side {
            Side::Client if rx_switched => self.resume = key,
            Side::Client => x.resume_other = Some(key),
            Side::Server => x.resume_other = Some(core::mem::replace(&mut self.resume, key)),
        }
    }

    /// The lowest receive epoch the peer may still report: the epoch of
    /// the oldest send keys we hold (it reported the newer one once we
    /// dropped them).
    fn peer_rx_floor(&self) -> u32 {
        let old = self.x.as_ref().is_some_and(|x| x.tx_old.is_some());
        self.tx.epoch() - u32::from(old)
    }

    /// Validate a receive epoch the peer reported in an ACK: it never goes
    /// down and never exceeds our newest written marker's epoch.
    pub(crate) fn check_peer_rx(&self, e: u32) -> bool {
        e >= self.peer_rx_floor() && e <= self.tx.epoch()
    }

    /// The peer reported receive epoch `e` (a checked ACK, or a resume
    /// message): retire the old send keys, our marker and (server) the old
    /// resume key once `e` reached the exchange's epoch.
    pub(crate) fn peer_rx_is(&mut self, e: u32) {
        let side = self.side();
        let Some(x) = self.x.as_mut() else {
            return;
        };
        if e >= x.n && x.tx_old.is_some() {
            x.tx_old = None;
            if side == Side::Server {
                x.resume_other = None;
            }
        }
        self.maybe_finish();
    }

    /// Drop the exchange once nothing transitional is held; an INIT kept
    /// for later (rule 4) keeps it until [`KeyRing::take_ready_init`].
    fn maybe_finish(&mut self) {
        let Some(x) = self.x.as_ref() else { return };
        let done = x.eph.is_none()
            && x.pending_tx.is_none()
            && x.tx_old.is_none()
            && x.pending_rx.is_none()
            && x.resume_other.is_none();
        if done && x.pending_init.is_none() {
            self.x = None;
        }
    }

    /// An INIT kept while old keys were held, once they are gone: the
    /// stream feeds it to [`KeyRing::receive`] (the exchange slot is free).
    pub(crate) fn take_ready_init(&mut self) -> Option<RekeyMsg> {
        let x = self.x.as_ref()?;
        let idle = x.eph.is_none()
            && x.pending_tx.is_none()
            && x.tx_old.is_none()
            && x.pending_rx.is_none()
            && x.resume_other.is_none();
        if !idle {
            return None;
        }
        let (ordered, public) = self.x.take()?.pending_init?;
        let n = self.chain.epoch().checked_add(1)?;
        Some(RekeyMsg::Init { n, ordered, public })
    }

    /// Consistency of a new link (PROTOCOL.md 7, §2.4 of the design): the
    /// peer's receive epoch is one of the send epochs we hold, and its read
    /// count lies on the right side of our switch point. On success the
    /// link's control frames start under `peer_rx`'s keys: returns whether
    /// they are the newest (`true`) or the old ones (our marker is re-sent).
    /// The caller then reports `peer_rx` with [`KeyRing::peer_rx_is`].
    pub(crate) fn check_attach(&self, peer_rx: u32, peer_read: u64) -> Result<bool, Violation> {
        let newest = self.tx.epoch();
        if let Some(s) = self.marker_unseen_at() {
            let old = newest - 1;
            if peer_rx == old {
                if peer_read > s {
                    return Err(Violation);
                }
                return Ok(false);
            }
            if peer_rx != newest || peer_read < s {
                return Err(Violation);
            }
        } else if peer_rx != newest {
            return Err(Violation);
        }
        Ok(true)
    }

    /// Which epochs' keys are held right now (test hook).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn key_epochs(&self) -> KeyEpochs {
        let x = self.x.as_deref();
        let n = x.map(|x| x.n);
        let old = |held: bool| if held { n.map(|n| n - 1) } else { None };
        let next = |held: bool| if held { n } else { None };
        KeyEpochs {
            tx: [
                Some(self.tx.epoch()),
                x.and_then(|x| old(x.tx_old.is_some()).or(next(x.pending_tx.is_some()))),
            ],
            rx: [
                Some(self.rx.epoch()),
                x.and_then(|x| next(x.pending_rx.is_some())),
            ],
            resume: [
                Some(self.resume_epoch()),
                x.and_then(|x| {
                    x.resume_other.as_ref().map(|_| match self.side() {
                        Side::Client => x.n,
                        Side::Server => x.n - 1,
                    })
                }),
            ],
            chain: self.chain.epoch(),
            ephemeral_held: x.is_some_and(|x| x.eph.is_some()),
        }
    }
}

/// (send, receive) keys of `side`.
fn split(side: Side, c2s: DirectionKeys, s2c: DirectionKeys) -> (DirectionKeys, DirectionKeys) {
    match side {
        Side::Client => (c2s, s2c),
        Side::Server => (s2c, c2s),
    }
}

/// X25519 with the all-zero (non-contributory) result refused.
fn dh(secret: &StaticSecret, peer: &[u8; 32]) -> Result<[u8; 32], Violation> {
    crate::keys::x25519(secret, peer).ok_or(Violation)
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
        let mut ring = KeyRing::new(Chain::from_master(Secret(master)), Side::Client, false);
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
            ring.tx_control(true).frame_tag(&aad(), b"abc"),
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
        let mut server = KeyRing::new(Chain::from_master(Secret(master)), Side::Server, false);
        assert_eq!(
            server.rx().frame_tag(&aad(), b"abc"),
            ring.tx_control(true).frame_tag(&aad(), b"abc")
        );
        assert_eq!(
            server.tx_control(true).frame_tag(&aad(), b"abc"),
            ring.rx().frame_tag(&aad(), b"abc")
        );
    }

    fn rings(pinned: bool) -> (KeyRing, KeyRing) {
        let m = [0x33u8; 32];
        (
            KeyRing::new(Chain::from_master(Secret(m)), Side::Client, pinned),
            KeyRing::new(Chain::from_master(Secret(m)), Side::Server, pinned),
        )
    }

    struct Env {
        seed: u8,
        kp: StaticKeypair,
        pinned_pub: [u8; 32],
    }

    impl Env {
        fn new(seed: u8) -> Self {
            let kp = StaticKeypair::from_secret_bytes([0x44; 32]);
            let pinned_pub = kp.public_key();
            Env {
                seed,
                kp,
                pinned_pub,
            }
        }
        fn with<T>(&mut self, server: bool, f: impl FnOnce(&mut RekeyEnv<'_>) -> T) -> T {
            let seed = &mut self.seed;
            let mut fill = |b: &mut [u8; 32]| {
                *seed = seed.wrapping_add(1);
                *b = [*seed; 32];
            };
            let mut env = RekeyEnv {
                fill: &mut fill,
                server_static: server.then_some(&self.kp),
                pinned_server_key: (!server).then_some(self.pinned_pub),
            };
            f(&mut env)
        }
    }

    /// Tags of the sender's control keys verify under the receiver's keys.
    fn same(tx: &DirectionKeys, rx: &mut KeyRing) -> bool {
        tx.frame_tag(&aad(), b"m") == rx.rx().frame_tag(&aad(), b"m")
    }

    /// One whole exchange, client-initiated; returns the final rings.
    fn exchange(pinned: bool) -> (KeyRing, KeyRing) {
        let (mut c, mut s) = rings(pinned);
        let mut env = Env::new(1);
        assert_eq!(env.with(false, |e| c.start(false, e)), Some(1));
        let init = c.outstanding_init().unwrap();
        assert_eq!(
            env.with(true, |e| s.receive(init, false, e)),
            Ok(Received::Replying(1))
        );
        let reply = s.marker().unwrap();
        assert!(s.marker_unwritten());
        // Server data before S (100) is epoch 0, from S epoch 1.
        assert_eq!(s.marker_written(100), None);
        assert_eq!(s.tx_data(99).0.epoch(), 0);
        assert_eq!(s.tx_data(99).1, 100);
        assert_eq!(s.tx_data(100).0.epoch(), 1);
        // The REPLY itself is tagged under epoch 0 (the link did not
        // switch before it), later frames under 1.
        assert!(same(s.tx_control(false), &mut c));
        assert_eq!(
            env.with(false, |e| c.receive(reply, false, e)),
            Ok(Received::Switched(1))
        );
        assert!(same(s.tx_control(true), &mut c), "client rx is epoch 1");
        assert_eq!(c.marker(), Some(RekeyMsg::Switch { n: 1 }));
        assert_eq!(c.marker_written(7), Some(1), "initiator is done at SWITCH");
        assert!(same(c.tx_control(false), &mut s), "SWITCH under epoch 0");
        assert_eq!(
            env.with(true, |e| s.receive(RekeyMsg::Switch { n: 1 }, false, e)),
            Ok(Received::Switched(1))
        );
        assert!(same(c.tx_control(true), &mut s));
        // Retiring ACKs.
        assert!(s.check_peer_rx(1) && c.check_peer_rx(1));
        s.peer_rx_is(1);
        c.peer_rx_is(1);
        (c, s)
    }

    #[test]
    fn an_exchange_moves_both_sides_to_epoch_1_and_retires_epoch_0() {
        for pinned in [false, true] {
            let (c, s) = exchange(pinned);
            assert_eq!((c.epoch(), s.epoch()), (1, 1));
            assert!(!c.in_exchange() && !s.in_exchange(), "idle holds one epoch");
            assert!(s.resume_key(0).is_none(), "resume_key(0) retired");
            assert_eq!(
                c.client_resume_key().map(|(e, k)| (e, k.0)),
                s.resume_key(1).map(|k| (1, k.0))
            );
            assert!(c.x.is_none());
        }
        // es changes the chain.
        let (a, _) = exchange(false);
        let (b, _) = exchange(true);
        assert_ne!(a.resume.0, b.resume.0);
    }

    #[test]
    fn crossing_inits_make_one_exchange_with_the_clients_ephemeral() {
        let (mut c, mut s) = rings(false);
        let mut env = Env::new(9);
        env.with(false, |e| c.start(false, e));
        env.with(true, |e| s.start(true, e));
        let ci = c.outstanding_init().unwrap();
        let si = s.outstanding_init().unwrap();
        assert_eq!(
            env.with(false, |e| c.receive(si, false, e)),
            Ok(Received::Ignored)
        );
        assert_eq!(
            env.with(true, |e| s.receive(ci, false, e)),
            Ok(Received::Replying(1))
        );
        let RekeyMsg::Init { public: c_pub, .. } = ci else {
            unreachable!()
        };
        let RekeyMsg::Reply { public: r_pub, .. } = s.marker().unwrap() else {
            unreachable!()
        };
        let RekeyMsg::Init { public: s_pub, .. } = si else {
            unreachable!()
        };
        assert_eq!(r_pub, s_pub, "the server reuses its unused ephemeral");
        assert_ne!(c_pub, s_pub);
        s.marker_written(0);
        let reply = s.marker().unwrap();
        assert_eq!(
            env.with(false, |e| c.receive(reply, false, e)),
            Ok(Received::Switched(1))
        );
        assert!(same(s.tx_control(true), &mut c));
    }

    #[test]
    fn duplicates_and_strays() {
        let (mut c, mut s) = exchange(false);
        let mut env = Env::new(3);
        let old = RekeyMsg::Init {
            n: 1,
            ordered: false,
            public: [9; 32],
        };
        assert_eq!(
            env.with(true, |e| s.receive(old, false, e)),
            Ok(Received::Ignored)
        );
        let far = RekeyMsg::Init {
            n: 3,
            ordered: false,
            public: [9; 32],
        };
        assert_eq!(env.with(true, |e| s.receive(far, false, e)), Err(Violation));
        let reply = RekeyMsg::Reply {
            n: 2,
            public: [9; 32],
        };
        assert_eq!(
            env.with(false, |e| c.receive(reply, false, e)),
            Err(Violation)
        );
        assert_eq!(
            env.with(true, |e| s.receive(RekeyMsg::Switch { n: 1 }, false, e)),
            Err(Violation)
        );
        // A low-order key in an INIT ends the session.
        let weak = RekeyMsg::Init {
            n: 2,
            ordered: false,
            public: [0; 32],
        };
        assert_eq!(
            env.with(true, |e| s.receive(weak, false, e)),
            Err(Violation)
        );
        // After its own abort a side answers no INIT.
        let (_, mut s2) = rings(false);
        let init = RekeyMsg::Init {
            n: 1,
            ordered: false,
            public: [9; 32],
        };
        assert_eq!(
            env.with(true, |e| s2.receive(init, true, e)),
            Ok(Received::Ignored)
        );
    }

    #[test]
    fn resume_keys_during_an_exchange() {
        let (mut c, mut s) = rings(false);
        let mut env = Env::new(5);
        env.with(true, |e| s.start(false, e));
        let init = s.outstanding_init().unwrap();
        env.with(false, |e| c.receive(init, false, e)).unwrap();
        // The client replied but its rx is still 0: it MACs under 0.
        assert_eq!(c.client_resume_key().map(|(e, _)| e), Some(0));
        c.marker_written(0);
        let reply = c.marker().unwrap();
        env.with(true, |e| s.receive(reply, false, e)).unwrap();
        // The server derived 1 and still accepts 0 until the client's
        // receive epoch is 1.
        assert!(s.resume_key(0).is_some() && s.resume_key(1).is_some());
        s.marker_written(0);
        env.with(false, |e| c.receive(RekeyMsg::Switch { n: 1 }, false, e))
            .unwrap();
        assert_eq!(c.client_resume_key().map(|(e, _)| e), Some(1));
        assert!(s.check_attach(1, 0).unwrap());
        s.peer_rx_is(1);
        assert!(s.resume_key(0).is_none());
        assert_eq!(
            c.client_resume_key().map(|(_, k)| k.0),
            s.resume_key(1).map(|k| k.0)
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
