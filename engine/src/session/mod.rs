//! Sessions: one per logged-in client, holding the user's own tokens.
//!
//! - `state`: a session itself (its handle, its tokens, how it ends);
//! - `manager`: logins, lookups and ends; `scheduler`: tokens kept fresh (the wake-ups, the
//!   single-flight refresh, the token a query asks for); `refresh`: when tokens are renewed (pure);
//!   `reuse`: Basic logins that find the session the same credentials opened; `store`: where
//!   sessions live.

mod manager;
mod refresh;
mod reuse;
mod scheduler;
// The shared store's record and its seal; the store that uses them comes next.
#[allow(dead_code)]
mod record;
#[allow(dead_code)]
mod seal;
#[allow(dead_code)]
mod shared;
mod state;
mod store;

pub use manager::{SessionManager, SessionPolicy};
pub use state::{EndReason, Session, SessionHandle};
pub use store::InMemorySessionStore;

#[cfg(test)]
mod lifecycle_tests;
