//! Provisioned concurrency: for each provisioned (function, version), a *slot* keeps a
//! target number of instances started and initialised ([`Instance::ready`]) ahead of any
//! call. Its instances are never reaped for idleness; one that dies is replaced. Invokes
//! of the version take a provisioned instance first (see [`PoolManager::invoke`]) and give
//! it back afterwards; beyond them the pool scales out on demand as usual.
//!
//! Each slot has one maintainer task that starts what is missing, stops what is beyond the
//! target and checks idle instances' health (every [`HEALTH_TICK`] and on every change).
//! A start that fails (the function cannot initialise) marks the slot `FAILED` with the
//! reason and stops retrying until the target is set again.

use crate::PoolManager;
use nimbus_core::SnapshotMap;
use nimbus_runtime::{Executor, Instance, InstanceSpec};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

/// How often idle provisioned instances are checked for having died.
pub const HEALTH_TICK: Duration = Duration::from_millis(500);

/// State of a provisioned (function, version), as Lambda reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisionedState {
    InProgress,
    Ready,
    Failed,
}

impl ProvisionedState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProvisionedState::InProgress => "IN_PROGRESS",
            ProvisionedState::Ready => "READY",
            ProvisionedState::Failed => "FAILED",
        }
    }
}

/// Counts and state of one provisioned version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedStatus {
    pub requested: u32,
    /// Initialised instances (idle or busy).
    pub allocated: u32,
    /// Initialised instances not running an invocation right now.
    pub available: u32,
    pub state: ProvisionedState,
    pub reason: Option<String>,
}

pub(crate) struct Slot<I> {
    spec: Mutex<Arc<InstanceSpec>>,
    revision: Mutex<String>,
    target: AtomicU32,
    idle: Mutex<Vec<I>>,
    busy: AtomicU32,
    starting: AtomicU32,
    failed: Mutex<Option<String>>,
    wake: Notify,
    removed: AtomicBool,
}

impl<I: Instance> Slot<I> {
    fn allocated(&self) -> u32 {
        self.idle.lock().unwrap().len() as u32 + self.busy.load(Ordering::SeqCst)
    }

    fn status(&self) -> ProvisionedStatus {
        let requested = self.target.load(Ordering::SeqCst);
        let available = self.idle.lock().unwrap().len() as u32;
        let allocated = available + self.busy.load(Ordering::SeqCst);
        let reason = self.failed.lock().unwrap().clone();
        let state = if allocated >= requested {
            ProvisionedState::Ready
        } else if reason.is_some() {
            ProvisionedState::Failed
        } else {
            ProvisionedState::InProgress
        };
        ProvisionedStatus {
            requested,
            allocated: allocated.min(requested),
            available: available.min(requested),
            state,
            reason: if state == ProvisionedState::Ready {
                None
            } else {
                reason
            },
        }
    }

    /// Gives back an instance taken with [`Provisioner::take`].
    pub(crate) fn give_back(&self, instance: I, keep: bool) {
        self.busy.fetch_sub(1, Ordering::SeqCst);
        let wanted = !self.removed.load(Ordering::SeqCst)
            && self.allocated() < self.target.load(Ordering::SeqCst);
        if keep && wanted && instance.is_healthy() {
            self.idle.lock().unwrap().push(instance);
        } else {
            tokio::spawn(instance.stop());
        }
        self.wake.notify_one();
    }
}

type Key = (String, String);

/// Every provisioned slot of a [`PoolManager`].
pub(crate) struct Provisioner<I> {
    slots: SnapshotMap<Key, Arc<Slot<I>>>,
}

impl<I: Instance> Default for Provisioner<I> {
    fn default() -> Self {
        Self {
            slots: SnapshotMap::new(),
        }
    }
}

impl<I: Instance> Provisioner<I> {
    /// A healthy idle provisioned instance of `function`/`version` running `revision`.
    pub(crate) fn take(
        &self,
        function: &str,
        version: &str,
        revision: &str,
    ) -> Option<(I, Arc<Slot<I>>)> {
        // Most functions have no provisioned concurrency: no key to build then.
        if self.slots.is_empty() {
            return None;
        }
        let slot = self
            .slots
            .get(&(function.to_string(), version.to_string()))?;
        if *slot.revision.lock().unwrap() != revision {
            return None;
        }
        loop {
            let inst = slot.idle.lock().unwrap().pop()?;
            if inst.is_healthy() {
                slot.busy.fetch_add(1, Ordering::SeqCst);
                return Some((inst, slot));
            }
            tokio::spawn(inst.stop());
            slot.wake.notify_one();
        }
    }

    fn remove(&self, pred: impl Fn(&Key) -> bool) {
        for (_, s) in self.slots.retain(|k, _| !pred(k)) {
            s.removed.store(true, Ordering::SeqCst);
            s.wake.notify_one();
        }
    }

    pub(crate) fn remove_function(&self, function: &str) {
        self.remove(|(f, _)| f == function);
    }

    pub(crate) fn remove_all(&self) -> Vec<I> {
        let mut out = Vec::new();
        for (_, s) in self.slots.drain() {
            s.removed.store(true, Ordering::SeqCst);
            out.extend(s.idle.lock().unwrap().drain(..));
            s.wake.notify_one();
        }
        out
    }
}

