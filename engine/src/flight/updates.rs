//! Statements run to completion for their count: `DoPut` updates, and DDL run while planning.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch, UInt64Array};
use datafusion::common::ScalarValue;

use super::caller::{Caller, Gate};
use super::limits::{QueryLimits, timed_out};
use super::params;
use super::query_log::QueryLog;
use crate::error::EngineError;
use crate::metrics::Metrics;
use crate::sql::plan::plan;

pub struct Updates {
    gate: Arc<Gate>,
    limits: QueryLimits,
    metrics: Arc<Metrics>,
}

impl Updates {
    pub fn new(gate: Arc<Gate>, limits: QueryLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            gate,
            limits,
            metrics,
        }
    }

    /// Runs `sql` once, with every bound row in one plan (see [`params::bind_rows`]), under the
    /// query limits, and returns the affected rows.
    pub async fn run(
        &self,
        caller: &Caller,
        sql: &str,
        rows: Vec<Vec<ScalarValue>>,
    ) -> Result<i64, EngineError> {
        let mut log = QueryLog::start(self.metrics.clone(), &caller.session, sql);
        let result = async {
            let admission = self.limits.admit(caller.user())?;
            let timeout = admission.timeout;
            tokio::time::timeout_at(admission.deadline, async {
                let ctx = self.gate.context(caller).await?;
                let planned = plan(&ctx, sql).await?;
                let bound = params::bind_rows(planned.plan, rows)?;
                let batches = ctx.execute_logical_plan(bound).await?.collect().await?;
                Ok::<_, EngineError>(affected_rows(&batches))
            })
            .await
            .unwrap_or_else(|_| Err(timed_out(timeout)))
        }
        .await;
        match &result {
            Ok(n) => log.succeeded(u64::try_from(*n).unwrap_or(0)),
            Err(e) => log.failed(e.code()),
        }
        result
    }
}

/// DML results are one `count` row per batch; DDL returns no rows and counts as 0.
fn affected_rows(batches: &[RecordBatch]) -> i64 {
    batches
        .iter()
        .filter_map(|b| b.column_by_name("count"))
        .filter_map(|c| c.as_any().downcast_ref::<UInt64Array>())
        .flat_map(|a| (0..a.len()).map(move |i| a.value(i)))
        .map(|n| i64::try_from(n).unwrap_or(i64::MAX))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn update_counts_come_from_the_count_column_and_ddl_counts_zero() {
        let count = Arc::new(Schema::new(vec![Field::new(
            "count",
            DataType::UInt64,
            false,
        )]));
        let b = |n: u64| {
            RecordBatch::try_new(count.clone(), vec![Arc::new(UInt64Array::from(vec![n]))]).unwrap()
        };
        assert_eq!(affected_rows(&[b(3), b(4)]), 7);
        assert_eq!(affected_rows(&[]), 0);
    }
}
