//! The `SqeCluster` custom resource (`sqe.io/v1alpha1`).
//!
//! One object describes one SQE engine deployment: which OIDC provider the users come from,
//! which Polaris catalog they query, and how the engine pods run. The schema carries the
//! validation (types, enums, ranges, defaults and CEL rules for cross-field constraints) so the
//! API server rejects a bad spec before the operator sees it.
//!
//! Field names follow Kubernetes conventions (camelCase); the operator maps them onto the
//! engine's own config file type (`sqe-engine-config`), which it renders into a ConfigMap.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "sqe.io";
pub const VERSION: &str = "v1alpha1";

/// Doc comments wrap at 100 columns in the source; `kubectl explain` wraps again, so a kept
/// line break shows as a ragged one. Join the lines of each paragraph of this struct's and its
/// fields' descriptions (only ours: upstream Kubernetes descriptions use line breaks for lists).
fn one_line_docs(schema: &mut schemars::Schema) {
    fn join(s: &mut schemars::Schema) {
        if let Some(serde_json::Value::String(d)) = s.get_mut("description") {
            *d = d
                .split("\n\n")
                .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("\n\n");
        }
    }
    join(schema);
    if let Some(serde_json::Value::Object(props)) = schema.get_mut("properties") {
        for p in props.values_mut() {
            if let Ok(sub) = <&mut schemars::Schema>::try_from(p) {
                join(sub);
            }
        }
    }
}

/// Condition types reported in `status.conditions`.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
    /// `True` while `spec.clusterOperation.reconciliationPaused` holds the operator back.
    pub const RECONCILIATION_PAUSED: &str = "ReconciliationPaused";
}

/// Environment variable names the operator sets on the engine container itself; the schema
/// refuses `podOverrides.env` entries with this prefix, so a user variable can never replace
/// the config path or the client secret.
pub const RESERVED_ENV_PREFIX: &str = "SQE_";
/// Pod volumes the operator defines; `podOverrides.volumes` may not reuse these names.
pub const RESERVED_VOLUME_NAMES: [&str; 6] = [
    "config",
    "tmp",
    "tls",
    "catalog-ca",
    "session-keys",
    "session-store-ca",
];
/// Where the operator mounts its own volumes: `podOverrides.volumeMounts` may not mount at
/// `/tmp` or at or below `/etc/sqe` (the engine reads its config, TLS and CA files there).
pub const RESERVED_MOUNT_DIRS: [&str; 2] = ["/etc/sqe", "/tmp"];

/// An SQE engine deployment: the OIDC provider users log in with, the Iceberg REST catalog they
/// query, and how the engine pods run. The operator turns it into a Deployment, Service,
/// ConfigMap, PodDisruptionBudget and (with `engine.autoscaling`) a HorizontalPodAutoscaler, and
/// reports progress in `status` only; it never writes `spec`.
// Each printcolumn(...) names its own `type_`; clippy reads them as one attribute repeated.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sqe.io",
    version = "v1alpha1",
    kind = "SqeCluster",
    namespaced,
    status = "SqeClusterStatus",
    shortname = "sqe",
    category = "sqe",
    derive = "PartialEq",
    // `kubectl scale sqe/NAME --replicas=N` and HPAs targeting the SqeCluster write
    // `spec.engine.replicas`; the selector lets an HPA find the engine pods for metrics.
    scale(
        spec_replicas_path = ".spec.engine.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        description = "Whether every engine pod runs the current spec and is ready",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        description = "Engine pods that exist",
        json_path = ".status.replicas"
    ),
    printcolumn(
        name = "Ready Replicas",
        type_ = "integer",
        description = "Engine pods that pass their readiness probe",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(
        name = "Paused",
        type_ = "boolean",
        description = "Reconciliation paused by spec.clusterOperation.reconciliationPaused",
        json_path = ".spec.clusterOperation.reconciliationPaused"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        description = "Flight SQL endpoint inside the cluster",
        json_path = ".status.endpoint"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = 1,
        description = "Why the cluster is (not) ready",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = one_line_docs)]
