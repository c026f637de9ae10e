//! What the `relink` CLI writes on stderr: timestamped log lines, the
//! peer's address and one session id on both sides, no Rust `Debug` text,
//! no empty resend line, a line for each transport lost and each resume,
//! and `-v`'s progress as plain lines when stderr is not a terminal.
//!
//! Most tests look at one shared run: `listen -v` and `connect -v` through
//! a relay that cuts every connection after a few hundred KiB, so the
//! session is resumed several times.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use relink_test_support::relay::{FaultPlan, Relay};

mod cli_support;
use cli_support::{relink_bin, spawn_listening, wait_exit, Log, Proc};

/// The stderr lines of both sides of one session with reconnects.
struct Run {
    listen: Vec<String>,
    connect: Vec<String>,
    server: SocketAddr,
    /// Resumes the relay forced (connections it accepted, minus the first).
    reconnects: u64,
}

/// Progress lines every 100 ms instead of every few seconds.
const PROGRESS_MS: &str = "100";

fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        const LEN: usize = 3 * 1024 * 1024;
        let mut cmd = Command::new(relink_bin());
        cmd.args(["-v", "--idle-ms", "1000", "listen", "127.0.0.1:0"])
            .env("RELINK_PROGRESS_MS", PROGRESS_MS)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null());
        let (mut listen, server, llog) = spawn_listening("listen", cmd);
        let plan = FaultPlan {
            cut_after_bytes: Some((256 * 1024, 768 * 1024)),
            ..FaultPlan::default()
        };
        let relay = Relay::start(server, plan, 12).unwrap();
        let mut connect = Proc(
            Command::new(relink_bin())
                .args(["-v", "--idle-ms", "1000", "connect"])
                .arg(relay.local_addr().to_string())
                .env("RELINK_PROGRESS_MS", PROGRESS_MS)
                .env_remove("RUST_LOG")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let clog = Log::collect("connect", connect.0.stderr.take().unwrap());
        let mut stdin = connect.0.stdin.take().unwrap();
        // In pieces with pauses: the transfer lasts long enough for
        // several progress lines.
        let chunk: Vec<u8> = (0..LEN / 8).map(|i| (i * 7 + 3) as u8).collect();
        for _ in 0..8 {
            stdin.write_all(&chunk).unwrap();
            std::thread::sleep(Duration::from_millis(60));
        }
        drop(stdin); // EOF
        let cstatus = wait_exit(&mut connect, Duration::from_secs(60));
        assert!(
            cstatus.is_some_and(|s| s.success()),
            "connect failed: {cstatus:?}\n{}",
            clog.text()
        );
        let lstatus = wait_exit(&mut listen, Duration::from_secs(10));
        assert!(
            lstatus.is_some_and(|s| s.success()),
            "listen failed: {lstatus:?}\n{}",
            llog.text()
        );
        // The readers may still hold the last lines.
        std::thread::sleep(Duration::from_millis(100));
        let reconnects = relay.stats().connections.saturating_sub(1);
        Run {
            listen: llog.lines(),
            connect: clog.lines(),
            server,
            reconnects,
        }
    })
}

/// Whether `line` starts with an RFC 3339 UTC timestamp with milliseconds
/// (`2026-11-30T10:15:02.123Z`) followed by a space.
fn timestamped(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 25
        && b.iter().take(24).enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
        && b[24] == b' '
}

/// The user-facing messages that are not log lines (no timestamp): the
/// address and key announcements scripts read.
fn announcement(line: &str) -> bool {
    line.starts_with("listening on ") || line.starts_with("relink: ")
}

/// The value of `field=` in `line` (up to the next space).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split(' ').next()
}

fn both(r: &Run) -> impl Iterator<Item = &String> {
    r.listen.iter().chain(&r.connect)
}

