//! The engine every component function shares: its configuration (pooling allocator,
//! copy-on-write images, epoch interruption), the linkers of both worlds, the epoch
//! ticker, and the components loaded so far.

use crate::load::Loaded;
use crate::store::Host;
use crate::WasmError;
use nimbus_runtime::{LogSink, SecretSource};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of timeouts and of yielding to other
/// tasks while a component computes.
pub(crate) const TICK: Duration = Duration::from_millis(5);

/// Settings of the wasm executor.
#[derive(Debug, Clone)]
pub struct WasmConfig {
    /// Where compiled components are kept (`<data>/wasm-cache`), by content hash.
    pub cache_dir: PathBuf,
    /// Component instances alive at once (each request has its own): the pooling
    /// allocator reserves their slots up front (address space, not memory).
    pub max_instances: u32,
}

impl WasmConfig {
    pub fn new(cache_dir: PathBuf) -> Self {
        WasmConfig {
            cache_dir,
            max_instances: 1000,
        }
    }
}

pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) http_linker: Linker<Host>,
    pub(crate) event_linker: Linker<Host>,
    pub(crate) logs: LogSink,
    pub(crate) secrets: Option<Arc<dyn SecretSource>>,
    pub(crate) cache_dir: PathBuf,
    /// Loaded components by content hash and world, while some instance holds them.
    pub(crate) loaded: Mutex<HashMap<(String, bool), Weak<Loaded>>>,
    /// Invocations running now: the ticker sleeps while there are none.
    pub(crate) running: Arc<Running>,
}

#[derive(Default)]
pub(crate) struct Running {
    count: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Running {
    /// Marks an invocation running until the guard drops.
    pub(crate) fn enter(self: &Arc<Self>) -> RunningGuard {
        if self.count.fetch_add(1, Ordering::AcqRel) == 0 {
            let _l = self.lock.lock().unwrap();
            self.wake.notify_all();
        }
        RunningGuard(self.clone())
    }
}

pub(crate) struct RunningGuard(Arc<Running>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    pub(crate) fn new(
        cfg: WasmConfig,
        logs: LogSink,
        secrets: Option<Arc<dyn SecretSource>>,
    ) -> Result<Self, WasmError> {
        let engine = Engine::new(&engine_config(cfg.max_instances))
            .map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        let http_linker =
            linker::<Host>(&engine).map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        // The event world's components import the same WASI and outgoing HTTP.
        let event_linker = http_linker.clone();
        std::fs::create_dir_all(&cfg.cache_dir)?;
        let running = Arc::new(Running::default());
        spawn_ticker(engine.weak(), running.clone())?;
        Ok(Shared {
            engine,
            http_linker,
            event_linker,
            logs,
            secrets,
            cache_dir: cfg.cache_dir,
            loaded: Mutex::new(HashMap::new()),
            running,
        })
    }

    pub(crate) fn loaded_count(&self) -> usize {
        self.loaded
            .lock()
            .unwrap()
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

/// What a component may import, for a store holding `T`: WASI preview 2 and wasi:http
/// (both worlds import the same). Public for the benchmark's wasm floor, which so links
/// exactly what the executor links.
pub fn linker<T: wasmtime_wasi::WasiView + wasmtime_wasi_http::WasiHttpView + 'static>(
    engine: &Engine,
) -> wasmtime::Result<Linker<T>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

/// The engine's configuration: pooling allocator sized for `max_instances` instances
/// of components with a few dozen modules each (componentize-py's have ~10), epoch
/// interruption, copy-on-write memory images, no fuel. Public for the benchmark's wasm
/// floor (`examples/wasm_floor.rs`), which runs components on the same settings.
pub fn engine_config(max_instances: u32) -> Config {
    let mut cfg = Config::new();
    cfg.epoch_interruption(true);
    cfg.memory_init_cow(true);
    cfg.wasm_component_model(true);
    let mut pool = PoolingAllocationConfig::default();
    let n = max_instances.max(1);
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(4).max(64))
        .total_memories(n.saturating_mul(2).max(32))
        .total_tables(n.saturating_mul(4).max(64))
        .total_stacks(n)
        .max_core_instances_per_component(64)
        .max_memories_per_component(16)
        .max_tables_per_component(64)
        .max_memories_per_module(2)
        .max_tables_per_module(8)
        .table_elements(100_000)
        .max_component_instance_size(4 << 20)
        .max_core_instance_size(4 << 20)
        // wasm32's whole range: the function's own limit is the store's limiter.
        .max_memory_size(4 << 30)
        // A freed slot's dirty pages are found with the PAGEMAP_SCAN ioctl (Linux 6.7+;
        // without it, the slot's first 256 KiB) and reset in place, up to 256 KiB of them,
        // instead of madvise(MADV_DONTNEED) over the slot: no page-table teardown, no
        // TLB shootdown sent to the other cores, no page faults on the next instance.
        // Measured on the benchmark's wasm floor (hello component, 32 clients, 2 cores):
        // 15.4k → 35.4k req/s, medians (docs/performance.md, "The runtimes alone, and resetting
        // slots in place").
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(256 << 10)
        .table_keep_resident(256 << 10);
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    cfg
}

/// Advances the engine's epoch every [`TICK`] while invocations run (and sleeps while
/// none does); ends when the engine is gone.
fn spawn_ticker(engine: wasmtime::EngineWeak, running: Arc<Running>) -> Result<(), WasmError> {
    std::thread::Builder::new()
        .name("nimbus-wasm-epoch".into())
        .spawn(move || loop {
            {
                let mut l = running.lock.lock().unwrap();
                while running.count.load(Ordering::Acquire) == 0 {
                    let (g, _) = running
                        .wake
                        .wait_timeout(l, Duration::from_secs(5))
                        .unwrap();
                    l = g;
                    if engine.upgrade().is_none() {
                        return;
                    }
                }
            }
            std::thread::sleep(TICK);
            match engine.upgrade() {
                Some(e) => e.increment_epoch(),
                None => return,
            }
        })?;
    Ok(())
}
