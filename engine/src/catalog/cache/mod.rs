//! What a context keeps between its statements.
//!
//! - `lru`: Parquet footers and planned file lists of immutable files, bounded by bytes.
//! - `recent`: tables loaded a moment ago, so one statement's scans read one snapshot.

pub mod lru;
pub mod recent;
