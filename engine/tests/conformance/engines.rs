//! The two engines every record runs on: DataFusion in-process (the reference, configured as
//! DataFusion's own sqllogictest runner configures it) and SQE through its Flight SQL service
//! with a real Flight SQL client that refuses a result whose stream breaks its announcement.

use std::sync::Arc;

use arrow_flight::sql::client::FlightSqlServiceClient;
use async_trait::async_trait;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::TryStreamExt;
use sqllogictest::{AsyncDB, ColumnType, DBOutput};
use tonic::transport::Channel;

use super::render;

/// A column type letter: B, D, I, P, R, T, or `?` for everything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter(char);

impl ColumnType for Letter {
    fn from_char(c: char) -> Option<Self> {
        Some(Letter(if "BDIPRT".contains(c) { c } else { '?' }))
    }

    fn to_char(&self) -> char {
        self.0
    }
}

#[derive(Debug)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

fn output(letters: Vec<char>, rows: Vec<Vec<String>>) -> DBOutput<Letter> {
    if letters.is_empty() && rows.is_empty() {
        return DBOutput::StatementComplete(0);
    }
    DBOutput::Rows {
        types: letters.into_iter().map(Letter).collect(),
        rows,
    }
}

/// The engine name conditions (`onlyif`, `skipif`) are checked against, on both sides.
const ENGINE_NAME: &str = "DataFusion";

/// DataFusion in-process, one context per file.
pub struct Reference {
    ctx: SessionContext,
}

impl Reference {
    pub fn new() -> Self {
        let state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(4))
            .with_runtime_env(Arc::new(RuntimeEnv::default()))
            .with_default_features()
            .build();
        Self {
            ctx: SessionContext::new_with_state(state),
        }
    }
}

#[async_trait]
impl AsyncDB for Reference {
    type Error = Failure;
    type ColumnType = Letter;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Letter>, Failure> {
        let failed = |e: datafusion::error::DataFusionError| {
            Failure(format!("DataFusion error: {}", e.strip_backtrace()))
        };
        let df = self.ctx.sql(sql).await.map_err(failed)?;
        let task = df.task_ctx();
        let plan = df.create_physical_plan().await.map_err(failed)?;
        let stream = execute_stream(plan, Arc::new(task)).map_err(failed)?;
        let letters = render::type_letters(&stream.schema());
        let batches: Vec<_> = stream.try_collect().await.map_err(failed)?;
        let rows = render::rows(&batches).map_err(|e| Failure(format!("Arrow error: {e}")))?;
        Ok(output(letters, rows))
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        ENGINE_NAME
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await
    }
}

/// SQE through Flight SQL: GetFlightInfo, then DoGet on every endpoint, as ADBC's `execute` does.
pub struct ThroughSqe {
    pub client: FlightSqlServiceClient<Channel>,
}

#[async_trait]
impl AsyncDB for ThroughSqe {
    type Error = Failure;
    type ColumnType = Letter;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Letter>, Failure> {
        let answer = crate::common::query(&mut self.client, sql)
            .await
            .map_err(|s| Failure(format!("DataFusion error: {}", s.message())))?;
        if !answer.kept_the_contract() {
            return Err(Failure(format!(
                "schema contract broken: announced {:?}, streamed {:?}, batches {:?}",
                answer.announced,
                answer.streamed,
                answer
                    .batches
                    .iter()
                    .map(|b| b.schema())
                    .collect::<Vec<_>>()
            )));
        }
        let letters = render::type_letters(&answer.announced);
        let rows =
            render::rows(&answer.batches).map_err(|e| Failure(format!("Arrow error: {e}")))?;
        Ok(output(letters, rows))
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        ENGINE_NAME
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await
    }
}

/// DataFusion's own result check: each actual row's cells joined by a space, both sides trimmed
/// at the end, compared line by line; `<slt:ignore>` in the expected text matches anything.
pub fn validate(
    normalizer: sqllogictest::Normalizer,
    actual: &[Vec<String>],
    expected: &[String],
) -> bool {
    let expected: Vec<String> = expected.iter().map(normalizer).collect();
    let actual: Vec<String> = actual
        .iter()
        .map(|row| row.join(" ").trim_end().to_string())
        .collect();
    const IGNORE: &str = "<slt:ignore>";
    if expected.iter().any(|line| line.contains(IGNORE)) {
        let expected = expected.join("\n");
        let actual = actual.join("\n");
        let mut at = 0;
        for (i, fragment) in expected.split(IGNORE).enumerate() {
            match actual[at..].find(fragment) {
                Some(found) if i > 0 || found == 0 => at += found + fragment.len(),
                _ => return false,
            }
        }
        return true;
    }
    actual == expected
}

/// sqllogictest's normalizer type takes `&String`.
#[allow(clippy::ptr_arg)]
pub fn trim_end(line: &String) -> String {
    line.trim_end().to_string()
}
