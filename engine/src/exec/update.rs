//! Statements run to completion for their count: updates, and DDL run while planning.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch, UInt64Array};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{
    CreateMemoryTable, DdlStatement, EmptyRelation, LogicalPlan, LogicalPlanBuilder,
};
use datafusion::prelude::SessionContext;

use crate::error::EngineError;

/// An update runs to completion and answers a count, so only statements that change something
/// are one: a query sent as an update would be collected whole in memory only to be thrown away.
pub(super) fn runs_as_update(plan: &LogicalPlan) -> Result<(), EngineError> {
    match plan {
        LogicalPlan::Dml(_) | LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) => Ok(()),
        _ => Err(EngineError::InvalidArgument(
            "only statements that change something (INSERT, UPDATE, DELETE, CREATE, DROP, SET) \
             run as an update; send queries with GetFlightInfo and DoGet"
                .into(),
        )),
    }
}

/// Runs an update's plan to its end. `CREATE TABLE … AS SELECT` runs as an empty `CREATE TABLE`
/// and a streamed `INSERT`: the rows go through the new table's own sink (reserved from the
/// session's share for a session table, written out for a warehouse table) instead of being
/// collected in memory first, as DataFusion's own CTAS does. A failed insert leaves no table.
pub(super) async fn run_to_completion(
    ctx: &SessionContext,
    plan: LogicalPlan,
) -> Result<Vec<RecordBatch>, EngineError> {
    let create = match plan {
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c))
            if !matches!(c.input.as_ref(), LogicalPlan::EmptyRelation(_)) =>
        {
            c
        }
        other => return Ok(ctx.execute_logical_plan(other).await?.collect().await?),
    };
    let name = create.name.clone();
    if create.if_not_exists && ctx.table_exist(name.clone())? {
        return Ok(Vec::new());
    }
    let input = Arc::unwrap_or_clone(create.input.clone());
    let empty = LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: false,
        schema: input.schema().clone(),
    });
    let create = CreateMemoryTable {
        input: Arc::new(empty),
        ..create
    };
    ctx.execute_logical_plan(LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)))
        .await?
        .collect()
        .await?;
    let inserted = async {
        let target = provider_as_source(ctx.table_provider(name.clone()).await?);
        let insert =
            LogicalPlanBuilder::insert_into(input, name.clone(), target, InsertOp::Append)?
                .build()?;
        ctx.execute_logical_plan(insert).await?.collect().await
    }
    .await;
    match inserted {
        // Like any CREATE, it reports no rows.
        Ok(_) => Ok(Vec::new()),
        Err(e) => {
            if let Err(cleanup) = ctx.deregister_table(name.clone()) {
                tracing::warn!(event = "ctas_cleanup_failed", table = %name, error = %crate::redact::scrub(&cleanup.to_string()));
            }
            Err(e.into())
        }
    }
}

/// DML results are one `count` row per batch; DDL returns no rows and counts as 0.
pub(super) fn affected_rows(batches: &[RecordBatch]) -> i64 {
    batches
        .iter()
        .filter_map(|b| b.column_by_name("count"))
        .filter_map(|c| c.as_any().downcast_ref::<UInt64Array>())
        .flat_map(|a| (0..a.len()).map(move |i| a.value(i)))
        .map(|n| i64::try_from(n).unwrap_or(i64::MAX))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn update_counts_come_from_the_count_column_and_ddl_counts_zero() {
        let count = Arc::new(Schema::new(vec![Field::new(
            "count",
            DataType::UInt64,
            false,
        )]));
        let b = |n: u64| {
            RecordBatch::try_new(count.clone(), vec![Arc::new(UInt64Array::from(vec![n]))]).unwrap()
        };
        assert_eq!(affected_rows(&[b(3), b(4)]), 7);
        assert_eq!(affected_rows(&[]), 0);
    }

    #[tokio::test]
    async fn queries_do_not_run_as_updates() {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.sql("CREATE TABLE t (a INT)").await.unwrap();
        for sql in [
            "SELECT 1",
            "EXPLAIN SELECT 1",
            "VALUES (1)",
            "SELECT * FROM t UNION ALL SELECT 2",
        ] {
            let plan = ctx.state().create_logical_plan(sql).await.unwrap();
            let e = runs_as_update(&plan).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{sql}");
        }
        for sql in [
            "INSERT INTO t VALUES (1)",
            "CREATE TABLE u AS SELECT 1 AS a",
            "DROP TABLE t",
            "SET datafusion.execution.batch_size = 100",
        ] {
            let plan = ctx.state().create_logical_plan(sql).await.unwrap();
            assert!(runs_as_update(&plan).is_ok(), "{sql}");
        }
    }
}
