//! A `Server` fed arbitrary bytes on one transport, in chunk splits chosen
//! by the input, with `poll_transmit`, `poll_event` and `handle_timeout`
//! called in between. It must never panic, and the driver-facing
//! invariants of `relink_fuzz` must hold.
//!
//! Input: `[mode, seed, split count, split bytes.., payload..]`. Scenario
//! (`mode % 5`): 0 a fresh transport (first message parsing, handshake);
//! 1 the transport of a genuinely established session (frame parsing);
//! 2 a new transport after the session's transport broke (resume request
//! parsing against a live session); 3 the transport after a genuine resume
//! (frames of generation 1); 4 [`relink_fuzz::script`] with a hostile
//! client-to-server pipe (the input is then a list of operations: genuine
//! traffic, resumes, injected, flipped and dropped bytes, followed by a
//! check that everything written arrives). `mode / 5` picks the
//! configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    relink_fuzz::targets::server_input(data);
});
