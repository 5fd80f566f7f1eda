//! Which snapshot of a table a time-travel reference reads: Trino's `t FOR VERSION AS OF
//! <snapshot id | 'branch or tag'>` and `t FOR TIMESTAMP AS OF <timestamp>`, resolved against the
//! table's metadata (the SQL side is `crate::sql::time_travel`).

use arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use iceberg::spec::TableMetadata;

use crate::error::EngineError;

/// Which state of a table a reference asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsOf {
    /// A snapshot id.
    Snapshot(i64),
    /// A branch or tag name.
    Ref(String),
    /// The snapshot that was current at this time (ms since the epoch, UTC).
    TimestampMs(i64),
}

/// As the clause is written after the table's name, for errors.
impl std::fmt::Display for AsOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AsOf::Snapshot(id) => write!(f, " FOR VERSION AS OF {id}"),
            AsOf::Ref(name) => write!(f, " FOR VERSION AS OF '{}'", name.replace('\'', "''")),
            AsOf::TimestampMs(ms) => write!(f, " FOR TIMESTAMP AS OF '{}'", format_ms(*ms)),
        }
    }
}

/// Parses a timestamp literal as UTC milliseconds (a time zone or offset in it is honoured).
pub fn parse_timestamp_ms(text: &str) -> Result<i64, EngineError> {
    string_to_timestamp_nanos(text.trim())
        .map(|ns| ns.div_euclid(1_000_000))
        .map_err(|_| {
            EngineError::InvalidArgument(format!(
                "FOR TIMESTAMP AS OF needs a timestamp like '2026-11-24 10:00:00' or \
                 '2026-11-24T10:00:00Z', got '{text}'"
            ))
        })
}

/// The snapshot a reference reads. `subject` names the table in errors.
pub fn resolve(metadata: &TableMetadata, as_of: &AsOf, subject: &str) -> Result<i64, EngineError> {
    match as_of {
        AsOf::Snapshot(id) => metadata
            .snapshot_by_id(*id)
            .map(|s| s.snapshot_id())
            .ok_or_else(|| EngineError::NotFound(format!("{subject} has no snapshot {id}"))),
        AsOf::Ref(name) => metadata
            .snapshot_for_ref(name)
            .map(|s| s.snapshot_id())
            .ok_or_else(|| {
                EngineError::NotFound(format!("{subject} has no branch or tag '{name}'"))
            }),
        AsOf::TimestampMs(ms) => snapshot_at(
            metadata
                .history()
                .iter()
                .map(|l| (l.timestamp_ms, l.snapshot_id)),
            *ms,
        )
        .ok_or_else(|| {
            EngineError::NotFound(format!(
                "{subject} has no snapshot at or before {}",
                format_ms(*ms)
            ))
        }),
    }
}

/// The snapshot that was current at `ms`: the last history entry at or before it.
pub fn snapshot_at(history: impl Iterator<Item = (i64, i64)>, ms: i64) -> Option<i64> {
    history
        .filter(|(at, _)| *at <= ms)
        .max_by_key(|(at, _)| *at)
        .map(|(_, id)| id)
}

fn format_ms(ms: i64) -> String {
    arrow::temporal_conversions::timestamp_ms_to_datetime(ms)
        .map(|t| format!("{} UTC", t.format("%Y-%m-%d %H:%M:%S%.3f")))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_reads_the_snapshot_current_at_that_time() {
        let history = [(100, 1), (200, 2), (300, 3)];
        assert_eq!(snapshot_at(history.into_iter(), 99), None);
        assert_eq!(snapshot_at(history.into_iter(), 100), Some(1));
        assert_eq!(snapshot_at(history.into_iter(), 299), Some(2));
        assert_eq!(snapshot_at(history.into_iter(), 10_000), Some(3));
    }

    #[test]
    fn timestamps_parse_as_utc_unless_they_say_otherwise() {
        assert_eq!(
            parse_timestamp_ms("2026-11-24 10:00:00").unwrap(),
            1_795_514_400_000
        );
        assert_eq!(
            parse_timestamp_ms("2026-11-24T11:00:00+01:00").unwrap(),
            1_795_514_400_000
        );
    }

    fn metadata_with_history() -> TableMetadata {
        let snapshot = |id: i64, parent: Option<i64>, at: i64| {
            serde_json::json!({
                "snapshot-id": id, "parent-snapshot-id": parent, "sequence-number": id,
                "timestamp-ms": at, "manifest-list": format!("s3://w/t/metadata/snap-{id}.avro"),
                "summary": {"operation": "append"}, "schema-id": 0
            })
        };
        serde_json::from_value(serde_json::json!({
            "format-version": 2,
            "table-uuid": "9c12d441-03fe-4693-9a96-a0705ddf69c1",
            "location": "s3://w/t",
            "last-sequence-number": 3,
            "last-updated-ms": 3000,
            "last-column-id": 1,
            "current-schema-id": 0,
            "schemas": [{"type": "struct", "schema-id": 0, "fields": [
                {"id": 1, "name": "id", "required": true, "type": "long"}]}],
            "default-spec-id": 0,
            "partition-specs": [{"spec-id": 0, "fields": []}],
            "last-partition-id": 999,
            "default-sort-order-id": 0,
            "sort-orders": [{"order-id": 0, "fields": []}],
            "properties": {},
            "current-snapshot-id": 3,
            "snapshots": [snapshot(1, None, 1000), snapshot(2, Some(1), 2000), snapshot(3, Some(2), 3000)],
            "snapshot-log": [
                {"snapshot-id": 1, "timestamp-ms": 1000},
                {"snapshot-id": 2, "timestamp-ms": 2000},
                {"snapshot-id": 3, "timestamp-ms": 3000}
            ],
            "refs": {
                "main": {"snapshot-id": 3, "type": "branch"},
                "before-fix": {"snapshot-id": 1, "type": "tag"}
            },
            "metadata-log": []
        }))
        .unwrap()
    }

    #[test]
    fn references_resolve_against_a_tables_snapshot_history() {
        let m = metadata_with_history();
        let t = "table lake.demo.t";
        assert_eq!(resolve(&m, &AsOf::Snapshot(2), t).unwrap(), 2);
        assert_eq!(resolve(&m, &AsOf::Ref("before-fix".into()), t).unwrap(), 1);
        assert_eq!(resolve(&m, &AsOf::Ref("main".into()), t).unwrap(), 3);
        assert_eq!(resolve(&m, &AsOf::TimestampMs(2500), t).unwrap(), 2);
        assert_eq!(resolve(&m, &AsOf::TimestampMs(3000), t).unwrap(), 3);
        for missing in [
            AsOf::Snapshot(9),
            AsOf::Ref("nope".into()),
            AsOf::TimestampMs(999),
        ] {
            let e = resolve(&m, &missing, t).unwrap_err();
            assert_eq!(e.code(), tonic::Code::NotFound, "{missing:?}: {e}");
            assert!(e.to_string().contains("lake.demo.t"), "{e}");
        }
    }
}
