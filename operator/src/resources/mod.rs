//! Pure builders: `SqeCluster` (+ what was read from referenced Secrets) → desired objects.
//! Nothing here talks to the API server, so every decision is unit-testable.

pub mod common;
pub mod configmap;
pub mod deployment;
pub mod hpa;
pub mod pdb;
pub mod service;
pub mod serviceaccount;
pub mod session_store;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use sqe_crds::SqeCluster;

use crate::error::{Error, Result};
pub use common::*;

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
    /// The session store the operator runs (`sessionStore.managed`).
    pub store: Option<session_store::StoreObjects>,
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
        if let Some(store) = &self.store {
            add(&mut n, &store.deployment);
            add(&mut n, &store.service);
            add(&mut n, &store.network_policy);
        }
        n
    }
}

/// A cluster whose spec passed every check the engine and its pods need, with the engine
/// configuration rendered from it: what [`build`] builds from, and all it needs.
pub struct Validated<'a> {
    pub cluster: &'a SqeCluster,
    pub config_yaml: String,
    pub config_hash: String,
    /// Of the managed session store's own Secret: rolls the store when it changes.
    pub store_hash: String,
}

/// The spec's checks (pod overrides, engine configuration rules), or `Error::InvalidSpec`
/// naming the field.
pub fn validate<'a>(cluster: &'a SqeCluster, secrets: &SecretDigests) -> Result<Validated<'a>> {
    deployment::check_overrides(&cluster.spec.engine.pod_overrides).map_err(Error::InvalidSpec)?;
    let config_yaml = configmap::engine_config(cluster)?.to_yaml();
    let config_hash = config_hash(&config_yaml, secrets);
    let store_prefix = format!("{}/", session_store::store_name(cluster));
    let store_secret = SecretDigests(
        secrets
            .0
            .iter()
            .filter(|(k, _)| k.starts_with(&store_prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    Ok(Validated {
        cluster,
        config_yaml,
        config_hash,
        store_hash: self::config_hash("", &store_secret),
    })
}

/// Every object a validated cluster wants; pure, and it cannot fail.
pub fn build(valid: &Validated) -> Desired {
    let cluster = valid.cluster;
    Desired {
        service_account: serviceaccount::build(cluster),
        config_map: configmap::build(cluster, &valid.config_yaml),
        service: service::build(cluster),
        pdb: pdb::build(cluster),
        deployment: deployment::build(cluster, &valid.config_hash),
        hpa: hpa::build(cluster),
        store: session_store::build(cluster, &valid.store_hash),
        config_hash: valid.config_hash.clone(),
    }
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

#[cfg(test)]
pub(crate) mod tests;
