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

use futures::Stream;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::error::EngineError;

/// How long a finished or pre-cancelled ticket is remembered.
const REMEMBER: Duration = Duration::from_secs(600);
/// Bound on remembered tickets, so clients cannot grow memory without limit.
const MAX_REMEMBERED: usize = 10_000;
/// Bound per user: one user's flood of cancels forgets only that user's own oldest marks, never
/// another user's.
const MAX_REMEMBERED_PER_USER: usize = 1_000;

type Key = [u8; 32];

fn key(user: &str, ticket: &[u8]) -> Key {
    let mut h = Sha256::new();
    h.update((user.len() as u64).to_le_bytes());
    h.update(user.as_bytes());
    h.update(ticket);
    h.finalize().into()
}

enum State {
    /// Every DoGet running this ticket (a client may fetch one ticket twice); a cancel stops all.
    Running(Vec<(u64, oneshot::Sender<()>)>),
    CancelledBeforeStart(Instant),
    Finished(Instant),
}

struct Entry {
    user: String,
    state: State,
}

impl Entry {
    fn remembered_since(&self) -> Option<Instant> {
        match self.state {
            State::Running(_) => None,
            State::CancelledBeforeStart(at) | State::Finished(at) => Some(at),
        }
    }
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The query stopped, or will be refused when it starts.
    Cancelled,
    /// It had already finished (or was cancelled before).
    NotCancellable,
    /// The registry could not be read.
    Unknown,
}

#[derive(Default)]
pub struct Cancellations {
    entries: Mutex<HashMap<Key, Entry>>,
    next_run: std::sync::atomic::AtomicU64,
}

/// The oldest remembered (not running) entries beyond `keep`, among those `pick` selects.
fn excess(map: &HashMap<Key, Entry>, keep: usize, pick: impl Fn(&Entry) -> bool) -> Vec<Key> {
    let mut old: Vec<(Key, Instant)> = map
        .iter()
        .filter(|(_, e)| pick(e))
        .filter_map(|(k, e)| e.remembered_since().map(|at| (*k, at)))
        .collect();
    if old.len() <= keep {
        return Vec::new();
    }
    old.sort_by_key(|(_, at)| *at);
    let n = old.len() - keep;
    old.into_iter().take(n).map(|(k, _)| k).collect()
}

impl Cancellations {
    fn purge(map: &mut HashMap<Key, Entry>, now: Instant) {
        map.retain(|_, e| {
            e.remembered_since()
                .is_none_or(|at| now.duration_since(at) < REMEMBER)
        });
        if map.len() > MAX_REMEMBERED {
            // Oldest remembered first; running queries are never dropped.
            for k in excess(map, MAX_REMEMBERED, |_| true) {
                map.remove(&k);
            }
        }
    }

