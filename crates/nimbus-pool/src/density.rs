//! Memory and density: every instance the pool starts is counted against a memory budget
//! at its configured memory size and registered (for per-instance statistics) until it
//! stops. When a start would exceed the budget, or the host's `MemAvailable` is below the
//! floor, the pool stops idle instances of any function least recently used first (see
//! [`PoolManager::make_room`](crate::PoolManager)); provisioned instances are never taken.
//!
//! Nothing here is touched on the warm path except relaxed stores to two atomics of the
//! instance's own [`Member`] (busy flag, last use); the registry's lock is taken on start
//! and stop only.

use nimbus_runtime::{Instance, Invocation, InvokeResult, MemoryProbe};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// Memory settings of the pool.
#[derive(Debug, Clone, Copy)]
pub struct MemoryPolicy {
    /// Bytes of instance memory (counted at each instance's configured memory size) the
    /// pool may hold at once; `None`: unlimited.
    pub budget: Option<u64>,
    /// When the host's `MemAvailable` is below this many bytes, idle instances are reaped
    /// before a start (and by the periodic reaper); 0: off.
    pub floor: u64,
    /// Reads the host's `MemAvailable` (replaceable in tests).
    pub available: fn() -> Option<u64>,
}

impl Default for MemoryPolicy {
    fn default() -> Self {
        Self {
            budget: None,
            floor: 0,
            available: nimbus_runtime::host_available_memory,
        }
    }
}

/// One running instance, as the statistics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStats {
    pub id: String,
    pub function: String,
    pub version: String,
    /// `busy`, `idle` or (idle and kept by provisioned concurrency) `provisioned`.
    pub state: &'static str,
    /// Memory in use now (cgroup accounting where available), `None` if unmeasurable.
    pub memory_bytes: Option<u64>,
    /// Peak memory of the instance so far.
    pub peak_memory_bytes: Option<u64>,
    /// Where the figures come from (`cgroup`, `process`, `fixed`).
    pub memory_source: Option<&'static str>,
    /// The configured memory size (what the budget counts).
    pub configured_bytes: u64,
    /// Idle for this long (None while busy).
    pub idle_ms: Option<u64>,
}

/// Totals over every instance (for `/v1/health`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub instances: usize,
    pub busy: usize,
    /// Sum of the instances' measured memory.
    pub memory_bytes: u64,
    /// Sum of their configured memory sizes (what the budget counts).
    pub committed_bytes: u64,
    pub budget_bytes: Option<u64>,
    pub floor_bytes: u64,
    pub host_available_bytes: Option<u64>,
    /// Idle instances stopped to make room since the start.
    pub reaped_for_memory: u64,
}

/// The registry and the budget's counter.
pub(crate) struct Density {
    pub(crate) policy: MemoryPolicy,
    committed: AtomicU64,
    members: Mutex<HashMap<u64, Arc<Member>>>,
    next: AtomicU64,
    epoch: Instant,
    pub(crate) reaped: AtomicU64,
    /// Code directories of instances starting or running, with how many use each.
    code_dirs: Mutex<HashMap<PathBuf, usize>>,
}

pub(crate) struct Member {
    id: String,
    function: String,
    version: String,
    configured: u64,
    probe: Option<MemoryProbe>,
    provisioned: bool,
    busy: AtomicBool,
    /// Milliseconds since the registry's epoch when the instance last finished a call
    /// (or started).
    last_used: AtomicU64,
}

impl Density {
    pub(crate) fn new(policy: MemoryPolicy) -> Arc<Self> {
        Arc::new(Self {
            policy,
            committed: AtomicU64::new(0),
            members: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            epoch: Instant::now(),
            reaped: AtomicU64::new(0),
            code_dirs: Mutex::new(HashMap::new()),
        })
    }

