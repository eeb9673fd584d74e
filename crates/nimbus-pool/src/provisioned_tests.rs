//! Provisioned slots with a fake executor whose instances may fail their init.

use crate::*;
use nimbus_core::{FunctionConfig, FunctionName, Runtime};
use std::sync::atomic::AtomicU32;

#[derive(Default)]
struct Fake {
    fail_init: AtomicBool,
    started: AtomicU32,
    stopped: Arc<AtomicU32>,
}

struct FakeInstance {
    id: String,
    fail_init: bool,
    stopped: Arc<AtomicU32>,
}

impl Executor for Fake {
    type Instance = FakeInstance;
    async fn start(&self, _spec: Arc<InstanceSpec>) -> Result<FakeInstance, RuntimeError> {
        let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(FakeInstance {
            id: n.to_string(),
            fail_init: self.fail_init.load(Ordering::SeqCst),
            stopped: self.stopped.clone(),
        })
    }
}

impl Instance for FakeInstance {
    fn id(&self) -> &str {
        &self.id
    }
    fn pid(&self) -> Option<u32> {
        self.id.parse().ok()
    }
    async fn ready(&mut self) -> Result<(), String> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if self.fail_init {
            Err("Runtime.ExitError: broken at init".into())
        } else {
            Ok(())
        }
    }
    async fn invoke(&mut self, inv: Invocation) -> InvokeResult {
        InvokeResult {
            outcome: Outcome::Success(inv.payload),
            duration: Duration::ZERO,
            init_duration: None,
            log_tail: String::new(),
            started: true,
            init_failed: false,
        }
    }
    fn is_healthy(&self) -> bool {
        true
    }
    async fn stop(self) {
        self.stopped.fetch_add(1, Ordering::SeqCst);
    }
}

fn spec(version: &str) -> Arc<InstanceSpec> {
    Arc::new(InstanceSpec {
        function: FunctionName::parse("f").unwrap(),
        version: version.into(),
        config: FunctionConfig::new(Runtime::parse("provided").unwrap(), "x"),
        code_dir: "/nonexistent".into(),
        opt_dir: None,
    })
}

fn inv() -> Invocation {
    Invocation {
        request_id: "r".into(),
        payload: bytes::Bytes::from_static(b"x"),
        invoked_arn: "arn".into(),
        trace_id: None,
        traceparent: None,
        tracestate: None,
        client_context: None,
        stream: None,
        http: None,
    }
}

