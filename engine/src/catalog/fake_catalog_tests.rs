//! The catalog providers against an in-process fake Iceberg REST catalog (unit tests only; the
//! e2e suite runs the same paths against the real catalog). The fake records what each request
//! carried, so the tests check the token and delegation header, not just the answers.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::context::SessionContext;
use serde_json::json;
use tonic::Code;

use super::CatalogContextFactory;
use crate::auth::Identity;
use crate::context::QueryContextFactory;
use crate::error::EngineError;
use crate::secret::{Fingerprint, Secret};
use crate::token::{LatestToken, TokenView};

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    delegation: Option<String>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn metadata(table: &str) -> serde_json::Value {
    json!({
        "format-version": 2,
        "table-uuid": "9c12d441-03fe-4693-9a96-a0705ddf69c1",
        "location": format!("s3://warehouse/demo/{table}"),
        "last-sequence-number": 0,
        "last-updated-ms": 1_700_000_000_000i64,
        "last-column-id": 2,
        "current-schema-id": 0,
        "schemas": [{"type": "struct", "schema-id": 0, "fields": [
            {"id": 1, "name": "id", "required": true, "type": "long"},
            {"id": 2, "name": "name", "required": false, "type": "string"}
        ]}],
        "default-spec-id": 0,
        "partition-specs": [{"spec-id": 0, "fields": []}],
        "last-partition-id": 999,
        "default-sort-order-id": 0,
        "sort-orders": [{"order-id": 0, "fields": []}],
        "properties": {},
        "snapshots": [],
        "snapshot-log": [],
        "metadata-log": []
    })
}

/// `hist`: snapshot 1 (tag `audit`) at 2023-11-14 22:13:20 UTC, then snapshot 2 (`main`) 100 s
/// later. Metadata only: enough to plan against, not to read.
fn metadata_with_history() -> serde_json::Value {
    let mut m = metadata("hist");
    let snapshot = |id: i64, at: i64| {
        json!({"snapshot-id": id, "timestamp-ms": at, "sequence-number": id, "schema-id": 0,
               "manifest-list": format!("s3://warehouse/demo/hist/metadata/snap-{id}.avro"),
               "summary": {"operation": "append"}})
    };
    m["last-sequence-number"] = json!(2);
    m["last-updated-ms"] = json!(1_700_000_100_000i64);
    m["current-snapshot-id"] = json!(2);
    m["snapshots"] = json!([
        snapshot(1, 1_700_000_000_000),
        snapshot(2, 1_700_000_100_000)
    ]);
    m["snapshot-log"] = json!([
        {"snapshot-id": 1, "timestamp-ms": 1_700_000_000_000i64},
        {"snapshot-id": 2, "timestamp-ms": 1_700_000_100_000i64}
    ]);
    m["refs"] = json!({"main": {"snapshot-id": 2, "type": "branch"},
                       "audit": {"snapshot-id": 1, "type": "tag"}});
    m
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn rest_error(status: StatusCode, message: &str) -> Response {
    answer(
        status,
        json!({"error": {"message": message, "type": "Exception", "code": status.as_u16()}}),
    )
}

/// demo: a, b (vended keys; b is 403 for bob), c (403), nokeys (200 without keys), down (503).
async fn fake(State(log): State<Log>, req: Request) -> Response {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let path = req.uri().path().to_owned();
    log.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: path.clone(),
        authorization: header("authorization"),
        delegation: header("x-iceberg-access-delegation"),
    });
    let vended = json!({
        "s3.access-key-id": "VENDED-AK",
        "s3.secret-access-key": "VENDED-SK",
        "s3.session-token": "VENDED-ST",
        "s3.endpoint": "http://127.0.0.1:1",
        "s3.path-style-access": "true",
        "client.region": "us-east-1"
    });
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/v1/config") => {
            answer(StatusCode::OK, json!({"defaults": {}, "overrides": {}}))
        }
        (Method::GET, "/v1/namespaces") => {
            answer(StatusCode::OK, json!({"namespaces": [["demo"]]}))
        }
        (Method::HEAD, "/v1/namespaces/demo") => answer(StatusCode::NO_CONTENT, json!({})),
        (_, p) if p.starts_with("/v1/namespaces/flaky") => {
            rest_error(StatusCode::SERVICE_UNAVAILABLE, "backend down")
        }
        (Method::GET, "/v1/namespaces/demo") => answer(
            StatusCode::OK,
            json!({"namespace": ["demo"], "properties": {}}),
        ),
        (Method::GET, "/v1/namespaces/demo/tables") => answer(StatusCode::OK, {
            let ids: Vec<_> = ["a", "b", "c", "nokeys"]
                .map(|t| json!({"namespace": ["demo"], "name": t}))
                .into();
            json!({ "identifiers": ids })
        }),
        (Method::GET, p) if p.starts_with("/v1/namespaces/demo/tables/") => {
            let t = p.rsplit('/').next().unwrap();
            let bob = header("authorization").is_some_and(|a| a.contains("bob"));
            match t {
                "b" if bob => rest_error(StatusCode::FORBIDDEN, "bob may not read demo.b"),
                "a" | "b" | "nokeys" => answer(
                    StatusCode::OK,
                    json!({
                        "metadata-location": format!("s3://warehouse/demo/{t}/metadata/00000.json"),
                        "metadata": metadata(t),
                        "config": if t == "nokeys" { json!({}) } else { vended },
                    }),
                ),
                "hist" => answer(
                    StatusCode::OK,
                    json!({
                        "metadata-location": "s3://warehouse/demo/hist/metadata/00002.json",
                        "metadata": metadata_with_history(),
                        "config": vended,
                    }),
                ),
                "c" => rest_error(StatusCode::FORBIDDEN, "alice may not read demo.c"),
                "down" => rest_error(StatusCode::SERVICE_UNAVAILABLE, "backend down"),
                _ => rest_error(StatusCode::NOT_FOUND, "no such table"),
            }
        }
        _ => rest_error(StatusCode::NOT_FOUND, "no such namespace"),
    }
}

