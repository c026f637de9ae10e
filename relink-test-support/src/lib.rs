//! Test support for relink (not published): what the integration tests,
//! the fuzz targets, the examples and the benchmarks share.
//!
//! - [`relay`]: a fault-injecting TCP relay (cuts, stalls, bit flips) to put
//!   between a real client and server (feature `relay`, on by default).
//! - [`harness`]: the in-memory client/server harness: a simulated
//!   transport of two byte pipes, virtual clocks, seeded RNGs, pattern
//!   streams and their checks.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod harness;
#[cfg(feature = "relay")]
pub mod relay;
