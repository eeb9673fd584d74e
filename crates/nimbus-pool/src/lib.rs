//! Per-version instance pools: warm reuse (most recently used first), scale-out per
//! concurrent request up to the function's concurrency limit (its reservation, or its
//! `concurrency` setting within the account's unreserved pool), at most the scale-out
//! rate of new instances, a bounded FIFO wait queue beyond it (per function and in total),
//! idle reaping (scale to zero) and replacement of instances when `$LATEST` changes.
//!
//! Generic over [`nimbus_runtime::Executor`] so the policy is tested with a fake executor
//! and a paused clock. Used by the gateway; built by the server.

mod density;
mod gate;
mod provisioned;
use density::{Density, Tracked};
pub use density::{InstanceStats, MemoryPolicy, MemoryStats};
pub use provisioned::{ProvisionedState, ProvisionedStatus, HEALTH_TICK};

use nimbus_core::SnapshotMap;
use nimbus_runtime::{
    Executor, Instance, InstanceSpec, Invocation, InvokeResult, Outcome, RuntimeError,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tracing::{debug, info};

mod concurrency;
use concurrency::{Account, QueueSlot, TokenBucket};
pub use concurrency::{ScaleRate, ThrottleReason};

/// Pool policy.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// An instance idle this long is stopped (scale to zero).
    pub idle_timeout: Duration,
    /// How long a request waits for a free slot once the function is at its concurrency limit.
    pub queue_timeout: Duration,
    /// How many requests may wait per function; beyond that they are throttled at once.
    pub queue_depth: usize,
    /// How many requests may wait in all; beyond that they are throttled at once.
    pub account_queue_depth: usize,
    /// Invocations running at once across all functions (reservations included).
    pub account_concurrency: u32,
    /// How fast each function may start new instances.
    pub scale_rate: ScaleRate,
    /// The instance memory budget and the host's `MemAvailable` floor (`density.rs`).
    pub memory: MemoryPolicy,
    /// Instances that may be initialising at once on this host (all functions): a burst
    /// beyond it waits for a warm instance or a free slot instead of starving every
    /// runtime of CPU until init timeouts fire.
    pub max_initializing: usize,
    /// The instance gate (`gate.rs`): on a CPU-saturated host, short invocations of a
    /// process function wait for a returning instance once more busy instances no longer
    /// bring more throughput. Off (the default): one instance per concurrent request, as
    /// Lambda.
    pub instance_gate: bool,
}

/// The default of [`PoolConfig::max_initializing`]: 4 per core, at least 4.
pub fn default_max_initializing() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() * 4)
        .unwrap_or(4)
        .max(4)
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_initializing: default_max_initializing(),
            idle_timeout: Duration::from_secs(300),
            queue_timeout: Duration::from_secs(10),
            queue_depth: 100,
            account_queue_depth: 1000,
            account_concurrency: 1000,
            scale_rate: ScaleRate::default(),
            memory: MemoryPolicy::default(),
            instance_gate: false,
        }
    }
}

/// Why an invocation was not run.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PoolError {
    #[error("{}", throttle_message(function, *limit, *reason))]
    Throttled {
        function: String,
        /// The limit that was hit (reservation, function maximum, unreserved pool or
        /// instances started per second).
        limit: u32,
        reason: ThrottleReason,
    },
    /// No memory for a new instance: the budget is held by busy or provisioned instances
    /// (or the host is below its `MemAvailable` floor) and no idle instance is left to stop.
    #[error("cannot start an instance of {function}: {detail}")]
    MemoryExhausted { function: String, detail: String },
    #[error("server is shutting down")]
    ShuttingDown,
}

/// Why [`PoolManager`] could not start an instance.
pub(crate) enum StartError {
    Runtime(RuntimeError),
    Memory(String),
}

fn throttle_message(function: &str, limit: u32, reason: ThrottleReason) -> String {
    match reason {
        ThrottleReason::Reserved => {
            format!("function {function} is at its reserved concurrency of {limit}")
        }
        ThrottleReason::Concurrency => format!(
            "function {function} is at its concurrency limit (function maximum or unreserved account concurrency) of {limit}"
        ),
        ThrottleReason::ScaleRate => format!(
            "function {function} cannot scale out faster than {limit} new instances per second"
        ),
    }
}

