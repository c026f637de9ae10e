//! `relink`: command-line tool over the blocking driver (the tunnels,
//! `forward` and `serve-forward`, over the tokio driver: see `tunnel`).
//!
//! ```text
//! relink keygen --out server.key            # prints the public key to pin
//! relink pubkey server.key                   # prints it again
//! relink listen 0.0.0.0:7000 --key server.key > received.bin
//! relink connect host:7000 --server-key HEX < file.bin
//! relink serve-forward 0.0.0.0:7000 127.0.0.1:22   # server side of a tunnel
//! relink forward 127.0.0.1:2222 host:7000          # client side of a tunnel
//! ```
//!
//! Listening commands print `listening on ADDR` on stderr first (tests and
//! scripts bind port 0 and read the address from there), then the server's
//! public key or a warning that the session is anonymous. A listen address
//! `:PORT` means every interface. Log lines (timestamped, see `log`) go to
//! stderr: errors and warnings by default; `-v` adds sessions, transports
//! lost, resumes, throughput and a live progress meter during `connect` and
//! `listen`; `-vv` debug detail; `RUST_LOG` overrides. Exit statuses: see
//! `EXIT_STATUS_HELP`.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use clap::{Parser, Subcommand};

mod credentials;
mod keys;
mod log;
mod node;
mod progress;
mod signals;
mod status;
mod tunnel;

use credentials::{Accepted, ClientCredentials};
use keys::{hex, keygen, pubkey, read_key, unhex32};
use progress::{throughput, Counts, Sample, Track};
use relink::blocking::{ClientBuilder, Decision, ListenerBuilder, ServerStream};
use relink::{AbortCode, Backoff, ClientCredential, Config, Duration};
use signals::{let_the_interrupt_finish, Interrupts};
use status::{coded, exit_status, EXIT_STATUS_HELP};

