//! One Iceberg table as the user sees it: reads plan on a freshly loaded table (fresh metadata
//! and freshly vended credentials for every query) and scan in parallel; writes go through
//! iceberg-datafusion's writer and commit with the user's token.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use futures::{FutureExt, TryStreamExt};
use iceberg::TableIdent;
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::expr::Predicate;
use iceberg::scan::FileScanTask;
use iceberg::spec::{Schema as IcebergSchema, TableMetadata, TableMetadataRef};
use iceberg::table::Table;
use iceberg_datafusion::physical_plan::convert_filters_to_predicate;

use super::stock::{Classified, iceberg_provider};
use super::time_travel::{AsOf, resolve};
use crate::catalog::cache::lru::{plan_bytes, plan_key};
use crate::catalog::client::credentials::{Renew, Vended, VendedIo};
use crate::catalog::client::errors::{classified, classify};
use crate::catalog::client::rest::UserCatalog;
use crate::catalog::scan::parallel::ParallelIcebergScan;
use crate::catalog::scan::parquet::{datafusion_can_read, file_statistics, parquet_exec};
use crate::error::EngineError;

fn arrow_schema(schema: &IcebergSchema, subject: &str) -> Result<SchemaRef, EngineError> {
    schema_to_arrow_schema(schema)
        .map(Arc::new)
        .map_err(|e| EngineError::Internal(format!("{subject}: {}", e.message())))
}