#[test]
fn every_log_line_has_a_utc_timestamp_and_a_level() {
    let r = run();
    let logs: Vec<&String> = both(r).filter(|l| !announcement(l)).collect();
    assert!(logs.len() >= 6, "few log lines: {logs:#?}");
    for l in &logs {
        assert!(timestamped(l), "no timestamp: {l:?}");
        assert!(
            [" ERROR ", " WARN ", " INFO ", " DEBUG "]
                .iter()
                .any(|lvl| l.contains(lvl)),
            "no level: {l:?}"
        );
    }
    // In order on each side (one clock, one writer).
    for side in [&r.listen, &r.connect] {
        let stamps: Vec<&str> = side
            .iter()
            .filter(|l| timestamped(l))
            .map(|l| &l[..24])
            .collect();
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:#?}");
    }
}

#[test]
fn verbose_progress_on_a_pipe_is_plain_periodic_lines() {
    let r = run();
    for (side, lines) in [("connect", &r.connect), ("listen", &r.listen)] {
        let progress: Vec<&String> = lines.iter().filter(|l| l.contains("progress")).collect();
        assert!(
            progress.len() >= 2,
            "{side}: periodic progress lines expected:\n{}",
            lines.join("\n")
        );
        for l in &progress {
            assert!(timestamped(l), "{side}: {l:?}");
            assert!(l.contains("last contact"), "{side}: {l:?}");
            assert!(l.contains("reconnect"), "{side}: {l:?}");
        }
    }
    for l in both(r) {
        assert!(
            !l.contains('\r') && !l.contains('\u{1b}'),
            "terminal control characters on a pipe: {l:?}"
        );
    }
    // The byte counts grow.
    let sent: Vec<u64> = r
        .connect
        .iter()
        .filter_map(|l| field(l, "sent"))
        .filter_map(|v| v.parse().ok())
        .collect();
    assert!(sent.windows(2).all(|w| w[0] <= w[1]), "{sent:?}");
    assert!(sent.last().is_some_and(|&n| n > 0), "{sent:?}");
}

#[test]
fn no_rust_debug_text_and_no_empty_resend_line() {
    let r = run();
    assert!(
        r.reconnects >= 2,
        "the relay cut the session: {}",
        r.reconnects
    );
    for l in both(r) {
        for debug in ["{ ", " }", "Some(", "None", "Error(", "Stats", "[0, 0)"] {
            assert!(!l.contains(debug), "{debug:?} in {l:?}");
        }
        assert!(!l.contains("resending 0 B"), "{l:?}");
    }
    // The client's counters, in words.
    let stats = r
        .connect
        .iter()
        .find(|l| l.contains(" transports, "))
        .unwrap_or_else(|| panic!("no stats line:\n{}", r.connect.join("\n")));
    assert!(
        stats.contains(" resumes") || stats.contains(" resume,"),
        "{stats}"
    );
}

#[test]
fn both_sides_name_the_session_alike_and_the_server_names_the_peer() {
    let r = run();
    let established = r
        .connect
        .iter()
        .find(|l| l.contains("session established"))
        .unwrap_or_else(|| panic!("{}", r.connect.join("\n")));
    let id = field(established, "session").unwrap();
    assert_eq!(id.len(), 16, "{established}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{established}");
    let new = r
        .listen
        .iter()
        .find(|l| l.contains("session established"))
        .unwrap_or_else(|| panic!("{}", r.listen.join("\n")));
    assert_eq!(field(new, "session"), Some(id), "{new}");
    // The server's peer is the relay's outgoing socket: a loopback
    // address with a port of its own, not the server's.
    let peer: SocketAddr = field(new, "peer")
        .unwrap_or_else(|| panic!("no peer: {new}"))
        .parse()
        .unwrap();
    assert!(
        peer.ip().is_loopback() && peer.port() != r.server.port(),
        "{new}"
    );
    // Every session line of either side carries the same id.
    for l in both(r).filter(|l| l.contains(" session=")) {
        assert_eq!(field(l, "session"), Some(id), "{l}");
    }
}

