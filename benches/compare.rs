//! relink against its cryptographic bound and its peers (rustls 0.23 TLS 1.3,
//! snow Noise), all in memory on one thread, sender and receiver both
//! counted.
//!
//! ```text
//! cargo bench --bench compare               # full suite, one table (≈1 min)
//! cargo bench --bench compare -- --quick    # every case, tiny sizes (CI)
//! RELINK_BENCH_QUICK=1 cargo bench --bench compare
//! RELINK_BENCH_PROFILE=small cargo bench --bench compare   # one loop, for perf
//! cargo bench --bench compare -- --issue11  # only the rekey and credential rows
//! cargo bench --bench compare -- --issue13  # only the admission (denial of service) rows
//! ```
//!
//! Every figure of a row is measured side by side: the samples of the
//! columns are interleaved (sample 1 of every column, then sample 2, ...)
//! so that drift of the machine hits all columns alike; the table shows the
//! median of the samples. `docs/PERFORMANCE.md` explains the cases and
//! records a run.
//!
//! The binary installs a counting global allocator: it reports bytes per
//! idle session and allocations per message of every implementation.

#[path = "shared/measure.rs"]
mod measure;
pub use measure::{allocations, cpu_secs, live_bytes};
use relink::Config;
use std::time::Instant as StdInstant;

#[path = "peers/bound.rs"]
mod bound;
#[path = "peers/relink_side.rs"]
mod relink_side;
#[path = "peers/rustls_side.rs"]
mod rustls_side;
#[path = "peers/snow_side.rs"]
mod snow_side;

// ----- sizes -----------------------------------------------------------------------

/// How much work each sample does; `--quick` shrinks everything.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Samples per figure (the median is reported).
    pub samples: usize,
    /// Application bytes per bulk sample.
    pub bulk_bytes: u64,
    /// Messages per small-message sample.
    pub small_msgs: u64,
    /// Frames per primitive-bound sample.
    pub bound_frames: u64,
    /// Handshakes per handshake sample.
    pub handshakes: u64,
    /// Sessions resumed (once each) per resume sample.
    pub resumes: u64,
    /// X25519 operations per sample.
    pub x25519_ops: u64,
    /// Sessions for the relink memory figure.
    pub mem_sessions: usize,
    /// Sessions for the peers' memory figures.
    pub peer_mem_sessions: usize,
    /// Frames per allocation-count run.
    pub alloc_frames: u64,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            samples: 9,
            bulk_bytes: 64 << 20,
            small_msgs: 200_000,
            bound_frames: 4_000,
            handshakes: 400,
            resumes: 2_000,
            x25519_ops: 1_000,
            mem_sessions: 10_000,
            peer_mem_sessions: 1_000,
            alloc_frames: 2_000,
        }
    }
    fn quick() -> Sizes {
        Sizes {
            samples: 3,
            bulk_bytes: 256 << 10,
            small_msgs: 500,
            bound_frames: 20,
            handshakes: 4,
            resumes: 20,
            x25519_ops: 4,
            mem_sessions: 50,
            peer_mem_sessions: 10,
            alloc_frames: 50,
        }
    }
}

// ----- measurement -------------------------------------------------------------

/// One sample: units of work done and the CPU seconds they took (measured
/// by the sample itself, so that set-up and tear-down can stay outside and
/// a "server side alone" figure can add up only the server's phases).
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Work units (bytes, messages, handshakes...).
    pub units: f64,
    /// Seconds.
    pub secs: f64,
}

impl Sample {
    /// Time `f`, which returns its units of work.
    pub fn time(f: impl FnOnce() -> u64) -> Sample {
        let t = cpu_secs();
        let units = f();
        Sample {
            units: units as f64,
            secs: cpu_secs() - t,
        }
    }
}

