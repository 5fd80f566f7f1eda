//! Tables one session loaded a moment ago.
//!
//! A statement loads each table while it is planned (its schema) and again when its scans are
//! built (its current snapshot and freshly vended keys): two catalog round trips with credential
//! vending for one table, and one more for every further scan of it (a self-join). A load younger
//! than `FRESH_FOR` serves them all instead: the scans of one statement then read one snapshot
//! with one set of keys. Anything the session writes through the catalog forgets every entry, so
//! the session always reads its own writes; another writer's commit is seen at most `FRESH_FOR`
//! later than a fresh load would see it. Credential renewal never takes an entry from here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use iceberg::TableIdent;
use iceberg::table::Table;

/// Long enough for a statement's planning and the start of its execution (GetFlightInfo, then
/// DoGet), short against the time between two statements of a person or a tool.
pub const FRESH_FOR: Duration = Duration::from_millis(250);

/// One session's recent loads (shared by the catalog clients its token refreshes create).
#[derive(Debug, Default)]
pub struct RecentLoads {
    entries: Mutex<HashMap<TableIdent, Entry>>,
    /// One gate per table being loaded: a statement's scans are planned concurrently, and two
    /// scans of one table (a self-join) wait for one load instead of making two.
    gates: Mutex<HashMap<TableIdent, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Debug)]
struct Entry {
    loaded: Instant,
    /// When the request that vended the table's keys was sent (their lifetime counts from there).
    vended_at: SystemTime,
    table: Table,
}

impl RecentLoads {
    /// The table as loaded less than `FRESH_FOR` before `now`, with when its keys were vended.
    pub fn get(&self, ident: &TableIdent, now: Instant) -> Option<(Table, SystemTime)> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(ident)
            .filter(|e| now.saturating_duration_since(e.loaded) < FRESH_FOR)
            .map(|e| (e.table.clone(), e.vended_at))
    }

    /// Records a load; entries past `FRESH_FOR` go at the same time, so the map stays small.
    pub fn put(&self, ident: TableIdent, table: Table, vended_at: SystemTime, now: Instant) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, e| now.saturating_duration_since(e.loaded) < FRESH_FOR);
            entries.insert(
                ident,
                Entry {
                    loaded: now,
                    vended_at,
                    table,
                },
            );
        }
    }

    /// The gate of `ident`'s loads: hold it while checking `get` and loading.
    pub fn gate(&self, ident: &TableIdent) -> Arc<tokio::sync::Mutex<()>> {
        let Ok(mut gates) = self.gates.lock() else {
            return Arc::default();
        };
        // Gates nobody holds or waits for go, so the map stays as small as the loads in flight.
        gates.retain(|_, g| Arc::strong_count(g) > 1);
        gates.entry(ident.clone()).or_default().clone()
    }

    /// After any write: the next read loads again.
    pub fn forget_all(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }

    #[cfg(test)]
    pub fn entry_count(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iceberg::NamespaceIdent;
    use iceberg::io::FileIO;
    use iceberg::spec::{NestedField, PrimitiveType, Schema, TableMetadataBuilder, Type};

    fn table(name: &str) -> (TableIdent, Table) {
        let ident = TableIdent::new(NamespaceIdent::new("demo".into()), name.into());
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            ])
            .build()
            .unwrap();
        let metadata = TableMetadataBuilder::new(
            schema,
            iceberg::spec::PartitionSpec::unpartition_spec(),
            iceberg::spec::SortOrder::unsorted_order(),
            format!("memory://w/demo/{name}"),
            iceberg::spec::FormatVersion::V2,
            HashMap::new(),
        )
        .unwrap()
        .build()
        .unwrap()
        .metadata;
        let table = Table::builder()
            .identifier(ident.clone())
            .metadata(metadata)
            .file_io(FileIO::new_with_memory())
            .runtime(iceberg::Runtime::try_current().unwrap())
            .build()
            .unwrap();
        (ident, table)
    }

    #[tokio::test]
    async fn a_load_serves_for_a_moment_then_the_next_read_loads_again() {
        let recent = RecentLoads::default();
        let (a, ta) = table("a");
        let t0 = Instant::now();
        let vended_at = SystemTime::now();
        assert!(recent.get(&a, t0).is_none());
        recent.put(a.clone(), ta, vended_at, t0);
        let (_, at) = recent.get(&a, t0 + FRESH_FOR / 2).expect("fresh");
        assert_eq!(
            at, vended_at,
            "the keys' lifetime counts from the real request"
        );
        assert!(recent.get(&a, t0 + FRESH_FOR).is_none());
        let (b, _) = table("b");
        assert!(
            recent.get(&b, t0).is_none(),
            "only the table that was loaded"
        );
    }

    #[tokio::test]
    async fn loads_of_one_table_pass_one_at_a_time_and_others_do_not_wait() {
        let recent = RecentLoads::default();
        let (a, _) = table("a");
        let (b, _) = table("b");
        let gate = recent.gate(&a);
        let held = gate.lock().await;
        assert!(
            recent.gate(&a).try_lock().is_err(),
            "a second load of a waits"
        );
        assert!(recent.gate(&b).try_lock().is_ok(), "another table does not");
        drop(held);
        assert!(recent.gate(&a).try_lock().is_ok());
    }

    #[tokio::test]
    async fn a_write_forgets_everything_and_old_entries_do_not_pile_up() {
        let recent = RecentLoads::default();
        let t0 = Instant::now();
        let (a, ta) = table("a");
        let (b, tb) = table("b");
        recent.put(a.clone(), ta, SystemTime::now(), t0);
        recent.forget_all();
        assert!(recent.get(&a, t0).is_none());
        recent.put(a.clone(), table("a").1, SystemTime::now(), t0);
        recent.put(b, tb, SystemTime::now(), t0 + FRESH_FOR * 2);
        assert_eq!(
            recent.entry_count(),
            1,
            "a's expired entry went when b was put"
        );
    }
}
