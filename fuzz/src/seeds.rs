//! The seed corpus, generated from genuine sessions: for every scenario of
//! the raw-input targets, the pair the target sets up (same seeds, same
//! configuration, so the same keys) carries on a genuine conversation
//! (data both ways, ACKs, a rekey from each side, PINGs, a close), and
//! what the genuine peer sent becomes the seed; the decoder targets get the
//! genuine messages of such sessions.
//!
//! Seeds are exact for the build they are generated in (keys, cipher and
//! DH differ), so the test `seed_corpus_replays_deep` checks in either
//! build that they reach the states behind authentication, and writes them
//! to `fuzz/corpus/<target>/seed-*` (git-ignored) only in the fuzzing
//! build:
//!
//! ```sh
//! RUSTFLAGS="--cfg fuzzing" cargo +nightly test --target-dir target/seeds --lib seed_corpus
//! ```
use std::path::Path;

use relink::wire::{FrameHeader, FRAME_HEADER_LEN, FRAME_OVERHEAD};

use crate::targets::{client_setup, server_setup};
use crate::{pattern, Net, DOWN, UP};

/// One seed: the target it is for, a name, the bytes.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The fuzz target's name.
    pub target: &'static str,
    /// File name (without the `seed-` prefix).
    pub name: String,
    /// The input.
    pub bytes: Vec<u8>,
}

/// A genuine conversation on `p` from its current state, driven by one
/// side (the client when `client_acts`, else the server): its application
/// writes twice, then it requests a rekey (`close` false) or closes; the
/// other side only answers. It stops there: what the acting side sends
/// later depends on answers that the target's lone core sends only after
/// the whole input (a rekey SWITCH, the ACK of the peer's CLOSE). Returns
/// everything the client sent and everything the server sent, in order.
/// The clock stands still (the targets replay the seeds at the setup's
/// time).
pub fn converse(p: &mut Net, client_acts: bool, close: bool) -> (Vec<u8>, Vec<u8>) {
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 8192];
    let (mut up_w, mut down_w) = (0u64, 0u64);
    for round in 0..3 {
        let sid = p.session;
        match (round, client_acts, sid) {
            (0 | 1, true, _) => {
                let mut d = vec![0u8; 1500];
                pattern(UP, up_w, &mut d);
                up_w += p.client.send(&d).unwrap_or(0) as u64;
            }
            (0 | 1, false, Some(s)) => {
                let mut d = vec![0u8; 1500];
                pattern(DOWN, down_w, &mut d);
                down_w += p.server.send(s, &d).unwrap_or(0) as u64;
            }
            (2, true, _) if close => p.client.close(),
            (2, true, _) => {
                let _ = p.client.request_rekey();
            }
            (2, false, Some(s)) if close => {
                let _ = p.server.close(s);
            }
            (2, false, Some(s)) => {
                let _ = p.server.request_rekey(s);
            }
            _ => {}
        }
        let c = p.client_output();
        up.extend_from_slice(&c);
        if client_acts && round == 2 {
            break;
        }
        if let (false, Some(t)) = (c.is_empty(), p.tid) {
            let _ = p.server.handle_input(t, p.snow, &c);
        }
        if let Some(s) = p.session {
            while let Ok(1..) = p.server.recv(s, &mut buf) {}
        }
        let s = p.server_output();
        down.extend_from_slice(&s);
        if !client_acts && round == 2 {
            break;
        }
        if !s.is_empty() {
            let _ = p.client.handle_input(p.cnow, &s);
        }
        while let Ok(1..) = p.client.recv(&mut buf) {}
        p.drain();
    }
    (up, down)
}

/// The first message of `bytes` if it is a frame stream: each frame's
/// header (for the `frame_header` target).
fn frame_headers(bytes: &[u8]) -> Vec<[u8; FRAME_HEADER_LEN]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(h) = rest.get(..FRAME_HEADER_LEN) {
        let h: [u8; FRAME_HEADER_LEN] = h.try_into().expect("4 bytes");
        let Ok(fh) = FrameHeader::decode(&h) else {
            break;
        };
        out.push(h);
        rest = rest.get(FRAME_OVERHEAD + fh.len..).unwrap_or(&[]);
    }
    out
}

