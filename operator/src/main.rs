use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// SQE operator: turns SqeCluster resources into SQE engine Deployments.
#[derive(Parser)]
#[command(name = "sqe-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (with leader election) until SIGTERM.
    Run {
        /// Address for /metrics, /healthz and /readyz.
        #[arg(
            long,
            env = "SQE_OPERATOR_METRICS_ADDR",
            default_value = "0.0.0.0:8080"
        )]
        metrics_addr: SocketAddr,
        /// Watch only these namespaces: repeat the flag or separate with commas (default:
        /// all namespaces). Each gets its own watches, so Roles in them suffice.
        #[arg(
            long = "namespace",
            env = "SQE_OPERATOR_WATCH_NAMESPACE",
            value_delimiter = ','
        )]
        namespaces: Vec<String>,
        /// Once leading, server-side apply this version's SqeCluster CRD (Helm never
        /// upgrades a chart's CRDs); needs `get` and `patch` on that CRD.
        #[arg(long)]
        apply_crd: bool,
        /// Disable leader election (only safe with a single replica).
        #[arg(long)]
        no_leader_election: bool,
        /// Namespace of the leader Lease (default: the pod's namespace).
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        #[arg(long, default_value = "sqe-operator-leader")]
        lease_name: String,
        /// This replica's identity in the Lease (default: the pod name).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        #[arg(long, default_value_t = 15)]
        lease_duration_seconds: u64,
    },
    /// Print the SqeCluster CustomResourceDefinition as YAML.
    Crd,
    /// Print every object the operator would create for the SqeClusters in FILE.
    Render {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Namespace for SqeClusters that name none.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
}

fn main() -> ExitCode {
    // The workspace links two rustls providers (ring, and aws-lc-rs through opendal's reqwest);
    // rustls then panics at the first TLS config that relies on the default (kube's client).
    // Ring is the one the workspace chose; an error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match sqe_crds::crd_yaml() {
            Ok(y) => {
                print!("{y}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Render { file, namespace } => {
            let result = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
                .and_then(|t| sqe_operator::render::render(&t, &namespace));
            match result {
                Ok(y) => {
                    print!("{y}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("{}: {e}", file.display())),
            }
        }
        Command::Run {
            metrics_addr,
            namespaces,
            apply_crd,
            no_leader_election,
            lease_namespace,
            lease_name,
            identity,
            lease_duration_seconds,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info,kube=warn".into()),
                )
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .init();
            let identity = identity.unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "sqe-operator".into());
                format!("{host}-{}", std::process::id())
            });
            let opts = sqe_operator::run::RunOptions {
                metrics_addr,
                namespaces,
                apply_crd,
                leader_election: !no_leader_election,
                lease_namespace,
                lease_name,
                identity,
                lease_duration: Duration::from_secs(lease_duration_seconds.max(3)),
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(e),
            };
            match rt.block_on(sqe_operator::run::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(format!("{e:#}")),
            }
        }
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("sqe-operator: {e}");
    ExitCode::FAILURE
}
