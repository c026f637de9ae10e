//! The established byte stream of one session, shared by client and server.
//!
//! Owns the send history (bytes written but not yet acknowledged, kept for
//! resending), the receive buffer (verified bytes the application has not
//! read), the byte counters of both directions, and the per-transport frame
//! state ([`Link`]): sequence numbers, the partial incoming frame, ACK and
//! keepalive timers. Frames are sealed and opened here (encrypt-then-MAC,
//! see `keys.rs`); nothing is appended to the receive buffer before its tag
//! verified.
//!
//! Counters. Data byte `o` of a direction has stream offset `o`. A CLOSE
//! frame occupies one virtual offset right after the last data byte (like
//! TCP's FIN), so an acknowledgement can cover it. The *read count* a side
//! reports (in ACK frames and resume messages) is the number of data bytes it
//! verified, plus one once it received the peer's CLOSE. It only ever covers
//! whole verified frames, so a resend always starts on a frame boundary.
//!
//! Abort (PROTOCOL.md 6.6). [`Stream::abort`] stops this side's data at
//! once: from then on a link carries only an ABORT frame (once per link) and
//! keepalives, and incoming DATA is verified and counted but discarded. The
//! peer answers an ABORT with its own ABORT (the acknowledgement), so the
//! aborting side resends it on every new link until that answer verified.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::config::Config;
use crate::credential::{decode_accept, decode_credential, CredentialPayload};
use crate::error::{Error, ProtocolError};
use crate::event::ByteRange;
use crate::keys::{tags_equal, DirectionKeys, FrameAad, Secret};
use crate::rekey::{KeyRing, Received, RekeyEnv, RekeyMsg, Side};
use crate::time::{Duration, Instant, WallClock};
use crate::wire::{
    AbortCode, AbortFrame, AckFrame, FrameHeader, FrameType, RekeyInit, RekeyReply, RekeySwitch,
    StampFrame, ABORT_PAYLOAD_LEN, ACK_FLAG_ACCEPTED, ACK_PAYLOAD_LEN, CLOSE_PAYLOAD_LEN,
    FRAME_HEADER_LEN, FRAME_OVERHEAD, MAX_FRAME_PAYLOAD, MAX_TOKEN_LEN, PING_PAYLOAD_LEN,
    REKEY_FLAG_ORDERED, REKEY_INIT_PAYLOAD_LEN, TAG_LEN,
};

/// Every (key id, offset, plaintext byte) encrypted, once recording is on
/// (test hook); nothing without the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
type KeystreamLog = Option<alloc::boxed::Box<Vec<([u8; 8], u64, u8)>>>;
#[cfg(not(feature = "test-hooks"))]
type KeystreamLog = ();

/// The largest stream offset of a direction (`send` refuses bytes beyond
/// it with `KeyLimitReached`; unreachable in practice).
pub(crate) const MAX_STREAM_OFFSET: u64 = 1 << 62;

/// The limits of [`Config`] the stream needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamLimits {
    max_frame_payload: usize,
    send_buffer: usize,
    recv_buffer: usize,
    ack_threshold: u64,
    ack_delay: Duration,
    keepalive_interval: Duration,
    idle_timeout: Duration,
    rekey: bool,
    rekey_after_bytes: u64,
    rekey_after_time: Duration,
    key_lifetime: Duration,
    key_lifetime_bytes: u64,
    rekey_grace: Duration,
    freshness_window: Duration,
}

impl StreamLimits {
    pub(crate) fn from_config(c: &Config) -> Self {
        StreamLimits {
            max_frame_payload: c.max_frame_payload,
            send_buffer: c.send_buffer,
            recv_buffer: c.recv_buffer,
            ack_threshold: c.ack_threshold as u64,
            ack_delay: c.ack_delay,
            keepalive_interval: c.keepalive_interval,
            idle_timeout: c.idle_timeout,
            rekey: c.rekey,
            rekey_after_bytes: c.rekey_after_bytes,
            rekey_after_time: c.rekey_after_time,
            key_lifetime: c.key_lifetime,
            key_lifetime_bytes: c.key_lifetime_bytes,
            rekey_grace: c.rekey_grace,
            freshness_window: c.freshness_window,
        }
    }
}

// ----- time stamps (PROTOCOL.md 6.7) ------------------------------------------

/// Where this side's time stamps (PING, CLOSE, ABORT, and later the
/// REKEY frames) come from: always a reading of the *server's* freshness
/// clock, in µs.
#[derive(Clone)]
pub(crate) enum StampClock {
    /// Server: its freshness clock, `Config::wall_clock`, else the
    /// monotonic `now` (as `Config::wall_now`).
    Server(Option<Arc<dyn WallClock>>),
    /// Client: its estimate of the server's clock from the last base
    /// `(server_time, at)`: `server_time + (now − at)`; 0 before any base.
    Client(Option<(u64, Instant)>),
}

impl core::fmt::Debug for StampClock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StampClock::Server(c) => write!(f, "Server(wall_clock: {})", c.is_some()),
            StampClock::Client(b) => write!(f, "Client({b:?})"),
        }
    }
}

impl StampClock {
    /// The client's base `(server_time, at)`, if it has one.
    pub(crate) fn base(&self) -> Option<(u64, Instant)> {
        match self {
            StampClock::Client(b) => *b,
            StampClock::Server(_) => None,
        }
    }

    /// The reading at `now`.
    pub(crate) fn read(&self, now: Instant) -> u64 {
        match self {
            StampClock::Server(Some(c)) => c.now().as_micros(),
            StampClock::Server(None) => now.as_micros(),
            StampClock::Client(Some((t, at))) => {
                t.saturating_add(now.saturating_since(*at).as_micros())
            }
            StampClock::Client(None) => 0,
        }
    }
}

/// This side's stamp source for one `poll_transmit`: the clock is read only
/// when a stamped frame is written (never per DATA frame, PROTOCOL.md 6.7).
#[derive(Clone, Copy)]
struct Stamper<'a> {
    clock: &'a StampClock,
    /// Test hook shift (µs); 0 unless `set_stamp_skew` was called.
    skew: i64,
}

impl Stamper<'_> {
    fn at(&self, now: Instant) -> u64 {
        self.clock.read(now).saturating_add_signed(self.skew)
    }
}

/// The freshness check of a received time stamp `time` (PROTOCOL.md 6.7),
/// for a frame that verified at `now` after its link's input was held back
/// for `held` in total (this side's own flow control; the frame may have
/// waited that long behind unread data). `window` is
/// `Config::freshness_window`.
///
/// - Server (`clock` is [`StampClock::Server`]): `now − window − held ≤
///   time ≤ now + window` on its own clock.
/// - Client: only `time ≥ estimate − window − held`; a stamp *ahead* of the
///   estimate cannot be a held-back message (the server does not stamp the
///   future), it becomes the client's new clock base instead (its own clock
///   stood still, e.g. a suspend).
///
/// `Err(Error::Stale)`: the caller acts on nothing of the frame and ends
/// the transport. Used for CLOSE and ABORT here; the rekey frames use it
/// too.
pub(crate) fn check_stamp(
    clock: &mut StampClock,
    window: Duration,
    held: Duration,
    now: Instant,
    time: u64,
) -> Result<(), Error> {
    let (w, h) = (window.as_micros(), held.as_micros());
    match clock {
        StampClock::Server(_) => {
            let server_now = clock.read(now);
            let low = server_now.saturating_sub(w).saturating_sub(h);
            if time < low || time > server_now.saturating_add(w) {
                return Err(Error::Stale);
            }
        }
        StampClock::Client(base) => {
            let Some((t, at)) = *base else {
                // No base yet (cannot happen once frames flow): nothing to
                // judge against.
                return Ok(());
            };
            let est = t.saturating_add(now.saturating_since(at).as_micros());
            if time < est.saturating_sub(w).saturating_sub(h) {
                return Err(Error::Stale);
            }
            if time > est {
                *base = Some((time, now));
            }
        }
    }
    Ok(())
}

// ----- end time stamps ---------------------------------------------------------

/// Per-transport frame state. Reset by every resume.
#[derive(Debug)]
struct Link {
    /// Resume counter of this transport (0 for the first one); in every MAC.
    generation: u64,
    tx_seq: u64,
    rx_seq: u64,
    /// An incoming frame not yet complete (at most one maximum frame).
    partial: Vec<u8>,
    last_rx: Instant,
    last_tx: Instant,
    /// When the pending ACK must go out at the latest.
    ack_due: Option<Instant>,
    /// Read count the peer last heard from us (ACK or resume message).
    acked_sent: u64,
    /// Our CLOSE went out on this transport (or the peer had it already).
    close_sent: bool,
    /// Our ABORT went out on this transport.
    abort_sent: bool,
    /// The peer aborted after this side had already ended cleanly: answer
    /// its ABORT (so that it can finish) without changing our outcome.
    answer_abort: Option<AbortCode>,
    /// Send a PING at the next `poll_transmit` even if nothing else is due
    /// (the server's proof, right after the handshake, that it is attached).
    ping_now: bool,
    /// Input is held back because the receive buffer is full: the peer's
    /// frames (and its keepalives) wait behind a DATA frame, so silence is
    /// not a sign of a dead transport until the application reads.
    held_back: bool,
    /// Our control frames on this link use the newest send keys: the peer
    /// saw our switch marker, or this link carried it (PROTOCOL.md 5.5).
    tx_switched: bool,
    /// Our outstanding REKEY_INIT went out on this link (once per link;
    /// cleared when a new exchange starts).
    init_sent: bool,
    /// The peer's switch marker verified: an ACK (with our new receive
    /// epoch) is due even if the read count did not change.
    epoch_ack_due: bool,
    /// The gate frame (CREDENTIAL or ACCEPT) went out on this link.
    auth_sent: bool,
    /// An ACK is due even with an unchanged read count (the client just
    /// verified the server's ACCEPT).
    ack_forced: bool,
    /// Since when input is held back (until the next frame verifies).
    held_since: Option<Instant>,
    /// Total time this link's input was held back: the allowance of the
    /// stamps that waited behind it (PROTOCOL.md 6.7).
    held_total: Duration,
}

