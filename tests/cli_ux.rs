//! The `relink` CLI's user-facing edges: `pubkey`, the key or anonymity
//! notice a listener and a client print at start, `:PORT` listen
//! addresses, and errors that name the address they are about.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

mod cli_support;
use cli_support::{relink_bin, spawn_listening, wait_exit, Log, Proc};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("relink-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `keygen` into a fresh directory: (key file, public key hex).
fn keygen(dir: &std::path::Path) -> (PathBuf, String) {
    let key = dir.join("server.key");
    let out = Command::new(relink_bin())
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "keygen failed");
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(public.len(), 64, "{public:?}");
    (key, public)
}

/// A free port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn pubkey_prints_the_public_key_of_a_key_file() {
    let dir = temp_dir("pubkey");
    let (key, public) = keygen(&dir);
    let out = Command::new(relink_bin())
        .arg("pubkey")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{public}\n")
    );

    // A missing or malformed key file fails and names the file.
    let missing = dir.join("missing.key");
    let out = Command::new(relink_bin())
        .arg("pubkey")
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&missing.display().to_string()), "{err}");
    let bad = dir.join("bad.key");
    std::fs::write(&bad, "not a key\n").unwrap();
    let out = Command::new(relink_bin())
        .arg("pubkey")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad key file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn listen_with_a_key_prints_the_public_key_to_pin() {
    let dir = temp_dir("announce");
    let (key, public) = keygen(&dir);
    let mut cmd = Command::new(relink_bin());
    cmd.args(["--idle-ms", "3000", "listen", "127.0.0.1:0", "--key"])
        .arg(&key)
        .stdout(Stdio::null());
    let (mut listen, addr, llog) = spawn_listening("listen", cmd);
    let line = llog
        .wait_for(&["public key", &public], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no public key line:\n{}", llog.text()));
    assert!(!line.contains("warning"), "{line}");

    // A client that pins it connects without any warning.
    let mut connect = Command::new(relink_bin())
        .args(["--idle-ms", "3000", "connect", &addr.to_string()])
        .args(["--server-key", &public])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    connect
        .stdin
        .take()
        .unwrap()
        .write_all(b"pinned\n")
        .unwrap(); // dropped: EOF
    let out = connect.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("man in the middle"), "{err}");
    assert!(wait_exit(&mut listen, Duration::from_secs(10)).is_some_and(|s| s.success()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn anonymous_listen_and_connect_warn_of_a_man_in_the_middle() {
    let mut cmd = Command::new(relink_bin());
    cmd.args(["--idle-ms", "3000", "listen", "127.0.0.1:0"])
        .stdout(Stdio::piped());
    let (mut listen, addr, llog) = spawn_listening("listen", cmd);
    let line = llog
        .wait_for(&["warning", "man in the middle"], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no warning:\n{}", llog.text()));
    assert!(
        line.contains("--key"),
        "the warning names the remedy: {line}"
    );

    let mut connect = Command::new(relink_bin())
        .args(["--idle-ms", "3000", "connect", &addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    connect
        .stdin
        .take()
        .unwrap()
        .write_all(b"anonymous\n")
        .unwrap();
    let out = connect.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("man in the middle"))
        .collect();
    assert_eq!(warnings.len(), 1, "one line: {err}");
    assert!(warnings[0].contains("--server-key"), "{err}");
    assert!(wait_exit(&mut listen, Duration::from_secs(10)).is_some_and(|s| s.success()));
}

#[test]
fn colon_port_listens_on_every_interface() {
    // listen :0
    let mut cmd = Command::new(relink_bin());
    cmd.args(["--idle-ms", "3000", "listen", ":0"])
        .stdout(Stdio::piped());
    let (mut listen, addr, _llog) = spawn_listening("listen", cmd);
    assert!(addr.ip().is_unspecified(), "{addr}");
    let mut connect = Command::new(relink_bin())
        .args(["--idle-ms", "3000", "connect"])
        .arg(format!("127.0.0.1:{}", addr.port()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    connect
        .stdin
        .take()
        .unwrap()
        .write_all(b"to every interface\n")
        .unwrap();
    assert!(connect.wait().unwrap().success());
    assert!(wait_exit(&mut listen, Duration::from_secs(10)).is_some_and(|s| s.success()));
    let mut got = String::new();
    std::io::Read::read_to_string(&mut listen.0.stdout.take().unwrap(), &mut got).unwrap();
    assert_eq!(got, "to every interface\n");

    // serve-forward :0 and forward :0
    for args in [
        &["serve-forward", ":0", "127.0.0.1:9"][..],
        &["forward", ":0", "127.0.0.1:9"][..],
    ] {
        let mut cmd = Command::new(relink_bin());
        cmd.args(args);
        let (_p, addr, _log): (Proc, _, Log) = spawn_listening(args[0], cmd);
        assert!(addr.ip().is_unspecified(), "{args:?}: {addr}");
        assert_ne!(addr.port(), 0);
    }
}

#[test]
fn address_errors_name_the_address() {
    // Bind failure: the port is taken.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    for sub in ["listen", "serve-forward", "forward"] {
        let mut cmd = Command::new(relink_bin());
        cmd.args([sub, &taken_addr, "127.0.0.1:9"][..if sub == "listen" { 2 } else { 3 }].iter());
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert!(!out.status.success(), "{sub}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("cannot listen on {taken_addr}")),
            "{sub}: {err}"
        );
    }
    // Connect failure.
    let addr = format!("127.0.0.1:{}", closed_port());
    let out = Command::new(relink_bin())
        .args(["--max-attempts", "1", "connect", &addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("connection to {addr} refused")),
        "{err}"
    );
    // A tunnel whose relink server is not there: the failure of the
    // connection it carried names the server.
    let mut cmd = Command::new(relink_bin());
    cmd.args(["forward", "127.0.0.1:0", &addr, "--max-attempts", "1"]);
    let (_fwd, local, flog) = spawn_listening("forward", cmd);
    let _tcp = std::net::TcpStream::connect(local).unwrap();
    assert!(
        flog.wait_for(
            &[&format!("connection to {addr} refused")],
            Duration::from_secs(10)
        )
        .is_some(),
        "{}",
        flog.text()
    );
    // Unresolvable names.
    let out = Command::new(relink_bin())
        .args([
            "--max-attempts",
            "1",
            "connect",
            "no-such-host.invalid:7000",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-host.invalid:7000"), "{err}");
}

#[test]
fn max_attempts_zero_means_no_limit() {
    // Nothing listens yet: with `--wait --max-attempts 0` the client keeps
    // trying (`--max-attempts 0` used to mean 1 and give up at once) and
    // gets through once a server appears on the port. (Without `--wait` a
    // refused first connection fails at once: tests/cli.rs.)
    let port = closed_port();
    let mut connect = Proc(
        Command::new(relink_bin())
            // The flags after the subcommand, where its --help lists them.
            .args([
                "-v",
                "connect",
                "--idle-ms",
                "3000",
                "--wait",
                "--max-attempts",
                "0",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let clog = Log::collect("connect", connect.0.stderr.take().unwrap());
    connect
        .0
        .stdin
        .take()
        .unwrap()
        .write_all(b"late server\n")
        .unwrap();
    // Several attempts failed and it is still at it.
    assert!(
        clog.wait_count(
            &["connect attempt failed", &format!("addr=127.0.0.1:{port}")],
            3,
            Duration::from_secs(10)
        ),
        "{}",
        clog.text()
    );
    assert!(connect.0.try_wait().unwrap().is_none(), "{}", clog.text());
    let mut cmd = Command::new(relink_bin());
    cmd.args(["--idle-ms", "3000", "listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped());
    let (mut listen, _, _llog) = spawn_listening("listen", cmd);
    let status = wait_exit(&mut connect, Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{}", clog.text());
    assert!(wait_exit(&mut listen, Duration::from_secs(10)).is_some_and(|s| s.success()));
    let mut got = String::new();
    std::io::Read::read_to_string(&mut listen.0.stdout.take().unwrap(), &mut got).unwrap();
    assert_eq!(got, "late server\n");
}

#[test]
fn exit_statuses_are_documented_and_distinct() {
    let help = Command::new(relink_bin()).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("Exit status:"), "{help}");
    for code in ["  0 ", "  1 ", "  2 ", "  3 ", "  4 ", "  130 "] {
        assert!(help.contains(code), "--help lacks status {code:?}:\n{help}");
    }
    let status = |args: &[&str]| {
        Command::new(relink_bin())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .status
            .code()
    };
    // Usage errors: 2.
    assert_eq!(
        status(&["connect", "--no-such-flag", "127.0.0.1:1"]),
        Some(2)
    );
    assert_eq!(
        status(&["connect", "127.0.0.1:1", "--server-key", "abc"]),
        Some(2)
    );
    // Nothing listens: the session cannot be opened, 3.
    let addr = format!("127.0.0.1:{}", closed_port());
    assert_eq!(status(&["connect", &addr, "--max-attempts", "1"]), Some(3));
    // A server without the pinned key: 3 too.
    let dir = temp_dir("exit");
    let (key, _) = keygen(&dir);
    let mut cmd = Command::new(relink_bin());
    cmd.args(["listen", "127.0.0.1:0", "--idle-ms", "3000", "--key"])
        .arg(&key)
        .stdout(Stdio::null());
    let (_listen, addr, _llog) = spawn_listening("listen", cmd);
    let wrong = "ab".repeat(32);
    assert_eq!(
        status(&[
            "connect",
            &addr.to_string(),
            "--server-key",
            &wrong,
            "--max-attempts",
            "2"
        ]),
        Some(3)
    );
    // A missing key file: 1.
    assert_eq!(
        status(&["pubkey", &dir.join("missing").display().to_string()]),
        Some(1)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn connect_exits_at_once_with_status_4_when_the_session_is_lost() {
    // The server keeps a lost session for 1 s, then the client knows it is
    // gone for good: `connect` must exit then, not when stdin closes.
    let mut cmd = Command::new(relink_bin());
    cmd.args(["-v", "listen", "127.0.0.1:0", "--idle-ms", "1000"])
        .args(["--resume-timeout", "1"])
        .stdout(Stdio::null());
    let (mut listen, addr, llog) = spawn_listening("listen", cmd);
    let mut connect = Proc(
        Command::new(relink_bin())
            .args(["connect", &addr.to_string(), "--idle-ms", "1000"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let clog = Log::collect("connect", connect.0.stderr.take().unwrap());
    // stdin stays open for the whole test.
    let mut stdin = connect.0.stdin.take().unwrap();
    stdin.write_all(b"still typing\n").unwrap();
    stdin.flush().unwrap();
    assert!(
        llog.wait_for(&["session established"], Duration::from_secs(10))
            .is_some(),
        "{}",
        llog.text()
    );
    listen.0.kill().unwrap(); // SIGKILL: no goodbye to the client
    let killed = std::time::Instant::now();
    let st = wait_exit(&mut connect, Duration::from_secs(15));
    let st = st.unwrap_or_else(|| {
        panic!(
            "connect still runs {:?} after the server died:\n{}",
            killed.elapsed(),
            clog.text()
        )
    });
    assert_eq!(st.code(), Some(4), "{}", clog.text());
    assert!(
        clog.wait_for(&[&addr.to_string()], Duration::from_secs(1))
            .is_some(),
        "the error names the server: {}",
        clog.text()
    );
    drop(stdin);
}

/// `connect --server-key K` to an anonymous server (no `--key`): it cannot
/// prove any key, so no session opens. The message says so, names the
/// server and the key, and says nothing about acknowledged bytes (there
/// was no session to acknowledge anything); exit status 3 (cannot open).
#[test]
fn a_pinned_key_against_an_anonymous_server_says_what_failed() {
    let mut cmd = Command::new(relink_bin());
    cmd.args(["listen", "127.0.0.1:0", "--idle-ms", "3000"])
        .stdout(Stdio::null());
    let (_listen, addr, _llog) = spawn_listening("listen", cmd);
    let key = "cd".repeat(32);
    let out = Command::new(relink_bin())
        .args(["connect", &addr.to_string(), "--server-key", &key])
        .args(["--max-attempts", "1", "--idle-ms", "3000"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("relink: "), "{err}");
    assert!(last.contains(&addr.to_string()), "names the server: {last}");
    assert!(last.contains("anonymous"), "says why: {last}");
    assert!(last.contains("cdcdcdcd"), "names the pinned key: {last}");
    for wrong in ["acknowledged", "session ended", "NoStaticKey", "{"] {
        assert!(!err.contains(wrong), "{wrong:?} in {err}");
    }
}

/// A malformed address is a usage error (exit 2, as `relink --help`
/// documents), said before anything is bound or dialled, naming the value:
/// no port, a port that is not a number, no host where one is needed.
#[test]
fn malformed_addresses_are_usage_errors_naming_the_value() {
    let cases: &[(&[&str], &str)] = &[
        (&["connect", "127.0.0.1"], "'127.0.0.1' has no port"),
        (&["listen", "127.0.0.1:22x"], "'22x' in '127.0.0.1:22x'"),
        (&["connect", ":7000"], "':7000' has no host"),
        (
            &["forward", "127.0.0.1:0", "example.com"],
            "'example.com' has no port",
        ),
        (&["serve-forward", ":0", "localhost:99999"], "'99999'"),
    ];
    for (args, names) in cases {
        let out = std::process::Command::new(relink_bin())
            .args(*args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(names),
            "{args:?} does not name the value: {err}"
        );
        assert!(
            !err.contains("listening on"),
            "{args:?} bound before failing: {err}"
        );
    }
}
