//! The showcase: a relink server, a client and a hostile relay between them,
//! all in one process.
//!
//! ```sh
//! cargo run --release --features tokio --example demo            # 256 MiB each way
//! cargo run --release --features tokio --example demo -- --mib 64
//! ```
//!
//! The relay cuts the TCP connection every few hundred milliseconds,
//! sometimes flips a bit in flight and occasionally stalls a connection
//! (stops forwarding without FIN or RST). The client reconnects and resumes
//! by itself; the core resends exactly what the other side missed, drops
//! every corrupted frame (its MAC fails) and detects stalls by the idle
//! timeout. At the end both directions are checked with BLAKE3 and the
//! counters below come from the driver's and the relay's own statistics.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use clap::Parser;
use relink::relay::{FaultPlan, Relay};
use relink::tokio::{ClientStream, Server, ServerStream};
use relink::{Backoff, Config, Duration};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// relink demo: a bulk transfer through a relay that keeps breaking the connection.
#[derive(Parser, Debug)]
struct Args {
    /// MiB to send in each direction.
    #[arg(long, default_value_t = 256)]
    mib: u64,
    /// Cut every connection after a random time in this range (ms), e.g. 100-600.
    #[arg(long, default_value = "100-600")]
    cut_ms: String,
    /// Per connection, probability that the relay flips one bit in flight.
    #[arg(long, default_value_t = 0.2)]
    corrupt: f64,
    /// Per connection, probability that it stalls instead of being cut (no FIN, no RST).
    #[arg(long, default_value_t = 0.05)]
    stall: f64,
    /// Seed of the relay's fault schedule and of the data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
}

const CHUNK: usize = 64 * 1024;

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

/// Send `total` bytes from `src`, hashing what was sent.
async fn send_all<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut src: Source,
    total: u64,
    progress: &AtomicU64,
) -> std::io::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    while sent < total {
        let n = CHUNK.min((total - sent) as usize);
        src.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        w.write_all(&buf[..n]).await?;
        sent += n as u64;
        progress.store(sent, Ordering::Relaxed);
    }
    Ok(hasher.finalize())
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
    sent_hash: blake3::Hash,
    received: u64,
    received_hash: blake3::Hash,
}

