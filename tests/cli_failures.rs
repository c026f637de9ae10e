//! `relink listen --sessions 0` as a public server meets clients that fail
//! (issue 9, section 6): garbage, a handshake cut in the middle, forged
//! frames, a session its client aborts, a resume for a session it does not know, a
//! client that vanishes. Each failure ends at most its own session, is
//! logged with its cause and the peer's address, every answer the server
//! owes reaches the client before the connection closes, and a real
//! `relink connect` afterwards still gets its data through.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use relink::wire::{self, FrameHeader, ResumeRequest, FRAME_HEADER_LEN, VERSION};
use relink::{os_rng, Client, Config, Event, Instant, OsRng, ResumeStatus};

mod cli_support;
use cli_support::{relink_bin, Proc};

/// A running `relink listen` with its stderr lines collected.
struct Listening {
    proc: Proc,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    out: std::path::PathBuf,
}

impl Listening {
    fn start(name: &str, extra: &[&str]) -> Listening {
        let out =
            std::env::temp_dir().join(format!("relink-clifail-{name}-{}.bin", std::process::id()));
        let mut child = Proc(
            Command::new(relink_bin())
                .args([
                    "--idle-ms",
                    "1500",
                    "listen",
                    "127.0.0.1:0",
                    "--sessions",
                    "0",
                ])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut err = BufReader::new(child.0.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first stderr line {line:?}"))
            .parse()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                eprintln!("[listen] {line}");
                l.lock().unwrap().push(line);
            }
        });
        Listening {
            proc: child,
            addr,
            log,
            out,
        }
    }

    /// Fail unless the process still runs.
    fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.proc.0.try_wait().unwrap() {
            panic!(
                "relink listen exited ({status}) {when}; its log:\n{}",
                self.log.lock().unwrap().join("\n")
            );
        }
    }

    /// Wait up to `within` for a log line containing every one of `parts`
    /// (failing at once if the process exits meanwhile).
    fn wait_log(&mut self, parts: &[&str], within: StdDuration) -> String {
        let end = StdInstant::now() + within;
        loop {
            self.assert_running(&format!("while waiting for a log line with {parts:?}"));
            if let Some(l) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return l.clone();
            }
            assert!(
                StdInstant::now() < end,
                "no log line with {parts:?} within {within:?}; log:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            thread::sleep(StdDuration::from_millis(20));
        }
    }

    /// A real `relink connect` sends `data`; it must exit 0 and `data` must
    /// be what `listen` wrote to stdout last.
    fn real_client_gets_through(&mut self, data: &[u8]) {
        let before = std::fs::read(&self.out).unwrap().len();
        let mut c = Proc(
            Command::new(relink_bin())
                .args(["--idle-ms", "1500", "connect", &self.addr.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        c.0.stdin.take().unwrap().write_all(data).unwrap(); // then EOF
        let end = StdInstant::now() + StdDuration::from_secs(8);
        let status = loop {
            if let Some(s) = c.0.try_wait().unwrap() {
                break s;
            }
            assert!(StdInstant::now() < end, "relink connect hangs");
            thread::sleep(StdDuration::from_millis(20));
        };
        let mut err = String::new();
        let _ = c.0.stderr.take().unwrap().read_to_string(&mut err);
        assert!(status.success(), "relink connect failed: {status} {err}");
        let end = StdInstant::now() + StdDuration::from_secs(3);
        loop {
            let got = std::fs::read(&self.out).unwrap();
            if got.len() >= before + data.len() {
                assert_eq!(&got[before..], data, "listen's stdout");
                break;
            }
            assert!(StdInstant::now() < end, "data did not reach stdout");
            thread::sleep(StdDuration::from_millis(20));
        }
        self.assert_running("after serving a real client");
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.out);
    }
}

/// Everything the peer sends until it closes (at most 5 s).
fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(StdDuration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("no EOF from the server within 5 s ({e}); got {got:?}"),
        }
    }
}

/// A relink client core driven by hand over TCP, so that the test can forge
/// and withhold bytes.
struct HandClient {
    client: Client<OsRng>,
    t0: StdInstant,
}

impl HandClient {
    fn new() -> Self {
        HandClient {
            // The CLI's server reads the system clock: so does the hello.
            client: Client::new(
                Config {
                    wall_clock: Some(std::sync::Arc::new(relink::SystemWallClock)),
                    ..Config::default()
                },
                os_rng(),
            ),
            t0: StdInstant::now(),
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.t0.elapsed().as_micros() as u64)
    }

