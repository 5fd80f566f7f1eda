//! The session's DataFusion context, in which its queries run.
//!
//! The context is built for one (identity, token fingerprint) pair and rebuilt when the token
//! changes, so anything attached to it (the user's Iceberg REST catalog client carrying the
//! token) can never outlive the token it was made with. The session's memory share is made once
//! and shared by all its contexts.

use std::sync::{Arc, Mutex};

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use datafusion::execution::context::SessionContext;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionConfig;

use crate::auth::Identity;
use crate::error::EngineError;
use crate::memory::{ScratchSchema, UserPools};
use crate::secret::Fingerprint;
use crate::token::TokenView;

/// Builds the context for one user and token (`CatalogContextFactory` in the engine; the local
/// one in tests).
pub trait QueryContextFactory: Send + Sync {
    /// `memory` is the session's share of the process pool (from `session_pool`), the same for
    /// every context of one session.
    fn create(
        &self,
        identity: &Identity,
        token: &TokenView,
        memory: &Arc<dyn MemoryPool>,
    ) -> Result<SessionContext, EngineError>;

    /// A new session's share of the process-wide memory pool, drawn from its user's.
    fn session_pool(&self, identity: &Identity) -> Arc<dyn MemoryPool>;
}

/// Plain DataFusion with the session's memory share, an in-memory `datafusion.public` and no
/// warehouse: enough to run `SELECT`/`VALUES`/table functions across token refreshes (tests).
pub struct LocalContextFactory {
    pub memory: UserPools,
    pub target_partitions: usize,
}

impl LocalContextFactory {
    pub fn new(memory_limit_bytes: usize, target_partitions: usize) -> Self {
        Self {
            memory: UserPools::new(
                crate::memory::shared_pool(memory_limit_bytes.saturating_mul(4)),
                memory_limit_bytes.saturating_mul(2),
                memory_limit_bytes,
            ),
            target_partitions,
        }
    }
}

impl QueryContextFactory for LocalContextFactory {
    fn create(
        &self,
        _identity: &Identity,
        _token: &TokenView,
        memory: &Arc<dyn MemoryPool>,
    ) -> Result<SessionContext, EngineError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(memory.clone())
            .build_arc()?;
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(self.target_partitions.max(1));
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        crate::memory::install_bounded_functions(&ctx, memory);
        ctx.register_catalog(SESSION_CATALOG, scratch_catalog(memory)?);
        Ok(ctx)
    }

    fn session_pool(&self, identity: &Identity) -> Arc<dyn MemoryPool> {
        self.memory.session_pool(&identity.quota_key())
    }
}

/// The session-local catalog (`datafusion.public`, in memory) that outlives token refreshes.
pub const SESSION_CATALOG: &str = "datafusion";
pub const SESSION_SCHEMA: &str = "public";

/// `datafusion.public`: the session's in-memory tables, paid for out of its memory share.
pub fn scratch_catalog(
    memory: &Arc<dyn MemoryPool>,
) -> Result<Arc<dyn CatalogProvider>, EngineError> {
    let catalog = MemoryCatalogProvider::new();
    catalog.register_schema(SESSION_SCHEMA, Arc::new(ScratchSchema::new(memory.clone())))?;
    Ok(Arc::new(catalog))
}

/// What the user set up in the session and expects to keep when the token (and so the context)
/// is renewed: `SET` options and the tables in the session's own in-memory catalog. Nothing
/// bound to the old token comes along: the warehouse catalog is the new token's.
fn carry_over(previous: &SessionContext, next: &SessionContext) {
    let config = previous.state().config().clone();
    *next.state_ref().write().config_mut() = config;
    if let Some(scratch) = previous.catalog(SESSION_CATALOG) {
        next.register_catalog(SESSION_CATALOG, scratch);
    }
}

#[derive(Default)]
pub struct QueryState {
    current: Mutex<Option<(Fingerprint, SessionContext)>>,
    memory: std::sync::OnceLock<Arc<dyn MemoryPool>>,
}

impl QueryState {
    /// The context for this token, building a new one if the token changed since.
    pub fn context(
        &self,
        factory: &dyn QueryContextFactory,
        identity: &Identity,
        token: &TokenView,
    ) -> Result<SessionContext, EngineError> {
        let mut slot = self
            .current
            .lock()
            .map_err(|_| EngineError::Internal("query state lock poisoned".into()))?;
        if let Some((fp, ctx)) = slot.as_ref()
            && *fp == token.fingerprint
        {
            return Ok(ctx.clone());
        }
        let memory = self.memory.get_or_init(|| factory.session_pool(identity));
        let ctx = factory.create(identity, token, memory)?;
        if let Some((_, previous)) = slot.as_ref() {
            carry_over(previous, &ctx);
        }
        *slot = Some((token.fingerprint, ctx.clone()));
        Ok(ctx)
    }

    /// Drops everything built for the session (on close or expiry).
    pub fn clear(&self) {
        if let Ok(mut slot) = self.current.lock() {
            *slot = None;
        }
    }

    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.current.lock().ok()?.as_ref().map(|(fp, _)| *fp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::token::LatestToken;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize, LocalContextFactory);
    impl QueryContextFactory for Counting {
        fn create(
            &self,
            i: &Identity,
            t: &TokenView,
            m: &Arc<dyn MemoryPool>,
        ) -> Result<SessionContext, EngineError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1.create(i, t, m)
        }
        fn session_pool(&self, identity: &Identity) -> Arc<dyn MemoryPool> {
            self.1.session_pool(identity)
        }
    }

    fn view(token: &str) -> TokenView {
        TokenView {
            access_token: Secret::new(token),
            fingerprint: Fingerprint::of(token),
            latest: LatestToken::fixed(Secret::new(token)),
        }
    }

    fn local() -> LocalContextFactory {
        LocalContextFactory::new(64 << 20, 2)
    }

    fn alice() -> Identity {
        Identity {
            user: "alice".into(),
            roles: vec![],
            subject: None,
        }
    }

    #[test]
    fn the_context_is_reused_for_one_token_and_rebuilt_after_a_refresh() {
        let f = Counting(AtomicUsize::new(0), local());
        let id = alice();
        let state = QueryState::default();
        let a = state.context(&f, &id, &view("t1")).unwrap();
        let b = state.context(&f, &id, &view("t1")).unwrap();
        assert_eq!(a.session_id(), b.session_id());
        assert_eq!(f.0.load(Ordering::SeqCst), 1);
        let c = state.context(&f, &id, &view("t2")).unwrap();
        assert_ne!(a.session_id(), c.session_id());
        assert_eq!(f.0.load(Ordering::SeqCst), 2);
        assert_eq!(state.fingerprint(), Some(Fingerprint::of("t2")));
        state.clear();
        assert_eq!(state.fingerprint(), None);
    }

    #[tokio::test]
    async fn set_options_and_session_tables_survive_a_token_refresh() {
        let f = local();
        let id = alice();
        let state = QueryState::default();
        let before = state.context(&f, &id, &view("t1")).unwrap();
        for sql in [
            "SET datafusion.execution.batch_size = 1234",
            "CREATE TABLE datafusion.public.notes AS VALUES (1), (2), (3)",
        ] {
            before.sql(sql).await.unwrap().collect().await.unwrap();
        }
        let after = state.context(&f, &id, &view("t2")).unwrap();
        assert_ne!(before.session_id(), after.session_id());
        assert_eq!(after.state().config().batch_size(), 1234);
        let n = after
            .sql("SELECT count(*) FROM datafusion.public.notes")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(n[0].num_rows(), 1);
        let count = n[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!(count, 3);
    }
}