/// An invocation's result with how it was served.
#[derive(Debug, Clone)]
pub struct PoolInvokeResult {
    pub result: InvokeResult,
    /// True when a new instance was started for this request.
    pub cold: bool,
    /// With `cold`: the new instance was a prewarmed stem cell.
    pub stem: bool,
    pub pid: Option<u32>,
    /// Time spent waiting for a concurrency slot and an instance (queueing), before the
    /// cold start if there was one.
    pub waited: Duration,
    /// With `cold`: time to start the new instance's process (its initialisation is
    /// `result.init_duration`).
    pub spawn: Duration,
}

/// Counts for one function, for the API and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub idle: usize,
    pub busy: usize,
    /// Invocations holding a concurrency slot (running or getting an instance).
    pub running: usize,
    /// Requests waiting in the queue.
    pub waiting: usize,
}

/// See [`PoolManager::instance_states`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstanceStates {
    pub initializing: usize,
    pub idle: usize,
    pub busy: usize,
}

/// See [`PoolManager::warmth`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Warmth {
    /// Idle warm instances of the revision (provisioned ones included).
    pub idle: usize,
    /// The function is at its concurrency limit (or the unreserved pool is full): a new
    /// invocation would wait in the queue.
    pub saturated: bool,
}

/// Account-wide figures (GetAccountSettings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountStats {
    pub limit: u32,
    pub reserved: u32,
    /// Unreserved invocations running now.
    pub unreserved_running: u32,
}

struct VersionPool<I> {
    /// Identity of the code and configuration these instances run (the revision id).
    revision: String,
    idle: Mutex<Vec<(I, Instant)>>,
    busy: AtomicUsize,
    retired: AtomicBool,
    /// Signalled when an instance goes back to idle (wakes a request waiting for a
    /// warm instance instead of a scale-out token).
    returned: Notify,
    /// The most instances idle at once since [`PoolManager::idle_by_revision`] last read it.
    peak_idle: AtomicUsize,
    /// Its warm invocations' latencies, for the instance gate (process functions only:
    /// `None` for WebAssembly components, which run in the server's own threads).
    load: Option<gate::Load>,
    /// Requests waiting at the gate, and those past it until their invocation ends
    /// (starting instances included: a burst is counted before its instances exist;
    /// counted only with the gate).
    line: gate::Line,
    admitted: AtomicUsize,
}

struct FunctionPool<I> {
    sem: Arc<Semaphore>,
    /// The permits `sem` is meant to have; changed under `resizing` (read without it).
    limit: AtomicU32,
    resizing: Mutex<()>,
    waiting: AtomicUsize,
    running: AtomicUsize,
    bucket: TokenBucket,
    versions: Mutex<HashMap<String, Arc<VersionPool<I>>>>,
}

/// All pools of the server.
pub struct PoolManager<E: Executor> {
    exec: Arc<E>,
    cfg: PoolConfig,
    /// Read by every invocation without a lock; written when a function is first invoked
    /// or deleted.
    functions: SnapshotMap<String, Arc<FunctionPool<Inst<E>>>>,
    /// Provisioned concurrency (`provisioned.rs`).
    prov: provisioned::Provisioner<Inst<E>>,
    account: Account,
    /// Memory budget and per-instance registry (`density.rs`).
    density: Arc<Density>,
    /// Slots for instances initialising at once ([`PoolConfig::max_initializing`]).
    initializing: Arc<tokio::sync::Semaphore>,
    closed: AtomicBool,
    /// Shutdown has begun ([`Self::stop_provisioning`]): provisioned slots start nothing.
    provisioning_stopped: AtomicBool,
    /// Whether the host's CPUs are saturated (the instance gate's condition).
    host_cpu: gate::HostCpu,
    /// The host's cores: the gate allows at least two busy instances per core.
    cores: AtomicUsize,
}

type Inst<E> = Tracked<<E as Executor>::Instance>;

impl<E: Executor> PoolManager<E> {
    pub fn new(exec: Arc<E>, cfg: PoolConfig) -> Arc<Self> {
        Arc::new(Self {
            exec,
            account: Account::new(cfg.account_concurrency),
            density: Density::new(cfg.memory),
            initializing: Arc::new(tokio::sync::Semaphore::new(cfg.max_initializing.max(1))),
            cfg,
            functions: SnapshotMap::new(),
            prov: Default::default(),
            closed: AtomicBool::new(false),
            provisioning_stopped: AtomicBool::new(false),
            host_cpu: gate::HostCpu::new(),
            cores: AtomicUsize::new(std::thread::available_parallelism().map_or(1, |n| n.get())),
        })
    }

