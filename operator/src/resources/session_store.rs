//! Sessions any engine pod serves (`spec.sessionStore`): what the engine pods need to reach the
//! store (its address, password and CA, the cluster keys), and, for `managed`, the store itself:
//! one Redis pod without persistence behind a Service, its password and configuration in a
//! Secret the operator generates once, and a NetworkPolicy that admits only the cluster's own
//! engine pods.
//!
//! Generated Secrets are created once and never rewritten: the cluster keys are the platform
//! team's to rotate (add a key first, drop the old one after the sessions' maximum lifetime),
//! and their digest rolls the engine pods like any referenced Secret's.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodSpec, PodTemplateSpec, Probe, Secret, Service, ServicePort,
    ServiceSpec, TCPSocketAction, Volume,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use sqe_crds::{SecretKeyRef, SqeCluster};
use sqe_engine_config::SessionStoreConfig;

use super::common::{
    CONFIG_HASH_ANNOTATION, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_NAME, hardened_container,
    hardened_pod, labels, owner_ref, parse_quantity, pull_policy, read_only_mount,
    secret_file_volume, secret_volume, selector_labels, tmp_volume,
};

pub const STORE_PORT: u16 = 6379;
/// Where the engine pods find the cluster keys (`KEYS_FILE` in it).
pub const KEYS_DIR: &str = "/etc/sqe/session-keys";
const KEYS_FILE: &str = "keys";
/// Where the engine pods find an external store's CA (`CA_FILE` in it).
pub const STORE_CA_DIR: &str = "/etc/sqe/session-store-ca";
const CA_FILE: &str = "ca.pem";
/// Keys of the generated Secrets.
pub const KEYS_KEY: &str = "keys";
pub const PASSWORD_KEY: &str = "password";
pub const STORE_CONFIG_KEY: &str = "redis.conf";
const STORE_CONFIG_DIR: &str = "/etc/redis";

pub fn store_name(cluster: &SqeCluster) -> String {
    format!("{}-session-store", cluster.name_any())
}

fn keys_secret_name(cluster: &SqeCluster) -> String {
    format!("{}-session-keys", cluster.name_any())
}

fn is_managed(cluster: &SqeCluster) -> bool {
    cluster
        .spec
        .session_store
        .as_ref()
        .is_some_and(|s| s.managed.is_some())
}

/// The Secret key holding the cluster keys: the spec's, or the one the operator generates.
pub fn keys_ref(cluster: &SqeCluster) -> Option<SecretKeyRef> {
    let store = cluster.spec.session_store.as_ref()?;
    Some(
        store
            .keys_secret_ref
            .clone()
            .unwrap_or_else(|| SecretKeyRef {
                name: keys_secret_name(cluster),
                key: KEYS_KEY.into(),
            }),
    )
}

/// The Secret key holding the store's password, if it has one.
pub fn password_ref(cluster: &SqeCluster) -> Option<SecretKeyRef> {
    let store = cluster.spec.session_store.as_ref()?;
    match (&store.managed, &store.external) {
        (Some(_), _) => Some(SecretKeyRef {
            name: store_name(cluster),
            key: PASSWORD_KEY.into(),
        }),
        (None, Some(external)) => external.password_secret_ref.clone(),
        (None, None) => None,
    }
}

/// An external store's CA, if it names one.
pub fn ca_ref(cluster: &SqeCluster) -> Option<&SecretKeyRef> {
    cluster
        .spec
        .session_store
        .as_ref()?
        .external
        .as_ref()?
        .ca_secret_ref
        .as_ref()
}

/// The engine configuration's `session.store`: where the pods find the store and the keys.
pub fn engine_store(cluster: &SqeCluster) -> Option<SessionStoreConfig> {
    let store = cluster.spec.session_store.as_ref()?;
    let url = match &store.external {
        Some(external) => external.url.clone(),
        // The Service in the pods' own namespace (their DNS search path).
        None => format!("redis://{}:{STORE_PORT}/", store_name(cluster)),
    };
    Some(SessionStoreConfig {
        url,
        keys_file: format!("{KEYS_DIR}/{KEYS_FILE}").into(),
        ca_file: ca_ref(cluster).map(|_| format!("{STORE_CA_DIR}/{CA_FILE}").into()),
    })
}

