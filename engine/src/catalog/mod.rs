//! The per-user Iceberg catalog: each session's DataFusion context gets one catalog, named after
//! the warehouse, that talks to the Iceberg REST catalog with that session's access token and
//! reads data only with the storage credentials the catalog vends for that user.
//!
//! Four parts, each importing only those after it (`.ci/layers`):
//!
//! - `providers`: what DataFusion sees — the warehouse's catalog and schema providers (lazy,
//!   listings limited to tables the user can load), one table's reads and writes, time travel,
//!   and iceberg-datafusion's own providers (the writer, `t$snapshots`).
//! - `scan`: the physical scans of planned files — DataFusion's Parquet reader where it reads
//!   correctly, iceberg-rust's reader in parallel elsewhere.
//! - `client`: the user's REST catalog client (token, vended-credentials header, no engine
//!   storage keys), vended keys renewed during scans that outlive them, and catalog failures as
//!   status codes.
//! - `cache`: what a context keeps of immutable files (footers, planned file lists) and of
//!   tables loaded a moment ago.
//!
//! This file builds each session's context around those parts.

mod cache;
mod client;
mod providers;
mod scan;

pub use providers::table::UserTable;
pub use providers::time_travel::{AsOf, parse_timestamp_ms};

use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::context::SessionContext;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::object_store::memory::InMemory;
use datafusion::prelude::SessionConfig;
use iceberg::io::StorageFactory;
use iceberg_storage_opendal::OpenDalStorageFactory;
use sqe_engine_config::CatalogConfig;

use crate::auth::Identity;
use crate::context::{QueryContextFactory, scratch_catalog};
use crate::error::EngineError;
use crate::memory::UserPools;
use crate::token::TokenView;
use cache::lru;
use client::credentials::CredentialPolicy;
use client::rest::{CatalogAccess, UserCatalog};
use providers::schema::{CatalogState, WarehouseProvider};
use scan::parquet;

/// How long a listing, a visibility probe or a loaded table is reused within one token's
/// context. Short: a grant or revoke at the catalog shows within this time.
pub const DEFAULT_LISTING_TTL: Duration = Duration::from_secs(30);

/// The schema unqualified names resolve in (Iceberg's conventional default namespace).
pub const DEFAULT_SCHEMA: &str = "default";

/// The session-local in-memory catalog kept next to the warehouse.
pub const SCRATCH_CATALOG: &str = crate::context::SESSION_CATALOG;

/// Builds each session's context around the user's own catalog client.
pub struct CatalogContextFactory {
    uri: String,
    warehouse: String,
    http: reqwest::Client,
    storage: Arc<dyn StorageFactory>,
    credentials: CredentialPolicy,
    storage_endpoint: Option<String>,
    /// Each user's share of the process's one memory pool, and each session's of its user's.
    memory: UserPools,
    pub target_partitions: usize,
    pub listing_ttl: Duration,
}

/// Scans of one statement planned at once (each loads its table and reads its footers).
pub const PLANNING_CONCURRENCY: usize = 16;

impl CatalogContextFactory {
    pub fn new(
        catalog: &CatalogConfig,
        memory: UserPools,
        target_partitions: usize,
    ) -> Result<Self, EngineError> {
        // One connection pool for every user's catalog calls; it holds no credential (each
        // catalog client adds its own user's bearer per request).
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        if let Some(path) = &catalog.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                EngineError::Internal(format!("catalog.ca_file {}: {e}", path.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                EngineError::Internal(format!("catalog.ca_file {}: {e}", path.display()))
            })?;
            http = http.add_root_certificate(cert);
        }
        let http = http
            .build()
            .map_err(|e| EngineError::Internal(format!("catalog HTTP client: {e}")))?;
        Ok(Self {
            uri: catalog.uri.as_str().trim_end_matches('/').to_owned(),
            warehouse: catalog.warehouse.clone(),
            http,
            // S3 only, and no custom credential loader: the only keys are the vended ones.
            storage: Arc::new(OpenDalStorageFactory::S3 {
                customized_credential_load: None,
            }),
            credentials: (&catalog.vended_credentials).into(),
            storage_endpoint: catalog
                .storage_endpoint
                .as_ref()
                .map(|u| u.as_str().trim_end_matches('/').to_owned()),
            memory,
            target_partitions,
            listing_ttl: DEFAULT_LISTING_TTL,
        })
    }
}

impl QueryContextFactory for CatalogContextFactory {
    fn create(
        &self,
        identity: &Identity,
        token: &TokenView,
        memory: &Arc<dyn MemoryPool>,
    ) -> Result<SessionContext, EngineError> {
        let access = CatalogAccess {
            uri: self.uri.clone(),
            warehouse: self.warehouse.clone(),
            user: identity.user.clone(),
            http: self.http.clone(),
            storage: self.storage.clone(),
            credentials: self.credentials,
            storage_endpoint: self.storage_endpoint.clone(),
            recent: Arc::default(),
            footers: lru::new_footer_cache(memory),
            plans: lru::new_plan_cache(memory),
        };
        let catalog = UserCatalog::new(access, &token.access_token, token.latest.clone())?;
        let state = CatalogState::new(catalog, self.listing_ttl);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(memory.clone())
            .build_arc()?;
        // No object store with any reach: the engine's own file system is not the user's to
        // read, and the scans' label URL resolves to an empty store (bytes come from FileIO).
        let file = url::Url::parse("file://").expect("static URL");
        let _ = runtime.deregister_object_store(&file);
        let label = url::Url::parse(parquet::LABEL_URL).expect("static URL");
        runtime.register_object_store(&label, Arc::new(InMemory::new()));
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(self.target_partitions.max(1))
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(&self.warehouse, DEFAULT_SCHEMA);
        // A statement's scans are planned together, not a core's worth at a time: planning one
        // is mostly waiting for the catalog and the footers (DataFusion's default is the cores).
        config.options_mut().execution.planning_concurrency = PLANNING_CONCURRENCY;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        crate::memory::install_bounded_functions(&ctx, memory);
        ctx.register_catalog(&self.warehouse, Arc::new(WarehouseProvider::new(state)));
        // `datafusion.public`: session-local tables in memory, paid for out of the session's
        // memory share. Unqualified names resolve in the warehouse.
        ctx.register_catalog(SCRATCH_CATALOG, scratch_catalog(memory)?);
        Ok(ctx)
    }

    fn session_pool(&self, identity: &Identity) -> Arc<dyn MemoryPool> {
        self.memory.session_pool(&identity.quota_key())
    }
}

#[cfg(test)]
mod fake_catalog_tests;
