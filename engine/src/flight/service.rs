//! `FlightSqlService`: every call authenticates to a session, every query runs in that
//! session's context with the session's current token.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use arrow::array::{Array, RecordBatch, UInt64Array};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Command,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, SqlSupportedCaseSensitivity,
    SqlSupportedTransaction, SupportedSqlGrammar, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightData,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use futures::{Stream, TryStreamExt};
use prost::Message;
use tokio::time::Instant;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use super::cancel::{Cancellable, Cancellations};
use super::handshake::{AUTH_MODE_HEADER, Presented, parse_authorization, parse_mode};
use super::ipc_input;
use super::limits::{Limited, QueryLimits};
use super::metadata;
use super::params::{self, StatementHandle};
use crate::drain::{CallGuard, Drain};
use crate::error::{EngineError, code_label};
use crate::metrics::Metrics;
use crate::session::{EndReason, Session, SessionHandle, SessionManager};

/// Flight (not Flight SQL) session action; arrow-flight 58 has no hook or message for it.
pub const CLOSE_SESSION: &str = "CloseSession";
/// Flight's cancel action (arrow-flight 58's Flight SQL server routes it to the fallback).
pub const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";
/// `CloseSessionResult { status: CLOSED }` encoded by hand (field 1, varint 1).
const CLOSE_SESSION_CLOSED: [u8; 2] = [0x08, 0x01];

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

pub struct SqeFlightSqlService {
    sessions: Arc<SessionManager>,
    drain: Arc<Drain>,
    metrics: Arc<Metrics>,
    sql_info: Arc<SqlInfoData>,
    xdbc_info: Arc<XdbcTypeInfoData>,
    limits: QueryLimits,
    cancels: Arc<Cancellations>,
}

/// A caller resolved to a session; `issued` is set when this call logged in (Basic), so the
/// response can carry the new handle.
struct Caller {
    session: Arc<Session>,
    issued: Option<SessionHandle>,
    _guard: CallGuard,
}

impl Caller {
    fn wrap<T>(&self, body: T) -> Response<T> {
        let mut response = Response::new(body);
        attach_handle(response.metadata_mut(), self.issued.as_ref());
        response
    }
}

fn attach_handle(metadata: &mut MetadataMap, handle: Option<&SessionHandle>) {
    if let Some(h) = handle {
        if let Ok(v) = MetadataValue::try_from(format!("Bearer {}", h.secret().expose())) {
            metadata.insert("authorization", v);
        }
    }
}

fn sql_info_data(timeout_secs: i32) -> Result<SqlInfoData, EngineError> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "SQE");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    // Advertising transactions would make ADBC's Python dbapi call BeginTransaction on connect.
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, timeout_secs);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, true);
    b.append(SqlInfo::SqlDdlTable, true);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    // Unquoted identifiers fold to lower case, quoted ones keep their case (DataFusion's rule).
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(
        SqlInfo::SqlSupportedGrammar,
        (1 << SupportedSqlGrammar::SqlMinimumGrammar as i32)
            | (1 << SupportedSqlGrammar::SqlCoreGrammar as i32),
    );
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.build().map_err(|e| EngineError::Internal(e.to_string()))
}

fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, EngineError> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| EngineError::Internal(e.to_string()))?;
    Ok(bytes)
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

/// FlightInfo for a metadata command: the ticket is the command itself.
fn metadata_info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, EngineError> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor))
}

/// A one-batch result that always carries its schema, even when empty.
fn one_batch(schema: SchemaRef, batch: Result<RecordBatch, FlightError>) -> DoGetStream {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { batch }))
        .map_err(Status::from);
    Box::pin(stream)
}

