//! Core findings of the fuzz targets (fuzz/README.md), replayed in the
//! normal build through the shared in-memory harness.

use relink::{CloseReason, Config, Duration};
use relink_test_support::harness::Net;

/// Found by the `structured` target (fuzz/regressions/structured/
/// data-unavailable-after-close-and-half-open). The client closes its
/// stream, resumes a few times, reads all 10,944 bytes the server writes;
/// then the server's clock alone jumps 1,837 s (the client sleeps: past
/// `key_lifetime`, so the server starts a rekey), and two transports go
/// half-open (the server's REKEY_INIT is lost, the client's last bytes
/// arrive late). On the next resume the server answers Ok, but the
/// client's `attach` refuses the server's (read count, receive epoch) and
/// ends the session `DataUnavailable`, although no byte was lost.
///
/// The same core bug as the soak's (a read count that includes the
/// client's CLOSE judged against a switch point, PROTOCOL.md 7.8 rule 1),
/// fixed on main in 7302c45; this failed before.
#[test]
fn no_data_unavailable_after_a_lost_rekey_init_and_half_open_transports() {
    let mut net = Net::new(73, Config::default(), Config::default());
    // as relink_fuzz::structured::run starts: connected, confirm delivered
    assert!(net.connect());
    net.settle(50);
    net.client.close();
    net.drain();
    for _ in 0..3 {
        net.connect();
    }
    assert_eq!(net.server_write(10_944), 10_944);
    for _ in 0..44 {
        net.step();
    }
    assert_eq!(net.client_write(409), 0, "the client closed its stream");
    net.connect();
    net.tick_server(Duration::from_millis(36_751 * 50));
    net.timers();
    net.half_open();
    net.connect();
    net.connect();
    net.half_open();
    net.connect();
    net.drain();
    assert_eq!(net.down[&0].read, 10_944, "the client read everything");
    assert_ne!(
        net.client.close_reason(),
        Some(CloseReason::DataUnavailable),
        "client events: {:?}",
        net.cev
    );
    net.assert_no_violations();
}
