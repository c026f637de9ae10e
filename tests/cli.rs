//! The `relink` CLI (crate `relink-cli`) as a user runs it: `--help`, `keygen`, and a
//! random file piped from `connect` to `listen` through a cutting relay
//! arrives intact (SHA-256), with a pinned server key.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;

use relink_test_support::relay::{FaultPlan, Relay};
use sha2::{Digest, Sha256};

mod cli_support;
use cli_support::{relink_bin, Proc};

/// Read the `listening on ADDR` line the listening commands print first,
/// then keep draining stderr (echoed to ours) in a thread.
fn listening_addr(child: &mut Child) -> SocketAddr {
    let mut err = BufReader::new(child.stderr.take().expect("stderr piped"));
    let mut line = String::new();
    err.read_line(&mut line).expect("read stderr");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first stderr line {line:?}"))
        .parse()
        .expect("address");
    thread::spawn(move || {
        for l in err.lines().map_while(Result::ok) {
            eprintln!("[child] {l}");
        }
    });
    addr
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("relink-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn help_explains_every_flag() {
    let help = |args: &[&str]| {
        let out = Command::new(relink_bin()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let top = help(&["--help"]);
    for s in [
        "listen",
        "connect",
        "keygen",
        "pubkey",
        "forward",
        "serve-forward",
        "--verbose",
    ] {
        assert!(top.contains(s), "top-level help lacks {s}:\n{top}");
    }
    // Each subcommand's help shows its own flags and no other's.
    let all = [
        "--key",
        "--sessions",
        "--resume-timeout",
        "--server-key",
        "--out",
        "--idle-ms",
        "--max-attempts",
    ];
    // The flags a help lists (descriptions may mention others).
    let listed = |h: &str| -> Vec<String> {
        h.lines()
            .map(str::trim_start)
            .filter(|l| l.starts_with('-'))
            .flat_map(|l| l.split([' ', ',']).filter(|w| w.starts_with("--")))
            .map(str::to_string)
            .collect()
    };
    for s in all {
        assert!(
            !listed(&top).iter().any(|f| f == s),
            "top-level help shows {s}:\n{top}"
        );
    }
    for (sub, flags) in [
        (
            "listen",
            &[
                "--key",
                "--sessions",
                "--resume-timeout",
                "--idle-ms",
                "<ADDR>",
            ][..],
        ),
        (
            "connect",
            &["--server-key", "--max-attempts", "--idle-ms", "<ADDR>"][..],
        ),
        ("keygen", &["--out"][..]),
        ("pubkey", &["<KEYFILE>"][..]),
        (
            "forward",
            &[
                "--server-key",
                "--max-attempts",
                "--idle-ms",
                "<LOCAL>",
                "<REMOTE>",
            ][..],
        ),
        (
            "serve-forward",
            &[
                "--key",
                "--resume-timeout",
                "--idle-ms",
                "<ADDR>",
                "<TARGET>",
            ][..],
        ),
    ] {
        let h = help(&[sub, "--help"]);
        for f in flags {
            assert!(h.contains(f), "`{sub} --help` lacks {f}:\n{h}");
        }
        for f in all.iter().filter(|f| !flags.contains(f)) {
            assert!(
                !listed(&h).iter().any(|l| l == f),
                "`{sub} --help` shows {f}:\n{h}"
            );
        }
        assert!(h.contains("--verbose"), "`{sub} --help` lacks -v:\n{h}");
    }
}

#[test]
fn random_file_through_cutting_relay_with_pinned_key_is_identical() {
    const LEN: usize = 6 * 1024 * 1024 + 4321;
    let dir = temp_dir("cli");
    let key = dir.join("server.key");
    let out = Command::new(relink_bin())
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "keygen failed");
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(public.len(), 64, "public key hex: {public:?}");
    assert!(public.bytes().all(|b| b.is_ascii_hexdigit()));
    // keygen refuses to overwrite a key file.
    let again = Command::new(relink_bin())
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!again.status.success());

    let input = random_bytes(LEN, 0x5EED);
    let received = dir.join("received.bin");
    let mut listen = Proc(
        Command::new(relink_bin())
            .args(["-v", "--idle-ms", "1000", "listen", "127.0.0.1:0", "--key"])
            .arg(&key)
            .stdout(std::fs::File::create(&received).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let server_addr = listening_addr(&mut listen.0);
    let plan = FaultPlan {
        cut_after_bytes: Some((64 * 1024, 512 * 1024)),
        ..FaultPlan::default()
    };
    let relay = Relay::start(server_addr, plan, 77).unwrap();
    let mut connect = Proc(
        Command::new(relink_bin())
            .args(["-v", "--idle-ms", "1000", "connect"])
            .arg(relay.local_addr().to_string())
            .args(["--server-key", &public])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stdin = connect.0.stdin.take().unwrap();
    let feeder = {
        let input = input.clone();
        thread::spawn(move || {
            stdin.write_all(&input).unwrap();
        }) // dropping stdin is the EOF
    };
    feeder.join().unwrap();
    assert!(connect.0.wait().unwrap().success(), "connect failed");
    assert!(listen.0.wait().unwrap().success(), "listen failed");
    let mut got = Vec::new();
    std::fs::File::open(&received)
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert_eq!(got.len(), input.len());
    assert_eq!(Sha256::digest(&got), Sha256::digest(&input));
    let rs = relay.stats();
    assert!(rs.cuts >= 10, "{rs:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn connect_fails_with_a_clear_message_when_the_session_cannot_be_opened() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap(); // closed again: nothing listens
                   // Refused: fails at once, naming the address.
    let out = Command::new(relink_bin())
        .args(["connect", &addr.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "cannot open");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused"), "stderr: {err}");
    assert_eq!(
        err.matches(&addr.to_string()).count(),
        1,
        "names the address, once: {err}"
    );
    // --wait retries up to --max-attempts, then gives up.
    let out = Command::new(relink_bin())
        .args([
            "connect",
            &addr.to_string(),
            "--wait",
            "--max-attempts",
            "2",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "cannot open");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gave up"), "stderr: {err}");
    // A malformed pinned key is refused before connecting.
    let out = Command::new(relink_bin())
        .args(["connect", &addr.to_string(), "--server-key", "abc"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server-key"));
}

#[test]
fn readme_shows_the_current_help() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for args in [
        &["--help"][..],
        &["listen", "--help"][..],
        &["connect", "--help"][..],
        &["keygen", "--help"][..],
        &["pubkey", "--help"][..],
        &["forward", "--help"][..],
        &["serve-forward", "--help"][..],
    ] {
        let out = Command::new(relink_bin()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let help = String::from_utf8(out.stdout).unwrap();
        let block = format!(
            "```text\n$ relink {}\n{}\n```",
            args.join(" "),
            help.trim_end()
        );
        assert!(
            readme.contains(&block),
            "README.md lacks the current `relink {}` (paste it):\n{block}",
            args.join(" ")
        );
    }
}
