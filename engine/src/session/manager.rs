//! The session lifecycle: login, lookup, close (refresh and expiry are `scheduler`'s). Thin
//! async shell around the pure decisions in `refresh` and `auth::backoff`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sqe_engine_config::{AuthMode, EngineConfig};
use tokio::time::Instant;
use tracing::{info, warn};

use super::refresh::{self, DeadlineQueue, Job, Step};
use super::reuse::{BasicReuse, ReuseKey};
use super::seal::HandleSecrets;
use super::shared::SharedSessions;
use super::state::{
    EndReason, MachineClient, Session, SessionHandle, SessionKey, TokenState, mode_name,
};
use super::store::{SessionStore, StoreError};
use crate::auth::{BearerError, BearerValidator, LoginThrottle, remaining};
use crate::auth::{
    IdpError, TokenGrant, TokenIssuer, claim_at, identity_from_claims, unverified_claims,
};
use crate::context::QueryContextFactory;
use crate::error::EngineError;
use crate::metrics::Metrics;
use crate::secret::{Fingerprint, Secret};

#[derive(Debug, Clone)]
pub struct SessionPolicy {
    pub refresh_buffer: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub max_sessions: usize,
    pub max_sessions_per_user: usize,
    pub modes: Vec<AuthMode>,
    pub username_claim: String,
    pub roles_claim: String,
    /// The engine's own OIDC client: never accepted as a machine client's login.
    pub engine_client_id: String,
}

impl SessionPolicy {
    pub fn from_config(c: &EngineConfig) -> Self {
        Self {
            refresh_buffer: c.session.refresh_buffer(),
            idle_timeout: c.session.idle_timeout(),
            max_lifetime: c.session.max_lifetime(),
            max_sessions: c.session.max_sessions,
            max_sessions_per_user: c.session.max_sessions_per_user,
            modes: c.oidc.modes.clone(),
            username_claim: c.oidc.username_claim.clone(),
            roles_claim: c.oidc.roles_claim.clone(),
            engine_client_id: c.oidc.client_id.clone(),
        }
    }
}

pub struct SessionManager {
    pub(super) policy: SessionPolicy,
    pub(super) store: Arc<dyn SessionStore>,
    pub(super) issuer: Arc<dyn TokenIssuer>,
    pub(super) bearer: Option<Arc<BearerValidator>>,
    pub(super) throttle: LoginThrottle,
    pub(super) queue: DeadlineQueue<Job>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) factory: Arc<dyn QueryContextFactory>,
    pub(super) reuse: BasicReuse,
    /// The store every replica shares sessions through, if the cluster has one.
    pub(super) shared: Option<Arc<SharedSessions>>,
    /// This process, as the holder of a refresh lock in the shared store.
    pub(super) owner: String,
}

/// A session about to be opened, before it has tokens.
struct Opening {
    key: SessionKey,
    identity: crate::auth::Identity,
    mode: AuthMode,
    renewal: Option<MachineClient>,
    shared: Option<HandleSecrets>,
}