/// Long-lived encrypted byte streams that survive broken connections.
#[derive(Parser, Debug)]
#[command(name = "relink", version, about, long_about = None, after_help = EXIT_STATUS_HELP)]
struct Cli {
    /// Progress and diagnostics on stderr: sessions, transports lost,
    /// resumes, throughput, live progress during a transfer; -vv: debug
    /// detail (RUST_LOG, e.g. relink=debug, overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Before the subcommand, as older versions took it (hidden): the
    /// subcommand's own `--idle-ms` wins.
    #[arg(long, hide = true)]
    idle_ms: Option<u64>,
    /// Before the subcommand, as older versions took it (hidden): the
    /// subcommand's own `--max-attempts` wins.
    #[arg(long, hide = true)]
    max_attempts: Option<u32>,
    /// Start a rekey once this side sent N bytes under one key (hidden:
    /// for tests; the default policy is 1 GiB or 10 minutes).
    #[arg(long, hide = true, value_name = "N")]
    rekey_after_bytes: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

/// Every command that opens connections.
#[derive(clap::Args, Debug, Clone, Copy)]
struct Idle {
    /// Idle timeout in milliseconds: a transport on which nothing arrived for
    /// this long is replaced (keepalives are sent at a third of it)
    /// [default: 15000].
    #[arg(long = "idle-ms", value_name = "MS")]
    ms: Option<u64>,
}

/// The client commands.
#[derive(clap::Args, Debug, Clone, Copy)]
struct Attempts {
    /// Failed attempts in a row to open the first connection before giving
    /// up (0 = no limit: keep trying) [default: 30]. Once a session exists
    /// the client keeps reconnecting (capped exponential backoff with
    /// jitter) for as long as the server said it holds the session.
    #[arg(long = "max-attempts", value_name = "N")]
    n: Option<u32>,
    /// Wait for the server to appear: retry a refused first connection (up
    /// to --max-attempts) instead of failing at once.
    #[arg(long)]
    wait: bool,
}

/// The settings the commands share, from the flags.
struct Opts {
    verbose: bool,
    idle_ms: u64,
    max_attempts: u32,
    wait: bool,
    /// `--rekey-after-bytes` (hidden).
    rekey_after_bytes: Option<u64>,
}

impl Cli {
    fn opts(&self, idle: Idle, attempts: Option<Attempts>) -> Opts {
        Opts {
            verbose: self.verbose > 0,
            idle_ms: idle.ms.or(self.idle_ms).unwrap_or(15_000),
            max_attempts: attempts
                .and_then(|a| a.n)
                .or(self.max_attempts)
                .unwrap_or(30),
            wait: attempts.is_some_and(|a| a.wait),
            rekey_after_bytes: self.rekey_after_bytes,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Accept sessions on ADDR and write what each one sends to stdout
    /// (one after the other). A session that fails is logged with its cause
    /// and the client's address and does not stop the listener; after
    /// `--sessions` sessions ended, exit 0 if all of them ended cleanly
    /// (4 if one failed).
    Listen {
        /// Address to bind, e.g. 0.0.0.0:7000; `:7000` = every interface
        /// (port 0 picks a free port).
        #[arg(value_parser = listen_arg)]
        addr: String,
        /// Server key file (from `relink keygen`) for clients that pin its
        /// public key (printed on stderr at start); without it the handshake
        /// is anonymous.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Sessions to serve before exiting (0 = no limit: serve forever).
        #[arg(long, default_value_t = 1)]
        sessions: u64,
        #[command(flatten)]
        resume: ResumeTimeout,
        #[command(flatten)]
        idle: Idle,
        #[command(flatten)]
        auth: ServerAuth,
        #[command(flatten)]
        fleet: node::Fleet,
    },
    /// Send stdin to the server at ADDR until EOF, close cleanly once
    /// everything is acknowledged and exit 0; the server's data goes to
    /// stdout. Exits at once (status 4) when the session is lost, even while
    /// stdin is still open.
    Connect {
        /// Server address, e.g. example.com:7000.
        #[arg(value_parser = peer_arg)]
        addr: String,
        /// The server's public key (64 hex digits from `relink keygen`) to
        /// pin; without it the handshake is open to a man in the middle.
        #[arg(long)]
        server_key: Option<String>,
        #[command(flatten)]
        attempts: Attempts,
        #[command(flatten)]
        idle: Idle,
        #[command(flatten)]
        auth: ClientAuth,
    },
    /// Generate a server static key file and print its public key (hex) to
    /// pin with `connect --server-key`.
    Keygen {
        /// Where to write the key file (mode 0600).
        #[arg(long, default_value = "relink.key")]
        out: PathBuf,
    },
    /// Print the public key (hex) of a key file from `relink keygen`: what
    /// clients pin with `--server-key`.
    Pubkey {
        /// The key file.
        keyfile: PathBuf,
    },
    /// Client side of a tunnel: accept TCP connections on LOCAL and carry
    /// each over its own relink session to the `serve-forward` at REMOTE.
    Forward {
        /// Local address to accept on, e.g. 127.0.0.1:2222; `:2222` = every
        /// interface.
        #[arg(value_parser = listen_arg)]
        local: String,
        /// The relink server (`relink serve-forward`) address.
        #[arg(value_parser = peer_arg)]
        remote: String,
        /// The server's public key to pin (hex).
        #[arg(long)]
        server_key: Option<String>,
        #[command(flatten)]
        attempts: Attempts,
        #[command(flatten)]
        idle: Idle,
        #[command(flatten)]
        auth: ClientAuth,
    },
    /// Server side of a tunnel: accept relink sessions on ADDR and connect
    /// each to TARGET by TCP.
    ServeForward {
        /// Address to bind for relink clients, e.g. 0.0.0.0:7000; `:7000` =
        /// every interface.
        #[arg(value_parser = listen_arg)]
        addr: String,
        /// TCP service every session is connected to, e.g. 127.0.0.1:22.
        #[arg(value_parser = peer_arg)]
        target: String,
        /// Server key file (from `relink keygen`); its public key is printed
        /// on stderr at start.
        #[arg(long)]
        key: Option<PathBuf>,
        #[command(flatten)]
        resume: ResumeTimeout,
        #[command(flatten)]
        idle: Idle,
        #[command(flatten)]
        auth: ServerAuth,
        #[command(flatten)]
        fleet: node::Fleet,
    },
}

/// Client credentials (`connect`, `forward`), for servers that check them
/// (`listen --credentials`).
#[derive(clap::Args, Debug, Clone)]
struct ClientAuth {
    /// This client's credential: the file's bytes (one trailing newline
    /// trimmed, 1 to 512 bytes), e.g. a `name:secret` line of the server's
    /// `--credentials` file. Sent encrypted, only after the server proved
    /// its key: requires --server-key.
    #[arg(long, value_name = "FILE")]
    credential_file: Option<PathBuf>,
    /// A token from an earlier session, presented instead of the credential
    /// while the file is not empty. `connect` writes the token the server
    /// grants here (mode 0600) and, if the server refuses the token, tries
    /// --credential-file once. Requires --server-key.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// Credential checks (`listen`, `serve-forward`).
#[derive(clap::Args, Debug, Clone)]
struct ServerAuth {
    /// Accept only clients presenting a credential of FILE: one `name:secret`
    /// per line (a line without `:` is its own name), `#` comments; or a
    /// token this server granted to a name still in the file. Others are
    /// refused (code 5). Requires --key. Keep the file private (mode 0600).
    #[arg(long, value_name = "FILE")]
    credentials: Option<PathBuf>,
    /// With --credentials: seconds a token granted to an accepted client
    /// stays valid (it presents it with --token-file instead of its
    /// credential); 0: grant none.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 86_400,
        requires = "credentials"
    )]
    token_lifetime: u64,
}

/// How long the server keeps a session whose client is gone.
#[derive(clap::Args, Debug, Clone, Copy)]
struct ResumeTimeout {
    /// Seconds a session without a connection is kept for its client to
    /// resume (told to clients, which keep reconnecting for that long).
    /// Default: the library's (minutes, for mobile outages); hours are fine.
    #[arg(long = "resume-timeout", value_name = "SECS", value_parser = parse_secs)]
    secs: Option<Duration>,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 || v > 1e9 {
        return Err(format!("{s:?}: expected seconds > 0"));
    }
    Ok(Duration::from_micros((v * 1e6) as u64))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::init(cli.verbose);
    let r = match &cli.command {
        Command::Keygen { out } => keygen(out),
        Command::Pubkey { keyfile } => pubkey(keyfile),
        Command::Listen {
            addr,
            key,
            sessions,
            resume,
            idle,
            auth,
            fleet,
        } => listen(
            &cli.opts(*idle, None),
            addr,
            key.as_ref(),
            *sessions,
            *resume,
            auth,
            fleet,
        ),
        Command::Connect {
            addr,
            server_key,
            attempts,
            idle,
            auth,
        } => connect(
            &cli.opts(*idle, Some(*attempts)),
            addr,
            server_key.as_deref(),
            auth,
        ),
        Command::Forward {
            local,
            remote,
            server_key,
            attempts,
            idle,
            auth,
        } => forward(
            &cli.opts(*idle, Some(*attempts)),
            local,
            remote,
            server_key.as_deref(),
            auth,
        ),
        Command::ServeForward {
            addr,
            target,
            key,
            resume,
            idle,
            auth,
            fleet,
        } => serve_forward(
            &cli.opts(*idle, None),
            addr,
            target,
            key.as_ref(),
            *resume,
            auth,
            fleet,
        ),
    };
    // A server's node summary (`node`) is its last line, whatever the
    // exit path (nothing when no server listened).
    match r {
        Ok(()) => {
            log::end_status();
            node::print_summary();
            ExitCode::SUCCESS
        }
        Err(e) => {
            let_the_interrupt_finish();
            log::end_status();
            log::say(format!("relink: {e}"));
            node::print_summary();
            ExitCode::from(exit_status(&e))
        }
    }
}

fn config(cli: &Opts) -> Config {
    let idle = cli.idle_ms.max(3);
    Config {
        idle_timeout: Duration::from_millis(idle),
        keepalive_interval: Duration::from_millis(idle / 3),
        handshake_timeout: Duration::from_millis(idle.min(10_000)),
        rekey_after_bytes: cli
            .rekey_after_bytes
            .unwrap_or(Config::default().rekey_after_bytes),
        ..Config::default()
    }
}

fn backoff(cli: &Opts) -> Backoff {
    Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_secs(2),
        // 0 = no limit, like every count flag.
        max_attempts: (cli.max_attempts > 0).then_some(cli.max_attempts),
    }
}

fn server_config(cli: &Opts, key: Option<&PathBuf>, resume: ResumeTimeout) -> io::Result<Config> {
    let mut cfg = config(cli);
    if let Some(t) = resume.secs {
        cfg.resume_timeout = t;
    }
    if let Some(path) = key {
        cfg.server_static = Some(read_key(path)?);
    }
    Ok(cfg)
}

/// After `listening on ADDR`: the public key clients pin, or a warning
/// that the server is anonymous.
fn announce_server_key(cfg: &Config) {
    match &cfg.server_static {
        Some(k) => log::say(format!(
            "relink: server public key {} (clients pin it with --server-key)",
            hex(&k.public_key())
        )),
        None => log::say(
            "relink: warning: no --key: the server is anonymous; sessions are open to a man in the middle",
        ),
    }
}

/// The client-side counterpart of `announce_server_key`.
fn warn_if_unpinned(cfg: &Config) {
    if cfg.pinned_server_key.is_none() {
        log::say(
            "relink: warning: no --server-key: the server is not authenticated; the session is open to a man in the middle",
        );
    }
}

/// A listener's decision on clients (`--credentials`).
type Authenticate = Box<dyn Fn(&ClientCredential<'_>) -> Decision + Send + Sync>;

/// `--credentials FILE` and `--token-lifetime` of a server with key file
/// `key` (required): the decision callback (`None` without the flag) and a
/// warning to print (after `listening on`) when others may read the file.
fn server_auth(
    cli: &Opts,
    auth: &ServerAuth,
    key: Option<&PathBuf>,
) -> io::Result<(Option<Authenticate>, Option<String>)> {
    let Some(path) = &auth.credentials else {
        return Ok((None, None));
    };
    if key.is_none() {
        return Err(coded(
            status::USAGE,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "--credentials needs --key: without a server key clients cannot authenticate the server, and a man in the middle would read their credentials",
            ),
        ));
    }
    let (accepted, warning) = Accepted::load(path)?;
    let lifetime = (auth.token_lifetime > 0).then(|| Duration::from_secs(auth.token_lifetime));
    let f: Authenticate = Box::new(credentials::authenticator(accepted, lifetime, cli.verbose));
    Ok((Some(f), warning.map(|w| format!("relink: warning: {w}"))))
}

/// `--credential-file` and `--token-file` of a client pinning
/// `server_key` (required).
fn client_auth(auth: &ClientAuth, server_key: Option<&str>) -> io::Result<ClientCredentials> {
    let given = auth.credential_file.is_some() || auth.token_file.is_some();
    if given && server_key.is_none() {
        return Err(coded(
            status::USAGE,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "--credential-file and --token-file need --server-key: the credential is sent only to a server that proved its key",
            ),
        ));
    }
    ClientCredentials::load(auth.credential_file.as_deref(), auth.token_file.as_deref())
}

