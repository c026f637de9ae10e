//! The clients (and the echo service) of the fleet script
//! (`examples/fleet/run.sh`): several relink nodes behind HAProxy.
//!
//! ```sh
//! cargo run --release --features tokio --example fleet_clients -- echo 127.0.0.1:0
//! cargo run --release --features tokio --example fleet_clients -- run \
//!     --target 127.0.0.1:7000 --server-key HEX --clients 50 --mib 8 --cut-ms 50-400
//! ```
//!
//! `echo ADDR`: a TCP echo service (what the nodes forward every session
//! to); prints `listening on ADDR` on stderr.
//!
//! `run`: N clients, each one relink [`ClientStream`] pinning the fleet's
//! static key, through one in-process cutting relay
//! ([`relink_test_support::relay`], every connection cut after a random
//! time in `--cut-ms`) to the balancer at `--target`. Each client streams
//! `--mib` MiB of seeded pseudo-random data and reads the echo at the same
//! time, comparing every byte with what it sent (both directions at once,
//! byte-exact: no loss, no duplicate, no corruption). A session ends either
//! cleanly with every byte echoed, or with a typed error
//! ([`SessionError::Ended`]: the reason, e.g. `SessionUnknown`, and the
//! in-doubt range of the client's stream). With `--reopen` a client whose
//! session ended with a typed error opens a new session and runs a fresh
//! transfer (new data; the in-doubt bytes are never resent).
//!
//! Output: one line per session (`fleet: client C session S node K id
//! CONN_ID (...): ok`, or `typed error REASON, in doubt [a, b) ...` /
//! `nothing in doubt`, `WRONG BYTE at offset N`, `HANG ...`), a `fleet:
//! mark: ...` line when `--mark-at` percent of all bytes were echoed (the
//! script kills or drains a node then), per-node counts and a final
//! `fleet: totals: key=value ...` line. Times are seconds since
//! `--epoch-zero` (the script's scenario start; default: the clients'
//! start). The node of a session is the server id its connection id
//! carries (`relink::routing::server_id_of`), which is the node that
//! issued it; the id is printed as the nodes' logs print it.
//!
//! Exit status: 0 when every outcome was expected: every session ok, or
//! (`--expect-lost K`) a session of node K ended with `SessionUnknown` or
//! `Expired` (within `--lost-within` seconds of the mark when given), and
//! (`--reopen`) every client's last session ended ok; 1 otherwise (a
//! wrong byte, another error, a session of another node lost, a lost
//! session that ended too late, a session that did not end within
//! `--timeout-secs`, a session on the `--avoid-node`, a reopened session
//! on the lost node unless `--node-returns`).

