//! A parallel scan of Iceberg files by iceberg-rust's own reader: the path for files DataFusion's
//! Parquet source cannot read correctly (files with delete files, tables whose schema evolved;
//! see `parquet.rs`), and the spreading of planned files over partitions both paths share.
//!
//! iceberg-datafusion 0.10.1's scan is a single partition: everything above it would run on one
//! core. Here the planned files are spread over one partition per core, each read by
//! iceberg-rust's Arrow reader with the user's vended FileIO: projection by field id, row-group
//! pruning and page-index row selection from the pushed-down predicate, and positional/equality
//! delete files applied.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use iceberg::Runtime;
use iceberg::arrow::ArrowReaderBuilder;
use iceberg::io::FileIO;
use iceberg::scan::FileScanTask;

use crate::catalog::client::credentials::{VendedIo, store_refusal};
use crate::catalog::client::errors::classified;

/// Files each partition reads at once: overlaps one file's S3 latency with another's decoding.
const FILES_IN_FLIGHT_PER_PARTITION: usize = 2;

/// Spreads tasks over at most `partitions` groups, largest first onto the lightest group, so the
/// groups carry about the same number of bytes. Never returns an empty group; no tasks → one
/// empty group (the scan still yields its schema).
pub fn balance<T>(mut tasks: Vec<T>, size: impl Fn(&T) -> u64, partitions: usize) -> Vec<Vec<T>> {
    let n = partitions.max(1).min(tasks.len().max(1));
    tasks.sort_by_key(|t| std::cmp::Reverse(size(t)));
    let mut groups: Vec<(u64, Vec<T>)> = (0..n).map(|_| (0, Vec::new())).collect();
    for t in tasks {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(bytes, g)| (*bytes, g.len()))
            .expect("at least one group");
        lightest.0 += size(&t);
        lightest.1.push(t);
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// Bytes a task will read (its split of the data file).
pub fn task_bytes(t: &FileScanTask) -> u64 {
    t.length.max(1)
}

pub struct ParallelIcebergScan {
    table: String,
    snapshot_id: Option<i64>,
    io: Arc<VendedIo>,
    groups: Vec<Vec<FileScanTask>>,
    schema: SchemaRef,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for ParallelIcebergScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No FileIO: it holds the vended keys.
        f.debug_struct("ParallelIcebergScan")
            .field("table", &self.table)
            .field("snapshot_id", &self.snapshot_id)
            .field("partitions", &self.groups.len())
            .finish_non_exhaustive()
    }
}

