//! The engine's configuration: one YAML file plus environment variables for secrets.
//!
//! This crate is deliberately tiny (serde + url) so the operator can render the very same type
//! into a ConfigMap without compiling the engine. There is no field for catalog or storage
//! credentials: the engine acts only with the user's own token and what the catalog vends.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

/// Environment variable holding the OIDC client secret (never in the file).
pub const CLIENT_SECRET_ENV: &str = "SQE_OIDC_CLIENT_SECRET";
/// Environment variable naming the config file when no flag is given.
pub const CONFIG_PATH_ENV: &str = "SQE_CONFIG";
/// Environment variable holding the shared session store's password, if it has one.
pub const SESSION_STORE_PASSWORD_ENV: &str = "SQE_SESSION_STORE_PASSWORD";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("invalid config: `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    pub listen: ListenConfig,
    pub oidc: OidcConfig,
    pub catalog: CatalogConfig,
    #[serde(default)]
    pub session: SessionConfig,
    #[serde(default)]
    pub query: QueryConfig,
    #[serde(default)]
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Arrow Flight SQL address.
    pub flight: SocketAddr,
    /// Health (`/healthz`, `/readyz`) and `/metrics` address; kept apart from Flight so probes
    /// and scrapes never compete with queries.
    pub http: SocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Handshake user/password → OIDC password grant (ROPC); refreshed with the refresh token.
    Password,
    /// Machine clients: Basic `client_id:client_secret` runs the client-credentials grant as
    /// *that* client at the IdP (never as the engine's own client). Re-fetched before expiry.
    ClientCredentials,
    /// The client presents its own IdP JWT; validated and passed through unchanged.
    Bearer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeycloakRef {
    /// Where the engine reaches Keycloak (discovery, token and key requests).
    pub url: Url,
    pub realm: String,
    /// Keycloak's public URL (its `hostname` option), which its tokens carry in `iss`, when the
    /// engine reaches it at `url` through another address (an in-cluster Service, a private
    /// network). Keycloak then needs `hostname-backchannel-dynamic=true` so that discovery
    /// through `url` names token and key endpoints at `url`. Unset: `url` is the public one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend_url: Option<Url>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keycloak: Option<KeycloakRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<Url>,
    pub client_id: String,
    #[serde(default = "default_modes")]
    pub modes: Vec<AuthMode>,
    /// Expected `aud` of bearer tokens (bearer mode); also requested where the IdP supports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Claim holding the user name.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// Dotted path of the claim holding the user's roles.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// JWS algorithms accepted in bearer mode; anything else (notably `none`, HS*) is refused.
    #[serde(default = "default_algorithms")]
    pub allowed_algorithms: Vec<String>,
    /// Bearer mode: clients (`azp`) whose access tokens are accepted. Empty: only `client_id`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_clients: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// Iceberg REST catalog base URI (for Polaris: `http://host:8181/api/catalog`).
    pub uri: Url,
    /// Warehouse (Polaris catalog name); also the SQL catalog name.
    pub warehouse: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// When to ask the catalog for fresh storage credentials during a long scan.
    #[serde(default, skip_serializing_if = "VendedCredentialsConfig::is_default")]
    pub vended_credentials: VendedCredentialsConfig,
    /// The S3 endpoint the engine reads through, in place of the `s3.endpoint` the catalog
    /// vends: for when the catalog names the object store by an address the engine's pods
    /// cannot reach (an external name where pods use an in-cluster Service). The vended
    /// credentials are still the only keys used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_endpoint: Option<Url>,
}

/// Vended storage credentials are short-lived; a scan that outlives them asks the catalog again
/// (as the user, with the session's current token) before they run out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VendedCredentialsConfig {
    /// Lifetime assumed when the catalog does not say (`s3.session-token-expires-at-ms`).
    /// 900 s is the shortest session AWS STS (and MinIO's STS) will issue, so no STS credential
    /// lives less.
    pub assumed_lifetime_seconds: u64,
    /// Fresh credentials are fetched when less than this is left.
    pub refresh_margin_seconds: u64,
}

impl Default for VendedCredentialsConfig {
    fn default() -> Self {
        Self {
            assumed_lifetime_seconds: 900,
            refresh_margin_seconds: 120,
        }
    }
}

