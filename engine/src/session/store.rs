//! The sessions this process holds, in memory. With a shared store (`shared`), these are the
//! decrypted copies of the sessions this replica has served, kept beside their records.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use subtle::ConstantTimeEq;

use super::state::{Session, SessionKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("session limit reached")]
    Full,
    #[error("a session with this key already exists")]
    Duplicate,
}

pub trait SessionStore: Send + Sync {
    /// Adds a session unless the store is at `capacity` or the key is taken.
    fn insert(&self, session: Arc<Session>, capacity: usize) -> Result<(), StoreError>;
    fn get(&self, key: &SessionKey) -> Option<Arc<Session>>;
    /// Removes and returns the session; `None` if someone else already did.
    fn remove(&self, key: &SessionKey) -> Option<Arc<Session>>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn all(&self) -> Vec<Arc<Session>>;
}

/// Keys are SHA-256 digests of the credential, never the credential itself: the map's
/// hashing and probing then work on data an attacker cannot choose byte by byte, and the final
/// equality check is constant-time anyway.
#[derive(Default)]
pub struct InMemorySessionStore {
    sessions: RwLock<HashMap<SessionKey, Arc<Session>>>,
}

impl InMemorySessionStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl SessionStore for InMemorySessionStore {
    fn insert(&self, session: Arc<Session>, capacity: usize) -> Result<(), StoreError> {
        let Ok(mut map) = self.sessions.write() else {
            return Err(StoreError::Full);
        };
        if map.contains_key(&session.key) {
            return Err(StoreError::Duplicate);
        }
        if map.len() >= capacity {
            return Err(StoreError::Full);
        }
        map.insert(session.key, session);
        Ok(())
    }

    fn get(&self, key: &SessionKey) -> Option<Arc<Session>> {
        let map = self.sessions.read().ok()?;
        let found = map.get(key)?;
        bool::from(found.key.as_bytes().ct_eq(key.as_bytes())).then(|| found.clone())
    }

    fn remove(&self, key: &SessionKey) -> Option<Arc<Session>> {
        self.sessions.write().ok()?.remove(key)
    }

    fn len(&self) -> usize {
        self.sessions.read().map(|m| m.len()).unwrap_or(0)
    }

    fn all(&self) -> Vec<Arc<Session>> {
        self.sessions
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}
