//! Exit statuses (documented in `relink --help` and the README) and the
//! errors that carry one.

use std::io;

/// Anything else: a key, credential or token file, an address to bind, stdin or stdout.
pub const FAILURE: u8 = 1;
/// Bad flags or arguments (clap exits with 2 too).
pub const USAGE: u8 = 2;
/// The session could not be opened: attempts exhausted, handshake
/// failed (e.g. not the pinned server key), credential or token refused.
pub const CANNOT_OPEN: u8 = 3;
/// The session was lost once open: expired, aborted or reset by the
/// peer (`listen`: a session failed).
pub const SESSION_LOST: u8 = 4;
/// SIGINT or SIGTERM: the sessions were aborted.
pub const INTERRUPTED: i32 = 130;

/// `relink --help` ends with this.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    clean end (connect: all data acknowledged, session closed; a server
       with --drain-timeout: every session ended before the deadline)
  1    other failure: a key, credential or token file, an address to bind,
       stdin or stdout
  2    usage error: bad flags or arguments (e.g. a malformed --server-key)
  3    the session could not be opened: connect attempts exhausted, handshake
       failed (e.g. the server does not have the pinned key), or the server
       refused the credential or token
  4    the session was lost once open: expired, aborted or reset by the peer;
       connect exits at once, even while stdin is still open
       (listen: a session failed; --drain-timeout: sessions were aborted
       at the deadline)
  130  interrupted (SIGINT, SIGTERM; with --drain-timeout a second SIGTERM):
       the sessions were aborted first";

/// An error with its exit status (see `status`); a plain `io::Error` exits
/// with `FAILURE`.
#[derive(Debug)]
pub struct Coded {
    code: u8,
    msg: String,
}

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Coded {}

pub fn coded(code: u8, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        Coded {
            code,
            msg: e.to_string(),
        },
    )
}

pub fn exit_status(e: &io::Error) -> u8 {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<Coded>())
        .map_or(FAILURE, |c| c.code)
}
