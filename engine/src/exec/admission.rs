//! Per-query limits: how many statements run at once on this server and for one user, how many
//! of a user's wait for a slot, and how long one may take from arriving to its last batch.
//! (Memory is bounded by the process's pool and each session's share of it, `crate::memory`.)
//!
//! Everything that plans takes a slot: a query for as long as its result streams, planning
//! (GetFlightInfo, CreatePreparedStatement) and catalog listings for as long as they work. A
//! user over their limit waits, in arrival order, until one of their slots frees or their time
//! limit passes; only past the waiting bound is a statement refused (RESOURCE_EXHAUSTED, the
//! limit named). The server's own slots are taken in arrival order across users, with as many
//! statements waiting for them as the server has slots, and no more. A statement
//! past its deadline ends with DEADLINE_EXCEEDED and its plan is dropped, which stops the scan.
//!
//! Planning runs on the blocking pool ([`QueryLimits::off_workers`]), not on the async workers
//! that serve every other call, and keeps its slot until it has really ended.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::error::EngineError;

#[derive(Debug, Clone)]
pub struct QueryLimits {
    timeout: Duration,
    max_concurrent: usize,
    max_per_user: usize,
    max_queued_per_user: usize,
    slots: Arc<Semaphore>,
    /// Statements waiting for a server slot (their users' slots in hand).
    server_waiting: Arc<std::sync::atomic::AtomicUsize>,
    users: Arc<Mutex<HashMap<String, Lane>>>,
    running: Gauge,
    waiting: Gauge,
}

/// One user's slots, and how many of the user's statements hold or wait for one.
#[derive(Debug)]
struct Lane {
    slots: Arc<Semaphore>,
    present: usize,
}

/// Held for as long as a statement runs (until its stream ends or is dropped, and any planning
/// it started has ended). Shared: the slot frees when the last holder lets go.
#[derive(Debug, Clone)]
pub struct Admission {
    _held: Arc<Held>,
    pub deadline: Instant,
    pub timeout: Duration,
}

#[derive(Debug)]
struct Held {
    _server: OwnedSemaphorePermit,
    _user: OwnedSemaphorePermit,
    _presence: Presence,
    running: Gauge,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.running.dec();
    }
}

/// A place in the server's waiting line (as long as the user's statements there): at most as
/// many wait for a server slot as the server has.
struct ServerLine(Arc<std::sync::atomic::AtomicUsize>);

impl ServerLine {
    fn join(count: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<Self> {
        use std::sync::atomic::Ordering;
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Self(count.clone()))
    }
}

impl Drop for ServerLine {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Counts a waiting statement for as long as it waits.
struct Waiting(Gauge);

impl Waiting {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One statement of a user's, running or waiting; leaves the user's lane on drop.
#[derive(Debug)]
struct Presence {
    user: String,
    users: Arc<Mutex<HashMap<String, Lane>>>,
}

impl Drop for Presence {
    fn drop(&mut self) {
        if let Ok(mut users) = self.users.lock()
            && let Some(lane) = users.get_mut(&self.user)
        {
            lane.present -= 1;
            if lane.present == 0 {
                users.remove(&self.user);
            }
        }
    }
}

impl QueryLimits {
    pub fn new(
        timeout: Duration,
        max_concurrent: usize,
        max_per_user: usize,
        max_queued_per_user: usize,
    ) -> Self {
        let max_concurrent = max_concurrent.max(1);
        Self {
            timeout,
            max_concurrent,
            max_per_user: max_per_user.max(1),
            max_queued_per_user,
            slots: Arc::new(Semaphore::new(max_concurrent)),
            server_waiting: Arc::default(),
            users: Arc::default(),
            running: Gauge::default(),
            waiting: Gauge::default(),
        }
    }

    /// Keeps `running` and `waiting` at the number of statements holding and waiting for a
    /// slot (the engine's `/metrics`).
    pub fn with_gauges(mut self, running: Gauge, waiting: Gauge) -> Self {
        self.running = running;
        self.waiting = waiting;
        self
    }

