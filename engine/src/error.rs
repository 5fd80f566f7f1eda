//! Every engine error and its gRPC status code, in one place.
//!
//! Messages are written for the client: they never contain a token, password or session handle,
//! and authentication failures are deliberately generic so they cannot be used to enumerate
//! users (wrong password, unknown user and disabled user all read the same).

use datafusion::error::DataFusionError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bad credentials of any kind. One message for all causes: no user enumeration.
    #[error("authentication failed")]
    Unauthenticated,
    /// No credentials were sent at all.
    #[error("authentication required: send `authorization: Basic …` (handshake) or a bearer")]
    MissingCredentials,
    /// Unknown, closed, timed-out or revoked session.
    #[error("session expired or unknown; log in again")]
    SessionInvalid,
    /// The session was sealed with a cluster key the cluster has since retired.
    #[error("session sealed with a retired cluster key; log in again")]
    SessionKeyRetired,
    /// The store sessions are shared through cannot be reached: a new login or a handle this
    /// replica does not hold cannot be served now, but may be in a moment.
    #[error("the session store is unavailable; retry shortly")]
    SessionStoreUnavailable,
    #[error("too many failed logins; retry in {retry_after_secs} s")]
    LoginThrottled { retry_after_secs: u64 },
    #[error("identity provider unavailable; retry later")]
    IdpUnavailable,
    /// The IdP refused the engine's own client (secret, grant type): an operator problem.
    #[error("the engine's identity provider client is misconfigured; contact the operator")]
    IdpMisconfigured,
    #[error("authentication mode `{0}` is not enabled on this server")]
    ModeNotEnabled(&'static str),
    #[error("too many sessions on this server; retry later")]
    TooManySessions,
    #[error("too many sessions for this user (at most {max}); close one or retry later")]
    TooManyUserSessions { max: usize },
    #[error("server is shutting down; reconnect")]
    ShuttingDown,
    /// The catalog refused the user's token (expired at the catalog, wrong audience).
    #[error("{0}")]
    CatalogUnauthenticated(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    Unavailable(String),
    /// What the statement relied on changed between its planning and its run.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A query ran past the server's time limit.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The client cancelled the query.
    #[error("{0}")]
    Cancelled(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// The status code table. Pure, so it reads like the specification.
    pub fn code(&self) -> Code {
        use EngineError::*;
        match self {
            Unauthenticated
            | MissingCredentials
            | SessionInvalid
            | SessionKeyRetired
            | CatalogUnauthenticated(_) => Code::Unauthenticated,
            LoginThrottled { .. }
            | TooManySessions
            | TooManyUserSessions { .. }
            | ResourceExhausted(_) => Code::ResourceExhausted,
            IdpUnavailable | SessionStoreUnavailable | ShuttingDown | Unavailable(_) => {
                Code::Unavailable
            }
            IdpMisconfigured | Internal(_) => Code::Internal,
            ModeNotEnabled(_) => Code::Unauthenticated,
            InvalidArgument(_) => Code::InvalidArgument,
            NotFound(_) => Code::NotFound,
            PermissionDenied(_) => Code::PermissionDenied,
            Unimplemented(_) => Code::Unimplemented,
            FailedPrecondition(_) => Code::FailedPrecondition,
            DeadlineExceeded(_) => Code::DeadlineExceeded,
            Cancelled(_) => Code::Cancelled,
        }
    }

    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        code_label(self.code())
    }
}

pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission_denied",
        Code::NotFound => "not_found",
        Code::InvalidArgument => "invalid_argument",
        Code::ResourceExhausted => "resource_exhausted",
        Code::Unavailable => "unavailable",
        Code::Unimplemented => "unimplemented",
        Code::Cancelled => "cancelled",
        Code::FailedPrecondition => "failed_precondition",
        Code::DeadlineExceeded => "deadline_exceeded",
        _ => "internal",
    }
}

impl EngineError {
    /// The error for `code` with `message`: the inverse of `code()` for the codes that carry a
    /// message. The message is scrubbed of credentials.
    pub fn from_code(code: Code, message: String) -> EngineError {
        let message = crate::redact::scrub(&message).into_owned();
        match code {
            Code::Unauthenticated => EngineError::CatalogUnauthenticated(message),
            Code::PermissionDenied => EngineError::PermissionDenied(message),
            Code::NotFound => EngineError::NotFound(message),
            Code::InvalidArgument => EngineError::InvalidArgument(message),
            Code::Unavailable => EngineError::Unavailable(message),
            Code::ResourceExhausted => EngineError::ResourceExhausted(message),
            Code::Unimplemented => EngineError::Unimplemented(message),
            Code::DeadlineExceeded => EngineError::DeadlineExceeded(message),
            Code::Cancelled => EngineError::Cancelled(message),
            Code::FailedPrecondition => EngineError::FailedPrecondition(message),
            _ => EngineError::Internal(message),
        }
    }