use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use clap::{Parser, Subcommand};
use relink::driver::SessionError;
use relink::tokio::{ClientBuilder, ClientStream};
use relink::{ByteRange, CloseReason, Config};
use relink_test_support::relay::{FaultPlan, Relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Fleet clients (and echo service) for examples/fleet/run.sh.
#[derive(Parser, Debug)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A TCP echo service on ADDR (port 0: a free port); prints
    /// `listening on ADDR` on stderr.
    Echo {
        /// Address to bind, e.g. 127.0.0.1:0.
        addr: String,
    },
    /// Run the clients through a cutting relay to the balancer.
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The balancer (HAProxy's frontend), e.g. 127.0.0.1:7000.
    #[arg(long)]
    target: String,
    /// The fleet's static public key (64 hex digits) every client pins.
    #[arg(long)]
    server_key: String,
    /// Clients (each one session at a time).
    #[arg(long, default_value_t = 50)]
    clients: u32,
    /// MiB each session streams each way.
    #[arg(long, default_value_t = 8.0)]
    mib: f64,
    /// The relay cuts every connection after a random time in this range
    /// (ms, e.g. 50-400); `0` = never.
    #[arg(long, default_value = "50-400")]
    cut_ms: String,
    /// Seed of the data and of the relay's cut times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Server id length in bytes of the fleet's connection ids (the nodes'
    /// `--server-id-len`).
    #[arg(long, default_value_t = 1)]
    id_len: usize,
    /// Sessions of node K may end with `SessionUnknown` or `Expired` (K
    /// was killed).
    #[arg(long, value_name = "K")]
    expect_lost: Option<u32>,
    /// The `--expect-lost` node comes back (restarted with the same server
    /// id and key): reopened sessions may land on it.
    #[arg(long)]
    node_returns: bool,
    /// Each lost session (`--expect-lost`) must end within SECS of the
    /// `--mark-at` mark (0: not checked).
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    lost_within: f64,
    /// Report times as seconds since this Unix time (seconds, fractions
    /// allowed; the script's scenario start). Default: the clients' start.
    #[arg(long, value_name = "UNIX_SECS")]
    epoch_zero: Option<f64>,
    /// No session may start on node K (it is drained or dead: the balancer
    /// must send new sessions elsewhere). Reopened sessions never may on
    /// the `--expect-lost` node.
    #[arg(long, value_name = "K")]
    avoid_node: Option<u32>,
    /// A client whose session ended with a typed error opens a new session
    /// and runs a fresh transfer (new data; the in-doubt bytes are not
    /// resent).
    #[arg(long)]
    reopen: bool,
    /// Print `fleet: mark: ...` once this percentage of all bytes was
    /// echoed (0 = never).
    #[arg(long, default_value_t = 0)]
    mark_at: u32,
    /// A session that has not ended after this many seconds is a failure
    /// (a hang).
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Pace each session's writes to at most this many MiB/s (0 = as fast
    /// as the session takes them), so that transfers last long enough for
    /// the cuts, a kill or a drain to happen in the middle.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Start the clients this many ms apart (0 = all at once).
    #[arg(long, default_value_t = 10)]
    stagger_ms: u64,
    /// Only the per-session lines of sessions that did not end ok.
    #[arg(long)]
    quiet: bool,
}

/// Bytes per read/write call.
const CHUNK: usize = 64 * 1024;

/// Seeded pseudo-random data, computable at any offset (so the echo is
/// checked without keeping what was sent): 8-byte word `w` of the stream
/// is splitmix64(seed + w).
#[derive(Clone, Copy)]
struct Data(u64);

impl Data {
    fn word(&self, w: u64) -> [u8; 8] {
        let mut z = self
            .0
            .wrapping_add(w.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).to_le_bytes()
    }

    /// The stream's bytes at `offset..offset + out.len()`.
    fn fill(&self, offset: u64, out: &mut [u8]) {
        let mut pos = offset;
        let mut i = 0;
        while i < out.len() {
            let w = self.word(pos / 8);
            let skip = (pos % 8) as usize;
            let n = (8 - skip).min(out.len() - i);
            out[i..i + n].copy_from_slice(&w[skip..skip + n]);
            i += n;
            pos += n as u64;
        }
    }
}

/// How one session ended.
enum Outcome {
    /// Every byte sent and echoed back exactly; closed cleanly.
    Ok,
    /// The session ended with a typed error: its reason, the in-doubt range
    /// of this client's stream and how many echoed bytes were verified.
    Ended {
        reason: CloseReason,
        in_doubt: Option<ByteRange>,
        verified: u64,
        /// Seconds from the last echoed byte to the error: how long the
        /// client took to learn that its session is gone.
        after_last: f64,
        /// The error's text.
        message: String,
    },
    /// An echoed byte differed from the one sent at that offset (or more
    /// came back than was sent).
    Corrupt { offset: u64 },
    /// The session could not be opened at all.
    Open(String),
    /// Another I/O error.
    Other(String),
    /// No end within `--timeout-secs`.
    Hang { verified: u64 },
}

/// One session's result.
struct Report {
    client: u32,
    attempt: u32,
    node: Option<u32>,
    /// The session's connection id (as the nodes' logs print it: 16 hex
    /// digits).
    conn_id: Option<u64>,
    /// When it ended, in seconds since the clock's zero ([`Clock`]).
    ended_at: f64,
    outcome: Outcome,
    resumes: u64,
    transports: u64,
    secs: f64,
}

/// Counters every client adds to (for `--mark-at`).
#[derive(Default)]
struct Progress {
    echoed: AtomicU64,
    marked: AtomicBool,
    /// When the mark was printed: milliseconds since the clock's zero.
    mark_ms: AtomicU64,
}

/// The times the output reports: seconds since `--epoch-zero` (a Unix
/// time), or since the clients' start.
#[derive(Clone, Copy)]
struct Clock {
    /// The clients' start.
    start: StdInstant,
    /// Seconds from the zero to `start`.
    offset: f64,
}

impl Clock {
    fn new(epoch_zero: Option<f64>) -> Clock {
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Clock {
            start: StdInstant::now(),
            offset: epoch_zero.map_or(0.0, |z| (unix_now - z).max(0.0)),
        }
    }

    /// Seconds since the zero.
    fn now(&self) -> f64 {
        self.offset + self.start.elapsed().as_secs_f64()
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let r = match args.command {
        Command::Echo { addr } => echo(&addr).await,
        Command::Run(run_args) => run(run_args).await,
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fleet_clients: {e}");
            ExitCode::from(2)
        }
    }
}

/// The echo service: every connection gets back what it sends; EOF is
/// passed on as a half-close.
async fn echo(addr: &str) -> io::Result<ExitCode> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    eprintln!("listening on {}", listener.local_addr()?);
    loop {
        let (conn, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("fleet_clients echo: accept: {e}");
                tokio::time::sleep(StdDuration::from_millis(20)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let _ = conn.set_nodelay(true);
            let (mut r, mut w) = conn.into_split();
            if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                let _ = w.shutdown().await;
            }
        });
    }
}

