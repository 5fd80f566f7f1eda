//! `run --apply-crd`: the operator brings its own `SqeCluster` CRD up to date before it
//! reconciles anything.
//!
//! Why the operator and not Helm: Helm installs a chart's `crds/` once and never upgrades
//! them, so a chart upgrade that adds a field to the API would leave the old schema on the
//! server, and the API server would prune (or, with strict field validation, refuse) the new
//! field. The operator binary carries the schema it was built with (`SqeCluster::crd()`, the
//! same source as `crds/sqecluster.yaml`), so applying it at start keeps the served API and
//! the code that reads it in step, for Helm, `helm template | kubectl apply` and GitOps tools
//! alike (the Stackable operators do the same).
//!
//! Server-side apply under a field manager of its own: only fields this manager sets are
//! changed, with `force` (the chart's first install created the CRD under Helm's manager), and
//! an unchanged schema is a no-op on the server. The chart's RBAC grants `get` and `patch` on
//! this one CRD by `resourceNames`, nothing on any other CRD. Only the leader applies, so
//! during a rolling upgrade the new version takes over the lease and then the schema, and an
//! old standby never writes its older schema back.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use sqe_crds::SqeCluster;

/// Field manager of the CRD apply; distinct from the reconcile's, so `managedFields` show who
/// last wrote the schema.
pub const FIELD_MANAGER: &str = "sqe-operator-crd";

/// Apply this binary's CRD and wait until the API server serves it (`Established`).
pub async fn apply_own_crd(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = SqeCluster::crd();
    let name = crd.name_any();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .with_context(|| {
        format!(
            "applying CustomResourceDefinition {name} (the chart grants `patch` on it when \
             crd.apply is true; with crd.apply false, install the CRD yourself and drop --apply-crd)"
        )
    })?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = api
            .get(&name)
            .await
            .with_context(|| format!("reading CustomResourceDefinition {name}"))?;
        if established(&current) {
            tracing::info!(crd = %name, "CustomResourceDefinition applied and established");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("CustomResourceDefinition {name} not Established after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Established" && c.status == "True")
}
