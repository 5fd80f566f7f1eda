//! The user's own Iceberg REST catalog client, and the storage it may read with.
//!
//! One `RestCatalog` per (user, token fingerprint): iceberg-catalog-rest 0.10.1 takes its token
//! once and has no setter, so a refreshed token means a new client. The engine puts
//! no storage key of its own anywhere: the FileIO of every table carries only what the catalog
//! vended for it, plus the flags that stop opendal from looking for ambient credentials.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::FutureExt;
use iceberg::io::{FileIOBuilder, StorageFactory};
use iceberg::table::Table;
use iceberg::{
    Catalog, CatalogBuilder, ErrorKind, Namespace, NamespaceIdent, Result as IcebergResult,
    Runtime, TableCommit, TableCreation, TableIdent,
};
use iceberg_catalog_rest::{RestCatalog, RestCatalogBuilder};

use super::credentials::CredentialPolicy;
use crate::catalog::cache::lru::{FooterCache, PlanCache};
use crate::catalog::cache::recent::RecentLoads;
use crate::error::EngineError;
use crate::secret::{Fingerprint, Secret};
use crate::token::LatestToken;

/// Asks the catalog to vend per-table storage credentials on loadTable/createTable.
pub const DELEGATION_HEADER: &str = "header.X-Iceberg-Access-Delegation";
pub const DELEGATION_VALUE: &str = "vended-credentials";

/// Flags that keep opendal's S3 credential chain from falling back to the engine's environment,
/// profile files or instance metadata when nothing (or too little) was vended.
const NO_AMBIENT_CREDENTIALS: [(&str, &str); 2] = [
    ("s3.disable-config-load", "true"),
    ("s3.disable-ec2-metadata", "true"),
];

/// Storage property prefixes a catalog may vend (S3 only: the engine is built with opendal-s3).
const STORAGE_PREFIXES: [&str; 2] = ["s3.", "client."];

/// The catalog client's properties for one user's token. Deliberately no `s3.*` key besides the
/// two "no ambient credentials" flags: iceberg lets the client's own props win over vended ones
/// (catalog.rs load_table), so any engine key here would shadow the user's credentials.
pub fn catalog_props(uri: &str, warehouse: &str, token: &Secret) -> HashMap<String, String> {
    let mut props = HashMap::from([
        ("uri".to_owned(), uri.to_owned()),
        ("warehouse".to_owned(), warehouse.to_owned()),
        ("token".to_owned(), token.expose().to_owned()),
        (DELEGATION_HEADER.to_owned(), DELEGATION_VALUE.to_owned()),
    ]);
    for (k, v) in NO_AMBIENT_CREDENTIALS {
        props.insert(k.to_owned(), v.to_owned());
    }
    props
}

/// The FileIO properties for one table: the storage keys the catalog supplied (its loadTable
/// `config`, and its /v1/config answer, which iceberg has already merged in), never the token,
/// headers or other client settings, plus the no-ambient flags; `endpoint` (the engine's
/// `catalog.storage_endpoint`) replaces the vended `s3.endpoint`, and nothing else.
pub fn storage_props(
    merged: &HashMap<String, String>,
    endpoint: Option<&str>,
) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = merged
        .iter()
        .filter(|(k, _)| STORAGE_PREFIXES.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in NO_AMBIENT_CREDENTIALS {
        out.insert(k.to_owned(), v.to_owned());
    }
    if let Some(endpoint) = endpoint {
        out.insert("s3.endpoint".to_owned(), endpoint.to_owned());
    }
    out
}

/// Object-store locations that need credentials to read (everything S3-like).
pub fn needs_vended_credentials(location: &str) -> bool {
    let scheme = location.split_once("://").map(|(s, _)| s).unwrap_or("");
    matches!(scheme, "s3" | "s3a" | "s3n")
}

