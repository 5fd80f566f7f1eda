//! The sweep: after the desired objects are applied, delete what this cluster made earlier and
//! no longer wants (an HPA after autoscaling is switched off, an object under an old name).
//! `stale` decides (pure); `sweep` lists by label and deletes (thin shell).

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use sqe_crds::SqeCluster;

use crate::error::Result;
use crate::metrics::Metrics;
use crate::resources::{self, DesiredNames};

/// An object the label selector found: what the decision needs to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub kind: &'static str,
    pub name: String,
    pub uid: Option<String>,
    /// UID of its controller owner reference, if it has one.
    pub controller: Option<String>,
    /// Deletion already under way (a Deployment's pods take a while): no second delete.
    pub deleting: bool,
}

impl Found {
    pub fn new(kind: &'static str, meta: &ObjectMeta) -> Self {
        Self {
            kind,
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
            controller: meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
            deleting: meta.deletion_timestamp.is_some(),
        }
    }
}

/// The found objects to delete: not desired (by kind and name) and controlled by the cluster
/// with `owner_uid`. Labels can be copied by anyone, so they only narrow the search; the
/// controller reference is the proof of ownership. Without a UID nothing is ours to delete.
pub fn stale<'a>(
    desired: &DesiredNames,
    owner_uid: Option<&str>,
    found: &'a [Found],
) -> Vec<&'a Found> {
    let Some(owner) = owner_uid else {
        return Vec::new();
    };
    found
        .iter()
        .filter(|f| f.controller.as_deref() == Some(owner))
        .filter(|f| !f.deleting)
        .filter(|f| {
            !desired
                .get(f.kind)
                .is_some_and(|names| names.contains(&f.name))
        })
        .collect()
}

/// List every kind the operator manages by the cluster's labels and delete the stale ones.
/// The kinds are those `run` watches (`owns`): a new kind belongs in both lists.
pub async fn sweep(
    client: &Client,
    metrics: &Metrics,
    ns: &str,
    cluster: &SqeCluster,
    desired: &DesiredNames,
) -> Result<()> {
    let lp = ListParams::default().labels(&resources::owned_selector(cluster));
    let uid = cluster.metadata.uid.as_deref();
    sweep_kind::<ServiceAccount>(client, metrics, ns, &lp, uid, desired).await?;
    sweep_kind::<ConfigMap>(client, metrics, ns, &lp, uid, desired).await?;
    sweep_kind::<Service>(client, metrics, ns, &lp, uid, desired).await?;
    sweep_kind::<PodDisruptionBudget>(client, metrics, ns, &lp, uid, desired).await?;
    sweep_kind::<Deployment>(client, metrics, ns, &lp, uid, desired).await?;
    sweep_kind::<HorizontalPodAutoscaler>(client, metrics, ns, &lp, uid, desired).await?;
    sweep_kind::<NetworkPolicy>(client, metrics, ns, &lp, uid, desired).await?;
    Ok(())
}

