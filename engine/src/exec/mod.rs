//! A statement's life on the engine, whatever protocol brought it (nothing here knows gRPC):
//!
//! - `statement`: the [`Executor`] — planning, running once, streaming, updating, cancelling.
//! - `admission`: slots and deadlines; planning off the async workers.
//! - `cancel`: cancelling a run by the ticket that names it.
//! - `contract`: the schema a result announces is the schema it streams.
//! - `update`: statements run to completion for their count.
//! - `query_log`: the one log line and metric each statement leaves.

mod admission;
mod cancel;
mod contract;
mod query_log;
mod statement;
mod update;

pub use admission::QueryLimits;
pub use cancel::CancelOutcome;
pub use statement::{Executor, Planned, Statement};