/// A column's sample generator.
type Runner<'a> = Box<dyn FnMut() -> Sample + 'a>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Run the columns' samples interleaved (one warm-up round first) and
/// return each column's median rate in units per second.
fn interleaved(samples: usize, runners: &mut [Runner<'_>]) -> Vec<f64> {
    for r in runners.iter_mut() {
        r();
    }
    let mut rates = vec![Vec::with_capacity(samples); runners.len()];
    for _ in 0..samples {
        for (i, r) in runners.iter_mut().enumerate() {
            let s = r();
            rates[i].push(s.units / s.secs);
        }
    }
    rates.into_iter().map(median).collect()
}

// ----- table -------------------------------------------------------------------

/// Columns of the table.
const COLS: [&str; 5] = ["relink", "bound", "rustls-chacha", "rustls-aes", "snow"];

struct Row {
    case: String,
    unit: &'static str,
    /// Values in COLS order (None: not applicable).
    vals: [Option<f64>; 5],
    ratios: String,
}

fn fmt_val(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) if x >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

fn print_table(rows: &[Row]) {
    let mut lines = vec![];
    let head: Vec<String> = std::iter::once("case".to_string())
        .chain(COLS.iter().map(|c| c.to_string()))
        .chain(std::iter::once("ratios".to_string()))
        .collect();
    lines.push(head);
    for r in rows {
        let mut l = vec![format!("{} [{}]", r.case, r.unit)];
        l.extend(r.vals.iter().map(|v| fmt_val(*v)));
        l.push(r.ratios.clone());
        lines.push(l);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (k, l) in lines.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i] - c.chars().count();
                if i == 0 || i == l.len() - 1 {
                    format!("{c}{}", " ".repeat(pad))
                } else {
                    format!("{}{c}", " ".repeat(pad))
                }
            })
            .collect();
        println!("| {} |", cells.join(" | "));
        if k == 0 {
            let seps: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    if i == 0 || i == widths.len() - 1 {
                        "-".repeat(w + 2)
                    } else {
                        format!("{}:", "-".repeat(w + 1))
                    }
                })
                .collect();
            println!("|{}|", seps.join("|"));
        }
    }
}

struct Target {
    what: String,
    pass: bool,
}

fn target(targets: &mut Vec<Target>, pass: bool, what: String) {
    targets.push(Target { what, pass });
}

