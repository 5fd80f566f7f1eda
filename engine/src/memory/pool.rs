//! One memory pool for the whole process, and each session's share of it.
//!
//! The process has one `GreedyMemoryPool` sized from `query.memory_pool_bytes` (the operator
//! derives it from the pod's memory limit), so the sum of everything every session holds can
//! never pass what the pod may use. Each session draws from it through a `SessionPool`, which also
//! caps that one session at `query.memory_limit_bytes`: one user's query cannot take the whole
//! pod. Clients cannot change either (`SET datafusion.runtime.*` is refused: `policy::settings`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// The process-wide pool every session context draws from.
pub fn shared_pool(bytes: usize) -> Arc<dyn MemoryPool> {
    Arc::new(GreedyMemoryPool::new(bytes))
}

/// A capped share of a larger pool: at most `limit` bytes, and only what the larger pool still
/// has. A session's share is drawn from its user's, the user's from the process's.
#[derive(Debug)]
pub struct SessionPool {
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
    /// Whose share this is, for errors: "session" or "user".
    whose: &'static str,
    /// Whether `shared` is itself a share, whose refusal already says which limit was reached.
    within_share: bool,
}

impl SessionPool {
    pub fn new(shared: Arc<dyn MemoryPool>, limit: usize) -> Arc<Self> {
        Arc::new(Self {
            shared,
            limit,
            used: AtomicUsize::new(0),
            whose: "session",
            within_share: false,
        })
    }
}

/// Each user's share of the process pool, which all of that user's sessions draw from: however
/// many sessions one user opens, together they hold at most `per_user` bytes.
#[derive(Debug)]
pub struct UserPools {
    shared: Arc<dyn MemoryPool>,
    per_user: usize,
    per_session: usize,
    users: Mutex<HashMap<String, Weak<SessionPool>>>,
}

impl UserPools {
    pub fn new(shared: Arc<dyn MemoryPool>, per_user: usize, per_session: usize) -> Self {
        Self {
            shared,
            per_user,
            per_session,
            users: Mutex::default(),
        }
    }

    /// A new session's share, drawn from `user`'s (made on the user's first session, gone with
    /// the user's last).
    pub fn session_pool(&self, user: &str) -> Arc<dyn MemoryPool> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let user_pool = match users.get(user).and_then(Weak::upgrade) {
            Some(p) => p,
            None => {
                users.retain(|_, w| w.strong_count() > 0);
                let p = Arc::new(SessionPool {
                    shared: self.shared.clone(),
                    limit: self.per_user,
                    used: AtomicUsize::new(0),
                    whose: "user",
                    within_share: false,
                });
                users.insert(user.to_owned(), Arc::downgrade(&p));
                p
            }
        };
        Arc::new(SessionPool {
            shared: user_pool,
            limit: self.per_session,
            used: AtomicUsize::new(0),
            whose: "session",
            within_share: true,
        })
    }
}

/// Whether a session holding `used` bytes may take `additional` more under `limit`.
pub fn fits(used: usize, additional: usize, limit: usize) -> bool {
    used.checked_add(additional).is_some_and(|n| n <= limit)
}

impl MemoryPool for SessionPool {
    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        self.shared.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::Relaxed);
        self.shared.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DFResult<()> {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                fits(used, additional, self.limit).then(|| used + additional)
            })
            .map_err(|used| {
                DataFusionError::ResourcesExhausted(format!(
                    "the {}'s memory limit of {} bytes is reached ({used} in use, {additional} more asked for by {})",
                    self.whose,
                    self.limit,
                    reservation.consumer().name()
                ))
            })?;
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            if self.within_share {
                return Err(e);
            }
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the engine's shared memory pool is full; retry later ({})",
                e.strip_backtrace()
            )));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserve(pool: &Arc<SessionPool>, name: &str) -> MemoryReservation {
        let pool: Arc<dyn MemoryPool> = pool.clone();
        MemoryConsumer::new(name).register(&pool)
    }

    #[test]
    fn a_session_is_capped_at_its_own_limit() {
        let shared = shared_pool(1000);
        let s = SessionPool::new(shared.clone(), 300);
        let r = reserve(&s, "sort");
        r.try_grow(300).unwrap();
        let e = r.try_grow(1).unwrap_err().to_string();
        assert!(e.contains("session's memory limit of 300 bytes"), "{e}");
        assert_eq!(shared.reserved(), 300);
    }

    #[test]
    fn sessions_together_never_pass_the_shared_pool() {
        let shared = shared_pool(500);
        let a = SessionPool::new(shared.clone(), 400);
        let b = SessionPool::new(shared.clone(), 400);
        let ra = reserve(&a, "a");
        let rb = reserve(&b, "b");
        ra.try_grow(400).unwrap();
        let e = rb.try_grow(200).unwrap_err().to_string();
        assert!(e.contains("shared memory pool is full"), "{e}");
        // The refused request left nothing behind in either count.
        assert_eq!(b.reserved(), 0);
        assert_eq!(shared.reserved(), 400);
        rb.try_grow(100).unwrap();
        drop(ra);
        assert_eq!(shared.reserved(), 100);
        rb.try_grow(300).unwrap();
    }

    #[test]
    fn released_memory_returns_to_both_pools() {
        let shared = shared_pool(1000);
        let s = SessionPool::new(shared.clone(), 1000);
        let r = reserve(&s, "x");
        r.grow(600);
        r.shrink(100);
        assert_eq!((s.reserved(), shared.reserved()), (500, 500));
        drop(r);
        assert_eq!((s.reserved(), shared.reserved()), (0, 0));
    }

    #[test]
    fn a_users_sessions_together_stay_within_the_users_share() {
        let shared = shared_pool(10_000);
        let users = UserPools::new(shared.clone(), 500, 400);
        let (a, b) = (users.session_pool("alice"), users.session_pool("alice"));
        let ra = MemoryConsumer::new("a").register(&a);
        let rb = MemoryConsumer::new("b").register(&b);
        ra.try_grow(400).unwrap();
        let e = rb.try_grow(200).unwrap_err().to_string();
        assert!(e.contains("user's memory limit of 500 bytes"), "{e}");
        assert_eq!((b.reserved(), shared.reserved()), (0, 400));
        rb.try_grow(100).unwrap();
        // Another user has a share of their own.
        let c = users.session_pool("bob");
        MemoryConsumer::new("c").register(&c).try_grow(400).unwrap();
        drop((ra, rb));
        assert_eq!(shared.reserved(), 0);
        // A user's share is forgotten with the user's last session.
        drop((a, b));
        let _ = users.session_pool("carol");
        assert!(!users.users.lock().unwrap().contains_key("alice"));
    }

    #[test]
    fn the_limit_check_does_not_overflow() {
        assert!(fits(0, 10, 10));
        assert!(!fits(5, 6, 10));
        assert!(!fits(usize::MAX, 1, usize::MAX));
    }
}