async fn sweep_kind<K>(
    client: &Client,
    metrics: &Metrics,
    ns: &str,
    lp: &ListParams,
    owner_uid: Option<&str>,
    desired: &DesiredNames,
) -> Result<()>
where
    K: k8s_openapi::Resource
        + Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    // Metadata only: the decision needs no spec, and the list stays small.
    let found: Vec<Found> = api
        .list_metadata(lp)
        .await?
        .items
        .iter()
        .map(|o| Found::new(K::KIND, &o.metadata))
        .collect();
    for f in stale(desired, owner_uid, &found) {
        // The UID precondition deletes exactly the object we judged, not one recreated under
        // its name since the list.
        let dp = DeleteParams::background().preconditions(Preconditions {
            uid: f.uid.clone(),
            resource_version: None,
        });
        match api.delete(&f.name, &dp).await {
            Ok(_) => {
                metrics.count_write(K::KIND, "delete");
                tracing::info!(kind = K::KIND, name = %f.name, "deleted an object the cluster no longer wants");
            }
            // Gone already (the garbage collector, a person) or replaced: nothing to do.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    use super::*;

    const OURS: &str = "cluster-uid";

    fn found(kind: &'static str, name: &str, controller: Option<&str>) -> Found {
        Found {
            kind,
            name: name.into(),
            uid: Some(format!("{kind}-{name}-uid")),
            controller: controller.map(str::to_string),
            deleting: false,
        }
    }

    fn desired(entries: &[(&'static str, &str)]) -> DesiredNames {
        let mut d = DesiredNames::new();
        for (kind, name) in entries {
            d.entry(*kind).or_default().insert((*name).to_string());
        }
        d
    }

    fn names(v: Vec<&Found>) -> Vec<(&'static str, &str)> {
        v.into_iter().map(|f| (f.kind, f.name.as_str())).collect()
    }

    #[test]
    fn an_owned_object_the_desired_state_no_longer_has_is_deleted() {
        let d = desired(&[("Deployment", "demo")]);
        let f = [
            found("Deployment", "demo", Some(OURS)),
            found("HorizontalPodAutoscaler", "demo", Some(OURS)),
        ];
        assert_eq!(
            names(stale(&d, Some(OURS), &f)),
            [("HorizontalPodAutoscaler", "demo")]
        );
    }

    #[test]
    fn a_desired_object_is_kept() {
        let d = desired(&[("ConfigMap", "demo-config"), ("Service", "demo")]);
        let f = [
            found("ConfigMap", "demo-config", Some(OURS)),
            found("Service", "demo", Some(OURS)),
        ];
        assert!(stale(&d, Some(OURS), &f).is_empty());
    }

    #[test]
    fn the_name_counts_per_kind() {
        // A Service named like the desired ConfigMap is still not desired.
        let d = desired(&[("ConfigMap", "demo-config")]);
        let f = [found("Service", "demo-config", Some(OURS))];
        assert_eq!(
            names(stale(&d, Some(OURS), &f)),
            [("Service", "demo-config")]
        );
    }

    #[test]
    fn an_object_under_an_old_name_is_deleted_and_the_new_one_kept() {
        let d = desired(&[("ConfigMap", "demo-config")]);
        let f = [
            found("ConfigMap", "demo-cfg", Some(OURS)),
            found("ConfigMap", "demo-config", Some(OURS)),
        ];
        assert_eq!(
            names(stale(&d, Some(OURS), &f)),
            [("ConfigMap", "demo-cfg")]
        );
    }

    #[test]
    fn an_object_with_our_labels_but_no_owner_reference_is_never_deleted() {
        let f = [found("HorizontalPodAutoscaler", "demo", None)];
        assert!(stale(&DesiredNames::new(), Some(OURS), &f).is_empty());
    }

    #[test]
    fn an_object_controlled_by_another_owner_is_never_deleted() {
        // Another SqeCluster of the same name (deleted and recreated: a new UID), or
        // anything else that controls it.
        let f = [found("Deployment", "demo", Some("other-uid"))];
        assert!(stale(&DesiredNames::new(), Some(OURS), &f).is_empty());
    }

    #[test]
    fn a_non_controller_owner_reference_is_not_ownership() {
        let f = Found::new(
            "ConfigMap",
            &ObjectMeta {
                name: Some("shared".into()),
                owner_references: Some(vec![OwnerReference {
                    uid: OURS.into(),
                    controller: None,
                    ..Default::default()
                }]),
                ..Default::default()
            },
        );
        assert_eq!(f.controller, None);
        assert!(stale(&DesiredNames::new(), Some(OURS), &[f]).is_empty());
    }

    #[test]
    fn without_the_cluster_uid_nothing_is_deleted() {
        let f = [found("HorizontalPodAutoscaler", "demo", Some(OURS))];
        assert!(stale(&DesiredNames::new(), None, &f).is_empty());
    }

    #[test]
    fn an_object_already_being_deleted_is_not_deleted_again() {
        let mut f = found("Deployment", "old", Some(OURS));
        f.deleting = true;
        assert!(stale(&DesiredNames::new(), Some(OURS), &[f]).is_empty());
    }

    #[test]
    fn found_reads_name_uid_controller_and_deletion_from_metadata() {
        let meta = ObjectMeta {
            name: Some("demo".into()),
            uid: Some("u1".into()),
            deletion_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
            owner_references: Some(vec![
                OwnerReference {
                    uid: "someone".into(),
                    ..Default::default()
                },
                OwnerReference {
                    uid: OURS.into(),
                    controller: Some(true),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        assert_eq!(
            Found::new("Service", &meta),
            Found {
                kind: "Service",
                name: "demo".into(),
                uid: Some("u1".into()),
                controller: Some(OURS.into()),
                deleting: true,
            }
        );
    }
}
