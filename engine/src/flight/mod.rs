//! The Arrow Flight SQL surface.

pub mod cancel;
pub mod door;
pub mod handshake;
pub mod ipc_input;
pub mod limits;
pub mod metadata;
pub mod params;
pub mod service;
pub mod show;

pub use service::SqeFlightSqlService;
