//! Time travel, Trino's way: `t FOR VERSION AS OF <snapshot id | 'branch or tag'>` and
//! `t FOR TIMESTAMP AS OF TIMESTAMP '2026-11-24 10:00:00'`.
//!
//! DataFusion's SQL dialects do not parse these clauses, so the statement is rewritten before
//! planning: the clause is folded into the table's (quoted) name, `"a FOR VERSION AS OF 42"`, and
//! the namespace provider splits it off again when it resolves the table. The folded name reads
//! well in errors and EXPLAIN, and no real table is plausibly called that.

use arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;
use iceberg::spec::TableMetadata;

use crate::error::EngineError;
use crate::sql_text;

const VERSION_INFIX: &str = " FOR VERSION AS OF ";
const TIMESTAMP_INFIX: &str = " FOR TIMESTAMP AS OF ";

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

impl std::fmt::Display for AsOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AsOf::Snapshot(id) => write!(f, "{VERSION_INFIX}{id}"),
            AsOf::Ref(name) => write!(f, "{VERSION_INFIX}'{name}'"),
            AsOf::TimestampMs(ms) => write!(f, "{TIMESTAMP_INFIX}{ms}"),
        }
    }
}

fn is_word(t: &Token, kw: Keyword) -> bool {
    matches!(t, Token::Word(w) if w.keyword == kw && w.quote_style.is_none())
}

/// Positions of the next `n` tokens that are not whitespace, starting at `from`.
fn next_significant(tokens: &[Token], from: usize, n: usize) -> Vec<usize> {
    tokens
        .iter()
        .enumerate()
        .skip(from)
        .filter(|(_, t)| !matches!(t, Token::Whitespace(_)))
        .map(|(i, _)| i)
        .take(n)
        .collect()
}

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::InvalidArgument(msg.into())
}

/// Parses a timestamp literal as UTC milliseconds (a time zone or offset in it is honoured).
pub fn parse_timestamp_ms(text: &str) -> Result<i64, EngineError> {
    string_to_timestamp_nanos(text.trim())
        .map(|ns| ns.div_euclid(1_000_000))
        .map_err(|_| {
            invalid(format!(
                "FOR TIMESTAMP AS OF needs a timestamp like '2026-11-24 10:00:00' or \
                 '2026-11-24T10:00:00Z', got '{text}'"
            ))
        })
}

/// Folds every `FOR VERSION|TIMESTAMP AS OF …` clause into the name of the table before it.
/// Statements without one come back unchanged; in those with one, only the table name and the
/// clause are replaced and every other byte is kept as written.
pub fn fold_clauses(sql: &str) -> Result<String, EngineError> {
    // The planner reports a syntax error with its own position information.
    let Some(sql_text::Tokens { tokens, ranges }) = sql_text::tokenize(sql) else {
        return Ok(sql.to_string());
    };
    // (first token replaced, last token replaced, the folded name)
    let mut folds: Vec<(usize, usize, String)> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if !is_word(&tokens[i], Keyword::FOR) {
            i += 1;
            continue;
        }
        let next = next_significant(&tokens, i + 1, 5);
        let kind = match next.first().map(|&j| &tokens[j]) {
            Some(t) if is_word(t, Keyword::VERSION) => Keyword::VERSION,
            Some(t) if is_word(t, Keyword::TIMESTAMP) => Keyword::TIMESTAMP,
            _ => {
                i += 1;
                continue;
            }
        };
        if next.len() < 4 || !is_word(&tokens[next[1]], Keyword::AS) {
            i += 1;
            continue;
        }
        if !is_word(&tokens[next[2]], Keyword::OF) {
            i += 1;
            continue;
        }
        // The table name is the last significant token before FOR.
        let Some(name_at) = (0..i)
            .rev()
            .find(|&j| !matches!(tokens[j], Token::Whitespace(_)))
        else {
            return Err(invalid("FOR ... AS OF must follow a table name"));
        };
        let Token::Word(name) = &tokens[name_at] else {
            return Err(invalid("FOR ... AS OF must follow a table name"));
        };
        let mut value_at = next[3];
        let as_of = match (kind, &tokens[value_at]) {
            (Keyword::VERSION, Token::Number(n, _)) => AsOf::Snapshot(
                n.parse()
                    .map_err(|_| invalid(format!("snapshot id {n} is not a 64-bit integer")))?,
            ),
            (Keyword::VERSION, Token::SingleQuotedString(s)) => AsOf::Ref(s.clone()),
            (Keyword::TIMESTAMP, Token::SingleQuotedString(s)) => {
                AsOf::TimestampMs(parse_timestamp_ms(s)?)
            }
            // `TIMESTAMP '…'` (a typed literal), as Trino writes it.
            (Keyword::TIMESTAMP, t) if is_word(t, Keyword::TIMESTAMP) => {
                match next.get(4).map(|&j| (j, &tokens[j])) {
                    Some((j, Token::SingleQuotedString(s))) => {
                        value_at = j;
                        AsOf::TimestampMs(parse_timestamp_ms(s)?)
                    }
                    _ => return Err(invalid("FOR TIMESTAMP AS OF needs a timestamp literal")),
                }
            }
            (Keyword::VERSION, _) => {
                return Err(invalid(
                    "FOR VERSION AS OF needs a snapshot id or a quoted branch or tag name",
                ));
            }
            _ => return Err(invalid("FOR TIMESTAMP AS OF needs a timestamp literal")),
        };
        folds.push((
            name_at,
            value_at,
            quote_identifier(&format!("{}{as_of}", name.value)),
        ));
        i = value_at + 1;
    }
    if folds.is_empty() {
        return Ok(sql.to_string());
    }
    let Some(ranges) = ranges else {
        return Err(invalid(
            "FOR ... AS OF cannot be used in a statement with /*! … */ comment hints",
        ));
    };
    let edits: Vec<_> = folds
        .into_iter()
        .map(|(from, to, name)| (ranges[from].start..ranges[to].end, name))
        .collect();
    Ok(sql_text::splice(sql, &edits))
}

