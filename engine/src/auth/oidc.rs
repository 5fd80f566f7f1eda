//! The OIDC provider: discovery and the token grants, through the `openidconnect` crate.
//!
//! Discovery is lazy and retried: an IdP that is down at start-up makes logins fail with
//! UNAVAILABLE and `/readyz` report not-ready, instead of crashing the engine.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use openidconnect::core::{
    CoreClient, CoreErrorResponseType, CoreProviderMetadata, CoreTokenResponse,
};
use openidconnect::{
    ClientId, ClientSecret, EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpClientError,
    IssuerUrl, OAuth2TokenResponse, RefreshToken, RequestTokenError, ResourceOwnerPassword,
    ResourceOwnerUsername, StandardErrorResponse,
};
use url::Url;

use super::idp::{IdpError, TokenGrant, TokenIssuer, unverified_claims};
use crate::secret::Secret;

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

type TokenError = RequestTokenError<
    HttpClientError<openidconnect::reqwest::Error>,
    StandardErrorResponse<CoreErrorResponseType>,
>;

/// What discovery told us about the IdP.
pub struct Discovered {
    client: Client,
    /// Kept to build a client for a machine client's own credentials.
    metadata: CoreProviderMetadata,
    pub issuer: String,
    pub jwks_uri: Url,
}

pub struct OidcProvider {
    issuer: IssuerUrl,
    /// Where the discovery document is fetched: the issuer, or the address the engine reaches a
    /// Keycloak at when its public URL (the issuer) is another.
    discovery_base: Url,
    client_id: ClientId,
    client_secret: Option<ClientSecret>,
    http: openidconnect::reqwest::Client,
    discovered: RwLock<Option<Arc<Discovered>>>,
    /// Single flight for discovery: concurrent logins at start-up trigger one request.
    discovering: tokio::sync::Mutex<()>,
}

/// Grants without a lifetime get this one: short, so a missing field errs on the side of
/// refreshing early rather than using an expired token.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

impl OidcProvider {
    pub fn new(
        issuer: &Url,
        discovery_base: &Url,
        client_id: &str,
        client_secret: Option<&str>,
        http: openidconnect::reqwest::Client,
    ) -> Result<Self, IdpError> {
        let issuer = IssuerUrl::new(issuer.as_str().trim_end_matches('/').to_string())
            .map_err(|e| IdpError::Misconfigured(format!("issuer URL: {e}")))?;
        Ok(Self {
            issuer,
            discovery_base: discovery_base.clone(),
            client_id: ClientId::new(client_id.to_string()),
            client_secret: client_secret.map(|s| ClientSecret::new(s.to_string())),
            http,
            discovered: RwLock::new(None),
            discovering: tokio::sync::Mutex::new(()),
        })
    }

    /// An HTTP client fit for talking to the IdP: no redirects (the token endpoint must not be
    /// able to bounce credentials elsewhere) and a bounded time per request.
    pub fn http_client(timeout: Duration) -> Result<openidconnect::reqwest::Client, IdpError> {
        openidconnect::reqwest::Client::builder()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| IdpError::Misconfigured(format!("HTTP client: {e}")))
    }

    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    /// True once discovery has succeeded.
    pub fn is_ready(&self) -> bool {
        self.cached().is_some()
    }

    fn cached(&self) -> Option<Arc<Discovered>> {
        self.discovered.read().ok().and_then(|g| g.clone())
    }

    /// The discovered provider, fetching the metadata on first use.
    pub async fn discovered(&self) -> Result<Arc<Discovered>, IdpError> {
        if let Some(d) = self.cached() {
            return Ok(d);
        }
        let _single = self.discovering.lock().await;
        if let Some(d) = self.cached() {
            return Ok(d);
        }
        let metadata = self.fetch_metadata().await?;
        let jwks_uri = Url::parse(metadata.jwks_uri().as_str())
            .map_err(|e| IdpError::Misconfigured(format!("jwks_uri: {e}")))?;
        let issuer = metadata.issuer().as_str().to_string();
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            self.client_id.clone(),
            self.client_secret.clone(),
        );
        let d = Arc::new(Discovered {
            client,
            metadata,
            issuer,
            jwks_uri,
        });
        if let Ok(mut slot) = self.discovered.write() {
            *slot = Some(d.clone());
        }
        Ok(d)
    }

    /// The provider metadata. At the issuer itself, the crate fetches and checks it; through
    /// another address the document is fetched there, and its `issuer` must still be the one
    /// tokens are checked against (never believed from the document).
    async fn fetch_metadata(&self) -> Result<CoreProviderMetadata, IdpError> {
        let base = self.discovery_base.as_str().trim_end_matches('/');
        if base == self.issuer.as_str() {
            return CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
                .await
                .map_err(|e| IdpError::Unavailable(format!("OIDC discovery failed: {e}")));
        }
        let url = format!("{base}/.well-known/openid-configuration");
        let unavailable =
            |e: String| IdpError::Unavailable(format!("OIDC discovery at {url} failed: {e}"));
        let response = self
            .http
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| unavailable(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP {}", response.status())));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable(e.without_url().to_string()))?;
        let metadata: CoreProviderMetadata =
            serde_json::from_slice(&body).map_err(|e| unavailable(e.to_string()))?;
        check_issuer(&metadata, &self.issuer)?;
        Ok(metadata)
    }

    async fn grant_password(
        &self,
        username: &str,
        password: &Secret,
    ) -> Result<TokenGrant, IdpError> {
        let d = self.discovered().await?;
        let user = ResourceOwnerUsername::new(username.to_string());
        let pass = ResourceOwnerPassword::new(password.expose().to_string());
        let response = d
            .client
            .exchange_password(&user, &pass)
            .map_err(|e| IdpError::Misconfigured(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(map_token_error)?;
        Ok(to_grant(&response))
    }

    /// The caller's own client at the IdP's token endpoint. Whatever the IdP says about these
    /// credentials (unknown client, wrong secret, no service account) is the caller's problem,
    /// so it is a rejection, not a misconfiguration of the engine.
    async fn grant_client_credentials(
        &self,
        client_id: &str,
        client_secret: &Secret,
    ) -> Result<TokenGrant, IdpError> {
        let d = self.discovered().await?;
        let client = CoreClient::from_provider_metadata(
            d.metadata.clone(),
            ClientId::new(client_id.to_string()),
            Some(ClientSecret::new(client_secret.expose().to_string())),
        );
        let response = client
            .exchange_client_credentials()
            .map_err(|e| IdpError::Misconfigured(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(|e| match map_token_error(e) {
                IdpError::Misconfigured(code) => IdpError::Rejected { code },
                other => other,
            })?;
        Ok(to_grant(&response))
    }

    async fn grant_refresh(&self, refresh_token: &Secret) -> Result<TokenGrant, IdpError> {
        let d = self.discovered().await?;
        let rt = RefreshToken::new(refresh_token.expose().to_string());
        let response = d
            .client
            .exchange_refresh_token(&rt)
            .map_err(|e| IdpError::Misconfigured(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(map_token_error)?;
        let mut grant = to_grant(&response);
        // RFC 6749 §6: the IdP may keep the old refresh token; then we keep using it.
        if grant.refresh_token.is_none() {
            grant.refresh_token = Some(refresh_token.clone());
        }
        Ok(grant)
    }
}

impl TokenIssuer for OidcProvider {
    fn password<'a>(
        &'a self,
        username: &'a str,
        password: &'a Secret,
    ) -> BoxFuture<'a, Result<TokenGrant, IdpError>> {
        Box::pin(self.grant_password(username, password))
    }

    fn client_credentials<'a>(
        &'a self,
        client_id: &'a str,
        client_secret: &'a Secret,
    ) -> BoxFuture<'a, Result<TokenGrant, IdpError>> {
        Box::pin(self.grant_client_credentials(client_id, client_secret))
    }

    fn refresh<'a>(
        &'a self,
        refresh_token: &'a Secret,
    ) -> BoxFuture<'a, Result<TokenGrant, IdpError>> {
        Box::pin(self.grant_refresh(refresh_token))
    }
}