fn parse_range(s: &str) -> Option<Option<(u64, u64)>> {
    if s.trim() == "0" {
        return Some(None);
    }
    let (a, b) = s.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b && b > 0).then_some(Some((a, b)))
}

fn parse_key(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

async fn run(a: RunArgs) -> io::Result<ExitCode> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    let cut = parse_range(&a.cut_ms).ok_or_else(|| bad("--cut-ms: expected LO-HI or 0"))?;
    let key = parse_key(&a.server_key).ok_or_else(|| bad("--server-key: 64 hex digits"))?;
    if !(1..=4).contains(&a.id_len) {
        return Err(bad("--id-len: 1 to 4"));
    }
    let target: std::net::SocketAddr = tokio::net::lookup_host(&a.target)
        .await?
        .next()
        .ok_or_else(|| bad("--target: no address"))?;
    let plan = FaultPlan {
        cut_after_ms: cut,
        ..FaultPlan::default()
    };
    let relay = Relay::start(target, plan, a.seed)?;
    let via = relay.local_addr();
    let bytes = (a.mib * 1024.0 * 1024.0) as u64;
    let config = Config {
        pinned_server_key: Some(key),
        ..Config::default()
    };
    let progress = Arc::new(Progress::default());
    let whole = bytes * u64::from(a.clients);
    let clock = Clock::new(a.epoch_zero);
    let start = clock.start;
    println!(
        "fleet: {} clients x {:.2} MiB each way through relay {via} (cuts {}) to {target}{}",
        a.clients,
        a.mib,
        a.cut_ms,
        if a.reopen { ", --reopen" } else { "" }
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Report>();
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let (tx, config, progress) = (tx.clone(), config.clone(), progress.clone());
        let (seed, reopen, id_len) = (a.seed, a.reopen, a.id_len);
        let limits = Limits {
            bytes,
            timeout: StdDuration::from_secs(a.timeout_secs),
            rate: a.rate * 1024.0 * 1024.0,
        };
        let mark = (a.mark_at > 0).then(|| whole * u64::from(a.mark_at) / 100);
        tokio::time::sleep(StdDuration::from_millis(a.stagger_ms)).await;
        tasks.push(tokio::spawn(async move {
            let mut attempt = 0u32;
            loop {
                let data = Data(seed ^ (u64::from(c) << 32) ^ (u64::from(attempt) << 16));
                let t0 = StdInstant::now();
                let report = session(
                    config.clone(),
                    via,
                    data,
                    limits,
                    id_len,
                    (&progress, mark, clock),
                )
                .await;
                let report = Report {
                    client: c,
                    attempt,
                    secs: t0.elapsed().as_secs_f64(),
                    ..report
                };
                let again = reopen && matches!(report.outcome, Outcome::Ended { .. });
                let _ = tx.send(report);
                if !again {
                    break;
                }
                attempt += 1;
            }
        }));
    }
    drop(tx);
    let mut reports = Vec::new();
    while let Some(r) = rx.recv().await {
        print_report(&r, a.quiet);
        reports.push(r);
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let relay_stats = relay.stats();
    drop(relay);
    let mark_at = progress
        .marked
        .load(Ordering::Relaxed)
        .then(|| progress.mark_ms.load(Ordering::Relaxed) as f64 / 1000.0);
    Ok(summarize(
        &a,
        &reports,
        bytes,
        secs,
        relay_stats.cuts,
        mark_at,
    ))
}

/// What one session streams, how fast, and how long it may take.
#[derive(Clone, Copy)]
struct Limits {
    /// Bytes each way.
    bytes: u64,
    /// The longest a session may take.
    timeout: StdDuration,
    /// Bytes per second at most (0: no limit).
    rate: f64,
}

/// One session: connect through the relay at `via`, stream
/// `limits.bytes` of `data` while verifying the echo, close. `shared`: the
/// progress counters, the mark (bytes) and the clock.
async fn session(
    config: Config,
    via: std::net::SocketAddr,
    data: Data,
    limits: Limits,
    id_len: usize,
    shared: (&Progress, Option<u64>, Clock),
) -> Report {
    let (progress, mark, clock) = shared;
    let mut report = Report {
        client: 0,
        attempt: 0,
        node: None,
        conn_id: None,
        ended_at: 0.0,
        outcome: Outcome::Ok,
        resumes: 0,
        transports: 0,
        secs: 0.0,
    };
    let stream = match ClientBuilder::new(config)
        .wait_for_server(true)
        .connect(via)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            report.outcome = Outcome::Open(e.to_string());
            return report;
        }
    };
    report.conn_id = stream.conn_id();
    report.node = report
        .conn_id
        .map(|id| relink::routing::server_id_of(id, id_len).1);
    let monitor = stream.monitor();
    let verified = AtomicU64::new(0);
    let r = tokio::time::timeout(
        limits.timeout,
        transfer(stream, data, limits, &verified, (progress, mark, clock)),
    )
    .await;
    let st = monitor.stats();
    report.resumes = st.resumes;
    report.transports = st.transports;
    let verified = verified.load(Ordering::Relaxed);
    report.outcome = match r {
        Err(_) => Outcome::Hang { verified },
        Ok(o) => o,
    };
    report.ended_at = clock.now();
    report
}

