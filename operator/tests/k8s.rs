//! Against a real control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok),
//! started by `e2e/k8s/up`. Ignored by default; `e2e/k8s/test` runs them with `--ignored`.
//! The operator under test runs as a subprocess with a ServiceAccount token bound to exactly
//! the chart's RBAC rules, so a missing permission fails these tests.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::{Api, Resource};
use sqe_crds::SqeCluster;

mod common;
use common::*;

async fn cluster_of(api: &Api<SqeCluster>, name: &str) -> SqeCluster {
    api.get(name).await.unwrap()
}

fn cond(c: &SqeCluster, t: &str) -> Option<(String, String)> {
    c.condition(t)
        .map(|c| (c.status.clone(), c.message.clone()))
}

fn pod_hash(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()["sqe.io/config-hash"]
        .clone()
}

/// Ready for the current generation and with the Deployment's current hash.
async fn wait_ready(ns: &str, name: &str) -> (SqeCluster, Deployment) {
    let c = client().await;
    let clusters: Api<SqeCluster> = Api::namespaced(c.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(c, ns);
    eventually(
        &format!("{ns}/{name} Ready for its generation"),
        120,
        || async {
            let cl = clusters.get(name).await.ok()?;
            let d = deployments.get_opt(name).await.ok()??;
            let st = cl.status.as_ref()?;
            let ready = cond(&cl, "Ready")?.0 == "True";
            let current = st.observed_generation == cl.metadata.generation
                && st.config_hash.as_deref() == Some(pod_hash(&d).as_str());
            (ready && current).then_some((cl, d))
        },
    )
    .await
}

/// What our applies could change, per object: the resourceVersion of objects nobody else
/// writes; for those whose status controllers update (Deployment, PDB, HPA) the generation
/// (spec changes) and our field manager's managedFields entry (its time moves on any change
/// our apply makes). Then the SqeCluster's status.
async fn resource_versions(ns: &str, name: &str) -> Vec<(String, String)> {
    fn rv<K: Resource>(k: &K) -> String {
        k.meta().resource_version.clone().unwrap()
    }
    fn spec_and_ours<K: Resource>(k: &K) -> String {
        let ours: Vec<_> = k
            .meta()
            .managed_fields
            .iter()
            .flatten()
            .filter(|m| m.manager.as_deref() == Some("sqe-operator"))
            .collect();
        format!(
            "gen={:?} ours={}",
            k.meta().generation,
            serde_json::to_string(&ours).unwrap()
        )
    }
    let c = client().await;
    let cm = format!("{name}-config");
    let mut v = vec![
        (
            "cm".into(),
            rv(&Api::<ConfigMap>::namespaced(c.clone(), ns)
                .get(&cm)
                .await
                .unwrap()),
        ),
        (
            "svc".into(),
            rv(&Api::<Service>::namespaced(c.clone(), ns)
                .get(name)
                .await
                .unwrap()),
        ),
        (
            "sa".into(),
            rv(&Api::<ServiceAccount>::namespaced(c.clone(), ns)
                .get(name)
                .await
                .unwrap()),
        ),
        (
            "deploy".into(),
            spec_and_ours(
                &Api::<Deployment>::namespaced(c.clone(), ns)
                    .get(name)
                    .await
                    .unwrap(),
            ),
        ),
        (
            "pdb".into(),
            spec_and_ours(
                &Api::<PodDisruptionBudget>::namespaced(c.clone(), ns)
                    .get(name)
                    .await
                    .unwrap(),
            ),
        ),
    ];
    if let Some(h) = Api::<HorizontalPodAutoscaler>::namespaced(c.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
    {
        v.push(("hpa".into(), spec_and_ours(&h)));
    }
    let cl = Api::<SqeCluster>::namespaced(c, ns)
        .get(name)
        .await
        .unwrap();
    v.push(("status".into(), serde_json::to_string(&cl.status).unwrap()));
    v
}

/// Trigger a reconcile without changing the spec (an annotation on the SqeCluster) and wait
/// until the operator has sent its applies.
async fn touch_and_wait_for_applies(op: &Operator, ns: &str, name: &str, value: &str) {
    let writes = op.writes();
    kubectl(&[
        "annotate",
        "-n",
        ns,
        &format!("sqecluster/{name}"),
        &format!("test/touch={value}"),
        "--overwrite",
    ]);
    eventually(
        "the touched cluster reconciled (applies sent)",
        30,
        || async { (op.writes() > writes).then_some(()) },
    )
    .await;
    // Let the rest of that reconcile (the sweep, a status patch) finish.
    tokio::time::sleep(Duration::from_secs(2)).await;
}

fn owned_by<K: Resource>(obj: &K, cluster: &SqeCluster) -> bool {
    obj.meta().owner_references.iter().flatten().any(|o| {
        o.controller == Some(true)
            && Some(&o.uid) == cluster.metadata.uid.as_ref()
            && o.kind == "SqeCluster"
    })
}

#[tokio::test]
#[ignore = "needs the control plane: e2e/k8s/test"]
async fn crd_installs_and_the_api_server_validates_the_examples() {
    setup();
    let ns = "t-crd";
    ensure_namespace(ns);
    let dir = repo().join("crds/examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut valid = 0;
    for f in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
    {
        let out = kubectl_in(
            None,
            &[
                "apply",
                "--dry-run=server",
                "-n",
                ns,
                "-f",
                f.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "{} rejected: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        valid += 1;
    }
    assert!(valid >= 3);
    let mut invalid: Vec<_> = std::fs::read_dir(dir.join("invalid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    invalid.sort();
    assert!(invalid.len() >= 8);
    for f in invalid {
        let text = std::fs::read_to_string(&f).unwrap();
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap();
        let out = kubectl_in(
            None,
            &[
                "apply",
                "--dry-run=server",
                "-n",
                ns,
                "-f",
                f.to_str().unwrap(),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} was accepted", f.display());
        assert!(
            err.contains("is invalid")
                || err.contains("Invalid value")
                || err.contains("Unsupported value"),
            "{}: not a validation error: {err}",
            f.display()
        );
        assert!(
            err.contains(expect),
            "{}: expected `{expect}` in: {err}",
            f.display()
        );
    }
}

#[tokio::test]
#[ignore = "needs the control plane: e2e/k8s/test"]
async fn operator_lifecycle_on_a_real_control_plane() {
    let ns = "t-lifecycle";
    setup();
    ensure_namespace(ns);
    let c = client().await;
    let clusters: Api<SqeCluster> = Api::namespaced(c.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(c.clone(), ns);

    kubectl_apply(ns, &secret_yaml("s1"));
    kubectl_apply(ns, &cluster_yaml("demo", "    replicas: 2\n", ""));
    let op = Operator::start(ns, "lease-lifecycle", "op-lifecycle-1");

    // Created with owner references; KWOK brings the pods up; kubectl wait works.
    let out = kubectl_in(
        None,
        &[
            "wait",
            "-n",
            ns,
            "--for=condition=Ready",
            "sqecluster/demo",
            "--timeout=120s",
        ],
    );
    assert!(
        out.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (cl, d0) = wait_ready(ns, "demo").await;
    assert_eq!(cl.status.as_ref().unwrap().ready_replicas, 2);
    assert_eq!(
        cl.status.as_ref().unwrap().endpoint.as_deref(),
        Some("grpc://demo.t-lifecycle.svc:50051")
    );
    assert!(owned_by(&d0, &cl));
    assert!(owned_by(
        &Api::<ConfigMap>::namespaced(c.clone(), ns)
            .get("demo-config")
            .await
            .unwrap(),
        &cl
    ));
    assert!(owned_by(
        &Api::<Service>::namespaced(c.clone(), ns)
            .get("demo")
            .await
            .unwrap(),
        &cl
    ));
    assert!(owned_by(
        &Api::<PodDisruptionBudget>::namespaced(c.clone(), ns)
            .get("demo")
            .await
            .unwrap(),
        &cl
    ));
    assert!(owned_by(
        &Api::<ServiceAccount>::namespaced(c.clone(), ns)
            .get("demo")
            .await
            .unwrap(),
        &cl
    ));
    let printed = kubectl(&["get", "-n", ns, "sqe", "demo"]);
    assert!(
        printed.contains("READY") && printed.contains("True"),
        "{printed}"
    );

    // A reconcile of an unchanged object applies everything again (no GET, no digest) and
    // the API server treats those applies as no-ops: no resourceVersion moves.
    let before = resource_versions(ns, "demo").await;
    let deletes = op.deletes();
    touch_and_wait_for_applies(&op, ns, "demo", "1").await;
    assert_eq!(
        resource_versions(ns, "demo").await,
        before,
        "an idle reconcile changed an object"
    );
    assert_eq!(op.deletes(), deletes, "an idle reconcile deleted something");

    // Spec change → new hash → rolling update.
    let h0 = pod_hash(&d0);
    kubectl(&[
        "patch",
        "-n",
        ns,
        "sqecluster/demo",
        "--type=merge",
        "-p",
        r#"{"spec":{"engine":{"logLevel":"debug"}}}"#,
    ]);
    let (_, d1) = wait_ready(ns, "demo").await;
    assert_ne!(pod_hash(&d1), h0, "spec change must roll the pods");
    assert!(d1.metadata.generation > d0.metadata.generation);

    // Secret rotated → rolling update.
    kubectl_apply(ns, &secret_yaml("s2"));
    let d2 = eventually("hash change after secret rotation", 60, || async {
        let d = deployments.get("demo").await.ok()?;
        (pod_hash(&d) != pod_hash(&d1)).then_some(d)
    })
    .await;
    let (_, d2r) = wait_ready(ns, "demo").await;
    assert_eq!(pod_hash(&d2), pod_hash(&d2r));

    // Autoscaling on → HPA; an idle reconcile leaves it alone too.
    kubectl(&[
        "patch",
        "-n",
        ns,
        "sqecluster/demo",
        "--type=merge",
        "-p",
        r#"{"spec":{"engine":{"replicas":null,"autoscaling":{"minReplicas":2,"maxReplicas":4}}}}"#,
    ]);
    let hpa = eventually("HPA created", 60, || async {
        hpas.get_opt("demo").await.ok()?
    })
    .await;
    let cl = cluster_of(&clusters, "demo").await;
    assert!(owned_by(&hpa, &cl));
    // Replicas left our apply (the field went back to its default); the HPA controller raises
    // them to minReplicas on its next sync. Settle before comparing.
    // Wait for the status to show both pods too: while replicas were 1, "1/1 ready" was a
    // Ready=True of the same generation, which wait_ready alone would accept.
    eventually("HPA scaled the Deployment to minReplicas", 90, || async {
        let d = deployments.get("demo").await.ok()?;
        let ready = cluster_of(&clusters, "demo").await.status?.ready_replicas;
        (d.spec?.replicas == Some(2) && ready == 2).then_some(())
    })
    .await;
    wait_ready(ns, "demo").await;
    // Ready holds from the first ready pod on; the second one still moves the status
    // (readyReplicas) after that, which would read as an idle reconcile changing it.
    eventually("both pods counted in the status", 60, || async {
        let cl = clusters.get("demo").await.ok()?;
        (cl.status?.ready_replicas == 2).then_some(())
    })
    .await;
    let before = resource_versions(ns, "demo").await;
    assert!(before.iter().any(|(k, _)| k == "hpa"));
    touch_and_wait_for_applies(&op, ns, "demo", "2").await;
    assert_eq!(
        resource_versions(ns, "demo").await,
        before,
        "an idle reconcile changed an object (HPA on)"
    );

    // Look-alikes with our labels: one nobody owns (never ours to delete), one the cluster
    // controls under a name it no longer wants (swept like the HPA).
    let labels = "app.kubernetes.io/managed-by: sqe-operator, app.kubernetes.io/instance: demo";
    kubectl_apply(
        ns,
        &format!(
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: demo-manual, labels: {{{labels}}}}}\nspec: {{scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: nothing}}, maxReplicas: 2}}\n"
        ),
    );
    kubectl_apply(
        ns,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: demo-old-config, labels: {{{labels}}}, ownerReferences: [{{apiVersion: sqe.io/v1alpha1, kind: SqeCluster, name: demo, uid: {}, controller: true}}]}}\ndata: {{engine.yaml: old}}\n",
            cl.metadata.uid.as_deref().unwrap()
        ),
    );
    let configmaps: Api<ConfigMap> = Api::namespaced(c.clone(), ns);

    // Autoscaling off → the sweep deletes the HPA (and the stale ConfigMap).
    kubectl(&[
        "patch",
        "-n",
        ns,
        "sqecluster/demo",
        "--type=merge",
        "-p",
        r#"{"spec":{"engine":{"autoscaling":null,"replicas":2}}}"#,
    ]);
    eventually("HPA deleted", 60, || async {
        hpas.get_opt("demo").await.ok()?.is_none().then_some(())
    })
    .await;
    eventually("stale owned ConfigMap swept", 60, || async {
        configmaps
            .get_opt("demo-old-config")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(op.deletes() >= 2.0, "the sweep, not the garbage collector");
    wait_ready(ns, "demo").await;
    assert!(
        hpas.get_opt("demo-manual").await.unwrap().is_some(),
        "an HPA with our labels but no owner reference was deleted"
    );
    assert!(configmaps.get_opt("demo-config").await.unwrap().is_some());
    kubectl(&["delete", "-n", ns, "hpa/demo-manual"]);

    // Secret missing → Degraded with a message; recovered when it appears.
    kubectl(&["delete", "-n", ns, "secret", "oidc"]);
    let msg = eventually("Degraded=True", 60, || async {
        let cl = clusters.get("demo").await.ok()?;
        let (s, m) = cond(&cl, "Degraded")?;
        (s == "True").then_some(m)
    })
    .await;
    assert!(
        msg.contains("t-lifecycle/oidc") && msg.contains("clientSecretRef"),
        "{msg}"
    );
    kubectl_apply(ns, &secret_yaml("s2"));
    eventually("Degraded=False", 60, || async {
        let cl = clusters.get("demo").await.ok()?;
        (cond(&cl, "Degraded")?.0 == "False").then_some(())
    })
    .await;
    wait_ready(ns, "demo").await;

    // Operator restart changes nothing.
    let before = resource_versions(ns, "demo").await;
    op.stop();
    let op2 = Operator::start(ns, "lease-lifecycle", "op-lifecycle-2");
    eventually("restarted operator leads", 30, || async {
        op2.is_leader().then_some(())
    })
    .await;
    // Its first reconcile applies everything: no-ops, so nothing moves.
    eventually("restarted operator reconciled", 30, || async {
        (op2.writes() > 0.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        resource_versions(ns, "demo").await,
        before,
        "a restart rewrote objects"
    );
    assert_eq!(op2.deletes(), 0.0, "a restart deleted something");

    // Delete the SqeCluster → everything it owned is garbage-collected.
    kubectl(&["delete", "-n", ns, "sqecluster/demo", "--wait=true"]);
    eventually("owned objects garbage-collected", 90, || async {
        let gone = deployments.get_opt("demo").await.ok()?.is_none()
            && Api::<ConfigMap>::namespaced(c.clone(), ns)
                .get_opt("demo-config")
                .await
                .ok()?
                .is_none()
            && Api::<Service>::namespaced(c.clone(), ns)
                .get_opt("demo")
                .await
                .ok()?
                .is_none()
            && Api::<PodDisruptionBudget>::namespaced(c.clone(), ns)
                .get_opt("demo")
                .await
                .ok()?
                .is_none()
            && Api::<ServiceAccount>::namespaced(c.clone(), ns)
                .get_opt("demo")
                .await
                .ok()?
                .is_none();
        gone.then_some(())
    })
    .await;
    op2.stop();
}

#[tokio::test]
#[ignore = "needs the control plane: e2e/k8s/test"]
async fn two_replicas_only_the_leader_writes() {
    let ns = "t-leader";
    setup();
    ensure_namespace(ns);
    let c = client().await;
    let leases: Api<Lease> = Api::namespaced(c.clone(), SYSTEM_NS);
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), ns);
    kubectl_apply(ns, &secret_yaml("s1"));

    let a = Operator::start(ns, "lease-leader", "op-a");
    eventually("op-a leads", 30, || async { a.is_leader().then_some(()) }).await;
    let b = Operator::start(ns, "lease-leader", "op-b");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!b.is_leader(), "two leaders");
    let lease = leases.get("lease-leader").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("op-a"));

    kubectl_apply(ns, &cluster_yaml("one", "    replicas: 1\n", ""));
    wait_ready(ns, "one").await;
    assert!(a.writes() > 0.0);
    assert_eq!(b.writes(), 0.0, "the standby wrote");

    // The leader goes away → the standby takes over and reconciles.
    a.stop();
    eventually("op-b takes over", 30, || async {
        b.is_leader().then_some(())
    })
    .await;
    kubectl_apply(ns, &cluster_yaml("two", "    replicas: 1\n", ""));
    wait_ready(ns, "two").await;
    assert!(deployments.get_opt("two").await.unwrap().is_some());
    assert!(b.writes() > 0.0);
    let lease = leases.get("lease-leader").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("op-b"));
    kubectl(&["delete", "-n", ns, "sqecluster/one", "sqecluster/two"]);
    b.stop();
}

#[tokio::test]
#[ignore = "needs the control plane: e2e/k8s/test"]
async fn render_output_applies_as_is() {
    // `sqe-operator render` prints manifests a reviewer can apply without edits.
    let ns = "t-render";
    setup();
    ensure_namespace(ns);
    for f in ["minimal.yaml", "production.yaml", "local-stack.yaml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_sqe-operator"))
            .args([
                "render",
                "-n",
                ns,
                "-f",
                repo().join("crds/examples").join(f).to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let yaml = String::from_utf8(out.stdout).unwrap();
        let res = kubectl_in(
            Some(&yaml),
            &["apply", "--dry-run=server", "-n", ns, "-f", "-"],
        );
        assert!(
            res.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&res.stderr)
        );
    }
}

#[tokio::test]
#[ignore = "needs the control plane: e2e/k8s/test"]
async fn helm_chart_lints_and_installs() {
    setup();
    helm(&["lint", &chart_dir()]);
    // The whole chart (CRD included) is accepted by the API server as rendered.
    let all = helm(&[
        "template",
        RELEASE,
        &chart_dir(),
        "-n",
        SYSTEM_NS,
        "--include-crds",
    ]);
    let out = kubectl_in(
        Some(&all),
        &["apply", "--dry-run=server", "-n", SYSTEM_NS, "-f", "-"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for kind in [
        "CustomResourceDefinition",
        "ClusterRole",
        "Role",
        "Deployment",
        "ServiceAccount",
    ] {
        assert!(
            all.contains(&format!("kind: {kind}\n")),
            "chart lacks a {kind}"
        );
    }
    // The rendered ClusterRole has exactly the rules file's rules (one source of truth).
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("charts/sqe-operator/files/clusterrole-rules.yaml"))
            .unwrap(),
    )
    .unwrap();
    let role = helm(&[
        "template",
        RELEASE,
        &chart_dir(),
        "-n",
        SYSTEM_NS,
        "--show-only",
        "templates/rbac.yaml",
    ]);
    let first: serde_yaml::Value = serde_yaml::Deserializer::from_str(&role)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|v: &serde_yaml::Value| v.get("kind").and_then(|k| k.as_str()) == Some("ClusterRole"))
        .unwrap();
    assert_eq!(first["rules"], rules);
}
