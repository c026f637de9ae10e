//! Fault-injecting TCP relay for tests and the demo.
//!
//! [`Relay::start`] listens on `127.0.0.1:0` and forwards every accepted
//! connection to a target address, with two threads per connection (one per
//! direction). A [`FaultPlan`] decides what goes wrong with each connection:
//! it is cut (both sockets shut down) after a random number of forwarded
//! bytes or milliseconds, one random bit of its data is flipped, a burst of
//! random bytes (*junk*) is inserted into its data, or instead of
//! being cut it *stalls*: nothing is forwarded any more but both sockets stay
//! open, like a path that silently drops every packet.
//!
//! The randomness is a seeded xorshift generator: a run with the same seed
//! and the same traffic draws the same faults. It is a test tool, not crypto.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use std::vec;

/// What the relay does to each connection it carries.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// Cut each connection (close both sockets, RST/FIN) after a random
    /// number of forwarded bytes (both directions together) in this
    /// inclusive range; `None` = never.
    pub cut_after_bytes: Option<(u64, u64)>,
    /// Cut each connection after a random time (milliseconds, inclusive
    /// range); `None` = never.
    pub cut_after_ms: Option<(u64, u64)>,
    /// Per connection, probability of flipping one random bit somewhere in
    /// the forwarded data (the connection continues).
    pub corrupt_probability: f64,
    /// Per connection, probability that at its cut point the relay stalls
    /// instead: stops forwarding both ways but keeps both sockets open (no
    /// FIN, no RST) until the relay is dropped or the endpoints close them.
    pub stall_probability: f64,
    /// Per connection, probability of inserting one burst of random bytes
    /// (junk) at a random position of the forwarded data (both directions
    /// together, like the bit flip); the original bytes all follow it, in
    /// order, and the connection continues.
    pub junk_probability: f64,
    /// Length of a junk burst in bytes (inclusive range; at least 1).
    pub junk_len: (u64, u64),
}

impl Default for FaultPlan {
    /// No faults: a plain TCP relay.
    fn default() -> Self {
        FaultPlan {
            cut_after_bytes: None,
            cut_after_ms: None,
            corrupt_probability: 0.0,
            stall_probability: 0.0,
            junk_probability: 0.0,
            junk_len: (1, 64),
        }
    }
}

/// Counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Connections accepted (and connected to the target).
    pub connections: u64,
    /// Connections cut by the plan (not counting stalls).
    pub cuts: u64,
    /// Bits flipped.
    pub corruptions: u64,
    /// Connections stalled by the plan.
    pub stalls: u64,
    /// Bytes forwarded, both directions together (junk not counted).
    pub bytes: u64,
    /// Junk bursts inserted.
    pub junk_bursts: u64,
    /// Junk bytes inserted, all bursts together.
    pub junk_bytes: u64,
}

/// A TCP relay on 127.0.0.1 with fault injection, for tests and the demo.
pub struct Relay {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl core::fmt::Debug for Relay {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Relay")
            .field("addr", &self.addr)
            .field("stats", &self.stats())
            .finish()
    }
}

struct Shared {
    target: SocketAddr,
    stop: AtomicBool,
    state: Mutex<State>,
    /// Wakes stalled connections and time-cut timers.
    cond: Condvar,
}

struct State {
    plan: FaultPlan,
    stats: RelayStats,
    /// Both sockets of every live connection, to shut them down on drop.
    conns: HashMap<u64, [TcpStream; 2]>,
    next_id: u64,
    rng: XorShift,
}

/// Per-connection fault state.
struct Conn {
    id: u64,
    shared: Arc<Shared>,
    state: Mutex<ConnState>,
}