/// Write `bytes` of `data` and read the echo at once, comparing each byte;
/// then close cleanly.
async fn transfer(
    stream: ClientStream,
    data: Data,
    limits: Limits,
    verified: &AtomicU64,
    shared: (&Progress, Option<u64>, Clock),
) -> Outcome {
    let (progress, mark, clock) = shared;
    let bytes = limits.bytes;
    let t0 = StdInstant::now();
    // Milliseconds since t0 when the last echoed byte arrived.
    let last_ms = AtomicU64::new(0);
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = async {
        let mut buf = vec![0u8; CHUNK];
        let mut sent = 0u64;
        while sent < bytes {
            let n = CHUNK.min((bytes - sent) as usize);
            data.fill(sent, &mut buf[..n]);
            w.write_all(&buf[..n]).await?;
            sent += n as u64;
            if limits.rate > 0.0 {
                let due = t0 + StdDuration::from_secs_f64(sent as f64 / limits.rate);
                tokio::time::sleep_until(due.into()).await;
            }
        }
        // Half-close: completes once the server acknowledged the CLOSE.
        w.shutdown().await
    };
    let reader = async {
        let mut buf = vec![0u8; CHUNK];
        let mut want = vec![0u8; CHUNK];
        let mut got = 0u64;
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok(Ok(got));
            }
            if got + n as u64 > bytes {
                return Ok(Err(got.max(bytes)));
            }
            data.fill(got, &mut want[..n]);
            if let Some(i) = (0..n).find(|&i| buf[i] != want[i]) {
                return Ok(Err(got + i as u64));
            }
            got += n as u64;
            verified.store(got, Ordering::Relaxed);
            last_ms.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
            let before = progress.echoed.fetch_add(n as u64, Ordering::Relaxed);
            if let Some(m) = mark {
                if before + n as u64 >= m && !progress.marked.swap(true, Ordering::Relaxed) {
                    let t = clock.now();
                    progress
                        .mark_ms
                        .store((t * 1000.0) as u64, Ordering::Relaxed);
                    println!(
                        "fleet: mark: {} MiB echoed at {t:.2} s",
                        (before + n as u64) / (1024 * 1024)
                    );
                }
            }
        }
    };
    let (wrote, read): (io::Result<()>, io::Result<Result<u64, u64>>) =
        tokio::join!(writer, reader);
    let mut stream = r.unsplit(w);
    let ended = |e: &io::Error, stream: &ClientStream| -> Outcome {
        let typed = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<SessionError>())
            .and_then(|s| match s {
                SessionError::Ended { reason, in_doubt } => Some((*reason, *in_doubt)),
                _ => None,
            })
            .or_else(|| stream.close_reason().map(|r| (r, stream.in_doubt())));
        match typed {
            Some((reason, in_doubt)) => Outcome::Ended {
                reason,
                in_doubt,
                verified: verified.load(Ordering::Relaxed),
                after_last: t0.elapsed().as_secs_f64()
                    - last_ms.load(Ordering::Relaxed) as f64 / 1000.0,
                message: e.to_string(),
            },
            None => Outcome::Other(e.to_string()),
        }
    };
    match read {
        Ok(Err(offset)) => {
            stream.abort(relink::AbortCode::APPLICATION);
            return Outcome::Corrupt { offset };
        }
        Err(e) => return ended(&e, &stream),
        Ok(Ok(got)) if got != bytes => {
            // EOF before everything came back: bytes were lost.
            return Outcome::Corrupt { offset: got };
        }
        Ok(Ok(_)) => {}
    }
    if let Err(e) = wrote {
        return ended(&e, &stream);
    }
    match stream.close().await {
        Ok(()) => Outcome::Ok,
        Err(e) => ended(&e, &stream),
    }
}