    /// Makes room for one more remembered entry of `user`, from that user's own oldest.
    fn bound_user(map: &mut HashMap<Key, Entry>, user: &str) {
        for k in excess(map, MAX_REMEMBERED_PER_USER.saturating_sub(1), |e| {
            e.user == user
        }) {
            map.remove(&k);
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
        let (tx, rx) = oneshot::channel();
        let run = self
            .next_run
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match map.get_mut(&k) {
            Some(Entry {
                state: State::CancelledBeforeStart(_),
                ..
            }) => {
                map.remove(&k);
                return Err(EngineError::Cancelled(
                    "the query was cancelled before it started".into(),
                ));
            }
            Some(Entry {
                state: State::Running(runs),
                ..
            }) => runs.push((run, tx)),
            _ => {
                map.insert(
                    k,
                    Entry {
                        user: user.to_owned(),
                        state: State::Running(vec![(run, tx)]),
                    },
                );
            }
        }
        Ok((
            Running {
                registry: self.clone(),
                key: k,
                run,
            },
            rx,
        ))
    }

    /// Cancels the user's query with this ticket (see the module doc for the outcomes).
    pub fn cancel(&self, user: &str, ticket: &[u8]) -> CancelOutcome {
        let k = key(user, ticket);
        let Ok(mut map) = self.entries.lock() else {
            return CancelOutcome::Unknown;
        };
        let now = Instant::now();
        Self::purge(&mut map, now);
        let previous = map.remove(&k).map(|e| e.state);
        let (state, status) = match previous {
            Some(State::Running(runs)) => {
                for (_, tx) in runs {
                    let _ = tx.send(());
                }
                // Stays known as finished: a second cancel is NOT_CANCELLABLE.
                (State::Finished(now), CancelOutcome::Cancelled)
            }
            Some(State::Finished(at)) => (State::Finished(at), CancelOutcome::NotCancellable),
            Some(State::CancelledBeforeStart(at)) => {
                (State::CancelledBeforeStart(at), CancelOutcome::Cancelled)
            }
            None => {
                Self::bound_user(&mut map, user);
                (State::CancelledBeforeStart(now), CancelOutcome::Cancelled)
            }
        };
        map.insert(
            k,
            Entry {
                user: user.to_owned(),
                state,
            },
        );
        status
    }

    fn finish(&self, k: Key, run: u64) {
        if let Ok(mut map) = self.entries.lock()
            && let Some(Entry {
                state: State::Running(runs),
                ..
            }) = map.get_mut(&k)
        {
            runs.retain(|(r, _)| *r != run);
            if runs.is_empty()
                && let Some(e) = map.get_mut(&k)
            {
                e.state = State::Finished(Instant::now());
            }
        }
    }

    /// Queries running now (each DoGet counts).
    #[cfg(test)]
    pub fn running(&self) -> usize {
        self.entries
            .lock()
            .map(|m| {
                m.values()
                    .map(|e| match &e.state {
                        State::Running(runs) => runs.len(),
                        _ => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    #[cfg(test)]
    fn remembered_for(&self, user: &str) -> usize {
        self.entries
            .lock()
            .map(|m| m.values().filter(|e| e.user == user).count())
            .unwrap_or(0)
    }
}

/// Held while the query streams; marks the ticket finished when its last run is dropped.
pub struct Running {
    registry: Arc<Cancellations>,
    key: Key,
    run: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.registry.finish(self.key, self.run);
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
    S: Stream<Item = Result<T, EngineError>>,
{
    type Item = Result<T, EngineError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(signal) = self.signal.as_mut() {
            match Pin::new(signal).poll(cx) {
                Poll::Ready(Ok(())) => {
                    self.signal = None;
                    self.inner = None;
                    return Poll::Ready(Some(Err(EngineError::Cancelled(
                        "the query was cancelled".into(),
                    ))));
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
            futures::stream::pending::<Result<u32, EngineError>>(),
            running,
            signal,
        );
        assert_eq!(reg.running(), 1);
        assert_eq!(reg.cancel("alice", b"t1"), CancelOutcome::Cancelled);
        let item = s.next().await.unwrap();
        assert_eq!(item.unwrap_err().code(), Code::Cancelled);
        assert!(s.next().await.is_none());
        drop(s);
        assert_eq!(reg.running(), 0);
        assert_eq!(reg.cancel("alice", b"t1"), CancelOutcome::NotCancellable);
    }

    #[tokio::test]
    async fn a_cancel_before_doget_refuses_the_query() {
        let reg = Arc::new(Cancellations::default());
        assert_eq!(reg.cancel("alice", b"t2"), CancelOutcome::Cancelled);
        let e = reg.start("alice", b"t2").err().unwrap();
        assert_eq!(e.code(), Code::Cancelled);
        // Only that once: the ticket is not poisoned forever.
        assert!(reg.start("alice", b"t2").is_ok());
    }

    #[tokio::test]
    async fn nobody_cancels_another_users_query() {
        let reg = Arc::new(Cancellations::default());
        let (running, signal) = reg.start("alice", b"t3").unwrap();
        let items = futures::stream::iter(vec![Ok::<u32, EngineError>(1), Ok(2)]);
        let s = Cancellable::new(items, running, signal);
        // bob's cancel with alice's ticket only marks bob's own (never started) query.
        assert_eq!(reg.cancel("bob", b"t3"), CancelOutcome::Cancelled);
        let got: Vec<u32> = s.map(|r| r.unwrap()).collect().await;
        assert_eq!(got, [1, 2]);
    }

    #[tokio::test]
    async fn two_doget_calls_of_one_ticket_are_both_cancelled() {
        let reg = Arc::new(Cancellations::default());
        let (r1, s1) = reg.start("alice", b"t5").unwrap();
        let (r2, s2) = reg.start("alice", b"t5").unwrap();
        let pending = || futures::stream::pending::<Result<u32, EngineError>>();
        let mut a = Cancellable::new(pending(), r1, s1);
        let mut b = Cancellable::new(pending(), r2, s2);
        assert_eq!(reg.running(), 2);
        assert_eq!(reg.cancel("alice", b"t5"), CancelOutcome::Cancelled);
        assert_eq!(a.next().await.unwrap().unwrap_err().code(), Code::Cancelled);
        assert_eq!(b.next().await.unwrap().unwrap_err().code(), Code::Cancelled);
        drop((a, b));
        assert_eq!(reg.running(), 0);
    }

    #[tokio::test]
    async fn one_run_ending_leaves_the_other_run_of_the_ticket_cancellable() {
        let reg = Arc::new(Cancellations::default());
        let (r1, s1) = reg.start("alice", b"t6").unwrap();
        let (r2, s2) = reg.start("alice", b"t6").unwrap();
        drop(Cancellable::new(
            futures::stream::empty::<Result<u32, EngineError>>(),
            r1,
            s1,
        ));
        let mut b = Cancellable::new(
            futures::stream::pending::<Result<u32, EngineError>>(),
            r2,
            s2,
        );
        assert_eq!(reg.cancel("alice", b"t6"), CancelOutcome::Cancelled);
        assert_eq!(b.next().await.unwrap().unwrap_err().code(), Code::Cancelled);
    }

    #[tokio::test]
    async fn one_users_flood_of_cancels_never_evicts_another_users_marks() {
        let reg = Arc::new(Cancellations::default());
        assert_eq!(reg.cancel("alice", b"mine"), CancelOutcome::Cancelled);
        for i in 0..(MAX_REMEMBERED_PER_USER * 3) {
            reg.cancel("mallory", format!("t{i}").as_bytes());
        }
        assert_eq!(reg.remembered_for("mallory"), MAX_REMEMBERED_PER_USER);
        // alice's cancel-before-DoGet still holds.
        assert_eq!(
            reg.start("alice", b"mine").err().unwrap().code(),
            Code::Cancelled
        );
    }

    #[tokio::test]
    async fn a_finished_query_is_not_cancellable() {
        let reg = Arc::new(Cancellations::default());
        let (running, signal) = reg.start("alice", b"t4").unwrap();
        let s = Cancellable::new(
            futures::stream::iter(vec![Ok::<u32, EngineError>(1)]),
            running,
            signal,
        );
        assert_eq!(s.count().await, 1);
        assert_eq!(reg.cancel("alice", b"t4"), CancelOutcome::NotCancellable);
    }
}
