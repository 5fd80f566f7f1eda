//! A session's access token as its queries see it: the token a context was built with, and a
//! way to ask for the session's token as it is later (after refreshes).

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::error::EngineError;
use crate::secret::{Fingerprint, Secret};

/// The current token of a session, as a query sees it.
#[derive(Debug, Clone)]
pub struct TokenView {
    pub access_token: Secret,
    pub fingerprint: Fingerprint,
    /// The session's token as it will be later: a query that outlives `access_token` (a long
    /// scan renewing its vended credentials) asks the catalog with this.
    pub latest: LatestToken,
}

type TokenLookup = dyn Fn() -> BoxFuture<'static, Result<Secret, EngineError>> + Send + Sync;

/// Reads a session's token at the time of asking (after any refresh since the query started);
/// fails once the session has ended.
#[derive(Clone)]
pub struct LatestToken(Arc<TokenLookup>);

impl LatestToken {
    pub fn new(
        lookup: impl Fn() -> BoxFuture<'static, Result<Secret, EngineError>> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(lookup))
    }

    /// A token that never changes (tests; contexts without a session behind them).
    pub fn fixed(token: Secret) -> Self {
        Self::new(move || futures::future::ready(Ok(token.clone())).boxed())
    }

    pub async fn get(&self) -> Result<Secret, EngineError> {
        (self.0)().await
    }
}

impl std::fmt::Debug for LatestToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LatestToken")
    }
}
