//! The executor's error type: what starting, stopping or answering for an execution can
//! fail with. Each variant maps onto one Step Functions error code in the API layer.

use nimbus_flows::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An ARN that is not a state machine (version, alias) or execution ARN.
    #[error("Invalid Arn: '{0}'")]
    InvalidArn(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    InvalidExecutionInput(String),
    #[error("{0}")]
    InvalidOutput(String),
    #[error("{0}")]
    InvalidDefinition(String),
    /// A request field out of bounds (size limits).
    #[error("{0}")]
    Validation(String),
    /// The operation does not apply to this machine's type (StartSyncExecution on STANDARD).
    #[error("{0}")]
    TypeNotSupported(String),
    /// The engine stopped, or a blocking task panicked.
    #[error("{0}")]
    Internal(String),
}

pub type WorkflowResult<T> = std::result::Result<T, WorkflowError>;