/// `name` as a double-quoted identifier (an embedded `"` is doubled).
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Splits a folded name back into the table and what version of it was asked for.
pub fn split_name(name: &str) -> Result<(&str, Option<AsOf>), EngineError> {
    if let Some((base, v)) = name.split_once(VERSION_INFIX) {
        let as_of = match v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            Some(r) => AsOf::Ref(r.to_owned()),
            None => AsOf::Snapshot(
                v.parse()
                    .map_err(|_| invalid(format!("snapshot id {v} is not a 64-bit integer")))?,
            ),
        };
        return Ok((base, Some(as_of)));
    }
    if let Some((base, ms)) = name.split_once(TIMESTAMP_INFIX) {
        let ms = ms
            .parse()
            .map_err(|_| invalid(format!("bad folded timestamp {ms}")))?;
        return Ok((base, Some(AsOf::TimestampMs(ms))));
    }
    Ok((name, None))
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
    fn a_version_clause_is_folded_into_the_table_name() {
        let sql = "SELECT count(*) FROM lake.demo.a FOR VERSION AS OF 8744 WHERE x > 1";
        assert_eq!(
            fold_clauses(sql).unwrap(),
            "SELECT count(*) FROM lake.demo.\"a FOR VERSION AS OF 8744\" WHERE x > 1"
        );
    }

    #[test]
    fn refs_timestamps_aliases_and_several_tables_are_folded() {
        let sql = "SELECT * FROM a FOR VERSION AS OF 'audit' AS old \
                   JOIN b FOR TIMESTAMP AS OF TIMESTAMP '2026-11-24 10:00:00' USING (id)";
        let out = fold_clauses(sql).unwrap();
        assert!(
            out.contains("\"a FOR VERSION AS OF 'audit'\" AS old"),
            "{out}"
        );
        assert!(
            out.contains("\"b FOR TIMESTAMP AS OF 1795514400000\" USING"),
            "{out}"
        );
    }

    #[test]
    fn text_outside_the_clause_is_kept_byte_for_byte() {
        let sql = "SELECT 'it''s' AS s, \"we\"\"ird\" -- é?\nFROM a FOR VERSION AS OF 1\n\
                   WHERE b = 'x'' OR ''1''=''1' AND c = E'\\'' AND d = $$a''b$$";
        assert_eq!(
            fold_clauses(sql).unwrap(),
            "SELECT 'it''s' AS s, \"we\"\"ird\" -- é?\nFROM \"a FOR VERSION AS OF 1\"\n\
             WHERE b = 'x'' OR ''1''=''1' AND c = E'\\'' AND d = $$a''b$$"
        );
    }

    #[test]
    fn quoted_names_stay_quoted_when_folded() {
        assert_eq!(
            fold_clauses("SELECT * FROM s.\"we\"\"ird\" FOR VERSION AS OF 'it''s'").unwrap(),
            "SELECT * FROM s.\"we\"\"ird FOR VERSION AS OF 'it's'\""
        );
        assert_eq!(
            split_name("we\"ird FOR VERSION AS OF 'it's'").unwrap(),
            ("we\"ird", Some(AsOf::Ref("it's".into())))
        );
    }

    #[test]
    fn a_clause_next_to_a_comment_hint_is_refused_not_misplaced() {
        let e = fold_clauses("SELECT * /*! x */ FROM a FOR VERSION AS OF 1").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    }

    #[test]
    fn statements_without_the_clause_are_untouched() {
        for sql in [
            "SELECT substring('abc' FROM 1 FOR 2)",
            "SELECT 'FOR VERSION AS OF 1' AS s",
            "SELECT * FROM t",
        ] {
            assert_eq!(fold_clauses(sql).unwrap(), sql);
        }
    }

    #[test]
    fn malformed_clauses_are_invalid_arguments() {
        for sql in [
            "SELECT * FROM a FOR VERSION AS OF now()",
            "SELECT * FROM a FOR TIMESTAMP AS OF 12",
            "SELECT * FROM a FOR TIMESTAMP AS OF 'yesterday-ish'",
            "SELECT * FROM a FOR VERSION AS OF 99999999999999999999",
        ] {
            let e = fold_clauses(sql).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{sql}: {e}");
        }
    }

    #[test]
    fn folded_names_split_back() {
        assert_eq!(split_name("a").unwrap(), ("a", None));
        assert_eq!(
            split_name("a FOR VERSION AS OF 42").unwrap(),
            ("a", Some(AsOf::Snapshot(42)))
        );
        assert_eq!(
            split_name("a FOR VERSION AS OF 'main'").unwrap(),
            ("a", Some(AsOf::Ref("main".into())))
        );
        assert_eq!(
            split_name("a FOR TIMESTAMP AS OF 1700000000000").unwrap(),
            ("a", Some(AsOf::TimestampMs(1_700_000_000_000)))
        );
        let folded = format!("t{}", AsOf::Snapshot(-7));
        assert_eq!(
            split_name(&folded).unwrap(),
            ("t", Some(AsOf::Snapshot(-7)))
        );
    }

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
