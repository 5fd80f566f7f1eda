//! The `SqeCluster` API as users and GitOps tools meet it, on a real control plane (started by
//! `e2e/k8s/up`; ignored by default, `e2e/k8s/test` runs them with `--ignored`): `kubectl
//! explain` and `kubectl get` output, the scale subresource (`kubectl scale`, an HPA targeting
//! the SqeCluster), the pause knob and restart nonce, the example GitOps manifests under
//! `deploy/` against the API server, the Argo CD health check on live objects, and that the
//! operator never writes a field a GitOps tool owns.

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::{Api, Resource};
use sqe_crds::SqeCluster;

const SECRET: &str =
    "apiVersion: v1\nkind: Secret\nmetadata: {name: oidc}\nstringData: {client-secret: s1}\n";

/// A namespace of our own, emptied first: a plane kept from an earlier run (`SQE_KEEP_K8S=1`)
/// still holds that run's objects.
fn fresh_namespace(ns: &str) {
    kubectl(&[
        "delete",
        "namespace",
        ns,
        "--ignore-not-found",
        "--wait=true",
        "--timeout=120s",
    ]);
    ensure_namespace(ns);
}

/// Ready for its current generation.
async fn wait_ready(ns: &str, name: &str) -> SqeCluster {
    let clusters: Api<SqeCluster> = Api::namespaced(client().await, ns);
    eventually(
        &format!("{ns}/{name} Ready for its generation"),
        120,
        || async {
            let c = clusters.get(name).await.ok()?;
            let st = c.status.as_ref()?;
            let ready = c.condition("Ready")?.status == "True";
            (ready && st.observed_generation == c.metadata.generation).then_some(c)
        },
    )
    .await
}

/// What `deploy/argocd/health.lua` answers for the live object: (status, message).
fn argocd_health(ns: &str, name: &str) -> (String, String) {
    let json = kubectl(&["get", "-n", ns, "sqecluster", name, "-o", "json"]);
    let path = state_dir().join(format!("health-{ns}-{name}.json"));
    std::fs::write(&path, json).unwrap();
    let out = std::process::Command::new("lua5.4")
        .arg(repo().join("deploy/argocd/test/run.lua"))
        .arg(&path)
        .output()
        .expect("lua5.4 (apt-get install lua5.4)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (s, m) = text.trim_end().split_once('\t').unwrap();
    (s.to_string(), m.to_string())
}

fn deployment_image_and_annotations(d: &Deployment) -> (String, serde_json::Value) {
    let t = &d.spec.as_ref().unwrap().template;
    (
        t.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap(),
        serde_json::to_value(&t.metadata.as_ref().unwrap().annotations).unwrap(),
    )
}

#[tokio::test]
#[ignore = "needs the control plane: e2e/k8s/test"]
async fn kubectl_explain_and_get_read_well() {
    setup();
    let ns = "t-api-explain";
    fresh_namespace(ns);
    // The API server publishes a new CRD's OpenAPI a few seconds after it is Established;
    // `kubectl explain` reads that, so it may not know the kind yet on a fresh plane.
    let deadline = Instant::now() + Duration::from_secs(60);
    let spec = loop {
        let out = kubectl_in(None, &["explain", "sqecluster.spec", "--recursive"]);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "kubectl explain: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    for field in [
        "clusterOperation",
        "reconciliationPaused",
        "restartNonce",
        "podOverrides",
        "topologySpreadConstraints",
        "imagePullSecrets",
        "volumeMounts",
    ] {
        assert!(spec.contains(field), "explain lacks {field}:\n{spec}");
    }
    let paused = kubectl(&[
        "explain",
        "sqecluster.spec.clusterOperation.reconciliationPaused",
    ]);
    assert!(paused.contains("the operator writes nothing"), "{paused}");
    let replicas = kubectl(&["explain", "sqecluster.spec.engine.replicas"]);
    assert!(replicas.contains("kubectl scale"), "{replicas}");
    let selector = kubectl(&["explain", "sqecluster.status.selector"]);
    assert!(selector.contains("HPA"), "{selector}");

    kubectl_apply(ns, SECRET);
    kubectl_apply(ns, &cluster_yaml("lake", "    replicas: 2\n", ""));
    let op = Operator::start(ns, "lease-api-explain", "op-api-explain");
    wait_ready(ns, "lake").await;
    let get = kubectl(&["get", "-n", ns, "sqe"]);
    let header: Vec<_> = get
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "REPLICAS",
            "READY REPLICAS",
            "PAUSED",
            "ENDPOINT",
            "AGE"
        ],
        "{get}"
    );
    let row: Vec<_> = get.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..6],
        [
            "lake",
            "True",
            "2",
            "2",
            "false",
            "grpc://lake.t-api-explain.svc:50051"
        ],
        "{get}"
    );
    let wide = kubectl(&["get", "-n", ns, "sqe", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap().contains("REASON") && wide.contains("AllReplicasReady"),
        "{wide}"
    );
    op.stop();
}