// ----- main --------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var("RELINK_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: cargo bench --bench compare [-- [--quick] [--issue11] [--issue13]]");
        return;
    }
    if let Ok(case) = std::env::var("RELINK_BENCH_PROFILE") {
        profile(&case);
        return;
    }
    let sz = if quick { Sizes::quick() } else { Sizes::full() };
    let started = StdInstant::now();
    println!(
        "relink comparison benchmark ({}; {} samples per figure, medians)",
        if quick {
            "quick mode: tiny sizes, the figures mean nothing"
        } else {
            "full mode"
        },
        sz.samples
    );
    println!("built with --cfg chacha20_avx512: {}", avx512_cfg());

    if args.iter().any(|a| a == "--issue11") {
        issue11_only(&sz, quick, started);
        return;
    }
    if args.iter().any(|a| a == "--issue13") {
        issue13_only(&sz, quick, started);
        return;
    }

    let mut rows = Vec::new();
    let mut targets = Vec::new();
    let gb = |r: f64| r / 1e9;
    let mega = |r: f64| r / 1e6;
    let kilo = |r: f64| r / 1e3;

    // --- primitives (context for the analysis) --------------------------------
    let prim = {
        let mut runners: Vec<Runner<'_>> = vec![
            Box::new(|| bound::chacha_only(16384, sz.bound_frames)),
            Box::new(|| bound::blake3_only(16384, sz.bound_frames)),
            Box::new(|| bound::seal_only(16384, sz.bound_frames)),
            Box::new(|| bound::blake3_aad_last(16384, sz.bound_frames)),
        ];
        interleaved(sz.samples, &mut runners)
    };
    rows.push(Row {
        case: "primitive: ChaCha20 / BLAKE3 keyed / seal only, 16 KiB".into(),
        unit: "GB/s",
        vals: [None, Some(gb(prim[0])), None, None, None],
        ratios: format!(
            "blake3 {:.2} GB/s (fixed fields before the body, old layout: {:.2}), seal (enc+mac) {:.2} GB/s",
            gb(prim[1]),
            gb(prim[3]),
            gb(prim[2])
        ),
    });

    // --- 1 + 2: bulk one way ----------------------------------------------------
    let rustls_chacha = rustls_side::Configs::new(rustls_side::Suite::ChaCha20);
    let rustls_aes = rustls_side::Configs::new(rustls_side::Suite::Aes128Gcm);
    let bulk_one = {
        let mut rl = relink_side::Bulk::new(1, false);
        let mut rc = rustls_side::Bulk::new(&rustls_chacha, false);
        let mut ra = rustls_side::Bulk::new(&rustls_aes, false);
        let mut sn = snow_side::Bulk::new(false);
        let n = sz.bulk_bytes;
        let mut runners: Vec<Runner<'_>> = vec![
            Box::new(move || rl.run(n, 16384)),
            Box::new(|| bound::seal_open(16384, sz.bound_frames * 4)),
            Box::new(move || rc.run(n, 16384)),
            Box::new(move || ra.run(n, 16384)),
            Box::new(move || sn.run(n, 16384)),
        ];
        interleaved(sz.samples, &mut runners)
    };
    let bound_bulk = bulk_one[1];
    rows.push(Row {
        case: "bulk 16 KiB writes, one way C→S".into(),
        unit: "GB/s",
        vals: bulk_one.clone().map_gb(),
        ratios: format!(
            "relink/bound {:.2}, relink/rustls-chacha {:.2}, relink/rustls-aes {:.2}, relink/snow {:.2}",
            bulk_one[0] / bound_bulk,
            bulk_one[0] / bulk_one[2],
            bulk_one[0] / bulk_one[3],
            bulk_one[0] / bulk_one[4]
        ),
    });
    target(
        &mut targets,
        bulk_one[0] >= 0.85 * bound_bulk,
        format!(
            "bulk ≥ 85 % of bound: {:.0} % ({:.3} of {:.3} GB/s)",
            100.0 * bulk_one[0] / bound_bulk,
            gb(bulk_one[0]),
            gb(bound_bulk)
        ),
    );
    target(
        &mut targets,
        bulk_one[0] >= bulk_one[2],
        format!(
            "bulk ≥ 1.0× rustls ChaCha20: {:.2}×",
            bulk_one[0] / bulk_one[2]
        ),
    );

    // --- bulk both ways -------------------------------------------------------------
    let bulk_two = {
        let mut rl = relink_side::Bulk::new(2, true);
        let mut rc = rustls_side::Bulk::new(&rustls_chacha, true);
        let mut ra = rustls_side::Bulk::new(&rustls_aes, true);
        let mut sn = snow_side::Bulk::new(true);
        let n = sz.bulk_bytes;
        let mut runners: Vec<Runner<'_>> = vec![
            Box::new(move || rl.run(n, 16384)),
            Box::new(|| bound::seal_open(16384, sz.bound_frames * 4)),
            Box::new(move || rc.run(n, 16384)),
            Box::new(move || ra.run(n, 16384)),
            Box::new(move || sn.run(n, 16384)),
        ];
        interleaved(sz.samples, &mut runners)
    };
    rows.push(Row {
        case: "bulk 16 KiB writes, both ways at once (sum)".into(),
        unit: "GB/s",
        vals: bulk_two.clone().map_gb(),
        ratios: format!(
            "relink/bound {:.2}, relink/rustls-chacha {:.2}",
            bulk_two[0] / bulk_two[1],
            bulk_two[0] / bulk_two[2]
        ),
    });

    // --- 3: small messages ------------------------------------------------------------
    let small = {
        let mut rl = relink_side::Bulk::new(3, false);
        let mut rc = rustls_side::Bulk::new(&rustls_chacha, false);
        let mut ra = rustls_side::Bulk::new(&rustls_aes, false);
        let mut sn = snow_side::Bulk::new(false);
        let n = sz.small_msgs;
        let mut runners: Vec<Runner<'_>> = vec![
            Box::new(move || rl.messages(n, 64)),
            Box::new(|| {
                let s = bound::seal_open(64, sz.bound_frames * 100);
                Sample {
                    units: s.units / 64.0,
                    ..s
                }
            }),
            Box::new(move || rc.messages(n, 64)),
            Box::new(move || ra.messages(n, 64)),
            Box::new(move || sn.messages(n, 64)),
        ];
        interleaved(sz.samples, &mut runners)
    };
    rows.push(Row {
        case: "64 B messages, one way, each delivered".into(),
        unit: "M msg/s",
        vals: small.clone().map_with(mega),
        ratios: format!(
            "relink/bound {:.2}, relink/rustls-chacha {:.2}, relink/snow {:.2}",
            small[0] / small[1],
            small[0] / small[2],
            small[0] / small[4]
        ),
    });
    target(
        &mut targets,
        small[0] >= 1.2 * small[2],
        format!("64 B ≥ 1.2× rustls ChaCha20: {:.2}×", small[0] / small[2]),
    );
    target(
        &mut targets,
        small[0] >= 4.0 * small[4],
        format!("64 B ≥ 4× snow: {:.2}×", small[0] / small[4]),
    );

    // allocations per message / per 16 KiB frame (one sample each)
    let allocs = {
        // warm-up: long enough for the send history to reach its peak
        // (the ACK threshold) before counting
        let count = |f: &mut dyn FnMut() -> Sample, units: u64| {
            for _ in 0..(4096 / units).max(2) {
                f();
            }
            let a = allocations();
            f();
            (allocations() - a) as f64 / units as f64
        };
        let n = sz.alloc_frames;
        let mut rl = relink_side::Bulk::new(4, false);
        let mut rc = rustls_side::Bulk::new(&rustls_chacha, false);
        let mut ra = rustls_side::Bulk::new(&rustls_aes, false);
        let mut sn = snow_side::Bulk::new(false);
        [
            (
                count(&mut || rl.messages(n, 64), n),
                count(&mut || rl.run(n * 16384, 16384), n),
            ),
            (
                count(&mut || rc.messages(n, 64), n),
                count(&mut || rc.run(n * 16384, 16384), n),
            ),
            (
                count(&mut || ra.messages(n, 64), n),
                count(&mut || ra.run(n * 16384, 16384), n),
            ),
            (
                count(&mut || sn.messages(n, 64), n),
                count(&mut || sn.run(n * 16384, 16384), n),
            ),
        ]
    };
    rows.push(Row {
        case: "heap allocations per 64 B message / per 16 KiB write".into(),
        unit: "allocs",
        vals: [
            Some(allocs[0].0),
            None,
            Some(allocs[1].0),
            Some(allocs[2].0),
            Some(allocs[3].0),
        ],
        ratios: format!(
            "per 16 KiB: relink {:.2}, rustls-chacha {:.2}, rustls-aes {:.2}, snow {:.2}",
            allocs[0].1, allocs[1].1, allocs[2].1, allocs[3].1
        ),
    });

    // --- 4: handshakes ---------------------------------------------------------------
    let x = {
        let mut runners: Vec<Runner<'_>> = vec![
            Box::new(|| bound::x25519_keygen(sz.x25519_ops)),
            Box::new(|| bound::x25519_dh(sz.x25519_ops)),
        ];
        interleaved(sz.samples, &mut runners)
    };
    rows.push(Row {
        case: "X25519 (x25519-dalek): key generation / DH".into(),
        unit: "k op/s",
        vals: [None, Some(kilo(x[0])), None, None, None],
        ratios: format!("DH {:.1} k/s", kilo(x[1])),
    });
    // Each handshake row measures its X25519 bound (the key generations and
    // DHs of the side(s) measured) interleaved with the handshakes.
    let hs_both = {
        let mut rl = relink_side::Handshakes::new(5, false);
        let mut rc = rustls_side::Handshakes::new(&rustls_chacha);
        let mut ra = rustls_side::Handshakes::new(&rustls_aes);
        let mut sn = snow_side::Handshakes::new(false);
        let n = sz.handshakes;
        let mut runners: Vec<Runner<'_>> = vec![
            Box::new(move || rl.both(n)),
            Box::new(move || rc.both(n)),
            Box::new(move || ra.both(n)),
            Box::new(move || sn.both(n)),
            Box::new(move || bound::x25519_work(n, 2, 2)),
        ];
        interleaved(sz.samples, &mut runners)
    };
    let hs_bound_anon_both = hs_both[4];
    rows.push(Row {
        case: "full handshake, anonymous, both sides (rustls: cert, X25519)".into(),
        unit: "k hs/s",
        vals: [
            Some(kilo(hs_both[0])),
            Some(kilo(hs_bound_anon_both)),
            Some(kilo(hs_both[1])),
            Some(kilo(hs_both[2])),
            Some(kilo(hs_both[3])),
        ],
        ratios: format!(
            "relink/bound {:.2}, relink/rustls {:.2}, relink/snow-NN {:.2}",
            hs_both[0] / hs_bound_anon_both,
            hs_both[0] / hs_both[1],
            hs_both[0] / hs_both[3]
        ),
    });
    let hs_pinned_both = {
        let mut rl = relink_side::Handshakes::new(6, true);
        let mut sn = snow_side::Handshakes::new(true);
        let n = sz.handshakes;
        let mut runners: Vec<Runner<'_>> = vec![
            Box::new(move || rl.both(n)),
            Box::new(move || sn.both(n)),
            Box::new(move || bound::x25519_work(n, 2, 4)),
        ];
        interleaved(sz.samples, &mut runners)
    };
    let hs_bound_pinned_both = hs_pinned_both[2];
    rows.push(Row {
        case: "full handshake, pinned key, both sides (snow: NK)".into(),
        unit: "k hs/s",
        vals: [
            Some(kilo(hs_pinned_both[0])),
            Some(kilo(hs_bound_pinned_both)),
            None,
            None,
            Some(kilo(hs_pinned_both[1])),
        ],
        ratios: format!(
            "relink/bound {:.2}, relink/snow-NK {:.2}",
            hs_pinned_both[0] / hs_bound_pinned_both,
            hs_pinned_both[0] / hs_pinned_both[1]
        ),
    });
    let hs_server = {
        let mut rl = relink_side::Handshakes::new(7, false);
        let mut rc = rustls_side::Handshakes::new(&rustls_chacha);
        let mut ra = rustls_side::Handshakes::new(&rustls_aes);
        let mut sn = snow_side::Handshakes::new(false);
        let n = sz.handshakes;
        let mut runners: Vec<Runner<'_>> = vec![
            Box::new(move || rl.server_only(n)),
            Box::new(move || rc.server_only(n)),
            Box::new(move || ra.server_only(n)),
            Box::new(move || sn.server_only(n)),
            Box::new(move || bound::x25519_work(n, 1, 1)),
        ];
        interleaved(sz.samples, &mut runners)
    };
    let hs_bound_anon_server = hs_server[4];
    rows.push(Row {
        case: "server side of a handshake alone, anonymous".into(),
        unit: "k hs/s/core",
        vals: [
            Some(kilo(hs_server[0])),
            Some(kilo(hs_bound_anon_server)),
            Some(kilo(hs_server[1])),
            Some(kilo(hs_server[2])),
            Some(kilo(hs_server[3])),
        ],
        ratios: format!(
            "relink/bound {:.2}, relink/rustls {:.2}, relink/snow {:.2}",
            hs_server[0] / hs_bound_anon_server,
            hs_server[0] / hs_server[1],
            hs_server[0] / hs_server[3]
        ),
    });
    let hs_server_pinned = {
        let mut rl = relink_side::Handshakes::new(8, true);
        let mut sn = snow_side::Handshakes::new(true);
        let n = sz.handshakes;
        let mut runners: Vec<Runner<'_>> = vec![
            Box::new(move || rl.server_only(n)),
            Box::new(move || sn.server_only(n)),
            Box::new(move || bound::x25519_work(n, 1, 2)),
        ];
        interleaved(sz.samples, &mut runners)
    };
    let hs_bound_pinned_server = hs_server_pinned[2];
    rows.push(Row {
        case: "server side of a handshake alone, pinned (snow: NK)".into(),
        unit: "k hs/s/core",
        vals: [
            Some(kilo(hs_server_pinned[0])),
            Some(kilo(hs_bound_pinned_server)),
            None,
            None,
            Some(kilo(hs_server_pinned[1])),
        ],
        ratios: format!(
            "relink/bound {:.2}",
            hs_server_pinned[0] / hs_bound_pinned_server
        ),
    });
    target(
        &mut targets,
        hs_server[0] >= 0.8 * hs_bound_anon_server,
        format!(
            "server handshake within 80 % of its X25519 bound: {:.0} % ({:.1}k of {:.1}k/s)",
            100.0 * hs_server[0] / hs_bound_anon_server,
            kilo(hs_server[0]),
            kilo(hs_bound_anon_server)
        ),
    );
    target(
        &mut targets,
        hs_server_pinned[0] >= 0.8 * hs_bound_pinned_server,
        format!(
            "pinned server handshake within 80 % of its X25519 bound: {:.0} %",
            100.0 * hs_server_pinned[0] / hs_bound_pinned_server
        ),
    );
    target(
        &mut targets,
        hs_server[0] >= 10_000.0,
        format!(
            "≥ 10,000 anonymous server handshakes/s/core: {:.0}/s",
            hs_server[0]
        ),
    );

    // --- 5: resume ---------------------------------------------------------------------
    let resume = {
        let mut rl = relink_side::Resumes::new(9, sz.resumes as usize);
        let mut rl_server = relink_side::Resumes::new(10, sz.resumes as usize);
        let mut runners: Vec<Runner<'_>> = vec![
            Box::new(move || rl.both()),
            Box::new(move || rl_server.server_only()),
        ];
        interleaved(sz.samples, &mut runners)
    };
    rows.push(Row {
        case: "resume on a new transport, both sides / server alone".into(),
        unit: "k/s",
        vals: [Some(kilo(resume[0])), None, None, None, None],
        ratios: format!(
            "server alone {:.1} k/s/core; resume/handshake (both sides) {:.1}×, server {:.1}×",
            kilo(resume[1]),
            resume[0] / hs_both[0],
            resume[1] / hs_server[0]
        ),
    });
    target(
        &mut targets,
        resume[0] >= 20.0 * hs_both[0] && resume[1] >= 20.0 * hs_server[0],
        format!(
            "resume ≥ 20× cheaper than a handshake: {:.1}× both sides, {:.1}× server side",
            resume[0] / hs_both[0],
            resume[1] / hs_server[0]
        ),
    );
    let rtt = relink_side::first_resent_byte();
    rows.push(Row {
        case: "first resent byte leaves, after the client's resume request".into(),
        unit: "RTT",
        vals: [Some(rtt.client_rtt), None, None, None, None],
        ratios: format!(
            "client {:.1} RTT, server {:.1} RTT (resent bytes: client {}, server {})",
            rtt.client_rtt, rtt.server_rtt, rtt.client_resent, rtt.server_resent
        ),
    });
    target(
        &mut targets,
        rtt.client_rtt <= 1.0 && rtt.server_rtt <= 0.5,
        format!(
            "first resent byte ≤ 1 RTT client / ≤ 0.5 RTT server: {:.1} / {:.1}",
            rtt.client_rtt, rtt.server_rtt
        ),
    );

    // --- 7: memory ---------------------------------------------------------------------
    let mem = relink_side::idle_memory(sz.mem_sessions);
    let peer_mem = [
        rustls_side::idle_memory(&rustls_chacha, sz.peer_mem_sessions),
        rustls_side::idle_memory(&rustls_aes, sz.peer_mem_sessions),
        snow_side::idle_memory(sz.peer_mem_sessions),
    ];
    rows.push(Row {
        case: format!(
            "idle established session, server side ({} relink sessions, {} of each peer)",
            sz.mem_sessions, sz.peer_mem_sessions
        ),
        unit: "bytes",
        vals: [
            Some(mem.idle_trimmed),
            None,
            Some(peer_mem[0]),
            Some(peer_mem[1]),
            Some(peer_mem[2]),
        ],
        ratios: format!(
            "relink before trim {:.0} B (buffers {:.0} B), fresh after handshake {:.0} B",
            mem.after_data, mem.buffers_after_data, mem.fresh
        ),
    });
    target(
        &mut targets,
        mem.idle_trimmed <= 1024.0 + mem.buffers_trimmed,
        format!(
            "idle session ≤ 1 KiB + buffers holding data: {:.0} B (buffers {:.0} B)",
            mem.idle_trimmed, mem.buffers_trimmed
        ),
    );

    rekey_rows(&sz, &mut rows, &mut targets);
    credential_rows(&sz, &mut rows);
    admission_rows(&sz, &mut rows, &mut targets);

    println!();
    print_table(&rows);
    println!();
    println!("targets:");
    for t in &targets {
        println!(
            "  [{}] {}",
            if quick {
                "n/a (quick)"
            } else if t.pass {
                "PASS"
            } else {
                "MISS"
            },
            t.what
        );
    }
    println!(
        "\nbound = ChaCha20 + BLAKE3 keyed MAC seal and open (per frame, one core); \
         handshake bound = the X25519 key generations and DHs of the side(s) measured."
    );
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
}