/// Bind a relink listener on `addr` (a listen address, see `listen_addr`)
/// with the progress callback `progress` and the decision on clients
/// `auth`; the error names the address.
fn bind_logged(
    cfg: Config,
    addr: &str,
    progress: impl Fn(&relink::blocking::Progress) + Send + Sync + 'static,
    auth: Option<Authenticate>,
    proxy_protocol: bool,
) -> io::Result<relink::blocking::Listener> {
    let mut builder = ListenerBuilder::new(cfg)
        .on_progress(progress)
        .proxy_protocol(proxy_protocol);
    if let Some(f) = auth {
        builder = builder.authenticate(f);
    }
    builder
        .bind(listen_addr(addr).as_str())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Check a `HOST:PORT` argument (a name or address, IPv6 in brackets);
/// `:PORT` (no host) only where `allow_no_host`. A bad one is a usage
/// error (exit 2) naming the value.
fn host_port(s: &str, allow_no_host: bool) -> Result<String, String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("'{s}' has no port: expected HOST:PORT"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("'{port}' in '{s}' is not a port number (0-65535)"));
    }
    if host.is_empty() && !allow_no_host {
        return Err(format!("'{s}' has no host: expected HOST:PORT"));
    }
    Ok(s.to_string())
}

/// An address to listen on: `HOST:PORT` or `:PORT`.
fn listen_arg(s: &str) -> Result<String, String> {
    host_port(s, true)
}

