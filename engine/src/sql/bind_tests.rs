//! Tests of `bind`, in a file of their own so the source reads as source.

use super::*;
use arrow::array::Int64Array;
use arrow::array::RecordBatch;
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
