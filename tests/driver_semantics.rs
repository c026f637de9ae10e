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
