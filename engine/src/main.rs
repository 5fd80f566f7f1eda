use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sqe_engine::{config_path, load_config as load};
use sqe_engine_config::{CONFIG_PATH_ENV, EngineConfig, Secrets};

/// SQE: an Arrow Flight SQL engine for Apache Iceberg that acts only as the calling user.
#[derive(Parser)]
#[command(name = "sqe-engine", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Flight SQL (and health/metrics over HTTP) until SIGTERM.
    Serve {
        /// Configuration file (YAML); defaults to $SQE_CONFIG.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and exit (0 when valid).
    CheckConfig { file: PathBuf },
}

fn main() -> ExitCode {
    // The workspace links two rustls providers (ring, and aws-lc-rs through opendal's reqwest);
    // rustls then panics at the first TLS config that relies on the default (kube's client).
    // Ring is the one the workspace chose; an error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match EngineConfig::load(&file) {
            Ok(c) => {
                println!(
                    "{}: ok (issuer {}, modes {:?}, flight {}, http {})",
                    file.display(),
                    c.issuer(),
                    c.oidc.modes,
                    c.listen.flight,
                    c.listen.http
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::from(2)
            }
        },
        Command::Serve { config } => {
            let path = match config_path(config, std::env::var(CONFIG_PATH_ENV).ok()) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("sqe-engine: {e}");
                    return ExitCode::from(2);
                }
            };
            let (config, secrets) = match load(&path, Secrets::from_env()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("sqe-engine: {e}");
                    return ExitCode::from(2);
                }
            };
            sqe_engine::init_logging(&config.log);
            // Deep statements (a chain of thousands of operators) recurse deeply in planning and in
            // Rust's own drop glue, which DataFusion's stack growth does not cover: workers get a
            // large stack (virtual memory; only what is touched is used).
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .thread_stack_size(sqe_engine::WORKER_STACK_BYTES)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("sqe-engine: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(sqe_engine::serve(config, secrets)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(event = "fatal", error = format!("{e:#}"));
                    eprintln!("sqe-engine: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