    /// For tests: the host counts as CPU-saturated (`Some(true)`), as not saturated, or
    /// as `/proc/stat` says (`None`).
    #[cfg(test)]
    pub(crate) fn force_host_saturation(&self, saturated: Option<bool>, cores: usize) {
        self.host_cpu.force(saturated);
        self.cores.store(cores, Ordering::Relaxed);
    }

    pub fn executor(&self) -> &E {
        &self.exec
    }

    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    /// Sets (`None`: removes) a function's reserved concurrency: it then runs at most
    /// `value` invocations at once, outside the unreserved pool, which shrinks by as much.
    /// The gateway calls this at start and on every Put/DeleteFunctionConcurrency.
    pub fn set_reservation(&self, function: &str, value: Option<u32>) {
        self.account.set_reservation(function, value);
    }

    pub fn account_stats(&self) -> AccountStats {
        let reserved = self.account.reserved_total();
        let capacity = self.account.limit.saturating_sub(reserved);
        let free = self.account.unreserved.available_permits() as u32;
        AccountStats {
            limit: self.account.limit,
            reserved,
            unreserved_running: capacity.saturating_sub(free),
        }
    }

    fn function_pool(&self, name: &str, limit: u32) -> Arc<FunctionPool<Inst<E>>> {
        let fp = self.functions.get(name).unwrap_or_else(|| {
            self.functions.get_or_insert_with(name.to_string(), || {
                Arc::new(FunctionPool {
                    sem: Arc::new(Semaphore::new(limit as usize)),
                    limit: AtomicU32::new(limit),
                    resizing: Mutex::new(()),
                    waiting: AtomicUsize::new(0),
                    running: AtomicUsize::new(0),
                    bucket: TokenBucket::new(self.cfg.scale_rate),
                    versions: Mutex::new(HashMap::new()),
                })
            })
        });
        if fp.limit.load(Ordering::SeqCst) != limit {
            let _r = fp.resizing.lock().unwrap();
            let cur = fp.limit.load(Ordering::SeqCst);
            if cur < limit {
                fp.sem.add_permits((limit - cur) as usize);
                fp.limit.store(limit, Ordering::SeqCst);
            } else if cur > limit {
                let forgotten = fp.sem.forget_permits((cur - limit) as usize);
                fp.limit.store(cur - forgotten as u32, Ordering::SeqCst);
            }
        }
        fp
    }