impl<E: Executor> PoolManager<E> {
    /// Keeps `count` initialised instances of `spec` (its function and version; code and
    /// configuration identified by `revision`) ahead of calls. `count` 0 removes the slot
    /// and stops its instances. Setting a slot again clears a `FAILED` state (retries).
    pub fn set_provisioned(self: &Arc<Self>, spec: Arc<InstanceSpec>, revision: &str, count: u32) {
        let key = (spec.function.to_string(), spec.version.clone());
        if count == 0 {
            self.prov.remove(|k| *k == key);
            return;
        }
        // Shutting down: nothing new is provisioned (the slots keep what they have).
        if self.provisioning_stopped() {
            return;
        }
        // Under the map's writer lock: a concurrent set of the same key must not create a
        // second slot.
        let created = self.prov.slots.update(|slots| {
            if let Some(slot) = slots.get(&key) {
                let old_rev =
                    std::mem::replace(&mut *slot.revision.lock().unwrap(), revision.into());
                *slot.spec.lock().unwrap() = spec;
                slot.target.store(count, Ordering::SeqCst);
                *slot.failed.lock().unwrap() = None;
                if old_rev != revision {
                    for i in slot.idle.lock().unwrap().drain(..) {
                        tokio::spawn(i.stop());
                    }
                }
                slot.wake.notify_one();
                return None;
            }
            let slot = Arc::new(Slot {
                spec: Mutex::new(spec),
                revision: Mutex::new(revision.to_string()),
                target: AtomicU32::new(count),
                idle: Mutex::new(Vec::new()),
                busy: AtomicU32::new(0),
                starting: AtomicU32::new(0),
                failed: Mutex::new(None),
                wake: Notify::new(),
                removed: AtomicBool::new(false),
            });
            slots.insert(key.clone(), slot.clone());
            Some(slot)
        });
        let Some(slot) = created else { return };
        info!(function = %key.0, version = %key.1, count, "provisioning instances");
        tokio::spawn(maintain(self.clone(), slot));
    }

    /// The provisioned slots' `(function, version)` keys.
    pub fn provisioned_versions(&self) -> Vec<(String, String)> {
        self.prov.slots.snapshot().keys().cloned().collect()
    }

    /// The state of a provisioned version, `None` when it has no slot.
    pub fn provisioned_status(&self, function: &str, version: &str) -> Option<ProvisionedStatus> {
        self.prov
            .slots
            .get(&(function.to_string(), version.to_string()))
            .map(|s| s.status())
    }
}

async fn maintain<E: Executor>(pm: Arc<PoolManager<E>>, slot: Arc<Slot<crate::Inst<E>>>) {
    loop {
        if slot.removed.load(Ordering::SeqCst) {
            let idle: Vec<_> = slot.idle.lock().unwrap().drain(..).collect();
            for i in idle {
                i.stop().await;
            }
            return;
        }
        // Idle instances that died are dropped (and replaced below).
        let dead: Vec<_> = {
            let mut idle = slot.idle.lock().unwrap();
            let (ok, dead): (Vec<_>, Vec<_>) = idle.drain(..).partition(|i| i.is_healthy());
            *idle = ok;
            dead
        };
        for i in dead {
            warn!(
                instance = i.id(),
                "a provisioned instance died: replacing it"
            );
            tokio::spawn(i.stop());
        }
        let target = slot.target.load(Ordering::SeqCst);
        let have = slot.allocated() + slot.starting.load(Ordering::SeqCst);
        // Nothing starts once shutdown has begun.
        if have < target && slot.failed.lock().unwrap().is_none() && !pm.provisioning_stopped() {
            for _ in have..target {
                slot.starting.fetch_add(1, Ordering::SeqCst);
                let (pm, slot) = (pm.clone(), slot.clone());
                tokio::spawn(async move {
                    let spec = slot.spec.lock().unwrap().clone();
                    let revision = slot.revision.lock().unwrap().clone();
                    let started = match pm.start_instance(spec, true).await {
                        Ok(mut i) => match i.ready().await {
                            Ok(()) => Ok(i),
                            Err(e) => {
                                i.stop().await;
                                Err(e)
                            }
                        },
                        Err(crate::StartError::Runtime(e)) => Err(e.to_string()),
                        Err(crate::StartError::Memory(e)) => Err(e),
                    };
                    match started {
                        Ok(i) => {
                            let current = *slot.revision.lock().unwrap() == revision;
                            if current
                                && !slot.removed.load(Ordering::SeqCst)
                                && slot.allocated() < slot.target.load(Ordering::SeqCst)
                            {
                                slot.idle.lock().unwrap().push(i);
                            } else {
                                i.stop().await;
                            }
                        }
                        // Refused because shutdown began: not the function's failure.
                        Err(_) if pm.provisioning_stopped() => {}
                        Err(e) => {
                            warn!(error = %e, "a provisioned instance failed to start");
                            *slot.failed.lock().unwrap() = Some(e);
                        }
                    }
                    slot.starting.fetch_sub(1, Ordering::SeqCst);
                    slot.wake.notify_one();
                });
            }
        } else if slot.allocated() > target {
            let extra: Vec<_> = {
                let mut idle = slot.idle.lock().unwrap();
                let excess = (slot.busy.load(Ordering::SeqCst) as usize + idle.len())
                    .saturating_sub(target as usize)
                    .min(idle.len());
                let n = idle.len();
                idle.drain(n - excess..).collect()
            };
            for i in extra {
                tokio::spawn(i.stop());
            }
        }
        tokio::select! {
            _ = slot.wake.notified() => {}
            _ = tokio::time::sleep(HEALTH_TICK) => {}
        }
    }
}

impl<E: Executor> PoolManager<E> {
    /// Stops provisioning `function`/`version` (its instances are stopped).
    pub fn remove_provisioned(&self, function: &str, version: &str) {
        self.prov.remove(|(f, v)| f == function && v == version);
    }
}
