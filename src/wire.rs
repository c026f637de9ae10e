//! Wire format: byte layouts of every message and frame, encoded and decoded
//! without any cryptography. This is what the fuzzers hit. Layouts are
//! specified in `docs/PROTOCOL.md`; every integer is little-endian.

use crate::error::ProtocolError;

/// The only protocol version this crate speaks.
pub const VERSION: u8 = 2;
/// First byte of a transport that opens a new session.
pub const TAG_NEW: u8 = 0x00;
/// First byte of a transport that resumes a session.
pub const TAG_RESUME: u8 = 0xFF;
/// First byte of a ClientHello that carries a cookie (PROTOCOL.md 3.7).
pub const TAG_NEW_COOKIE: u8 = 0x01;
/// Length of a cookie (PROTOCOL.md 3.7).
pub const COOKIE_LEN: usize = 16;
/// Length of a MAC tag on the wire.
pub const TAG_LEN: usize = 16;
/// Largest DATA payload any peer may send.
pub const MAX_FRAME_PAYLOAD: usize = 16 * 1024;
/// Frame header: type (1), flags (1), payload length (2).
pub const FRAME_HEADER_LEN: usize = 4;
/// Header plus tag.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_LEN + TAG_LEN;

/// ClientHello length: tag, version, flags, ephemeral key, time.
pub const CLIENT_HELLO_LEN: usize = 1 + 1 + 1 + 32 + 8;
/// Length of a ClientHello with a cookie: the hello (tag `0x01`) then the
/// cookie (PROTOCOL.md 3.7).
pub const CLIENT_HELLO_COOKIE_LEN: usize = CLIENT_HELLO_LEN + COOKIE_LEN;
/// ServerHello (accepted) length: version, status, ephemeral key,
/// challenge, server time, resume timeout, flags, encrypted connection id,
/// encrypted reset token, confirm.
pub const SERVER_HELLO_LEN: usize = 1 + 1 + 32 + 16 + 8 + 8 + 1 + 8 + TAG_LEN + TAG_LEN;
/// Bytes of the ServerHello covered by the key derivation (everything
/// before the encrypted connection id, the flags byte included).
pub const SERVER_HELLO_KEYED_PREFIX: usize = 1 + 1 + 32 + 16 + 8 + 8 + 1;
/// ClientConfirm length.
pub const CLIENT_CONFIRM_LEN: usize = TAG_LEN;
/// ResumeRequest length: tag, version, connection id, counter, client
/// written, client read, time, receive epoch, MAC.
pub const RESUME_REQUEST_LEN: usize = 1 + 1 + 8 + 8 + 8 + 8 + 8 + 4 + TAG_LEN;
/// ResumeResponse (accepted) length: version, status, server written,
/// server read, server time, resume timeout, receive epoch, MAC.
pub const RESUME_RESPONSE_LEN: usize = 1 + 1 + 8 + 8 + 8 + 8 + 4 + TAG_LEN;
/// Length of a rejection that carries no MAC (version and status).
pub const REJECT_LEN: usize = 2;
/// Length of the hello rejection Stale: version, status 5, the server's
/// clock (µs) for the client's next hello (PROTOCOL.md 3.2).
pub const HELLO_STALE_LEN: usize = 2 + 8;
/// Length of the Cookie answer to a hello (`version ‖ 07 ‖ cookie`,
/// PROTOCOL.md 3.7).
pub const HELLO_COOKIE_LEN: usize = 2 + COOKIE_LEN;
/// Length of an "unknown session" answer: version, status, the session's
/// reset token (PROTOCOL.md 3.6).
pub const REJECT_TOKEN_LEN: usize = 2 + TAG_LEN;
/// Length of a rejection that carries a MAC: version, status, the server's
/// clock (µs), MAC.
pub const REJECT_AUTH_LEN: usize = 2 + 8 + TAG_LEN;
/// Payload length of an ACK frame: read count `u64`, receive epoch `u32`,
/// flags `u8`.
pub const ACK_PAYLOAD_LEN: usize = 8 + 4 + 1;
/// Payload length of a PING frame (the sender's time, `u64`).
pub const PING_PAYLOAD_LEN: usize = 8;
/// Payload length of a CLOSE frame (the sender's time, `u64`).
pub const CLOSE_PAYLOAD_LEN: usize = 8;
/// Payload length of an ABORT frame: the reason code `u32`, the sender's
/// time `u64`.
pub const ABORT_PAYLOAD_LEN: usize = 4 + 8;
/// Payload length of a REKEY_INIT frame: new epoch `u32`, flags `u8`,
/// ephemeral public key, time `u64`.
pub const REKEY_INIT_PAYLOAD_LEN: usize = 4 + 1 + 32 + 8;
/// Payload length of a REKEY_REPLY frame: new epoch `u32`, ephemeral
/// public key, time `u64`.
pub const REKEY_REPLY_PAYLOAD_LEN: usize = 4 + 32 + 8;
/// Payload length of a REKEY_SWITCH frame: new epoch `u32`, time `u64`.
pub const REKEY_SWITCH_PAYLOAD_LEN: usize = 4 + 8;
/// Largest credential a CREDENTIAL frame carries (bytes after its kind).
pub const MAX_CREDENTIAL_LEN: usize = 512;
/// Largest token an ACCEPT frame carries (bytes after its time).
pub const MAX_TOKEN_LEN: usize = 512;