struct ConnState {
    forwarded: u64,
    cut_at: Option<u64>,
    /// Combined-stream position and bit of the planned flip.
    flip: Option<(u64, u8)>,
    /// Combined-stream position, length and seed of the planned junk burst.
    junk: Option<(u64, u64, u64)>,
    stall: bool,
    stalled: bool,
    ended: bool,
    /// Directions that saw EOF from their source.
    eof: [bool; 2],
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Relay {
    /// Listen on 127.0.0.1:0 and forward every accepted connection to `target`.
    pub fn start(target: SocketAddr, plan: FaultPlan, seed: u64) -> std::io::Result<Relay> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            stop: AtomicBool::new(false),
            state: Mutex::new(State {
                plan,
                stats: RelayStats::default(),
                conns: HashMap::new(),
                next_id: 0,
                rng: XorShift::new(seed),
            }),
            cond: Condvar::new(),
        });
        let s = shared.clone();
        let accept = thread::Builder::new()
            .name("relay-accept".into())
            .spawn(move || accept_loop(s, listener))?;
        Ok(Relay {
            shared,
            addr,
            accept: Some(accept),
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters since start.
    pub fn stats(&self) -> RelayStats {
        lock(&self.shared.state).stats
    }

    /// Replace the plan for connections accepted from now on.
    pub fn set_plan(&self, plan: FaultPlan) {
        lock(&self.shared.state).plan = plan;
    }
}

impl Drop for Relay {
    /// Stops accepting and closes every connection (stalled ones too).
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let mut st = lock(&self.shared.state);
        for (_, socks) in st.conns.drain() {
            for s in socks {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        drop(st);
        self.shared.cond.notify_all();
    }
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    for incoming in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else {
            thread::sleep(Duration::from_millis(5));
            continue;
        };
        let Ok(server) = TcpStream::connect(shared.target) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            continue;
        };
        let mut st = lock(&shared.state);
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let id = st.next_id;
        st.next_id += 1;
        st.stats.connections += 1;
        let plan = st.plan.clone();
        let rng = &mut st.rng;
        let cut_at = plan.cut_after_bytes.map(|(lo, hi)| rng.between(lo, hi));
        let cut_ms = plan.cut_after_ms.map(|(lo, hi)| rng.between(lo, hi));
        let flip = if rng.chance(plan.corrupt_probability) {
            let span = cut_at.unwrap_or(1 << 20).max(1);
            Some((rng.between(0, span - 1), (rng.next() % 8) as u8))
        } else {
            None
        };
        let stall = rng.chance(plan.stall_probability);
        let junk = if rng.chance(plan.junk_probability) {
            let span = cut_at.unwrap_or(1 << 20).max(1);
            let (lo, hi) = plan.junk_len;
            Some((
                rng.between(0, span - 1),
                rng.between(lo.max(1), hi),
                rng.next(),
            ))
        } else {
            None
        };
        st.conns.insert(id, [c3, s3]);
        drop(st);
        let conn = Arc::new(Conn {
            id,
            shared: shared.clone(),
            state: Mutex::new(ConnState {
                forwarded: 0,
                cut_at,
                flip,
                junk,
                stall,
                stalled: false,
                ended: false,
                eof: [false, false],
            }),
        });
        let (a, b) = (conn.clone(), conn.clone());
        let _ = thread::Builder::new()
            .name("relay-c2s".into())
            .spawn(move || pump(a, 0, client, s2));
        let _ = thread::Builder::new()
            .name("relay-s2c".into())
            .spawn(move || pump(b, 1, server, c2));
        if let Some(ms) = cut_ms {
            let _ = thread::Builder::new()
                .name("relay-timer".into())
                .spawn(move || timer(conn, Duration::from_millis(ms)));
        }
    }
}

/// Forward `from` → `to` (direction `dir`) until EOF, an error or a fault.
fn pump(conn: Arc<Conn>, dir: usize, mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let mut st = lock(&conn.state);
                if st.stalled {
                    drop(st);
                    conn.park();
                    return;
                }
                st.eof[dir] = true;
                let both = st.eof == [true, true];
                drop(st);
                let _ = to.shutdown(Shutdown::Write);
                if both {
                    conn.end(false);
                }
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                conn.end(false);
                return;
            }
        };
        let mut st = lock(&conn.state);
        if st.ended {
            return;
        }
        if st.stalled {
            drop(st);
            conn.park();
            return;
        }
        let start = st.forwarded;
        let mut len = n as u64;
        let mut fault = false;
        if let Some(c) = st.cut_at {
            if start + len >= c {
                len = c.saturating_sub(start);
                fault = true;
            }
        }
        let mut flipped = false;
        if let Some((pos, bit)) = st.flip {
            if pos >= start && pos < start + len {
                buf[(pos - start) as usize] ^= 1 << bit;
                st.flip = None;
                flipped = true;
            }
        }
        // Junk goes in before the byte at its position.
        let mut junk = None;
        if let Some((pos, jlen, seed)) = st.junk {
            if pos >= start && pos < start + len {
                let mut r = XorShift::new(seed);
                let bytes: Vec<u8> = (0..jlen).map(|_| r.next() as u8).collect();
                junk = Some(((pos - start) as usize, bytes));
                st.junk = None;
            }
        }
        st.forwarded += len;
        drop(st);
        {
            let mut g = lock(&conn.shared.state);
            g.stats.bytes += len;
            g.stats.corruptions += flipped as u64;
            if let Some((_, bytes)) = &junk {
                g.stats.junk_bursts += 1;
                g.stats.junk_bytes += bytes.len() as u64;
            }
        }
        let data = &buf[..len as usize];
        let written = match &junk {
            Some((at, bytes)) => to
                .write_all(&data[..*at])
                .and_then(|()| to.write_all(bytes))
                .and_then(|()| to.write_all(&data[*at..])),
            None => to.write_all(data),
        };
        if written.is_err() {
            conn.end(false);
            return;
        }
        if fault {
            conn.fault();
            if lock(&conn.state).stalled {
                conn.park();
            }
            return;
        }
    }
}

