//! Strings that must never reach a log line or an error message.

use std::fmt;

use sha2::{Digest, Sha256};

/// A credential (password, access token, refresh token, session handle). `Debug` prints a
/// placeholder and there is deliberately no `Display`, so `{}`/`{:?}` can never leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for the one place that must send it (an HTTP header, a form field).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// SHA-256 of a credential: safe to log and to key caches by, because it reveals nothing of the
/// credential (unlike a prefix of the token, which is itself part of the secret).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of(value: &str) -> Self {
        Self(Sha256::digest(value.as_bytes()).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Full hex digest, for cache keys.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Logs show the first 16 hex digits of the digest: enough to correlate events.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0[..8]))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_formats_its_value() {
        let s = Secret::new("eyJhbGciOi.secret-token");
        assert!(!format!("{s:?}").contains("secret-token"));
        assert!(!format!("{:?}", Some(&s)).contains("eyJ"));
    }

    #[test]
    fn a_fingerprint_is_a_hash_not_a_slice_of_the_token() {
        let token = "abcdefghijklmnopqrstuvwxyz0123456789";
        let fp = Fingerprint::of(token);
        assert_eq!(fp.hex().len(), 64);
        assert!(!token.contains(&fp.to_string()));
        assert!(!fp.hex().contains("abcdef"));
        assert_eq!(fp, Fingerprint::of(token));
        assert_ne!(fp, Fingerprint::of("abcdefghijklmnopqrstuvwxyz0123456788"));
    }
}
