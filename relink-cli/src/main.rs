//! `relink`: command-line tool over the blocking driver.
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
//! `:PORT` means every interface. `-v` logs reconnects, resends and
//! throughput on stderr. Exit statuses: see `EXIT_STATUS_HELP`.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use clap::{Parser, Subcommand};
use relink::blocking::{
    close_reason_text, splice, AbortHandle, ClientBuilder, ListenerBuilder, Progress, ServerStream,
};
use relink::{AbortCode, Backoff, Config, Duration, Event, ServerEvent, StaticKeypair};

/// Long-lived encrypted byte streams that survive broken connections.
#[derive(Parser, Debug)]
#[command(name = "relink", version, about, long_about = None, after_help = EXIT_STATUS_HELP)]
struct Cli {
    /// Progress and diagnostics on stderr: connects, reconnects, resumes,
    /// resend ranges, throughput.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Before the subcommand, as older versions took it (hidden): the
    /// subcommand's own `--idle-ms` wins.
    #[arg(long, hide = true)]
    idle_ms: Option<u64>,
    /// Before the subcommand, as older versions took it (hidden): the
    /// subcommand's own `--max-attempts` wins.
    #[arg(long, hide = true)]
    max_attempts: Option<u32>,
    #[command(subcommand)]
    command: Command,
}

/// Exit statuses.
mod status {
    /// Anything else: a key file, an address to bind, stdin or stdout.
    pub const FAILURE: u8 = 1;
    /// Bad flags or arguments (clap exits with 2 too).
    pub const USAGE: u8 = 2;
    /// The session could not be opened: attempts exhausted, handshake
    /// failed (e.g. not the pinned server key).
    pub const CANNOT_OPEN: u8 = 3;
    /// The session was lost once open: expired, aborted or reset by the
    /// peer (`listen`: a session failed).
    pub const SESSION_LOST: u8 = 4;
    /// SIGINT or SIGTERM: the sessions were aborted.
    pub const INTERRUPTED: i32 = 130;
}

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    clean end (connect: all data acknowledged, session closed)
  1    other failure: a key file, an address to bind, stdin or stdout
  2    usage error: bad flags or arguments (e.g. a malformed --server-key)
  3    the session could not be opened: connect attempts exhausted, handshake
       failed (e.g. the server does not have the pinned key)
  4    the session was lost once open: expired, aborted or reset by the peer;
       connect exits at once, even while stdin is still open
       (listen: a session failed)
  130  interrupted (SIGINT, SIGTERM): the sessions were aborted first";

/// An error with its exit status (see `status`); a plain `io::Error` exits
/// with `status::FAILURE`.
#[derive(Debug)]
struct Coded {
    code: u8,
    msg: String,
}

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Coded {}

fn coded(code: u8, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        Coded {
            code,
            msg: e.to_string(),
        },
    )
}

fn exit_status(e: &io::Error) -> u8 {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<Coded>())
        .map_or(status::FAILURE, |c| c.code)
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
}

/// The settings the commands share, from the flags.
struct Opts {
    verbose: bool,
    idle_ms: u64,
    max_attempts: u32,
}

