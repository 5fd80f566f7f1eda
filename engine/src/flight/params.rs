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
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use datafusion::prelude::SessionContext;

    async fn planned(ctx: &SessionContext, sql: &str) -> LogicalPlan {
        crate::sql::plan::plan(ctx, sql).await.unwrap().plan
    }

    fn ints(batches: &[RecordBatch], column: usize) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                let a = b
                    .column(column)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                (0..a.len()).map(|i| a.value(i)).collect::<Vec<_>>()
            })
            .collect()
    }

    fn values_rows(plan: &LogicalPlan) -> Vec<usize> {
        let mut rows = Vec::new();
        plan.apply(|n| {
            if let LogicalPlan::Values(v) = n {
                rows.push(v.values.len());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        rows
    }

    #[tokio::test]
    async fn many_bound_rows_of_an_insert_are_one_values_source() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a BIGINT, s VARCHAR)")
            .await
            .unwrap();
        let plan = planned(&ctx, "INSERT INTO t VALUES (?, ?)").await;
        let rows: Vec<Vec<ScalarValue>> = (0..1000)
            .map(|i| {
                vec![
                    ScalarValue::Int64(Some(i)),
                    ScalarValue::Utf8(Some(format!("r{i}"))),
                ]
            })
            .collect();
        let bound = bind_rows(plan, rows).unwrap();
        assert_eq!(values_rows(&bound), [1000]);
        let out = ctx
            .execute_logical_plan(bound)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(affected(&out), 1000);
        let n = ctx
            .sql("SELECT count(*), sum(a) FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(ints(&n, 0), [1000]);
        assert_eq!(ints(&n, 1), [499_500]);
    }

    fn affected(batches: &[RecordBatch]) -> u64 {
        batches
            .iter()
            .map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::UInt64Array>()
                    .unwrap()
                    .value(0)
            })
            .sum()
    }

    #[tokio::test]
    async fn placeholders_outside_values_are_bound_per_row_into_one_plan() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a BIGINT)").await.unwrap();
        let plan = planned(&ctx, "INSERT INTO t SELECT ? * 10").await;
        let rows = vec![
            vec![ScalarValue::Int64(Some(1))],
            vec![ScalarValue::Int64(Some(2))],
        ];
        let bound = bind_rows(plan, rows).unwrap();
        assert!(matches!(&bound, LogicalPlan::Dml(_)), "{bound}");
        let out = ctx
            .execute_logical_plan(bound)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(affected(&out), 2);
        let all = ctx
            .sql("SELECT a FROM t ORDER BY a")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(ints(&all, 0), [10, 20]);
    }

    #[tokio::test]
    async fn several_rows_are_only_for_inserts_and_each_row_must_fit() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a BIGINT)").await.unwrap();
        let two = || {
            vec![
                vec![ScalarValue::Int64(Some(1))],
                vec![ScalarValue::Int64(Some(2))],
            ]
        };
        let e = bind_rows(planned(&ctx, "SELECT ? AS x").await, two()).unwrap_err();
        assert!(
            e.to_string().contains("only an INSERT takes several"),
            "{e}"
        );
        let plan = planned(&ctx, "INSERT INTO t VALUES (?)").await;
        let short = vec![vec![ScalarValue::Int64(Some(1))], vec![]];
        let e = bind_rows(plan.clone(), short).unwrap_err();
        assert!(e.to_string().contains("1 parameter(s) but 0"), "{e}");
        let bad = vec![
            vec![ScalarValue::Int64(Some(1))],
            vec![ScalarValue::Utf8(Some("x".into()))],
        ];
        assert!(bind_rows(plan, bad).is_err());
        let n = ctx
            .sql("SELECT count(*) FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(ints(&n, 0), [0]);
    }

    #[tokio::test]
    async fn an_escaped_quote_is_still_one_quote_when_the_statement_runs() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a BIGINT, s VARCHAR)")
            .await
            .unwrap();
        let plan = planned(&ctx, "INSERT INTO t VALUES (?, 'it''s')").await;
        let plan = bind(plan, vec![ScalarValue::Int64(Some(1))]).unwrap();
        ctx.execute_logical_plan(plan)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();

        let plan = planned(&ctx, "SELECT s, 'it''s' = s AS same FROM t WHERE a = ?").await;
        let plan = bind(plan, vec![ScalarValue::Int64(Some(1))]).unwrap();
        let batches = ctx
            .execute_logical_plan(plan)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        let s = ScalarValue::try_from_array(batches[0].column(0), 0).unwrap();
        assert_eq!(s.to_string(), "it's");
        let same = ScalarValue::try_from_array(batches[0].column(1), 0).unwrap();
        assert_eq!(same, ScalarValue::Boolean(Some(true)));
    }

    #[tokio::test]
    async fn values_bind_by_position_and_the_count_must_match() {
        let ctx = SessionContext::new();
        let plan = planned(&ctx, "SELECT ? + 1 AS n, ? AS s").await;
        let schema = parameter_schema(&plan).unwrap();
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["$1", "$2"]);

        let err = bind(plan.clone(), vec![ScalarValue::Int64(Some(1))]).unwrap_err();
        assert!(err.to_string().contains("2 parameter(s)"), "{err}");

        let bound = bind(
            plan,
            vec![
                ScalarValue::Int64(Some(41)),
                ScalarValue::Utf8(Some("x".into())),
            ],
        )
        .unwrap();
        let batches = ctx
            .execute_logical_plan(bound)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let n = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(n.value(0), 42);
    }

    #[test]
    fn statement_handles_round_trip_and_reject_garbage() {
        let h = StatementHandle::new("SELECT 'a:b' AS x").encode();
        assert_eq!(
            StatementHandle::decode(&h).unwrap().sql,
            "SELECT 'a:b' AS x"
        );
        assert!(StatementHandle::decode(b"\x00garbage").is_err());
    }

    #[test]
    fn handles_carry_bound_rows_and_reject_garbage() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("$1", DataType::Int64, true),
            Field::new("$2", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec!["a", "b"])),
            ],
        )
        .unwrap();
        let h = StatementHandle::new("INSERT INTO t VALUES ($1, $2)")
            .with_params(&[batch])
            .unwrap();
        let back = StatementHandle::decode(&h.encode()).unwrap();
        assert_eq!(back, h);
        let rows = back.bound_rows().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1][1], ScalarValue::Utf8(Some("b".into())));
        assert!(single_row(rows).is_err());

        assert!(StatementHandle::decode(b"\x00garbage").is_err());
        let tampered = StatementHandle {
            sql: "SELECT 1".into(),
            params: Some("not base64!".into()),
            ..StatementHandle::new("SELECT 1")
        };
        assert!(tampered.bound_rows().is_err());
        assert!(
            StatementHandle::new("SELECT 1")
                .bound_rows()
                .unwrap()
                .is_empty()
        );
    }

    fn handle_with(params: String) -> StatementHandle {
        StatementHandle {
            sql: "SELECT $1".into(),
            params: Some(params),
            ..StatementHandle::new("SELECT $1")
        }
    }

    fn stream_of(batch: &RecordBatch, options: arrow::ipc::writer::IpcWriteOptions) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = StreamWriter::try_new_with_options(&mut buf, &batch.schema(), options).unwrap();
        w.write(batch).unwrap();
        w.finish().unwrap();
        drop(w);
        buf
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn refusal(r: Result<Vec<Vec<ScalarValue>>, EngineError>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        e.to_string()
    }

    fn one_int(n: i64) -> RecordBatch {
        RecordBatch::try_from_iter([("$1", Arc::new(Int64Array::from(vec![n])) as _)]).unwrap()
    }

    #[test]
    fn params_over_the_limit_are_refused_before_they_are_decoded() {
        // Not even base64: only the length can have refused it.
        let over = "!".repeat(MAX_BOUND_BYTES.div_ceil(3) * 4 + 1);
        let message = refusal(handle_with(over).bound_rows());
        assert!(
            message.contains(&format!("over {MAX_BOUND_BYTES} bytes")),
            "{message}"
        );
        let message = refusal(handle_with("!".repeat(8)).bound_rows());
        assert!(message.contains("not base64"), "{message}");
    }

    #[test]
    fn compressed_params_are_refused_even_with_a_forged_length() {
        use arrow::ipc::CompressionType;
        let options = arrow::ipc::writer::IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::ZSTD))
            .unwrap();
        let long = RecordBatch::try_from_iter([(
            "$1",
            Arc::new(StringArray::from(vec!["x".repeat(200)])) as _,
        )])
        .unwrap();
        let mut bytes = stream_of(&long, options);
        let message = refusal(handle_with(b64(&bytes)).bound_rows());
        assert!(message.contains("uncompressed"), "{message}");

        // Each compressed buffer's length prefix rewritten to declare 2^60 bytes: arrow-ipc
        // would allocate that much and abort the process.
        let frame_len = |at: usize| i32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
        let batch_at = 8 + frame_len(0) as usize;
        let header = batch_at + 8..batch_at + 8 + frame_len(batch_at) as usize;
        let body_at = header.end;
        let offsets: Vec<usize> = arrow::ipc::root_as_message(&bytes[header])
            .unwrap()
            .header_as_record_batch()
            .unwrap()
            .buffers()
            .unwrap()
            .iter()
            .filter(|b| b.length() >= 8)
            .map(|b| body_at + b.offset() as usize)
            .collect();
        assert!(!offsets.is_empty());
        for at in offsets {
            bytes[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        }
        let message = refusal(handle_with(b64(&bytes)).bound_rows());
        assert!(message.contains("uncompressed"), "{message}");
    }

    #[test]
    fn truncated_or_garbled_params_are_invalid_arguments() {
        let bytes = stream_of(&one_int(7), Default::default());
        assert_eq!(
            handle_with(b64(&bytes)).bound_rows().unwrap(),
            [[ScalarValue::Int64(Some(7))]]
        );
        for cut in 1..bytes.len() - 8 {
            let r = handle_with(b64(&bytes[..cut])).bound_rows();
            // A cut between messages is a shorter stream (the batch is then missing).
            if let Err(e) = r {
                assert_eq!(e.code(), tonic::Code::InvalidArgument, "cut at {cut}: {e}");
            }
        }
        for flip in 0..bytes.len() {
            let mut garbled = bytes.clone();
            garbled[flip] ^= 0xa5;
            if let Err(e) = handle_with(b64(&garbled)).bound_rows() {
                assert_eq!(e.code(), tonic::Code::InvalidArgument, "byte {flip}: {e}");
            }
        }
        refusal(handle_with(String::new()).bound_rows());
    }

    #[test]
    fn a_handle_carries_no_more_rows_than_it_can_bring_back() {
        let rows = BOUND_LIMITS.max_rows + 1;
        let many = RecordBatch::try_from_iter([(
            "$1",
            Arc::new(arrow::array::Int8Array::from(vec![1i8; rows])) as _,
        )])
        .unwrap();
        let e = StatementHandle::new("SELECT $1")
            .with_params(&[many])
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("rows"), "{e}");
    }

    /// One long string named by every row of a dictionary: a few bytes sent, many held.
    #[test]
    fn bound_values_are_refused_once_they_take_more_than_the_budget() {
        let long = "x".repeat(10_000);
        let keys = arrow::array::Int32Array::from(vec![0; 1_000]);
        let values = StringArray::from(vec![long.as_str()]);
        let dictionary = arrow::array::DictionaryArray::try_new(keys, Arc::new(values)).unwrap();
        let batch = RecordBatch::try_from_iter([("$1", Arc::new(dictionary) as _)]).unwrap();
        assert_eq!(
            rows_within(std::slice::from_ref(&batch), 20 << 20)
                .unwrap()
                .len(),
            1_000
        );
        let message = refusal(rows_within(&[batch], 1 << 20));
        assert!(message.contains("more than 1048576 bytes"), "{message}");
    }
}
