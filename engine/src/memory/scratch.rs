//! `datafusion.public`: the session's own in-memory tables, counted against its memory pool.
//!
//! DataFusion's `MemTable` holds its batches outside any memory pool, so a session could fill the
//! pod with `CREATE TABLE datafusion.public.t AS …` or `INSERT INTO` it. Here every table in the
//! scratch schema holds a reservation for the bytes it keeps, taken from the session's pool
//! (and so from the process's shared pool) before the rows are kept; a table that would not fit is
//! refused with RESOURCE_EXHAUSTED and the rows are not kept. Dropping the table releases it.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, Session};
use datafusion::common::{Constraints, SchemaExt};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use futures::StreamExt;

/// Bytes a set of batches keeps alive.
fn size_of(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::get_array_memory_size).sum()
}

/// The scratch schema: DataFusion's in-memory schema, with each table wrapped in `ScratchTable`.
#[derive(Debug)]
pub struct ScratchSchema {
    inner: MemorySchemaProvider,
    pool: Arc<dyn MemoryPool>,
}

impl ScratchSchema {
    pub fn new(pool: Arc<dyn MemoryPool>) -> Self {
        Self {
            inner: MemorySchemaProvider::new(),
            pool,
        }
    }
}

#[async_trait]
impl SchemaProvider for ScratchSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }

    /// CREATE TABLE [AS SELECT] and CREATE VIEW in `datafusion.public`. A view keeps only its
    /// plan; a table's rows are reserved before they are kept.
    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> DFResult<Option<Arc<dyn TableProvider>>> {
        let Some(mem) = table.as_any().downcast_ref::<MemTable>() else {
            if table.table_type() == TableType::View {
                return self.inner.register_table(name, table);
            }
            return Err(DataFusionError::NotImplemented(format!(
                "datafusion.public holds in-memory tables and views only, not {name}"
            )));
        };
        let partitions = mem
            .batches
            .iter()
            .map(|p| {
                p.try_read().map(|b| b.clone()).map_err(|_| {
                    DataFusionError::Execution(format!("table {name} is being written"))
                })
            })
            .collect::<DFResult<Vec<_>>>()?;
        let reservation = MemoryConsumer::new(format!("session table datafusion.public.{name}"))
            .register(&self.pool);
        reservation.try_grow(partitions.iter().map(|b| size_of(b)).sum())?;
        // What DataFusion keeps with the table: its constraints (primary keys make the
        // functional dependencies GROUP BY relies on) and its column DEFAULTs.
        let defaults = mem
            .schema()
            .fields()
            .iter()
            .filter_map(|f| {
                mem.get_column_default(f.name())
                    .map(|d| (f.name().clone(), d.clone()))
            })
            .collect();
        let mut kept = MemTable::try_new(mem.schema(), partitions)?.with_column_defaults(defaults);
        if let Some(constraints) = mem.constraints() {
            kept = kept.with_constraints(constraints.clone());
        }
        let wrapped = ScratchTable {
            inner: Arc::new(kept),
            reservation: Arc::new(reservation),
        };
        self.inner.register_table(name, Arc::new(wrapped))
    }

    fn deregister_table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        self.inner.deregister_table(name)
    }
}

/// An in-memory table whose rows are paid for out of the session's pool.
pub struct ScratchTable {
    inner: Arc<MemTable>,
    reservation: Arc<MemoryReservation>,
}

impl fmt::Debug for ScratchTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScratchTable").finish_non_exhaustive()
    }
}