    /// The same error with any credential scrubbed out of its message (text that came from a
    /// catalog, a store or a library).
    pub fn scrubbed(self) -> EngineError {
        use EngineError::*;
        let scrub = |m: String| crate::redact::scrub(&m).into_owned();
        match self {
            CatalogUnauthenticated(m) => CatalogUnauthenticated(scrub(m)),
            InvalidArgument(m) => InvalidArgument(scrub(m)),
            NotFound(m) => NotFound(scrub(m)),
            PermissionDenied(m) => PermissionDenied(scrub(m)),
            ResourceExhausted(m) => ResourceExhausted(scrub(m)),
            Unimplemented(m) => Unimplemented(scrub(m)),
            Unavailable(m) => Unavailable(scrub(m)),
            DeadlineExceeded(m) => DeadlineExceeded(scrub(m)),
            Cancelled(m) => Cancelled(scrub(m)),
            FailedPrecondition(m) => FailedPrecondition(scrub(m)),
            Internal(m) => Internal(scrub(m)),
            other => other,
        }
    }
}

/// Every status the engine sends goes through here, so its message is scrubbed once more.
impl From<EngineError> for Status {
    fn from(e: EngineError) -> Self {
        Status::new(e.code(), crate::redact::scrub(&e.to_string()).into_owned())
    }
}

/// Parse and plan errors are the user's; resource limits and missing features get their own
/// codes; anything else is ours.
impl From<DataFusionError> for EngineError {
    fn from(e: DataFusionError) -> Self {
        let message = crate::redact::scrub(&e.to_string()).into_owned();
        let root = e.find_root();
        // Catalog and storage failures travel through DataFusion as `External` (or inside a
        // Parquet reader's error, from the scans' own readers), already classified where they
        // left the catalog code; they keep their own code.
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(root);
        while let Some(inner) = cause {
            if let Some(engine) = inner.downcast_ref::<EngineError>() {
                return EngineError::from_code(engine.code(), engine.to_string());
            }
            cause = inner.source();
        }
        // A table or namespace the catalog does not have, or does not show this user (a 404
        // resolves to "no such table"; an unlisted namespace to "failed to resolve schema").
        if let DataFusionError::Plan(m) = root
            && ((m.starts_with("table '") && m.ends_with("' not found"))
                || m.starts_with("No table named '")
                || m.starts_with("failed to resolve schema: "))
        {
            return EngineError::NotFound(message);
        }
        match root {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::Configuration(_)
            | DataFusionError::Execution(_) => EngineError::InvalidArgument(message),
            // What the data did to a computation the user asked for: a value that does not
            // cast, a division by zero, a NULL where the table declares NOT NULL.
            DataFusionError::ArrowError(a, _) if is_data_error(a) => {
                EngineError::InvalidArgument(message)
            }
            DataFusionError::ArrowError(a, _)
                if matches!(**a, arrow::error::ArrowError::NotYetImplemented(_)) =>
            {
                EngineError::Unimplemented(message)
            }
            DataFusionError::NotImplemented(_) => EngineError::Unimplemented(message),
            DataFusionError::ResourcesExhausted(_) => EngineError::ResourceExhausted(message),
            _ => EngineError::Internal(message),
        }
    }
}

fn is_data_error(e: &arrow::error::ArrowError) -> bool {
    use arrow::error::ArrowError::*;
    match e {
        // Compute kernels report what a value did to them (`abs` of the smallest integer, an
        // invalid regex, a negative length) as compute errors.
        CastError(_) | ParseError(_) | DivideByZero | ArithmeticOverflow(_) | ComputeError(_) => {
            true
        }
        // Arrow's check of a batch against a NOT NULL column; other invalid arguments are the
        // engine's own mistakes and stay INTERNAL.
        InvalidArgumentError(m) => m.contains("non-nullable"),
        _ => false,
    }
}