/// The deadlines of the current link, by timer kind.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LinkTimers {
    pub(crate) ack: Option<Instant>,
    pub(crate) keepalive: Option<Instant>,
    pub(crate) idle: Option<Instant>,
    pub(crate) rekey: Option<Instant>,
    pub(crate) key_expiry: Option<Instant>,
}

/// Stream-level happenings the client or server turns into events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamEvent {
    /// The peer's CLOSE arrived.
    PeerClosed,
    /// Both directions are closed and our CLOSE was acknowledged.
    CleanClose,
    /// The peer's ABORT verified (we answer it with ours).
    PeerAborted(AbortCode),
    /// The peer answered our ABORT: the abort is complete.
    AbortDone(AbortCode),
    /// Both directions switched to this epoch (PROTOCOL.md 6.8).
    Rekeyed(u32),
}

/// An instant not yet known.
const UNSET: Instant = Instant(u64::MAX);

/// The grace after a hard key limit, counted in attached time during
/// which the peer has read up to our INIT (PROTOCOL.md 5.4).
#[derive(Debug)]
struct Grace {
    /// The epoch that reached its limit: the grace ends when the session
    /// moved past it.
    epoch: u32,
    /// Grace left, as of `since`.
    left: Duration,
    /// When `left` was last brought up to date while running.
    since: Option<Instant>,
    /// The data offset at which our INIT went out on the current link (the
    /// clock pauses while the peer's read count is below it).
    order_at: Option<u64>,
}

/// An abort of the session, by either side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Abort {
    code: AbortCode,
    by_peer: bool,
    /// Our abort was answered by the peer (`by_peer == false`), or our answer
    /// to the peer's abort was written (`by_peer == true`).
    done: bool,
}

/// The session's stream. See the module docs.
#[derive(Debug)]
pub(crate) struct Stream {
    /// Shared by every session of an endpoint (one allocation, not 64
    /// bytes per session).
    limits: Arc<StreamLimits>,
    /// Every key of the session, by epoch (`rekey.rs`).
    keys: Option<KeyRing>,
    /// Bytes `[tx_base(), tx_written)` of the outgoing stream.
    tx: VecDeque<u8>,
    /// Highest read count the peer confirmed (may include our CLOSE).
    tx_acked: u64,
    tx_written: u64,
    /// Next data offset to put in a frame on the current link.
    tx_next: u64,
    /// The application closed its sending side.
    closing: bool,
    /// Verified bytes not yet read by the application.
    rx: VecDeque<u8>,
    /// Data bytes verified.
    rx_data: u64,
    peer_closed: bool,
    link: Option<Link>,
    /// Kept between links so steady operation does not allocate.
    spare_partial: Vec<u8>,
    /// Transports ended by an authentication failure since the last
    /// verified frame.
    auth_failures: u32,
    events: [Option<StreamEvent>; 3],
    // ----- rekey policy (PROTOCOL.md 5.4); the keys are in the ring -----
    /// When this side switched its send direction to the current epoch
    /// (the first link's start for epoch 0; `UNSET` before).
    epoch_since: Instant,
    /// The application asked for a rekey.
    rekey_requested: bool,
    /// A hard limit was reached: the grace for completing a rekey.
    grace: Option<Box<Grace>>,
    /// Test hook: answer no INIT (a client that ignores the order).
    #[cfg(feature = "test-hooks")]
    ignore_rekey: bool,
    clean_reported: bool,
    abort: Option<Abort>,
    /// Our CLOSE was written on some link at least once.
    close_ever_sent: bool,
    /// When this side's unanswered abort was first seen by a call that
    /// knows the time (the answer timeout counts from here).
    abort_since: Option<Instant>,
    /// Every (key id, offset, plaintext byte) this side encrypted, once
    /// recording was switched on (test hook: no keystream position may
    /// carry two different bytes).
    keystream_log: KeystreamLog,
    /// The source of this side's time stamps.
    clock: StampClock,
    /// Test hook: µs added to every outgoing stamp.
    #[cfg(feature = "test-hooks")]
    stamp_skew: i64,
    /// The acceptance gate, when the server decides on its clients.
    gate: Option<Box<Gate>>,
    /// Test hook: DATA and CLOSE ignore the gate.
    #[cfg(feature = "test-hooks")]
    ignore_gate: bool,
}

impl Stream {
    pub(crate) fn new(limits: Arc<StreamLimits>) -> Self {
        Stream {
            limits,
            keys: None,
            tx: VecDeque::new(),
            tx_acked: 0,
            tx_written: 0,
            tx_next: 0,
            closing: false,
            rx: VecDeque::new(),
            rx_data: 0,
            peer_closed: false,
            link: None,
            spare_partial: Vec::new(),
            auth_failures: 0,
            events: [None, None, None],
            epoch_since: UNSET,
            rekey_requested: false,
            grace: None,
            #[cfg(feature = "test-hooks")]
            ignore_rekey: false,
            clean_reported: false,
            abort: None,
            close_ever_sent: false,
            abort_since: None,
            keystream_log: KeystreamLog::default(),
            clock: StampClock::Client(None),
            #[cfg(feature = "test-hooks")]
            stamp_skew: 0,
            gate: None,
            #[cfg(feature = "test-hooks")]
            ignore_gate: false,
        }
    }

    // ----- time stamps ----------------------------------------------------

    /// Set where this side's time stamps come from (the server's
    /// connection at creation; the client keeps its default and moves the
    /// base with [`Stream::set_clock_base`]).
    pub(crate) fn set_stamp_clock(&mut self, clock: StampClock) {
        self.clock = clock;
    }

    /// Client: the server's clock read `server_time` at `at` (from an
    /// authenticated answer).
    pub(crate) fn set_clock_base(&mut self, server_time: u64, at: Instant) {
        if let StampClock::Client(base) = &mut self.clock {
            *base = Some((server_time, at));
        }
    }

    /// Client: its clock base `(server_time, at)`, once it has one.
    pub(crate) fn clock_base(&self) -> Option<(u64, Instant)> {
        self.clock.base()
    }

    /// Client: its estimate of the server's clock at `now` (no test skew),
    /// once it has a base.
    pub(crate) fn clock_estimate(&self, now: Instant) -> Option<u64> {
        self.clock.base().map(|_| self.clock.read(now))
    }

    /// The time stamp this side writes at `now` (µs of the server's clock).
    #[allow(dead_code)] // `poll_transmit` builds its `Stamper` from the fields
    pub(crate) fn stamp(&self, now: Instant) -> u64 {
        self.stamper().at(now)
    }

