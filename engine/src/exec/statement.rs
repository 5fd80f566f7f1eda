//! A statement's life for one session: planned under an admission and off the async workers,
//! run once if it is DDL, streamed if it is a query (brought to what was announced, under its
//! deadline, cancellable, logged), run to completion if it is an update.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::SessionContext;
use futures::{Stream, TryStreamExt};

use super::admission::{Admission, Limited, QueryLimits, timed_out};
use super::cancel::{CancelOutcome, Cancellable, Cancellations};
use super::contract;
use super::query_log::QueryLog;
use super::update::{affected_rows, run_to_completion, runs_as_update};
use crate::error::EngineError;
use crate::metrics::Metrics;
use crate::session::{Session, SessionManager};
use crate::sql::bind;
use crate::sql::plan;

/// A query's result batches, each exactly of the schema announced.
pub type Batches = Pin<Box<dyn Stream<Item = Result<RecordBatch, EngineError>> + Send>>;

/// What planning a statement for its result found.
pub enum Planned {
    /// A DDL or session statement: it ran, once, while planning; its result is empty.
    Ran,
    /// A query or DML, to run later: it will stream `announced`, which `fingerprint` names.
    Later {
        announced: SchemaRef,
        fingerprint: String,
    },
}

/// A running query: the schema it streams, and its batches.
pub struct Execution {
    pub schema: SchemaRef,
    pub batches: Batches,
}

/// A statement as a client sent it: its text and the rows bound to its placeholders.
pub struct Statement {
    pub sql: String,
    pub rows: Vec<Vec<ScalarValue>>,
}

pub struct Executor {
    sessions: Arc<SessionManager>,
    limits: QueryLimits,
    metrics: Arc<Metrics>,
    cancels: Arc<Cancellations>,
}

/// DDL and session statements take effect when planned-and-run while planning; queries and DML
/// run later, streaming.
fn runs_at_planning(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_))
}