impl From<arrow::error::ArrowError> for EngineError {
    fn from(e: arrow::error::ArrowError) -> Self {
        EngineError::Internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_failures_are_unauthenticated_and_generic() {
        for e in [
            EngineError::Unauthenticated,
            EngineError::SessionInvalid,
            EngineError::MissingCredentials,
        ] {
            assert_eq!(e.code(), Code::Unauthenticated);
        }
        assert_eq!(
            EngineError::Unauthenticated.to_string(),
            "authentication failed"
        );
    }

    #[test]
    fn an_unreachable_idp_is_unavailable_not_unauthenticated() {
        assert_eq!(EngineError::IdpUnavailable.code(), Code::Unavailable);
        assert_eq!(EngineError::ShuttingDown.code(), Code::Unavailable);
        // A session store that is down is not a reason to log in again.
        assert_eq!(
            EngineError::SessionStoreUnavailable.code(),
            Code::Unavailable
        );
        assert_eq!(EngineError::SessionKeyRetired.code(), Code::Unauthenticated);
    }

    #[test]
    fn limits_are_resource_exhausted() {
        assert_eq!(EngineError::TooManySessions.code(), Code::ResourceExhausted);
        let throttled = EngineError::LoginThrottled {
            retry_after_secs: 4,
        };
        assert_eq!(throttled.code(), Code::ResourceExhausted);
        assert!(throttled.to_string().contains("4 s"));
    }

    #[test]
    fn failures_inside_a_parquet_read_keep_their_code() {
        // A scan whose session ended while it renewed its storage keys.
        let inner = datafusion::parquet::errors::ParquetError::External(Box::new(
            EngineError::SessionInvalid,
        ));
        let e: EngineError = DataFusionError::ParquetError(Box::new(inner)).into();
        assert_eq!(e.code(), Code::Unauthenticated);
    }

    #[test]
    fn catalog_failures_keep_their_code_through_datafusion() {
        let inner = EngineError::PermissionDenied("table lake.demo.c: forbidden".into());
        let e: EngineError = DataFusionError::External(Box::new(inner)).into();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert!(e.to_string().contains("lake.demo.c"));
        let e: EngineError = DataFusionError::Context(
            "scan".into(),
            Box::new(DataFusionError::External(Box::new(
                EngineError::CatalogUnauthenticated("catalog answered 401".into()),
            ))),
        )
        .into();
        assert_eq!(e.code(), Code::Unauthenticated);
        let e: EngineError = DataFusionError::Plan("table 'lake.demo.zz' not found".into()).into();
        assert_eq!(e.code(), Code::NotFound);
        let e: EngineError =
            DataFusionError::Plan("failed to resolve schema: alice_ws".into()).into();
        assert_eq!(e.code(), Code::NotFound);
    }

    #[test]
    fn what_the_data_does_to_a_computation_is_invalid_argument() {
        use arrow::error::ArrowError;
        for a in [
            ArrowError::DivideByZero,
            ArrowError::CastError("'x' is not an Int64".into()),
            ArrowError::ComputeError("Int64Array overflow on abs(-9223372036854775808)".into()),
            ArrowError::InvalidArgumentError("Column 'id' is declared as non-nullable".into()),
        ] {
            let e: EngineError = DataFusionError::ArrowError(Box::new(a), None).into();
            assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        }
        let io: EngineError = DataFusionError::ArrowError(
            Box::new(ArrowError::IoError(
                "disk".into(),
                std::io::ErrorKind::Other.into(),
            )),
            None,
        )
        .into();
        assert_eq!(io.code(), Code::Internal);
        let ours: EngineError = DataFusionError::ArrowError(
            Box::new(ArrowError::InvalidArgumentError(
                "column types must match".into(),
            )),
            None,
        )
        .into();
        assert_eq!(ours.code(), Code::Internal);
    }

    #[test]
    fn sql_mistakes_are_invalid_argument() {
        // (An unknown table is NOT_FOUND: see catalog_failures_keep_their_code_through_datafusion.)
        let e: EngineError =
            DataFusionError::Plan("No field named nope. Valid fields are t.a.".into()).into();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e: EngineError = DataFusionError::Context(
            "planning".into(),
            Box::new(DataFusionError::NotImplemented("LATERAL".into())),
        )
        .into();
        assert_eq!(e.code(), Code::Unimplemented);
        let e: EngineError = DataFusionError::ResourcesExhausted("memory".into()).into();
        assert_eq!(Status::from(e).code(), Code::ResourceExhausted);
    }
}