/// ClientHello flag: the client mixes the server's pinned static key.
pub const FLAG_PINNED: u8 = 0x01;
/// ServerHello flag: the server decides on every session before data
/// flows; the client sends a CREDENTIAL frame first (PROTOCOL.md 3.3).
pub const SH_FLAG_CLIENT_AUTH: u8 = 0x01;
/// ServerHello flag bits this crate knows; a client refuses an answer with
/// any other bit set.
pub const SH_FLAGS_KNOWN: u8 = SH_FLAG_CLIENT_AUTH;
/// ACK flag (client only): the client verified the server's ACCEPT.
pub const ACK_FLAG_ACCEPTED: u8 = 0x01;
/// REKEY_INIT flag (server only): the server orders the rekey (its key
/// reached a hard limit).
pub const REKEY_FLAG_ORDERED: u8 = 0x01;

/// Status byte of a ServerHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeStatus {
    /// Handshake accepted.
    Ok,
    /// The server does not speak the client's version.
    UnsupportedVersion,
    /// The client asked for the static key but the server has none.
    NoStaticKey,
    /// The server has reached its session limit.
    Busy,
    /// The client's hello was malformed.
    Malformed,
    /// The hello's time is outside the server's window (or not newer than
    /// its replay cache's floor); the answer carries the server's clock
    /// ([`HelloStale`]). Retry with a new hello.
    Stale,
    /// The hello was seen before within the window (a replay). Retry with a
    /// new hello.
    Replayed,
    /// The server is under load and wants the hello again with the cookie
    /// this answer carries ([`HelloCookie`], PROTOCOL.md 3.7). The client
    /// core repeats its hello on the same transport by itself; the status
    /// reaches the application only when a hello that carried a cookie got
    /// another (retry on a new transport).
    Cookie,
}

impl HandshakeStatus {
    /// Wire value.
    pub fn to_byte(self) -> u8 {
        match self {
            HandshakeStatus::Ok => 0,
            HandshakeStatus::UnsupportedVersion => 1,
            HandshakeStatus::NoStaticKey => 2,
            HandshakeStatus::Busy => 3,
            HandshakeStatus::Malformed => 4,
            HandshakeStatus::Stale => 5,
            HandshakeStatus::Replayed => 6,
            HandshakeStatus::Cookie => 7,
        }
    }
    /// Parse a wire value.
    pub fn from_byte(b: u8) -> Result<Self, ProtocolError> {
        Ok(match b {
            0 => HandshakeStatus::Ok,
            1 => HandshakeStatus::UnsupportedVersion,
            2 => HandshakeStatus::NoStaticKey,
            3 => HandshakeStatus::Busy,
            4 => HandshakeStatus::Malformed,
            5 => HandshakeStatus::Stale,
            6 => HandshakeStatus::Replayed,
            7 => HandshakeStatus::Cookie,
            _ => return Err(ProtocolError::UnknownStatus(b)),
        })
    }
}

impl HandshakeStatus {
    /// Whether the client retries at once with a new hello (Busy, Stale,
    /// Replayed, Cookie); the other rejections end the client for good.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            HandshakeStatus::Busy
                | HandshakeStatus::Stale
                | HandshakeStatus::Replayed
                | HandshakeStatus::Cookie
        )
    }
}

/// Status byte of a ResumeResponse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResumeStatus {
    /// Resume accepted.
    Ok,
    /// The server does not speak the client's version.
    UnsupportedVersion,
    /// No such session (never existed, expired or closed): start a new one.
    UnknownSession,
    /// The request's MAC did not verify (maybe corrupted in transit): retry.
    AuthFailed,
    /// The request's counter was not greater than the last accepted: a replay.
    Replayed,
    /// The request's time is outside the server's window.
    Stale,
    /// The byte counts cannot be reconciled: the data is gone. Start a new session.
    DataUnavailable,
    /// The request was malformed.
    Malformed,
}

impl ResumeStatus {
    /// Wire value.
    pub fn to_byte(self) -> u8 {
        match self {
            ResumeStatus::Ok => 0,
            ResumeStatus::UnsupportedVersion => 1,
            ResumeStatus::UnknownSession => 2,
            ResumeStatus::AuthFailed => 3,
            ResumeStatus::Replayed => 4,
            ResumeStatus::Stale => 5,
            ResumeStatus::DataUnavailable => 6,
            ResumeStatus::Malformed => 7,
        }
    }
    /// Parse a wire value.
    pub fn from_byte(b: u8) -> Result<Self, ProtocolError> {
        Ok(match b {
            0 => ResumeStatus::Ok,
            1 => ResumeStatus::UnsupportedVersion,
            2 => ResumeStatus::UnknownSession,
            3 => ResumeStatus::AuthFailed,
            4 => ResumeStatus::Replayed,
            5 => ResumeStatus::Stale,
            6 => ResumeStatus::DataUnavailable,
            7 => ResumeStatus::Malformed,
            _ => return Err(ProtocolError::UnknownStatus(b)),
        })
    }
    /// Whether a rejection with this status carries a MAC (the server had
    /// verified the request before rejecting it).
    pub fn is_authenticated(self) -> bool {
        matches!(
            self,
            ResumeStatus::Replayed | ResumeStatus::Stale | ResumeStatus::DataUnavailable
        )
    }
    /// Whether the client may retry resuming on a new transport.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ResumeStatus::AuthFailed | ResumeStatus::Replayed | ResumeStatus::Stale
        )
    }
}

/// What the server said, for people: `the server has no static key to
/// prove`.
impl core::fmt::Display for HandshakeStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            HandshakeStatus::Ok => "accepted",
            HandshakeStatus::UnsupportedVersion => {
                "the server does not speak this protocol version"
            }
            HandshakeStatus::NoStaticKey => {
                "the server has no static key to prove (it is anonymous)"
            }
            HandshakeStatus::Busy => "the server has reached its session limit",
            HandshakeStatus::Malformed => "the server found the hello malformed",
            HandshakeStatus::Stale => {
                "stale: the hello's time is outside the server's window (clocks apart)"
            }
            HandshakeStatus::Replayed => "replayed: the server saw this hello before",
            HandshakeStatus::Cookie => {
                "the server is under load and did not accept the hello's cookie"
            }
        })
    }
}

