use thiserror::Error;

/// Failures to start an instance.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The function's entry point cannot be run (missing or non-executable `bootstrap`,
    /// missing interpreter). Returned to the caller as `Runtime.InvalidEntrypoint`.
    #[error("{0}")]
    InvalidEntrypoint(String),
    #[error("cannot start instance: {0}")]
    Spawn(#[from] std::io::Error),
    /// A secret the function's environment refers to does not exist or cannot be read.
    /// Returned to the caller as `Runtime.SecretNotFound`.
    #[error("{0}")]
    Secret(String),
    /// The instance's network (namespace, or slirp4netns/pasta for `network = "outbound"`)
    /// cannot be set up. Returned to the caller as `Runtime.NetworkUnavailable`.
    #[error("{0}")]
    Network(String),
    /// `--isolation strict` and a sandbox layer this host does not provide.
    #[error("{0}")]
    Isolation(String),
    /// The server is shutting down: no instance starts any more.
    #[error("the server is shutting down")]
    ShuttingDown,
}
