//! Driving `relink::Client` and the server's `relink::Endpoint` and
//! `relink::Connection` by hand: no async runtime, no sockets, no driver
//! module. The "transport" is an in-memory radio link that delivers bytes
//! in order in random-sized bursts and breaks now and then, losing whatever
//! was in flight. The sans-IO API is all it takes: move bytes, tell the
//! state machines the time, and open a new link when the old one breaks.
//!
//! On the server a new transport starts at the endpoint; once the endpoint
//! says which session it belongs to (`Dispatch`), its bytes go to that
//! session's `Connection`, a value this loop owns (a multi-threaded driver
//! would run each connection on its own task). `relink::Server` bundles the
//! two for single-threaded loops; this example shows the parts.
//!
//! ```sh
//! cargo run --example custom_loop
//! ```

use std::collections::BTreeMap;

use relink::{
    os_rng, Client, Config, Connection, Dispatch, Duration, Endpoint, Event, Instant, ServerEvent,
    SessionId, TransportId,
};

/// A tiny deterministic PRNG for the simulated radio (not for crypto).
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One radio link: a byte pipe each way.
#[derive(Default)]
struct Link {
    up: Vec<u8>,
    down: Vec<u8>,
}

fn main() -> Result<(), relink::Error> {
    const TOTAL: usize = 2 << 20; // bytes the client sends
    let config = Config::default();
    let mut client = Client::new(config.clone(), os_rng());
    let mut endpoint = Endpoint::new(config, os_rng());
    // The sessions, owned by this loop. `at` says where the current
    // transport's bytes go: the endpoint, or a session's connection.
    let mut sessions: BTreeMap<SessionId, Box<Connection>> = BTreeMap::new();
    let mut at: Option<SessionId> = None;
    let mut dice = Dice(0x5EED);
    let mut now = Instant::from_micros(0); // simulated clock: 1 ms per round

    let message: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
    let (mut sent, mut received) = (0usize, Vec::with_capacity(TOTAL));
    let (mut breaks, mut resumes) = (0u32, 0u32);

    // Open the first link: the server registers a transport, the client
    // starts its handshake on it.
    let mut link = Link::default();
    let mut transport: TransportId = endpoint.accept(now)?;
    // A rejection the server must still write, then close the transport.
    let mut server_ended = false;
    client.new_transport(now)?;
    let mut wire = vec![0u8; 64 * 1024];

    while received.len() < TOTAL {
        now = now.saturating_add(Duration::from_millis(1));

        // 1. The application writes (the client buffers; 0 = back-pressure).
        sent += client.send(&message[sent..])?;

        // 2. Each side fills its outgoing bytes.
        let n = client.poll_transmit(now, &mut wire)?;
        link.up.extend_from_slice(&wire[..n]);
        let n = match at.and_then(|s| sessions.get_mut(&s)) {
            Some(c) => c.poll_transmit(transport, now, &mut wire)?,
            None => endpoint.poll_transmit(transport, &mut wire)?,
        };
        link.down.extend_from_slice(&wire[..n]);

        // 3. The radio delivers a random burst each way. `handle_input`
        //    says how much it took; keep the rest for later.
        let burst = (1 + dice.roll(8_000) as usize).min(link.up.len());
        if !server_ended {
            match at.and_then(|s| sessions.get_mut(&s)) {
                Some(c) => match c.handle_input(transport, now, &link.up[..burst]) {
                    Ok(k) => drop(link.up.drain(..k)),
                    Err(_) => server_ended = true,
                },
                None => match endpoint.handle_input(transport, now, &link.up[..burst]) {
                    Ok(Dispatch::Pending(k)) => drop(link.up.drain(..k)),
                    // The handshake completed: the session is ours now.
                    Ok(Dispatch::NewConnection {
                        consumed,
                        connection,
                    }) => {
                        link.up.drain(..consumed);
                        at = Some(connection.session());
                        sessions.insert(connection.session(), connection);
                    }
                    // A resume: the endpoint names the session, which
                    // checks the request itself.
                    Ok(Dispatch::Resume {
                        consumed,
                        session,
                        request,
                    }) => {
                        link.up.drain(..consumed);
                        let result = match sessions.get_mut(&session) {
                            Some(c) => c.handle_resume(transport, now, &request),
                            None => Err(endpoint.unknown_session(&request)),
                        };
                        match result {
                            Ok(()) => at = Some(session),
                            Err(rejection) => {
                                link.down.extend_from_slice(rejection.reply());
                                server_ended = true;
                            }
                        }
                    }
                    Err(_) => server_ended = true,
                },
            }
        }
        let burst = (1 + dice.roll(8_000) as usize).min(link.down.len());
        if let Ok(k) = client.handle_input(now, &link.down[..burst]) {
            link.down.drain(..k);
        }

        // 4. Events. A connection's requests to the endpoint (forget my
        //    route) go to the endpoint.
        while let Some(e) = endpoint.poll_event() {
            if let ServerEvent::CloseTransport { .. } = e {
                server_ended = true;
            }
        }
        for c in sessions.values_mut() {
            while let Some(e) = c.poll_event() {
                if let ServerEvent::CloseTransport { transport: t, .. } = e {
                    server_ended |= t == transport;
                }
            }
            while let Some(e) = c.poll_endpoint_event() {
                endpoint.handle_event(e);
            }
        }
        // A session that ended and was read to the end is dropped.
        sessions.retain(|_, c| !c.is_drained());
        while let Some(e) = client.poll_event() {
            if let Event::Resumed { .. } = e {
                resumes += 1;
            }
        }

        // 5. The application reads what arrived, verified and in order.
        for c in sessions.values_mut() {
            let mut buf = [0u8; 32 * 1024];
            while let Ok(n @ 1..) = c.recv(&mut buf) {
                received.extend_from_slice(&buf[..n]);
            }
        }

        // 6. Timers: each state machine says when it next needs the clock.
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now);
        }
        if endpoint.poll_timeout().is_some_and(|t| t <= now) {
            endpoint.handle_timeout(now);
        }
        for c in sessions.values_mut() {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
        }

        // 7. Now and then the radio link breaks (bytes in flight are lost),
        //    or a state machine ended it. Both sides are told, a new link
        //    opens, and the client resumes the session on it.
        if dice.roll(25) == 0 || client.transport_ended() || server_ended {
            breaks += 1;
            match at.take().and_then(|s| sessions.get_mut(&s)) {
                Some(c) => c.transport_lost(transport, now),
                None => endpoint.transport_lost(transport, now),
            }
            client.transport_lost(now);
            link = Link::default();
            server_ended = false;
            transport = endpoint.accept(now)?;
            client.new_transport(now)?;
        }
    }

    assert_eq!(
        received, message,
        "the stream must arrive exactly once, in order"
    );
    println!(
        "{} bytes delivered exactly over {breaks} broken links ({resumes} resumes), \
         {} ms of simulated time",
        received.len(),
        now.as_micros() / 1000
    );
    Ok(())
}
