//! Soak (issue 13): one session over loopback TCP through the
//! fault-injecting relay (`relink_test_support::relay`) with the blocking
//! driver, both directions streaming a checkable pattern
//! (`harness::pattern`) at once while the relay cuts every connection after
//! a random number of bytes, flips a bit in some connections and inserts
//! bursts of random bytes (junk) into others; in `soak_with_rekeys` both
//! sides also rekey every few MiB, `soak_without_rekeys` turns the rekey
//! policy off. Every byte read is checked at its offset (nothing corrupted or
//! duplicated), each direction ends with exactly its byte count and EOF
//! (nothing lost), the server saw one session only, both sides close
//! cleanly (failures = 0). The figures (cuts, resumes, rekeys, corruptions,
//! junk, transports lost by kind, wall time) are printed.
//!
//! Size by `RELINK_SOAK`:
//! - unset (the quick variant, part of the normal suite): 8 MiB each way,
//!   about 100 cuts, rekey every 1 MiB;
//! - `full`: 1 GiB each way, 1,000+ cuts, rekey every 64 MiB; run by hand
//!   in release (`RELINK_SOAK=full cargo test --release --all-features
//!   --test soak -- --nocapture`), figures recorded in docs/TESTING.md
//!   ("Soak").
//!
//! Experiment knobs (floats): `RELINK_SOAK_CORRUPT` and `RELINK_SOAK_JUNK`
//! (per-connection probabilities, default 0.05), `RELINK_SOAK_REKEY`
//! (quick run's rekey interval in bytes); `RELINK_SOAK_LOG` set: the
//! drivers' log lines on stderr.

use std::io::{Read, Write};
use std::thread;
use std::time::Instant as StdInstant;

use relink::blocking::{ClientBuilder, ClientStream, Listener, ServerStream};
use relink::{Backoff, Config, Duration, StaticKeypair};
use relink_test_support::harness::{matches_pattern, pattern, rng};
use relink_test_support::relay::{FaultPlan, Relay};

/// The size of one soak run.
struct Size {
    name: &'static str,
    /// Bytes each way.
    bytes: u64,
    /// A connection is cut after this many forwarded bytes (inclusive).
    cut_after: (u64, u64),
    /// Each side rekeys after sending this many bytes under one key.
    rekey_after: u64,
    /// Fewest cuts the run must see.
    min_cuts: u64,
}

