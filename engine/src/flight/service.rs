//! The `FlightSqlService`: each call authenticates at the door ([`Gate`]) and hands off to the
//! part that does the work — statements ([`Statements`]), updates ([`Updates`]) or metadata
//! listings ([`metadata`]) — in the caller's own session.

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Command,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, FlightDescriptor,
    FlightInfo, HandshakeRequest, HandshakeResponse, SchemaAsIpc, SchemaResult, Ticket,
};
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::caller::{Caller, Gate};
use super::metadata;
use super::params::{self, StatementHandle};
use super::results::{DoGetStream, flight_info, one_batch};
use super::sql_info::sql_info_data;
use super::statements::Statements;
use crate::drain::Drain;
use crate::error::EngineError;
use crate::exec::{Executor, QueryLimits};
use crate::ipc_input;
use crate::limits::DO_PUT_LIMITS;
use crate::metrics::Metrics;
use crate::session::SessionManager;

/// Flight (not Flight SQL) session action; arrow-flight 58 has no hook or message for it.
pub const CLOSE_SESSION: &str = "CloseSession";
/// Flight's cancel action (arrow-flight 58's Flight SQL server routes it to the fallback).
pub const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";
/// `CloseSessionResult { status: CLOSED }` encoded by hand (field 1, varint 1).
const CLOSE_SESSION_CLOSED: [u8; 2] = [0x08, 0x01];

pub struct SqeFlightSqlService {
    gate: Arc<Gate>,
    statements: Statements,
    sql_info: Arc<SqlInfoData>,
    xdbc_info: Arc<XdbcTypeInfoData>,
}

/// Reads the record batches a client sent with DoPut (parameters or rows), each IPC message
/// checked before it is decoded.
async fn read_batches(stream: PeekableFlightDataStream) -> Result<Vec<RecordBatch>, EngineError> {
    ipc_input::read_flight_data(stream.map_err(FlightError::from), DO_PUT_LIMITS).await
}

fn one_result(body: Vec<u8>) -> Response<<SqeFlightSqlService as FlightService>::DoActionStream> {
    let result = arrow_flight::Result { body: body.into() };
    Response::new(Box::pin(futures::stream::iter(vec![Ok(result)])))
}

impl SqeFlightSqlService {
    pub fn new(
        sessions: Arc<SessionManager>,
        drain: Arc<Drain>,
        metrics: Arc<Metrics>,
        limits: QueryLimits,
    ) -> Result<Self, EngineError> {
        let timeout_secs = i32::try_from(limits.timeout().as_secs()).unwrap_or(i32::MAX);
        let gate = Arc::new(Gate::new(sessions, drain));
        let executor = Executor::new(gate.sessions().clone(), limits, metrics);
        Ok(Self {
            statements: Statements::new(executor),
            gate,
            sql_info: Arc::new(sql_info_data(timeout_secs)?),
            xdbc_info: Arc::new(metadata::xdbc_type_info()?),
        })
    }

    /// Only that the caller is someone (the door's check before refusing what it cannot serve).
    pub(super) async fn authenticated<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.caller(request).await.map(|_| ())
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        Ok(self.gate.caller(request).await?)
    }

    /// GetFlightInfo for a metadata command: authenticate, then point at the command itself.
    async fn metadata_flight_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: SchemaRef,
        command: Vec<u8>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request).await?;
        let info = flight_info(&schema, command, request.into_inner())?;
        Ok(caller.wrap(info))
    }

    /// GetSchema for a statement or a prepared statement: what its FlightInfo would announce.
    pub(super) async fn statement_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let caller = self.caller(&request).await?;
        let any = arrow_flight::sql::Any::decode(&*request.get_ref().cmd).map_err(|_| {
            EngineError::InvalidArgument("the descriptor is not a Flight SQL command".into())
        })?;
        let handle = match Command::try_from(any) {
            Ok(Command::CommandStatementQuery(q)) => StatementHandle::new(&q.query),
            Ok(Command::CommandPreparedStatementQuery(c)) => {
                StatementHandle::decode(&c.prepared_statement_handle)?
            }
            _ => {
                return Err(EngineError::Unimplemented(
                    "GetSchema answers statements and prepared statements; GetFlightInfo \
                     announces every other command's schema"
                        .into(),
                )
                .into());
            }
        };
        let schema = self.statements.schema(&caller, &handle).await?;
        let result: SchemaResult = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: arrow::error::ArrowError| EngineError::Internal(e.to_string()))?;
        Ok(caller.wrap(result))
    }

    async fn cancel_action(&self, request: &Request<Action>) -> Result<Vec<u8>, Status> {
        let caller = self.caller(request).await?;
        let info = CancelFlightInfoRequest::decode(request.get_ref().body.clone())
            .ok()
            .and_then(|r| r.info)
            .ok_or_else(|| {
                EngineError::InvalidArgument(
                    "CancelFlightInfo needs the FlightInfo of the query to cancel".into(),
                )
            })?;
        let status = self.statements.cancel(&caller, &info);
        Ok(CancelFlightInfoResult::new(status).encode_to_vec())
    }
}

