//! Keeping a session's tokens fresh: the scheduler that wakes each session when its next step
//! is due (refresh, expire, idle out), the single-flight refresh, and the token every query
//! asks for. The decisions are `refresh`'s; this is their async shell.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sqe_engine_config::AuthMode;
use tokio::time::Instant;
use tracing::{info, warn};

use super::manager::{SessionManager, ms};
use super::refresh::{self, Job, Step, Timeline};
use super::sharing::Renewal;
use super::state::{EndReason, Session, TokenState};
use crate::auth::{IdpError, TokenGrant};
use crate::error::EngineError;
use crate::token::TokenView;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    Refreshed,
    /// Someone else refreshed first (single flight).
    AlreadyFresh,
    /// Transient failure; a retry is scheduled if one fits before expiry.
    WillRetry,
    /// The shared store could not be reached; a retry is scheduled.
    StoreUnavailable,
    Ended,
}

impl SessionManager {
    pub(super) fn first_refresh_at(&self, mode: AuthMode, t: &TokenState) -> Option<Instant> {
        let jitter = rand::random::<f64>() * 2.0 - 1.0;
        match mode {
            AuthMode::Bearer => None,
            AuthMode::Password if t.refresh_token().is_none() => None,
            _ => Some(refresh::refresh_at(
                t.obtained_at,
                t.expires_at,
                self.policy.refresh_buffer,
                jitter,
            )),
        }
    }

    pub(super) fn timeline(&self, s: &Session, t: &TokenState) -> Timeline {
        Timeline {
            absolute_deadline: s.absolute_deadline,
            idle_deadline: s.last_used() + self.policy.idle_timeout,
            token_expires_at: t.expires_at,
            refresh_at: t.refresh_at,
        }
    }

    pub(super) fn schedule_now(&self, s: &Session, now: Instant, timeline: &Option<Timeline>) {
        let Some(t) = timeline else { return };
        let at = match refresh::next_step(now, t) {
            Step::Wait(at) => at,
            Step::Refresh | Step::Expire(_) => now,
        };
        let seq = s.schedule_seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.queue.push(at, Job { key: s.key, seq });
    }

    pub(super) async fn schedule(&self, s: &Session) {
        let timeline = {
            let st = s.tokens.read().await;
            if st.ended.is_some() {
                return;
            }
            self.timeline(s, &st)
        };
        self.schedule_now(s, Instant::now(), &Some(timeline));
    }

    /// The session's current access token, waiting for an in-flight refresh and refreshing
    /// inline if the scheduler is late. Every query calls this before touching anything that
    /// needs the token.
    pub async fn token_for(&self, session: &Arc<Session>) -> Result<TokenView, EngineError> {
        for _ in 0..2 {
            let generation = {
                let st = session.tokens.read().await;
                if st.ended.is_some() {
                    return Err(EngineError::SessionInvalid);
                }
                if Instant::now() < st.expires_at {
                    return Ok(st.view(session.latest_token()));
                }
                st.generation
            };
            if session.mode == AuthMode::Bearer {
                self.end(session, EndReason::TokenExpired).await;
                return Err(EngineError::SessionInvalid);
            }
            match self.refresh(session, generation).await {
                RefreshOutcome::Ended => {
                    self.end(session, EndReason::TokenExpired).await;
                    return Err(EngineError::SessionInvalid);
                }
                // The stored session may still be refreshed once the store is back.
                RefreshOutcome::StoreUnavailable => {
                    return Err(EngineError::SessionStoreUnavailable);
                }
                _ => {}
            }
        }
        self.end(session, EndReason::TokenExpired).await;
        Err(EngineError::SessionInvalid)
    }

