//! Issue 14, the CLI as one node of a fleet: `--drain-timeout` turns
//! SIGTERM into a graceful drain (a running `connect` finishes, the node
//! exits 0 with its summary line), its deadline aborts what is left with
//! code 10 (the client says "shutting down", exit 4 both sides), the
//! summary line carries the node's `--server-id` and is the node's last
//! line, `--server-id` errors say what to write instead, and a PROXY
//! protocol mismatch between balancer and node is logged naming the peer.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

mod cli_support;
use cli_support::{relink_bin, spawn_listening, wait_exit, Log, Proc};

fn relink() -> Command {
    Command::new(relink_bin())
}

fn sigterm(p: &Proc) {
    let kill = Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
}

/// `relink listen` with `args` (stdout collected by a thread).
fn listen(args: &[&str]) -> (Proc, std::net::SocketAddr, Log, thread::JoinHandle<Vec<u8>>) {
    let mut cmd = relink();
    cmd.args([
        "--idle-ms",
        "3000",
        "listen",
        "127.0.0.1:0",
        "--sessions",
        "0",
    ])
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    let (mut p, addr, log) = spawn_listening("listen", cmd);
    let mut out = p.0.stdout.take().unwrap();
    let got = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    (p, addr, log, got)
}

fn connect(addr: std::net::SocketAddr) -> (Proc, Log) {
    let mut p = Proc(
        relink()
            .args(["--idle-ms", "3000", "connect", &addr.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = Log::collect("connect", p.0.stderr.take().unwrap());
    (p, log)
}

#[test]
fn sigterm_with_a_drain_timeout_lets_a_running_connect_finish() {
    let (mut l, addr, llog, out) = listen(&["--drain-timeout", "30", "--server-id", "3"]);
    let (mut c, clog) = connect(addr);
    let mut stdin = c.0.stdin.take().unwrap();
    stdin.write_all(b"before the drain\n").unwrap();
    // Let the first line arrive, then take the node out of service.
    thread::sleep(Duration::from_millis(500));
    sigterm(&l);
    assert!(
        llog.wait_for(&["draining"], Duration::from_secs(10))
            .is_some(),
        "no drain: {}",
        llog.text()
    );
    // The running session goes on and ends cleanly.
    thread::sleep(Duration::from_millis(300));
    stdin.write_all(b"during the drain\n").unwrap();
    drop(stdin);
    let cs = wait_exit(&mut c, Duration::from_secs(20)).expect("connect hangs");
    assert_eq!(cs.code(), Some(0), "connect: {}", clog.text());
    let ls = wait_exit(&mut l, Duration::from_secs(20)).expect("listen does not exit");
    assert_eq!(ls.code(), Some(0), "listen: {}", llog.text());
    assert_eq!(
        out.join().unwrap(),
        b"before the drain\nduring the drain\n".to_vec()
    );
    let summary = llog
        .wait_for(&["relink: node summary:"], Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no summary: {}", llog.text()));
    assert!(
        summary.ends_with(
            "node summary: server_id=3 sessions=1 resumes=0 unknown_session=0 misrouted=0 refused=0 aborted_at_drain=0 unconfirmed_at_drain=0"
        ),
        "{summary}"
    );
}

#[test]
fn the_drain_deadline_aborts_the_rest_with_shutting_down() {
    let (mut l, addr, llog, _out) = listen(&["--drain-timeout", "1"]);
    let (mut c, clog) = connect(addr);
    let mut stdin = c.0.stdin.take().unwrap();
    stdin.write_all(b"and then nothing\n").unwrap();
    thread::sleep(Duration::from_millis(500));
    sigterm(&l);
    // stdin stays open: the session does not end by itself.
    let cs = wait_exit(&mut c, Duration::from_secs(15)).expect("connect hangs");
    assert_eq!(cs.code(), Some(4), "connect: {}", clog.text());
    assert!(
        clog.text().contains("shutting down") && clog.text().contains(&addr.to_string()),
        "the client does not say why or where: {}",
        clog.text()
    );
    let ls = wait_exit(&mut l, Duration::from_secs(15)).expect("listen does not exit");
    assert_eq!(ls.code(), Some(4), "listen: {}", llog.text());
    let summary = llog
        .wait_for(&["relink: node summary:"], Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no summary: {}", llog.text()));
    assert!(
        summary.contains("server_id=none sessions=1 ") && summary.contains(" aborted_at_drain=1 "),
        "{summary}"
    );
    drop(stdin);
}

#[test]
fn without_a_drain_timeout_sigterm_still_aborts_at_once() {
    let (mut l, addr, llog, _out) = listen(&[]);
    let (mut c, clog) = connect(addr);
    let mut stdin = c.0.stdin.take().unwrap();
    stdin.write_all(b"x\n").unwrap();
    thread::sleep(Duration::from_millis(500));
    sigterm(&l);
    let ls = wait_exit(&mut l, Duration::from_secs(10)).expect("listen does not exit");
    assert_eq!(ls.code(), Some(130), "listen: {}", llog.text());
    let cs = wait_exit(&mut c, Duration::from_secs(10)).expect("connect hangs");
    assert_eq!(cs.code(), Some(4), "connect: {}", clog.text());
    // What happened, then the summary: the last line on every exit path.
    llog.wait_for(&["relink: node summary:"], Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no summary: {}", llog.text()));
    let lines = llog.lines();
    let n = lines.len();
    assert!(n >= 2, "{}", llog.text());
    assert!(
        lines[n - 1].contains("relink: node summary: server_id=none sessions=1 "),
        "{}",
        llog.text()
    );
    assert!(
        lines[n - 2].contains("SIGTERM: aborted 1 session(s)"),
        "{}",
        llog.text()
    );
    drop(stdin);
}

/// A TCP echo service (one thread per connection; closes after EOF).
fn echo_service() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            thread::spawn(move || {
                let mut w = c.try_clone().unwrap();
                let mut buf = [0u8; 4096];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn serve_forward_drains_on_sigterm_and_a_running_tunnel_finishes() {
    let target = echo_service();
    let mut cmd = relink();
    cmd.args(["--idle-ms", "3000", "serve-forward", "127.0.0.1:0"])
        .arg(target.to_string())
        .args(["--drain-timeout", "30", "--server-id", "9/2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let (mut sf, sf_addr, sflog) = spawn_listening("serve-forward", cmd);
    let mut cmd = relink();
    cmd.args(["--idle-ms", "3000", "forward", "127.0.0.1:0"])
        .arg(sf_addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let (_fwd, local, _flog) = spawn_listening("forward", cmd);
    let mut conn = std::net::TcpStream::connect(local).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut back = [0u8; 5];
    conn.write_all(b"ping1").unwrap();
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping1");
    sigterm(&sf);
    assert!(
        sflog
            .wait_for(&["draining"], Duration::from_secs(10))
            .is_some(),
        "no drain: {}",
        sflog.text()
    );
    // The tunnel goes on during the drain, then ends cleanly.
    conn.write_all(b"ping2").unwrap();
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping2");
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let st = wait_exit(&mut sf, Duration::from_secs(20)).expect("serve-forward does not exit");
    assert_eq!(st.code(), Some(0), "serve-forward: {}", sflog.text());
    let summary = sflog
        .wait_for(&["relink: node summary:"], Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no summary: {}", sflog.text()));
    assert!(
        summary.ends_with("server_id=9 sessions=1 resumes=0 unknown_session=0 misrouted=0 refused=0 aborted_at_drain=0 unconfirmed_at_drain=0"),
        "{summary}"
    );
}

/// The `session=` field (16 hex digits) of the first log line with `what`.
fn session_field(log: &Log, what: &str) -> u64 {
    let line = log
        .wait_for(&[what, "session="], Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no {what:?} line: {}", log.text()));
    let at = line.find("session=").unwrap() + "session=".len();
    u64::from_str_radix(&line[at..at + 16], 16).unwrap_or_else(|_| panic!("{line}"))
}

#[test]
fn the_server_id_is_in_every_connection_id_and_a_lost_node_ends_the_client_typed() {
    // Two nodes; a "balancer" sends the first transport to node 1 and every
    // later one to node 2 (as after node 1 died).
    let (mut n1, a1, log1, out1) = listen(&["--server-id", "1", "-v"]);
    let (mut n2, a2, log2, _out2) = listen(&["--server-id", "2"]);
    let lb = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let lb_addr = lb.local_addr().unwrap();
    thread::spawn(move || {
        for (i, c) in lb.incoming().enumerate() {
            let Ok(c) = c else { continue };
            let to = if i == 0 { a1 } else { a2 };
            thread::spawn(move || {
                let Ok(s) = std::net::TcpStream::connect(to) else {
                    return;
                };
                let pipe = |mut r: std::net::TcpStream, mut w: std::net::TcpStream| {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut r, &mut w);
                        let _ = w.shutdown(std::net::Shutdown::Write);
                    })
                };
                pipe(c.try_clone().unwrap(), s.try_clone().unwrap());
                pipe(s, c);
            });
        }
    });
    let (mut c, clog) = connect(lb_addr);
    let mut stdin = c.0.stdin.take().unwrap();
    stdin.write_all(b"delivered\n").unwrap();
    let id = session_field(&log1, "session established");
    // cid[1] = the server id (PROTOCOL.md 3.8): the second byte of LE64(conn id).
    assert_eq!((id >> 8) & 0xff, 1, "conn id {id:016x}");
    // Node 1 is gone for good (its memory with it).
    thread::sleep(Duration::from_millis(300));
    let _ = n1.0.kill();
    let _ = n1.0.wait();
    let _ = out1.join();
    let _ = stdin.write_all(b"in doubt\n");
    let cs = wait_exit(&mut c, Duration::from_secs(20)).expect("connect hangs");
    assert_eq!(cs.code(), Some(4), "connect: {}", clog.text());
    let err = clog.text();
    assert!(
        err.contains(&lb_addr.to_string()),
        "names the server: {err}"
    );
    assert!(
        err.contains("may or may not have been delivered"),
        "in-doubt range: {err}"
    );
    // Node 2 answered the resumes "unknown session" (an anonymous client
    // believes it after `max_unauthenticated_rejections` in a row) and
    // counts each misrouted: they carry node 1's id.
    sigterm(&n2);
    wait_exit(&mut n2, Duration::from_secs(10)).expect("node 2 does not exit");
    let summary = log2
        .wait_for(&["relink: node summary:"], Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no summary: {}", log2.text()));
    let field = |k: &str| -> u64 {
        let at = summary.find(&format!(" {k}=")).unwrap() + k.len() + 2;
        summary[at..].split(' ').next().unwrap().parse().unwrap()
    };
    assert!(
        summary.contains("server_id=2 sessions=0 resumes=0 "),
        "{summary}"
    );
    assert!(field("unknown_session") >= 1, "{summary}");
    assert_eq!(field("unknown_session"), field("misrouted"), "{summary}");
    drop(stdin);
}

/// `--proxy-protocol`: a connection that starts with a PROXY v2 header is
/// served (the logs name the client address it carries), one without is
/// closed and counted refused in the summary.
#[test]
fn proxy_protocol_reads_the_balancer_s_header() {
    let (mut l, addr, llog, out) = listen(&["--proxy-protocol", "-v"]);
    // Without a header: refused, connect cannot open a session (exit 3).
    let plain = relink()
        .args(["--idle-ms", "3000", "connect", &addr.to_string()])
        .args(["--max-attempts", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        plain.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    // A "balancer" that sends the header first.
    let lb = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let lb_addr = lb.local_addr().unwrap();
    thread::spawn(move || {
        for c in lb.incoming() {
            let Ok(c) = c else { continue };
            thread::spawn(move || {
                let Ok(mut s) = std::net::TcpStream::connect(addr) else {
                    return;
                };
                let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
                h.extend([0x21, 0x11, 0, 12, 198, 51, 100, 23, 127, 0, 0, 1]);
                h.extend(5555u16.to_be_bytes());
                h.extend(addr.port().to_be_bytes());
                if s.write_all(&h).is_err() {
                    return;
                }
                let pipe = |mut r: std::net::TcpStream, mut w: std::net::TcpStream| {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut r, &mut w);
                        let _ = w.shutdown(std::net::Shutdown::Write);
                    })
                };
                pipe(c.try_clone().unwrap(), s.try_clone().unwrap());
                pipe(s, c);
            });
        }
    });
    let (mut c, clog) = connect(lb_addr);
    let mut stdin = c.0.stdin.take().unwrap();
    stdin.write_all(b"through the balancer\n").unwrap();
    drop(stdin);
    let cs = wait_exit(&mut c, Duration::from_secs(20)).expect("connect hangs");
    assert_eq!(cs.code(), Some(0), "connect: {}", clog.text());
    assert!(
        llog.wait_for(
            &["session established", "peer=198.51.100.23:5555"],
            Duration::from_secs(5)
        )
        .is_some(),
        "the log does not name the client: {}",
        llog.text()
    );
    sigterm(&l);
    wait_exit(&mut l, Duration::from_secs(10)).expect("listen does not exit");
    assert_eq!(out.join().unwrap(), b"through the balancer\n".to_vec());
    let summary = llog
        .wait_for(&["relink: node summary:"], Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no summary: {}", llog.text()));
    assert!(summary.contains(" sessions=1 "), "{summary}");
    assert!(!summary.contains(" refused=0 "), "{summary}");
}

/// `--server-id`: 0 is refused (fleets number their nodes from 1, as the
/// HAProxy rules of docs/DEPLOYMENT.md do), and an id too large for its
/// length names the `ID/LEN` form that holds it.
#[test]
fn server_id_errors_say_what_to_write() {
    for (cmd, id, want) in [
        ("listen", "0", "server ids start at 1"),
        ("serve-forward", "0", "server ids start at 1"),
        ("listen", "300", "use `300/2`"),
        ("serve-forward", "70000/2", "use `70000/3`"),
    ] {
        let mut c = relink();
        c.args([cmd, "127.0.0.1:0"]);
        if cmd == "serve-forward" {
            c.arg("127.0.0.1:9");
        }
        let out = c
            .args(["--server-id", id])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd} --server-id {id}: {err}");
        assert!(err.contains("--server-id"), "{cmd} --server-id {id}: {err}");
        assert!(err.contains(want), "{cmd} --server-id {id}: {err}");
        assert!(!err.contains("listening on"), "{err}");
    }
}

/// Send `bytes` to `addr` from a fresh connection; wait until the node
/// closes it. The connection's own address (what the node's log names).
fn send_and_wait_close(addr: std::net::SocketAddr, bytes: &[u8]) -> std::net::SocketAddr {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let me = s.local_addr().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    me
}

/// A node with `--proxy-protocol` reached without a PROXY header (a
/// balancer without `send-proxy-v2`, or a client bypassing the balancer)
/// says so at WARN, naming the peer, instead of only counting it refused.
#[test]
fn a_missing_proxy_header_is_logged_naming_the_peer() {
    // -vv: the DEBUG line of the health check's refusal below.
    let (mut l, addr, llog, _out) = listen(&["--proxy-protocol", "-vv"]);
    // What a relink client sends first: a tag byte, not the signature.
    let me = send_and_wait_close(addr, &[0u8; 64]);
    let line = llog
        .wait_for(
            &["WARN", "expected a PROXY protocol v2 header from"],
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("no warning: {}", llog.text()));
    assert!(
        line.contains(&me.to_string()),
        "names the peer {me}: {line}"
    );
    assert!(line.contains("send-proxy-v2"), "names the fix: {line}");
    // A TCP health check (connect, close without a byte) is no mismatch:
    // refused at DEBUG only.
    drop(std::net::TcpStream::connect(addr).unwrap());
    llog.wait_for(
        &["transport refused", "closed after 0 bytes"],
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| panic!("the health check was not refused: {}", llog.text()));
    sigterm(&l);
    wait_exit(&mut l, Duration::from_secs(10)).expect("listen does not exit");
    let summary = llog
        .wait_for(&["relink: node summary:"], Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no summary: {}", llog.text()));
    assert!(summary.contains(" refused=2 "), "{summary}");
    let warnings = llog
        .lines()
        .iter()
        .filter(|l| l.contains("expected a PROXY protocol"))
        .count();
    assert_eq!(warnings, 1, "{}", llog.text());
}

/// The other mismatch: a balancer sending PROXY v2 headers to a node
/// without `--proxy-protocol`. The node says so at WARN, naming the peer
/// and the flag.
#[test]
fn an_unexpected_proxy_header_is_logged_naming_the_peer_and_the_flag() {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend([0x21, 0x11, 0, 12, 198, 51, 100, 23, 127, 0, 0, 1]);
    header.extend(5555u16.to_be_bytes());
    header.extend(7000u16.to_be_bytes());
    header.extend([0u8; 48]);
    // Both drivers: `listen` runs the blocking one, `serve-forward` tokio's.
    let (mut l, addr, llog, _out) = listen(&[]);
    let mut cmd = relink();
    cmd.args(["serve-forward", "127.0.0.1:0", "127.0.0.1:9"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let (mut sf, sf_addr, sflog) = spawn_listening("serve-forward", cmd);
    for (addr, log) in [(addr, &llog), (sf_addr, &sflog)] {
        let me = send_and_wait_close(addr, &header);
        let line = log
            .wait_for(
                &[
                    "WARN",
                    "sent a PROXY protocol header; start the node with --proxy-protocol",
                ],
                Duration::from_secs(10),
            )
            .unwrap_or_else(|| panic!("no warning: {}", log.text()));
        assert!(
            line.contains(&me.to_string()),
            "names the peer {me}: {line}"
        );
        // A relink client's malformed hello is no PROXY header.
        send_and_wait_close(addr, &[0x42; 64]);
    }
    sigterm(&l);
    sigterm(&sf);
    wait_exit(&mut l, Duration::from_secs(10)).expect("listen does not exit");
    wait_exit(&mut sf, Duration::from_secs(10)).expect("serve-forward does not exit");
    for log in [&llog, &sflog] {
        let warnings = log
            .lines()
            .iter()
            .filter(|l| l.contains("sent a PROXY protocol header"))
            .count();
        assert_eq!(warnings, 1, "{}", log.text());
    }
}