/// Experiment override `RELINK_SOAK_<NAME>` (a float), else `default`.
fn knob(name: &str, default: f64) -> f64 {
    std::env::var(format!("RELINK_SOAK_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn size() -> Size {
    match std::env::var("RELINK_SOAK").as_deref() {
        Ok("full") => Size {
            name: "full",
            bytes: (1 << 30) + 4093,
            cut_after: (256 * 1024, 3 * 1024 * 1024),
            rekey_after: 64 << 20,
            min_cuts: 1_000,
        },
        _ => Size {
            name: "quick",
            bytes: (8 << 20) + 4093,
            cut_after: (64 * 1024, 352 * 1024),
            rekey_after: knob("REKEY", (1 << 20) as f64) as u64,
            min_cuts: 40,
        },
    }
}

const UP: u64 = 0x50A4_0001;
const DOWN: u64 = 0x50A4_0002;

/// Short timers: a stalled or junk-confused transport is replaced quickly.
fn config(rekey_after: u64, rekey: bool) -> Config {
    Config {
        rekey,
        ack_delay: Duration::from_millis(2),
        keepalive_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(800),
        handshake_timeout: Duration::from_millis(1500),
        resume_timeout: Duration::from_secs(60),
        max_resume_attempts: 1_000,
        rekey_after_bytes: rekey_after,
        ..Config::default()
    }
}

/// Write `total` bytes of stream `salt` in writes of seeded random sizes.
fn write_stream(mut w: impl Write, salt: u64, total: u64, seed: u64) {
    let mut r = rng(seed);
    let mut buf = vec![0u8; 128 * 1024];
    let mut sent = 0u64;
    while sent < total {
        let len = (relink_test_support::harness::between(&mut r, 1, buf.len() as u64))
            .min(total - sent) as usize;
        pattern(salt, sent, &mut buf[..len]);
        w.write_all(&buf[..len])
            .unwrap_or_else(|e| panic!("write of stream {salt:#x} at {sent}: {e}"));
        sent += len as u64;
    }
}

/// Read stream `salt` to EOF, checking every byte at its offset; returns
/// the count.
fn read_stream(mut r: impl Read, salt: u64, total: u64) -> u64 {
    let mut buf = vec![0u8; 128 * 1024];
    let mut got = 0u64;
    loop {
        let n = r
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read of stream {salt:#x} at {got}: {e}"));
        if n == 0 {
            return got;
        }
        assert!(
            got + n as u64 <= total,
            "stream {salt:#x}: more bytes than sent ({} > {total})",
            got + n as u64
        );
        if !matches_pattern(salt, got, &buf[..n]) {
            let mut want = vec![0u8; n];
            pattern(salt, got, &mut want);
            let i = (0..n).find(|&i| buf[i] != want[i]).unwrap_or(0);
            panic!(
                "stream {salt:#x}: corrupted or duplicated byte at offset {}",
                got + i as u64
            );
        }
        got += n as u64;
    }
}

fn serve(session: ServerStream, total: u64) -> u64 {
    let got = thread::scope(|s| {
        let w = s.spawn(|| {
            write_stream(&session, DOWN, total, 2);
            session.shutdown_write().expect("server shutdown_write");
        });
        let got = read_stream(&session, UP, total);
        w.join().expect("server writer");
        got
    });
    (&session).flush().expect("server flush");
    session.close().expect("server clean close");
    got
}

fn run_client(client: &ClientStream, total: u64) -> u64 {
    let got = thread::scope(|s| {
        let r = s.spawn(|| read_stream(client, DOWN, total));
        write_stream(client, UP, total, 1);
        client.shutdown_write().expect("client shutdown_write");
        r.join().expect("client reader")
    });
    (&*client).flush().expect("client flush");
    assert_eq!(client.unacked(), 0);
    got
}

/// The soak with both sides rekeying every `rekey_after` bytes.
#[test]
fn soak_with_rekeys() {
    soak(true);
}

/// The same soak with the rekey policy off (`Config::rekey = false`).
#[test]
fn soak_without_rekeys() {
    soak(false);
}

fn soak(rekey: bool) {
    if std::env::var_os("RELINK_SOAK_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::DEBUG)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let size = size();
    let started = StdInstant::now();
    let key = StaticKeypair::generate(&mut rng(13));
    let listener = Listener::bind(
        "127.0.0.1:0",
        Config {
            server_static: Some(key.clone()),
            ..config(size.rekey_after, rekey)
        },
    )
    .expect("bind");
    let plan = FaultPlan {
        cut_after_bytes: Some(size.cut_after),
        corrupt_probability: knob("CORRUPT", 0.05),
        junk_probability: knob("JUNK", 0.05),
        junk_len: (1, 300),
        ..FaultPlan::default()
    };
    let relay = Relay::start(listener.local_addr(), plan, 0x50A4).expect("relay");
    let total = size.bytes;
    // The listener outlives the client's close: the server may end the
    // session (both CLOSEs acknowledged) while its last ACK is lost in a
    // cut; the client's resume must then still reach a server that answers.
    let (up, down, cs) = thread::scope(|s| {
        let server = s.spawn(|| {
            let session = listener.accept().expect("accept");
            serve(session, total)
        });
        let client = ClientBuilder::new(Config {
            pinned_server_key: Some(key.public_key()),
            ..config(size.rekey_after, rekey)
        })
        .backoff(Backoff {
            initial: Duration::from_millis(2),
            max: Duration::from_millis(50),
            max_attempts: Some(1_000),
        })
        .connect(relay.local_addr())
        .expect("connect");
        let down = run_client(&client, total);
        let up = server.join().expect("server thread");
        let cs = client.stats();
        client.close().expect("client clean close");
        (up, down, cs)
    });
    let ss = listener.stats();
    let rs = relay.stats();
    let wall = started.elapsed();
    eprintln!(
        "soak {} (rekeys {}): {} bytes each way in {:.1} s; relay: {} connections, {} cuts, {} corruptions, \
         {} junk bursts ({} bytes), {} bytes forwarded; client: {} transports, {} resumes, \
         {} rekeys (epoch {}), lost io/auth/protocol/timeout/other {}/{}/{}/{}/{}, \
         {} connect failures, {} bytes resent; server: {} sessions, {} resumes, {} rekeys \
         (epoch {}), {} auth failures, {} malformed, {} timeouts",
        size.name,
        if rekey { "on" } else { "off" },
        total,
        wall.as_secs_f64(),
        rs.connections,
        rs.cuts,
        rs.corruptions,
        rs.junk_bursts,
        rs.junk_bytes,
        rs.bytes,
        cs.transports,
        cs.resumes,
        cs.rekeys,
        cs.epoch,
        cs.lost_io,
        cs.lost_auth,
        cs.lost_protocol,
        cs.lost_timeout,
        cs.lost_other,
        cs.connect_failures,
        cs.resent_bytes,
        ss.sessions,
        ss.resumes,
        ss.rekeys,
        ss.epoch,
        ss.auth_failures,
        ss.lost_protocol,
        ss.timeouts,
    );
    // Nothing lost (and the checks while reading: nothing corrupted or
    // duplicated).
    assert_eq!(up, total, "client → server bytes");
    assert_eq!(down, total, "server → client bytes");
    assert_eq!(cs.bytes_sent, total);
    assert_eq!(cs.bytes_received, total);
    // One session throughout: every cut ended in a resume, not a new one.
    assert_eq!(ss.sessions, 1, "{ss:?}");
    assert_eq!(cs.handshakes, 1, "{cs:?}");
    // The faults happened.
    assert!(rs.cuts >= size.min_cuts, "only {} cuts", rs.cuts);
    assert!(cs.resumes >= size.min_cuts * 8 / 10, "{cs:?}");
    assert!(rs.corruptions > 0 && rs.junk_bursts > 0, "{rs:?}");
    // Both sides rekeyed, as often as the byte limit asks at least.
    let want = if rekey { total / size.rekey_after } else { 0 };
    if !rekey {
        assert_eq!((cs.rekeys, ss.rekeys), (0, 0));
    }
    assert!(cs.rekeys >= want, "client rekeys {} < {want}", cs.rekeys);
    assert!(ss.rekeys >= want, "server rekeys {} < {want}", ss.rekeys);
    eprintln!("soak {}: passed, failures 0", size.name);
}