    fn version_pool(
        &self,
        fp: &FunctionPool<Inst<E>>,
        spec: &InstanceSpec,
        revision: &str,
    ) -> Arc<VersionPool<Inst<E>>> {
        let version = spec.version.as_str();
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
            returned: Notify::new(),
            peak_idle: AtomicUsize::new(0),
            load: (self.cfg.instance_gate && !spec.config.runtime.family().is_wasm())
                .then(gate::Load::default),
            line: gate::Line::default(),
            admitted: AtomicUsize::new(0),
        });
        versions.insert(version.to_string(), vp.clone());
        vp
    }

    fn retire_pool(&self, vp: &VersionPool<Inst<E>>) {
        vp.retired.store(true, Ordering::SeqCst);
        let idle: Vec<_> = vp.idle.lock().unwrap().drain(..).collect();
        for (inst, _) in idle {
            tokio::spawn(inst.stop());
        }
    }

    /// Runs `inv` on an instance of `spec` (whose code and config are identified by
    /// `revision`): a warm idle instance if there is one, else a new one while under the
    /// concurrency limits and the scale-out rate, else after waiting in the bounded FIFO
    /// queue until the queue timeout, else throttled.
    ///
    /// Limits: a function with a reservation R runs at most R at once (R = 0: always
    /// throttled); one without runs at most its `concurrency` setting and holds a slot of
    /// the account's unreserved pool (account − Σreservations) per invocation.
    pub async fn invoke(
        &self,
        spec: Arc<InstanceSpec>,
        revision: &str,
        inv: Invocation,
    ) -> Result<PoolInvokeResult, PoolError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(PoolError::ShuttingDown);
        }
        let started = Instant::now();
        let deadline = started + self.cfg.queue_timeout;
        let name = spec.function.to_string();
        let reserved = self.account.reservation(&name);
        let limit = reserved.unwrap_or(spec.config.concurrency);
        let throttled = |limit: u32, reason: ThrottleReason| PoolError::Throttled {
            function: name.clone(),
            limit,
            reason,
        };
        let fn_reason = if reserved.is_some() {
            ThrottleReason::Reserved
        } else {
            ThrottleReason::Concurrency
        };
        if limit == 0 {
            return Err(throttled(0, fn_reason));
        }
        let fp = self.function_pool(&name, limit);
        let mut slot = None;
        // 1. The function's own slot (its reservation or its maximum), FIFO.
        let permit = match fp.sem.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                slot = self.enter_queue(&fp);
                if slot.is_none() {
                    return Err(throttled(limit, fn_reason));
                }
                match tokio::time::timeout_at(deadline, fp.sem.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => return Err(throttled(limit, fn_reason)),
                }
            }
        };
        // 2. Without a reservation, a slot of the account's unreserved pool, FIFO across
        //    functions (each function has at most `limit` requests in that queue).
        let unreserved = if reserved.is_none() {
            let sem = self.account.unreserved.clone();
            let pool_limit = || {
                self.account
                    .limit
                    .saturating_sub(self.account.reserved_total())
            };
            Some(match sem.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    if slot.is_none() {
                        slot = self.enter_queue(&fp);
                        if slot.is_none() {
                            return Err(throttled(pool_limit(), ThrottleReason::Concurrency));
                        }
                    }
                    match tokio::time::timeout_at(deadline, sem.acquire_owned()).await {
                        Ok(Ok(p)) => p,
                        _ => return Err(throttled(pool_limit(), ThrottleReason::Concurrency)),
                    }
                }
            })
        } else {
            None
        };
        drop(slot);
        let _running = Running::enter(&fp.running);
        let vp = self.version_pool(&fp, &spec, revision);
        let mut spawn = Duration::ZERO;
        let mut waited = Duration::ZERO;
        let (result, cold, stem, pid) = loop {
            // 3. A warm instance, else a new one when the scale-out rate allows, else wait
            //    for whichever comes first (until the deadline).
            let mut held_slot = None;
            self.gate(&vp, deadline).await;
            let admitted = Admission::enter(&vp, self.gate_min());
            let (mut instance, cold, prov) = loop {
                // Provisioned instances of this version first.
                if let Some((i, slot)) = self.prov.take(&name, &spec.version, revision) {
                    break (i, false, Some(slot));
                }
                // A warm instance that exited since its last call (e.g. a runtime that
                // exits after answering) is skipped, never handed the event.
                let warm = loop {
                    match vp.idle.lock().unwrap().pop() {
                        Some((i, _)) if !i.is_healthy() => {
                            tokio::spawn(i.stop());
                        }
                        other => break other,
                    }
                };
                if let Some((i, _)) = warm {
                    break (i, false, None);
                }
                // A slot among the instances initialising on this host; without one,
                // wait for a warm instance or a slot (until the deadline).
                // A slot acquired while waiting is kept: a released slot goes straight to
                // the next waiter, so dropping it to try again would pass it from waiter
                // to waiter for ever (a busy loop).
                let init_slot = match held_slot
                    .take()
                    .map_or_else(|| self.initializing.clone().try_acquire_owned(), Ok)
                {
                    Ok(p) => p,
                    Err(_) => {
                        let rate = self.cfg.scale_rate.per_sec.ceil() as u32;
                        debug!("every initialisation slot is taken; waiting for an instance");
                        tokio::select! {
                            _ = vp.returned.notified() => {}
                            slot = self.initializing.clone().acquire_owned() => held_slot = slot.ok(),
                            _ = tokio::time::sleep_until(deadline) => {
                                return Err(throttled(rate, ThrottleReason::ScaleRate));
                            }
                        }
                        continue;
                    }
                };
                match fp.bucket.take() {
                    Ok(()) => match timed(self.start_instance(spec.clone(), false)).await {
                        Ok((i, took)) => {
                            spawn = took;
                            waited = started.elapsed().saturating_sub(took);
                            let init = i.initialised();
                            tokio::spawn(async move {
                                init.await;
                                drop(init_slot);
                            });
                            break (i, true, None);
                        }
                        Err(StartError::Runtime(RuntimeError::ShuttingDown)) => {
                            return Err(PoolError::ShuttingDown)
                        }
                        Err(StartError::Runtime(e)) => return Ok(start_failure(&inv, e)),
                        Err(StartError::Memory(detail)) => {
                            return Err(PoolError::MemoryExhausted {
                                function: name.clone(),
                                detail,
                            })
                        }
                    },
                    Err(wait) => {
                        let rate = self.cfg.scale_rate.per_sec.ceil() as u32;
                        if Instant::now() >= deadline {
                            return Err(throttled(rate, ThrottleReason::ScaleRate));
                        }
                        debug!(?wait, "scale-out rate reached; waiting for an instance");
                        tokio::select! {
                            _ = vp.returned.notified() => {}
                            _ = tokio::time::sleep(wait) => {}
                            _ = tokio::time::sleep_until(deadline) => {
                                return Err(throttled(rate, ThrottleReason::ScaleRate));
                            }
                        }
                    }
                }
            };
            drop(held_slot);
            // A new slot of a process already running (a function with
            // `instance_concurrency` above 1) initialised nothing: not a cold start.
            let cold = cold && instance.started_anew();
            if !cold {
                waited = started.elapsed();
            }
            vp.busy.fetch_add(1, Ordering::SeqCst);
            let pid = instance.pid();
            let stem = cold && instance.was_stem_cell();
            instance.set_busy();
            let began = Instant::now();
            let result = instance.invoke(inv.clone()).await;
            let done = Instant::now();
            match (&vp.load, cold) {
                (Some(load), false) => load.record(
                    done - began,
                    admitted.busy,
                    self.gate_min(),
                    self.host_cpu.saturated(),
                    done,
                ),
                (Some(load), true) => load.cold_start(),
                (None, _) => {}
            }
            instance.set_idle(done);
            vp.busy.fetch_sub(1, Ordering::SeqCst);
            let healthy = instance.is_healthy();
            if let Some(slot) = prov {
                slot.give_back(instance, healthy && !self.closed.load(Ordering::SeqCst));
            } else if healthy
                && !vp.retired.load(Ordering::SeqCst)
                && !self.closed.load(Ordering::SeqCst)
            {
                let idle = {
                    let mut idle = vp.idle.lock().unwrap();
                    idle.push((instance, done));
                    idle.len()
                };
                vp.peak_idle.fetch_max(idle, Ordering::SeqCst);
                vp.returned.notify_one();
            } else {
                tokio::spawn(instance.stop());
            }
            // Past the gate no more: the request it lets on finds this instance idle
            // (released before, it would start a new one).
            drop(admitted);
            // A warm instance that died before taking the event: the function never saw it,
            // so it runs on a fresh instance instead of failing the caller.
            if !cold && !result.started && !healthy {
                continue;
            }
            break (result, cold, stem, pid);
        };
        drop(unreserved);
        drop(permit);
        Ok(PoolInvokeResult {
            result,
            cold,
            stem,
            pid,
            waited,
            spawn,
        })
    }

    /// The instance gate (`gate.rs`): on a CPU-saturated host, waits while the version
    /// has as many busy instances as its throughput needs (until one comes back, the
    /// gate's bound or the request's deadline, whichever is first; then the request goes
    /// on as without the gate).
    async fn gate(&self, vp: &VersionPool<Inst<E>>, deadline: Instant) {
        let Some(load) = &vp.load else { return };
        let min = self.gate_min();
        // What the gate sees, every thousandth call (`RUST_LOG=nimbus_pool=debug`).
        if tracing::enabled!(tracing::Level::DEBUG) {
            static CALLS: AtomicUsize = AtomicUsize::new(0);
            if CALLS.fetch_add(1, Ordering::Relaxed).is_multiple_of(1000) {
                let (cap, recent_us, rate) = load.figures();
                debug!(
                    admitted = vp.admitted.load(Ordering::SeqCst),
                    waiting = !vp.line.is_empty(),
                    saturated = self.host_cpu.saturated(),
                    ?cap,
                    recent_us,
                    rate,
                    "instance gate"
                );
            }
        }
        if !load.engaged() || (vp.admitted.load(Ordering::SeqCst) < min && vp.line.is_empty()) {
            return;
        }
        let busy = || vp.admitted.load(Ordering::SeqCst);
        let Some((mut ticket, ahead)) = vp.line.join(|k| load.admits(busy() + k, min)) else {
            return;
        };
        let wait = load.bound(busy(), ahead);
        if !ticket.wait((Instant::now() + wait).min(deadline)).await {
            debug!(
                ahead,
                ?wait,
                "instance gate: no instance came back in time; going on"
            );
        }
    }

    /// The fewest busy instances of a version the gate lets run: two per core.
    fn gate_min(&self) -> usize {
        2 * self.cores.load(Ordering::Relaxed)
    }

    /// Starts an instance of `spec` within the memory budget, stopping idle instances
    /// (least recently used first, any function) to make room when needed.
    pub(crate) async fn start_instance(
        &self,
        spec: Arc<InstanceSpec>,
        provisioned: bool,
    ) -> Result<Inst<E>, StartError> {
        // Once the pool is closed (shutdown), no instance starts.
        if self.closed.load(Ordering::SeqCst) {
            return Err(StartError::Runtime(RuntimeError::ShuttingDown));
        }
        // A process that runs several invocations at once has the function's memory for
        // all of them: each slot is charged its share.
        let bytes = (u64::from(spec.config.memory_mb) << 20)
            / u64::from(spec.config.instance_concurrency.max(1));
        let charge = self.make_room(bytes).await.map_err(StartError::Memory)?;
        // Counted from before the start: the code store keeps the directory meanwhile.
        let code = self
            .density
            .use_code(std::iter::once(spec.code_dir.as_path()).chain(spec.opt_dir.as_deref()));
        // Provisioned instances start ahead of any request: they leave the executor's
        // request-path shortcuts (stem cells) to cold starts.
        let inst = if provisioned {
            self.exec.start_ahead(spec.clone()).await
        } else {
            self.exec.start(spec.clone()).await
        };
        let inst = inst.map_err(StartError::Runtime)?;
        Ok(self.density.track(
            inst,
            charge,
            code,
            spec.function.as_str(),
            &spec.version,
            provisioned,
        ))
    }

    /// Reserves `bytes` of the budget, first stopping idle instances (least recently used
    /// first) while the budget is full or the host is below its `MemAvailable` floor.
    async fn make_room(&self, bytes: u64) -> Result<density::Charge, String> {
        let mb = |b: u64| b >> 20;
        let policy = &self.density.policy;
        if let Some(budget) = policy.budget.filter(|&b| bytes > b) {
            return Err(format!(
                "its memory size of {} MB exceeds the whole instance memory budget of {} MB",
                mb(bytes),
                mb(budget)
            ));
        }
        loop {
            let charge = self.density.try_charge(bytes);
            let pressure = charge.is_some() && self.density.under_pressure();
            match charge {
                Some(c) if !pressure => return Ok(c),
                other => drop(other),
            }
            let Some(victim) = self.pop_lru_idle() else {
                return Err(if pressure {
                    format!(
                        "the host's available memory is below the floor of {} MB and no idle instance is left to stop",
                        mb(policy.floor)
                    )
                } else {
                    format!(
                        "the instance memory budget of {} MB is in use ({} MB committed, {} MB needed) and no idle instance is left to stop",
                        mb(policy.budget.unwrap_or(0)),
                        mb(self.density.committed()),
                        mb(bytes)
                    )
                });
            };
            info!(
                instance = victim.id(),
                pressure, "stopping the least recently used idle instance to make room"
            );
            self.density.reaped.fetch_add(1, Ordering::SeqCst);
            victim.stop().await;
        }
    }

    /// Takes the least recently used idle instance of any function (provisioned ones are
    /// not in these lists). Scans every version pool: this runs only when memory is short.
    fn pop_lru_idle(&self) -> Option<Inst<E>> {
        loop {
            let fps = self.functions.snapshot();
            let mut best: Option<(Instant, Arc<VersionPool<Inst<E>>>)> = None;
            for fp in fps.values() {
                for vp in fp.versions.lock().unwrap().values() {
                    // Each list is ordered by release time: its first entry is its oldest.
                    let first = vp.idle.lock().unwrap().first().map(|(_, t)| *t);
                    if let Some(t) = first {
                        if best.as_ref().is_none_or(|(b, _)| t < *b) {
                            best = Some((t, vp.clone()));
                        }
                    }
                }
            }
            let (t, vp) = best?;
            let mut idle = vp.idle.lock().unwrap();
            if idle.first().is_some_and(|(_, t2)| *t2 == t) {
                return Some(idle.remove(0).0);
            }
            // Taken or returned meanwhile: look again.
        }
    }

    /// Every running instance of `function` with its state and memory.
    pub fn instances(&self, function: &str) -> Vec<InstanceStats> {
        self.density.instances(Some(function))
    }

    /// The code directories (and merged layer directories) of every instance starting,
    /// running or stopping (until it has stopped): what the code store's garbage collection
    /// must keep even after their function is deleted.
    pub fn code_dirs_in_use(&self) -> std::collections::HashSet<std::path::PathBuf> {
        self.density.code_dirs()
    }

    /// Instance and memory totals over every function.
    pub fn memory_stats(&self) -> MemoryStats {
        self.density.stats()
    }

    /// Instances by state now: starting (cold starts holding an initialisation slot),
    /// idle and busy. Cheap (no memory probes): read at each metrics scrape.
    pub fn instance_states(&self) -> InstanceStates {
        let (all, busy) = self.density.counts();
        let slots = self.cfg.max_initializing.max(1);
        InstanceStates {
            initializing: slots.saturating_sub(self.initializing.available_permits()),
            idle: all.saturating_sub(busy),
            busy,
        }
    }

    /// Idle warm instances per revision, over every function (provisioned instances
    /// excluded): for each, the most that were idle at once since the previous call (or
    /// now), so an instance serving one short call after another still counts as idle
    /// at each cluster heartbeat, which reads this. Cheap: one short lock per version pool.
    pub fn idle_by_revision(&self) -> std::collections::BTreeMap<String, u32> {
        let mut out = std::collections::BTreeMap::new();
        for fp in self.functions.snapshot().values() {
            for vp in fp.versions.lock().unwrap().values() {
                if vp.retired.load(Ordering::SeqCst) {
                    continue;
                }
                let now = vp.idle.lock().unwrap().len();
                let n = vp.peak_idle.swap(now, Ordering::SeqCst).max(now) as u32;
                if n > 0 {
                    *out.entry(vp.revision.clone()).or_insert(0) += n;
                }
            }
        }
        out
    }

    /// What an invocation of `function`'s `version` (running `revision`) would find here
    /// now: idle warm instances (provisioned ones included), and whether it would have to
    /// wait for a concurrency slot (the function at its limit, or the unreserved pool full).
    pub fn warmth(&self, function: &str, version: &str, revision: &str) -> Warmth {
        let Some(fp) = self.functions.get(function) else {
            return Warmth {
                idle: self.provisioned_idle(function, version),
                saturated: self.account.reservation(function).is_none()
                    && self.account.unreserved.available_permits() == 0,
            };
        };
        let warm = fp
            .versions
            .lock()
            .unwrap()
            .get(version)
            .filter(|vp| vp.revision == revision && !vp.retired.load(Ordering::SeqCst))
            .map_or(0, |vp| vp.idle.lock().unwrap().len());
        let saturated = fp.sem.available_permits() == 0
            || (self.account.reservation(function).is_none()
                && self.account.unreserved.available_permits() == 0);
        Warmth {
            idle: warm + self.provisioned_idle(function, version),
            saturated,
        }
    }

    fn provisioned_idle(&self, function: &str, version: &str) -> usize {
        self.provisioned_status(function, version)
            .map_or(0, |s| s.available as usize)
    }

    fn enter_queue<'a>(&'a self, fp: &'a FunctionPool<Inst<E>>) -> Option<QueueSlot<'a>> {
        QueueSlot::enter(
            &fp.waiting,
            self.cfg.queue_depth,
            &self.account.waiting,
            self.cfg.account_queue_depth,
        )
    }

    /// Stops every instance of `function` (after a delete).
    pub fn retire_function(&self, function: &str) {
        self.prov.remove_function(function);
        if let Some(fp) = self.functions.remove(function) {
            for vp in fp.versions.lock().unwrap().values() {
                self.retire_pool(vp);
            }
        }
    }

    pub fn stats(&self, function: &str) -> PoolStats {
        let Some(fp) = self.functions.get(function) else {
            return PoolStats::default();
        };
        let versions = fp.versions.lock().unwrap();
        let base = PoolStats {
            running: fp.running.load(Ordering::SeqCst),
            waiting: fp.waiting.load(Ordering::SeqCst),
            ..PoolStats::default()
        };
        versions.values().fold(base, |mut s, vp| {
            s.idle += vp.idle.lock().unwrap().len();
            s.busy += vp.busy.load(Ordering::SeqCst);
            s
        })
    }

    /// Stops instances idle longer than the idle timeout; returns how many.
    pub fn reap_idle(&self) -> usize {
        let now = Instant::now();
        let mut stopped = 0;
        for fp in self.functions.snapshot().values() {
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

    /// While the host is below its `MemAvailable` floor, stops idle instances least
    /// recently used first; returns how many.
    pub async fn relieve_pressure(&self) -> usize {
        let mut n = 0;
        while self.density.under_pressure() {
            let Some(victim) = self.pop_lru_idle() else {
                break;
            };
            info!(
                instance = victim.id(),
                "host memory below the floor: stopping the least recently used idle instance"
            );
            self.density.reaped.fetch_add(1, Ordering::SeqCst);
            victim.stop().await;
            n += 1;
        }
        n
    }

    /// Runs [`reap_idle`](Self::reap_idle) (and, under memory pressure,
    /// [`relieve_pressure`](Self::relieve_pressure)) periodically until shutdown.
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
                me.relieve_pressure().await;
            }
        })
    }

    /// Shutdown begins (SIGTERM): provisioned slots start no more instances (their
    /// instances keep serving the requests in flight until [`Self::shutdown`]).
    pub fn stop_provisioning(&self) {
        self.provisioning_stopped.store(true, Ordering::SeqCst);
    }

    fn provisioning_stopped(&self) -> bool {
        self.provisioning_stopped.load(Ordering::SeqCst) || self.closed.load(Ordering::SeqCst)
    }

    /// Refuses new work (invocations and instance starts) and stops every idle instance;
    /// busy ones stop when they finish.
    pub async fn shutdown(&self) {
        self.provisioning_stopped.store(true, Ordering::SeqCst);
        self.closed.store(true, Ordering::SeqCst);
        let fps: Vec<_> = self.functions.drain().into_iter().map(|(_, f)| f).collect();
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

/// Counts an invocation holding its function's slot; uncounted on drop.
struct Running<'a>(&'a AtomicUsize);

