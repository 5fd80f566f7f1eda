//! sqe-bench: the TPC-H query files with DataFusion in-process, the limit SQE is measured against
//! (e2e/bench/tpch.py drives it; the README there says how the figures are made).
//!
//! Same DataFusion as the engine (this workspace's one version) and the engine's session settings
//! (`SessionConfig::new()` + information_schema + one partition per core, a greedy memory pool of
//! the engine's default per-session limit), over the tables' Parquet files either on local disk
//! (`--source local`) or in MinIO through S3 with static keys (`--source s3`). The tables are
//! those of `lake.json`, written by e2e/bench/data.py: per table its local file and its Iceberg
//! data files (s3:// paths from the current snapshot, listed by pyiceberg); `s3` registers each
//! table's data directory (`<table location>/data/`, which holds exactly those files) as a
//! listing table, `local` the local file.
//!
//! Output: JSON lines on stdout, one per run: `{"system", "query", "run", "ms", "rows",
//! "checksum"}` (or `"error"`), `ms` = planning + execution + collecting every batch.
//! `--serve` reads requests from stdin instead, one JSON object a line,
//! `{"query": "q01", "file": "/path/q01.sql", "runs": 3}`, and answers `runs` lines each.

mod checksum;
mod s3;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use serde_json::{Value, json};

/// The engine's default `query.memory_limit_bytes` (engine-config): one session's share.
const ENGINE_SESSION_MEMORY: usize = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Source {
    /// The local Parquet files.
    Local,
    /// The same files in MinIO (S3 API, static keys).
    S3,
}

#[derive(Parser, Debug)]
#[command(
    name = "sqe-bench",
    about = "TPC-H with DataFusion in-process (SQE's limit)"
)]
struct Args {
    /// lake.json of one scale factor ($SQE_CACHE/tpch/sf<N>/lake.json), or its directory.
    #[arg(long)]
    lake: PathBuf,
    #[arg(long, value_enum, default_value = "local")]
    source: Source,
    /// Directory of the query files (q01.sql .. q22.sql).
    #[arg(long, default_value = "e2e/bench/queries")]
    queries: PathBuf,
    /// Only these queries (q01, q7, 7, ...); default all files in --queries.
    #[arg(long, value_delimiter = ',')]
    query: Vec<String>,
    /// Runs per query (the first is the cold one).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Read run requests from stdin (JSON lines) instead of running --query.
    #[arg(long)]
    serve: bool,
    /// Print each query's physical plan (EXPLAIN) on stderr instead of running it.
    #[arg(long)]
    explain: bool,
    /// Partitions (DataFusion target_partitions); default one per core, as the engine.
    #[arg(long)]
    target_partitions: Option<usize>,
    #[arg(
        long,
        env = "SQE_S3_ENDPOINT",
        default_value = "http://127.0.0.1:19000"
    )]
    s3_endpoint: String,
    #[arg(long, env = "SQE_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    #[arg(long, env = "SQE_MINIO_ROOT_USER", hide_env_values = true)]
    s3_access_key_id: Option<String>,
    #[arg(long, env = "SQE_MINIO_ROOT_PASSWORD", hide_env_values = true)]
    s3_secret_access_key: Option<String>,
}

struct Bench {
    ctx: SessionContext,
    system: &'static str,
    runs_done: BTreeMap<String, usize>,
}

fn partitions(args: &Args) -> usize {
    args.target_partitions.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

fn context(args: &Args) -> anyhow::Result<SessionContext> {
    // As CatalogContextFactory::create (engine/src/catalog/mod.rs), less the catalogs.
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(GreedyMemoryPool::new(ENGINE_SESSION_MEMORY)))
        .build_arc()?;
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_target_partitions(partitions(args).max(1));
    // The engine's PLANNING_CONCURRENCY (its scans wait on the catalog while planned).
    config.options_mut().execution.planning_concurrency = 16;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// The directory holding every data file of a table, as an s3:// URL ending in '/'.
fn data_dir(table: &str, files: &[Value]) -> anyhow::Result<String> {
    let mut dirs = files.iter().map(|f| {
        let f = f.as_str().unwrap_or_default();
        f.rsplit_once('/')
            .map(|(d, _)| format!("{d}/"))
            .unwrap_or_default()
    });
    let Some(dir) = dirs.next() else {
        bail!("{table}: lake.json lists no data files");
    };
    if dirs.any(|d| d != dir) || !dir.starts_with("s3://") {
        bail!("{table}: data files are not all in one s3:// directory");
    }
    Ok(dir)
}

async fn register(ctx: &SessionContext, args: &Args, lake: &Value) -> anyhow::Result<()> {
    let tables = lake["tables"]
        .as_object()
        .context("lake.json has no tables")?;
    if args.source == Source::S3 {
        let first = tables.values().next().context("no tables")?;
        let dir = data_dir(
            "first table",
            first["data_files"].as_array().context("files")?,
        )?;
        let bucket = dir["s3://".len()..]
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let settings = s3::S3Settings {
            endpoint: args.s3_endpoint.clone(),
            region: args.s3_region.clone(),
            bucket: bucket.clone(),
            access_key_id: args
                .s3_access_key_id
                .clone()
                .context("SQE_MINIO_ROOT_USER (static S3 key) is not set")?,
            secret_access_key: args
                .s3_secret_access_key
                .clone()
                .context("SQE_MINIO_ROOT_PASSWORD is not set")?,
        };
        let url = url::Url::parse(&format!("s3://{bucket}"))?;
        ctx.runtime_env()
            .register_object_store(&url, Arc::new(s3::OpendalS3::new(&settings)?));
    }
    for (name, t) in tables {
        let path = match args.source {
            Source::Local => t["local_file"]
                .as_str()
                .context("lake.json: local_file")?
                .to_owned(),
            Source::S3 => data_dir(name, t["data_files"].as_array().context("data_files")?)?,
        };
        ctx.register_parquet(name, &path, ParquetReadOptions::default())
            .await
            .with_context(|| format!("registering {name} at {path}"))?;
    }
    Ok(())
}

impl Bench {
    async fn run_once(&mut self, query: &str, sql: &str) -> Value {
        let run = *self.runs_done.get(query).unwrap_or(&0);
        self.runs_done.insert(query.to_owned(), run + 1);
        let start = Instant::now();
        let result = async {
            let df = self.ctx.sql(sql).await?;
            df.collect().await
        }
        .await;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(batches) => {
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                match checksum::checksum(&batches) {
                    Ok(sum) => json!({"system": self.system, "query": query, "run": run,
                                      "ms": ms, "rows": rows, "checksum": sum}),
                    Err(e) => json!({"system": self.system, "query": query, "run": run,
                                     "error": format!("checksum: {e}")}),
                }
            }
            Err(e) => json!({"system": self.system, "query": query, "run": run, "ms": ms,
                             "error": e.to_string()}),
        }
    }
}