/// An address to connect to: `HOST:PORT`.
fn peer_arg(s: &str) -> Result<String, String> {
    host_port(s, false)
}

/// A listen address: `:PORT` means every interface (`0.0.0.0:PORT`).
fn listen_addr(addr: &str) -> String {
    match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    }
}

fn client_config(cli: &Opts, server_key: Option<&str>) -> io::Result<Config> {
    let mut cfg = config(cli);
    if let Some(k) = server_key {
        cfg.pinned_server_key = Some(unhex32(k).map_err(|e| {
            coded(
                status::USAGE,
                io::Error::new(e.kind(), format!("--server-key: {e}")),
            )
        })?);
    }
    Ok(cfg)
}

/// Where `receive` failed.
enum RecvError {
    /// The session failed (its cause).
    Session(io::Error),
    /// Writing to stdout failed.
    Output(io::Error),
}

/// Copy one session to `out` until the client closed, then close cleanly;
/// what arrives is counted in `counts`, and `track` learns when the client
/// was last heard.
fn receive(
    session: &ServerStream,
    out: &mut impl Write,
    counts: &Counts,
    track: &Track,
) -> Result<u64, RecvError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match (&mut &*session).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RecvError::Session(e)),
        };
        // Flushed at once: what was delivered is out even if the session
        // fails later.
        out.write_all(&buf[..n])
            .and_then(|()| out.flush())
            .map_err(RecvError::Output)?;
        total += n as u64;
        counts.add_received(n);
        if let Some(ago) = session.last_received() {
            track.contact_ago(ago);
        }
    }
    out.flush().map_err(RecvError::Output)?;
    session.close().map_err(RecvError::Session)?;
    Ok(total)
}

