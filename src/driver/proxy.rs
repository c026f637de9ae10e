//! The PROXY protocol, version 2 (HAProxy's `send-proxy-v2`), in front of
//! the server drivers' TCP transports (`ListenerBuilder::proxy_protocol`):
//! the header's framing (how many bytes to read, never more), its parsing
//! (through the `ppp` crate) and what the drivers make of it: the source
//! address a transport counts against (`Endpoint::accept_from`,
//! PROTOCOL.md 3.7), or a refusal.
//!
//! Behind a balancer every TCP connection comes from the balancer's
//! address; the header carries the client's. Rules (the drivers follow
//! them both):
//! - the header must be the first bytes of the transport, in the binary v2
//!   format (the text v1 format is refused), at most [`MAX_HEADER_LEN`]
//!   bytes, complete within `Config::handshake_timeout`;
//! - command PROXY over TCP/IPv4 or TCP/IPv6: the transport's source is the
//!   header's source address (its port too, for logs);
//! - command LOCAL (HAProxy's health checks with `check-send-proxy`), or
//!   PROXY with an unspecified or Unix address family: the transport's
//!   source is the real TCP peer, as the specification asks;
//! - no header, a malformed one, one too long or too slow: the transport
//!   is closed before the endpoint sees it, counted in
//!   `ServerStats::transports_refused`, and logged at DEBUG (`transport
//!   refused`, `peer` = the TCP peer, `error` = why). Bytes that are not a
//!   PROXY header, or a malformed or oversized one, are what a
//!   misconfigured balancer (no `send-proxy-v2`) or a client connecting
//!   to the node directly sends: those are also logged at WARN, naming the
//!   TCP peer, at most one such line per [`WARN_EVERY`] (the others stay
//!   DEBUG lines, counted in the next WARN's `suppressed` field). A peer
//!   that closes without a byte (a TCP health check) or stays silent is
//!   DEBUG only.
//!
//! The other mismatch, a balancer sending PROXY headers to a listener
//! without `proxy_protocol`: the endpoint sees the header as a malformed
//! first message. [`looks_like_header`] recognises it from the
//! transport's first bytes, and [`log_unexpected_header`] says so (WARN,
//! rate-limited the same way), so that the drivers can name the fix.

use core::fmt;
use std::net::SocketAddr;
use std::string::String;

/// Bytes of the fixed part of a v2 header: the 12-byte signature, the
/// version and command, the family and protocol, the length (big endian).
pub(crate) const FIXED_LEN: usize = 16;

/// The longest PROXY v2 header the drivers accept, in bytes (the fixed 16
/// bytes, the addresses and the TLVs). HAProxy's headers with its usual
/// TLVs (ALPN, authority, unique id, SSL details) stay well below.
pub const MAX_HEADER_LEN: usize = 4096;

/// The v2 signature.
const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// Why a transport's PROXY header was refused.
#[derive(Debug)]
pub(crate) enum ProxyError {
    /// The transport does not start with the v2 signature.
    NoHeader,
    /// The header announces more than [`MAX_HEADER_LEN`] bytes.
    TooLong(usize),
    /// The header is not a valid v2 header.
    Malformed(String),
    /// The peer closed before the header was complete.
    Eof(usize),
    /// The header was not complete within the handshake timeout.
    TimedOut,
    /// Reading the socket failed.
    Io(std::io::Error),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NoHeader => {
                f.write_str("no PROXY protocol v2 header (proxy_protocol is on)")
            }
            ProxyError::TooLong(n) => write!(
                f,
                "PROXY protocol header of {n} bytes (at most {MAX_HEADER_LEN})"
            ),
            ProxyError::Malformed(e) => write!(f, "malformed PROXY protocol v2 header: {e}"),
            ProxyError::Eof(n) => write!(
                f,
                "the peer closed after {n} bytes of the PROXY protocol header"
            ),
            ProxyError::TimedOut => {
                f.write_str("no complete PROXY protocol header within the handshake timeout")
            }
            ProxyError::Io(e) => write!(f, "reading the PROXY protocol header: {e}"),
        }
    }
}

