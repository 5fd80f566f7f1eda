//! Tests of `params`, in a file of their own so the source reads as source.

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
