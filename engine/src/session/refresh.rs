//! When to refresh, retry or end a session: pure decisions, plus the deadline queue that wakes
//! the scheduler exactly when the next session needs attention (no periodic scan).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::state::{EndReason, SessionKey};

/// The moments that matter for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    pub absolute_deadline: Instant,
    pub idle_deadline: Instant,
    pub token_expires_at: Instant,
    /// `None`: this session cannot refresh (bearer mode) or has given up retrying.
    pub refresh_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Expire(EndReason),
    Refresh,
    /// Nothing to do before this instant.
    Wait(Instant),
}

/// What the session needs now. Ending beats refreshing: a session past its absolute lifetime
/// or idle timeout is not worth a token.
pub fn next_step(now: Instant, t: &Timeline) -> Step {
    if now >= t.absolute_deadline {
        return Step::Expire(EndReason::MaxLifetime);
    }
    if now >= t.idle_deadline {
        return Step::Expire(EndReason::IdleTimeout);
    }
    if now >= t.token_expires_at {
        return Step::Expire(EndReason::TokenExpired);
    }
    match t.refresh_at {
        Some(r) if now >= r => Step::Refresh,
        r => {
            let end = t
                .absolute_deadline
                .min(t.idle_deadline)
                .min(t.token_expires_at);
            Step::Wait(r.map_or(end, |r| r.min(end)))
        }
    }
}

/// When to refresh a token obtained at `obtained` that expires at `expires`: `buffer` before
/// expiry, but never more than half the lifetime before it (a 20 s token with a 60 s buffer
/// refreshes after ~10 s instead of in a busy loop), moved by up to ±10 % of that lead so that
/// sessions created together do not refresh together. `jitter_unit` is in [-1, 1].
pub fn refresh_at(
    obtained: Instant,
    expires: Instant,
    buffer: Duration,
    jitter_unit: f64,
) -> Instant {
    let lifetime = expires.saturating_duration_since(obtained);
    let lead = buffer.min(lifetime / 2);
    let jitter = lead.mul_f64(0.1 * jitter_unit.clamp(-1.0, 1.0).abs());
    let lead = if jitter_unit >= 0.0 {
        lead + jitter
    } else {
        lead - jitter
    };
    expires.checked_sub(lead).unwrap_or(obtained).max(obtained)
}

/// Backoff between attempts after a transient refresh failure: 1 s, 2 s, 4 s … capped at 30 s.
pub fn retry_backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// The next retry after transient failure number `attempt`, or `None` when no retry fits
/// before the token expires: the session then ends at expiry.
pub fn retry_at(now: Instant, attempt: u32, expires: Instant) -> Option<Instant> {
    let last_chance = expires.checked_sub(Duration::from_millis(500))?;
    let at = (now + retry_backoff(attempt)).min(last_chance);
    (at > now).then_some(at)
}

/// A min-heap of deadlines with a wake-up for earlier arrivals. Stale entries are the
/// consumer's business (it compares a sequence number).
pub struct DeadlineQueue<T> {
    heap: Mutex<BinaryHeap<Reverse<Entry<T>>>>,
    notify: Notify,
    counter: std::sync::atomic::AtomicU64,
}