#[async_trait]
impl TableProvider for ScratchTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.inner.get_column_default(column)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        self.inner.scan(state, projection, filters, limit).await
    }

    /// DELETE: DataFusion's in-memory delete, then the table's reservation shrinks to what it
    /// still keeps.
    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let before = self.snapshot().await;
        let done = self.inner.delete_from(state, filters).await?;
        self.settle(before).await?;
        Ok(done)
    }

    /// UPDATE: DataFusion's in-memory update; if the updated rows no longer fit the session's
    /// share, the table gets its old rows back and the update is refused.
    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let before = self.snapshot().await;
        let done = self.inner.update(state, assignments, filters).await?;
        self.settle(before).await?;
        Ok(done)
    }

    /// INSERT INTO: the new rows are reserved batch by batch as they arrive and appended only
    /// once all of them fit, so a refused insert leaves the table as it was.
    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        self.schema()
            .logically_equivalent_names_and_types(&input.schema())?;
        if insert_op != InsertOp::Append {
            return Err(DataFusionError::NotImplemented(format!(
                "{insert_op} into a session table"
            )));
        }
        let sink = ReservingSink {
            schema: self.inner.schema(),
            table: self.inner.clone(),
            reservation: self.reservation.clone(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

impl ScratchTable {
    /// The table's batches (shared arrays, not copies), to put back if a change does not fit.
    async fn snapshot(&self) -> Vec<Vec<RecordBatch>> {
        let mut out = Vec::with_capacity(self.inner.batches.len());
        for partition in &self.inner.batches {
            out.push(partition.read().await.clone());
        }
        out
    }

    /// Makes the reservation what the table now keeps, or restores `before` when that does not
    /// fit the session's share.
    async fn settle(&self, before: Vec<Vec<RecordBatch>>) -> DFResult<()> {
        let mut now = 0;
        for partition in &self.inner.batches {
            now += size_of(&partition.read().await);
        }
        let held = self.reservation.size();
        if now <= held {
            self.reservation.shrink(held - now);
            return Ok(());
        }
        if let Err(e) = self.reservation.try_grow(now - held) {
            for (partition, old) in self.inner.batches.iter().zip(before) {
                *partition.write().await = old;
            }
            return Err(e);
        }
        Ok(())
    }
}

struct ReservingSink {
    schema: SchemaRef,
    table: Arc<MemTable>,
    reservation: Arc<MemoryReservation>,
}

impl fmt::Debug for ReservingSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReservingSink")
    }
}

impl DisplayAs for ReservingSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionTableSink")
    }
}

#[async_trait]
impl DataSink for ReservingSink {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> DFResult<u64> {
        let pending = self.reservation.new_empty();
        let mut batches = Vec::new();
        let mut rows = 0u64;
        while let Some(batch) = data.next().await {
            let batch = batch?;
            pending.try_grow(batch.get_array_memory_size())?;
            rows += batch.num_rows() as u64;
            batches.push(batch);
        }
        let Some(partition) = self.table.batches.first() else {
            return Err(DataFusionError::Execution(
                "session table has no partition".into(),
            ));
        };
        partition.write().await.extend(batches);
        self.reservation.grow(pending.size());
        pending.free();
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::pool::{SessionPool, shared_pool};
    use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
    use datafusion::prelude::SessionContext;

    fn context(limit: usize) -> (SessionContext, Arc<dyn MemoryPool>) {
        let shared = shared_pool(64 << 20);
        let pool: Arc<dyn MemoryPool> = SessionPool::new(shared.clone(), limit);
        let ctx = SessionContext::new();
        let catalog = MemoryCatalogProvider::new();
        catalog
            .register_schema("public", Arc::new(ScratchSchema::new(pool)))
            .unwrap();
        ctx.register_catalog("scratch", Arc::new(catalog));
        (ctx, shared)
    }

    async fn run(ctx: &SessionContext, sql: &str) -> DFResult<Vec<RecordBatch>> {
        ctx.sql(sql).await?.collect().await
    }

    #[tokio::test]
    async fn session_tables_hold_their_bytes_until_dropped() {
        let (ctx, shared) = context(8 << 20);
        run(
            &ctx,
            "CREATE TABLE scratch.public.t AS SELECT * FROM generate_series(1, 10000)",
        )
        .await
        .unwrap();
        let after_create = shared.reserved();
        assert!(after_create >= 80_000, "{after_create}");
        run(
            &ctx,
            "INSERT INTO scratch.public.t SELECT * FROM generate_series(1, 10000)",
        )
        .await
        .unwrap();
        assert!(shared.reserved() >= after_create + 80_000);
        let n = run(&ctx, "SELECT count(*) FROM scratch.public.t")
            .await
            .unwrap();
        assert_eq!(
            n[0].column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .unwrap()
                .value(0),
            20000
        );
        run(&ctx, "DROP TABLE scratch.public.t").await.unwrap();
        assert_eq!(shared.reserved(), 0);
    }

    #[tokio::test]
    async fn a_table_or_insert_over_the_session_limit_is_refused_and_keeps_nothing() {
        let (ctx, shared) = context(1 << 20);
        let e = run(
            &ctx,
            "CREATE TABLE scratch.public.big AS SELECT * FROM generate_series(1, 1000000)",
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)),
            "{e}"
        );
        assert_eq!(shared.reserved(), 0);

        run(&ctx, "CREATE TABLE scratch.public.small AS VALUES (1), (2)")
            .await
            .unwrap();
        let held = shared.reserved();
        let e = run(
            &ctx,
            "INSERT INTO scratch.public.small SELECT * FROM generate_series(1, 1000000)",
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)),
            "{e}"
        );
        assert_eq!(shared.reserved(), held, "a refused insert keeps nothing");
        let n = run(&ctx, "SELECT count(*) FROM scratch.public.small")
            .await
            .unwrap();
        assert_eq!(n[0].num_rows(), 1);
    }
}
