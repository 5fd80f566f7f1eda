//! Graceful shutdown: once draining, new calls are refused with UNAVAILABLE while calls
//! already running (including result streams) are counted until they finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::EngineError;

#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    active: AtomicUsize,
    idle: Notify,
}

/// Held for the lifetime of one call (moved into a result stream so it lasts until the last
/// batch is sent).
pub struct CallGuard(Arc<Drain>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Drain {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn enter(self: &Arc<Self>) -> Result<CallGuard, EngineError> {
        self.active.fetch_add(1, Ordering::SeqCst);
        let guard = CallGuard(self.clone());
        if self.draining.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown);
        }
        Ok(guard)
    }

    pub fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Waits until no call is running or `grace` has passed; true if all calls finished.
    pub async fn wait_idle(&self, grace: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.active() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(grace, wait).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn draining_refuses_new_calls_and_waits_for_running_ones() {
        let d = Drain::new();
        let running = d.enter().unwrap();
        d.start();
        assert!(matches!(d.enter(), Err(EngineError::ShuttingDown)));
        assert_eq!(d.active(), 1);
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { d2.wait_idle(Duration::from_secs(30)).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(running);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn the_grace_period_bounds_the_wait() {
        let d = Drain::new();
        let _stuck = d.enter().unwrap();
        d.start();
        assert!(!d.wait_idle(Duration::from_secs(5)).await);
    }
}
