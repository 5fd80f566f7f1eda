//! Time travel where relations are planned: a table read with a version (`t FOR VERSION AS OF
//! 42`, `t FOR VERSION AS OF 'audit'`, `t FOR TIMESTAMP AS OF <expr>`) is planned as a scan of
//! the Iceberg table pinned to that snapshot, with that snapshot's schema.
//!
//! DataFusion resolves every table a statement names before planning it, so the table here is
//! the one already loaded as the user (with its snapshots, refs and history); pinning it needs no
//! further catalog call. Anything that cannot be pinned is refused, never read at its current
//! version instead.

use std::sync::Arc;

use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::sql::sqlparser::ast::{Expr as SQLExpr, TableFactor, TableVersion, Value};

use crate::catalog::{AsOf, UserTable, parse_timestamp_ms};
use crate::error::EngineError;

/// The relation planner that pins versioned tables (registered on every session context).
#[derive(Debug, Default)]
pub struct PinnedVersions;

fn refuse(e: EngineError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

fn invalid(msg: impl Into<String>) -> DataFusionError {
    refuse(EngineError::InvalidArgument(msg.into()))
}

fn not_versioned(name: &str) -> DataFusionError {
    invalid(format!(
        "{name} is not an Iceberg table of the warehouse (a CTE, a view or a session table): \
         only those have versions to read"
    ))
}

impl RelationPlanner for PinnedVersions {
    fn plan_relation(
        &self,
        relation: TableFactor,
        context: &mut dyn RelationPlannerContext,
    ) -> DFResult<RelationPlanning> {
        let TableFactor::Table {
            name,
            alias,
            version: Some(version),
            args,
            with_hints,
            partitions,
            with_ordinality,
            json_path,
            sample,
            index_hints,
        } = relation
        else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        if args.is_some() {
            return Err(invalid("a table function has no versions to travel to"));
        }
        let shown = name.to_string();
        // The name as DataFusion resolves it without the version: a CTE of that name comes
        // first, as everywhere else, and has no versions.
        let current = context.plan(TableFactor::Table {
            name,
            alias: None,
            version: None,
            args: None,
            with_hints,
            partitions,
            with_ordinality,
            json_path,
            sample,
            index_hints,
        })?;
        let LogicalPlan::TableScan(scan) = &current else {
            return Err(not_versioned(&shown));
        };
        let provider = source_as_provider(&scan.source)?;
        let Some(table) = provider.as_any().downcast_ref::<UserTable>() else {
            return Err(not_versioned(&shown));
        };
        let as_of = as_of(version, context)?;
        let pinned = table.at(as_of).map_err(refuse)?;
        let plan = LogicalPlanBuilder::scan(
            scan.table_name.clone(),
            provider_as_source(Arc::new(pinned)),
            None,
        )?
        .build()?;
        Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
            plan, alias,
        ))))
    }
}

/// What the version clause names.
fn as_of(version: TableVersion, context: &mut dyn RelationPlannerContext) -> DFResult<AsOf> {
    match version {
        TableVersion::VersionAsOf(SQLExpr::Value(v)) => match v.value {
            Value::Number(digits, _) => digits
                .parse()
                .map(AsOf::Snapshot)
                .map_err(|_| invalid(format!("snapshot id {digits} is not a 64-bit integer"))),
            Value::SingleQuotedString(name) => Ok(AsOf::Ref(name)),
            other => Err(invalid(format!(
                "FOR VERSION AS OF needs a snapshot id or a quoted branch or tag name, got {other}"
            ))),
        },
        TableVersion::VersionAsOf(other) => Err(invalid(format!(
            "FOR VERSION AS OF needs a snapshot id or a quoted branch or tag name, got {other}"
        ))),
        // `FOR SYSTEM_TIME AS OF` is the SQL standard's spelling of the same thing.
        TableVersion::TimestampAsOf(e) | TableVersion::ForSystemTimeAsOf(e) => {
            timestamp_ms(e, context).map(AsOf::TimestampMs)
        }
        TableVersion::Function(f) => Err(invalid(format!(
            "versions written as {f} are not supported; use FOR VERSION AS OF or FOR TIMESTAMP \
             AS OF"
        ))),
    }
}

/// The instant a `FOR TIMESTAMP AS OF` expression stands for: a quoted timestamp, a `TIMESTAMP
/// '…'` literal, or any constant expression (`current_timestamp - INTERVAL '1' HOUR`).
fn timestamp_ms(expr: SQLExpr, context: &mut dyn RelationPlannerContext) -> DFResult<i64> {
    if let SQLExpr::Value(v) = &expr
        && let Value::SingleQuotedString(text) = &v.value
    {
        return parse_timestamp_ms(text).map_err(refuse);
    }
    let shown = expr.to_string();
    let wanted = |why: String| {
        invalid(format!(
            "FOR TIMESTAMP AS OF needs a timestamp like TIMESTAMP '2026-11-24 10:00:00', got \
             {shown}{why}"
        ))
    };
    let planned = context
        .sql_to_expr(expr, &DFSchema::empty())
        .map_err(|e| wanted(format!(": {e}")))?;
    let simplifier = ExprSimplifier::new(SimplifyContext::default().with_current_time());
    match simplifier.simplify(planned) {
        Ok(Expr::Literal(value, _)) => scalar_ms(&value).ok_or_else(|| wanted(String::new())),
        Ok(_) => Err(wanted(" (not a constant)".into())),
        Err(e) => Err(wanted(format!(": {e}"))),
    }
}

/// A timestamp or date value as milliseconds since the epoch (UTC); strings are parsed.
fn scalar_ms(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::TimestampSecond(Some(s), _) => s.checked_mul(1000),
        ScalarValue::TimestampMillisecond(Some(ms), _) => Some(*ms),
        ScalarValue::TimestampMicrosecond(Some(us), _) => Some(us.div_euclid(1000)),
        ScalarValue::TimestampNanosecond(Some(ns), _) => Some(ns.div_euclid(1_000_000)),
        ScalarValue::Date32(Some(days)) => i64::from(*days).checked_mul(86_400_000),
        ScalarValue::Date64(Some(ms)) => Some(*ms),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => parse_timestamp_ms(s).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_values_of_every_unit_are_milliseconds() {
        let at = 1_764_000_000_123i64;
        assert_eq!(
            scalar_ms(&ScalarValue::TimestampMillisecond(Some(at), None)),
            Some(at)
        );
        assert_eq!(
            scalar_ms(&ScalarValue::TimestampNanosecond(
                Some(at * 1_000_000 + 5),
                Some("UTC".into())
            )),
            Some(at)
        );
        assert_eq!(
            scalar_ms(&ScalarValue::TimestampSecond(Some(10), None)),
            Some(10_000)
        );
        assert_eq!(scalar_ms(&ScalarValue::Date32(Some(1))), Some(86_400_000));
        assert_eq!(
            scalar_ms(&ScalarValue::Utf8(Some("1970-01-01T00:00:01Z".into()))),
            Some(1000)
        );
        assert_eq!(scalar_ms(&ScalarValue::Int64(Some(5))), None);
        assert_eq!(scalar_ms(&ScalarValue::TimestampSecond(None, None)), None);
    }
}
