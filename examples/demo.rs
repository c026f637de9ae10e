//! The showcase: a relink server, a client and a hostile relay between them,
//! all in one process.
//!
//! ```sh
//! cargo run --release --features tokio --example demo            # 256 MiB each way
//! cargo run --release --features tokio --example demo -- --mib 64
//! ```
//!
//! The relay cuts every TCP connection after a random 80-300 ms, flips one
//! bit in every third connection and now and then stalls one (stops
//! forwarding, no FIN, no RST). The client reconnects and resumes by itself;
//! the core resends exactly what the other side missed, drops every
//! corrupted frame (its MAC fails) and detects stalls by the idle timeout.
//!
//! The run goes on until the data target went through *and* the minimums
//! were reached (by default 20 cuts, 5 flips caught, 2 stalls detected), so
//! every default run shows all three. At the end both directions are checked
//! with BLAKE3 and byte counts; every number printed comes from the relay's
//! and the drivers' own counters, never from the schedule.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use clap::Parser;
use relink::tokio::{
    ClientMonitor, ClientStats, ClientStream, Listener, ServerStats, ServerStream,
};
use relink::{Backoff, Config, Duration};
use relink_test_support::relay::{FaultPlan, Relay, RelayStats};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// relink demo: a bulk transfer through a relay that keeps breaking the connection.
#[derive(Parser, Debug)]
struct Args {
    /// MiB to send in each direction (at least; the run goes on until the
    /// minimum numbers of faults were seen).
    #[arg(long, default_value_t = 256)]
    mib: u64,
    /// Cut every connection after a random time in this range (ms), e.g. 80-300.
    #[arg(long, default_value = "80-300")]
    cut_ms: String,
    /// Go on until the relay cut at least this many connections.
    #[arg(long, default_value_t = 20)]
    min_cuts: u64,
    /// Go on until at least this many flipped bits were caught (MAC or frame check).
    #[arg(long, default_value_t = 5)]
    min_flips: u64,
    /// Go on until the client detected at least this many stalls (idle timeout).
    #[arg(long, default_value_t = 2)]
    min_stalls: u64,
    /// Give up (and fail) after this many seconds.
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
    /// Seed of the relay's cut times and flip positions, and of the data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
}

const CHUNK: usize = 64 * 1024;
/// Connection `k` flips a bit if `k % FLIP_EVERY == 1` (while flips are needed).
const FLIP_EVERY: u64 = 3;
/// Connection `k` stalls if `k % STALL_EVERY == 3` (while stalls are needed).
const STALL_EVERY: u64 = 7;

/// Deterministic content: an xorshift stream seeded per direction.
struct Source(u64);

impl Source {
    fn fill(&mut self, out: &mut [u8]) {
        for word in out.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            word.copy_from_slice(&self.0.to_le_bytes()[..word.len()]);
        }
    }
}

/// Send at least `total` bytes from `src`, and go on until `enough` is set;
/// returns the count and hash of what was sent.
async fn send_all<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut src: Source,
    total: u64,
    enough: &AtomicBool,
    progress: &AtomicU64,
) -> std::io::Result<(u64, blake3::Hash)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    while sent < total || !enough.load(Ordering::Relaxed) {
        let n = if sent < total {
            CHUNK.min((total - sent) as usize)
        } else {
            CHUNK
        };
        src.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        w.write_all(&buf[..n]).await?;
        sent += n as u64;
        progress.store(sent, Ordering::Relaxed);
    }
    Ok((sent, hasher.finalize()))
}

/// Read to EOF, hashing what arrived.
async fn recv_all<R: AsyncRead + Unpin>(
    r: &mut R,
    progress: &AtomicU64,
) -> std::io::Result<(u64, blake3::Hash)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((got, hasher.finalize()));
        }
        hasher.update(&buf[..n]);
        got += n as u64;
        progress.store(got, Ordering::Relaxed);
    }
}

/// What one side of the transfer ends with.
struct Outcome {
    sent: u64,
    sent_hash: blake3::Hash,
    received: u64,
    received_hash: blake3::Hash,
}

/// Send and receive at once on `stream`, then close it cleanly.
async fn transfer<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    src: Source,
    total: u64,
    enough: &AtomicBool,
    sent: &AtomicU64,
    received: &AtomicU64,
) -> std::io::Result<Outcome> {
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = async {
        let h = send_all(&mut w, src, total, enough, sent).await?;
        // Half-close; completes once the peer closed too and all is acknowledged.
        w.shutdown().await?;
        Ok::<_, std::io::Error>(h)
    };
    let reader = recv_all(&mut r, received);
    let (sent, got) = tokio::join!(writer, reader);
    let (received, received_hash) = got?;
    let (sent, sent_hash) = sent?;
    Ok(Outcome {
        sent,
        sent_hash,
        received,
        received_hash,
    })
}