impl Cli {
    fn opts(&self, idle: Idle, attempts: Option<Attempts>) -> Opts {
        Opts {
            verbose: self.verbose,
            idle_ms: idle.ms.or(self.idle_ms).unwrap_or(15_000),
            max_attempts: attempts
                .and_then(|a| a.n)
                .or(self.max_attempts)
                .unwrap_or(30),
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
    },
    /// Send stdin to the server at ADDR until EOF, close cleanly once
    /// everything is acknowledged and exit 0; the server's data goes to
    /// stdout. Exits at once (status 4) when the session is lost, even while
    /// stdin is still open.
    Connect {
        /// Server address, e.g. example.com:7000.
        addr: String,
        /// The server's public key (64 hex digits from `relink keygen`) to
        /// pin; without it the handshake is open to a man in the middle.
        #[arg(long)]
        server_key: Option<String>,
        #[command(flatten)]
        attempts: Attempts,
        #[command(flatten)]
        idle: Idle,
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
        local: String,
        /// The relink server (`relink serve-forward`) address.
        remote: String,
        /// The server's public key to pin (hex).
        #[arg(long)]
        server_key: Option<String>,
        #[command(flatten)]
        attempts: Attempts,
        #[command(flatten)]
        idle: Idle,
    },
    /// Server side of a tunnel: accept relink sessions on ADDR and connect
    /// each to TARGET by TCP.
    ServeForward {
        /// Address to bind for relink clients, e.g. 0.0.0.0:7000; `:7000` =
        /// every interface.
        addr: String,
        /// TCP service every session is connected to, e.g. 127.0.0.1:22.
        target: String,
        /// Server key file (from `relink keygen`); its public key is printed
        /// on stderr at start.
        #[arg(long)]
        key: Option<PathBuf>,
        #[command(flatten)]
        resume: ResumeTimeout,
        #[command(flatten)]
        idle: Idle,
    },
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
    let r = match &cli.command {
        Command::Keygen { out } => keygen(out),
        Command::Pubkey { keyfile } => pubkey(keyfile),
        Command::Listen {
            addr,
            key,
            sessions,
            resume,
            idle,
        } => listen(
            &cli.opts(*idle, None),
            addr,
            key.as_ref(),
            *sessions,
            *resume,
        ),
        Command::Connect {
            addr,
            server_key,
            attempts,
            idle,
        } => connect(
            &cli.opts(*idle, Some(*attempts)),
            addr,
            server_key.as_deref(),
        ),
        Command::Forward {
            local,
            remote,
            server_key,
            attempts,
            idle,
        } => forward(
            &cli.opts(*idle, Some(*attempts)),
            local,
            remote,
            server_key.as_deref(),
        ),
        Command::ServeForward {
            addr,
            target,
            key,
            resume,
            idle,
        } => serve_forward(&cli.opts(*idle, None), addr, target, key.as_ref(), *resume),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let_the_interrupt_finish();
            eprintln!("relink: {e}");
            ExitCode::from(exit_status(&e))
        }
    }
}

