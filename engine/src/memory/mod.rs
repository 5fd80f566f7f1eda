//! Memory: one pool for the process, a capped share of it per session, and the session's own
//! in-memory tables counted against that share; functions whose results can dwarf their
//! arguments bounded and charged to it.
//!
//! - `pool`: the process's pool, each user's and each session's share of it.
//! - `scratch`: the session's own in-memory tables, reserved from its share.
//! - `functions`: the growing functions, wrapped; `result_size`: their results' sizes, worked
//!   out from their arguments before they run.

mod functions;
mod pool;
mod result_size;
mod scratch;

pub use functions::install as install_bounded_functions;
pub use pool::{SessionPool, UserPools, shared_pool};
pub use scratch::ScratchSchema;
