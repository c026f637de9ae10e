//! Adversarial review of the issue-12 tunnels (`relink forward` +
//! `relink serve-forward` on the tokio driver): a reset must cross the
//! tunnel also when the far side is not reading.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod cli_support;
use cli_support::{relink_bin, spawn_listening};

fn tunnel_end(
    which: &str,
    idle_ms: &str,
    a: &str,
    b: &str,
) -> (cli_support::Proc, std::net::SocketAddr, cli_support::Log) {
    let mut cmd = Command::new(relink_bin());
    cmd.args(["--idle-ms", idle_ms, which, a, b])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    spawn_listening(which, cmd)
}

/// The target is busy (it does not read) but writes a line every 100 ms;
/// the local client pushes up to 8 MiB into the tunnel (until its writes
/// block), then resets. With a plain TCP connection the target's writes
/// fail at once. Expected: the target's connection is reset (its writes
/// fail) within 10 s (`--idle-ms 1000`).
///
/// Fails about one run in two (5 of 9 runs here): the target still writes
/// 10 s after the reset. The session's ABORT is queued behind the
/// megabytes the target did not read (the same cause as
/// `review12::tokio_abort_while_the_peer_does_not_read_reaches_the_peer`),
/// so `serve-forward` keeps the target connection until the session
/// expires; in the runs that pass, the target is reset ~190 ms after.
#[test]
#[ignore = "review12 finding: a local client's reset often does not reach a target that is not reading"]
fn a_local_client_reset_reaches_a_target_that_does_not_read() {
    let service = TcpListener::bind("127.0.0.1:0").unwrap();
    let service_addr = service.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (reset_tx, reset_rx) = std::sync::mpsc::channel::<Instant>();
    thread::spawn(move || {
        let Ok((mut c, _)) = service.accept() else {
            return;
        };
        // Never reads; writes a line every 100 ms until a write fails.
        let mut since: Option<Instant> = None;
        let end = loop {
            if let Ok(t) = reset_rx.try_recv() {
                since = Some(t);
            }
            if let Err(e) = c.write_all(b"tick\n") {
                if let Ok(t) = reset_rx.try_recv() {
                    since = Some(t);
                }
                break match since {
                    Some(t) => Ok((e.kind(), t.elapsed())),
                    None => Err("the target was reset before the local client reset"),
                };
            }
            if since.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
                break Err("still writing 10 s after the local client's reset");
            }
            thread::sleep(Duration::from_millis(100));
        };
        let _ = tx.send(end);
    });
    let (_server, server_addr, slog) = tunnel_end(
        "serve-forward",
        "1000",
        "127.0.0.1:0",
        &service_addr.to_string(),
    );
    let (_client, local, flog) =
        tunnel_end("forward", "1000", "127.0.0.1:0", &server_addr.to_string());
    let mut conn = TcpStream::connect(local).unwrap();
    conn.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = vec![0x33u8; 64 * 1024];
    let mut pushed = 0usize;
    while pushed < (8 << 20) {
        match conn.write(&chunk) {
            Ok(n) => pushed += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => break,
            Err(e) => panic!("local write: {e}"),
        }
    }
    // Read a little of the target's lines so the tunnel is surely up.
    let mut buf = [0u8; 16];
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = conn.read(&mut buf);
    // Reset: SO_LINGER 0, then close.
    socket2::SockRef::from(&conn)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(conn);
    reset_tx.send(Instant::now()).unwrap();
    let end = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the target thread hung");
    eprintln!("target end: {end:?}");
    assert!(
        end.is_ok(),
        "{} ({pushed} bytes pushed)\nserve-forward:\n{}\nforward:\n{}",
        end.unwrap_err(),
        slog.text(),
        flog.text()
    );
}
