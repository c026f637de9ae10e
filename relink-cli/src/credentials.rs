//! Client credentials on the command line: the server's file of accepted
//! credentials (`listen`/`serve-forward --credentials FILE`), the client's
//! credential file (`--credential-file`) and token file (`--token-file`).
//!
//! Accepted-credentials file: one credential per line, `name:secret`; a
//! line without `:` is its own name. Blank lines and lines starting with
//! `#` (after spaces) are ignored; a trailing `\r` is dropped. A client's
//! secret is accepted when it equals a whole line (compared in constant
//! time against every line), and its identity is the line's name. A token
//! is accepted only while its identity is still a name in the file, so
//! removing a line revokes that name's tokens at their next session.
//! The secrets are stored in plain text (the simple option); keep the file
//! private: loading warns when group or others may read it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use constant_time_eq::constant_time_eq;
use relink::blocking::{Decision, SessionError};
use relink::{AbortCode, ClientCredential, Credential};

/// Longest secret a client presents (the protocol's limit).
pub const MAX_SECRET: usize = 512;

/// One accepted credential.
struct Entry {
    /// The identity (`name` before the first `:`, or the whole line).
    name: Vec<u8>,
    /// The whole line: what the client must present.
    line: Vec<u8>,
}

/// The accepted credentials of a server.
pub struct Accepted {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Accepted({} credentials)", self.entries.len())
    }
}

impl Accepted {
    /// Parse the file's bytes.
    pub fn parse(text: &[u8]) -> Accepted {
        let entries = text
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| {
                let t = l.trim_ascii_start();
                !t.is_empty() && !t.starts_with(b"#") && !l.trim_ascii().is_empty()
            })
            .map(|line| {
                let name = match line.iter().position(|&b| b == b':') {
                    Some(i) => &line[..i],
                    None => line,
                };
                Entry {
                    name: name.to_vec(),
                    line: line.to_vec(),
                }
            })
            .collect();
        Accepted { entries }
    }

    /// Read `path`. The second value is a warning to print when the file is
    /// readable by its group or by others.
    pub fn load(path: &Path) -> io::Result<(Accepted, Option<String>)> {
        let text = fs::read(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let accepted = Accepted::parse(&text);
        if accepted.entries.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: no credentials in the file (lines `name:secret`)",
                    path.display()
                ),
            ));
        }
        Ok((accepted, readable_by_others(path)))
    }

    /// The name of the line equal to `secret`. Every line is compared, in
    /// constant time for equal lengths, whatever matches.
    pub fn check_secret(&self, secret: &[u8]) -> Option<&[u8]> {
        let mut found = None;
        for e in &self.entries {
            if constant_time_eq(&e.line, secret) && found.is_none() {
                found = Some(&e.name[..]);
            }
        }
        found
    }

    /// Whether `name` is (still) the name of a line.
    pub fn has_name(&self, name: &[u8]) -> bool {
        self.entries
            .iter()
            .fold(false, |acc, e| acc | constant_time_eq(&e.name, name))
    }

    /// The identity a presented credential proves, if the file accepts it:
    /// a secret equal to a line, or a (verified) token whose identity is
    /// still a name in the file. `None` (no credential) is refused.
    pub fn identify(&self, cred: &ClientCredential<'_>) -> Option<Vec<u8>> {
        match cred {
            ClientCredential::Secret(s) => self.check_secret(s).map(<[u8]>::to_vec),
            ClientCredential::Token { identity, .. } => {
                self.has_name(identity).then(|| identity.to_vec())
            }
            _ => None,
        }
    }
}

impl Drop for Accepted {
    fn drop(&mut self) {
        for e in &mut self.entries {
            e.line.fill(0);
        }
    }
}

/// A warning when `path` is readable by its group or others (Unix).
#[cfg(unix)]
fn readable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "{}: readable by group or others (mode {:03o}); it holds secrets: chmod 600 it",
            path.display(),
            mode & 0o777
        )
    })
}

#[cfg(not(unix))]
fn readable_by_others(_: &Path) -> Option<String> {
    None
}

