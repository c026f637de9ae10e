//! A structured target: an `arbitrary` sequence of operations drives a
//! client and a server through the shared in-memory harness
//! (`relink_test_support::harness::Net`, flush pace: every step delivers
//! what is in flight in random chunks and both applications read and check
//! every byte against the writer's pattern at its offset).
//!
//! See `relink_fuzz::structured` for the operations and the checks (the
//! stream invariant: byte-exact, no duplicate, nothing unauthenticated
//! delivered; after a final heal everything written arrived unless the
//! session ended for a typed reason).
#![no_main]

use libfuzzer_sys::fuzz_target;
use relink_fuzz::structured::{run, Plan};

fuzz_target!(|plan: Plan| {
    run(&plan);
});
