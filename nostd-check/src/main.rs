//! Proof that `relink` builds and runs as `#![no_std]` + `alloc` with its
//! default features off.
//!
//! This is a real `#![no_std]` binary for the host: its own panic handler
//! (which conflicts with std's, so linking fails if any dependency pulls in
//! `std`), a bump allocator over a static buffer, and a C `main` called by
//! the platform's C start files (libc is the only runtime linked; no Rust
//! `std`). It drives a complete session between a `Client` and a `Server`
//! in memory with a deterministic RNG: handshake, data both ways, a broken
//! transport and resume, a clean close. Exit status 0 means every check
//! passed; `run.sh` builds and runs it and inspects the dependency graph.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::convert::Infallible;
use core::sync::atomic::{AtomicUsize, Ordering};

use relink::{
    Client, CloseReason, Config, Duration, Error, Event, Instant, Server, ServerEvent, SessionId,
    TransportId,
};

// ----- runtime: allocator, panic handler, output --------------------------

const HEAP_SIZE: usize = 8 << 20;

/// A bump allocator over a static buffer: never frees (the check is short).
struct Bump {
    heap: UnsafeCell<[u8; HEAP_SIZE]>,
    next: AtomicUsize,
}

// SAFETY: `next` is advanced atomically, so every allocation is a disjoint
// range of `heap`; the allocator never hands out a byte twice.
unsafe impl Sync for Bump {}

// SAFETY: returned pointers are aligned as requested, lie within `heap`
// (which lives for the whole program) and never overlap.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = self.heap.get() as usize;
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            let Some(start) = (base + cur)
                .checked_next_multiple_of(layout.align())
                .map(|a| a - base)
            else {
                return core::ptr::null_mut();
            };
            let end = match start.checked_add(layout.size()) {
                Some(e) if e <= HEAP_SIZE => e,
                _ => return core::ptr::null_mut(),
            };
            match self
                .next
                .compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                // SAFETY: `start + size <= HEAP_SIZE`, so the pointer and the
                // range behind it stay inside `heap`.
                Ok(_) => return unsafe { self.heap.get().cast::<u8>().add(start) },
                Err(now) => cur = now,
            }
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[global_allocator]
static ALLOC: Bump = Bump {
    heap: UnsafeCell::new([0; HEAP_SIZE]),
    next: AtomicUsize::new(0),
};

#[link(name = "c")]
extern "C" {
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    fn exit(code: i32) -> !;
}

fn print(s: &str) {
    // SAFETY: `s` is a valid buffer of `s.len()` bytes for the duration of
    // the call; fd 2 is stderr (a failed write is ignored).
    let _ = unsafe { write(2, s.as_ptr(), s.len()) };
}

/// `core::fmt` onto stderr.
struct Stderr;

impl core::fmt::Write for Stderr {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        print(s);
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use core::fmt::Write;
    let _ = writeln!(Stderr, "nostd-check FAILED: {info}");
    // SAFETY: terminating the process is always sound.
    unsafe { exit(101) }
}

/// The precompiled `liballoc` is built for unwinding and references the
/// unwinding personality routine; with `panic = "abort"` nothing ever calls
/// it, so an empty definition satisfies the linker.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

// ----- a tiny deterministic RNG -------------------------------------------

/// SplitMix64. Deterministic and NOT cryptographically secure: it only
/// stands in for a platform CSPRNG (a hardware RNG, say) in this check.
struct TestRng(u64);

impl rand_core::TryRng for TestRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.try_next_u64()? >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Ok(z ^ (z >> 31))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let v = self.try_next_u64()?.to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

/// Claimed only so the state machines accept it; see the type's docs.
impl rand_core::TryCryptoRng for TestRng {}

// ----- the session ----------------------------------------------------------

struct Pair {
    client: Client<TestRng>,
    server: Server<TestRng>,
    tid: TransportId,
    sid: Option<SessionId>,
    now: Instant,
    buf: Vec<u8>,
    client_events: Vec<Event>,
    server_events: Vec<ServerEvent>,
}

impl Pair {
    fn open(&mut self) {
        self.tid = self.server.accept(self.now).expect("accept");
        self.client.new_transport(self.now).expect("new_transport");
    }

