//! The CLI's client credentials (`listen --credentials`, `connect
//! --credential-file / --token-file`): accepted and rejected sessions, the
//! token file (mode 0600, reused, refused → the credential file once), and
//! the usage errors.

mod cli_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cli_support::{keygen, relink_bin, spawn_listening, wait_exit, Proc};

const WAIT: Duration = Duration::from_secs(30);

/// A fresh directory for one test's files.
fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("relink-cli-cred-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn private_file(path: &Path, content: &[u8]) {
    std::fs::write(path, content).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// `relink -v listen` with `--credentials creds` and `extra` flags.
fn listen(
    key: &Path,
    creds: &Path,
    sessions: u32,
    extra: &[&str],
) -> (Proc, std::net::SocketAddr, cli_support::Log) {
    let mut cmd = Command::new(relink_bin());
    cmd.args(["-v", "listen", "127.0.0.1:0", "--key"])
        .arg(key)
        .arg("--credentials")
        .arg(creds)
        .args(["--sessions", &sessions.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stdin(Stdio::null());
    spawn_listening("listen", cmd)
}

/// `relink connect` to `addr` pinning `public`, with `flags`, sending
/// `data`: (exit code, stderr).
fn connect(
    addr: std::net::SocketAddr,
    public: &str,
    flags: &[&std::ffi::OsStr],
    data: &[u8],
) -> (Option<i32>, String) {
    let mut child = Command::new(relink_bin())
        .args(["-v", "connect", &addr.to_string(), "--server-key", public])
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let mut p = Proc(child);
    let status = wait_exit(&mut p, WAIT).expect("connect did not exit");
    writer.join().unwrap();
    let mut err = String::new();
    use std::io::Read;
    p.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code(), err)
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// `--credential-file CRED --token-file TOKEN`.
fn both_files<'a>(cred: &'a Path, token: &'a Path) -> [&'a std::ffi::OsStr; 4] {
    [
        os("--credential-file"),
        cred.as_os_str(),
        os("--token-file"),
        token.as_os_str(),
    ]
}

#[test]
fn accepted_credential_and_token_file() {
    let d = dir("accept");
    let (key, public) = keygen(&d);
    let creds = d.join("creds");
    private_file(
        &creds,
        b"# users\nalice:correct horse\nbob:battery staple\n",
    );
    let cred = d.join("alice.cred");
    private_file(&cred, b"alice:correct horse\n");
    let token = d.join("alice.token");
    let (mut server, addr, log) = listen(&key, &creds, 2, &[]);
    let mut server_out = server.0.stdout.take().unwrap();
    let (code, err) = connect(addr, &public, &both_files(&cred, &token), b"first");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        log.wait_for(&["accepted as alice"], WAIT).is_some(),
        "{}",
        log.text()
    );
    // The token was written, private.
    let t = std::fs::read(&token).expect("token file");
    assert!(t.len() >= 51, "{} bytes", t.len());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Second session: the token alone (no credential file) is enough.
    let (code, err) = connect(
        addr,
        &public,
        &[os("--token-file"), token.as_os_str()],
        b"second",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        log.wait_count(&["accepted as alice"], 2, WAIT),
        "{}",
        log.text()
    );
    assert_eq!(wait_exit(&mut server, WAIT).and_then(|s| s.code()), Some(0));
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut server_out, &mut got).unwrap();
    assert_eq!(got, b"firstsecond");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn rejected_credential_exits_3_naming_the_reason() {
    let d = dir("reject");
    let (key, public) = keygen(&d);
    let creds = d.join("creds");
    private_file(&creds, b"alice:correct horse\n");
    let cred = d.join("mallory.cred");
    private_file(&cred, b"mallory:guess\n");
    let (mut server, addr, log) = listen(&key, &creds, 0, &[]);
    let mut server_out = server.0.stdout.take().unwrap();
    let (code, err) = connect(
        addr,
        &public,
        &[os("--credential-file"), cred.as_os_str()],
        b"secret data",
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains(&addr.to_string()), "{err}");
    assert!(err.contains("refused the credential:"), "{err}");
    assert!(
        err.contains("credential rejected") && err.contains("code 5"),
        "{err}"
    );
    assert!(log.wait_for(&["refused"], WAIT).is_some(), "{}", log.text());
    drop(server);
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut server_out, &mut got).unwrap();
    assert!(got.is_empty(), "a rejected session delivered {got:?}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn refused_token_falls_back_to_the_credential_file_once() {
    let d = dir("fallback");
    let (key, public) = keygen(&d);
    let creds = d.join("creds");
    private_file(&creds, b"alice:correct horse\n");
    let cred = d.join("alice.cred");
    private_file(&cred, b"alice:correct horse");
    // A token of another server (here: garbage of a token's length).
    let token = d.join("alice.token");
    private_file(&token, &[0x01; 60]);
    let (mut server, addr, log) = listen(&key, &creds, 1, &[]);
    let (code, err) = connect(addr, &public, &both_files(&cred, &token), b"x");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("refused the token") && err.contains("token invalid"),
        "{err}"
    );
    assert!(
        err.contains("token invalid") && err.contains("trying --credential-file"),
        "{err}"
    );
    assert!(log.wait_for(&["accepted as alice"], WAIT).is_some());
    // The refused token was replaced by the new one.
    assert_ne!(std::fs::read(&token).unwrap(), vec![0x01; 60]);
    assert_eq!(wait_exit(&mut server, WAIT).and_then(|s| s.code()), Some(0));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn credential_flags_need_the_server_key() {
    let d = dir("usage");
    let cred = d.join("cred");
    private_file(&cred, b"alice:pw");
    for flag in ["--credential-file", "--token-file"] {
        let out = Command::new(relink_bin())
            .args(["connect", "127.0.0.1:9", flag])
            .arg(&cred)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert!(err.contains("--server-key"), "{err}");
    }
    let out = Command::new(relink_bin())
        .args(["listen", "127.0.0.1:0", "--credentials"])
        .arg(&cred)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--key"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
#[cfg(unix)]
fn world_readable_credentials_file_warns() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir("warn");
    let (key, _) = keygen(&d);
    let creds = d.join("creds");
    std::fs::write(&creds, b"alice:pw\n").unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (server, _addr, log) = listen(&key, &creds, 1, &[]);
    assert!(
        log.wait_for(&["warning", "readable by group or others"], WAIT)
            .is_some(),
        "{}",
        log.text()
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn token_lifetime_needs_credentials() {
    let d = dir("lifetime");
    let (key, _) = keygen(&d);
    for cmd in [
        &["listen", "127.0.0.1:0"][..],
        &["serve-forward", "127.0.0.1:0", "127.0.0.1:9"][..],
    ] {
        let out = Command::new(relink_bin())
            .args(cmd)
            .arg("--key")
            .arg(&key)
            .args(["--token-lifetime", "60"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
        assert!(err.contains("--credentials"), "{cmd:?}: {err}");
    }
    // `relink --help` says a refused credential exits with 3.
    let out = Command::new(relink_bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let three = help.split("\n  3 ").nth(1).expect("status 3 in --help");
    let three = three.split("\n  4 ").next().unwrap();
    assert!(three.contains("refused the credential or token"), "{three}");
    let _ = std::fs::remove_dir_all(&d);
}

/// New-user trial: a token file that cannot hold a token (here a short
/// line of text) made `connect` hang silently. It is now ignored with a
/// line naming the file, and the credential file is used; without a
/// credential file the client presents nothing and the server refuses it
/// (exit 3).
#[test]
fn a_file_that_is_no_token_is_ignored_with_a_warning() {
    let d = dir("notoken");
    let (key, public) = keygen(&d);
    let creds = d.join("creds");
    private_file(&creds, b"alice:correct horse\n");
    let cred = d.join("alice.cred");
    private_file(&cred, b"alice:correct horse");
    let token = d.join("alice.token");
    private_file(&token, b"garbage\n");
    let (mut server, addr, log) = listen(&key, &creds, 2, &[]);
    let (code, err) = connect(addr, &public, &both_files(&cred, &token), b"x");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("does not hold a token") && err.contains("alice.token"),
        "{err}"
    );
    assert!(log.wait_for(&["accepted as alice"], WAIT).is_some());
    private_file(&token, b"garbage\n");
    let (code, err) = connect(
        addr,
        &public,
        &[os("--token-file"), token.as_os_str()],
        b"x",
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("does not hold a token"), "{err}");
    // It presented nothing: the message says so (not "the credential").
    assert!(err.contains("presented no credential"), "{err}");
    let _ = server.0.kill();
    let _ = wait_exit(&mut server, WAIT);
    let _ = std::fs::remove_dir_all(&d);
}
