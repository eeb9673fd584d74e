use thiserror::Error;

/// Failures of the registry, the log store and the code store.
///
/// Callers decide how to react by kind ([`StoreError::is_not_found`],
/// [`StoreError::is_invalid_input`], [`StoreError::is_conflict`],
/// [`StoreError::is_precondition_failed`]), never by matching message text.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The function, version or code package does not exist. The message names it, for
    /// example `function not found: hello` or `version 7 of hello not found`.
    #[error("{0}")]
    NotFound(String),
    /// The uploaded code package is unusable (not a zip, too large, unsafe paths, …). The
    /// message says what is wrong and what to do about it.
    #[error("invalid code package: {0}")]
    InvalidPackage(String),
    /// A request value the store cannot accept (an alias name, a routing configuration, a
    /// policy statement, …). The message says what is wrong and what to do about it.
    #[error("{0}")]
    InvalidInput(String),
    /// The request conflicts with the current state (the function or alias already exists,
    /// a version is still used by an alias, …). Retrying fails again until that changes.
    #[error("{0}")]
    Conflict(String),
    /// An expected revision id or code hash does not match the current one: someone else
    /// changed the resource since the caller read it.
    #[error("{0}")]
    PreconditionFailed(String),
    /// A durable queue is at its backlog limit (see [`crate::BacklogLimit`]); retrying
    /// later succeeds once stored items are processed (maps to a 429).
    #[error("{0}")]
    Full(String),
    /// A file system failure. Errors made by this crate name the path and what was being
    /// done (`creating /data/code/tmp: permission denied`), so the message is shown as is.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A PostgreSQL failure (cluster mode): the statement, the connection or the pool.
    #[error("database error: {0}")]
    Postgres(#[from] nimbus_pg::PgError),
    /// Stored data does not decode or does not match its content address.
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// The thing asked for does not exist (maps to a 404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound(_))
    }

    /// The caller sent something unusable (maps to a 400); retrying the same request fails again.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            StoreError::InvalidPackage(_) | StoreError::InvalidInput(_)
        )
    }

    /// The request conflicts with the current state (maps to a 409).
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict(_))
    }

    /// A durable queue is full: try again later (maps to a 429).
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full(_))
    }

    /// An expected revision or code hash is stale (maps to a 412).
    pub fn is_precondition_failed(&self) -> bool {
        matches!(self, StoreError::PreconditionFailed(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let nf = StoreError::NotFound("function not found: hello".into());
        assert!(nf.is_not_found());
        assert!(!nf.is_invalid_input());
        assert_eq!(nf.to_string(), "function not found: hello");

        let bad = StoreError::InvalidPackage("not a zip".into());
        assert!(bad.is_invalid_input());
        assert!(!bad.is_not_found());
        assert_eq!(bad.to_string(), "invalid code package: not a zip");

        let io = StoreError::from(std::io::Error::other("writing /x: disk full"));
        assert!(!io.is_not_found() && !io.is_invalid_input());
        assert_eq!(io.to_string(), "writing /x: disk full");
        let corrupt = StoreError::Corrupt("x".into());
        assert!(!corrupt.is_not_found() && !corrupt.is_invalid_input());
        assert!(!corrupt.is_conflict() && !corrupt.is_precondition_failed());

        let input = StoreError::InvalidInput("bad routing: use one version".into());
        assert!(input.is_invalid_input());
        assert!(!input.is_not_found() && !input.is_conflict() && !input.is_precondition_failed());
        assert_eq!(input.to_string(), "bad routing: use one version");

        let conflict = StoreError::Conflict("function hello already exists".into());
        assert!(conflict.is_conflict());
        assert!(!conflict.is_not_found() && !conflict.is_invalid_input());
        assert!(!conflict.is_precondition_failed());
        assert_eq!(conflict.to_string(), "function hello already exists");

        let stale = StoreError::PreconditionFailed("revision is stale".into());
        assert!(stale.is_precondition_failed());
        assert!(!stale.is_conflict() && !stale.is_not_found() && !stale.is_invalid_input());
        assert_eq!(stale.to_string(), "revision is stale");
        assert!(!nf.is_conflict() && !bad.is_precondition_failed());
    }
}
