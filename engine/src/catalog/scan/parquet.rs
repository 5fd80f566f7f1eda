//! DataFusion's own parallel Parquet reader over the files iceberg-rust planned, reading through
//! the table's vended FileIO: the engine has no storage keys of its own.
//!
//! DataFusion reads from an `ObjectStore` looked up by URL in the session's runtime; two tables
//! of one query may sit in one bucket with different vended keys, so a URL → store registry
//! cannot tell them apart. Instead the scan carries its own `ParquetFileReaderFactory` holding
//! that table's vended keys (`credentials::VendedIo`, renewed when they run out): every byte is
//! fetched with the keys vended for this table and this query, and nothing is registered in the
//! runtime. The object-store URL the plan names is only a label.
//!
//! DataFusion matches Parquet columns to the table by name, Iceberg by field id; so this reader is
//! used only where both agree: Parquet data files without delete files, in a table whose schema
//! never changed. Everything else goes to iceberg-rust's reader (`scan::ParallelIcebergScan`).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, Statistics};
use datafusion::config::TableParquetOptions;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfigBuilder, ParquetFileMetrics, ParquetFileReaderFactory, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result as DFResult;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::utils::conjunction;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{
    PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use iceberg::arrow::ArrowFileReader;
use iceberg::io::FileMetadata;
use iceberg::scan::FileScanTask;
use iceberg::spec::DataFileFormat;

use super::parallel::{balance, task_bytes};
use crate::catalog::cache::lru::{FooterCache, footer_key};
use crate::catalog::client::credentials::{VendedIo, store_refusal};
use crate::catalog::client::errors::iceberg_cause;

/// The object-store URL DataFusion's plan names for these scans. The session registers an empty
/// in-memory store under it, so nothing can be read through it: bytes come only from the FileIO.
pub const LABEL_URL: &str = "iceberg://vended";

/// Whether DataFusion's reader gives the same rows as iceberg's for this file: a Parquet data
/// file without deletes, in a table whose columns were never renamed, dropped or retyped
/// (`schemas` = how many schemas the table metadata has ever had).
pub fn datafusion_can_read(task: &FileScanTask, schemas: usize) -> bool {
    schemas == 1 && task.deletes.is_empty() && task.data_file_format == DataFileFormat::Parquet
}

/// The full location of a planned file, carried to the reader factory.
#[derive(Debug)]
struct Location(String);

fn partitioned_file(task: &FileScanTask) -> PartitionedFile {
    // The path is a label for DataFusion's metrics and EXPLAIN; the reader uses `Location`.
    let label = task
        .data_file_path
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(&task.data_file_path)
        .to_owned();
    let whole = task.start == 0 && task.length >= task.file_size_in_bytes;
    let mut file = if whole {
        PartitionedFile::new(label, task.file_size_in_bytes)
    } else {
        PartitionedFile::new_with_range(
            label,
            task.file_size_in_bytes,
            task.start as i64,
            (task.start + task.length) as i64,
        )
    };
    file.extensions = Some(Arc::new(Location(task.data_file_path.clone())));
    file
}

/// The scan of `tasks` by DataFusion's Parquet source: one file group per partition, the
/// pushed-down filters as its pruning (row groups, pages, bloom filters) and row-filter
/// predicate, the projection and limit.
#[allow(clippy::too_many_arguments)]
pub fn parquet_exec(
    state: &dyn Session,
    io: Arc<VendedIo>,
    footers: Arc<FooterCache>,
    statistics: Statistics,
    tasks: Vec<FileScanTask>,
    table_schema: SchemaRef,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
    partitions: usize,
) -> DFResult<Arc<dyn ExecutionPlan>> {
    let mut options = TableParquetOptions::new();
    options.global = state.config_options().execution.parquet.clone();
    // Strings as the table declares them (Utf8), as iceberg's reader returns them. Everything
    // else follows the session (`SET datafusion.execution.parquet.pushdown_filters = true` turns
    // on late materialisation).
    options.global.schema_force_view_types = false;
    let mut source = ParquetSource::new(table_schema.clone())
        .with_table_parquet_options(options)
        .with_parquet_file_reader_factory(Arc::new(VendedReaderFactory { io, footers }));
    if let Some(predicate) = conjunction(filters.iter().cloned()) {
        let df_schema = DFSchema::try_from(table_schema.as_ref().clone())?;
        source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
    }
    let groups = balance(tasks, task_bytes, partitions)
        .into_iter()
        .map(|g| FileGroup::new(g.iter().map(partitioned_file).collect()))
        .collect();
    let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(LABEL_URL)?, Arc::new(source))
        .with_file_groups(groups)
        .with_projection_indices(projection.cloned())?
        .with_limit(limit)
        .with_statistics(statistics)
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// Files whose footers a scan reads while it is planned, at most: beyond, the manifests' row
/// counts alone (reading thousands of footers would cost more than a better join order saves).
pub const MAX_FOOTERS_PER_SCAN: usize = 256;

/// What DataFusion plans joins with (which side builds the hash table, whether a side is small
/// enough to collect, how many rows a join or filter leaves): the statistics of every file from
/// its footer (rows, and per column min, max, nulls and size), as DataFusion's listing tables
/// have them. The footers come from the session's cache or are read now with the table's vended
/// keys, and stay cached for the scan itself. Too many files, or statistics DataFusion cannot
/// convert: the manifests' row counts (`manifest_statistics`). A footer that cannot be read fails
/// the scan now, as reading the file would later (after the one renewal every read gets).
pub async fn file_statistics(
    io: &Arc<VendedIo>,
    footers: &Arc<FooterCache>,
    tasks: &[FileScanTask],
    table_schema: &SchemaRef,
    metadata_size_hint: Option<usize>,
) -> Result<Statistics, ParquetError> {
    if tasks.len() > MAX_FOOTERS_PER_SCAN {
        return Ok(manifest_statistics(tasks, table_schema));
    }
    let reads: Vec<_> = tasks
        .iter()
        .map(|t| {
            let (io, footers, schema) = (io.clone(), footers.clone(), table_schema.clone());
            let (location, size) = (t.data_file_path.clone(), t.file_size_in_bytes);
            async move {
                let metadata = footer(&io, &footers, &location, size, metadata_size_hint).await?;
                Ok(
                    DFParquetMetadata::statistics_from_parquet_metadata(&metadata, &schema)
                        .inspect_err(|e| {
                            tracing::debug!(event = "footer", file = %location, error = %e,
                                            "planning without this file's statistics")
                        })
                        .ok(),
                )
            }
        })
        .collect();
    let per_file: Vec<Result<Option<Statistics>, ParquetError>> =
        futures::stream::iter(reads).buffered(8).collect().await;
    let per_file: Option<Vec<Statistics>> = per_file
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .collect();
    let Some(per_file) = per_file else {
        return Ok(manifest_statistics(tasks, table_schema));
    };
    Ok(Statistics::try_merge_iter(per_file.iter(), table_schema)
        .unwrap_or_else(|_| manifest_statistics(tasks, table_schema)))
}

/// The footer of one file (with its page indexes), cached for the context: read once with the
/// table's vended keys (renewed if refused, as every read), then served from memory.
async fn footer(
    io: &Arc<VendedIo>,
    footers: &Arc<FooterCache>,
    location: &str,
    size: u64,
    metadata_size_hint: Option<usize>,
) -> Result<Arc<ParquetMetaData>, ParquetError> {
    let key = footer_key(location, size);
    if let Some(cached) = footers.get(&key) {
        return Ok(cached);
    }
    let mut reader = VendedParquetReader::new(
        io.clone(),
        footers.clone(),
        location.to_owned(),
        size,
        metadata_size_hint,
        None,
    );
    let metadata = ParquetMetaDataReader::new()
        .with_prefetch_hint(metadata_size_hint)
        .with_page_index_policy(PageIndexPolicy::Optional)
        .load_and_finish(&mut reader, size)
        .await?;
    let metadata = Arc::new(metadata);
    footers.put(key, metadata.clone(), metadata.memory_size());
    Ok(metadata)
}

/// What the manifests alone say: the exact row count when every task is a whole file with a
/// known count, else unknown; no column statistics.
pub fn manifest_statistics(tasks: &[FileScanTask], table_schema: &SchemaRef) -> Statistics {
    let rows = tasks
        .iter()
        .map(|t| {
            let whole = t.start == 0 && t.length >= t.file_size_in_bytes;
            t.record_count.filter(|_| whole)
        })
        .try_fold(0usize, |sum, n| Some(sum + usize::try_from(n?).ok()?));
    Statistics {
        num_rows: rows.map_or(Precision::Absent, Precision::Exact),
        total_byte_size: Precision::Absent,
        column_statistics: Statistics::unknown_column(table_schema),
    }
}

/// Opens each planned file through the table's vended keys, renewed as the scan goes on.
#[derive(Debug)]
struct VendedReaderFactory {
    io: Arc<VendedIo>,
    footers: Arc<FooterCache>,
}

impl ParquetFileReaderFactory for VendedReaderFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> DFResult<Box<dyn AsyncFileReader + Send>> {
        let location = file
            .extensions
            .as_ref()
            .and_then(|e| e.downcast_ref::<Location>())
            .map(|l| l.0.clone())
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Internal(format!(
                    "planned file {} lost its location",
                    file.object_meta.location
                ))
            })?;
        let file_metrics =
            ParquetFileMetrics::new(partition_index, file.object_meta.location.as_ref(), metrics);
        Ok(Box::new(VendedParquetReader::new(
            self.io.clone(),
            self.footers.clone(),
            location,
            file.object_meta.size,
            metadata_size_hint,
            Some(file_metrics),
        )))
    }
}

