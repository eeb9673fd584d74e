use super::*;
use bytes::Bytes;
use nimbus_core::{FunctionConfig, FunctionName, Runtime};
use std::sync::atomic::AtomicU32;

/// A fake executor: instances sleep `delay` per invocation; payload `crash` makes one unhealthy.
struct Fake {
    exited: Arc<AtomicBool>,
    started: AtomicU32,
    stopped: Arc<AtomicU32>,
    delay: Duration,
}

struct FakeInstance {
    id: String,
    pid: u32,
    delay: Duration,
    healthy: bool,
    stopped: Arc<AtomicU32>,
    /// Set by a test: the process "exited" while idle.
    exited: Arc<AtomicBool>,
}

impl Executor for Fake {
    type Instance = FakeInstance;
    async fn start(&self, _spec: Arc<InstanceSpec>) -> Result<FakeInstance, RuntimeError> {
        let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(FakeInstance {
            id: n.to_string(),
            pid: n,
            delay: self.delay,
            healthy: true,
            stopped: self.stopped.clone(),
            exited: self.exited.clone(),
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
        tokio::time::sleep(self.delay).await;
        if inv.payload == "crash" {
            self.healthy = false;
        }
        InvokeResult {
            outcome: Outcome::Success(inv.payload),
            duration: self.delay,
            init_duration: None,
            log_tail: String::new(),
            started: true,
        }
    }
    fn is_healthy(&self) -> bool {
        self.healthy && !self.exited.load(Ordering::SeqCst)
    }
    async fn stop(self) {
        self.stopped.fetch_add(1, Ordering::SeqCst);
    }
}

fn setup(delay_ms: u64, cfg: PoolConfig) -> (Arc<PoolManager<Fake>>, Arc<Fake>) {
    let fake = Arc::new(Fake {
        exited: Arc::new(AtomicBool::new(false)),
        started: AtomicU32::new(0),
        stopped: Arc::new(AtomicU32::new(0)),
        delay: Duration::from_millis(delay_ms),
    });
    (PoolManager::new(fake.clone(), cfg), fake)
}

fn spec(concurrency: u32) -> Arc<InstanceSpec> {
    let mut config = FunctionConfig::new(Runtime::parse("provided").unwrap(), "x");
    config.concurrency = concurrency;
    Arc::new(InstanceSpec {
        function: FunctionName::parse("f").unwrap(),
        version: "$LATEST".into(),
        config,
        code_dir: "/nonexistent".into(),
    })
}

fn inv(payload: &'static str) -> Invocation {
    Invocation {
        request_id: "r".into(),
        payload: Bytes::from_static(payload.as_bytes()),
        invoked_arn: "arn".into(),
        trace_id: None,
        client_context: None,
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
    assert_eq!(pm.stats("f"), PoolStats { idle: 8, busy: 0 });
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
            limit: 1
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