fn parse_range(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b && b > 0).then_some((a, b))
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Every counter the demo reports, read from the relay and the two drivers.
#[derive(Clone, Copy)]
struct Snapshot {
    relay: RelayStats,
    client: ClientStats,
    server: ServerStats,
}

impl Snapshot {
    fn take(relay: &Relay, client: &ClientMonitor, server: &Listener) -> Snapshot {
        Snapshot {
            relay: relay.stats(),
            client: client.stats(),
            server: server.stats(),
        }
    }
    /// Flipped bits an endpoint rejected: a MAC that failed, or a frame
    /// header that made no sense.
    fn flips_caught(&self) -> u64 {
        self.client.lost_auth
            + self.client.lost_protocol
            + self.server.auth_failures
            + self.server.lost_protocol
    }
    /// Stalls the client detected by its idle timeout (and then reconnected).
    fn stalls_detected(&self) -> u64 {
        self.client.lost_timeout
    }
    fn resent(&self) -> u64 {
        self.client.resent_bytes + self.server.resent_bytes
    }
}

/// The minimums the run waits for.
#[derive(Clone, Copy)]
struct Minimums {
    cuts: u64,
    flips: u64,
    stalls: u64,
}

impl Minimums {
    fn met(&self, s: &Snapshot) -> bool {
        s.relay.cuts >= self.cuts
            && s.flips_caught() >= self.flips
            && s.stalls_detected() >= self.stalls
    }
}

/// The fault plan for the relay's next connection (number `k`, from 0):
/// always a timed cut; a bit flip on every third connection and a stall on
/// every seventh, as long as more of them are needed. Connection 0 carries
/// the handshake and is only cut.
fn plan_for(k: u64, s: &Snapshot, min: &Minimums, cut_ms: (u64, u64)) -> FaultPlan {
    let flip = k % FLIP_EVERY == 1 && s.flips_caught() < min.flips;
    let stall = k % STALL_EVERY == 3 && s.stalls_detected() < min.stalls;
    FaultPlan {
        cut_after_ms: Some(cut_ms),
        corrupt_probability: if flip { 1.0 } else { 0.0 },
        stall_probability: if stall { 1.0 } else { 0.0 },
        ..FaultPlan::default()
    }
}

