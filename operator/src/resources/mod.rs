//! Pure builders: `SqeCluster` (+ what was read from referenced Secrets) → desired objects.
//! Nothing here talks to the API server, so every decision is unit-testable.

pub mod configmap;
pub mod deployment;
pub mod hpa;
pub mod pdb;
pub mod service;
pub mod serviceaccount;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use sqe_crds::SqeCluster;

use crate::error::{Error, Result};

/// The single SSA field manager for every object the operator writes.
pub const MANAGER: &str = "sqe-operator";
/// Pod-template annotation; a new value rolls the Deployment.
pub const CONFIG_HASH_ANNOTATION: &str = "sqe.io/config-hash";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// Selector for the operator's own watches: it only caches objects it manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=sqe-operator";

/// Digests of referenced Secret values (never the values themselves).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretDigests(pub BTreeMap<String, String>);

impl SecretDigests {
    pub fn add(&mut self, what: &str, value: &[u8]) {
        self.0
            .insert(what.to_string(), hex::encode(Sha256::digest(value)));
    }
}

/// Everything the operator wants to exist for one SqeCluster.
#[derive(Debug, Clone)]
pub struct Desired {
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    pub service: Service,
    pub pdb: PodDisruptionBudget,
    pub deployment: Deployment,
    /// `None` means: no HPA (the sweep removes one this cluster created).
    pub hpa: Option<HorizontalPodAutoscaler>,
    pub config_hash: String,
}

/// Names of the desired objects, by kind (`Resource::KIND`); what the sweep keeps.
pub type DesiredNames = BTreeMap<&'static str, BTreeSet<String>>;

impl Desired {
    pub fn names(&self) -> DesiredNames {
        fn add<K: k8s_openapi::Resource + Resource>(names: &mut DesiredNames, obj: &K) {
            names.entry(K::KIND).or_default().insert(obj.name_any());
        }
        let mut n = DesiredNames::new();
        add(&mut n, &self.service_account);
        add(&mut n, &self.config_map);
        add(&mut n, &self.service);
        add(&mut n, &self.pdb);
        add(&mut n, &self.deployment);
        if let Some(h) = &self.hpa {
            add(&mut n, h);
        }
        n
    }
}

pub fn build(cluster: &SqeCluster, secrets: &SecretDigests) -> Result<Desired> {
    let cfg = configmap::engine_config(&cluster.spec)?;
    let yaml = cfg.to_yaml();
    let config_hash = config_hash(&yaml, secrets);
    Ok(Desired {
        service_account: serviceaccount::build(cluster),
        config_map: configmap::build(cluster, &yaml),
        service: service::build(cluster),
        pdb: pdb::build(cluster),
        deployment: deployment::build(cluster, &config_hash),
        hpa: hpa::build(cluster),
        config_hash,
    })
}

/// Hash of the rendered config and the referenced secret values, so a changed spec *or* a
/// rotated secret gives the pod template a new annotation and so a rolling update.
pub fn config_hash(config_yaml: &str, secrets: &SecretDigests) -> String {
    let mut h = Sha256::new();
    h.update(config_yaml.as_bytes());
    for (k, v) in &secrets.0 {
        h.update(b"\0");
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
    }
    hex::encode(h.finalize())[..16].to_string()
}

pub fn labels(cluster: &SqeCluster) -> BTreeMap<String, String> {
    let mut l = selector_labels(cluster);
    l.insert(LABEL_COMPONENT.into(), "engine".into());
    l.insert(LABEL_MANAGED_BY.into(), MANAGER.into());
    l.insert(LABEL_PART_OF.into(), "sqe".into());
    l
}

/// Label selector for everything the operator made for this cluster (in its namespace):
/// `labels` always sets both, and `managed-by` tells our objects from, say, a Helm release
/// of the same name. Older operator versions set the same labels, so their leftovers match.
pub fn owned_selector(cluster: &SqeCluster) -> String {
    format!(
        "{LABEL_MANAGED_BY}={MANAGER},{LABEL_INSTANCE}={}",
        cluster.name_any()
    )
}

pub fn selector_labels(cluster: &SqeCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.into(), "sqe-engine".into()),
        (LABEL_INSTANCE.into(), cluster.name_any()),
    ])
}

/// Owner reference that makes the SqeCluster the controller of a child, so deleting it
/// garbage-collects everything. Absent when rendering offline (no UID yet).
pub fn owner_ref(cluster: &SqeCluster) -> Option<OwnerReference> {
    cluster.controller_owner_ref(&())
}

pub fn meta(cluster: &SqeCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cluster.namespace(),
        labels: Some(labels(cluster)),
        owner_references: owner_ref(cluster).map(|o| vec![o]),
        ..Default::default()
    }
}

pub fn config_map_name(cluster: &SqeCluster) -> String {
    format!("{}-config", cluster.name_any())
}

pub fn namespace(cluster: &SqeCluster) -> Result<String> {
    cluster.namespace().ok_or(Error::NoNamespace)
}

#[cfg(test)]
pub(crate) mod tests;
