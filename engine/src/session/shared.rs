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

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

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

/// Whether an operation may run twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Safe,
    Once,
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

/// How long one store operation may take before the store counts as unavailable.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

fn record_key(handle: &HandleSecrets) -> String {
    format!("sqe:s:{}", handle.store_key())
}

fn lock_key(handle: &HandleSecrets) -> String {
    format!("sqe:l:{}", handle.store_key())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Replaces the record only if it still has generation `ARGV[1]` (its bytes 12..20), keeping
/// its expiry: only use pushes a session's idle deadline back, never a refresh.
const REPLACE: &str = r"
local current = redis.call('GETRANGE', KEYS[1], 12, 19)
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
";

/// Takes the lock for `ARGV[1]`, or finds it already held by `ARGV[1]` (a retried attempt).
const LOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
";

/// Deletes the lock only if this replica still holds it.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

impl SharedSessions {
    /// The store at `url` (`redis://` or `rediss://`, no credentials in it), logging in with
    /// `password` if one is given. Connects on first use and reconnects after a failure, so an
    /// engine starts, and serves the sessions it holds, while the store is down.
    /// `ca` (PEM) is the CA a `rediss://` store's certificate is checked against, instead of
    /// the system's roots.
    pub(crate) fn open(
        url: &str,
        password: Option<&str>,
        ca: Option<Vec<u8>>,
        keys: ClusterKeys,
    ) -> Result<Self, SharedError> {
        use redis::IntoConnectionInfo;
        let mut info = url.into_connection_info()?;
        if let Some(password) = password {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = match ca {
            Some(root_cert) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )?,
            None => redis::Client::open(info)?,
        };
        // A store that stops answering costs a call at most this long, never a hang.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(STORE_TIMEOUT))
            .set_response_timeout(Some(STORE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self { conn, keys })
    }

    /// One operation against the store. A connection that broke while the store was away is
    /// noticed by the first operation after it returns, which then reconnects: that operation
    /// is tried once more, so the store's return is seen at once. A store that does not
    /// answer is not tried twice.
    ///
    /// An operation that may have run before its connection broke is tried again only if
    /// running it twice is harmless (`Repeat::Safe`); one that must not run twice is tried
    /// again only when the store refused the connection, so it never ran.
    async fn run<T, F, Fut>(&self, repeat: Repeat, op: F) -> Result<T, SharedError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match op(self.conn.clone()).await {
            Err(e) if e.is_connection_refusal() => Ok(op(self.conn.clone()).await?),
            Err(e)
                if repeat == Repeat::Safe
                    && !e.is_timeout()
                    && (e.is_io_error() || e.is_connection_dropped()) =>
            {
                Ok(op(self.conn.clone()).await?)
            }
            done => Ok(done?),
        }
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        repeat: Repeat,
        cmd: &redis::Cmd,
    ) -> Result<T, SharedError> {
        self.run(repeat, |mut conn| async move {
            cmd.query_async(&mut conn).await
        })
        .await
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        repeat: Repeat,
        script: &redis::ScriptInvocation<'_>,
    ) -> Result<T, SharedError> {
        self.run(repeat, |mut conn| async move {
            script.invoke_async(&mut conn).await
        })
        .await
    }

    /// Marks the session used (its record lives `ttl` from now) and returns its stored
    /// generation: one round trip per call, to see another replica's refresh or logout.
    pub(crate) async fn touch(
        &self,
        handle: &HandleSecrets,
        ttl: Duration,
    ) -> Result<Option<u64>, SharedError> {
        let key = record_key(handle);
        let mut pipe = redis::pipe();
        pipe.cmd("GETRANGE")
            .arg(&key)
            .arg(12)
            .arg(19)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(millis(ttl));
        let pipe = &pipe;
        let (header, _): (Vec<u8>, i64) = self
            .run(Repeat::Safe, |mut conn| async move {
                pipe.query_async(&mut conn).await
            })
            .await?;
        Ok(generation_of(&header))
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
        let mut cmd = redis::cmd("SET");
        cmd.arg(record_key(handle))
            .arg(sealed)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        let set: Option<String> = self.query(Repeat::Once, &cmd).await?;
        Ok(set.is_some())
    }

    /// The session's record, opened with the handle; `None` when there is none (never was,
    /// ended, expired).
    pub(crate) async fn read(&self, handle: &HandleSecrets) -> Result<Option<Stored>, SharedError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(record_key(handle));
        let sealed: Option<Vec<u8>> = self.query(Repeat::Safe, &cmd).await?;
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

    /// The stored generation alone; `None` when the record is gone.
    pub(crate) async fn generation(
        &self,
        handle: &HandleSecrets,
    ) -> Result<Option<u64>, SharedError> {
        let mut cmd = redis::cmd("GETRANGE");
        cmd.arg(record_key(handle)).arg(12).arg(19);
        let header: Vec<u8> = self.query(Repeat::Safe, &cmd).await?;
        Ok(generation_of(&header))
    }

    /// Writes `record` as generation `expected + 1`, only if the store still holds `expected`;
    /// the record keeps its expiry.
    pub(crate) async fn replace(
        &self,
        handle: &HandleSecrets,
        expected: u64,
        record: &SessionRecord,
    ) -> Result<bool, SharedError> {
        let sealed = self.keys.seal(handle, expected + 1, &record.to_bytes());
        let script = Script::new(REPLACE);
        let mut invocation = script.key(record_key(handle));
        invocation
            .arg(expected.to_be_bytes().as_slice())
            .arg(sealed);
        let replaced: i64 = self.invoke(Repeat::Once, &invocation).await?;
        Ok(replaced == 1)
    }

    /// Ends the session on every replica.
    pub(crate) async fn delete(&self, handle: &HandleSecrets) -> Result<(), SharedError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(record_key(handle));
        let _: i64 = self.query(Repeat::Safe, &cmd).await?;
        Ok(())
    }

    /// Takes the session's refresh lock for `ttl` as `owner` (one name per attempt); `false`
    /// when another holds it.
    pub(crate) async fn lock(
        &self,
        handle: &HandleSecrets,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, SharedError> {
        let script = Script::new(LOCK);
        let mut invocation = script.key(lock_key(handle));
        invocation.arg(owner).arg(millis(ttl));
        let held: i64 = self.invoke(Repeat::Safe, &invocation).await?;
        Ok(held == 1)
    }

    /// Lets the lock go, if `owner` still holds it (it may have expired and been taken).
    pub(crate) async fn unlock(
        &self,
        handle: &HandleSecrets,
        owner: &str,
    ) -> Result<(), SharedError> {
        let script = Script::new(UNLOCK);
        let mut invocation = script.key(lock_key(handle));
        invocation.arg(owner);
        let _: i64 = self.invoke(Repeat::Safe, &invocation).await?;
        Ok(())
    }
}

/// A record's generation from its header bytes; an absent record reads as no bytes.
fn generation_of(header: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(header).ok().map(u64::from_be_bytes)
}

#[cfg(test)]
#[path = "shared_tests.rs"]
mod tests;
