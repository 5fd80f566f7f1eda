//! The session settings a client may `SET` and `RESET`: an allow-list, each key with the values
//! it may take. Everything else is the operator's, set for the whole engine.
//!
//! What is on the list changes only how one statement is planned or shown, within the same
//! work: join strategy, filter pushdown, the time zone, EXPLAIN's form. What is off it bounds
//! the engine for everyone: memory and spill (`runtime.*`, `sort_spill_reservation_bytes`), the
//! parser's recursion limit (against deep-recursion crashes), fan-out (`planning_concurrency`,
//! `meta_fetch_concurrency`), the optimizer's passes, how much of each file is read for its
//! footer, and where tables are listed from (`catalog.location`).

use crate::error::EngineError;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Bool,
    /// An integer within these bounds, both included.
    Int(u64, u64),
    /// One of these words (case-insensitive).
    Choice(&'static [&'static str]),
    /// Free text this long at most (a time zone, a display format).
    Text(usize),
}

/// Short text: a time zone name or offset, a chrono format string.
const SHORT: Kind = Kind::Text(64);

/// `(key, values)`, keys as DataFusion names them (lower case).
const SETTABLE: &[(&str, Kind)] = &[
    // Batches over 64 Ki rows hold hundreds of MB of wide strings before the pool sees them.
    ("datafusion.execution.batch_size", Kind::Int(1, 65_536)),
    // Partitions are streams and buffers of their own; the engine sets its cores by default.
    ("datafusion.execution.target_partitions", Kind::Int(1, 64)),
    ("datafusion.execution.time_zone", SHORT),
    ("datafusion.execution.collect_statistics", Kind::Bool),
    ("datafusion.execution.coalesce_batches", Kind::Bool),
    ("datafusion.execution.enable_recursive_ctes", Kind::Bool),
    ("datafusion.execution.enable_ansi_mode", Kind::Bool),
    ("datafusion.execution.parquet.pushdown_filters", Kind::Bool),
    ("datafusion.execution.parquet.reorder_filters", Kind::Bool),
    ("datafusion.execution.parquet.pruning", Kind::Bool),
    ("datafusion.execution.parquet.enable_page_index", Kind::Bool),
    (
        "datafusion.execution.parquet.bloom_filter_on_read",
        Kind::Bool,
    ),
    (
        "datafusion.execution.parquet.schema_force_view_types",
        Kind::Bool,
    ),
    ("datafusion.execution.parquet.binary_as_string", Kind::Bool),
    ("datafusion.optimizer.prefer_hash_join", Kind::Bool),
    ("datafusion.optimizer.repartition_joins", Kind::Bool),
    ("datafusion.optimizer.repartition_aggregations", Kind::Bool),
    ("datafusion.optimizer.repartition_sorts", Kind::Bool),
    ("datafusion.optimizer.repartition_windows", Kind::Bool),
    ("datafusion.optimizer.repartition_file_scans", Kind::Bool),
    (
        "datafusion.optimizer.enable_round_robin_repartition",
        Kind::Bool,
    ),
    ("datafusion.optimizer.enable_topk_aggregation", Kind::Bool),
    ("datafusion.optimizer.enable_window_limits", Kind::Bool),
    (
        "datafusion.optimizer.enable_dynamic_filter_pushdown",
        Kind::Bool,
    ),
    ("datafusion.optimizer.filter_null_join_keys", Kind::Bool),
    ("datafusion.optimizer.prefer_existing_sort", Kind::Bool),
    (
        "datafusion.optimizer.top_down_join_key_reordering",
        Kind::Bool,
    ),
    ("datafusion.optimizer.skip_failed_rules", Kind::Bool),
    (
        "datafusion.optimizer.enable_piecewise_merge_join",
        Kind::Bool,
    ),
    // Fewer passes than the engine's default plan less, never more.
    ("datafusion.optimizer.max_passes", Kind::Int(0, 3)),
    // Whether view types (Utf8View) are cast back to plain types in a result.
    ("datafusion.optimizer.expand_views_at_output", Kind::Bool),
    // The session's own view of its catalogs; SHOW forms and listings keep working either way.
    ("datafusion.catalog.information_schema", Kind::Bool),
    // The dialect the session's statements are parsed in (SQE's additions hold in every one).
    (
        "datafusion.sql_parser.dialect",
        Kind::Choice(&[
            "generic",
            "mysql",
            "postgresql",
            "postgres",
            "hive",
            "sqlite",
            "snowflake",
            "redshift",
            "mssql",
            "clickhouse",
            "bigquery",
            "ansi",
            "duckdb",
            "databricks",
        ]),
    ),
    (
        "datafusion.sql_parser.enable_ident_normalization",
        Kind::Bool,
    ),
    ("datafusion.sql_parser.parse_float_as_decimal", Kind::Bool),
    (
        "datafusion.sql_parser.support_varchar_with_length",
        Kind::Bool,
    ),
    (
        "datafusion.sql_parser.default_null_ordering",
        Kind::Choice(&["nulls_max", "nulls_min", "nulls_first", "nulls_last"]),
    ),
    ("datafusion.explain.logical_plan_only", Kind::Bool),
    ("datafusion.explain.physical_plan_only", Kind::Bool),
    ("datafusion.explain.show_statistics", Kind::Bool),
    ("datafusion.explain.show_sizes", Kind::Bool),
    ("datafusion.explain.show_schema", Kind::Bool),
    (
        "datafusion.explain.analyze_level",
        Kind::Choice(&["summary", "dev"]),
    ),
    (
        "datafusion.explain.format",
        Kind::Choice(&["indent", "tree", "pgjson", "graphviz"]),
    ),
    ("datafusion.format.safe", Kind::Bool),
    ("datafusion.format.null", SHORT),
    ("datafusion.format.date_format", SHORT),
    ("datafusion.format.datetime_format", SHORT),
    ("datafusion.format.timestamp_format", SHORT),
    ("datafusion.format.timestamp_tz_format", SHORT),
    ("datafusion.format.time_format", SHORT),
];

