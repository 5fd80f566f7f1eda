//! What the engine gets from its IdP: grants, how a grant failed, the trait that performs
//! them, and the identity a token's claims name.

use std::time::Duration;

use base64::Engine as _;
use futures::future::BoxFuture;
use serde_json::Value;

use crate::secret::Secret;

/// Tokens as the IdP handed them out.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    /// Lifetime of the access token as reported by the IdP (`expires_in`).
    pub expires_in: Duration,
}

/// Who a session acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The display name (`oidc.username_claim`), for logs and the catalog's own audit.
    pub user: String,
    pub roles: Vec<String>,
    /// The token's `sub`: what the IdP never reassigns (a username can change hands).
    pub subject: Option<String>,
}

impl Identity {
    /// Whose quotas (sessions, query slots, memory) a session counts against: the subject, or
    /// the name where a token has none. One issuer per engine, so the subject alone is unique.
    pub fn quota_key(&self) -> String {
        match &self.subject {
            Some(sub) => format!("sub:{sub}"),
            None => format!("user:{}", self.user),
        }
    }
}

/// How the IdP answered a grant, reduced to what the engine must decide.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdpError {
    /// The IdP said no to these credentials (`invalid_grant`): wrong password, unknown or
    /// disabled user, revoked or expired refresh token. Final.
    #[error("rejected by the identity provider ({code})")]
    Rejected { code: String },
    /// The IdP could not be reached or failed (network, 5xx, garbage). Transient.
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
    /// The IdP refused the engine's own client (`invalid_client`, grant not allowed).
    #[error("identity provider refused the engine's client ({0})")]
    Misconfigured(String),
}

impl IdpError {
    /// Maps an OAuth 2 error code (RFC 6749 §5.2) to what it means for the engine.
    pub fn from_oauth_code(code: &str) -> Self {
        match code {
            // invalid_request: Keycloak answers it for an empty username; it is about the
            // user's input, so it must read like any other bad credential.
            "invalid_grant" | "invalid_request" | "access_denied" => IdpError::Rejected {
                code: code.to_string(),
            },
            "temporarily_unavailable" | "server_error" => IdpError::Unavailable(code.to_string()),
            other => IdpError::Misconfigured(other.to_string()),
        }
    }

    /// Only a rejection is final; everything else may go away by itself.
    pub fn is_final(&self) -> bool {
        matches!(self, IdpError::Rejected { .. })
    }
}

/// The grants the engine performs at the IdP. A trait so the session lifecycle can be tested
/// against a scripted IdP.
pub trait TokenIssuer: Send + Sync {
    fn password<'a>(
        &'a self,
        username: &'a str,
        password: &'a Secret,
    ) -> BoxFuture<'a, Result<TokenGrant, IdpError>>;

    /// The client-credentials grant as the *calling* machine client (its own id and secret),
    /// never as the engine's client. A refusal of those credentials is `Rejected`.
    fn client_credentials<'a>(
        &'a self,
        client_id: &'a str,
        client_secret: &'a Secret,
    ) -> BoxFuture<'a, Result<TokenGrant, IdpError>>;

    fn refresh<'a>(
        &'a self,
        refresh_token: &'a Secret,
    ) -> BoxFuture<'a, Result<TokenGrant, IdpError>>;
}

/// The claims of a JWT *without* verifying it. Only for tokens the engine itself just received
/// from the IdP's token endpoint (a trusted channel); client-supplied tokens go through
/// `bearer::BearerValidator`.
pub fn unverified_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Looks up a dotted claim path such as `realm_access.roles`.
pub fn claim_at<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |v, key| v.get(key))
}

/// The user name and roles from the claims; `fallback_user` when the claim is absent.
pub fn identity_from_claims(
    claims: Option<&Value>,
    username_claim: &str,
    roles_claim: &str,
    fallback_user: &str,
) -> Identity {
    let user = claims
        .and_then(|c| claim_at(c, username_claim))
        .and_then(Value::as_str)
        .unwrap_or(fallback_user)
        .to_string();
    let roles = claims
        .and_then(|c| claim_at(c, roles_claim))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let subject = claims
        .and_then(|c| c.get("sub"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Identity {
        user,
        roles,
        subject,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwt(claims: &Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            b64(br#"{"alg":"RS256"}"#),
            b64(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn identity_comes_from_the_configured_claims() {
        let token =
            jwt(&json!({"preferred_username": "alice", "realm_access": {"roles": ["r1", "r2"]}}));
        let claims = unverified_claims(&token);
        let id = identity_from_claims(
            claims.as_ref(),
            "preferred_username",
            "realm_access.roles",
            "x",
        );
        assert_eq!(id.user, "alice");
        assert_eq!(id.roles, vec!["r1", "r2"]);
    }

    #[test]
    fn quotas_follow_the_subject_not_the_display_name() {
        let named = |user: &str, sub: Option<&str>| Identity {
            user: user.into(),
            roles: vec![],
            subject: sub.map(str::to_string),
        };
        let alice = named("alice", Some("f3a1"));
        assert_eq!(
            alice.quota_key(),
            named("alice-renamed", Some("f3a1")).quota_key()
        );
        assert_ne!(alice.quota_key(), named("alice", Some("07b2")).quota_key());
        // A name cannot pose as a subject.
        assert_ne!(named("sub:f3a1", None).quota_key(), alice.quota_key());
    }

    #[test]
    fn missing_claims_fall_back_to_the_login_name_and_no_roles() {
        let token = jwt(&json!({"sub": "123"}));
        let id = identity_from_claims(
            unverified_claims(&token).as_ref(),
            "preferred_username",
            "realm_access.roles",
            "label",
        );
        assert_eq!(
            id,
            Identity {
                user: "label".into(),
                roles: vec![],
                subject: Some("123".into()),
            }
        );
        assert!(unverified_claims("not-a-jwt").is_none());
    }

    #[test]
    fn oauth_error_codes_decide_final_versus_transient() {
        assert!(IdpError::from_oauth_code("invalid_grant").is_final());
        assert!(IdpError::from_oauth_code("invalid_request").is_final());
        assert!(!IdpError::from_oauth_code("temporarily_unavailable").is_final());
        assert!(matches!(
            IdpError::from_oauth_code("invalid_client"),
            IdpError::Misconfigured(_)
        ));
        assert!(matches!(
            IdpError::from_oauth_code("unauthorized_client"),
            IdpError::Misconfigured(_)
        ));
    }
}
