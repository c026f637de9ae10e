//! `relink -v` tells each rekey (`relink: rekeyed, epoch N`) and the final
//! epoch in its session summary, on both sides, after a transfer with a
//! small rekey interval (the hidden `--rekey-after-bytes` flag).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

mod cli_support;
use cli_support::{relink_bin, spawn_listening, wait_exit, Log, Proc};

/// The epochs of the `rekeyed, epoch N` lines of `lines`, in order.
fn epochs(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("relink: rekeyed, epoch ")?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn verbose_sides_tell_each_rekey_and_the_final_epoch() {
    const LEN: usize = 1024 * 1024;
    const EVERY: &str = "65536";
    let mut cmd = Command::new(relink_bin());
    cmd.args(["-v", "--rekey-after-bytes", EVERY, "listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null());
    let (mut listen, server, llog) = spawn_listening("listen", cmd);
    let mut connect = Proc(
        Command::new(relink_bin())
            .args(["-v", "--rekey-after-bytes", EVERY, "connect"])
            .arg(server.to_string())
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let clog = Log::collect("connect", connect.0.stderr.take().unwrap());
    let data: Vec<u8> = (0..LEN).map(|i| (i * 13 + 1) as u8).collect();
    let mut stdin = connect.0.stdin.take().unwrap();
    // In 64 KiB pieces with pauses: a rekey is due after each piece and
    // completes before the next (a burst would pass many intervals during
    // one exchange, which is the policy: a soft limit).
    for piece in data.chunks(64 * 1024) {
        stdin.write_all(piece).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(15));
    }
    drop(stdin);
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
    std::thread::sleep(Duration::from_millis(100));
    let (clines, llines) = (clog.lines(), llog.lines());
    // 1 MiB sent with a rekey due every 64 KiB: several exchanges, each
    // told once, epochs 1, 2, 3... in order on both sides.
    for (side, lines) in [("connect", &clines), ("listen", &llines)] {
        let e = epochs(lines);
        assert!(e.len() >= 4, "{side}: few rekeys: {lines:#?}");
        let expected: Vec<u32> = (1..=e.len() as u32).collect();
        assert_eq!(e, expected, "{side}: {lines:#?}");
    }
    // The summary names the final epoch.
    let last = *epochs(&clines).last().unwrap();
    let summary = clines
        .iter()
        .find(|l| l.contains("session stats: "))
        .unwrap_or_else(|| panic!("no summary: {clines:#?}"));
    assert!(summary.contains(&format!("key epoch {last}")), "{summary}");
    let last = *epochs(&llines).last().unwrap();
    let summary = llines
        .iter()
        .find(|l| l.contains("session stats: "))
        .unwrap_or_else(|| panic!("no summary: {llines:#?}"));
    assert!(summary.contains(&format!("key epoch {last}")), "{summary}");
}

#[test]
fn without_v_no_rekey_lines() {
    let mut cmd = Command::new(relink_bin());
    cmd.args(["--rekey-after-bytes", "4096", "listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null());
    let (mut listen, server, llog) = spawn_listening("listen", cmd);
    let mut connect = Command::new(relink_bin())
        .args(["--rekey-after-bytes", "4096", "connect"])
        .arg(server.to_string())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let data = vec![7u8; 64 * 1024];
    connect.stdin.take().unwrap().write_all(&data).unwrap();
    let out = connect.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(wait_exit(&mut listen, Duration::from_secs(10)).is_some_and(|s| s.success()));
    std::thread::sleep(Duration::from_millis(100));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    for l in err.lines().chain(llog.lines().iter().map(String::as_str)) {
        assert!(!l.contains("rekeyed"), "{l}");
    }
}
