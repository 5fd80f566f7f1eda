//! Authentication: how a client's credentials become the user's own IdP tokens.
//!
//! - `oidc`: discovery and the grants (password, a machine client's client credentials,
//!   refresh) at the IdP.
//! - `bearer`: validation of a JWT the client brings itself (JWKS, iss/aud/exp/nbf).
//! - `idp`: grants, their failures, the issuer trait, and the identity a token's claims name.
//! - `backoff`: slow-down of failed logins per (user, source), per source and per bad token.

mod backoff;
mod bearer;
mod idp;
mod oidc;

pub use backoff::LoginThrottle;
#[cfg(test)]
pub use bearer::JwksSource;
pub use bearer::{BearerError, BearerPolicy, BearerValidator, DiscoveredJwks, remaining};
pub use idp::{
    Identity, IdpError, TokenGrant, TokenIssuer, claim_at, identity_from_claims, unverified_claims,
};
pub use oidc::OidcProvider;