/// The client's address for logs (of the transport that carried the
/// session last).
fn peer_of(session: &ServerStream) -> String {
    session
        .peer_addr()
        .map_or_else(|| "an unknown address".to_string(), |a| a.to_string())
}

/// `listen --drain-timeout`: what the first SIGTERM runs (on a thread of
/// its own): drain `listener` (once bound, into `slot`), then print the
/// summary and exit: 0 when every session ended cleanly, 4 when some were
/// aborted at the deadline or failed (`failed`).
fn listen_drain(
    timeout: Option<Duration>,
    slot: &Arc<std::sync::OnceLock<Arc<relink::blocking::Listener>>>,
    failed: &Arc<std::sync::atomic::AtomicU64>,
) -> Option<Box<dyn FnOnce() + Send>> {
    let (slot, failed) = (slot.clone(), failed.clone());
    let timeout = timeout?;
    Some(Box::new(move || {
        let aborted = match slot.get() {
            Some(l) => {
                let (a, b, c, d) = (l.clone(), l.clone(), l.clone(), l.clone());
                node::drain(
                    &node::Drainable {
                        drain: Box::new(move || a.drain()),
                        active: Box::new(move || b.active_session_count()),
                        abort_all: Box::new(move |code| c.abort_all(code)),
                        unconfirmed: Box::new(move || d.unconfirmed_sessions()),
                    },
                    timeout,
                    "SIGTERM",
                )
            }
            None => 0,
        };
        log::end_status();
        node::print_summary();
        let clean = aborted == 0 && failed.load(std::sync::atomic::Ordering::SeqCst) == 0;
        std::process::exit(if clean {
            0
        } else {
            status::SESSION_LOST.into()
        });
    }))
}

