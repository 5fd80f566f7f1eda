//! Sessions: one per logged-in client, holding the user's own tokens.
//!
//! - `state`: a session itself (its handle, its tokens, how it ends);
//! - `manager`: logins, lookups and ends; `login_checks`: a login's throttle, capacity and
//!   failures; `scheduler`: tokens kept fresh (the wake-ups, the single-flight refresh, the
//!   token a query asks for); `refresh`: when tokens are renewed (pure); `reuse`: Basic logins
//!   that find the session the same credentials opened; `store`: where this process keeps its
//!   sessions;
//! - sessions any replica serves: `sharing` (the shell), `shared` (the Redis store), `seal`
//!   (records encrypted with the handle's secret and a cluster key), `record` (what a record
//!   holds, with wall-clock times).

mod login_checks;
mod manager;
mod record;
mod refresh;
mod reuse;
mod scheduler;
mod seal;
mod shared;
mod sharing;
mod state;
mod store;

pub use manager::{SessionManager, SessionPolicy};
pub(crate) use sharing::open_store;
pub use state::{EndReason, Session, SessionHandle};
pub use store::InMemorySessionStore;

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod sharing_tests;
#[cfg(test)]
mod test_redis;
