//! Wiring: build the parts from the configuration, serve Flight SQL and HTTP, drain on SIGTERM.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use jsonwebtoken::Algorithm;
use sqe_engine_config::{AuthMode, EngineConfig, Secrets};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity as TlsIdentity, Server, ServerTlsConfig};
use tracing::{error, info, warn};

use crate::auth::{BearerPolicy, BearerValidator, DiscoveredJwks, OidcProvider};
use crate::catalog::CatalogContextFactory;
use crate::drain::Drain;
use crate::exec::QueryLimits;
use crate::flight::SqeFlightSqlService;
use crate::flight::{Door, Front, capped};
use crate::http::{CatalogProbe, HttpState, router};
use crate::metrics::Metrics;
use crate::session::{EndReason, InMemorySessionStore, SessionManager, SessionPolicy, open_store};
use crate::sql::WithPlanners;

/// Requests to the IdP and the catalog probe give up after this long.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Open client connections at once; past it the engine stops accepting until one closes.
const MAX_CONNECTIONS: usize = 1024;
/// Concurrent RPCs on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS); tonic sets none.
const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// An idle peer is pinged this often and dropped when it does not answer within the timeout,
/// so dead clients do not hold connections (and their slots) forever.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// A call's handler (login, planning; not the result stream, which the query deadline bounds)
/// gives up this long after the query time limit.
const REQUEST_TIMEOUT_MARGIN: Duration = Duration::from_secs(30);
/// Request header block limit (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE).
const MAX_HEADER_LIST_BYTES: u32 = 256 << 10;

