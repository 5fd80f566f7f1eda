//! The reconcile pipeline, one file per step: `dereference` (the Secrets the spec refers to) →
//! `validate` (a typed validated cluster, or the problem to report) → build the desired objects
//! (pure, `crate::resources`) → `apply` (server-side apply under one field manager, then sweep
//! owned objects no longer desired) → `publish` (the status computed purely by `crate::status`,
//! patched only when it changed, with events). While `spec.clusterOperation.reconciliationPaused` is set only
//! the status is written. Applies are sent every time (a no-op apply changes nothing on the
//! server).

mod apply;
mod context;
mod dereference;
mod generate;
mod publish;
mod validate;

pub use context::Context;
pub use dereference::read_secrets;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use sqe_crds::SqeCluster;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::resources;
use crate::status;
use apply::apply_all;
use publish::{patch_status, publish_transitions};

const REQUEUE_STEADY: Duration = Duration::from_secs(300);
const REQUEUE_PROBLEM: Duration = Duration::from_secs(60);
const BACKOFF_BASE: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

pub async fn reconcile(cluster: Arc<SqeCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    // Every line logged while reconciling carries the cluster it is about.
    let span = tracing::info_span!(
        "reconcile",
        namespace = cluster.namespace().unwrap_or_default().as_str(),
        cluster = cluster.name_any().as_str(),
        generation = cluster.metadata.generation.unwrap_or_default(),
    );
    let result = reconcile_inner(&cluster, &ctx).instrument(span).await;
    ctx.metrics.observe_reconcile(
        result.as_ref().err().map(Error::category),
        started.elapsed().as_secs_f64(),
    );
    if result.is_ok() {
        ctx.failures()
            .remove(&ObjectRef::from_obj(cluster.as_ref()));
    }
    result
}

/// Transient errors (API unavailable, conflicts) requeue with per-object exponential backoff.
pub fn error_policy(cluster: Arc<SqeCluster>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(cluster.as_ref());
    let n = {
        let mut f = ctx.failures();
        let n = f.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(16)))
        .min(BACKOFF_MAX);
    tracing::warn!(cluster = %cluster.name_any(), error = %err, category = err.category(), attempt = n, ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_inner(cluster: &SqeCluster, ctx: &Context) -> Result<Action> {
    let ns = resources::namespace(cluster)?;
    let client = &ctx.client;

    // Paused: read the Deployment for status, write nothing but the status subresource.
    if cluster.spec.cluster_operation.reconciliation_paused {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let deployment = api.get_opt(&cluster.name_any()).await?;
        let old = cluster.status.clone().unwrap_or_default();
        let new = status::paused(cluster, deployment.as_ref(), Timestamp::now());
        if new != old {
            patch_status(client, &ns, cluster, &new).await?;
            publish_transitions(ctx, cluster, &old, &new).await;
        }
        return Ok(Action::requeue(REQUEUE_STEADY));
    }

    // 1. Dereference. 2. Validate. 3. Build (pure).
    generate::ensure_generated(ctx, cluster, &ns).await?;
    let (digests, missing) = dereference::read_secrets(client, &ns, cluster).await?;
    let (desired, problem) = match missing {
        Some(p) => (None, Some(p)),
        None => match validate::validate(cluster, &digests)? {
            Ok(valid) => (Some(resources::build(&valid)), None),
            Err(p) => (None, Some(p)),
        },
    };

    // 4. Apply. With a problem the running pods are left alone: they serve the last good spec.
    let (deployment, hash) = match &desired {
        Some(d) => (
            Some(apply_all(ctx, cluster, &ns, d).await?),
            Some(d.config_hash.clone()),
        ),
        None => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            (api.get_opt(&cluster.name_any()).await?, None)
        }
    };

    // 5. Status.
    let old = cluster.status.clone().unwrap_or_default();
    let new = status::compute(
        cluster,
        deployment.as_ref(),
        problem.as_ref(),
        hash,
        Timestamp::now(),
    );
    if new != old {
        patch_status(client, &ns, cluster, &new).await?;
        publish_transitions(ctx, cluster, &old, &new).await;
    }

    Ok(match &problem {
        Some(_) => Action::requeue(REQUEUE_PROBLEM),
        // Deployment changes (pods becoming ready) trigger a reconcile through the watch.
        None => Action::requeue(REQUEUE_STEADY),
    })
}

#[cfg(test)]
mod tests;
