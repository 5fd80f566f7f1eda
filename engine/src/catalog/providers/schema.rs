//! DataFusion's view of one user's catalog: catalog = warehouse, schemas = top-level namespaces,
//! tables resolved lazily with the user's token.
//!
//! Visibility: a table is shown (SHOW TABLES, information_schema, metadata calls) only if
//! `loadTable` with the user's token succeeds. The probe *is* the load, so the providers it builds
//! are cached and the query that follows a listing costs no second round trip. Everything here
//! lives inside one (user, token fingerprint) context and expires after a short TTL.
//!
//! DataFusion asks for names through synchronous methods (`schema_names`, `table_names`,
//! `schema`, `register_*`). Those block the current worker with `block_in_place` while the
//! catalog answers: the engine runs on the multi-thread runtime, and iceberg-datafusion's own
//! DDL path does the same.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::TableType;
use futures::{StreamExt, stream};
use iceberg::arrow::arrow_schema_to_schema_auto_assign_ids;
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};
use tokio::runtime::{Handle, RuntimeFlavor};
use tracing::{debug, warn};

use super::stock::{Projected, iceberg_provider};
use super::table::UserTable;
use crate::catalog::client::errors::classify;
use crate::catalog::client::rest::UserCatalog;
use crate::error::EngineError;

/// How many loadTable probes run at once when a namespace is listed.
const PROBE_CONCURRENCY: usize = 8;

/// Names iceberg-datafusion gives its metadata tables (`t$snapshots`, `t$manifests`); they are
/// reachable by name but never listed.
pub fn is_metadata_name(name: &str) -> bool {
    name.contains('$')
}

/// The table names a user may see: listed by the catalog, not a metadata name, and loadable.
/// Sorted so listings are stable.
pub fn visible_names(listed: &[String], loadable: &HashMap<String, bool>) -> Vec<String> {
    let mut out: Vec<String> = listed
        .iter()
        .filter(|n| !is_metadata_name(n))
        .filter(|n| loadable.get(*n).copied().unwrap_or(false))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether an entry stamped at `at` is still usable.
pub fn fresh(at: Instant, ttl: Duration, now: Instant) -> bool {
    now.saturating_duration_since(at) < ttl
}

struct Stamped<T> {
    at: Instant,
    value: T,
}

/// Runs catalog I/O from a synchronous DataFusion callback.
fn block_on<F: Future>(fut: F) -> Result<F::Output, EngineError> {
    let handle = Handle::try_current()
        .map_err(|_| EngineError::Internal("catalog call outside the runtime".into()))?;
    if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
        return Err(EngineError::Internal(
            "catalog listing needs the multi-thread runtime".into(),
        ));
    }
    Ok(tokio::task::block_in_place(|| handle.block_on(fut)))
}

