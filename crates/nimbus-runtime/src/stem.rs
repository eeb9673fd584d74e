//! Stem cells: prewarmed, sandboxed runtime processes waiting to become an instance of
//! some function (OpenWhisk's "stem cell" containers).
//!
//! A stem cell is started exactly like an instance — its own sandbox, uid, cgroup,
//! network namespace with the Runtime API at `127.0.0.1:9001`, slirp4netns (or pasta) for
//! `outbound` — but with an empty `/var/task` and no function environment. Its bootstrap
//! (Node or Python) waits on [`crate::rapi::STEM_PATH`]. A cold start takes one
//! ([`StemPool::take`]), mounts the function's code on its `/var/task`, sets its cgroup
//! to the function's memory size, and answers the wait with the function's environment:
//! the bootstrap then imports the handler and asks for its first invocation. No
//! interpreter or sandbox starts on the request path.
//!
//! Pools are kept per [`StemKey`] (runtime family, network policy, `/tmp` size: what is
//! fixed when the sandbox starts). Sizes react to the cold starts seen: every miss (a cold
//! start that found no stem cell) raises the key's target by one, up to `max`; a key
//! without misses for `ttl` shrinks by one per `ttl`, down to its floor (`min` for the
//! default keys, 0 for the others), and idle stem cells above the target are stopped.
//! Idle stem cells never use more than `memory_budget` bytes (measured from their cgroups
//! when the host has them, else estimated per runtime).

use crate::ProcessInstance;
use bytes::Bytes;
use nimbus_core::{NetworkPolicy, RuntimeFamily};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What a stem cell's sandbox fixes at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct StemKey {
    pub family: RuntimeFamily,
    pub network: NetworkPolicy,
    pub tmp_mb: u32,
}

/// `--stem-cells MIN:MAX`, `--stem-cell-ttl`, `--stem-cells-memory`.
#[derive(Debug, Clone)]
pub struct StemConfig {
    /// Idle stem cells kept for each default key (Node and Python with the default network
    /// policy and `/tmp` size) even when nothing asks for them.
    pub min: u32,
    /// The most idle stem cells of one key.
    pub max: u32,
    /// How long a key's pool keeps its size without cold starts before shrinking by one.
    pub ttl: Duration,
    /// The most memory idle stem cells may use together, in bytes.
    pub memory_budget: u64,
}

impl StemConfig {
    /// No stem cells at all (`--stem-cells off`).
    pub fn off() -> Self {
        Self {
            min: 0,
            max: 0,
            ttl: Duration::from_secs(60),
            memory_budget: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.max > 0
    }
}

impl Default for StemConfig {
    fn default() -> Self {
        Self {
            min: 1,
            max: 4,
            ttl: Duration::from_secs(120),
            memory_budget: 256 << 20,
        }
    }
}

/// An idle stem cell.
pub(crate) struct Stem {
    pub inst: ProcessInstance,
    /// Answers the bootstrap's wait with `{"env", "taskRoot"}`.
    pub specialize: oneshot::Sender<Bytes>,
}

/// What the pool needs of an idle stem cell (a trait so the policy is unit-tested
/// without processes).
pub(crate) trait Idle: Send + 'static {
    /// False once the process died or its bootstrap stopped waiting.
    fn alive(&self) -> bool;
}

impl Idle for Stem {
    fn alive(&self) -> bool {
        use crate::Instance;
        self.inst.is_healthy() && !self.specialize.is_closed()
    }
}

/// Memory a stem cell of a family is assumed to use before one has been measured.
fn estimate(family: RuntimeFamily) -> u64 {
    match family {
        RuntimeFamily::Node => 48 << 20,
        _ => 16 << 20,
    }
}

struct KeyPool<S> {
    idle: VecDeque<S>,
    /// Stem cells being started for this key.
    starting: u32,
    target: u32,
    /// The target never shrinks below this.
    floor: u32,
    hits: u64,
    misses: u64,
    /// The last miss, or the last time the target shrank.
    last_change: Option<Instant>,
    /// Measured memory of one idle stem cell (the largest seen).
    memory_each: Option<u64>,
    /// Starting failed: no new attempt before this instant.
    backoff_until: Option<Instant>,
    /// Stem cells of this key that could not be started (shutdown aside).
    refill_failures: u64,
    /// The last of those failures: when, and why.
    last_failure: Option<(Instant, String)>,
}

