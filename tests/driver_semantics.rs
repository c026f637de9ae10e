//! The README's echo pattern on both drivers: write everything, shut the
//! sending side down (which completes once the peer acknowledged the
//! CLOSE, without waiting for the peer to close), then read the echo to
//! the end. With 4 MiB, more than the send and receive buffers, this
//! deadlocked when `shutdown` waited for the peer's own close.

use std::io::{Read, Write};
use std::time::Duration;

use relink::Config;

const LEN: usize = 4 << 20;

fn payload() -> Vec<u8> {
    (0..LEN).map(|i| (i * 7 + i / 4096) as u8).collect()
}

#[test]
fn blocking_write_shutdown_read_to_end_of_a_4_mib_echo() {
    use relink::blocking::{connect, Listener};
    let listener = Listener::bind("127.0.0.1:0", Config::default()).unwrap();
    let addr = listener.local_addr();
    let server = std::thread::spawn(move || {
        let mut s = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&got).unwrap();
        s.shutdown_write().unwrap();
        assert_eq!(s.unacked(), 0, "shutdown returned before the ACK");
        s.close().unwrap();
        got.len()
    });
    let data = payload();
    let mut c = connect(addr, Config::default()).unwrap();
    c.write_all(&data).unwrap();
    c.shutdown_write().unwrap();
    assert_eq!(c.unacked(), 0, "shutdown returned before the ACK");
    // Writing after the half-close fails like a TCP socket's.
    let err = c.write(b"x").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert!(back == data, "echo differs ({} bytes back)", back.len());
    assert!(c.wait_closed(Duration::from_secs(10)));
    assert_eq!(server.join().unwrap(), LEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_write_shutdown_read_to_end_of_a_4_mib_echo() {
    use relink::tokio::{ClientStream, Listener};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = Listener::bind("127.0.0.1:0", Config::default())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut s = listener.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(&got).await.unwrap();
        s.shutdown().await.unwrap();
        assert_eq!(s.unacked(), 0, "shutdown returned before the ACK");
        s.close().await.unwrap();
        got.len()
    });
    let data = payload();
    let mut c = ClientStream::connect(addr, Config::default())
        .await
        .unwrap();
    let run = async {
        c.write_all(&data).await.unwrap();
        // flush: every byte acknowledged, as in the blocking driver.
        c.flush().await.unwrap();
        assert_eq!(c.unacked(), 0, "flush returned before the ACKs");
        c.shutdown().await.unwrap();
        let err = c.write(b"x").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
        let mut back = Vec::new();
        c.read_to_end(&mut back).await.unwrap();
        back
    };
    let back = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the README pattern deadlocked");
    assert!(back == data, "echo differs ({} bytes back)", back.len());
    assert_eq!(server.await.unwrap(), LEN);
}

/// One error type in both drivers: the inner error of an `io::Error` is a
/// `SessionError` (the same type), and an abort maps to the same kinds.
#[test]
fn both_drivers_share_one_error_type_and_mapping() {
    use relink::AbortCode;
    fn same<T: 'static>(_: fn() -> T, _: fn() -> T) {}
    same::<Option<relink::blocking::SessionError>>(|| None, || None::<relink::tokio::SessionError>);
    same::<relink::blocking::ClientStats>(Default::default, relink::tokio::ClientStats::default);
    same::<relink::blocking::ServerStats>(Default::default, relink::tokio::ServerStats::default);

    use relink::blocking::{connect, Listener};
    let listener = Listener::bind("127.0.0.1:0", Config::default()).unwrap();
    let addr = listener.local_addr();
    let t = std::thread::spawn(move || {
        let mut s = listener.accept().unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        s.abort(AbortCode::APPLICATION);
        assert!(s.wait_closed(Duration::from_secs(10)));
        let e = s.write(b"x").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted, "{e}");
    });
    let mut c = connect(addr, Config::default()).unwrap();
    c.write_all(b"x").unwrap();
    let mut buf = [0u8; 8];
    let e = c.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    let inner = e
        .get_ref()
        .and_then(|e| e.downcast_ref::<relink::driver::SessionError>())
        .expect("a SessionError inside");
    assert_eq!(inner.abort_code(), Some(AbortCode::APPLICATION));
    assert_eq!(inner.kind(), e.kind());
    t.join().unwrap();
}