/// The whole header's length, from its fixed part: checks the signature
/// and the version, and the bound.
pub(crate) fn header_len(fixed: &[u8; FIXED_LEN]) -> Result<usize, ProxyError> {
    if fixed[..12] != SIGNATURE {
        return Err(ProxyError::NoHeader);
    }
    if fixed[12] >> 4 != 2 {
        return Err(ProxyError::Malformed(std::format!(
            "version {} (only 2 is supported)",
            fixed[12] >> 4
        )));
    }
    let len = FIXED_LEN + usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > MAX_HEADER_LEN {
        return Err(ProxyError::TooLong(len));
    }
    Ok(len)
}

/// The source a complete header (exactly [`header_len`] bytes) names:
/// `Some(address)` for PROXY over TCP/IP, `None` when the real peer counts
/// (LOCAL, or an address family without one).
pub(crate) fn parse(header: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    use ppp::v2::{Addresses, Command, Header, Protocol};
    let h = Header::try_from(header).map_err(|e| ProxyError::Malformed(std::format!("{e}")))?;
    if h.len() != header.len() {
        return Err(ProxyError::Malformed(std::format!(
            "{} bytes announced, {} read",
            h.len(),
            header.len()
        )));
    }
    if h.command == Command::Local {
        return Ok(None);
    }
    match h.addresses {
        Addresses::IPv4(a) if h.protocol == Protocol::Stream => {
            Ok(Some(SocketAddr::from((a.source_address, a.source_port))))
        }
        Addresses::IPv6(a) if h.protocol == Protocol::Stream => {
            Ok(Some(SocketAddr::from((a.source_address, a.source_port))))
        }
        Addresses::IPv4(_) | Addresses::IPv6(_) => Err(ProxyError::Malformed(std::format!(
            "protocol {:?} (a relink transport is a stream)",
            h.protocol
        ))),
        Addresses::Unspecified | Addresses::Unix(_) => Ok(None),
    }
}

/// At most one WARN about a PROXY protocol mismatch per this interval,
/// process-wide: anyone reaching the port can trigger one per connection.
pub(crate) const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The mismatch WARNs' rate limit.
static MISMATCH_WARN: super::events::WarnLimit = super::events::WarnLimit::new(WARN_EVERY);

/// The peer for a message: its address, or "a peer" when unknown.
struct Peer(Option<SocketAddr>);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, "{p}"),
            None => f.write_str("a peer of unknown address"),
        }
    }
}

/// A transport refused for its PROXY header (see the module docs): DEBUG,
/// and a rate-limited WARN when the peer sent bytes that are no valid
/// header (a balancer without `send-proxy-v2`, a client connecting
/// directly).
pub(crate) fn log_refused(peer: Option<SocketAddr>, error: &ProxyError) {
    let mismatch = matches!(
        error,
        ProxyError::NoHeader | ProxyError::Malformed(_) | ProxyError::TooLong(_)
    );
    if let Some(suppressed) = mismatch.then(|| MISMATCH_WARN.allow()).flatten() {
        let why = match error {
            ProxyError::NoHeader => std::format!(
                "expected a PROXY protocol v2 header from {} (is the balancer configured with send-proxy-v2? a client connecting to the node directly, bypassing the balancer, is refused too)",
                Peer(peer)
            ),
            _ => std::format!(
                "refused the PROXY protocol header of {}: {error} (the balancer must send send-proxy-v2 headers)",
                Peer(peer)
            ),
        };
        tracing::warn!(peer = %Peer(peer), suppressed, "{why}; connection closed");
        return;
    }
    match peer {
        Some(p) => tracing::debug!(peer = %p, error = %error, "transport refused"),
        None => tracing::debug!(error = %error, "transport refused"),
    }
}

