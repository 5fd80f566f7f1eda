//! What every reconcile shares: the API client, the event recorder, metrics, and each object's
//! run of failures (for its backoff).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::ObjectRef;
use sqe_crds::SqeCluster;

use crate::metrics::Metrics;

pub struct Context {
    pub client: Client,
    /// Absent in unit tests, which do not script event writes.
    pub recorder: Option<Recorder>,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object, for exponential per-object backoff.
    failures: Mutex<HashMap<ObjectRef<SqeCluster>, u32>>,
}

impl Context {
    pub fn new(client: Client, recorder: Option<Recorder>, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            recorder,
            metrics,
            failures: Mutex::default(),
        }
    }

    pub(super) fn failures(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<SqeCluster>, u32>> {
        // A poisoned map only holds backoff counters; recover it rather than stop reconciling.
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }
}
