//! What a client's statement may do, decided on its logical plan before anything runs.
//!
//! - No path access: `CREATE EXTERNAL TABLE … LOCATION` and `COPY … TO` would read or write with
//!   whatever the engine process can reach (its file system), not with credentials vended for the
//!   user. They are refused anywhere in the plan, so `EXPLAIN ANALYZE COPY …` is refused too.
//! - Session settings by allow-list ([`settings`]): `SET datafusion.runtime.*` would replace the
//!   session's memory pool, the catalog-location settings would list a local directory as
//!   tables, the parser's recursion limit guards against deep-recursion crashes.
//! - Statements no bigger than the engine plans in bounded time: text ([`check_text`]) before
//!   parsing, the tree ([`shape`]) after.

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, Statement};

use crate::error::EngineError;
use crate::limits::{MAX_PLAN_NODES, MAX_SQL_BYTES};

mod settings;
mod shape;

pub use settings::settable;
pub use shape::check_statement;

/// Refuses statement text over `MAX_SQL_BYTES`, before it is tokenized.
pub fn check_text(sql: &str) -> Result<(), EngineError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(EngineError::InvalidArgument(format!(
            "the statement is {} bytes; at most {MAX_SQL_BYTES} are accepted",
            sql.len()
        )));
    }
    Ok(())
}

/// The first reason `plan` (any node of it, subqueries included) may not run.
pub fn check(plan: &LogicalPlan) -> Result<(), EngineError> {
    let mut refusal = None;
    let mut nodes = 0usize;
    plan.apply_with_subqueries(|node| {
        nodes += 1;
        refusal = if nodes > MAX_PLAN_NODES {
            Some(EngineError::InvalidArgument(format!(
                "the statement plans to more than {MAX_PLAN_NODES} operators"
            )))
        } else {
            refusal_of(node).err().or_else(|| too_deep(node))
        };
        Ok(if refusal.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    refusal.map_or(Ok(()), Err)
}

/// The plan's own expressions measured as the statement's were ([`crate::limits::MAX_EXPR_DEPTH`]):
/// what the planner made of the text (a view's, too) is what runs.
fn too_deep(node: &LogicalPlan) -> Option<EngineError> {
    let mut over = false;
    let _ = node.apply_expressions(|e| {
        over = shape::expr_deeper_than(e, crate::limits::MAX_EXPR_DEPTH);
        Ok(if over {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    over.then(|| {
        EngineError::InvalidArgument(format!(
            "a planned expression nests deeper than {} levels",
            crate::limits::MAX_EXPR_DEPTH
        ))
    })
}

fn refusal_of(node: &LogicalPlan) -> Result<(), EngineError> {
    let path = match node {
        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(_)) => Some("CREATE EXTERNAL TABLE"),
        LogicalPlan::Copy(_) => Some("COPY ... TO"),
        _ => None,
    };
    if let Some(what) = path {
        return Err(EngineError::PermissionDenied(format!(
            "{what} is not allowed: tables are read and written only through the catalog, as you"
        )));
    }
    match node {
        LogicalPlan::Statement(Statement::SetVariable(s)) => settable(&s.variable, Some(&s.value)),
        LogicalPlan::Statement(Statement::ResetVariable(r)) => settable(&r.variable, None),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;
    use tonic::Code;

    async fn verdict(sql: &str) -> Result<(), EngineError> {
        let ctx = SessionContext::new();
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();
        check(&plan)
    }

    #[tokio::test]
    async fn statements_that_reach_storage_by_path_are_refused_wherever_they_appear() {
        for sql in [
            "CREATE EXTERNAL TABLE t (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
            "COPY (SELECT 1 AS x) TO '/tmp/x.csv' STORED AS CSV",
            "EXPLAIN COPY (SELECT 1 AS x) TO '/tmp/x.csv' STORED AS CSV",
            "EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '/tmp/x.csv' STORED AS CSV",
        ] {
            let e = verdict(sql).await.unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{sql}");
        }
        for sql in [
            "SELECT 1",
            "EXPLAIN SELECT 1",
            "CREATE TABLE t (x INT)",
            "INSERT INTO t VALUES (1)",
        ] {
            let ctx = SessionContext::new();
            if let Ok(plan) = ctx.state().create_logical_plan(sql).await {
                assert!(check(&plan).is_ok(), "{sql}");
            }
        }
    }

    #[test]
    fn statement_text_over_the_limit_is_refused_before_parsing() {
        assert!(check_text(&"x".repeat(MAX_SQL_BYTES)).is_ok());
        let e = check_text(&"x".repeat(MAX_SQL_BYTES + 1)).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }

    #[tokio::test]
    async fn set_and_reset_of_settings_off_the_allow_list_are_refused_in_the_plan() {
        for sql in [
            "SET datafusion.runtime.memory_limit = '100G'",
            "SET DATAFUSION.RUNTIME.MEMORY_LIMIT = '100G'",
            "RESET datafusion.runtime.memory_limit",
            "SET datafusion.runtime.temp_directory = '/'",
            "SET datafusion.catalog.location = '/etc'",
            "SET datafusion.sql_parser.recursion_limit = 100000",
        ] {
            let e = verdict(sql).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{sql}");
            assert!(
                e.to_string().contains("cannot be set from a session"),
                "{e}"
            );
        }
        let e = verdict("SET datafusion.execution.target_partitions = 100000")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.to_string().contains("from 1 to 64"), "{e}");
        for sql in [
            "SET datafusion.execution.batch_size = 1234",
            "RESET datafusion.execution.batch_size",
            "SET datafusion.execution.parquet.pushdown_filters = true",
        ] {
            assert!(verdict(sql).await.is_ok(), "{sql}");
        }
    }
}