#[tonic::async_trait]
impl FlightSqlService for SqeFlightSqlService {
    type FlightService = SqeFlightSqlService;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        Ok(self.gate.handshake(&request).await?)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request).await?;
        let handle = StatementHandle::new(&query.query);
        let info = self
            .statements
            .flight_info(&caller, &handle, request.into_inner())
            .await?;
        Ok(caller.wrap(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(&request).await?;
        let handle = StatementHandle::decode(&ticket.statement_handle)?;
        let raw = request.get_ref().ticket.clone();
        Ok(self.statements.execute(caller, handle, &raw).await?)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = self.caller(&request).await?;
        Ok(self.statements.prepare(&caller, &query.query).await?)
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request).await?;
        let handle = StatementHandle::decode(&cmd.prepared_statement_handle)?;
        let info = self
            .statements
            .flight_info(&caller, &handle, request.into_inner())
            .await?;
        Ok(caller.wrap(info))
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(&request).await?;
        let handle = StatementHandle::decode(&cmd.prepared_statement_handle)?;
        let raw = request.get_ref().ticket.clone();
        Ok(self.statements.execute(caller, handle, &raw).await?)
    }

    /// Binds parameters: the answer is a new handle carrying the values (stateless server).
    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let _caller = self.caller(&request).await?;
        let handle = StatementHandle::decode(&query.prepared_statement_handle)?;
        let batches = read_batches(request.into_inner()).await?;
        let bound = handle.with_params(&batches)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(bound.encode().into()),
        })
    }

    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = self.caller(&request).await?;
        Ok(self
            .statements
            .update(&caller, &cmd.query, Vec::new())
            .await?)
    }

    /// The rows sent with the update (or bound before) all go into one plan: one commit.
    async fn do_put_prepared_statement_update(
        &self,
        cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = self.caller(&request).await?;
        let handle = StatementHandle::decode(&cmd.prepared_statement_handle)?;
        let batches = read_batches(request.into_inner()).await?;
        let mut rows = params::rows(&batches)?;
        if rows.is_empty() {
            rows = handle.bound_rows()?;
        }
        Ok(self.statements.update(&caller, &handle.sql, rows).await?)
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_flight_info(request, schema, query.as_any().encode_to_vec())
            .await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(&request).await?;
        let answer = self
            .statements
            .executor()
            .planned(&caller.session, move |ctx| async move {
                Ok(metadata::catalogs_answer(&ctx, query))
            })
            .await?;
        Ok(caller.wrap(answer))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_flight_info(request, schema, query.as_any().encode_to_vec())
            .await
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(&request).await?;
        let answer = self
            .statements
            .executor()
            .planned(&caller.session, move |ctx| async move {
                Ok(metadata::schemas_answer(&ctx, query))
            })
            .await?;
        Ok(caller.wrap(answer))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_flight_info(request, schema, query.as_any().encode_to_vec())
            .await
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(&request).await?;
        let answer =
            metadata::tables_answer(self.statements.executor(), &caller.session, query).await?;
        Ok(caller.wrap(answer))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_flight_info(request, schema, query.as_any().encode_to_vec())
            .await
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(&request).await?;
        Ok(caller.wrap(metadata::table_types_answer(query)))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(&self.xdbc_info).schema();
        self.metadata_flight_info(request, schema, query.as_any().encode_to_vec())
            .await
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(&request).await?;
        let builder = query.into_builder(&self.xdbc_info);
        let schema = builder.schema();
        Ok(caller.wrap(one_batch(schema, builder.build())))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        self.metadata_flight_info(request, schema, query.as_any().encode_to_vec())
            .await
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(&request).await?;
        let builder = query.into_builder(&self.sql_info);
        let schema = builder.schema();
        Ok(caller.wrap(one_batch(schema, builder.build())))
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles are stateless: nothing to free, but the caller must still be a session.
        let _caller = self.caller(&request).await?;
        Ok(())
    }

    /// The pre-13.0 Flight SQL cancel: the same as CancelFlightInfo.
    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let caller = self.caller(&request).await?;
        let info = FlightInfo::decode(query.info).map_err(|_| {
            EngineError::InvalidArgument("CancelQuery carries no FlightInfo".into())
        })?;
        // CancelResult numbers its outcomes exactly as CancelStatus does (0 to 3).
        let result = self.statements.cancel(&caller, &info);
        Ok(ActionCancelQueryResult {
            result: result as i32,
        })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        match request.get_ref().r#type.as_str() {
            CANCEL_FLIGHT_INFO => Ok(one_result(self.cancel_action(&request).await?)),
            CLOSE_SESSION => {
                let caller = self.caller(&request).await?;
                let sessions = self.gate.sessions();
                sessions.close(&caller.session).await?;
                Ok(one_result(CLOSE_SESSION_CLOSED.to_vec()))
            }
            other => Err(Status::unimplemented(format!(
                "action `{other}` is not supported"
            ))),
        }
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![
            Ok(ActionType {
                r#type: CLOSE_SESSION.into(),
                description: "Ends the caller's session and forgets its tokens.".into(),
            }),
            Ok(ActionType {
                r#type: CANCEL_FLIGHT_INFO.into(),
                description: "Cancels the caller's query with this FlightInfo.".into(),
            }),
        ])
    }

    /// Commands with no handler of their own: an update sent to GetFlightInfo, or a type URL
    /// nobody knows. The caller's mistake, said by name, once the caller is known.
    async fn get_flight_info_fallback(
        &self,
        cmd: Command,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let _caller = self.caller(&request).await?;
        let name: String = cmd.type_url().chars().take(200).collect();
        Err(match cmd {
            Command::Unknown(_) => {
                EngineError::InvalidArgument(format!("unknown Flight SQL command `{name}`"))
            }
            Command::CommandStatementUpdate(_)
            | Command::CommandPreparedStatementUpdate(_)
            | Command::CommandStatementIngest(_) => EngineError::InvalidArgument(format!(
                "`{name}` is sent with DoPut, not GetFlightInfo"
            )),
            _ => EngineError::Unimplemented(format!("`{name}` is not supported")),
        }
        .into())
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: arrow_flight::sql::Any,
    ) -> Result<Response<DoGetStream>, Status> {
        let _caller = self.caller(&request).await?;
        Err(EngineError::InvalidArgument(format!(
            "not a ticket this server issued (`{}`)",
            message.type_url.chars().take(200).collect::<String>()
        ))
        .into())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