/// What the server said, for people: `stale: the request's time is
/// outside the server's window`.
impl core::fmt::Display for ResumeStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ResumeStatus::Ok => "accepted",
            ResumeStatus::UnsupportedVersion => "the server does not speak this protocol version",
            ResumeStatus::UnknownSession => {
                "the server does not know the session (expired or closed)"
            }
            ResumeStatus::AuthFailed => "the request failed authentication",
            ResumeStatus::Replayed => "replayed: the request's counter was not new",
            ResumeStatus::Stale => {
                "stale: the request's time is outside the server's window (clocks apart)"
            }
            ResumeStatus::DataUnavailable => {
                "the bytes to resend are no longer held: the data is gone"
            }
            ResumeStatus::Malformed => "the server found the request malformed",
        })
    }
}

/// Why a session was aborted: the code an ABORT frame carries
/// (PROTOCOL.md 6.6). Codes below 0x100 are relink's; the application may
/// use any value from [`AbortCode::APPLICATION_MIN`] up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AbortCode(pub u32);

impl AbortCode {
    /// The application aborted without a more specific reason.
    pub const APPLICATION: AbortCode = AbortCode(0);
    /// The application dropped its stream without closing it.
    pub const DROPPED: AbortCode = AbortCode(1);
    /// The application can take no more data (e.g. its output is a broken pipe).
    pub const CANNOT_RECEIVE: AbortCode = AbortCode(2);
    /// The process was interrupted (SIGINT, SIGTERM).
    pub const INTERRUPTED: AbortCode = AbortCode(3);
    /// A tunnelled TCP connection was reset.
    pub const TARGET_RESET: AbortCode = AbortCode(4);
    /// Server: the application rejected the client's credential, or none
    /// arrived in time.
    pub const CREDENTIAL_REJECTED: AbortCode = AbortCode(5);
    /// Server: the presented token does not verify under this server's key.
    pub const TOKEN_INVALID: AbortCode = AbortCode(6);
    /// Server: the presented token verified but has expired.
    pub const TOKEN_EXPIRED: AbortCode = AbortCode(7);
    /// The current key passed its hard limit and no rekey completed within
    /// the grace period.
    pub const KEY_EXPIRED: AbortCode = AbortCode(8);
    /// An authenticated frame broke a rule of the protocol (wrong direction,
    /// a frame out of sequence).
    pub const PROTOCOL_VIOLATION: AbortCode = AbortCode(9);
    /// The server was taken out of service and its drain deadline passed
    /// with the session still open (PROTOCOL.md 3.8).
    pub const SHUTTING_DOWN: AbortCode = AbortCode(10);
    /// The first code free for applications.
    pub const APPLICATION_MIN: u32 = 0x100;
}

impl core::fmt::Display for AbortCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = match *self {
            AbortCode::APPLICATION => "aborted by the application",
            AbortCode::DROPPED => "stream dropped without close",
            AbortCode::CANNOT_RECEIVE => "the receiver can take no more data",
            AbortCode::INTERRUPTED => "interrupted (signal)",
            AbortCode::TARGET_RESET => "tunnelled connection reset",
            AbortCode::CREDENTIAL_REJECTED => "credential rejected",
            AbortCode::TOKEN_INVALID => "token invalid",
            AbortCode::TOKEN_EXPIRED => "token expired",
            AbortCode::KEY_EXPIRED => "key expired",
            AbortCode::PROTOCOL_VIOLATION => "protocol violation",
            AbortCode::SHUTTING_DOWN => "the server is shutting down (drain deadline passed)",
            _ => return write!(f, "application code {}", self.0),
        };
        write!(f, "{name} (code {})", self.0)
    }
}

/// Frame types of the established stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    /// Encrypted application bytes.
    Data,
    /// The sender's receive count, receive epoch and flags ([`AckFrame`]).
    Ack,
    /// Keepalive with the sender's time ([`StampFrame`]).
    Ping,
    /// The sender's stream ends here; carries the sender's time
    /// ([`StampFrame`]).
    Close,
    /// The sender abandons the session: a reason code, see
    /// [`crate::AbortCode`], and the sender's time ([`AbortFrame`]).
    Abort,
    /// Starts a rekey ([`RekeyInit`]).
    RekeyInit,
    /// Answers a rekey; the responder's switch marker ([`RekeyReply`]).
    RekeyReply,
    /// Ends a rekey; the initiator's switch marker ([`RekeySwitch`]).
    RekeySwitch,
    /// Client to server: the client's credential ([`CredentialFrame`]).
    Credential,
    /// Server to client: the session is accepted ([`AcceptFrame`]).
    Accept,
}

impl FrameType {
    /// Wire value.
    pub fn to_byte(self) -> u8 {
        match self {
            FrameType::Data => 1,
            FrameType::Ack => 2,
            FrameType::Ping => 3,
            FrameType::Close => 4,
            FrameType::Abort => 5,
            FrameType::RekeyInit => 6,
            FrameType::RekeyReply => 7,
            FrameType::RekeySwitch => 8,
            FrameType::Credential => 9,
            FrameType::Accept => 10,
        }
    }
    /// Parse a wire value.
    pub fn from_byte(b: u8) -> Result<Self, ProtocolError> {
        Ok(match b {
            1 => FrameType::Data,
            2 => FrameType::Ack,
            3 => FrameType::Ping,
            4 => FrameType::Close,
            5 => FrameType::Abort,
            6 => FrameType::RekeyInit,
            7 => FrameType::RekeyReply,
            8 => FrameType::RekeySwitch,
            9 => FrameType::Credential,
            10 => FrameType::Accept,
            _ => return Err(ProtocolError::UnknownFrameType(b)),
        })
    }
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Frame type.
    pub frame_type: FrameType,
    /// Payload length (excludes header and tag).
    pub len: usize,
}

