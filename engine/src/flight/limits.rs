//! Per-query limits: how many queries run at once on this server and for one user, and how long
//! one may take from planning to its last batch. (Memory is bounded by the process's pool and
//! each session's share of it, `crate::memory`.)
//!
//! A full server answers RESOURCE_EXHAUSTED at once instead of queueing: a client that retries
//! with backoff gets a fair chance, and a slow query cannot silently stall everyone behind it.
//! A query past its deadline ends with DEADLINE_EXCEEDED and its plan is dropped, which stops
//! the scan.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::Status;

use crate::error::EngineError;

#[derive(Debug, Clone)]
pub struct QueryLimits {
    timeout: Duration,
    max_concurrent: usize,
    max_per_user: usize,
    slots: Arc<Semaphore>,
    per_user: Arc<Mutex<HashMap<String, usize>>>,
}

/// Held for as long as a query runs (until its stream ends or is dropped).
#[derive(Debug)]
pub struct Admission {
    _user: UserSlot,
    _permit: OwnedSemaphorePermit,
    pub deadline: Instant,
    pub timeout: Duration,
}

/// One of a user's query slots; given back on drop.
#[derive(Debug)]
struct UserSlot {
    user: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.lock()
            && let Some(n) = counts.get_mut(&self.user)
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

impl QueryLimits {
    pub fn new(timeout: Duration, max_concurrent: usize, max_per_user: usize) -> Self {
        let max_concurrent = max_concurrent.max(1);
        Self {
            timeout,
            max_concurrent,
            max_per_user: max_per_user.max(1),
            slots: Arc::new(Semaphore::new(max_concurrent)),
            per_user: Arc::default(),
        }
    }

    /// Takes one of `user`'s slots and one of the server's, or says why not. The user's own
    /// limit is checked first, so a user at it is told so (and takes no server slot).
    pub fn admit(&self, user: &str) -> Result<Admission, EngineError> {
        let user_slot = {
            let mut counts = self
                .per_user
                .lock()
                .map_err(|_| EngineError::Internal("query limits poisoned".into()))?;
            let n = counts.entry(user.to_owned()).or_insert(0);
            if *n >= self.max_per_user {
                return Err(EngineError::ResourceExhausted(format!(
                    "you are already running your limit of {} concurrent queries (open result \
                     streams count until read or closed); retry shortly",
                    self.max_per_user
                )));
            }
            *n += 1;
            UserSlot {
                user: user.to_owned(),
                counts: self.per_user.clone(),
            }
        };
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            EngineError::ResourceExhausted(format!(
                "the server is already running its limit of {} concurrent queries; retry shortly",
                self.max_concurrent
            ))
        })?;
        Ok(Admission {
            _user: user_slot,
            _permit: permit,
            deadline: Instant::now() + self.timeout,
            timeout: self.timeout,
        })
    }

    /// Runs `work` (planning, a metadata listing) under the query time limit.
    pub async fn within_timeout<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| Err(timed_out(self.timeout)))
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn running(&self) -> usize {
        self.max_concurrent - self.slots.available_permits()
    }
}

pub fn timed_out(timeout: Duration) -> EngineError {
    EngineError::DeadlineExceeded(format!(
        "query exceeded the server's time limit of {} s and was stopped",
        timeout.as_secs()
    ))
}

/// Ends `inner` with DEADLINE_EXCEEDED once the admission's deadline passes, and releases the
/// slot when the stream ends or is dropped.
pub struct Limited<S> {
    inner: Pin<Box<S>>,
    sleep: Pin<Box<Sleep>>,
    admission: Option<Admission>,
}

impl<S> Limited<S> {
    pub fn new(inner: S, admission: Admission) -> Self {
        Self {
            inner: Box::pin(inner),
            sleep: Box::pin(tokio::time::sleep_until(admission.deadline)),
            admission: Some(admission),
        }
    }
}

impl<S, T> Stream for Limited<S>
where
    S: Stream<Item = Result<T, Status>>,
{
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(admission) = self.admission.as_ref() else {
            return Poll::Ready(None);
        };
        let timeout = admission.timeout;
        if self.sleep.as_mut().poll(cx).is_ready() {
            // Dropping the admission frees the slot; the inner plan is dropped with `self`.
            self.admission = None;
            return Poll::Ready(Some(Err(timed_out(timeout).into())));
        }
        let polled = self.inner.as_mut().poll_next(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.admission = None;
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tonic::Code;

    #[test]
    fn a_full_server_refuses_with_resource_exhausted_and_frees_slots_on_drop() {
        let limits = QueryLimits::new(Duration::from_secs(60), 2, 2);
        let a = limits.admit("alice").unwrap();
        let _b = limits.admit("bob").unwrap();
        assert_eq!(limits.running(), 2);
        let err = limits.admit("carol").unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(
            err.to_string()
                .contains("server is already running its limit of 2"),
            "{err}"
        );
        drop(a);
        assert!(limits.admit("carol").is_ok());
    }

    #[test]
    fn one_user_at_the_limit_does_not_stop_another() {
        let limits = QueryLimits::new(Duration::from_secs(60), 10, 2);
        let m1 = limits.admit("mallory").unwrap();
        let _m2 = limits.admit("mallory").unwrap();
        let err = limits.admit("mallory").unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.to_string().contains("your limit of 2"), "{err}");
        assert_eq!(limits.running(), 2, "the refused query took no server slot");
        assert!(limits.admit("alice").is_ok());
        drop(m1);
        assert!(limits.admit("mallory").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn planning_and_listings_count_against_the_time_limit() {
        let limits = QueryLimits::new(Duration::from_secs(5), 1, 1);
        let slow = limits.within_timeout(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        });
        assert_eq!(slow.await.unwrap_err().code(), Code::DeadlineExceeded);
        assert_eq!(limits.within_timeout(async { Ok(7) }).await.unwrap(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_query_past_its_deadline_ends_with_deadline_exceeded_and_frees_its_slot() {
        let limits = QueryLimits::new(Duration::from_secs(5), 1, 1);
        let never_ending = futures::stream::pending::<Result<u32, Status>>();
        let mut s = Limited::new(never_ending, limits.admit("alice").unwrap());
        assert!(limits.admit("bob").is_err());
        let item = s.next().await.unwrap();
        assert_eq!(item.unwrap_err().code(), Code::DeadlineExceeded);
        assert!(s.next().await.is_none(), "nothing after the timeout error");
        assert_eq!(limits.running(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_query_that_finishes_in_time_passes_through_and_frees_its_slot() {
        let limits = QueryLimits::new(Duration::from_secs(5), 1, 1);
        let items = futures::stream::iter(vec![Ok::<u32, Status>(1), Ok(2)]);
        let got: Vec<_> = Limited::new(items, limits.admit("alice").unwrap())
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(got, [1, 2]);
        assert_eq!(limits.running(), 0);
    }
}
