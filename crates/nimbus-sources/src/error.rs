//! The one error type of the crate.

/// What went wrong talking to a broker or with a mapping's settings. The message is what
/// the mapping's state shows (`LastProcessingResult`, `nimbus sources`): it says what to
/// fix, and never holds a password.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The mapping's settings are wrong (missing topic, bad option, password in a URL).
    #[error("{0}")]
    Config(String),
    /// The broker cannot be reached (refused, unknown host, timed out, connection lost).
    #[error("cannot reach {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// The broker refused the credentials.
    #[error("{0}")]
    Auth(String),
    /// A stream, queue, table, publication or slot the mapping names does not exist, or
    /// the server lacks a setting the source needs (PostgreSQL's `wal_level = logical`).
    #[error("{0}")]
    Missing(String),
    /// Any other broker error (the connection is dropped and reopened).
    #[error("{0}")]
    Broker(String),
    /// The mapping store failed.
    #[error("source store: {0}")]
    Store(String),
}

impl SourceError {
    /// Whether retrying with the same settings may help (a broker restart, a network cut);
    /// configuration, credential and missing-object errors need a user's change, so the
    /// runner retries them slowly.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Broker(_))
    }
}

impl From<rusqlite::Error> for SourceError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.to_string())
    }
}

pub type Result<T, E = SourceError> = std::result::Result<T, E>;