/// Reads the record batches a client sent with DoPut (parameters or rows), each IPC message
/// checked before it is decoded.
async fn read_batches(stream: PeekableFlightDataStream) -> Result<Vec<RecordBatch>, EngineError> {
    ipc_input::read_flight_data(stream.map_err(FlightError::from), ipc_input::DO_PUT_LIMITS).await
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

/// The first keyword, for logs: statements can contain literals users consider sensitive.
fn statement_kind(sql: &str) -> String {
    sql.split_whitespace()
        .next()
        .unwrap_or("")
        .chars()
        .take(16)
        .filter(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase()
}

impl SqeFlightSqlService {
    pub fn new(
        sessions: Arc<SessionManager>,
        drain: Arc<Drain>,
        metrics: Arc<Metrics>,
        limits: QueryLimits,
    ) -> Result<Self, EngineError> {
        let timeout_secs = i32::try_from(limits.timeout().as_secs()).unwrap_or(i32::MAX);
        Ok(Self {
            sessions,
            drain,
            metrics,
            sql_info: Arc::new(sql_info_data(timeout_secs)?),
            xdbc_info: Arc::new(metadata::xdbc_type_info()?),
            limits,
            cancels: Arc::default(),
        })
    }

    /// GetFlightInfo for a metadata command: authenticate, then point at the command itself.
    async fn metadata_flight_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: SchemaRef,
        command: Vec<u8>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request).await?;
        let info = metadata_info(&schema, command, request.into_inner())?;
        Ok(caller.wrap(info))
    }

    /// The caller's DataFusion context for its current token (rebuilt after a refresh).
    async fn context(&self, caller: &Caller) -> Result<SessionContext, EngineError> {
        let token = self.sessions.token_for(&caller.session).await?;
        caller
            .session
            .query
            .context(self.sessions.factory(), &caller.session.identity, &token)
    }

    /// Only that the caller is someone (the door's check before refusing what it cannot serve).
    pub(super) async fn authenticated<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.caller(request).await.map(|_| ())
    }

    /// Any call: Basic logs in, a handle resolves, a JWT (bearer mode) validates.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let guard = self.drain.enter()?;
        // Canonical: an IPv4 client of a dual-stack listener shows as ::ffff:a.b.c.d, and must
        // count as the same source as when it connects over IPv4.
        let peer = request.remote_addr().map(|a| a.ip().to_canonical());
        let (session, issued) = self.authenticate(request.metadata(), peer, true).await?;
        Ok(Caller {
            session,
            issued,
            _guard: guard,
        })
    }

    /// `reuse`: Basic credentials on an ordinary call find the session the same credentials
    /// opened before from this address; a handshake (a new connection) always opens its own.
    async fn authenticate(
        &self,
        metadata: &MetadataMap,
        peer: Option<IpAddr>,
        reuse: bool,
    ) -> Result<(Arc<Session>, Option<SessionHandle>), EngineError> {
        let value = metadata
            .get("authorization")
            .ok_or(EngineError::MissingCredentials)?
            .to_str()
            .map_err(|_| EngineError::Unauthenticated)?;
        match parse_authorization(value)? {
            Presented::Basic { user, password } => {
                let requested = match metadata.get(AUTH_MODE_HEADER) {
                    Some(v) => Some(parse_mode(
                        v.to_str().map_err(|_| EngineError::Unauthenticated)?,
                    )?),
                    None => None,
                };
                let mode = self.sessions.basic_mode(requested)?;
                let (handle, session) = self
                    .sessions
                    .login_basic(&user, &password, peer, mode, reuse)
                    .await?;
                Ok((session, Some(handle)))
            }
            Presented::Handle(h) => Ok((self.sessions.resolve(h.expose()).await?, None)),
            Presented::Jwt(jwt) => {
                Ok((self.sessions.login_bearer(jwt.expose(), peer).await?, None))
            }
        }
    }

    /// Plans `sql` in the caller's session without executing it (DDL must run only once, in
    /// DoGet) and returns the plan.
    async fn plan(
        &self,
        caller: &Caller,
        sql: &str,
    ) -> Result<(LogicalPlan, SessionContext), EngineError> {
        crate::policy::check_text(sql)?;
        let ctx = self.context(caller).await?;
        let current = ctx.state().config_options().catalog.default_catalog.clone();
        let sql = match super::show::rewrite(sql, &current)? {
            Some(query) => query,
            None => params::number_placeholders(sql)?,
        };
        let sql = crate::catalog::time_travel::fold_clauses(&sql)?;
        let plan = ctx.state().create_logical_plan(&sql).await?;
        crate::policy::check(&plan)?;
        Ok((plan, ctx))
    }

    async fn flight_info_for(
        &self,
        caller: &Caller,
        handle: &StatementHandle,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, EngineError> {
        let started = Instant::now();
        let sql = handle.sql.as_str();
        // With values bound, the result schema is the bound plan's (a `?` alone has no type).
        let planned = self
            .limits
            .within_timeout(async {
                let values = params::single_row(handle.bound_rows()?)?;
                let (plan, ctx) = self.plan(caller, sql).await?;
                Ok::<_, EngineError>((params::bind(plan, values)?, ctx))
            })
            .await;
        let (plan, _) = match planned {
            Ok(p) => p,
            Err(e) => {
                self.record_query(caller, sql, started, code_label(e.code()), 0);
                return Err(e);
            }
        };
        if runs_at_planning(&plan) {
            // DDL runs here, once: clients fetch DoGet lazily (ADBC may not fetch at all before
            // its next statement), so running it in DoGet would race what comes next.
            self.update(caller, sql, params::single_row(handle.bound_rows()?)?)
                .await?;
            let done = TicketStatementQuery {
                statement_handle: handle.executed().encode().into(),
            }
            .as_any()
            .encode_to_vec();
            return Ok(FlightInfo::new()
                .try_with_schema(&Schema::empty())?
                .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(done)))
                .with_descriptor(descriptor)
                .with_ordered(true));
        }
        let schema: &Schema = plan.schema().as_arrow();
        // One run: the ticket carries a nonce, so it can be cancelled on its own.
        let ticket = TicketStatementQuery {
            statement_handle: handle.run_once().encode().into(),
        }
        .as_any()
        .encode_to_vec();
        Ok(FlightInfo::new()
            .try_with_schema(schema)?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_descriptor(descriptor)
            .with_ordered(true))
    }

    /// Plans and runs `sql`, streaming the result batch by batch as DataFusion produces it.
    async fn execute(
        &self,
        caller: Caller,
        handle: StatementHandle,
        ticket: &[u8],
    ) -> Result<Response<DoGetStream>, Status> {
        if handle.executed {
            // Already run when its FlightInfo was asked for: an empty result.
            let empty = Arc::new(Schema::empty());
            return Ok(caller.wrap(one_batch(empty.clone(), Ok(RecordBatch::new_empty(empty)))));
        }
        let started = Instant::now();
        let sql = handle.sql.clone();
        let admitted = self
            .limits
            .admit(&caller.session.identity.user)
            .and_then(|a| params::single_row(handle.bound_rows()?).map(|values| (a, values)));
        let admitted = admitted.and_then(|(a, values)| {
            let (running, signal) = self.cancels.start(&caller.session.identity.user, ticket)?;
            Ok((a, values, running, signal))
        });
        let (admission, values, running, signal) = match admitted {
            Ok(x) => x,
            Err(e) => {
                self.record_query(&caller, &sql, started, code_label(e.code()), 0);
                return Err(e.into());
            }
        };
        let timeout = admission.timeout;
        let stream = tokio::time::timeout_at(admission.deadline, async {
            let (plan, ctx) = self.plan(&caller, &sql).await?;
            let plan = params::bind(plan, values)?;
            let df = ctx.execute_logical_plan(plan).await?;
            Ok::<_, EngineError>(df.execute_stream().await?)
        })
        .await
        .unwrap_or_else(|_| Err(super::limits::timed_out(timeout)));
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                self.record_query(&caller, &sql, started, code_label(e.code()), 0);
                return Err(e.into());
            }
        };
        let schema: SchemaRef = stream.schema();
        let rows = Arc::new(AtomicU64::new(0));
        let counted = rows.clone();
        let batches = stream
            .map_ok(move |b| {
                counted.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                b
            })
            .map_err(|e| FlightError::Tonic(Box::new(Status::from(EngineError::from(e)))));
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        let flight = Limited::new(Cancellable::new(flight, running, signal), admission);
        let response_handle = caller
            .issued
            .as_ref()
            .map(|h| SessionHandle::clone_for_response(h));
        let tracked = QueryStream {
            inner: Box::pin(flight),
            finish: Some(QueryEnd {
                metrics: self.metrics.clone(),
                user: caller.session.identity.user.clone(),
                session: caller.session.id.clone(),
                fingerprint: caller
                    .session
                    .fingerprint_now()
                    .map(|f| f.to_string())
                    .unwrap_or_default(),
                kind: statement_kind(&sql),
                started,
                rows,
                _guard: caller._guard,
            }),
        };
        let mut response = Response::new(Box::pin(tracked) as DoGetStream);
        attach_handle(response.metadata_mut(), response_handle.as_ref());
        Ok(response)
    }

    /// Runs a statement to completion under the query limits and returns the affected rows.
    async fn update(
        &self,
        caller: &Caller,
        sql: &str,
        values: Vec<ScalarValue>,
    ) -> Result<i64, EngineError> {
        let started = Instant::now();
        let result = async {
            let admission = self.limits.admit(&caller.session.identity.user)?;
            let timeout = admission.timeout;
            tokio::time::timeout_at(admission.deadline, async {
                let (plan, ctx) = self.plan(caller, sql).await?;
                let plan = params::bind(plan, values)?;
                let batches = ctx.execute_logical_plan(plan).await?.collect().await?;
                Ok::<_, EngineError>(affected_rows(&batches))
            })
            .await
            .unwrap_or_else(|_| Err(super::limits::timed_out(timeout)))
        }
        .await;
        match &result {
            Ok(n) => self.record_query(caller, sql, started, "ok", u64::try_from(*n).unwrap_or(0)),
            Err(e) => self.record_query(caller, sql, started, code_label(e.code()), 0),
        }
        result
    }

    /// Cancels the caller's query behind every endpoint of `info`.
    fn cancel(&self, caller: &Caller, info: &FlightInfo) -> CancelStatus {
        let user = caller.session.identity.user.as_str();
        let mut outcome = CancelStatus::NotCancellable;
        for ticket in info.endpoint.iter().filter_map(|e| e.ticket.as_ref()) {
            if already_ran(&ticket.ticket) {
                continue;
            }
            if self.cancels.cancel(user, &ticket.ticket) == CancelStatus::Cancelled {
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

    fn record_query(
        &self,
        caller: &Caller,
        sql: &str,
        started: Instant,
        status: &'static str,
        rows: u64,
    ) {
        let secs = started.elapsed().as_secs_f64();
        self.metrics.query(status, secs);
        let fp = caller
            .session
            .fingerprint_now()
            .map(|f| f.to_string())
            .unwrap_or_default();
        let kind = statement_kind(sql);
        let user = caller.session.identity.user.as_str();
        let session = caller.session.id.as_str();
        let duration_ms = (secs * 1000.0) as u64;
        if status == "ok" {
            info!(
                event = "query",
                user,
                session,
                fp,
                kind,
                outcome = status,
                rows,
                duration_ms
            );
        } else {
            warn!(
                event = "query",
                user,
                session,
                fp,
                kind,
                outcome = status,
                rows,
                duration_ms
            );
        }
    }
}

impl SessionHandle {
    /// Handles are not `Clone` (one owner); this copy only ever goes into a response header.
    fn clone_for_response(h: &SessionHandle) -> SessionHandle {
        SessionHandle::from_secret(h.secret().clone())
    }
}

/// Records the query's outcome when its stream ends — completed, failed or dropped by the
/// client — and keeps the drain guard alive until then.
struct QueryEnd {
    metrics: Arc<Metrics>,
    user: String,
    session: String,
    fingerprint: String,
    kind: String,
    started: Instant,
    rows: Arc<AtomicU64>,
    _guard: CallGuard,
}

impl QueryEnd {
    fn finish(self, status: &'static str) {
        let secs = self.started.elapsed().as_secs_f64();
        self.metrics.query(status, secs);
        info!(
            event = "query",
            user = self.user.as_str(),
            session = self.session.as_str(),
            fp = self.fingerprint.as_str(),
            kind = self.kind.as_str(),
            outcome = status,
            rows = self.rows.load(Ordering::Relaxed),
            duration_ms = (secs * 1000.0) as u64
        );
    }
}

struct QueryStream {
    inner: DoGetStream,
    finish: Option<QueryEnd>,
}

impl Stream for QueryStream {
    type Item = Result<FlightData, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(f) = self.finish.take() {
                    f.finish("ok");
                }
            }
            Poll::Ready(Some(Err(status))) => {
                if let Some(f) = self.finish.take() {
                    f.finish(code_label(status.code()));
                }
            }
            _ => {}
        }
        polled
    }
}

