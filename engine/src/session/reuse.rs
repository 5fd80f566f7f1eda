//! Repeated Basic logins from one client find the session they opened before.
//!
//! Some clients send `authorization: Basic …` on every call instead of the handle the first call
//! returned; each such call would otherwise open a session and ask the IdP. A call with the same
//! mode, username, password and source address as an earlier successful login gets that login's
//! session back for [`REUSE_FOR`] after that login: then the IdP is asked again, so a password
//! changed or a user disabled stops working for such clients within that time, as it does for
//! a handle at its next token refresh. The credentials are kept only as a keyed SHA-256 (the
//! key is random per process), so nothing here can be turned back into a password.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqe_engine_config::AuthMode;

use super::state::SessionHandle;
use crate::secret::Secret;

pub type ReuseKey = [u8; 32];

/// How long after a login the same Basic credentials find its session without the IdP.
pub const REUSE_FOR: Duration = Duration::from_secs(300);

pub struct BasicReuse {
    key: [u8; 32],
    handles: Mutex<HashMap<ReuseKey, (Secret, Instant)>>,
}

impl Default for BasicReuse {
    fn default() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self {
            key,
            handles: Mutex::default(),
        }
    }
}

impl BasicReuse {
    /// Length-prefixed fields, so no two different logins hash the same input.
    pub fn key(
        &self,
        mode: AuthMode,
        user: &str,
        password: &Secret,
        peer: Option<IpAddr>,
    ) -> ReuseKey {
        let mut h = Sha256::new();
        h.update(self.key);
        let peer = peer.map(|p| p.to_string()).unwrap_or_default();
        for field in [
            super::state::mode_name(mode).as_bytes(),
            user.as_bytes(),
            password.expose().as_bytes(),
            peer.as_bytes(),
        ] {
            h.update((field.len() as u64).to_le_bytes());
            h.update(field);
        }
        h.finalize().into()
    }

    /// The handle of the login these credentials made, if it was made less than [`REUSE_FOR`]
    /// ago.
    pub fn handle(&self, key: &ReuseKey) -> Option<SessionHandle> {
        let mut handles = self.handles.lock().ok()?;
        let (secret, at) = handles.get(key)?;
        if at.elapsed() >= REUSE_FOR {
            handles.remove(key);
            return None;
        }
        Some(SessionHandle::from_secret(secret.clone()))
    }

    /// Remembers a login's handle; at `capacity` entries the map starts over (the sessions stay,
    /// only the shortcut to them is lost).
    pub fn remember(&self, key: ReuseKey, handle: &SessionHandle, capacity: usize) {
        if let Ok(mut handles) = self.handles.lock() {
            if handles.len() >= capacity.max(1) {
                handles.clear();
            }
            handles.insert(key, (handle.secret().clone(), Instant::now()));
        }
    }

    pub fn forget(&self, key: &ReuseKey) {
        if let Ok(mut handles) = self.handles.lock() {
            handles.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_login_is_reused_only_for_a_while_then_the_idp_is_asked_again() {
        let r = BasicReuse::default();
        let key = r.key(AuthMode::Password, "alice", &Secret::new("pw"), None);
        let handle = SessionHandle::generate();
        r.remember(key, &handle, 10);
        assert!(r.handle(&key).is_some());
        tokio::time::advance(REUSE_FOR).await;
        assert!(
            r.handle(&key).is_none(),
            "a changed password stops working in time"
        );
    }

    #[test]
    fn the_key_depends_on_every_part_of_the_login() {
        let r = BasicReuse::default();
        let pw = Secret::new("pw");
        let here: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
        let base = r.key(AuthMode::Password, "alice", &pw, here);
        assert_eq!(base, r.key(AuthMode::Password, "alice", &pw, here));
        assert_ne!(
            base,
            r.key(AuthMode::Password, "alice", &Secret::new("pw2"), here)
        );
        assert_ne!(base, r.key(AuthMode::Password, "alicE", &pw, here));
        assert_ne!(base, r.key(AuthMode::ClientCredentials, "alice", &pw, here));
        assert_ne!(base, r.key(AuthMode::Password, "alice", &pw, None));
        // Field boundaries count: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            r.key(AuthMode::Password, "ab", &Secret::new("c"), None),
            r.key(AuthMode::Password, "a", &Secret::new("bc"), None)
        );
        // Another process (another random key) hashes differently.
        assert_ne!(
            base,
            BasicReuse::default().key(AuthMode::Password, "alice", &pw, here)
        );
    }
}