#[allow(clippy::too_many_arguments)]
fn listen(
    cli: &Opts,
    addr: &str,
    key: Option<&PathBuf>,
    sessions: u64,
    resume: ResumeTimeout,
    auth: &ServerAuth,
    fleet: &node::Fleet,
) -> io::Result<()> {
    let slot = Arc::new(std::sync::OnceLock::new());
    let failed_total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let interrupts =
        Interrupts::install_draining(listen_drain(fleet.drain_timeout, &slot, &failed_total))?;
    let mut cfg = server_config(cli, key, resume)?;
    fleet.configure(&mut cfg);
    let (authenticate, warning) = server_auth(cli, auth, key)?;
    let track = Arc::new(Track::default());
    track.set_verbose(cli.verbose);
    let listener = Arc::new(bind_logged(
        cfg.clone(),
        addr,
        progress::events(track.clone(), None),
        authenticate,
        fleet.proxy_protocol,
    )?);
    let _ = slot.set(listener.clone());
    let (l, server_id) = (listener.clone(), fleet.server_id);
    node::set_summary(move || {
        node::summary(
            server_id,
            &l.stats(),
            node::ABORTED_AT_DRAIN.load(std::sync::atomic::Ordering::SeqCst),
        )
    });
    log::say(format!("listening on {}", listener.local_addr()));
    announce_server_key(&cfg);
    if let Some(w) = warning {
        log::say(w);
    }
    let (mut served, mut failed) = (0u64, 0u64);
    let stdout = io::stdout();
    let counts = Counts::default();
    thread::scope(|scope| {
        let _meter = cli.verbose.then(|| {
            progress::meter(scope, &counts, &track, || {
                let st = listener.stats();
                Sample {
                    reconnects: st.resumes,
                    resumes: st.resumes,
                    acked: 0,
                    // The session being served tells `track` (`receive`).
                    last_received: None,
                }
            })
        });
        while sessions == 0 || served < sessions {
            let session = listener.accept()?;
            let sid = session.session_id().0;
            let conn_id = session.conn_id();
            track.register(sid, conn_id, session.peer_addr());
            // The driver logged `session established` (role=server) with
            // the same id and peer.
            let id = conn_id.map_or_else(|| format!("#{sid}"), progress::session_hex);
            let registered = interrupts.register(session.abort_handle());
            let start = Instant::now();
            let r = receive(&session, &mut stdout.lock(), &counts, &track);
            served += 1;
            // An error caused by the interrupt's own abort: the signal thread
            // ends the process once the client was told (the listener must
            // stay up meanwhile).
            if r.is_err() {
                let_the_interrupt_finish();
            }
            let peer = peer_of(&session);
            match r {
                Ok(n) => {
                    throughput(&id, "received", n, start);
                    tracing::info!(session = %id, "session stats: key epoch {}", track.epoch(sid));
                }
                Err(RecvError::Output(e)) => {
                    // Nobody takes the data any more (e.g. `| head`): tell the
                    // client now instead of letting it retry into the void.
                    session.abort(AbortCode::CANNOT_RECEIVE);
                    let acked = session.wait_closed(std::time::Duration::from_secs(1));
                    drop(registered);
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "writing the session from {peer} to stdout: {e}; session aborted{}",
                            if acked { "" } else { " (not acknowledged yet)" }
                        ),
                    ));
                }
                Err(RecvError::Session(e)) => {
                    // One client's failure ends its session, not the listener.
                    failed += 1;
                    failed_total.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tracing::error!(session = %id, %peer, "session failed: {e}");
                }
            }
        }
        Ok(())
    })?;
    // `main` prints the node summary, after the error if there is one.
    log::end_status();
    if failed > 0 {
        return Err(coded(
            status::SESSION_LOST,
            io::Error::other(format!("{failed} of {served} sessions failed")),
        ));
    }
    Ok(())
}

/// The message of a failed connect to `addr`: the library's own when it
/// already names the address (said once), else prefixed with it.
fn connect_error(addr: &str, e: &io::Error) -> String {
    let msg = e.to_string();
    let msg = msg.strip_prefix("relink: ").unwrap_or(&msg);
    if msg.contains(addr) {
        msg.to_string()
    } else {
        format!("cannot connect to {addr}: {msg}")
    }
}

