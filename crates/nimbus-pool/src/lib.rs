//! Per-version instance pools: warm reuse (most recently used first), scale-out per
//! concurrent request up to the function's concurrency limit, a bounded wait queue
//! beyond it, idle reaping (scale to zero) and replacement of instances when `$LATEST`
//! changes.
//!
//! Generic over [`nimbus_runtime::Executor`] so the policy is tested with a fake executor
//! and a paused clock. Used by the gateway; built by the server.

mod provisioned;
pub use provisioned::{ProvisionedState, ProvisionedStatus, HEALTH_TICK};

use nimbus_runtime::{
    Executor, Instance, InstanceSpec, Invocation, InvokeResult, Outcome, RuntimeError,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, info};

/// Pool policy.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// An instance idle this long is stopped (scale to zero).
    pub idle_timeout: Duration,
    /// How long a request waits for a free slot once the function is at its concurrency limit.
    pub queue_timeout: Duration,
    /// How many requests may wait per function; beyond that they are throttled at once.
    pub queue_depth: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
            queue_timeout: Duration::from_secs(10),
            queue_depth: 100,
        }
    }
}

/// Why an invocation was not run.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PoolError {
    #[error("rate exceeded: function {function} is at its concurrency limit of {limit}")]
    Throttled { function: String, limit: u32 },
    #[error("server is shutting down")]
    ShuttingDown,
}

/// An invocation's result with how it was served.
#[derive(Debug, Clone)]
pub struct PoolInvokeResult {
    pub result: InvokeResult,
    /// True when a new instance was started for this request.
    pub cold: bool,
    pub pid: Option<u32>,
}

/// Counts for one function, for the API and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub idle: usize,
    pub busy: usize,
}

struct VersionPool<I> {
    /// Identity of the code and configuration these instances run (the revision id).
    revision: String,
    idle: Mutex<Vec<(I, Instant)>>,
    busy: AtomicUsize,
    retired: AtomicBool,
}

struct FunctionPool<I> {
    sem: Arc<Semaphore>,
    limit: Mutex<u32>,
    waiting: AtomicUsize,
    versions: Mutex<HashMap<String, Arc<VersionPool<I>>>>,
}

/// All pools of the server.
pub struct PoolManager<E: Executor> {
    exec: Arc<E>,
    cfg: PoolConfig,
    functions: Mutex<HashMap<String, Arc<FunctionPool<E::Instance>>>>,
    /// Provisioned concurrency (`provisioned.rs`).
    prov: provisioned::Provisioner<E::Instance>,
    closed: AtomicBool,
}

impl<E: Executor> PoolManager<E> {
    pub fn new(exec: Arc<E>, cfg: PoolConfig) -> Arc<Self> {
        Arc::new(Self {
            exec,
            cfg,
            functions: Mutex::new(HashMap::new()),
            prov: Default::default(),
            closed: AtomicBool::new(false),
        })
    }