#[tokio::test]
#[ignore = "needs the control plane: e2e/k8s/test"]
async fn kubectl_scale_and_an_hpa_drive_the_engine_through_the_scale_subresource() {
    setup();
    let ns = "t-api-scale";
    fresh_namespace(ns);
    kubectl_apply(ns, SECRET);
    kubectl_apply(ns, &cluster_yaml("lake", "    replicas: 2\n", ""));
    let op = Operator::start(ns, "lease-api-scale", "op-api-scale");
    wait_ready(ns, "lake").await;

    kubectl(&["scale", "-n", ns, "sqe/lake", "--replicas=3"]);
    let c = wait_ready(ns, "lake").await;
    assert_eq!(c.spec.engine.replicas, Some(3));
    assert_eq!(c.status.as_ref().unwrap().replicas, 3);
    let deployments: Api<Deployment> = Api::namespaced(client().await, ns);
    assert_eq!(
        deployments
            .get("lake")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(3)
    );

    let scale: serde_json::Value = serde_json::from_str(&kubectl(&[
        "get",
        "-n",
        ns,
        "sqecluster",
        "lake",
        "--subresource=scale",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["replicas"], 3);
    assert_eq!(
        scale["status"]["selector"],
        "app.kubernetes.io/instance=lake,app.kubernetes.io/name=sqe-engine"
    );
    // The selector finds exactly the engine pods.
    let pods = kubectl(&[
        "get",
        "pods",
        "-n",
        ns,
        "-l",
        scale["status"]["selector"].as_str().unwrap(),
        "-o",
        "name",
    ]);
    assert_eq!(pods.lines().count(), 3, "{pods}");

    // An HPA targeting the SqeCluster reads its scale (no metrics server here, so it cannot
    // compute a recommendation, but AbleToScale proves the subresource works for it).
    kubectl_apply(
        ns,
        r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: lake-external}
spec:
  scaleTargetRef: {apiVersion: sqe.io/v1alpha1, kind: SqeCluster, name: lake}
  minReplicas: 2
  maxReplicas: 5
  metrics:
    - type: Resource
      resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}
"#,
    );
    eventually("the HPA got the SqeCluster's scale", 90, || async {
        let out = kubectl(&["get", "-n", ns, "hpa", "lake-external", "-o", "json"]);
        let h: serde_json::Value = serde_json::from_str(&out).ok()?;
        let able = h["status"]["conditions"].as_array()?.iter().any(|c| {
            c["type"] == "AbleToScale"
                && c["status"] == "True"
                && c["reason"] == "SucceededGetScale"
        });
        (able && h["status"]["currentReplicas"] == 3).then_some(())
    })
    .await;
    kubectl(&["delete", "-n", ns, "hpa", "lake-external"]);

    // Scaling with engine.autoscaling set is refused with the schema's message, since the
    // scale subresource writes spec.engine.replicas.
    kubectl(&[
        "patch",
        "-n",
        ns,
        "sqe/lake",
        "--type=merge",
        "-p",
        r#"{"spec":{"engine":{"replicas":null,"autoscaling":{"minReplicas":2,"maxReplicas":4}}}}"#,
    ]);
    let out = kubectl_in(None, &["scale", "-n", ns, "sqe/lake", "--replicas=5"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("either engine.replicas or engine.autoscaling"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    op.stop();
}

#[tokio::test]
#[ignore = "needs the control plane: e2e/k8s/test"]
async fn pause_holds_every_write_and_a_restart_nonce_rolls_the_pods() {
    setup();
    let ns = "t-api-pause";
    fresh_namespace(ns);
    kubectl_apply(ns, SECRET);
    kubectl_apply(ns, &cluster_yaml("lake", "    replicas: 2\n", ""));
    let op = Operator::start(ns, "lease-api-pause", "op-api-pause");
    wait_ready(ns, "lake").await;
    assert_eq!(argocd_health(ns, "lake").0, "Healthy");
    let deployments: Api<Deployment> = Api::namespaced(client().await, ns);
    let before = deployments.get("lake").await.unwrap();

    kubectl(&[
        "patch",
        "-n",
        ns,
        "sqe/lake",
        "--type=merge",
        "-p",
        r#"{"spec":{"clusterOperation":{"reconciliationPaused":true},"engine":{"image":"sqe-engine:v2"}}}"#,
    ]);
    let clusters: Api<SqeCluster> = Api::namespaced(client().await, ns);
    let paused = eventually(
        "ReconciliationPaused=True for the new generation",
        60,
        || async {
            let c = clusters.get("lake").await.ok()?;
            let p = c.condition("ReconciliationPaused")?;
            (p.status == "True" && c.status.as_ref()?.observed_generation == c.metadata.generation)
                .then_some(c)
        },
    )
    .await;
    assert_eq!(
        paused.condition("Ready").unwrap().status,
        "True",
        "the old pods still serve"
    );
    assert_eq!(argocd_health(ns, "lake").0, "Suspended");
    let writes = op.writes();
    // Reconciles happen (an annotation triggers one) but write nothing.
    kubectl(&[
        "annotate",
        "-n",
        ns,
        "sqe/lake",
        "test/touch=1",
        "--overwrite",
    ]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(op.writes(), writes, "no apply or delete while paused");
    let during = deployments.get("lake").await.unwrap();
    assert_eq!(
        during.metadata.resource_version,
        before.metadata.resource_version
    );

    kubectl(&[
        "patch",
        "-n",
        ns,
        "sqe/lake",
        "--type=merge",
        "-p",
        r#"{"spec":{"clusterOperation":{"reconciliationPaused":false}}}"#,
    ]);
    wait_ready(ns, "lake").await;
    let d = deployments.get("lake").await.unwrap();
    assert_eq!(deployment_image_and_annotations(&d).0, "sqe-engine:v2");
    assert_eq!(
        clusters
            .get("lake")
            .await
            .unwrap()
            .condition("ReconciliationPaused")
            .unwrap()
            .status,
        "False"
    );

    kubectl(&[
        "patch",
        "-n",
        ns,
        "sqe/lake",
        "--type=merge",
        "-p",
        r#"{"spec":{"clusterOperation":{"restartNonce":"2026-01-01T10:00"}}}"#,
    ]);
    wait_ready(ns, "lake").await;
    let rolled = deployments.get("lake").await.unwrap();
    let (_, ann) = deployment_image_and_annotations(&rolled);
    assert_eq!(ann["sqe.io/restart-nonce"], "2026-01-01T10:00");
    assert!(
        rolled.metadata.generation > d.metadata.generation,
        "the template changed: a rollout"
    );
    assert_eq!(argocd_health(ns, "lake").0, "Healthy");
    op.stop();
}

/// The managedFields entries of `obj` whose manager is `manager`.
fn entries<'a, K: Resource>(obj: &'a K, manager: &str) -> Vec<&'a ManagedFieldsEntry> {
    obj.meta()
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(manager))
        .collect()
}

fn ssa(ns: &str, manager: &str, yaml: &str) -> std::process::Output {
    // No --force-conflicts: a conflict with another writer is an error, as in Argo CD/Flux.
    kubectl_in(
        Some(yaml),
        &[
            "apply",
            "--server-side",
            "--field-manager",
            manager,
            "-n",
            ns,
            "-f",
            "-",
        ],
    )
}

#[tokio::test]
#[ignore = "needs the control plane: e2e/k8s/test"]
async fn the_operator_never_fights_a_gitops_tool() {
    setup();
    let ns = "t-api-gitops";
    fresh_namespace(ns);
    let git = format!(
        "{SECRET}---\n{}",
        cluster_yaml(
            "lake",
            "    replicas: 2\n    podOverrides:\n      env: [{name: TZ, value: UTC}]\n",
            "  clusterOperation: {restartNonce: \"1\"}\n"
        )
    );
    let out = ssa(ns, "gitops", &git);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let op = Operator::start(ns, "lease-api-gitops", "op-api-gitops");
    wait_ready(ns, "lake").await;

    // The GitOps tool syncs again and again (each sync a label change, so each one also
    // triggers a reconcile): never a conflict, and the operator answers with status only.
    for i in 0..3 {
        let writes = op.writes();
        let synced = git.replace(
            "metadata: {name: lake}",
            &format!("metadata: {{name: lake, labels: {{sync: \"{i}\"}}}}"),
        );
        let out = ssa(ns, "gitops", &synced);
        assert!(
            out.status.success(),
            "sync {i} conflicted: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eventually("the operator reconciled the sync", 30, || async {
            (op.writes() > writes).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let c = wait_ready(ns, "lake").await;
    assert_eq!(argocd_health(ns, "lake").0, "Healthy");

    // On the SqeCluster the operator owns status, through the status subresource, and
    // nothing else; the GitOps tool owns the whole spec and nobody else touches it.
    let ours = entries(&c, "sqe-operator");
    assert!(!ours.is_empty());
    for m in &ours {
        assert_eq!(m.subresource.as_deref(), Some("status"), "{m:?}");
        let fields = serde_json::to_value(&m.fields_v1).unwrap();
        let keys: Vec<_> = fields.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["f:status"], "{m:?}");
    }
    let spec_writers: Vec<_> = c
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            serde_json::to_string(&m.fields_v1)
                .unwrap()
                .contains("\"f:spec\"")
        })
        .map(|m| m.manager.clone().unwrap_or_default())
        .collect();
    assert_eq!(spec_writers, ["gitops"]);

    // The Secret the user owns: read by the operator, written by nobody but its owner.
    let secret = Api::<Secret>::namespaced(client().await, ns)
        .get("oidc")
        .await
        .unwrap();
    let writers: Vec<_> = secret
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| m.manager.clone().unwrap_or_default())
        .collect();
    assert_eq!(writers, ["gitops"], "{:?}", secret.metadata.managed_fields);
    assert!(
        secret.metadata.owner_references.is_none(),
        "the operator never adopts it"
    );

    // One more sync of the same manifests changes nothing at all.
    let rv = c.metadata.resource_version.clone();
    let last = git.replace(
        "metadata: {name: lake}",
        "metadata: {name: lake, labels: {sync: \"2\"}}",
    );
    assert!(ssa(ns, "gitops", &last).status.success());
    let again = Api::<SqeCluster>::namespaced(client().await, ns)
        .get("lake")
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, rv);
    op.stop();
}

#[tokio::test]
#[ignore = "needs the control plane: e2e/k8s/test"]
async fn the_gitops_examples_pass_a_server_side_dry_run() {
    setup();
    // deploy/clusters/lake is a kustomization (namespace team-a), as Argo CD and Flux build it.
    fresh_namespace("team-a");
    let built = kubectl(&[
        "kustomize",
        repo().join("deploy/clusters/lake").to_str().unwrap(),
    ]);
    assert!(built.contains("kind: SqeCluster"), "{built}");
    let out = kubectl_in(
        Some(&built),
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=gitops",
            "-f",
            "-",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The argocd-cm snippet is a plain ConfigMap; Argo CD's and Flux's own kinds need their
    // CRDs, which this plane does not have (their YAML is parsed by the sqe-crds tests).
    ensure_namespace("argocd");
    let out = kubectl_in(
        None,
        &[
            "apply",
            "--dry-run=server",
            "-f",
            repo()
                .join("deploy/argocd/argocd-cm.yaml")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
