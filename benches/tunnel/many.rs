//! Many tunnels at once (issue 12): TUNNELS concurrent TCP connections
//! through `relink forward` → `relink serve-forward` → a tokio echo
//! server in this process. Each connection sends one line and waits for it
//! to come back; all stay open (idle) while the two relink processes are
//! measured. Reports the time until every tunnel echoed, the thread count
//! and RSS of each relink process (from /proc/PID/status) before and with
//! the tunnels, and the RSS per idle tunnel.
//!
//! ```text
//! cargo bench -p relink-cli --bench many                # TUNNELS=9500
//! TUNNELS=2000 cargo bench -p relink-cli --bench many
//! RELINK_BIN=/path/to/relink cargo bench -p relink-cli --bench many  # another build
//! ```
//!
//! File descriptors: every tunnel takes two in each relink process (the
//! local connection and the relink transport in `forward`, the transport
//! and the target connection in `serve-forward`) and two in this process
//! (the client and the echo server's end), so TUNNELS must stay below half
//! of `ulimit -n` (the default 9,500 fits a limit of 20,000).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Kills the child when dropped.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `relink ARGS` and return it with the address of its first stderr
/// line (`listening on ADDR`).
fn spawn_relink(args: &[&str]) -> (Proc, SocketAddr) {
    use std::io::BufRead;
    let bin = std::env::var_os("RELINK_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_relink").into());
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run relink");
    let mut err = std::io::BufReader::new(child.stderr.take().expect("piped"));
    let mut line = String::new();
    err.read_line(&mut line).expect("relink's stderr");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("an address");
    // Keep draining stderr (warnings, failures) so the child never blocks.
    std::thread::spawn(move || {
        for l in err.lines().map_while(Result::ok) {
            eprintln!("[relink] {l}");
        }
    });
    (Proc(child), addr)
}

/// `Threads` and `VmRSS` (KiB) of a process.
fn status(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Threads:"), field("VmRSS:"))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let n: usize = std::env::var("TUNNELS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9_500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(n));
}

async fn run(n: usize) {
    // The echo server: every line comes back, until EOF.
    let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let echo_addr = echo.local_addr().expect("echo addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = echo.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => {
                            if s.write_all(&buf[..k]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    let (server, server_addr) =
        spawn_relink(&["serve-forward", "127.0.0.1:0", &echo_addr.to_string()]);
    let (client, local) = spawn_relink(&["forward", "127.0.0.1:0", &server_addr.to_string()]);
    // One tunnel first: both processes are fully started.
    one_echo(local, usize::MAX)
        .await
        .map(drop)
        .expect("one tunnel");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fpid, spid) = (client.0.id(), server.0.id());
    let (f_threads0, f_rss0) = status(fpid);
    let (s_threads0, s_rss0) = status(spid);

    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tasks.push(tokio::spawn(async move {
            let r = one_echo(local, i).await;
            (r, start.elapsed())
        }));
    }
    let mut conns = Vec::with_capacity(n);
    let mut failed = 0usize;
    let mut slowest = Duration::ZERO;
    for t in tasks {
        match t.await {
            Ok((Ok(c), took)) => {
                slowest = slowest.max(took);
                conns.push(c);
            }
            Ok((Err(e), _)) => {
                if failed < 5 {
                    eprintln!("tunnel failed: {e}");
                }
                failed += 1;
            }
            Err(e) => panic!("task: {e}"),
        }
    }
    let all = start.elapsed();
    // Idle now: past the first keepalive (5 s at the default idle timeout
    // of 15 s), when the core gives back the memory of empty buffers.
    let settle: u64 = std::env::var("SETTLE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let (f_threads, f_rss) = status(fpid);
    let (s_threads, s_rss) = status(spid);
    let open = conns.len();
    let per = |rss: u64, rss0: u64| (rss.saturating_sub(rss0) as f64) / (open.max(1) as f64);
    println!(
        "{n} tunnels: {open} echoed, {failed} failed; all echoed after {:.2} s (slowest {:.2} s)",
        all.as_secs_f64(),
        slowest.as_secs_f64()
    );
    println!(
        "| process | threads (1 tunnel → {open}) | RSS (1 tunnel → {open}) | RSS per idle tunnel |"
    );
    println!("|---|---|---|---|");
    println!(
        "| forward | {f_threads0} → {f_threads} | {:.1} MiB → {:.1} MiB | {:.1} KiB |",
        f_rss0 as f64 / 1024.0,
        f_rss as f64 / 1024.0,
        per(f_rss, f_rss0)
    );
    println!(
        "| serve-forward | {s_threads0} → {s_threads} | {:.1} MiB → {:.1} MiB | {:.1} KiB |",
        s_rss0 as f64 / 1024.0,
        s_rss as f64 / 1024.0,
        per(s_rss, s_rss0)
    );
    drop(conns);
    drop(client);
    drop(server);
}

/// Connect to `local`, send one line, wait for it to come back; the
/// connection stays open.
async fn one_echo(local: SocketAddr, i: usize) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(local).await?;
    s.set_nodelay(true)?;
    let line = format!("tunnel {i}\n");
    let mut s = BufReader::new(s);
    s.get_mut().write_all(line.as_bytes()).await?;
    let mut back = String::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_line(&mut back))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no echo in 60 s"))??;
    if back != line {
        return Err(std::io::Error::other(format!(
            "echoed {back:?}, sent {line:?}"
        )));
    }
    Ok(s.into_inner())
}