/// Cut or stall the connection after `after`, unless it ended before.
fn timer(conn: Arc<Conn>, after: Duration) {
    let deadline = Instant::now() + after;
    let mut g = lock(&conn.shared.state);
    loop {
        if conn.shared.stop.load(Ordering::SeqCst) || lock(&conn.state).ended {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        g = conn
            .shared
            .cond
            .wait_timeout(g, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    drop(g);
    conn.fault();
}

impl Conn {
    /// The planned fault happens now: stall or cut.
    fn fault(&self) {
        let mut st = lock(&self.state);
        if st.ended || st.stalled {
            return;
        }
        if st.stall {
            st.stalled = true;
            drop(st);
            lock(&self.shared.state).stats.stalls += 1;
            return;
        }
        drop(st);
        if self.end(true) {
            lock(&self.shared.state).stats.cuts += 1;
        }
    }

    /// Close both sockets (once). Returns whether this call closed them.
    fn end(&self, _cut: bool) -> bool {
        let mut st = lock(&self.state);
        if st.ended {
            return false;
        }
        st.ended = true;
        drop(st);
        let socks = lock(&self.shared.state).conns.remove(&self.id);
        if let Some(socks) = socks {
            for s in socks {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        self.shared.cond.notify_all();
        true
    }

    /// A stalled direction waits (forwarding nothing) until the relay is
    /// dropped; its sockets stay open until then.
    fn park(&self) {
        let mut g = lock(&self.shared.state);
        while !self.shared.stop.load(Ordering::SeqCst) && g.conns.contains_key(&self.id) {
            g = self.shared.cond.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// xorshift64* seeded through splitmix64.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift(if z == 0 { 1 } else { z })
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `lo..=hi` (`hi < lo` gives `lo`).
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo;
        if span == u64::MAX {
            return self.next();
        }
        lo + self.next() % (span + 1)
    }
    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_ranges_and_chance() {
        let mut r = XorShift::new(42);
        let mut hit = [false; 5];
        for _ in 0..1000 {
            let v = r.between(10, 14);
            assert!((10..=14).contains(&v));
            hit[(v - 10) as usize] = true;
        }
        assert!(hit.iter().all(|&h| h), "every value drawn");
        assert!(!r.chance(0.0));
        assert!(r.chance(1.0));
        let n = (0..10_000).filter(|_| r.chance(0.25)).count();
        assert!((2_000..3_000).contains(&n), "{n}");
    }

    /// Junk goes into the stream as one burst of the planned length, every
    /// original byte follows in order, and the stats count it.
    #[test]
    fn junk_is_inserted_once_and_the_data_follows_in_order() {
        let sink = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let target = sink.local_addr().unwrap();
        let plan = FaultPlan {
            junk_probability: 1.0,
            junk_len: (5, 9),
            ..FaultPlan::default()
        };
        let relay = Relay::start(target, plan, 3).unwrap();
        let reader = thread::spawn(move || {
            let (mut s, _) = sink.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got
        });
        // Without a cut the burst lands somewhere in the first MiB.
        let data: Vec<u8> = (0..(1u32 << 20) + 999).map(|i| (i % 251) as u8).collect();
        let mut c = TcpStream::connect(relay.local_addr()).unwrap();
        c.write_all(&data).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let got = reader.join().unwrap();
        let st = relay.stats();
        assert_eq!(st.junk_bursts, 1, "{st:?}");
        assert!((5..=9).contains(&st.junk_bytes), "{st:?}");
        let j = st.junk_bytes as usize;
        assert_eq!(got.len(), data.len() + j);
        // The first difference is at or just after the burst (a junk byte
        // may equal the original one); removing it gives the data back.
        let at = (0..data.len())
            .find(|&i| got[i] != data[i])
            .unwrap_or(data.len());
        assert!(
            (at.saturating_sub(j)..=at).any(|a| got[a + j..] == data[a..]),
            "no single burst of {j} bytes explains the output"
        );
    }
}
