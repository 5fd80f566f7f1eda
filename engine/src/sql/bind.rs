//! Binding values to a planned statement: the placeholders `$1, $2, …` a client fills (`?` is
//! numbered when parsed, `super::placeholders`), each value cast to the type the plan inferred
//! for it, and a prepared INSERT with many rows bound into one plan (one commit).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::{DmlStatement, LogicalPlan, Statement, Union, Values, WriteOp};

use crate::error::EngineError;
use crate::limits::MAX_UNION_ROWS;

/// The parameter schema a client binds against: one field per placeholder, `$1` first, with
/// the type DataFusion inferred (Null where it could not).
pub fn parameter_schema(plan: &LogicalPlan) -> Result<Schema, EngineError> {
    let types = client_placeholders(plan)?;
    let mut ids: Vec<(usize, String, Option<DataType>)> = types
        .into_iter()
        .map(|(id, ty)| {
            let pos = id
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            (pos, id, ty)
        })
        .collect();
    ids.sort();
    Ok(Schema::new(
        ids.into_iter()
            .map(|(_, id, ty)| Field::new(id, ty.unwrap_or(DataType::Null), true))
            .collect::<Vec<_>>(),
    ))
}

/// The placeholders a Flight client binds. Those of an SQL `PREPARE name AS …` are not: SQL
/// `EXECUTE name(…)` binds them, in the session.
fn client_placeholders(
    plan: &LogicalPlan,
) -> Result<HashMap<String, Option<DataType>>, EngineError> {
    let prepares = |p: &LogicalPlan| matches!(p, LogicalPlan::Statement(Statement::Prepare(_)));
    let explained = match plan {
        LogicalPlan::Explain(e) => prepares(&e.plan),
        LogicalPlan::Analyze(a) => prepares(&a.input),
        _ => false,
    };
    if prepares(plan) || explained {
        return Ok(HashMap::new());
    }
    Ok(plan.get_parameter_types()?)
}

/// Binds one row of values to a plan. The count must match the placeholders exactly.
pub fn bind(plan: LogicalPlan, values: Vec<ScalarValue>) -> Result<LogicalPlan, EngineError> {
    let types = client_placeholders(&plan)?;
    if types.is_empty() && values.is_empty() {
        return Ok(plan);
    }
    let values = conform(values, &types)?;
    Ok(plan.with_param_values(ParamValues::from(values))?)
}

/// One row, checked against the placeholders' count, each value cast to the type the plan
/// inferred for it where it inferred one: clients bind their own types (pyarrow sends Utf8 for
/// str) and the plan may want another (a VARCHAR column is Utf8View).
fn conform(
    values: Vec<ScalarValue>,
    types: &HashMap<String, Option<DataType>>,
) -> Result<Vec<ScalarValue>, EngineError> {
    if types.len() != values.len() {
        return Err(EngineError::InvalidArgument(format!(
            "the statement has {} parameter(s) but {} value(s) were bound",
            types.len(),
            values.len()
        )));
    }
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(i, v)| match types.get(&format!("${}", i + 1)) {
            Some(Some(ty)) if v.data_type() != *ty && !v.is_null() => v.cast_to(ty),
            _ => Ok(v),
        })
        .collect::<Result<Vec<_>, _>>()?)
}

/// Binds every row of a prepared update into **one** plan, so the table gets one commit and a
/// failing row commits nothing. Several rows are only for `INSERT`: its one-row `VALUES` source
/// becomes a `VALUES` of all rows, or, when the placeholders are elsewhere (`INSERT … SELECT ?`),
/// the bound inputs are combined with `UNION ALL`.
pub fn bind_rows(
    plan: LogicalPlan,
    rows: Vec<Vec<ScalarValue>>,
) -> Result<LogicalPlan, EngineError> {
    if rows.len() <= 1 {
        return bind(plan, rows.into_iter().next().unwrap_or_default());
    }
    let LogicalPlan::Dml(
        dml @ DmlStatement {
            op: WriteOp::Insert(_),
            ..
        },
    ) = &plan
    else {
        return Err(EngineError::InvalidArgument(format!(
            "{} rows were bound, but only an INSERT takes several rows; bind one row",
            rows.len()
        )));
    };
    let types = client_placeholders(&plan)?;
    let rows = rows
        .into_iter()
        .map(|r| conform(r, &types))
        .collect::<Result<Vec<_>, _>>()?;
    let input = match values_of_all_rows(&dml.input, &types, &rows)? {
        Some(input) => input,
        None if rows.len() > MAX_UNION_ROWS => {
            return Err(EngineError::InvalidArgument(format!(
                "{} rows were bound to an INSERT whose placeholders are not all in one VALUES \
                 list; at most {MAX_UNION_ROWS} are accepted there (write `INSERT … VALUES (?, …)` \
                 for more)",
                rows.len()
            )));
        }
        None => {
            let inputs = rows
                .into_iter()
                .map(|r| {
                    Ok(Arc::new(
                        (*dml.input)
                            .clone()
                            .with_param_values(ParamValues::from(r))?,
                    ))
                })
                .collect::<Result<Vec<_>, EngineError>>()?;
            LogicalPlan::Union(Union::try_new_with_loose_types(inputs)?)
        }
    };
    Ok(LogicalPlan::Dml(DmlStatement {
        input: Arc::new(input),
        ..dml.clone()
    }))
}

/// `input` with its one-row `VALUES` replaced by one row per bound row, if that `VALUES` is the
/// only one and holds every placeholder; `None` otherwise.
fn values_of_all_rows(
    input: &LogicalPlan,
    types: &HashMap<String, Option<DataType>>,
    rows: &[Vec<ScalarValue>],
) -> Result<Option<LogicalPlan>, EngineError> {
    let mut found: Vec<Values> = Vec::new();
    input.apply(|node| {
        if let LogicalPlan::Values(v) = node {
            found.push(v.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let [template] = found.as_slice() else {
        return Ok(None);
    };
    let alone = LogicalPlan::Values(template.clone());
    if template.values.len() != 1 || alone.get_parameter_types()?.len() != types.len() {
        return Ok(None);
    }
    let mut all = Vec::with_capacity(rows.len());
    for row in rows {
        match alone
            .clone()
            .with_param_values(ParamValues::from(row.clone()))?
        {
            LogicalPlan::Values(mut bound) => all.append(&mut bound.values),
            _ => return Ok(None),
        }
    }
    let merged = LogicalPlan::Values(Values {
        schema: template.schema.clone(),
        values: all,
    });
    let replaced = input.clone().transform(|node| {
        Ok(match node {
            LogicalPlan::Values(_) => Transformed::yes(merged.clone()),
            other => Transformed::no(other),
        })
    })?;
    Ok(Some(replaced.data))
}

/// For a query exactly one row of values (or none, for a statement without placeholders).
pub fn single_row(mut rows: Vec<Vec<ScalarValue>>) -> Result<Vec<ScalarValue>, EngineError> {
    match rows.len() {
        0 => Ok(Vec::new()),
        1 => Ok(rows.remove(0)),
        n => Err(EngineError::InvalidArgument(format!(
            "a query binds one row of parameters, got {n}; use an update for batches"
        ))),
    }
}

#[cfg(test)]
#[path = "bind_tests.rs"]
mod tests;
