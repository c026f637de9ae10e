//! Tunnels do not hide errors (issue 12), as a user of `relink forward` +
//! `relink serve-forward` sees it: a target that is down is logged with its
//! address and the local client gets a reset (not an empty reply), and a
//! tunnelled connection ends as soon as the relink session under it is lost
//! (not minutes later).
//!
//! Resets crossing a working tunnel both ways are in `tests/cli_abort.rs`
//! (`a_target_reset_reaches_the_tunnel_client_as_a_reset`,
//! `a_local_client_reset_reaches_the_target_as_a_reset`).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

mod cli_support;
use cli_support::{relink_bin, spawn_listening, Log, Proc};

fn relink() -> Command {
    Command::new(relink_bin())
}

/// `relink --idle-ms IDLE serve-forward 127.0.0.1:0 TARGET EXTRA...`.
fn serve_forward(target: SocketAddr, idle_ms: u64, extra: &[&str]) -> (Proc, SocketAddr, Log) {
    let mut cmd = relink();
    cmd.args([
        "--idle-ms",
        &idle_ms.to_string(),
        "serve-forward",
        "127.0.0.1:0",
        &target.to_string(),
    ])
    .args(extra)
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    spawn_listening("serve-forward", cmd)
}

/// `relink --idle-ms IDLE forward 127.0.0.1:0 SERVER`.
fn forward(server: SocketAddr, idle_ms: u64) -> (Proc, SocketAddr, Log) {
    let mut cmd = relink();
    cmd.args([
        "--idle-ms",
        &idle_ms.to_string(),
        "forward",
        "127.0.0.1:0",
        &server.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    spawn_listening("forward", cmd)
}

/// Read until the connection ends; how it ended (`Ok(bytes)` = clean EOF).
fn read_to_end(c: &mut TcpStream) -> Result<usize, ErrorKind> {
    let mut buf = [0u8; 4096];
    let mut got = 0;
    loop {
        match c.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.kind()),
        }
    }
}

/// A TCP echo service; each connection reports how it ended on the channel.
fn echo_service() -> (SocketAddr, mpsc::Receiver<Result<usize, ErrorKind>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let tx = tx.clone();
            thread::spawn(move || {
                let mut w = c.try_clone().unwrap();
                let mut buf = [0u8; 4096];
                let mut got = 0;
                let end = loop {
                    match c.read(&mut buf) {
                        Ok(0) => break Ok(got),
                        Ok(n) => {
                            got += n;
                            if w.write_all(&buf[..n]).is_err() {
                                break Err(ErrorKind::BrokenPipe);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => break Err(e.kind()),
                    }
                };
                let _ = tx.send(end);
            });
        }
    });
    (addr, rx)
}

/// Open a tunnelled connection and check one round trip through it.
fn tunnelled_echo(local: SocketAddr) -> TcpStream {
    let mut conn = TcpStream::connect(local).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    conn.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    conn
}

/// A `serve-forward` whose TARGET refuses connections: the server logs the
/// target's address and the cause, and the local client of `forward` sees a
/// reset (ECONNRESET on read), not an empty reply that looks like a service
/// that said nothing and closed.
///
/// Issue 12 reported this as an empty clean EOF at the local client and a
/// log line without the target's address ("session from ... failed:
/// Connection refused"). On `tunnel12` as branched (f9aa6d8) this test
/// already passes: `serve_forward` aborts the session with
/// `AbortCode::TARGET_RESET` and names the target ("connecting to ADDR:
/// Connection refused"), and `splice` on the `forward` side maps the
/// aborted session to a reset; the test pins that behaviour.
#[test]
fn a_refused_target_is_logged_by_address_and_resets_the_local_client() {
    // A port nobody listens on.
    let target = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (_server, server_addr, slog) = serve_forward(target, 3000, &[]);
    let (_client, local, flog) = forward(server_addr, 3000);

    let mut conn = TcpStream::connect(local).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    let end = read_to_end(&mut conn);
    assert_eq!(
        end,
        Err(ErrorKind::ConnectionReset),
        "the local client saw {end:?} after {:?}, not a reset\nserve-forward:\n{}\nforward:\n{}",
        start.elapsed(),
        slog.text(),
        flog.text()
    );
    let target = target.to_string();
    let line = slog.wait_for(&[&target], Duration::from_secs(5));
    let line = line.unwrap_or_else(|| {
        panic!(
            "serve-forward logged nothing naming {target}:\n{}",
            slog.text()
        )
    });
    assert!(
        line.to_lowercase().contains("refused"),
        "the log line names no cause: {line:?}"
    );
}