impl<S> Default for KeyPool<S> {
    fn default() -> Self {
        Self {
            idle: VecDeque::new(),
            starting: 0,
            target: 0,
            floor: 0,
            hits: 0,
            misses: 0,
            last_change: None,
            memory_each: None,
            backoff_until: None,
            refill_failures: 0,
            last_failure: None,
        }
    }
}

/// One key's figures, for `/v1/health`.
#[derive(Debug, Clone, Serialize)]
pub struct StemPoolStats {
    pub runtime: &'static str,
    pub network: &'static str,
    pub ephemeral_storage_mb: u32,
    pub idle: usize,
    pub starting: u32,
    pub target: u32,
    /// Cold starts that took a stem cell.
    pub hits: u64,
    /// Cold starts that found none (each raises the target).
    pub misses: u64,
    /// Stem cells that could not be started since the server started.
    pub refill_failures: u64,
    /// How long ago the last of those failed (none failed: absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure_ms_ago: Option<u64>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Every pool's figures, for `/v1/health`.
#[derive(Debug, Clone, Serialize)]
pub struct StemStats {
    pub enabled: bool,
    /// Why stem cells are off, when they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub min: u32,
    pub max: u32,
    pub ttl_s: u64,
    /// Memory used by idle stem cells now (measured where cgroups exist, else estimated).
    pub memory_bytes: u64,
    pub memory_budget_bytes: u64,
    pub pools: Vec<StemPoolStats>,
}

pub(crate) fn family_name(f: RuntimeFamily) -> &'static str {
    match f {
        RuntimeFamily::Node => "node",
        RuntimeFamily::Python => "python",
        RuntimeFamily::Java => "java",
        RuntimeFamily::Provided => "provided",
        RuntimeFamily::WasiHttp => "wasi-http",
        RuntimeFamily::WasmEvent => "wasm-event",
    }
}

pub(crate) struct StemPool<S = Stem> {
    cfg: StemConfig,
    /// Why stem cells are off although configured (host without root sandboxing, …).
    disabled: Option<String>,
    pools: Mutex<HashMap<StemKey, KeyPool<S>>>,
    pub wake: tokio::sync::Notify,
    /// Set by [`Self::close`] or [`Self::drain`] (shutdown): nothing more is started or
    /// kept.
    closed: tokio::sync::watch::Sender<bool>,
}

impl<S: Idle> StemPool<S> {
    pub fn new(cfg: StemConfig, defaults: &[StemKey], disabled: Option<String>) -> Self {
        let mut pools = HashMap::new();
        if cfg.enabled() && disabled.is_none() {
            for k in defaults {
                let floor = cfg.min.min(cfg.max);
                pools.insert(
                    *k,
                    KeyPool {
                        target: floor,
                        floor,
                        ..KeyPool::default()
                    },
                );
            }
        }
        Self {
            cfg,
            disabled,
            pools: Mutex::new(pools),
            wake: tokio::sync::Notify::new(),
            closed: tokio::sync::watch::Sender::new(false),
        }
    }

    pub fn enabled(&self) -> bool {
        self.cfg.enabled() && self.disabled.is_none()
    }

    /// An idle stem cell for `key`, if one is alive. Records a hit or a miss (a miss raises
    /// the key's target and wakes the refill loop; after a hit the caller wakes it, see
    /// `ProcessExecutor::start`). Dead stem cells met on the way are returned too, for the
    /// caller to stop outside the lock.
    pub fn take(&self, key: StemKey, now: Instant) -> (Option<S>, Vec<S>) {
        let mut dead = Vec::new();
        let mut found = None;
        {
            let mut pools = self.pools.lock().unwrap();
            let kp = pools.entry(key).or_default();
            while let Some(s) = kp.idle.pop_front() {
                if s.alive() {
                    found = Some(s);
                    break;
                }
                dead.push(s);
            }
            if found.is_some() {
                kp.hits += 1;
            } else {
                kp.misses += 1;
                kp.target = (kp.target + 1).min(self.cfg.max);
                kp.last_change = Some(now);
            }
        }
        if found.is_none() {
            self.wake.notify_one();
        }
        (found, dead)
    }

