//! Sessions any replica serves: the async shell between this process's sessions and the shared
//! store (`shared`). A record is written at login, opened by a replica that has not seen the
//! handle yet, checked on every call so another replica's refresh or logout is seen at once, and
//! replaced only by the replica holding the session's refresh lock: the IdP's refresh tokens are
//! single-use, so two replicas must never both spend one.
//!
//! What ends a session everywhere (a logout, a refresh the IdP refuses, the absolute deadline)
//! deletes its record; what only concerns this process (idle here, shutdown) drops the local copy
//! and leaves the record to the other replicas. Idle time across replicas is the record's own
//! expiry, pushed back on every call.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqe_engine_config::SessionStoreConfig;
use tokio::time::Instant;
use tracing::{info, warn};

use super::manager::SessionManager;
use super::record::Clocks;
use super::seal::{ClusterKeys, HandleSecrets, SealError};
use super::shared::{SharedError, SharedSessions, Stored};
use super::state::{EndReason, Session, SessionKey, TokenState};
use crate::auth::{IdpError, TokenGrant};
use crate::error::EngineError;

/// How long a replica may hold a session's refresh lock: beyond the worst case of what it does
/// under it (two store reads, the IdP call, the write and its retries, each with its own
/// timeout), so it never lapses mid-refresh, yet short enough that a replica dying with it
/// costs its sessions half a minute.
const REFRESH_LOCK: Duration = Duration::from_secs(30);
/// How long the holder keeps trying to store tokens it has been given: the refresh token it
/// spent is gone, so the record must not keep it.
const WRITE_RETRIES: Duration = Duration::from_secs(10);
/// How often a replica waiting on another's refresh looks for its result.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// The configured store, with the cluster's keys read from their file.
pub(crate) fn open_store(
    config: &SessionStoreConfig,
    password: Option<&str>,
) -> anyhow::Result<SharedSessions> {
    let path = config.keys_file.display();
    let text = std::fs::read_to_string(&config.keys_file)
        .with_context(|| format!("session.store.keys_file {path}"))?;
    let keys =
        ClusterKeys::parse(&text).with_context(|| format!("session.store.keys_file {path}"))?;
    let ca = match &config.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("session.store.ca_file {}", path.display()))?,
        ),
        None => None,
    };
    SharedSessions::open(&config.url, password, ca, keys).context("session.store.url")
}

/// What a refresh under the shared store came to.
pub(super) enum Renewal {
    /// This replica spent the refresh token; the new tokens are installed and stored.
    Renewed(TokenGrant),
    /// Another replica refreshed first; its tokens are installed.
    Adopted,
    /// The record is gone: the session ended on another replica.
    Gone,
    /// The IdP answered (or could not be reached).
    Failed(IdpError),
    /// The store could not be reached: nothing was spent.
    StoreDown,
    /// The record does not open here (its cluster key is not one this replica has, or it is
    /// not one this engine wrote): this replica lets the session go, and leaves the record to
    /// those that can.
    Unreadable { retired: bool },
}

fn unreadable(e: &SharedError) -> Renewal {
    match e {
        SharedError::Unavailable(_) => Renewal::StoreDown,
        SharedError::Seal(SealError::RetiredKey) => Renewal::Unreadable { retired: true },
        SharedError::Seal(_) | SharedError::Unreadable => Renewal::Unreadable { retired: false },
    }
}

fn store_error(e: &SharedError) -> EngineError {
    match e {
        SharedError::Unavailable(_) => EngineError::SessionStoreUnavailable,
        SharedError::Seal(SealError::RetiredKey) => EngineError::SessionKeyRetired,
        SharedError::Seal(_) | SharedError::Unreadable => EngineError::SessionInvalid,
    }
}

impl SessionManager {
    /// How long a record lives untouched: the idle timeout, cut at the absolute deadline.
    fn record_ttl(&self, session: &Session, now: Instant) -> Duration {
        self.policy
            .idle_timeout
            .min(session.absolute_deadline.saturating_duration_since(now))
    }