    fn stamper(&self) -> Stamper<'_> {
        Stamper {
            clock: &self.clock,
            skew: self.skew(),
        }
    }

    #[cfg(feature = "test-hooks")]
    fn skew(&self) -> i64 {
        self.stamp_skew
    }

    #[cfg(not(feature = "test-hooks"))]
    fn skew(&self) -> i64 {
        0
    }

    /// Test hook: shift this side's outgoing stamps by `skew` µs.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn set_stamp_skew(&mut self, skew: i64) {
        self.stamp_skew = skew;
    }

    pub(crate) fn set_keys(&mut self, keys: KeyRing) {
        self.keys = Some(keys);
    }

    /// The session's keys (`None` before the handshake completed).
    pub(crate) fn ring(&self) -> Option<&KeyRing> {
        self.keys.as_ref()
    }

    /// The keystream log since the last call (test hook); the first call
    /// switches recording on.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn take_keystream_log(&mut self) -> Vec<([u8; 8], u64, u8)> {
        self.keystream_log
            .replace(alloc::boxed::Box::default())
            .map(|b| *b)
            .unwrap_or_default()
    }

    // ----- counters -------------------------------------------------------

    /// Our read count: verified data bytes, plus one for the peer's CLOSE.
    pub(crate) fn read_count(&self) -> u64 {
        self.rx_data + self.peer_closed as u64
    }

    /// End of our stream: data written, plus one once we closed.
    pub(crate) fn write_end(&self) -> u64 {
        self.tx_written + self.closing as u64
    }

    /// Highest read count the peer confirmed of our stream.
    pub(crate) fn acked(&self) -> u64 {
        self.tx_acked
    }

    /// Bytes written by the application so far.
    pub(crate) fn written(&self) -> u64 {
        self.tx_written
    }

    /// Stream offset of the first byte held in `tx`.
    fn tx_base(&self) -> u64 {
        self.tx_acked.min(self.tx_written)
    }

    /// Bytes held for resending.
    pub(crate) fn unacked(&self) -> usize {
        (self.tx_written - self.tx_base()) as usize
    }

    /// Bytes verified but not yet read by the application.
    pub(crate) fn readable(&self) -> usize {
        self.rx.len()
    }

    /// Heap bytes this stream holds right now.
    pub(crate) fn memory(&self) -> usize {
        self.tx.capacity()
            + self.rx.capacity()
            + self.spare_partial.capacity()
            + self.link.as_ref().map_or(0, |l| l.partial.capacity())
    }

    /// Both sides closed and our CLOSE was acknowledged.
    pub(crate) fn is_clean_closed(&self) -> bool {
        self.abort.is_none()
            && self.closing
            && self.peer_closed
            && self.tx_acked == self.write_end()
    }

    /// We closed our sending side and the peer acknowledged our CLOSE (it
    /// read everything we wrote, and our end).
    pub(crate) fn close_acked(&self) -> bool {
        self.abort.is_none() && self.closing && self.tx_acked >= self.write_end()
    }

    /// Both sides closed, the peer's CLOSE verified, all our data was
    /// acknowledged and our CLOSE was sent; only its acknowledgement is
    /// missing.
    pub(crate) fn all_delivered_but_close_ack(&self) -> bool {
        self.abort.is_none()
            && self.close_ever_sent
            && self.peer_closed
            && self.tx_acked >= self.tx_written
    }

    /// The consecutive authentication failures so far.
    pub(crate) fn auth_failures(&self) -> u32 {
        self.auth_failures
    }

    pub(crate) fn note_auth_failure(&mut self) {
        self.auth_failures = self.auth_failures.saturating_add(1);
    }

    pub(crate) fn take_event(&mut self) -> Option<StreamEvent> {
        let e = self.events[0].take()?;
        self.events.rotate_left(1);
        Some(e)
    }

    /// At most three events can be pending between two drains (PeerClosed,
    /// CleanClose or one abort event, which exclude each other, and
    /// Rekeyed); a full queue keeps the oldest.
    fn push_event(&mut self, e: StreamEvent) {
        if let Some(slot) = self.events.iter_mut().find(|s| s.is_none()) {
            *slot = Some(e);
        }
    }

    /// Data offsets this side wrote that the peer has not acknowledged:
    /// `[acked, written)`. Once the session ended other than cleanly, these
    /// may or may not have reached the peer's application.
    pub(crate) fn in_doubt(&self) -> ByteRange {
        ByteRange {
            start: self.tx_base(),
            end: self.tx_written,
        }
    }

    /// This side aborted and the peer has not answered yet.
    pub(crate) fn abort_unanswered(&self) -> Option<AbortCode> {
        self.abort.filter(|a| !a.by_peer && !a.done).map(|a| a.code)
    }

    /// Start the answer timeout of our abort, if there is one (every call
    /// with a `now` does this; `abort` itself has no clock).
    pub(crate) fn note_time(&mut self, now: Instant) {
        if self.abort_since.is_none() && self.abort_unanswered().is_some() {
            self.abort_since = Some(now);
        }
    }

    /// When we stop waiting for the peer's answer to our ABORT: `wait`
    /// after the abort. An ABORT can sit behind data the peer's application
    /// does not read (PROTOCOL.md 6.6).
    pub(crate) fn abort_answer_deadline(&self, wait: Duration) -> Option<Instant> {
        self.abort_unanswered()?;
        Some(self.abort_since?.saturating_add(wait))
    }

    /// Our ABORT waited `wait` without an answer: stop waiting, the abort
    /// is complete. Returns its code the one time this happens.
    pub(crate) fn abort_timed_out(&mut self, now: Instant, wait: Duration) -> Option<AbortCode> {
        self.note_time(now);
        if self.abort_answer_deadline(wait).is_none_or(|d| now < d) {
            return None;
        }
        let a = self.abort.as_mut()?;
        a.done = true;
        Some(a.code)
    }

    /// The session was aborted (by either side): `send` and, once the
    /// buffered bytes are read, `recv` fail with `Error::Aborted`.
    pub(crate) fn aborted(&self) -> Option<AbortCode> {
        self.abort.map(|a| a.code)
    }

    /// Abort the session: no more DATA or CLOSE from this side; an ABORT
    /// frame goes out on the current link and on every later one until the
    /// peer answers it. No effect once the session ended cleanly or was
    /// aborted already.
    pub(crate) fn abort(&mut self, code: AbortCode) {
        if self.abort.is_some() || self.clean_reported {
            return;
        }
        self.abort = Some(Abort {
            code,
            by_peer: false,
            done: false,
        });
    }

    /// When the last frame from the peer verified on the current link (or
    /// the link started).
    pub(crate) fn last_rx(&self) -> Option<Instant> {
        self.link.as_ref().map(|l| l.last_rx)
    }

    // ----- application side -----------------------------------------------

    /// Accept up to `data.len()` bytes for sending; fewer when the history
    /// cap is reached. `Ok(0)` means "full, try again after ACKs arrive".
    pub(crate) fn send(&mut self, data: &[u8]) -> Result<usize, Error> {
        if let Some(code) = self.aborted() {
            return Err(Error::Aborted(code));
        }
        if self.closing {
            return Err(Error::Closed);
        }
        let room = self.limits.send_buffer.saturating_sub(self.unacked());
        // With rekeying the hard byte limit holds DATA back in
        // `poll_transmit` until the send epoch advances; without it the
        // session's one key refuses more bytes (v1).
        let key_room = if self.limits.rekey {
            MAX_STREAM_OFFSET.saturating_sub(self.tx_written)
        } else {
            self.limits
                .key_lifetime_bytes
                .saturating_sub(self.tx_written)
        };
        if key_room == 0 && !data.is_empty() {
            return Err(Error::KeyLimitReached);
        }
        let n = data
            .len()
            .min(room)
            .min(usize::try_from(key_room).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        reserve_bounded(&mut self.tx, n, self.limits.send_buffer);
        self.tx.extend(data[..n].iter());
        self.tx_written += n as u64;
        Ok(n)
    }

    /// Copy verified bytes into `out`. `Ok(0)` only at the end of the
    /// stream (peer closed, everything read); `Err(WouldBlock)` when empty.
    pub(crate) fn recv(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        if self.rx.is_empty() {
            if let Some(code) = self.aborted() {
                return Err(Error::Aborted(code));
            }
            return if self.peer_closed || out.is_empty() {
                Ok(0)
            } else {
                Err(Error::WouldBlock)
            };
        }
        let (a, b) = self.rx.as_slices();
        let n1 = a.len().min(out.len());
        out[..n1].copy_from_slice(&a[..n1]);
        let n2 = b.len().min(out.len() - n1);
        out[n1..n1 + n2].copy_from_slice(&b[..n2]);
        self.rx.drain(..n1 + n2);
        Ok(n1 + n2)
    }

    /// The application closes its sending side: a CLOSE frame follows the
    /// last data byte.
    pub(crate) fn close(&mut self) {
        self.closing = true;
    }

    /// Give back memory of empty buffers (called when idle, not per frame).
    pub(crate) fn trim(&mut self) {
        if self.tx.is_empty() {
            self.tx = VecDeque::new();
        }
        if self.rx.is_empty() {
            self.rx = VecDeque::new();
        }
        self.spare_partial = Vec::new();
        if let Some(k) = &mut self.keys {
            k.drop_caches();
        }
        if let Some(l) = &mut self.link {
            if l.partial.is_empty() {
                l.partial = Vec::new();
            }
        }
    }

    // ----- links ------------------------------------------------------------

    /// Start a link (a transport) whose peer has read `peer_read` bytes of
    /// our stream and whose receive epoch is `peer_rx`. Returns the range
    /// this side resends, `[start, end)` in data offsets.
    /// `Err(DataUnavailable-ish)` when `peer_read` lies outside what we
    /// still hold, or `peer_rx` is not a send epoch we hold on the right
    /// side of its switch point (PROTOCOL.md 7.8): the caller ends the
    /// session.
    pub(crate) fn attach(
        &mut self,
        generation: u64,
        now: Instant,
        peer_read: u64,
        peer_rx: u32,
    ) -> Result<(u64, u64), Error> {
        if peer_read < self.tx_acked || peer_read > self.write_end() {
            return Err(ProtocolError::BadAck.into());
        }
        // The switch point is a data offset; a read count that includes our
        // CLOSE (`tx_written + 1`) counts as `tx_written` there: a marker
        // written after the CLOSE sits at `S = tx_written`, and the peer may
        // have read the CLOSE under the old epoch (PROTOCOL.md 7.8 rule 1).
        let tx_switched = match &self.keys {
            Some(ring) => ring
                .check_attach(peer_rx, peer_read.min(self.tx_written))
                .map_err(|_| Error::from(ProtocolError::BadAck))?,
            None => true,
        };
        self.detach();
        self.grace_tick(now);
        if let Some(ring) = &mut self.keys {
            ring.peer_rx_is(peer_rx);
        }
        if self.epoch_since == UNSET {
            self.epoch_since = now;
        }
        self.ack_to(peer_read);
        self.tx_next = peer_read.min(self.tx_written);
        let mut partial = core::mem::take(&mut self.spare_partial);
        partial.clear();
        self.link = Some(Link {
            generation,
            tx_seq: 0,
            rx_seq: 0,
            partial,
            last_rx: now,
            last_tx: now,
            ack_due: None,
            acked_sent: self.read_count(),
            close_sent: peer_read > self.tx_written,
            abort_sent: false,
            answer_abort: None,
            ping_now: false,
            held_back: false,
            tx_switched,
            init_sent: false,
            epoch_ack_due: false,
            auth_sent: false,
            ack_forced: false,
            held_since: None,
            held_total: Duration::default(),
        });
        if let Some(g) = &mut self.grace {
            g.order_at = None;
            g.since = Some(now);
        }
        Ok((self.tx_next, self.tx_written))
    }

    /// Send a PING on the current link at the next `poll_transmit`.
    pub(crate) fn ping_soon(&mut self) {
        if let Some(l) = &mut self.link {
            l.ping_now = true;
        }
    }

    /// The transport is gone: forget its frame state, keep the stream.
    /// (The grace clock stops: it was brought up to date by the last call
    /// that knew the time.)
    pub(crate) fn detach(&mut self) {
        if let Some(g) = &mut self.grace {
            g.since = None;
        }
        if let Some(link) = self.link.take() {
            self.spare_partial = link.partial;
            self.spare_partial.clear();
        }
    }

    /// Free history the peer confirmed.
    fn ack_to(&mut self, v: u64) {
        let old_base = self.tx_base();
        self.tx_acked = v;
        let freed = (self.tx_base() - old_base) as usize;
        self.tx.drain(..freed);
        if self.is_clean_closed() && !self.clean_reported {
            self.clean_reported = true;
            self.push_event(StreamEvent::CleanClose);
        }
    }

    // ----- input ----------------------------------------------------------

    /// Consume frames from `input`. Returns the bytes taken; fewer than
    /// given when the receive buffer is full (offer the rest again after
    /// `recv`). An `Err` ends the link: nothing of the failing frame was
    /// delivered.
    pub(crate) fn handle_input(
        &mut self,
        now: Instant,
        input: &[u8],
        env: &mut RekeyEnv<'_>,
    ) -> Result<usize, Error> {
        self.note_time(now);
        self.grace_tick(now);
        let mut consumed = 0;
        loop {
            let Some(link) = self.link.as_mut() else {
                return Err(Error::TransportEnded);
            };
            let rest = &input[consumed..];
            if link.partial.is_empty() {
                if rest.len() >= FRAME_HEADER_LEN {
                    let hdr = FrameHeader::decode(&arr4(rest))?;
                    if !self.has_room(&hdr) {
                        self.hold_back(now);
                        break;
                    }
                    let total = hdr.wire_len();
                    if rest.len() >= total {
                        self.open_frame(now, &hdr, &rest[..total], env)?;
                        consumed += total;
                        continue;
                    }
                }
                if rest.is_empty() {
                    break;
                }
                let link = self.link.as_mut().ok_or(Error::TransportEnded)?;
                if link.partial.capacity() == 0 {
                    link.partial
                        .reserve_exact(FRAME_OVERHEAD + MAX_FRAME_PAYLOAD);
                }
                link.partial.extend_from_slice(rest);
                consumed += rest.len();
                break;
            }
            // Continue a partial frame.
            if link.partial.len() < FRAME_HEADER_LEN {
                let take = (FRAME_HEADER_LEN - link.partial.len()).min(rest.len());
                link.partial.extend_from_slice(&rest[..take]);
                consumed += take;
                if link.partial.len() < FRAME_HEADER_LEN {
                    break;
                }
            }
            let hdr = FrameHeader::decode(&arr4(&link.partial))?;
            if !self.has_room(&hdr) {
                self.hold_back(now);
                break;
            }
            let link = self.link.as_mut().ok_or(Error::TransportEnded)?;
            let total = hdr.wire_len();
            let rest = &input[consumed..];
            let take = (total - link.partial.len()).min(rest.len());
            link.partial.extend_from_slice(&rest[..take]);
            consumed += take;
            if link.partial.len() < total {
                break;
            }
            let frame = core::mem::take(&mut link.partial);
            let result = self.open_frame(now, &hdr, &frame, env);
            if let Some(link) = self.link.as_mut() {
                link.partial = frame;
                link.partial.clear();
            }
            result?;
        }
        Ok(consumed)
    }

    fn hold_back(&mut self, now: Instant) {
        if let Some(l) = &mut self.link {
            l.held_back = true;
            l.held_since.get_or_insert(now);
        }
    }

    /// Whether a frame with this header fits the receive buffer now.
    fn has_room(&self, hdr: &FrameHeader) -> bool {
        hdr.frame_type != FrameType::Data
            || self.discarding()
            || self.rx.len() + hdr.len <= self.limits.recv_buffer
    }

    /// After our own abort, incoming data is verified and counted (the
    /// frame tags depend on the count) but nobody will read it.
    fn discarding(&self) -> bool {
        self.abort.is_some_and(|a| !a.by_peer)
    }

    /// Verify one whole frame and apply it.
    fn open_frame(
        &mut self,
        now: Instant,
        hdr: &FrameHeader,
        frame: &[u8],
        env: &mut RekeyEnv<'_>,
    ) -> Result<(), Error> {
        let keys = self.keys.as_mut().ok_or(Error::InvalidState)?;
        let link = self.link.as_mut().ok_or(Error::TransportEnded)?;
        let header = arr4(frame);
        let body = &frame[FRAME_HEADER_LEN..FRAME_HEADER_LEN + hdr.len];
        let tag = arr16(&frame[FRAME_HEADER_LEN + hdr.len..]);
        let aad = FrameAad {
            generation: link.generation,
            sequence: link.rx_seq,
            offset: self.rx_data,
            header,
        };
        if !tags_equal(&keys.rx().frame_tag(&aad, body), &tag) {
            return Err(Error::AuthFailed);
        }
        link.rx_seq += 1;
        link.last_rx = now;
        link.held_back = false;
        // Whether this frame waited behind input held back (its stamp may
        // be that much older; it says nothing about the clock now).
        let was_held = match link.held_since.take() {
            Some(since) => {
                link.held_total = Duration(
                    link.held_total
                        .as_micros()
                        .saturating_add(now.saturating_since(since).as_micros()),
                );
                true
            }
            None => false,
        };
        let window = self.limits.freshness_window;
        self.auth_failures = 0;
        match hdr.frame_type {
            FrameType::Data => {
                if self.peer_closed || self.abort.is_some_and(|a| a.by_peer) {
                    return Err(ProtocolError::DataAfterClose.into());
                }
                let end =
                    self.rx_data
                        .checked_add(hdr.len as u64)
                        .ok_or(ProtocolError::BadLength {
                            frame_type: header[0],
                            len: hdr.len,
                        })?;
                // Before acceptance: a protocol violation, delivered to no one.
                gate_violation(self.gate.as_deref(), &mut self.abort);
                if self.abort.is_none() {
                    reserve_bounded(&mut self.rx, hdr.len, self.limits.recv_buffer);
                    self.rx.extend(body.iter());
                    decrypt_tail(&mut self.rx, hdr.len, keys.rx(), self.rx_data);
                }
                self.rx_data = end;
                if link.ack_due.is_none() {
                    link.ack_due = Some(now.saturating_add(self.limits.ack_delay));
                }
            }
            FrameType::Ack => {
                let ack = AckFrame::decode(body)?;
                let v = ack.read_count;
                let sent_end = self.tx_next + link.close_sent as u64;
                if v < self.tx_acked || v > sent_end || !keys.check_peer_rx(ack.rx_epoch) {
                    return Err(ProtocolError::BadAck.into());
                }
                keys.peer_rx_is(ack.rx_epoch);
                self.note_ack_flags(ack.flags)?;
                self.ack_to(v);
                self.rekey_step(env);
            }
            FrameType::RekeyInit | FrameType::RekeyReply | FrameType::RekeySwitch => {
                // Stamped like CLOSE and ABORT (PROTOCOL.md 6.7): a stale
                // one ends the transport; it is re-sent on the next one.
                let (msg, time) = match hdr.frame_type {
                    FrameType::RekeyInit => {
                        let m = RekeyInit::decode(body)?;
                        if m.flags & !REKEY_FLAG_ORDERED != 0 {
                            self.abort(AbortCode::PROTOCOL_VIOLATION);
                            return Ok(());
                        }
                        let msg = RekeyMsg::Init {
                            n: m.new_epoch,
                            ordered: m.flags & REKEY_FLAG_ORDERED != 0,
                            public: m.ephemeral_public,
                        };
                        (msg, m.time)
                    }
                    FrameType::RekeyReply => {
                        let m = RekeyReply::decode(body)?;
                        let msg = RekeyMsg::Reply {
                            n: m.new_epoch,
                            public: m.ephemeral_public,
                        };
                        (msg, m.time)
                    }
                    _ => {
                        let m = RekeySwitch::decode(body)?;
                        (RekeyMsg::Switch { n: m.new_epoch }, m.time)
                    }
                };
                check_stamp(&mut self.clock, window, link.held_total, now, time)?;
                self.on_rekey(msg, env);
            }
            FrameType::Ping => {
                // A server PING is the client's clock source (PROTOCOL.md
                // 6.7), unless it may have waited behind held-back input:
                // input is held back at a DATA frame, and the frames queued
                // behind it verify after that one, so once this link's
                // input was held back a PING only moves the base forward
                // (as a stamp ahead of the estimate does). The server
                // ignores the client's value.
                let time = StampFrame::decode(body)?.time;
                if let StampClock::Client(base) = &mut self.clock {
                    let held = was_held || link.held_total.as_micros() > 0;
                    let behind = base.is_some_and(|(t, at)| {
                        time <= t.saturating_add(now.saturating_since(at).as_micros())
                    });
                    if !(held && behind) {
                        *base = Some((time, now));
                    }
                }
            }
            FrameType::Credential | FrameType::Accept => {
                self.open_gate_frame(hdr.frame_type, body);
            }
            FrameType::Abort => {
                let frame = AbortFrame::decode(body)?;
                check_stamp(&mut self.clock, window, link.held_total, now, frame.time)?;
                let code = frame.code;
                match &mut self.abort {
                    // Our ABORT, answered (or both sides aborted at once).
                    Some(a) if !a.by_peer && !a.done => {
                        a.done = true;
                        let code = a.code;
                        self.push_event(StreamEvent::AbortDone(code));
                    }
                    Some(_) => {}
                    // Everything was delivered both ways before the peer
                    // gave up: our outcome stays Clean, but the peer waits for
                    // an answer.
                    None if self.clean_reported => link.answer_abort = Some(code),
                    None => {
                        self.abort = Some(Abort {
                            code,
                            by_peer: true,
                            done: false,
                        });
                        self.push_event(StreamEvent::PeerAborted(code));
                    }
                }
            }
            FrameType::Close => {
                let time = StampFrame::decode(body)?.time;
                check_stamp(&mut self.clock, window, link.held_total, now, time)?;
                if !gate_violation(self.gate.as_deref(), &mut self.abort) && !self.peer_closed {
                    self.peer_closed = true;
                    link.ack_due = Some(now);
                    self.push_event(StreamEvent::PeerClosed);
                    if self.is_clean_closed() && !self.clean_reported {
                        self.clean_reported = true;
                        self.push_event(StreamEvent::CleanClose);
                    }
                }
            }
        }
        Ok(())
    }

    // ----- rekey (PROTOCOL.md 5.4, 5.5, 6.8) -----------------------------

    /// A verified REKEY_* frame of the peer.
    fn on_rekey(&mut self, msg: RekeyMsg, env: &mut RekeyEnv<'_>) {
        #[cfg(feature = "test-hooks")]
        if self.ignore_rekey && matches!(msg, RekeyMsg::Init { .. }) {
            return;
        }
        let aborted = self.abort.is_some();
        let Some(ring) = self.keys.as_mut() else {
            return;
        };
        match ring.receive(msg, aborted, env) {
            Err(_) => self.abort(AbortCode::PROTOCOL_VIOLATION),
            Ok(Received::Switched(n)) => {
                if let Some(l) = &mut self.link {
                    l.epoch_ack_due = true;
                }
                if ring.tx_epoch() == n {
                    self.push_event(StreamEvent::Rekeyed(n));
                }
            }
            Ok(_) => {}
        }
        self.rekey_step(env);
    }

    /// After the ring changed: answer an INIT kept for later, end a grace
    /// the session has moved past.
    fn rekey_step(&mut self, env: &mut RekeyEnv<'_>) {
        if let Some(m) = self.keys.as_mut().and_then(KeyRing::take_ready_init) {
            self.on_rekey(m, env);
        }
        let epoch = self.keys.as_ref().map_or(0, KeyRing::epoch);
        if self.grace.as_ref().is_some_and(|g| epoch > g.epoch) {
            self.grace = None;
        }
    }

    /// Ask for a rekey at the next opportunity (PROTOCOL.md 6.8 rule 1).
    pub(crate) fn request_rekey(&mut self) {
        self.rekey_requested = true;
    }

    /// Test hook: answer no INIT (a peer that ignores the server's order).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn set_ignore_rekey(&mut self, ignore: bool) {
        self.ignore_rekey = ignore;
    }

    /// Whether this side may start an exchange now (rule 1): attached, the
    /// session accepted (design 4.3: no rekey before acceptance) and
    /// running, no exchange in progress.
    fn may_start_rekey(&self) -> bool {
        self.link.is_some()
            && self.abort.is_none()
            && !self.clean_reported
            && self.gate.as_deref().is_none_or(Gate::is_open)
            && self.keys.as_ref().is_some_and(KeyRing::may_start)
    }

    /// Bytes this side sent under its newest send epoch.
    fn epoch_bytes(&self) -> u64 {
        let start = self.keys.as_ref().map_or(0, KeyRing::tx_start);
        self.tx_next.saturating_sub(start)
    }

    fn epoch_since(&self) -> Option<Instant> {
        (self.epoch_since != UNSET).then_some(self.epoch_since)
    }

    /// When the soft time policy is due (the server waits 1.1 × as long).
    fn soft_deadline(&self) -> Option<Instant> {
        let since = self.epoch_since()?;
        let mut after = self.limits.rekey_after_time;
        if self.keys.as_ref().map(KeyRing::side) == Some(Side::Server) {
            after = Duration(after.0.saturating_add(after.0 / 10));
        }
        Some(since.saturating_add(after.min(self.limits.key_lifetime)))
    }

    /// When the current epoch reaches its hard time limit.
    fn hard_deadline(&self) -> Option<Instant> {
        Some(self.epoch_since()?.saturating_add(self.limits.key_lifetime))
    }

    fn hard_limit_reached(&self, now: Instant) -> bool {
        self.limits.rekey
            && (self.epoch_bytes() >= self.limits.key_lifetime_bytes
                || self.hard_deadline().is_some_and(|d| now >= d))
    }

    /// Whether a start is due now (the application asked, or the policy).
    fn rekey_start_due(&self, now: Instant) -> bool {
        self.may_start_rekey()
            && (self.rekey_requested
                || (self.limits.rekey
                    && (self.epoch_bytes() >= self.limits.rekey_after_bytes
                        || self.soft_deadline().is_some_and(|d| now >= d)
                        || self.hard_limit_reached(now))))
    }

    /// Start an exchange when one is due (the server orders it at a hard
    /// limit).
    fn maybe_start_rekey(&mut self, now: Instant, env: &mut RekeyEnv<'_>) {
        if !self.rekey_start_due(now) {
            return;
        }
        let hard = self.hard_limit_reached(now);
        let Some(ring) = self.keys.as_mut() else {
            return;
        };
        let ordered = hard && ring.side() == Side::Server;
        if ring.start(ordered, env).is_some() {
            self.rekey_requested = false;
            if let Some(l) = &mut self.link {
                l.init_sent = false;
            }
        }
    }

    /// The grace after a hard limit: armed when the limit is reached, run
    /// only while attached and the peer has read up to our INIT, and the
    /// session is aborted with `KEY_EXPIRED` when it runs out.
    fn policy_tick(&mut self, now: Instant) {
        if self.grace.is_none()
            && self.abort.is_none()
            && !self.clean_reported
            && self.hard_limit_reached(now)
        {
            let epoch = self.keys.as_ref().map_or(0, KeyRing::tx_epoch);
            self.grace = Some(Box::new(Grace {
                epoch,
                left: self.limits.rekey_grace,
                since: self.link.as_ref().map(|_| now),
                order_at: None,
            }));
        }
        let running = self.grace_running();
        let Some(g) = self.grace.as_mut() else {
            return;
        };
        if let Some(since) = g.since {
            if running {
                g.left = Duration(g.left.0.saturating_sub(now.saturating_since(since).0));
            }
        }
        g.since = self.link.as_ref().map(|_| now);
        if running && g.left.0 == 0 {
            self.grace = None;
            self.abort(AbortCode::KEY_EXPIRED);
        }
    }

    fn grace_tick(&mut self, now: Instant) {
        self.policy_tick(now);
    }

    fn grace_running(&self) -> bool {
        self.link.is_some()
            && self
                .grace
                .as_ref()
                .is_some_and(|g| g.order_at.is_none_or(|o| self.tx_acked >= o))
    }

    /// Where DATA stops for now: what was written, and the hard byte limit
    /// of the newest send epoch (back-pressure until it advances).
    fn data_cap(&self) -> u64 {
        if !self.limits.rekey {
            return self.tx_written;
        }
        let start = self.keys.as_ref().map_or(0, KeyRing::tx_start);
        self.tx_written
            .min(start.saturating_add(self.limits.key_lifetime_bytes))
    }

    /// The rekey deadlines of the current link: (policy start or hard
    /// limit, grace end).
    fn rekey_timers(&self) -> (Option<Instant>, Option<Instant>) {
        if self.link.is_none() || self.abort.is_some() || self.clean_reported {
            return (None, None);
        }
        let mut rekey = None;
        if self.limits.rekey && self.may_start_rekey() {
            rekey = self.soft_deadline();
        }
        if self.limits.rekey && self.grace.is_none() {
            rekey = crate::time::earliest(rekey, self.hard_deadline());
        }
        let expiry = if self.grace_running() {
            self.grace
                .as_ref()
                .and_then(|g| Some(g.since?.saturating_add(g.left)))
        } else {
            None
        };
        (rekey, expiry)
    }

    /// Whether a REKEY frame or an epoch ACK is due on the link.
    fn rekey_frames_due(&self, link: &Link) -> bool {
        link.epoch_ack_due
            || self.keys.as_ref().is_some_and(|r| {
                r.marker_unwritten()
                    || (!link.tx_switched && r.marker_unseen_at() == Some(self.tx_next))
                    || (!link.init_sent && r.outstanding_init().is_some())
            })
    }

    // ----- output ---------------------------------------------------------

    /// Write as many frames as fit into `out`: a due ACK, DATA, CLOSE, a
    /// keepalive PING. Returns the bytes written.
    pub(crate) fn poll_transmit(
        &mut self,
        now: Instant,
        out: &mut [u8],
        env: &mut RekeyEnv<'_>,
    ) -> usize {
        self.note_time(now);
        self.policy_tick(now);
        self.maybe_start_rekey(now, env);
        let skew = self.skew();
        let data_cap = self.data_cap();
        // Stamps are read only when a stamped frame is written (a server's
        // wall clock stays out of the DATA path).
        let ack_flags = self.ack_flags();
        let ignore_gate = self.ignores_gate();
        let stamper = Stamper {
            clock: &self.clock,
            skew,
        };
        let Some(keys) = self.keys.as_mut() else {
            return 0;
        };
        let Some(link) = self.link.as_mut() else {
            return 0;
        };
        if let Some(abort) = &mut self.abort {
            return transmit_abort(
                abort,
                link,
                keys.tx_control(link.tx_switched),
                self.tx_next,
                &self.limits,
                now,
                stamper,
                out,
            );
        }
        let mut n = 0;
        let read_count = self.rx_data + self.peer_closed as u64;
        let has_data = self.tx_next < data_cap;
        let ack_wanted = link.ack_forced
            || link.epoch_ack_due
            || read_count > link.acked_sent
                && (has_data
                    || self.peer_closed
                    || link.ack_due.is_some_and(|d| d <= now)
                    || read_count - link.acked_sent >= self.limits.ack_threshold);
        if ack_wanted && out.len() >= FRAME_OVERHEAD + ACK_PAYLOAD_LEN {
            let payload = AckFrame {
                read_count,
                rx_epoch: keys.rx_epoch(),
                flags: ack_flags,
            }
            .encode();
            n += seal_control(
                link,
                keys.tx_control(link.tx_switched),
                self.tx_next,
                FrameType::Ack,
                &payload,
                out,
            );
            link.acked_sent = read_count;
            link.ack_due = None;
            link.epoch_ack_due = false;
            link.ack_forced = false;
        }
        let mut rekeyed = None;
        let mut switched = false;
        let mut data_ok;
        loop {
            // Rekey frames (PROTOCOL.md 6.8 rule 6): a due marker, then a due INIT.
            let w = transmit_rekey(keys, link, self.tx_next, &stamper, now, &mut out[n..]);
            n += w.len;
            rekeyed = rekeyed.or(w.rekeyed);
            switched |= w.switched;
            if let (Some(at), Some(g)) = (w.init_at, self.grace.as_mut()) {
                g.order_at = Some(at);
            }
            // Then the gate frame (CREDENTIAL or ACCEPT), once per link.
            n += transmit_gate(
                self.gate.as_deref_mut(),
                link,
                keys.tx_control(link.tx_switched),
                self.tx_next,
                || stamper.at(now),
                &mut out[n..],
            );
            data_ok = gate_allows_data(self.gate.as_deref(), link.auth_sent, ignore_gate);
            if !data_ok {
                break;
            }
            // DATA up to the cap: a switch point whose marker this link has
            // not carried yet, the hard byte limit of the epoch.
            let cap = match keys.marker_unseen_at() {
                Some(s) if !link.tx_switched => data_cap.min(s),
                _ => data_cap,
            };
            send_data(
                &mut self.tx_next,
                &self.tx,
                self.tx_acked,
                self.tx_written,
                keys,
                link,
                cap,
                self.limits.max_frame_payload,
                &mut n,
                out,
                &mut self.keystream_log,
            );
            let resend_due = !link.tx_switched && keys.marker_unseen_at() == Some(self.tx_next);
            if !resend_due || out.len() - n < FRAME_OVERHEAD + REKEY_INIT_PAYLOAD_LEN {
                break;
            }
        }
        if let Some(code) = link.answer_abort {
            if out.len() - n >= FRAME_OVERHEAD + ABORT_PAYLOAD_LEN {
                let payload = AbortFrame {
                    code,
                    time: stamper.at(now),
                }
                .encode();
                n += seal_control(
                    link,
                    keys.tx_control(link.tx_switched),
                    self.tx_next,
                    FrameType::Abort,
                    &payload,
                    &mut out[n..],
                );
                link.answer_abort = None;
            }
        }
        if data_ok
            && self.closing
            && !link.close_sent
            && self.tx_next == self.tx_written
            && out.len() - n >= FRAME_OVERHEAD + CLOSE_PAYLOAD_LEN
        {
            n += seal_control(
                link,
                keys.tx_control(link.tx_switched),
                self.tx_next,
                FrameType::Close,
                &StampFrame {
                    time: stamper.at(now),
                }
                .encode(),
                &mut out[n..],
            );
            link.close_sent = true;
            self.close_ever_sent = true;
        }
        if n == 0
            && (link.ping_now || now >= link.last_tx.saturating_add(self.limits.keepalive_interval))
            && out.len() >= FRAME_OVERHEAD + PING_PAYLOAD_LEN
        {
            n += seal_control(
                link,
                keys.tx_control(link.tx_switched),
                self.tx_next,
                FrameType::Ping,
                &StampFrame {
                    time: stamper.at(now),
                }
                .encode(),
                out,
            );
        }
        if n > 0 {
            link.ping_now = false;
        }
        if n > 0 {
            link.last_tx = now;
        }
        if switched {
            self.epoch_since = now;
        }
        if let Some(e) = rekeyed {
            self.push_event(StreamEvent::Rekeyed(e));
        }
        n
    }

    /// Whether `poll_transmit` would write something right now.
    pub(crate) fn wants_transmit(&self, now: Instant) -> bool {
        let Some(link) = self.link.as_ref() else {
            return false;
        };
        if self.abort.is_some() {
            return !link.abort_sent
                || now >= link.last_tx.saturating_add(self.limits.keepalive_interval);
        }
        let rc = self.read_count();
        let data_ok = self.data_may_flow();
        (data_ok && self.tx_next < self.data_cap())
            || self.rekey_frames_due(link)
            || self.rekey_start_due(now)
            || link.answer_abort.is_some()
            || link.ack_forced
            || self.gate_frame_due()
            || (data_ok && self.closing && !link.close_sent && self.tx_next == self.tx_written)
            || (rc > link.acked_sent
                && (self.peer_closed
                    || link.ack_due.is_some_and(|d| d <= now)
                    || rc - link.acked_sent >= self.limits.ack_threshold))
            || link.ping_now
            || now >= link.last_tx.saturating_add(self.limits.keepalive_interval)
    }

    // ----- timers ---------------------------------------------------------

    /// The link's deadlines by kind (all `None` without a link).
    pub(crate) fn timers(&self) -> LinkTimers {
        let Some(link) = self.link.as_ref() else {
            return LinkTimers::default();
        };
        let ack = if self.read_count() > link.acked_sent && self.abort.is_none() {
            link.ack_due
        } else {
            None
        };
        let (rekey, key_expiry) = self.rekey_timers();
        LinkTimers {
            ack,
            keepalive: Some(link.last_tx.saturating_add(self.limits.keepalive_interval)),
            idle: (!link.held_back).then(|| link.last_rx.saturating_add(self.limits.idle_timeout)),
            rekey,
            key_expiry,
        }
    }

    /// `Err(TimedOut)` when nothing arrived within the idle timeout: the
    /// caller ends the link.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        self.note_time(now);
        self.policy_tick(now);
        if let Some(link) = &self.link {
            if !link.held_back && now >= link.last_rx.saturating_add(self.limits.idle_timeout) {
                return Err(Error::TimedOut);
            }
            if now >= link.last_tx.saturating_add(self.limits.keepalive_interval)
                && self.tx.is_empty()
                && self.rx.is_empty()
            {
                self.trim();
            }
        }
        Ok(())
    }
}