fn df_err(e: EngineError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// (namespace, table name).
type TableKey = (String, String);

/// Per (user, token) catalog state shared by the catalog and schema providers.
pub struct CatalogState {
    catalog: Arc<UserCatalog>,
    ttl: Duration,
    namespaces: Mutex<Option<Stamped<Vec<String>>>>,
    known_namespaces: Mutex<HashMap<String, Instant>>,
    tables: Mutex<HashMap<String, Stamped<Vec<String>>>>,
    providers: Mutex<HashMap<TableKey, Stamped<Arc<dyn TableProvider>>>>,
}

impl CatalogState {
    pub fn new(catalog: UserCatalog, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            catalog: Arc::new(catalog),
            ttl,
            namespaces: Mutex::default(),
            known_namespaces: Mutex::default(),
            tables: Mutex::default(),
            providers: Mutex::default(),
        })
    }

    pub fn warehouse(&self) -> &str {
        self.catalog.warehouse()
    }

    fn subject_table(&self, ns: &str, name: &str) -> String {
        format!("table {}.{ns}.{name}", self.warehouse())
    }

    /// Top-level namespaces (nested ones have no SQL name in a three-part reference).
    pub async fn list_namespaces(&self) -> Result<Vec<String>, EngineError> {
        let listed = self
            .catalog
            .list_namespaces(None)
            .await
            .map_err(|e| classify(&e, &format!("namespaces of {}", self.warehouse())))?;
        let mut names: Vec<String> = listed
            .iter()
            .filter(|ns| ns.len() == 1)
            .map(|ns| ns.join("."))
            .collect();
        names.sort();
        let now = Instant::now();
        if let Ok(mut known) = self.known_namespaces.lock() {
            for n in &names {
                known.insert(n.clone(), now);
            }
        }
        if let Ok(mut slot) = self.namespaces.lock() {
            *slot = Some(Stamped {
                at: now,
                value: names.clone(),
            });
        }
        Ok(names)
    }

    fn namespaces_blocking(&self) -> Vec<String> {
        if let Some(names) = self.namespaces.lock().ok().and_then(|s| {
            s.as_ref()
                .filter(|s| fresh(s.at, self.ttl, Instant::now()))
                .map(|s| s.value.clone())
        }) {
            return names;
        }
        match block_on(self.list_namespaces()) {
            Ok(Ok(names)) => names,
            Ok(Err(e)) | Err(e) => {
                warn!(event = "catalog_list_failed", what = "namespaces", code = e.label(), error = %e);
                Vec::new()
            }
        }
    }

    /// Whether the namespace exists: `Some(false)` only on the catalog's definite "no such
    /// namespace"; `None` when the catalog could not say (down, denied), so the caller can go on
    /// to the table lookup, whose error then carries the real status (UNAVAILABLE, ...).
    fn namespace_exists_blocking(&self, name: &str) -> Option<bool> {
        let now = Instant::now();
        if self
            .known_namespaces
            .lock()
            .ok()
            .and_then(|k| k.get(name).copied())
            .is_some_and(|at| fresh(at, self.ttl, now))
        {
            return Some(true);
        }
        let ident = NamespaceIdent::new(name.to_owned());
        match block_on(self.catalog.namespace_exists(&ident)) {
            Ok(Ok(true)) => {
                if let Ok(mut k) = self.known_namespaces.lock() {
                    k.insert(name.to_owned(), now);
                }
                Some(true)
            }
            Ok(Ok(false)) => Some(false),
            Ok(Err(e)) => {
                let e = classify(&e, &format!("namespace {}.{name}", self.warehouse()));
                debug!(event = "catalog_namespace_check", code = e.label(), error = %e);
                match e {
                    EngineError::NotFound(_) => Some(false),
                    _ => None,
                }
            }
            Err(e) => {
                warn!(event = "catalog_namespace_check", code = e.label(), error = %e);
                None
            }
        }
    }

    fn cached_provider(&self, ns: &str, name: &str) -> Option<Arc<dyn TableProvider>> {
        let now = Instant::now();
        let map = self.providers.lock().ok()?;
        map.get(&(ns.to_owned(), name.to_owned()))
            .filter(|s| fresh(s.at, self.ttl, now))
            .map(|s| s.value.clone())
    }

    /// Loads one table as the user. `Ok(None)`: the catalog has no such table (404).
    /// Errors carry the catalog's answer (403 → permission denied, 401, 5xx, ...).
    /// `name` may name one of iceberg-datafusion's metadata tables (`a$snapshots`).
    pub async fn load_provider(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>, EngineError> {
        if let Some(p) = self.cached_provider(ns, name) {
            return Ok(Some(p));
        }
        let table: Option<Arc<dyn TableProvider>> = if is_metadata_name(name) {
            let base = name.split_once('$').map(|(b, _)| b).unwrap_or(name);
            let ns_ident = NamespaceIdent::new(ns.to_owned());
            let subject = self.subject_table(ns, base);
            iceberg_provider(self.catalog.clone(), ns_ident, name, &subject)
                .await?
                .map(|p| Arc::new(Projected::new(p, &subject)) as Arc<dyn TableProvider>)
        } else {
            let subject = self.subject_table(ns, name);
            let ident = TableIdent::new(NamespaceIdent::new(ns.to_owned()), name.to_owned());
            match self.catalog.load_table(&ident).await {
                Ok(t) => Some(Arc::new(UserTable::new(self.catalog.clone(), &t, subject)?)),
                Err(e) => match classify(&e, &subject) {
                    EngineError::NotFound(_) => None,
                    e => return Err(e),
                },
            }
        };
        if let Some(t) = &table
            && let Ok(mut map) = self.providers.lock()
        {
            map.insert(
                (ns.to_owned(), name.to_owned()),
                Stamped {
                    at: Instant::now(),
                    value: t.clone(),
                },
            );
        }
        Ok(table)
    }

    /// The namespace's tables this user can load, probing each listed name.
    pub async fn visible_tables(&self, ns: &str) -> Result<Vec<String>, EngineError> {
        let ident = NamespaceIdent::new(ns.to_owned());
        let listed: Vec<String> = self
            .catalog
            .list_tables(&ident)
            .await
            .map_err(|e| classify(&e, &format!("tables of {}.{ns}", self.warehouse())))?
            .into_iter()
            .map(|t| t.name().to_owned())
            .filter(|n| !is_metadata_name(n))
            .collect();
        let outcomes: Vec<(String, bool)> = stream::iter(listed.clone())
            .map(|name| async move {
                let ok = match self.load_provider(ns, &name).await {
                    Ok(Some(_)) => true,
                    Ok(None) => false,
                    Err(e) => {
                        // Hidden, not an error: the listing shows what the user may load.
                        debug!(event = "catalog_table_hidden", namespace = ns, table = %name, code = e.label());
                        false
                    }
                };
                (name, ok)
            })
            .buffer_unordered(PROBE_CONCURRENCY)
            .collect()
            .await;
        let names = visible_names(&listed, &outcomes.into_iter().collect());
        if let Ok(mut map) = self.tables.lock() {
            map.insert(
                ns.to_owned(),
                Stamped {
                    at: Instant::now(),
                    value: names.clone(),
                },
            );
        }
        Ok(names)
    }

    fn visible_tables_blocking(&self, ns: &str) -> Vec<String> {
        let now = Instant::now();
        if let Some(names) = self.tables.lock().ok().and_then(|m| {
            m.get(ns)
                .filter(|s| fresh(s.at, self.ttl, now))
                .map(|s| s.value.clone())
        }) {
            return names;
        }
        match block_on(self.visible_tables(ns)) {
            Ok(Ok(names)) => names,
            Ok(Err(e)) | Err(e) => {
                warn!(event = "catalog_list_failed", what = "tables", namespace = ns, code = e.label(), error = %e);
                Vec::new()
            }
        }
    }

    /// Forgets what DDL in `ns` may have changed.
    fn invalidate(&self, ns: &str, table: Option<&str>) {
        if let Ok(mut m) = self.tables.lock() {
            m.remove(ns);
        }
        if let (Some(t), Ok(mut m)) = (table, self.providers.lock()) {
            m.retain(|(n, name), _| {
                !(n == ns && (name == t || name.starts_with(&format!("{t}$"))))
            });
        }
        if let Ok(mut slot) = self.namespaces.lock() {
            *slot = None;
        }
    }
}

