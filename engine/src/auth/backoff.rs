//! Slows down repeated failed logins, per (username, client address) and per client address, so
//! the IdP cannot be brute-forced through the engine and a stranger cannot lock a user out.
//!
//! - A (username, address) that keeps failing is refused before the IdP is asked, for a while:
//!   it is that account being guessed from that address.
//! - An address that keeps failing for any usernames is *paced*, not refused: its logins wait
//!   their turn, one per interval, and then go to the IdP as usual, so a user behind a busy NAT
//!   (or behind a load balancer that hides client addresses) is delayed, never locked out. Only
//!   a flood — more logins waiting from one address than [`MAX_PACED`] — is refused.
//! - IPv6 addresses count per /64, the block one subscriber usually holds.
//!
//! Counting is by the *attempted* username whether or not it exists, so the throttle itself
//! reveals nothing about which users exist.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::secret::Fingerprint;

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
    /// A token that failed validation stays invalid: after one retry, it waits.
    pub const PER_TOKEN: Self = Self {
        free_failures: 1,
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
    /// When the next paced attempt may go (addresses only).
    next_turn: Instant,
}

/// The longest interval between two paced logins from one address.
pub const MAX_PACE: Duration = Duration::from_secs(1);
/// Paced logins that may wait at once from one address; one more is refused.
pub const MAX_PACED: u32 = 16;

/// Hard cap per kind of record: at the cap, forgotten records are pruned first and then the
/// oldest, so a flood of random usernames or tokens cannot grow memory without bound.
const MAX_RECORDS: usize = 100_000;

struct Tracker<K> {
    policy: BackoffPolicy,
    capacity: usize,
    records: Mutex<HashMap<K, Record>>,
}

impl<K: Eq + Hash + Clone> Tracker<K> {
    fn new(policy: BackoffPolicy, capacity: usize) -> Self {
        Self {
            policy,
            capacity: capacity.max(1),
            records: Mutex::new(HashMap::new()),
        }
    }