#[test]
fn each_transport_lost_and_each_resume_is_a_line() {
    let r = run();
    let count = |lines: &[String], what: &str| lines.iter().filter(|l| l.contains(what)).count();
    let lost = count(&r.connect, "transport lost");
    let resumed: Vec<&String> = r.connect.iter().filter(|l| l.contains("resumed")).collect();
    assert!(!resumed.is_empty(), "{}", r.connect.join("\n"));
    assert!(lost >= resumed.len(), "{}", r.connect.join("\n"));
    for l in &resumed {
        let ms: u64 = field(l, "detached_ms")
            .unwrap_or_else(|| panic!("no detached_ms: {l}"))
            .parse()
            .unwrap();
        assert!(ms < 60_000, "{l}");
    }
    // The server says so too (its losses: see the driver events below).
    assert!(
        count(&r.listen, "resumed") >= resumed.len(),
        "{}",
        r.listen.join("\n")
    );
    // One line per fact: the drivers' lines, no second one from the CLI.
    for (side, lines) in [("connect", &r.connect), ("listen", &r.listen)] {
        let text = lines.join("\n");
        assert_eq!(count(lines, "established"), 1, "{side}:\n{text}");
        assert_eq!(count(lines, "session ended"), 1, "{side}:\n{text}");
        assert_eq!(
            count(lines, "resumed"),
            count(lines, "session resumed"),
            "{side}:\n{text}"
        );
        // Each transport is lost once at most (the last one ends cleanly).
        assert!(
            count(lines, "transport lost") as u64 <= r.reconnects + 1,
            "{side}: {} cut connections:\n{text}",
            r.reconnects
        );
    }
}

