//! Issue 14, the CLI as one node of a fleet: `--drain-timeout` turns
//! SIGTERM into a graceful drain (a running `connect` finishes, the node
//! exits 0 with its summary line), its deadline aborts what is left with
//! code 10 (the client says "shutting down", exit 4 both sides), and the
//! summary line carries the node's `--server-id`.

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
            "node summary: server_id=3 sessions=1 resumes=0 unknown_session=0 misrouted=0 refused=0 aborted_at_drain=0"
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
        summary.contains("server_id=none sessions=1 ") && summary.ends_with(" aborted_at_drain=1"),
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
    // The summary comes before the last line, which still says what happened.
    let lines = llog.lines();
    let last = lines.last().cloned().unwrap_or_default();
    assert!(last.contains("SIGTERM: aborted 1 session(s)"), "{last}");
    assert!(lines
        .iter()
        .any(|l| l.contains("relink: node summary: server_id=none sessions=1 ")));
    drop(stdin);
}
