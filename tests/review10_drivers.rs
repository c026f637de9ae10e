//! Adversarial review of the issue-10 driver ports (tokio): races and
//! bounds of the endpoint-lock + per-session-lock structure.

use std::io;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use relink::tokio::{ClientStream, Listener};
use relink::{Backoff, Config};
use tokio::io::AsyncWriteExt;

async fn client_of(server: &Arc<Listener>) -> io::Result<ClientStream> {
    let srv = server.clone();
    let backoff = Backoff {
        initial: relink::Duration::from_millis(5),
        max: relink::Duration::from_millis(20),
        max_attempts: Some(1),
    };
    ClientStream::connect_with(Config::default(), backoff, move || {
        let (client, server_half) = tokio::io::duplex(256 * 1024);
        let r = srv.serve_transport(server_half).map(|()| client);
        async move { r }
    })
    .await
}

/// The tokio driver version of `review10::ended_sessions_holding_unread_
/// bytes_count_against_max_sessions`: with `max_sessions = 1`, clients that
/// connect, send 30 kB and vanish make the server hold one more session
/// (with its unread bytes, in the accept queue) every `resume_timeout`,
/// without bound: the endpoint stops counting a session once it expired,
/// the driver keeps it until the application read it. The old core counted
/// it until then (the next hello was answered Busy).
///
/// Fails with: `sessions held: 5 with max_sessions 1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_clients_cannot_make_the_server_hold_more_than_max_sessions() {
    let server = Arc::new(Listener::new(Config {
        max_sessions: 1,
        resume_timeout: relink::Duration::from_millis(150),
        ..Config::default()
    }));
    let mut served = 0;
    for _ in 0..5 {
        let Ok(mut c) = client_of(&server).await else {
            continue; // Busy: what the bound means
        };
        served += 1;
        c.write_all(&[0x42; 30_000]).await.unwrap();
        // Let the bytes reach the server, then vanish.
        tokio::time::sleep(StdDuration::from_millis(50)).await;
        drop(c);
        // The session expires.
        tokio::time::sleep(StdDuration::from_millis(400)).await;
    }
    let held = server.session_count();
    assert!(
        held <= 1,
        "sessions held: {held} with max_sessions 1 ({served} clients served)"
    );
}

/// A server-side transport that delivers the first `limit` bytes the client
/// sent, then EOF (what the server reads of a connection cut right after
/// the ClientHello: the ClientConfirm is lost).
struct CutAfter {
    inner: tokio::io::DuplexStream,
    left: usize,
}

impl tokio::io::AsyncRead for CutAfter {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if self.left == 0 {
            return std::task::Poll::Ready(Ok(()));
        }
        let left = self.left;
        let mut tmp = vec![0u8; left.min(buf.remaining())];
        let mut rb = tokio::io::ReadBuf::new(&mut tmp);
        match std::pin::Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
            std::task::Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                buf.put_slice(rb.filled());
                self.left -= n;
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl tokio::io::AsyncWrite for CutAfter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The tokio driver's path for a session confirmed by a resume (its
/// ClientConfirm lost with the first transport): the endpoint produces the
/// connection from a resume request (`Dispatch::NewConnection` on the
/// resuming transport); the application gets it from `accept` and every
/// byte the client wrote arrives once; stats count one handshake and one
/// resume; nothing is left once both sides closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_confirmed_by_resume_is_served_by_the_tokio_driver() {
    use tokio::io::AsyncReadExt;
    let server = Arc::new(Listener::new(Config::default()));
    let srv = server.clone();
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let backoff = Backoff {
        initial: relink::Duration::from_millis(5),
        max: relink::Duration::from_millis(20),
        max_attempts: Some(10),
    };
    let connect = ClientStream::connect_with(Config::default(), backoff, move || {
        let (client, server_half) = tokio::io::duplex(256 * 1024);
        let r = if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            srv.serve_transport(CutAfter {
                inner: server_half,
                left: relink::wire::CLIENT_HELLO_LEN,
            })
        } else {
            srv.serve_transport(server_half)
        };
        let r = r.map(|()| client);
        async move { r }
    });
    let mut client = tokio::time::timeout(StdDuration::from_secs(10), connect)
        .await
        .expect("connect in time")
        .expect("connect");
    client
        .write_all(b"sent before the confirm was known")
        .await
        .unwrap();
    let mut stream = tokio::time::timeout(StdDuration::from_secs(10), server.accept())
        .await
        .expect("the session is confirmed by the resume")
        .expect("accept");
    let mut got = vec![0u8; 33];
    tokio::time::timeout(StdDuration::from_secs(10), stream.read_exact(&mut got))
        .await
        .expect("read in time")
        .expect("read");
    assert_eq!(&got, b"sent before the confirm was known");
    stream.write_all(b"echo").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(StdDuration::from_secs(10), client.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&back, b"echo");
    let stats = server.stats();
    assert_eq!(stats.sessions, 1, "{stats:?}");
    assert!(stats.resumes >= 1, "{stats:?}");
    // A clean end: both sides close (each shutdown waits for the other).
    let (a, b) = tokio::time::timeout(StdDuration::from_secs(10), async {
        tokio::join!(client.shutdown(), stream.shutdown())
    })
    .await
    .expect("clean close in time");
    a.unwrap();
    b.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(StdDuration::from_secs(10), stream.read_to_end(&mut rest)).await;
    drop(stream);
    drop(client);
    tokio::time::timeout(StdDuration::from_secs(10), async {
        while server.session_count() > 1 {
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
    })
    .await
    .expect("at most the finished session left");
}