impl FrameHeader {
    /// Encode into the first [`FRAME_HEADER_LEN`] bytes of `out`.
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let len = (self.len as u16).to_le_bytes();
        [self.frame_type.to_byte(), 0, len[0], len[1]]
    }

    /// Parse and validate a header: known type, zero flags, a length within
    /// [`MAX_FRAME_PAYLOAD`] and consistent with the type.
    pub fn decode(bytes: &[u8; FRAME_HEADER_LEN]) -> Result<Self, ProtocolError> {
        let frame_type = FrameType::from_byte(bytes[0])?;
        if bytes[1] != 0 {
            return Err(ProtocolError::BadFlags(bytes[1]));
        }
        let len = u16::from_le_bytes([bytes[2], bytes[3]]) as usize;
        let ok = match frame_type {
            FrameType::Data => (1..=MAX_FRAME_PAYLOAD).contains(&len),
            FrameType::Ack => len == ACK_PAYLOAD_LEN,
            FrameType::Ping => len == PING_PAYLOAD_LEN,
            FrameType::Close => len == CLOSE_PAYLOAD_LEN,
            FrameType::Abort => len == ABORT_PAYLOAD_LEN,
            FrameType::RekeyInit => len == REKEY_INIT_PAYLOAD_LEN,
            FrameType::RekeyReply => len == REKEY_REPLY_PAYLOAD_LEN,
            FrameType::RekeySwitch => len == REKEY_SWITCH_PAYLOAD_LEN,
            FrameType::Credential => (1..=1 + MAX_CREDENTIAL_LEN).contains(&len),
            FrameType::Accept => (8..=8 + MAX_TOKEN_LEN).contains(&len),
        };
        if !ok {
            return Err(ProtocolError::BadLength {
                frame_type: bytes[0],
                len,
            });
        }
        Ok(FrameHeader { frame_type, len })
    }

    /// Total bytes of this frame on the wire.
    pub fn wire_len(&self) -> usize {
        FRAME_OVERHEAD + self.len
    }
}

/// Payload of an ACK frame (PROTOCOL.md 6.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckFrame {
    /// The sender's read count of the receiver's stream.
    pub read_count: u64,
    /// The sender's receive epoch (the newest epoch whose switch marker it
    /// verified).
    pub rx_epoch: u32,
    /// Flags ([`ACK_FLAG_ACCEPTED`]).
    pub flags: u8,
}

impl AckFrame {
    /// Encode.
    pub fn encode(&self) -> [u8; ACK_PAYLOAD_LEN] {
        let mut o = [0u8; ACK_PAYLOAD_LEN];
        o[0..8].copy_from_slice(&self.read_count.to_le_bytes());
        o[8..12].copy_from_slice(&self.rx_epoch.to_le_bytes());
        o[12] = self.flags;
        o
    }
    /// Decode (no rule checked: the receiver judges the values).
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let b = exact::<ACK_PAYLOAD_LEN>(b)?;
        Ok(AckFrame {
            read_count: u64::from_le_bytes(arr(&b[0..8])),
            rx_epoch: u32::from_le_bytes(arr(&b[8..12])),
            flags: b[12],
        })
    }
}

/// Payload of a PING or a CLOSE frame: the sender's reading of the
/// server's freshness clock (µs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StampFrame {
    /// Server-clock time (µs).
    pub time: u64,
}

impl StampFrame {
    /// Encode.
    pub fn encode(&self) -> [u8; PING_PAYLOAD_LEN] {
        self.time.to_le_bytes()
    }
    /// Decode.
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let b = exact::<PING_PAYLOAD_LEN>(b)?;
        Ok(StampFrame {
            time: u64::from_le_bytes(*b),
        })
    }
}

/// Payload of an ABORT frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortFrame {
    /// Why the sender abandons the session.
    pub code: AbortCode,
    /// Server-clock time (µs).
    pub time: u64,
}

impl AbortFrame {
    /// Encode.
    pub fn encode(&self) -> [u8; ABORT_PAYLOAD_LEN] {
        let mut o = [0u8; ABORT_PAYLOAD_LEN];
        o[0..4].copy_from_slice(&self.code.0.to_le_bytes());
        o[4..12].copy_from_slice(&self.time.to_le_bytes());
        o
    }
    /// Decode.
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let b = exact::<ABORT_PAYLOAD_LEN>(b)?;
        Ok(AbortFrame {
            code: AbortCode(u32::from_le_bytes(arr(&b[0..4]))),
            time: u64::from_le_bytes(arr(&b[4..12])),
        })
    }
}

/// Payload of a REKEY_INIT frame (PROTOCOL.md 6.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RekeyInit {
    /// The epoch the exchange derives.
    pub new_epoch: u32,
    /// Flags ([`REKEY_FLAG_ORDERED`]).
    pub flags: u8,
    /// The initiator's fresh X25519 public key.
    pub ephemeral_public: [u8; 32],
    /// Server-clock time (µs).
    pub time: u64,
}

