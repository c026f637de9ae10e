//! Adversarial review of the issue-10 driver ports (tokio): races and
//! bounds of the endpoint-lock + per-session-lock structure.

use std::io;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use relink::tokio::{ClientStream, Server};
use relink::{Backoff, Config};
use tokio::io::AsyncWriteExt;

async fn client_of(server: &Arc<Server>) -> io::Result<ClientStream> {
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
#[ignore = "finding: ended sessions with unread bytes are not bounded by max_sessions (accept queue grows)"]
async fn vanished_clients_cannot_make_the_server_hold_more_than_max_sessions() {
    let server = Arc::new(Server::new(Config {
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
