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

impl Error {
    /// A short, stable category for metric labels and logs. The one place that maps a
    /// variant to a label: the match is exhaustive, so a new variant must pick one. Never
    /// derived from the message (unbounded cardinality, and it may quote user input).
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube_api",
            Error::Serialize(_) => "serialization",
            Error::NoNamespace => "no_namespace",
            Error::InvalidSpec(_) => "invalid_spec",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn one_of_each() -> Vec<Error> {
        let status = kube::core::Status::failure("forbidden", "Forbidden").with_code(403);
        vec![
            Error::Kube(kube::Error::Api(Box::new(status))),
            Error::Serialize(serde_json::from_str::<u8>("x").unwrap_err()),
            Error::NoNamespace,
            Error::InvalidSpec("query.memory_limit_bytes must be at least 64 MiB".into()),
        ]
    }

    #[test]
    fn every_variant_has_its_own_category() {
        let got: Vec<_> = one_of_each().iter().map(Error::category).collect();
        assert_eq!(
            got,
            ["kube_api", "serialization", "no_namespace", "invalid_spec"]
        );
    }

    #[test]
    fn categories_are_short_snake_case_and_independent_of_the_message() {
        for e in one_of_each() {
            let c = e.category();
            assert!(
                !c.is_empty()
                    && c.len() <= 20
                    && c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{c}"
            );
        }
        let a = Error::InvalidSpec("a".into());
        let b = Error::InvalidSpec("something else entirely".into());
        assert_eq!(a.category(), b.category());
    }
}