impl RekeyInit {
    /// Encode.
    pub fn encode(&self) -> [u8; REKEY_INIT_PAYLOAD_LEN] {
        let mut o = [0u8; REKEY_INIT_PAYLOAD_LEN];
        o[0..4].copy_from_slice(&self.new_epoch.to_le_bytes());
        o[4] = self.flags;
        o[5..37].copy_from_slice(&self.ephemeral_public);
        o[37..45].copy_from_slice(&self.time.to_le_bytes());
        o
    }
    /// Decode (flags unchecked: the receiver knows which side may set which).
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let b = exact::<REKEY_INIT_PAYLOAD_LEN>(b)?;
        Ok(RekeyInit {
            new_epoch: u32::from_le_bytes(arr(&b[0..4])),
            flags: b[4],
            ephemeral_public: arr(&b[5..37]),
            time: u64::from_le_bytes(arr(&b[37..45])),
        })
    }
}

/// Payload of a REKEY_REPLY frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RekeyReply {
    /// The epoch the exchange derives.
    pub new_epoch: u32,
    /// The responder's fresh X25519 public key.
    pub ephemeral_public: [u8; 32],
    /// Server-clock time (µs).
    pub time: u64,
}

impl RekeyReply {
    /// Encode.
    pub fn encode(&self) -> [u8; REKEY_REPLY_PAYLOAD_LEN] {
        let mut o = [0u8; REKEY_REPLY_PAYLOAD_LEN];
        o[0..4].copy_from_slice(&self.new_epoch.to_le_bytes());
        o[4..36].copy_from_slice(&self.ephemeral_public);
        o[36..44].copy_from_slice(&self.time.to_le_bytes());
        o
    }
    /// Decode.
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let b = exact::<REKEY_REPLY_PAYLOAD_LEN>(b)?;
        Ok(RekeyReply {
            new_epoch: u32::from_le_bytes(arr(&b[0..4])),
            ephemeral_public: arr(&b[4..36]),
            time: u64::from_le_bytes(arr(&b[36..44])),
        })
    }
}

/// Payload of a REKEY_SWITCH frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RekeySwitch {
    /// The epoch the initiator switches to.
    pub new_epoch: u32,
    /// Server-clock time (µs).
    pub time: u64,
}

impl RekeySwitch {
    /// Encode.
    pub fn encode(&self) -> [u8; REKEY_SWITCH_PAYLOAD_LEN] {
        let mut o = [0u8; REKEY_SWITCH_PAYLOAD_LEN];
        o[0..4].copy_from_slice(&self.new_epoch.to_le_bytes());
        o[4..12].copy_from_slice(&self.time.to_le_bytes());
        o
    }
    /// Decode.
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let b = exact::<REKEY_SWITCH_PAYLOAD_LEN>(b)?;
        Ok(RekeySwitch {
            new_epoch: u32::from_le_bytes(arr(&b[0..4])),
            time: u64::from_le_bytes(arr(&b[4..12])),
        })
    }
}

/// Payload of a CREDENTIAL frame: a kind byte, then the credential bytes
/// (encrypted on the wire; this type only lays them out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CredentialFrame<'a> {
    /// 0 none, 1 secret, 2 token.
    pub kind: u8,
    /// At most [`MAX_CREDENTIAL_LEN`] bytes.
    pub bytes: &'a [u8],
}

impl<'a> CredentialFrame<'a> {
    /// Payload length.
    pub fn len(&self) -> usize {
        1 + self.bytes.len()
    }
    /// Always false (the kind byte is there).
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Write the payload into `out`; returns its length. Fails when the
    /// credential is longer than [`MAX_CREDENTIAL_LEN`] or `out` too short.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<usize, ProtocolError> {
        let len = self.len();
        if self.bytes.len() > MAX_CREDENTIAL_LEN {
            return Err(ProtocolError::BadLength {
                frame_type: FrameType::Credential.to_byte(),
                len,
            });
        }
        let have = out.len();
        let out = out
            .get_mut(..len)
            .ok_or(ProtocolError::Truncated { need: len, have })?;
        out[0] = self.kind;
        out[1..].copy_from_slice(self.bytes);
        Ok(len)
    }
    /// Decode a payload (1..=513 bytes).
    pub fn decode(b: &'a [u8]) -> Result<Self, ProtocolError> {
        if b.is_empty() || b.len() > 1 + MAX_CREDENTIAL_LEN {
            return Err(ProtocolError::BadLength {
                frame_type: FrameType::Credential.to_byte(),
                len: b.len(),
            });
        }
        Ok(CredentialFrame {
            kind: b[0],
            bytes: &b[1..],
        })
    }
}

/// Payload of an ACCEPT frame: the server's time, then a token (encrypted
/// on the wire; this type only lays it out), possibly empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptFrame<'a> {
    /// Server-clock time (µs).
    pub time: u64,
    /// At most [`MAX_TOKEN_LEN`] bytes.
    pub token: &'a [u8],
}

impl<'a> AcceptFrame<'a> {
    /// Payload length.
    pub fn len(&self) -> usize {
        8 + self.token.len()
    }
    /// Always false (the time is there).
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Write the payload into `out`; returns its length. Fails when the
    /// token is longer than [`MAX_TOKEN_LEN`] or `out` too short.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<usize, ProtocolError> {
        let len = self.len();
        if self.token.len() > MAX_TOKEN_LEN {
            return Err(ProtocolError::BadLength {
                frame_type: FrameType::Accept.to_byte(),
                len,
            });
        }
        let have = out.len();
        let out = out
            .get_mut(..len)
            .ok_or(ProtocolError::Truncated { need: len, have })?;
        out[0..8].copy_from_slice(&self.time.to_le_bytes());
        out[8..].copy_from_slice(self.token);
        Ok(len)
    }
    /// Decode a payload (8..=520 bytes).
    pub fn decode(b: &'a [u8]) -> Result<Self, ProtocolError> {
        if b.len() < 8 || b.len() > 8 + MAX_TOKEN_LEN {
            return Err(ProtocolError::BadLength {
                frame_type: FrameType::Accept.to_byte(),
                len: b.len(),
            });
        }
        Ok(AcceptFrame {
            time: u64::from_le_bytes(arr(&b[0..8])),
            token: &b[8..],
        })
    }
}