pub struct SqeClusterSpec {
    /// The identity provider users authenticate against (OIDC).
    pub oidc: OidcSpec,
    /// The Iceberg REST catalog (Apache Polaris or compatible) users query as themselves.
    pub polaris: PolarisSpec,
    /// The engine pods: image, replicas or autoscaling, resources, limits and pod overrides.
    pub engine: EngineSpec,
    /// The Service clients connect to with Flight SQL (ADBC, JDBC).
    #[serde(default)]
    pub service: ServiceSpec,
    /// Serve Flight over TLS with the certificate in this Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// The PodDisruptionBudget of the engine pods.
    #[serde(default)]
    pub disruption: DisruptionSpec,
    /// Day-2 operations: pause reconciliation, restart the engine pods.
    #[serde(default)]
    pub cluster_operation: ClusterOperationSpec,
    /// Sessions any engine pod serves: the store the pods share them through. Unset, a session lives in the pod that opened it (a rolling update, a scale-down or a lost pod logs its users out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_store: Option<SessionStoreSpec>,
}

/// The store sessions are shared through (Redis 7 or Valkey): `managed` or `external`. It holds sealed records only: opening one takes the client's handle and a cluster key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.managed) != has(self.external)")
    .message("set either sessionStore.managed or sessionStore.external")
    .reason(Reason::FieldValueInvalid))]
#[schemars(transform = one_line_docs)]
pub struct SessionStoreSpec {
    /// The operator runs the store for this cluster: one pod, no persistence (losing it costs users a login, as losing a pod does without a store), its password in a Secret it generates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedStoreSpec>,
    /// A store the platform runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalStoreSpec>,
    /// The cluster keys: one base64 32-byte key per line, the first sealing new records, every one opening. Rotate by adding the new key first; drop the old one after the sessions' maximum lifetime. Unset, the operator generates the Secret `<name>-session-keys` (key `keys`) once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_secret_ref: Option<SecretKeyRef>,
}

/// The store the operator runs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = one_line_docs)]
pub struct ManagedStoreSpec {
    /// A Redis 7 or Valkey server image whose entrypoint is the server, e.g. `valkey/valkey:8`.
    #[schemars(length(min = 1, max = 1024))]
    pub image: String,
    /// When the node pulls the store's image.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    /// CPU and memory of the store's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// A store the platform runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = one_line_docs)]
pub struct ExternalStoreSpec {
    /// `redis://host:port/` or, with TLS, `rediss://host:port/`; no credentials in it.
    #[x_kube(validation = Rule::new("self.matches('^rediss?://[^/@]+/?$')").message("sessionStore.external.url must be redis://host:port/ or rediss://host:port/, without credentials"))]
    #[schemars(length(max = 2048))]
    pub url: String,
    /// The store's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// CA bundle (PEM) to trust for a `rediss://` store, when it uses a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// Day-2 operations on a running cluster.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = one_line_docs)]
pub struct ClusterOperationSpec {
    /// While true the operator writes nothing for this cluster (no applies, no deletes): the
    /// running objects stay exactly as they are and spec changes wait. Status still reports
    /// the pods, with `ReconciliationPaused=True`. For maintenance and for taking over objects
    /// by hand.
    #[serde(default)]
    pub reconciliation_paused: bool,
    /// Any value; changing it restarts every engine pod with a rolling update (the value is
    /// copied into the pod template annotation `sqe.io/restart-nonce`), e.g. a date or a
    /// counter. Leaving it unchanged never restarts anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub restart_nonce: Option<String>,
}

/// The identity provider users authenticate against. Exactly one of `keycloak` or `issuer`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.keycloak) != has(self.issuer)")
        .message("exactly one of oidc.keycloak or oidc.issuer must be set")
        .reason(Reason::FieldValueInvalid),
)]
#[schemars(transform = one_line_docs)]
pub struct OidcSpec {
    /// A Keycloak realm as the identity provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keycloak: Option<KeycloakSpec>,
    /// A generic OIDC issuer URL (discovery at `{issuer}/.well-known/openid-configuration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/]+')").message("oidc.issuer must be an http(s) URL"))]
    #[schemars(length(max = 2048))]
    pub issuer: Option<String>,
    /// The engine's OIDC client id.
    #[schemars(length(min = 1, max = 253))]
    pub client_id: String,
    /// The client secret; passed to the engine as an environment variable, never in a ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,
    /// Authentication modes the engine accepts.
    #[serde(default = "default_modes")]
    #[schemars(length(min = 1, max = 3), extend("x-kubernetes-list-type" = "set"))]
    pub modes: Vec<AuthMode>,
    /// Expected `aud` of bearer tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub audience: Option<String>,
    /// Claim holding the user name (engine default `preferred_username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub username_claim: Option<String>,
    /// Dotted path of the claim holding the user's roles (engine default `realm_access.roles`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub roles_claim: Option<String>,
    /// Bearer mode: the clients (`azp`) whose access tokens are accepted; defaults to the
    /// engine's own `clientId`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub allowed_clients: Vec<String>,
}

