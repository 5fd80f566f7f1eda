//! Where the configuration comes from: `--config FILE`, else `$SQE_CONFIG`; secrets only from
//! the environment.

use std::path::PathBuf;

use sqe_engine_config::{CONFIG_PATH_ENV, ConfigError, EngineConfig, Secrets};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no configuration file: pass --config FILE or set ${CONFIG_PATH_ENV}")]
    NoPath,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

pub fn config_path(flag: Option<PathBuf>, env: Option<String>) -> Result<PathBuf, LoadError> {
    flag.or_else(|| env.filter(|s| !s.is_empty()).map(PathBuf::from))
        .ok_or(LoadError::NoPath)
}

/// The file, validated, plus the engine's client secret from the environment (only the
/// password grant uses it; machine clients bring their own).
pub fn load(
    path: &std::path::Path,
    secrets: Secrets,
) -> Result<(EngineConfig, Secrets), LoadError> {
    let config = EngineConfig::load(path)?;
    Ok((config, secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_the_environment() {
        let p = config_path(Some("/a.yaml".into()), Some("/b.yaml".into())).unwrap();
        assert_eq!(p, PathBuf::from("/a.yaml"));
        let p = config_path(None, Some("/b.yaml".into())).unwrap();
        assert_eq!(p, PathBuf::from("/b.yaml"));
        assert!(matches!(
            config_path(None, Some(String::new())),
            Err(LoadError::NoPath)
        ));
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let e = load(
            std::path::Path::new("/nonexistent/sqe.yaml"),
            Secrets::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/sqe.yaml"), "{e}");
    }
}