    fn store_of<'a>(
        &'a self,
        session: &'a Session,
    ) -> Option<(&'a Arc<SharedSessions>, &'a HandleSecrets)> {
        Some((self.shared.as_ref()?, session.shared.as_ref()?))
    }

    /// Writes a new session's record. Without it no other replica could serve the handle, so
    /// a login the store cannot take is refused (and the session dropped here).
    pub(super) async fn publish(&self, session: &Arc<Session>) -> Result<(), EngineError> {
        let Some((store, secrets)) = self.store_of(session) else {
            return Ok(());
        };
        let clocks = Clocks::read();
        let record = session.record(&*session.tokens.read().await, clocks);
        let written = store
            .create(secrets, &record, self.record_ttl(session, clocks.now))
            .await;
        match written {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.evict(session, EndReason::Closed).await;
                Err(EngineError::Internal("duplicate session".into()))
            }
            Err(e) => {
                warn!(
                    event = "login", user = session.identity.user.as_str(), session = session.id.as_str(),
                    outcome = "session_store_unavailable", error = %e
                );
                self.evict(session, EndReason::Shutdown).await;
                Err(EngineError::SessionStoreUnavailable)
            }
        }
    }

    /// A handle this process does not hold: the session its record describes, opened with the
    /// handle and made local.
    pub(super) async fn adopt(
        &self,
        key: SessionKey,
        secrets: HandleSecrets,
    ) -> Result<Arc<Session>, EngineError> {
        let Some(store) = self.shared.as_ref() else {
            return Err(EngineError::SessionInvalid);
        };
        let stored = match store.read(&secrets).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return Err(EngineError::SessionInvalid),
            Err(e) => {
                warn!(event = "session_store", op = "read", error = %e);
                return Err(store_error(&e));
            }
        };
        let clocks = Clocks::read();
        let record = &stored.record;
        let deadline = clocks.instant(record.absolute_deadline_ms);
        if clocks.now >= deadline {
            return Err(EngineError::SessionInvalid);
        }
        let mut tokens = TokenState::from_record(record, clocks, stored.generation);
        tokens.refresh_at = self.first_refresh_at(record.mode, &tokens);
        let renewal =
            record
                .machine
                .as_ref()
                .map(|(client_id, secret)| super::state::MachineClient {
                    client_id: client_id.clone(),
                    secret: crate::secret::Secret::new(secret.clone()),
                });
        let session = Arc::new(
            Session::new(
                key,
                record.identity(),
                record.mode,
                tokens,
                self.policy.max_lifetime,
            )
            .opened_as(record.id.clone(), deadline)
            .with_renewal(renewal)
            .with_shared(Some(secrets)),
        );
        if self
            .store
            .insert(session.clone(), self.policy.max_sessions)
            .is_err()
        {
            // Another call with the same handle adopted it first, or this replica is full.
            return match self.store.get(&key) {
                Some(local) => Ok(local),
                None => Err(EngineError::TooManySessions),
            };
        }
        self.metrics.sessions_active.set(self.store.len() as i64);
        info!(
            event = "session_adopt",
            user = session.identity.user.as_str(),
            session = session.id.as_str(),
            generation = stored.generation
        );
        self.schedule(&session).await;
        if stored.reseal {
            self.reseal(&session, &stored).await;
        }
        Ok(session)
    }

    /// Seals a record read with an older cluster key again with the current one.
    async fn reseal(&self, session: &Arc<Session>, stored: &Stored) {
        let Some((store, secrets)) = self.store_of(session) else {
            return;
        };
        let mut st = session.tokens.write().await;
        if st.generation != stored.generation {
            return;
        }
        if let Ok(true) = store
            .replace(secrets, stored.generation, &stored.record)
            .await
        {
            st.generation = stored.generation + 1;
            info!(event = "session_reseal", session = session.id.as_str());
        }
    }

    /// Brings a local session in line with its record on a call: marks it used everywhere,
    /// takes another replica's newer tokens, writes back tokens this replica could not store
    /// before, and ends it here if it ended elsewhere. While the store is down the local copy
    /// keeps serving (until its token needs a refresh).
    pub(super) async fn sync(&self, session: &Arc<Session>) -> Result<(), EngineError> {
        let Some((store, secrets)) = self.store_of(session) else {
            return Ok(());
        };
        let ttl = self.record_ttl(session, Instant::now());
        let stored = match store.touch(secrets, ttl).await {
            Ok(Some(generation)) => generation,
            Ok(None) => {
                self.evict(session, EndReason::EndedElsewhere).await;
                return Err(EngineError::SessionInvalid);
            }
            Err(e) => {
                warn!(event = "session_store", op = "touch", session = session.id.as_str(), error = %e);
                return Ok(());
            }
        };
        let mut st = session.tokens.write().await;
        if stored == st.generation || st.ended.is_some() {
            return Ok(());
        }
        let outcome = if stored > st.generation {
            self.reread(store, secrets, session, &mut st).await
        } else {
            // This replica refreshed while the store was away: its tokens are the live ones.
            let record = session.record(&st, Clocks::read());
            match store.replace(secrets, stored, &record).await {
                Ok(true) => {
                    st.generation = stored + 1;
                    Renewal::Adopted
                }
                Ok(false) => self.reread(store, secrets, session, &mut st).await,
                Err(_) => Renewal::StoreDown,
            }
        };
        drop(st);
        match outcome {
            Renewal::Gone => {
                self.evict(session, EndReason::EndedElsewhere).await;
                Err(EngineError::SessionInvalid)
            }
            Renewal::Unreadable { retired } => {
                self.evict(session, EndReason::Unreadable).await;
                Err(if retired {
                    EngineError::SessionKeyRetired
                } else {
                    EngineError::SessionInvalid
                })
            }
            _ => {
                self.schedule(session).await;
                Ok(())
            }
        }
    }

    /// Another replica's tokens, installed in `st`.
    fn take(&self, stored: &Stored, session: &Session, st: &mut TokenState) -> Renewal {
        st.adopt(&stored.record, Clocks::read(), stored.generation);
        st.refresh_at = self.first_refresh_at(session.mode, st);
        Renewal::Adopted
    }

    /// The record as stored now, installed in `st`.
    async fn reread(
        &self,
        store: &SharedSessions,
        secrets: &HandleSecrets,
        session: &Session,
        st: &mut TokenState,
    ) -> Renewal {
        match store.read(secrets).await {
            Ok(Some(stored)) => self.take(&stored, session, st),
            Ok(None) => Renewal::Gone,
            Err(e) => unreadable(&e),
        }
    }

    /// Logs a session out on every replica. Refused while the store is down: the handle would
    /// still work on the others.
    pub async fn close(&self, session: &Arc<Session>) -> Result<(), EngineError> {
        self.unshare(session).await?;
        self.evict(session, EndReason::Closed).await;
        Ok(())
    }

    /// Deletes a session's record (it ended for good). When the store is down the record
    /// stays until it expires, and the error says so.
    pub(super) async fn unshare(&self, session: &Session) -> Result<(), EngineError> {
        if let Some((store, secrets)) = self.store_of(session)
            && let Err(e) = store.delete(secrets).await
        {
            warn!(event = "session_store", op = "delete", session = session.id.as_str(), error = %e);
            return Err(EngineError::SessionStoreUnavailable);
        }
        Ok(())
    }

    /// One refresh through the shared store: under the session's lock there, from the stored
    /// tokens, written back with a compare-and-set on the generation. A replica that finds the
    /// lock taken waits for the holder's result and takes it.
    pub(super) async fn renew_shared(
        &self,
        store: &SharedSessions,
        secrets: &HandleSecrets,
        session: &Session,
        st: &mut TokenState,
    ) -> Renewal {
        // One name per attempt: a lock that lapsed and was taken again is never let go by the
        // attempt that held it before.
        let owner = format!("{}-{:016x}", self.owner, rand::random::<u64>());
        let deadline = Instant::now() + REFRESH_LOCK + Duration::from_secs(1);
        loop {
            match store.lock(secrets, &owner, REFRESH_LOCK).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(_) => return Renewal::StoreDown,
            }
            match store.generation(secrets).await {
                Ok(None) => return Renewal::Gone,
                Ok(Some(g)) if g > st.generation => {
                    return self.reread(store, secrets, session, st).await;
                }
                Ok(Some(_)) => {}
                Err(_) => return Renewal::StoreDown,
            }
            if Instant::now() >= deadline {
                return Renewal::Failed(IdpError::Unavailable(
                    "another replica's refresh did not finish".into(),
                ));
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
        let renewal = self.renew_locked(store, secrets, session, st).await;
        if let Err(e) = store.unlock(secrets, &owner).await {
            warn!(event = "session_store", op = "unlock", session = session.id.as_str(), error = %e);
        }
        renewal
    }

    async fn renew_locked(
        &self,
        store: &SharedSessions,
        secrets: &HandleSecrets,
        session: &Session,
        st: &mut TokenState,
    ) -> Renewal {
        let locked_at = Instant::now();
        let expected = match store.read(secrets).await {
            Ok(None) => return Renewal::Gone,
            Ok(Some(stored)) if stored.generation > st.generation => {
                return self.take(&stored, session, st);
            }
            // Equal: the stored tokens are ours. Older: ours are newer and were not stored.
            Ok(Some(stored)) => stored.generation,
            Err(e) => return unreadable(&e),
        };
        let grant = match self.grant(session, st).await {
            Ok(grant) => grant,
            Err(e) if e.is_final() => {
                // Refused: unless another replica stored newer tokens meanwhile (its lock
                // lapsed), the session is over.
                return match store.generation(secrets).await {
                    Ok(Some(g)) if g > expected => self.reread(store, secrets, session, st).await,
                    _ => Renewal::Failed(e),
                };
            }
            Err(e) => return Renewal::Failed(e),
        };
        self.install(session, st, &grant);
        let record = session.record(st, Clocks::read());
        // The refresh token in the store is spent now: keep trying to replace it, over any
        // generation a reseal or a write-back moved it to, while the lock is surely held.
        let mut expected = expected;
        while locked_at.elapsed() < WRITE_RETRIES {
            match store.replace(secrets, expected, &record).await {
                Ok(true) => {
                    st.generation = expected + 1;
                    return Renewal::Renewed(grant);
                }
                Ok(false) => match store.generation(secrets).await {
                    Ok(None) => return Renewal::Gone,
                    Ok(Some(g)) => {
                        expected = g;
                        continue;
                    }
                    Err(_) => {}
                },
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The new tokens live here; this replica's next call writes them back (`sync`).
        warn!(
            event = "session_store",
            op = "replace",
            session = session.id.as_str(),
            outcome = "not_stored"
        );
        Renewal::Renewed(grant)
    }
}
