//! Credentials on the wire: the `authorization` header of the Handshake or of any call.
//!
//! - `Basic base64(user:password)` logs in (ADBC sends it without base64 padding);
//! - `Bearer sqe_…` is a session handle the engine issued;
//! - `Bearer <JWT>` is the client's own IdP token (bearer mode).

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sqe_engine_config::AuthMode;

use crate::error::EngineError;
use crate::secret::Secret;
use crate::session::SessionHandle;

/// Optional header choosing the Basic login mode when several are enabled.
pub const AUTH_MODE_HEADER: &str = "x-sqe-auth-mode";

/// Padding optional, as clients disagree on it (ADBC omits it; RFC 7617 clients send it).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub enum Presented {
    Basic { user: String, password: Secret },
    Handle(Secret),
    Jwt(Secret),
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Presented::Basic { user, .. } => write!(f, "Basic({user}, <redacted>)"),
            Presented::Handle(_) => f.write_str("Handle(<redacted>)"),
            Presented::Jwt(_) => f.write_str("Jwt(<redacted>)"),
        }
    }
}

/// Parses an `authorization` value. Malformed values are plain authentication failures.
pub fn parse_authorization(value: &str) -> Result<Presented, EngineError> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').ok_or(EngineError::Unauthenticated)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = LENIENT
            .decode(rest)
            .map_err(|_| EngineError::Unauthenticated)?;
        let text = String::from_utf8(decoded).map_err(|_| EngineError::Unauthenticated)?;
        let (user, password) = text.split_once(':').ok_or(EngineError::Unauthenticated)?;
        Ok(Presented::Basic {
            user: user.to_string(),
            password: Secret::new(password),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        if SessionHandle::is_handle(rest) {
            Ok(Presented::Handle(Secret::new(rest)))
        } else {
            Ok(Presented::Jwt(Secret::new(rest)))
        }
    } else {
        Err(EngineError::Unauthenticated)
    }
}

pub fn parse_mode(value: &str) -> Result<AuthMode, EngineError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "password" => Ok(AuthMode::Password),
        "client_credentials" => Ok(AuthMode::ClientCredentials),
        "bearer" => Ok(AuthMode::Bearer),
        _ => Err(EngineError::InvalidArgument(format!(
            "{AUTH_MODE_HEADER} must be `password` or `client_credentials`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(v: &str) -> (String, String) {
        match parse_authorization(v).unwrap() {
            Presented::Basic { user, password } => (user, password.expose().to_string()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn basic_is_accepted_with_and_without_base64_padding() {
        // "alice:alice-pw" is 14 bytes → base64 needs one '='.
        let padded = base64::engine::general_purpose::STANDARD.encode("alice:alice-pw");
        assert!(padded.ends_with('='));
        let unpadded = padded.trim_end_matches('=');
        assert_eq!(
            basic(&format!("Basic {padded}")),
            ("alice".into(), "alice-pw".into())
        );
        assert_eq!(
            basic(&format!("Basic {unpadded}")),
            ("alice".into(), "alice-pw".into())
        );
        assert_eq!(basic(&format!("basic {unpadded}")).0, "alice");
    }

    #[test]
    fn passwords_may_contain_colons() {
        let v = base64::engine::general_purpose::STANDARD.encode("bob:a:b:c");
        assert_eq!(basic(&format!("Basic {v}")), ("bob".into(), "a:b:c".into()));
    }

    #[test]
    fn bearer_distinguishes_session_handles_from_jwts() {
        let h = SessionHandle::generate();
        let v = format!("Bearer {}", h.secret().expose());
        assert!(matches!(
            parse_authorization(&v).unwrap(),
            Presented::Handle(_)
        ));
        assert!(matches!(
            parse_authorization("Bearer eyJ.eyJ.sig").unwrap(),
            Presented::Jwt(_)
        ));
    }

    #[test]
    fn garbage_is_unauthenticated_and_never_echoed() {
        for v in [
            "",
            "Basic",
            "Basic !!!",
            "Token abc",
            "Bearer ",
            "Basic bm9jb2xvbg",
        ] {
            let e = parse_authorization(v).unwrap_err();
            assert!(matches!(e, EngineError::Unauthenticated), "{v}");
        }
    }

    #[test]
    fn debug_output_hides_credentials() {
        let v = base64::engine::general_purpose::STANDARD.encode("alice:hunter2");
        let p = parse_authorization(&format!("Basic {v}")).unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