impl Executor {
    pub fn new(sessions: Arc<SessionManager>, limits: QueryLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            sessions,
            limits,
            metrics,
            cancels: Arc::default(),
        }
    }

    /// Plans the statement (bound to its values, if any: a `?` alone has no type) for its
    /// result schema. DDL runs here, once: clients fetch results lazily (ADBC may not fetch at
    /// all before its next statement), so running it later would race what comes next.
    pub async fn plan(
        &self,
        session: &Arc<Session>,
        statement: Statement,
    ) -> Result<Planned, EngineError> {
        let log = QueryLog::start(self.metrics.clone(), session, &statement.sql);
        let planned = async {
            let values = bind::single_row(statement.rows.clone())?;
            let sql = statement.sql.clone();
            self.planned(session, move |ctx| async move {
                let bound = bind::bind(plan(&ctx, &sql).await?.plan, values)?;
                let announced = contract::announce(&ctx, &bound)?;
                Ok((bound, announced))
            })
            .await
        }
        .await;
        let (plan, announced) = match planned {
            Ok(p) => p,
            Err(e) => return Err(failed(log, e)),
        };
        log.dismiss();
        if runs_at_planning(&plan) {
            self.update(session, statement).await?;
            return Ok(Planned::Ran);
        }
        Ok(Planned::Later {
            fingerprint: contract::fingerprint(&announced),
            announced,
        })
    }

    /// The schema [`Executor::plan`] would announce, with nothing run (a DDL statement announces
    /// the empty result it answers with). Unbound placeholders are answered as
    /// [`Executor::prepare`] answers them.
    pub async fn schema(
        &self,
        session: &Arc<Session>,
        statement: Statement,
    ) -> Result<SchemaRef, EngineError> {
        let values = bind::single_row(statement.rows)?;
        let sql = statement.sql;
        self.planned(session, move |ctx| async move {
            let planned = plan(&ctx, &sql).await?.plan;
            if runs_at_planning(&planned) {
                return Ok(Arc::new(Schema::empty()));
            }
            if values.is_empty() && !bind::parameter_schema(&planned)?.fields().is_empty() {
                return Ok(contract::announce_unbound(&ctx, &planned));
            }
            contract::announce(&ctx, &bind::bind(planned, values)?)
        })
        .await
    }

    /// Plans for the result and parameter schemas, with nothing bound: `(result, parameters)`.
    pub async fn prepare(
        &self,
        session: &Arc<Session>,
        sql: &str,
    ) -> Result<(SchemaRef, SchemaRef), EngineError> {
        let log = QueryLog::start(self.metrics.clone(), session, sql);
        let text = sql.to_owned();
        let planned = self
            .planned(session, move |ctx| async move {
                let planned = plan(&ctx, &text).await?.plan;
                let announced = contract::announce_unbound(&ctx, &planned);
                Ok((planned, announced))
            })
            .await;
        let (plan, announced) = match planned {
            Ok(p) => p,
            Err(e) => return Err(failed(log, e)),
        };
        log.dismiss();
        Ok((announced, Arc::new(bind::parameter_schema(&plan)?)))
    }

    /// Plans and runs the query, streaming its result batch by batch as DataFusion produces it.
    /// `run` names this run, for cancelling; `promised` is the fingerprint of the schema its
    /// planning announced: if the statement now plans to another, it is refused rather than
    /// streamed. The stream holds the admission and the cancellation entry until it ends or is
    /// dropped.
    pub async fn execute(
        &self,
        session: &Arc<Session>,
        statement: Statement,
        promised: Option<String>,
        run: &[u8],
    ) -> Result<Execution, EngineError> {
        let owner = session.identity.quota_key();
        let log = QueryLog::start(self.metrics.clone(), session, &statement.sql);
        let started = async {
            let admission = self.limits.admit(&owner, self.limits.deadline()).await?;
            let values = bind::single_row(statement.rows)?;
            let (running, signal) = self.cancels.start(&owner, run)?;
            let sql = statement.sql;
            let (announced, stream) = self
                .off_workers(session, &admission, move |ctx| async move {
                    let bound = bind::bind(plan(&ctx, &sql).await?.plan, values)?;
                    // Optimized once: the plan announced is the plan that runs.
                    let optimized = contract::optimized(&ctx, &bound)?;
                    let announced = contract::announced(optimized.schema().as_arrow());
                    if let Some(promised) = promised
                        && promised != contract::fingerprint(&announced)
                    {
                        return Err(EngineError::FailedPrecondition(
                            "the statement's result columns changed since it was planned \
                             (a table was altered or replaced); run it again"
                                .into(),
                        ));
                    }
                    if runs_at_planning(&optimized) {
                        let df = ctx.execute_logical_plan(optimized).await?;
                        return Ok((announced, df.execute_stream().await?));
                    }
                    let state = ctx.state();
                    let physical = state
                        .query_planner()
                        .create_physical_plan(&optimized, &state)
                        .await?;
                    Ok((announced, execute_stream(physical, ctx.task_ctx())?))
                })
                .await?;
            Ok::<_, EngineError>((announced, stream, admission, running, signal))
        }
        .await;
        let (announced, stream, admission, running, signal) = match started {
            Ok(s) => s,
            Err(e) => return Err(failed(log, e)),
        };
        let counted = log.rows();
        let to = announced.clone();
        let batches = stream.map_err(EngineError::from).and_then(move |b| {
            counted.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
            futures::future::ready(contract::conform(b, &to))
        });
        let batches = Limited::new(Cancellable::new(batches, running, signal), admission)
            .until(session.ending());
        Ok(Execution {
            schema: announced,
            batches: Box::pin(Logged {
                inner: Box::pin(batches),
                log: Some(log),
            }),
        })
    }

    /// Runs the statement once, with every bound row in one plan (see [`bind::bind_rows`]),
    /// under the query limits, and returns the affected rows.
    pub async fn update(
        &self,
        session: &Arc<Session>,
        statement: Statement,
    ) -> Result<i64, EngineError> {
        let mut log = QueryLog::start(self.metrics.clone(), session, &statement.sql);
        let Statement { sql, rows } = statement;
        let result = self
            .planned(session, move |ctx| async move {
                let planned = plan(&ctx, &sql).await?;
                runs_as_update(&planned.plan)?;
                let bound = bind::bind_rows(planned.plan, rows)?;
                let batches = run_to_completion(&ctx, bound).await?;
                Ok(affected_rows(&batches))
            })
            .await;
        match &result {
            Ok(n) => log.succeeded(u64::try_from(*n).unwrap_or(0)),
            Err(e) => log.failed(e),
        }
        result
    }

    /// Cancels the session user's run named `run` (see [`Cancellations`]).
    pub fn cancel(&self, session: &Session, run: &[u8]) -> CancelOutcome {
        self.cancels.cancel(&session.identity.quota_key(), run)
    }

    /// Runs `work` (planning, a catalog listing) on the session's context with a slot of its
    /// own, off the workers.
    pub async fn planned<T, F, Fut>(
        &self,
        session: &Arc<Session>,
        work: F,
    ) -> Result<T, EngineError>
    where
        F: FnOnce(SessionContext) -> Fut,
        Fut: Future<Output = Result<T, EngineError>> + Send + 'static,
        T: Send + 'static,
    {
        let admission = self
            .limits
            .admit(&session.identity.quota_key(), self.limits.deadline())
            .await?;
        self.off_workers(session, &admission, work).await
    }

    /// Runs `work` on the session's context on the blocking pool under `admission`
    /// ([`QueryLimits::off_workers`]); fetching the context (a token refresh, perhaps) counts
    /// against the same deadline.
    async fn off_workers<T, F, Fut>(
        &self,
        session: &Arc<Session>,
        admission: &Admission,
        work: F,
    ) -> Result<T, EngineError>
    where
        F: FnOnce(SessionContext) -> Fut,
        Fut: Future<Output = Result<T, EngineError>> + Send + 'static,
        T: Send + 'static,
    {
        let ctx = tokio::time::timeout_at(admission.deadline, self.sessions.context(session))
            .await
            .unwrap_or_else(|_| Err(timed_out(admission.timeout)))?;
        self.limits.off_workers(admission, work(ctx)).await
    }
}

/// Logs the statement as failed with `e`'s code and hands `e` back.
fn failed(mut log: QueryLog, e: EngineError) -> EngineError {
    log.failed(&e);
    e
}

/// A query's result stream that records how it ended in the query's log.
struct Logged {
    inner: Batches,
    log: Option<QueryLog>,
}

impl Stream for Logged {
    type Item = Result<RecordBatch, EngineError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(mut log) = self.log.take() {
                    log.succeeded(0);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(mut log) = self.log.take() {
                    log.failed(e);
                }
            }
            _ => {}
        }
        polled
    }
}
