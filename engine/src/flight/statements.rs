//! Statements over Flight SQL: handles and tickets in, FlightInfo and encoded batches out. What
//! happens to the statement itself is the executor's (`crate::exec`).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::{
    ActionCreatePreparedStatementResult, ProstMessageExt, TicketStatementQuery,
};
use arrow_flight::{CancelStatus, FlightDescriptor, FlightInfo};
use datafusion::common::ScalarValue;
use futures::TryStreamExt;
use prost::Message;
use tonic::{Response, Status};
use tracing::info;

use super::caller::{Caller, attach_handle};
use super::params::StatementHandle;
use super::results::{DoGetStream, flight_info, one_batch, schema_bytes};
use crate::drain::CallGuard;
use crate::error::EngineError;
use crate::exec::{CancelOutcome, Executor, Planned, Statement};

pub struct Statements {
    executor: Executor,
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

/// The statement a handle carries, with its bound rows.
fn statement(handle: &StatementHandle) -> Result<Statement, EngineError> {
    Ok(Statement {
        sql: handle.sql.clone(),
        rows: handle.bound_rows()?,
    })
}

impl Statements {
    pub fn new(executor: Executor) -> Self {
        Self { executor }
    }

    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// GetFlightInfo: the announced schema and a ticket for one run (DDL has run by then: its
    /// ticket answers an empty result).
    pub async fn flight_info(
        &self,
        caller: &Caller,
        handle: &StatementHandle,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, EngineError> {
        match self
            .executor
            .plan(&caller.session, statement(handle)?)
            .await?
        {
            Planned::Ran => flight_info(&Schema::empty(), ticket(&handle.executed()), descriptor),
            // One run: the ticket carries a nonce, so it can be cancelled on its own, and the
            // fingerprint of the schema announced here, which DoGet streams or refuses to.
            Planned::Later {
                announced,
                fingerprint,
            } => flight_info(
                &announced,
                ticket(&handle.run_once(fingerprint)),
                descriptor,
            ),
        }
    }

    /// GetSchema: what this statement's FlightInfo announces, with nothing run.
    pub async fn schema(
        &self,
        caller: &Caller,
        handle: &StatementHandle,
    ) -> Result<SchemaRef, EngineError> {
        self.executor
            .schema(&caller.session, statement(handle)?)
            .await
    }

    /// DoGet: runs the statement and encodes its batches as DataFusion produces them. The
    /// response holds the caller's drain guard until the stream ends or the client drops it.
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
        let execution = self
            .executor
            .execute(
                &caller.session,
                statement(&handle)?,
                handle.schema.clone(),
                ticket,
            )
            .await?;
        let batches = execution
            .batches
            .map_err(|e| FlightError::Tonic(Box::new(Status::from(e))));
        let Caller { issued, guard, .. } = caller;
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(execution.schema)
            .build(batches)
            .map_err(Status::from);
        let flight = Streaming {
            inner: Box::pin(flight),
            span: tracing::Span::current(),
            _guard: guard,
        };
        let mut response = Response::new(Box::pin(flight) as DoGetStream);
        attach_handle(response.metadata_mut(), issued.as_ref());
        Ok(response)
    }

    /// CreatePreparedStatement: the dataset and parameter schemas; the handle is the statement.
    pub async fn prepare(
        &self,
        caller: &Caller,
        sql: &str,
    ) -> Result<ActionCreatePreparedStatementResult, EngineError> {
        let (announced, parameters) = self.executor.prepare(&caller.session, sql).await?;
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

    /// DoPut updates: the statement run once with every row, and its count of affected rows.
    pub async fn update(
        &self,
        caller: &Caller,
        sql: &str,
        rows: Vec<Vec<ScalarValue>>,
    ) -> Result<i64, EngineError> {
        let statement = Statement {
            sql: sql.to_owned(),
            rows,
        };
        self.executor.update(&caller.session, statement).await
    }

    /// Cancels the caller's query behind every endpoint of `info`.
    pub fn cancel(&self, caller: &Caller, info: &FlightInfo) -> CancelStatus {
        let mut outcome = CancelStatus::NotCancellable;
        for ticket in info.endpoint.iter().filter_map(|e| e.ticket.as_ref()) {
            if already_ran(&ticket.ticket) {
                continue;
            }
            if self.executor.cancel(&caller.session, &ticket.ticket) == CancelOutcome::Cancelled {
                outcome = CancelStatus::Cancelled;
            }
        }
        info!(
            event = "cancel",
            user = caller.user(),
            session = caller.session.id.as_str(),
            outcome = outcome.as_str_name()
        );
        outcome
    }
}

/// A result stream as the client reads it: polled in its call's span (`super::door`), so what
/// is logged while it streams, and the statement's own line when it ends, says whose call it
/// is; and holding the call's drain guard until it ends or the client drops it.
struct Streaming {
    inner: DoGetStream,
    span: tracing::Span,
    _guard: CallGuard,
}

impl futures::Stream for Streaming {
    type Item = Result<arrow_flight::FlightData, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        this.inner.as_mut().poll_next(cx)
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
