//! Nimbus's WebAssembly executor: functions that are WebAssembly components run in-process
//! on wasmtime, a fresh component instance per request (nothing is shared between
//! requests, as in Spin), so isolation needs no processes.
//!
//! Two worlds: `wasi:http/proxy` (runtime `wasi-http`: function URLs and routes hand the
//! HTTP request over as it came) and Nimbus's event world `nimbus:function/event-handler`
//! (runtime `wasm-event`: `wit/nimbus-function`). The engine uses the pooling instance
//! allocator with copy-on-write memory images, keeps one `InstancePre` per loaded
//! component and compiled components on disk by content hash, stops a request at its
//! timeout by epoch interruption and bounds its memory with a `ResourceLimiter`.
//!
//! Plugged into the server's executor through [`nimbus_runtime::ComponentExecutor`].

mod engine;
mod error;
mod event;
mod http;
mod instance;
mod load;
mod net;
mod stdio;
mod store;

pub use engine::{engine_config, linker, WasmConfig};
pub use error::WasmError;
pub use load::validate_component;

use nimbus_runtime::{
    BoxFuture, ComponentExecutor, ComponentInstance, InstanceSpec, LogSink, RuntimeError,
    SecretSource,
};
use std::sync::{Arc, Mutex, OnceLock};

/// Starts instances of component functions (see the crate's documentation). The engine,
/// and the address space its pooling allocator reserves, is set up at the first start of a
/// component function: a server that runs none pays nothing for it.
pub struct WasmExecutor {
    cfg: WasmConfig,
    logs: LogSink,
    secrets: Option<Arc<dyn SecretSource>>,
    inner: OnceLock<Arc<engine::Shared>>,
    init: Mutex<()>,
}

impl WasmExecutor {
    /// An executor whose compiled components are cached under `cfg.cache_dir`; function
    /// output goes to `logs`, secret variables are read from `secrets`.
    pub fn new(
        cfg: WasmConfig,
        logs: LogSink,
        secrets: Option<Arc<dyn SecretSource>>,
    ) -> Result<Self, WasmError> {
        Ok(WasmExecutor {
            cfg,
            logs,
            secrets,
            inner: OnceLock::new(),
            init: Mutex::new(()),
        })
    }

    /// Components loaded and ready to instantiate now.
    pub fn loaded_components(&self) -> usize {
        self.inner.get().map_or(0, |s| s.loaded_count())
    }

    /// The engine, set up on first use.
    fn shared(&self) -> Result<Arc<engine::Shared>, WasmError> {
        if let Some(s) = self.inner.get() {
            return Ok(s.clone());
        }
        let _one = self.init.lock().unwrap();
        if let Some(s) = self.inner.get() {
            return Ok(s.clone());
        }
        let shared = Arc::new(engine::Shared::new(
            self.cfg.clone(),
            self.logs.clone(),
            self.secrets.clone(),
        )?);
        let _ = self.inner.set(shared.clone());
        Ok(shared)
    }
}

impl ComponentExecutor for WasmExecutor {
    fn start(
        &self,
        spec: Arc<InstanceSpec>,
    ) -> BoxFuture<'static, Result<Box<dyn ComponentInstance>, RuntimeError>> {
        let shared = self.shared();
        Box::pin(async move {
            let inst = instance::WasmInstance::start(shared?, spec).await?;
            Ok(Box::new(inst) as Box<dyn ComponentInstance>)
        })
    }
}