    /// The next key that wants one more stem cell, within the memory budget; counted as
    /// starting until [`Self::put`] or [`Self::failed`].
    pub fn wanted(&self, now: Instant) -> Option<StemKey> {
        let mut pools = self.pools.lock().unwrap();
        if self.is_closed() {
            return None;
        }
        let used: u64 = pools.iter().map(|(k, p)| held(k, p)).sum();
        let mut best: Option<(StemKey, u32)> = None;
        for (k, p) in pools.iter() {
            let have = p.idle.len() as u32 + p.starting;
            if have >= p.target || p.backoff_until.is_some_and(|t| now < t) {
                continue;
            }
            if used + p.memory_each.unwrap_or_else(|| estimate(k.family)) > self.cfg.memory_budget {
                continue;
            }
            // The emptiest pool first.
            let gap = p.target - have;
            if best.is_none_or(|(_, g)| gap > g) {
                best = Some((*k, gap));
            }
        }
        let (key, _) = best?;
        pools.get_mut(&key).expect("present").starting += 1;
        Some(key)
    }

    /// A stem cell started for `key` is idle now; after [`Self::drain`] it is handed back
    /// for the caller to stop.
    pub fn put(&self, key: StemKey, stem: S) -> Option<S> {
        let mut pools = self.pools.lock().unwrap();
        let kp = pools.entry(key).or_default();
        kp.starting = kp.starting.saturating_sub(1);
        if self.is_closed() {
            return Some(stem);
        }
        kp.backoff_until = None;
        kp.idle.push_back(stem);
        None
    }

    /// Starting a stem cell for `key` was given up (shutdown): retry no sooner than
    /// `retry_at`.
    pub fn failed(&self, key: StemKey, retry_at: Instant) {
        let mut pools = self.pools.lock().unwrap();
        let kp = pools.entry(key).or_default();
        kp.starting = kp.starting.saturating_sub(1);
        kp.backoff_until = Some(retry_at);
    }

    /// Starting a stem cell for `key` failed with `error` at `now`: counted, and retried
    /// no sooner than `retry_at`.
    pub fn refill_failed(&self, key: StemKey, now: Instant, retry_at: Instant, error: String) {
        self.failed(key, retry_at);
        let mut pools = self.pools.lock().unwrap();
        let kp = pools.entry(key).or_default();
        kp.refill_failures += 1;
        kp.last_failure = Some((now, error));
    }

