//! Statement planning and execution: GetFlightInfo plans (and runs DDL, once), DoGet runs a
//! query and streams its batches as DataFusion produces them, CreatePreparedStatement plans for
//! the schemas, CancelFlightInfo stops a running query.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::{
    ActionCreatePreparedStatementResult, ProstMessageExt, TicketStatementQuery,
};
use arrow_flight::{CancelStatus, FlightData, FlightDescriptor, FlightInfo};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::SessionContext;
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::{Response, Status};
use tracing::info;

use super::caller::{Caller, Gate, attach_handle};
use super::contract;
use super::params::StatementHandle;
use super::results::{DoGetStream, flight_info, one_batch, schema_bytes};
use super::updates::Updates;
use crate::drain::CallGuard;
use crate::error::EngineError;
use crate::exec::cancel::{Cancellable, Cancellations};
use crate::exec::limits::{Limited, QueryLimits};
use crate::exec::query_log::QueryLog;
use crate::metrics::Metrics;
use crate::sql::bind;
use crate::sql::plan::plan;

pub struct Statements {
    gate: Arc<Gate>,
    updates: Arc<Updates>,
    limits: QueryLimits,
    metrics: Arc<Metrics>,
    cancels: Arc<Cancellations>,
}

/// DDL and session statements take effect when planned-and-run in GetFlightInfo; queries and
/// DML run in DoGet, streaming.
fn runs_at_planning(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_))
}

/// Whether a ticket is one of a statement that ran while planning (DDL): nothing to cancel.
fn already_ran(ticket: &[u8]) -> bool {
    let Ok(any) = arrow_flight::sql::Any::decode(ticket) else {
        return false;
    };
    matches!(
        any.unpack::<TicketStatementQuery>(),
        Ok(Some(t)) if StatementHandle::decode(&t.statement_handle).is_ok_and(|h| h.executed)
    )
}

fn ticket(handle: &StatementHandle) -> Vec<u8> {
    TicketStatementQuery {
        statement_handle: handle.encode().into(),
    }
    .as_any()
    .encode_to_vec()
}