/// Set once SIGINT or SIGTERM arrived: the signal thread aborts the
/// sessions and exits the process.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Errors caused by the interrupt's own abort must not end the process
/// before the peers were told: leave that to the signal thread.
fn let_the_interrupt_finish() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        loop {
            thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

fn config(cli: &Opts) -> Config {
    let idle = cli.idle_ms.max(3);
    Config {
        idle_timeout: Duration::from_millis(idle),
        keepalive_interval: Duration::from_millis(idle / 3),
        handshake_timeout: Duration::from_millis(idle.min(10_000)),
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> io::Result<[u8; 32]> {
    let s = s.trim();
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, "expected 64 hex digits");
    if s.len() != 64 || !s.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn keygen(out: &PathBuf) -> io::Result<()> {
    let key = StaticKeypair::generate(&mut relink::os_rng());
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(out)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", out.display())))?;
    writeln!(f, "{}", hex(&key.secret_bytes()))?;
    println!("{}", hex(&key.public_key()));
    eprintln!(
        "wrote {}; pin the public key above with `relink connect --server-key`",
        out.display()
    );
    Ok(())
}

/// Read a key file written by `keygen`.
fn read_key(path: &Path) -> io::Result<StaticKeypair> {
    let text = fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let secret = unhex32(&text)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: bad key file: {e}", path.display())))?;
    Ok(StaticKeypair::from_secret_bytes(secret))
}

fn pubkey(path: &Path) -> io::Result<()> {
    println!("{}", hex(&read_key(path)?.public_key()));
    Ok(())
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
        Some(k) => eprintln!(
            "relink: server public key {} (clients pin it with --server-key)",
            hex(&k.public_key())
        ),
        None => eprintln!(
            "relink: warning: no --key: the server is anonymous; sessions are open to a man in the middle"
        ),
    }
}

/// The client-side counterpart of `announce_server_key`.
fn warn_if_unpinned(cfg: &Config) {
    if cfg.pinned_server_key.is_none() {
        eprintln!(
            "relink: warning: no --server-key: the server is not authenticated; the session is open to a man in the middle"
        );
    }
}

/// Bind a relink listener on `addr` (a listen address, see `listen_addr`);
/// the error names the address.
fn bind_relink(cli: &Opts, cfg: Config, addr: &str) -> io::Result<relink::blocking::Listener> {
    ListenerBuilder::new(cfg)
        .on_progress(logger(cli.verbose))
        .bind(listen_addr(addr).as_str())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
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

/// A stderr logger for `-v`.
fn logger(verbose: bool) -> impl Fn(&Progress) + Send + Sync + 'static {
    move |p: &Progress| {
        if !verbose {
            return;
        }
        match p {
            Progress::Connecting { attempt, delay } if *attempt > 0 => {
                eprintln!("relink: connect attempt {attempt} after {delay:?}")
            }
            Progress::ConnectFailed { attempt, error } => {
                eprintln!("relink: connect attempt {attempt} failed: {error}")
            }
            Progress::Client(Event::HandshakeDone { conn_id }) => {
                eprintln!("relink: session {conn_id:016x} established")
            }
            Progress::Client(Event::Resumed { counter }) => {
                eprintln!("relink: resumed (transport #{counter})")
            }
            Progress::Client(Event::ResendRange { start, end }) => {
                eprintln!("relink: resending [{start}, {end}) ({} bytes)", end - start)
            }
            Progress::Client(Event::TransportLost { error }) => match error {
                Some(e) => eprintln!("relink: transport lost: {e}"),
                None => eprintln!("relink: transport lost"),
            },
            Progress::Client(Event::Closed { reason }) => {
                eprintln!("relink: session closed: {}", close_reason_text(reason))
            }
            Progress::Server(ServerEvent::HandshakeDone { session, .. }) => {
                eprintln!("relink: new session {}", session.0)
            }
            Progress::Server(ServerEvent::Resumed {
                session, counter, ..
            }) => eprintln!("relink: session {} resumed (#{counter})", session.0),
            Progress::Server(ServerEvent::ResendRange {
                session,
                start,
                end,
            }) => eprintln!(
                "relink: session {} resending [{start}, {end}) ({} bytes)",
                session.0,
                end - start
            ),
            Progress::Server(ServerEvent::CloseTransport { error: Some(e), .. }) => {
                eprintln!("relink: transport closed: {e}")
            }
            Progress::Server(ServerEvent::Closed { session, reason }) => eprintln!(
                "relink: session {} closed: {}",
                session.0,
                close_reason_text(reason)
            ),
            Progress::Server(ServerEvent::SessionExpired { session }) => {
                eprintln!("relink: session {} expired", session.0)
            }
            _ => {}
        }
    }
}

fn throughput(verbose: bool, what: &str, bytes: u64, start: Instant) {
    if verbose {
        let s = start.elapsed().as_secs_f64().max(1e-6);
        eprintln!(
            "relink: {what} {bytes} bytes in {s:.2} s ({:.1} MiB/s)",
            bytes as f64 / s / 1_048_576.0
        );
    }
}

/// Sessions to abort when SIGINT or SIGTERM arrives: the signal thread
/// aborts each with `INTERRUPTED`, waits (at most 0.8 s in all) for the
/// peers to acknowledge, and exits with status 130.
#[derive(Clone, Default)]
struct Interrupts(Arc<Mutex<(u64, HashMap<u64, AbortHandle>)>>);

/// Unregisters its session when dropped.
struct Registered(Interrupts, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.0 .0).1.remove(&self.1);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Interrupts {
    /// Take over SIGINT and SIGTERM (installed before this returns).
    fn install() -> io::Result<Interrupts> {
        let me = Interrupts::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        #[cfg(unix)]
        let (mut int, mut term) = {
            use tokio::signal::unix::{signal, SignalKind};
            let _guard = rt.enter();
            (
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            )
        };
        let reg = me.clone();
        thread::Builder::new()
            .name("relink-signals".into())
            .spawn(move || {
                #[cfg(unix)]
                let which = rt.block_on(async {
                    tokio::select! {
                        _ = int.recv() => "SIGINT",
                        _ = term.recv() => "SIGTERM",
                    }
                });
                #[cfg(not(unix))]
                let which = rt.block_on(async {
                    let _ = tokio::signal::ctrl_c().await;
                    "Ctrl-C"
                });
                INTERRUPTED.store(true, Ordering::SeqCst);
                let handles: Vec<AbortHandle> = lock(&reg.0).1.values().cloned().collect();
                for h in &handles {
                    h.abort(AbortCode::INTERRUPTED);
                }
                let end = Instant::now() + std::time::Duration::from_millis(800);
                let mut acked = 0;
                for h in &handles {
                    if h.wait_closed(end.saturating_duration_since(Instant::now())) {
                        acked += 1;
                    }
                }
                eprintln!(
                    "relink: {which}: aborted {} session(s) ({acked} acknowledged by the peer)",
                    handles.len()
                );
                std::process::exit(status::INTERRUPTED);
            })?;
        Ok(me)
    }

    fn register(&self, h: AbortHandle) -> Registered {
        let mut g = lock(&self.0);
        g.0 += 1;
        let id = g.0;
        g.1.insert(id, h);
        Registered(self.clone(), id)
    }
}

/// Where `receive` failed.
enum RecvError {
    /// The session failed (its cause).
    Session(io::Error),
    /// Writing to stdout failed.
    Output(io::Error),
}

/// Copy one session to `out` until the client closed, then close cleanly.
fn receive(session: &ServerStream, out: &mut impl Write) -> Result<u64, RecvError> {
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

fn listen(
    cli: &Opts,
    addr: &str,
    key: Option<&PathBuf>,
    sessions: u64,
    resume: ResumeTimeout,
) -> io::Result<()> {
    let interrupts = Interrupts::install()?;
    let cfg = server_config(cli, key, resume)?;
    let listener = bind_relink(cli, cfg.clone(), addr)?;
    eprintln!("listening on {}", listener.local_addr());
    announce_server_key(&cfg);
    let (mut served, mut failed) = (0u64, 0u64);
    let stdout = io::stdout();
    while sessions == 0 || served < sessions {
        let session = listener.accept()?;
        let registered = interrupts.register(session.abort_handle());
        let start = Instant::now();
        let r = receive(&session, &mut stdout.lock());
        served += 1;
        // An error caused by the interrupt's own abort: the signal thread
        // ends the process once the client was told (the listener must
        // stay up meanwhile).
        if r.is_err() {
            let_the_interrupt_finish();
        }
        let peer = peer_of(&session);
        match r {
            Ok(n) => throughput(cli.verbose, "received", n, start),
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
                eprintln!("relink: session from {peer} failed: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(coded(
            status::SESSION_LOST,
            io::Error::other(format!("{failed} of {served} sessions failed")),
        ));
    }
    Ok(())
}

fn connect(cli: &Opts, addr: &str, server_key: Option<&str>) -> io::Result<()> {
    let start = Instant::now();
    let interrupts = Interrupts::install()?;
    let cfg = client_config(cli, server_key)?;
    warn_if_unpinned(&cfg);
    let client = ClientBuilder::new(cfg)
        .backoff(backoff(cli))
        .on_progress(logger(cli.verbose))
        .connect(addr)
        .map_err(|e| {
            coded(
                status::CANNOT_OPEN,
                io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")),
            )
        })?;
    let _registered = interrupts.register(client.abort_handle());
    let sent = thread::scope(|s| -> io::Result<u64> {
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
                        eprintln!("relink: {addr}: {e}");
                        std::process::exit(status::SESSION_LOST.into());
                    }
                };
                out.write_all(&buf[..k]).and_then(|()| out.flush())?;
                n += k as u64;
            }
            Ok(n)
        });
        let lost = |e| coded(status::SESSION_LOST, e);
        // Errors writing to the session are its loss; reading stdin's are not.
        struct ToSession<'a, W>(&'a W);
        impl<W> Write for ToSession<'_, W>
        where
            for<'w> &'w W: Write,
        {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.write(b).map_err(|e| coded(status::SESSION_LOST, e))
            }
            fn flush(&mut self) -> io::Result<()> {
                self.0.flush().map_err(|e| coded(status::SESSION_LOST, e))
            }
        }
        let n = io::copy(&mut io::stdin().lock(), &mut ToSession(&client))?;
        (&client).flush().map_err(lost)?; // everything acknowledged
        client.shutdown_write().map_err(lost)?;
        down.join()
            .map_err(|_| io::Error::other("reader thread panicked"))??;
        Ok(n)
    })?;
    client.close().map_err(|e| coded(status::SESSION_LOST, e))?;
    throughput(cli.verbose, "sent", sent, start);
    if cli.verbose {
        eprintln!("relink: {:?}", client.stats());
    }
    Ok(())
}

