//! The Arrow Flight SQL surface.
//!
//! - `transport`: connections, and requests without credentials or over the size limits,
//!   refused before their bodies are read.
//! - `door`: the gRPC service in front of everything; refuses what it cannot decode or serve.
//! - `service`: the `FlightSqlService`, handing each call to the part below that does the work.
//! - `caller`, `handshake`: authentication at the door (a session for every call).
//! - `statements`, `updates`: planning and running; `params`: statement handles and the values
//!   clients bind (admission, limits, cancellation and the query log are `crate::exec`'s).
//! - `contract`: the schema a result announces is the schema it streams.
//! - `metadata`, `sql_info`: catalog listings and server facts; `results`: answer shapes;
//!   `ipc_input`: client-sent Arrow IPC, checked before it is decoded.

pub mod caller;
pub mod contract;
pub mod door;
pub mod handshake;
pub mod ipc_input;
pub mod metadata;
pub mod params;
pub mod results;
pub mod service;
pub mod sql_info;
pub mod statements;
pub mod transport;
pub mod updates;

pub use service::SqeFlightSqlService;