fn default_modes() -> Vec<AuthMode> {
    vec![AuthMode::Password]
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
/// A Keycloak realm; the issuer is `{url}/realms/{realm}`.
#[schemars(transform = one_line_docs)]
pub struct KeycloakSpec {
    /// Keycloak base URL, e.g. `https://keycloak.example.com`.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/]+')").message("oidc.keycloak.url must be an http(s) URL"))]
    #[schemars(length(max = 2048))]
    pub url: String,
    /// The realm name.
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[^/\s]+$"))]
    pub realm: String,
    /// Keycloak's public URL (its `hostname` option), which tokens carry in `iss`, when the engine reaches Keycloak at `url` through another address, e.g. an in-cluster Service; Keycloak then needs `hostname-backchannel-dynamic=true`. Unset: `url` is the public URL.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/]+')").message("oidc.keycloak.frontendUrl must be an http(s) URL"))]
    #[schemars(length(max = 2048))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend_url: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum AuthMode {
    /// User name and password in the Flight handshake (OIDC password grant).
    Password,
    /// The engine's own client identity (OIDC client-credentials grant).
    ClientCredentials,
    /// The client presents its own IdP-issued JWT.
    Bearer,
}

/// A key in a Secret in the SqeCluster's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = one_line_docs)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
/// The Iceberg REST catalog.
#[schemars(transform = one_line_docs)]
pub struct PolarisSpec {
    /// Iceberg REST catalog base URI, e.g. `http://polaris:8181/api/catalog`.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/]+')").message("polaris.uri must be an http(s) URL"))]
    #[schemars(length(max = 2048))]
    pub uri: String,
    /// Polaris catalog name; also the SQL catalog name.
    #[schemars(length(min = 1, max = 253))]
    pub warehouse: String,
    /// CA bundle (PEM) to trust for the catalog, when it uses a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// The S3 endpoint the engine reads through instead of the `s3.endpoint` the catalog vends, when the engine's pods reach the object store by another address (e.g. an in-cluster Service). Only the vended credentials are ever used.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/]+')").message("polaris.storageEndpoint must be an http(s) URL"))]
    #[schemars(length(max = 2048))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_endpoint: Option<String>,
}

/// How the engine pods run. Either a fixed `replicas` count or `autoscaling`, not both.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.replicas) && has(self.autoscaling))")
    .message("set either engine.replicas or engine.autoscaling, not both")
    .reason(Reason::FieldValueForbidden))]
#[schemars(transform = one_line_docs)]
pub struct EngineSpec {
    /// The engine container image, e.g. `ghcr.io/sqe-io/sqe-engine:0.1.0`.
    #[schemars(length(min = 1, max = 1024))]
    pub image: String,
    /// When the kubelet pulls the image.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    /// Fixed number of engine pods (default 2 when autoscaling is not set). The scale
    /// subresource writes this field: `kubectl scale sqe/NAME --replicas=3`, or an HPA whose
    /// `scaleTargetRef` is the SqeCluster. A GitOps tool should then not set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// Let an operator-managed HorizontalPodAutoscaler scale the engine Deployment on CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Container resources; defaults to requests cpu 500m / memory 1Gi and a 2Gi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Login session limits.
    #[serde(default)]
    pub session: SessionSpec,
    /// Query limits.
    #[serde(default)]
    pub query: QuerySpec,
    /// The engine's log level.
    #[serde(default)]
    pub log_level: LogLevel,
    /// Pod settings passed through to the engine pods (scheduling, metadata, extra env and
    /// volumes, image pull secrets).
    #[serde(default)]
    pub pod_overrides: PodOverrides,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas")
    .message("engine.autoscaling.minReplicas must not exceed maxReplicas")
    .field_path(".minReplicas")
    .reason(Reason::FieldValueInvalid))]
