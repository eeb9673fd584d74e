//! The crate's error type and the predefined `States.*` error names.
//!
//! Runtime failures carry a Step Functions error name and cause ([`Error::States`]); a
//! definition that does not validate carries every problem found ([`Error::InvalidDefinition`]).
//! Source: <https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html>.

use crate::validate::Diagnostic;

/// The predefined error names of the Amazon States Language.
pub mod names {
    /// Wildcard matching every error name except the terminal `States.Runtime` and
    /// `States.DataLimitExceeded`; must appear alone and last in a retrier or catcher.
    pub const ALL: &str = "States.ALL";
    /// A state ran longer than `TimeoutSeconds` or the execution outlived its timeout.
    pub const TIMEOUT: &str = "States.Timeout";
    /// A Task failed; as a matcher it covers every error except `States.Timeout`.
    pub const TASK_FAILED: &str = "States.TaskFailed";
    /// The execution lacked the privileges to run a Task.
    pub const PERMISSIONS: &str = "States.Permissions";
    /// `ResultPath` could not be applied to the state's input.
    pub const RESULT_PATH_MATCH_FAILURE: &str = "States.ResultPathMatchFailure";
    /// A `.$` field of `Parameters`/`ResultSelector`/`ItemSelector` named a missing path.
    pub const PARAMETER_PATH_FAILURE: &str = "States.ParameterPathFailure";
    /// A branch of a Parallel state failed.
    pub const BRANCH_FAILED: &str = "States.BranchFailed";
    /// No Choice rule matched and the state has no `Default`.
    pub const NO_CHOICE_MATCHED: &str = "States.NoChoiceMatched";
    /// An intrinsic function failed.
    pub const INTRINSIC_FAILURE: &str = "States.IntrinsicFailure";
    /// A Task sent no heartbeat within `HeartbeatSeconds`.
    pub const HEARTBEAT_TIMEOUT: &str = "States.HeartbeatTimeout";
    /// A Map run failed more items than tolerated.
    pub const EXCEED_TOLERATED_FAILURE_THRESHOLD: &str = "States.ExceedToleratedFailureThreshold";
    /// A payload exceeded 256 KiB (terminal: `States.ALL` does not catch it).
    pub const DATA_LIMIT_EXCEEDED: &str = "States.DataLimitExceeded";
    /// An exception the interpreter could not process (terminal: `States.ALL` does not catch it).
    pub const RUNTIME: &str = "States.Runtime";
    /// A Map state's `ItemReader` failed.
    pub const ITEM_READER_FAILED: &str = "States.ItemReaderFailed";
    /// A Map state's `ResultWriter` failed.
    pub const RESULT_WRITER_FAILED: &str = "States.ResultWriterFailed";
    /// A JSONata expression failed (JSONata query language).
    pub const QUERY_EVALUATION_ERROR: &str = "States.QueryEvaluationError";
    /// Every predefined name, for validation of `ErrorEquals`.
    pub const PREDEFINED: &[&str] = &[
        ALL,
        TIMEOUT,
        TASK_FAILED,
        PERMISSIONS,
        RESULT_PATH_MATCH_FAILURE,
        PARAMETER_PATH_FAILURE,
        BRANCH_FAILED,
        NO_CHOICE_MATCHED,
        INTRINSIC_FAILURE,
        HEARTBEAT_TIMEOUT,
        EXCEED_TOLERATED_FAILURE_THRESHOLD,
        DATA_LIMIT_EXCEEDED,
        RUNTIME,
        ITEM_READER_FAILED,
        RESULT_WRITER_FAILED,
        QUERY_EVALUATION_ERROR,
        "States.Http.Socket",
    ];
}

/// Whether an `ErrorEquals` entry matches a raised error name.
///
/// `States.ALL` matches everything except the terminal errors `States.Runtime` and
/// `States.DataLimitExceeded`; `States.TaskFailed` matches everything `States.ALL` does except
/// `States.Timeout`; any other entry matches only the identical name.
pub fn error_matches(pattern: &str, error: &str) -> bool {
    let terminal = error == names::RUNTIME || error == names::DATA_LIMIT_EXCEEDED;
    match pattern {
        names::ALL => !terminal,
        names::TASK_FAILED => error == names::TASK_FAILED || (!terminal && error != names::TIMEOUT),
        _ => pattern == error,
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The definition is not valid; every problem found is listed.
    #[error("invalid definition: {}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; "))]
    InvalidDefinition(Vec<Diagnostic>),
    /// A path expression does not parse.
    #[error("invalid path '{path}': {reason}")]
    PathSyntax {
        /// The text that failed to parse.
        path: String,
        /// Why.
        reason: String,
    },
    /// An intrinsic function call does not parse or has the wrong arity.
    #[error("invalid intrinsic function '{text}': {reason}")]
    IntrinsicSyntax {
        /// The text that failed to parse.
        text: String,
        /// Why.
        reason: String,
    },
    /// A runtime failure with its Step Functions error name (`States.*` or a task's own).
    #[error("{name}: {cause}")]
    States {
        /// The error name, e.g. `States.ResultPathMatchFailure`.
        name: String,
        /// The human-readable cause.
        cause: String,
    },
}

impl Error {
    /// A runtime error with the given name and cause.
    pub fn states(name: &str, cause: impl Into<String>) -> Self {
        Error::States {
            name: name.to_string(),
            cause: cause.into(),
        }
    }

    /// The Step Functions error name this error surfaces as at run time.
    pub fn error_name(&self) -> &str {
        match self {
            Error::States { name, .. } => name,
            Error::IntrinsicSyntax { .. } => names::INTRINSIC_FAILURE,
            Error::InvalidDefinition(_) | Error::PathSyntax { .. } => names::RUNTIME,
        }
    }

    /// The cause this error surfaces as at run time.
    pub fn cause(&self) -> String {
        match self {
            Error::States { cause, .. } => cause.clone(),
            other => other.to_string(),
        }
    }

    /// The error output a Catch hands on: `{"Error": …, "Cause": …}`.
    pub fn to_error_output(&self) -> serde_json::Value {
        serde_json::json!({ "Error": self.error_name(), "Cause": self.cause() })
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
