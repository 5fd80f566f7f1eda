//! SQE engine: an Arrow Flight SQL server that acts only as the calling user.
//!
//! The user's own OIDC identity flows through every hop: a Flight handshake logs the user in at
//! the IdP, the engine keeps *their* tokens fresh in a per-user session, and every query runs in
//! that session's context. The engine has no credential of its own for data.

pub mod auth;
pub mod catalog;
pub mod config;
pub mod drain;
pub mod error;
pub mod flight;
pub mod http;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod query;
pub mod redact;
pub mod secret;
pub mod server;
pub mod session;
pub mod sql;
pub mod token;

pub use error::EngineError;
