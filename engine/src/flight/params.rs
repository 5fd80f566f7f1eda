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

use crate::error::EngineError;
use crate::sql_text;

/// Bound values larger than this are refused: they would be echoed in every handle.
pub const MAX_BOUND_BYTES: usize = 1 << 20;

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
    let mut out = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let mut values = Vec::with_capacity(batch.num_columns());
            for column in batch.columns() {
                values.push(ScalarValue::try_from_array(column, row)?);
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
        Ok(Self {
            sql: self.sql.clone(),
            params: Some(base64::engine::general_purpose::STANDARD.encode(buf)),
            executed: false,
            nonce: None,
        })
    }

    /// The bound rows; empty when nothing was bound.
    pub fn bound_rows(&self) -> Result<Vec<Vec<ScalarValue>>, EngineError> {
        let Some(b64) = &self.params else {
            return Ok(Vec::new());
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| EngineError::InvalidArgument("unknown statement handle".into()))?;
        let reader = StreamReader::try_new(Cursor::new(bytes), None)
            .map_err(|_| EngineError::InvalidArgument("unknown statement handle".into()))?;
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| EngineError::InvalidArgument("unknown statement handle".into()))?;
        rows(&batches)
    }
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
}
