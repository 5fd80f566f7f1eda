//! iceberg-datafusion's stock providers, loaded through the user's catalog one table at a time:
//! the writer behind `INSERT` and CTAS, and the `t$snapshots`-style metadata tables.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProvider, Session};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DFResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::TryStreamExt;
use iceberg::table::Table;
use iceberg::{
    Catalog, Namespace, NamespaceIdent, Result as IcebergResult, TableCommit, TableCreation,
    TableIdent,
};
use iceberg_datafusion::IcebergCatalogProvider;

use crate::catalog::client::errors::{classified, classify};
use crate::catalog::client::rest::UserCatalog;
use crate::error::EngineError;

/// iceberg-datafusion's own provider for `name` (a table, or one of its `t$…` metadata tables),
/// loaded through a catalog that exposes only that table. `Ok(None)`: no such table.
pub async fn iceberg_provider(
    catalog: Arc<UserCatalog>,
    namespace: NamespaceIdent,
    name: &str,
    subject: &str,
) -> Result<Option<Arc<dyn TableProvider>>, EngineError> {
    let base = name.split_once('$').map(|(b, _)| b).unwrap_or(name);
    let ns = namespace.join(".");
    let scoped = Arc::new(ScopedCatalog {
        inner: catalog,
        namespace,
        table: base.to_owned(),
    });
    // The stock provider, given a catalog that exposes exactly this one table, loads just it:
    // iceberg-datafusion's catalog-backed table (INSERT appends and commits through the user's
    // catalog) without its load-everything behaviour.
    let provider = match IcebergCatalogProvider::try_new(scoped).await {
        Ok(p) => p,
        Err(e) => {
            return match classify(&e, subject) {
                EngineError::NotFound(_) => Ok(None),
                e => Err(e),
            };
        }
    };
    let Some(schema) = provider.schema(&ns) else {
        return Ok(None);
    };
    schema
        .table(name)
        .await
        .map_err(|e| EngineError::from(classified(e, subject)))
}

/// The user's catalog narrowed to one table, so `IcebergCatalogProvider::try_new` (which lists
/// everything and loads every table it lists) loads exactly that one. Every call that reaches the
/// catalog goes to the user's own client.
struct ScopedCatalog {
    inner: Arc<UserCatalog>,
    namespace: NamespaceIdent,
    table: String,
}

impl std::fmt::Debug for ScopedCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedCatalog")
            .field("namespace", &self.namespace)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Catalog for ScopedCatalog {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> IcebergResult<Vec<NamespaceIdent>> {
        Ok(match parent {
            None => vec![self.namespace.clone()],
            Some(_) => Vec::new(),
        })
    }
    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> IcebergResult<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }
    async fn get_namespace(&self, namespace: &NamespaceIdent) -> IcebergResult<Namespace> {
        self.inner.get_namespace(namespace).await
    }
    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> IcebergResult<bool> {
        self.inner.namespace_exists(namespace).await
    }
    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> IcebergResult<()> {
        self.inner.update_namespace(namespace, properties).await
    }
    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> IcebergResult<()> {
        self.inner.drop_namespace(namespace).await
    }
    async fn list_tables(&self, namespace: &NamespaceIdent) -> IcebergResult<Vec<TableIdent>> {
        Ok(if *namespace == self.namespace {
            vec![TableIdent::new(self.namespace.clone(), self.table.clone())]
        } else {
            Vec::new()
        })
    }
    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> IcebergResult<Table> {
        self.inner.create_table(namespace, creation).await
    }
    async fn load_table(&self, table: &TableIdent) -> IcebergResult<Table> {
        self.inner.load_table(table).await
    }
    async fn drop_table(&self, table: &TableIdent) -> IcebergResult<()> {
        self.inner.drop_table(table).await
    }
    async fn purge_table(&self, table: &TableIdent) -> IcebergResult<()> {
        self.inner.purge_table(table).await
    }
    async fn table_exists(&self, table: &TableIdent) -> IcebergResult<bool> {
        self.inner.table_exists(table).await
    }
    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> IcebergResult<()> {
        self.inner.rename_table(src, dest).await
    }
    async fn register_table(
        &self,
        table: &TableIdent,
        metadata_location: String,
    ) -> IcebergResult<Table> {
        self.inner.register_table(table, metadata_location).await
    }
    async fn update_table(&self, commit: TableCommit) -> IcebergResult<Table> {
        self.inner.update_table(commit).await
    }
}

/// A provider whose scan ignores the projection (iceberg-datafusion 0.10.1's `t$snapshots` and
/// `t$manifests` return every column), made to return exactly the projected columns: Flight
/// clients check every batch against the schema announced at planning.
#[derive(Debug)]
pub struct Projected {
    inner: Arc<dyn TableProvider>,
    subject: String,
}

impl Projected {
    pub fn new(inner: Arc<dyn TableProvider>, subject: &str) -> Self {
        Self {
            inner,
            subject: subject.to_owned(),
        }
    }
}

#[async_trait]
impl TableProvider for Projected {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let all = self
            .inner
            .scan(state, None, filters, limit)
            .await
            .map_err(|e| classified(e, &self.subject))?;
        let all = Classified::wrap(all, &self.subject);
        let Some(projection) = projection else {
            return Ok(all);
        };
        let schema = all.schema();
        let columns = projection
            .iter()
            .map(|&i| {
                let name = schema.field(i).name().clone();
                let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(&name, i));
                (column, name)
            })
            .collect::<Vec<_>>();
        Ok(Arc::new(ProjectionExec::try_new(columns, all)?))
    }
}

/// A stock plan (the iceberg writer, a metadata table's scan) whose errors are classified as
/// they leave it: iceberg-datafusion returns iceberg's own errors inside DataFusion's.
#[derive(Debug)]
pub struct Classified {
    inner: Arc<dyn ExecutionPlan>,
    subject: String,
}

impl Classified {
    pub fn wrap(inner: Arc<dyn ExecutionPlan>, subject: &str) -> Arc<dyn ExecutionPlan> {
        Arc::new(Self {
            inner,
            subject: subject.to_owned(),
        })
    }
}

impl DisplayAs for Classified {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "Classified: {}", self.subject)
    }
}

impl ExecutionPlan for Classified {
    fn name(&self) -> &str {
        "Classified"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    /// The stock plan is this node's one child: a pass-through of its partitions and order.
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.inner]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(inner), true) => Ok(Self::wrap(inner, &self.subject)),
            _ => Err(datafusion::error::DataFusionError::Internal(
                "Classified has exactly one child".into(),
            )),
        }
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    /// Nothing to gain from more partitions: without this, DataFusion spreads the stock plan's
    /// single partition round-robin before this node.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn partition_statistics(
        &self,
        partition: Option<usize>,
    ) -> DFResult<datafusion::common::Statistics> {
        self.inner.partition_statistics(partition)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DFResult<SendableRecordBatchStream> {
        let subject = self.subject.clone();
        let stream = self
            .inner
            .execute(partition, context)
            .map_err(|e| classified(e, &subject))?;
        let schema = stream.schema();
        let subject = self.subject.clone();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream.map_err(move |e| classified(e, &subject)),
        )))
    }
}
