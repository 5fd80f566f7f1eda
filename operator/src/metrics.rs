//! Operator metrics (`/metrics`) and health (`/healthz`, `/readyz`) over HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// Why a reconcile failed: `crate::error::Error::category`, a small fixed set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabel {
    kind: String,
    verb: String,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    errors: Family<ErrorLabel, Counter>,
    duration: Histogram,
    writes: Family<WriteLabel, Counter>,
    leader: Gauge,
    /// Set once the controller runs (as leader) or waits as a healthy standby.
    pub ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sqe_operator");
        let reconciles = Family::<ResultLabel, Counter>::default();
        let errors = Family::<ErrorLabel, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let writes = Family::<WriteLabel, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Reconciliations by result",
            reconciles.clone(),
        );
        // Separate from `reconciles` so a success carries no (empty) `error` label.
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by error category",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        registry.register(
            "writes",
            "Object writes sent to the API server, by kind: applies (every reconcile; a no-op when nothing changed) and the sweep's deletes",
            writes.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            writes,
            leader,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// `error`: `None` on success, else the failure's category (`Error::category`).
    pub fn observe_reconcile(&self, error: Option<&'static str>, seconds: f64) {
        let result = if error.is_none() { "success" } else { "error" }.to_string();
        self.reconciles.get_or_create(&ResultLabel { result }).inc();
        if let Some(error) = error {
            self.errors
                .get_or_create(&ErrorLabel {
                    error: error.into(),
                })
                .inc();
        }
        self.duration.observe(seconds);
    }

    pub fn count_write(&self, kind: &str, verb: &str) {
        self.writes
            .get_or_create(&WriteLabel {
                kind: kind.into(),
                verb: verb.into(),
            })
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    match m.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

pub async fn serve(addr: SocketAddr, m: Arc<Metrics>) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(m);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn lines(m: &Metrics, prefix: &str) -> Vec<String> {
        m.encode()
            .unwrap()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_failed_reconcile_is_counted_under_its_error_category() {
        let m = Metrics::default();
        m.observe_reconcile(Some(Error::NoNamespace.category()), 0.01);
        m.observe_reconcile(Some(Error::InvalidSpec("x".into()).category()), 0.01);
        m.observe_reconcile(Some(Error::NoNamespace.category()), 0.01);
        m.observe_reconcile(None, 0.01);
        let mut errors = lines(&m, "sqe_operator_reconcile_errors_total");
        errors.sort();
        assert_eq!(
            errors,
            [
                r#"sqe_operator_reconcile_errors_total{error="invalid_spec"} 1"#,
                r#"sqe_operator_reconcile_errors_total{error="no_namespace"} 2"#,
            ]
        );
        let mut results = lines(&m, "sqe_operator_reconciles_total");
        results.sort();
        assert_eq!(
            results,
            [
                r#"sqe_operator_reconciles_total{result="error"} 3"#,
                r#"sqe_operator_reconciles_total{result="success"} 1"#,
            ]
        );
    }

    #[test]
    fn a_success_adds_no_error_series() {
        let m = Metrics::default();
        m.observe_reconcile(None, 0.01);
        assert_eq!(
            lines(&m, "sqe_operator_reconcile_errors_total"),
            Vec::<String>::new()
        );
    }
}