/// Whether the catalog vended a usable S3 key pair.
pub fn has_vended_credentials(props: &HashMap<String, String>) -> bool {
    let set = |k: &str| props.get(k).is_some_and(|v| !v.is_empty());
    set("s3.access-key-id") && set("s3.secret-access-key")
}

/// The user's catalog: iceberg's `RestCatalog` carrying the user's token, with every table it
/// returns re-wrapped so its FileIO holds only vended storage properties.
pub struct UserCatalog {
    rest: RestCatalog,
    access: CatalogAccess,
    /// The token this client sends.
    fingerprint: Fingerprint,
    /// Where to find the session's token later (see `current`).
    latest: LatestToken,
    /// The client `current` built for the session's newer token, reused by every renewal
    /// until the token changes again (building one costs a GET /v1/config).
    successor: std::sync::Mutex<Option<Arc<UserCatalog>>>,
}

/// Everything but the token that a user's catalog client is built from.
#[derive(Clone)]
pub struct CatalogAccess {
    pub uri: String,
    pub warehouse: String,
    /// Whose catalog this is, for the log line that attributes vended keys.
    pub user: String,
    pub http: reqwest::Client,
    pub storage: Arc<dyn StorageFactory>,
    pub credentials: CredentialPolicy,
    /// Replaces the vended `s3.endpoint` (config `catalog.storage_endpoint`), without a
    /// trailing slash.
    pub storage_endpoint: Option<String>,
    /// The session's tables loaded a moment ago (one per session, shared with the clients
    /// that later tokens of the session get).
    pub recent: Arc<RecentLoads>,
    /// The Parquet footers and scan plans this context read (per user and token: `lru`).
    pub footers: Arc<FooterCache>,
    pub plans: Arc<PlanCache>,
}

