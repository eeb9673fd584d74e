use super::*;
use bytes::Bytes;
use nimbus_core::{FunctionConfig, FunctionName, Runtime};
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;

/// A fake executor: instances sleep `delay` per invocation; payload `crash` makes one unhealthy.
struct Fake {
    exited: Arc<AtomicBool>,
    started: AtomicU32,
    stopped: Arc<AtomicU32>,
    delay: Duration,
    /// Invocations running now and the most ever at once, per function and in total ("").
    active: Arc<Mutex<HashMap<String, (u32, u32)>>>,
    /// How long a start takes.
    start_delay: Duration,
    /// Simulated cores: an invocation takes `delay × running / cores` when more of the
    /// function's invocations run than there are cores (CPU-bound work), and 1/32 more
    /// per invocation beyond the cores (what crowding costs: switches, cold caches);
    /// `None`: always `delay` (waiting on I/O).
    cores: Option<u32>,
}

struct FakeInstance {
    id: String,
    pid: u32,
    delay: Duration,
    healthy: bool,
    stopped: Arc<AtomicU32>,
    /// Set by a test: the process "exited" while idle.
    exited: Arc<AtomicBool>,
    function: String,
    active: Arc<Mutex<HashMap<String, (u32, u32)>>>,
    cores: Option<u32>,
}

impl FakeInstance {
    /// Counts one more (or fewer) running; returns how many of the function's run now.
    fn count(&self, delta: i32) -> u32 {
        let mut a = self.active.lock().unwrap();
        for k in ["", self.function.as_str()] {
            let e = a.entry(k.to_string()).or_default();
            e.0 = (e.0 as i32 + delta) as u32;
            e.1 = e.1.max(e.0);
        }
        a[self.function.as_str()].0
    }
}

impl Executor for Fake {
    type Instance = FakeInstance;
    async fn start(&self, spec: Arc<InstanceSpec>) -> Result<FakeInstance, RuntimeError> {
        tokio::time::sleep(self.start_delay).await;
        let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(FakeInstance {
            id: n.to_string(),
            pid: n,
            delay: self.delay,
            healthy: true,
            stopped: self.stopped.clone(),
            exited: self.exited.clone(),
            function: spec.function.to_string(),
            active: self.active.clone(),
            cores: self.cores,
        })
    }
}

impl Instance for FakeInstance {
    fn id(&self) -> &str {
        &self.id
    }
    fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }
    async fn invoke(&mut self, inv: Invocation) -> InvokeResult {
        let running = self.count(1);
        let delay = match self.cores {
            Some(c) if running > c => self.delay * running / c * (32 + running - c) / 32,
            _ => self.delay,
        };
        tokio::time::sleep(delay).await;
        self.count(-1);
        if inv.payload == "crash" {
            self.healthy = false;
        }
        InvokeResult {
            outcome: Outcome::Success(inv.payload),
            duration: self.delay,
            init_duration: None,
            log_tail: String::new(),
            started: true,
            init_failed: false,
        }
    }
    fn is_healthy(&self) -> bool {
        self.healthy && !self.exited.load(Ordering::SeqCst)
    }
    fn memory_probe(&self) -> Option<nimbus_runtime::MemoryProbe> {
        Some(nimbus_runtime::MemoryProbe::fixed(10 << 20))
    }
    async fn stop(self) {
        self.stopped.fetch_add(1, Ordering::SeqCst);
    }
}

fn setup(delay_ms: u64, cfg: PoolConfig) -> (Arc<PoolManager<Fake>>, Arc<Fake>) {
    let fake = fake(Duration::from_millis(delay_ms), Duration::ZERO, None);
    (PoolManager::new(fake.clone(), cfg), fake)
}

/// A fake executor whose calls take `delay` (on `cores` simulated cores, if any) and
/// whose starts take `start_delay`.
fn fake(delay: Duration, start_delay: Duration, cores: Option<u32>) -> Arc<Fake> {
    Arc::new(Fake {
        exited: Arc::new(AtomicBool::new(false)),
        started: AtomicU32::new(0),
        stopped: Arc::new(AtomicU32::new(0)),
        delay,
        active: Arc::default(),
        start_delay,
        cores,
    })
}

fn spec(concurrency: u32) -> Arc<InstanceSpec> {
    named_spec("f", concurrency)
}