#[schemars(transform = one_line_docs)]
pub struct AutoscalingSpec {
    /// The fewest engine pods.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// The most engine pods.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU use, in percent of the pods' CPU request, that the HPA aims for.
    #[serde(default = "default_cpu_target")]
    #[serde(rename = "targetCPUUtilizationPercentage")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

fn one() -> i32 {
    1
}
fn default_cpu_target() -> i32 {
    75
}

/// Session limits; unset fields take the engine's defaults.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
        "!has(self.idleTimeoutSeconds) || !has(self.maxLifetimeSeconds) || self.idleTimeoutSeconds <= self.maxLifetimeSeconds")
    .message("engine.session.maxLifetimeSeconds must not be shorter than idleTimeoutSeconds")
    .field_path(".maxLifetimeSeconds")
    .reason(Reason::FieldValueInvalid))]
#[schemars(transform = one_line_docs)]
pub struct SessionSpec {
    /// Refresh a user's tokens this many seconds before they expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub refresh_buffer_seconds: Option<u32>,
    /// Close a session unused for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub idle_timeout_seconds: Option<u32>,
    /// Close a session this long after login, used or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub max_lifetime_seconds: Option<u32>,
    /// Sessions one engine pod holds at most, all users together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_sessions: Option<u32>,
    /// Sessions one user may hold at once (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_sessions_per_user: Option<u32>,
}

/// Query limits; unset fields take the engine's defaults.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = one_line_docs)]
pub struct QuerySpec {
    /// A query (planning, listing and execution) taking longer fails with DEADLINE_EXCEEDED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: Option<u32>,
    /// The most memory one session's queries and session tables may hold, as a Kubernetes
    /// quantity, e.g. `1Gi` (at least 16Mi; at most the pool). Defaults to 1Gi or the pool,
    /// whichever is smaller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).compareTo(quantity('16Mi')) >= 0")
        .message("engine.query.memoryLimit must be a quantity of at least 16Mi, e.g. 1Gi"))]
    #[schemars(length(max = 64))]
    pub memory_limit: Option<String>,
    /// The most memory all of one user's sessions may hold together, as a Kubernetes quantity
    /// (at least `memoryLimit`, at most the pool). Defaults to `memoryLimit`: a user's second
    /// session shares the first one's room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).compareTo(quantity('16Mi')) >= 0")
        .message("engine.query.memoryLimitPerUser must be a quantity of at least 16Mi, e.g. 2Gi"))]
    #[schemars(length(max = 64))]
    pub memory_limit_per_user: Option<String>,
    /// The engine process's one memory pool, shared by all sessions, as a Kubernetes quantity.
    /// Defaults to 75% of the engine container's memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).compareTo(quantity('16Mi')) >= 0")
        .message("engine.query.memoryPool must be a quantity of at least 16Mi, e.g. 2Gi"))]
    #[schemars(length(max = 64))]
    pub memory_pool: Option<String>,
    /// Queries one engine pod runs at once, all users together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_concurrent: Option<u32>,
    /// Queries one user may run at once, open result streams included (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_concurrent_per_user: Option<u32>,
    /// Statements of one user that wait, in arrival order and within their time limit, for one
    /// of its slots when it runs `maxConcurrentPerUser` already; one more is refused (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_queued_per_user: Option<u32>,
    /// How long running queries may finish on shutdown before the pod is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub shutdown_grace_seconds: Option<u32>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_filter(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Pod settings passed through to the engine pods. The operator's own settings (its env
