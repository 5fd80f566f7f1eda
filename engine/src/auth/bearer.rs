//! Bearer mode: a client presents its own IdP access token (a JWT). The engine checks it
//! against the IdP's published keys, the configured issuer and audience, that it is an access
//! token (`typ`: not an ID or refresh token) and that it was issued to an allowed client
//! (`azp`, where present), and then uses it unchanged. Keys are re-fetched every `KEYS_MAX_AGE`
//! (a key the IdP withdrew stops being trusted then), and when a token names an unknown `kid`
//! (key rotation), at most once per `MIN_REFETCH` so garbage `kid`s cannot hammer the IdP. If the
//! IdP cannot be reached, the keys in hand serve until `KEYS_MAX_STALE`, then bearer logins are
//! UNAVAILABLE.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;
use tokio::time::Instant;

use super::idp::IdpError;
use super::oidc::OidcProvider;

const MIN_REFETCH: Duration = Duration::from_secs(5);
/// How long fetched keys are trusted before they are fetched again.
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(300);
/// How long keys may serve while the IdP cannot be reached to refresh them.
pub const KEYS_MAX_STALE: Duration = Duration::from_secs(3600);
/// Clock skew tolerated on `exp`/`nbf`. Small: a bearer session ends when its token does.
pub const LEEWAY_SECS: u64 = 5;

/// Why a bearer token was refused; logged, never sent to the client (which gets the generic
/// UNAUTHENTICATED message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    #[error("invalid bearer token: {0}")]
    Invalid(&'static str),
    #[error("cannot fetch the IdP's keys: {0}")]
    Unavailable(String),
}

pub trait JwksSource: Send + Sync {
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, IdpError>>;
}

/// JWKS from the `jwks_uri` found by discovery.
pub struct DiscoveredJwks {
    pub oidc: Arc<OidcProvider>,
    pub http: reqwest::Client,
}

impl JwksSource for DiscoveredJwks {
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, IdpError>> {
        Box::pin(async move {
            let uri = self.oidc.discovered().await?.jwks_uri.clone();
            let body: Value = self
                .http
                .get(uri)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| IdpError::Unavailable(format!("JWKS: {e}")))?
                .json()
                .await
                .map_err(|e| IdpError::Unavailable(format!("JWKS: {e}")))?;
            Ok(parse_jwks(&body))
        })
    }
}

