//! One log line and one metric per statement, whatever way it ends: answered, failed, or
//! abandoned by the client mid-stream. A [`QueryLog`] is made when the statement arrives and
//! logs when it is dropped, with the outcome set last.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;
use tracing::{info, warn};

use crate::error::EngineError;
use crate::metrics::Metrics;
use crate::session::Session;

pub struct QueryLog {
    metrics: Arc<Metrics>,
    user: String,
    session: String,
    /// The token's fingerprint when the statement arrived, never the token.
    fingerprint: String,
    /// The statement's first keyword (`SELECT`, `INSERT`): never its literals.
    kind: String,
    /// Names the statement in every line logged for it (the call's span, and this line).
    id: String,
    started: Instant,
    rows: Arc<AtomicU64>,
    /// `None` until the statement ends; dropped without one, it was abandoned.
    outcome: Option<&'static str>,
    /// Set when another call will log this statement (a query planned here runs in DoGet).
    dismissed: bool,
}

impl QueryLog {
    pub fn start(metrics: Arc<Metrics>, session: &Session, sql: &str) -> Self {
        let id = format!("{:016x}", rand::random::<u64>());
        tracing::Span::current().record("statement", id.as_str());
        Self {
            id,
            metrics,
            user: session.identity.user.clone(),
            session: session.id.clone(),
            fingerprint: session
                .fingerprint_now()
                .map(|f| f.to_string())
                .unwrap_or_default(),
            kind: statement_kind(sql),
            started: Instant::now(),
            rows: Arc::default(),
            outcome: None,
            dismissed: false,
        }
    }

    /// Logs nothing: the statement goes on in a later call, which logs it.
    pub fn dismiss(mut self) {
        self.dismissed = true;
    }

    /// A counter the result stream adds its rows to.
    pub fn rows(&self) -> Arc<AtomicU64> {
        self.rows.clone()
    }

    pub fn succeeded(&mut self, rows: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.outcome = Some("ok");
    }

    pub fn failed(&mut self, e: &EngineError) {
        self.outcome = Some(e.label());
    }
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        if self.dismissed {
            return;
        }
        let outcome = self.outcome.unwrap_or("cancelled");
        let secs = self.started.elapsed().as_secs_f64();
        self.metrics.query(outcome, secs);
        let (user, session, fp, kind, statement) = (
            self.user.as_str(),
            self.session.as_str(),
            self.fingerprint.as_str(),
            self.kind.as_str(),
            self.id.as_str(),
        );
        let rows = self.rows.load(Ordering::Relaxed);
        let duration_ms = (secs * 1000.0) as u64;
        if outcome == "ok" {
            info!(
                event = "query",
                user, session, fp, statement, kind, outcome, rows, duration_ms
            );
        } else {
            warn!(
                event = "query",
                user, session, fp, statement, kind, outcome, rows, duration_ms
            );
        }
    }
}

/// The first keyword, for logs: statements can contain literals users consider sensitive.
/// Leading comments are skipped (they may hold anything).
pub fn statement_kind(sql: &str) -> String {
    let mut rest = sql.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    rest.split_whitespace()
        .next()
        .unwrap_or("")
        .chars()
        .take(16)
        .filter(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_get_the_statement_kind_not_its_literals() {
        assert_eq!(statement_kind("  select * from t where pw = 'x'"), "SELECT");
        assert_eq!(statement_kind(""), "");
        assert_eq!(
            statement_kind("/* pw='x' */ -- note\n  insert into t"),
            "INSERT"
        );
        assert_eq!(statement_kind("/* never closed"), "");
    }
}
