//! Cancelling a query by its FlightInfo (`CancelFlightInfo`, and the older `CancelQuery`).
//!
//! A query is identified by its ticket (tickets carry a random nonce, so two runs of the same SQL
//! are two queries) and by the user who holds it: a user can cancel only their own queries, even
//! with someone else's ticket in hand. Handles are stateless, so a cancel may arrive before the
//! client has called DoGet (ADBC fetches lazily); the ticket is then marked and its DoGet refused
//! with CANCELLED. A ticket whose query already finished is NOT_CANCELLABLE.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow_flight::CancelStatus;
use futures::Stream;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tonic::Status;

use crate::error::EngineError;

/// How long a finished or pre-cancelled ticket is remembered.
const REMEMBER: Duration = Duration::from_secs(600);
/// Bound on remembered tickets, so a client cannot grow memory without limit.
const MAX_REMEMBERED: usize = 10_000;

type Key = [u8; 32];

fn key(user: &str, ticket: &[u8]) -> Key {
    let mut h = Sha256::new();
    h.update(user.as_bytes());
    h.update([0]);
    h.update(ticket);
    h.finalize().into()
}

enum Entry {
    Running(oneshot::Sender<()>),
    CancelledBeforeStart(Instant),
    Finished(Instant),
}

#[derive(Default)]
pub struct Cancellations {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Cancellations {
    fn purge(map: &mut HashMap<Key, Entry>, now: Instant) {
        map.retain(|_, e| match e {
            Entry::Running(_) => true,
            Entry::CancelledBeforeStart(at) | Entry::Finished(at) => {
                now.duration_since(*at) < REMEMBER
            }
        });
        if map.len() > MAX_REMEMBERED {
            // Oldest remembered first; running queries are never dropped.
            let mut old: Vec<(Key, Instant)> = map
                .iter()
                .filter_map(|(k, e)| match e {
                    Entry::CancelledBeforeStart(at) | Entry::Finished(at) => Some((*k, *at)),
                    Entry::Running(_) => None,
                })
                .collect();
            old.sort_by_key(|(_, at)| *at);
            let excess = map.len() - MAX_REMEMBERED;
            for (k, _) in old.into_iter().take(excess) {
                map.remove(&k);
            }
        }
    }

    /// Registers a starting query; refused with CANCELLED if its ticket was cancelled already.
    pub fn start(
        self: &Arc<Self>,
        user: &str,
        ticket: &[u8],
    ) -> Result<(Running, oneshot::Receiver<()>), EngineError> {
        let k = key(user, ticket);
        let mut map = self
            .entries
            .lock()
            .map_err(|_| EngineError::Internal("cancellation registry poisoned".into()))?;
        Self::purge(&mut map, Instant::now());
        if matches!(map.get(&k), Some(Entry::CancelledBeforeStart(_))) {
            map.remove(&k);
            return Err(EngineError::Cancelled(
                "the query was cancelled before it started".into(),
            ));
        }
        let (tx, rx) = oneshot::channel();
        map.insert(k, Entry::Running(tx));
        Ok((
            Running {
                registry: self.clone(),
                key: k,
            },
            rx,
        ))
    }

    /// Cancels the user's query with this ticket (see the module doc for the outcomes).
    pub fn cancel(&self, user: &str, ticket: &[u8]) -> CancelStatus {
        let k = key(user, ticket);
        let Ok(mut map) = self.entries.lock() else {
            return CancelStatus::Unspecified;
        };
        let now = Instant::now();
        Self::purge(&mut map, now);
        match map.remove(&k) {
            Some(Entry::Running(tx)) => {
                let _ = tx.send(());
                // Stays known as finished: a second cancel is NOT_CANCELLABLE.
                map.insert(k, Entry::Finished(now));
                CancelStatus::Cancelled
            }
            Some(Entry::Finished(at)) => {
                map.insert(k, Entry::Finished(at));
                CancelStatus::NotCancellable
            }
            Some(Entry::CancelledBeforeStart(at)) => {
                map.insert(k, Entry::CancelledBeforeStart(at));
                CancelStatus::Cancelled
            }
            None => {
                map.insert(k, Entry::CancelledBeforeStart(now));
                CancelStatus::Cancelled
            }
        }
    }