    /// Everything the core wants to send now.
    fn transmit(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let now = self.now();
            match self.client.poll_transmit(now, &mut buf) {
                Ok(0) | Err(_) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Open a transport and run the handshake or resume until `done` says
    /// so for an event; the rest of what the core has to send stays queued.
    fn open(&mut self, addr: SocketAddr, done: fn(&Event) -> bool) -> TcpStream {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(StdDuration::from_millis(20)))
            .unwrap();
        let now = self.now();
        self.client.new_transport(now).unwrap();
        let end = StdInstant::now() + StdDuration::from_secs(5);
        let mut buf = [0u8; 4096];
        loop {
            while let Some(e) = self.client.poll_event() {
                if done(&e) {
                    return s;
                }
            }
            assert!(StdInstant::now() < end, "handshake/resume timed out");
            let out = self.transmit();
            s.write_all(&out).unwrap();
            match s.read(&mut buf) {
                Ok(0) => panic!("server closed during handshake/resume"),
                Ok(n) => {
                    let now = self.now();
                    self.client.handle_input(now, &buf[..n]).unwrap();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

/// The first frame of `out` with one bit of its MAC flipped.
fn forge_first_frame(out: &[u8]) -> Vec<u8> {
    let hdr: [u8; FRAME_HEADER_LEN] = out[..FRAME_HEADER_LEN].try_into().unwrap();
    let len = FrameHeader::decode(&hdr).expect("a frame").wire_len();
    let mut f = out[..len].to_vec();
    f[len - 1] ^= 0x40;
    f
}

#[test]
fn listen_forever_survives_hostile_clients_and_a_killed_session() {
    let mut l = Listening::start("hostile", &[]);

    // 1. Garbage instead of a handshake: the server may answer, then closes.
    let mut g = TcpStream::connect(l.addr).unwrap();
    g.write_all(b"GET / HTTP/1.1\r\nHost: relink\r\n\r\n")
        .unwrap();
    read_to_eof(&mut g);

    // 2. Half a ClientHello, then the client disappears.
    let mut hand = HandClient::new();
    let now = hand.now();
    hand.client.new_transport(now).unwrap();
    let hello = hand.transmit();
    let mut h = TcpStream::connect(l.addr).unwrap();
    h.write_all(&hello[..hello.len() / 2]).unwrap();
    drop(h);

    // 3. Forged frames cost transports, never the session (issue 9: an
    // attacker without the key cannot end a session the server holds; the
    // old server ended it after max_auth_failures = 8 such transports).
    // Then the same client aborts: that session ends, logged with its cause
    // and the peer's address, and the listener goes on.
    let mut c = HandClient::new();
    for round in 0..Config::default().max_auth_failures + 2 {
        let mut s = if round == 0 {
            let mut s = c.open(l.addr, |e| matches!(e, Event::HandshakeDone { .. }));
            let confirm = c.transmit();
            s.write_all(&confirm).unwrap();
            s
        } else {
            c.open(l.addr, |e| matches!(e, Event::Resumed { .. }))
        };
        c.client.send(b"x").unwrap();
        let out = c.transmit();
        s.write_all(&forge_first_frame(&out)).unwrap();
        read_to_eof(&mut s); // the server drops the transport, not the session
        let now = c.now();
        c.client.transport_lost(now);
    }
    let mut s = c.open(l.addr, |e| matches!(e, Event::Resumed { .. }));
    let aborted_from = s.local_addr().unwrap().to_string();
    c.client.abort(relink::AbortCode::APPLICATION);
    let out = c.transmit();
    s.write_all(&out).unwrap();
    let line = l.wait_log(&["failed", &aborted_from], StdDuration::from_secs(3));
    assert!(
        !line.contains("Some("),
        "log line reads like Rust Debug: {line}"
    );
    assert!(line.contains("abort"), "the cause is named: {line}");
    drop(s);
    thread::sleep(StdDuration::from_millis(200));
    l.assert_running("after a session ended by an abort");

    // 4. A resume for a session the server does not know: the refusal
    // reaches the client in full before the server closes the connection,
    // also when the client already half-closed.
    for half_close in [false, true] {
        let req = ResumeRequest {
            version: VERSION,
            conn_id: 0x0123_4567_89ab_cdef,
            counter: 1,
            client_written: 10,
            client_read: 0,
            time: 0,
            rx_epoch: 0,
            mac: [7; wire::TAG_LEN],
        }
        .encode();
        let mut r = TcpStream::connect(l.addr).unwrap();
        r.write_all(&req).unwrap();
        if half_close {
            r.shutdown(Shutdown::Write).unwrap();
        }
        let got = read_to_eof(&mut r);
        assert!(
            got.len() >= 2,
            "no answer before EOF (half_close {half_close})"
        );
        assert_eq!(got[0], VERSION);
        assert_eq!(
            ResumeStatus::from_byte(got[1]),
            Ok(ResumeStatus::UnknownSession)
        );
        assert_eq!(
            Ok(got.len()),
            wire::resume_response_len(got[0], got[1]),
            "answer {got:?}"
        );
    }
    l.assert_running("after hostile clients");

    // 5. A real client still gets its data through.
    l.real_client_gets_through(b"hello after all that\n");
}

#[test]
fn a_client_that_vanishes_costs_its_session_only() {
    // --resume-timeout 1: the vanished client's session expires after a
    // second instead of minutes.
    let mut l = Listening::start("vanish", &["--resume-timeout", "1"]);
    let mut c = HandClient::new();
    let mut s = c.open(l.addr, |e| matches!(e, Event::HandshakeDone { .. }));
    c.client.send(&[42u8; 100]).unwrap();
    let out = c.transmit();
    s.write_all(&out).unwrap();
    let from = s.local_addr().unwrap().to_string();
    thread::sleep(StdDuration::from_millis(100));
    drop(s); // and never comes back
    let start = StdInstant::now();
    let line = l.wait_log(&["failed", &from], StdDuration::from_secs(5));
    assert!(
        start.elapsed() >= StdDuration::from_millis(700),
        "expired too early: {line}"
    );
    l.assert_running("after a session expired");
    // What the vanished client sent was delivered (it was verified).
    assert_eq!(std::fs::read(&l.out).unwrap(), vec![42u8; 100]);
    l.real_client_gets_through(b"the next client\n");
}