/// The engine pods' volumes for the store: the keys, and an external store's CA, each Secret
/// key mounted under a fixed file name. `(volume, mount directory)`.
pub fn engine_volumes(cluster: &SqeCluster) -> Vec<(Volume, &'static str)> {
    let mut out = Vec::new();
    if let Some(keys) = keys_ref(cluster) {
        out.push((
            secret_file_volume("session-keys", &keys, KEYS_FILE),
            KEYS_DIR,
        ));
    }
    if let Some(ca) = ca_ref(cluster) {
        out.push((
            secret_file_volume("session-store-ca", ca, CA_FILE),
            STORE_CA_DIR,
        ));
    }
    out
}

/// A Secret the operator generates for a cluster, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generated {
    /// One fresh cluster key.
    ClusterKeys,
    /// The managed store's password and the configuration that sets it.
    StorePassword,
}

/// The Secrets this cluster needs the operator to generate, by name.
pub fn generated(cluster: &SqeCluster) -> Vec<(String, Generated)> {
    let Some(store) = &cluster.spec.session_store else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if store.keys_secret_ref.is_none() {
        out.push((keys_secret_name(cluster), Generated::ClusterKeys));
    }
    if store.managed.is_some() {
        out.push((store_name(cluster), Generated::StorePassword));
    }
    out
}

/// The store's configuration: loopback and pod network, a password, nothing on disk.
fn store_config(password: &str) -> String {
    format!(
        "port {STORE_PORT}\nbind * -::*\nprotected-mode yes\nrequirepass {password}\n\
         save \"\"\nappendonly no\ndir /tmp\n"
    )
}

/// A generated Secret's contents, from `random` bytes (32: a key, or a password's entropy).
pub fn contents(kind: Generated, random: [u8; 32]) -> BTreeMap<String, String> {
    match kind {
        Generated::ClusterKeys => BTreeMap::from([(
            KEYS_KEY.to_string(),
            format!(
                "{}\n",
                base64::engine::general_purpose::STANDARD.encode(random)
            ),
        )]),
        Generated::StorePassword => {
            let password = hex::encode(random);
            BTreeMap::from([
                (STORE_CONFIG_KEY.to_string(), store_config(&password)),
                (PASSWORD_KEY.to_string(), password),
            ])
        }
    }
}

/// The store's arguments: its configuration file (with the password), then the settings that
/// follow the spec (never a secret).
fn store_args(resources: Option<&k8s_openapi::api::core::v1::ResourceRequirements>) -> Vec<String> {
    let mut args = vec![format!("{STORE_CONFIG_DIR}/{STORE_CONFIG_KEY}")];
    if let Some(bytes) = max_memory(resources) {
        args.extend([
            "--maxmemory".to_string(),
            bytes.to_string(),
            "--maxmemory-policy".to_string(),
            "noeviction".to_string(),
        ]);
    }
    args
}

/// A generated Secret as it is created: owned by the cluster (deleted with it), labelled like
/// everything else the operator makes for it.
pub fn secret(cluster: &SqeCluster, name: &str, data: BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cluster.namespace(),
            labels: Some(store_labels(cluster)),
            owner_references: owner_ref(cluster).map(|o| vec![o]),
            ..Default::default()
        },
        string_data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

fn store_labels(cluster: &SqeCluster) -> BTreeMap<String, String> {
    let mut l = labels(cluster);
    l.insert(LABEL_NAME.into(), "sqe-session-store".into());
    l.insert(LABEL_COMPONENT.into(), "session-store".into());
    l
}

fn store_selector(cluster: &SqeCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.into(), "sqe-session-store".into()),
        (LABEL_INSTANCE.into(), cluster.name_any()),
    ])
}

fn store_meta(cluster: &SqeCluster) -> ObjectMeta {
    ObjectMeta {
        name: Some(store_name(cluster)),
        namespace: cluster.namespace(),
        labels: Some(store_labels(cluster)),
        owner_references: owner_ref(cluster).map(|o| vec![o]),
        ..Default::default()
    }
}

