//! rustls 0.23 columns: TLS 1.3 client and server connections in memory
//! (aws-lc-rs provider, one cipher suite, X25519 key exchange only, a
//! self-signed ECDSA P-256 certificate from rcgen that the client verifies,
//! no session tickets, no resumption: every handshake is a full one).

use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use rustls::{ServerConnection, SupportedCipherSuite};
use std::io::{Read, Write};
use std::sync::Arc;

use crate::Sample;

/// The TLS 1.3 cipher suite.
#[derive(Clone, Copy, Debug)]
pub enum Suite {
    /// TLS13_CHACHA20_POLY1305_SHA256.
    ChaCha20,
    /// TLS13_AES_128_GCM_SHA256.
    Aes128Gcm,
}

/// Client and server configurations for one suite.
pub struct Configs {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

impl Configs {
    /// Certificate, trust root and both configurations.
    pub fn new(suite: Suite) -> Configs {
        let suite: SupportedCipherSuite = match suite {
            Suite::ChaCha20 => aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            Suite::Aes128Gcm => aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
        };
        let provider = Arc::new(CryptoProvider {
            cipher_suites: vec![suite],
            kx_groups: vec![aws_lc_rs::kx_group::X25519],
            ..aws_lc_rs::default_provider()
        });
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("self-signed certificate");
        let cert: CertificateDer<'static> = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server certificate");
        server.send_tls13_tickets = 0;
        let mut roots = RootCertStore::empty();
        roots.add(cert).expect("trust root");
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.resumption = rustls::client::Resumption::disabled();
        Configs {
            client: Arc::new(client),
            server: Arc::new(server),
        }
    }

    fn client(&self) -> Connection {
        let name = ServerName::try_from("localhost").expect("name");
        Connection::Client(ClientConnection::new(self.client.clone(), name).expect("client"))
    }

    fn server(&self) -> Connection {
        Connection::Server(ServerConnection::new(self.server.clone()).expect("server"))
    }
}

/// Move everything `from` has to send into `to`, reading the plaintext it
/// yields into `app`. Returns plaintext bytes read.
fn pump(from: &mut Connection, to: &mut Connection, wire: &mut Vec<u8>, app: &mut [u8]) -> u64 {
    wire.clear();
    while from.wants_write() {
        from.write_tls(wire).expect("write_tls");
    }
    let mut rd = &wire[..];
    let mut got = 0;
    while !rd.is_empty() {
        to.read_tls(&mut rd).expect("read_tls");
        to.process_new_packets().expect("process_new_packets");
        got += read_all(to, app);
    }
    got
}

fn read_all(c: &mut Connection, app: &mut [u8]) -> u64 {
    let mut got = 0;
    loop {
        match c.reader().read(app) {
            Ok(0) => return got,
            Ok(n) => got += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return got,
            Err(e) => panic!("rustls read: {e}"),
        }
    }
}

fn handshake(client: &mut Connection, server: &mut Connection, wire: &mut Vec<u8>) {
    let mut app = [0u8; 64];
    for _ in 0..10 {
        pump(client, server, wire, &mut app);
        pump(server, client, wire, &mut app);
        if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() {
            return;
        }
    }
    panic!("rustls handshake did not complete");
}

/// An established pair.
pub struct Bulk {
    client: Connection,
    server: Connection,
    wire: Vec<u8>,
    app: Vec<u8>,
    data: Vec<u8>,
    both: bool,
}

impl Bulk {
    /// Handshake a pair; `both`: `run` sends both ways at once.
    pub fn new(cfg: &Configs, both: bool) -> Bulk {
        let mut client = cfg.client();
        let mut server = cfg.server();
        let mut wire = Vec::with_capacity(256 * 1024);
        handshake(&mut client, &mut server, &mut wire);
        Bulk {
            client,
            server,
            wire,
            app: vec![0u8; 64 * 1024],
            data: (0..16384).map(|i| (i * 7) as u8).collect(),
            both,
        }
    }

    /// Move `total` bytes (each way when `both`) in `write`-byte writes.
    pub fn run(&mut self, total: u64, write: usize) -> Sample {
        Sample::time(|| {
            let (mut up_sent, mut up_got, mut down_sent, mut down_got) = (0, 0, 0, 0);
            let down_total = if self.both { total } else { 0 };
            while up_got < total || down_got < down_total {
                if up_sent < total {
                    let len = write.min((total - up_sent) as usize);
                    self.client
                        .writer()
                        .write_all(&self.data[..len])
                        .expect("write");
                    up_sent += len as u64;
                }
                if down_sent < down_total {
                    let len = write.min((down_total - down_sent) as usize);
                    self.server
                        .writer()
                        .write_all(&self.data[..len])
                        .expect("write");
                    down_sent += len as u64;
                }
                up_got += pump(
                    &mut self.client,
                    &mut self.server,
                    &mut self.wire,
                    &mut self.app,
                );
                down_got += pump(
                    &mut self.server,
                    &mut self.client,
                    &mut self.wire,
                    &mut self.app,
                );
            }
            up_got + down_got
        })
    }

