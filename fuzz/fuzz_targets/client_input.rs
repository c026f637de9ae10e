//! A `Client` fed arbitrary bytes as the server's side of the transport.
//! It must never panic and the driver-facing invariants of `relink_fuzz`
//! must hold; without forgery (scenario 3, and every scenario outside the
//! fuzzing build) it must never hand the application a byte the genuine
//! server did not send.
//!
//! Input: `[mode, seed, ..]`; scenario `mode % 4`, configuration `mode / 4`:
//! - 0: right after `new_transport` (the reply to a ClientHello);
//! - 1: after a genuine handshake and a broken transport, the reply to the
//!   client's ResumeRequest (accepted, authenticated and plain rejections);
//! - 2: after a genuine handshake, arbitrary bytes as frames (reaches the
//!   frame parser and the MAC check behind it);
//! - 3: [`relink_fuzz::script`]: operations on a genuine pair in which the
//!   fuzzer injects, flips, drops and delivers bytes of the server-to-client
//!   pipe while real frames (data, ACKs, CLOSE) and reconnects with resumes
//!   flow; afterwards the transport is healed and every byte written by
//!   either side must arrive intact unless the session legitimately ended.
//!
//! Scenarios 0 to 2 then read `[split count, split bytes.., payload..]`.
//! In the fuzzing build they let forged frames pass (an all-zero tag,
//! plaintext body; a ServerHello with a zero confirm completes the
//! handshake; a resume answer with a zero MAC is accepted): see
//! `relink_fuzz::allow_forgery`. The body is
//! `relink_fuzz::targets::client_input`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    relink_fuzz::targets::client_input(data);
});