fn reason_name(r: &CloseReason) -> String {
    match r {
        CloseReason::SessionUnknown => "SessionUnknown".into(),
        CloseReason::Aborted { code, by_peer } => {
            format!(
                "Aborted(code {}, by {})",
                code.0,
                if *by_peer { "server" } else { "client" }
            )
        }
        other => format!("{other:?}"),
    }
}

fn node_name(n: Option<u32>) -> String {
    n.map_or_else(|| "?".into(), |n| n.to_string())
}

fn print_report(r: &Report, quiet: bool) {
    let head = format!(
        "fleet: client {} session {} node {} id {} ({:.1} s, {} resumes, ended at {:.2} s)",
        r.client,
        r.attempt,
        node_name(r.node),
        r.conn_id
            .map_or_else(|| "-".into(), |id| format!("{id:016x}")),
        r.secs,
        r.resumes,
        r.ended_at,
    );
    match &r.outcome {
        Outcome::Ok => {
            if !quiet {
                println!("{head}: ok");
            }
        }
        Outcome::Ended {
            reason,
            in_doubt,
            verified,
            after_last,
            message,
        } => println!(
            "{head}: typed error {}, {}, {verified} echoed bytes verified, ended {after_last:.2} s after the last one ({message})",
            reason_name(reason),
            match in_doubt {
                None => "in doubt: unknown".to_string(),
                Some(d) if d.is_empty() => "nothing in doubt".to_string(),
                Some(d) => format!("in doubt {d}"),
            },
        ),
        Outcome::Corrupt { offset } => println!("{head}: WRONG BYTE at offset {offset}"),
        Outcome::Open(e) => println!("{head}: could not open: {e}"),
        Outcome::Other(e) => println!("{head}: untyped error: {e}"),
        Outcome::Hang { verified } => println!(
            "{head}: HANG: no end within the timeout ({verified} echoed bytes verified)"
        ),
    }
}

