//! Loading a component: its bytes are hashed, compiled once per engine (kept on disk by
//! content hash, so a restart or a second version of the same code compiles nothing),
//! linked against the host's interfaces and checked against its world, then kept as an
//! `InstancePre` while any instance uses it.

use crate::engine::Shared;
use crate::event::EventHandlerPre;
use crate::store::Host;
use crate::WasmError;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{debug, info};
use wasmtime::component::Component;
use wasmtime::Engine;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// A component ready to instantiate.
pub(crate) enum Loaded {
    Http(ProxyPre<Host>),
    Event(EventHandlerPre<Host>),
}

/// Compiles `bytes` as a component with a default engine: the check untrusted bytes go
/// through (the fuzz target `component_load`). `Err` says why they are not a component.
pub fn validate_component(bytes: &[u8]) -> Result<(), WasmError> {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    let engine = ENGINE.get_or_init(Engine::default);
    Component::new(engine, bytes)
        .map(|_| ())
        .map_err(|e| WasmError::InvalidComponent(format!("not a valid WebAssembly component: {e}")))
}

impl Shared {
    /// The loaded component at `path` for the `http` or event world.
    pub(crate) async fn load(
        self: &Arc<Self>,
        path: &Path,
        http: bool,
    ) -> Result<Arc<Loaded>, WasmError> {
        let bytes = match tokio::fs::read(path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(WasmError::InvalidComponent(format!(
                    "the handler names {}, which is not in the package: deploy the built component (nimbus deploy builds it) or fix the handler",
                    path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let hash = hex::encode(Sha256::digest(&bytes));
        let key = (hash.clone(), http);
        if let Some(l) = self
            .loaded
            .lock()
            .unwrap()
            .get(&key)
            .and_then(|w| w.upgrade())
        {
            return Ok(l);
        }
        let me = self.clone();
        let loaded = tokio::task::spawn_blocking(move || me.prepare(&bytes, &hash, http))
            .await
            .map_err(|e| WasmError::Engine(format!("loading the component failed: {e}")))??;
        let loaded = Arc::new(loaded);
        let mut map = self.loaded.lock().unwrap();
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(key, Arc::downgrade(&loaded));
        Ok(loaded)
    }

    /// Compiles (or reads from the disk cache) and links.
    fn prepare(&self, bytes: &[u8], hash: &str, http: bool) -> Result<Loaded, WasmError> {
        let component = self.compile(bytes, hash)?;
        if http {
            let pre = self
                .http_linker
                .instantiate_pre(&component)
                .map_err(link_error)?;
            ProxyPre::new(pre).map(Loaded::Http).map_err(|e| {
                WasmError::InvalidComponent(format!(
                    "runtime wasi-http needs a wasi:http/proxy component (one exporting wasi:http/incoming-handler): {e}"
                ))
            })
        } else {
            let pre = self
                .event_linker
                .instantiate_pre(&component)
                .map_err(link_error)?;
            EventHandlerPre::new(pre).map(Loaded::Event).map_err(|e| {
                WasmError::InvalidComponent(format!(
                    "runtime wasm-event needs a component of the world nimbus:function/event-handler (exporting nimbus:function/handler, wit/nimbus-function): {e}"
                ))
            })
        }
    }

    fn compile(&self, bytes: &[u8], hash: &str) -> Result<Component, WasmError> {
        let dir = self.cache_dir.join(engine_tag(&self.engine));
        let file = dir.join(format!("{hash}.cwasm"));
        if file.is_file() {
            // SAFETY: the file is one this executor wrote with `Component::serialize` for an
            // engine of the same compatibility hash (the directory's name), in the server's
            // own data directory.
            match unsafe { Component::deserialize_file(&self.engine, &file) } {
                Ok(c) => {
                    debug!(hash, "component from the compiled cache");
                    return Ok(c);
                }
                Err(e) => debug!(hash, "compiled cache entry unusable, compiling again: {e}"),
            }
        }
        let t0 = std::time::Instant::now();
        let component = Component::new(&self.engine, bytes).map_err(|e| {
            WasmError::InvalidComponent(format!("not a valid WebAssembly component: {e}"))
        })?;
        info!(
            hash,
            ms = t0.elapsed().as_millis() as u64,
            "component compiled"
        );
        if let Err(e) = store_compiled(&dir, &file, &component) {
            debug!(hash, "cannot keep the compiled component: {e}");
        }
        Ok(component)
    }
}

fn link_error(e: wasmtime::Error) -> WasmError {
    WasmError::InvalidComponent(format!(
        "the component needs an import Nimbus does not provide (it offers WASI 0.2 and wasi:http): {e}"
    ))
}

/// The cache directory of this engine's compiled code: a new wasmtime, or other settings,
/// compile into a new one (and the old ones are removed).
fn engine_tag(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("engine-{:016x}", h.finish())
}

fn store_compiled(dir: &Path, file: &Path, component: &Component) -> Result<(), WasmError> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir)?;
        // Compiled code of other engines is of no use any more.
        if let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) {
            for e in std::fs::read_dir(parent)?.flatten() {
                if e.file_name() != name && e.file_name().to_string_lossy().starts_with("engine-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let data = component
        .serialize()
        .map_err(|e| WasmError::Engine(format!("{e}")))?;
    let tmp: PathBuf = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}
