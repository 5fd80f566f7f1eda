//! The Arrow Flight SQL surface: decoding requests, dispatching them, encoding answers. What a
//! statement does once decoded is `crate::exec`'s.
//!
//! - `transport`: connections, and requests without credentials or over the size limits,
//!   refused before their bodies are read.
//! - `door`: the gRPC service in front of everything; refuses what it cannot decode or serve.
//! - `service`: the `FlightSqlService`, handing each call to the part below that does the work.
//! - `caller`, `handshake`: authentication at the door (a session for every call).
//! - `statements`: statement handles and tickets to the executor and its batches back as
//!   FlightData; `params`: statement handles and the values clients bind.
//! - `metadata`, `sql_info`: catalog listings and server facts; `results`: answer shapes.

mod caller;
mod door;
mod handshake;
mod metadata;
mod params;
mod results;
mod service;
mod sql_info;
mod statements;
mod transport;

pub use door::Door;
pub use params::{StatementHandle, rows};
pub use service::SqeFlightSqlService;
pub use transport::{Front, capped};