/// Print the totals; the exit status says whether every outcome was
/// expected. `mark_at`: when the mark was printed (seconds, the clock of
/// the output), if it was.
fn summarize(
    a: &RunArgs,
    reports: &[Report],
    bytes: u64,
    secs: f64,
    cuts: u64,
    mark_at: Option<f64>,
) -> ExitCode {
    let mut ok = 0u64;
    let mut unknown = 0u64;
    let mut expired = 0u64;
    // The latest end of a lost session after the mark (seconds).
    let mut lost_after_mark = 0f64;
    let mut other = 0u64;
    let mut unexpected = 0u64;
    let mut in_doubt = 0u64;
    let mut slowest_end = 0f64;
    let mut on_avoided = 0u64;
    let mut verified = 0u64;
    let mut resumes = 0u64;
    let mut transports = 0u64;
    let mut per_node: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
    for r in reports {
        resumes += r.resumes;
        transports += r.transports;
        let node = per_node.entry(node_name(r.node)).or_default();
        node.0 += 1;
        node.1 += r.resumes;
        let forbidden = r.node.is_some()
            && (r.node == a.avoid_node
                || (r.attempt > 0 && r.node == a.expect_lost && !a.node_returns));
        if forbidden {
            println!(
                "fleet: client {} session {} started on node {}, which it must avoid",
                r.client,
                r.attempt,
                node_name(r.node)
            );
            on_avoided += 1;
            unexpected += 1;
        }
        match &r.outcome {
            Outcome::Ok => {
                ok += 1;
                verified += bytes;
            }
            Outcome::Ended {
                reason,
                in_doubt: d,
                verified: v,
                after_last,
                ..
            } => {
                verified += v;
                slowest_end = slowest_end.max(*after_last);
                in_doubt += d.map_or(0, |d| d.len());
                node.2 += 1;
                let lost = matches!(reason, CloseReason::SessionUnknown | CloseReason::Expired);
                let mut expected = lost && a.expect_lost.is_some() && r.node == a.expect_lost;
                match reason {
                    CloseReason::SessionUnknown => unknown += 1,
                    CloseReason::Expired => expired += 1,
                    _ => other += 1,
                }
                if expected {
                    if let Some(m) = mark_at {
                        let after = r.ended_at - m;
                        lost_after_mark = lost_after_mark.max(after);
                        if a.lost_within > 0.0 && after > a.lost_within {
                            println!(
                                "fleet: client {} session {} ended {after:.2} s after the mark: later than --lost-within {}",
                                r.client, r.attempt, a.lost_within
                            );
                            expected = false;
                        }
                    }
                }
                unexpected += u64::from(!expected);
            }
            _ => {
                other += 1;
                unexpected += 1;
                node.2 += 1;
            }
        }
    }
    // Every client's last session must have ended ok when reopening.
    let mut unfinished = 0u64;
    if a.reopen {
        for c in 0..a.clients {
            let last = reports
                .iter()
                .filter(|r| r.client == c)
                .max_by_key(|r| r.attempt);
            if !matches!(last.map(|r| &r.outcome), Some(Outcome::Ok)) {
                unfinished += 1;
            }
        }
    }
    let reopened = reports.iter().filter(|r| r.attempt > 0).count();
    for (node, (sessions, res, ended)) in &per_node {
        println!(
            "fleet: node {node} (the server id in the sessions' connection ids): {sessions} sessions, {res} resumes, {ended} ended with an error"
        );
    }
    println!(
        "fleet: totals: clients={} sessions={} ok={ok} session_unknown={unknown} expired={expired} other_errors={other} unexpected={unexpected} on_avoided_node={on_avoided} reopened={reopened} unfinished={unfinished} resumes={resumes} transports={transports} relay_cuts={cuts} verified_mib={:.1} in_doubt_bytes={in_doubt} slowest_end_secs={slowest_end:.2} lost_after_mark_secs={lost_after_mark:.2} secs={secs:.1}",
        a.clients,
        reports.len(),
        verified as f64 / (1024.0 * 1024.0),
    );
    if unexpected > 0 || unfinished > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::Data;

    /// The data is the same whichever offsets it is computed from.
    #[test]
    fn data_at_any_offset() {
        let d = Data(7);
        let mut whole = vec![0u8; 100];
        d.fill(0, &mut whole);
        for (at, len) in [(0, 3), (3, 9), (13, 40), (53, 47)] {
            let mut part = vec![0u8; len];
            d.fill(at as u64, &mut part);
            assert_eq!(part, whole[at..at + len]);
        }
        let mut other = vec![0u8; 100];
        Data(8).fill(0, &mut other);
        assert_ne!(whole, other);
    }
}