    /// One round trip of everything both sides want to send.
    fn step(&mut self) {
        self.now = self.now.saturating_add(Duration::from_millis(1));
        while let Ok(n @ 1..) = self.client.poll_transmit(self.now, &mut self.buf) {
            let mut off = 0;
            while off < n {
                match self
                    .server
                    .handle_input(self.tid, self.now, &self.buf[off..n])
                {
                    Ok(k) => off += k,
                    Err(e) => panic!("server input: {e}"),
                }
            }
        }
        while let Ok(n @ 1..) = self.server.poll_transmit(self.tid, self.now, &mut self.buf) {
            let k = self
                .client
                .handle_input(self.now, &self.buf[..n])
                .expect("client input");
            assert_eq!(k, n, "client consumed everything");
        }
        while let Some(e) = self.client.poll_event() {
            self.client_events.push(e);
        }
        while let Some(e) = self.server.poll_event() {
            if let ServerEvent::HandshakeDone { session, .. } = e {
                self.sid = Some(session);
            }
            self.server_events.push(e);
        }
    }

    fn settle(&mut self) {
        for _ in 0..50 {
            self.step();
        }
    }
}

fn recv_all_client(p: &mut Pair) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = [0u8; 256];
    while let Ok(n @ 1..) = p.client.recv(&mut b) {
        out.extend_from_slice(&b[..n]);
    }
    out
}

fn recv_all_server(p: &mut Pair, sid: SessionId) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = [0u8; 256];
    while let Ok(n @ 1..) = p.server.recv(sid, &mut b) {
        out.extend_from_slice(&b[..n]);
    }
    out
}

fn run() {
    let mut p = Pair {
        client: Client::new(Config::default(), TestRng(1)),
        server: Server::new(Config::default(), TestRng(2)),
        tid: TransportId(0),
        sid: None,
        now: Instant::from_micros(1_000_000),
        buf: vec![0u8; 64 * 1024],
        client_events: Vec::new(),
        server_events: Vec::new(),
    };

    // Handshake.
    p.open();
    p.settle();
    assert!(p.client.is_connected(), "client connected");
    let sid = p.sid.expect("server session");
    let id = p.client.conn_id().expect("client conn id");
    assert_eq!(p.server.conn_id(sid), Some(id), "same connection id");
    assert!(p
        .client_events
        .contains(&Event::HandshakeDone { conn_id: id }));
    print("nostd-check: handshake ok\n");

    // Data both ways.
    let up: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + 3) as u8).collect();
    let down: Vec<u8> = (0..30_000u32).map(|i| (i * 13 + 5) as u8).collect();
    assert_eq!(p.client.send(&up), Ok(up.len()));
    assert_eq!(p.server.send(sid, &down), Ok(down.len()));
    p.settle();
    assert_eq!(recv_all_server(&mut p, sid), up, "client to server bytes");
    assert_eq!(recv_all_client(&mut p), down, "server to client bytes");
    assert_eq!(p.client.recv(&mut [0u8; 8]), Err(Error::WouldBlock));
    print("nostd-check: transfer ok\n");

    // The transport breaks with data queued; the client resumes.
    assert_eq!(p.client.send(b"after the break"), Ok(15));
    p.server.transport_lost(p.tid, p.now);
    p.client.transport_lost(p.now);
    p.open();
    p.settle();
    assert!(p.client.is_connected(), "client resumed");
    assert!(p
        .client_events
        .iter()
        .any(|e| matches!(e, Event::Resumed { counter: 1 })));
    assert_eq!(recv_all_server(&mut p, sid), b"after the break");
    print("nostd-check: resume ok\n");

    // Clean close.
    p.client.close();
    p.server.close(sid).expect("server close");
    p.settle();
    assert_eq!(p.client.recv(&mut [0u8; 8]), Ok(0), "client sees EOF");
    assert_eq!(p.server.recv(sid, &mut [0u8; 8]).unwrap_or(0), 0);
    assert_eq!(p.client.close_reason(), Some(CloseReason::Clean));
    assert!(p.server_events.contains(&ServerEvent::Closed {
        session: sid,
        reason: CloseReason::Clean,
    }));
    print("nostd-check: clean close ok\n");
}

/// The C entry point, called by the platform's start files.
#[no_mangle]
pub extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    run();
    print("nostd-check: all checks passed\n");
    0
}