fn named_spec(name: &str, concurrency: u32) -> Arc<InstanceSpec> {
    let mut config = FunctionConfig::new(Runtime::parse("provided").unwrap(), "x");
    config.concurrency = concurrency;
    Arc::new(InstanceSpec {
        function: FunctionName::parse(name).unwrap(),
        version: "$LATEST".into(),
        config,
        code_dir: "/nonexistent".into(),
        opt_dir: None,
    })
}

fn inv(payload: &'static str) -> Invocation {
    Invocation {
        request_id: "r".into(),
        payload: Bytes::from_static(payload.as_bytes()),
        invoked_arn: "arn".into(),
        trace_id: None,
        traceparent: None,
        tracestate: None,
        client_context: None,
        stream: None,
        http: None,
    }
}

#[tokio::test(start_paused = true)]
async fn warm_reuse_uses_the_same_instance() {
    let (pm, fake) = setup(10, PoolConfig::default());
    let a = pm.invoke(spec(10), "r1", inv("1")).await.unwrap();
    let b = pm.invoke(spec(10), "r1", inv("2")).await.unwrap();
    assert!(a.cold && !b.cold);
    assert_eq!(a.pid, b.pid);
    assert_eq!(fake.started.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_scale_out() {
    let (pm, fake) = setup(1000, PoolConfig::default());
    let t0 = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let pm = pm.clone();
            tokio::spawn(async move { pm.invoke(spec(10), "r1", inv("x")).await })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    assert_eq!(fake.started.load(Ordering::SeqCst), 8);
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    let pids: std::collections::HashSet<_> =
        results.iter().map(|r| r.as_ref().unwrap().pid).collect();
    assert_eq!(pids.len(), 8);
    assert_eq!(
        pm.stats("f"),
        PoolStats {
            idle: 8,
            busy: 0,
            running: 0,
            waiting: 0
        }
    );
}

#[tokio::test(start_paused = true)]
async fn over_the_limit_waits_then_throttles() {
    let cfg = PoolConfig {
        queue_timeout: Duration::from_millis(200),
        queue_depth: 1,
        ..Default::default()
    };
    let (pm, _fake) = setup(1000, cfg);
    let pm2 = pm.clone();
    let busy = tokio::spawn(async move { pm2.invoke(spec(1), "r1", inv("x")).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Waits 200 ms in the queue, then is throttled.
    let err = pm.invoke(spec(1), "r1", inv("y")).await.unwrap_err();
    assert_eq!(
        err,
        PoolError::Throttled {
            function: "f".into(),
            limit: 1,
            reason: ThrottleReason::Concurrency,
        }
    );
    assert!(busy.await.unwrap().is_ok());
    // A queued request that gets a slot in time runs.
    let (pm, _fake) = setup(
        100,
        PoolConfig {
            queue_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    );
    let pm2 = pm.clone();
    let first = tokio::spawn(async move { pm2.invoke(spec(1), "r1", inv("x")).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(pm.invoke(spec(1), "r1", inv("y")).await.is_ok());
    assert!(first.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn queue_depth_is_bounded() {
    let cfg = PoolConfig {
        queue_timeout: Duration::from_secs(10),
        queue_depth: 0,
        ..Default::default()
    };
    let (pm, _fake) = setup(1000, cfg);
    let pm2 = pm.clone();
    let busy = tokio::spawn(async move { pm2.invoke(spec(1), "r1", inv("x")).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let t0 = Instant::now();
    assert!(pm.invoke(spec(1), "r1", inv("y")).await.is_err());
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "throttled at once when the queue is full"
    );
    busy.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn idle_instances_are_reaped() {
    let (pm, fake) = setup(
        1,
        PoolConfig {
            idle_timeout: Duration::from_secs(5),
            ..Default::default()
        },
    );
    pm.invoke(spec(10), "r1", inv("x")).await.unwrap();
    assert_eq!(pm.reap_idle(), 0);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(pm.reap_idle(), 1);
    tokio::task::yield_now().await;
    assert_eq!(fake.stopped.load(Ordering::SeqCst), 1);
    assert_eq!(pm.stats("f"), PoolStats::default());
    // The next call is cold again.
    assert!(pm.invoke(spec(10), "r1", inv("x")).await.unwrap().cold);
}

#[tokio::test(start_paused = true)]
async fn unhealthy_and_outdated_instances_are_replaced() {
    let (pm, fake) = setup(1, PoolConfig::default());
    pm.invoke(spec(10), "r1", inv("crash")).await.unwrap();
    assert!(
        pm.invoke(spec(10), "r1", inv("x")).await.unwrap().cold,
        "crashed instance is not reused"
    );
    // A new revision of the same version starts fresh instances and stops the old ones.
    assert!(pm.invoke(spec(10), "r2", inv("x")).await.unwrap().cold);
    tokio::task::yield_now().await;
    assert_eq!(fake.started.load(Ordering::SeqCst), 3);
    assert_eq!(fake.stopped.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_everything_and_refuses_work() {
    let (pm, fake) = setup(1, PoolConfig::default());
    pm.invoke(spec(10), "r1", inv("x")).await.unwrap();
    pm.shutdown().await;
    assert_eq!(fake.stopped.load(Ordering::SeqCst), 1);
    assert_eq!(
        pm.invoke(spec(10), "r1", inv("x")).await.unwrap_err(),
        PoolError::ShuttingDown
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_instance_that_exited_is_never_handed_work() {
    let (pm, fake) = setup(1, PoolConfig::default());
    let first = pm.invoke(spec(10), "r1", inv("x")).await.unwrap();
    fake.exited.store(true, Ordering::SeqCst); // the runtime exits while idle
    let second = pm.invoke(spec(10), "r1", inv("x")).await.unwrap();
    assert!(second.cold, "a fresh instance serves the call");
    assert_ne!(first.pid, second.pid);
    assert_eq!(
        second.result.outcome,
        Outcome::Success(Bytes::from_static(b"x"))
    );
}

async fn until_ready(pm: &PoolManager<Fake>, version: &str) -> ProvisionedStatus {
    for _ in 0..100 {
        let s = pm.provisioned_status("f", version).unwrap();
        if s.state == ProvisionedState::Ready {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never ready: {:?}", pm.provisioned_status("f", version));
}

#[tokio::test(start_paused = true)]
async fn provisioned_instances_serve_first_survive_reaping_and_are_replaced() {
    let cfg = PoolConfig {
        idle_timeout: Duration::from_millis(100),
        ..Default::default()
    };
    let (pm, fake) = setup(10, cfg);
    pm.set_provisioned(spec(10), "r1", 2);
    let s = until_ready(&pm, "$LATEST").await;
    assert_eq!((s.requested, s.allocated, s.available), (2, 2, 2));
    assert_eq!(fake.started.load(Ordering::SeqCst), 2);
    // Calls use them (warm), no new instance.
    let a = pm.invoke(spec(10), "r1", inv("1")).await.unwrap();
    assert!(!a.cold);
    assert!(a.pid.unwrap() <= 2);
    // Idle reaping leaves them alone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pm.reap_idle(), 0);
    assert_eq!(pm.provisioned_status("f", "$LATEST").unwrap().available, 2);
    // One that dies during a call is replaced.
    let c = pm.invoke(spec(10), "r1", inv("crash")).await.unwrap();
    assert!(!c.cold);
    until_ready(&pm, "$LATEST").await;
    assert_eq!(fake.started.load(Ordering::SeqCst), 3);
    // Lowering the target stops the extra one; 0 removes the slot.
    pm.set_provisioned(spec(10), "r1", 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pm.provisioned_status("f", "$LATEST").unwrap().allocated, 1);
    assert_eq!(fake.stopped.load(Ordering::SeqCst), 2);
    pm.set_provisioned(spec(10), "r1", 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(pm.provisioned_status("f", "$LATEST").is_none());
    assert_eq!(fake.stopped.load(Ordering::SeqCst), 3);
}

impl Fake {
    /// (running now, most at once) for `function` ("" = all).
    fn peak(&self, function: &str) -> u32 {
        self.active.lock().unwrap().get(function).map_or(0, |e| e.1)
    }
}

/// Fires `n` concurrent calls of each `(function, concurrency)`; returns per function the
/// successes and the throttle reasons.
async fn burst(
    pm: &Arc<PoolManager<Fake>>,
    calls: &[(&'static str, u32)],
    n: usize,
) -> HashMap<&'static str, (usize, Vec<ThrottleReason>)> {
    let mut hs = Vec::new();
    for &(f, c) in calls {
        for _ in 0..n {
            let pm = pm.clone();
            hs.push((
                f,
                tokio::spawn(async move { pm.invoke(named_spec(f, c), "r1", inv("x")).await }),
            ));
        }
    }
    let mut out: HashMap<&'static str, (usize, Vec<ThrottleReason>)> = HashMap::new();
    for (f, h) in hs {
        let e = out.entry(f).or_default();
        match h.await.unwrap() {
            Ok(_) => e.0 += 1,
            Err(PoolError::Throttled { reason, .. }) => e.1.push(reason),
            Err(other) => panic!("{other}"),
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn the_account_limit_is_shared_by_unreserved_functions() {
    let cfg = PoolConfig {
        account_concurrency: 4,
        queue_depth: 0,
        ..Default::default()
    };
    let (pm, fake) = setup(1000, cfg);
    let out = burst(&pm, &[("f", 10), ("g", 10)], 6).await;
    let ok = out["f"].0 + out["g"].0;
    assert_eq!(ok, 4, "{out:?}");
    assert_eq!(fake.peak(""), 4);
    for (_, (_, reasons)) in out {
        assert!(reasons.iter().all(|r| *r == ThrottleReason::Concurrency));
    }
    // Everything released: the whole account is free again.
    assert_eq!(pm.account_stats().unreserved_running, 0);
    let out = burst(&pm, &[("g", 10)], 4).await;
    assert_eq!(out["g"].0, 4);
}

#[tokio::test(start_paused = true)]
async fn a_reservation_is_carved_out_of_the_account() {
    let cfg = PoolConfig {
        account_concurrency: 5,
        queue_depth: 0,
        ..Default::default()
    };
    let (pm, fake) = setup(1000, cfg);
    pm.set_reservation("g", Some(3));
    assert_eq!(
        pm.account_stats(),
        AccountStats {
            limit: 5,
            reserved: 3,
            unreserved_running: 0
        }
    );
    let out = burst(&pm, &[("f", 10), ("g", 1), ("h", 10)], 6).await;
    // g runs up to its reservation (not its concurrency setting of 1), f and h share 2.
    assert_eq!(out["g"].0, 3, "{out:?}");
    assert!(out["g"].1.iter().all(|r| *r == ThrottleReason::Reserved));
    assert_eq!(out["f"].0 + out["h"].0, 2, "{out:?}");
    assert!(out["f"]
        .1
        .iter()
        .chain(&out["h"].1)
        .all(|r| *r == ThrottleReason::Concurrency));
    assert_eq!(fake.peak("g"), 3);
    assert_eq!(fake.peak(""), 5);
    // Removing the reservation gives the account back to everyone.
    pm.set_reservation("g", None);
    let out = burst(&pm, &[("f", 10)], 6).await;
    assert_eq!(out["f"].0, 5);
}

#[tokio::test(start_paused = true)]
async fn reserved_zero_always_throttles() {
    let (pm, fake) = setup(1, PoolConfig::default());
    pm.set_reservation("f", Some(0));
    let err = pm.invoke(spec(10), "r1", inv("x")).await.unwrap_err();
    assert!(matches!(
        err,
        PoolError::Throttled {
            reason: ThrottleReason::Reserved,
            limit: 0,
            ..
        }
    ));
    assert_eq!(fake.started.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn one_function_cannot_fill_the_account_queue() {
    let cfg = PoolConfig {
        queue_depth: 2,
        account_queue_depth: 3,
        queue_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let (pm, _fake) = setup(1000, cfg);
    let call = |f: &'static str| {
        let pm = pm.clone();
        tokio::spawn(async move { pm.invoke(named_spec(f, 1), "r1", inv("x")).await })
    };
    let running = [call("f"), call("g")];
    tokio::time::sleep(Duration::from_millis(10)).await;
    let queued_f = [call("f"), call("f")];
    tokio::time::sleep(Duration::from_millis(10)).await;
    // f's queue is full: throttled at once, though the account queue has room.
    let t0 = Instant::now();
    assert!(pm.invoke(named_spec("f", 1), "r1", inv("x")).await.is_err());
    assert_eq!(t0.elapsed(), Duration::ZERO);
    // g still gets the last place of the account queue; then the account queue is full.
    let queued_g = call("g");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(pm.stats("g").waiting, 1);
    // g's own queue has room, the account's has not.
    let t0 = Instant::now();
    assert!(pm.invoke(named_spec("g", 1), "r1", inv("x")).await.is_err());
    assert_eq!(t0.elapsed(), Duration::ZERO);
    // A function with a free slot does not queue, so it still runs.
    pm.invoke(named_spec("h", 1), "r1", inv("x")).await.unwrap();
    for h in running.into_iter().chain(queued_f).chain([queued_g]) {
        h.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn the_queue_is_fifo() {
    let cfg = PoolConfig {
        queue_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let (pm, _fake) = setup(100, cfg);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut hs = Vec::new();
    for i in 0..5 {
        let (pm, order) = (pm.clone(), order.clone());
        hs.push(tokio::spawn(async move {
            pm.invoke(spec(1), "r1", inv("x")).await.unwrap();
            order.lock().unwrap().push(i);
        }));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for h in hs {
        h.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn scale_out_is_rate_limited_and_waiters_take_warm_instances() {
    let cfg = PoolConfig {
        scale_rate: ScaleRate {
            per_sec: 1.0,
            burst: 2,
        },
        queue_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let (pm, fake) = setup(100, cfg);
    let out = burst(&pm, &[("f", 10)], 10).await;
    assert_eq!(out["f"].0, 10, "{out:?}");
    // 10 calls of 100 ms on 2 instances end well before a third token is due.
    assert_eq!(fake.started.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn no_instance_and_no_token_before_the_deadline_throttles() {
    let cfg = PoolConfig {
        scale_rate: ScaleRate {
            per_sec: 1.0,
            burst: 1,
        },
        queue_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let (pm, fake) = setup(5000, cfg);
    let pm2 = pm.clone();
    let busy = tokio::spawn(async move { pm2.invoke(spec(10), "r1", inv("x")).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let err = pm.invoke(spec(10), "r1", inv("y")).await.unwrap_err();
    assert!(matches!(
        err,
        PoolError::Throttled {
            reason: ThrottleReason::ScaleRate,
            ..
        }
    ));
    busy.await.unwrap().unwrap();
    assert_eq!(fake.started.load(Ordering::SeqCst), 1);
}

#[test]
fn scale_rate_parses() {
    assert_eq!(
        ScaleRate::parse("20:50").unwrap(),
        ScaleRate {
            per_sec: 20.0,
            burst: 50
        }
    );
    assert_eq!(ScaleRate::parse("2.5").unwrap().burst, 3);
    assert!(ScaleRate::parse("0").is_err());
    assert!(ScaleRate::parse("x").is_err());
}

#[tokio::test(start_paused = true)]
async fn a_reservation_made_while_the_pool_is_busy_shrinks_it_as_slots_free() {
    let cfg = PoolConfig {
        account_concurrency: 4,
        queue_depth: 0,
        ..Default::default()
    };
    let (pm, fake) = setup(1000, cfg);
    let pm2 = pm.clone();
    let busy = tokio::spawn(async move { burst(&pm2, &[("f", 10)], 4).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(pm.account_stats().unreserved_running, 4);
    // Reserving 2 for g while f holds all 4 unreserved slots.
    pm.set_reservation("g", Some(2));
    assert_eq!(busy.await.unwrap()["f"].0, 4);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let out = burst(&pm, &[("f", 10), ("g", 10)], 4).await;
    assert_eq!((out["f"].0, out["g"].0), (2, 2), "{out:?}");
    assert_eq!(fake.peak(""), 4);
}

// ---- memory budget and LRU reaping (density.rs) ----

const MB: u64 = 1 << 20;

fn mem_spec(name: &str, memory_mb: u32) -> Arc<InstanceSpec> {
    let mut config = FunctionConfig::new(Runtime::parse("provided").unwrap(), "x");
    config.memory_mb = memory_mb;
    Arc::new(InstanceSpec {
        function: FunctionName::parse(name).unwrap(),
        version: "$LATEST".into(),
        config,
        code_dir: "/nonexistent".into(),
        opt_dir: None,
    })
}

fn budget_cfg(budget_mb: u64) -> PoolConfig {
    PoolConfig {
        memory: MemoryPolicy {
            budget: Some(budget_mb * MB),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn ids(pm: &PoolManager<Fake>, f: &str) -> Vec<String> {
    pm.instances(f).into_iter().map(|i| i.id).collect()
}

#[tokio::test(start_paused = true)]
async fn budget_counts_configured_memory_and_frees_it_on_stop() {
    let cfg = PoolConfig {
        idle_timeout: Duration::from_secs(1),
        ..budget_cfg(1024)
    };
    let (pm, _fake) = setup(10, cfg);
    pm.invoke(mem_spec("a", 128), "r", inv("x")).await.unwrap();
    pm.invoke(mem_spec("b", 256), "r", inv("x")).await.unwrap();
    let m = pm.memory_stats();
    assert_eq!(m.instances, 2);
    assert_eq!(m.committed_bytes, 384 * MB);
    assert_eq!(m.budget_bytes, Some(1024 * MB));
    assert_eq!(m.memory_bytes, 20 * MB, "the probes' measured figures");
    let a = pm.instances("a");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].state, "idle");
    assert_eq!(a[0].configured_bytes, 128 * MB);
    assert_eq!(a[0].memory_bytes, Some(10 * MB));
    assert_eq!(a[0].memory_source, Some("fixed"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pm.reap_idle(), 2);
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let m = pm.memory_stats();
    assert_eq!((m.instances, m.committed_bytes), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_start_over_budget_stops_the_least_recently_used_idle_instance() {
    // Room for three 128 MB instances.
    let (pm, fake) = setup(10, budget_cfg(3 * 128));
    for f in ["a", "b", "c"] {
        pm.invoke(mem_spec(f, 128), "r", inv("x")).await.unwrap();
    }
    // `a` is used again: `b` is now the least recently used.
    let again = pm.invoke(mem_spec("a", 128), "r", inv("x")).await.unwrap();
    assert!(!again.cold);
    let (a, c) = (ids(&pm, "a"), ids(&pm, "c"));
    let d = pm.invoke(mem_spec("d", 128), "r", inv("x")).await.unwrap();
    assert!(d.cold);
    assert!(ids(&pm, "b").is_empty(), "b was reaped");
    assert_eq!((ids(&pm, "a"), ids(&pm, "c")), (a, c), "the others kept");
    assert_eq!(ids(&pm, "d").len(), 1);
    assert_eq!(fake.stopped.load(Ordering::SeqCst), 1);
    let m = pm.memory_stats();
    assert_eq!((m.committed_bytes, m.reaped_for_memory), (3 * 128 * MB, 1));
    // Then `c` (now the oldest), then `a`.
    pm.invoke(mem_spec("e", 128), "r", inv("x")).await.unwrap();
    assert!(ids(&pm, "c").is_empty());
    assert_eq!(ids(&pm, "a").len(), 1);
    // A 256 MB instance needs two 128 MB ones stopped: `a` and `d`.
    pm.invoke(mem_spec("g", 256), "r", inv("x")).await.unwrap();
    assert!(ids(&pm, "a").is_empty() && ids(&pm, "d").is_empty());
    assert_eq!((ids(&pm, "e").len(), ids(&pm, "g").len()), (1, 1));
    assert_eq!(pm.memory_stats().committed_bytes, 384 * MB);
}

#[tokio::test(start_paused = true)]
async fn nothing_idle_to_stop_is_a_memory_throttle() {
    let (pm, _fake) = setup(1000, budget_cfg(128));
    let pm2 = pm.clone();
    let busy = tokio::spawn(async move { pm2.invoke(mem_spec("a", 128), "r", inv("x")).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(pm.instances("a")[0].state, "busy");
    let err = pm
        .invoke(mem_spec("b", 128), "r", inv("y"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PoolError::MemoryExhausted { function, detail }
            if function == "b" && detail.contains("budget of 128 MB")),
        "{err:?}"
    );
    assert!(busy.await.unwrap().is_ok());
    // Once `a` is idle it can be stopped for `b`.
    assert!(pm.invoke(mem_spec("b", 128), "r", inv("y")).await.is_ok());
    assert!(ids(&pm, "a").is_empty());
    // An instance larger than the whole budget never fits.
    assert!(matches!(
        pm.invoke(mem_spec("c", 256), "r", inv("z")).await,
        Err(PoolError::MemoryExhausted { .. })
    ));
}

static AVAILABLE_MB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);

fn fake_available() -> Option<u64> {
    Some(AVAILABLE_MB.load(Ordering::SeqCst) * MB)
}

#[tokio::test(start_paused = true)]
async fn below_the_host_floor_idle_instances_are_reaped_lru_first() {
    let cfg = PoolConfig {
        memory: MemoryPolicy {
            budget: None,
            floor: 100 * MB,
            available: fake_available,
        },
        ..Default::default()
    };
    let (pm, _fake) = setup(10, cfg);
    AVAILABLE_MB.store(1000, Ordering::SeqCst);
    for f in ["a", "b", "c"] {
        pm.invoke(mem_spec(f, 128), "r", inv("x")).await.unwrap();
    }
    assert_eq!(pm.relieve_pressure().await, 0, "above the floor");
    // Below the floor: a start first stops idle instances, oldest first, while the
    // host stays below it; here it never recovers, so every idle one goes and the
    // start is refused.
    AVAILABLE_MB.store(50, Ordering::SeqCst);
    let err = pm
        .invoke(mem_spec("d", 128), "r", inv("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PoolError::MemoryExhausted { detail, .. } if detail.contains("floor of 100 MB")),
        "{err:?}"
    );
    assert_eq!(pm.memory_stats().instances, 0);
    assert_eq!(pm.memory_stats().reaped_for_memory, 3);
    AVAILABLE_MB.store(1000, Ordering::SeqCst);
    pm.invoke(mem_spec("a", 128), "r", inv("x")).await.unwrap();
    pm.invoke(mem_spec("b", 128), "r", inv("x")).await.unwrap();
    AVAILABLE_MB.store(50, Ordering::SeqCst);
    assert_eq!(
        pm.relieve_pressure().await,
        2,
        "the reaper empties the idle lists"
    );
    AVAILABLE_MB.store(1000, Ordering::SeqCst);
}

#[tokio::test(start_paused = true)]
async fn a_burst_beyond_the_initialisation_slots_is_served() {
    // One slot, starts that take 50 ms, 8 callers at once: seven wait for the slot. Each
    // released slot goes to the next waiter, which must keep it (dropping it to try again
    // passed it from waiter to waiter without end, and the paused clock never advanced).
    let fake = fake(Duration::from_millis(100), Duration::from_millis(50), None);
    let cfg = PoolConfig {
        max_initializing: 1,
        ..PoolConfig::default()
    };
    let pm = PoolManager::new(fake.clone(), cfg);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let pm = pm.clone();
            tokio::spawn(async move { pm.invoke(spec(8), "r1", inv("x")).await })
        })
        .collect();
    for c in calls {
        assert!(c.await.unwrap().is_ok());
    }
    assert!(fake.started.load(Ordering::SeqCst) >= 1);
}

/// The code directories the code store must keep: every instance's, from its start until it
/// has stopped, also after its function was retired (a busy instance finishes first).
#[tokio::test(start_paused = true)]
async fn code_dirs_are_in_use_until_the_instances_stop() {
    let (pm, fake) = setup(1000, PoolConfig::default());
    let with_dir = |name: &str, dir: &str| {
        let mut s = (*named_spec(name, 10)).clone();
        s.code_dir = dir.into();
        Arc::new(s)
    };
    let dirs = |pm: &PoolManager<Fake>| {
        let mut v: Vec<_> = pm.code_dirs_in_use().into_iter().collect();
        v.sort();
        v
    };
    assert!(dirs(&pm).is_empty());
    pm.invoke(with_dir("a", "/code/a"), "r1", inv("x"))
        .await
        .unwrap();
    let pm2 = pm.clone();
    let busy_b =
        tokio::spawn(async move { pm2.invoke(with_dir("b", "/code/b"), "r1", inv("x")).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        dirs(&pm),
        [PathBuf::from("/code/a"), PathBuf::from("/code/b")]
    );

    // `a` is idle: retired, it stops and its directory is released.
    pm.retire_function("a");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(dirs(&pm), [PathBuf::from("/code/b")]);
    // `b` is busy: its directory stays until the call ends and the instance stops.
    pm.retire_function("b");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(dirs(&pm), [PathBuf::from("/code/b")]);
    busy_b.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(dirs(&pm).is_empty());
    assert_eq!(fake.stopped.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn warmth_and_idle_by_revision_count_idle_instances_of_the_revision() {
    let (pm, _) = setup(100, PoolConfig::default());
    let s = spec(2);
    assert_eq!(pm.warmth("f", "$LATEST", "r1"), Warmth::default());
    assert!(pm.idle_by_revision().is_empty());
    // Two at once: two instances, both idle afterwards.
    let (a, b) = tokio::join!(
        pm.invoke(s.clone(), "r1", inv("x")),
        pm.invoke(s.clone(), "r1", inv("x"))
    );
    assert!(a.unwrap().cold && b.unwrap().cold);
    assert_eq!(
        pm.warmth("f", "$LATEST", "r1"),
        Warmth {
            idle: 2,
            saturated: false
        }
    );
    assert_eq!(pm.idle_by_revision(), [("r1".to_string(), 2)].into());
    assert_eq!(
        pm.idle_by_revision(),
        [("r1".to_string(), 2)].into(),
        "still idle"
    );
    assert_eq!(pm.warmth("f", "$LATEST", "r2").idle, 0, "another revision");
    assert_eq!(pm.warmth("f", "1", "r1").idle, 0, "another version");
    // Both busy: nothing idle, and the function at its limit of 2.
    let pm2 = pm.clone();
    let s2 = s.clone();
    let busy = tokio::spawn(async move {
        tokio::join!(
            pm2.invoke(s2.clone(), "r1", inv("x")),
            pm2.invoke(s2.clone(), "r1", inv("x"))
        )
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        pm.warmth("f", "$LATEST", "r1"),
        Warmth {
            idle: 0,
            saturated: true
        }
    );
    // Two were idle at once since the last read, none now; read again: none.
    assert_eq!(pm.idle_by_revision(), [("r1".to_string(), 2)].into());
    assert!(pm.idle_by_revision().is_empty());
    let (a, b) = busy.await.unwrap();
    assert!(!a.unwrap().cold && !b.unwrap().cold, "both warm");
    // A new revision retires the old instances: they are no longer counted.
    pm.invoke(s.clone(), "r2", inv("x")).await.unwrap();
    assert_eq!(pm.idle_by_revision(), [("r2".to_string(), 1)].into());
}

/// 32 clients calling back to back, `calls` each: the most instances of `f` that ran at
/// once once the load had run for a while (`after`: the first burst starts an instance
/// per client, gated or not), and how long the calls took in all.
async fn closed_loop(
    cpu_bound: bool,
    saturated: bool,
    calls: u32,
    after: Duration,
) -> (u32, Duration) {
    let fake = fake(
        Duration::from_millis(1),
        Duration::ZERO,
        cpu_bound.then_some(2),
    );
    let cfg = PoolConfig {
        instance_gate: true,
        ..PoolConfig::default()
    };
    let pm = PoolManager::new(fake.clone(), cfg);
    pm.force_host_saturation(Some(saturated), 2);
    let t0 = Instant::now();
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let pm = pm.clone();
            tokio::spawn(async move {
                for _ in 0..calls {
                    pm.invoke(spec(64), "r1", inv("x")).await.unwrap();
                }
            })
        })
        .collect();
    // From here on, the most at once.
    tokio::time::sleep(after).await;
    for e in fake.active.lock().unwrap().values_mut() {
        e.1 = e.0;
    }
    for c in clients {
        c.await.unwrap();
    }
    (fake.peak("f"), t0.elapsed())
}

#[tokio::test(start_paused = true)]
async fn the_instance_gate_stops_adding_instances_to_contended_short_calls() {
    // CPU-bound on 2 simulated cores, the host saturated: without the gate each client
    // keeps its instance busy (32 at once, each call 31× its floor); with it the cap
    // climbs down to where the calls go through fastest (few at once: less crowding).
    let after = Duration::from_secs(4);
    let (peak, took) = closed_loop(true, true, 400, after).await;
    let (peak_off, took_off) = closed_loop(true, false, 400, after).await;
    eprintln!("gated: {peak} at once, {took:?}; not saturated: {peak_off} at once, {took_off:?}");
    assert!(peak <= 16, "{peak} ran at once");
    assert_eq!(peak_off, 32, "not saturated: not gated");
    assert!(
        took.as_secs_f64() <= took_off.as_secs_f64() * 0.8,
        "gated {took:?}, not gated {took_off:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_instance_gate_lets_calls_waiting_on_io_scale_out() {
    // Latency at the floor however many run: the throughput grows with the instances,
    // so the cap climbs back to one instance per client.
    let after = Duration::from_secs(3);
    let (peak, took) = closed_loop(false, true, 8000, after).await;
    let (_, took_off) = closed_loop(false, false, 8000, after).await;
    eprintln!("gated: {peak} at once, {took:?}; not gated {took_off:?}");
    assert_eq!(peak, 32);
    assert!(
        took.as_secs_f64() <= took_off.as_secs_f64() * 1.25,
        "gated {took:?}, not gated {took_off:?}"
    );
}
