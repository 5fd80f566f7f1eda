//! Step 5: the status patched (only when it changed), and events for the transitions a human
//! cares about.

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client, Resource, ResourceExt};
use sqe_crds::{SqeCluster, SqeClusterStatus, condition};

use super::context::Context;
use crate::error::Result;
use crate::resources::MANAGER;

pub(super) async fn patch_status(
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
pub(super) async fn publish_transitions(
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
