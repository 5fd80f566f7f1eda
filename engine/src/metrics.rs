//! Prometheus metrics, served on the HTTP port at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub mode: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms … ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub sessions_active: Gauge,
    pub logins: Family<LoginLabels, Counter>,
    pub refreshes: Family<OutcomeLabels, Counter>,
    /// Seconds between when a refresh was due and when it started.
    pub refresh_lag: Histogram,
    pub session_ends: Family<ReasonLabels, Counter>,
    pub queries: Family<StatusLabels, Counter>,
    pub query_seconds: HistogramFamily<StatusLabels>,
    /// Statements holding a slot (planning, running, streaming results), and waiting for one.
    pub statements_running: Gauge,
    pub statements_waiting: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sqe");
        let sessions_active = Gauge::default();
        let logins = Family::<LoginLabels, Counter>::default();
        let refreshes = Family::<OutcomeLabels, Counter>::default();
        let refresh_lag = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let session_ends = Family::<ReasonLabels, Counter>::default();
        let queries = Family::<StatusLabels, Counter>::default();
        let query_seconds: HistogramFamily<StatusLabels> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "sessions_active",
            "Sessions currently open",
            sessions_active.clone(),
        );
        registry.register(
            "logins",
            "Login attempts by mode and outcome",
            logins.clone(),
        );
        registry.register(
            "token_refreshes",
            "Token refreshes by outcome",
            refreshes.clone(),
        );
        registry.register(
            "token_refresh_lag_seconds",
            "Delay between a refresh being due and starting",
            refresh_lag.clone(),
        );
        registry.register(
            "session_ends",
            "Sessions ended, by reason",
            session_ends.clone(),
        );
        registry.register("queries", "Queries by final status", queries.clone());
        let statements_running = Gauge::default();
        let statements_waiting = Gauge::default();
        registry.register(
            "statements_running",
            "Statements holding a query slot (planning, running or streaming results)",
            statements_running.clone(),
        );
        registry.register(
            "statements_waiting",
            "Statements waiting for a query slot of their user or of the server",
            statements_waiting.clone(),
        );
        registry.register(
            "query_duration_seconds",
            "Query latency (planning to last batch) by final status",
            query_seconds.clone(),
        );
        // Series that alerts and dashboards divide by exist from the start, at zero.
        for outcome in ["ok", "rejected", "transient_error"] {
            let _ = refreshes.get_or_create(&OutcomeLabels { outcome });
        }
        for reason in [
            "closed",
            "idle_timeout",
            "max_lifetime",
            "token_expired",
            "refresh_rejected",
        ] {
            let _ = session_ends.get_or_create(&ReasonLabels { reason });
        }
        Self {
            registry,
            sessions_active,
            logins,
            refreshes,
            refresh_lag,
            session_ends,
            queries,
            query_seconds,
            statements_running,
            statements_waiting,
        }
    }

    pub fn login(&self, mode: &'static str, outcome: &'static str) {
        self.logins
            .get_or_create(&LoginLabels { mode, outcome })
            .inc();
    }

    pub fn refresh(&self, outcome: &'static str) {
        self.refreshes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn query(&self, status: &'static str, seconds: f64) {
        self.queries.get_or_create(&StatusLabels { status }).inc();
        self.query_seconds
            .get_or_create(&StatusLabels { status })
            .observe(seconds);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_in_the_text_exposition() {
        let m = Metrics::new();
        m.login("password", "ok");
        m.refresh("ok");
        m.refresh("ok");
        m.query("ok", 0.01);
        m.sessions_active.set(3);
        let text = m.encode();
        assert!(
            text.contains(r#"sqe_logins_total{mode="password",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sqe_token_refreshes_total{outcome="ok"} 2"#),
            "{text}"
        );
        assert!(text.contains("sqe_sessions_active 3"), "{text}");
        assert!(
            text.contains(r#"sqe_query_duration_seconds_count{status="ok"} 1"#),
            "{text}"
        );
    }
}