/// Runs until SIGTERM/SIGINT, then drains.
pub async fn serve(config: EngineConfig, secrets: Secrets) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let idp_http = OidcProvider::http_client(HTTP_TIMEOUT)?;
    let issuer = config.issuer();
    let oidc = Arc::new(OidcProvider::new(
        &issuer,
        &config.discovery_base(),
        &config.oidc.client_id,
        secrets.client_secret.as_deref(),
        idp_http,
    )?);
    let plain_http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(Duration::from_secs(3))
        .build()
        .context("HTTP client")?;

    let bearer = if config.oidc.modes.contains(&AuthMode::Bearer) {
        let algorithms = config
            .oidc
            .allowed_algorithms
            .iter()
            .map(|a| {
                Algorithm::from_str(a).with_context(|| format!("oidc.allowed_algorithms: `{a}`"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let policy = BearerPolicy {
            issuer: oidc.issuer().to_string(),
            audience: config
                .oidc
                .audience
                .clone()
                .unwrap_or_else(|| config.oidc.client_id.clone()),
            algorithms,
            allowed_clients: if config.oidc.allowed_clients.is_empty() {
                vec![config.oidc.client_id.clone()]
            } else {
                config.oidc.allowed_clients.clone()
            },
        };
        let source = DiscoveredJwks {
            oidc: oidc.clone(),
            http: plain_http.clone(),
        };
        Some(Arc::new(BearerValidator::new(policy, Box::new(source))))
    } else {
        None
    };

    // Each session's queries run against the user's own catalog client.
    // One memory pool for the whole process; each session gets a capped share of it.
    let shared_pool = crate::memory::shared_pool(
        usize::try_from(config.query.memory_pool_bytes).unwrap_or(usize::MAX),
    );
    let per_session = usize::try_from(config.query.memory_limit_bytes).unwrap_or(usize::MAX);
    let per_user = config
        .query
        .memory_limit_per_user_bytes
        .map_or(per_session, |b| usize::try_from(b).unwrap_or(usize::MAX));
    let factory = Arc::new(WithPlanners(CatalogContextFactory::new(
        &config.catalog,
        crate::memory::UserPools::new(shared_pool, per_user, per_session),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    )?));
    let mut sessions = SessionManager::new(
        SessionPolicy::from_config(&config),
        Arc::new(InMemorySessionStore::new()),
        oidc.clone(),
        bearer,
        metrics.clone(),
        factory,
    );
    if let Some(store) = &config.session.store {
        let shared = open_store(store, secrets.session_store_password.as_deref())?;
        sessions = sessions.with_shared(shared);
    }
    let sessions = Arc::new(sessions);
    let scheduler = tokio::spawn(sessions.clone().run_scheduler());
    let discovery = tokio::spawn(discover_until_ready(oidc.clone()));

    let drain = Drain::new();
    let limits = QueryLimits::new(
        Duration::from_secs(config.query.timeout_seconds),
        config.query.max_concurrent,
        config.query.max_concurrent_per_user,
        config.query.max_queued_per_user,
    )
    .with_gauges(
        metrics.statements_running.clone(),
        metrics.statements_waiting.clone(),
    );
    let service =
        SqeFlightSqlService::new(sessions.clone(), drain.clone(), metrics.clone(), limits)?;
    let flight = Front::new(Arc::new(Door(service)));

    let flight_listener = TcpListener::bind(config.listen.flight)
        .await
        .with_context(|| format!("listen.flight {}", config.listen.flight))?;
    let http_listener = TcpListener::bind(config.listen.http)
        .await
        .with_context(|| format!("listen.http {}", config.listen.http))?;
    info!(
        event = "listening", flight = %flight_listener.local_addr()?, http = %http_listener.local_addr()?,
        issuer = oidc.issuer(), modes = ?config.oidc.modes, tls = config.listen.tls.is_some(),
        session_store = config.session.store.as_ref().map_or("none", |s| s.url.as_str())
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let http_state = Arc::new(HttpState {
        metrics: metrics.clone(),
        oidc: oidc.clone(),
        catalog: CatalogProbe::new(&config.catalog.uri, &config.catalog.warehouse, plain_http),
        drain: drain.clone(),
    });
    let http_task = tokio::spawn(
        axum::serve(http_listener, router(http_state))
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );

    // Room for large tokens (a JWT with many groups) in the headers, so an oversized but
    // well-formed `authorization` gets UNAUTHENTICATED from the engine rather than the whole
    // connection closed by HTTP/2.
    let mut builder = Server::builder()
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .timeout(Duration::from_secs(config.query.timeout_seconds) + REQUEST_TIMEOUT_MARGIN);
    if let Some(tls) = &config.listen.tls {
        let cert = std::fs::read(&tls.cert)
            .with_context(|| format!("listen.tls.cert {}", tls.cert.display()))?;
        let key = std::fs::read(&tls.key)
            .with_context(|| format!("listen.tls.key {}", tls.key.display()))?;
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(TlsIdentity::from_pem(cert, key)))
            .context("listen.tls")?;
    }
    let incoming = TcpIncoming::from(flight_listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(KEEPALIVE_INTERVAL * 2));
    let incoming = capped(incoming, MAX_CONNECTIONS);
    let flight_task = tokio::spawn(
        builder
            .add_service(flight)
            .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())),
    );

    shutdown_signal().await;
    let grace = Duration::from_secs(config.query.shutdown_grace_seconds);
    info!(
        event = "shutdown",
        phase = "draining",
        active_calls = drain.active(),
        grace_s = grace.as_secs()
    );
    drain.start();
    let _ = stop_tx.send(true);
    let clean = drain.wait_idle(grace).await;
    if !clean {
        warn!(
            event = "shutdown",
            phase = "grace_expired",
            active_calls = drain.active()
        );
    }
    // Servers finish their connections; past the grace period they are cut off.
    let _ = tokio::time::timeout(Duration::from_secs(2), flight_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), http_task).await;
    scheduler.abort();
    discovery.abort();
    sessions.end_all(EndReason::Shutdown).await;
    info!(event = "shutdown", phase = "done", clean);
    Ok(())
}

/// Retries discovery until it succeeds, so `/readyz` turns ready without waiting for a login.
async fn discover_until_ready(oidc: Arc<OidcProvider>) {
    let mut delay = Duration::from_millis(500);
    loop {
        match oidc.discovered().await {
            Ok(d) => {
                info!(
                    event = "oidc_discovery",
                    outcome = "ok",
                    issuer = d.issuer.as_str()
                );
                return;
            }
            Err(e) => {
                warn!(event = "oidc_discovery", outcome = "failed", error = %e, retry_in_ms = delay.as_millis() as u64);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            error!(
                event = "shutdown",
                error = "cannot install signal handlers; waiting for ctrl-c"
            );
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
