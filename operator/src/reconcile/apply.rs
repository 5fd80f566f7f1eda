//! Step 4: the desired objects, server-side applied under one field manager, then owned objects
//! no longer desired swept away.

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqe_crds::SqeCluster;

use super::context::Context;
use crate::error::Result;
use crate::resources::{Desired, MANAGER};
use crate::sweep;

/// Apply every desired object, then sweep what this cluster no longer wants.
pub(super) async fn apply_all(
    ctx: &Context,
    cluster: &SqeCluster,
    ns: &str,
    d: &Desired,
) -> Result<Deployment> {
    let c = &ctx.client;
    apply(
        ctx,
        &Api::<ServiceAccount>::namespaced(c.clone(), ns),
        &d.service_account,
    )
    .await?;
    apply(
        ctx,
        &Api::<ConfigMap>::namespaced(c.clone(), ns),
        &d.config_map,
    )
    .await?;
    apply(ctx, &Api::<Service>::namespaced(c.clone(), ns), &d.service).await?;
    apply(
        ctx,
        &Api::<PodDisruptionBudget>::namespaced(c.clone(), ns),
        &d.pdb,
    )
    .await?;
    let deployment = apply(
        ctx,
        &Api::<Deployment>::namespaced(c.clone(), ns),
        &d.deployment,
    )
    .await?;
    if let Some(store) = &d.store {
        let policies = Api::<NetworkPolicy>::namespaced(c.clone(), ns);
        apply(ctx, &policies, &store.network_policy).await?;
        apply(
            ctx,
            &Api::<Service>::namespaced(c.clone(), ns),
            &store.service,
        )
        .await?;
        let deployments = Api::<Deployment>::namespaced(c.clone(), ns);
        apply(ctx, &deployments, &store.deployment).await?;
    }
    if let Some(h) = &d.hpa {
        apply(
            ctx,
            &Api::<HorizontalPodAutoscaler>::namespaced(c.clone(), ns),
            h,
        )
        .await?;
    }
    // Only after everything desired exists: a renamed object is replaced, never missing.
    sweep::sweep(c, &ctx.metrics, ns, cluster, &d.names()).await?;
    Ok(deployment)
}

/// Server-side apply `desired` under our field manager, every reconcile. No read first: an
/// apply that changes nothing is a no-op on the API server (no new resourceVersion, no
/// watch event), and it restores any field someone else changed (`force`).
async fn apply<K>(ctx: &Context, api: &Api<K>, desired: &K) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    ctx.metrics.count_write(&K::kind(&()), "apply");
    let params = PatchParams::apply(MANAGER).force();
    Ok(api
        .patch(&desired.name_any(), &params, &Patch::Apply(desired))
        .await?)
}