/// One progress report: labelled, with rates over the time actually elapsed.
fn progress_line(
    elapsed: f64,
    up: u64,
    down: u64,
    total: u64,
    interval_rate: Option<f64>,
    s: &Snapshot,
) -> String {
    let avg = if elapsed > 0.0 {
        (up + down) as f64 / elapsed / 1e6
    } else {
        0.0
    };
    let now = match interval_rate {
        Some(r) => format!("{:5.0} MB/s", r / 1e6),
        None => "    - MB/s".to_string(),
    };
    // Past the target the senders go on until the minimums are met.
    let amount = |b: u64| {
        if b < total {
            format!("{:4.0}/{} MiB", mib(b), total >> 20)
        } else {
            format!("{:4.0} MiB (target met)", mib(b))
        }
    };
    // A stall the relay made and the client has not timed out yet: say why
    // nothing moves.
    let stalled = if s.relay.stalls > s.stalls_detected() {
        "  [stalled: waiting for the idle timeout]"
    } else {
        ""
    };
    format!(
        "{elapsed:5.1}s  c->s {}  s->c {}  rate {now} (avg {avg:4.0})  cuts {:3}  flips {:2}  stalls {}  resumes {:3}  resent {:6.1} MiB{stalled}",
        amount(up),
        amount(down),
        s.relay.cuts,
        s.flips_caught(),
        s.stalls_detected(),
        s.client.resumes,
        mib(s.resent()),
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let Some(cut_ms) = parse_range(&args.cut_ms) else {
        eprintln!("--cut-ms wants LO-HI in milliseconds, e.g. 80-300");
        return ExitCode::from(2);
    };
    let min = Minimums {
        cuts: args.min_cuts,
        flips: args.min_flips,
        stalls: args.min_stalls,
    };
    let total = args.mib << 20;
    // Short timers: a stalled connection is given up after one second.
    let config = Config {
        keepalive_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(1000),
        handshake_timeout: Duration::from_millis(1000),
        // A wider window than the default 1 MiB: loopback sockets through the
        // relay buffer several MiB, and the window bounds the throughput.
        send_buffer: 4 << 20,
        recv_buffer: 4 << 20,
        ..Config::default()
    };
    let server = match Listener::bind("127.0.0.1:0", config.clone()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot bind the server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server_addr = server.local_addr().expect("bound");
    let relay = match Relay::start(
        server_addr,
        plan_for(
            0,
            &Snapshot {
                relay: RelayStats::default(),
                client: ClientStats::default(),
                server: ServerStats::default(),
            },
            &min,
            cut_ms,
        ),
        args.seed,
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the relay: {e}");
            return ExitCode::FAILURE;
        }
    };
    let relay_addr = relay.local_addr();
    eprintln!(
        "relink demo: {} MiB each way, client -> relay {relay_addr} -> server {server_addr}",
        args.mib
    );
    eprintln!("The relay attacks every TCP connection it carries:");
    eprintln!(
        "  cut    after a random {}-{} ms, both sockets closed (the client reconnects and resumes)",
        cut_ms.0, cut_ms.1
    );
    eprintln!(
        "  flip   one bit in 1 in {} connections (the receiver's MAC check rejects it)",
        FLIP_EVERY
    );
    eprintln!(
        "  stall  1 in {} connections stops forwarding, no FIN, no RST (found by the 1 s idle timeout)",
        STALL_EVERY
    );
    eprintln!(
        "It goes on until {} MiB went each way and at least {} cuts, {} caught flips and {} detected stalls happened (seed {}).",
        args.mib, min.cuts, min.flips, min.stalls, args.seed
    );

    let counters: Arc<[AtomicU64; 4]> = Arc::new(Default::default()); // c sent, s recv, s sent, c recv
    let enough = Arc::new(AtomicBool::new(false));
    let server = Arc::new(server);
    let seed = args.seed;
    let started = StdInstant::now();

    let srv = {
        let (server, counters, enough) = (server.clone(), counters.clone(), enough.clone());
        tokio::spawn(async move {
            let stream: ServerStream = server.accept().await?;
            let src = Source(0x5EED_0002 ^ seed.rotate_left(17) | 1);
            transfer(stream, src, total, &enough, &counters[2], &counters[1]).await
        })
    };
    let backoff = Backoff {
        initial: relink::Duration::from_millis(5),
        max: relink::Duration::from_millis(200),
        // Only the first connect: once the session exists, the driver keeps
        // reconnecting until the core gives the session up.
        max_attempts: Some(50),
    };
    let client = match ClientStream::connect_with(config, backoff, move || async move {
        let s = tokio::net::TcpStream::connect(relay_addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    })
    .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot connect: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The stream moves into the transfer task; the monitor keeps reading its counters.
    let monitor = client.monitor();
    let cli = {
        let (counters, enough) = (counters.clone(), enough.clone());
        tokio::spawn(async move {
            let src = Source(0x5EED_0001 ^ seed.rotate_left(17) | 1);
            transfer(client, src, total, &enough, &counters[0], &counters[3]).await
        })
    };

    // The fault schedule: after every accepted connection, choose the plan
    // of the next one from what was actually counted so far; once the
    // minimums are met (or time is up), let the senders finish.
    let relay = Arc::new(relay);
    let deadline = started + StdDuration::from_secs(args.max_secs);
    let scheduler = {
        let (relay, monitor, server, enough) = (
            relay.clone(),
            monitor.clone(),
            server.clone(),
            enough.clone(),
        );
        tokio::spawn(async move {
            let mut planned_for = 0;
            loop {
                let s = Snapshot::take(&relay, &monitor, &server);
                if s.relay.connections != planned_for {
                    planned_for = s.relay.connections;
                    relay.set_plan(plan_for(planned_for, &s, &min, cut_ms));
                }
                if min.met(&s) || StdInstant::now() >= deadline {
                    enough.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(StdDuration::from_millis(2)).await;
            }
        })
    };

    // Progress: a live line on a terminal, plain lines once a second otherwise.
    let live = std::io::stderr().is_terminal();
    let ticker = {
        let (counters, relay, monitor, server) = (
            counters.clone(),
            relay.clone(),
            monitor.clone(),
            server.clone(),
        );
        let quiet = args.quiet;
        tokio::spawn(async move {
            let period = StdDuration::from_millis(if live { 250 } else { 1000 });
            let mut last: Option<(StdInstant, u64)> = None;
            loop {
                tokio::time::sleep(period).await;
                if quiet {
                    continue;
                }
                let up = counters[1].load(Ordering::Relaxed);
                let down = counters[3].load(Ordering::Relaxed);
                let now = StdInstant::now();
                // The first interval includes the handshake: no rate for it.
                let rate =
                    last.map(|(t, b)| (up + down - b) as f64 / now.duration_since(t).as_secs_f64());
                last = Some((now, up + down));
                let s = Snapshot::take(&relay, &monitor, &server);
                let line = progress_line(
                    now.duration_since(started).as_secs_f64(),
                    up,
                    down,
                    total,
                    rate,
                    &s,
                );
                if live {
                    eprint!("\r{line}\x1b[K");
                    let _ = std::io::stderr().flush();
                } else {
                    eprintln!("{line}");
                }
            }
        })
    };

    let srv_out = srv.await.expect("server task");
    let cli_out = cli.await.expect("client task");
    let elapsed = started.elapsed().as_secs_f64();
    ticker.abort();
    scheduler.abort();
    if live && !args.quiet {
        eprintln!();
    }
    let s = Snapshot::take(&relay, &monitor, &server);

    let (c, srv) = match (cli_out, srv_out) {
        (Ok(c), Ok(s)) => (c, s),
        (c, s) => {
            if let Err(e) = c {
                eprintln!("FAIL: the client's transfer failed: {e}");
            }
            if let Err(e) = s {
                eprintln!("FAIL: the server's transfer failed: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let up_ok = srv.received == c.sent && srv.received_hash == c.sent_hash;
    let down_ok = c.received == srv.sent && c.received_hash == srv.sent_hash;
    let verdict = |ok: bool| if ok { "verified" } else { "MISMATCH" };
    let failures = u64::from(!up_ok) + u64::from(!down_ok);
    let check = |n: u64, m: u64| {
        if n >= m {
            format!("(>= {m}: ok)")
        } else {
            format!("(>= {m}: MISSED)")
        }
    };

    println!();
    println!("relink demo summary");
    println!("  {:-<74}", "");
    println!(
        "  client -> server  {:>13} bytes ({:.1} MiB)  BLAKE3 {}  {}",
        srv.received,
        mib(srv.received),
        &srv.received_hash.to_hex()[..16],
        verdict(up_ok)
    );
    println!(
        "  server -> client  {:>13} bytes ({:.1} MiB)  BLAKE3 {}  {}",
        c.received,
        mib(c.received),
        &c.received_hash.to_hex()[..16],
        verdict(down_ok)
    );
    println!("  duration          {elapsed:.2} s");
    println!(
        "  average rate      {:.1} MB/s both ways ({:.1} + {:.1})",
        (srv.received + c.received) as f64 / elapsed / 1e6,
        srv.received as f64 / elapsed / 1e6,
        c.received as f64 / elapsed / 1e6,
    );
    println!(
        "  TCP connections   {:>4}   (relay accepted; client opened {})",
        s.relay.connections, s.client.transports
    );
    println!(
        "  cuts              {:>4}   {}  relay closed the connection; client saw {} EOF/reset",
        s.relay.cuts,
        check(s.relay.cuts, min.cuts),
        s.client.lost_io
    );
    println!(
        "  flips caught      {:>4}   {}  of {} bits flipped by the relay; MAC failures: client {}, server {}; bad frame headers: {}",
        s.flips_caught(),
        check(s.flips_caught(), min.flips),
        s.relay.corruptions,
        s.client.lost_auth,
        s.server.auth_failures,
        s.client.lost_protocol + s.server.lost_protocol
    );
    println!(
        "  stalls detected   {:>4}   {}  of {} stalled by the relay; idle timeouts: client {}, server {}",
        s.stalls_detected(),
        check(s.stalls_detected(), min.stalls),
        s.relay.stalls,
        s.client.lost_timeout,
        s.server.timeouts
    );
    println!(
        "  resumes           {:>4}   client {}, server {}",
        s.client.resumes, s.client.resumes, s.server.resumes
    );
    println!(
        "  bytes resent      {:.1} MiB   client->server {:.1} MiB, server->client {:.1} MiB",
        mib(s.resent()),
        mib(s.client.resent_bytes),
        mib(s.server.resent_bytes)
    );
    println!("  failures          {failures:>4}");
    println!("  {:-<74}", "");

    let mut problems = Vec::new();
    if !up_ok {
        problems.push(format!(
            "client -> server: {} bytes sent, {} received, hashes {}",
            c.sent,
            srv.received,
            if srv.received_hash == c.sent_hash {
                "equal"
            } else {
                "differ"
            }
        ));
    }
    if !down_ok {
        problems.push(format!(
            "server -> client: {} bytes sent, {} received, hashes {}",
            srv.sent,
            c.received,
            if c.received_hash == srv.sent_hash {
                "equal"
            } else {
                "differ"
            }
        ));
    }
    if s.relay.cuts < min.cuts {
        problems.push(format!("only {} cuts (wanted {})", s.relay.cuts, min.cuts));
    }
    if s.flips_caught() < min.flips {
        problems.push(format!(
            "only {} flips caught (wanted {})",
            s.flips_caught(),
            min.flips
        ));
    }
    if s.stalls_detected() < min.stalls {
        problems.push(format!(
            "only {} stalls detected (wanted {})",
            s.stalls_detected(),
            min.stalls
        ));
    }
    if problems.is_empty() {
        println!(
            "PASS: every byte arrived exactly once, in order; every corrupted frame was rejected"
        );
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            println!("FAIL: {p}");
        }
        if StdInstant::now() >= deadline {
            println!("FAIL: gave up after --max-secs {}", args.max_secs);
        }
        ExitCode::FAILURE
    }
}
