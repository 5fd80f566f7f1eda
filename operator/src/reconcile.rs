//! The reconcile pipeline: read the spec and referenced Secrets → validate → build the desired
//! objects (pure, `resources`) → server-side apply them under one field manager → sweep owned
//! objects no longer desired (`sweep`) → compute and patch status. While
//! `spec.clusterOperation.reconciliationPaused` is set only the status is written. Applies are sent every time
//! (a no-op apply changes nothing on the server); status is patched only when it changed.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqe_crds::{SqeCluster, SqeClusterSpec, SqeClusterStatus, condition};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::resources::{self, Desired, MANAGER, SecretDigests};
use crate::status::{self, Problem};
use crate::sweep;

const REQUEUE_STEADY: Duration = Duration::from_secs(300);
const REQUEUE_PROBLEM: Duration = Duration::from_secs(60);
const BACKOFF_BASE: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

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

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<SqeCluster>, u32>> {
        // A poisoned map only holds backoff counters; recover it rather than stop reconciling.
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub async fn reconcile(cluster: Arc<SqeCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&cluster, &ctx).await;
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

    // 1. Read referenced objects. 2. Validate (missing Secret, engine config rules).
    let (digests, mut problem) = read_secrets(client, &ns, &cluster.spec).await?;
    let desired = match problem {
        Some(_) => None,
        None => match resources::build(cluster, &digests) {
            Ok(d) => Some(d),
            Err(Error::InvalidSpec(msg)) => {
                problem = Some(Problem::new("InvalidSpec", msg));
                None
            }
            Err(e) => return Err(e),
        },
    };

    // 3. Apply. With a problem the running pods are left alone: they serve the last good spec.
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

    // 4. Status.
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

/// Read the Secrets the spec references; return digests of the used values, or the first
/// problem (missing Secret or key) with a message naming the spec field.
pub async fn read_secrets(
    client: &Client,
    ns: &str,
    spec: &SqeClusterSpec,
) -> Result<(SecretDigests, Option<Problem>)> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut wanted: Vec<(String, String, &'static str)> = Vec::new();
    if let Some(r) = &spec.oidc.client_secret_ref {
        wanted.push((r.name.clone(), r.key.clone(), "spec.oidc.clientSecretRef"));
    }
    if let Some(r) = &spec.polaris.ca_secret_ref {
        wanted.push((r.name.clone(), r.key.clone(), "spec.polaris.caSecretRef"));
    }
    if let Some(t) = &spec.tls {
        for key in ["tls.crt", "tls.key"] {
            wanted.push((t.secret_name.clone(), key.into(), "spec.tls.secretName"));
        }
    }
    let mut digests = SecretDigests::default();
    let mut fetched: HashMap<String, Option<Secret>> = HashMap::new();
    for (name, key, field) in wanted {
        if !fetched.contains_key(&name) {
            fetched.insert(name.clone(), api.get_opt(&name).await?);
        }
        let Some(secret) = fetched.get(&name).and_then(Option::as_ref) else {
            let msg = format!("Secret {ns}/{name} referenced by {field} not found");
            return Ok((digests, Some(Problem::new("SecretMissing", msg))));
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&key))
            .map(|b| b.0.clone())
            .or_else(|| {
                let s = secret.string_data.as_ref()?.get(&key)?;
                Some(s.clone().into_bytes())
            });
        match value {
            Some(v) => digests.add(&format!("{name}/{key}"), &v),
            None => {
                let msg = format!("Secret {ns}/{name} referenced by {field} has no key `{key}`");
                return Ok((digests, Some(Problem::new("SecretKeyMissing", msg))));
            }
        }
    }
    Ok((digests, None))
}

/// Apply every desired object, then sweep what this cluster no longer wants.
async fn apply_all(
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

async fn patch_status(
    client: &Client,
    ns: &str,
    cluster: &SqeCluster,
    status: &SqeClusterStatus,
) -> Result<()> {
    let api: Api<SqeCluster> = Api::namespaced(client.clone(), ns);
    let body = serde_json::json!({
        "apiVersion": SqeCluster::api_version(&()),
        "kind": SqeCluster::kind(&()),
        "status": status,
    });
    api.patch_status(
        &cluster.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Events for transitions a human cares about; failures to publish are only logged.
async fn publish_transitions(
    ctx: &Context,
    cluster: &SqeCluster,
    old: &SqeClusterStatus,
    new: &SqeClusterStatus,
) {
    let Some(recorder) = &ctx.recorder else {
        return;
    };
    let status_of = |s: &SqeClusterStatus, t: &str| {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let mut events = Vec::new();
    if old.config_hash.is_some() && new.config_hash != old.config_hash {
        events.push(Event {
            type_: EventType::Normal,
            reason: "RollingUpdate".into(),
            note: Some(format!(
                "engine config or secret changed (hash {} → {}); rolling the pods",
                old.config_hash.as_deref().unwrap_or("-"),
                new.config_hash.as_deref().unwrap_or("-")
            )),
            action: "Apply".into(),
            secondary: None,
        });
    }
    for t in [
        condition::READY,
        condition::DEGRADED,
        condition::RECONCILIATION_PAUSED,
    ] {
        let (o, n) = (status_of(old, t), status_of(new, t));
        if o.as_ref().map(|x| &x.0) != n.as_ref().map(|x| &x.0)
            && let Some((status, reason, message)) = n
        {
            // A pause starting or ending is news; a new cluster that was never paused is not.
            if t == condition::RECONCILIATION_PAUSED && o.is_none() && status == "False" {
                continue;
            }
            let bad = match t {
                condition::READY => status != "True",
                condition::DEGRADED => status == "True",
                _ => false,
            };
            events.push(Event {
                type_: if bad {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason,
                note: Some(format!("{t}={status}: {message}")),
                action: "Reconcile".into(),
                secondary: None,
            });
        }
    }
    let reference = cluster.object_ref(&());
    for e in events {
        if let Err(err) = recorder.publish(&e, &reference).await {
            tracing::warn!(error = %err, "could not publish event");
        }
    }
}

#[cfg(test)]
mod tests;
