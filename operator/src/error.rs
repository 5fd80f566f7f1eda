//! Operator errors. `Transient` ones requeue with backoff; spec problems become `Degraded`.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("serialization error: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("SqeCluster has no namespace")]
    NoNamespace,
    /// The spec passed the schema but cannot be realised (e.g. the engine's own config rules).
    #[error("{0}")]
    InvalidSpec(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