/// Keepalives 30 s apart: a close that waits for the next keepalive (or
/// idle check) instead of being woken shows up as a hang.
fn long_keepalive_config() -> Config {
    Config {
        keepalive_interval: relink::Duration::from_secs(30),
        idle_timeout: relink::Duration::from_secs(90),
        ..Config::default()
    }
}

/// How long one close may take before it counts as hung: far below the
/// 30 s keepalive, far above a close on a loaded machine.
const CLOSE_HANG: Duration = Duration::from_secs(10);

/// The server's pause between reading EOF and calling `close` (or
/// `shutdown_write`), per run: 0 lets the writer thread race the call,
/// the longer ones let every ACK go out first, so that nothing but the
/// call itself can wake the writer.
const PAUSES_MS: [u64; 6] = [0, 1, 5, 20, 50, 0];

/// Issue 12 (new-user trial): `write_all; close()` on the client and
/// `read_to_end; close()` on the server sometimes both waited exactly one
/// keepalive interval (5.0 s with the defaults, 3 runs in 40): the server's
/// `close` queued its CLOSE frame and then waited without waking its
/// writer thread, so the CLOSE left only with the next keepalive. Each
/// run below pauses on the server between its EOF and its `close` (then
/// its `shutdown_write`), which made every such run hang; each call must
/// return well before the keepalive.
#[test]
fn blocking_close_after_eof_does_not_wait_for_a_keepalive() {
    use relink::blocking::{connect, Listener};
    use std::sync::mpsc;
    let data = vec![7u8; 64 << 10];
    for (run, pause) in PAUSES_MS.iter().copied().enumerate() {
        let half = run % 2 == 1; // server: shutdown_write instead of close
        let listener = Listener::bind("127.0.0.1:0", long_keepalive_config()).unwrap();
        let addr = listener.local_addr();
        let (tx, rx) = mpsc::channel();
        let server = std::thread::spawn(move || {
            let mut s = listener.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            std::thread::sleep(Duration::from_millis(pause));
            let started = std::time::Instant::now();
            if half {
                s.shutdown_write().unwrap();
            } else {
                s.close().unwrap();
            }
            let _ = tx.send(started.elapsed());
            assert!(s.wait_closed(CLOSE_HANG), "run {run}: server not closed");
            got.len()
        });
        let mut c = connect(addr, long_keepalive_config()).unwrap();
        c.write_all(&data).unwrap();
        let started = std::time::Instant::now();
        let (ctx, crx) = mpsc::channel();
        let client = std::thread::spawn(move || {
            let r = c.close();
            let _ = ctx.send(started.elapsed());
            r
        });
        let server_took = rx.recv_timeout(CLOSE_HANG).unwrap_or_else(|_| {
            panic!("run {run} (pause {pause} ms): the server's close hung (keepalive 30 s)")
        });
        let client_took = crx.recv_timeout(CLOSE_HANG).unwrap_or_else(|_| {
            panic!("run {run} (pause {pause} ms): the client's close hung (server's took {server_took:?})")
        });
        client.join().unwrap().unwrap();
        assert_eq!(server.join().unwrap(), data.len(), "run {run}");
        assert!(server_took < CLOSE_HANG && client_took < CLOSE_HANG);
    }
}

/// The same sequence on the tokio driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_close_after_eof_does_not_wait_for_a_keepalive() {
    use relink::tokio::{ClientStream, Listener};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let data = vec![7u8; 64 << 10];
    for (run, pause) in PAUSES_MS.iter().copied().enumerate() {
        let half = run % 2 == 1;
        let listener = Listener::bind("127.0.0.1:0", long_keepalive_config())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut s = listener.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            tokio::time::sleep(Duration::from_millis(pause)).await;
            if half {
                s.shutdown().await.unwrap();
                // The client's CLOSE came first: the end is clean now.
                s.close().await.unwrap();
            } else {
                s.close().await.unwrap();
            }
            got.len()
        });
        let mut c = ClientStream::connect(addr, long_keepalive_config())
            .await
            .unwrap();
        c.write_all(&data).await.unwrap();
        tokio::time::timeout(CLOSE_HANG, c.close())
            .await
            .unwrap_or_else(|_| panic!("run {run} (pause {pause} ms): the client's close hung"))
            .unwrap();
        let n = tokio::time::timeout(CLOSE_HANG, server)
            .await
            .unwrap_or_else(|_| panic!("run {run} (pause {pause} ms): the server's close hung"))
            .unwrap();
        assert_eq!(n, data.len(), "run {run}");
    }
}
