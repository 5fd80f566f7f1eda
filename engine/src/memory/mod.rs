//! Memory: one pool for the process, a capped share of it per session, and the session's own
//! in-memory tables counted against that share; functions whose results can dwarf their
//! arguments bounded and charged to it.

pub mod functions;
pub mod pool;
pub mod scratch;

pub use pool::{SessionPool, UserPools, shared_pool};
pub use scratch::ScratchSchema;
