use thiserror::Error;

/// Validation failures of domain values. Every variant is a caller error.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CoreError {
    #[error("invalid function name {0:?}: use 1-64 letters, digits, '-' or '_'")]
    InvalidName(String),
    #[error("unsupported runtime {0:?}: use one of {1}")]
    UnknownRuntime(String, String),
    #[error("invalid handler {0:?}: {1}")]
    InvalidHandler(String, String),
    #[error("memory size {0} MB is out of range: use 128-10240")]
    InvalidMemory(u32),
    #[error("ephemeral storage {0} MB is out of range: use 512-10240")]
    InvalidEphemeralStorage(u32),
    #[error("timeout {0} s is out of range: use 1-900")]
    InvalidTimeout(u32),
    #[error("concurrency {0} is out of range: use 1-1000")]
    InvalidConcurrency(u32),
    /// An `instance_concurrency` out of range or for a runtime it does not apply to.
    #[error("{0}")]
    InvalidInstanceConcurrency(String),
    #[error("invalid environment variable {0:?}: {1}")]
    InvalidEnv(String, String),
    #[error("TracingConfig.Mode {0:?} is not a tracing mode: use Active or PassThrough")]
    InvalidTracingMode(String),
    /// A `LoggingConfig` Lambda would refuse; the message is Lambda's.
    #[error("{0}")]
    InvalidLogging(String),
    #[error("invalid description: {0}")]
    InvalidDescription(String),
    #[error("invalid route {0:?}: {1}")]
    InvalidRoute(String, String),
    #[error("invalid qualifier {0:?}: use $LATEST, a version number or an alias name")]
    InvalidQualifier(String),
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    /// A layer name, ARN or layer list that Lambda would refuse; the message says why.
    #[error("{0}")]
    InvalidLayer(String),
    /// An alarm definition that cannot be evaluated; the message says why.
    #[error("invalid alarm: {0}")]
    InvalidAlarm(String),
}
