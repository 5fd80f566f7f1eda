//! The Arrow Flight SQL surface.

pub mod handshake;
pub mod service;

pub use service::SqeFlightSqlService;
