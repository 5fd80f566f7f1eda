//! A statement's life on the engine, whatever protocol brought it: admission and time limits
//! (`limits`), cancellation (`cancel`), and the one log line it leaves (`query_log`).

pub mod cancel;
pub mod limits;
pub mod query_log;