/// The relink server under a tunnel dies (SIGKILL) and does not come back:
/// once the session is lost (the server said it keeps sessions 1 s,
/// `--resume-timeout 1`, so the client stops reconnecting after that), the
/// local TCP connection ends within seconds, with a reset (the transfer was
/// cut short, so no clean EOF), instead of hanging on.
///
/// Issue 12 reported such connections staying open 120 s after the session
/// was gone. On `tunnel12` as branched (f9aa6d8) this test already passes
/// (the local client sees a reset about 1-2 s after the kill).
#[test]
fn a_lost_session_resets_the_local_connection_promptly() {
    let (target, _ends) = echo_service();
    let (mut server, server_addr, slog) = serve_forward(target, 600, &["--resume-timeout", "1"]);
    let (_client, local, flog) = forward(server_addr, 600);
    let mut conn = tunnelled_echo(local);

    server.0.kill().unwrap();
    server.0.wait().unwrap();
    let killed = Instant::now();
    let end = read_to_end(&mut conn);
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the local connection ended {took:?} after the server died ({end:?})\nforward:\n{}",
        flog.text()
    );
    assert_eq!(
        end,
        Err(ErrorKind::ConnectionReset),
        "the local client saw {end:?} ({took:?} after the kill), not a reset\nserve-forward:\n{}\nforward:\n{}",
        slog.text(),
        flog.text()
    );
}

/// The other side: the `forward` process dies (SIGKILL) and its session
/// is never resumed; once `serve-forward`'s `--resume-timeout` (1 s) ran
/// out, the connection to the target is reset within seconds instead of
/// being held open.
///
/// On `tunnel12` as branched (f9aa6d8) this test already passes.
#[test]
fn a_lost_session_resets_the_target_connection_promptly() {
    let (target, ends) = echo_service();
    let (_server, server_addr, slog) = serve_forward(target, 600, &["--resume-timeout", "1"]);
    let (mut client, local, _flog) = forward(server_addr, 600);
    let _conn = tunnelled_echo(local);

    client.0.kill().unwrap();
    client.0.wait().unwrap();
    let killed = Instant::now();
    let end = ends
        .recv_timeout(Duration::from_secs(15))
        .unwrap_or_else(|_| {
            panic!(
                "the target's connection still open {:?} after the client died\nserve-forward:\n{}",
                killed.elapsed(),
                slog.text()
            )
        });
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the target's connection ended {took:?} after the client died"
    );
    assert_eq!(
        end,
        Err(ErrorKind::ConnectionReset),
        "the target saw {end:?} ({took:?} after the kill), not a reset\nserve-forward:\n{}",
        slog.text()
    );
}

/// The session under a tunnel is aborted (SIGTERM on `serve-forward`
/// aborts every session it holds): the local client sees a reset at once,
/// not an EOF and not a connection left open until a timeout.
///
/// On `tunnel12` as branched (f9aa6d8) this test already passes.
#[test]
fn an_aborted_session_resets_the_local_connection_at_once() {
    let (target, _ends) = echo_service();
    let (server, server_addr, slog) = serve_forward(target, 3000, &[]);
    let (_client, local, flog) = forward(server_addr, 3000);
    let mut conn = tunnelled_echo(local);

    let term = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let sent = Instant::now();
    let end = read_to_end(&mut conn);
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the local connection ended {took:?} after SIGTERM ({end:?})\nforward:\n{}",
        flog.text()
    );
    assert_eq!(
        end,
        Err(ErrorKind::ConnectionReset),
        "the local client saw {end:?}, not a reset\nserve-forward:\n{}\nforward:\n{}",
        slog.text(),
        flog.text()
    );
    drop(server);
}

/// `forward` whose REMOTE relink server refuses connections (no `--wait`,
/// so the first refused connect fails at once): the local client connected
/// to LOCAL sees a reset, not an empty reply, and `forward` logs the
/// remote's address and the cause.
///
/// Failed before the fix (f9aa6d8, run with `RELINK_BIN` set to that
/// build): the local client read a clean EOF after 0 bytes
/// (`Ok(0)` instead of `Err(ConnectionReset)`): `forward` dropped the
/// accepted connection with a FIN when it could not open the session.
#[test]
fn a_refused_remote_resets_the_local_client_of_forward() {
    // A port nobody listens on, as the relink server.
    let remote = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (_client, local, flog) = forward(remote, 3000);
    let mut conn = TcpStream::connect(local).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let end = read_to_end(&mut conn);
    assert_eq!(
        end,
        Err(ErrorKind::ConnectionReset),
        "the local client saw {end:?}, not a reset\nforward:\n{}",
        flog.text()
    );
    let remote = remote.to_string();
    let line = flog.wait_for(&[&remote], Duration::from_secs(5));
    let line =
        line.unwrap_or_else(|| panic!("forward logged nothing naming {remote}:\n{}", flog.text()));
    assert!(
        line.to_lowercase().contains("refused"),
        "the log line names no cause: {line:?}"
    );
}
