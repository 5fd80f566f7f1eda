//! SQE engine: an Arrow Flight SQL server that acts only as the calling user.
//!
//! The user's own OIDC identity flows through every hop: a Flight handshake logs the user in at
//! the IdP, the engine keeps *their* tokens fresh in a per-user session, and every query runs in
//! that session's context. The engine has no credential of its own for data.

mod auth;
mod catalog;
mod config;
mod context;
mod drain;
mod error;
mod exec;
mod flight;
mod http;
mod ipc_input;
mod limits;
mod logging;
mod memory;
mod metrics;
mod policy;
mod redact;
mod secret;
mod server;
mod session;
mod sql;
mod token;

// The crate's public surface: what its binary, its fuzz targets and its integration tests use.
// Every module is the crate's own; a new door goes here, named, or not at all.
pub use auth::{IdpError, TokenGrant, TokenIssuer};
pub use config::{config_path, load as load_config};
pub use context::LocalContextFactory;
pub use drain::Drain;
pub use error::EngineError;
pub use exec::QueryLimits;
pub use flight::SqeFlightSqlService;
pub use flight::{Door, Front, StatementHandle, rows as bound_rows};
pub use ipc_input::read_flight_data;
pub use limits::DO_PUT_LIMITS;
pub use logging::init as init_logging;
pub use memory::{SessionPool, install_bounded_functions, shared_pool};
pub use metrics::Metrics;
pub use secret::Secret;
pub use server::serve;
pub use session::{InMemorySessionStore, SessionManager, SessionPolicy};
pub use sql::bind::single_row;
pub use sql::{
    SqeDialect, WithPlanners, extend as install_planners, parse as parse_statement,
    plan as plan_statement,
};

/// Stack of each runtime thread (and of the blocking threads that plan): deep statements
/// recurse in planning and in Rust's own drop glue, which DataFusion's stack growth does not
/// cover. Virtual memory; only what is touched is used.
pub const WORKER_STACK_BYTES: usize = 64 << 20;
