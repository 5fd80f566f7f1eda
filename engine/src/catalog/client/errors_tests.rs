//! Tests of `errors`, in a file of their own so the source reads as source.

use super::*;

/// The exact shape iceberg-catalog-rest 0.10.1 produces for a non-2xx answer.
fn rest_error(status: &str, json: Option<&str>) -> iceberg::Error {
    let e = iceberg::Error::new(
        ErrorKind::Unexpected,
        "Received response with unexpected status code",
    )
    .with_context("status", status)
    .with_context("headers", "{\"content-type\": \"application/json\"}");
    match json {
        Some(j) => e.with_context("json", j),
        None => e,
    }
}

#[test]
fn http_statuses_map_to_the_status_table() {
    assert_eq!(code_for_http_status(401), Code::Unauthenticated);
    assert_eq!(code_for_http_status(403), Code::PermissionDenied);
    assert_eq!(code_for_http_status(404), Code::NotFound);
    assert_eq!(code_for_http_status(409), Code::InvalidArgument);
    for s in [500, 502, 503, 504, 429] {
        assert_eq!(code_for_http_status(s), Code::Unavailable, "{s}");
    }
    assert_eq!(code_for_http_status(418), Code::Internal);
}

#[test]
fn the_catalog_message_is_passed_on_with_the_right_code() {
    let body = r#"{"error":{"message":"Not allowed to read demo.c","type":"ForbiddenException","code":403}}"#;
    let e = classify(
        &rest_error("403 Forbidden", Some(body)),
        "table lake.demo.c",
    );
    assert_eq!(e.code(), Code::PermissionDenied);
    let m = e.to_string();
    assert!(
        m.contains("lake.demo.c") && m.contains("Not allowed to read demo.c"),
        "{m}"
    );

    let e = classify(&rest_error("401 Unauthorized", None), "namespaces");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.to_string().contains("401"), "{e}");

    let e = classify(
        &rest_error("503 Service Unavailable", Some("upstream down")),
        "table lake.demo.a",
    );
    assert_eq!(e.code(), Code::Unavailable);
}

#[test]
fn nessies_500_access_check_is_a_denial_not_an_outage() {
    let body = r#"{"error":{"message":"Not authorized: role 'bob' may not READ_ENTITY_VALUE on 'demo.c'","type":"AccessCheckException","code":500}}"#;
    let e = classify(
        &rest_error("500 Internal Server Error", Some(body)),
        "table lake.demo.c",
    );
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.to_string().contains("role 'bob'"), "{e}");
    let plain_500 = r#"{"error":{"message":"boom","type":"RuntimeException","code":500}}"#;
    let e = classify(
        &rest_error("500 Internal Server Error", Some(plain_500)),
        "t",
    );
    assert_eq!(e.code(), Code::Unavailable);
    let e = classify(
        &rest_error(
            "404 Not Found",
            Some(r#"{"error":{"message":"x","type":"NoSuchTableException","code":404}}"#),
        ),
        "t",
    );
    assert_eq!(e.code(), Code::NotFound);
}

#[test]
fn parse_reads_status_and_message_and_ignores_trailing_text() {
    let text = rest_error(
        "404 Not Found",
        Some(r#"{"error":{"message":"Table does not exist: demo.x","code":404}}"#),
    )
    .to_string();
    assert_eq!(
        parse_rest_error(&text),
        RestError {
            status: Some(404),
            message: Some("Table does not exist: demo.x".into()),
            error_type: None,
        }
    );
    assert_eq!(parse_rest_error("Unexpected => boom"), RestError::default());
}

#[test]
fn iceberg_kinds_map_without_http() {
    let nf = iceberg::Error::new(
        ErrorKind::TableNotFound,
        "Tried to load a table that does not exist",
    );
    assert_eq!(classify(&nf, "table lake.demo.x").code(), Code::NotFound);
    let dup = iceberg::Error::new(ErrorKind::TableAlreadyExists, "exists");
    assert_eq!(classify(&dup, "table t").code(), Code::InvalidArgument);
    let other = iceberg::Error::new(ErrorKind::Unexpected, "no status here");
    assert_eq!(classify(&other, "x").code(), Code::Internal);
}

/// How iceberg's FileIO reports a refused S3 read: opendal's error, whose context holds the
/// response (with its status) — which must not be taken for the catalog's answer.
fn refused_read(kind: opendal::ErrorKind, code: &str) -> iceberg::Error {
    let store = opendal::Error::new(kind, format!("S3Error {{ code: \"{code}\" }}"))
        .with_context(
            "uri",
            "http://127.0.0.1:19000/warehouse/demo/a/data/x.parquet",
        )
        .with_context("response", "Parts { status: 403, version: HTTP/1.1 }");
    iceberg::Error::new(ErrorKind::Unexpected, "Failure in doing io operation").with_source(store)
}

#[test]
fn an_object_store_that_does_not_answer_is_unavailable() {
    let refused = opendal::Error::new(opendal::ErrorKind::Unexpected, "send http request")
        .with_context("url", "http://127.0.0.1:1/warehouse/demo/c/data/x.parquet");
    let e = classify(
        &iceberg::Error::new(ErrorKind::Unexpected, "Failure in doing io operation")
            .with_source(refused),
        "table lake.demo.c",
    );
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.to_string().contains("unreachable"), "{e}");
}

