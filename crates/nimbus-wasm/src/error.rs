use thiserror::Error;

/// What can go wrong setting up the wasm executor or loading a component.
#[derive(Debug, Error)]
pub enum WasmError {
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a valid WebAssembly component (or not one of the runtime's world).
    #[error("{0}")]
    InvalidComponent(String),
}

impl From<WasmError> for nimbus_runtime::RuntimeError {
    fn from(e: WasmError) -> Self {
        match e {
            WasmError::InvalidComponent(m) => nimbus_runtime::RuntimeError::InvalidEntrypoint(m),
            WasmError::Io(e) => nimbus_runtime::RuntimeError::Spawn(e),
            WasmError::Engine(m) => nimbus_runtime::RuntimeError::InvalidEntrypoint(m),
        }
    }
}