/// ClientHello: the first message of a new session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientHello {
    /// Protocol version.
    pub version: u8,
    /// Flags ([`FLAG_PINNED`]).
    pub flags: u8,
    /// The client's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// The client's reading of the server's freshness clock (µs): its wall
    /// clock, or the time a Stale answer told it; 0 when it has neither.
    pub time: u64,
}

impl ClientHello {
    /// Encode.
    pub fn encode(&self) -> [u8; CLIENT_HELLO_LEN] {
        let mut out = [0u8; CLIENT_HELLO_LEN];
        out[0] = TAG_NEW;
        out[1] = self.version;
        out[2] = self.flags;
        out[3..35].copy_from_slice(&self.ephemeral);
        out[35..43].copy_from_slice(&self.time.to_le_bytes());
        out
    }
    /// Decode (version must be checked by the caller first so that it can
    /// answer an unknown version).
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let b = exact::<CLIENT_HELLO_LEN>(b)?;
        if b[0] != TAG_NEW {
            return Err(ProtocolError::UnknownTag(b[0]));
        }
        if b[2] & !FLAG_PINNED != 0 {
            return Err(ProtocolError::BadFlags(b[2]));
        }
        Ok(ClientHello {
            version: b[1],
            flags: b[2],
            ephemeral: arr(&b[3..35]),
            time: u64::from_le_bytes(arr(&b[35..43])),
        })
    }
}

/// ServerHello with status Ok.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerHello {
    /// The server's ephemeral public key.
    pub ephemeral: [u8; 32],
    /// Random challenge.
    pub challenge: [u8; 16],
    /// Server clock (µs) when it answered.
    pub server_time: u64,
    /// How long (µs) the server keeps a session without transport before it
    /// expires: the client keeps trying to resume for that long.
    pub resume_timeout: u64,
    /// Flags ([`SH_FLAG_CLIENT_AUTH`]); inside the keyed prefix, so the
    /// server's confirm authenticates them.
    pub flags: u8,
    /// Connection id XOR the key-derived mask.
    pub encrypted_conn_id: [u8; 8],
    /// Reset token XOR the key-derived mask.
    pub encrypted_reset_token: [u8; TAG_LEN],
    /// Server key confirmation.
    pub confirm: [u8; TAG_LEN],
}

impl ServerHello {
    /// Encode.
    pub fn encode(&self) -> [u8; SERVER_HELLO_LEN] {
        let mut o = [0u8; SERVER_HELLO_LEN];
        o[0] = VERSION;
        o[1] = HandshakeStatus::Ok.to_byte();
        o[2..34].copy_from_slice(&self.ephemeral);
        o[34..50].copy_from_slice(&self.challenge);
        o[50..58].copy_from_slice(&self.server_time.to_le_bytes());
        o[58..66].copy_from_slice(&self.resume_timeout.to_le_bytes());
        o[66] = self.flags;
        o[67..75].copy_from_slice(&self.encrypted_conn_id);
        o[75..91].copy_from_slice(&self.encrypted_reset_token);
        o[91..107].copy_from_slice(&self.confirm);
        o
    }
    /// Decode an accepted ServerHello (status already checked to be Ok).
    /// Unknown flag bits are refused ([`ProtocolError::BadFlags`]): the
    /// client cannot honour a rule it does not know.
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let b = exact::<SERVER_HELLO_LEN>(b)?;
        if b[0] != VERSION {
            return Err(ProtocolError::UnsupportedVersion(b[0]));
        }
        if b[1] != HandshakeStatus::Ok.to_byte() {
            return Err(ProtocolError::UnknownStatus(b[1]));
        }
        if b[66] & !SH_FLAGS_KNOWN != 0 {
            return Err(ProtocolError::BadFlags(b[66]));
        }
        Ok(ServerHello {
            ephemeral: arr(&b[2..34]),
            challenge: arr(&b[34..50]),
            server_time: u64::from_le_bytes(arr(&b[50..58])),
            resume_timeout: u64::from_le_bytes(arr(&b[58..66])),
            flags: b[66],
            encrypted_conn_id: arr(&b[67..75]),
            encrypted_reset_token: arr(&b[75..91]),
            confirm: arr(&b[91..107]),
        })
    }
}

/// The hello rejection Stale (`version ‖ 05 ‖ server_time`): the server's
/// clock, unauthenticated, which the client uses for its next hello only
/// (PROTOCOL.md 3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloStale {
    /// Server clock (µs) when it answered.
    pub server_time: u64,
}

impl HelloStale {
    /// Encode.
    pub fn encode(&self) -> [u8; HELLO_STALE_LEN] {
        let mut o = [0u8; HELLO_STALE_LEN];
        o[0] = VERSION;
        o[1] = HandshakeStatus::Stale.to_byte();
        o[2..10].copy_from_slice(&self.server_time.to_le_bytes());
        o
    }
    /// Decode (version 2, status Stale).
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let b = exact::<HELLO_STALE_LEN>(b)?;
        if b[0] != VERSION {
            return Err(ProtocolError::UnsupportedVersion(b[0]));
        }
        if b[1] != HandshakeStatus::Stale.to_byte() {
            return Err(ProtocolError::UnknownStatus(b[1]));
        }
        Ok(HelloStale {
            server_time: u64::from_le_bytes(arr(&b[2..10])),
        })
    }
}

/// The hello answer Cookie (`version ‖ 07 ‖ cookie`, PROTOCOL.md 3.7):
/// the server is under load; the client sends its hello again, unchanged
/// but for the tag (`0x01`), followed by this cookie. Unauthenticated, and
/// opaque to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloCookie {
    /// The cookie to echo.
    pub cookie: [u8; COOKIE_LEN],
}