/// Whether `first`, the first bytes a transport carried, look like a
/// PROXY protocol header: the v2 signature (`\r\n\r\n\0\r\nQUIT\n`, or
/// its first two bytes or more when fewer arrived), or the text of v1
/// (`PROXY `). Never a relink first message, whose first byte is a tag
/// (0x00, 0x01 or 0xFF).
pub(crate) fn looks_like_header(first: &[u8]) -> bool {
    let v2 = first.len() >= 2 && {
        let n = first.len().min(SIGNATURE.len());
        first[..n] == SIGNATURE[..n]
    };
    let v1 = first.len() >= 6 && &first[..6] == b"PROXY ";
    v2 || v1
}

/// A transport of a listener without `proxy_protocol` that started with a
/// PROXY protocol header ([`looks_like_header`]): a WARN naming the peer
/// (the balancer) and the fix, rate-limited as the module docs say.
pub(crate) fn log_unexpected_header(peer: Option<SocketAddr>) {
    match MISMATCH_WARN.allow() {
        Some(suppressed) => tracing::warn!(
            peer = %Peer(peer),
            suppressed,
            "{} sent a PROXY protocol header; start the node with --proxy-protocol (ListenerBuilder::proxy_protocol), or remove send-proxy-v2 from the balancer; connection closed",
            Peer(peer)
        ),
        None => tracing::debug!(
            peer = %Peer(peer),
            "transport refused: it starts with a PROXY protocol header (WARN rate-limited)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(cmd: u8, proto: u8) -> std::vec::Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.extend([0x20 | cmd, 0x10 | proto, 0, 12]);
        h.extend([10, 1, 2, 3, 192, 0, 2, 1, 0x1f, 0x90, 0x1b, 0x58]);
        h
    }

    #[test]
    fn a_proxy_header_names_the_client_and_a_local_one_the_peer() {
        let h = v4(1, 1);
        let fixed: [u8; FIXED_LEN] = h[..FIXED_LEN].try_into().unwrap();
        assert_eq!(header_len(&fixed).unwrap(), h.len());
        assert_eq!(parse(&h).unwrap(), Some("10.1.2.3:8080".parse().unwrap()));
        assert_eq!(parse(&v4(0, 1)).unwrap(), None);
        // UDP is no transport of ours.
        assert!(matches!(parse(&v4(1, 2)), Err(ProxyError::Malformed(_))));
    }

    #[test]
    fn a_proxy_header_is_recognised_from_its_first_bytes() {
        let h = v4(1, 1);
        for n in [2, 5, 12, h.len()] {
            assert!(looks_like_header(&h[..n]), "{n} bytes");
        }
        assert!(looks_like_header(b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n"));
        // Too few bytes to tell, or relink's own first messages.
        assert!(!looks_like_header(&h[..1]));
        for tag in [0x00u8, 0x01, 0xFF] {
            let mut m = std::vec![tag, 1];
            m.extend_from_slice(&h);
            assert!(!looks_like_header(&m), "tag {tag:#x}");
        }
        // Differs within the signature.
        let mut bad = h.clone();
        bad[7] = b'X';
        assert!(!looks_like_header(&bad));
    }

    #[test]
    fn framing_refuses_other_bytes_other_versions_and_long_headers() {
        let mut h = v4(1, 1);
        let fixed = |h: &[u8]| -> [u8; FIXED_LEN] { h[..FIXED_LEN].try_into().unwrap() };
        // A relink ClientHello or a v1 text header.
        let mut text = *b"PROXY TCP4 1.2.3.";
        text[16] = b'4';
        assert!(matches!(
            header_len(&fixed(&text)),
            Err(ProxyError::NoHeader)
        ));
        h[12] = 0x11;
        assert!(matches!(
            header_len(&fixed(&h)),
            Err(ProxyError::Malformed(_))
        ));
        h[12] = 0x21;
        h[14..16].copy_from_slice(&(MAX_HEADER_LEN as u16).to_be_bytes());
        assert!(matches!(
            header_len(&fixed(&h)),
            Err(ProxyError::TooLong(_))
        ));
        // Announces fewer bytes than its IPv4 addresses need.
        let mut short = v4(1, 1);
        short[15] = 4;
        short.truncate(20);
        assert!(matches!(parse(&short), Err(ProxyError::Malformed(_))));
    }
}
