//! snow 0.10 columns (default pure-Rust resolver): Noise_NN_25519_ChaChaPoly_BLAKE2s
//! (anonymous, like relink without a pinned key) and, for the pinned
//! rows, Noise_NK_25519_ChaChaPoly_BLAKE2s (the initiator knows the
//! responder's static key). Transport messages are written by one state
//! and read by the other; a 16 KiB write is one Noise message.

use snow::params::NoiseParams;
use snow::{Builder, HandshakeState, Keypair, TransportState};

use crate::Sample;

const NN: &str = "Noise_NN_25519_ChaChaPoly_BLAKE2s";
const NK: &str = "Noise_NK_25519_ChaChaPoly_BLAKE2s";

fn params(name: &str) -> NoiseParams {
    name.parse().expect("noise params")
}

/// Initiator and responder handshake states; NK when `responder_key`.
fn states(responder_key: Option<&Keypair>) -> (HandshakeState, HandshakeState) {
    match responder_key {
        None => (
            Builder::new(params(NN)).build_initiator().expect("init"),
            Builder::new(params(NN)).build_responder().expect("resp"),
        ),
        Some(kp) => (
            Builder::new(params(NK))
                .remote_public_key(&kp.public)
                .expect("key")
                .build_initiator()
                .expect("init"),
            Builder::new(params(NK))
                .local_private_key(&kp.private)
                .expect("key")
                .build_responder()
                .expect("resp"),
        ),
    }
}

fn handshake(kp: Option<&Keypair>, wire: &mut [u8]) -> (TransportState, TransportState) {
    let (mut i, mut r) = states(kp);
    let mut p = [0u8; 64];
    let n = i.write_message(&[], wire).expect("-> e");
    r.read_message(&wire[..n], &mut p).expect("read e");
    let n = r.write_message(&[], wire).expect("<- e, ee");
    i.read_message(&wire[..n], &mut p).expect("read e, ee");
    (
        i.into_transport_mode().expect("transport"),
        r.into_transport_mode().expect("transport"),
    )
}

/// An established pair.
pub struct Bulk {
    init: TransportState,
    resp: TransportState,
    wire: Vec<u8>,
    app: Vec<u8>,
    data: Vec<u8>,
    both: bool,
}

impl Bulk {
    /// Handshake a pair (NN); `both`: `run` sends both ways at once.
    pub fn new(both: bool) -> Bulk {
        let mut wire = vec![0u8; 65535];
        let (init, resp) = handshake(None, &mut wire);
        Bulk {
            init,
            resp,
            wire,
            app: vec![0u8; 65535],
            data: (0..16384).map(|i| (i * 7) as u8).collect(),
            both,
        }
    }

    fn up(&mut self, len: usize) -> u64 {
        let n = self
            .init
            .write_message(&self.data[..len], &mut self.wire)
            .expect("write");
        self.resp
            .read_message(&self.wire[..n], &mut self.app)
            .expect("read") as u64
    }

    fn down(&mut self, len: usize) -> u64 {
        let n = self
            .resp
            .write_message(&self.data[..len], &mut self.wire)
            .expect("write");
        self.init
            .read_message(&self.wire[..n], &mut self.app)
            .expect("read") as u64
    }

    /// Move `total` bytes (each way when `both`) in `write`-byte messages.
    pub fn run(&mut self, total: u64, write: usize) -> Sample {
        Sample::time(|| {
            let mut got = 0;
            let mut sent = 0;
            while sent < total {
                let len = write.min((total - sent) as usize);
                got += self.up(len);
                if self.both {
                    got += self.down(len);
                }
                sent += len as u64;
            }
            got
        })
    }

    /// `n` messages of `len` bytes, each delivered before the next.
    pub fn messages(&mut self, n: u64, len: usize) -> Sample {
        Sample::time(|| {
            for _ in 0..n {
                assert_eq!(self.up(len), len as u64);
            }
            n
        })
    }
}

/// Full handshakes.
pub struct Handshakes {
    key: Option<Keypair>,
    wire: Vec<u8>,
}

impl Handshakes {
    /// NN, or NK when `pinned`.
    pub fn new(pinned: bool) -> Handshakes {
        Handshakes {
            key: pinned.then(|| {
                Builder::new(params(NK))
                    .generate_keypair()
                    .expect("keypair")
            }),
            wire: vec![0u8; 1024],
        }
    }

    /// Both sides, handshakes per second.
    pub fn both(&mut self, n: u64) -> Sample {
        Sample::time(|| {
            for _ in 0..n {
                std::hint::black_box(handshake(self.key.as_ref(), &mut self.wire));
            }
            n
        })
    }

    /// The responder's work alone, in phases: `n` initiators write their
    /// first message (not timed), `n` responders are built, read it, write
    /// their answer and switch to transport mode (timed), the initiators
    /// read the answers (not timed).
    pub fn server_only(&mut self, n: u64) -> Sample {
        let mut p = [0u8; 64];
        let mut inits = Vec::with_capacity(n as usize);
        let mut msgs = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let (mut i, _) = states(self.key.as_ref());
            let k = i.write_message(&[], &mut self.wire).expect("-> e");
            msgs.push(self.wire[..k].to_vec());
            inits.push(i);
        }
        let mut transports = Vec::with_capacity(n as usize);
        let t = crate::cpu_secs();
        for m in msgs.iter_mut() {
            let mut r = match &self.key {
                None => Builder::new(params(NN)).build_responder().expect("resp"),
                Some(kp) => Builder::new(params(NK))
                    .local_private_key(&kp.private)
                    .expect("key")
                    .build_responder()
                    .expect("resp"),
            };
            r.read_message(m, &mut p).expect("read e");
            let k = r.write_message(&[], &mut self.wire).expect("<- e, ee");
            m.clear();
            m.extend_from_slice(&self.wire[..k]);
            transports.push(r.into_transport_mode().expect("transport"));
        }
        let secs = crate::cpu_secs() - t;
        for (i, m) in inits.into_iter().zip(msgs.iter()) {
            let mut i = i;
            i.read_message(m, &mut p).expect("read");
            std::hint::black_box(i.into_transport_mode().expect("transport"));
        }
        drop(transports);
        Sample {
            units: n as f64,
            secs,
        }
    }
}

/// Heap bytes per idle responder transport state after a handshake and a
/// short exchange.
pub fn idle_memory(n: usize) -> f64 {
    let mut wire = vec![0u8; 1024];
    let mut app = vec![0u8; 1024];
    let mut states = Vec::with_capacity(n);
    let mut total = 0i64;
    for _ in 0..n {
        let before = crate::live_bytes();
        let (mut i, mut r) = handshake(None, &mut wire);
        let k = i.write_message(&[0x33; 300], &mut wire).expect("write");
        r.read_message(&wire[..k], &mut app).expect("read");
        let k = r.write_message(&[0x33; 300], &mut wire).expect("write");
        i.read_message(&wire[..k], &mut app).expect("read");
        drop(i);
        states.push(r);
        total += crate::live_bytes() - before;
    }
    drop(states);
    total as f64 / n as f64 + std::mem::size_of::<TransportState>() as f64
}