impl HelloCookie {
    /// Encode.
    pub fn encode(&self) -> [u8; HELLO_COOKIE_LEN] {
        let mut o = [0u8; HELLO_COOKIE_LEN];
        o[0] = VERSION;
        o[1] = HandshakeStatus::Cookie.to_byte();
        o[2..].copy_from_slice(&self.cookie);
        o
    }
    /// Decode (version 2, status Cookie).
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let b = exact::<HELLO_COOKIE_LEN>(b)?;
        if b[0] != VERSION {
            return Err(ProtocolError::UnsupportedVersion(b[0]));
        }
        if b[1] != HandshakeStatus::Cookie.to_byte() {
            return Err(ProtocolError::UnknownStatus(b[1]));
        }
        Ok(HelloCookie {
            cookie: arr(&b[2..]),
        })
    }
}

/// A ClientHello with a cookie (PROTOCOL.md 3.7): `hello` with its tag
/// set to [`TAG_NEW_COOKIE`], then `cookie`.
pub fn hello_with_cookie(
    hello: &[u8; CLIENT_HELLO_LEN],
    cookie: &[u8; COOKIE_LEN],
) -> [u8; CLIENT_HELLO_COOKIE_LEN] {
    let mut o = [0u8; CLIENT_HELLO_COOKIE_LEN];
    o[..CLIENT_HELLO_LEN].copy_from_slice(hello);
    o[0] = TAG_NEW_COOKIE;
    o[CLIENT_HELLO_LEN..].copy_from_slice(cookie);
    o
}

/// Split a ClientHello with a cookie into the plain hello (tag
/// [`TAG_NEW`]: the bytes the handshake transcript covers) and the cookie.
pub fn split_hello_cookie(
    b: &[u8],
) -> Result<([u8; CLIENT_HELLO_LEN], [u8; COOKIE_LEN]), ProtocolError> {
    let b = exact::<CLIENT_HELLO_COOKIE_LEN>(b)?;
    if b[0] != TAG_NEW_COOKIE {
        return Err(ProtocolError::UnknownTag(b[0]));
    }
    let mut hello: [u8; CLIENT_HELLO_LEN] = arr(&b[..CLIENT_HELLO_LEN]);
    hello[0] = TAG_NEW;
    Ok((hello, arr(&b[CLIENT_HELLO_LEN..])))
}

/// ResumeRequest: the first message of a transport that resumes a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeRequest {
    /// Protocol version.
    pub version: u8,
    /// Session's connection id.
    pub conn_id: u64,
    /// Resume counter, greater than every earlier attempt of this session.
    pub counter: u64,
    /// Client's bytes written.
    pub client_written: u64,
    /// Client's bytes received (verified).
    pub client_read: u64,
    /// Client's estimate of the server's clock (µs).
    pub time: u64,
    /// The client's receive epoch; selects the resume key of the MAC.
    pub rx_epoch: u32,
    /// MAC under the resume key of `rx_epoch`.
    pub mac: [u8; TAG_LEN],
}

impl ResumeRequest {
    /// Encode.
    pub fn encode(&self) -> [u8; RESUME_REQUEST_LEN] {
        let mut o = [0u8; RESUME_REQUEST_LEN];
        o[0] = TAG_RESUME;
        o[1] = self.version;
        o[2..10].copy_from_slice(&self.conn_id.to_le_bytes());
        o[10..18].copy_from_slice(&self.counter.to_le_bytes());
        o[18..26].copy_from_slice(&self.client_written.to_le_bytes());
        o[26..34].copy_from_slice(&self.client_read.to_le_bytes());
        o[34..42].copy_from_slice(&self.time.to_le_bytes());
        o[42..46].copy_from_slice(&self.rx_epoch.to_le_bytes());
        o[46..62].copy_from_slice(&self.mac);
        o
    }
    /// Decode.
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let b = exact::<RESUME_REQUEST_LEN>(b)?;
        if b[0] != TAG_RESUME {
            return Err(ProtocolError::UnknownTag(b[0]));
        }
        Ok(ResumeRequest {
            version: b[1],
            conn_id: u64::from_le_bytes(arr(&b[2..10])),
            counter: u64::from_le_bytes(arr(&b[10..18])),
            client_written: u64::from_le_bytes(arr(&b[18..26])),
            client_read: u64::from_le_bytes(arr(&b[26..34])),
            time: u64::from_le_bytes(arr(&b[34..42])),
            rx_epoch: u32::from_le_bytes(arr(&b[42..46])),
            mac: arr(&b[46..62]),
        })
    }
}

/// ResumeResponse with status Ok.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeResponse {
    /// Server's bytes written.
    pub server_written: u64,
    /// Server's bytes received (verified).
    pub server_read: u64,
    /// Server clock (µs).
    pub server_time: u64,
    /// How long (µs) the server keeps the session without transport.
    pub resume_timeout: u64,
    /// The server's receive epoch.
    pub rx_epoch: u32,
    /// MAC over request and response.
    pub mac: [u8; TAG_LEN],
}

