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
use crate::error::EngineError;
use crate::query::QueryContextFactory;
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
    };
    let f = CatalogContextFactory::new(&config, crate::memory::shared_pool(256 << 20), 64 << 20, 2)
        .unwrap();
    let id = Identity {
        user: user.into(),
        roles: vec![],
    };
    let view = TokenView {
        access_token: Secret::new(token),
        fingerprint: Fingerprint::of(token),
        latest: LatestToken::fixed(Secret::new(token)),
    };
    f.create(&id, &view, &f.session_pool()).unwrap()
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
