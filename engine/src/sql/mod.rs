//! The SQL front end: a statement is tokenized and parsed once, with SQE's dialect, and its AST
//! is planned by DataFusion with SQE's extensions. No SQL text is rebuilt on the way.
//!
//! - `ast`: walks over a statement's sqlparser AST.
//! - `bind`: values bound to a plan's placeholders (one row, or many rows of an INSERT).
//! - `describe`: `SHOW CREATE TABLE`'s text for an Iceberg table, in Trino's form.
//! - `dialect`: `SqeDialect`, the session's dialect with table versions and `SHOW CATALOGS`.
//! - `parse`: text → one statement (size and tree limits, Trino's `FOR … AS OF`).
//! - `placeholders`: `?` → `$n` on the AST, in source order.
//! - `show`: the SHOW forms, planned with the DataFrame API over the session's catalogs.
//! - `time_travel`: the relation planner that pins versioned tables to their snapshot.
//! - `plan`: the whole path, text → checked logical plan.

mod ast;
pub mod bind;
mod describe;
mod dialect;
mod parse;
mod placeholders;
mod plan;
mod show;
mod time_travel;

pub use dialect::SqeDialect;
pub use parse::parse;
pub use plan::plan;

use std::sync::Arc;

use datafusion::execution::memory_pool::MemoryPool;
use datafusion::prelude::SessionContext;

use crate::auth::Identity;
use crate::context::QueryContextFactory;
use crate::error::EngineError;
use crate::token::TokenView;

/// A context factory whose every context also has SQE's planner extensions: what the engine
/// wraps its factory in where it is put together, so the context layer knows nothing of SQL.
pub struct WithPlanners<F>(pub F);

impl<F: QueryContextFactory> QueryContextFactory for WithPlanners<F> {
    fn create(
        &self,
        identity: &Identity,
        token: &TokenView,
        memory: &Arc<dyn MemoryPool>,
    ) -> Result<SessionContext, EngineError> {
        let ctx = self.0.create(identity, token, memory)?;
        extend(&ctx)?;
        Ok(ctx)
    }

    fn session_pool(&self, identity: &Identity) -> Arc<dyn MemoryPool> {
        self.0.session_pool(identity)
    }
}

/// Adds SQE's planner extensions to a session context (every context the engine builds).
pub fn extend(ctx: &SessionContext) -> Result<(), EngineError> {
    ctx.register_relation_planner(Arc::new(time_travel::PinnedVersions))?;
    Ok(())
}
