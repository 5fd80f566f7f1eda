//! The engine Deployment: hardened pods, probes on the engine's health port, the client secret
//! from the Secret as env, and a config-hash annotation so config or secret changes roll pods
//! (and a restart-nonce annotation so a user can roll them on purpose). The user's pod
//! overrides are added to the operator's own settings, never in place of them.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    Lifecycle, LifecycleHandler, PodSpec, PodTemplateSpec, Probe, SecretKeySelector, SleepAction,
    TopologySpreadConstraint, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use sqe_crds::{
    PodOverrides, RESERVED_ENV_PREFIX, RESERVED_MOUNT_DIRS, RESERVED_VOLUME_NAMES, SecretKeyRef,
    SqeCluster,
};
use sqe_engine_config::{CLIENT_SECRET_ENV, CONFIG_PATH_ENV, SESSION_STORE_PASSWORD_ENV};

use super::common::{
    CATALOG_CA_DIR, CONFIG_DIR, CONFIG_HASH_ANNOTATION, FLIGHT_PORT, HTTP_PORT,
    RESTART_NONCE_ANNOTATION, TLS_DIR, config_map_name, config_path, default_resources,
    hardened_container, hardened_pod, labels, meta, pull_policy, read_only_mount, secret_volume,
    selector_labels, tmp_volume,
};
use super::session_store;

/// Replicas when neither `replicas` nor `autoscaling` is given: two, so one pod can drain or
/// be evicted while the other serves.
pub const DEFAULT_REPLICAS: i32 = 2;
/// Time on top of the engine's own query drain grace for the process to exit.
const EXIT_MARGIN_SECONDS: i64 = 15;
/// A stopping pod keeps accepting connections this long before the engine is told to drain:
/// kube-proxy (and any load balancer) needs time to take it out of the Service, and until it
/// has, new connections still arrive and would be refused.
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;

fn http_probe(path: &str, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    }
}

