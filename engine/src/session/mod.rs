//! Sessions: one per logged-in client, holding the user's own tokens.
//!
//! - `state`: a session itself (its handle, its tokens, how it ends);
//! - `manager`: logins, lookups and ends; `refresh`: when tokens are renewed; `reuse`: Basic
//!   logins that find the session the same credentials opened; `store`: where sessions live.

pub mod manager;
pub mod refresh;
pub mod reuse;
pub mod state;
pub mod store;

pub use manager::{SessionManager, SessionPolicy};
pub use state::{
    EndReason, HANDLE_PREFIX, MachineClient, Session, SessionHandle, SessionKey, TokenState,
    mode_name,
};
pub use store::{InMemorySessionStore, SessionStore};

#[cfg(test)]
mod lifecycle_tests;
