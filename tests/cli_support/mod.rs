//! Shared by the tests that run the CLI binary (`relink`, from the
//! `relink-cli` workspace crate): building and locating it, and a
//! child-process guard.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;

/// Path of the `relink` binary, built once per test process
/// (`cargo build -p relink-cli`, same profile as this test; a no-op when it
/// is up to date).
/// `RELINK_BIN=/path/to/relink` runs the tests against another build (e.g.
/// an older commit's, to see a test fail before a fix).
pub fn relink_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("RELINK_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("test exe path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
        let target_dir = profile_dir.parent().expect("target dir");
        let bin = profile_dir.join(format!("relink{}", std::env::consts::EXE_SUFFIX));
        let mut cmd = Command::new(env!("CARGO"));
        // The variables cargo sets for this test process would reach build
        // scripts (ring's watches CARGO_MANIFEST_DIR) and make every run
        // rebuild half the dependency tree: not theirs to see.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k == "CARGO_MANIFEST_DIR"
                || k == "CARGO_MANIFEST_PATH"
                || k == "CARGO_MANIFEST_LINKS"
                || k == "CARGO_CRATE_NAME"
                || k == "CARGO_PRIMARY_PACKAGE"
                || k == "CARGO_TARGET_TMPDIR"
                || k == "CARGO_RUSTC_CURRENT_DIR"
                || k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_BIN_")
            {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", target_dir)
            .args(["build", "--quiet", "-p", "relink-cli", "--bin", "relink"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build -p relink-cli");
        assert!(status.success(), "cargo build -p relink-cli failed");
        assert!(bin.exists(), "{} missing", bin.display());
        bin
    })
}

/// A child process killed when the guard drops (also on test failure).
pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines a child wrote to stderr, collected by a thread.
#[derive(Clone, Default)]
pub struct Log(pub std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Log {
    /// Collect the lines of `r` (echoed to our stderr with `name`).
    pub fn collect(name: &str, r: impl std::io::Read + Send + 'static) -> Log {
        use std::io::BufRead;
        let log = Log::default();
        let l = log.clone();
        let name = name.to_string();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
                eprintln!("[{name}] {line}");
                l.0.lock().unwrap().push(line);
            }
        });
        log
    }

    /// Everything so far, one line each.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// The first line containing all of `parts`, waiting up to `within`.
    pub fn wait_for(&self, parts: &[&str], within: std::time::Duration) -> Option<String> {
        let end = std::time::Instant::now() + within;
        loop {
            if let Some(l) = self
                .0
                .lock()
                .unwrap()
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return Some(l.clone());
            }
            if std::time::Instant::now() >= end {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Log {
    /// Whether `n` lines containing all of `parts` arrived within `within`.
    pub fn wait_count(&self, parts: &[&str], n: usize, within: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + within;
        loop {
            let k = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|l| parts.iter().all(|p| l.contains(p)))
                .count();
            if k >= n {
                return true;
            }
            if std::time::Instant::now() >= end {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Start `cmd` (stderr piped) and read the `listening on ADDR` line it
/// prints first; the rest of its stderr is collected.
pub fn spawn_listening(name: &str, mut cmd: Command) -> (Proc, std::net::SocketAddr, Log) {
    use std::io::BufRead;
    let mut child = Proc(
        cmd.stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn relink"),
    );
    let mut err = std::io::BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{name}: unexpected first stderr line {line:?}"))
        .parse()
        .unwrap();
    let log = Log::collect(name, err);
    (child, addr, log)
}

/// Wait up to `within` for the child to exit.
pub fn wait_exit(p: &mut Proc, within: std::time::Duration) -> Option<std::process::ExitStatus> {
    let end = std::time::Instant::now() + within;
    loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            return Some(s);
        }
        if std::time::Instant::now() >= end {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `relink keygen` into `dir`: (key file, public key hex).
pub fn keygen(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("server.key");
    let out = Command::new(relink_bin())
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .expect("run relink keygen");
    assert!(out.status.success(), "keygen failed");
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(public.len(), 64, "{public:?}");
    (key, public)
}
