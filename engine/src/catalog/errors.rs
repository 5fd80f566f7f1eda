//! Catalog failures → engine errors (and so gRPC codes), in one pure table.
//!
//! iceberg-catalog-rest 0.10.1 turns every non-2xx answer into `ErrorKind::Unexpected` with the
//! HTTP status and the body only in its (private) context, visible through `Display`:
//! `Unexpected, context: { status: 403 Forbidden, headers: {..}, json: {..} } => ...`.
//! So the status and the catalog's own message are read back from that text. Request headers
//! (the bearer) are never part of it; response headers are redacted by the client.

use std::error::Error as StdError;

use datafusion::error::DataFusionError;
use iceberg::ErrorKind;
use tonic::Code;

use crate::error::EngineError;

/// What a catalog HTTP status means for the caller.
pub fn code_for_http_status(status: u16) -> Code {
    match status {
        401 | 419 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        400 | 406 | 409 | 422 => Code::InvalidArgument,
        408 | 429 | 500..=599 => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// The code for an error model `type` that says more than its HTTP status. Nessie 0.99 answers
/// an authorization failure with HTTP 500 and type `AccessCheckException` (its error mapper has
/// no case for it; see e2e/tests/test_catalog.py), which is a denial, not an outage.
pub fn code_for_error_type(error_type: &str) -> Option<Code> {
    match error_type {
        "AccessCheckException" | "ForbiddenException" | "AccessDeniedException" => {
            Some(Code::PermissionDenied)
        }
        "NotAuthorizedException" | "NotAuthenticatedException" => Some(Code::Unauthenticated),
        "NoSuchTableException" | "NoSuchNamespaceException" | "NoSuchViewException" => {
            Some(Code::NotFound)
        }
        _ => None,
    }
}

/// An engine error for a catalog answer with `status` (and the error model's `type`, if any),
/// naming what was asked for and passing on the catalog's message.
pub fn http_error(status: u16, error: &RestError, subject: &str) -> EngineError {
    let detail = error
        .message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    let message = format!("catalog answered {status} for {subject}{detail}");
    let code = error
        .error_type
        .as_deref()
        .and_then(code_for_error_type)
        .unwrap_or_else(|| code_for_http_status(status));
    EngineError::from_code(code, message)
}

/// What a failed REST call said, read back from iceberg's error text.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RestError {
    pub status: Option<u16>,
    pub message: Option<String>,
    pub error_type: Option<String>,
}

/// Reads `status: NNN` and the REST error model's `error.message`/`error.type` out of an
/// iceberg error's display text. Pure, so it is tested against the exact format 0.10.1 writes.
pub fn parse_rest_error(display: &str) -> RestError {
    let status = display.find("status: ").and_then(|i| {
        let digits: String = display[i + 8..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    });
    let body = display.find("json: ").and_then(|i| {
        // The body is the last context entry; read one JSON value and ignore what follows.
        let mut values =
            serde_json::Deserializer::from_str(&display[i + 6..]).into_iter::<serde_json::Value>();
        values.next()?.ok()
    });
    let field = |name: &str| {
        let body = body.as_ref()?;
        let error = body.get("error").unwrap_or(body);
        error.get(name).and_then(|m| m.as_str()).map(str::to_owned)
    };
    RestError {
        status,
        message: field("message"),
        error_type: field("type"),
    }
}

/// What an object-store answer means for the caller. Reads and writes of data, manifests and
/// metadata go to the object store, not the catalog, so they are reported as the store's.
fn code_for_storage_error(kind: opendal::ErrorKind, temporary: bool) -> Code {
    use opendal::ErrorKind as K;
    match kind {
        K::PermissionDenied => Code::PermissionDenied,
        K::NotFound => Code::NotFound,
        K::RateLimited => Code::Unavailable,
        _ if temporary => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// An engine error for an object-store failure while working on `subject`. opendal's message is
/// the store's own error (S3 code, message, resource, request id); never a key or signature.
fn storage_error(e: &opendal::Error, subject: &str) -> EngineError {
    if is_unreachable(e) {
        // No answer at all: the store is down or not reachable from here, not refusing anyone.
        return EngineError::Unavailable(format!(
            "object store unreachable for {subject}: {}",
            e.message()
        ));
    }
    let code = code_for_storage_error(e.kind(), e.is_temporary());
    EngineError::from_code(
        code,
        format!(
            "object store answered {} for {subject}: {}",
            e.kind(),
            e.message()
        ),
    )
}

/// opendal's error for a request that got no HTTP response (connection refused, DNS, TLS,
/// timeout); after its retries it is no longer marked temporary, so the message tells.
fn is_unreachable(e: &opendal::Error) -> bool {
    e.kind() == opendal::ErrorKind::Unexpected && e.message() == "send http request"
}

/// A DataFusion error with any iceberg error inside it replaced by its classification: iceberg
/// errors are classified here, where they leave the catalog code, so the rest of the engine sees
/// only `EngineError`s inside DataFusion's errors.
pub fn classified(e: DataFusionError, subject: &str) -> DataFusionError {
    match iceberg_cause(&e, subject) {
        Some(classified) => DataFusionError::External(Box::new(classified)),
        None => e,
    }
}

/// The classification of the first iceberg error in `e`'s chain, if there is one.
pub fn iceberg_cause(e: &(dyn StdError + 'static), subject: &str) -> Option<EngineError> {
    let mut cause = Some(e);
    while let Some(inner) = cause {
        if let Some(iceberg) = inner.downcast_ref::<iceberg::Error>() {
            return Some(classify(iceberg, subject));
        }
        cause = inner.source();
    }
    None
}

/// Classifies any iceberg error from a catalog call about `subject` (e.g. "table lake.demo.c").
/// The message is scrubbed of credentials: iceberg puts whole catalog answers (vended keys
/// included) into its errors.
pub fn classify(err: &iceberg::Error, subject: &str) -> EngineError {
    classify_unscrubbed(err, subject).scrubbed()
}

fn classify_unscrubbed(err: &iceberg::Error, subject: &str) -> EngineError {
    // Errors the engine raised itself inside an iceberg call (e.g. no vended credentials), and
    // the object store's: their response text also carries an HTTP status, but not the catalog's.
    let mut source = StdError::source(err);
    while let Some(s) = source {
        if let Some(e) = s.downcast_ref::<EngineError>() {
            return EngineError::from_code(e.code(), e.to_string());
        }
        if let Some(e) = s.downcast_ref::<opendal::Error>() {
            return storage_error(e, subject);
        }
        if let Some(r) = s.downcast_ref::<reqwest::Error>()
            && (r.is_timeout() || r.is_connect() || r.is_request())
        {
            return EngineError::Unavailable(format!(
                "catalog unreachable for {subject}: {}",
                reqwest_summary(r)
            ));
        }
        source = s.source();
    }
    match err.kind() {
        ErrorKind::TableNotFound | ErrorKind::NamespaceNotFound => {
            EngineError::NotFound(format!("{subject} not found: {}", err.message()))
        }
        ErrorKind::TableAlreadyExists | ErrorKind::NamespaceAlreadyExists => {
            EngineError::InvalidArgument(format!("{subject} already exists"))
        }
        ErrorKind::CatalogCommitConflicts => EngineError::Unavailable(format!(
            "commit conflict on {subject}; retry: {}",
            err.message()
        )),
        ErrorKind::FeatureUnsupported => {
            EngineError::Unimplemented(format!("{subject}: {}", err.message()))
        }
        ErrorKind::DataInvalid | ErrorKind::PreconditionFailed => {
            EngineError::InvalidArgument(format!("{subject}: {}", err.message()))
        }
        _ => match parse_rest_error(&err.to_string()) {
            rest @ RestError {
                status: Some(status),
                ..
            } => http_error(status, &rest, subject),
            _ => EngineError::Internal(format!("catalog call for {subject} failed: {err}")),
        },
    }
}

/// Without the URL's query string (never a token there, but keep messages short).
fn reqwest_summary(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    match e.url() {
        Some(u) => format!("{kind} ({}://{}{})", u.scheme(), u.authority(), u.path()),
        None => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
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
        iceberg::Error::new(ErrorKind::Unexpected, "Failure in doing io operation")
            .with_source(store)
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
        let inner =
            EngineError::PermissionDenied("no credentials vended for table lake.demo.a".into());
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
}
