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
//! configuration; scenario 0 with `mode / 5 >= 3` registers the transport
//! with `accept_from` (a source address) and demands a cookie for every
//! hello (admission control, PROTOCOL.md 3.7).
//!
//! In the fuzzing build, scenarios 0 to 3 let forged frames pass (an
//! all-zero tag, plaintext body: see `relink_fuzz::allow_forgery`), so the
//! fuzzer itself completes handshakes (a zero ClientConfirm), resumes (a
//! zero request MAC) and drives ACK, CLOSE, ABORT, PING, REKEY_* and
//! CREDENTIAL handling; the script keeps forgery off and checks content.
//! The body is `relink_fuzz::targets::server_input`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    relink_fuzz::targets::server_input(data);
});
