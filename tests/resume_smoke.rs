mod common;
use common::*;

#[test]
fn transfer_survives_breaks() {
    const TOTAL: u64 = 4 * 1024 * 1024;
    let mut p = Net::default_pair(11);
    p.handshake();
    let (mut up, mut down) = (Flow::default(), Flow::default());
    let mut buf = vec![0u8; 100_000];
    let mut breaks = 0;
    let mut rounds = 0u64;
    while up.read < TOTAL || down.read < TOTAL {
        pump_client_to_server(&mut p, &mut up, TOTAL, 30_000, &mut buf);
        pump_server_to_client(&mut p, &mut down, TOTAL, 30_000, &mut buf);
        p.step();
        if p.ended || between(&mut p.rng, 0, 8) == 0 {
            p.break_transport();
            p.open_transport();
            breaks += 1;
        }
        rounds += 1;
        assert!(
            rounds < 1_000_000,
            "stuck {up:?} {down:?} {:?}",
            &p.cev[p.cev.len().saturating_sub(5)..]
        );
    }
    assert!(breaks > 10, "breaks {breaks}");
    assert!(p.client.close_reason().is_none());
}