/// The table and the targets of a `-- --issueN` run.
fn print_section(rows: &[Row], targets: &[Target], quick: bool, started: StdInstant) {
    println!();
    print_table(rows);
    println!();
    println!("targets:");
    for t in targets {
        let verdict = match (quick, t.pass) {
            (true, _) => "n/a (quick)",
            (false, true) => "PASS",
            (false, false) => "MISS",
        };
        println!("  [{verdict}] {}", t.what);
    }
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
}

/// `-- --issue11`: only the rows of issue 11 (credentials, rekey), their
/// own table.
fn issue11_only(sz: &Sizes, quick: bool, started: StdInstant) {
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    rekey_rows(sz, &mut rows, &mut targets);
    credential_rows(sz, &mut rows);
    print_section(&rows, &targets, quick, started);
}

/// `-- --issue13`: only the admission rows (issue 13), their own table.
fn issue13_only(sz: &Sizes, quick: bool, started: StdInstant) {
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    admission_rows(sz, &mut rows, &mut targets);
    print_section(&rows, &targets, quick, started);
}

/// Admission (issue 13, PROTOCOL.md 3.7 and §9 "Denial of service"): the
/// server's CPU per input from a sender that holds no key, against a full
/// handshake's server side, all interleaved in the same run.
fn admission_rows(sz: &Sizes, rows: &mut Vec<Row>, targets: &mut Vec<Target>) {
    let us = |rate: f64| 1e6 / rate;
    let n = sz.handshakes;
    let mut full = relink_side::Handshakes::new(41, false);
    let mut adm = relink_side::Admission::new(42, n as usize);
    let mut adm2 = relink_side::Admission::new(43, 1);
    let mut adm3 = relink_side::Admission::new(44, 1);
    let mut adm4 = relink_side::Admission::new(45, 1);
    let r = {
        let mut runners: Vec<Runner<'_>> = vec![
            Box::new(|| full.server_only(n)),
            Box::new(|| adm2.bogus_hellos(n, true)),
            Box::new(|| adm3.bogus_hellos(n, false)),
            Box::new(|| adm4.bogus_resumes(n)),
            Box::new(|| adm.bogus_frames()),
        ];
        interleaved(sz.samples, &mut runners)
    };
    let (full, cookie, no_cookie, resume, frame) = (r[0], r[1], r[2], r[3], r[4]);
    // Rates are per second: the cost ratio is the inverse ratio of rates.
    let ratio = full / cookie;
    rows.push(Row {
        case: "admission: server CPU per bogus hello, cookie on (ratio to a full handshake)".into(),
        unit: "µs",
        vals: [Some(us(cookie)), None, None, None, None],
        ratios: format!(
            "{:.4} of a full handshake's server side ({:.1} µs); without load {:.1} µs ({:.2})",
            ratio,
            us(full),
            us(no_cookie),
            full / no_cookie
        ),
    });
    rows.push(Row {
        case: "admission: server CPU per bogus resume request / bogus 1 KiB frame".into(),
        unit: "µs",
        vals: [Some(us(resume)), None, None, None, None],
        ratios: format!(
            "resume (unknown id) {:.2} µs, frame with a bad tag {:.2} µs",
            us(resume),
            us(frame)
        ),
    });
    let pass = ratio <= 0.05;
    targets.push(Target {
        what: format!(
            "server CPU per bogus hello with the cookie on ≤ 0.05 of a full handshake (got {:.4})",
            ratio
        ),
        pass,
    });
}

