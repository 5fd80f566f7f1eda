//! Slows down repeated failed logins, per username and per client address, so the IdP cannot
//! be brute-forced through the engine. A throttled attempt is refused before the IdP is asked.
//!
//! Counting is by the *attempted* username whether or not it exists, so the throttle itself
//! reveals nothing about which users exist.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Failures allowed before any delay (typos happen).
    pub free_failures: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A record with no failure for this long is forgotten.
    pub forget_after: Duration,
}

impl BackoffPolicy {
    pub const PER_USER: Self = Self {
        free_failures: 3,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(60),
        forget_after: Duration::from_secs(15 * 60),
    };
    /// Many users can share an address (NAT), so a peer gets more slack.
    pub const PER_PEER: Self = Self {
        free_failures: 20,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(60),
        forget_after: Duration::from_secs(15 * 60),
    };

    /// How long to refuse attempts after `failures` consecutive failures: nothing within the
    /// free allowance, then doubling from `base_delay` up to `max_delay`.
    pub fn delay_after(&self, failures: u32) -> Duration {
        if failures <= self.free_failures {
            return Duration::ZERO;
        }
        let exp = (failures - self.free_failures - 1).min(30);
        self.base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay)
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    blocked_until: Instant,
}

/// Bounded map: beyond this many records, forgotten ones are pruned first, so a flood of
/// random usernames cannot grow memory without bound.
const MAX_RECORDS: usize = 100_000;

struct Tracker<K> {
    policy: BackoffPolicy,
    records: Mutex<HashMap<K, Record>>,
}

impl<K: Eq + Hash + Clone> Tracker<K> {
    fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            records: Mutex::new(HashMap::new()),
        }
    }

    fn retry_after(&self, key: &K, now: Instant) -> Option<Duration> {
        let records = self.records.lock().ok()?;
        let r = records.get(key)?;
        (r.blocked_until > now).then(|| r.blocked_until - now)
    }

    fn fail(&self, key: K, now: Instant) {
        let Ok(mut records) = self.records.lock() else {
            return;
        };
        if records.len() >= MAX_RECORDS {
            let forget = self.policy.forget_after;
            records.retain(|_, r| now.duration_since(r.last_failure) < forget);
        }
        let forget = self.policy.forget_after;
        let r = records.entry(key).or_insert(Record {
            failures: 0,
            last_failure: now,
            blocked_until: now,
        });
        if now.duration_since(r.last_failure) >= forget {
            r.failures = 0;
        }
        r.failures = r.failures.saturating_add(1);
        r.last_failure = now;
        r.blocked_until = now + self.policy.delay_after(r.failures);
    }

    fn clear(&self, key: &K) {
        if let Ok(mut records) = self.records.lock() {
            records.remove(key);
        }
    }
}

pub struct LoginThrottle {
    users: Tracker<String>,
    peers: Tracker<IpAddr>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(BackoffPolicy::PER_USER, BackoffPolicy::PER_PEER)
    }
}

impl LoginThrottle {
    pub fn new(per_user: BackoffPolicy, per_peer: BackoffPolicy) -> Self {
        Self {
            users: Tracker::new(per_user),
            peers: Tracker::new(per_peer),
        }
    }

    /// `Err(retry_after)` if this user or this peer must wait.
    pub fn check(&self, user: &str, peer: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let by_user = self.users.retry_after(&normalize(user), now);
        let by_peer = peer.and_then(|p| self.peers.retry_after(&p, now));
        match by_user.max(by_peer) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    pub fn record_failure(&self, user: &str, peer: Option<IpAddr>, now: Instant) {
        self.users.fail(normalize(user), now);
        if let Some(p) = peer {
            self.peers.fail(p, now);
        }
    }

    /// A success clears the user's record; the peer's record decays on its own, so one
    /// valid account cannot be used to reset an address that is guessing others.
    pub fn record_success(&self, user: &str) {
        self.users.clear(&normalize(user));
    }
}

/// IdPs match usernames case-insensitively; so must the throttle, or `Alice`/`ALICE` would
/// each get a fresh allowance.
fn normalize(user: &str) -> String {
    user.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: BackoffPolicy = BackoffPolicy::PER_USER;

    #[test]
    fn the_first_failures_are_free_then_the_delay_doubles_up_to_a_cap() {
        assert_eq!(P.delay_after(0), Duration::ZERO);
        assert_eq!(P.delay_after(3), Duration::ZERO);
        assert_eq!(P.delay_after(4), Duration::from_secs(1));
        assert_eq!(P.delay_after(5), Duration::from_secs(2));
        assert_eq!(P.delay_after(6), Duration::from_secs(4));
        assert_eq!(P.delay_after(50), Duration::from_secs(60));
        assert_eq!(P.delay_after(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn a_user_is_blocked_after_repeated_failures_whatever_the_case() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..4 {
            assert!(t.check("mallory", None, now).is_ok());
            t.record_failure("mallory", None, now);
        }
        assert_eq!(t.check("MALLORY", None, now), Err(Duration::from_secs(1)));
        assert!(
            t.check("mallory", None, now + Duration::from_secs(1))
                .is_ok()
        );
        // Other users are unaffected.
        assert!(t.check("alice", None, now).is_ok());
    }

    #[test]
    fn success_clears_the_user_but_not_the_peer() {
        let peer: IpAddr = "10.0.0.7".parse().unwrap();
        let t = LoginThrottle::new(
            P,
            BackoffPolicy {
                free_failures: 1,
                ..P
            },
        );
        let now = Instant::now();
        t.record_failure("u1", Some(peer), now);
        t.record_failure("u2", Some(peer), now);
        assert!(t.check("someone-else", Some(peer), now).is_err());
        t.record_success("u2");
        assert!(t.check("someone-else", Some(peer), now).is_err());
        assert!(t.check("someone-else", None, now).is_ok());
    }

    #[test]
    fn old_failures_are_forgotten() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..10 {
            t.record_failure("bob", None, now);
        }
        let later = now + P.forget_after + Duration::from_secs(61);
        assert!(t.check("bob", None, later).is_ok());
        t.record_failure("bob", None, later);
        assert!(
            t.check("bob", None, later).is_ok(),
            "the count restarted from zero"
        );
    }
}