    /// `n` messages of `len` bytes client → server, each delivered before
    /// the next is written.
    pub fn messages(&mut self, n: u64, len: usize) -> Sample {
        Sample::time(|| {
            for _ in 0..n {
                self.client
                    .writer()
                    .write_all(&self.data[..len])
                    .expect("write");
                let got = pump(
                    &mut self.client,
                    &mut self.server,
                    &mut self.wire,
                    &mut self.app,
                );
                assert_eq!(got, len as u64);
            }
            n
        })
    }
}

/// Full handshakes.
pub struct Handshakes<'a> {
    cfg: &'a Configs,
    wire: Vec<u8>,
}

impl<'a> Handshakes<'a> {
    /// Handshakes with `cfg`.
    pub fn new(cfg: &'a Configs) -> Handshakes<'a> {
        Handshakes {
            cfg,
            wire: Vec::with_capacity(64 * 1024),
        }
    }

    /// Both sides, handshakes per second.
    pub fn both(&mut self, n: u64) -> Sample {
        Sample::time(|| {
            for _ in 0..n {
                let mut c = self.cfg.client();
                let mut s = self.cfg.server();
                handshake(&mut c, &mut s, &mut self.wire);
            }
            n
        })
    }

    /// The server's work alone, in phases: all `n` clients write their
    /// flight (not timed), all servers read, process and write theirs
    /// (timed, connection creation included), all clients read (not
    /// timed); repeated until every handshake is complete.
    pub fn server_only(&mut self, n: u64) -> Sample {
        let n_us = n as usize;
        let mut clients: Vec<Connection> = (0..n_us).map(|_| self.cfg.client()).collect();
        let mut servers: Vec<Option<Connection>> = (0..n_us).map(|_| None).collect();
        let mut msgs: Vec<Vec<u8>> = vec![Vec::with_capacity(8192); n_us];
        let mut app = [0u8; 64];
        let mut secs = 0.0;
        for _ in 0..4 {
            for (c, m) in clients.iter_mut().zip(msgs.iter_mut()) {
                m.clear();
                while c.wants_write() {
                    c.write_tls(m).expect("write_tls");
                }
            }
            let t = crate::cpu_secs();
            for (s, m) in servers.iter_mut().zip(msgs.iter_mut()) {
                let s = s.get_or_insert_with(|| self.cfg.server());
                let mut rd = &m[..];
                while !rd.is_empty() {
                    s.read_tls(&mut rd).expect("read_tls");
                    s.process_new_packets().expect("process");
                }
                m.clear();
                while s.wants_write() {
                    s.write_tls(m).expect("write_tls");
                }
            }
            secs += crate::cpu_secs() - t;
            for (c, m) in clients.iter_mut().zip(msgs.iter()) {
                let mut rd = &m[..];
                while !rd.is_empty() {
                    c.read_tls(&mut rd).expect("read_tls");
                    c.process_new_packets().expect("process");
                    read_all(c, &mut app);
                }
            }
            let done = servers
                .iter()
                .all(|s| s.as_ref().is_some_and(|s| !s.is_handshaking()))
                && clients
                    .iter()
                    .all(|c| !c.is_handshaking() && !c.wants_write());
            if done {
                return Sample {
                    units: n as f64,
                    secs,
                };
            }
        }
        panic!("rustls handshakes did not complete");
    }
}

/// Heap bytes per idle server connection after a handshake and one short
/// exchange (client connections dropped).
pub fn idle_memory(cfg: &Configs, n: usize) -> f64 {
    let mut wire = Vec::with_capacity(64 * 1024);
    let mut app = vec![0u8; 4096];
    let mut servers = Vec::with_capacity(n);
    let mut total = 0i64;
    for _ in 0..n {
        let before = crate::live_bytes();
        let mut s = cfg.server();
        {
            let mut c = cfg.client();
            handshake(&mut c, &mut s, &mut wire);
            c.writer().write_all(&[0x33; 300]).expect("write");
            s.writer().write_all(&[0x33; 300]).expect("write");
            assert_eq!(pump(&mut c, &mut s, &mut wire, &mut app), 300);
            assert_eq!(pump(&mut s, &mut c, &mut wire, &mut app), 300);
        }
        servers.push(s);
        total += crate::live_bytes() - before;
    }
    drop(servers);
    // the connections themselves live in `servers`, allocated beforehand
    total as f64 / n as f64 + std::mem::size_of::<Connection>() as f64
}