/// Write DATA frames from `tx_next` up to `cap` into `out[*n..]`, each
/// under the epoch that covers its offset and never across a switch point
/// (PROTOCOL.md 5.5). `tx` holds the stream from offset
/// `min(tx_acked, tx_written)`.
#[allow(clippy::too_many_arguments)]
fn send_data(
    tx_next: &mut u64,
    tx: &VecDeque<u8>,
    tx_acked: u64,
    tx_written: u64,
    ring: &mut KeyRing,
    link: &mut Link,
    cap: u64,
    max_frame_payload: usize,
    n: &mut usize,
    out: &mut [u8],
    log: &mut KeystreamLog,
) {
    #[cfg(not(feature = "test-hooks"))]
    let () = *log;
    while *tx_next < cap && out.len() - *n > FRAME_OVERHEAD {
        let (keys, switch) = ring.tx_data(*tx_next);
        let avail = (cap.min(switch) - *tx_next) as usize;
        let len = avail
            .min(max_frame_payload)
            .min(out.len() - *n - FRAME_OVERHEAD);
        let frame = &mut out[*n..*n + FRAME_OVERHEAD + len];
        let header = FrameHeader {
            frame_type: FrameType::Data,
            len,
        }
        .encode();
        frame[..FRAME_HEADER_LEN].copy_from_slice(&header);
        let start = (*tx_next - tx_acked.min(tx_written)) as usize;
        let (a, b) = tx.as_slices();
        let body = &mut frame[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
        let mut done = 0;
        if start < a.len() {
            let k = (a.len() - start).min(len);
            keys.apply_keystream_b2b(*tx_next, &a[start..start + k], &mut body[..k]);
            done = k;
        }
        if done < len {
            let bstart = start + done - a.len();
            keys.apply_keystream_b2b(
                *tx_next + done as u64,
                &b[bstart..bstart + (len - done)],
                &mut body[done..],
            );
        }
        #[cfg(feature = "test-hooks")]
        if let Some(log) = log.as_mut() {
            let id = keys.key_id();
            let plain = tx.range(start..start + len);
            log.extend(
                plain
                    .enumerate()
                    .map(|(i, &b)| (id, *tx_next + i as u64, b)),
            );
        }
        let aad = FrameAad {
            generation: link.generation,
            sequence: link.tx_seq,
            offset: *tx_next,
            header,
        };
        let tag = keys.frame_tag(&aad, &frame[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len]);
        frame[FRAME_HEADER_LEN + len..].copy_from_slice(&tag);
        link.tx_seq += 1;
        *tx_next += len as u64;
        *n += FRAME_OVERHEAD + len;
    }
}

/// What [`transmit_rekey`] wrote.
struct RekeyWrite {
    len: usize,
    /// Both directions reached this epoch (the initiator wrote its SWITCH).
    rekeyed: Option<u32>,
    /// This side's send direction switched (its marker's first write).
    switched: bool,
    /// Our INIT went out at this data offset.
    init_at: Option<u64>,
}

/// Write the due REKEY frames (PROTOCOL.md 6.8 rule 6): our switch marker
/// (the first time, fixing `S = tx_next`, or re-sent at `S` on a link whose
/// peer has not seen it), then our outstanding INIT (once per link). Each
/// is tagged under the link's current send epoch, the marker under the old
/// one.
fn transmit_rekey(
    ring: &mut KeyRing,
    link: &mut Link,
    tx_next: u64,
    stamper: &Stamper<'_>,
    now: Instant,
    out: &mut [u8],
) -> RekeyWrite {
    let mut w = RekeyWrite {
        len: 0,
        rekeyed: None,
        switched: false,
        init_at: None,
    };
    let first = ring.marker_unwritten();
    let resend = !link.tx_switched && ring.marker_unseen_at() == Some(tx_next);
    if let Some(m) = ring.marker().filter(|_| first || resend) {
        let (frame_type, payload, len) = encode_rekey(m, stamper.at(now));
        if out.len() >= FRAME_OVERHEAD + len {
            let keys = ring.tx_control(link.tx_switched);
            w.len += seal_control(link, keys, tx_next, frame_type, &payload[..len], out);
            if first {
                w.rekeyed = ring.marker_written(tx_next);
                w.switched = true;
            }
            link.tx_switched = true;
        }
    }
    if let Some(m) = ring.outstanding_init().filter(|_| !link.init_sent) {
        let (frame_type, payload, len) = encode_rekey(m, stamper.at(now));
        if out.len() - w.len >= FRAME_OVERHEAD + len {
            let keys = ring.tx_control(link.tx_switched);
            let out = &mut out[w.len..];
            w.len += seal_control(link, keys, tx_next, frame_type, &payload[..len], out);
            link.init_sent = true;
            w.init_at = Some(tx_next);
        }
    }
    w
}

/// A REKEY_* frame's type and payload (stamped with `time`).
fn encode_rekey(m: RekeyMsg, time: u64) -> (FrameType, [u8; REKEY_INIT_PAYLOAD_LEN], usize) {
    let mut p = [0u8; REKEY_INIT_PAYLOAD_LEN];
    let (t, len) = match m {
        RekeyMsg::Init { n, ordered, public } => {
            let b = RekeyInit {
                new_epoch: n,
                flags: if ordered { REKEY_FLAG_ORDERED } else { 0 },
                ephemeral_public: public,
                time,
            }
            .encode();
            p[..b.len()].copy_from_slice(&b);
            (FrameType::RekeyInit, b.len())
        }
        RekeyMsg::Reply { n, public } => {
            let b = RekeyReply {
                new_epoch: n,
                ephemeral_public: public,
                time,
            }
            .encode();
            p[..b.len()].copy_from_slice(&b);
            (FrameType::RekeyReply, b.len())
        }
        RekeyMsg::Switch { n } => {
            let b = RekeySwitch { new_epoch: n, time }.encode();
            p[..b.len()].copy_from_slice(&b);
            (FrameType::RekeySwitch, b.len())
        }
    };
    (t, p, len)
}

/// What an aborted stream writes: its ABORT (or its answer to the peer's)
/// once per link, then only keepalive PINGs while it waits for the peer's
/// answer. The answer is repeated on every link because the aborting peer
/// resends its ABORT after a resume until it sees one.
#[allow(clippy::too_many_arguments)]
fn transmit_abort(
    abort: &mut Abort,
    link: &mut Link,
    keys: &DirectionKeys,
    offset: u64,
    limits: &StreamLimits,
    now: Instant,
    stamper: Stamper<'_>,
    out: &mut [u8],
) -> usize {
    let n = if !link.abort_sent && out.len() >= FRAME_OVERHEAD + ABORT_PAYLOAD_LEN {
        link.abort_sent = true;
        if abort.by_peer {
            abort.done = true;
        }
        let payload = AbortFrame {
            code: abort.code,
            time: stamper.at(now),
        }
        .encode();
        seal_control(link, keys, offset, FrameType::Abort, &payload, out)
    } else if now >= link.last_tx.saturating_add(limits.keepalive_interval)
        && out.len() >= FRAME_OVERHEAD + PING_PAYLOAD_LEN
    {
        let payload = StampFrame {
            time: stamper.at(now),
        }
        .encode();
        seal_control(link, keys, offset, FrameType::Ping, &payload, out)
    } else {
        0
    };
    if n > 0 {
        link.last_tx = now;
        link.ping_now = false;
    }
    n
}

/// Write a control frame (ACK, PING, CLOSE, ABORT): authenticated, not encrypted
/// (its payload is counters and a time stamp, nothing secret).
fn seal_control(
    link: &mut Link,
    keys: &DirectionKeys,
    offset: u64,
    frame_type: FrameType,
    payload: &[u8],
    out: &mut [u8],
) -> usize {
    let header = FrameHeader {
        frame_type,
        len: payload.len(),
    }
    .encode();
    let len = FRAME_OVERHEAD + payload.len();
    out[..FRAME_HEADER_LEN].copy_from_slice(&header);
    out[FRAME_HEADER_LEN..FRAME_HEADER_LEN + payload.len()].copy_from_slice(payload);
    let aad = FrameAad {
        generation: link.generation,
        sequence: link.tx_seq,
        offset,
        header,
    };
    let tag = keys.frame_tag(&aad, payload);
    out[FRAME_HEADER_LEN + payload.len()..len].copy_from_slice(&tag);
    link.tx_seq += 1;
    len
}

/// Grow `dq` to hold `additional` more bytes, doubling but never beyond `cap`.
fn reserve_bounded(dq: &mut VecDeque<u8>, additional: usize, cap: usize) {
    let need = dq.len() + additional;
    if dq.capacity() >= need {
        return;
    }
    let target = (dq.capacity() * 2).max(need).max(4096).min(cap.max(need));
    dq.reserve_exact(target - dq.len());
}

/// Decrypt in place the last `n` bytes of `dq`, which start at stream offset `offset`.
fn decrypt_tail(dq: &mut VecDeque<u8>, n: usize, keys: &mut DirectionKeys, offset: u64) {
    let total = dq.len();
    let (a, b) = dq.as_mut_slices();
    let start = total - n;
    if start >= a.len() {
        let s = start - a.len();
        keys.apply_keystream(offset, &mut b[s..]);
    } else {
        let first = a.len() - start;
        keys.apply_keystream(offset, &mut a[start..]);
        keys.apply_keystream(offset + first as u64, b);
    }
}

fn arr4(b: &[u8]) -> [u8; 4] {
    [b[0], b[1], b[2], b[3]]
}

fn arr16(b: &[u8]) -> [u8; TAG_LEN] {
    let mut a = [0u8; TAG_LEN];
    a.copy_from_slice(&b[..TAG_LEN]);
    a
}

// ----- acceptance gate (client credentials, PROTOCOL.md 6.9) ----------------

/// The acceptance gate of a session whose server decides on its clients
/// (ServerHello flag `CLIENT_AUTH`); a stream without one has `None`.
/// While the gate is closed neither side writes DATA or CLOSE, and either
/// side aborts with `PROTOCOL_VIOLATION` when the peer does. Boxed in the
/// stream: an ungated session pays one pointer.
#[derive(Debug)]
pub(crate) enum Gate {
    /// Client, until the server's ACCEPT verified: the CREDENTIAL payload
    /// (encrypted once; the same bytes on every link) and the key of the
    /// ACCEPT's token.
    ClientWaiting { credential: Vec<u8>, grant: Secret },
    /// Client: ACCEPT verified. `news` holds the (decrypted) token until
    /// the client reported the acceptance.
    ClientAccepted { news: Option<Option<Vec<u8>>> },
    /// Server, until the CREDENTIAL verified: its key.
    ServerWaiting { cred: Secret },
    /// Server: the CREDENTIAL verified and was decrypted; the connection
    /// takes it (`take_arrived_credential`).
    ServerArrived(CredentialPayload),
    /// Server: the application decides.
    ServerDeciding,
    /// Server: accepted. `pending` is the ACCEPT frame's encrypted token
    /// (maybe empty), re-sent on every link until an ACK with `ACCEPTED`
    /// verified; `None` after.
    ServerAccepted { pending: Option<Vec<u8>> },
}

impl Gate {
    /// Whether application data (and CLOSE) may flow.
    fn is_open(&self) -> bool {
        matches!(
            self,
            Gate::ClientAccepted { .. } | Gate::ServerAccepted { .. }
        )
    }
}

impl Stream {
    /// Test hook: write DATA and CLOSE whatever the gate says (a client
    /// that breaks the protocol).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn set_ignore_gate(&mut self, ignore: bool) {
        self.ignore_gate = ignore;
    }

    /// Install the acceptance gate (at session start).
    pub(crate) fn set_gate(&mut self, gate: Gate) {
        self.gate = Some(Box::new(gate));
    }

    /// Whether the session is accepted (always, without a gate).
    pub(crate) fn is_accepted(&self) -> bool {
        self.gate.as_deref().is_none_or(Gate::is_open)
    }

    /// Server: whether the client's CREDENTIAL has not verified yet.
    pub(crate) fn awaits_credential(&self) -> bool {
        matches!(self.gate.as_deref(), Some(Gate::ServerWaiting { .. }))
    }

    /// Server: the client's credential, once, right after it verified.
    pub(crate) fn take_arrived_credential(&mut self) -> Option<CredentialPayload> {
        let gate = self.gate.as_deref_mut()?;
        if !matches!(gate, Gate::ServerArrived(_)) {
            return None;
        }
        match core::mem::replace(gate, Gate::ServerDeciding) {
            Gate::ServerArrived(p) => Some(p),
            _ => None,
        }
    }

    /// Server: the application accepted; `token` is the ACCEPT frame's
    /// encrypted token (may be empty). `InvalidState` unless deciding.
    pub(crate) fn accept_client(&mut self, token: Vec<u8>) -> Result<(), Error> {
        match self.gate.as_deref_mut() {
            Some(g @ Gate::ServerDeciding) => {
                *g = Gate::ServerAccepted {
                    pending: Some(token),
                };
                Ok(())
            }
            _ => Err(Error::InvalidState),
        }
    }

    /// Client: the server's ACCEPT, once, right after it verified: the
    /// token it carried, if any.
    pub(crate) fn take_accept_news(&mut self) -> Option<Option<Vec<u8>>> {
        match self.gate.as_deref_mut() {
            Some(Gate::ClientAccepted { news }) => news.take(),
            _ => None,
        }
    }

    /// The flags of this side's ACKs: `ACCEPTED` on an accepted client.
    fn ack_flags(&self) -> u8 {
        match self.gate.as_deref() {
            Some(Gate::ClientAccepted { .. }) => ACK_FLAG_ACCEPTED,
            _ => 0,
        }
    }

    /// Check a verified ACK's flags: only a client sets `ACCEPTED`, and
    /// only after the server accepted it; the server then drops its copy
    /// of the ACCEPT frame.
    fn note_ack_flags(&mut self, flags: u8) -> Result<(), Error> {
        if flags == 0 {
            return Ok(());
        }
        match self.gate.as_deref_mut() {
            Some(Gate::ServerAccepted { pending }) if flags == ACK_FLAG_ACCEPTED => {
                *pending = None;
                Ok(())
            }
            _ => Err(ProtocolError::BadAck.into()),
        }
    }

    /// A verified CREDENTIAL (server) or ACCEPT (client) frame: the first
    /// one moves the gate, duplicates (re-sends after a break) are ignored;
    /// one in the wrong direction, without a gate, or malformed is a
    /// protocol violation.
    fn open_gate_frame(&mut self, frame_type: FrameType, body: &[u8]) {
        let ok = match (frame_type, self.gate.as_deref_mut()) {
            (FrameType::Credential, Some(g @ Gate::ServerWaiting { .. })) => {
                let Gate::ServerWaiting { cred } = &*g else {
                    return;
                };
                match decode_credential(body, cred) {
                    Some(p) => {
                        *g = Gate::ServerArrived(p);
                        true
                    }
                    None => false,
                }
            }
            (
                FrameType::Credential,
                Some(Gate::ServerArrived(_) | Gate::ServerDeciding | Gate::ServerAccepted { .. }),
            ) => true,
            (FrameType::Accept, Some(g @ Gate::ClientWaiting { .. })) => {
                let Gate::ClientWaiting { grant, .. } = &*g else {
                    return;
                };
                match decode_accept(body, grant) {
                    Some((_time, token)) => {
                        *g = Gate::ClientAccepted { news: Some(token) };
                        // The ACK with ACCEPTED is due at once.
                        if let Some(l) = &mut self.link {
                            l.ack_forced = true;
                        }
                        true
                    }
                    None => false,
                }
            }
            (FrameType::Accept, Some(Gate::ClientAccepted { .. })) => {
                // A re-sent ACCEPT: our ACK with ACCEPTED was lost; repeat it
                // so that the server can drop its copy.
                if let Some(l) = &mut self.link {
                    l.ack_forced = true;
                }
                true
            }
            _ => false,
        };
        if !ok {
            self.abort(AbortCode::PROTOCOL_VIOLATION);
        }
    }

    /// Whether `poll_transmit` owes the link a gate frame now.
    fn gate_frame_due(&self) -> bool {
        let sent = self.link.as_ref().is_none_or(|l| l.auth_sent);
        !sent
            && matches!(
                self.gate.as_deref(),
                Some(Gate::ClientWaiting { .. } | Gate::ServerAccepted { pending: Some(_) })
            )
    }

    /// Whether DATA and CLOSE may be written on the current link now: the
    /// gate is open and a pending ACCEPT already went out on this link (the
    /// server's data follows its ACCEPT in frame order).
    fn data_may_flow(&self) -> bool {
        let sent = self.link.as_ref().is_some_and(|l| l.auth_sent);
        gate_allows_data(self.gate.as_deref(), sent, self.ignores_gate())
    }

    #[cfg(feature = "test-hooks")]
    fn ignores_gate(&self) -> bool {
        self.ignore_gate
    }

    #[cfg(not(feature = "test-hooks"))]
    fn ignores_gate(&self) -> bool {
        false
    }
}