fn forward(cli: &Opts, local: &str, remote: &str, server_key: Option<&str>) -> io::Result<()> {
    let cfg = client_config(cli, server_key)?;
    let interrupts = Interrupts::install()?;
    let listener = TcpListener::bind(listen_addr(local).as_str())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {local}: {e}")))?;
    eprintln!("listening on {}", listener.local_addr()?);
    warn_if_unpinned(&cfg);
    let remote_name = remote.to_string();
    let remote: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(remote)
        .map_err(|e| io::Error::new(e.kind(), format!("{remote_name}: {e}")))?
        .collect();
    let remote = Arc::new(remote);
    let verbose = cli.verbose;
    let backoff = backoff(cli);
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                eprintln!("relink: accept: {e}");
                continue;
            }
        };
        let (cfg, remote, remote_name, interrupts) = (
            cfg.clone(),
            remote.clone(),
            remote_name.clone(),
            interrupts.clone(),
        );
        thread::spawn(move || {
            let peer = conn
                .peer_addr()
                .map_or_else(|_| "an unknown address".to_string(), |a| a.to_string());
            let r = ClientBuilder::new(cfg)
                .backoff(backoff)
                .on_progress(logger(verbose))
                .connect(&remote[..])
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot connect to {remote_name}: {e}"))
                })
                .and_then(|session| {
                    let _registered = interrupts.register(session.abort_handle());
                    splice(&session, conn)
                });
            match r {
                Ok(s) if verbose => eprintln!("relink: connection from {peer} done: {s:?}"),
                Ok(_) => {}
                Err(e) => eprintln!("relink: connection from {peer} failed: {e}"),
            }
        });
    }
    Ok(())
}