/// Only the OAuth error *code* is kept: descriptions are free text from the IdP and are not
/// needed to decide anything.
fn map_token_error(e: TokenError) -> IdpError {
    match e {
        RequestTokenError::ServerResponse(r) => IdpError::from_oauth_code(r.error().as_ref()),
        RequestTokenError::Request(e) => {
            IdpError::Unavailable(format!("token request failed: {e}"))
        }
        RequestTokenError::Parse(_, _) => IdpError::Unavailable("unreadable token response".into()),
        RequestTokenError::Other(m) => IdpError::Unavailable(m),
    }
}

fn to_grant(r: &CoreTokenResponse) -> TokenGrant {
    let access = r.access_token().secret().clone();
    let expires_in = r
        .expires_in()
        .or_else(|| lifetime_from_exp(&access))
        .unwrap_or(DEFAULT_LIFETIME);
    TokenGrant {
        access_token: Secret::new(access),
        refresh_token: r.refresh_token().map(|t| Secret::new(t.secret().clone())),
        expires_in,
    }
}

fn lifetime_from_exp(token: &str) -> Option<Duration> {
    let exp = unverified_claims(token)?.get("exp")?.as_u64()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(exp.saturating_sub(now)))
}

/// A discovery document fetched through another address must still name the issuer the engine
/// was configured with: otherwise the engine would be talking to some other IdP.
fn check_issuer(metadata: &CoreProviderMetadata, expected: &IssuerUrl) -> Result<(), IdpError> {
    let said = metadata.issuer().as_str().trim_end_matches('/');
    if said == expected.as_str().trim_end_matches('/') {
        Ok(())
    } else {
        Err(IdpError::Misconfigured(format!(
            "the IdP's discovery document names issuer `{said}`, not the configured `{}` \
             (oidc.keycloak.frontend_url)",
            expected.as_str()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(issuer: &str) -> CoreProviderMetadata {
        serde_json::from_value(serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": "http://10.0.0.1:8080/realms/sqe/protocol/openid-connect/auth",
            "token_endpoint": "http://10.0.0.1:8080/realms/sqe/protocol/openid-connect/token",
            "jwks_uri": "http://10.0.0.1:8080/realms/sqe/protocol/openid-connect/certs",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }))
        .unwrap()
    }

    #[test]
    fn a_document_fetched_elsewhere_must_name_the_configured_issuer() {
        let expected = IssuerUrl::new("https://sso.example.com/realms/sqe".into()).unwrap();
        assert!(check_issuer(&metadata("https://sso.example.com/realms/sqe"), &expected).is_ok());
        assert!(check_issuer(&metadata("https://sso.example.com/realms/sqe/"), &expected).is_ok());
        let e = check_issuer(&metadata("http://10.0.0.1:8080/realms/sqe"), &expected).unwrap_err();
        assert!(matches!(e, IdpError::Misconfigured(_)), "{e:?}");
        let e = check_issuer(&metadata("https://sso.example.com/realms/other"), &expected);
        assert!(e.is_err());
    }
}
