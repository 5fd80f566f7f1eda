//! Prepared-statement parameters.
//!
//! Statements number their placeholders `$1, $2, …` (`?` is numbered when parsed, see
//! `crate::sql::placeholders`). Bound values travel inside the statement handle as an Arrow IPC
//! stream, which keeps handles stateless: nothing is stored per statement, and a handle means
//! nothing without a session. A prepared INSERT with many bound rows is one plan.

use std::io::Cursor;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use base64::Engine as _;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::{DmlStatement, LogicalPlan, Statement, Union, Values, WriteOp};
use serde::{Deserialize, Serialize};

use super::ipc_input::{self, IpcLimits};
use crate::error::EngineError;

/// Bound values larger than this are refused: they would be echoed in every handle.
pub const MAX_BOUND_BYTES: usize = 1 << 20;

/// What the parameters inside a handle may hold (the handle is client-built as far as the
/// engine knows: it is checked each time it comes back). A query binds one row; a prepared
/// INSERT binds any number, all in one plan ([`bind_rows`]).
pub const BOUND_LIMITS: IpcLimits = IpcLimits {
    max_bytes: MAX_BOUND_BYTES,
    max_rows: 100_000,
    max_values: 1_000_000,
};

/// Rows bound to an INSERT whose placeholders are outside one VALUES list become one input each,
/// under one UNION ALL: planning work grows with them, so they are capped.
pub const MAX_UNION_ROWS: usize = 10_000;

/// The bound rows of one request, as the engine holds them ([`ScalarValue`]s), take at most this
/// many bytes. A few bytes of Arrow can stand for many values (a dictionary, a string view or a
/// list view can name the same long value in every row), so the budget is on what is built.
pub const MAX_ROW_VALUE_BYTES: usize = 256 << 20;

/// The parameter schema a client binds against: one field per placeholder, `$1` first, with
/// the type DataFusion inferred (Null where it could not).
pub fn parameter_schema(plan: &LogicalPlan) -> Result<Schema, EngineError> {
    let types = flight_parameters(plan)?;
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

/// Each row of the bound batches as one set of positional values.
pub fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<ScalarValue>>, EngineError> {
    rows_within(batches, MAX_ROW_VALUE_BYTES)
}

fn rows_within(
    batches: &[RecordBatch],
    max_bytes: usize,
) -> Result<Vec<Vec<ScalarValue>>, EngineError> {
    let mut out = Vec::new();
    let mut held = 0usize;
    for batch in batches {
        for row in 0..batch.num_rows() {
            let mut values = Vec::with_capacity(batch.num_columns());
            for column in batch.columns() {
                let value = ScalarValue::try_from_array(column, row)?;
                held = held.saturating_add(value.size());
                if held > max_bytes {
                    return Err(EngineError::InvalidArgument(format!(
                        "the bound values take more than {max_bytes} bytes once read; \
                         bind fewer or smaller values"
                    )));
                }
                values.push(value);
            }
            out.push(values);
        }
    }
    Ok(out)
}

/// The placeholders a Flight client binds. Those of an SQL `PREPARE name AS …` are not: SQL
/// `EXECUTE name(…)` binds them, in the session.
fn flight_parameters(plan: &LogicalPlan) -> Result<HashMap<String, Option<DataType>>, EngineError> {
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
    let types = flight_parameters(&plan)?;
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
    let types = flight_parameters(&plan)?;
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

/// What a statement or prepared-statement handle carries: the SQL and, once bound, the
/// parameter values (Arrow IPC stream, base64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementHandle {
    pub sql: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    /// Set on tickets of statements that already ran while planning (DDL): DoGet returns an
    /// empty result instead of running them again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executed: bool,
    /// Makes each FlightInfo's ticket unique, so cancelling one run never hits another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The fingerprint of the result schema the run's FlightInfo announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

impl StatementHandle {
    pub fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_string(),
            params: None,
            executed: false,
            nonce: None,
            schema: None,
        }
    }

    /// This statement as the ticket of one run that streams the schema `fingerprint` names.
    pub fn run_once(&self, fingerprint: String) -> Self {
        Self {
            nonce: Some(format!("{:032x}", rand::random::<u128>())),
            schema: Some(fingerprint),
            ..self.clone()
        }
    }

    /// The ticket of a statement that has already run.
    pub fn executed(&self) -> Self {
        Self {
            sql: self.sql.clone(),
            params: None,
            executed: true,
            nonce: None,
            schema: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, EngineError> {
        serde_json::from_slice(bytes)
            .map_err(|_| EngineError::InvalidArgument("unknown statement handle".into()))
    }

    /// The same statement with these values bound (replacing earlier ones).
    pub fn with_params(&self, batches: &[RecordBatch]) -> Result<Self, EngineError> {
        let Some(first) = batches.first() else {
            return Ok(Self::new(&self.sql));
        };
        let mut buf = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut buf, &first.schema())?;
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        if buf.len() > MAX_BOUND_BYTES {
            return Err(EngineError::InvalidArgument(format!(
                "bound parameters are {} bytes; at most {MAX_BOUND_BYTES} are accepted",
                buf.len()
            )));
        }
        // What `bound_rows` will accept when the handle comes back.
        ipc_input::check_stream(&buf, BOUND_LIMITS)?;
        Ok(Self {
            sql: self.sql.clone(),
            params: Some(base64::engine::general_purpose::STANDARD.encode(buf)),
            ..Self::new(&self.sql)
        })
    }

    /// The bound rows; empty when nothing was bound. The parameters are checked before they
    /// are decoded ([`ipc_input`]): the handle may have been built by the client.
    pub fn bound_rows(&self) -> Result<Vec<Vec<ScalarValue>>, EngineError> {
        let Some(b64) = &self.params else {
            return Ok(Vec::new());
        };
        // Base64 takes 4 characters for every 3 bytes.
        if b64.len() > MAX_BOUND_BYTES.div_ceil(3) * 4 {
            return Err(unknown_handle(format!(
                "its bound parameters are over {MAX_BOUND_BYTES} bytes"
            )));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| unknown_handle("its bound parameters are not base64"))?;
        ipc_input::check_stream(&bytes, BOUND_LIMITS).map_err(unknown_handle)?;
        let unreadable = |e: arrow::error::ArrowError| {
            EngineError::InvalidArgument(format!("its bound parameters do not read: {e}"))
        };
        let batches = ipc_input::decode_or_refuse(|| {
            StreamReader::try_new(Cursor::new(bytes), None)
                .map_err(unreadable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unreadable)
        })
        .map_err(unknown_handle)?;
        rows(&batches)
    }
}

fn unknown_handle(why: impl std::fmt::Display) -> EngineError {
    EngineError::InvalidArgument(format!("unknown statement handle: {why}"))
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
#[path = "params_tests.rs"]
mod tests;
