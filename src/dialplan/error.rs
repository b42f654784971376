//! `DialplanError`: every message is one line an admin can act on, `FILE:LINE: reason`.

use std::path::PathBuf;

/// Dialplan files that cannot be used. `Display` is the line to print.
#[derive(Debug, thiserror::Error)]
pub enum DialplanError {
    /// The folder or a file could not be read.
    #[error("{}: {reason}: {source}", path.display())]
    Io {
        path: PathBuf,
        reason: &'static str,
        source: std::io::Error,
    },
    /// A file is not valid TOML, or a value is wrong (unknown key, type, reference,
    /// pattern, time, ...). `line` is the offending value's.
    #[error("{file}:{line}: {reason}")]
    Invalid {
        file: String,
        line: usize,
        reason: String,
    },
    /// Several of the above (never nested, at least two); displayed one per line.
    #[error("{}", display_lines(.0))]
    Multiple(Vec<DialplanError>),
}

fn display_lines(errors: &[DialplanError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl DialplanError {
    /// Every single error, in the order found (one element unless `Multiple`).
    pub fn errors(&self) -> Vec<&DialplanError> {
        match self {
            DialplanError::Multiple(list) => list.iter().collect(),
            other => vec![other],
        }
    }

    fn place(&self) -> (&str, usize) {
        match self {
            DialplanError::Invalid { file, line, .. } => (file, *line),
            _ => ("", 0),
        }
    }

    /// `Ok` when `errors` is empty, the error itself when there is one, `Multiple` otherwise.
    /// Errors are sorted by file and line (stable: one line's errors keep their order).
    pub(crate) fn check(mut errors: Vec<DialplanError>) -> Result<(), DialplanError> {
        errors.sort_by(|a, b| a.place().cmp(&b.place()));
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(DialplanError::Multiple(errors)),
        }
    }
}