impl Statements {
    pub fn new(
        gate: Arc<Gate>,
        updates: Arc<Updates>,
        limits: QueryLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            gate,
            updates,
            limits,
            metrics,
            cancels: Arc::default(),
        }
    }

    /// Plans the statement (bound to its values, if any: a `?` alone has no type) for its result
    /// schema. DDL runs here, once: clients fetch DoGet lazily (ADBC may not fetch at all before
    /// its next statement), so running it in DoGet would race what comes next.
    pub async fn flight_info(
        &self,
        caller: &Caller,
        handle: &StatementHandle,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, EngineError> {
        let log = QueryLog::start(self.metrics.clone(), &caller.session, &handle.sql);
        let planned = async {
            let values = bind::single_row(handle.bound_rows()?)?;
            let sql = handle.sql.clone();
            self.planned(caller, move |ctx| async move {
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
            self.updates
                .run(caller, &handle.sql, handle.bound_rows()?)
                .await?;
            return flight_info(&Schema::empty(), ticket(&handle.executed()), descriptor);
        }
        // One run: the ticket carries a nonce, so it can be cancelled on its own, and the
        // fingerprint of the schema announced here, which DoGet streams or refuses to.
        let run = handle.run_once(contract::fingerprint(&announced)?);
        flight_info(&announced, ticket(&run), descriptor)
    }

    /// GetSchema: the schema this statement's FlightInfo announces, with nothing run (a DDL
    /// statement announces the empty result it answers with). Unbound placeholders are answered
    /// as CreatePreparedStatement answers them.
    pub async fn schema(
        &self,
        caller: &Caller,
        handle: &StatementHandle,
    ) -> Result<SchemaRef, EngineError> {
        let values = bind::single_row(handle.bound_rows()?)?;
        let sql = handle.sql.clone();
        self.planned(caller, move |ctx| async move {
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

    /// Plans and runs the statement, streaming the result batch by batch as DataFusion produces
    /// it. The query holds its admission, its cancellation entry and the caller's drain guard
    /// until the stream ends or the client drops it.
    pub async fn execute(
        &self,
        caller: Caller,
        handle: StatementHandle,
        ticket: &[u8],
    ) -> Result<Response<DoGetStream>, EngineError> {
        if handle.executed {
            // Already run when its FlightInfo was asked for: an empty result.
            let empty = Arc::new(Schema::empty());
            return Ok(caller.wrap(one_batch(empty.clone(), Ok(RecordBatch::new_empty(empty)))));
        }
        let log = QueryLog::start(self.metrics.clone(), &caller.session, &handle.sql);
        let started = async {
            let admission = self
                .limits
                .admit(&caller.quota_key(), self.limits.deadline())
                .await?;
            let values = bind::single_row(handle.bound_rows()?)?;
            let (running, signal) = self.cancels.start(&caller.quota_key(), ticket)?;
            let sql = handle.sql.clone();
            let promised = handle.schema.clone();
            let (announced, stream) = self
                .gate
                .off_workers(&caller, &self.limits, &admission, move |ctx| async move {
                    let bound = bind::bind(plan(&ctx, &sql).await?.plan, values)?;
                    // Optimized once: the plan announced is the plan that runs.
                    let optimized = contract::optimized(&ctx, &bound)?;
                    let announced = contract::announced(optimized.schema().as_arrow());
                    if let Some(promised) = promised
                        && promised != contract::fingerprint(&announced)?
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
        let batches = stream
            .map_err(EngineError::from)
            .and_then(move |b| {
                counted.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                futures::future::ready(contract::conform(b, &to))
            })
            .map_err(|e| FlightError::Tonic(Box::new(Status::from(e))));
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(announced)
            .build(batches)
            .map_err(Status::from);
        let flight = Limited::new(Cancellable::new(flight, running, signal), admission)
            .until(caller.session.ending());
        let Caller { issued, guard, .. } = caller;
        let logged = Logged {
            inner: Box::pin(flight),
            log: Some(log),
            _guard: guard,
        };
        let mut response = Response::new(Box::pin(logged) as DoGetStream);
        attach_handle(response.metadata_mut(), issued.as_ref());
        Ok(response)
    }

    /// Plans for the dataset and parameter schemas; the handle is the statement itself.
    pub async fn prepare(
        &self,
        caller: &Caller,
        sql: &str,
    ) -> Result<ActionCreatePreparedStatementResult, EngineError> {
        let log = QueryLog::start(self.metrics.clone(), &caller.session, sql);
        let text = sql.to_owned();
        let planned = self
            .planned(caller, move |ctx| async move {
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
        let parameters = bind::parameter_schema(&plan)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: StatementHandle::new(sql).encode().into(),
            dataset_schema: schema_bytes(&announced)?,
            parameter_schema: if parameters.fields().is_empty() {
                Default::default()
            } else {
                schema_bytes(&parameters)?
            },
        })
    }

    /// Runs `work` (planning) on the caller's context with a slot of its own, off the workers.
    async fn planned<T, F, Fut>(&self, caller: &Caller, work: F) -> Result<T, EngineError>
    where
        F: FnOnce(SessionContext) -> Fut,
        Fut: Future<Output = Result<T, EngineError>> + Send + 'static,
        T: Send + 'static,
    {
        let admission = self
            .limits
            .admit(&caller.quota_key(), self.limits.deadline())
            .await?;
        self.gate
            .off_workers(caller, &self.limits, &admission, work)
            .await
    }

    /// Cancels the caller's query behind every endpoint of `info`.
    pub fn cancel(&self, caller: &Caller, info: &FlightInfo) -> CancelStatus {
        let user = caller.user();
        let owner = caller.quota_key();
        let mut outcome = CancelStatus::NotCancellable;
        for ticket in info.endpoint.iter().filter_map(|e| e.ticket.as_ref()) {
            if already_ran(&ticket.ticket) {
                continue;
            }
            if self.cancels.cancel(&owner, &ticket.ticket) == CancelStatus::Cancelled {
                outcome = CancelStatus::Cancelled;
            }
        }
        info!(
            event = "cancel",
            user,
            session = caller.session.id.as_str(),
            outcome = outcome.as_str_name()
        );
        outcome
    }
}

/// Logs the statement as failed with `e`'s code and hands `e` back.
fn failed(mut log: QueryLog, e: EngineError) -> EngineError {
    log.failed(e.code());
    e
}

/// A query's result stream that records how it ended in the query's log.
struct Logged {
    inner: DoGetStream,
    log: Option<QueryLog>,
    _guard: CallGuard,
}

impl Stream for Logged {
    type Item = Result<FlightData, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(mut log) = self.log.take() {
                    log.succeeded(0);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                if let Some(mut log) = self.log.take() {
                    log.failed(status.code());
                }
            }
            _ => {}
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tickets_of_statements_that_ran_while_planning_are_already_run() {
        assert!(already_ran(&ticket(
            &StatementHandle::new("CREATE TABLE t (a INT)").executed()
        )));
        assert!(!already_ran(&ticket(
            &StatementHandle::new("SELECT 1").run_once("f".into())
        )));
        assert!(!already_ran(b"\x00garbage"));
    }
}