/// Whether DATA and CLOSE may be written (see [`Stream::data_may_flow`]);
/// `auth_sent`: the link's gate frame went out.
fn gate_allows_data(gate: Option<&Gate>, auth_sent: bool, ignore: bool) -> bool {
    match gate {
        _ if ignore => true,
        None | Some(Gate::ClientAccepted { .. }) => true,
        Some(Gate::ServerAccepted { pending: None }) => true,
        Some(Gate::ServerAccepted { pending: Some(_) }) => auth_sent,
        Some(_) => false,
    }
}

/// A verified DATA or CLOSE frame from the peer before acceptance: a
/// protocol violation, this side aborts with `PROTOCOL_VIOLATION` (field by
/// field, so that `open_frame` can check while it holds the link). Returns
/// whether it was one.
fn gate_violation(gate: Option<&Gate>, abort: &mut Option<Abort>) -> bool {
    if gate.is_none_or(Gate::is_open) {
        return false;
    }
    if abort.is_none() {
        *abort = Some(Abort {
            code: AbortCode::PROTOCOL_VIOLATION,
            by_peer: false,
            done: false,
        });
    }
    true
}

/// Write the link's gate frame, if one is due: the client's CREDENTIAL
/// (the first frame of every link until ACCEPT) or the server's ACCEPT
/// (once per link until its ACK). Returns the bytes written (0 when none is
/// due or `out` is too small: nothing gated goes out before it).
fn transmit_gate(
    gate: Option<&mut Gate>,
    link: &mut Link,
    keys: &DirectionKeys,
    offset: u64,
    time: impl FnOnce() -> u64,
    out: &mut [u8],
) -> usize {
    if link.auth_sent {
        return 0;
    }
    let mut accept = [0u8; 8 + MAX_TOKEN_LEN];
    let (frame_type, payload): (FrameType, &[u8]) = match gate {
        Some(Gate::ClientWaiting { credential, .. }) => (FrameType::Credential, credential),
        Some(Gate::ServerAccepted {
            pending: Some(token),
        }) => {
            let len = 8 + token.len().min(MAX_TOKEN_LEN);
            // The clock is read only when an ACCEPT is written.
            accept[..8].copy_from_slice(&time().to_le_bytes());
            accept[8..len].copy_from_slice(&token[..len - 8]);
            (FrameType::Accept, &accept[..len])
        }
        _ => return 0,
    };
    if out.len() < FRAME_OVERHEAD + payload.len() {
        return 0;
    }
    link.auth_sent = true;
    seal_control(link, keys, offset, frame_type, payload, out)
}

// ----- end acceptance gate ----------------------------------------------------
