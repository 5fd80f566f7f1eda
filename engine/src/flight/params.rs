//! Prepared-statement parameters.
//!
//! JDBC and ADBC users write `?`; DataFusion binds `$1, $2, …`, so `?` placeholders are numbered
//! left to right (outside string literals and comments — the SQL tokenizer decides). Bound
//! values travel inside the statement handle as an Arrow IPC stream, which keeps handles
//! stateless: nothing is stored per statement, and a handle means nothing without a session.

use std::io::Cursor;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use base64::Engine as _;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::tokenizer::Token;
use serde::{Deserialize, Serialize};

use super::ipc_input::{self, IpcLimits};
use crate::error::EngineError;
use crate::sql_text;

/// Bound values larger than this are refused: they would be echoed in every handle.
pub const MAX_BOUND_BYTES: usize = 1 << 20;

/// What the parameters inside a handle may hold (the handle is client-built as far as the
/// engine knows: it is checked each time it comes back). A query binds one row; each row of a
/// prepared update runs the statement once.
pub const BOUND_LIMITS: IpcLimits = IpcLimits {
    max_bytes: MAX_BOUND_BYTES,
    max_rows: 100_000,
    max_values: 1_000_000,
};

/// The bound rows of one request, as the engine holds them ([`ScalarValue`]s), take at most this
/// many bytes. A few bytes of Arrow can stand for many values (a dictionary, a string view or a
/// list view can name the same long value in every row), so the budget is on what is built.
pub const MAX_ROW_VALUE_BYTES: usize = 256 << 20;

/// Numbers `?` placeholders as `$1, $2, …`. SQL already using `$n` is returned unchanged;
/// mixing both styles is refused because the numbering would be ambiguous. Only the
/// placeholders are replaced: every other byte of the statement is kept as written.
pub fn number_placeholders(sql: &str) -> Result<String, EngineError> {
    // If it does not tokenize, let the planner report the syntax error with its own position
    // information.
    let Some(tokens) = sql_text::tokenize(sql) else {
        return Ok(sql.to_string());
    };
    let is_question = |t: &Token| matches!(t, Token::Placeholder(p) if p == "?");
    if !tokens.tokens.iter().any(is_question) {
        return Ok(sql.to_string());
    }
    if tokens
        .tokens
        .iter()
        .any(|t| matches!(t, Token::Placeholder(p) if p.starts_with('$')))
    {
        return Err(EngineError::InvalidArgument(
            "use either `?` or `$n` placeholders in one statement, not both".into(),
        ));
    }
    let Some(ranges) = tokens.ranges else {
        return Err(EngineError::InvalidArgument(
            "`?` placeholders cannot be numbered in a statement with /*! … */ comment hints; \
             write $1, $2, … instead"
                .into(),
        ));
    };
    let edits: Vec<_> = tokens
        .tokens
        .iter()
        .zip(ranges)
        .filter(|(t, _)| is_question(t))
        .enumerate()
        .map(|(n, (_, range))| (range, format!("${}", n + 1)))
        .collect();
    Ok(sql_text::splice(sql, &edits))
}

