//! What every object of a cluster shares: the field manager, labels, metadata and owner
//! reference; and the engine pod's layout (ports, mount paths, default resources), which both its
//! config and its Deployment describe.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, EmptyDirVolumeSource, KeyToPath, PodSecurityContext, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use sqe_crds::{PullPolicy, SecretKeyRef, SqeCluster};

use crate::error::{Error, Result};

/// The single SSA field manager for every object the operator writes.
pub const MANAGER: &str = "sqe-operator";
/// Pod-template annotation; a new value rolls the Deployment.
pub const CONFIG_HASH_ANNOTATION: &str = "sqe.io/config-hash";
/// Pod-template annotation copied from `spec.clusterOperation.restartNonce`; changing the
/// nonce changes the template and so restarts the pods with a rolling update.
pub const RESTART_NONCE_ANNOTATION: &str = "sqe.io/restart-nonce";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// Selector for the operator's own watches: it only caches objects it manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=sqe-operator";

/// Key of the config file in the ConfigMap; mounted at `CONFIG_DIR/CONFIG_KEY`.
pub const CONFIG_KEY: &str = "engine.yaml";
pub const CONFIG_DIR: &str = "/etc/sqe/config";
pub const TLS_DIR: &str = "/etc/sqe/tls";
pub const CATALOG_CA_DIR: &str = "/etc/sqe/catalog-ca";
pub const FLIGHT_PORT: u16 = 50051;
pub const HTTP_PORT: u16 = 8080;

pub fn config_path() -> String {
    format!("{CONFIG_DIR}/{CONFIG_KEY}")
}

/// Requests and limits of the engine container when the spec sets none.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("500m".into())),
            ("memory".to_string(), Quantity("1Gi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("2Gi".into()),
        )])),
        ..Default::default()
    }
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

/// `selector_labels` as a label selector string: `status.selector`, which the scale
/// subresource hands to an HPA targeting the SqeCluster so it finds the engine pods.
pub fn engine_selector(cluster: &SqeCluster) -> String {
    selector_labels(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
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

/// Non-root UID/GID of the operator's images (distroless "nonroot").
pub const RUN_AS: i64 = 65532;

/// The pod's image pull policy, as Kubernetes spells it.
pub fn pull_policy(p: PullPolicy) -> String {
    match p {
        PullPolicy::Always => "Always",
        PullPolicy::IfNotPresent => "IfNotPresent",
        PullPolicy::Never => "Never",
    }
    .into()
}

fn runtime_default() -> Option<SeccompProfile> {
    Some(SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..Default::default()
    })
}

/// Every container the operator runs: non-root, read-only root, no privilege, no capability.
pub fn hardened_container() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: runtime_default(),
        ..Default::default()
    }
}

/// Every pod the operator runs.
pub fn hardened_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: runtime_default(),
        ..Default::default()
    }
}

/// Kubernetes quantity → bytes (`1Gi`, `512Mi`, `1G`, `1500000`). Fractions are truncated.
pub fn parse_quantity(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let mult: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    let bytes = n * mult;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// A Secret as a pod volume, readable by the pod's group only: all its keys, or with `item`
/// one key as a file of the given name.
pub fn secret_volume(name: &str, secret: &str, item: Option<(&str, &str)>) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: item.map(|(key, path)| {
                vec![KeyToPath {
                    key: key.into(),
                    path: path.into(),
                    ..Default::default()
                }]
            }),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One key of a Secret as a file named `file`.
pub fn secret_file_volume(name: &str, r: &SecretKeyRef, file: &str) -> Volume {
    secret_volume(name, &r.name, Some((&r.key, file)))
}

pub fn read_only_mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

/// The root filesystem is read-only: `/tmp` is the pod's scratch space.
pub fn tmp_volume() -> (Volume, VolumeMount) {
    (
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
    )
}
