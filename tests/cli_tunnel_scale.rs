//! `relink forward` and `relink serve-forward` keep a flat thread count
//! (issue 12): 50 tunnelled connections open at once through `forward` →
//! `serve-forward` → a local echo service, each echoing, while both
//! processes run on a handful of threads (the tunnels' runtime: a few
//! workers, at most two blocking threads), not one or two per tunnel.
#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

mod cli_support;
use cli_support::{relink_bin, spawn_listening};

/// Tunnels open at once.
const TUNNELS: usize = 50;
/// Threads a tunnel process may have, whatever the number of tunnels.
const MAX_THREADS: u64 = 16;

/// A TCP echo service (a thread per connection: the test's threads, not
/// the tunnels').
fn echo_service() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// `Threads:` of /proc/PID/status.
fn threads(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Threads line:\n{status}"))
}

/// One round trip of `msg` through `c`.
fn echo(c: &mut TcpStream, msg: &[u8]) {
    c.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    c.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

#[test]
fn fifty_open_tunnels_run_on_a_flat_number_of_threads() {
    let target = echo_service();
    let mut cmd = Command::new(relink_bin());
    cmd.args(["--idle-ms", "5000", "serve-forward", "127.0.0.1:0"])
        .arg(target.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let (server, server_addr, slog) = spawn_listening("serve-forward", cmd);
    let mut cmd = Command::new(relink_bin());
    cmd.args(["--idle-ms", "5000", "forward", "127.0.0.1:0"])
        .arg(server_addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let (forward, local, flog) = spawn_listening("forward", cmd);
    let pids = [
        ("forward", forward.0.id()),
        ("serve-forward", server.0.id()),
    ];
    let before: Vec<u64> = pids.iter().map(|&(_, p)| threads(p)).collect();

    let mut conns = Vec::with_capacity(TUNNELS);
    for i in 0..TUNNELS {
        let mut c = TcpStream::connect(local).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        echo(&mut c, format!("tunnel {i} open").as_bytes());
        conns.push(c);
    }
    // All 50 open (each answered once): the thread counts now.
    let during: Vec<u64> = pids.iter().map(|&(_, p)| threads(p)).collect();
    for ((name, _), (&b, &d)) in pids.iter().zip(before.iter().zip(&during)) {
        assert!(
            d <= MAX_THREADS,
            "{name}: {d} threads with {TUNNELS} tunnels open ({b} before)\nforward:\n{}\nserve-forward:\n{}",
            flog.text(),
            slog.text()
        );
    }
    // Every tunnel still carries its own bytes, in any order of use.
    for (i, c) in conns.iter_mut().enumerate().rev() {
        echo(c, format!("tunnel {i} again").as_bytes());
    }
    let after: Vec<u64> = pids.iter().map(|&(_, p)| threads(p)).collect();
    for ((name, _), &a) in pids.iter().zip(&after) {
        assert!(
            a <= MAX_THREADS,
            "{name}: {a} threads after the second round"
        );
    }
    eprintln!("threads before {before:?}, with {TUNNELS} tunnels {during:?}, after {after:?}");
}