#[test]
fn object_store_failures_are_the_stores_not_the_catalogs() {
    let e = classify(
        &refused_read(opendal::ErrorKind::PermissionDenied, "AccessDenied"),
        "the query",
    );
    assert_eq!(e.code(), Code::PermissionDenied);
    let text = e.to_string();
    assert!(text.starts_with("object store answered"), "{text}");
    assert!(
        text.contains("AccessDenied") && !text.contains("catalog"),
        "{text}"
    );

    let missing = classify(
        &refused_read(opendal::ErrorKind::NotFound, "NoSuchKey"),
        "t",
    );
    assert_eq!(missing.code(), Code::NotFound);
    let slow = refused_read(opendal::ErrorKind::RateLimited, "SlowDown");
    assert_eq!(classify(&slow, "t").code(), Code::Unavailable);
}

#[test]
fn a_temporary_store_failure_is_unavailable_and_a_permanent_one_ours() {
    use opendal::ErrorKind as K;
    assert_eq!(
        code_for_storage_error(K::Unexpected, true),
        Code::Unavailable
    );
    assert_eq!(code_for_storage_error(K::Unexpected, false), Code::Internal);
    assert_eq!(
        code_for_storage_error(K::ConfigInvalid, false),
        Code::Internal
    );
}

#[test]
fn an_engine_error_inside_an_iceberg_error_keeps_its_code() {
    let inner = EngineError::PermissionDenied("no credentials vended for table lake.demo.a".into());
    let e = iceberg::Error::new(ErrorKind::Unexpected, "wrapped").with_source(inner);
    let out = classify(&e, "table lake.demo.a");
    assert_eq!(out.code(), Code::PermissionDenied);
    assert!(out.to_string().contains("no credentials vended"));
}

#[test]
fn an_unparseable_load_table_answer_never_carries_its_vended_keys_on() {
    // iceberg-catalog-rest 0.10.1 (client.rs, deserialize_catalog_response) puts the whole
    // body into the error when it cannot parse it, vended keys included.
    let body = r#"{"metadata-location":"s3://warehouse/demo/a/m.json","metadata":{"format-version":9},"config":{"s3.access-key-id":"ASIAVENDED0001","s3.secret-access-key":"vended-secret-0001/xyz","s3.session-token":"vended-session-token-0001=="}}"#;
    let e = iceberg::Error::new(
        ErrorKind::Unexpected,
        "Failed to parse response from rest catalog server",
    )
    .with_context("json", body)
    .with_source(serde_json::from_str::<u8>("x").unwrap_err());
    let out = classify(&e, "table lake.demo.a");
    let status = tonic::Status::from(classify(&e, "table lake.demo.a"));
    for text in [out.to_string(), status.message().to_string()] {
        for secret in [
            "ASIAVENDED0001",
            "vended-secret-0001",
            "vended-session-token-0001",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("table lake.demo.a"), "{text}");
    }
}

#[tokio::test]
async fn a_refused_connection_is_unavailable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/config"))
        .send()
        .await
        .unwrap_err();
    let e: iceberg::Error = r.into();
    assert_eq!(classify(&e, "catalog config").code(), Code::Unavailable);
}