/// Rekey (issue 11): what one exchange costs each side, and bulk transfer
/// with rekeys against the same without (`rekey = false`), interleaved in
/// the same run.
fn rekey_rows(sz: &Sizes, rows: &mut Vec<Row>, targets: &mut Vec<Target>) {
    let us = |rate: f64| 1e6 / rate;
    for (pinned, seed) in [(false, 31), (true, 32)] {
        let mut r = relink_side::Rekeys::new(seed, pinned);
        let n = sz.handshakes;
        // Both sides' figures come from the same exchanges: sample them
        // together, report each side's median.
        let (mut client, mut server) = (Vec::new(), Vec::new());
        r.run(n);
        for _ in 0..sz.samples {
            let c = r.run(n);
            client.push(c.client.units / c.client.secs);
            server.push(c.server.units / c.server.secs);
        }
        let (client, server) = (median(client), median(server));
        rows.push(Row {
            case: format!(
                "rekey exchange, {}, client side (server side in ratios)",
                if pinned { "pinned" } else { "anonymous" }
            ),
            unit: "µs",
            vals: [Some(us(client)), None, None, None, None],
            ratios: format!(
                "client {:.1} µs, server {:.1} µs per exchange ({} exchanges per sample)",
                us(client),
                us(server),
                n
            ),
        });
    }

    let off = Config {
        rekey: false,
        ..Config::default()
    };
    let every16 = Config {
        rekey_after_bytes: 16 << 20,
        ..Config::default()
    };
    let default = Config::default();
    let mut b16 = relink_side::Bulk::with_policy(33, &every16);
    let mut bdef = relink_side::Bulk::with_policy(34, &default);
    let mut boff = relink_side::Bulk::with_policy(35, &off);
    let n = sz.bulk_bytes;
    let rates = {
        let mut runners: Vec<Runner<'_>> = vec![
            Box::new(|| b16.run(n, 16384)),
            Box::new(|| bdef.run(n, 16384)),
            Box::new(|| boff.run(n, 16384)),
        ];
        interleaved(sz.samples, &mut runners)
    };
    let gb = |r: f64| r / 1e9;
    let (r16, rdef) = (rates[0] / rates[2], rates[1] / rates[2]);
    rows.push(Row {
        case: "bulk 16 KiB writes one way: rekey every 16 MiB / default policy / rekey off".into(),
        unit: "GB/s",
        vals: [Some(gb(rates[0])), None, None, None, None],
        ratios: format!(
            "every 16 MiB {:.2}, default {:.2}, off {:.2} GB/s; every 16 MiB/off {:.3}, default/off {:.3} \
             ({} and {} rekeys in the run)",
            gb(rates[0]),
            gb(rates[1]),
            gb(rates[2]),
            r16,
            rdef,
            b16.client_epoch(),
            bdef.client_epoch()
        ),
    });
    target(
        targets,
        r16 >= 0.95,
        format!("bulk with a rekey every 16 MiB ≥ 0.95 of rekey off: {r16:.3}"),
    );
    target(
        targets,
        rdef >= 0.98,
        format!("bulk with the default rekey policy ≥ 0.98 of rekey off: {rdef:.3}"),
    );
}