fn df_err(e: EngineError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Whether a load may be one the session made a moment ago (`recent`), or must be new (fresh
/// keys: a renewal).
#[derive(Clone, Copy)]
enum Load {
    RecentOk,
    New,
}

/// The table as loaded (now, or a moment ago by this session), and the keys vended with it
/// (when they run out, by the catalog's word or the assumed lifetime counted from before the
/// request).
async fn load_vended(
    catalog: &UserCatalog,
    ident: &TableIdent,
    subject: &str,
    load: Load,
) -> Result<(Table, Vended), EngineError> {
    let (table, vended_at) = match load {
        Load::RecentOk => catalog.load_vended_table(ident).await,
        Load::New => catalog.reload_table(ident).await,
    }
    .map_err(|e| classify(&e, subject))?;
    let vended = Vended {
        file_io: table.file_io().clone(),
        expires_at: catalog
            .credential_policy()
            .expires_at(table.file_io().config().props(), vended_at),
    };
    Ok((table, vended))
}

#[derive(Debug)]
pub struct UserTable {
    catalog: Arc<UserCatalog>,
    ident: TableIdent,
    /// `table lake.demo.a`, for errors.
    subject: String,
    /// The metadata as loaded at planning: snapshots, refs and history to pin a version with,
    /// and what `SHOW CREATE TABLE` shows.
    metadata: TableMetadataRef,
    schema: SchemaRef,
    /// The snapshot a time-travel reference pinned; `None` reads the current one.
    pinned: Option<(AsOf, i64)>,
}

impl UserTable {
    /// A provider for `table` as just loaded, reading its current snapshot.
    pub fn new(
        catalog: Arc<UserCatalog>,
        table: &Table,
        subject: String,
    ) -> Result<Self, EngineError> {
        let metadata = table.metadata_ref();
        let schema = arrow_schema(metadata.current_schema(), &subject)?;
        Ok(Self {
            catalog,
            ident: table.identifier().clone(),
            subject,
            metadata,
            schema,
            pinned: None,
        })
    }

    /// The same table pinned to the snapshot `as_of` names, with that snapshot's schema.
    pub fn at(&self, as_of: AsOf) -> Result<Self, EngineError> {
        let metadata = &self.metadata;
        let id = resolve(metadata, &as_of, &self.subject)?;
        let snapshot = metadata.snapshot_by_id(id).ok_or_else(|| {
            EngineError::NotFound(format!("{} has no snapshot {id}", self.subject))
        })?;
        let schema = snapshot
            .schema(metadata)
            .map_err(|e| EngineError::Internal(format!("{}: {}", self.subject, e.message())))?;
        Ok(Self {
            catalog: self.catalog.clone(),
            ident: self.ident.clone(),
            subject: self.subject.clone(),
            metadata: self.metadata.clone(),
            schema: arrow_schema(&schema, &self.subject)?,
            pinned: Some((as_of, id)),
        })
    }

    pub fn metadata(&self) -> &TableMetadata {
        &self.metadata
    }

    #[cfg(test)]
    pub fn snapshot_id(&self) -> Option<i64> {
        self.pinned.as_ref().map(|(_, id)| *id)
    }

    /// Fresh keys for this table: loadTable again, as the user, with the session's token as it
    /// is now (the scan may have outlived the one it started with).
    fn renewal(&self) -> Renew {
        let catalog = self.catalog.clone();
        let ident = self.ident.clone();
        let subject = self.subject.clone();
        Arc::new(move || {
            let (catalog, ident, subject) = (catalog.clone(), ident.clone(), subject.clone());
            async move {
                let catalog = catalog.current().await?;
                Ok(load_vended(&catalog, &ident, &subject, Load::New).await?.1)
            }
            .boxed()
        })
    }

    /// The files the snapshot's manifests list for these columns and filter: read once per
    /// context and kept (`lru`), since the loadTable just made with the user's token named this
    /// very snapshot and manifests never change.
    async fn planned_files(
        &self,
        table: &Table,
        snapshot_id: i64,
        columns: Option<Vec<String>>,
        predicate: Option<Predicate>,
    ) -> DFResult<Vec<FileScanTask>> {
        let key = table.metadata_location().map(|location| {
            plan_key(
                location,
                snapshot_id,
                columns.as_deref(),
                predicate.as_ref(),
            )
        });
        if let Some(planned) = key.as_deref().and_then(|k| self.catalog.plans().get(k)) {
            return Ok(planned.as_ref().clone());
        }
        let failed = |e: iceberg::Error| df_err(classify(&e, &self.subject));
        let mut builder = table.scan().snapshot_id(snapshot_id);
        builder = match columns {
            Some(c) => builder.select(c),
            None => builder.select_all(),
        };
        if let Some(predicate) = predicate {
            builder = builder.with_filter(predicate);
        }
        let planned: Vec<FileScanTask> = builder
            .build()
            .map_err(failed)?
            .plan_files()
            .await
            .map_err(failed)?
            .try_collect()
            .await
            .map_err(failed)?;
        if let Some(k) = key {
            let bytes = plan_bytes(&planned);
            self.catalog
                .plans()
                .put(k, Arc::new(planned.clone()), bytes);
        }
        Ok(planned)
    }

    fn display_name(&self) -> String {
        self.subject
            .strip_prefix("table ")
            .unwrap_or(&self.subject)
            .to_owned()
    }
}

#[async_trait]
impl TableProvider for UserTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        // Inexact: iceberg prunes files, row groups and pages with what it can translate;
        // DataFusion still filters every row.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        // Loaded per query: the latest snapshot and credentials vended now for this user (or a
        // moment ago, for this statement's planning or another scan of it: `recent`), with the
        // session's token as it is now: a provider kept in a session view outlives the context
        // (and the token) it was made in.
        let catalog = self.catalog.current().await.map_err(df_err)?;
        let (table, first) = load_vended(&catalog, &self.ident, &self.subject, Load::RecentOk)
            .await
            .map_err(df_err)?;
        let snapshot_id = match &self.pinned {
            Some((_, id)) => {
                if table.metadata().snapshot_by_id(*id).is_none() {
                    return Err(df_err(EngineError::NotFound(format!(
                        "{} no longer has snapshot {id} (expired since the query was planned)",
                        self.subject
                    ))));
                }
                Some(*id)
            }
            None => table.metadata().current_snapshot().map(|s| s.snapshot_id()),
        };
        let output = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let tasks: Vec<FileScanTask> = match snapshot_id {
            // A table with no snapshot has no files.
            None => Vec::new(),
            Some(id) => {
                let columns =
                    projection.map(|_| output.fields().iter().map(|f| f.name().clone()).collect());
                self.planned_files(&table, id, columns, convert_filters_to_predicate(filters))
                    .await?
            }
        };
        // DataFusion's Parquet reader where it reads the same rows as iceberg's (plain Parquet,
        // no deletes, schema never evolved); iceberg-rust's reader for the rest.
        let schemas = table.metadata().schemas_iter().len();
        let (plain, special): (Vec<FileScanTask>, Vec<FileScanTask>) = tasks
            .into_iter()
            .partition(|t| datafusion_can_read(t, schemas));
        let partitions = state.config().target_partitions();
        let io = Arc::new(VendedIo::new(
            self.subject.clone(),
            self.catalog.credential_policy(),
            first,
            self.renewal(),
        ));
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !plain.is_empty() {
            let footers = self.catalog.footers();
            let statistics = file_statistics(
                &io,
                &footers,
                &plain,
                &self.schema,
                state.config_options().execution.parquet.metadata_size_hint,
            )
            .await
            .map_err(|e| DataFusionError::ParquetError(Box::new(e)))?;
            inputs.push(parquet_exec(
                state,
                io.clone(),
                footers,
                statistics,
                plain,
                self.schema.clone(),
                projection,
                filters,
                limit,
                partitions,
            )?);
        }
        if !special.is_empty() || inputs.is_empty() {
            inputs.push(Arc::new(ParallelIcebergScan::new(
                self.display_name(),
                snapshot_id,
                io,
                special,
                output,
                limit,
                partitions,
            )));
        }
        UnionExec::try_new(inputs)
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        if let Some((as_of, _)) = &self.pinned {
            return Err(df_err(EngineError::InvalidArgument(format!(
                "cannot write to {}{as_of}: a past version is read-only",
                self.display_name()
            ))));
        }
        let catalog = self.catalog.current().await.map_err(df_err)?;
        let writer = iceberg_provider(
            catalog,
            self.ident.namespace().clone(),
            self.ident.name(),
            &self.subject,
        )
        .await
        .map_err(df_err)?
        .ok_or_else(|| df_err(EngineError::NotFound(format!("{} is gone", self.subject))))?;
        let plan = writer
            .insert_into(state, input, insert_op)
            .await
            .map_err(|e| classified(e, &self.subject))?;
        Ok(Classified::wrap(plan, &self.subject))
    }
}
