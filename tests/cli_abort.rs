//! The peer learns at once when the other side is gone (issue 9, section 4),
//! as a user of the CLI sees it: Ctrl-C on `connect`, `listen | head`, and a
//! reset TCP connection through a `forward`/`serve-forward` tunnel.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod cli_support;
use cli_support::{relink_bin, spawn_listening, wait_exit, Log, Proc};

fn relink() -> Command {
    Command::new(relink_bin())
}

#[test]
fn ctrl_c_on_connect_reaches_the_server_at_once() {
    let mut cmd = relink();
    cmd.args([
        "--idle-ms",
        "3000",
        "listen",
        "127.0.0.1:0",
        "--sessions",
        "0",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    let (mut listen, addr, llog) = spawn_listening("listen", cmd);
    let mut out = listen.0.stdout.take().unwrap();

    let mut connect = Proc(
        relink()
            .args(["--idle-ms", "3000", "connect", &addr.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let clog = Log::collect("connect", connect.0.stderr.take().unwrap());
    let mut stdin = connect.0.stdin.take().unwrap(); // kept open: a live session
    stdin.write_all(b"first line\n").unwrap();
    let mut got = [0u8; 11];
    out.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"first line\n");

    let start = Instant::now();
    let kill = Command::new("kill")
        .args(["-INT", &connect.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = wait_exit(&mut connect, Duration::from_secs(3)).expect("connect still runs");
    assert!(!status.success(), "connect exited {status} after SIGINT");
    let line = llog.wait_for(&["aborted", "interrupted"], Duration::from_secs(2));
    assert!(
        line.is_some(),
        "listen did not report the abort within 2 s of the SIGINT; listen log:\n{}\nconnect log:\n{}",
        llog.text(),
        clog.text()
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    // The listener serves on.
    assert!(listen.0.try_wait().unwrap().is_none(), "listen exited");
}

#[test]
fn listen_into_head_aborts_the_sender() {
    const TOTAL: usize = 50 << 20;
    let mut cmd = relink();
    cmd.args(["--idle-ms", "3000", "listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let (mut listen, addr, _llog) = spawn_listening("listen", cmd);
    let mut out = listen.0.stdout.take().unwrap();

    let mut connect = Proc(
        relink()
            .args(["--idle-ms", "3000", "connect", &addr.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let clog = Log::collect("connect", connect.0.stderr.take().unwrap());
    let mut stdin = connect.0.stdin.take().unwrap();
    thread::spawn(move || {
        let chunk = vec![b'z'; 1 << 20];
        for _ in 0..TOTAL / chunk.len() {
            if stdin.write_all(&chunk).is_err() {
                return; // connect is gone
            }
        }
    });
    // `| head -c 1000`: take 1000 bytes, then close the pipe.
    let mut head = vec![0u8; 1000];
    out.read_exact(&mut head).unwrap();
    drop(out);
    let status = wait_exit(&mut connect, Duration::from_secs(6));
    let status = status.unwrap_or_else(|| {
        panic!(
            "connect still runs 6 s after the receiver went away; its log:\n{}",
            clog.text()
        )
    });
    assert!(!status.success(), "connect exited {status}");
    // (its stderr is read by a thread: wait for the last line)
    let named = clog.wait_for(
        &["aborted by the peer", "no more data"],
        Duration::from_secs(2),
    );
    assert!(
        named.is_some(),
        "connect's message does not name the abort: {}",
        clog.text()
    );
    let lstatus = wait_exit(&mut listen, Duration::from_secs(3)).expect("listen still runs");
    assert!(!lstatus.success());
}

#[test]
fn a_target_reset_reaches_the_tunnel_client_as_a_reset() {
    const SENT: usize = 100 * 1024;
    // A service that sends 100 KiB and then resets its connection.
    let service = TcpListener::bind("127.0.0.1:0").unwrap();
    let service_addr = service.local_addr().unwrap();
    thread::spawn(move || {
        for c in service.incoming() {
            let Ok(mut c) = c else { continue };
            let data = vec![b'r'; SENT];
            let _ = c.write_all(&data);
            thread::sleep(Duration::from_millis(200));
            let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
            drop(c); // RST
        }
    });
    let mut cmd = relink();
    cmd.args([
        "--idle-ms",
        "3000",
        "serve-forward",
        "127.0.0.1:0",
        &service_addr.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    let (_server, server_addr, slog) = spawn_listening("serve-forward", cmd);
    let mut cmd = relink();
    cmd.args([
        "--idle-ms",
        "3000",
        "forward",
        "127.0.0.1:0",
        &server_addr.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    let (_client, local, flog) = spawn_listening("forward", cmd);

    let mut conn = TcpStream::connect(local).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let end = loop {
        match conn.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                assert!(buf[..n].iter().all(|&b| b == b'r'));
                got += n;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    let _ = conn.shutdown(Shutdown::Both);
    assert!(got <= SENT);
    match end {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!(
            "the tunnel client saw {other:?} after {got} bytes, not a reset\nserve-forward:\n{}\nforward:\n{}",
            slog.text(),
            flog.text()
        ),
    }
}

#[test]
fn a_local_client_reset_reaches_the_target_as_a_reset() {
    // A service that reports how its connection ended.
    let service = TcpListener::bind("127.0.0.1:0").unwrap();
    let service_addr = service.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let Ok((mut c, _)) = service.accept() else {
            return;
        };
        c.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let mut buf = [0u8; 4096];
        let mut got = 0usize;
        let end = loop {
            match c.read(&mut buf) {
                Ok(0) => break Ok(got),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Err(e.kind()),
            }
        };
        let _ = tx.send(end);
    });
    let mut cmd = relink();
    cmd.args([
        "--idle-ms",
        "3000",
        "serve-forward",
        "127.0.0.1:0",
        &service_addr.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    let (_server, server_addr, _slog) = spawn_listening("serve-forward", cmd);
    let mut cmd = relink();
    cmd.args([
        "--idle-ms",
        "3000",
        "forward",
        "127.0.0.1:0",
        &server_addr.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    let (_client, local, _flog) = spawn_listening("forward", cmd);

    let mut conn = TcpStream::connect(local).unwrap();
    conn.write_all(&[b'q'; 10_000]).unwrap();
    thread::sleep(Duration::from_millis(300));
    socket2::SockRef::from(&conn)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(conn); // RST
    let end = rx
        .recv_timeout(Duration::from_secs(9))
        .expect("the service saw nothing");
    assert_eq!(
        end,
        Err(ErrorKind::ConnectionReset),
        "the service saw {end:?}, not a reset"
    );
}

#[test]
fn sigterm_on_listen_ends_connect_at_once_with_stdin_still_open() {
    let mut cmd = relink();
    cmd.args(["--idle-ms", "3000", "listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let (mut listen, addr, _llog) = spawn_listening("listen", cmd);
    let mut out = listen.0.stdout.take().unwrap();
    let mut connect = Proc(
        relink()
            .args(["--idle-ms", "3000", "connect", &addr.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let clog = Log::collect("connect", connect.0.stderr.take().unwrap());
    let mut stdin = connect.0.stdin.take().unwrap(); // stays open
    stdin.write_all(b"ping\n").unwrap();
    let mut got = [0u8; 5];
    out.read_exact(&mut got).unwrap();

    let kill = Command::new("kill")
        .args(["-TERM", &listen.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = wait_exit(&mut connect, Duration::from_secs(3)).unwrap_or_else(|| {
        panic!(
            "connect still runs 3 s after the server was terminated; its log:\n{}",
            clog.text()
        )
    });
    assert!(!status.success(), "connect exited {status}");
    let named = clog.wait_for(
        &["aborted by the peer", "interrupted"],
        Duration::from_secs(2),
    );
    assert!(
        named.is_some(),
        "connect's message does not name the abort: {}",
        clog.text()
    );
    let lstatus = wait_exit(&mut listen, Duration::from_secs(2)).expect("listen still runs");
    assert!(!lstatus.success());
    drop(stdin);
}