    /// A deadline for a statement arriving now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Takes one of `user`'s slots and one of the server's, waiting for them in arrival order
    /// until `deadline`; refuses at once when the user already has every slot taken and the
    /// waiting line full.
    pub async fn admit(&self, user: &str, deadline: Instant) -> Result<Admission, EngineError> {
        let (lane, presence) = {
            let mut users = self
                .users
                .lock()
                .map_err(|_| EngineError::Internal("query limits poisoned".into()))?;
            let lane = users.entry(user.to_owned()).or_insert_with(|| Lane {
                slots: Arc::new(Semaphore::new(self.max_per_user)),
                present: 0,
            });
            if lane.present >= self.max_per_user + self.max_queued_per_user {
                return Err(EngineError::ResourceExhausted(format!(
                    "you are already running your limit of {} concurrent statements with {} more \
                     waiting (open result streams count until read or closed); retry when one \
                     has finished",
                    self.max_per_user, self.max_queued_per_user
                )));
            }
            lane.present += 1;
            (
                lane.slots.clone(),
                Presence {
                    user: user.to_owned(),
                    users: self.users.clone(),
                },
            )
        };
        let waited = |what: &str| {
            EngineError::DeadlineExceeded(format!(
                "waited for {what} until the time limit of {} s passed",
                self.timeout.as_secs()
            ))
        };
        let waiting = Waiting::new(&self.waiting);
        let user_slot = tokio::time::timeout_at(deadline, lane.acquire_owned())
            .await
            .map_err(|_| waited("one of your query slots"))?
            .map_err(|_| EngineError::Internal("query slots closed".into()))?;
        let server_slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let _line = ServerLine::join(&self.server_waiting, self.max_concurrent)
                    .ok_or_else(|| {
                        EngineError::ResourceExhausted(format!(
                            "the server is already running its limit of {n} concurrent \
                             statements with {n} more waiting; retry shortly",
                            n = self.max_concurrent
                        ))
                    })?;
                tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned())
                    .await
                    .map_err(|_| waited("one of the server's query slots"))?
                    .map_err(|_| EngineError::Internal("query slots closed".into()))?
            }
        };
        drop(waiting);
        self.running.inc();
        Ok(Admission {
            _held: Arc::new(Held {
                _server: server_slot,
                _user: user_slot,
                _presence: presence,
                running: self.running.clone(),
            }),
            deadline,
            timeout: self.timeout,
        })
    }

    /// Runs `work` (planning, a catalog listing) on the blocking pool, so that however much CPU
    /// it takes, the async workers go on serving everyone else. The answer comes by `admission`'s
    /// deadline or not at all (DEADLINE_EXCEEDED); the work holds the admission until it has
    /// ended, so work that outlives its deadline still counts against its user and the server.
    pub async fn off_workers<T, F>(&self, admission: &Admission, work: F) -> Result<T, EngineError>
    where
        F: Future<Output = Result<T, EngineError>> + Send + 'static,
        T: Send + 'static,
    {
        let held = admission.clone();
        let runtime = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            // Waits (catalog calls, footers) stop at the deadline; CPU work stops at its end.
            let answer = runtime.block_on(tokio::time::timeout_at(held.deadline, work));
            drop(held);
            answer
        });
        match tokio::time::timeout_at(admission.deadline, task).await {
            Ok(Ok(Ok(answer))) => answer,
            Ok(Ok(Err(_))) | Err(_) => Err(timed_out(admission.timeout)),
            Ok(Err(e)) if e.is_panic() => Err(refused_by_planner(e.into_panic())),
            Ok(Err(e)) => Err(EngineError::Internal(format!("planning task failed: {e}"))),
        }
    }

    /// Admits `work` for `user` and runs it off the workers; the slot frees when it ends.
    #[cfg(test)]
    pub async fn plan<T, F>(&self, user: &str, work: F) -> Result<T, EngineError>
    where
        F: Future<Output = Result<T, EngineError>> + Send + 'static,
        T: Send + 'static,
    {
        let admission = self.admit(user, self.deadline()).await?;
        self.off_workers(&admission, work).await
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn running(&self) -> usize {
        self.max_concurrent - self.slots.available_permits()
    }
}

/// A library panicking on a statement (DataFusion 53 unwraps an error on a compound
/// identifier of more than four parts that names no struct field) is the statement's fault as
/// far as the client can act on it: INVALID_ARGUMENT, the panic's message scrubbed and cut.
fn refused_by_planner(panic: Box<dyn std::any::Any + Send>) -> EngineError {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("no message");
    let message: String = crate::redact::scrub(message).chars().take(200).collect();
    EngineError::InvalidArgument(format!("the statement could not be planned ({message})"))
}

