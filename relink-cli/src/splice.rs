//! Splicing a relink session to a TCP connection (port forwarding), for
//! `relink forward` and `relink serve-forward`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration as StdDuration;

use relink::blocking::{ClientStream, ServerStream};
use relink::AbortCode;

const READ_CHUNK: usize = 64 * 1024;

/// A relink stream that can be spliced to a TCP connection.
pub trait Session: Send + Sync {
    /// Read like [`Read::read`].
    fn session_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Write all of `buf`.
    fn session_write_all(&self, buf: &[u8]) -> io::Result<()>;
    /// Half-close the sending side.
    fn session_shutdown_write(&self) -> io::Result<()>;
    /// Close cleanly (both sides closed, everything acknowledged).
    fn session_close(&self) -> io::Result<()>;
    /// Abort the session with `code`.
    fn session_abort(&self, code: AbortCode);
}

/// Bytes moved by [`splice`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpliceStats {
    /// Bytes from the TCP connection into the relink session.
    pub to_session: u64,
    /// Bytes from the relink session to the TCP connection.
    pub from_session: u64,
}

/// Copy bytes both ways between a relink session and a TCP connection until
/// both directions ended (EOF is passed on as a half-close each way), then
/// close the session cleanly. This is what `relink forward` and
/// `relink serve-forward` run per connection.
///
/// Resets map both ways: a reset (or any read error) of the TCP connection
/// aborts the session with [`AbortCode::TARGET_RESET`], and a session that
/// ends other than cleanly (the peer aborted, the session was lost) resets
/// the TCP connection (`SO_LINGER` 0) instead of ending it with a FIN, so a
/// truncated transfer never looks complete.
pub fn splice<S: Session>(session: &S, tcp: TcpStream) -> io::Result<SpliceStats> {
    let mut tcp_read = tcp.try_clone()?;
    let mut tcp_write = tcp;
    let stats = thread::scope(|scope| {
        let up = scope.spawn(move || -> io::Result<u64> {
            let mut buf = vec![0u8; READ_CHUNK];
            let mut total = 0u64;
            loop {
                let n = match tcp_read.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // A reset (or a broken connection): not an end of
                        // stream. The peer's TCP client must see a reset too.
                        session.session_abort(AbortCode::TARGET_RESET);
                        return Err(io::Error::new(
                            e.kind(),
                            format!("tunnelled TCP connection: {e}; session aborted"),
                        ));
                    }
                };
                if n == 0 {
                    session.session_shutdown_write()?;
                    return Ok(total);
                }
                session.session_write_all(&buf[..n])?;
                total += n as u64;
            }
        });
        let mut buf = vec![0u8; READ_CHUNK];
        let mut down = 0u64;
        let r = loop {
            match session.session_read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if let Err(e) = tcp_write.write_all(&buf[..n]) {
                        break Err(e);
                    }
                    down += n as u64;
                }
                Err(e) => break Err(e),
            }
        };
        if r.is_err() {
            // Reset, not FIN: linger 0, wake the reader without sending
            // anything (SHUT_RD), and the close below sends the RST.
            let _ = socket2::SockRef::from(&tcp_write).set_linger(Some(StdDuration::ZERO));
            let _ = tcp_write.shutdown(Shutdown::Read);
        } else {
            let _ = tcp_write.shutdown(Shutdown::Write);
        }
        let up = up
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("splice thread panicked")));
        drop(tcp_write);
        // A reset of the TCP side is the cause; the session's error that
        // follows from our own abort is not.
        if let (Err(_), Err(e)) = (&r, &up) {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        r?;
        Ok::<_, io::Error>(SpliceStats {
            to_session: up?,
            from_session: down,
        })
    })?;
    session.session_close()?;
    Ok(stats)
}

/// [`Session`] for a blocking stream type, from its `&T: Read + Write` and
/// its half-close, close and abort.
macro_rules! impl_session {
    ($ty:ty) => {
        impl Session for $ty {
            fn session_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                let mut me = self;
                me.read(buf)
            }
            fn session_write_all(&self, buf: &[u8]) -> io::Result<()> {
                let mut me = self;
                me.write_all(buf)
            }
            fn session_shutdown_write(&self) -> io::Result<()> {
                self.shutdown_write()
            }
            fn session_close(&self) -> io::Result<()> {
                self.close()
            }
            fn session_abort(&self, code: AbortCode) {
                self.abort(code)
            }
        }
    };
}

impl_session!(ClientStream);
impl_session!(ServerStream);