    /// Counts `dirs` (the code and, with layers, the merged `/opt`) as used by an
    /// instance until the returned guard is dropped (after the instance has stopped).
    pub(crate) fn use_code<'a>(
        self: &Arc<Self>,
        dirs: impl IntoIterator<Item = &'a Path>,
    ) -> CodeUse {
        let dirs: Vec<PathBuf> = dirs.into_iter().map(Path::to_path_buf).collect();
        let mut used = self.code_dirs.lock().unwrap();
        for dir in &dirs {
            *used.entry(dir.clone()).or_insert(0) += 1;
        }
        CodeUse {
            density: self.clone(),
            dirs,
        }
    }

    /// The code directories instances are starting or running from.
    pub(crate) fn code_dirs(&self) -> HashSet<PathBuf> {
        self.code_dirs.lock().unwrap().keys().cloned().collect()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Reserves `bytes` of the budget; `None` if that would exceed it.
    pub(crate) fn try_charge(self: &Arc<Self>, bytes: u64) -> Option<Charge> {
        let budget = self.policy.budget.unwrap_or(u64::MAX);
        self.committed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                c.checked_add(bytes).filter(|&n| n <= budget)
            })
            .ok()?;
        Some(Charge {
            density: self.clone(),
            serial: self.next.fetch_add(1, Ordering::Relaxed),
            bytes,
        })
    }

    /// Whether the host is below the `MemAvailable` floor.
    pub(crate) fn under_pressure(&self) -> bool {
        self.policy.floor > 0 && (self.policy.available)().is_some_and(|a| a < self.policy.floor)
    }

    pub(crate) fn committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    /// Registers a started instance under its charge.
    pub(crate) fn track<I: Instance>(
        &self,
        inst: I,
        charge: Charge,
        code: CodeUse,
        function: &str,
        version: &str,
        provisioned: bool,
    ) -> Tracked<I> {
        let member = Arc::new(Member {
            id: inst.id().to_string(),
            function: function.to_string(),
            version: version.to_string(),
            configured: charge.bytes,
            probe: inst.memory_probe(),
            provisioned,
            busy: AtomicBool::new(false),
            last_used: AtomicU64::new(self.now_ms()),
        });
        self.members
            .lock()
            .unwrap()
            .insert(charge.serial, member.clone());
        Tracked {
            inst,
            member,
            charge,
            code,
        }
    }

    /// Every live instance (of `function` when given), busy ones first.
    pub(crate) fn instances(&self, function: Option<&str>) -> Vec<InstanceStats> {
        let members: Vec<_> = self
            .members
            .lock()
            .unwrap()
            .values()
            .filter(|m| function.is_none_or(|f| m.function == f))
            .cloned()
            .collect();
        let now = self.now_ms();
        let mut out: Vec<_> = members
            .iter()
            .map(|m| {
                let busy = m.busy.load(Ordering::Relaxed);
                InstanceStats {
                    id: m.id.clone(),
                    function: m.function.clone(),
                    version: m.version.clone(),
                    state: match (busy, m.provisioned) {
                        (true, _) => "busy",
                        (false, true) => "provisioned",
                        (false, false) => "idle",
                    },
                    memory_bytes: m.probe.as_ref().and_then(|p| p.current_bytes()),
                    peak_memory_bytes: m.probe.as_ref().and_then(|p| p.peak_bytes()),
                    memory_source: m.probe.as_ref().map(|p| p.source()),
                    configured_bytes: m.configured,
                    idle_ms: (!busy)
                        .then(|| now.saturating_sub(m.last_used.load(Ordering::Relaxed))),
                }
            })
            .collect();
        out.sort_by(|a, b| (a.state != "busy", &a.id).cmp(&(b.state != "busy", &b.id)));
        out
    }

    /// Totals: one counter read per instance (no peaks).
    /// Instances now and how many of them run an invocation (no memory probes: cheap
    /// enough for every metrics scrape).
    pub(crate) fn counts(&self) -> (usize, usize) {
        let members = self.members.lock().unwrap();
        let busy = members
            .values()
            .filter(|m| m.busy.load(Ordering::Relaxed))
            .count();
        (members.len(), busy)
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        let all: Vec<_> = self.members.lock().unwrap().values().cloned().collect();
        MemoryStats {
            instances: all.len(),
            busy: all
                .iter()
                .filter(|m| m.busy.load(Ordering::Relaxed))
                .count(),
            memory_bytes: all
                .iter()
                .filter_map(|m| m.probe.as_ref()?.current_bytes())
                .sum(),
            committed_bytes: self.committed(),
            budget_bytes: self.policy.budget,
            floor_bytes: self.policy.floor,
            host_available_bytes: (self.policy.available)(),
            reaped_for_memory: self.reaped.load(Ordering::SeqCst),
        }
    }
}

/// A share of the memory budget; given back (and the instance unregistered) on drop.
pub(crate) struct Charge {
    density: Arc<Density>,
    serial: u64,
    bytes: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.density
            .committed
            .fetch_sub(self.bytes, Ordering::SeqCst);
        self.density.members.lock().unwrap().remove(&self.serial);
    }
}

/// An instance's use of its code directories; released on drop.
pub(crate) struct CodeUse {
    density: Arc<Density>,
    dirs: Vec<PathBuf>,
}

impl Drop for CodeUse {
    fn drop(&mut self) {
        let mut used = self.density.code_dirs.lock().unwrap();
        for dir in &self.dirs {
            if let Some(n) = used.get_mut(dir) {
                *n -= 1;
                if *n == 0 {
                    used.remove(dir);
                }
            }
        }
    }
}

/// An executor's instance with its budget charge, registry entry and use of its code
/// directory: the charge and the code are given back once the instance has stopped.
pub(crate) struct Tracked<I> {
    inst: I,
    member: Arc<Member>,
    charge: Charge,
    code: CodeUse,
}

impl<I> Tracked<I> {
    /// For the statistics: the instance runs a call now (two relaxed stores per call, and
    /// the release time the pool reads anyway: no clock read of its own).
    pub(crate) fn set_busy(&self) {
        self.member.busy.store(true, Ordering::Relaxed);
    }

    /// For the statistics: the call ended at `at`.
    pub(crate) fn set_idle(&self, at: Instant) {
        let ms = at
            .saturating_duration_since(self.charge.density.epoch)
            .as_millis() as u64;
        self.member.last_used.store(ms, Ordering::Relaxed);
        self.member.busy.store(false, Ordering::Relaxed);
    }
}

impl<I: Instance> Instance for Tracked<I> {
    fn id(&self) -> &str {
        self.inst.id()
    }

    fn pid(&self) -> Option<u32> {
        self.inst.pid()
    }

    fn invoke(&mut self, inv: Invocation) -> impl Future<Output = InvokeResult> + Send {
        self.inst.invoke(inv)
    }

    async fn ready(&mut self) -> Result<(), String> {
        self.inst.ready().await
    }

    fn initialised(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.inst.initialised()
    }
    fn is_healthy(&self) -> bool {
        self.inst.is_healthy()
    }
    fn was_stem_cell(&self) -> bool {
        self.inst.was_stem_cell()
    }

    fn started_anew(&self) -> bool {
        self.inst.started_anew()
    }

    fn memory_probe(&self) -> Option<MemoryProbe> {
        self.member.probe.clone()
    }

    async fn stop(self) {
        let Tracked {
            inst, charge, code, ..
        } = self;
        inst.stop().await;
        drop(charge);
        drop(code);
    }
}
