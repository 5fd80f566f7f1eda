//! Per-query limits: how many queries run at once on this server, and how long one may take
//! from planning to its last batch. (The memory limit is the session's DataFusion memory pool.)
//!
//! A full server answers RESOURCE_EXHAUSTED at once instead of queueing: a client that retries
//! with backoff gets a fair chance, and a slow query cannot silently stall everyone behind it.
//! A query past its deadline ends with DEADLINE_EXCEEDED and its plan is dropped, which stops
//! the scan.

use std::pin::Pin;
use std::sync::Arc;
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
    slots: Arc<Semaphore>,
}

/// Held for as long as a query runs (until its stream ends or is dropped).
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    pub deadline: Instant,
    pub timeout: Duration,
}

impl QueryLimits {
    pub fn new(timeout: Duration, max_concurrent: usize) -> Self {
        let max_concurrent = max_concurrent.max(1);
        Self {
            timeout,
            max_concurrent,
            slots: Arc::new(Semaphore::new(max_concurrent)),
        }
    }

    /// Takes a slot or says why not.
    pub fn admit(&self) -> Result<Admission, EngineError> {
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            EngineError::ResourceExhausted(format!(
                "the server is already running its limit of {} concurrent queries; retry shortly",
                self.max_concurrent
            ))
        })?;
        Ok(Admission {
            _permit: permit,
            deadline: Instant::now() + self.timeout,
            timeout: self.timeout,
        })
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
        let limits = QueryLimits::new(Duration::from_secs(60), 2);
        let a = limits.admit().unwrap();
        let _b = limits.admit().unwrap();
        assert_eq!(limits.running(), 2);
        let err = limits.admit().unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.to_string().contains("limit of 2"), "{err}");
        drop(a);
        assert!(limits.admit().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_query_past_its_deadline_ends_with_deadline_exceeded_and_frees_its_slot() {
        let limits = QueryLimits::new(Duration::from_secs(5), 1);
        let never_ending = futures::stream::pending::<Result<u32, Status>>();
        let mut s = Limited::new(never_ending, limits.admit().unwrap());
        assert!(limits.admit().is_err());
        let item = s.next().await.unwrap();
        assert_eq!(item.unwrap_err().code(), Code::DeadlineExceeded);
        assert!(s.next().await.is_none(), "nothing after the timeout error");
        assert_eq!(limits.running(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_query_that_finishes_in_time_passes_through_and_frees_its_slot() {
        let limits = QueryLimits::new(Duration::from_secs(5), 1);
        let items = futures::stream::iter(vec![Ok::<u32, Status>(1), Ok(2)]);
        let got: Vec<_> = Limited::new(items, limits.admit().unwrap())
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(got, [1, 2]);
        assert_eq!(limits.running(), 0);
    }
}
