//! Management use cases shared by the command line and the admin API: adding and
//! changing extensions (validation, digest hashing), admin accounts (argon2id), their
//! login sessions and API tokens. Callers parse input and print or serialise results;
//! the rules live here once.
//!
//! Must not: know HTTP or the CLI (no status codes, no exit codes), or touch SQL (that is
//! the store's).

pub mod accounts;
pub mod extensions;

use rand::distributions::{Alphanumeric, DistString};

use crate::store::StoreError;

/// What a management action can fail with; callers map these to exit codes or HTTP
/// statuses in one place each.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The input breaks a rule (the message says which); CLI exit 2, HTTP 400/422.
    #[error("{0}")]
    Invalid(String),
    /// The thing exists already.
    #[error("{0}")]
    Conflict(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A strong password to show once: 20 alphanumerics from the OS RNG (about 119 bits).
pub fn generate_password() -> String {
    Alphanumeric.sample_string(&mut rand::rngs::OsRng, 20)
}