struct Entry<T> {
    at: Instant,
    order: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

impl<T> Default for DeadlineQueue<T> {
    fn default() -> Self {
        Self {
            heap: Mutex::new(BinaryHeap::new()),
            notify: Notify::new(),
            counter: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl<T> DeadlineQueue<T> {
    pub fn push(&self, at: Instant, item: T) {
        let order = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut heap) = self.heap.lock() {
            heap.push(Reverse(Entry { at, order, item }));
        }
        // Wake the consumer: the new entry may be earlier than the one it sleeps for.
        self.notify.notify_one();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// Waits until at least one entry is due and returns all due entries with their deadline.
    pub async fn pop_due(&self) -> Vec<(Instant, T)> {
        loop {
            let notified = self.notify.notified();
            let now = Instant::now();
            let next = {
                let Ok(mut heap) = self.heap.lock() else {
                    return Vec::new();
                };
                let mut due = Vec::new();
                while heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
                    if let Some(Reverse(e)) = heap.pop() {
                        due.push((e.at, e.item));
                    }
                }
                if !due.is_empty() {
                    return due;
                }
                heap.peek().map(|Reverse(e)| e.at)
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

/// A wake-up for one session; stale if the session was rescheduled since.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Job {
    pub(crate) key: SessionKey,
    pub(crate) seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn timeline(t0: Instant) -> Timeline {
        Timeline {
            absolute_deadline: t0 + secs(8 * 3600),
            idle_deadline: t0 + secs(900),
            token_expires_at: t0 + secs(300),
            refresh_at: Some(t0 + secs(240)),
        }
    }

    #[test]
    fn a_fresh_session_waits_for_its_refresh_time() {
        let t0 = Instant::now();
        assert_eq!(next_step(t0, &timeline(t0)), Step::Wait(t0 + secs(240)));
        assert_eq!(next_step(t0 + secs(240), &timeline(t0)), Step::Refresh);
    }

    #[test]
    fn a_session_that_cannot_refresh_waits_for_its_token_to_expire_then_ends() {
        let t0 = Instant::now();
        let t = Timeline {
            refresh_at: None,
            ..timeline(t0)
        };
        assert_eq!(next_step(t0, &t), Step::Wait(t0 + secs(300)));
        assert_eq!(
            next_step(t0 + secs(300), &t),
            Step::Expire(EndReason::TokenExpired)
        );
    }

    #[test]
    fn idle_and_absolute_limits_end_the_session_before_any_refresh() {
        let t0 = Instant::now();
        let idle = Timeline {
            idle_deadline: t0 + secs(100),
            ..timeline(t0)
        };
        assert_eq!(next_step(t0, &idle), Step::Wait(t0 + secs(100)));
        assert_eq!(
            next_step(t0 + secs(250), &idle),
            Step::Expire(EndReason::IdleTimeout)
        );
        let old = Timeline {
            absolute_deadline: t0 + secs(10),
            ..timeline(t0)
        };
        assert_eq!(
            next_step(t0 + secs(10), &old),
            Step::Expire(EndReason::MaxLifetime)
        );
    }

    #[test]
    fn refresh_happens_buffer_before_expiry_with_bounded_jitter() {
        let t0 = Instant::now();
        let exp = t0 + secs(300);
        assert_eq!(refresh_at(t0, exp, secs(60), 0.0), t0 + secs(240));
        assert_eq!(refresh_at(t0, exp, secs(60), 1.0), t0 + secs(234));
        assert_eq!(refresh_at(t0, exp, secs(60), -1.0), t0 + secs(246));
    }

    #[test]
    fn short_lived_tokens_refresh_at_half_life_not_in_a_loop() {
        let t0 = Instant::now();
        let exp = t0 + secs(20);
        assert_eq!(refresh_at(t0, exp, secs(60), 0.0), t0 + secs(10));
        let r = refresh_at(t0, exp, secs(60), 1.0);
        assert!(r >= t0 + secs(8) && r < t0 + secs(10));
        // Degenerate: an already expired grant refreshes at once, never before it was obtained.
        assert_eq!(refresh_at(t0, t0, secs(60), 1.0), t0);
    }

    #[test]
    fn transient_failures_retry_with_backoff_until_the_token_expires() {
        assert_eq!(retry_backoff(1), secs(1));
        assert_eq!(retry_backoff(2), secs(2));
        assert_eq!(retry_backoff(4), secs(8));
        assert_eq!(retry_backoff(10), secs(30));
        let t0 = Instant::now();
        let exp = t0 + secs(60);
        assert_eq!(retry_at(t0, 1, exp), Some(t0 + secs(1)));
        assert_eq!(
            retry_at(t0 + secs(50), 9, exp),
            Some(exp - Duration::from_millis(500))
        );
        assert_eq!(retry_at(t0 + secs(60), 1, exp), None);
        assert_eq!(retry_at(exp - Duration::from_millis(100), 1, exp), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_wakes_at_the_earliest_deadline_even_if_pushed_later() {
        let q = std::sync::Arc::new(DeadlineQueue::default());
        let t0 = Instant::now();
        q.push(t0 + secs(100), "late");
        let q2 = q.clone();
        let consumer = tokio::spawn(async move { q2.pop_due().await });
        tokio::task::yield_now().await;
        q.push(t0 + secs(5), "early");
        let due = consumer.await.unwrap();
        assert_eq!(due, vec![(t0 + secs(5), "early")]);
        assert!(Instant::now() >= t0 + secs(5) && Instant::now() < t0 + secs(100));
        assert_eq!(q.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn due_entries_come_out_together_in_deadline_order() {
        let q = DeadlineQueue::default();
        let t0 = Instant::now();
        q.push(t0 + secs(2), 2);
        q.push(t0 + secs(1), 1);
        q.push(t0 + secs(2), 3);
        tokio::time::sleep(secs(3)).await;
        let items: Vec<i32> = q.pop_due().await.into_iter().map(|(_, i)| i).collect();
        assert_eq!(items, vec![1, 2, 3]);
    }
}
