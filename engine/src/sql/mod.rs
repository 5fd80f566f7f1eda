//! The SQL front end: a statement is tokenized and parsed once, with SQE's dialect, and its AST
//! is planned by DataFusion with SQE's extensions. No SQL text is rebuilt on the way.
//!
//! - `ast`: walks over a statement's sqlparser AST.
//! - `dialect`: `SqeDialect`, the generic dialect with table versions and `SHOW CATALOGS`.
//! - `parse`: text → one statement (size and tree limits, Trino's `FOR … AS OF`).
//! - `placeholders`: `?` → `$n` on the AST, in source order.
//! - `show`: the SHOW forms, planned with the DataFrame API over the session's catalogs.
//! - `time_travel`: the relation planner that pins versioned tables to their snapshot.
//! - `plan`: the whole path, text → checked logical plan.

pub mod ast;
pub mod dialect;
pub mod parse;
pub mod placeholders;
pub mod plan;
pub mod show;
pub mod time_travel;

use std::sync::Arc;

use datafusion::prelude::SessionContext;

use crate::error::EngineError;

/// Adds SQE's planner extensions to a session context (every context the engine builds).
pub fn extend(ctx: &SessionContext) -> Result<(), EngineError> {
    ctx.register_relation_planner(Arc::new(time_travel::PinnedVersions))?;
    Ok(())
}