/// A username as logs show it: at most 64 characters, control characters replaced (the name
/// is whatever the client sent).
pub(super) fn loggable(user: &str) -> String {
    user.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

pub(super) fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

impl SessionManager {
    pub fn new(
        policy: SessionPolicy,
        store: Arc<dyn SessionStore>,
        issuer: Arc<dyn TokenIssuer>,
        bearer: Option<Arc<BearerValidator>>,
        metrics: Arc<Metrics>,
        factory: Arc<dyn QueryContextFactory>,
    ) -> Self {
        Self {
            policy,
            store,
            issuer,
            bearer,
            throttle: LoginThrottle::default(),
            queue: DeadlineQueue::default(),
            metrics,
            factory,
            reuse: BasicReuse::default(),
            shared: None,
            owner: format!("{:016x}", rand::random::<u64>()),
        }
    }

    /// Shares sessions with every replica through `store`.
    pub(crate) fn with_shared(mut self, store: SharedSessions) -> Self {
        self.shared = Some(Arc::new(store));
        self
    }

    pub fn with_throttle(mut self, throttle: LoginThrottle) -> Self {
        self.throttle = throttle;
        self
    }

    pub fn policy(&self) -> &SessionPolicy {
        &self.policy
    }

    pub fn active_sessions(&self) -> usize {
        self.store.len()
    }

    pub fn factory(&self) -> &dyn QueryContextFactory {
        self.factory.as_ref()
    }

    /// The mode a Basic login uses: the one asked for, else password if enabled, else client
    /// credentials.
    pub fn basic_mode(&self, requested: Option<AuthMode>) -> Result<AuthMode, EngineError> {
        let enabled = |m| self.policy.modes.contains(&m);
        match requested {
            Some(AuthMode::Bearer) => Err(EngineError::ModeNotEnabled(
                "bearer (send the JWT as a bearer instead)",
            )),
            Some(m) if enabled(m) => Ok(m),
            Some(m) => Err(EngineError::ModeNotEnabled(mode_name(m))),
            None if enabled(AuthMode::Password) => Ok(AuthMode::Password),
            None if enabled(AuthMode::ClientCredentials) => Ok(AuthMode::ClientCredentials),
            None => Err(EngineError::ModeNotEnabled("password")),
        }
    }

    /// Basic credentials → the user's own tokens → a new session. With `reuse`, the same
    /// credentials from the same source find the session they opened before (calls that send
    /// Basic on every request instead of the handle would otherwise each open a session and ask
    /// the IdP); a handshake never reuses, so each connection keeps its own session state.
    pub async fn login_basic(
        &self,
        username: &str,
        password: &Secret,
        peer: Option<IpAddr>,
        mode: AuthMode,
        reuse: bool,
    ) -> Result<(SessionHandle, Arc<Session>), EngineError> {
        let started = Instant::now();
        let mode_label = mode_name(mode);
        let reuse_key = reuse.then(|| self.reuse.key(mode, username, password, peer));
        if let Some(k) = &reuse_key
            && let Some((handle, session)) = self.reused(k).await
        {
            return Ok((handle, session));
        }
        let verdict = self.throttle.check(username, peer, started);
        self.take_turn(verdict, mode_label, |retry_after_s| {
            warn!(
                event = "login",
                mode = mode_label,
                user = loggable(username).as_str(),
                outcome = "throttled",
                retry_after_s
            )
        })
        .await?;
        self.ensure_capacity(mode_label, username)?;
        let empty = username.is_empty() || password.expose().is_empty();
        let grant = match mode {
            _ if empty => Err(IdpError::Rejected {
                code: "empty credentials".into(),
            }),
            AuthMode::Password => self.issuer.password(username, password).await,
            // The engine's own client is for the password grant only: a machine client logs in
            // as itself, and nobody gets the engine's service account.
            AuthMode::ClientCredentials
                if username.eq_ignore_ascii_case(&self.policy.engine_client_id) =>
            {
                Err(IdpError::Rejected {
                    code: "the engine's own client".into(),
                })
            }
            AuthMode::ClientCredentials => self.issuer.client_credentials(username, password).await,
            AuthMode::Bearer => return Err(EngineError::ModeNotEnabled("bearer")),
        };
        let grant = match grant {
            Ok(g) => g,
            Err(e) => return Err(self.login_failed(mode_label, username, peer, &e, started)),
        };
        self.throttle.record_success(username, peer);
        let claims = unverified_claims(grant.access_token.expose());
        let identity = identity_from_claims(
            claims.as_ref(),
            &self.policy.username_claim,
            &self.policy.roles_claim,
            username,
        );
        let renewal = (mode == AuthMode::ClientCredentials).then(|| MachineClient {
            client_id: username.to_string(),
            secret: password.clone(),
        });
        let handle = SessionHandle::generate();
        let shared = self.shared.as_ref().and_then(|_| handle.secrets());
        let opening = Opening {
            key: handle.key(),
            identity,
            mode,
            renewal,
            shared,
        };
        let session = self.open(opening, grant, started)?;
        self.publish(&session).await?;
        if let Some(k) = reuse_key {
            self.reuse.remember(k, &handle, self.policy.max_sessions);
        }
        Ok((handle, session))
    }

    /// The live session earlier Basic credentials opened, with its handle.
    async fn reused(&self, key: &ReuseKey) -> Option<(SessionHandle, Arc<Session>)> {
        let handle = self.reuse.handle(key)?;
        match self.lookup(&handle.key()).await {
            // Used, as any call with the handle: on every replica, and not if it ended on one.
            Ok(Some(session)) if self.sync(&session).await.is_ok() => Some((handle, session)),
            _ => {
                self.reuse.forget(key);
                None
            }
        }
    }

    /// A client-supplied JWT → its session (created on first sight, keyed by the JWT's hash).
    pub async fn login_bearer(
        &self,
        jwt: &str,
        peer: Option<IpAddr>,
    ) -> Result<Arc<Session>, EngineError> {
        let key = Fingerprint::of(jwt);
        if let Some(s) = self.lookup(&key).await? {
            return Ok(s);
        }
        let started = Instant::now();
        let Some(validator) = self.bearer.clone() else {
            self.metrics.login("bearer", "rejected");
            warn!(
                event = "login",
                mode = "bearer",
                outcome = "rejected",
                reason = "bearer mode not enabled"
            );
            return Err(EngineError::Unauthenticated);
        };
        let verdict = self.throttle.check_bearer(&key, peer, started);
        self.take_turn(verdict, "bearer", |retry_after_s| {
            warn!(
                event = "login",
                mode = "bearer",
                fp = %key,
                outcome = "throttled",
                retry_after_s
            )
        })
        .await?;
        self.ensure_capacity("bearer", "")?;
        let rejected = |reason: &str| {
            self.throttle.record_bearer_failure(key, peer, started);
            self.metrics.login("bearer", "rejected");
            warn!(
                event = "login",
                mode = "bearer",
                fp = %key,
                outcome = "rejected",
                reason,
                duration_ms = ms(started)
            );
            EngineError::Unauthenticated
        };
        let valid = match validator.validate(jwt).await {
            Ok(v) => v,
            Err(BearerError::Invalid(reason)) => return Err(rejected(reason)),
            Err(BearerError::Unavailable(detail)) => {
                self.metrics.login("bearer", "idp_unavailable");
                warn!(
                    event = "login",
                    mode = "bearer",
                    outcome = "idp_unavailable",
                    detail,
                    duration_ms = ms(started)
                );
                return Err(EngineError::IdpUnavailable);
            }
        };
        // Everything a session does is attributed to its user: a token that does not name one
        // is refused rather than run as an anonymous "unknown" shared by all such tokens.
        let Some(user) = claim_at(&valid.claims, &self.policy.username_claim)
            .and_then(serde_json::Value::as_str)
            .filter(|u| !u.trim().is_empty())
        else {
            return Err(rejected("no username claim"));
        };
        self.throttle.record_bearer_success(&key);
        let identity = identity_from_claims(
            Some(&valid.claims),
            &self.policy.username_claim,
            &self.policy.roles_claim,
            user,
        );
        let grant = TokenGrant {
            access_token: Secret::new(jwt),
            refresh_token: None,
            expires_in: remaining(valid.expires_at),
        };
        // A JWT is its own session on every replica (each validates it): nothing to share.
        let opening = Opening {
            key,
            identity,
            mode: AuthMode::Bearer,
            renewal: None,
            shared: None,
        };
        match self.open(opening, grant, started) {
            // Two first calls with the same JWT raced; the other one won.
            Err(EngineError::Internal(_)) => {
                self.lookup(&key).await?.ok_or(EngineError::SessionInvalid)
            }
            other => other,
        }
    }

    /// The session for a handle the client sent back, if it is still alive: this process's
    /// copy, checked against the shared store, or else the shared store's.
    pub async fn resolve(&self, handle: &str) -> Result<Arc<Session>, EngineError> {
        let key = Fingerprint::of(handle);
        if let Some(session) = self.lookup(&key).await? {
            self.sync(&session).await?;
            return Ok(session);
        }
        match (&self.shared, SessionHandle::secrets_of(handle)) {
            (Some(_), Some(secrets)) => self.adopt(key, secrets).await,
            _ => Err(EngineError::SessionInvalid),
        }
    }

    async fn lookup(&self, key: &SessionKey) -> Result<Option<Arc<Session>>, EngineError> {
        let Some(session) = self.store.get(key) else {
            return Ok(None);
        };
        let now = Instant::now();
        // A shared session this process let go of may live on in the store.
        let gone = || {
            if session.shared.is_some() {
                Ok(None)
            } else {
                Err(EngineError::SessionInvalid)
            }
        };
        let step = {
            let st = session.tokens.read().await;
            if st.ended.is_some() {
                return gone();
            }
            refresh::next_step(now, &self.timeline(&session, &st))
        };
        if let Step::Expire(reason) = step {
            // Expired tokens of refreshable sessions are handled by `token_for` (a late
            // scheduler must not cost the user the session).
            if reason != EndReason::TokenExpired || session.mode == AuthMode::Bearer {
                self.end(&session, reason).await;
                return if reason.ends_everywhere() {
                    Err(EngineError::SessionInvalid)
                } else {
                    gone()
                };
            }
        }
        session.touch(now);
        Ok(Some(session))
    }

    fn open(
        &self,
        opening: Opening,
        grant: TokenGrant,
        started: Instant,
    ) -> Result<Arc<Session>, EngineError> {
        let Opening {
            key,
            identity,
            mode,
            renewal,
            shared,
        } = opening;
        let mode_label = mode_name(mode);
        let held = self
            .store
            .all()
            .iter()
            .filter(|s| s.identity.quota_key() == identity.quota_key())
            .count();
        if held >= self.policy.max_sessions_per_user {
            self.metrics.login(mode_label, "too_many_sessions");
            warn!(
                event = "login",
                mode = mode_label,
                user = identity.user.as_str(),
                outcome = "too_many_sessions_for_user",
                max = self.policy.max_sessions_per_user
            );
            return Err(EngineError::TooManyUserSessions {
                max: self.policy.max_sessions_per_user,
            });
        }
        let now = Instant::now();
        let mut tokens = TokenState::new(
            grant.access_token,
            grant.refresh_token,
            now,
            grant.expires_in,
        );
        tokens.refresh_at = self.first_refresh_at(mode, &tokens);
        let fp = tokens.fingerprint;
        let session = Arc::new(
            Session::new(key, identity, mode, tokens, self.policy.max_lifetime)
                .with_renewal(renewal)
                .with_shared(shared),
        );
        match self.store.insert(session.clone(), self.policy.max_sessions) {
            Ok(()) => {}
            Err(StoreError::Full) => {
                self.metrics.login(mode_label, "too_many_sessions");
                return Err(EngineError::TooManySessions);
            }
            Err(StoreError::Duplicate) => {
                return Err(EngineError::Internal("duplicate session".into()));
            }
        }
        self.metrics.sessions_active.set(self.store.len() as i64);
        self.metrics.login(mode_label, "ok");
        info!(
            event = "login", mode = mode_label, user = session.identity.user.as_str(), session = session.id.as_str(),
            fp = %fp, outcome = "ok", token_lifetime_s = grant.expires_in.as_secs(), duration_ms = ms(started)
        );
        self.schedule_now(
            &session,
            now,
            &session
                .tokens
                .try_read()
                .map(|t| self.timeline(&session, &t))
                .ok(),
        );
        Ok(session)
    }

    /// The session's DataFusion context for its current token (rebuilt after a refresh).
    pub async fn context(
        &self,
        session: &Arc<Session>,
    ) -> Result<datafusion::prelude::SessionContext, EngineError> {
        let token = self.token_for(session).await?;
        session
            .query
            .context(self.factory(), &session.identity, &token)
    }

    /// Ends a session: on every replica when `reason` ends it everywhere (its shared record
    /// deleted, as well as the store allows), else only here.
    pub async fn end(&self, session: &Arc<Session>, reason: EndReason) {
        if reason.ends_everywhere() {
            // Ending here goes on: a record the store could not delete expires there.
            let _ = self.unshare(session).await;
        }
        self.evict(session, reason).await;
    }

    /// Takes a session out of this process: out of the local store, tokens unusable, query
    /// state dropped. A shared session's record is left to the other replicas.
    pub(super) async fn evict(&self, session: &Arc<Session>, reason: EndReason) {
        {
            let mut st = session.tokens.write().await;
            if st.ended.is_none() {
                st.ended = Some(reason);
            }
        }
        session.query.clear();
        session.mark_ended();
        if self.store.remove(&session.key).is_none() {
            return;
        }
        self.metrics.sessions_active.set(self.store.len() as i64);
        if session.shared.is_some() && !reason.ends_everywhere() {
            info!(
                event = "session_unload",
                user = session.identity.user.as_str(),
                session = session.id.as_str(),
                reason = reason.as_str()
            );
        } else {
            self.metrics
                .session_ends
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: reason.as_str(),
                })
                .inc();
            info!(
                event = "session_end",
                user = session.identity.user.as_str(),
                session = session.id.as_str(),
                reason = reason.as_str(),
                age_s = session.created.elapsed().as_secs()
            );
        }
    }

    /// Lets every session go (shutdown): shared sessions stay in the store for the other
    /// replicas.
    pub async fn end_all(&self, reason: EndReason) {
        for s in self.store.all() {
            self.end(&s, reason).await;
        }
    }
}
