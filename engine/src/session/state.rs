//! A session itself: its handle, the user's tokens, how it ends.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures::FutureExt;
use rand::RngCore;
use sqe_engine_config::AuthMode;
use tokio::time::Instant;

use super::record::{Clocks, SessionRecord};
use super::seal::HandleSecrets;
use crate::auth::Identity;
use crate::context::QueryState;
use crate::error::EngineError;
use crate::secret::{Fingerprint, Secret};
use crate::token::{LatestToken, TokenView};

/// Sessions are found by the SHA-256 of the credential the client presents (a session handle,
/// or in bearer mode the JWT itself).
pub type SessionKey = Fingerprint;

/// Session handles start with this, so they can never be mistaken for a JWT (which has dots).
pub const HANDLE_PREFIX: &str = "sqe_";

/// The opaque bearer the engine hands out after a login: a 128-bit session id and a 256-bit
/// record secret (`seal::HandleSecrets`), 384 random bits in all. It is not the IdP token and
/// says nothing about the user.
pub struct SessionHandle(Secret);

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionHandle(<redacted>)")
    }
}

impl SessionHandle {
    pub fn generate() -> Self {
        let secrets = HandleSecrets::generate();
        let bytes = [&secrets.sid[..], &secrets.record[..]].concat();
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Self(Secret::new(format!("{HANDLE_PREFIX}{encoded}")))
    }

    /// The session id and record secret this handle carries; `None` for anything that is not
    /// one of this engine's handles.
    pub(crate) fn secrets(&self) -> Option<HandleSecrets> {
        Self::secrets_of(self.0.expose())
    }

    /// The secrets of a handle as the client sent it.
    pub(crate) fn secrets_of(handle: &str) -> Option<HandleSecrets> {
        let encoded = handle.strip_prefix(HANDLE_PREFIX)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .ok()?;
        let (sid, record) = bytes.split_at_checked(16)?;
        Some(HandleSecrets {
            sid: sid.try_into().ok()?,
            record: record.try_into().ok()?,
        })
    }

    pub fn key(&self) -> SessionKey {
        self.0.fingerprint()
    }

    pub fn secret(&self) -> &Secret {
        &self.0
    }

    pub(crate) fn from_secret(secret: Secret) -> Self {
        Self(secret)
    }

    pub fn is_handle(candidate: &str) -> bool {
        candidate.starts_with(HANDLE_PREFIX)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Closed,
    IdleTimeout,
    MaxLifetime,
    TokenExpired,
    RefreshRejected,
    Shutdown,
    /// Its record left the shared store: closed, revoked or idle on every replica.
    EndedElsewhere,
    /// Its record does not open on this replica (a cluster key it does not have).
    Unreadable,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Closed => "closed",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::MaxLifetime => "max_lifetime",
            EndReason::TokenExpired => "token_expired",
            EndReason::RefreshRejected => "refresh_rejected",
            EndReason::Shutdown => "shutdown",
            EndReason::EndedElsewhere => "ended_elsewhere",
            EndReason::Unreadable => "record_unreadable",
        }
    }

    /// Whether a shared session ending this way ends on every replica (its record deleted), or
    /// only leaves this process (idle here, token lapsed here, shutdown), so another replica
    /// can still serve it.
    pub fn ends_everywhere(self) -> bool {
        matches!(
            self,
            EndReason::Closed | EndReason::RefreshRejected | EndReason::MaxLifetime
        )
    }
}

pub fn mode_name(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::Password => "password",
        AuthMode::ClientCredentials => "client_credentials",
        AuthMode::Bearer => "bearer",
    }
}

/// The token part of a session; guarded by an async RwLock whose write side is held for the
/// whole of a refresh, so a request arriving mid-refresh waits for the new token.
#[derive(Debug)]
pub struct TokenState {
    access: Secret,
    refresh: Option<Secret>,
    pub obtained_at: Instant,
    pub expires_at: Instant,
    pub fingerprint: Fingerprint,
    /// Bumped on every new token; a refresh started for an old generation is a no-op.
    pub generation: u64,
    pub refresh_at: Option<Instant>,
    pub failed_attempts: u32,
    pub ended: Option<EndReason>,
}

