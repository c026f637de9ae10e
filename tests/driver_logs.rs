//! The drivers' `tracing` lines (see `relink::driver`, "Logs"): client and
//! server log the same `session` id, and a transport loss followed by a
//! resume gives a `transport lost` and a `session resumed` line naming the
//! peer, in both drivers. One test per binary: it installs the global
//! subscriber.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relink::blocking::{ClientBuilder, Listener};
use relink::Config;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The value of `field=` in a log line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=");
    let at = line.find(&key)? + key.len();
    line[at..].split_whitespace().next()
}

#[test]
fn client_and_server_log_one_session_id_and_a_loss_and_resume_with_the_peer() {
    let buf = Buf::default();
    let w = buf.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || w.clone())
        .init();

    let listener = Listener::bind("127.0.0.1:0", Config::default()).unwrap();
    let addr = listener.local_addr();
    let server = std::thread::spawn(move || {
        let mut s = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.close().unwrap();
        got
    });
    // The test keeps a handle of each transport to cut it.
    let current: Arc<Mutex<Option<TcpStream>>> = Arc::default();
    let cur = current.clone();
    let mut c = ClientBuilder::new(Config::default())
        .connect_with(move || {
            let s = TcpStream::connect(addr)?;
            *cur.lock().unwrap() = Some(s.try_clone()?);
            Ok(s)
        })
        .unwrap();
    c.write_all(b"before").unwrap();
    c.flush().unwrap();
    let first_local = {
        let s = current.lock().unwrap();
        let s = s.as_ref().unwrap();
        let local = s.local_addr().unwrap();
        s.shutdown(std::net::Shutdown::Both).unwrap();
        local
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.stats().resumes == 0 {
        assert!(Instant::now() < deadline, "no resume");
        std::thread::sleep(Duration::from_millis(10));
    }
    c.write_all(b" after").unwrap();
    c.close().unwrap();
    assert_eq!(server.join().unwrap(), b"before after");
    let conn = format!("{:016x}", c.conn_id().unwrap());

    check_session_lines(&buf.text(), &conn, first_local);
    tokio_session(&buf);

    // A client that pins another key than the server's: the client says
    // key mismatch, the server logs the abandoned handshake with the
    // client's address and its own key's fingerprint.
    let key = relink::StaticKeypair::from_secret_bytes([7; 32]);
    let fingerprint: String = key.public_key()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let listener = Listener::bind(
        "127.0.0.1:0",
        Config {
            server_static: Some(key),
            ..Config::default()
        },
    )
    .unwrap();
    let addr = listener.local_addr();
    let err = relink::blocking::connect(
        addr,
        Config {
            pinned_server_key: Some([9; 32]),
            ..Config::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let warn = loop {
        let text = buf.text();
        if let Some(l) = text.lines().find(|l| l.contains("handshake abandoned")) {
            break l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no abandoned-handshake line: {text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(warn.contains("WARN"), "{warn}");
    assert_eq!(
        field(&warn, "server_key"),
        Some(fingerprint.as_str()),
        "{warn}"
    );
    assert!(
        field(&warn, "peer").is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{warn}"
    );
    drop(listener);
}

/// The lines of session `conn` (16 hex digits): established on both
/// sides, the cut transport of `first_local` lost, resumed on both sides.
fn check_session_lines(text: &str, conn: &str, first_local: std::net::SocketAddr) {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| field(l, "session") == Some(conn))
        .collect();
    let text = lines.join("\n");
    let established: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("session established"))
        .collect();
    assert_eq!(established.len(), 2, "{text}");
    for l in &established {
        assert_eq!(field(l, "session"), Some(conn), "{l}");
    }
    assert!(established
        .iter()
        .any(|l| field(l, "role") == Some("client")));
    assert!(established
        .iter()
        .any(|l| field(l, "role") == Some("server")));
    // The server's lines name the client's address of the cut transport.
    let peer = first_local.to_string();
    let lost: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("transport lost"))
        .collect();
    assert!(
        lost.iter()
            .any(|l| field(l, "peer") == Some(peer.as_str()) && field(l, "session") == Some(conn)),
        "{text}"
    );
    let resumed: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("session resumed"))
        .collect();
    assert_eq!(resumed.len(), 2, "{text}");
    for l in &resumed {
        assert_eq!(field(l, "session"), Some(conn), "{l}");
        assert!(field(l, "detached_ms").is_some(), "{l}");
        assert!(field(l, "resent").is_some(), "{l}");
    }
    // The server names the address of the new transport, the client's.
    assert!(
        resumed
            .iter()
            .any(|l| field(l, "peer").is_some_and(|p| p.starts_with("127.0.0.1:"))),
        "{text}"
    );
}

/// The same session lines from the tokio driver (a second session).
fn tokio_session(buf: &Buf) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = relink::tokio::Listener::bind("127.0.0.1:0", Config::default())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut s = listener.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.close().await.unwrap();
            got
        });
        let current: Arc<Mutex<Option<TcpStream>>> = Arc::default();
        let cur = current.clone();
        let mut c = relink::tokio::ClientBuilder::new(Config::default())
            .connect_with(move || {
                let cur = cur.clone();
                async move {
                    let s = TcpStream::connect(addr)?;
                    *cur.lock().unwrap() = Some(s.try_clone()?);
                    s.set_nonblocking(true)?;
                    tokio::net::TcpStream::from_std(s)
                }
            })
            .await
            .unwrap();
        c.write_all(b"before").await.unwrap();
        c.flush().await.unwrap();
        let first_local = {
            let s = current.lock().unwrap();
            let s = s.as_ref().unwrap();
            let local = s.local_addr().unwrap();
            s.shutdown(std::net::Shutdown::Both).unwrap();
            local
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.stats().resumes == 0 {
            assert!(Instant::now() < deadline, "no resume");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        c.write_all(b" after").await.unwrap();
        c.close().await.unwrap();
        assert_eq!(server.await.unwrap(), b"before after");
        let conn = format!("{:016x}", c.conn_id().unwrap());
        check_session_lines(&buf.text(), &conn, first_local);
    });
}
