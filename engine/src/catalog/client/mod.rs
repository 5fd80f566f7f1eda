//! The user's own Iceberg REST catalog, and the storage keys it vends.
//!
//! - `rest`: one `RestCatalog` per user and token, and FileIO restricted to vended keys.
//! - `credentials`: vended keys renewed during scans that outlive them.
//! - `errors`: catalog and store failures as engine errors (and so status codes).

pub mod credentials;
pub mod errors;
pub mod rest;
