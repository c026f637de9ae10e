//! relink: long-lived encrypted byte streams that survive broken connections.
//!
//! # Quick start
//! Most applications use a driver, which owns the sockets, the clock and
//! the reconnects: [`blocking`] (std threads, `std` feature, on by default)
//! or [`tokio`] (`tokio` feature). A stream is `Read + Write` (or
//! `AsyncRead + AsyncWrite`); broken TCP connections and resumes are
//! invisible to it.
//!
//! ```
//! # #[cfg(feature = "std")]
//! # fn main() -> std::io::Result<()> {
//! use std::io::{Read, Write};
//! use relink::blocking::{connect, Listener};
//! use relink::Config;
//!
//! let listener = Listener::bind("127.0.0.1:0", Config::default())?;
//! let addr = listener.local_addr();
//! let server = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
//!     let mut session = listener.accept()?;
//!     let mut got = Vec::new();
//!     session.read_to_end(&mut got)?;
//!     session.close()?;
//!     Ok(got)
//! });
//! let mut client = connect(addr, Config::default())?;
//! client.write_all(b"hello")?;
//! client.close()?; // clean end: everything acknowledged
//! assert_eq!(server.join().unwrap()?, b"hello");
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "std"))]
//! # fn main() {}
//! ```
//!
//! The same with tokio:
//!
//! ```
//! # #[cfg(feature = "tokio")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use relink::tokio::{ClientStream, Listener};
//! use relink::Config;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let server = Listener::bind("127.0.0.1:0", Config::default()).await?;
//! let addr = server.local_addr()?;
//! let echo = tokio::spawn(async move {
//!     let mut stream = server.accept().await?;
//!     let mut data = Vec::new();
//!     stream.read_to_end(&mut data).await?;
//!     stream.write_all(&data).await?;
//!     stream.shutdown().await
//! });
//! let mut client = ClientStream::connect(addr, Config::default()).await?;
//! client.write_all(b"hello").await?;
//! client.shutdown().await?;
//! let mut back = Vec::new();
//! client.read_to_end(&mut back).await?;
//! assert_eq!(back, b"hello");
//! echo.await??;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "tokio"))]
//! # fn main() {}
//! ```
//!
//! For your own event loop (another runtime, many cores, an embedded
//! target without `std`), drive the sans-IO core below yourself: see
//! [Run loop](#run-loop) and `examples/custom_loop.rs`.
//!
//! # The core
//! The crate is a *sans-IO* core: [`Client`], [`Endpoint`], [`Connection`]
//! (and [`Server`], which bundles the last two) are pure state machines.
//! They consume bytes received from a transport, produce bytes to write to
//! it, report events, and never touch sockets, clocks or OS randomness: the
//! caller passes the current monotonic [`Instant`] into every call, an
//! optional [`WallClock`] in the [`Config`] for freshness, and a `rand_core`
//! CSPRNG to the constructor.
//!
//! # Shape
//! - [`Client`]: one session over a succession of transports.
//! - [`Endpoint`]: the server's front door. It accepts transports, runs
//!   new-session handshakes, answers what needs no session, and routes a
//!   resume request to the session that owns its connection id. It holds
//!   only a routing table and handshakes in progress.
//! - [`Connection`]: one server-side session (stream, keys, resume checks,
//!   timers, events). The endpoint hands it to the driver when the
//!   handshake completes; the driver owns it and runs it on any thread,
//!   independently of every other session (quinn-proto's split).
//! - [`Server`]: an endpoint plus its connections in one value, for drivers
//!   that run everything on one thread (tests, custom loops).
//!
//! # Run loop
//! A driver repeats, for each transport:
//! 1. feed received bytes with `handle_input` (it returns how many it took;
//!    keep the rest and offer it again after the application read data),
//! 2. write what `poll_transmit` fills into its buffer until it returns 0,
//! 3. drain `poll_event` (and, for a [`Connection`], `poll_endpoint_event`
//!    into [`Endpoint::handle_event`]),
//! 4. sleep until `poll_timeout` (or new input) and then call `handle_timeout`.
//!
//! On the server a transport starts at the [`Endpoint`]; once
//! [`Endpoint::handle_input`] returns [`Dispatch::NewConnection`] or
//! [`Dispatch::Resume`] its bytes go to the session's [`Connection`]. Each
//! type's documentation lists its calls by kind and in order.
//!
//! When a transport dies the driver says so (`transport_lost`); the client
//! then opens a new transport and calls [`Client::new_transport`], and the
//! session resumes: both sides resend exactly the bytes the other is missing.
//!
//! # Timers
//! Each [`Connection`] keeps a fixed table of deadlines, one per
//! [`timer::Timer`] kind; its `poll_timeout` is the earliest. The
//! [`Endpoint`] and the [`Server`] bundle keep ordered indexes of deadlines,
//! so their `poll_timeout` is O(log n) and `handle_timeout` touches only
//! what is due.
//!
//! # Errors and panics
//! Bad input from the network never panics: it is a typed [`Error`] (and
//! usually costs only its transport). Misuse of the API (a transport id
//! the state machine does not know, a buffer below
//! [`MIN_TRANSMIT_BUFFER`]) is an `Err` too. A panic in this crate is a
//! bug; please report it.
//!
//! The wire protocol is specified in `docs/PROTOCOL.md`.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod admission;
mod client;
mod config;
pub mod connection;
mod credential;
pub mod driver;
pub mod endpoint;
mod error;
mod event;
mod handshake;
mod ids;
mod keys;
mod rekey;
mod resume;
pub mod routing;
pub mod server;
mod stream;
pub mod time;
pub mod timer;
mod token;
pub mod wire;

#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub mod blocking;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;

pub use admission::COOKIE_PERIOD;
pub use client::Client;
pub use config::Config;
pub use connection::{Connection, EndpointEvent, Rejection};
pub use credential::{ClientCredential, Credential};
pub use driver::Backoff;
pub use endpoint::{Dispatch, Endpoint, HELLO_MAX_AHEAD};
pub use error::{Error, ProtocolError};
pub use event::{ByteRange, CloseReason, Event, ServerEvent};
pub use ids::{SessionId, TransportId};
/// The fuzzing build's shortcuts (`--cfg fuzzing`, set by `cargo fuzz`
/// only): zero tags pass, identity stream cipher, cheap Diffie-Hellman.
#[cfg(fuzzing)]
pub use keys::fuzzing;
pub use keys::StaticKeypair;
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use rekey::KeyEpochs;
pub use routing::{RoutableId, RoutableIdError};
pub use server::Server;
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub use time::SystemWallClock;
pub use time::{Duration, Instant, UnixTime, WallClock};
pub use token::{TokenGrant, MAX_TOKEN_IDENTITY};
pub use wire::{AbortCode, HandshakeStatus, ResumeStatus};

/// The README's examples, compiled and run as doctests.
#[cfg(all(doctest, feature = "tokio"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The operating system's CSPRNG as the `rand_core` RNG the state machines
/// take (`std` feature). It panics only if the OS cannot provide randomness
/// at all, where no secure session is possible anyway.
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub type OsRng = rand_core::UnwrapErr<getrandom::SysRng>;

/// A fresh [`OsRng`].
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub fn os_rng() -> OsRng {
    rand_core::UnwrapErr(getrandom::SysRng)
}

/// The smallest buffer `poll_transmit` accepts: room for the largest
/// handshake or resume message and the largest control frame (a
/// CREDENTIAL or ACCEPT frame, up to 540 bytes with header and tag).
pub const MIN_TRANSMIT_BUFFER: usize = 1024;
