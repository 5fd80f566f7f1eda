//! Memory: one pool for the process, a capped share of it per session, and the session's own
//! in-memory tables counted against that share.

pub mod pool;
pub mod scratch;

pub use pool::{SessionPool, shared_pool};
pub use scratch::ScratchSchema;
