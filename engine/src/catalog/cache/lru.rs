//! What one context read of immutable files, kept so that its next statements need not read it
//! again: the Parquet footers of data files (file metadata with page indexes: DataFusion's own
//! file-metadata cache does the same for its listing tables), and the files a snapshot's
//! manifests list for a scan.
//!
//! Safe to keep: Iceberg never rewrites a data file, manifest or manifest list in place (a path
//! names one content for good), and keys carry what the content depends on (a footer's file
//! size; a plan's metadata file, snapshot, columns and filter). An entry is only ever looked up
//! for a file or snapshot that a loadTable made with the session's current token has just named,
//! so it never shows anyone what the catalog did not just grant them. One cache per context,
//! that is per user and token (a refreshed token starts empty), bounded in bytes and paid for
//! out of the session's memory share; entries hold no key and no token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::parquet::file::metadata::ParquetMetaData;
use iceberg::expr::Predicate;
use iceberg::scan::FileScanTask;

/// Footers by `location#size`.
pub type FooterCache = ByteLru<Arc<ParquetMetaData>>;
/// A scan's planned files by metadata file, snapshot, columns and filter.
pub type PlanCache = ByteLru<Arc<Vec<FileScanTask>>>;

/// Bytes of footers one context keeps. TPC-H SF 1's 8 files take about 1 MiB; an idle session
/// holds none.
pub const FOOTER_CAPACITY: usize = 16 << 20;
/// Bytes of planned files one context keeps (estimated: `plan_bytes`).
pub const PLAN_CAPACITY: usize = 8 << 20;

pub fn footer_key(location: &str, size: u64) -> String {
    format!("{location}#{size}")
}

/// A scan plan's key: everything the planned files depend on (the metadata file names the table
/// version; the snapshot, the columns and the filter choose and prune manifests and files).
pub fn plan_key(
    metadata_location: &str,
    snapshot_id: i64,
    columns: Option<&[String]>,
    predicate: Option<&Predicate>,
) -> String {
    let predicate = predicate.map(|p| p.to_string()).unwrap_or_default();
    format!("{metadata_location}|{snapshot_id}|{columns:?}|{predicate}")
}

/// What a plan's tasks take in memory, roughly: the paths, and the rest of a task (its schema
/// and predicate are shared with the table's).
pub fn plan_bytes(tasks: &[FileScanTask]) -> usize {
    tasks
        .iter()
        .map(|t| 256 + t.data_file_path.len())
        .sum::<usize>()
        + 64
}

/// The context's footer cache, paid for out of the session's memory share.
pub fn new_footer_cache(memory: &Arc<dyn MemoryPool>) -> Arc<FooterCache> {
    Arc::new(ByteLru::with_capacity(FOOTER_CAPACITY).paid_from(memory, "footer cache"))
}

/// The context's plan cache, paid for out of the session's memory share.
pub fn new_plan_cache(memory: &Arc<dyn MemoryPool>) -> Arc<PlanCache> {
    Arc::new(ByteLru::with_capacity(PLAN_CAPACITY).paid_from(memory, "scan plan cache"))
}

/// Values by key, least recently used out first once their bytes pass the capacity, or once
/// the memory pool they are paid from (the session's share) has no room for them: kept bytes
/// count against the session's limit like its queries' memory, and never fail a query.
#[derive(Debug)]
pub struct ByteLru<V> {
    capacity: usize,
    inner: Mutex<Inner<V>>,
}

#[derive(Debug)]
struct Inner<V> {
    entries: HashMap<String, Entry<V>>,
    bytes: usize,
    /// Advances on every use; the entry with the oldest `used` goes first.
    clock: u64,
    /// Holds `bytes` of the pool, when paid from one; freed when the cache goes.
    reservation: Option<MemoryReservation>,
}

impl<V> Inner<V> {
    fn evict_oldest(&mut self) -> bool {
        let Some(oldest) = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.used)
            .map(|(k, _)| k.clone())
        else {
            return false;
        };
        if let Some(gone) = self.entries.remove(&oldest) {
            self.bytes -= gone.bytes;
        }
        true
    }

    /// Whether the pool holds `bytes` for the cache now (always, without a pool).
    fn paid(&self) -> bool {
        self.reservation
            .as_ref()
            .is_none_or(|r| r.try_resize(self.bytes).is_ok())
    }
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    bytes: usize,
    used: u64,
}

