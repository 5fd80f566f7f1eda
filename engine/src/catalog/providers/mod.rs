//! What DataFusion sees of the user's warehouse.
//!
//! - `schema`: the catalog and schema providers, resolving namespaces and tables lazily.
//! - `table`: one Iceberg table's reads (a fresh load and fresh keys per query) and writes.
//! - `stock`: iceberg-datafusion's own providers, one table at a time (the writer,
//!   `t$snapshots`).
//! - `time_travel`: which snapshot a version or timestamp names.

pub mod schema;
pub mod stock;
pub mod table;
pub mod time_travel;