impl VendedCredentialsConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
    pub fn assumed_lifetime(&self) -> Duration {
        Duration::from_secs(self.assumed_lifetime_seconds)
    }
    pub fn refresh_margin(&self) -> Duration {
        Duration::from_secs(self.refresh_margin_seconds)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub refresh_buffer_seconds: u64,
    pub idle_timeout_seconds: u64,
    pub max_lifetime_seconds: u64,
    pub max_sessions: usize,
    /// Sessions one user may hold at once, so one user cannot fill `max_sessions`.
    pub max_sessions_per_user: usize,
    /// The store every replica shares sessions through; unset, each process keeps its own
    /// (one replica, or sessions tied to the pod that opened them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<SessionStoreConfig>,
}

/// A Redis 7 (or Valkey) server all replicas reach. It holds sealed records only: opening one
/// takes the client's handle and one of the cluster keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionStoreConfig {
    /// `redis://host:port/` or, with TLS, `rediss://host:port/`; no password here (it comes
    /// from `SQE_SESSION_STORE_PASSWORD`).
    pub url: String,
    /// A file of cluster keys, one per line, each 32 bytes in base64; the first seals new
    /// records, every one opens (rotation: add the new key first, drop the old one after
    /// `max_lifetime_seconds`).
    pub keys_file: std::path::PathBuf,
    /// With `rediss://`: the PEM file of the CA that signed the store's certificate (else the
    /// system's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            refresh_buffer_seconds: 60,
            idle_timeout_seconds: 15 * 60,
            max_lifetime_seconds: 8 * 3600,
            max_sessions: 1000,
            max_sessions_per_user: 50,
            store: None,
        }
    }
}

impl SessionConfig {
    pub fn refresh_buffer(&self) -> Duration {
        Duration::from_secs(self.refresh_buffer_seconds)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_seconds)
    }
    pub fn max_lifetime(&self) -> Duration {
        Duration::from_secs(self.max_lifetime_seconds)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    pub timeout_seconds: u64,
    /// The most memory one session's queries and in-memory tables may hold together, in bytes.
    pub memory_limit_bytes: u64,
    /// The most memory all of one user's sessions may hold together, in bytes; unset, the same
    /// as `memory_limit_bytes` (a second session shares the first one's room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_per_user_bytes: Option<u64>,
    /// The process-wide memory pool every session draws from, in bytes (the operator derives it
    /// from the pod's memory limit). At least `memory_limit_bytes`.
    pub memory_pool_bytes: u64,
    pub max_concurrent: usize,
    /// Queries one user may run at once (open result streams included), so one user cannot hold
    /// every slot.
    pub max_concurrent_per_user: usize,
    /// Statements of one user that wait for one of its slots (in arrival order, within their
    /// time limit) when it is already running `max_concurrent_per_user`; one more is refused.
    pub max_queued_per_user: usize,
    /// Grace period on SIGTERM for running queries.
    pub shutdown_grace_seconds: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout_seconds: 300,
            memory_limit_bytes: 1 << 30,
            memory_limit_per_user_bytes: None,
            memory_pool_bytes: 2 << 30,
            max_concurrent: 16,
            max_concurrent_per_user: 4,
            max_queued_per_user: 8,
            shutdown_grace_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directive, e.g. `info` or `sqe_engine=debug,info`.
    pub level: String,
    /// `json` (default) or `text`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Json,
        }
    }
}

fn default_modes() -> Vec<AuthMode> {
    vec![AuthMode::Password]
}
fn default_username_claim() -> String {
    "preferred_username".into()
}
fn default_roles_claim() -> String {
    "realm_access.roles".into()
}
fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}

/// Secrets come only from the environment, never from the file.
#[derive(Clone, Default)]
pub struct Secrets {
    pub client_secret: Option<String>,
    pub session_store_password: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "session_store_password",
                &self.session_store_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Secrets {
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            client_secret: lookup(CLIENT_SECRET_ENV).filter(|s| !s.is_empty()),
            session_store_password: lookup(SESSION_STORE_PASSWORD_ENV).filter(|s| !s.is_empty()),
        }
    }
}