impl ResumeResponse {
    /// Encode.
    pub fn encode(&self) -> [u8; RESUME_RESPONSE_LEN] {
        let mut o = [0u8; RESUME_RESPONSE_LEN];
        o[0] = VERSION;
        o[1] = ResumeStatus::Ok.to_byte();
        o[2..10].copy_from_slice(&self.server_written.to_le_bytes());
        o[10..18].copy_from_slice(&self.server_read.to_le_bytes());
        o[18..26].copy_from_slice(&self.server_time.to_le_bytes());
        o[26..34].copy_from_slice(&self.resume_timeout.to_le_bytes());
        o[34..38].copy_from_slice(&self.rx_epoch.to_le_bytes());
        o[38..54].copy_from_slice(&self.mac);
        o
    }
    /// Decode an accepted response (status checked by the caller).
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let b = exact::<RESUME_RESPONSE_LEN>(b)?;
        if b[0] != VERSION {
            return Err(ProtocolError::UnsupportedVersion(b[0]));
        }
        if b[1] != ResumeStatus::Ok.to_byte() {
            return Err(ProtocolError::UnknownStatus(b[1]));
        }
        Ok(ResumeResponse {
            server_written: u64::from_le_bytes(arr(&b[2..10])),
            server_read: u64::from_le_bytes(arr(&b[10..18])),
            server_time: u64::from_le_bytes(arr(&b[18..26])),
            resume_timeout: u64::from_le_bytes(arr(&b[26..34])),
            rx_epoch: u32::from_le_bytes(arr(&b[34..38])),
            mac: arr(&b[38..54]),
        })
    }
}

/// A resume rejection the server authenticated (Replayed, Stale,
/// DataUnavailable): version, status, the server's clock, MAC
/// (PROTOCOL.md 3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthenticatedReject {
    /// One of the authenticated statuses.
    pub status: ResumeStatus,
    /// Server clock (µs) when it answered.
    pub server_time: u64,
    /// MAC over the request and the first ten bytes of this message.
    pub mac: [u8; TAG_LEN],
}

impl AuthenticatedReject {
    /// Encode.
    pub fn encode(&self) -> [u8; REJECT_AUTH_LEN] {
        let mut o = [0u8; REJECT_AUTH_LEN];
        o[0] = VERSION;
        o[1] = self.status.to_byte();
        o[2..10].copy_from_slice(&self.server_time.to_le_bytes());
        o[10..26].copy_from_slice(&self.mac);
        o
    }
    /// Decode (version 2, an authenticated status).
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let b = exact::<REJECT_AUTH_LEN>(b)?;
        if b[0] != VERSION {
            return Err(ProtocolError::UnsupportedVersion(b[0]));
        }
        let status = ResumeStatus::from_byte(b[1])?;
        if !status.is_authenticated() {
            return Err(ProtocolError::UnknownStatus(b[1]));
        }
        Ok(AuthenticatedReject {
            status,
            server_time: u64::from_le_bytes(arr(&b[2..10])),
            mac: arr(&b[10..26]),
        })
    }
}

/// The "unknown session" answer: version, status 2, the connection's reset
/// token (PROTOCOL.md 3.6, 4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownSessionReject {
    /// The reset token of the connection id the request named.
    pub reset_token: [u8; TAG_LEN],
}

impl UnknownSessionReject {
    /// Encode.
    pub fn encode(&self) -> [u8; REJECT_TOKEN_LEN] {
        let mut o = [0u8; REJECT_TOKEN_LEN];
        o[0] = VERSION;
        o[1] = ResumeStatus::UnknownSession.to_byte();
        o[2..].copy_from_slice(&self.reset_token);
        o
    }
    /// Decode (version 2, status UnknownSession).
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let b = exact::<REJECT_TOKEN_LEN>(b)?;
        if b[0] != VERSION {
            return Err(ProtocolError::UnsupportedVersion(b[0]));
        }
        if b[1] != ResumeStatus::UnknownSession.to_byte() {
            return Err(ProtocolError::UnknownStatus(b[1]));
        }
        Ok(UnknownSessionReject {
            reset_token: arr(&b[2..]),
        })
    }
}

/// How long the server's reply to a hello is, judged from its first two
/// bytes (version, status). `Err` for an unknown version or status.
pub fn server_hello_len(version: u8, status: u8) -> Result<usize, ProtocolError> {
    if version != VERSION {
        return Err(ProtocolError::UnsupportedVersion(version));
    }
    Ok(match HandshakeStatus::from_byte(status)? {
        HandshakeStatus::Ok => SERVER_HELLO_LEN,
        HandshakeStatus::Stale => HELLO_STALE_LEN,
        HandshakeStatus::Cookie => HELLO_COOKIE_LEN,
        _ => REJECT_LEN,
    })
}

/// How long the server's reply to a resume request is, judged from its
/// first two bytes (version, status).
pub fn resume_response_len(version: u8, status: u8) -> Result<usize, ProtocolError> {
    if version != VERSION {
        return Err(ProtocolError::UnsupportedVersion(version));
    }
    let s = ResumeStatus::from_byte(status)?;
    Ok(if s == ResumeStatus::Ok {
        RESUME_RESPONSE_LEN
    } else if s == ResumeStatus::UnknownSession {
        REJECT_TOKEN_LEN
    } else if s.is_authenticated() {
        REJECT_AUTH_LEN
    } else {
        REJECT_LEN
    })
}

/// How long the client's first message is, judged from its first two bytes
/// (tag, version). `Ok(None)` means: unknown version, answer with a rejection.
pub fn client_first_len(tag: u8, version: u8) -> Result<Option<usize>, ProtocolError> {
    let len = match tag {
        TAG_NEW => CLIENT_HELLO_LEN,
        TAG_NEW_COOKIE => CLIENT_HELLO_COOKIE_LEN,
        TAG_RESUME => RESUME_REQUEST_LEN,
        other => return Err(ProtocolError::UnknownTag(other)),
    };
    Ok(if version == VERSION { Some(len) } else { None })
}

fn exact<const N: usize>(b: &[u8]) -> Result<&[u8; N], ProtocolError> {
    b.try_into().map_err(|_| ProtocolError::Truncated {
        need: N,
        have: b.len(),
    })
}

fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(b);
    a
}
