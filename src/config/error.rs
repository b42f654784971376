//! `ConfigError`: every message is one line an admin can act on.

use std::path::PathBuf;

/// A config that cannot be used. `Display` is the line to print:
/// `FILE:LINE: reason` for the file, `environment VAR: reason` for overrides.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{file}:{line}: {reason}")]
    Syntax {
        file: String,
        line: usize,
        reason: String,
    },
    /// Valid TOML, but a key or value is wrong (unknown key, type, range, cross-field rule).
    #[error("{file}:{line}: {reason}")]
    Invalid {
        file: String,
        line: usize,
        reason: String,
    },
    /// A `RINGFORT_*` environment variable is unknown or holds a bad value.
    #[error("environment {var}: {reason}")]
    Env { var: String, reason: String },
    /// Several of the above (never nested, at least two); displayed one per line.
    #[error("{}", display_lines(.0))]
    Multiple(Vec<ConfigError>),
}

fn display_lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// Every single error, in the order found (one element unless `Multiple`).
    pub fn errors(&self) -> Vec<&ConfigError> {
        match self {
            ConfigError::Multiple(list) => list.iter().collect(),
            other => vec![other],
        }
    }

    /// The first error found.
    pub fn first(&self) -> &ConfigError {
        match self {
            ConfigError::Multiple(list) if !list.is_empty() => &list[0],
            other => other,
        }
    }

    /// `Ok` when `errors` is empty, the error itself when there is one, `Multiple` otherwise.
    pub(crate) fn check(mut errors: Vec<ConfigError>) -> Result<(), ConfigError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Multiple(errors)),
        }
    }
}
