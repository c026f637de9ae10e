//! Resuming a session on a new transport: the MACs of the resume messages
//! and the server's acceptance rules, as pure functions.
//!
//! Every MAC is a keyed BLAKE3 under the session's resume key over a one-byte
//! label and the message bytes:
//!
//! ```text
//! request MAC  = keyed(resume, 0x01 || request[0..46])
//! response MAC = keyed(resume, 0x02 || request[0..62] || response[0..38])
//! reject MAC   = keyed(resume, 0x03 || request[0..62] || reject[0..10])
//! ```
//!
//! `resume` is the resume key of the request's `rx_epoch` (the client's
//! receive epoch); every answer is MACed under the same key as the request.
//! Until rekeying exists every epoch is 0.
//!
//! The response MACs cover the request, so a response cannot be replayed
//! to another attempt.

use crate::keys::Secret;
use crate::wire::{
    AuthenticatedReject, ResumeRequest, ResumeStatus, REJECT_AUTH_LEN, RESUME_REQUEST_LEN, TAG_LEN,
};

const LABEL_REQUEST: u8 = 0x01;
const LABEL_RESPONSE: u8 = 0x02;
const LABEL_REJECT: u8 = 0x03;

/// Bytes of a request covered by its MAC.
pub(crate) const REQUEST_MAC_INPUT: usize = RESUME_REQUEST_LEN - TAG_LEN;
/// Bytes of an accepted response covered by its MAC (after the request).
pub(crate) const RESPONSE_MAC_INPUT: usize = crate::wire::RESUME_RESPONSE_LEN - TAG_LEN;
/// Bytes of an authenticated rejection covered by its MAC (version, status,
/// server time).
pub(crate) const REJECT_MAC_INPUT: usize = crate::wire::REJECT_AUTH_LEN - TAG_LEN;

/// MAC of a resume request.
pub(crate) fn request_mac(key: &Secret, request_prefix: &[u8]) -> [u8; TAG_LEN] {
    key.mac(&[&[LABEL_REQUEST], request_prefix])
}

/// MAC of an accepted resume response.
pub(crate) fn response_mac(
    key: &Secret,
    request: &[u8; RESUME_REQUEST_LEN],
    response_prefix: &[u8],
) -> [u8; TAG_LEN] {
    key.mac(&[&[LABEL_RESPONSE], request, response_prefix])
}

/// MAC of an authenticated rejection (version, status and server time).
pub(crate) fn reject_mac(
    key: &Secret,
    request: &[u8; RESUME_REQUEST_LEN],
    reject_prefix: &[u8; REJECT_MAC_INPUT],
) -> [u8; TAG_LEN] {
    key.mac(&[&[LABEL_REJECT], request, reject_prefix])
}

/// The authenticated rejection of `request` with `status`, stamped with
/// the server's (wall-clock) time (PROTOCOL.md 3.6).
pub(crate) fn authenticated_reject(
    key: &Secret,
    request: &[u8; RESUME_REQUEST_LEN],
    status: ResumeStatus,
    server_time: u64,
) -> [u8; REJECT_AUTH_LEN] {
    let mut rej = AuthenticatedReject {
        status,
        server_time,
        mac: [0; TAG_LEN],
    };
    let mut prefix = [0u8; REJECT_MAC_INPUT];
    prefix.copy_from_slice(&rej.encode()[..REJECT_MAC_INPUT]);
    rej.mac = reject_mac(key, request, &prefix);
    rej.encode()
}

/// What the server knows of a session when a resume request arrives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionCounters {
    /// Highest resume counter accepted so far (0: only the first transport).
    pub(crate) last_counter: u64,
    /// Highest read count the client confirmed of the server's stream.
    pub(crate) server_acked: u64,
    /// End of the server's stream (data written, plus one after CLOSE).
    pub(crate) server_end: u64,
    /// The server's read count of the client's stream.
    pub(crate) server_read: u64,
}

/// The server's checks after the MAC verified, in order: counter (replay),
/// time window (staleness), byte counts (data still available).
pub(crate) fn check_request(
    req: &ResumeRequest,
    s: &SessionCounters,
    server_now: u64,
    window: u64,
) -> Result<(), ResumeStatus> {
    if req.counter <= s.last_counter {
        return Err(ResumeStatus::Replayed);
    }
    if req.time.abs_diff(server_now) > window {
        return Err(ResumeStatus::Stale);
    }
    if !counts_reconcilable(req.client_read, req.client_written, s) {
        return Err(ResumeStatus::DataUnavailable);
    }
    Ok(())
}

/// The client read within what the server still holds, and the client wrote
/// at least what the server read.
pub(crate) fn counts_reconcilable(
    client_read: u64,
    client_written: u64,
    s: &SessionCounters,
) -> bool {
    client_read >= s.server_acked && client_read <= s.server_end && client_written >= s.server_read
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counters() -> SessionCounters {
        SessionCounters {
            last_counter: 3,
            server_acked: 100,
            server_end: 500,
            server_read: 1000,
        }
    }

    fn req(counter: u64, time: u64, read: u64, written: u64) -> ResumeRequest {
        ResumeRequest {
            version: 2,
            conn_id: 1,
            counter,
            client_written: written,
            client_read: read,
            time,
            rx_epoch: 0,
            mac: [0; 16],
        }
    }

    #[test]
    fn order_of_checks() {
        let c = counters();
        assert_eq!(
            check_request(&req(3, 0, 0, 0), &c, 10_000, 10),
            Err(ResumeStatus::Replayed)
        );
        assert_eq!(
            check_request(&req(4, 0, 200, 1000), &c, 10_000, 10),
            Err(ResumeStatus::Stale)
        );
        assert_eq!(
            check_request(&req(4, 10_000, 50, 1000), &c, 10_000, 10),
            Err(ResumeStatus::DataUnavailable)
        );
        assert_eq!(
            check_request(&req(4, 9_995, 500, 1000), &c, 10_000, 10),
            Ok(())
        );
    }

    proptest! {
        #[test]
        fn reconcilable_iff_ranges_hold(read in 0u64..2000, written in 0u64..2000) {
            let c = counters();
            let ok = counts_reconcilable(read, written, &c);
            prop_assert_eq!(ok, (100..=500).contains(&read) && written >= 1000);
        }

        #[test]
        fn macs_are_domain_separated(prefix in proptest::collection::vec(any::<u8>(), REQUEST_MAC_INPUT)) {
            let k = Secret([1u8; 32]);
            let mut request = [0u8; RESUME_REQUEST_LEN];
            request[..REQUEST_MAC_INPUT].copy_from_slice(&prefix);
            let a = request_mac(&k, &prefix);
            let b = response_mac(&k, &request, &[]);
            let mut reject = [0u8; REJECT_MAC_INPUT];
            reject.copy_from_slice(&prefix[..REJECT_MAC_INPUT]);
            let c = reject_mac(&k, &request, &reject);
            prop_assert_ne!(a, b);
            prop_assert_ne!(b, c);
        }
    }
}
