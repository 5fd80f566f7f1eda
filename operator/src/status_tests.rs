//! Tests of `status`, in a file of their own so the source reads as source.

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
