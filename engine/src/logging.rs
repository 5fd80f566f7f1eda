//! Structured logs: one JSON object per line on stdout, fields flattened so `event`, `user`,
//! `session`, `fp`, `outcome`, `duration_ms` are top-level keys.

use sqe_engine_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Libraries below these levels may print request details; they never need to at `info`.
const QUIET_DEPENDENCIES: &str =
    "h2=warn,hyper=warn,hyper_util=warn,tower=warn,reqwest=warn,rustls=warn";

pub fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_new(format!("{QUIET_DEPENDENCIES},{level}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("{QUIET_DEPENDENCIES},info")))
}

pub fn init(cfg: &LogConfig) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(&cfg.level))
        .with_writer(std::io::stdout);
    let _ = match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            // The call's span (`flight::door`): who, which session, which statement.
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