    pub fn executor(&self) -> &E {
        &self.exec
    }

    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    fn function_pool(&self, name: &str, limit: u32) -> Arc<FunctionPool<E::Instance>> {
        let fp = self
            .functions
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(FunctionPool {
                    sem: Arc::new(Semaphore::new(limit as usize)),
                    limit: Mutex::new(limit),
                    waiting: AtomicUsize::new(0),
                    versions: Mutex::new(HashMap::new()),
                })
            })
            .clone();
        let mut cur = fp.limit.lock().unwrap();
        if *cur < limit {
            fp.sem.add_permits((limit - *cur) as usize);
            *cur = limit;
        } else if *cur > limit {
            let forgotten = fp.sem.forget_permits((*cur - limit) as usize);
            *cur -= forgotten as u32;
        }
        drop(cur);
        fp
    }

    fn version_pool(
        &self,
        fp: &FunctionPool<E::Instance>,
        version: &str,
        revision: &str,
    ) -> Arc<VersionPool<E::Instance>> {
        let mut versions = fp.versions.lock().unwrap();
        if let Some(vp) = versions.get(version) {
            if vp.revision == revision {
                return vp.clone();
            }
            // The version's code or configuration changed: retire the old instances.
            self.retire_pool(vp);
        }
        let vp = Arc::new(VersionPool {
            revision: revision.to_string(),
            idle: Mutex::new(Vec::new()),
            busy: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
        });
        versions.insert(version.to_string(), vp.clone());
        vp
    }

    fn retire_pool(&self, vp: &VersionPool<E::Instance>) {
        vp.retired.store(true, Ordering::SeqCst);
        let idle: Vec<_> = vp.idle.lock().unwrap().drain(..).collect();
        for (inst, _) in idle {
            tokio::spawn(inst.stop());
        }
    }

    /// Runs `inv` on an instance of `spec` (whose code and config are identified by
    /// `revision`): a warm idle instance if there is one, else a new one while under the
    /// concurrency limit, else after waiting in the bounded queue, else throttled.
    pub async fn invoke(
        &self,
        spec: Arc<InstanceSpec>,
        revision: &str,
        inv: Invocation,
    ) -> Result<PoolInvokeResult, PoolError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(PoolError::ShuttingDown);
        }
        let name = spec.function.to_string();
        let limit = spec.config.concurrency;
        let fp = self.function_pool(&name, limit);
        let throttled = || PoolError::Throttled {
            function: name.clone(),
            limit,
        };
        let permit = match fp.sem.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if fp.waiting.fetch_add(1, Ordering::SeqCst) >= self.cfg.queue_depth {
                    fp.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(throttled());
                }
                let r =
                    tokio::time::timeout(self.cfg.queue_timeout, fp.sem.clone().acquire_owned())
                        .await;
                fp.waiting.fetch_sub(1, Ordering::SeqCst);
                match r {
                    Ok(Ok(p)) => p,
                    _ => return Err(throttled()),
                }
            }
        };
        let vp = self.version_pool(&fp, &spec.version, revision);
        let (result, cold, pid) = loop {
            // A warm instance that exited since its last call (e.g. a runtime that exits
            // after answering) is skipped, never handed the event.
            let warm = loop {
                match vp.idle.lock().unwrap().pop() {
                    Some((i, _)) if !i.is_healthy() => {
                        tokio::spawn(i.stop());
                    }
                    other => break other,
                }
            };
            // Provisioned instances of this version first, then warm on-demand ones.
            let prov = self.prov.take(&name, &spec.version, revision);
            let warm = match prov {
                Some(_) => {
                    if let Some(w) = warm {
                        vp.idle.lock().unwrap().push(w);
                    }
                    None
                }
                None => warm,
            };
            let (mut instance, cold, prov) = match (prov, warm) {
                (Some((i, slot)), _) => (i, false, Some(slot)),
                (None, Some((i, _))) => (i, false, None),
                (None, None) => match self.exec.start(spec.clone()).await {
                    Ok(i) => (i, true, None),
                    Err(e) => return Ok(start_failure(&inv, e)),
                },
            };
            vp.busy.fetch_add(1, Ordering::SeqCst);
            let pid = instance.pid();
            let result = instance.invoke(inv.clone()).await;
            vp.busy.fetch_sub(1, Ordering::SeqCst);
            let healthy = instance.is_healthy();
            if let Some(slot) = prov {
                slot.give_back(instance, healthy && !self.closed.load(Ordering::SeqCst));
            } else if healthy
                && !vp.retired.load(Ordering::SeqCst)
                && !self.closed.load(Ordering::SeqCst)
            {
                vp.idle.lock().unwrap().push((instance, Instant::now()));
            } else {
                tokio::spawn(instance.stop());
            }
            // A warm instance that died before taking the event: the function never saw it,
            // so it runs on a fresh instance instead of failing the caller.
            if !cold && !result.started && !healthy {
                continue;
            }
            break (result, cold, pid);
        };
        drop(permit);
        Ok(PoolInvokeResult { result, cold, pid })
    }

    /// Stops every instance of `function` (after a delete).
    pub fn retire_function(&self, function: &str) {
        self.prov.remove_function(function);
        if let Some(fp) = self.functions.lock().unwrap().remove(function) {
            for vp in fp.versions.lock().unwrap().values() {
                self.retire_pool(vp);
            }
        }
    }

    pub fn stats(&self, function: &str) -> PoolStats {
        let Some(fp) = self.functions.lock().unwrap().get(function).cloned() else {
            return PoolStats::default();
        };
        let versions = fp.versions.lock().unwrap();
        versions.values().fold(PoolStats::default(), |mut s, vp| {
            s.idle += vp.idle.lock().unwrap().len();
            s.busy += vp.busy.load(Ordering::SeqCst);
            s
        })
    }

    /// Stops instances idle longer than the idle timeout; returns how many.
    pub fn reap_idle(&self) -> usize {
        let now = Instant::now();
        let mut stopped = 0;
        let fps: Vec<_> = self.functions.lock().unwrap().values().cloned().collect();
        for fp in fps {
            let vps: Vec<_> = fp.versions.lock().unwrap().values().cloned().collect();
            for vp in vps {
                let expired: Vec<_> = {
                    let mut idle = vp.idle.lock().unwrap();
                    let (old, keep): (Vec<_>, Vec<_>) = idle
                        .drain(..)
                        .partition(|(_, t)| now.duration_since(*t) >= self.cfg.idle_timeout);
                    *idle = keep;
                    old
                };
                stopped += expired.len();
                for (inst, _) in expired {
                    debug!(instance = inst.id(), "stopping idle instance");
                    tokio::spawn(inst.stop());
                }
            }
        }
        stopped
    }

    /// Runs [`reap_idle`](Self::reap_idle) periodically until shutdown.
    pub fn spawn_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let tick =
            (self.cfg.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(tick);
            while !me.closed.load(Ordering::SeqCst) {
                iv.tick().await;
                let n = me.reap_idle();
                if n > 0 {
                    info!(stopped = n, "scaled down idle instances");
                }
            }
        })
    }

    /// Refuses new work and stops every idle instance; busy ones stop when they finish.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let fps: Vec<_> = self
            .functions
            .lock()
            .unwrap()
            .drain()
            .map(|(_, f)| f)
            .collect();
        let mut stops: Vec<_> = self
            .prov
            .remove_all()
            .into_iter()
            .map(|i| i.stop())
            .collect();
        for fp in fps {
            for vp in fp.versions.lock().unwrap().values() {
                vp.retired.store(true, Ordering::SeqCst);
                stops.extend(vp.idle.lock().unwrap().drain(..).map(|(i, _)| i.stop()));
            }
        }
        for s in stops {
            s.await;
        }
    }
}

fn start_failure(inv: &Invocation, e: RuntimeError) -> PoolInvokeResult {
    let error_type = match e {
        RuntimeError::InvalidEntrypoint(_) => "Runtime.InvalidEntrypoint",
        RuntimeError::Spawn(_) => "Runtime.Unknown",
        RuntimeError::Secret(_) => "Runtime.SecretNotFound",
        RuntimeError::Network(_) => "Runtime.NetworkUnavailable",
        RuntimeError::Isolation(_) => "Runtime.Unknown",
    };
    let outcome = Outcome::platform_error(
        error_type,
        format!("RequestId: {} Error: {e}", inv.request_id),
    );
    PoolInvokeResult {
        result: InvokeResult {
            outcome,
            duration: Duration::ZERO,
            init_duration: None,
            log_tail: String::new(),
            started: false,
        },
        cold: true,
        pid: None,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod provisioned_tests;