    /// Shrinks targets of keys without misses for a TTL, measures idle stem cells, and
    /// takes out those that died or are above their target (the caller stops them).
    pub fn trim(&self, now: Instant, measure: impl Fn(&S) -> Option<u64>) -> Vec<S> {
        let mut out = Vec::new();
        let mut pools = self.pools.lock().unwrap();
        for (_, kp) in pools.iter_mut() {
            let mut i = 0;
            while i < kp.idle.len() {
                if kp.idle[i].alive() {
                    i += 1;
                } else {
                    out.extend(kp.idle.remove(i));
                }
            }
            if kp.target > kp.floor
                && kp
                    .last_change
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.ttl)
            {
                kp.target -= 1;
                kp.last_change = Some(now);
            }
            while kp.idle.len() as u32 > kp.target {
                // The oldest goes first.
                out.extend(kp.idle.pop_front());
            }
            for s in &kp.idle {
                if let Some(m) = measure(s) {
                    kp.memory_each = Some(kp.memory_each.map_or(m, |e| e.max(m)));
                }
            }
        }
        out
    }

    /// Shutdown begins: no stem cell is started or kept any more (the refill loop ends);
    /// the idle ones can still be taken until [`Self::drain`].
    pub fn close(&self) {
        let _pools = self.pools.lock().unwrap();
        self.closed.send_replace(true);
        self.wake.notify_one();
    }

    /// Every idle stem cell, for shutdown; none is started or kept afterwards.
    pub fn drain(&self) -> Vec<S> {
        let mut pools = self.pools.lock().unwrap();
        self.closed.send_replace(true);
        self.wake.notify_one();
        pools
            .values_mut()
            .flat_map(|kp| kp.idle.drain(..))
            .collect()
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves once the pool is closed.
    pub async fn closing(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    pub fn stats(&self) -> StemStats {
        let now = Instant::now();
        let pools = self.pools.lock().unwrap();
        let mut list: Vec<StemPoolStats> = pools
            .iter()
            .map(|(k, p)| StemPoolStats {
                runtime: family_name(k.family),
                network: k.network.as_str(),
                ephemeral_storage_mb: k.tmp_mb,
                idle: p.idle.len(),
                starting: p.starting,
                target: p.target,
                hits: p.hits,
                misses: p.misses,
                refill_failures: p.refill_failures,
                last_failure_ms_ago: p.last_failure.as_ref().map(|(t, _)| {
                    u64::try_from(now.saturating_duration_since(*t).as_millis()).unwrap_or(u64::MAX)
                }),
                last_error: p.last_failure.as_ref().map(|(_, e)| e.clone()),
            })
            .collect();
        list.sort_by(|a, b| {
            (a.runtime, a.network, a.ephemeral_storage_mb).cmp(&(
                b.runtime,
                b.network,
                b.ephemeral_storage_mb,
            ))
        });
        StemStats {
            enabled: self.enabled(),
            reason: if self.cfg.enabled() {
                self.disabled.clone()
            } else {
                Some("--stem-cells off".into())
            },
            min: self.cfg.min,
            max: self.cfg.max,
            ttl_s: self.cfg.ttl.as_secs(),
            memory_bytes: pools
                .iter()
                .map(|(k, p)| {
                    p.idle.len() as u64 * p.memory_each.unwrap_or_else(|| estimate(k.family))
                })
                .sum(),
            memory_budget_bytes: self.cfg.memory_budget,
            pools: list,
        }
    }
}

/// Memory held by a key's idle and starting stem cells.
fn held<S>(k: &StemKey, p: &KeyPool<S>) -> u64 {
    (p.idle.len() as u64 + u64::from(p.starting))
        * p.memory_each.unwrap_or_else(|| estimate(k.family))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    struct Fake(Arc<AtomicBool>);
    impl Idle for Fake {
        fn alive(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }
    fn fake() -> (Fake, Arc<AtomicBool>) {
        let a = Arc::new(AtomicBool::new(true));
        (Fake(a.clone()), a)
    }

    const NODE: StemKey = StemKey {
        family: RuntimeFamily::Node,
        network: NetworkPolicy::Outbound,
        tmp_mb: 512,
    };
    const PY_NONE: StemKey = StemKey {
        family: RuntimeFamily::Python,
        network: NetworkPolicy::None,
        tmp_mb: 512,
    };

    fn cfg(min: u32, max: u32) -> StemConfig {
        StemConfig {
            min,
            max,
            ttl: Duration::from_secs(10),
            memory_budget: 1 << 30,
        }
    }

    /// Starts every stem cell the pool wants, as the refill loop does.
    fn fill(p: &StemPool<Fake>, now: Instant) -> usize {
        let mut n = 0;
        while let Some(k) = p.wanted(now) {
            assert!(p.put(k, fake().0).is_none());
            n += 1;
        }
        n
    }

    #[test]
    fn refill_failures_are_counted_with_the_last_error_and_back_off() {
        let t0 = Instant::now();
        let p = StemPool::<Fake>::new(cfg(1, 3), &[NODE], None);
        let k = p.wanted(t0).unwrap();
        p.refill_failed(k, t0, t0 + Duration::from_secs(5), "no node".into());
        // Backing off: nothing wanted until then.
        assert!(p.wanted(t0 + Duration::from_secs(1)).is_none());
        let k = p.wanted(t0 + Duration::from_secs(5)).unwrap();
        let t1 = Instant::now();
        p.refill_failed(k, t1, t1, "still no node".into());
        let node = &p.stats().pools[0];
        assert_eq!(node.refill_failures, 2);
        assert_eq!(node.last_error.as_deref(), Some("still no node"));
        assert!(node.last_failure_ms_ago.is_some_and(|ms| ms < 60_000));
        // A stem cell started later clears the backoff; the count stays.
        let k = p.wanted(t1).unwrap();
        assert!(p.put(k, fake().0).is_none());
        assert_eq!(p.stats().pools[0].refill_failures, 2);
    }

    #[test]
    fn default_keys_are_filled_to_min_and_misses_grow_the_target_up_to_max() {
        let t0 = Instant::now();
        let p = StemPool::<Fake>::new(cfg(1, 3), &[NODE], None);
        assert_eq!(fill(&p, t0), 1);
        // A hit: the pool refills to its target.
        assert!(p.take(NODE, t0).0.is_some());
        assert_eq!(fill(&p, t0), 1);
        // An unknown key starts empty; each miss raises its target by one, up to max.
        for want in [1, 2, 3, 3] {
            assert!(p.take(PY_NONE, t0).0.is_none());
            fill(&p, t0);
            let s = p.stats();
            let py = s.pools.iter().find(|x| x.network == "none").unwrap();
            assert_eq!((py.target, py.idle), (want, want as usize));
            // Use them all (hits) so the next take misses.
            for _ in 0..want {
                assert!(p.take(PY_NONE, t0).0.is_some());
            }
        }
        let s = p.stats();
        let py = s.pools.iter().find(|x| x.network == "none").unwrap();
        assert_eq!((py.misses, py.hits), (4, 9));
    }

    #[test]
    fn targets_shrink_after_ttl_without_misses_down_to_the_floor() {
        let t0 = Instant::now();
        let p = StemPool::<Fake>::new(cfg(1, 4), &[NODE], None);
        for _ in 0..3 {
            let _ = p.take(NODE, t0);
        }
        fill(&p, t0);
        assert_eq!(p.stats().pools[0].target, 4);
        assert_eq!(p.trim(t0 + Duration::from_secs(5), |_| None).len(), 0);
        let mut stopped = 0;
        for i in 1..=5 {
            stopped += p.trim(t0 + Duration::from_secs(10 * i), |_| None).len();
        }
        assert_eq!(p.stats().pools[0].target, 1, "never below min");
        assert_eq!(stopped, 3);
        assert_eq!(p.stats().pools[0].idle, 1);
    }

    #[test]
    fn dead_stem_cells_are_skipped_and_returned() {
        let t0 = Instant::now();
        let p = StemPool::<Fake>::new(cfg(2, 2), &[NODE], None);
        let (a, a_alive) = fake();
        let (b, _) = fake();
        assert_eq!(p.wanted(t0), Some(NODE));
        assert!(p.put(NODE, a).is_none());
        assert_eq!(p.wanted(t0), Some(NODE));
        assert!(p.put(NODE, b).is_none());
        a_alive.store(false, Ordering::SeqCst);
        let (got, dead) = p.take(NODE, t0);
        assert!(got.is_some_and(|g| g.alive()));
        assert_eq!(dead.len(), 1);
    }

    #[test]
    fn memory_budget_bounds_idle_stem_cells() {
        let t0 = Instant::now();
        let mut c = cfg(4, 4);
        c.memory_budget = 100 << 20;
        let p = StemPool::<Fake>::new(c, &[NODE], None);
        // Estimated 48 MB each: two fit in 100 MB.
        assert_eq!(fill(&p, t0), 2);
        // Measured at 10 MB each: the budget now admits more.
        p.trim(t0, |_| Some(10 << 20));
        assert_eq!(fill(&p, t0), 2);
        assert_eq!(p.stats().memory_bytes, 40 << 20);
    }

    #[test]
    fn failures_back_off_and_off_means_nothing_is_started() {
        let t0 = Instant::now();
        let p = StemPool::<Fake>::new(cfg(1, 2), &[NODE], None);
        let k = p.wanted(t0).unwrap();
        p.failed(k, t0 + Duration::from_secs(30));
        assert_eq!(p.wanted(t0 + Duration::from_secs(1)), None);
        let k = p.wanted(t0 + Duration::from_secs(31)).unwrap();
        assert_eq!(k, NODE);

        // After close (shutdown begins) nothing is wanted and late arrivals are handed
        // back; idle ones can still be taken until drain.
        let (idle, _) = fake();
        p.put(k, idle);
        p.close();
        assert!(p.is_closed());
        assert_eq!(p.wanted(t0 + Duration::from_secs(60)), None);
        assert!(p.take(k, t0).0.is_some());
        assert_eq!(p.drain().len(), 0);
        assert_eq!(p.wanted(t0 + Duration::from_secs(60)), None);
        assert!(p.put(k, fake().0).is_some());

        let off = StemPool::<Fake>::new(StemConfig::off(), &[NODE], None);
        assert!(!off.enabled());
        assert_eq!(off.wanted(t0), None);
        let disabled = StemPool::<Fake>::new(cfg(1, 2), &[NODE], Some("no root".into()));
        assert!(!disabled.enabled());
        assert_eq!(disabled.wanted(t0), None);
        assert_eq!(disabled.stats().reason.as_deref(), Some("no root"));
    }
}