impl ParallelIcebergScan {
    pub fn new(
        table: String,
        snapshot_id: Option<i64>,
        io: Arc<VendedIo>,
        tasks: Vec<FileScanTask>,
        schema: SchemaRef,
        limit: Option<usize>,
        partitions: usize,
    ) -> Self {
        let groups = balance(tasks, task_bytes, partitions);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(groups.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            table,
            snapshot_id,
            io,
            groups,
            schema,
            limit,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    pub fn partitions(&self) -> usize {
        self.groups.len()
    }

    pub fn files(&self) -> usize {
        self.groups.iter().map(Vec::len).sum()
    }
}

impl DisplayAs for ParallelIcebergScan {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ParallelIcebergScan: table={}, snapshot={}, files={}, partitions={}",
            self.table,
            self.snapshot_id
                .map_or_else(|| "none".to_owned(), |s| s.to_string()),
            self.files(),
            self.partitions()
        )?;
        if let Some(first) = self.groups.iter().flatten().next()
            && let Some(p) = &first.predicate
        {
            write!(f, ", predicate={p}")?;
        }
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ParallelIcebergScan {
    fn name(&self) -> &str {
        "ParallelIcebergScan"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DFResult<SendableRecordBatchStream> {
        let tasks =
            self.groups.get(partition).cloned().ok_or_else(|| {
                DataFusionError::Internal(format!("no scan partition {partition}"))
            })?;
        let files = MetricBuilder::new(&self.metrics).counter("files_scanned", partition);
        files.add(tasks.len());
        let rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let runtime = Runtime::try_current().map_err(|e| DataFusionError::External(e.into()))?;
        let batch_size = context.session_config().batch_size();
        let io = self.io.clone();
        let subject = format!("table {}", self.table);
        // File by file, so each file is opened with keys that are current when it starts.
        let batches = futures::stream::iter(tasks)
            .map(move |task| read_file(io.clone(), runtime.clone(), task, batch_size))
            .flatten_unordered(FILES_IN_FLIGHT_PER_PARTITION)
            .map_err(move |e| classified(e, &subject));
        // Each partition stops at the limit; DataFusion's limit above combines them.
        let remaining = Arc::new(AtomicUsize::new(self.limit.unwrap_or(usize::MAX)));
        let left = remaining.clone();
        let limited = batches
            .try_take_while(move |_| futures::future::ready(Ok(left.load(Ordering::Relaxed) > 0)))
            .map_ok(move |b| {
                let r = remaining.load(Ordering::Relaxed);
                let b = if b.num_rows() > r { b.slice(0, r) } else { b };
                remaining.fetch_sub(b.num_rows(), Ordering::Relaxed);
                rows.add(b.num_rows());
                b
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            limited,
        )))
    }
}

fn external(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> DataFusionError {
    DataFusionError::External(e.into())
}

/// One file's batches by iceberg's reader (projection by field id, pruning, deletes applied).
fn read_with(
    file_io: FileIO,
    runtime: Runtime,
    task: FileScanTask,
    batch_size: usize,
) -> DFResult<BoxStream<'static, DFResult<RecordBatch>>> {
    let reader = ArrowReaderBuilder::new(file_io, runtime)
        .with_batch_size(batch_size)
        .with_row_group_filtering_enabled(true)
        .with_row_selection_enabled(true)
        .build();
    Ok(reader
        .read(futures::stream::iter([Ok(task)]).boxed())
        .map_err(external)?
        .stream()
        .map_err(external)
        .boxed())
}

/// One file, with the table's current vended keys; if the object store refuses them
/// before the file gave any row, once more with renewed keys. (A refusal after rows were
/// returned fails the query: retrying would return those rows twice.)
fn read_file(
    io: Arc<VendedIo>,
    runtime: Runtime,
    task: FileScanTask,
    batch_size: usize,
) -> BoxStream<'static, DFResult<RecordBatch>> {
    let opened = async move {
        let (file_io, generation) = io.current().await.map_err(external)?;
        let mut batches = read_with(file_io, runtime.clone(), task.clone(), batch_size)?;
        match batches.next().await {
            Some(Err(e)) if let Some(marker) = store_refusal(&e) => {
                let (file_io, _) = io
                    .renew_after_refusal(generation, marker)
                    .await
                    .map_err(external)?;
                read_with(file_io, runtime, task, batch_size)
            }
            Some(first) => Ok(futures::stream::once(async { first })
                .chain(batches)
                .boxed()),
            None => Ok(futures::stream::empty().boxed()),
        }
    };
    futures::stream::once(opened).try_flatten().boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_balanced_by_bytes_over_the_partitions() {
        let groups = balance(vec![10u64, 70, 20, 30, 40], |s| *s, 2);
        assert_eq!(groups.len(), 2);
        let sums: Vec<u64> = groups.iter().map(|g| g.iter().sum()).collect();
        assert_eq!(sums.iter().sum::<u64>(), 170);
        assert!(sums.iter().all(|s| (80..=90).contains(s)), "{sums:?}");
    }

    #[test]
    fn never_more_partitions_than_files_and_never_none() {
        assert_eq!(balance(vec![5u64], |s| *s, 8).len(), 1);
        let empty = balance(Vec::<u64>::new(), |s| *s, 8);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].is_empty());
        assert_eq!(balance(vec![1u64, 1, 1], |s| *s, 0).len(), 1);
    }

    #[test]
    fn every_file_is_read_exactly_once() {
        let files: Vec<u64> = (1..=17).collect();
        let mut seen: Vec<u64> = balance(files.clone(), |s| *s, 4)
            .into_iter()
            .flatten()
            .collect();
        seen.sort();
        assert_eq!(seen, files);
    }
}