async fn start_fake() -> (url::Url, Log) {
    let log: Log = Arc::default();
    let app = Router::new().fallback(fake).with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}").parse().unwrap(), log)
}

fn context(uri: &url::Url, token: &str) -> SessionContext {
    context_as(uri, "alice", token)
}

fn context_as(uri: &url::Url, user: &str, token: &str) -> SessionContext {
    let config = sqe_engine_config::CatalogConfig {
        uri: uri.clone(),
        warehouse: "lake".into(),
        ca_file: None,
        vended_credentials: Default::default(),
        storage_endpoint: None,
    };
    let f = CatalogContextFactory::new(
        &config,
        crate::memory::UserPools::new(crate::memory::shared_pool(256 << 20), 64 << 20, 64 << 20),
        2,
    )
    .unwrap();
    let id = Identity {
        user: user.into(),
        roles: vec![],
        subject: None,
    };
    let view = TokenView {
        access_token: Secret::new(token),
        fingerprint: Fingerprint::of(token),
        latest: LatestToken::fixed(Secret::new(token)),
    };
    f.create(&id, &view, &f.session_pool(&id)).unwrap()
}

async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, EngineError> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

fn column(batches: &[RecordBatch], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let col = b.column_by_name(name).unwrap();
        let col = col.as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..col.len() {
            out.push(col.value(i).to_owned());
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_show_only_tables_the_user_can_load() {
    let (uri, log) = start_fake().await;
    let ctx = context(&uri, "tok-alice-1");

    let shown = run(&ctx, "SHOW TABLES").await.unwrap();
    let demo: Vec<String> = {
        let schemas = column(&shown, "table_schema");
        assert!(
            schemas
                .iter()
                .all(|s| s == "demo" || s == "information_schema")
        );
        let b = datafusion::arrow::compute::concat_batches(&shown[0].schema(), &shown).unwrap();
        let s = b
            .column_by_name("table_schema")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let t = b
            .column_by_name("table_name")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let mut v: Vec<String> = (0..b.num_rows())
            .filter(|&i| s.value(i) == "demo")
            .map(|i| t.value(i).to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        demo,
        ["a", "b"],
        "c is forbidden and nokeys has no vended keys"
    );

    let info = run(
        &ctx,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'demo'",
    )
    .await
    .unwrap();
    assert_eq!(column(&info, "table_name"), ["a", "b"]);

    let schemas = run(&ctx, "SELECT schema_name FROM information_schema.schemata")
        .await
        .unwrap();
    assert!(column(&schemas, "schema_name").contains(&"demo".to_owned()));

    // Every call carried the user's token and asked for vended credentials.
    let seen = log.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for s in &seen {
        assert_eq!(
            s.authorization.as_deref(),
            Some("Bearer tok-alice-1"),
            "{s:?}"
        );
        assert_eq!(s.delegation.as_deref(), Some("vended-credentials"), "{s:?}");
    }
    // The listing's probes were reused: one load per table, not one per statement.
    let loads_of_a = seen
        .iter()
        .filter(|s| s.method == "GET" && s.path == "/v1/namespaces/demo/tables/a")
        .count();
    assert_eq!(loads_of_a, 1, "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_access_gets_the_catalogs_answer_as_a_status() {
    let (uri, _log) = start_fake().await;
    let ctx = context(&uri, "tok-alice-1");

    let e = run(&ctx, "SELECT * FROM lake.demo.c").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let m = e.to_string();
    assert!(
        m.contains("lake.demo.c") && m.contains("alice may not read demo.c"),
        "{m}"
    );

    let e = run(&ctx, "SELECT * FROM lake.demo.nokeys")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(
        e.to_string().contains("vended no storage credentials"),
        "{e}"
    );

    let e = run(&ctx, "SELECT * FROM lake.demo.zz").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");

    let e = run(&ctx, "SELECT * FROM lake.demo.down").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(!e.to_string().contains("tok-alice"), "{e}");

    let d = run(&ctx, "DESCRIBE lake.demo.a").await.unwrap();
    assert_eq!(column(&d, "column_name"), ["id", "name"]);

    // No snapshot yet: the scan plans no files and reads nothing.
    let n = run(
        &ctx,
        "SELECT count(*) AS n FROM lake.demo.a JOIN lake.demo.b USING (id)",
    )
    .await
    .unwrap();
    assert_eq!(n.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_token_gets_a_new_client() {
    let (uri, log) = start_fake().await;
    let a = context(&uri, "tok-alice-1");
    run(&a, "DESCRIBE lake.demo.a").await.unwrap();
    let b = context(&uri, "tok-alice-2");
    run(&b, "DESCRIBE lake.demo.a").await.unwrap();
    let tokens: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| s.authorization.clone())
        .collect();
    assert!(tokens.contains(&"Bearer tok-alice-1".to_owned()));
    assert!(tokens.contains(&"Bearer tok-alice-2".to_owned()));
    // The first token's requests all came before the second's: no reuse after the switch.
    let first_new = tokens.iter().position(|t| t.ends_with("-2")).unwrap();
    assert!(tokens[first_new..].iter().all(|t| t.ends_with("-2")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_scratch_catalog_keeps_its_tables() {
    let (uri, _log) = start_fake().await;
    let ctx = context(&uri, "tok-alice-1");
    run(&ctx, "CREATE TABLE datafusion.public.t (x INT)")
        .await
        .unwrap();
    run(&ctx, "INSERT INTO datafusion.public.t VALUES (1), (2)")
        .await
        .unwrap();
    let n = run(&ctx, "SELECT x FROM datafusion.public.t")
        .await
        .unwrap();
    assert_eq!(n.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_never_hits_an_entry_alice_created() {
    let (uri, log) = start_fake().await;
    // One factory serves both users, as in the server.
    let alice = context_as(&uri, "alice", "tok-alice-1");
    let bob = context_as(&uri, "bob", "tok-bob-1");

    // alice fills her caches: listing, probes and the provider of demo.b.
    run(&alice, "SHOW TABLES").await.unwrap();
    run(&alice, "SELECT * FROM lake.demo.b").await.unwrap();
    let before = log.lock().unwrap().len();

    // bob asks for the same names: every answer comes from the catalog with bob's token.
    let e = run(&bob, "SELECT * FROM lake.demo.b").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let listed = run(
        &bob,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'demo'",
    )
    .await
    .unwrap();
    assert_eq!(column(&listed, "table_name"), ["a"]);

    let bobs: Vec<Seen> = log.lock().unwrap()[before..].to_vec();
    assert!(
        bobs.iter().any(|s| s.path == "/v1/namespaces/demo/tables/b"
            && s.authorization.as_deref() == Some("Bearer tok-bob-1")),
        "bob's lookup of demo.b must reach the catalog: {bobs:#?}"
    );
    assert!(
        bobs.iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer tok-bob-1")),
        "nothing after alice's queries was sent with her token: {bobs:#?}"
    );

    // And alice still reads what she may: bob's denial did not poison her entries.
    run(&alice, "SELECT * FROM lake.demo.b").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_outage_is_unavailable_not_a_missing_table() {
    let (uri, _log) = start_fake().await;
    let ctx = context(&uri, "tok-alice-1");
    // The namespace check itself fails: the table lookup must report the outage, not "not found".
    let e = run(&ctx, "SELECT * FROM lake.flaky.t").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    // A namespace the catalog says does not exist is still simply not found.
    let e = run(&ctx, "SELECT * FROM lake.nowhere.t").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
}

/// The snapshot each table scan of the statement's plan reads (`None`: the current one), in plan
/// order.
async fn pinned_snapshots(
    ctx: &SessionContext,
    sql: &str,
) -> Result<Vec<Option<i64>>, EngineError> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::datasource::source_as_provider;
    use datafusion::logical_expr::LogicalPlan;
    let plan = crate::sql::plan(ctx, sql).await?.plan;
    let mut found = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let provider = source_as_provider(&scan.source)?;
            if let Some(t) = provider
                .as_any()
                .downcast_ref::<super::providers::table::UserTable>()
            {
                found.push(t.snapshot_id());
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_pins_each_table_where_it_is_read() {
    let (uri, _log) = start_fake().await;
    let ctx = context(&uri, "alice-token");
    crate::sql::extend(&ctx).unwrap();
    let pinned = |sql: &'static str| {
        let ctx = ctx.clone();
        async move { pinned_snapshots(&ctx, sql).await }
    };
    assert_eq!(
        pinned("SELECT * FROM lake.demo.hist").await.unwrap(),
        [None]
    );
    assert_eq!(
        pinned("SELECT * FROM lake.demo.hist FOR VERSION AS OF 1 AS old JOIN lake.demo.hist h ON old.id = h.id")
            .await
            .unwrap(),
        [Some(1), None]
    );
    let mut in_cte_and_subquery = pinned(
        "WITH old AS (SELECT id FROM lake.demo.hist FOR VERSION AS OF 'audit') \
         SELECT * FROM old WHERE id IN \
         (SELECT id FROM lake.demo.hist FOR TIMESTAMP AS OF TIMESTAMP '2023-11-14 22:14:00')",
    )
    .await
    .unwrap();
    in_cte_and_subquery.sort();
    assert_eq!(in_cte_and_subquery, [Some(1), Some(1)]);
    // Any constant expression names a time; the standard's spelling means the same.
    assert_eq!(
        pinned("SELECT * FROM lake.demo.hist FOR TIMESTAMP AS OF TIMESTAMP '2023-11-14 22:13:20' + INTERVAL '150' SECOND")
            .await
            .unwrap(),
        [Some(2)]
    );
    assert_eq!(
        pinned("SELECT * FROM lake.demo.hist FOR SYSTEM_TIME AS OF '2023-11-14T22:13:30Z'")
            .await
            .unwrap(),
        [Some(1)]
    );
    for (sql, code, says) in [
        (
            "SELECT * FROM lake.demo.hist FOR VERSION AS OF 3",
            Code::NotFound,
            "has no snapshot 3",
        ),
        (
            "SELECT * FROM lake.demo.hist FOR VERSION AS OF 'nope'",
            Code::NotFound,
            "no branch or tag 'nope'",
        ),
        (
            "SELECT * FROM lake.demo.hist FOR TIMESTAMP AS OF '2000-01-01'",
            Code::NotFound,
            "no snapshot at or before",
        ),
        (
            "SELECT * FROM lake.demo.hist FOR TIMESTAMP AS OF 42",
            Code::InvalidArgument,
            "needs a timestamp",
        ),
        (
            "SELECT * FROM lake.demo.hist FOR TIMESTAMP AS OF id",
            Code::InvalidArgument,
            "needs a timestamp",
        ),
        (
            "SELECT * FROM lake.information_schema.tables FOR VERSION AS OF 1",
            Code::InvalidArgument,
            "not an Iceberg table",
        ),
        (
            "SELECT * FROM lake.demo.c FOR VERSION AS OF 1",
            Code::PermissionDenied,
            "demo.c",
        ),
        // A CTE named like a table comes first, and has no versions.
        (
            "WITH hist AS (SELECT 1 AS id) SELECT * FROM hist FOR VERSION AS OF 1",
            Code::InvalidArgument,
            "a CTE",
        ),
    ] {
        let e = pinned(sql).await.unwrap_err();
        assert_eq!(e.code(), code, "{sql}: {e}");
        assert!(e.to_string().contains(says), "{sql}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_loads_each_table_once_and_a_later_statement_loads_it_again() {
    let (uri, log) = start_fake().await;
    let ctx = context(&uri, "tok-alice-1");
    let loads = || {
        log.lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == "GET" && s.path == "/v1/namespaces/demo/tables/a")
            .count()
    };
    run(
        &ctx,
        "SELECT x.id FROM lake.demo.a x JOIN lake.demo.a y ON x.id = y.id",
    )
    .await
    .unwrap();
    assert_eq!(loads(), 1, "planning and both scans share one loadTable");
    tokio::time::sleep(super::cache::recent::FRESH_FOR + std::time::Duration::from_millis(50))
        .await;
    run(&ctx, "SELECT count(*) FROM lake.demo.a").await.unwrap();
    assert_eq!(
        loads(),
        2,
        "a later statement reads the table as it is then"
    );
}
