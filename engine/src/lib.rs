//! SQE engine: an Arrow Flight SQL server that acts only as the calling user.
//!
//! The user's own OIDC identity flows through every hop: a Flight handshake logs the user in at
//! the IdP, the engine keeps *their* tokens fresh in a per-user session, and every query runs in
//! that session's context. The engine has no credential of its own for data.

pub mod auth;
pub mod catalog;
pub mod config;
pub mod context;
pub mod drain;
pub mod error;
pub mod exec;
pub mod flight;
pub mod http;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod redact;
pub mod secret;
pub mod server;
pub mod session;
pub mod sql;
pub mod token;

pub use error::EngineError;

/// Stack of each runtime thread (and of the blocking threads that plan): deep statements
/// recurse in planning and in Rust's own drop glue, which DataFusion's stack growth does not
/// cover. Virtual memory; only what is touched is used.
pub const WORKER_STACK_BYTES: usize = 64 << 20;
