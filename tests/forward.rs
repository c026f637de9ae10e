//! `relink forward` + `relink serve-forward` (the `relink` binary of `relink-cli`): one
//! TCP client connection to a TCP echo service, carried over a relink
//! session through a relay that cuts the connection again and again, keeps
//! working: every byte comes back in order, and EOF passes through.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;

use relink_test_support::relay::{FaultPlan, Relay};

mod cli_support;
use cli_support::{relink_bin, Proc};

/// Start `relink ARGS` and return it with the address from its first
/// stderr line (`listening on ADDR`); the rest of stderr is echoed.
fn spawn_listening(args: &[&str]) -> (Proc, SocketAddr) {
    let mut child = Proc(
        Command::new(relink_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first stderr line {line:?}"))
        .parse()
        .unwrap();
    let name = args[args.len() - 3].to_string();
    thread::spawn(move || {
        for l in err.lines().map_while(Result::ok) {
            eprintln!("[{name}] {l}");
        }
    });
    (child, addr)
}

/// A TCP echo service: every connection gets its bytes back; EOF is
/// answered with EOF.
fn echo_service() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            thread::spawn(move || {
                let mut w = c.try_clone().unwrap();
                let _ = std::io::copy(&mut c, &mut w);
                let _ = w.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

fn pattern(offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let x = (offset + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        *b = (x >> 29) as u8 ^ (x >> 47) as u8;
    }
}

#[test]
fn echo_over_forward_survives_cuts() {
    const TOTAL: u64 = 4 * 1024 * 1024 + 99;
    let echo = echo_service();
    let (_server, server_addr) = spawn_listening(&[
        "-v",
        "--idle-ms",
        "1000",
        "serve-forward",
        "127.0.0.1:0",
        &echo.to_string(),
    ]);
    let plan = FaultPlan {
        cut_after_bytes: Some((32 * 1024, 256 * 1024)),
        ..FaultPlan::default()
    };
    let relay = Relay::start(server_addr, plan, 4242).unwrap();
    let (_client, local) = spawn_listening(&[
        "-v",
        "--idle-ms",
        "1000",
        "forward",
        "127.0.0.1:0",
        &relay.local_addr().to_string(),
    ]);

    let conn = TcpStream::connect(local).unwrap();
    let mut w = conn.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let mut buf = vec![0u8; 40_000];
        let mut sent = 0u64;
        let mut size = 1usize;
        while sent < TOTAL {
            size = (size * 7 + 13) % buf.len() + 1; // varying write sizes
            let n = size.min((TOTAL - sent) as usize);
            pattern(sent, &mut buf[..n]);
            w.write_all(&buf[..n]).unwrap();
            sent += n as u64;
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut r = conn;
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(got + n as u64 <= TOTAL, "more bytes echoed than sent");
        pattern(got, &mut want[..n]);
        assert!(buf[..n] == want[..n], "echo differs near offset {got}");
        got += n as u64;
    }
    writer.join().unwrap();
    assert_eq!(got, TOTAL, "EOF before every byte came back");
    let rs = relay.stats();
    assert!(rs.cuts >= 10, "{rs:?}");
    // One TCP connection, one session: every relay connection after the
    // first was a resume of it.
    assert_eq!(rs.connections, rs.cuts + 1, "{rs:?}");
}
