//! The physical scans of the files a table's scan planned.
//!
//! - `parquet`: DataFusion's parallel Parquet reader through the table's vended FileIO.
//! - `parallel`: iceberg-rust's reader spread over partitions, for files DataFusion cannot read
//!   correctly (deletes, evolved schemas), and the balancing both share.

pub mod parallel;
pub mod parquet;
