//! The real Flight SQL service, started in-process on loopback: SQE's door, transport, session
//! manager, limits and planning, with the local context (no warehouse) and a scripted IdP.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::sql::client::FlightSqlServiceClient;
use base64::Engine as _;
use futures::future::BoxFuture;
use sqe_engine::{
    Door, Drain, Front, IdpError, InMemorySessionStore, LocalContextFactory, Metrics, QueryLimits,
    Secret, SessionManager, SessionPolicy, SqeFlightSqlService, TokenGrant, TokenIssuer,
    WithPlanners,
};
use sqe_engine_config::AuthMode;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};

/// Every user's password in the scripted IdP is this, followed by the user's name.
pub const PASSWORD_PREFIX: &str = "pw-";

/// Grants a token to any user whose password is `pw-<user>`; refuses everything else.
struct ScriptedIdp;

fn token_for(user: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.sig",
        b64(r#"{"alg":"RS256"}"#),
        b64(&format!(
            r#"{{"sub":"sub-{user}","preferred_username":"{user}","realm_access":{{"roles":["reader"]}}}}"#
        ))
    )
}

impl TokenIssuer for ScriptedIdp {
    fn password<'a>(
        &'a self,
        user: &'a str,
        password: &'a Secret,
    ) -> BoxFuture<'a, Result<TokenGrant, IdpError>> {
        Box::pin(async move {
            if password.expose() != format!("{PASSWORD_PREFIX}{user}") {
                return Err(IdpError::Rejected {
                    code: "invalid_grant".into(),
                });
            }
            Ok(TokenGrant {
                access_token: Secret::new(token_for(user)),
                refresh_token: Some(Secret::new(format!("refresh-{user}"))),
                expires_in: Duration::from_secs(3600),
            })
        })
    }

    fn client_credentials<'a>(
        &'a self,
        _client_id: &'a str,
        _secret: &'a Secret,
    ) -> BoxFuture<'a, Result<TokenGrant, IdpError>> {
        Box::pin(async {
            Err(IdpError::Rejected {
                code: "unauthorized_client".into(),
            })
        })
    }

    fn refresh<'a>(&'a self, _rt: &'a Secret) -> BoxFuture<'a, Result<TokenGrant, IdpError>> {
        Box::pin(async {
            Err(IdpError::Rejected {
                code: "invalid_grant".into(),
            })
        })
    }
}

/// What an engine is started with; the defaults are the shipped configuration's.
pub struct EngineOptions {
    pub query_timeout: Duration,
    pub max_concurrent: usize,
    pub max_concurrent_per_user: usize,
    pub max_queued_per_user: usize,
    pub memory_limit_bytes: usize,
    pub target_partitions: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            query_timeout: Duration::from_secs(300),
            max_concurrent: 16,
            max_concurrent_per_user: 4,
            max_queued_per_user: 8,
            memory_limit_bytes: 1 << 30,
            target_partitions: 4,
        }
    }
}

/// A running engine on a loopback port; stops when dropped.
pub struct Engine {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Engine {
    pub async fn start() -> Engine {
        Self::start_with(EngineOptions::default()).await
    }

    pub async fn start_with(options: EngineOptions) -> Engine {
        let metrics = Arc::new(Metrics::new());
        let policy = SessionPolicy {
            refresh_buffer: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(900),
            max_lifetime: Duration::from_secs(8 * 3600),
            max_sessions: 256,
            max_sessions_per_user: 64,
            modes: vec![AuthMode::Password],
            username_claim: "preferred_username".into(),
            roles_claim: "realm_access.roles".into(),
            engine_client_id: "sqe".into(),
        };
        let factory = Arc::new(WithPlanners(LocalContextFactory::new(
            options.memory_limit_bytes,
            options.target_partitions,
        )));
        let sessions = Arc::new(SessionManager::new(
            policy,
            Arc::new(InMemorySessionStore::new()),
            Arc::new(ScriptedIdp),
            None,
            metrics.clone(),
            factory,
        ));
        tokio::spawn(sessions.clone().run_scheduler());
        let limits = QueryLimits::new(
            options.query_timeout,
            options.max_concurrent,
            options.max_concurrent_per_user,
            options.max_queued_per_user,
        );
        let service = SqeFlightSqlService::new(sessions, Drain::new(), metrics, limits)
            .expect("the Flight SQL service");
        let front = Front::new(Arc::new(Door(service)));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            Server::builder()
                .add_service(front)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        Engine {
            addr,
            stop: Some(stop),
        }
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("an endpoint")
            .connect()
            .await
            .expect("a connection to the engine")
    }

    /// A Flight SQL client logged in as `user` (Basic handshake; the session handle rides on
    /// every later call).
    pub async fn login(&self, user: &str) -> FlightSqlServiceClient<Channel> {
        let mut client = FlightSqlServiceClient::new(self.channel().await);
        client
            .handshake(user, &format!("{PASSWORD_PREFIX}{user}"))
            .await
            .expect("login");
        client
    }
}

/// A statement's result as a client sees it: what GetFlightInfo announced, what DoGet's schema
/// message said, and the batches.
pub struct Answer {
    pub announced: arrow::datatypes::SchemaRef,
    pub streamed: arrow::datatypes::SchemaRef,
    pub batches: Vec<arrow::array::RecordBatch>,
}

impl Answer {
    /// Whether every part of the stream is exactly what was announced.
    pub fn kept_the_contract(&self) -> bool {
        self.streamed == self.announced && self.batches.iter().all(|b| b.schema() == self.announced)
    }

    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// Runs `sql` as a statement query (GetFlightInfo, then DoGet on every endpoint).
pub async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Answer, tonic::Status> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(status)?;
    fetch(client, info).await
}

/// DoGet on every endpoint of `info`, keeping what the schema message said.
pub async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: arrow_flight::FlightInfo,
) -> Result<Answer, tonic::Status> {
    use futures::TryStreamExt;
    let announced = Arc::new(
        info.clone()
            .try_decode_schema()
            .map_err(|e| status(e.into()))?,
    );
    let mut streamed = None;
    let mut batches = Vec::new();
    for endpoint in &info.endpoint {
        let ticket = endpoint.ticket.clone().expect("a ticket");
        let mut stream = client.do_get(ticket).await.map_err(status)?;
        while let Some(b) = stream.try_next().await.map_err(status)? {
            batches.push(b);
        }
        streamed = stream.schema().cloned();
    }
    Ok(Answer {
        streamed: streamed.unwrap_or_else(|| announced.clone()),
        announced,
        batches,
    })
}

/// The gRPC status inside a Flight client error.
pub fn status(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        arrow_flight::error::FlightError::Arrow(arrow::error::ArrowError::ExternalError(inner)) => {
            match inner.downcast::<tonic::Status>() {
                Ok(s) => *s,
                Err(other) => tonic::Status::unknown(other.to_string()),
            }
        }
        other => tonic::Status::unknown(other.to_string()),
    }
}