/// What the operator runs for `sessionStore.managed`.
#[derive(Debug, Clone)]
pub struct StoreObjects {
    pub deployment: Deployment,
    pub service: Service,
    pub network_policy: NetworkPolicy,
}

/// The managed store's objects; `None` unless the spec asks for it.
pub fn build(cluster: &SqeCluster, secret_hash: &str) -> Option<StoreObjects> {
    Some(StoreObjects {
        deployment: deployment(cluster, secret_hash)?,
        service: service(cluster)?,
        network_policy: network_policy(cluster)?,
    })
}

/// Only the cluster's own engine pods may reach the store, on its port only (where the
/// cluster's network enforces NetworkPolicies).
fn network_policy(cluster: &SqeCluster) -> Option<NetworkPolicy> {
    is_managed(cluster).then(|| NetworkPolicy {
        metadata: store_meta(cluster),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(store_selector(cluster)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(selector_labels(cluster)),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(i32::from(STORE_PORT))),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
            }]),
            ..Default::default()
        }),
    })
}

/// The store's memory bound, three quarters of its container's memory limit: a store that is
/// full refuses new sessions (UNAVAILABLE at login) rather than being killed, which would log
/// everyone out, or evicting sessions in use.
fn max_memory(resources: Option<&k8s_openapi::api::core::v1::ResourceRequirements>) -> Option<u64> {
    let limit = resources?.limits.as_ref()?.get("memory")?;
    parse_quantity(&limit.0).map(|bytes| bytes / 4 * 3)
}

/// The managed store's Service.
fn service(cluster: &SqeCluster) -> Option<Service> {
    is_managed(cluster).then(|| Service {
        metadata: store_meta(cluster),
        spec: Some(ServiceSpec {
            selector: Some(store_selector(cluster)),
            ports: Some(vec![ServicePort {
                name: Some("redis".into()),
                port: i32::from(STORE_PORT),
                target_port: Some(IntOrString::String("redis".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The managed store's Deployment: one hardened pod, its configuration from the generated
/// Secret (the password never in its arguments), recreated rather than surged (two stores
/// would split the sessions). `secret_hash` (of that Secret) rolls it when the Secret changes,
/// as the engine pods roll with it.
fn deployment(cluster: &SqeCluster, secret_hash: &str) -> Option<Deployment> {
    let managed = cluster.spec.session_store.as_ref()?.managed.as_ref()?;
    let tcp_probe = |period| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("redis".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        ..Default::default()
    };
    let (tmp, tmp_mount) = tmp_volume();
    let container = Container {
        name: "store".into(),
        image: Some(managed.image.clone()),
        image_pull_policy: Some(pull_policy(managed.image_pull_policy)),
        args: Some(store_args(managed.resources.as_ref())),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: i32::from(STORE_PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(tcp_probe(5)),
        liveness_probe: Some(tcp_probe(10)),
        resources: managed.resources.clone(),
        security_context: Some(hardened_container()),
        volume_mounts: Some(vec![read_only_mount("config", STORE_CONFIG_DIR), tmp_mount]),
        ..Default::default()
    };
    let o = &cluster.spec.engine.pod_overrides;
    let pod = PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(hardened_pod()),
        containers: vec![container],
        volumes: Some(vec![
            secret_volume(
                "config",
                &store_name(cluster),
                Some((STORE_CONFIG_KEY, STORE_CONFIG_KEY)),
            ),
            tmp,
        ]),
        // Where the engine pods may run, the store may run.
        node_selector: (!o.node_selector.is_empty()).then(|| o.node_selector.clone()),
        tolerations: (!o.tolerations.is_empty()).then(|| o.tolerations.clone()),
        image_pull_secrets: (!o.image_pull_secrets.is_empty())
            .then(|| o.image_pull_secrets.clone()),
        ..Default::default()
    };
    Some(Deployment {
        metadata: store_meta(cluster),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(store_selector(cluster)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..Default::default()
            }),
            revision_history_limit: Some(2),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(store_labels(cluster)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        secret_hash.to_string(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}