/// The warehouse as a DataFusion catalog.
pub struct WarehouseProvider {
    state: Arc<CatalogState>,
}

impl WarehouseProvider {
    /// Runs a namespace call of the user's catalog from DataFusion's synchronous DDL hooks,
    /// naming the namespace in any error.
    fn namespace_call<T>(
        &self,
        name: &str,
        call: impl Future<Output = iceberg::Result<T>>,
    ) -> DFResult<T> {
        block_on(call).map_err(df_err)?.map_err(|e| {
            df_err(classify(
                &e,
                &format!("namespace {}.{name}", self.state.warehouse()),
            ))
        })
    }

    pub fn new(state: Arc<CatalogState>) -> Self {
        Self { state }
    }
}

impl std::fmt::Debug for WarehouseProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarehouseProvider")
            .field("warehouse", &self.state.warehouse())
            .finish()
    }
}

impl CatalogProvider for WarehouseProvider {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema_names(&self) -> Vec<String> {
        self.state.namespaces_blocking()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if self.state.namespace_exists_blocking(name) == Some(false) {
            return None;
        }
        Some(Arc::new(NamespaceProvider {
            state: self.state.clone(),
            namespace: name.to_owned(),
        }))
    }

    /// CREATE SCHEMA: creates the namespace in the catalog, as the user.
    fn register_schema(
        &self,
        name: &str,
        _schema: Arc<dyn SchemaProvider>,
    ) -> DFResult<Option<Arc<dyn SchemaProvider>>> {
        let ident = NamespaceIdent::new(name.to_owned());
        self.namespace_call(
            name,
            self.state.catalog.create_namespace(&ident, HashMap::new()),
        )?;
        self.state.invalidate(name, None);
        Ok(None)
    }

    /// DROP SCHEMA (without CASCADE: the catalog refuses non-empty namespaces).
    fn deregister_schema(
        &self,
        name: &str,
        cascade: bool,
    ) -> DFResult<Option<Arc<dyn SchemaProvider>>> {
        if cascade {
            return Err(df_err(EngineError::Unimplemented(
                "DROP SCHEMA ... CASCADE is not supported; drop the tables first".into(),
            )));
        }
        let existing = self.schema(name);
        let ident = NamespaceIdent::new(name.to_owned());
        self.namespace_call(name, self.state.catalog.drop_namespace(&ident))?;
        if let Ok(mut k) = self.state.known_namespaces.lock() {
            k.remove(name);
        }
        self.state.invalidate(name, None);
        Ok(existing)
    }
}

