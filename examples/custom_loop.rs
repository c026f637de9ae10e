//! Driving `relink::Client` and `relink::Server` by hand: no async runtime,
//! no sockets, no driver module. The "transport" is an in-memory radio link
//! that delivers bytes in order in random-sized bursts and breaks now and
//! then, losing whatever was in flight. The sans-IO API is all it takes:
//! move bytes, tell the state machines the time, and open a new link when
//! the old one breaks.
//!
//! ```sh
//! cargo run --example custom_loop
//! ```

use relink::{os_rng, Client, Config, Duration, Event, Instant, Server, ServerEvent, TransportId};

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
    let mut server = Server::new(config, os_rng());
    let mut dice = Dice(0x5EED);
    let mut now = Instant::from_micros(0); // simulated clock: 1 ms per round

    let message: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
    let (mut sent, mut received) = (0usize, Vec::with_capacity(TOTAL));
    let mut session = None;
    let (mut breaks, mut resumes) = (0u32, 0u32);

    // Open the first link: the server registers a transport, the client
    // starts its handshake on it.
    let mut link = Link::default();
    let mut transport: TransportId = server.accept(now)?;
    client.new_transport(now)?;
    let mut wire = vec![0u8; 64 * 1024];

    while received.len() < TOTAL {
        now = now.saturating_add(Duration::from_millis(1));

        // 1. The application writes (the client buffers; 0 = back-pressure).
        sent += client.send(&message[sent..])?;

        // 2. Each side fills its outgoing bytes.
        let n = client.poll_transmit(now, &mut wire)?;
        link.up.extend_from_slice(&wire[..n]);
        let n = server.poll_transmit(transport, now, &mut wire).unwrap_or(0);
        link.down.extend_from_slice(&wire[..n]);

        // 3. The radio delivers a random burst each way. `handle_input`
        //    says how much it took; keep the rest for later.
        let burst = (1 + dice.roll(8_000) as usize).min(link.up.len());
        if let Ok(k) = server.handle_input(transport, now, &link.up[..burst]) {
            link.up.drain(..k);
        }
        let burst = (1 + dice.roll(8_000) as usize).min(link.down.len());
        if let Ok(k) = client.handle_input(now, &link.down[..burst]) {
            link.down.drain(..k);
        }

        // 4. Events: learn the session id, count resumes.
        while let Some(e) = server.poll_event() {
            if let ServerEvent::HandshakeDone { session: s, .. } = e {
                session = Some(s);
            }
        }
        while let Some(e) = client.poll_event() {
            if let Event::Resumed { .. } = e {
                resumes += 1;
            }
        }

        // 5. The application reads what arrived, verified and in order.
        if let Some(s) = session {
            let mut buf = [0u8; 32 * 1024];
            while let Ok(n @ 1..) = server.recv(s, &mut buf) {
                received.extend_from_slice(&buf[..n]);
            }
        }

        // 6. Timers: the core says when it next needs the clock.
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now);
        }
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }

        // 7. Now and then the radio link breaks (bytes in flight are lost),
        //    or a state machine ended it. Both sides are told, a new link
        //    opens, and the client resumes the session on it.
        if dice.roll(25) == 0 || client.transport_ended() || server.transport_ended(transport) {
            breaks += 1;
            server.transport_lost(transport, now);
            client.transport_lost(now);
            link = Link::default();
            transport = server.accept(now)?;
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