impl Drop for QueryStream {
    fn drop(&mut self) {
        if let Some(f) = self.finish.take() {
            f.finish("cancelled");
        }
    }
}

#[tonic::async_trait]
impl FlightSqlService for SqeFlightSqlService {
    type FlightService = SqeFlightSqlService;

    /// Logs in and answers with `authorization: Bearer <session handle>` in the response
    /// headers (where ADBC and JDBC read it) and in the payload. Does not wait for a request
    /// message: ADBC sends none.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let _guard = self.drain.enter()?;
        let peer = request.remote_addr().map(|a| a.ip().to_canonical());
        let value = request
            .metadata()
            .get("authorization")
            .ok_or(EngineError::MissingCredentials)?
            .to_str()
            .map_err(|_| EngineError::Unauthenticated)?
            .to_string();
        let (session, issued) = self.authenticate(request.metadata(), peer, false).await?;
        // A handle or JWT presented to the handshake is echoed back: it is already the bearer.
        let bearer = match &issued {
            Some(h) => h.secret().expose().to_string(),
            None => value
                .split_once(' ')
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default(),
        };
        tracing::debug!(
            event = "handshake",
            user = session.identity.user.as_str(),
            session = session.id.as_str()
        );
        let payload = HandshakeResponse {
            protocol_version: 0,
            payload: bearer.clone().into_bytes().into(),
        };
        let stream = futures::stream::iter(vec![Ok(payload)]);
        let mut response: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(Box::pin(stream));
        if let Ok(v) = MetadataValue::try_from(format!("Bearer {bearer}")) {
            response.metadata_mut().insert("authorization", v);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request).await?;
        let info = self
            .flight_info_for(
                &caller,
                &StatementHandle::new(&query.query),
                request.into_inner(),
            )
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
        self.execute(caller, handle, &raw).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = self.caller(&request).await?;
        let started = Instant::now();
        let (plan, _) = match self
            .limits
            .within_timeout(self.plan(&caller, &query.query))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                self.record_query(&caller, &query.query, started, code_label(e.code()), 0);
                return Err(e.into());
            }
        };
        let dataset_schema = schema_bytes(plan.schema().as_arrow())?;
        let parameters = params::parameter_schema(&plan)?;
        let parameter_schema = if parameters.fields().is_empty() {
            Default::default()
        } else {
            schema_bytes(&parameters)?
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: StatementHandle::new(&query.query).encode().into(),
            dataset_schema,
            parameter_schema,
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request).await?;
        let handle = StatementHandle::decode(&cmd.prepared_statement_handle)?;
        let info = self
            .flight_info_for(&caller, &handle, request.into_inner())
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
        self.execute(caller, handle, &raw).await
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
        Ok(self.update(&caller, &cmd.query, Vec::new()).await?)
    }

    /// Runs the statement once per bound row (a batch insert), or once without parameters.
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
        if rows.is_empty() {
            rows.push(Vec::new());
        }
        let mut total = 0;
        for values in rows {
            total += self.update(&caller, &handle.sql, values).await?;
        }
        Ok(total)
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
        let ctx = self.context(&caller).await?;
        let mut builder = query.into_builder();
        for c in metadata::catalogs(&ctx) {
            builder.append(c);
        }
        let schema = builder.schema();
        Ok(caller.wrap(one_batch(schema, builder.build())))
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
        let ctx = self.context(&caller).await?;
        let found = metadata::schemas(
            &ctx,
            query.catalog.as_deref(),
            query.db_schema_filter_pattern.as_deref(),
        );
        let mut builder = query.into_builder();
        for (c, s) in found {
            builder.append(c, s);
        }
        let schema = builder.schema();
        Ok(caller.wrap(one_batch(schema, builder.build())))
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
        let ctx = self.context(&caller).await?;
        let filter = metadata::TableFilter {
            catalog: query.catalog.clone(),
            schema_pattern: query.db_schema_filter_pattern.clone(),
            table_pattern: query.table_name_filter_pattern.clone(),
            table_types: query.table_types.clone(),
            include_schema: query.include_schema,
        };
        let found = self
            .limits
            .within_timeout(metadata::tables(&ctx, &filter))
            .await?;
        let mut builder = query.into_builder();
        for t in found {
            builder
                .append(t.catalog, t.schema, t.table, t.table_type, &t.arrow_schema)
                .map_err(|e| EngineError::Internal(e.to_string()))?;
        }
        let schema = builder.schema();
        Ok(caller.wrap(one_batch(schema, builder.build())))
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
        let mut builder = query.into_builder();
        for t in metadata::TABLE_TYPES {
            builder.append(t);
        }
        let schema = builder.schema();
        Ok(caller.wrap(one_batch(schema, builder.build())))
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

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles are stateless: nothing to free, but the caller must still be a session.
        let _caller = self.caller(&request).await?;
        Ok(())
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
        let result = self.cancel(&caller, &info);
        Ok(ActionCancelQueryResult {
            result: result as i32,
        })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        if request.get_ref().r#type == CANCEL_FLIGHT_INFO {
            let caller = self.caller(&request).await?;
            let info = CancelFlightInfoRequest::decode(request.get_ref().body.clone())
                .ok()
                .and_then(|r| r.info)
                .ok_or_else(|| {
                    EngineError::InvalidArgument(
                        "CancelFlightInfo needs the FlightInfo of the query to cancel".into(),
                    )
                })?;
            let status = self.cancel(&caller, &info);
            let result = arrow_flight::Result {
                body: CancelFlightInfoResult::new(status).encode_to_vec().into(),
            };
            return Ok(Response::new(Box::pin(futures::stream::iter(vec![Ok(
                result,
            )]))));
        }
        if request.get_ref().r#type == CLOSE_SESSION {
            let caller = self.caller(&request).await?;
            self.sessions.end(&caller.session, EndReason::Closed).await;
            let result = arrow_flight::Result {
                body: CLOSE_SESSION_CLOSED.to_vec().into(),
            };
            return Ok(Response::new(Box::pin(futures::stream::iter(vec![Ok(
                result,
            )]))));
        }
        Err(Status::unimplemented(format!(
            "action `{}` is not supported",
            request.get_ref().r#type
        )))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_handles_round_trip_and_reject_garbage() {
        let h = StatementHandle::new("SELECT 'a:b' AS x").encode();
        assert_eq!(
            StatementHandle::decode(&h).unwrap().sql,
            "SELECT 'a:b' AS x"
        );
        assert!(StatementHandle::decode(b"\x00garbage").is_err());
    }

    #[test]
    fn update_counts_come_from_the_count_column_and_ddl_counts_zero() {
        let count = Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
            "count",
            arrow::datatypes::DataType::UInt64,
            false,
        )]));
        let b = |n: u64| {
            RecordBatch::try_new(count.clone(), vec![Arc::new(UInt64Array::from(vec![n]))]).unwrap()
        };
        assert_eq!(affected_rows(&[b(3), b(4)]), 7);
        assert_eq!(affected_rows(&[]), 0);
    }

    #[test]
    fn logs_get_the_statement_kind_not_its_literals() {
        assert_eq!(statement_kind("  select * from t where pw = 'x'"), "SELECT");
        assert_eq!(statement_kind(""), "");
    }

    #[test]
    fn sql_info_advertises_no_transactions() {
        assert!(sql_info_data(300).is_ok());
    }
}