impl EngineConfig {
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let cfg: EngineConfig = serde_yaml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("config types always serialize")
    }

    /// The OIDC issuer tokens must carry in `iss`: given directly, or `{frontend_url or
    /// url}/realms/{realm}` for Keycloak.
    pub fn issuer(&self) -> Url {
        match (&self.oidc.keycloak, &self.oidc.issuer) {
            (_, Some(issuer)) => issuer.clone(),
            (Some(kc), None) => realm_url(kc.frontend_url.as_ref().unwrap_or(&kc.url), &kc.realm),
            (None, None) => unreachable!("validate() requires keycloak or issuer"),
        }
    }

    /// Where the engine fetches the issuer's discovery document: the issuer itself, except for
    /// a Keycloak reached through another address than its `frontend_url`.
    pub fn discovery_base(&self) -> Url {
        match (&self.oidc.keycloak, &self.oidc.issuer) {
            (Some(kc), None) => realm_url(&kc.url, &kc.realm),
            _ => self.issuer(),
        }
    }

    /// Cross-field rules the type system cannot express. Each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let o = &self.oidc;
        match (&o.keycloak, &o.issuer) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid(
                    "oidc",
                    "exactly one of `oidc.keycloak` or `oidc.issuer` must be set",
                ));
            }
            (Some(kc), None) => {
                if kc.realm.trim().is_empty() || kc.realm.contains('/') {
                    return Err(invalid(
                        "oidc.keycloak.realm",
                        "must be a non-empty realm name",
                    ));
                }
                check_http_url("oidc.keycloak.url", &kc.url)?;
                if let Some(frontend) = &kc.frontend_url {
                    check_http_url("oidc.keycloak.frontend_url", frontend)?;
                }
            }
            (None, Some(issuer)) => check_http_url("oidc.issuer", issuer)?,
        }
        if o.client_id.trim().is_empty() {
            return Err(invalid("oidc.client_id", "must not be empty"));
        }
        if o.modes.is_empty() {
            return Err(invalid("oidc.modes", "at least one mode is required"));
        }
        if o.modes.iter().collect::<BTreeSet<_>>().len() != o.modes.len() {
            return Err(invalid("oidc.modes", "lists a mode twice"));
        }
        if o.username_claim.is_empty() {
            return Err(invalid("oidc.username_claim", "must not be empty"));
        }
        if o.allowed_algorithms.is_empty() {
            return Err(invalid("oidc.allowed_algorithms", "must not be empty"));
        }
        for alg in &o.allowed_algorithms {
            if !SUPPORTED_ALGORITHMS.contains(&alg.as_str()) {
                return Err(invalid(
                    "oidc.allowed_algorithms",
                    format!(
                        "`{alg}` is not an asymmetric JWS algorithm; use one of {SUPPORTED_ALGORITHMS:?}"
                    ),
                ));
            }
        }
        if let Some(store) = &self.session.store {
            let scheme = store.url.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("redis" | "rediss")) {
                return Err(invalid(
                    "session.store.url",
                    "must be a redis:// or rediss:// URL",
                ));
            }
            if store.url.contains('@') {
                return Err(invalid(
                    "session.store.url",
                    "must not carry credentials; give the password in SQE_SESSION_STORE_PASSWORD",
                ));
            }
            if store.ca_file.is_some() && scheme != Some("rediss") {
                return Err(invalid(
                    "session.store.ca_file",
                    "is for a rediss:// (TLS) store",
                ));
            }
        }
        check_http_url("catalog.uri", &self.catalog.uri)?;
        if let Some(endpoint) = &self.catalog.storage_endpoint {
            check_http_url("catalog.storage_endpoint", endpoint)?;
        }
        if self.catalog.warehouse.trim().is_empty() {
            return Err(invalid("catalog.warehouse", "must not be empty"));
        }
        let v = &self.catalog.vended_credentials;
        if v.refresh_margin_seconds >= v.assumed_lifetime_seconds {
            return Err(invalid(
                "catalog.vended_credentials.refresh_margin_seconds",
                "must be shorter than assumed_lifetime_seconds, or credentials would be \
                 fetched again on every read",
            ));
        }
        let s = &self.session;
        if s.max_sessions == 0 {
            return Err(invalid("session.max_sessions", "must be at least 1"));
        }
        if s.idle_timeout_seconds == 0 {
            return Err(invalid(
                "session.idle_timeout_seconds",
                "must be at least 1",
            ));
        }
        if s.max_lifetime_seconds < s.idle_timeout_seconds {
            return Err(invalid(
                "session.max_lifetime_seconds",
                "must not be shorter than session.idle_timeout_seconds",
            ));
        }
        let q = &self.query;
        if q.timeout_seconds == 0 {
            return Err(invalid("query.timeout_seconds", "must be at least 1"));
        }
        if q.max_concurrent == 0 {
            return Err(invalid("query.max_concurrent", "must be at least 1"));
        }
        if q.max_concurrent_per_user == 0 {
            return Err(invalid(
                "query.max_concurrent_per_user",
                "must be at least 1",
            ));
        }
        if s.max_sessions_per_user == 0 {
            return Err(invalid(
                "session.max_sessions_per_user",
                "must be at least 1",
            ));
        }
        if q.memory_limit_bytes < (16 << 20) {
            return Err(invalid(
                "query.memory_limit_bytes",
                "must be at least 16 MiB",
            ));
        }
        if q.memory_limit_per_user_bytes
            .is_some_and(|u| u < q.memory_limit_bytes || u > q.memory_pool_bytes)
        {
            return Err(invalid(
                "query.memory_limit_per_user_bytes",
                "must be between query.memory_limit_bytes and query.memory_pool_bytes",
            ));
        }
        if q.memory_pool_bytes < q.memory_limit_bytes {
            return Err(invalid(
                "query.memory_pool_bytes",
                "must be at least query.memory_limit_bytes (one session's share of it)",
            ));
        }
        if self.listen.flight == self.listen.http {
            return Err(invalid("listen.http", "must differ from listen.flight"));
        }
        Ok(())
    }
}