fn connect(cli: &Opts, addr: &str, server_key: Option<&str>, auth: &ClientAuth) -> io::Result<()> {
    let start = Instant::now();
    let interrupts = Interrupts::install()?;
    let creds = client_auth(auth, server_key)?;
    let mut cfg = client_config(cli, server_key)?;
    cfg.credential = creds.first.clone();
    warn_if_unpinned(&cfg);
    let track = Arc::new(Track::default());
    track.set_verbose(cli.verbose);
    let open = |cfg: Config| {
        ClientBuilder::new(cfg)
            .backoff(backoff(cli))
            .wait_for_server(cli.wait)
            .on_progress(progress::events(track.clone(), Some(addr.to_string())))
            .connect(addr)
    };
    let client = match (open(cfg.clone()), &creds.fallback) {
        (Err(e), Some(secret))
            if matches!(
                credentials::rejection(&e),
                Some(AbortCode::TOKEN_INVALID | AbortCode::TOKEN_EXPIRED)
            ) =>
        {
            // The token is no longer good: present the credential instead,
            // in a new session (nothing was delivered in the refused one).
            log::say(format!(
                "relink: {}; trying --credential-file instead",
                connect_error(addr, &e)
            ));
            cfg.credential = Some(secret.clone());
            open(cfg)
        }
        (r, _) => r,
    }
    .map_err(|e| {
        coded(
            status::CANNOT_OPEN,
            io::Error::new(e.kind(), connect_error(addr, &e)),
        )
    })?;
    if let Some(token) = client.token() {
        if let Some(path) = &auth.token_file {
            credentials::write_token_file(path, &token)?;
        }
    }
    if cli.verbose && creds.first.is_some() {
        log::say(format!("relink: {addr} accepted the credential"));
    }
    if let (true, Some(us)) = (cli.verbose, client.stats().clock_offset_us) {
        log::say(format!(
            "relink: server clock offset {}",
            progress::offset_ms(us)
        ));
    }
    let _registered = interrupts.register(client.abort_handle());
    let counts = Counts::default();
    let sent = thread::scope(|s| -> io::Result<u64> {
        let _meter = cli.verbose.then(|| {
            progress::meter(s, &counts, &track, || {
                let st = client.stats();
                let sent = counts.sent.load(std::sync::atomic::Ordering::Relaxed);
                Sample {
                    reconnects: st.transports.saturating_sub(1),
                    resumes: st.resumes,
                    acked: sent.saturating_sub(client.unacked() as u64),
                    last_received: client.last_received(),
                }
            })
        });
        let down = s.spawn(|| -> io::Result<u64> {
            let mut out = io::stdout().lock();
            let mut buf = vec![0u8; 64 * 1024];
            let mut n = 0u64;
            loop {
                let k = match (&mut &client).read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // The server aborted or the session is lost: say so
                        // and stop now, even if stdin is still open.
                        let _ = out.flush();
                        let_the_interrupt_finish();
                        // Let the driver send what the end still owes the
                        // server (the answer to its ABORT).
                        client.wait_closed(std::time::Duration::from_millis(500));
                        log::end_status();
                        log::say(format!("relink: {addr}: {e}"));
                        std::process::exit(status::SESSION_LOST.into());
                    }
                };
                out.write_all(&buf[..k]).and_then(|()| out.flush())?;
                n += k as u64;
                counts.add_received(k);
            }
            Ok(n)
        });
        let lost = |e| coded(status::SESSION_LOST, e);
        // Errors writing to the session are its loss; reading stdin's are not.
        struct ToSession<'a, W>(&'a W, &'a Counts);
        impl<W> Write for ToSession<'_, W>
        where
            for<'w> &'w W: Write,
        {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                let n = self
                    .0
                    .write(b)
                    .map_err(|e| coded(status::SESSION_LOST, e))?;
                self.1.add_sent(n);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                self.0.flush().map_err(|e| coded(status::SESSION_LOST, e))
            }
        }
        let n = io::copy(&mut io::stdin().lock(), &mut ToSession(&client, &counts))?;
        (&client).flush().map_err(lost)?; // everything acknowledged
        client.shutdown_write().map_err(lost)?;
        down.join()
            .map_err(|_| io::Error::other("reader thread panicked"))??;
        client.close().map_err(lost)?;
        Ok(n)
    })?;
    let session = client
        .conn_id()
        .map_or_else(String::new, progress::session_hex);
    throughput(&session, "sent", sent, start);
    tracing::info!(%session, "session stats: {}", progress::client_stats_text(&client.stats()));
    Ok(())
}

fn forward(
    cli: &Opts,
    local: &str,
    remote: &str,
    server_key: Option<&str>,
    auth: &ClientAuth,
) -> io::Result<()> {
    let mut cfg = client_config(cli, server_key)?;
    // Every tunnel's session presents the same credential (the token while
    // the file holds one); tokens granted to tunnels are not stored.
    cfg.credential = client_auth(auth, server_key)?.first;
    let local_addr = listen_addr(local);
    tunnel::forward(
        tunnel::Forward {
            config: cfg.clone(),
            backoff: backoff(cli),
            wait: cli.wait,
            local: &local_addr,
            remote,
        },
        |bound| {
            log::say(format!("listening on {bound}"));
            warn_if_unpinned(&cfg);
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn serve_forward(
    cli: &Opts,
    addr: &str,
    target: &str,
    key: Option<&PathBuf>,
    resume: ResumeTimeout,
    auth: &ServerAuth,
    fleet: &node::Fleet,
) -> io::Result<()> {
    let mut cfg = server_config(cli, key, resume)?;
    fleet.configure(&mut cfg);
    let (authenticate, warning) = server_auth(cli, auth, key)?;
    let bind = listen_addr(addr);
    tunnel::serve_forward(
        tunnel::ServeForward {
            config: cfg.clone(),
            addr: &bind,
            target,
            authenticate,
            fleet: *fleet,
        },
        |bound| {
            log::say(format!("listening on {bound}"));
            announce_server_key(&cfg);
            if let Some(w) = warning {
                log::say(w);
            }
        },
    )
}