/// iceberg's `ArrowFileReader` (range coalescing, footer reads), opened on first use because
/// opening is async and `create_reader` is not, and reopened whenever the table's keys were
/// renewed: every request is signed with keys that are current when it is made.
struct VendedParquetReader {
    io: Arc<VendedIo>,
    footers: Arc<FooterCache>,
    location: String,
    size: u64,
    metadata_size_hint: Option<usize>,
    /// Open with the keys of `generation`; `None` until first use and after a renewal.
    inner: Option<ArrowFileReader>,
    generation: u64,
    /// `None` while the footer is read for planning (not part of any scan's metrics).
    metrics: Option<ParquetFileMetrics>,
}

fn external(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ParquetError {
    ParquetError::External(e.into())
}

impl VendedParquetReader {
    /// Not yet open: the first read opens it with the keys current then.
    fn new(
        io: Arc<VendedIo>,
        footers: Arc<FooterCache>,
        location: String,
        size: u64,
        metadata_size_hint: Option<usize>,
        metrics: Option<ParquetFileMetrics>,
    ) -> Self {
        Self {
            io,
            footers,
            location,
            size,
            metadata_size_hint,
            inner: None,
            generation: 0,
            metrics,
        }
    }

    async fn reader(&mut self) -> Result<&mut ArrowFileReader, ParquetError> {
        let (file_io, generation) = self.io.current().await.map_err(external)?;
        if self.inner.is_none() || generation != self.generation {
            // Named before opening, so a refused open reports the keys it was refused with.
            self.inner = None;
            self.generation = generation;
            let input = file_io.new_input(&self.location).map_err(external)?;
            let read = input.reader().await.map_err(external)?;
            self.inner = Some(ArrowFileReader::new(FileMetadata { size: self.size }, read));
        }
        Ok(self.inner.as_mut().expect("opened above"))
    }

    /// The object store refused the keys: renew them (once for all readers of the
    /// scan) so that the next `reader()` opens with the new ones.
    async fn renew(&mut self, marker: &str) -> Result<(), ParquetError> {
        self.io
            .renew_after_refusal(self.generation, marker)
            .await
            .map_err(external)?;
        self.inner = None;
        Ok(())
    }
}

/// Runs `$call` on the current reader; if the keys were refused, renews them and
/// runs it once more. Reads are idempotent, so the retry cannot duplicate rows. An iceberg error
/// that remains leaves classified (a refusal is PERMISSION_DENIED, not an internal error).
macro_rules! once_more_if_refused {
    ($self:ident, |$r:ident| $call:expr) => {{
        let first = match $self.reader().await {
            Ok($r) => $call.await,
            Err(e) => Err(e),
        };
        let result = match first {
            Err(e) if let Some(marker) = store_refusal(&e) => match $self.renew(marker).await {
                Ok(()) => match $self.reader().await {
                    Ok($r) => $call.await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            other => other,
        };
        result.map_err(|e| classified(e, $self.io.subject()))
    }};
}

/// `e` with an iceberg error inside replaced by its classification.
fn classified(e: ParquetError, subject: &str) -> ParquetError {
    match iceberg_cause(&e, subject) {
        Some(classified) => ParquetError::External(Box::new(classified)),
        None => e,
    }
}

impl AsyncFileReader for VendedParquetReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes, ParquetError>> {
        if let Some(m) = &self.metrics {
            m.bytes_scanned.add((range.end - range.start) as usize);
        }
        async move { once_more_if_refused!(self, |r| r.get_bytes(range.clone())) }.boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, Result<Vec<Bytes>, ParquetError>> {
        let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        if let Some(m) = &self.metrics {
            m.bytes_scanned.add(total as usize);
        }
        async move { once_more_if_refused!(self, |r| r.get_byte_ranges(ranges.clone())) }.boxed()
    }

    /// The footer as planning read it (or as the first reader of the file reads it now), page
    /// indexes included, whatever `options` ask: DataFusion's reader takes what it needs.
    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>, ParquetError>> {
        async move {
            footer(
                &self.io,
                &self.footers,
                &self.location,
                self.size,
                self.metadata_size_hint,
            )
            .await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole-file task; built from JSON so the tests do not depend on its constructor.
    fn task(size: u64, record_count: Option<u64>) -> FileScanTask {
        serde_json::from_value(serde_json::json!({
            "start": 0, "length": size, "record_count": record_count,
            "data_file_path": "s3://warehouse/demo/a/data/x.parquet",
            "data_file_format": "parquet",
            "schema": {"type": "struct", "schema-id": 0, "fields": [
                {"id": 1, "name": "id", "required": true, "type": "long"}]},
            "project_field_ids": [1],
            "predicate": null,
            "deletes": [],
            "file_size_in_bytes": size,
            "case_sensitive": true
        }))
        .expect("FileScanTask from JSON")
    }

    fn schema() -> SchemaRef {
        Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            datafusion::arrow::datatypes::Field::new(
                "id",
                datafusion::arrow::datatypes::DataType::Int64,
                false,
            ),
        ]))
    }

    #[test]
    fn the_manifests_row_counts_become_the_scans_exact_row_count() {
        let s = manifest_statistics(&[task(100, Some(10)), task(50, Some(7))], &schema());
        assert_eq!(s.num_rows, Precision::Exact(17));
        assert_eq!(s.column_statistics.len(), 1);
        assert_eq!(
            manifest_statistics(&[], &schema()).num_rows,
            Precision::Exact(0)
        );
    }

    #[test]
    fn a_file_without_a_count_or_read_in_part_leaves_the_row_count_unknown() {
        let unknown = manifest_statistics(&[task(100, Some(10)), task(50, None)], &schema());
        assert_eq!(unknown.num_rows, Precision::Absent);
        let mut part = task(100, Some(10));
        part.length = 40;
        assert_eq!(
            manifest_statistics(&[part], &schema()).num_rows,
            Precision::Absent
        );
    }

    #[test]
    fn only_plain_parquet_files_of_an_unevolved_table_go_to_datafusion() {
        let task = task(100, Some(10));
        assert!(datafusion_can_read(&task, 1));
        assert!(
            !datafusion_can_read(&task, 2),
            "an evolved schema needs field ids"
        );
        let file = partitioned_file(&task);
        assert_eq!(
            file.object_meta.location.as_ref(),
            "warehouse/demo/a/data/x.parquet"
        );
        assert!(file.range.is_none());
    }
}