/// Whether a client may `SET variable = value` (`value: None` for `RESET`). Names are
/// case-insensitive, as in SQL; a refusal names the key and is INVALID_ARGUMENT.
pub fn settable(variable: &str, value: Option<&str>) -> Result<(), EngineError> {
    let key = variable.trim().to_ascii_lowercase();
    let shown: String = variable.chars().take(128).collect();
    let Some((_, kind)) = SETTABLE.iter().find(|(k, _)| *k == key) else {
        return Err(EngineError::InvalidArgument(format!(
            "`{shown}` cannot be set from a session: it is not a setting, or the operator sets \
             it for the whole engine (SHOW ALL lists settings; the README's security section \
             lists those a session may change)"
        )));
    };
    let Some(value) = value else { return Ok(()) };
    let v = value.trim();
    let fits = match *kind {
        Kind::Bool => v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false"),
        Kind::Int(lo, hi) => v.parse::<u64>().is_ok_and(|n| (lo..=hi).contains(&n)),
        Kind::Choice(words) => words.iter().any(|w| w.eq_ignore_ascii_case(v)),
        Kind::Text(max) => v.len() <= max,
    };
    if fits {
        return Ok(());
    }
    let expected = match *kind {
        Kind::Bool => "true or false".to_owned(),
        Kind::Int(lo, hi) => format!("an integer from {lo} to {hi}"),
        Kind::Choice(words) => format!("one of {}", words.join(", ")),
        Kind::Text(max) => format!("at most {max} bytes of text"),
    };
    Err(EngineError::InvalidArgument(format!(
        "`{shown}` takes {expected}"
    )))
}

/// The keys a session may set.
#[cfg(test)]
pub fn settable_keys() -> impl Iterator<Item = &'static str> {
    SETTABLE.iter().map(|(k, _)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionConfig;
    use tonic::Code;

    fn refused(key: &str, value: Option<&str>) -> String {
        let e = settable(key, value).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{key}: {e}");
        e.to_string()
    }

    #[test]
    fn settings_that_bound_the_engine_are_refused_by_name() {
        for key in [
            "datafusion.sql_parser.recursion_limit",
            "datafusion.runtime.memory_limit",
            "DATAFUSION.RUNTIME.MEMORY_LIMIT",
            "datafusion.runtime.temp_directory",
            "datafusion.execution.planning_concurrency",
            "datafusion.execution.meta_fetch_concurrency",
            "datafusion.execution.sort_spill_reservation_bytes",
            "datafusion.execution.parquet.metadata_size_hint",
            "datafusion.catalog.location",
            "datafusion.catalog.default_catalog",
            "no.such.setting",
        ] {
            for value in [Some("1"), None] {
                let msg = refused(key, value);
                assert!(msg.contains(&format!("`{key}`")), "{msg}");
            }
        }
    }

    #[test]
    fn values_outside_their_bounds_are_refused_with_what_is_expected() {
        let key = "datafusion.execution.batch_size";
        assert!(settable(key, Some("4096")).is_ok());
        assert!(refused(key, Some("1000000000")).contains("from 1 to 65536"));
        assert!(refused(key, Some("1e9")).contains("integer"));
        assert!(refused(key, Some("0")).contains("integer"));
        let key = "datafusion.execution.target_partitions";
        assert!(refused(key, Some("100000")).contains("from 1 to 64"));
        assert!(settable(key, Some("8")).is_ok());
        assert!(
            refused("datafusion.optimizer.prefer_hash_join", Some("yes")).contains("true or false")
        );
        assert!(settable("datafusion.optimizer.prefer_hash_join", Some("FALSE")).is_ok());
        assert!(settable("datafusion.explain.format", Some("tree")).is_ok());
        assert!(refused("datafusion.explain.format", Some("yaml")).contains("one of"));
        let tz = "datafusion.execution.time_zone";
        assert!(settable(tz, Some("Europe/Berlin")).is_ok());
        assert!(refused(tz, Some(&"x".repeat(65))).contains("64 bytes"));
        assert!(settable(tz, None).is_ok(), "RESET of an allowed key");
    }

    #[test]
    fn every_allowed_key_is_a_datafusion_setting() {
        let config = SessionConfig::new();
        let known: Vec<String> = config
            .options()
            .entries()
            .into_iter()
            .map(|e| e.key)
            .collect();
        for key in settable_keys() {
            assert!(known.iter().any(|k| k == key), "{key} is not a setting");
        }
    }
}
