//! Sessions in the store every replica shares (Redis 7 or Valkey): sealed records, one per
//! session, named by the digest of the handle's session id, expiring with the session.
//!
//! A record is only ever replaced through a compare-and-set on its generation (in its header,
//! in the clear, authenticated by the seal), so a refresh on one replica and a logout on another
//! cannot overwrite each other: a deleted record stays deleted, an older generation never lands
//! over a newer one. A refresh spends a single-use refresh token at the IdP, so it runs under a
//! lock in the store that only one replica holds at a time; the others wait and read the new
//! record.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use super::record::SessionRecord;
use super::seal::{ClusterKeys, HandleSecrets, SealError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum SharedError {
    /// The store cannot be reached or answered with an error.
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("the session record does not read")]
    Unreadable,
}

impl From<redis::RedisError> for SharedError {
    fn from(e: redis::RedisError) -> Self {
        // The store's own words, never the command (which carries a sealed record).
        SharedError::Unavailable(format!("{:?}", e.kind()))
    }
}

/// A record as read: what it holds, its generation, and whether it should be sealed again with
/// the current cluster key.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) record: SessionRecord,
    pub(crate) generation: u64,
    pub(crate) reseal: bool,
}

pub(crate) struct SharedSessions {
    conn: ConnectionManager,
    keys: ClusterKeys,
}

fn record_key(handle: &HandleSecrets) -> String {
    format!("sqe:s:{}", handle.store_key())
}

fn lock_key(handle: &HandleSecrets) -> String {
    format!("sqe:l:{}", handle.store_key())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Replaces the record only if it still has generation `ARGV[1]` (its bytes 12..20).
const REPLACE: &str = r"
local current = redis.call('GETRANGE', KEYS[1], 12, 19)
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// Deletes the lock only if this replica still holds it.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

impl SharedSessions {
    pub(crate) async fn connect(url: &str, keys: ClusterKeys) -> Result<Self, SharedError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(Self { conn, keys })
    }

    /// Stores a new session's record, generation 0; refused if the name is taken (a handle is
    /// never issued twice).
    pub(crate) async fn create(
        &self,
        handle: &HandleSecrets,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<bool, SharedError> {
        let sealed = self.keys.seal(handle, 0, &record.to_bytes());
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(record_key(handle))
            .arg(sealed)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }

    /// The session's record, opened with the handle; `None` when there is none (never was,
    /// ended, expired).
    pub(crate) async fn read(&self, handle: &HandleSecrets) -> Result<Option<Stored>, SharedError> {
        let mut conn = self.conn.clone();
        let sealed: Option<Vec<u8>> = conn.get(record_key(handle)).await?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let opened = self.keys.open(handle, &sealed)?;
        let record = SessionRecord::from_bytes(&opened.plaintext).ok_or(SharedError::Unreadable)?;
        Ok(Some(Stored {
            record,
            generation: opened.generation,
            reseal: opened.reseal,
        }))
    }

    /// The stored generation alone (one small read per call, to see another replica's refresh
    /// or logout); `None` when the record is gone.
    pub(crate) async fn generation(
        &self,
        handle: &HandleSecrets,
    ) -> Result<Option<u64>, SharedError> {
        let mut conn = self.conn.clone();
        let header: Vec<u8> = redis::cmd("GETRANGE")
            .arg(record_key(handle))
            .arg(12)
            .arg(19)
            .query_async(&mut conn)
            .await?;
        Ok(<[u8; 8]>::try_from(header.as_slice())
            .ok()
            .map(u64::from_be_bytes))
    }

    /// Writes `record` as generation `expected + 1`, only if the store still holds `expected`.
    pub(crate) async fn replace(
        &self,
        handle: &HandleSecrets,
        expected: u64,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<bool, SharedError> {
        let sealed = self.keys.seal(handle, expected + 1, &record.to_bytes());
        let mut conn = self.conn.clone();
        let replaced: i64 = Script::new(REPLACE)
            .key(record_key(handle))
            .arg(expected.to_be_bytes().as_slice())
            .arg(sealed)
            .arg(millis(ttl))
            .invoke_async(&mut conn)
            .await?;
        Ok(replaced == 1)
    }

    /// Ends the session on every replica.
    pub(crate) async fn delete(&self, handle: &HandleSecrets) -> Result<(), SharedError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.del(record_key(handle)).await?;
        Ok(())
    }

    /// Takes the session's refresh lock for `ttl` as `owner`; `false` when another holds it.
    pub(crate) async fn lock(
        &self,
        handle: &HandleSecrets,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, SharedError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(lock_key(handle))
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }

    /// Lets the lock go, if `owner` still holds it (it may have expired and been taken).
    pub(crate) async fn unlock(
        &self,
        handle: &HandleSecrets,
        owner: &str,
    ) -> Result<(), SharedError> {
        let mut conn = self.conn.clone();
        let _: i64 = Script::new(UNLOCK)
            .key(lock_key(handle))
            .arg(owner)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "shared_tests.rs"]
mod tests;