fn realm_url(base: &Url, realm: &str) -> Url {
    let base = base.as_str().trim_end_matches('/');
    Url::parse(&format!("{base}/realms/{realm}"))
        .expect("validated keycloak url and realm form a url")
}

/// Asymmetric algorithms only: a symmetric key would have to be shared with the engine.
pub const SUPPORTED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn check_http_url(key: &'static str, url: &Url) -> Result<(), ConfigError> {
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(()),
        _ => Err(invalid(key, format!("`{url}` is not an http(s) URL"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
listen: { flight: "127.0.0.1:50051", http: "127.0.0.1:8080" }
oidc:
  keycloak: { url: "http://127.0.0.1:8081", realm: sqe }
  client_id: sqe
catalog: { uri: "http://127.0.0.1:8181/api/catalog", warehouse: lake }
"#;

    fn err_of(yaml: &str) -> String {
        EngineConfig::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = EngineConfig::from_yaml(MINIMAL).unwrap();
        assert_eq!(c.oidc.modes, vec![AuthMode::Password]);
        assert_eq!(c.session.refresh_buffer_seconds, 60);
        assert_eq!(c.session.idle_timeout_seconds, 900);
        assert_eq!(c.session.max_lifetime_seconds, 8 * 3600);
        assert_eq!(c.oidc.username_claim, "preferred_username");
        assert_eq!(c.issuer().as_str(), "http://127.0.0.1:8081/realms/sqe");
    }

    #[test]
    fn a_shared_session_store_is_a_redis_url_without_credentials_and_a_key_file() {
        let c = EngineConfig::from_yaml(MINIMAL).unwrap();
        assert_eq!(c.session.store, None);
        // Unset, it stays out of rendered files (an older engine reads them too).
        assert!(!c.to_yaml().contains("store"));
        let with = |url: &str| {
            format!(
                "{MINIMAL}session: {{ store: {{ url: \"{url}\", keys_file: /etc/sqe/keys }} }}\n"
            )
        };
        let c = EngineConfig::from_yaml(&with("rediss://sessions.sqe.svc:6379/")).unwrap();
        let store = c.session.store.clone().unwrap();
        assert_eq!(store.keys_file, std::path::PathBuf::from("/etc/sqe/keys"));
        assert!(c.to_yaml().contains("rediss://sessions.sqe.svc:6379/"));
        assert!(err_of(&with("http://sessions:6379/")).contains("session.store.url"));
        let e = err_of(&with("redis://default:pw@sessions:6379/"));
        assert!(
            e.contains("SQE_SESSION_STORE_PASSWORD") && !e.contains("pw@"),
            "{e}"
        );
        // A CA file only makes sense for a TLS store.
        let ca = |url: &str| {
            format!(
                "{MINIMAL}session: {{ store: {{ url: \"{url}\", keys_file: /k, ca_file: /ca.pem }} }}\n"
            )
        };
        let tls = EngineConfig::from_yaml(&ca("rediss://sessions:6379/")).unwrap();
        assert_eq!(
            tls.session.store.unwrap().ca_file,
            Some(std::path::PathBuf::from("/ca.pem"))
        );
        assert!(err_of(&ca("redis://sessions:6379/")).contains("session.store.ca_file"));
        let secrets =
            Secrets::from_lookup(|k| (k == SESSION_STORE_PASSWORD_ENV).then(|| "s3cret".into()));
        assert_eq!(secrets.session_store_password.as_deref(), Some("s3cret"));
        assert!(!format!("{secrets:?}").contains("s3cret"));
    }

    #[test]
    fn vended_credentials_are_renewed_before_an_assumed_15_minutes_unless_configured() {
        let c = EngineConfig::from_yaml(MINIMAL).unwrap();
        let v = &c.catalog.vended_credentials;
        assert_eq!(v.assumed_lifetime(), Duration::from_secs(900));
        assert_eq!(v.refresh_margin(), Duration::from_secs(120));
        // The default stays out of rendered files (the operator's ConfigMap).
        assert!(!c.to_yaml().contains("vended_credentials"));

        let tuned = MINIMAL.replace(
            "warehouse: lake }",
            "warehouse: lake, vended_credentials: { assumed_lifetime_seconds: 3600 } }",
        );
        let c = EngineConfig::from_yaml(&tuned).unwrap();
        assert_eq!(c.catalog.vended_credentials.assumed_lifetime_seconds, 3600);
        assert_eq!(c.catalog.vended_credentials.refresh_margin_seconds, 120);
        assert!(c.to_yaml().contains("assumed_lifetime_seconds: 3600"));

        let e = err_of(&MINIMAL.replace(
            "warehouse: lake }",
            "warehouse: lake, vended_credentials: { assumed_lifetime_seconds: 60, refresh_margin_seconds: 60 } }",
        ));
        assert!(
            e.contains("catalog.vended_credentials.refresh_margin_seconds"),
            "{e}"
        );
    }

    #[test]
    fn a_keycloak_behind_another_address_is_discovered_there_but_issues_its_public_url() {
        let c = EngineConfig::from_yaml(MINIMAL).unwrap();
        assert_eq!(
            c.discovery_base(),
            c.issuer(),
            "one address: discovery at the issuer"
        );

        let split = MINIMAL.replace(
            "realm: sqe }",
            "realm: sqe, frontend_url: \"https://sso.example.com/\" }",
        );
        let c = EngineConfig::from_yaml(&split).unwrap();
        assert_eq!(c.issuer().as_str(), "https://sso.example.com/realms/sqe");
        assert_eq!(
            c.discovery_base().as_str(),
            "http://127.0.0.1:8081/realms/sqe"
        );
        assert_eq!(EngineConfig::from_yaml(&c.to_yaml()).unwrap(), c);

        let e =
            err_of(&MINIMAL.replace("realm: sqe }", "realm: sqe, frontend_url: \"file:///x\" }"));
        assert!(e.contains("oidc.keycloak.frontend_url"), "{e}");
    }

    #[test]
    fn a_storage_endpoint_must_be_an_http_url_and_stays_out_when_unset() {
        let c = EngineConfig::from_yaml(MINIMAL).unwrap();
        assert_eq!(c.catalog.storage_endpoint, None);
        assert!(!c.to_yaml().contains("storage_endpoint"));
        let set = MINIMAL.replace(
            "warehouse: lake }",
            "warehouse: lake, storage_endpoint: \"http://minio.storage:9000\" }",
        );
        let c = EngineConfig::from_yaml(&set).unwrap();
        assert_eq!(
            c.catalog.storage_endpoint.as_ref().map(Url::as_str),
            Some("http://minio.storage:9000/")
        );
        let e = err_of(&set.replace("http://minio.storage:9000", "s3://bucket"));
        assert!(e.contains("catalog.storage_endpoint"), "{e}");
    }

    #[test]
    fn round_trips_through_yaml() {
        let c = EngineConfig::from_yaml(MINIMAL).unwrap();
        assert_eq!(EngineConfig::from_yaml(&c.to_yaml()).unwrap(), c);
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let e = err_of(&format!("{MINIMAL}\nsesion: {{}}\n"));
        assert!(e.contains("unknown field `sesion`"), "{e}");
        let e = err_of(&MINIMAL.replace("client_id: sqe", "client_id: sqe\n  clientid: x"));
        assert!(e.contains("clientid"), "{e}");
    }

    #[test]
    fn there_is_no_place_for_storage_or_catalog_credentials() {
        for key in [
            "credential: root:s3cr3t",
            "token: abc",
            "s3.access-key-id: AK",
        ] {
            let yaml = MINIMAL.replace("warehouse: lake }", &format!("warehouse: lake, {key} }}"));
            assert!(
                EngineConfig::from_yaml(&yaml).is_err(),
                "{key} was accepted"
            );
        }
    }

    #[test]
    fn missing_required_values_are_named() {
        let e = err_of(&MINIMAL.replace("  client_id: sqe\n", ""));
        assert!(e.contains("client_id"), "{e}");
        let e = err_of(&MINIMAL.replace(", warehouse: lake", ""));
        assert!(e.contains("warehouse"), "{e}");
    }

    #[test]
    fn exactly_one_identity_provider_form() {
        let both = MINIMAL.replace(
            "client_id: sqe",
            "client_id: sqe\n  issuer: \"http://idp.example/\"",
        );
        assert!(err_of(&both).contains("exactly one of"));
        let none = MINIMAL.replace(
            "  keycloak: { url: \"http://127.0.0.1:8081\", realm: sqe }\n",
            "",
        );
        assert!(err_of(&none).contains("exactly one of"));
    }

    #[test]
    fn issuer_form_is_used_verbatim() {
        let yaml = MINIMAL.replace(
            "keycloak: { url: \"http://127.0.0.1:8081\", realm: sqe }",
            "issuer: \"https://idp.example/tenant\"",
        );
        let c = EngineConfig::from_yaml(&yaml).unwrap();
        assert_eq!(c.issuer().as_str(), "https://idp.example/tenant");
    }

    #[test]
    fn value_rules_name_their_key() {
        let cases = [
            ("modes: []", "oidc.modes"),
            ("modes: [password, password]", "oidc.modes"),
            ("allowed_algorithms: [HS256]", "oidc.allowed_algorithms"),
            ("allowed_algorithms: [none]", "oidc.allowed_algorithms"),
        ];
        for (line, key) in cases {
            let yaml = MINIMAL.replace("client_id: sqe", &format!("client_id: sqe\n  {line}"));
            let e = err_of(&yaml);
            assert!(e.contains(key), "{line}: {e}");
        }
        let e = err_of(&format!("{MINIMAL}session: {{ max_sessions: 0 }}\n"));
        assert!(e.contains("session.max_sessions"), "{e}");
        let e = err_of(&format!(
            "{MINIMAL}session: {{ idle_timeout_seconds: 100, max_lifetime_seconds: 10 }}\n"
        ));
        assert!(e.contains("session.max_lifetime_seconds"), "{e}");
        let e = err_of(&MINIMAL.replace("http: \"127.0.0.1:8080\"", "http: \"127.0.0.1:50051\""));
        assert!(e.contains("listen.http"), "{e}");
        let e = err_of(&MINIMAL.replace("http://127.0.0.1:8181/api/catalog", "file:///tmp/x"));
        assert!(e.contains("catalog.uri"), "{e}");
        let e = err_of(&MINIMAL.replace("\"127.0.0.1:50051\"", "\"not-an-address\""));
        assert!(e.contains("listen.flight"), "{e}");
    }

    #[test]
    fn secrets_never_print() {
        let s = Secrets {
            client_secret: Some("hunter2-secret".into()),
            session_store_password: Some("hunter3-secret".into()),
        };
        assert!(!format!("{s:?}").contains("hunter"));
    }
}