#[test]
fn without_v_only_warnings_and_errors_are_logged() {
    let mut cmd = Command::new(relink_bin());
    cmd.args(["--idle-ms", "3000", "listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null());
    let (mut listen, addr, llog) = spawn_listening("listen", cmd);
    let mut connect = Command::new(relink_bin())
        .args(["--idle-ms", "3000", "connect", &addr.to_string()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    connect.stdin.take().unwrap().write_all(b"quiet\n").unwrap();
    let out = connect.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(wait_exit(&mut listen, Duration::from_secs(10)).is_some_and(|s| s.success()));
    std::thread::sleep(Duration::from_millis(100));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    for l in err.lines().chain(llog.lines().iter().map(String::as_str)) {
        assert!(
            !l.contains(" INFO ") && !l.contains("progress") && !l.contains("clock offset"),
            "{l}"
        );
    }
    // RUST_LOG overrides: INFO lines without -v.
    let mut cmd = Command::new(relink_bin());
    cmd.args(["--idle-ms", "3000", "listen", "127.0.0.1:0"])
        .env("RUST_LOG", "relink=info")
        .stdout(Stdio::null());
    let (mut listen, addr, llog) = spawn_listening("listen", cmd);
    let mut connect = Command::new(relink_bin())
        .args(["--idle-ms", "3000", "connect", &addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    connect.stdin.take().unwrap().write_all(b"loud\n").unwrap();
    assert!(connect.wait().unwrap().success());
    assert!(wait_exit(&mut listen, Duration::from_secs(10)).is_some_and(|s| s.success()));
    assert!(
        llog.wait_for(&[" INFO ", "session established"], Duration::from_secs(2))
            .is_some(),
        "{}",
        llog.text()
    );
}

// ---------------------------------------------------------------------------
// Lines the library's drivers write (their `tracing` events): field names
// as agreed (`session`, `peer`, `role`, `cause`, `detached_ms`, `resent`,
// `addr`, `error`, `server_key`).

#[test]
fn driver_events_carry_the_agreed_fields() {
    let r = run();
    let id = r
        .connect
        .iter()
        .find_map(|l| {
            l.contains("session established")
                .then(|| field(l, "session"))
        })
        .flatten()
        .unwrap_or_else(|| panic!("{}", r.connect.join("\n")));
    for (side, lines, role) in [
        ("listen", &r.listen, "server"),
        ("connect", &r.connect, "client"),
    ] {
        let est = lines
            .iter()
            .find(|l| l.contains("established") && field(l, "role") == Some(role))
            .unwrap_or_else(|| panic!("{side}: no established line with role={role}"));
        assert_eq!(field(est, "session"), Some(id), "{side}: {est}");
        assert!(field(est, "peer").is_some(), "{side}: {est}");
        let resumed: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("resumed") && field(l, "resent").is_some())
            .collect();
        assert!(!resumed.is_empty(), "{side}: no resumed line with resent=");
        for l in resumed {
            assert_eq!(field(l, "session"), Some(id), "{side}: {l}");
            assert!(field(l, "peer").is_some(), "{side}: {l}");
            assert!(field(l, "detached_ms").is_some(), "{side}: {l}");
        }
        // The driver's line, the only one for the fact.
        let lost = lines
            .iter()
            .find(|l| {
                l.contains("transport lost")
                    && field(l, "peer").is_some()
                    && field(l, "cause").is_some()
            })
            .unwrap_or_else(|| panic!("{side}: no transport lost line with peer= and cause="));
        assert_eq!(field(lost, "session"), Some(id), "{side}: {lost}");
    }
}

#[test]
fn a_client_pinning_another_key_is_a_server_warning_naming_its_peer() {
    let dir = std::env::temp_dir().join(format!("relink-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("server.key");
    let out = Command::new(relink_bin())
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    // Another key: the public key with its first digit changed.
    let other = format!(
        "{}{}",
        if public.starts_with('0') { "1" } else { "0" },
        &public[1..]
    );
    let mut cmd = Command::new(relink_bin());
    cmd.args(["--idle-ms", "3000", "listen", "127.0.0.1:0", "--key"])
        .arg(&key)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null());
    let (_listen, addr, llog) = spawn_listening("listen", cmd);
    let out = Command::new(relink_bin())
        .args(["--idle-ms", "3000", "connect", &addr.to_string()])
        .args(["--server-key", &other, "--max-attempts", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let line = llog
        .wait_for(&[" WARN ", "server_key="], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no warning:\n{}", llog.text()));
    assert!(timestamped(&line), "{line}");
    let peer: SocketAddr = field(&line, "peer")
        .unwrap_or_else(|| panic!("no peer: {line}"))
        .parse()
        .unwrap();
    assert!(peer.ip().is_loopback(), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_connect_attempt_names_the_address_and_the_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap(); // closed again: nothing listens
    let out = Command::new(relink_bin())
        .args(["-v", "connect", &closed.to_string()])
        .args(["--wait", "--max-attempts", "2"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| field(l, "error").is_some() && field(l, "addr").is_some())
        .unwrap_or_else(|| panic!("no line with addr= and error=:\n{err}"));
    assert!(timestamped(line), "{line}");
    assert!(line.contains(&closed.to_string()), "{line}");
}

#[test]
fn verbose_connect_states_the_server_clock_offset_once() {
    let r = run();
    let lines: Vec<&String> = r
        .connect
        .iter()
        .filter(|l| l.starts_with("relink: server clock offset "))
        .collect();
    assert_eq!(lines.len(), 1, "{:#?}", r.connect);
    // `+12.3 ms`: a sign, milliseconds with one decimal.
    let value = lines[0]["relink: server clock offset ".len()..]
        .strip_suffix(" ms")
        .unwrap_or_else(|| panic!("no unit: {:?}", lines[0]));
    assert!(value.starts_with(['+', '-']), "no sign: {value:?}");
    let (_, frac) = value.split_once('.').expect("one decimal");
    assert_eq!(frac.len(), 1, "{value:?}");
    let ms: f64 = value.parse().expect("a number");
    // Both sides read the same system clock: the offset is the error of
    // the client's estimate (about a round trip on loopback), not an
    // offset between the clocks' origins.
    assert!(ms.abs() < 1000.0, "offset {ms} ms on one machine");
    // Not on the server's side, and not without -v (see
    // without_v_only_warnings_and_errors_are_logged).
    assert!(!r.listen.iter().any(|l| l.contains("clock offset")));
}