/// The secret in a client's `--credential-file`: its bytes, one trailing
/// newline (`\n` or `\r\n`) trimmed; 1..=512 bytes.
pub fn read_credential_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes =
        fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() || bytes.len() > MAX_SECRET {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: a credential is 1 to {MAX_SECRET} bytes, the file holds {}",
                path.display(),
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// The token in a client's `--token-file`, if the file exists and is not
/// empty.
pub fn read_token_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) if b.is_empty() => Ok(None),
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

/// Write `token` to `path` atomically (a `.tmp` file beside it, mode 0600,
/// then renamed over it).
pub fn write_token_file(path: &Path, token: &[u8]) -> io::Result<()> {
    let mut tmp = PathBuf::from(path);
    let mut name = tmp.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    tmp.set_file_name(name);
    let named = |e: io::Error, p: &Path| io::Error::new(e.kind(), format!("{}: {e}", p.display()));
    let _ = fs::remove_file(&tmp);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(|e| named(e, &tmp))?;
    f.write_all(token)
        .and_then(|()| f.sync_all())
        .map_err(|e| named(e, &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| named(e, path))
}

/// The server's decision callback for `ListenerBuilder::authenticate`:
/// accept what `accepted` identifies (granting a token for `lifetime` when
/// set), reject the rest with `CREDENTIAL_REJECTED`. With `verbose`, says
/// `relink: accepted as NAME` (or that a credential was refused).
pub fn authenticator(
    accepted: Accepted,
    lifetime: Option<relink::Duration>,
    verbose: bool,
) -> impl Fn(&ClientCredential<'_>) -> Decision + Send + Sync + 'static {
    move |cred| match accepted.identify(cred) {
        Some(name) => {
            if verbose {
                crate::log::say(format!(
                    "relink: accepted as {}",
                    String::from_utf8_lossy(&name)
                ));
            }
            Decision::Accept(lifetime.map(|l| (name, l)))
        }
        None => {
            if verbose {
                let what = match cred {
                    ClientCredential::None => "a client without a credential",
                    ClientCredential::Token { .. } => "a token whose name is no longer accepted",
                    _ => "a credential that is not in the file",
                };
                crate::log::say(format!("relink: refused {what}"));
            }
            Decision::Reject(AbortCode::CREDENTIAL_REJECTED)
        }
    }
}

/// What a client presents: the token file's token if there is one (the
/// credential file's secret is then the fallback), else the secret.
pub struct ClientCredentials {
    /// The credential of the first attempt.
    pub first: Option<Credential>,
    /// The secret to retry with once when the token is refused.
    pub fallback: Option<Credential>,
}

impl ClientCredentials {
    /// Read `--credential-file` and `--token-file`.
    pub fn load(credential_file: Option<&Path>, token_file: Option<&Path>) -> io::Result<Self> {
        let secret = credential_file
            .map(read_credential_file)
            .transpose()?
            .map(Credential::Secret);
        let token = token_file
            .map(read_token_file)
            .transpose()?
            .flatten()
            .map(Credential::Token)
            .filter(|t| {
                // A file that cannot hold a token (wrong length) is not
                // presented: the credential file is used instead.
                let ok = t.is_valid();
                if !ok {
                    crate::log::say(format_args!(
                        "relink: {} does not hold a token ({}); ignoring it",
                        token_file.map_or_else(String::new, |p| p.display().to_string()),
                        t.describe()
                    ));
                }
                ok
            });
        Ok(match token {
            Some(t) => ClientCredentials {
                first: Some(t),
                fallback: secret,
            },
            None => ClientCredentials {
                first: secret,
                fallback: None,
            },
        })
    }
}

/// The server's code when it refused this client's credential or token.
pub fn rejection(e: &io::Error) -> Option<AbortCode> {
    match e.get_ref()?.downcast_ref::<SessionError>()? {
        SessionError::Rejected { code, .. } => Some(*code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relink::UnixTime;

    const FILE: &[u8] = b"# accepted clients\n\
        alice:correct horse\n\
        \n   \n  # indented comment\n\
        bob:pa:ss\r\n\
        standalone-token\n";

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("relink-cred-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn lines_names_and_comments() {
        let a = Accepted::parse(FILE);
        assert_eq!(a.entries.len(), 3);
        assert_eq!(a.check_secret(b"alice:correct horse"), Some(&b"alice"[..]));
        // the first `:` separates the name; `\r` of a CRLF line is dropped
        assert_eq!(a.check_secret(b"bob:pa:ss"), Some(&b"bob"[..]));
        assert_eq!(
            a.check_secret(b"standalone-token"),
            Some(&b"standalone-token"[..])
        );
        for wrong in [
            &b"alice:correct horse "[..],
            b"alice:correct hors",
            b"alice",
            b"correct horse",
            b"bob:pa:ss\r",
            b"# accepted clients",
            b"",
        ] {
            assert_eq!(
                a.check_secret(wrong),
                None,
                "{:?}",
                String::from_utf8_lossy(wrong)
            );
        }
        assert!(a.has_name(b"alice") && a.has_name(b"bob"));
        assert!(!a.has_name(b"carol") && !a.has_name(b"alice:correct horse"));
    }

    #[test]
    fn identify_secrets_and_tokens() {
        let a = Accepted::parse(FILE);
        let id = |c| a.identify(&c);
        assert_eq!(
            id(ClientCredential::Secret(b"alice:correct horse")),
            Some(b"alice".to_vec())
        );
        assert_eq!(id(ClientCredential::Secret(b"alice:wrong")), None);
        assert_eq!(id(ClientCredential::None), None);
        let token = |identity| ClientCredential::Token {
            identity,
            issued_at: UnixTime(1),
            expires_at: UnixTime(2),
        };
        assert_eq!(id(token(b"bob")), Some(b"bob".to_vec()));
        // a name removed from the file: its tokens are refused
        assert_eq!(id(token(b"carol")), None);
        assert!(!format!("{a:?}").contains("horse"));
    }

    #[test]
    fn load_warns_when_others_can_read() {
        let d = tmpdir("load");
        let p = d.join("creds");
        fs::write(&p, FILE).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
            let (a, warn) = Accepted::load(&p).unwrap();
            assert_eq!(a.entries.len(), 3);
            let warn = warn.expect("a world-readable file warns");
            assert!(warn.contains("creds") && warn.contains("644"), "{warn}");
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
            assert!(Accepted::load(&p).unwrap().1.is_none());
        }
        fs::write(&p, b"# nothing\n\n").unwrap();
        let e = Accepted::load(&p).unwrap_err();
        assert!(e.to_string().contains("creds"), "{e}");
        let e = Accepted::load(&d.join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn credential_file_trims_one_newline() {
        let d = tmpdir("credfile");
        let p = d.join("cred");
        for (content, want) in [
            (&b"alice:pw\n"[..], &b"alice:pw"[..]),
            (b"alice:pw\r\n", b"alice:pw"),
            (b"alice:pw", b"alice:pw"),
            (b"alice:pw\n\n", b"alice:pw\n"),
        ] {
            fs::write(&p, content).unwrap();
            assert_eq!(read_credential_file(&p).unwrap(), want);
        }
        for bad in [&b""[..], b"\n", &[b'x'; MAX_SECRET + 1]] {
            fs::write(&p, bad).unwrap();
            let e = read_credential_file(&p).unwrap_err();
            assert!(e.to_string().contains("cred"), "{e}");
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn token_file_round_trip_mode_0600() {
        let d = tmpdir("token");
        let p = d.join("token");
        assert_eq!(read_token_file(&p).unwrap(), None);
        fs::write(&p, b"").unwrap();
        assert_eq!(read_token_file(&p).unwrap(), None);
        write_token_file(&p, b"\x01abc").unwrap();
        assert_eq!(
            read_token_file(&p).unwrap().as_deref(),
            Some(&b"\x01abc"[..])
        );
        write_token_file(&p, b"second").unwrap();
        assert_eq!(
            read_token_file(&p).unwrap().as_deref(),
            Some(&b"second"[..])
        );
        assert!(!d.join("token.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::remove_dir_all(&d).unwrap();
    }
}
