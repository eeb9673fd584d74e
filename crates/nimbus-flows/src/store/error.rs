//! The store's error type. Variants that answer a domain question map one to one onto
//! Step Functions error codes (`StateMachineDoesNotExist`, `ExecutionAlreadyExists`, …) in
//! the API layer; [`StoreError::Backend`] and [`StoreError::Corrupt`] are internal failures.

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state machine does not exist: {0}")]
    MachineDoesNotExist(String),
    /// Same name, but a different definition, type or role.
    #[error("state machine already exists: {0}")]
    MachineAlreadyExists(String),
    #[error("state machine is being deleted: {0}")]
    MachineDeleting(String),
    #[error("state machine version does not exist: {0}")]
    VersionDoesNotExist(String),
    #[error("state machine alias does not exist: {0}")]
    AliasDoesNotExist(String),
    #[error("state machine alias already exists: {0}")]
    AliasAlreadyExists(String),
    /// A version is still routed to by an alias.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid routing configuration: {0}")]
    InvalidRouting(String),
    #[error("execution does not exist: {0}")]
    ExecutionDoesNotExist(String),
    /// An execution of that name exists with a different input, or has finished.
    #[error("execution already exists: {0}")]
    ExecutionAlreadyExists(String),
    #[error("execution is not running: {0}")]
    ExecutionNotRunning(String),
    /// Only FAILED, ABORTED and TIMED_OUT executions can be redriven.
    #[error("execution cannot be redriven: {0}")]
    ExecutionNotRedrivable(String),
    #[error("task token does not exist")]
    TaskDoesNotExist,
    /// A pagination token this store did not issue.
    #[error("invalid pagination token: {0}")]
    InvalidToken(String),
    #[error("corrupt flows store: {0}")]
    Corrupt(String),
    /// The database failed (I/O, lock timeout, constraint).
    #[error("flows store: {0}")]
    Backend(String),
}

/// The store's result.
pub type StoreResult<T> = std::result::Result<T, StoreError>;