async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn in_progress_until_initialised_then_ready() {
    let fake = Arc::new(Fake::default());
    let pm = PoolManager::new(fake.clone(), PoolConfig::default());
    pm.set_provisioned(spec("1"), "r1", 2);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let s = pm.provisioned_status("f", "1").unwrap();
    assert_eq!(s.state, ProvisionedState::InProgress);
    assert_eq!((s.requested, s.allocated), (2, 0));
    settle().await;
    let s = pm.provisioned_status("f", "1").unwrap();
    assert_eq!(s.state, ProvisionedState::Ready);
    // Another version's calls do not take them.
    let r = pm.invoke(spec("2"), "r2", inv()).await.unwrap();
    assert!(r.cold);
    // Nor calls of an outdated revision.
    let r = pm.invoke(spec("1"), "r0", inv()).await.unwrap();
    assert!(r.cold);
    assert_eq!(fake.started.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn a_failed_init_is_failed_with_its_reason_until_set_again() {
    let fake = Arc::new(Fake::default());
    fake.fail_init.store(true, Ordering::SeqCst);
    let pm = PoolManager::new(fake.clone(), PoolConfig::default());
    pm.set_provisioned(spec("1"), "r1", 1);
    settle().await;
    let s = pm.provisioned_status("f", "1").unwrap();
    assert_eq!(s.state, ProvisionedState::Failed);
    assert!(s.reason.unwrap().contains("broken at init"));
    settle().await;
    assert_eq!(fake.started.load(Ordering::SeqCst), 1, "no retry loop");
    assert_eq!(fake.stopped.load(Ordering::SeqCst), 1);
    // Fixed, and set again: it retries.
    fake.fail_init.store(false, Ordering::SeqCst);
    pm.set_provisioned(spec("1"), "r1", 1);
    settle().await;
    let s = pm.provisioned_status("f", "1").unwrap();
    assert_eq!((s.state, s.reason), (ProvisionedState::Ready, None));
}

#[tokio::test(start_paused = true)]
async fn retiring_the_function_and_shutdown_stop_provisioned_instances() {
    let fake = Arc::new(Fake::default());
    let pm = PoolManager::new(fake.clone(), PoolConfig::default());
    pm.set_provisioned(spec("1"), "r1", 2);
    settle().await;
    pm.retire_function("f");
    settle().await;
    assert!(pm.provisioned_status("f", "1").is_none());
    assert_eq!(fake.stopped.load(Ordering::SeqCst), 2);
    pm.set_provisioned(spec("1"), "r1", 1);
    settle().await;
    pm.shutdown().await;
    assert_eq!(fake.stopped.load(Ordering::SeqCst), 3);
    assert!(pm.provisioned_versions().is_empty());
    // A closed pool provisions nothing.
    pm.set_provisioned(spec("1"), "r1", 1);
    settle().await;
    assert_eq!(fake.started.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn provisioned_instances_count_against_the_memory_budget_but_are_never_reaped() {
    let fake = Arc::new(Fake::default());
    // Room for two 128 MB instances.
    let cfg = PoolConfig {
        memory: MemoryPolicy {
            budget: Some(256 << 20),
            ..Default::default()
        },
        ..Default::default()
    };
    let pm = PoolManager::new(fake.clone(), cfg);
    pm.set_provisioned(spec("1"), "r1", 1);
    settle().await;
    assert_eq!(pm.memory_stats().committed_bytes, 128 << 20);
    assert_eq!(pm.instances("f")[0].state, "provisioned");
    // An on-demand instance of version 2 fills the budget; version 3 then stops it (the
    // only idle on-demand instance), never the provisioned one.
    assert!(pm.invoke(spec("2"), "r2", inv()).await.unwrap().cold);
    assert!(pm.invoke(spec("3"), "r3", inv()).await.unwrap().cold);
    assert_eq!(fake.stopped.load(Ordering::SeqCst), 1);
    let s = pm.provisioned_status("f", "1").unwrap();
    assert_eq!((s.state, s.allocated), (ProvisionedState::Ready, 1));
    let versions: Vec<_> = pm.instances("f").into_iter().map(|i| i.version).collect();
    assert_eq!(versions.len(), 2);
    assert!(versions.contains(&"1".to_string()) && versions.contains(&"3".to_string()));
}

#[tokio::test(start_paused = true)]
async fn once_shutdown_begins_provisioned_slots_start_nothing_but_keep_serving() {
    let fake = Arc::new(Fake::default());
    let pm = PoolManager::new(fake.clone(), PoolConfig::default());
    pm.set_provisioned(spec("1"), "r1", 2);
    settle().await;
    assert_eq!(fake.started.load(Ordering::SeqCst), 2);
    pm.stop_provisioning();
    // A higher target and a new slot start nothing; a call still runs on a provisioned
    // instance (no cold start).
    pm.set_provisioned(spec("1"), "r1", 4);
    pm.set_provisioned(spec("2"), "r2", 1);
    settle().await;
    assert_eq!(fake.started.load(Ordering::SeqCst), 2);
    assert!(!pm.invoke(spec("1"), "r1", inv()).await.unwrap().cold);
    // Once the pool is closed, no instance starts at all (a cold start is refused).
    pm.shutdown().await;
    assert!(matches!(
        pm.start_instance(spec("3"), false).await,
        Err(StartError::Runtime(RuntimeError::ShuttingDown))
    ));
    assert_eq!(fake.started.load(Ordering::SeqCst), 2);
}