    fn finish(&self, k: Key) {
        if let Ok(mut map) = self.entries.lock() {
            if matches!(map.get(&k), Some(Entry::Running(_))) {
                map.insert(k, Entry::Finished(Instant::now()));
            }
        }
    }

    pub fn running(&self) -> usize {
        self.entries
            .lock()
            .map(|m| {
                m.values()
                    .filter(|e| matches!(e, Entry::Running(_)))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// Held while the query streams; marks the ticket finished when dropped.
pub struct Running {
    registry: Arc<Cancellations>,
    key: Key,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.registry.finish(self.key);
    }
}

/// Ends the stream with CANCELLED as soon as the query is cancelled, dropping (and so stopping)
/// the plan beneath it.
pub struct Cancellable<S> {
    inner: Option<Pin<Box<S>>>,
    signal: Option<oneshot::Receiver<()>>,
    _running: Running,
}

impl<S> Cancellable<S> {
    pub fn new(inner: S, running: Running, signal: oneshot::Receiver<()>) -> Self {
        Self {
            inner: Some(Box::pin(inner)),
            signal: Some(signal),
            _running: running,
        }
    }
}

impl<S, T> Stream for Cancellable<S>
where
    S: Stream<Item = Result<T, Status>>,
{
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(signal) = self.signal.as_mut() {
            match Pin::new(signal).poll(cx) {
                Poll::Ready(Ok(())) => {
                    self.signal = None;
                    self.inner = None;
                    return Poll::Ready(Some(Err(EngineError::Cancelled(
                        "the query was cancelled".into(),
                    )
                    .into())));
                }
                // The registry let go of the sender: no cancel can come any more.
                Poll::Ready(Err(_)) => self.signal = None,
                Poll::Pending => {}
            }
        }
        match self.inner.as_mut() {
            Some(inner) => inner.as_mut().poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tonic::Code;

    #[tokio::test]
    async fn a_running_query_ends_with_cancelled_and_a_second_cancel_is_not_cancellable() {
        let reg = Arc::new(Cancellations::default());
        let (running, signal) = reg.start("alice", b"t1").unwrap();
        let mut s = Cancellable::new(
            futures::stream::pending::<Result<u32, Status>>(),
            running,
            signal,
        );
        assert_eq!(reg.running(), 1);
        assert_eq!(reg.cancel("alice", b"t1"), CancelStatus::Cancelled);
        let item = s.next().await.unwrap();
        assert_eq!(item.unwrap_err().code(), Code::Cancelled);
        assert!(s.next().await.is_none());
        drop(s);
        assert_eq!(reg.running(), 0);
        assert_eq!(reg.cancel("alice", b"t1"), CancelStatus::NotCancellable);
    }

    #[tokio::test]
    async fn a_cancel_before_doget_refuses_the_query() {
        let reg = Arc::new(Cancellations::default());
        assert_eq!(reg.cancel("alice", b"t2"), CancelStatus::Cancelled);
        let e = reg.start("alice", b"t2").err().unwrap();
        assert_eq!(e.code(), Code::Cancelled);
        // Only that once: the ticket is not poisoned forever.
        assert!(reg.start("alice", b"t2").is_ok());
    }

    #[tokio::test]
    async fn nobody_cancels_another_users_query() {
        let reg = Arc::new(Cancellations::default());
        let (running, signal) = reg.start("alice", b"t3").unwrap();
        let items = futures::stream::iter(vec![Ok::<u32, Status>(1), Ok(2)]);
        let s = Cancellable::new(items, running, signal);
        // bob's cancel with alice's ticket only marks bob's own (never started) query.
        assert_eq!(reg.cancel("bob", b"t3"), CancelStatus::Cancelled);
        let got: Vec<u32> = s.map(|r| r.unwrap()).collect().await;
        assert_eq!(got, [1, 2]);
    }

    #[tokio::test]
    async fn a_finished_query_is_not_cancellable() {
        let reg = Arc::new(Cancellations::default());
        let (running, signal) = reg.start("alice", b"t4").unwrap();
        let s = Cancellable::new(
            futures::stream::iter(vec![Ok::<u32, Status>(1)]),
            running,
            signal,
        );
        assert_eq!(s.count().await, 1);
        assert_eq!(reg.cancel("alice", b"t4"), CancelStatus::NotCancellable);
    }
}