/// The parameter schema a client binds against: one field per placeholder, `$1` first, with
/// the type DataFusion inferred (Null where it could not).
pub fn parameter_schema(plan: &LogicalPlan) -> Result<Schema, EngineError> {
    let types = plan.get_parameter_types()?;
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

/// Binds one row of values to a plan. The count must match the placeholders exactly.
pub fn bind(plan: LogicalPlan, values: Vec<ScalarValue>) -> Result<LogicalPlan, EngineError> {
    let types = plan.get_parameter_types()?;
    let wanted = types.len();
    if wanted != values.len() {
        return Err(EngineError::InvalidArgument(format!(
            "the statement has {wanted} parameter(s) but {} value(s) were bound",
            values.len()
        )));
    }
    if wanted == 0 {
        return Ok(plan);
    }
    // Clients bind their own types (pyarrow sends Utf8 for str); the plan may want another
    // (a VARCHAR column is Utf8View). Cast to what the plan inferred, where it inferred one.
    let values = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| match types.get(&format!("${}", i + 1)) {
            Some(Some(ty)) if v.data_type() != *ty && !v.is_null() => v.cast_to(ty),
            _ => Ok(v),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(plan.with_param_values(ParamValues::from(values))?)
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
}

impl StatementHandle {
    pub fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_string(),
            params: None,
            executed: false,
            nonce: None,
        }
    }

    /// This statement as one run's ticket.
    pub fn run_once(&self) -> Self {
        Self {
            nonce: Some(format!("{:032x}", rand::random::<u128>())),
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
            executed: false,
            nonce: None,
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
    use std::sync::Arc;

    #[test]
    fn question_marks_are_numbered_outside_literals_and_comments() {
        assert_eq!(
            number_placeholders("SELECT ? AS a, '?' AS b, x FROM t WHERE y = ? -- why?").unwrap(),
            "SELECT $1 AS a, '?' AS b, x FROM t WHERE y = $2 -- why?"
        );
        assert_eq!(number_placeholders("SELECT $1").unwrap(), "SELECT $1");
        assert_eq!(number_placeholders("SELECT 1").unwrap(), "SELECT 1");
        assert!(number_placeholders("SELECT ?, $1").is_err());
    }

    #[test]
    fn quoted_literals_keep_their_escapes() {
        assert_eq!(
            number_placeholders("INSERT INTO t VALUES (?, 'it''s')").unwrap(),
            "INSERT INTO t VALUES ($1, 'it''s')"
        );
        let injection = "SELECT * FROM t WHERE a = ? AND b = 'a'' OR ''1''=''1'";
        assert_eq!(
            number_placeholders(injection).unwrap(),
            "SELECT * FROM t WHERE a = $1 AND b = 'a'' OR ''1''=''1'"
        );
    }

    #[test]
    fn question_marks_in_strings_and_comments_are_not_placeholders() {
        let sql = "SELECT ?, E'it\\'s ?', $$a ? ''b$$, $q$?$q$, \"c?\" /* ? */ -- ?\n, ?";
        assert_eq!(
            number_placeholders(sql).unwrap(),
            "SELECT $1, E'it\\'s ?', $$a ? ''b$$, $q$?$q$, \"c?\" /* ? */ -- ?\n, $2"
        );
    }

    #[test]
    fn multi_line_statements_with_non_ascii_text_are_numbered_in_place() {
        let sql =
            "SELECT 'é' AS \"ü\",\r\n  ? AS a -- ñ?\n\tFROM t\n WHERE s = '日本''?' AND x = ?";
        assert_eq!(
            number_placeholders(sql).unwrap(),
            "SELECT 'é' AS \"ü\",\r\n  $1 AS a -- ñ?\n\tFROM t\n WHERE s = '日本''?' AND x = $2"
        );
    }

    #[test]
    fn question_marks_next_to_comment_hints_are_refused_not_misplaced() {
        let e = number_placeholders("SELECT ? /*! , 1 */").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        // Without a `?` there is nothing to number and the statement is left alone.
        assert_eq!(
            number_placeholders("SELECT 1 /*! , 2 */").unwrap(),
            "SELECT 1 /*! , 2 */"
        );
    }

    #[tokio::test]
    async fn an_escaped_quote_is_still_one_quote_when_the_statement_runs() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a BIGINT, s VARCHAR)")
            .await
            .unwrap();
        let insert = number_placeholders("INSERT INTO t VALUES (?, 'it''s')").unwrap();
        let plan = ctx.state().create_logical_plan(&insert).await.unwrap();
        let plan = bind(plan, vec![ScalarValue::Int64(Some(1))]).unwrap();
        ctx.execute_logical_plan(plan)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();

        let select =
            number_placeholders("SELECT s, 'it''s' = s AS same FROM t WHERE a = ?").unwrap();
        let plan = ctx.state().create_logical_plan(&select).await.unwrap();
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
        let sql = number_placeholders("SELECT ? + 1 AS n, ? AS s").unwrap();
        let plan = ctx.state().create_logical_plan(&sql).await.unwrap();
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
            executed: false,
            nonce: None,
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
            executed: false,
            nonce: None,
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
            rows_within(&[batch.clone()], 20 << 20).unwrap().len(),
            1_000
        );
        let message = refusal(rows_within(&[batch], 1 << 20));
        assert!(message.contains("more than 1048576 bytes"), "{message}");
    }
}