    /// One refresh of one session, single-flight: holds the token write lock for the IdP
    /// call, so concurrent requests wait for its result instead of racing it. A shared
    /// session refreshes under its lock in the store (`sharing`), so replicas do not race
    /// either.
    pub async fn refresh(
        &self,
        session: &Arc<Session>,
        observed_generation: u64,
    ) -> RefreshOutcome {
        let mut st = session.tokens.write().await;
        if st.ended.is_some() {
            return RefreshOutcome::Ended;
        }
        if st.generation != observed_generation {
            return RefreshOutcome::AlreadyFresh;
        }
        let started = Instant::now();
        let old_fp = st.fingerprint;
        let renewal = match (&self.shared, &session.shared) {
            (Some(store), Some(secrets)) => {
                self.renew_shared(store, secrets, session, &mut st).await
            }
            _ => match self.grant(session, &st).await {
                Ok(grant) => {
                    self.install(session, &mut st, &grant);
                    Renewal::Renewed(grant)
                }
                Err(e) => Renewal::Failed(e),
            },
        };
        let user = session.identity.user.as_str();
        let sid = session.id.as_str();
        match renewal {
            Renewal::Renewed(grant) => {
                self.metrics.refresh("ok");
                info!(
                    event = "refresh", user, session = sid, fp = %st.fingerprint, previous_fp = %old_fp, outcome = "ok",
                    token_lifetime_s = grant.expires_in.as_secs(), duration_ms = ms(started)
                );
                drop(st);
                self.schedule(session).await;
                RefreshOutcome::Refreshed
            }
            Renewal::Adopted => {
                info!(
                    event = "refresh", user, session = sid, fp = %st.fingerprint, previous_fp = %old_fp,
                    outcome = "adopted", duration_ms = ms(started)
                );
                drop(st);
                self.schedule(session).await;
                RefreshOutcome::AlreadyFresh
            }
            Renewal::Gone => {
                drop(st);
                self.evict(session, EndReason::EndedElsewhere).await;
                RefreshOutcome::Ended
            }
            Renewal::Unreadable { .. } => {
                drop(st);
                warn!(event = "refresh", user, session = sid, fp = %old_fp, outcome = "record_unreadable", duration_ms = ms(started));
                self.evict(session, EndReason::Unreadable).await;
                RefreshOutcome::Ended
            }
            Renewal::Failed(e) if e.is_final() => {
                st.ended = Some(EndReason::RefreshRejected);
                drop(st);
                self.metrics.refresh("rejected");
                warn!(event = "refresh", user, session = sid, fp = %old_fp, outcome = "rejected", error = %e, duration_ms = ms(started));
                self.end(session, EndReason::RefreshRejected).await;
                RefreshOutcome::Ended
            }
            transient => {
                let store_down = matches!(transient, Renewal::StoreDown);
                let now = Instant::now();
                st.failed_attempts += 1;
                st.refresh_at = refresh::retry_at(now, st.failed_attempts, st.expires_at);
                let retry_in_ms = st
                    .refresh_at
                    .map(|r| r.duration_since(now).as_millis() as u64);
                drop(st);
                let (label, error) = match &transient {
                    Renewal::Failed(e) => ("transient_error", e.to_string()),
                    _ => (
                        "store_unavailable",
                        "the session store is unavailable".into(),
                    ),
                };
                self.metrics.refresh(label);
                warn!(event = "refresh", user, session = sid, fp = %old_fp, outcome = label, error, retry_in_ms, duration_ms = ms(started));
                self.schedule(session).await;
                if store_down {
                    RefreshOutcome::StoreUnavailable
                } else {
                    RefreshOutcome::WillRetry
                }
            }
        }
    }

    /// New tokens from the IdP for this session's mode.
    pub(super) async fn grant(
        &self,
        session: &Session,
        st: &TokenState,
    ) -> Result<TokenGrant, IdpError> {
        match session.mode {
            AuthMode::Password => match st.refresh_token() {
                Some(rt) => self.issuer.refresh(rt).await,
                None => Err(IdpError::Rejected {
                    code: "no refresh token".into(),
                }),
            },
            AuthMode::ClientCredentials => match &session.renewal {
                Some(c) => {
                    self.issuer
                        .client_credentials(&c.client_id, &c.secret)
                        .await
                }
                None => Err(IdpError::Rejected {
                    code: "no client credentials".into(),
                }),
            },
            AuthMode::Bearer => Err(IdpError::Rejected {
                code: "bearer tokens cannot be refreshed".into(),
            }),
        }
    }

    /// Installs a grant's tokens and plans the next refresh.
    pub(super) fn install(&self, session: &Session, st: &mut TokenState, grant: &TokenGrant) {
        st.replace(
            grant.access_token.clone(),
            grant.refresh_token.clone(),
            Instant::now(),
            grant.expires_in,
        );
        st.refresh_at = self.first_refresh_at(session.mode, st);
    }

    pub async fn run_scheduler(self: Arc<Self>) {
        loop {
            for (due_at, job) in self.queue.pop_due().await {
                let mgr = self.clone();
                tokio::spawn(async move { mgr.on_due(due_at, job).await });
            }
        }
    }

    async fn on_due(&self, due_at: Instant, job: Job) {
        let Some(session) = self.store.get(&job.key) else {
            return;
        };
        if session.schedule_seq.load(Ordering::SeqCst) != job.seq {
            return;
        }
        let now = Instant::now();
        let (step, generation, refresh_at) = {
            let st = session.tokens.read().await;
            if st.ended.is_some() {
                return;
            }
            (
                refresh::next_step(now, &self.timeline(&session, &st)),
                st.generation,
                st.refresh_at,
            )
        };
        match step {
            Step::Expire(reason) => self.end(&session, reason).await,
            Step::Refresh => {
                let planned = refresh_at.unwrap_or(due_at);
                self.metrics
                    .refresh_lag
                    .observe(now.saturating_duration_since(planned).as_secs_f64());
                if self.refresh(&session, generation).await == RefreshOutcome::AlreadyFresh {
                    self.schedule(&session).await;
                }
            }
            Step::Wait(_) => self.schedule(&session).await,
        }
    }
}