impl<'a> Running<'a> {
    fn enter(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request past a version's instance gate, until its invocation ends (however it ends:
/// a failed start, a dropped caller): then the first request waiting at the gate may go on.
/// Counts nothing for a version without the gate (`load` is `None`).
struct Admission<'a, I> {
    vp: &'a VersionPool<I>,
    /// The gate's fewest busy instances.
    min: usize,
    /// Requests past the gate with this one (0 without the gate).
    busy: usize,
}

impl<'a, I> Admission<'a, I> {
    fn enter(vp: &'a VersionPool<I>, min: usize) -> Self {
        let busy = match vp.load {
            Some(_) => vp.admitted.fetch_add(1, Ordering::SeqCst) + 1,
            None => 0,
        };
        Self { vp, min, busy }
    }
}

impl<I> Drop for Admission<'_, I> {
    fn drop(&mut self) {
        let vp = self.vp;
        if let Some(load) = &vp.load {
            vp.admitted.fetch_sub(1, Ordering::SeqCst);
            let busy = || vp.admitted.load(Ordering::SeqCst);
            vp.line.release(|k| load.admits(busy() + k, self.min));
        }
    }
}

/// Runs `f`, timing it when it succeeds.
async fn timed<T, E>(
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<(T, Duration), E> {
    let t0 = Instant::now();
    f.await.map(|v| (v, t0.elapsed()))
}

fn start_failure(inv: &Invocation, e: RuntimeError) -> PoolInvokeResult {
    let error_type = match e {
        RuntimeError::InvalidEntrypoint(_) => "Runtime.InvalidEntrypoint",
        RuntimeError::Spawn(_) => "Runtime.Unknown",
        RuntimeError::Secret(_) => "Runtime.SecretNotFound",
        RuntimeError::Network(_) => "Runtime.NetworkUnavailable",
        RuntimeError::Isolation(_) | RuntimeError::ShuttingDown => "Runtime.Unknown",
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
            init_failed: true,
        },
        cold: true,
        stem: false,
        pid: None,
        waited: Duration::ZERO,
        spawn: Duration::ZERO,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod provisioned_tests;