/// Send and receive at once on `stream`, then close it cleanly.
async fn transfer<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    src: Source,
    total: u64,
    sent: &AtomicU64,
    received: &AtomicU64,
) -> std::io::Result<Outcome> {
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = async {
        let h = send_all(&mut w, src, total, sent).await?;
        // Half-close; completes once the peer closed too and all is acknowledged.
        w.shutdown().await?;
        Ok::<_, std::io::Error>(h)
    };
    let reader = recv_all(&mut r, received);
    let (sent_hash, got) = tokio::join!(writer, reader);
    let (received, received_hash) = got?;
    Ok(Outcome {
        sent_hash: sent_hash?,
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

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let Some(cut_ms) = parse_range(&args.cut_ms) else {
        eprintln!("--cut-ms wants LO-HI in milliseconds, e.g. 100-600");
        return ExitCode::from(2);
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
    let server = match Server::bind("127.0.0.1:0", config.clone()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot bind the server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let plan = FaultPlan {
        cut_after_ms: Some(cut_ms),
        corrupt_probability: args.corrupt,
        stall_probability: args.stall,
        ..FaultPlan::default()
    };
    let relay = match Relay::start(server.local_addr().expect("bound"), plan, args.seed) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the relay: {e}");
            return ExitCode::FAILURE;
        }
    };
    let relay_addr = relay.local_addr();
    eprintln!(
        "relink demo: {} MiB each way, client -> relay {relay_addr} -> server {}",
        args.mib,
        server.local_addr().expect("bound")
    );
    eprintln!(
        "relay faults: cut every {}-{} ms, per connection: bit flip p={}, stall p={}",
        cut_ms.0, cut_ms.1, args.corrupt, args.stall
    );

    let counters: Arc<[AtomicU64; 4]> = Arc::new(Default::default()); // c sent, s recv, s sent, c recv
    let server = Arc::new(server);
    let seed = args.seed;
    let started = StdInstant::now();

    let srv = {
        let (server, counters) = (server.clone(), counters.clone());
        tokio::spawn(async move {
            let stream: ServerStream = server.accept().await?;
            let src = Source(0x5EED_0002 ^ seed.rotate_left(17) | 1);
            transfer(stream, src, total, &counters[2], &counters[1]).await
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
        let counters = counters.clone();
        tokio::spawn(async move {
            let src = Source(0x5EED_0001 ^ seed.rotate_left(17) | 1);
            transfer(client, src, total, &counters[0], &counters[3]).await
        })
    };

    // Live progress line.
    let relay = Arc::new(relay);
    let ticker = {
        let (counters, relay, monitor) = (counters.clone(), relay.clone(), monitor.clone());
        let quiet = args.quiet;
        tokio::spawn(async move {
            let mut last = (StdInstant::now(), 0u64);
            loop {
                tokio::time::sleep(StdDuration::from_millis(250)).await;
                if quiet {
                    continue;
                }
                let up = counters[1].load(Ordering::Relaxed);
                let down = counters[3].load(Ordering::Relaxed);
                let now = StdInstant::now();
                let rate = (up + down - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, up + down);
                let r = relay.stats();
                let c = monitor.stats();
                eprint!(
                    "\r {:5.0}/{:5.0} MiB {:4.0} MB/s | resumes {:3} resent {:5.0} MiB | cut {:3} flip {:2} stall {:2} ",
                    mib(up),
                    mib(down),
                    rate / 1e6,
                    c.resumes,
                    mib(c.resend_bytes),
                    r.cuts,
                    r.corruptions,
                    r.stalls,
                );
                let _ = std::io::stderr().flush();
            }
        })
    };

    let srv_out = srv.await.expect("server task");
    let cli_out = cli.await.expect("client task");
    let elapsed = started.elapsed().as_secs_f64();
    ticker.abort();
    if !args.quiet {
        eprintln!();
    }
    let rstats = relay.stats();
    let sstats = server.stats();
    let cstats = monitor.stats();

    let (c, s) = match (cli_out, srv_out) {
        (Ok(c), Ok(s)) => (c, s),
        (c, s) => {
            if let Err(e) = c {
                eprintln!("client failed: {e}");
            }
            if let Err(e) = s {
                eprintln!("server failed: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let up_ok = s.received == total && s.received_hash == c.sent_hash;
    let down_ok = c.received == total && c.received_hash == s.sent_hash;
    let verdict = |ok: bool| if ok { "OK" } else { "MISMATCH" };
    println!("relink demo summary");
    println!(
        "  transferred      {:.0} MiB client->server, {:.0} MiB server->client in {:.2} s",
        mib(s.received),
        mib(c.received),
        elapsed
    );
    println!(
        "  throughput       {:.1} MB/s per direction, {:.1} MB/s total",
        total as f64 / elapsed / 1e6,
        2.0 * total as f64 / elapsed / 1e6
    );
    println!(
        "  relay            {} connections, {} cut, {} stalled, {} bits flipped",
        rstats.connections, rstats.cuts, rstats.stalls, rstats.corruptions
    );
    println!(
        "  client saw       {} transports: {} cut (EOF/reset), {} failed authentication, {} malformed, {} timed out (stall), {} other",
        cstats.transports,
        cstats.lost_io,
        cstats.lost_auth,
        cstats.lost_protocol,
        cstats.lost_timeout,
        cstats.lost_other
    );
    println!(
        "  server saw       {} transports, {} authentication failures, {} malformed, {} timeouts",
        sstats.transports, sstats.auth_failures, sstats.lost_protocol, sstats.timeouts
    );
    println!(
        "  resumes          {} (client) / {} (server); resend ranges: {:.1} MiB client->server, {:.1} MiB server->client",
        cstats.resumes,
        sstats.resumes,
        mib(cstats.resend_bytes),
        mib(sstats.resend_bytes)
    );
    println!(
        "  blake3 c->s      sent {} received {} {}",
        &c.sent_hash.to_hex()[..16],
        &s.received_hash.to_hex()[..16],
        verdict(up_ok)
    );
    println!(
        "  blake3 s->c      sent {} received {} {}",
        &s.sent_hash.to_hex()[..16],
        &c.received_hash.to_hex()[..16],
        verdict(down_ok)
    );
    if up_ok && down_ok {
        println!("  every byte arrived exactly once, in order, and nothing corrupted got through");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
