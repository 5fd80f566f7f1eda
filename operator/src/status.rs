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
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cluster() -> SqeCluster {
        let mut c: SqeCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "sqe.io/v1alpha1", "kind": "SqeCluster",
            "metadata": {"name": "x", "namespace": "ns", "generation": 3},
            "spec": {
                "oidc": {"issuer": "https://idp.example", "clientId": "sqe"},
                "polaris": {"uri": "http://p:8181/api/catalog", "warehouse": "lake"},
                "engine": {"image": "sqe:1"}
            }
        }))
        .unwrap();
        c.metadata.uid = Some("u".into());
        c
    }

    fn deployment(desired: i32, updated: i32, ready: i32, generation_seen: bool) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(desired),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(if generation_seen { 2 } else { 1 }),
                replicas: Some(updated.max(desired)),
                updated_replicas: Some(updated),
                ready_replicas: Some(ready),
                available_replicas: Some(ready),
                ..Default::default()
            }),
        }
    }

    fn get<'a>(s: &'a SqeClusterStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn ready_when_all_pods_updated_and_ready() {
        let c = cluster();
        let s = compute(
            &c,
            Some(&deployment(2, 2, 2, true)),
            None,
            Some("h".into()),
            Timestamp::now(),
        );
        assert_eq!(get(&s, "Ready").status, "True");
        assert_eq!(get(&s, "Progressing").status, "False");
        assert_eq!(get(&s, "Degraded").status, "False");
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.ready_replicas, 2);
        assert_eq!(s.endpoint.as_deref(), Some("grpc://x.ns.svc:50051"));
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
    }

    #[test]
    fn rolling_out_is_progressing_not_ready() {
        let c = cluster();
        let s = compute(
            &c,
            Some(&deployment(2, 1, 2, true)),
            None,
            None,
            Timestamp::now(),
        );
        assert_eq!(get(&s, "Ready").status, "False");
        assert_eq!(get(&s, "Progressing").status, "True");
        let s = compute(
            &c,
            Some(&deployment(2, 2, 2, false)),
            None,
            None,
            Timestamp::now(),
        );
        assert_eq!(
            get(&s, "Progressing").status,
            "True",
            "unobserved generation"
        );
    }

    #[test]
    fn problem_is_degraded_with_its_message() {
        let c = cluster();
        let p = Problem::new("SecretMissing", "Secret ns/s not found");
        let s = compute(&c, None, Some(&p), None, Timestamp::now());
        let d = get(&s, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "SecretMissing")
        );
        assert!(d.message.contains("ns/s"));
        assert_eq!(get(&s, "Ready").status, "False");
        // Old pods keep serving while the problem lasts: Ready stays True, Degraded is True.
        let s = compute(
            &c,
            Some(&deployment(2, 2, 2, true)),
            Some(&p),
            None,
            Timestamp::now(),
        );
        assert_eq!(get(&s, "Ready").status, "True");
        assert_eq!(get(&s, "Degraded").status, "True");
    }

    #[test]
    fn unchanged_state_gives_identical_status() {
        let mut c = cluster();
        let d = deployment(2, 2, 2, true);
        let s1 = compute(&c, Some(&d), None, Some("h".into()), Timestamp::now());
        c.status = Some(s1.clone());
        let later = Timestamp::now() + std::time::Duration::from_secs(60);
        let s2 = compute(&c, Some(&d), None, Some("h".into()), later);
        assert_eq!(s1, s2);
        // A transition gets a new time.
        let s3 = compute(
            &c,
            Some(&deployment(2, 1, 1, true)),
            None,
            Some("h".into()),
            later,
        );
        assert_eq!(get(&s3, "Ready").last_transition_time, Time(later));
        assert_eq!(
            get(&s3, "Degraded").last_transition_time,
            get(&s1, "Degraded").last_transition_time
        );
    }
    #[test]
    fn reconciling_reports_reconciliation_paused_false_and_the_pod_selector() {
        let s = compute(
            &cluster(),
            Some(&deployment(2, 2, 2, true)),
            None,
            None,
            Timestamp::now(),
        );
        let p = get(&s, "ReconciliationPaused");
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("False", "Reconciling")
        );
        assert_eq!(
            s.selector.as_deref(),
            Some("app.kubernetes.io/instance=x,app.kubernetes.io/name=sqe-engine")
        );
    }

    #[test]
    fn paused_reports_the_running_pods_and_that_the_spec_waits() {
        let mut c = cluster();
        let before = compute(
            &c,
            Some(&deployment(2, 2, 2, true)),
            None,
            Some("h".into()),
            Timestamp::now(),
        );
        c.status = Some(before.clone());
        c.metadata.generation = Some(4);
        let s = paused(&c, Some(&deployment(2, 2, 2, true)), Timestamp::now());
        assert_eq!(get(&s, "ReconciliationPaused").status, "True");
        assert_eq!(get(&s, "Ready").status, "True", "the pods still serve");
        let p = get(&s, "Progressing");
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("False", "ReconciliationPaused")
        );
        assert_eq!(s.observed_generation, Some(4), "the operator saw the pause");
        assert_eq!(
            s.config_hash.as_deref(),
            Some("h"),
            "the pods still run this config"
        );
        assert_eq!(s.replicas, 2);
        assert!(s.selector.is_some());
    }

    #[test]
    fn paused_keeps_the_last_degraded_it_saw_rather_than_clearing_it() {
        let mut c = cluster();
        let p = Problem::new("SecretMissing", "Secret ns/s not found");
        c.status = Some(compute(&c, None, Some(&p), None, Timestamp::now()));
        let s = paused(&c, None, Timestamp::now());
        let d = get(&s, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "SecretMissing")
        );
        let r = get(&s, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "ReconciliationPaused")
        );
    }

    #[test]
    fn an_unchanged_paused_cluster_gives_identical_status() {
        let mut c = cluster();
        let s1 = paused(&c, Some(&deployment(2, 2, 2, true)), Timestamp::now());
        c.status = Some(s1.clone());
        let later = Timestamp::now() + std::time::Duration::from_secs(60);
        assert_eq!(paused(&c, Some(&deployment(2, 2, 2, true)), later), s1);
    }
}
