//! SQE's conformance suite: DataFusion 53.1's own sqllogictest files, each record run twice —
//! on DataFusion in-process, and through SQE's Flight SQL service with a real Flight SQL client,
//! each file in a session of its own. Every record that passes in-process must pass through SQE,
//! unless `by-design.txt` names it with the reason SQE differs; files SQE cannot run are in
//! `skipped-files.txt`, each with its reason.
//!
//! `cargo test -p sqe-engine --test conformance [-- FILTER]` (a filter runs only the files whose
//! path contains it). The corpus comes from the published crate (`fetch-corpus`), unless
//! `SQE_SLT_CORPUS` names an unpacked copy.

#[path = "../common/mod.rs"]
mod common;
mod engines;
mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use futures::StreamExt;
use sqllogictest::{Record, Runner, strict_column_validator};

use common::{Engine, EngineOptions};
use engines::{Letter, Reference, ThroughSqe, trim_end, validate};

const HERE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance");
const CORPUS: &str = "datafusion-sqllogictest-53.1.0";

fn corpus() -> PathBuf {
    if let Some(dir) = std::env::var_os("SQE_SLT_CORPUS") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("SQE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/sqe")
        });
    let dir = cache.join(CORPUS);
    if !dir.join("test_files").is_dir() {
        let fetched = std::process::Command::new("bash")
            .arg(format!("{HERE}/fetch-corpus"))
            .arg(&dir)
            .status()
            .expect("bash");
        assert!(fetched.success(), "fetching the corpus failed");
    }
    dir
}

