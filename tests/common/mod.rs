//! The in-memory harness of the tests that declare `mod common;`: it lives
//! in the `relink-test-support` crate (`relink_test_support::harness`,
//! shared with the fuzz targets); this module re-exports it.
#![allow(unused_imports)]

pub use relink_test_support::harness::*;