/// Keys one by one: an IdP also publishes keys we cannot use (Keycloak's RSA-OAEP encryption
/// key), and one odd key must not make the whole set unusable.
pub fn parse_jwks(body: &Value) -> Vec<Jwk> {
    body.get("keys")
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

pub struct BearerPolicy {
    pub issuer: String,
    pub audience: String,
    pub algorithms: Vec<Algorithm>,
    /// Clients (`azp`) whose tokens are accepted; a token without `azp` is judged by its
    /// audience alone.
    pub allowed_clients: Vec<String>,
}

/// Whether the token is an access token by its `typ` header and claim. Keycloak writes
/// `typ: "Bearer"` into access tokens, `"ID"` into ID tokens and `"Refresh"` into refresh
/// tokens; RFC 9068 access tokens carry the header `typ: at+jwt`. A token that says nothing is
/// taken for an access token (other IdPs omit both).
pub fn is_access_token(header_typ: Option<&str>, claims: &Value) -> bool {
    let header_ok = header_typ.is_none_or(|t| {
        let t = t.trim().to_ascii_lowercase();
        let t = t.strip_prefix("application/").unwrap_or(&t);
        t == "jwt" || t == "at+jwt"
    });
    let claim_ok = claims
        .get("typ")
        .is_none_or(|t| t.as_str().is_some_and(|t| t.eq_ignore_ascii_case("bearer")));
    header_ok && claim_ok
}

/// Whether the token's authorized party (`azp`), if it names one, is an allowed client.
pub fn authorized_party_allowed(claims: &Value, allowed: &[String]) -> bool {
    match claims.get("azp") {
        None => true,
        Some(azp) => azp
            .as_str()
            .is_some_and(|azp| allowed.iter().any(|a| a == azp)),
    }
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct ValidBearer {
    pub claims: Value,
    /// `exp` as a wall-clock time: the session ends there.
    pub expires_at: SystemTime,
}

pub struct BearerValidator {
    policy: BearerPolicy,
    source: Box<dyn JwksSource>,
    keys: RwLock<Vec<Jwk>>,
    /// Last attempt (bounds re-fetches on unknown `kid`s).
    last_fetch: Mutex<Option<Instant>>,
    /// Last success: the age of the keys in hand.
    fetched_at: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
}

impl BearerValidator {
    pub fn new(policy: BearerPolicy, source: Box<dyn JwksSource>) -> Self {
        Self {
            policy,
            source,
            keys: RwLock::new(Vec::new()),
            last_fetch: Mutex::new(None),
            fetched_at: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    pub async fn validate(&self, token: &str) -> Result<ValidBearer, BearerError> {
        let header = decode_header(token).map_err(|_| BearerError::Invalid("malformed"))?;
        if !self.policy.algorithms.contains(&header.alg) {
            return Err(BearerError::Invalid("algorithm not allowed"));
        }
        self.keep_keys_fresh().await?;
        let jwk = match self.find_key(header.kid.as_deref(), header.alg) {
            Some(k) => k,
            None => {
                self.refetch().await?;
                self.find_key(header.kid.as_deref(), header.alg)
                    .ok_or(BearerError::Invalid("unknown signing key"))?
            }
        };
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|_| BearerError::Invalid("unusable signing key"))?;
        let claims = decode::<Value>(token, &key, &self.validation(header.alg))
            .map_err(|e| BearerError::Invalid(reason(e.kind())))?
            .claims;
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(BearerError::Invalid("no exp"))?;
        if !is_access_token(header.typ.as_deref(), &claims) {
            return Err(BearerError::Invalid("not an access token"));
        }
        if !authorized_party_allowed(&claims, &self.policy.allowed_clients) {
            return Err(BearerError::Invalid(
                "issued to a client that is not allowed",
            ));
        }
        Ok(ValidBearer {
            claims,
            expires_at: UNIX_EPOCH + Duration::from_secs(exp),
        })
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[&self.policy.issuer]);
        v.set_audience(&[&self.policy.audience]);
        v.required_spec_claims =
            HashSet::from(["exp".to_string(), "iss".to_string(), "aud".to_string()]);
        v
    }

    /// A key matching the token's `kid` (or, for a token without `kid`, the only key that
    /// fits the algorithm), never one meant for encryption.
    fn find_key(&self, kid: Option<&str>, alg: Algorithm) -> Option<Jwk> {
        let keys = self.keys.read().ok()?;
        let usable = |k: &&Jwk| {
            !matches!(
                k.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            ) && k
                .common
                .key_algorithm
                .map(|ka| key_algorithm_is(ka, alg))
                .unwrap_or(true)
        };
        match kid {
            Some(kid) => keys
                .iter()
                .filter(usable)
                .find(|k| k.common.key_id.as_deref() == Some(kid))
                .cloned(),
            None => {
                let mut fitting = keys.iter().filter(usable);
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Some(k.clone()),
                    _ => None,
                }
            }
        }
    }

    fn keys_age(&self) -> Option<Duration> {
        self.fetched_at
            .lock()
            .ok()
            .and_then(|g| *g)
            .map(|t| t.elapsed())
    }

    /// Keys older than `KEYS_MAX_AGE` are fetched again before use; if that fails they serve
    /// on until `KEYS_MAX_STALE`.
    async fn keep_keys_fresh(&self) -> Result<(), BearerError> {
        match self.keys_age() {
            Some(age) if age < KEYS_MAX_AGE => Ok(()),
            None => Ok(()), // nothing fetched yet: the key lookup fetches
            Some(age) => match self.refetch().await {
                Ok(()) => Ok(()),
                Err(_) if age < KEYS_MAX_STALE => Ok(()),
                Err(e) => Err(e),
            },
        }
    }

    async fn refetch(&self) -> Result<(), BearerError> {
        let _single = self.fetching.lock().await;
        let recent = self
            .last_fetch
            .lock()
            .ok()
            .and_then(|g| *g)
            .is_some_and(|t| t.elapsed() < MIN_REFETCH);
        if recent {
            return Ok(());
        }
        if let Ok(mut t) = self.last_fetch.lock() {
            *t = Some(Instant::now());
        }
        let keys = self
            .source
            .fetch()
            .await
            .map_err(|e| BearerError::Unavailable(e.to_string()))?;
        if let Ok(mut slot) = self.keys.write() {
            *slot = keys;
        }
        if let Ok(mut t) = self.fetched_at.lock() {
            *t = Some(Instant::now());
        }
        Ok(())
    }
}

/// `KeyAlgorithm` → `Algorithm` by name (the crate keeps its own conversion private).
fn key_algorithm_is(ka: jsonwebtoken::jwk::KeyAlgorithm, alg: Algorithm) -> bool {
    serde_json::to_value(ka)
        .ok()
        .and_then(|v| v.as_str().and_then(|s| Algorithm::from_str(s).ok()))
        == Some(alg)
}

fn reason(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind::*;
    match kind {
        ExpiredSignature => "expired",
        ImmatureSignature => "not yet valid",
        InvalidIssuer => "wrong issuer",
        InvalidAudience => "wrong audience",
        InvalidSignature => "bad signature",
        InvalidAlgorithm => "algorithm not allowed",
        MissingRequiredClaim(_) => "missing required claim",
        _ => "malformed",
    }
}

/// Seconds from now until `t` (0 if past).
pub fn remaining(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
#[path = "bearer_tests.rs"]
mod tests;