pub fn timed_out(timeout: Duration) -> EngineError {
    EngineError::DeadlineExceeded(format!(
        "query exceeded the server's time limit of {} s and was stopped",
        timeout.as_secs()
    ))
}

/// Ends `inner` with DEADLINE_EXCEEDED once the admission's deadline passes (CANCELLED once
/// `until` resolves: its session ended), and releases the slot when the stream ends or is
/// dropped.
pub struct Limited<S> {
    inner: Pin<Box<S>>,
    sleep: Pin<Box<Sleep>>,
    until: Pin<Box<dyn Future<Output = ()> + Send>>,
    admission: Option<Admission>,
}

impl<S> Limited<S> {
    pub fn new(inner: S, admission: Admission) -> Self {
        Self {
            inner: Box::pin(inner),
            sleep: Box::pin(tokio::time::sleep_until(admission.deadline)),
            until: Box::pin(futures::future::pending()),
            admission: Some(admission),
        }
    }

    /// Stops the stream, with CANCELLED, when `session_ends` resolves.
    pub fn until(mut self, session_ends: impl Future<Output = ()> + Send + 'static) -> Self {
        self.until = Box::pin(session_ends);
        self
    }
}

impl<S, T> Stream for Limited<S>
where
    S: Stream<Item = Result<T, EngineError>>,
{
    type Item = Result<T, EngineError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(admission) = self.admission.as_ref() else {
            return Poll::Ready(None);
        };
        let timeout = admission.timeout;
        if self.sleep.as_mut().poll(cx).is_ready() {
            // Dropping the admission frees the slot; the inner plan is dropped with `self`.
            self.admission = None;
            return Poll::Ready(Some(Err(timed_out(timeout))));
        }
        if self.until.as_mut().poll(cx).is_ready() {
            self.admission = None;
            return Poll::Ready(Some(Err(EngineError::Cancelled(
                "the session ended, and its queries with it".into(),
            ))));
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

    fn limits(server: usize, per_user: usize, queued: usize) -> QueryLimits {
        QueryLimits::new(Duration::from_secs(60), server, per_user, queued)
    }

    /// Admits without waiting: `None` when the statement would have to wait.
    async fn now(l: &QueryLimits, user: &str) -> Option<Result<Admission, EngineError>> {
        tokio::time::timeout(Duration::from_millis(1), l.admit(user, l.deadline()))
            .await
            .ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_users_statements_over_the_limit_wait_in_order_and_run_when_a_slot_frees() {
        let l = limits(10, 2, 2);
        let a1 = l.admit("alice", l.deadline()).await.unwrap();
        let _a2 = l.admit("alice", l.deadline()).await.unwrap();
        let (l3, l4) = (l.clone(), l.clone());
        let third = tokio::spawn(async move { l3.admit("alice", l3.deadline()).await });
        tokio::task::yield_now().await;
        let fourth = tokio::spawn(async move { l4.admit("alice", l4.deadline()).await });
        tokio::task::yield_now().await;
        // Two running, two waiting: the fifth is refused, naming both bounds.
        let e = now(&l, "alice").await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(
            e.to_string()
                .contains("limit of 2 concurrent statements with 2 more waiting"),
            "{e}"
        );
        // Others are not held up by alice's line.
        assert!(now(&l, "bob").await.unwrap().is_ok());
        drop(a1);
        let third = third.await.unwrap().unwrap();
        assert!(!fourth.is_finished(), "the fourth waits for the next slot");
        drop(third);
        assert!(fourth.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_ends_at_the_deadline_with_deadline_exceeded() {
        let l = QueryLimits::new(Duration::from_secs(5), 10, 1, 4);
        let _held = l.admit("alice", l.deadline()).await.unwrap();
        let e = l.admit("alice", l.deadline()).await.unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded);
        assert!(e.to_string().contains("one of your query slots"), "{e}");
        assert!(
            l.users.lock().unwrap()["alice"].present == 1,
            "the waiter left the line"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_servers_slots_are_shared_in_arrival_order() {
        let l = limits(2, 2, 2);
        let a = l.admit("alice", l.deadline()).await.unwrap();
        let _b = l.admit("bob", l.deadline()).await.unwrap();
        assert_eq!(l.running(), 2);
        assert!(
            now(&l, "carol").await.is_none(),
            "carol waits for a server slot"
        );
        let l2 = l.clone();
        let carol = tokio::spawn(async move { l2.admit("carol", l2.deadline()).await });
        tokio::task::yield_now().await;
        drop(a);
        assert!(carol.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_gauges_count_statements_holding_and_waiting_for_slots() {
        let (running, waiting) = (Gauge::default(), Gauge::default());
        let l = limits(10, 1, 2).with_gauges(running.clone(), waiting.clone());
        let a = l.admit("alice", l.deadline()).await.unwrap();
        let l2 = l.clone();
        let next = tokio::spawn(async move { l2.admit("alice", l2.deadline()).await });
        tokio::task::yield_now().await;
        assert_eq!((running.get(), waiting.get()), (1, 1));
        drop(a);
        let b = next.await.unwrap().unwrap();
        assert_eq!((running.get(), waiting.get()), (1, 0));
        drop(b);
        assert_eq!((running.get(), waiting.get()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn lanes_are_forgotten_when_a_user_has_nothing_running_or_waiting() {
        let l = limits(4, 2, 2);
        let a = l.admit("alice", l.deadline()).await.unwrap();
        let shared = a.clone();
        drop(a);
        assert_eq!(l.running(), 1, "a shared admission holds its slot");
        drop(shared);
        assert_eq!(l.running(), 0);
        assert!(l.users.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn planning_runs_off_the_workers_and_holds_its_slot_until_it_ends() {
        let l = QueryLimits::new(Duration::from_millis(200), 4, 1, 0);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let l2 = l.clone();
        // CPU-bound work past the deadline: a blocking wait, as synchronous planning would be.
        let slow = tokio::spawn(async move {
            l2.plan("alice", async move {
                let _ = rx.recv_timeout(Duration::from_secs(10));
                Ok(())
            })
            .await
        });
        // The single worker is free to serve others meanwhile.
        let quick = l.plan("bob", async { Ok(7) }).await.unwrap();
        assert_eq!(quick, 7);
        let e = slow.await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded);
        // The work still runs: alice's only slot stays taken (and her line is empty).
        let e = l.admit("alice", l.deadline()).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        tx.send(()).unwrap();
        for _ in 0..100 {
            if l.running() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(l.running(), 0, "the slot frees when the work ends");
    }

    #[tokio::test(start_paused = true)]
    async fn a_query_past_its_deadline_ends_with_deadline_exceeded_and_frees_its_slot() {
        let l = QueryLimits::new(Duration::from_secs(5), 1, 1, 0);
        let never_ending = futures::stream::pending::<Result<u32, EngineError>>();
        let mut s = Limited::new(never_ending, l.admit("alice", l.deadline()).await.unwrap());
        assert_eq!(l.running(), 1);
        let item = s.next().await.unwrap();
        assert_eq!(item.unwrap_err().code(), Code::DeadlineExceeded);
        assert!(s.next().await.is_none(), "nothing after the timeout error");
        assert_eq!(l.running(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_planner_that_panics_refuses_the_statement_and_frees_its_slot() {
        let l = QueryLimits::new(Duration::from_secs(60), 1, 1, 0);
        let e = l
            .plan("alice", async {
                if true {
                    panic!("Incorrect number of identifiers: 9");
                }
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.to_string().contains("identifiers: 9"), "{e}");
        assert_eq!(l.running(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_query_stops_with_cancelled_when_its_session_ends() {
        let l = QueryLimits::new(Duration::from_secs(60), 1, 1, 0);
        let (end, ended) = tokio::sync::oneshot::channel::<()>();
        let never_ending = futures::stream::pending::<Result<u32, EngineError>>();
        let admission = l.admit("alice", l.deadline()).await.unwrap();
        let mut s = Limited::new(never_ending, admission).until(async move {
            let _ = ended.await;
        });
        end.send(()).unwrap();
        let item = s.next().await.unwrap();
        assert_eq!(item.unwrap_err().code(), Code::Cancelled);
        assert!(s.next().await.is_none());
        assert_eq!(l.running(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_query_that_finishes_in_time_passes_through_and_frees_its_slot() {
        let l = QueryLimits::new(Duration::from_secs(5), 1, 1, 0);
        let items = futures::stream::iter(vec![Ok::<u32, EngineError>(1), Ok(2)]);
        let admission = l.admit("alice", l.deadline()).await.unwrap();
        let got: Vec<_> = Limited::new(items, admission)
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(got, [1, 2]);
        assert_eq!(l.running(), 0);
    }
}
