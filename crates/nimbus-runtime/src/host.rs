//! The executor the server runs: processes for Lambda runtimes, and WebAssembly
//! components (`wasi-http`, `wasm-event`) through a [`ComponentExecutor`] plugged in from
//! outside this crate (`nimbus-wasm`, the server's cargo feature `wasm`). Without one, a
//! component function fails to start with an error saying so; process functions are
//! untouched either way.

use crate::{
    Executor, Instance, InstanceSpec, Invocation, InvokeResult, MemoryProbe, ProcessExecutor,
    ProcessInstance, RuntimeError,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future, as the object-safe component traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Starts instances of WebAssembly component functions ([`Executor`], object-safe).
pub trait ComponentExecutor: Send + Sync + 'static {
    fn start(
        &self,
        spec: Arc<InstanceSpec>,
    ) -> BoxFuture<'static, Result<Box<dyn ComponentInstance>, RuntimeError>>;
}

/// An instance of a component function ([`Instance`], object-safe).
pub trait ComponentInstance: Send + 'static {
    fn id(&self) -> &str;
    fn invoke(&mut self, inv: Invocation) -> BoxFuture<'_, InvokeResult>;
    fn is_healthy(&self) -> bool;
    fn memory_bytes(&self) -> Option<u64>;
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// Processes and, when plugged in, components.
pub struct HostExecutor {
    process: Arc<ProcessExecutor>,
    components: Option<Arc<dyn ComponentExecutor>>,
}

impl HostExecutor {
    pub fn new(
        process: Arc<ProcessExecutor>,
        components: Option<Arc<dyn ComponentExecutor>>,
    ) -> Self {
        HostExecutor {
            process,
            components,
        }
    }

    /// The process executor (stem cells, log sink, shutdown).
    pub fn process(&self) -> &Arc<ProcessExecutor> {
        &self.process
    }

    /// Whether component functions can run here.
    pub fn runs_components(&self) -> bool {
        self.components.is_some()
    }
}

/// An instance of either kind.
pub enum HostInstance {
    /// Boxed: a process instance is large, and the pool moves instances around.
    Process(Box<ProcessInstance>),
    Component(Box<dyn ComponentInstance>),
}

impl Executor for HostExecutor {
    type Instance = HostInstance;

    async fn start(&self, spec: Arc<InstanceSpec>) -> Result<HostInstance, RuntimeError> {
        if spec.config.runtime.family().is_wasm() {
            let Some(c) = &self.components else {
                return Err(RuntimeError::InvalidEntrypoint(format!(
                    "runtime {} runs WebAssembly components, and this server was built without the wasm executor: build nimbus with the cargo feature `wasm` (on by default)",
                    spec.config.runtime
                )));
            };
            return c.start(spec).await.map(HostInstance::Component);
        }
        self.process
            .start(spec)
            .await
            .map(|p| HostInstance::Process(Box::new(p)))
    }

    async fn start_ahead(&self, spec: Arc<InstanceSpec>) -> Result<HostInstance, RuntimeError> {
        if spec.config.runtime.family().is_wasm() {
            return self.start(spec).await;
        }
        self.process
            .start_ahead(spec)
            .await
            .map(|p| HostInstance::Process(Box::new(p)))
    }
}

impl Instance for HostInstance {
    fn id(&self) -> &str {
        match self {
            HostInstance::Process(p) => p.id(),
            HostInstance::Component(c) => c.id(),
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            HostInstance::Process(p) => p.pid(),
            HostInstance::Component(_) => None,
        }
    }

    async fn invoke(&mut self, inv: Invocation) -> InvokeResult {
        match self {
            HostInstance::Process(p) => p.invoke(inv).await,
            HostInstance::Component(c) => c.invoke(inv).await,
        }
    }

    async fn ready(&mut self) -> Result<(), String> {
        match self {
            HostInstance::Process(p) => p.ready().await,
            HostInstance::Component(_) => Ok(()),
        }
    }

    fn initialised(&self) -> impl Future<Output = ()> + Send + 'static {
        let wait = match self {
            HostInstance::Process(p) => Some(p.initialised()),
            HostInstance::Component(_) => None,
        };
        async move {
            if let Some(w) = wait {
                w.await
            }
        }
    }

    fn is_healthy(&self) -> bool {
        match self {
            HostInstance::Process(p) => p.is_healthy(),
            HostInstance::Component(c) => c.is_healthy(),
        }
    }

    fn was_stem_cell(&self) -> bool {
        match self {
            HostInstance::Process(p) => p.was_stem_cell(),
            HostInstance::Component(_) => false,
        }
    }

    fn started_anew(&self) -> bool {
        match self {
            HostInstance::Process(p) => p.started_anew(),
            HostInstance::Component(_) => true,
        }
    }

    fn memory_probe(&self) -> Option<MemoryProbe> {
        match self {
            HostInstance::Process(p) => p.memory_probe(),
            HostInstance::Component(_) => None,
        }
    }

    fn memory_bytes(&self) -> Option<u64> {
        match self {
            HostInstance::Process(p) => p.memory_bytes(),
            HostInstance::Component(c) => c.memory_bytes(),
        }
    }

    async fn stop(self) {
        match self {
            HostInstance::Process(p) => (*p).stop().await,
            HostInstance::Component(c) => c.stop().await,
        }
    }
}