impl<V: Clone> ByteLru<V> {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                bytes: 0,
                clock: 0,
                reservation: None,
            }),
        }
    }

    /// The same cache, its bytes reserved in `pool` as the consumer `name`.
    pub fn paid_from(self, pool: &Arc<dyn MemoryPool>, name: &str) -> Self {
        if let Ok(mut inner) = self.inner.lock() {
            inner.reservation = Some(MemoryConsumer::new(name).register(pool));
        }
        self
    }

    pub fn get(&self, key: &str) -> Option<V> {
        let mut inner = self.inner.lock().ok()?;
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.entries.get_mut(key)?;
        entry.used = now;
        Some(entry.value.clone())
    }

    /// Keeps `value` (taking `bytes`), dropping the least recently used entries beyond the
    /// capacity. A value larger than the whole capacity is not kept.
    pub fn put(&self, key: String, value: V, bytes: usize) {
        if bytes > self.capacity {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.clock += 1;
        let used = inner.clock;
        if let Some(old) = inner.entries.insert(key, Entry { value, bytes, used }) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.bytes > self.capacity && inner.evict_oldest() {}
        while !inner.paid() && inner.evict_oldest() {}
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.inner.lock().map(|i| i.bytes).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_footer_is_found_again_only_under_the_same_path_and_size() {
        let cache = ByteLru::with_capacity(1000);
        cache.put(footer_key("s3://w/t/data/a.parquet", 100), 1, 10);
        assert_eq!(
            cache.get(&footer_key("s3://w/t/data/a.parquet", 100)),
            Some(1)
        );
        assert_eq!(cache.get(&footer_key("s3://w/t/data/a.parquet", 101)), None);
        assert_eq!(cache.get(&footer_key("s3://w/t/data/b.parquet", 100)), None);
    }

    #[test]
    fn a_plan_is_keyed_by_table_version_snapshot_columns_and_filter() {
        use iceberg::expr::Reference;
        use iceberg::spec::Datum;
        let cols = vec!["id".to_owned()];
        let gt = |n: i64| Reference::new("id").greater_than(Datum::long(n));
        let base = plan_key("s3://w/m/1.json", 7, Some(&cols), Some(&gt(5)));
        assert_eq!(
            base,
            plan_key("s3://w/m/1.json", 7, Some(&cols), Some(&gt(5)))
        );
        for other in [
            plan_key("s3://w/m/2.json", 7, Some(&cols), Some(&gt(5))),
            plan_key("s3://w/m/1.json", 8, Some(&cols), Some(&gt(5))),
            plan_key("s3://w/m/1.json", 7, None, Some(&gt(5))),
            plan_key("s3://w/m/1.json", 7, Some(&cols), Some(&gt(6))),
            plan_key("s3://w/m/1.json", 7, Some(&cols), None),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn the_least_recently_used_entries_go_when_the_bytes_run_out() {
        let cache = ByteLru::with_capacity(300);
        for k in ["a", "b", "c"] {
            cache.put(k.into(), k, 100);
        }
        assert!(
            cache.get("a").is_some(),
            "a used again: b is now the oldest"
        );
        cache.put("d".into(), "d", 100);
        assert!(cache.get("b").is_none());
        for kept in ["a", "c", "d"] {
            assert!(cache.get(kept).is_some(), "{kept}");
        }
        assert_eq!(cache.bytes(), 300);
        cache.put("huge".into(), "huge", 301);
        assert!(cache.get("huge").is_none(), "larger than the capacity");
        assert_eq!(cache.bytes(), 300);
    }

    #[test]
    fn kept_bytes_are_paid_from_the_sessions_pool_and_give_way_when_it_is_full() {
        use datafusion::execution::memory_pool::GreedyMemoryPool;
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(250));
        let cache = ByteLru::with_capacity(1000).paid_from(&pool, "test cache");
        cache.put("a".into(), 1, 100);
        cache.put("b".into(), 2, 100);
        assert_eq!(pool.reserved(), 200);
        // A query takes most of the rest; the next entry only fits if older ones go.
        let query = MemoryConsumer::new("query").register(&pool);
        query.try_grow(40).unwrap();
        cache.put("c".into(), 3, 100);
        assert!(cache.get("a").is_none(), "the oldest gave way");
        assert_eq!(cache.get("c"), Some(3));
        assert_eq!(pool.reserved(), 240);
        drop(cache);
        assert_eq!(pool.reserved(), 40, "a cache's bytes are freed with it");
    }

    #[test]
    fn putting_a_key_again_replaces_it_without_counting_it_twice() {
        let cache = ByteLru::with_capacity(1000);
        cache.put("a".into(), 1, 100);
        cache.put("a".into(), 2, 150);
        assert_eq!(cache.bytes(), 150);
        assert_eq!(cache.get("a"), Some(2));
    }
}