/// Every seed.
pub fn all() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut push = |target, name: String, bytes: Vec<u8>| {
        seeds.push(Seed {
            target,
            name,
            bytes,
        })
    };
    let seed = 3u8;
    for mode in 0..16u8 {
        if mode % 5 == 4 {
            continue;
        }
        let mut up = Vec::new();
        for close in [false, true] {
            let mut p = server_setup(mode, u64::from(seed));
            (up, _) = converse(&mut p, true, close);
            // [mode, seed, split count 0, payload]
            let mut input = vec![mode, seed, 0];
            input.extend_from_slice(&up);
            let last = if close { "close" } else { "rekey" };
            push("server_input", format!("mode{mode}-{last}"), input);
        }
        if mode == 0 {
            if let Some(h) = up.get(..relink::wire::CLIENT_HELLO_LEN) {
                push("client_hello", "genuine".into(), h.to_vec());
            }
        }
        if mode % 5 == 1 {
            for (i, h) in frame_headers(&up).into_iter().enumerate() {
                push("frame_header", format!("c2s-{mode}-{i}"), h.to_vec());
            }
        }
        if mode % 5 == 2 {
            if let Some(r) = up.get(..relink::wire::RESUME_REQUEST_LEN) {
                push("resume_request", format!("genuine-{mode}"), r.to_vec());
            }
        }
    }
    for mode in 0..12u8 {
        if mode % 4 == 3 {
            continue;
        }
        let mut down = Vec::new();
        for close in [false, true] {
            let mut p = client_setup(mode, u64::from(seed));
            (_, down) = converse(&mut p, false, close);
            let mut input = vec![mode, seed, 0];
            input.extend_from_slice(&down);
            let last = if close { "close" } else { "rekey" };
            push("client_input", format!("mode{mode}-{last}"), input);
        }
        if mode % 4 == 0 {
            if let Some(h) = down.get(..relink::wire::SERVER_HELLO_LEN) {
                push("server_hello", format!("genuine-{mode}"), h.to_vec());
            }
        }
        if mode % 4 == 1 {
            if let Some(r) = down.get(..relink::wire::RESUME_RESPONSE_LEN) {
                push("resume_response", format!("genuine-{mode}"), r.to_vec());
            }
        }
        if mode % 4 == 2 {
            for (i, h) in frame_headers(&down).into_iter().enumerate() {
                push("frame_header", format!("s2c-{mode}-{i}"), h.to_vec());
            }
        }
    }
    // The scripts: the operation lists of the harness's own tests.
    let scripts: [&[u8]; 3] = [
        &[0, 50, 5, 30, 3, 255, 6, 2, 8, 0, 10, 3, 255, 6, 2],
        &[0, 50, 2, 5, 0, 3, 3, 255],
        &[8, 6, 2, 4, 255, 1, 2, 1, 2, 3, 1],
    ];
    for (i, ops) in scripts.iter().enumerate() {
        let mut a = vec![4, 9];
        a.extend_from_slice(ops);
        push("server_input", format!("script{i}"), a);
        let mut b = vec![3, 9];
        b.extend_from_slice(ops);
        push("client_input", format!("script{i}"), b);
    }
    seeds
}

/// Write every seed to `dir/<target>/seed-<name>`.
pub fn write_all(dir: &Path) -> std::io::Result<usize> {
    let seeds = all();
    for s in &seeds {
        let d = dir.join(s.target);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(format!("seed-{}", s.name)), &s.bytes)?;
    }
    Ok(seeds.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::{client_input, server_input};

    /// The seeds reach the states behind authentication: replayed through
    /// the targets' own code, the genuine data arrives (which needs the
    /// handshake or resume and the frame MACs to pass). Then they are
    /// written to `fuzz/corpus`.
    #[test]
    fn seed_corpus_replays_deep() {
        let seeds = all();
        let mut deep = 0;
        for s in &seeds {
            let read = match s.target {
                "server_input" => server_input(&s.bytes),
                "client_input" => client_input(&s.bytes),
                _ => continue,
            };
            if !s.name.starts_with("script") {
                // A client that just took a ServerHello has not sent its
                // confirm yet when the data behind it arrives in the same
                // input (the server sends data only after the confirm, so
                // this never happens for real): mode 0 ends there.
                let hello_only =
                    s.target == "client_input" && s.name.starts_with("mode") && s.bytes[0] % 4 == 0;
                if !hello_only {
                    assert!(
                        read >= 3000,
                        "seed {} {} delivered {read} bytes",
                        s.target,
                        s.name
                    );
                    deep += 1;
                }
            }
        }
        assert_eq!(deep, 2 * (13 + 6));
        for t in [
            "client_hello",
            "server_hello",
            "resume_request",
            "resume_response",
        ] {
            assert!(seeds.iter().any(|s| s.target == t), "no seed for {t}");
        }
        assert!(seeds.iter().filter(|s| s.target == "frame_header").count() >= 10);
        // Only the fuzzing build's seeds go to the corpus the fuzzer reads
        // (a normal build's frames would not verify there).
        let dir = if cfg!(fuzzing) {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
        } else {
            std::env::temp_dir().join(format!("relink-fuzz-seeds-{}", std::process::id()))
        };
        assert_eq!(write_all(&dir).expect("write seeds"), seeds.len());
        let written = std::fs::read_dir(dir.join("server_input"))
            .expect("seeds")
            .count();
        assert!(written >= 24, "{written} server_input seeds");
        if !cfg!(fuzzing) {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