impl TokenState {
    pub fn new(
        access: Secret,
        refresh: Option<Secret>,
        obtained_at: Instant,
        lifetime: Duration,
    ) -> Self {
        Self {
            fingerprint: access.fingerprint(),
            access,
            refresh,
            obtained_at,
            expires_at: obtained_at + lifetime,
            generation: 0,
            refresh_at: None,
            failed_attempts: 0,
            ended: None,
        }
    }

    pub fn view(&self, latest: LatestToken) -> TokenView {
        TokenView {
            access_token: self.access.clone(),
            fingerprint: self.fingerprint,
            latest,
        }
    }

    pub fn refresh_token(&self) -> Option<&Secret> {
        self.refresh.as_ref()
    }

    /// Tokens as a shared record holds them, at the record's generation.
    pub(super) fn from_record(record: &SessionRecord, clocks: Clocks, generation: u64) -> Self {
        let mut st = Self::new(
            record.access(),
            record.refresh(),
            clocks.now,
            Duration::ZERO,
        );
        st.adopt(record, clocks, generation);
        st
    }

    /// Takes another replica's tokens (its refresh, a reseal) from the record.
    pub(super) fn adopt(&mut self, record: &SessionRecord, clocks: Clocks, generation: u64) {
        self.access = record.access();
        self.refresh = record.refresh();
        self.fingerprint = self.access.fingerprint();
        self.obtained_at = clocks.instant(record.obtained_at_ms);
        self.expires_at = clocks.instant(record.expires_at_ms);
        self.generation = generation;
        self.failed_attempts = 0;
    }

    /// Installs a new token pair; everything keyed by the old fingerprint is now stale.
    pub(super) fn replace(
        &mut self,
        access: Secret,
        refresh: Option<Secret>,
        now: Instant,
        lifetime: Duration,
    ) {
        self.fingerprint = access.fingerprint();
        self.access = access;
        if refresh.is_some() {
            self.refresh = refresh;
        }
        self.obtained_at = now;
        self.expires_at = now + lifetime;
        self.generation += 1;
        self.failed_attempts = 0;
    }
}

/// A machine client's own credentials, kept for the session's life to fetch its next token
/// (client-credentials grants come without a refresh token).
pub struct MachineClient {
    pub client_id: String,
    pub secret: Secret,
}

pub struct Session {
    /// Random id for logs; unrelated to the handle.
    pub id: String,
    pub identity: Identity,
    pub mode: AuthMode,
    pub(crate) key: SessionKey,
    pub created: Instant,
    pub absolute_deadline: Instant,
    last_used: Mutex<Instant>,
    pub(crate) tokens: tokio::sync::RwLock<TokenState>,
    /// Only the newest scheduled wake-up for this session counts.
    pub(crate) schedule_seq: AtomicU64,
    pub query: QueryState,
    /// Client-credentials sessions: how to get the next token.
    pub(crate) renewal: Option<MachineClient>,
    /// Turns true when the session ends: its running queries stop with it.
    ended: tokio::sync::watch::Sender<bool>,
    /// The handle's secrets when the session also lives in the shared store.
    pub(crate) shared: Option<HandleSecrets>,
}

/// Only what logs may show: never a token or the handle.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("user", &self.identity.user)
            .field("mode", &self.mode)
            .field("fp", &self.fingerprint_now())
            .finish()
    }
}

impl Session {
    pub fn new(
        key: SessionKey,
        identity: Identity,
        mode: AuthMode,
        tokens: TokenState,
        max_lifetime: Duration,
    ) -> Self {
        let now = Instant::now();
        Self {
            id: format!("{:016x}", rand::rng().next_u64()),
            identity,
            mode,
            key,
            created: now,
            absolute_deadline: now + max_lifetime,
            last_used: Mutex::new(now),
            tokens: tokio::sync::RwLock::new(tokens),
            schedule_seq: AtomicU64::new(0),
            query: QueryState::default(),
            renewal: None,
            ended: tokio::sync::watch::Sender::new(false),
            shared: None,
        }
    }