fn emit(v: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}")?;
    out.flush()?;
    Ok(())
}

/// `q7`, `7`, `q07` -> `q07`.
fn query_name(q: &str) -> String {
    let n = q.trim_start_matches(['q', 'Q']).trim_end_matches(".sql");
    match n.parse::<u32>() {
        Ok(n) => format!("q{n:02}"),
        Err(_) => q.to_owned(),
    }
}

fn query_files(args: &Args) -> anyhow::Result<Vec<(String, PathBuf)>> {
    if !args.query.is_empty() {
        return Ok(args
            .query
            .iter()
            .map(|q| {
                let name = query_name(q);
                let file = args.queries.join(format!("{name}.sql"));
                (name, file)
            })
            .collect());
    }
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&args.queries)
        .with_context(|| format!("reading {}", args.queries.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .map(|p| {
            let stem = p.file_stem().unwrap_or_default().to_string_lossy();
            (query_name(&stem), p)
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read_sql(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
    Ok(text.trim().trim_end_matches(';').to_owned())
}

fn lake_json(path: &Path) -> anyhow::Result<Value> {
    let file = if path.is_dir() {
        path.join("lake.json")
    } else {
        path.to_owned()
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("{} (written by e2e/bench/data.py --sf N)", file.display()))?;
    Ok(serde_json::from_str(&text)?)
}

async fn serve(bench: &mut Bench) -> anyhow::Result<()> {
    // One request a line; blocking reads are fine: nothing else runs meanwhile.
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let req: Value = serde_json::from_str(&line).context("request: not JSON")?;
        let query = query_name(req["query"].as_str().context("request: query")?);
        let runs = req["runs"].as_u64().unwrap_or(1) as usize;
        let sql = match req["file"].as_str().map(Path::new).map(read_sql) {
            Some(Ok(sql)) => sql,
            Some(Err(e)) => {
                for _ in 0..runs {
                    emit(&json!({"system": bench.system, "query": query, "error": e.to_string()}))?;
                }
                continue;
            }
            None => bail!("request: file"),
        };
        for _ in 0..runs {
            let v = bench.run_once(&query, &sql).await;
            emit(&v)?;
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let lake = lake_json(&args.lake)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let start = Instant::now();
        let ctx = context(&args)?;
        register(&ctx, &args, &lake).await?;
        let system = match args.source {
            Source::Local => "datafusion-local",
            Source::S3 => "datafusion-s3",
        };
        emit(&json!({"system": system, "ready": true,
                     "setup_ms": start.elapsed().as_secs_f64() * 1e3,
                     "datafusion": datafusion::DATAFUSION_VERSION,
                     "target_partitions": ctx.state().config().target_partitions(),
                     "scale_factor": lake["scale_factor"]}))?;
        let mut bench = Bench {
            ctx,
            system,
            runs_done: BTreeMap::new(),
        };
        if args.serve {
            return serve(&mut bench).await;
        }
        for (name, file) in query_files(&args)? {
            match read_sql(&file) {
                Ok(sql) if args.explain => {
                    let plan = bench
                        .ctx
                        .sql(&format!("EXPLAIN {sql}"))
                        .await?
                        .collect()
                        .await?;
                    let text = datafusion::arrow::util::pretty::pretty_format_batches(&plan)?;
                    eprintln!("{name}\n{text}");
                }
                Ok(sql) => {
                    for _ in 0..args.runs.max(1) {
                        let v = bench.run_once(&name, &sql).await;
                        emit(&v)?;
                    }
                }
                Err(e) => emit(&json!({"system": system, "query": name, "error": e.to_string()}))?,
            }
        }
        Ok(())
    })
}