/// One namespace as a DataFusion schema.
pub struct NamespaceProvider {
    state: Arc<CatalogState>,
    namespace: String,
}

impl std::fmt::Debug for NamespaceProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespaceProvider")
            .field("namespace", &self.namespace)
            .finish()
    }
}

#[async_trait]
impl SchemaProvider for NamespaceProvider {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        self.state.visible_tables_blocking(&self.namespace)
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        self.state
            .load_provider(&self.namespace, name)
            .await
            .map_err(df_err)
    }

    /// Listed names were just proven loadable; answering without a load keeps
    /// information_schema.tables to the listing's own probes.
    async fn table_type(&self, name: &str) -> DFResult<Option<TableType>> {
        if self.state.cached_provider(&self.namespace, name).is_some() {
            return Ok(Some(TableType::Base));
        }
        Ok(self.table(name).await?.map(|t| t.table_type()))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.state.cached_provider(&self.namespace, name).is_some()
            || self
                .state
                .visible_tables_blocking(&self.namespace)
                .iter()
                .any(|n| n == name)
    }

    /// CREATE TABLE: creates the Iceberg table with the given columns as the user. Rows never
    /// come this way: the engine runs `CREATE TABLE … AS SELECT` as an empty create and an
    /// `INSERT` in the session's own context (`flight/updates.rs`), so they are written under
    /// the session's memory share and deadline, by the table's own sink.
    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> DFResult<Option<Arc<dyn TableProvider>>> {
        // A view would be a plan to run here, outside any pool and as no Iceberg view: the
        // catalog gets no views from this engine.
        if table.table_type() == TableType::View {
            return Err(DataFusionError::NotImplemented(format!(
                "CREATE VIEW in {}: the engine does not create Iceberg views; create it in \
                 datafusion.public (session-local) instead",
                self.state.warehouse()
            )));
        }
        let empty = table
            .as_any()
            .downcast_ref::<datafusion::datasource::MemTable>()
            .is_some_and(|m| {
                m.batches.iter().all(|p| {
                    p.try_read()
                        .is_ok_and(|b| b.iter().all(|b| b.num_rows() == 0))
                })
            });
        if !empty {
            return Err(DataFusionError::NotImplemented(format!(
                "registering a {:?} table with rows in {}; create it, then INSERT",
                table.table_type(),
                self.state.warehouse()
            )));
        }
        let subject = self.state.subject_table(&self.namespace, &name);
        let schema = arrow_schema_to_schema_auto_assign_ids(table.schema().as_ref())
            .map_err(|e| df_err(classify(&e, &subject)))?;
        let ns = NamespaceIdent::new(self.namespace.clone());
        let creation = TableCreation::builder()
            .name(name.clone())
            .schema(schema)
            .build();
        let catalog = self.state.catalog.clone();
        let created =
            block_on(async move { catalog.create_table(&ns, creation).await }).map_err(df_err)?;
        self.state.invalidate(&self.namespace, Some(&name));
        created.map_err(|e| df_err(classify(&e, &subject)))?;
        Ok(None)
    }

    /// DROP TABLE: drops it in the catalog (no purge), as the user.
    fn deregister_table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        let ident = TableIdent::new(NamespaceIdent::new(self.namespace.clone()), name.to_owned());
        let subject = self.state.subject_table(&self.namespace, name);
        let previous = self.state.cached_provider(&self.namespace, name);
        block_on(self.state.catalog.drop_table(&ident))
            .map_err(df_err)?
            .map_err(|e| df_err(classify(&e, &subject)))?;
        self.state.invalidate(&self.namespace, Some(name));
        Ok(previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_loadable_non_metadata_names_are_visible() {
        let listed = names(&["c", "a", "b", "a$snapshots", "b$manifests", "gone"]);
        let loadable = HashMap::from([
            ("a".to_owned(), true),
            ("b".to_owned(), true),
            ("c".to_owned(), false),
            ("a$snapshots".to_owned(), true),
        ]);
        assert_eq!(visible_names(&listed, &loadable), names(&["a", "b"]));
        assert!(visible_names(&listed, &HashMap::new()).is_empty());
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(30);
        assert!(fresh(t0, ttl, t0));
        assert!(fresh(t0, ttl, t0 + Duration::from_secs(29)));
        assert!(!fresh(t0, ttl, t0 + Duration::from_secs(30)));
    }

    #[test]
    fn metadata_names_are_recognised() {
        assert!(is_metadata_name("a$snapshots"));
        assert!(!is_metadata_name("orders"));
    }
}
