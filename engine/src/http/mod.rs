//! Health and metrics on their own port: `/healthz` (alive), `/readyz` (IdP discovered,
//! catalog reachable, not draining), `/metrics` (Prometheus text).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use tokio::time::Instant;
use url::Url;

use crate::auth::OidcProvider;
use crate::drain::Drain;
use crate::metrics::Metrics;

/// Probes the catalog's HTTP endpoint. Any HTTP answer (401 included: the engine has no token
/// of its own to present) means reachable; only network failures and 5xx do not.
pub struct CatalogProbe {
    url: Url,
    http: reqwest::Client,
    last: Mutex<Option<(Instant, bool)>>,
}

const PROBE_CACHE: Duration = Duration::from_secs(5);

impl CatalogProbe {
    pub fn new(catalog_uri: &Url, warehouse: &str, http: reqwest::Client) -> Self {
        let mut url = catalog_uri.clone();
        let path = format!("{}/v1/config", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url.query_pairs_mut().append_pair("warehouse", warehouse);
        Self {
            url,
            http,
            last: Mutex::new(None),
        }
    }

    pub async fn reachable(&self) -> bool {
        if let Ok(last) = self.last.lock()
            && let Some((at, ok)) = *last
            && at.elapsed() < PROBE_CACHE
        {
            return ok;
        }
        let ok = match self.http.get(self.url.clone()).send().await {
            Ok(r) => !r.status().is_server_error(),
            Err(_) => false,
        };
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Instant::now(), ok));
        }
        ok
    }
}

pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub oidc: Arc<OidcProvider>,
    pub catalog: CatalogProbe,
    pub drain: Arc<Drain>,
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<Arc<HttpState>>) -> impl IntoResponse {
    let idp = s.oidc.is_ready();
    let catalog = s.catalog.reachable().await;
    let draining = s.drain.is_draining();
    let ready = idp && catalog && !draining;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({"ready": ready, "idp_discovered": idp, "catalog_reachable": catalog, "draining": draining});
    (code, axum::Json(body))
}

async fn metrics(State(s): State<Arc<HttpState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}