fn serve_forward(
    cli: &Opts,
    addr: &str,
    target: &str,
    key: Option<&PathBuf>,
    resume: ResumeTimeout,
) -> io::Result<()> {
    let interrupts = Interrupts::install()?;
    let cfg = server_config(cli, key, resume)?;
    let listener = bind_relink(cli, cfg.clone(), addr)?;
    eprintln!("listening on {}", listener.local_addr());
    announce_server_key(&cfg);
    let target_name = target.to_string();
    let target: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(target)
        .map_err(|e| io::Error::new(e.kind(), format!("{target}: {e}")))?
        .collect();
    let verbose = cli.verbose;
    loop {
        let session = listener.accept()?;
        let (target, target_name, interrupts) =
            (target.clone(), target_name.clone(), interrupts.clone());
        thread::spawn(move || {
            let _registered = interrupts.register(session.abort_handle());
            let r = TcpStream::connect(&target[..])
                .map_err(|e| {
                    // The client's TCP connection must not look accepted.
                    session.abort(AbortCode::TARGET_RESET);
                    io::Error::new(e.kind(), format!("connecting to {target_name}: {e}"))
                })
                .and_then(|tcp| {
                    tcp.set_nodelay(true)?;
                    splice(&session, tcp)
                });
            let peer = peer_of(&session);
            match r {
                Ok(s) if verbose => eprintln!("relink: session from {peer} done: {s:?}"),
                Ok(_) => {}
                Err(e) => eprintln!("relink: session from {peer} failed: {e}"),
            }
        });
    }
}