    /// The same session as another replica opened it: its log id and deadline.
    pub(crate) fn opened_as(mut self, id: String, absolute_deadline: Instant) -> Self {
        self.id = id;
        self.absolute_deadline = absolute_deadline;
        self
    }

    pub(crate) fn with_shared(mut self, shared: Option<HandleSecrets>) -> Self {
        self.shared = shared;
        self
    }

    /// Resolves when the session has ended (closed, expired, revoked, shut down).
    pub fn ending(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut ended = self.ended.subscribe();
        async move {
            let _ = ended.wait_for(|e| *e).await;
        }
    }

    /// Stops everything waiting on [`Self::ending`].
    pub(crate) fn mark_ended(&self) {
        self.ended.send_replace(true);
    }

    pub(crate) fn with_renewal(mut self, renewal: Option<MachineClient>) -> Self {
        self.renewal = renewal;
        self
    }

    pub fn touch(&self, now: Instant) {
        if let Ok(mut t) = self.last_used.lock()
            && now > *t
        {
            *t = now;
        }
    }

    pub fn last_used(&self) -> Instant {
        self.last_used.lock().map(|t| *t).unwrap_or(self.created)
    }

    /// The session's token whenever a running query asks for it (refreshed in the background
    /// meanwhile). Holds the session weakly: a query never keeps a closed session alive.
    pub fn latest_token(self: &Arc<Self>) -> LatestToken {
        let session = Arc::downgrade(self);
        LatestToken::new(move || {
            let session = session.clone();
            async move {
                let session = session.upgrade().ok_or(EngineError::SessionInvalid)?;
                let st = session.tokens.read().await;
                if st.ended.is_some() || Instant::now() >= st.expires_at {
                    return Err(EngineError::SessionInvalid);
                }
                Ok(st.access.clone())
            }
            .boxed()
        })
    }

    /// The session as the shared store keeps it, with `tokens` as they are now.
    pub(super) fn record(&self, tokens: &TokenState, clocks: Clocks) -> SessionRecord {
        SessionRecord {
            id: self.id.clone(),
            user: self.identity.user.clone(),
            roles: self.identity.roles.clone(),
            subject: self.identity.subject.clone(),
            mode: self.mode,
            access: tokens.access.expose().to_string(),
            refresh: tokens.refresh.as_ref().map(|r| r.expose().to_string()),
            machine: self
                .renewal
                .as_ref()
                .map(|m| (m.client_id.clone(), m.secret.expose().to_string())),
            obtained_at_ms: clocks.wall(tokens.obtained_at),
            expires_at_ms: clocks.wall(tokens.expires_at),
            absolute_deadline_ms: clocks.wall(self.absolute_deadline),
            last_used_ms: clocks.wall(self.last_used()),
        }
    }

    /// The current fingerprint without waiting (for logs).
    pub fn fingerprint_now(&self) -> Option<Fingerprint> {
        self.tokens.try_read().ok().map(|t| t.fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_long_random_and_distinct_from_jwts() {
        let a = SessionHandle::generate();
        let b = SessionHandle::generate();
        assert_ne!(a.secret().expose(), b.secret().expose());
        let raw = a.secret().expose();
        assert!(SessionHandle::is_handle(raw));
        assert!(!raw.contains('.'));
        // 48 bytes → 64 base64url characters: 384 bits.
        assert_eq!(raw.len(), HANDLE_PREFIX.len() + 64);
        let secrets = a.secrets().unwrap();
        assert_ne!(secrets.sid, b.secrets().unwrap().sid);
        assert!(
            SessionHandle::from_secret(Secret::new("sqe_short"))
                .secrets()
                .is_none()
        );
        assert_eq!(a.key(), Fingerprint::of(raw));
        assert!(!SessionHandle::is_handle("eyJhbGciOiJSUzI1NiJ9.e30.sig"));
    }
}