pub fn build(cluster: &SqeCluster, config_hash: &str) -> Deployment {
    let spec = &cluster.spec;
    let engine = &spec.engine;
    let name = cluster.name_any();

    let mut pod_labels = engine.pod_overrides.labels.clone();
    pod_labels.extend(labels(cluster)); // the operator's labels win: selectors depend on them
    let mut pod_annotations = engine.pod_overrides.annotations.clone();
    pod_annotations.insert(CONFIG_HASH_ANNOTATION.into(), config_hash.into());
    if let Some(nonce) = &spec.cluster_operation.restart_nonce {
        pod_annotations.insert(RESTART_NONCE_ANNOTATION.into(), nonce.clone());
    }
    pod_annotations.insert("prometheus.io/scrape".into(), "true".into());
    pod_annotations.insert("prometheus.io/port".into(), HTTP_PORT.to_string());

    let mut env = vec![EnvVar {
        name: CONFIG_PATH_ENV.into(),
        value: Some(config_path()),
        ..Default::default()
    }];
    if let Some(r) = &spec.oidc.client_secret_ref {
        env.push(secret_env(CLIENT_SECRET_ENV, r));
    }

    // Queries may spill to /tmp.
    let (tmp, tmp_mount) = tmp_volume();
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(cluster),
                ..Default::default()
            }),
            ..Default::default()
        },
        tmp,
    ];
    let mut mounts = vec![read_only_mount("config", CONFIG_DIR), tmp_mount];
    if let Some(tls) = &spec.tls {
        volumes.push(secret_volume("tls", &tls.secret_name, None));
        mounts.push(read_only_mount("tls", TLS_DIR));
    }
    if let Some(ca) = &spec.polaris.ca_secret_ref {
        volumes.push(secret_volume("catalog-ca", &ca.name, None));
        mounts.push(read_only_mount("catalog-ca", CATALOG_CA_DIR));
    }
    for (volume, dir) in session_store::engine_volumes(cluster) {
        mounts.push(read_only_mount(&volume.name, dir));
        volumes.push(volume);
    }
    if let Some(r) = session_store::password_ref(cluster) {
        env.push(secret_env(SESSION_STORE_PASSWORD_ENV, &r));
    }
    // The user's additions come after the operator's own; `check_overrides` (and the CRD
    // schema) keep them from colliding.
    let o = &engine.pod_overrides;
    env.extend(o.env.iter().cloned());
    volumes.extend(o.volumes.iter().cloned());
    mounts.extend(o.volume_mounts.iter().cloned());

    let grace = PRE_STOP_SLEEP_SECONDS
        + i64::from(engine.query.shutdown_grace_seconds.unwrap_or(30))
        + EXIT_MARGIN_SECONDS;
    let container = Container {
        name: "engine".into(),
        image: Some(engine.image.clone()),
        image_pull_policy: Some(pull_policy(engine.image_pull_policy)),
        args: Some(vec!["serve".into(), "--config".into(), config_path()]),
        env: Some(env),
        ports: Some(vec![
            ContainerPort {
                name: Some("flight".into()),
                container_port: i32::from(FLIGHT_PORT),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("http".into()),
                container_port: i32::from(HTTP_PORT),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        // Startup allows ~2 min for JWKS/catalog reachability; readiness gates traffic;
        // liveness only restarts a wedged process.
        startup_probe: Some(http_probe("/healthz", 2, 60)),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        // The kubelet's own sleep (the image has no shell): SIGTERM comes after it.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SLEEP_SECONDS,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        resources: Some(engine.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(hardened_container()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };

    let pod = PodSpec {
        service_account_name: Some(name.clone()),
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(grace),
        security_context: Some(hardened_pod()),
        containers: vec![container],
        volumes: Some(volumes),
        node_selector: (!o.node_selector.is_empty()).then(|| o.node_selector.clone()),
        tolerations: (!o.tolerations.is_empty()).then(|| o.tolerations.clone()),
        affinity: o.affinity.clone(),
        priority_class_name: o.priority_class_name.clone(),
        image_pull_secrets: (!o.image_pull_secrets.is_empty())
            .then(|| o.image_pull_secrets.clone()),
        topology_spread_constraints: (!o.topology_spread_constraints.is_empty())
            .then(|| spread_constraints(cluster, &o.topology_spread_constraints)),
        ..Default::default()
    };

    Deployment {
        metadata: meta(cluster, name),
        spec: Some(DeploymentSpec {
            // With autoscaling the HPA owns the replica count; leaving it out of the applied
            // object hands the field to the HPA instead of fighting it on every reconcile.
            replicas: match &engine.autoscaling {
                Some(_) => None,
                None => Some(engine.replicas.unwrap_or(DEFAULT_REPLICAS)),
            },
            selector: LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                // Surge first: a new pod is ready before an old one starts draining.
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn secret_env(name: &str, r: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: r.name.clone(),
                key: r.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Topology spread constraints as given, with the engine pods' selector filled in where the
/// user left `labelSelector` out: without one a constraint counts no pods and spreads nothing.
fn spread_constraints(
    cluster: &SqeCluster,
    given: &[TopologySpreadConstraint],
) -> Vec<TopologySpreadConstraint> {
    given
        .iter()
        .cloned()
        .map(|mut c| {
            c.label_selector.get_or_insert_with(|| LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..Default::default()
            });
            c
        })
        .collect()
}

/// The pod overrides may add env, volumes and mounts, never replace the operator's own. The
/// CRD schema refuses the same collisions; this check covers objects that never passed an API
/// server (`sqe-operator render`) and an older CRD still installed.
pub fn check_overrides(o: &PodOverrides) -> Result<(), String> {
    if let Some(e) = o
        .env
        .iter()
        .find(|e| e.name.starts_with(RESERVED_ENV_PREFIX))
    {
        return Err(format!(
            "podOverrides.env[{}]: variables starting with {RESERVED_ENV_PREFIX} are set by the operator",
            e.name
        ));
    }
    if let Some(v) = o
        .volumes
        .iter()
        .find(|v| RESERVED_VOLUME_NAMES.contains(&v.name.as_str()))
    {
        return Err(format!(
            "podOverrides.volumes[{}]: the operator defines a volume of that name",
            v.name
        ));
    }
    for m in &o.volume_mounts {
        let reserved = RESERVED_MOUNT_DIRS
            .iter()
            .any(|dir| m.mount_path == *dir || m.mount_path.starts_with(&format!("{dir}/")));
        if reserved {
            return Err(format!(
                "podOverrides.volumeMounts[{}]: the operator mounts its files there",
                m.mount_path
            ));
        }
        if !o.volumes.iter().any(|v| v.name == m.name) {
            return Err(format!(
                "podOverrides.volumeMounts[{}]: no volume {} in podOverrides.volumes",
                m.mount_path, m.name
            ));
        }
    }
    Ok(())
}
