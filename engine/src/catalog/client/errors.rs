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
#[path = "errors_tests.rs"]
mod tests;