    /// How long an attempt under `key` waits for its turn: `Ok(ZERO)` while the key has its
    /// free failures left, then one attempt per interval (the policy's delay, at most
    /// [`MAX_PACE`]); `Err(retry_after)` when [`MAX_PACED`] attempts are waiting already.
    fn take_turn(&self, key: &K, now: Instant) -> Result<Duration, Duration> {
        let Ok(mut records) = self.records.lock() else {
            return Ok(Duration::ZERO);
        };
        let Some(r) = records.get_mut(key) else {
            return Ok(Duration::ZERO);
        };
        if now.duration_since(r.last_failure) >= self.policy.forget_after {
            return Ok(Duration::ZERO);
        }
        let interval = self.policy.delay_after(r.failures).min(MAX_PACE);
        if interval.is_zero() {
            return Ok(Duration::ZERO);
        }
        let turn = r.next_turn.max(now);
        let wait = turn - now;
        if wait >= interval.saturating_mul(MAX_PACED) {
            return Err(wait);
        }
        r.next_turn = turn + interval;
        Ok(wait)
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
        if records.len() >= self.capacity && !records.contains_key(&key) {
            let forget = self.policy.forget_after;
            records.retain(|_, r| now.duration_since(r.last_failure) < forget);
            while records.len() >= self.capacity {
                let Some(oldest) = records
                    .iter()
                    .min_by_key(|(_, r)| r.last_failure)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                records.remove(&oldest);
            }
        }
        let forget = self.policy.forget_after;
        let r = records.entry(key).or_insert(Record {
            failures: 0,
            last_failure: now,
            blocked_until: now,
            next_turn: now,
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

    #[cfg(test)]
    fn len(&self) -> usize {
        self.records.lock().map(|r| r.len()).unwrap_or(0)
    }
}

/// Where a login came from; `None` when the transport has no peer address (a Unix socket, or
/// tests), which is then one source of its own.
pub type Source = Option<IpAddr>;

/// Failed logins, counted so that a stranger cannot lock a user out and one bad token cannot
/// lock out everyone:
/// - Basic logins per (user, source): guessing alice's password from one address slows down
///   that address's attempts at alice, not alice's logins from anywhere else;
/// - every failure per source as well, with more slack (many users share a NAT), so one address
///   guessing many users is slowed too;
/// - bearer logins per source and per token fingerprint, never under a shared name.
pub struct LoginThrottle {
    user_source: Tracker<(String, Source)>,
    sources: Tracker<Source>,
    tokens: Tracker<Fingerprint>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(BackoffPolicy::PER_USER, BackoffPolicy::PER_PEER)
    }
}

impl LoginThrottle {
    pub fn new(per_user: BackoffPolicy, per_peer: BackoffPolicy) -> Self {
        Self::with_capacity(per_user, per_peer, MAX_RECORDS)
    }

    /// The same with at most `capacity` records per kind (tests use a small one).
    pub fn with_capacity(
        per_user: BackoffPolicy,
        per_peer: BackoffPolicy,
        capacity: usize,
    ) -> Self {
        Self {
            user_source: Tracker::new(per_user, capacity),
            sources: Tracker::new(per_peer, capacity),
            tokens: Tracker::new(BackoffPolicy::PER_TOKEN, capacity),
        }
    }

    /// `Ok(pause)`: ask the IdP after `pause` (this source's turn); `Err(retry_after)`: this
    /// user from this source must wait, or this source has too many logins waiting.
    pub fn check(&self, user: &str, source: Source, now: Instant) -> Result<Duration, Duration> {
        let source = group(source);
        if let Some(w) = self
            .user_source
            .retry_after(&(normalize(user), source), now)
        {
            return Err(w);
        }
        self.sources.take_turn(&source, now)
    }

    pub fn record_failure(&self, user: &str, source: Source, now: Instant) {
        let source = group(source);
        self.user_source.fail((normalize(user), source), now);
        self.sources.fail(source, now);
    }

    /// A success clears this user's record at this source; the source's own record decays on
    /// its own, so one valid account cannot reset an address that is guessing others.
    pub fn record_success(&self, user: &str, source: Source) {
        self.user_source.clear(&(normalize(user), group(source)));
    }

    /// As [`Self::check`], for a token: this very token must wait, or this source is paced.
    pub fn check_bearer(
        &self,
        token: &Fingerprint,
        source: Source,
        now: Instant,
    ) -> Result<Duration, Duration> {
        if let Some(w) = self.tokens.retry_after(token, now) {
            return Err(w);
        }
        self.sources.take_turn(&group(source), now)
    }

    pub fn record_bearer_failure(&self, token: Fingerprint, source: Source, now: Instant) {
        self.tokens.fail(token, now);
        self.sources.fail(group(source), now);
    }

    pub fn record_bearer_success(&self, token: &Fingerprint) {
        self.tokens.clear(token);
    }
}

/// The address a throttle counts: IPv4 as it is, IPv6 by its /64 (one subscriber's block;
/// counting single addresses would give each of its 2^64 a fresh allowance).
fn group(source: Source) -> Source {
    match source.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V6(v6)) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            Some(IpAddr::V6(std::net::Ipv6Addr::from(octets)))
        }
        other => other,
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

