//! Parquet footers (file metadata with page indexes) one session's context has read, so that its
//! next statements plan with the files' statistics and open them without fetching each footer
//! again: DataFusion's own file-metadata cache does the same for its listing tables.
//!
//! Safe to keep: an Iceberg data file is never rewritten in place (a path names one content for
//! good), and the size the manifest gives is part of the key as a guard. An entry is only ever
//! looked up for a file that a loadTable made with the session's current token just planned,
//! so it never lets anyone see a file the catalog did not just grant them. One cache per
//! context, that is per user and token (a refreshed token starts empty), bounded in bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::parquet::file::metadata::ParquetMetaData;

/// Bytes of footers one context keeps. TPC-H SF 1's 8 files take about 1 MiB (measured with
/// e2e/bench/overhead.py); an idle session holds none.
pub const DEFAULT_CAPACITY: usize = 16 << 20;

#[derive(Debug)]
pub struct FooterCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<(String, u64), Entry>,
    bytes: usize,
    /// Advances on every use; the entry with the oldest `used` goes first.
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    metadata: Arc<ParquetMetaData>,
    bytes: usize,
    used: u64,
}

impl Default for FooterCache {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl FooterCache {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::default(),
        }
    }

    /// The footer of `location` if it was read before with this `size`.
    pub fn get(&self, location: &str, size: u64) -> Option<Arc<ParquetMetaData>> {
        let mut inner = self.inner.lock().ok()?;
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.entries.get_mut(&(location.to_owned(), size))?;
        entry.used = now;
        Some(entry.metadata.clone())
    }

    /// Keeps a footer just read, dropping the least recently used ones beyond the capacity. A
    /// footer larger than the whole capacity is not kept.
    pub fn put(&self, location: &str, size: u64, metadata: Arc<ParquetMetaData>) {
        let bytes = metadata.memory_size();
        self.put_sized(location, size, metadata, bytes);
    }

    fn put_sized(&self, location: &str, size: u64, metadata: Arc<ParquetMetaData>, bytes: usize) {
        if bytes > self.capacity {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.clock += 1;
        let used = inner.clock;
        if let Some(old) = inner.entries.insert(
            (location.to_owned(), size),
            Entry {
                metadata,
                bytes,
                used,
            },
        ) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.bytes > self.capacity {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = inner.entries.remove(&oldest) {
                inner.bytes -= gone.bytes;
            }
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner.lock().map(|i| i.bytes).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::parquet::file::metadata::FileMetaData;
    use datafusion::parquet::schema::types::{SchemaDescriptor, Type};

    fn footer() -> Arc<ParquetMetaData> {
        let schema = Type::group_type_builder("schema").build().unwrap();
        let file = FileMetaData::new(
            2,
            0,
            None,
            None,
            Arc::new(SchemaDescriptor::new(Arc::new(schema))),
            None,
        );
        Arc::new(ParquetMetaData::new(file, vec![]))
    }

    #[test]
    fn a_footer_is_found_again_only_under_the_same_path_and_size() {
        let cache = FooterCache::default();
        let f = footer();
        cache.put("s3://w/t/data/a.parquet", 100, f.clone());
        let hit = cache.get("s3://w/t/data/a.parquet", 100).expect("cached");
        assert!(Arc::ptr_eq(&hit, &f));
        assert!(cache.get("s3://w/t/data/a.parquet", 101).is_none());
        assert!(cache.get("s3://w/t/data/b.parquet", 100).is_none());
    }

    #[test]
    fn the_least_recently_used_footers_go_when_the_bytes_run_out() {
        let cache = FooterCache::with_capacity(300);
        cache.put_sized("a", 1, footer(), 100);
        cache.put_sized("b", 1, footer(), 100);
        cache.put_sized("c", 1, footer(), 100);
        assert!(
            cache.get("a", 1).is_some(),
            "a used again: b is now the oldest"
        );
        cache.put_sized("d", 1, footer(), 100);
        assert!(cache.get("b", 1).is_none());
        for kept in ["a", "c", "d"] {
            assert!(cache.get(kept, 1).is_some(), "{kept}");
        }
        assert_eq!(cache.bytes(), 300);
        cache.put_sized("huge", 1, footer(), 301);
        assert!(cache.get("huge", 1).is_none(), "larger than the capacity");
        assert_eq!(cache.bytes(), 300);
    }

    #[test]
    fn putting_the_same_file_again_replaces_it_without_counting_it_twice() {
        let cache = FooterCache::with_capacity(1000);
        cache.put_sized("a", 1, footer(), 100);
        cache.put_sized("a", 1, footer(), 150);
        assert_eq!(cache.bytes(), 150);
    }
}