/// Never prints the inner client: its properties hold the user's token.
impl fmt::Debug for UserCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserCatalog")
            .field("warehouse", &self.access.warehouse)
            .field("user", &self.access.user)
            .field("fp", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl UserCatalog {
    /// Builds the client; nothing is sent until the first call (GET /v1/config).
    pub fn new(
        access: CatalogAccess,
        token: &Secret,
        latest: LatestToken,
    ) -> Result<Self, EngineError> {
        let runtime = Runtime::try_current()
            .map_err(|_| EngineError::Internal("catalog client needs a tokio runtime".into()))?;
        let rest = RestCatalogBuilder::default()
            .with_client(access.http.clone())
            .with_storage_factory(access.storage.clone())
            .with_runtime(runtime)
            .load(
                &access.warehouse,
                catalog_props(&access.uri, &access.warehouse, token),
            )
            // 0.10.1's `load` is a ready future: building the client does no I/O.
            .now_or_never()
            .ok_or_else(|| EngineError::Internal("catalog client build did not complete".into()))?
            .map_err(|e| EngineError::Internal(format!("catalog client: {}", e.message())))?;
        Ok(Self {
            rest,
            access,
            fingerprint: token.fingerprint(),
            latest,
            successor: std::sync::Mutex::new(None),
        })
    }

    pub fn warehouse(&self) -> &str {
        &self.access.warehouse
    }

    pub fn footers(&self) -> Arc<FooterCache> {
        self.access.footers.clone()
    }

    pub fn plans(&self) -> &PlanCache {
        &self.access.plans
    }

    pub fn credential_policy(&self) -> CredentialPolicy {
        self.access.credentials
    }

    /// The table, and when its keys were vended: a load of this session younger than
    /// `recent::FRESH_FOR` if there is one, else a new one.
    pub async fn load_vended_table(
        &self,
        ident: &TableIdent,
    ) -> IcebergResult<(Table, std::time::SystemTime)> {
        if let Some(hit) = self.access.recent.get(ident, std::time::Instant::now()) {
            return Ok(hit);
        }
        let gate = self.access.recent.gate(ident);
        let _one_at_a_time = gate.lock().await;
        match self.access.recent.get(ident, std::time::Instant::now()) {
            Some(hit) => Ok(hit),
            None => self.reload_table(ident).await,
        }
    }

    /// A new loadTable (fresh keys), remembered for the statement's other reads.
    pub async fn reload_table(
        &self,
        ident: &TableIdent,
    ) -> IcebergResult<(Table, std::time::SystemTime)> {
        let vended_at = std::time::SystemTime::now();
        let table = self.restrict(self.rest.load_table(ident).await?)?;
        self.access.recent.put(
            ident.clone(),
            table.clone(),
            vended_at,
            std::time::Instant::now(),
        );
        Ok((table, vended_at))
    }

    /// Whatever a write changed must be loaded again by the next read.
    fn wrote<T>(&self, result: IcebergResult<T>) -> IcebergResult<T> {
        self.access.recent.forget_all();
        result
    }

    /// This client if the session still has the token it was built with, else a client for
    /// the session's token now: a query that outlives the token (a long scan renewing its
    /// vended keys) keeps asking as the user. Fails once the session has ended.
    pub async fn current(self: &Arc<Self>) -> Result<Arc<Self>, EngineError> {
        let token = self.latest.get().await?;
        let fingerprint = token.fingerprint();
        if fingerprint == self.fingerprint {
            return Ok(self.clone());
        }
        let mut successor = self
            .successor
            .lock()
            .map_err(|_| EngineError::Internal("catalog client lock poisoned".into()))?;
        if let Some(next) = successor.as_ref().filter(|c| c.fingerprint == fingerprint) {
            return Ok(next.clone());
        }
        let next = Arc::new(Self::new(self.access.clone(), &token, self.latest.clone())?);
        *successor = Some(next.clone());
        Ok(next)
    }

    /// The table with a FileIO that can only use what the catalog vended for it; a table in
    /// object storage without vended keys is refused rather than read with ambient credentials.
    fn restrict(&self, table: Table) -> IcebergResult<Table> {
        let props = storage_props(
            table.file_io().config().props(),
            self.access.storage_endpoint.as_deref(),
        );
        let location = table.metadata().location();
        if needs_vended_credentials(location) && !has_vended_credentials(&props) {
            let ident = table.identifier();
            let denied = EngineError::PermissionDenied(format!(
                "the catalog vended no storage credentials for table {}.{}; refusing to read \
                 it with any other credentials",
                self.access.warehouse,
                ident_text(ident)
            ));
            return Err(
                iceberg::Error::new(ErrorKind::Unexpected, denied.to_string()).with_source(denied),
            );
        }
        if let Some(key) = props.get("s3.access-key-id") {
            // Attributes each vended key to the user it was vended to (fingerprint only), so the
            // object store's own access log can be checked against it.
            tracing::info!(
                event = "storage_credentials",
                user = self.access.user.as_str(),
                table = %ident_text(table.identifier()),
                access_key_fp = %Fingerprint::of(key),
                session_token = props.contains_key("s3.session-token"),
            );
        }
        let file_io = FileIOBuilder::new(self.access.storage.clone())
            .with_props(props)
            .build();
        let mut builder = Table::builder()
            .identifier(table.identifier().clone())
            .metadata(table.metadata_ref())
            .file_io(file_io)
            .readonly(table.readonly())
            .runtime(Runtime::try_current()?);
        if let Some(location) = table.metadata_location() {
            builder = builder.metadata_location(location);
        }
        builder.build()
    }
}

/// `ns.table` with multi-level namespaces joined by dots.
pub fn ident_text(ident: &TableIdent) -> String {
    format!("{}.{}", ident.namespace().join("."), ident.name())
}

#[async_trait]
impl Catalog for UserCatalog {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> IcebergResult<Vec<NamespaceIdent>> {
        self.rest.list_namespaces(parent).await
    }
    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> IcebergResult<Namespace> {
        self.rest.create_namespace(namespace, properties).await
    }
    async fn get_namespace(&self, namespace: &NamespaceIdent) -> IcebergResult<Namespace> {
        self.rest.get_namespace(namespace).await
    }
    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> IcebergResult<bool> {
        self.rest.namespace_exists(namespace).await
    }
    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> IcebergResult<()> {
        self.rest.update_namespace(namespace, properties).await
    }
    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> IcebergResult<()> {
        self.rest.drop_namespace(namespace).await
    }
    async fn list_tables(&self, namespace: &NamespaceIdent) -> IcebergResult<Vec<TableIdent>> {
        self.rest.list_tables(namespace).await
    }
    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> IcebergResult<Table> {
        let table = self.wrote(self.rest.create_table(namespace, creation).await)?;
        self.restrict(table)
    }
    async fn load_table(&self, table: &TableIdent) -> IcebergResult<Table> {
        Ok(self.load_vended_table(table).await?.0)
    }
    async fn drop_table(&self, table: &TableIdent) -> IcebergResult<()> {
        self.wrote(self.rest.drop_table(table).await)
    }
    async fn purge_table(&self, table: &TableIdent) -> IcebergResult<()> {
        self.wrote(self.rest.purge_table(table).await)
    }
    async fn table_exists(&self, table: &TableIdent) -> IcebergResult<bool> {
        self.rest.table_exists(table).await
    }
    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> IcebergResult<()> {
        self.wrote(self.rest.rename_table(src, dest).await)
    }
    async fn register_table(
        &self,
        table: &TableIdent,
        metadata_location: String,
    ) -> IcebergResult<Table> {
        let table = self.wrote(self.rest.register_table(table, metadata_location).await)?;
        self.restrict(table)
    }
    async fn update_table(&self, commit: TableCommit) -> IcebergResult<Table> {
        // The commit response carries no vended config; the table is re-loaded (and restricted)
        // before any further read, so it is returned as the catalog built it.
        self.wrote(self.rest.update_table(commit).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_props_carry_the_token_and_delegation_header_and_no_storage_keys() {
        let p = catalog_props(
            "http://127.0.0.1:18181/iceberg",
            "lake",
            &Secret::new("eyJ.user.token"),
        );
        assert_eq!(p["token"], "eyJ.user.token");
        assert_eq!(p[DELEGATION_HEADER], "vended-credentials");
        assert_eq!(p["uri"], "http://127.0.0.1:18181/iceberg");
        assert_eq!(p["warehouse"], "lake");
        let s3: Vec<_> = p.keys().filter(|k| k.starts_with("s3.")).cloned().collect();
        let mut s3 = s3;
        s3.sort();
        assert_eq!(s3, ["s3.disable-config-load", "s3.disable-ec2-metadata"]);
        assert!(
            !p.keys()
                .any(|k| k == "credential" || k.starts_with("client."))
        );
    }

    #[test]
    fn storage_props_keep_only_vended_storage_keys() {
        let merged = HashMap::from(
            [
                ("s3.access-key-id", "AK"),
                ("s3.secret-access-key", "SK"),
                ("s3.session-token", "ST"),
                ("s3.endpoint", "http://127.0.0.1:19000"),
                ("s3.path-style-access", "true"),
                ("client.region", "us-east-1"),
                ("token", "eyJ.user.token"),
                ("header.x-iceberg-access-delegation", "vended-credentials"),
                ("uri", "http://catalog"),
                ("prefix", "main"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let out = storage_props(&merged, None);
        assert_eq!(out["s3.access-key-id"], "AK");
        assert_eq!(out["client.region"], "us-east-1");
        assert_eq!(out["s3.disable-config-load"], "true");
        assert_eq!(out["s3.disable-ec2-metadata"], "true");
        for gone in [
            "token",
            "header.x-iceberg-access-delegation",
            "uri",
            "prefix",
        ] {
            assert!(!out.contains_key(gone), "{gone} leaked into the FileIO");
        }
        assert!(!out.values().any(|v| v.contains("eyJ")));
        assert!(has_vended_credentials(&out));
    }

    #[test]
    fn a_configured_storage_endpoint_replaces_only_the_vended_endpoint() {
        let merged = HashMap::from(
            [
                ("s3.access-key-id", "AK"),
                ("s3.secret-access-key", "SK"),
                ("s3.endpoint", "http://127.0.0.1:19000/"),
                ("s3.path-style-access", "true"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let out = storage_props(&merged, Some("http://minio.storage.svc:9000"));
        assert_eq!(out["s3.endpoint"], "http://minio.storage.svc:9000");
        assert_eq!(out["s3.access-key-id"], "AK");
        assert_eq!(out["s3.path-style-access"], "true");
        assert_eq!(
            storage_props(&merged, None)["s3.endpoint"],
            "http://127.0.0.1:19000/"
        );
        // An endpoint alone is no credential: a table without vended keys is still refused.
        let endpoint_only = storage_props(&HashMap::new(), Some("http://minio:9000"));
        assert!(!has_vended_credentials(&endpoint_only));
    }

    #[test]
    fn s3_tables_need_vended_keys() {
        assert!(needs_vended_credentials("s3://warehouse/demo/a"));
        assert!(needs_vended_credentials("s3a://warehouse/demo/a"));
        assert!(!needs_vended_credentials("file:///tmp/w/demo/a"));
        assert!(!needs_vended_credentials("memory://x"));
        let flags_only = storage_props(&HashMap::new(), None);
        assert!(!has_vended_credentials(&flags_only));
        let half = HashMap::from([("s3.access-key-id".to_owned(), "AK".to_owned())]);
        assert!(!has_vended_credentials(&half));
    }

    fn access() -> CatalogAccess {
        CatalogAccess {
            uri: "http://127.0.0.1:1/iceberg".into(),
            warehouse: "lake".into(),
            user: "alice".into(),
            http: reqwest::Client::new(),
            storage: Arc::new(iceberg_storage_opendal::OpenDalStorageFactory::S3 {
                customized_credential_load: None,
            }),
            credentials: CredentialPolicy::default(),
            storage_endpoint: None,
            recent: Arc::default(),
            footers: Arc::new(crate::catalog::cache::lru::ByteLru::with_capacity(1 << 20)),
            plans: Arc::new(crate::catalog::cache::lru::ByteLru::with_capacity(1 << 20)),
        }
    }

    #[tokio::test]
    async fn the_client_never_prints_its_token() {
        let token = Secret::new("eyJ.secret.token");
        let c = UserCatalog::new(access(), &token, LatestToken::fixed(token.clone())).unwrap();
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("eyJ"), "{shown}");
    }

    #[tokio::test]
    async fn a_long_query_asks_with_the_sessions_token_as_it_is_now() {
        let now = Arc::new(std::sync::Mutex::new(Some(Secret::new("t1"))));
        let source = now.clone();
        let latest = LatestToken::new(move || {
            let t = source.lock().unwrap().clone();
            async move { t.ok_or(EngineError::SessionInvalid) }.boxed()
        });
        let c = Arc::new(UserCatalog::new(access(), &Secret::new("t1"), latest).unwrap());
        // Same token: the same client.
        assert!(Arc::ptr_eq(&c, &c.current().await.unwrap()));
        // Refreshed: a client for the new token, same user and warehouse.
        *now.lock().unwrap() = Some(Secret::new("t2"));
        let next = c.current().await.unwrap();
        assert_eq!(next.fingerprint, Fingerprint::of("t2"));
        assert!(
            Arc::ptr_eq(&next, &c.current().await.unwrap()),
            "built once per token"
        );
        assert_eq!(next.access.user, "alice");
        // Session over: no client at all.
        *now.lock().unwrap() = None;
        assert!(matches!(
            c.current().await.unwrap_err(),
            EngineError::SessionInvalid
        ));
    }
}
