//! Server key files: `keygen`, `pubkey`, reading them, hex.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use relink::StaticKeypair;

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex32(s: &str) -> io::Result<[u8; 32]> {
    let s = s.trim();
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, "expected 64 hex digits");
    if s.len() != 64 || !s.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

pub fn keygen(out: &PathBuf) -> io::Result<()> {
    let key = StaticKeypair::generate(&mut relink::os_rng());
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(out)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", out.display())))?;
    writeln!(f, "{}", hex(&key.secret_bytes()))?;
    println!("{}", hex(&key.public_key()));
    eprintln!(
        "wrote {}; pin the public key above with `relink connect --server-key`",
        out.display()
    );
    Ok(())
}

/// Read a key file written by `keygen`.
pub fn read_key(path: &Path) -> io::Result<StaticKeypair> {
    let text = fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let secret = unhex32(&text)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: bad key file: {e}", path.display())))?;
    Ok(StaticKeypair::from_secret_bytes(secret))
}

pub fn pubkey(path: &Path) -> io::Result<()> {
    println!("{}", hex(&read_key(path)?.public_key()));
    Ok(())
}