/// Handshake rate with a client credential (issue 11): pinned handshakes
/// until data may flow, with a 32-byte secret the server application
/// accepts at once, against the same without credentials, interleaved in
/// the same run.
fn credential_rows(sz: &Sizes, rows: &mut Vec<Row>) {
    let kilo = |r: f64| r / 1e3;
    let hs = {
        let mut with = relink_side::CredentialHandshakes::new(21, true);
        let mut without = relink_side::CredentialHandshakes::new(22, false);
        let n = sz.handshakes;
        let mut runners: Vec<Runner<'_>> = vec![
            Box::new(move || with.both(n)),
            Box::new(move || without.both(n)),
        ];
        interleaved(sz.samples, &mut runners)
    };
    rows.push(Row {
        case: "full handshake, pinned, 32-byte credential accepted, both sides".into(),
        unit: "k hs/s",
        vals: [Some(kilo(hs[0])), None, None, None, None],
        ratios: format!(
            "with/without credential {:.2} (without: {:.1} k/s)",
            hs[0] / hs[1],
            kilo(hs[1])
        ),
    });
}

/// Run one relink loop for about 5 s, for `perf record` (the case names
/// are documented in `docs/PERFORMANCE.md`).
fn profile(case: &str) {
    if case == "sizes" {
        // per-call cost of the primitives by payload size
        for len in [16usize, 64, 128, 256, 512, 1024, 4096, 16384] {
            let frames = (20_000_000 / len.max(64)) as u64;
            let c = bound::chacha_only(len, frames);
            let b = bound::blake3_only(len, frames);
            let so = bound::seal_open(len, frames);
            println!(
                "{len:>6} B: ChaCha20 {:>7.1} ns/call, BLAKE3 MAC {:>7.1} ns/call, seal+open {:>7.1} ns/frame",
                c.secs / c.units * len as f64 * 1e9,
                b.secs / b.units * len as f64 * 1e9,
                so.secs / so.units * len as f64 * 1e9
            );
        }
        for batch in [256usize, 1024, 4096] {
            let c = bound::chacha_batched(64, batch, 1_000_000);
            println!(
                "    64 B frames from a keystream made {batch} B at a time: {:.1} ns/frame",
                c.secs / c.units * 64.0 * 1e9
            );
        }
        let b = bound::blake3_oneshot(64, 1_000_000);
        println!(
            "    64 B BLAKE3 MAC with blake3::keyed_hash over a contiguous copy: {:.1} ns/frame",
            b.secs / b.units * 64.0 * 1e9
        );
        return;
    }
    let t = StdInstant::now();
    let mut done = 0.0;
    while t.elapsed().as_secs_f64() < 5.0 {
        done += match case {
            "bulk" => relink_side::Bulk::new(1, false).run(256 << 20, 16384).units,
            "both" => relink_side::Bulk::new(1, true).run(128 << 20, 16384).units,
            "small" => {
                relink_side::Bulk::new(1, false)
                    .messages(1_000_000, 64)
                    .units
            }
            "bound-small" => bound::seal_open(64, 1_000_000).units,
            "handshake" => relink_side::Handshakes::new(1, false).both(1000).units,
            "server" => {
                relink_side::Handshakes::new(1, false)
                    .server_only(1000)
                    .units
            }
            "resume" => relink_side::Resumes::new(1, 1000).both().units,
            other => panic!("unknown profile case {other}"),
        };
    }
    println!("{case}: {done} units in {:.1} s", t.elapsed().as_secs_f64());
}

/// Whether the build set `RUSTFLAGS='--cfg chacha20_avx512'` (chacha20's
/// AVX-512 backend; the flag is not a Cargo feature, hence the allow).
#[allow(unexpected_cfgs)]
fn avx512_cfg() -> bool {
    cfg!(chacha20_avx512)
}

/// Convert a row's rates into table values.
trait RowValues {
    fn map_with(self, f: impl Fn(f64) -> f64) -> [Option<f64>; 5];
    fn map_gb(self) -> [Option<f64>; 5];
}

impl RowValues for Vec<f64> {
    fn map_with(self, f: impl Fn(f64) -> f64) -> [Option<f64>; 5] {
        let mut out = [None; 5];
        for (o, v) in out.iter_mut().zip(self) {
            *o = Some(f(v));
        }
        out
    }
    fn map_gb(self) -> [Option<f64>; 5] {
        self.map_with(|r| r / 1e9)
    }
}