/// `path  reason` lines (the reason is everything after the first whitespace); `#` comments.
fn listed(file: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(Path::new(HERE).join(file)).expect(file);
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((key, reason)) => (key.to_string(), reason.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

/// The corpus's `.slt` files, relative to `test_files/`, sorted.
fn slt_files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("corpus directory")
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.path());
        for entry in entries {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "slt") {
                let relative = path.strip_prefix(root).expect("under the root");
                out.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

fn is_skipped(file: &str, skipped: &BTreeMap<String, String>) -> bool {
    skipped
        .keys()
        .any(|s| s == file || (s.ends_with('/') && file.starts_with(s.as_str())))
}

/// A record's name in reports and in `by-design.txt`: `file:line`, or `file>part:line` for a
/// record of an included part.
fn record_key(file: &str, root: &Path, record: &Record<Letter>) -> Option<String> {
    let loc = match record {
        Record::Statement { loc, .. } | Record::Query { loc, .. } => loc,
        _ => return None,
    };
    let part = Path::new(loc.file());
    let part = part
        .strip_prefix(root)
        .unwrap_or(part)
        .to_string_lossy()
        .into_owned();
    Some(if part == file {
        format!("{file}:{}", loc.line())
    } else {
        format!("{file}>{part}:{}", loc.line())
    })
}

#[derive(Default)]
struct FileResult {
    records: usize,
    reference: BTreeSet<String>,
    sqe: BTreeSet<String>,
    /// Why each record failed through SQE.
    sqe_errors: BTreeMap<String, String>,
}

/// Runs `records` (up to a `halt`) on `runner`, configured as DataFusion's own runner is: each
/// statement or query by its key, `Ok` or why it failed.
async fn run_records<D, M>(
    mut runner: Runner<D, M>,
    records: Vec<Record<Letter>>,
    file: &str,
    root: &Path,
) -> BTreeMap<String, Result<(), String>>
where
    D: sqllogictest::AsyncDB<ColumnType = Letter>,
    M: sqllogictest::MakeConnection<Conn = D>,
{
    runner.add_label("Datafusion");
    runner.with_column_validator(strict_column_validator);
    runner.with_normalizer(trim_end);
    runner.with_validator(validate);
    let mut outcomes = BTreeMap::new();
    for record in records {
        if matches!(record, Record::Halt { .. }) {
            break;
        }
        let key = record_key(file, root, &record);
        let outcome = runner.run_async(record).await;
        if let Some(key) = key {
            outcomes.insert(key, outcome.map(drop).map_err(|e| e.kind().to_string()));
        }
    }
    outcomes
}

async fn run_file(
    file: String,
    root: PathBuf,
    engine: &Engine,
    user: String,
) -> (String, FileResult) {
    let mut result = FileResult::default();
    let records = match sqllogictest::parse_file::<Letter>(root.join(&file)) {
        Ok(r) => r,
        Err(e) => {
            result
                .sqe_errors
                .insert(file.clone(), format!("unparsable: {e}"));
            return (file, result);
        }
    };
    let reference = Runner::new(|| async { Ok(Reference::new()) });
    for (key, outcome) in run_records(reference, records.clone(), &file, &root).await {
        result.records += 1;
        if outcome.is_ok() {
            result.reference.insert(key);
        }
    }
    let client = engine.login(&user).await;
    let sqe = Runner::new(move || {
        let client = client.clone();
        async move { Ok(ThroughSqe { client }) }
    });
    for (key, outcome) in run_records(sqe, records, &file, &root).await {
        match outcome {
            Ok(()) => {
                result.sqe.insert(key);
            }
            Err(why) => {
                result.sqe_errors.insert(key, why);
            }
        }
    }
    (file, result)
}

/// Every statement of every corpus file (skipped files too) that DataFusion's parser reads in the
/// generic dialect, SQE's dialect reads to the same AST, and SQE's front end (its token
/// rewrites, placeholder numbering and shape limits) accepts: SQE parses a superset.
fn dialect_is_a_superset(root: &Path, all: &[String]) -> (usize, Vec<String>) {
    use datafusion::sql::parser::DFParser;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use sqe_engine::SqeDialect;
    let sqe = SqeDialect::default();
    let mut checked = 0;
    let mut differ = Vec::new();
    for file in all {
        let Ok(records) = sqllogictest::parse_file::<Letter>(root.join(file)) else {
            continue;
        };
        for record in records {
            let (Record::Statement { sql, loc, .. } | Record::Query { sql, loc, .. }) = record
            else {
                continue;
            };
            let Ok(theirs) = DFParser::parse_sql_with_dialect(&sql, &GenericDialect {}) else {
                continue;
            };
            checked += 1;
            if let Err(e) = sqe_engine::parse_statement(&sql)
                && theirs.len() == 1
            {
                differ.push(format!(
                    "{file}:{} SQE's front end refuses it: {e}: {sql}",
                    loc.line()
                ));
            }
            match DFParser::parse_sql_with_dialect(&sql, &sqe) {
                Ok(ours) if ours == theirs => {}
                Ok(_) => differ.push(format!("{file}:{} parses differently: {sql}", loc.line())),
                Err(e) => differ.push(format!("{file}:{} does not parse: {e}: {sql}", loc.line())),
            }
        }
    }
    (checked, differ)
}

fn main() -> ExitCode {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    render::check_rounding();
    let root = corpus().join("test_files");
    let skipped = listed("skipped-files.txt");
    let by_design = listed("by-design.txt");
    let all = slt_files(&root);
    let files: Vec<String> = all
        .iter()
        .filter(|f| !is_skipped(f, &skipped))
        .filter(|f| filter.is_empty() || filter.iter().any(|p| f.contains(p.as_str())))
        .cloned()
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(sqe_engine::WORKER_STACK_BYTES)
        .enable_all()
        .build()
        .expect("a runtime");
    let (parsed, parsed_differently) = dialect_is_a_superset(&root, &all);
    for d in &parsed_differently {
        println!("DIALECT {d}");
    }
    println!(
        "dialect: {parsed} corpus statements DataFusion parses; SQE's dialect parses {} of them \
         to the same AST and its front end accepts them",
        parsed - parsed_differently.len()
    );
    let started = std::time::Instant::now();
    let results: Vec<(String, FileResult)> = runtime.block_on(async {
        let engine = Engine::start_with(EngineOptions {
            target_partitions: 4,
            ..Default::default()
        })
        .await;
        let engine = &engine;
        let root = &root;
        futures::stream::iter(files.iter().enumerate())
            .map(|(i, f)| run_file(f.clone(), root.clone(), engine, format!("slt{i}")))
            .buffer_unordered(2)
            .collect()
            .await
    });
    let mut results = results;
    results.sort_by(|a, b| a.0.cmp(&b.0));

    let mut unexplained = Vec::new();
    let mut stale = Vec::new();
    let (mut records, mut reference, mut sqe, mut designed) = (0, 0, 0, 0);
    for (file, r) in &results {
        records += r.records;
        reference += r.reference.len();
        sqe += r.reference.intersection(&r.sqe).count();
        for key in r.reference.difference(&r.sqe) {
            if by_design.contains_key(key) {
                designed += 1;
            } else {
                let why = r.sqe_errors.get(key).map(String::as_str).unwrap_or("");
                unexplained.push(format!("{key}\n    {}", why.replace('\n', "\n    ")));
            }
        }
        for key in by_design.keys() {
            let ours = key.split(['>', ':']).next() == Some(file.as_str());
            if ours && (!r.reference.contains(key) || r.sqe.contains(key)) {
                stale.push(key.clone());
            }
        }
        if let Some(e) = r.sqe_errors.get(file) {
            unexplained.push(format!("{file}: {e}"));
        }
    }
    let limit: usize = std::env::var("SQE_SLT_SHOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    for u in unexplained.iter().take(limit) {
        println!("DIFFERS {u}");
    }
    for s in &stale {
        println!("STALE by-design entry (passes through SQE now, or no longer in-process): {s}");
    }
    println!(
        "conformance: {} of {} corpus files run ({} skipped by skipped-files.txt), {records} records; \
         {reference} pass in-process; of those {sqe} pass through SQE, {designed} differ by design, \
         {} differ unexplained; {} stale by-design entries; {:.0} s",
        results.len(),
        all.len(),
        all.iter().filter(|f| is_skipped(f, &skipped)).count(),
        unexplained.len(),
        stale.len(),
        started.elapsed().as_secs_f64()
    );
    if unexplained.is_empty()
        && parsed_differently.is_empty()
        && (stale.is_empty() || !filter.is_empty())
    {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
