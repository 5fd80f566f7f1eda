//! The checks a login passes before and after asking the IdP: its turn under the login
//! throttle, room for another session, and what a failed login is counted and logged as.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use super::manager::{SessionManager, loggable, ms};
use crate::auth::IdpError;
use crate::error::EngineError;

fn secs_ceil(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl SessionManager {
    /// Waits for a paced login's turn; a throttled one is counted, logged by `log` (given the
    /// seconds to wait) and refused.
    pub(super) async fn take_turn(
        &self,
        verdict: Result<Duration, Duration>,
        mode: &'static str,
        log: impl FnOnce(u64),
    ) -> Result<(), EngineError> {
        match verdict {
            Ok(pause) => {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                Ok(())
            }
            Err(wait) => {
                self.metrics.login(mode, "throttled");
                log(secs_ceil(wait));
                Err(EngineError::LoginThrottled {
                    retry_after_secs: secs_ceil(wait),
                })
            }
        }
    }

    pub(super) fn ensure_capacity(
        &self,
        mode: &'static str,
        user: &str,
    ) -> Result<(), EngineError> {
        if self.store.len() >= self.policy.max_sessions {
            self.metrics.login(mode, "too_many_sessions");
            warn!(
                event = "login",
                mode,
                user = loggable(user).as_str(),
                outcome = "too_many_sessions",
                max = self.policy.max_sessions
            );
            return Err(EngineError::TooManySessions);
        }
        Ok(())
    }

    pub(super) fn login_failed(
        &self,
        mode: &'static str,
        user: &str,
        peer: Option<IpAddr>,
        e: &IdpError,
        started: Instant,
    ) -> EngineError {
        // Records are keyed by at most 128 characters: a username is the attacker's to choose.
        let user = user.chars().take(128).collect::<String>();
        let user = user.as_str();
        let shown = loggable(user);
        match e {
            IdpError::Rejected { code } => {
                self.throttle.record_failure(user, peer, started);
                self.metrics.login(mode, "rejected");
                warn!(
                    event = "login",
                    mode,
                    user = shown.as_str(),
                    outcome = "rejected",
                    idp_error = code.as_str(),
                    duration_ms = ms(started)
                );
                EngineError::Unauthenticated
            }
            IdpError::Unavailable(detail) => {
                self.metrics.login(mode, "idp_unavailable");
                warn!(
                    event = "login",
                    mode,
                    user = shown.as_str(),
                    outcome = "idp_unavailable",
                    detail = detail.as_str(),
                    duration_ms = ms(started)
                );
                EngineError::IdpUnavailable
            }
            IdpError::Misconfigured(detail) => {
                self.metrics.login(mode, "idp_misconfigured");
                tracing::error!(
                    event = "login",
                    mode,
                    user = shown.as_str(),
                    outcome = "idp_misconfigured",
                    detail = detail.as_str(),
                    duration_ms = ms(started)
                );
                EngineError::IdpMisconfigured
            }
        }
    }
}
