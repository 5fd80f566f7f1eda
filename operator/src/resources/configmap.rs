//! The engine's configuration: the spec mapped onto `sqe_engine_config::EngineConfig` (the
//! engine's own type, so there is no second hand-written format) and rendered into a ConfigMap.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::ConfigMap;
use sqe_crds::{AuthMode as CrdMode, SqeCluster, SqeClusterSpec};
use sqe_engine_config::{
    AuthMode, CatalogConfig, EngineConfig, KeycloakRef, ListenConfig, LogConfig, LogFormat,
    OidcConfig, QueryConfig, SessionConfig, TlsConfig,
};
use url::Url;

use super::common::{
    CATALOG_CA_DIR, CONFIG_KEY, FLIGHT_PORT, HTTP_PORT, TLS_DIR, config_map_name,
    default_resources, meta, parse_quantity,
};
use crate::error::{Error, Result};

fn url(field: &str, value: &str) -> Result<Url> {
    Url::parse(value).map_err(|e| Error::InvalidSpec(format!("{field}: `{value}`: {e}")))
}

/// Map the spec onto the engine's config and run the engine's own validation, so a spec the
/// engine would refuse to start with is reported as `Degraded` instead of crash-looping pods.
pub fn engine_config(cluster: &SqeCluster) -> Result<EngineConfig> {
    let spec = &cluster.spec;
    let o = &spec.oidc;
    let defaults_oidc = (
        "preferred_username".to_string(),
        "realm_access.roles".to_string(),
    );
    let keycloak = match &o.keycloak {
        Some(k) => Some(KeycloakRef {
            url: url("spec.oidc.keycloak.url", &k.url)?,
            realm: k.realm.clone(),
            frontend_url: k
                .frontend_url
                .as_deref()
                .map(|u| url("spec.oidc.keycloak.frontendUrl", u))
                .transpose()?,
        }),
        None => None,
    };
    let issuer = match &o.issuer {
        Some(i) => Some(url("spec.oidc.issuer", i)?),
        None => None,
    };
    let modes = o
        .modes
        .iter()
        .map(|m| match m {
            CrdMode::Password => AuthMode::Password,
            CrdMode::ClientCredentials => AuthMode::ClientCredentials,
            CrdMode::Bearer => AuthMode::Bearer,
        })
        .collect();
    let s = &spec.engine.session;
    let sd = SessionConfig::default();
    let q = &spec.engine.query;
    let qd = QueryConfig::default();
    let quantity = |field: &str, m: &str| {
        parse_quantity(m)
            .ok_or_else(|| Error::InvalidSpec(format!("{field}: `{m}` is not a quantity")))
    };
    let memory_pool_bytes = match &q.memory_pool {
        Some(m) => quantity("spec.engine.query.memoryPool", m)?,
        None => default_memory_pool(container_memory_limit(spec)?),
    };
    let memory_limit_bytes = match &q.memory_limit {
        Some(m) => quantity("spec.engine.query.memoryLimit", m)?,
        None => qd.memory_limit_bytes.min(memory_pool_bytes),
    };
    let memory_limit_per_user_bytes = match &q.memory_limit_per_user {
        Some(m) => Some(quantity("spec.engine.query.memoryLimitPerUser", m)?),
        None => None,
    };
    let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let cfg = EngineConfig {
        listen: ListenConfig {
            flight: SocketAddr::new(any.ip(), FLIGHT_PORT),
            http: SocketAddr::new(any.ip(), HTTP_PORT),
            tls: spec.tls.as_ref().map(|_| TlsConfig {
                cert: PathBuf::from(format!("{TLS_DIR}/tls.crt")),
                key: PathBuf::from(format!("{TLS_DIR}/tls.key")),
            }),
        },
        oidc: OidcConfig {
            keycloak,
            issuer,
            client_id: o.client_id.clone(),
            modes,
            audience: o.audience.clone(),
            username_claim: o.username_claim.clone().unwrap_or(defaults_oidc.0),
            roles_claim: o.roles_claim.clone().unwrap_or(defaults_oidc.1),
            allowed_algorithms: vec!["RS256".into()],
            allowed_clients: o.allowed_clients.clone(),
        },
        catalog: CatalogConfig {
            uri: url("spec.polaris.uri", &spec.polaris.uri)?,
            warehouse: spec.polaris.warehouse.clone(),
            ca_file: spec
                .polaris
                .ca_secret_ref
                .as_ref()
                .map(|r| PathBuf::from(format!("{CATALOG_CA_DIR}/{}", r.key))),
            vended_credentials: Default::default(),
            storage_endpoint: spec
                .polaris
                .storage_endpoint
                .as_deref()
                .map(|u| url("spec.polaris.storageEndpoint", u))
                .transpose()?,
        },
        session: SessionConfig {
            refresh_buffer_seconds: s
                .refresh_buffer_seconds
                .map_or(sd.refresh_buffer_seconds, u64::from),
            idle_timeout_seconds: s
                .idle_timeout_seconds
                .map_or(sd.idle_timeout_seconds, u64::from),
            max_lifetime_seconds: s
                .max_lifetime_seconds
                .map_or(sd.max_lifetime_seconds, u64::from),
            max_sessions: s.max_sessions.map_or(sd.max_sessions, |v| v as usize),
            max_sessions_per_user: s
                .max_sessions_per_user
                .map_or(sd.max_sessions_per_user, |v| v as usize),
            store: super::session_store::engine_store(cluster),
        },
        query: QueryConfig {
            timeout_seconds: q.timeout_seconds.map_or(qd.timeout_seconds, u64::from),
            memory_limit_bytes,
            memory_limit_per_user_bytes,
            memory_pool_bytes,
            max_concurrent: q.max_concurrent.map_or(qd.max_concurrent, |v| v as usize),
            max_concurrent_per_user: q
                .max_concurrent_per_user
                .map_or(qd.max_concurrent_per_user, |v| v as usize),
            max_queued_per_user: q
                .max_queued_per_user
                .map_or(qd.max_queued_per_user, |v| v as usize),
            shutdown_grace_seconds: q
                .shutdown_grace_seconds
                .map_or(qd.shutdown_grace_seconds, u64::from),
        },
        log: LogConfig {
            level: spec.engine.log_level.as_filter().into(),
            format: LogFormat::Json,
        },
    };
    cfg.validate()
        .map_err(|e| Error::InvalidSpec(format!("engine configuration: {e}")))?;
    Ok(cfg)
}

/// The engine container's memory limit: the spec's, else the operator's default (2Gi).
fn container_memory_limit(spec: &SqeClusterSpec) -> Result<Option<u64>> {
    let resources = spec
        .engine
        .resources
        .clone()
        .unwrap_or_else(default_resources);
    match resources.limits.as_ref().and_then(|l| l.get("memory")) {
        Some(q) => parse_quantity(&q.0).map(Some).ok_or_else(|| {
            Error::InvalidSpec(format!(
                "spec.engine.resources.limits.memory: `{}` is not a quantity",
                q.0
            ))
        }),
        None => Ok(None),
    }
}

/// The pool is 75% of the container's memory limit: the rest is the process itself (Arrow
/// buffers in flight to clients, the catalog and IdP clients, the allocator's slack). Without a
/// limit, the engine's default.
pub fn default_memory_pool(container_limit: Option<u64>) -> u64 {
    match container_limit {
        Some(limit) => limit / 4 * 3,
        None => QueryConfig::default().memory_pool_bytes,
    }
}

pub fn build(cluster: &SqeCluster, config_yaml: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta(cluster, config_map_name(cluster)),
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_string(),
            config_yaml.to_string(),
        )])),
        ..Default::default()
    }
}