    const HOME: Source = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const STRANGER: Source = Some(IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9)));

    #[test]
    fn a_user_is_slowed_down_at_the_guessing_source_whatever_the_case() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..4 {
            assert!(t.check("mallory", STRANGER, now).is_ok());
            t.record_failure("mallory", STRANGER, now);
        }
        assert_eq!(
            t.check("MALLORY", STRANGER, now),
            Err(Duration::from_secs(1))
        );
        assert!(
            t.check("mallory", STRANGER, now + Duration::from_secs(1))
                .is_ok()
        );
        // Other users are unaffected.
        assert!(t.check("alice", STRANGER, now).is_ok());
    }

    #[test]
    fn a_stranger_guessing_alices_password_does_not_lock_alice_out() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..10 {
            t.record_failure("alice", STRANGER, now);
        }
        assert!(t.check("alice", STRANGER, now).is_err());
        assert!(
            t.check("alice", HOME, now).is_ok(),
            "alice's own address is not refused"
        );
    }

    #[test]
    fn one_source_guessing_many_users_is_paced_not_refused() {
        let t = LoginThrottle::new(
            P,
            BackoffPolicy {
                free_failures: 3,
                ..P
            },
        );
        let now = Instant::now();
        for u in ["u1", "u2", "u3", "u4"] {
            t.record_failure(u, STRANGER, now);
        }
        // Logins from that address take turns, one interval apart, and then go to the IdP.
        for turn in 0..MAX_PACED {
            let pause = t.check("anyone", STRANGER, now).unwrap();
            assert_eq!(pause, MAX_PACE * turn);
        }
        // Only a flood is refused; other addresses are untouched.
        assert!(t.check("u5", STRANGER, now).is_err());
        assert_eq!(t.check("u5", HOME, now), Ok(Duration::ZERO));
        // Turns come back as time passes.
        let later = now + MAX_PACE * (MAX_PACED + 1);
        assert_eq!(t.check("u5", STRANGER, later), Ok(Duration::ZERO));
    }

    #[test]
    fn ipv6_sources_count_per_64_block() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        let at = |last: u16| {
            Some(IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001, 0xdb8, 1, 2, 0, 0, 0, last,
            )))
        };
        let other_block = Some(IpAddr::V6(std::net::Ipv6Addr::new(
            0x2001, 0xdb8, 1, 3, 0, 0, 0, 1,
        )));
        for i in 0..10 {
            t.record_failure("alice", at(i), now);
        }
        assert!(
            t.check("alice", at(999), now).is_err(),
            "a new address in the same /64"
        );
        assert!(t.check("alice", other_block, now).is_ok());
        let mapped = Some(IpAddr::V6(
            std::net::Ipv4Addr::new(203, 0, 113, 9).to_ipv6_mapped(),
        ));
        for _ in 0..10 {
            t.record_failure("bob", STRANGER, now);
        }
        assert!(
            t.check("bob", mapped, now).is_err(),
            "IPv4-mapped is the IPv4 address"
        );
    }

    #[test]
    fn success_clears_the_user_at_that_source_but_not_the_source() {
        let t = LoginThrottle::new(
            P,
            BackoffPolicy {
                free_failures: 1,
                ..P
            },
        );
        let now = Instant::now();
        t.record_failure("u1", STRANGER, now);
        t.record_failure("u2", STRANGER, now);
        let paced = |r: Result<Duration, Duration>| matches!(r, Ok(d) if d > Duration::ZERO);
        assert_eq!(t.check("first", STRANGER, now), Ok(Duration::ZERO));
        assert!(paced(t.check("someone-else", STRANGER, now)));
        t.record_success("u2", STRANGER);
        assert!(paced(t.check("someone-else", STRANGER, now)), "still paced");
        assert_eq!(t.check("someone-else", HOME, now), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_bearer_tokens_slow_down_their_source_and_themselves_only() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        let bad = Fingerprint::of("forged.jwt.1");
        for _ in 0..4 {
            t.record_bearer_failure(bad, STRANGER, now);
        }
        assert!(
            t.check_bearer(&bad, HOME, now).is_err(),
            "that token waits everywhere"
        );
        let good = Fingerprint::of("alice.jwt");
        assert!(
            t.check_bearer(&good, HOME, now).is_ok(),
            "other bearers log in"
        );
        assert!(
            t.check_bearer(&good, STRANGER, now).is_ok(),
            "the source has slack left"
        );
        assert!(
            t.check("alice", HOME, now).is_ok(),
            "password logins are not touched"
        );
        t.record_bearer_success(&bad);
        assert!(t.check_bearer(&bad, HOME, now).is_ok());
    }

    #[test]
    fn the_record_map_has_a_hard_cap_and_drops_the_oldest_first() {
        let t = LoginThrottle::with_capacity(P, P, 3);
        let now = Instant::now();
        for (i, u) in ["a", "b", "c", "d"].iter().enumerate() {
            t.record_failure(u, HOME, now + Duration::from_secs(i as u64));
        }
        assert_eq!(t.user_source.len(), 3);
        let recs = t.user_source.records.lock().unwrap();
        assert!(
            !recs.contains_key(&("a".to_string(), HOME)),
            "the oldest went first"
        );
        assert!(recs.contains_key(&("d".to_string(), HOME)));
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
