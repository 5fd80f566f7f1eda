//! A session as the shared store keeps it: everything another replica needs to serve it, with
//! wall-clock times (a process's `Instant`s mean nothing in another pod). It leaves the process
//! only sealed (`seal`), and its `Debug` shows no token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sqe_engine_config::AuthMode;
use tokio::time::Instant;

use crate::auth::Identity;
use crate::secret::Secret;

#[derive(Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct SessionRecord {
    /// The id logs show (not the handle, not the store's key).
    pub(crate) id: String,
    pub(crate) user: String,
    pub(crate) roles: Vec<String>,
    pub(crate) subject: Option<String>,
    pub(crate) mode: AuthMode,
    pub(crate) access: String,
    pub(crate) refresh: Option<String>,
    /// A client-credentials session's own client, to fetch its next token.
    pub(crate) machine: Option<(String, String)>,
    pub(crate) obtained_at_ms: u64,
    pub(crate) expires_at_ms: u64,
    pub(crate) absolute_deadline_ms: u64,
    pub(crate) last_used_ms: u64,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("mode", &self.mode)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

impl SessionRecord {
    pub(crate) fn identity(&self) -> Identity {
        Identity {
            user: self.user.clone(),
            roles: self.roles.clone(),
            subject: self.subject.clone(),
        }
    }

    pub(crate) fn access(&self) -> Secret {
        Secret::new(self.access.clone())
    }

    pub(crate) fn refresh(&self) -> Option<Secret> {
        self.refresh.clone().map(Secret::new)
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// One reading of both clocks, to carry times between this process's `Instant`s and the
/// wall-clock milliseconds every replica shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clocks {
    pub(crate) now: Instant,
    pub(crate) wall_ms: u64,
}

impl Clocks {
    pub(crate) fn read() -> Self {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self {
            now: Instant::now(),
            wall_ms,
        }
    }

    /// `at` as wall-clock milliseconds.
    pub(crate) fn wall(&self, at: Instant) -> u64 {
        if at >= self.now {
            let ahead = u64::try_from(at.duration_since(self.now).as_millis()).unwrap_or(u64::MAX);
            self.wall_ms.saturating_add(ahead)
        } else {
            let behind = u64::try_from(self.now.duration_since(at).as_millis()).unwrap_or(u64::MAX);
            self.wall_ms.saturating_sub(behind)
        }
    }

    /// Wall-clock `ms` as this process's `Instant` (a time before the process could count is
    /// its earliest instant: it has passed either way).
    pub(crate) fn instant(&self, ms: u64) -> Instant {
        if ms >= self.wall_ms {
            self.now + Duration::from_millis(ms - self.wall_ms)
        } else {
            let behind = Duration::from_millis(self.wall_ms - ms);
            self.now
                .checked_sub(behind)
                .unwrap_or(self.now - self.now.elapsed())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SessionRecord {
        SessionRecord {
            id: "0123456789abcdef".into(),
            user: "alice".into(),
            roles: vec!["analyst".into()],
            subject: Some("f1d2".into()),
            mode: AuthMode::Password,
            access: "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln".into(),
            refresh: Some("eyJyZWZyZXNoIjp0cnVlfQ".into()),
            machine: None,
            obtained_at_ms: 1_000,
            expires_at_ms: 301_000,
            absolute_deadline_ms: 36_001_000,
            last_used_ms: 2_000,
        }
    }

    #[test]
    fn a_record_survives_the_trip_and_its_debug_shows_no_token() {
        let r = record();
        let back = SessionRecord::from_bytes(&r.to_bytes()).unwrap();
        assert!(back == r);
        assert_eq!(back.identity().quota_key(), "sub:f1d2");
        let shown = format!("{r:?}");
        assert!(!shown.contains("eyJ"), "{shown}");
        assert!(SessionRecord::from_bytes(b"{\"id\": 1}").is_none());
    }

    #[test]
    fn times_carry_between_instants_and_the_wall_clock() {
        let clocks = Clocks {
            now: Instant::now(),
            wall_ms: 10_000_000,
        };
        let later = clocks.now + Duration::from_secs(300);
        assert_eq!(clocks.wall(later), 10_300_000);
        assert_eq!(clocks.instant(10_300_000), later);
        let earlier = clocks.now - Duration::from_millis(1);
        assert_eq!(clocks.wall(earlier), 9_999_999);
        // Another replica's reading, a second later on the wall: the same deadline.
        let there = Clocks {
            now: clocks.now + Duration::from_secs(1),
            wall_ms: 10_001_000,
        };
        assert_eq!(there.instant(clocks.wall(later)), later);
        // Long before this process could count: already past.
        assert!(clocks.instant(0) <= clocks.now);
    }
}
