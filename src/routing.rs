//! Routable connection ids: a server id at a fixed place in every
//! connection id a server issues, so that a layer-4 load balancer in front
//! of several servers (nodes) can send a resume transport to the node that
//! holds its session by looking at the first bytes of the TCP stream, while
//! new-session transports are balanced freely (PROTOCOL.md 3.8, in the
//! spirit of QUIC-LB, draft-ietf-quic-load-balancers).
//!
//! This module owns the layout and nothing else: the endpoint draws its
//! connection ids through [`RoutableId::generate`] when
//! `Config::routable_id` is set.
//!
//! Layout of the 8 bytes `cid = LE64(conn_id)` as they appear on the wire
//! (bytes 2..10 of a ResumeRequest, so the TCP stream of a resume transport
//! is `FF 02 cid[0] cid[1] ...`):
//!
//! ```text
//! cid[0]            bits 7..5: config rotation (0..=6; 7 = not routable)
//!                   bits 4..0: random
//! cid[1..1+len]     server id, big-endian, len = 1..=4 bytes
//! cid[1+len..8]     random (the nonce: 3..=6 bytes)
//! ```

use core::fmt;

/// Largest server id length in bytes.
pub const MAX_SERVER_ID_LEN: usize = 4;
/// The config rotation value QUIC-LB reserves for ids that carry no
/// routable server id; [`RoutableId`] never issues it.
pub const UNROUTABLE_ROTATION: u8 = 7;

/// Why a [`RoutableId`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoutableIdError {
    /// The server id length is not 1..=4 bytes.
    Length(usize),
    /// The server id does not fit in `len` bytes.
    TooLarge {
        /// The server id.
        server_id: u32,
        /// Its length in bytes.
        len: usize,
    },
    /// The config rotation is not 0..=6.
    Rotation(u8),
}

impl fmt::Display for RoutableIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoutableIdError::Length(l) => {
                write!(
                    f,
                    "server id length {l} bytes: must be 1 to {MAX_SERVER_ID_LEN}"
                )
            }
            RoutableIdError::TooLarge { server_id, len } => {
                write!(f, "server id {server_id} does not fit in {len} byte(s)")
            }
            RoutableIdError::Rotation(r) => {
                write!(
                    f,
                    "config rotation {r}: must be 0 to 6 (7 means not routable)"
                )
            }
        }
    }
}

/// The server id (and config rotation bits) a server writes into every
/// connection id it issues (`Config::routable_id`, PROTOCOL.md 3.8).
///
/// Every node behind one balancer uses the same `len` and rotation and its
/// own server id; the balancer maps the server id bytes to the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RoutableId {
    server_id: u32,
    len: u8,
    rotation: u8,
}

impl RoutableId {
    /// A server id of `len` bytes (1..=4) with config rotation 0.
    ///
    /// # Errors
    /// [`RoutableIdError::Length`] when `len` is not 1..=4,
    /// [`RoutableIdError::TooLarge`] when `server_id` needs more than `len`
    /// bytes.
    pub fn new(server_id: u32, len: usize) -> Result<RoutableId, RoutableIdError> {
        if !(1..=MAX_SERVER_ID_LEN).contains(&len) {
            return Err(RoutableIdError::Length(len));
        }
        if len < 4 && server_id >> (8 * len) != 0 {
            return Err(RoutableIdError::TooLarge { server_id, len });
        }
        Ok(RoutableId {
            server_id,
            len: len as u8,
            rotation: 0,
        })
    }

    /// The same server id under config rotation `rotation` (0..=6): a fleet
    /// changing its balancer mapping issues ids of the new rotation while
    /// the old one still routes the existing sessions.
    ///
    /// # Errors
    /// [`RoutableIdError::Rotation`] when `rotation` > 6.
    pub fn with_rotation(self, rotation: u8) -> Result<RoutableId, RoutableIdError> {
        if rotation >= UNROUTABLE_ROTATION {
            return Err(RoutableIdError::Rotation(rotation));
        }
        Ok(RoutableId { rotation, ..self })
    }

    /// The server id.
    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    /// Its length in bytes (1..=4).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// The config rotation (0..=6).
    pub fn config_rotation(&self) -> u8 {
        self.rotation
    }

    /// The server id bytes as they appear in the connection id (and at
    /// offset 3 of a resume transport's stream): big-endian, [`Self::len`]
    /// bytes, in the first `len` elements of the array.
    pub fn server_id_bytes(&self) -> [u8; MAX_SERVER_ID_LEN] {
        let mut out = [0; MAX_SERVER_ID_LEN];
        let be = self.server_id.to_be_bytes();
        out[..self.len()].copy_from_slice(&be[MAX_SERVER_ID_LEN - self.len()..]);
        out
    }

    /// A connection id carrying this server id and rotation, its other bits
    /// taken from `random`.
    pub fn generate(&self, random: u64) -> u64 {
        let mut cid = random.to_le_bytes();
        cid[0] = (self.rotation << 5) | (cid[0] & 0x1f);
        let len = self.len();
        cid[1..1 + len].copy_from_slice(&self.server_id_bytes()[..len]);
        u64::from_le_bytes(cid)
    }

    /// Whether `conn_id` carries this server id and rotation.
    pub fn owns(&self, conn_id: u64) -> bool {
        server_id_of(conn_id, self.len()) == (self.rotation, self.server_id)
    }
}

/// The config rotation and the server id of `len` bytes (1..=4; clamped)
/// that `conn_id` carries under the layout of this module.
pub fn server_id_of(conn_id: u64, len: usize) -> (u8, u32) {
    let cid = conn_id.to_le_bytes();
    let len = len.clamp(1, MAX_SERVER_ID_LEN);
    let id = cid[1..1 + len]
        .iter()
        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    (cid[0] >> 5, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(RoutableId::new(1, 0), Err(RoutableIdError::Length(0)));
        assert_eq!(RoutableId::new(1, 5), Err(RoutableIdError::Length(5)));
        assert_eq!(
            RoutableId::new(256, 1),
            Err(RoutableIdError::TooLarge {
                server_id: 256,
                len: 1
            })
        );
        assert!(RoutableId::new(255, 1).is_ok());
        assert!(RoutableId::new(u32::MAX, 4).is_ok());
        let r = RoutableId::new(3, 1).unwrap();
        assert_eq!(r.with_rotation(7), Err(RoutableIdError::Rotation(7)));
        assert_eq!(r.with_rotation(6).unwrap().config_rotation(), 6);
    }

    #[test]
    fn layout_on_the_wire() {
        let r = RoutableId::new(0x0102, 2)
            .unwrap()
            .with_rotation(5)
            .unwrap();
        let cid = r.generate(u64::MAX).to_le_bytes();
        assert_eq!(cid[0], 0b1011_1111);
        assert_eq!(&cid[1..3], &[0x01, 0x02]);
        assert_eq!(&cid[3..], &[0xff; 5]);
        let cid = r.generate(0).to_le_bytes();
        assert_eq!(cid, [0xa0, 1, 2, 0, 0, 0, 0, 0]);
    }
}