/// variables, volumes, mounts and selector labels) cannot be overridden; the schema refuses
/// collisions.
// No CEL rule ties `volumeMounts[].name` to `volumes[].name`: without length limits on the
// upstream name fields its estimated cost is 30 times the API server's budget. The operator
// reports such a mount as `Degraded` (InvalidSpec) instead.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = one_line_docs)]
pub struct PodOverrides {
    /// Node labels the engine pods must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the engine pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub tolerations: Vec<Toleration>,
    /// Node and pod (anti-)affinity of the engine pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How the engine pods spread over zones or nodes. A constraint without `labelSelector`
    /// gets the engine pods' own selector, so `topologyKey`, `maxSkew` and
    /// `whenUnsatisfiable` are enough.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Extra pod labels; the operator's own `app.kubernetes.io/*` labels win on conflict.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// PriorityClass of the engine pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,
    /// Secrets with registry credentials for pulling `engine.image`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Extra environment variables of the engine container (names starting with `SQE_` are
    /// the operator's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 128),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    #[x_kube(validation = Rule::new("self.all(e, !e.name.startsWith('SQE_'))")
        .message("podOverrides.env must not set variables starting with SQE_: the operator sets those")
        .reason(Reason::FieldValueForbidden))]
    pub env: Vec<EnvVar>,
    /// Extra pod volumes, mounted with `volumeMounts` (the names `config`, `tmp`, `tls`,
    /// `catalog-ca`, `session-keys` and `session-store-ca` are the operator's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    #[x_kube(validation = Rule::new("self.all(v, !(v.name in ['config', 'tmp', 'tls', 'catalog-ca', 'session-keys', 'session-store-ca']))")
        .message("podOverrides.volumes must not use the names config, tmp, tls, catalog-ca, session-keys or session-store-ca: the operator defines those")
        .reason(Reason::FieldValueForbidden))]
    pub volumes: Vec<Volume>,
    /// Mounts of `volumes` into the engine container (not at `/tmp` or under `/etc/sqe`,
    /// where the operator mounts the config, TLS and CA files). A mount of a volume not in
    /// `volumes` makes the cluster `Degraded` (InvalidSpec).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["mountPath"])
    )]
    #[x_kube(validation = Rule::new(
            "self.all(m, m.mountPath != '/tmp' && m.mountPath != '/etc/sqe' && !m.mountPath.startsWith('/etc/sqe/') && !m.mountPath.startsWith('/tmp/'))")
        .message("podOverrides.volumeMounts must not mount at /tmp or under /etc/sqe: the operator mounts there")
        .reason(Reason::FieldValueForbidden))]
    pub volume_mounts: Vec<VolumeMount>,
}

/// The Service in front of the engine pods.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = one_line_docs)]
pub struct ServiceSpec {
    /// The Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Flight SQL port of the Service.
    #[serde(default = "default_flight_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Annotations of the Service, e.g. for a cloud load balancer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            type_: ServiceType::default(),
            port: default_flight_port(),
            annotations: BTreeMap::new(),
        }
    }
}

fn default_flight_port() -> i32 {
    50051
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// A `kubernetes.io/tls` Secret (keys `tls.crt`, `tls.key`) for the Flight endpoint.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = one_line_docs)]
pub struct TlsSpec {
    /// The Secret's name, in the SqeCluster's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// The PodDisruptionBudget of the engine pods.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = one_line_docs)]
pub struct DisruptionSpec {
    /// Pods that may be down at once during voluntary disruptions (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// What the operator observed; written only by the operator, through the status subresource.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = one_line_docs)]
pub struct SqeClusterStatus {
    /// `Ready`, `Progressing`, `Degraded` and `ReconciliationPaused`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Engine pods that exist (the scale subresource's `status.replicas`).
    #[serde(default)]
    pub replicas: i32,
    /// Engine pods that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the engine pods, e.g. for an HPA that targets this SqeCluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Flight SQL endpoint inside the cluster, e.g. `grpc://name.ns.svc:50051`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Hash of the rendered config and referenced secrets the pods currently roll out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

impl SqeCluster {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }
}

/// The CRD as YAML, exactly as committed in `crds/sqecluster.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let header = "# Generated by `sqe-operator crd` from crds/src/lib.rs; do not edit by hand.\n";
    Ok(format!(
        "{header}{}",
        serde_yaml::to_string(&SqeCluster::crd())?
    ))
}

#[cfg(test)]
mod tests;
