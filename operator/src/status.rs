//! `status` from what was observed: the Deployment's rollout state and any problem that kept
//! the spec from being realised. Pure, so the decisions are unit-tested without a cluster.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use sqe_crds::{SqeCluster, SqeClusterStatus, condition};

use crate::resources::common::engine_selector;
use crate::resources::service::endpoint;

/// Why the spec could not be (fully) realised; reported as `Degraded=True`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The rollout state of the engine Deployment, as far as `Ready`/`Progressing` care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    pub desired: i32,
    pub replicas: i32,
    pub updated: i32,
    pub ready: i32,
    pub available: i32,
    /// The Deployment controller has seen the latest Deployment spec.
    pub observed: bool,
    pub deadline_exceeded: bool,
}

impl Rollout {
    pub fn of(d: &Deployment) -> Self {
        let s = d.status.clone().unwrap_or_default();
        let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let observed = match (s.observed_generation, d.metadata.generation) {
            (Some(o), Some(g)) => o >= g,
            _ => false,
        };
        let deadline_exceeded = s.conditions.unwrap_or_default().iter().any(|c| {
            c.type_ == "Progressing"
                && c.status == "False"
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
        Self {
            desired,
            replicas: s.replicas.unwrap_or(0),
            updated: s.updated_replicas.unwrap_or(0),
            ready: s.ready_replicas.unwrap_or(0),
            available: s.available_replicas.unwrap_or(0),
            observed,
            deadline_exceeded,
        }
    }

    /// Every pod runs the current template and no old pod is left.
    pub fn complete(&self) -> bool {
        self.observed
            && self.updated >= self.desired
            && self.replicas <= self.desired
            && self.available >= self.desired
    }

    pub fn ready(&self) -> bool {
        self.complete() && self.ready >= self.desired && self.desired > 0
    }
}

fn cond(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        // Placeholder; `merge` keeps the previous time when the status did not change.
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

pub fn compute(
    cluster: &SqeCluster,
    deployment: Option<&Deployment>,
    problem: Option<&Problem>,
    config_hash: Option<String>,
    now: Timestamp,
) -> SqeClusterStatus {
    let generation = cluster.metadata.generation;
    let rollout = deployment.map(Rollout::of);

    let ready = ready_condition(
        rollout,
        match problem {
            Some(p) => (p.reason, p.message.clone()),
            None => ("Creating", "engine Deployment not created yet".into()),
        },
        generation,
    );

    let progressing = match (rollout, problem) {
        (_, Some(p)) => cond(
            condition::PROGRESSING,
            false,
            "Blocked",
            format!("not rolling out the current spec: {}", p.message),
            generation,
        ),
        (Some(r), None) if !r.complete() => cond(
            condition::PROGRESSING,
            true,
            "RollingOut",
            format!(
                "{}/{} engine pods updated, {} ready",
                r.updated, r.desired, r.ready
            ),
            generation,
        ),
        (Some(_), None) => cond(
            condition::PROGRESSING,
            false,
            "RolloutComplete",
            "engine pods run the current spec".into(),
            generation,
        ),
        (None, None) => cond(
            condition::PROGRESSING,
            true,
            "Creating",
            "creating the engine Deployment".into(),
            generation,
        ),
    };

    let degraded = match (problem, rollout) {
        (Some(p), _) => cond(
            condition::DEGRADED,
            true,
            p.reason,
            p.message.clone(),
            generation,
        ),
        (None, Some(r)) if r.deadline_exceeded => cond(
            condition::DEGRADED,
            true,
            "ProgressDeadlineExceeded",
            "the engine rollout exceeded its progress deadline; check the engine pods".into(),
            generation,
        ),
        _ => cond(
            condition::DEGRADED,
            false,
            "AsExpected",
            "spec realised".into(),
            generation,
        ),
    };

    // Always present (False while reconciling), so a GitOps health check or `kubectl wait`
    // sees the pause lift rather than a condition vanish.
    let paused = cond(
        condition::RECONCILIATION_PAUSED,
        false,
        "Reconciling",
        "the operator applies the spec".into(),
        generation,
    );

    finish(
        cluster,
        rollout,
        vec![ready, progressing, degraded, paused],
        config_hash,
        now,
    )
}

/// Status while `spec.clusterOperation.reconciliationPaused` is set: the operator applied
/// nothing, so it reports what runs (the Deployment as it is) and that the spec waits. The
/// last `Degraded` is kept: pausing does not fix a problem, nor did the operator look again.
pub fn paused(
    cluster: &SqeCluster,
    deployment: Option<&Deployment>,
    now: Timestamp,
) -> SqeClusterStatus {
    let generation = cluster.metadata.generation;
    let rollout = deployment.map(Rollout::of);
    let old = cluster.status.clone().unwrap_or_default();
    let ready = ready_condition(
        rollout,
        (
            "ReconciliationPaused",
            "reconciliation paused before the engine Deployment was created".into(),
        ),
        generation,
    );
    let progressing = cond(
        condition::PROGRESSING,
        false,
        "ReconciliationPaused",
        "spec changes are not rolled out while spec.clusterOperation.reconciliationPaused is true"
            .into(),
        generation,
    );
    let degraded = old
        .conditions
        .iter()
        .find(|c| c.type_ == condition::DEGRADED)
        .cloned()
        .unwrap_or_else(|| {
            cond(
                condition::DEGRADED,
                false,
                "AsExpected",
                "no problem seen before the pause".into(),
                generation,
            )
        });
    let paused = cond(
        condition::RECONCILIATION_PAUSED,
        true,
        "ReconciliationPaused",
        "spec.clusterOperation.reconciliationPaused is true: the operator writes nothing for this cluster"
            .into(),
        generation,
    );
    finish(
        cluster,
        rollout,
        vec![ready, progressing, degraded, paused],
        None,
        now,
    )
}

/// `Ready` from the rollout; `no_deployment` says why there is none yet.
fn ready_condition(
    rollout: Option<Rollout>,
    no_deployment: (&str, String),
    generation: Option<i64>,
) -> Condition {
    match rollout {
        Some(r) if r.ready() => cond(
            condition::READY,
            true,
            "AllReplicasReady",
            format!("{}/{} engine pods ready", r.ready, r.desired),
            generation,
        ),
        Some(r) if r.desired == 0 => cond(
            condition::READY,
            false,
            "ScaledToZero",
            "no engine pods requested".into(),
            generation,
        ),
        Some(r) => cond(
            condition::READY,
            false,
            "ReplicasNotReady",
            format!("{}/{} engine pods ready", r.ready, r.desired),
            generation,
        ),
        None => cond(
            condition::READY,
            false,
            no_deployment.0,
            no_deployment.1,
            generation,
        ),
    }
}

fn finish(
    cluster: &SqeCluster,
    rollout: Option<Rollout>,
    conditions: Vec<Condition>,
    config_hash: Option<String>,
    now: Timestamp,
) -> SqeClusterStatus {
    let old = cluster.status.clone().unwrap_or_default();
    SqeClusterStatus {
        conditions: merge(&old.conditions, conditions, now),
        observed_generation: cluster.metadata.generation,
        replicas: rollout.map_or(0, |r| r.replicas),
        ready_replicas: rollout.map_or(0, |r| r.ready),
        selector: Some(engine_selector(cluster)),
        endpoint: endpoint(cluster),
        config_hash: config_hash.or(old.config_hash),
    }
}

/// Keep `lastTransitionTime` of conditions whose status did not change, so an unchanged
/// cluster yields an identical status (and so no status patch at all).
fn merge(old: &[Condition], new: Vec<Condition>, now: Timestamp) -> Vec<Condition> {
    new.into_iter()
        .map(|mut c| {
            c.last_transition_time = match old.iter().find(|o| o.type_ == c.type_) {
                Some(o) if o.status == c.status => o.last_transition_time.clone(),
                _ => Time(now),
            };
            c
        })
        .collect()
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
