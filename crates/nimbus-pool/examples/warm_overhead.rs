//! The pool's own cost per warm invocation, with an executor whose instances answer at
//! once (so only `PoolManager::invoke` is measured: concurrency slots, the idle stack,
//! the memory registry's per-instance atomics), and the cost of a start that must first
//! stop the least recently used idle instance among FUNCTIONS (a full memory budget). See
//! docs/performance.md, "Memory and density".
//!
//!     cargo run --release -p nimbus-pool --example warm_overhead [-- CALLS [FUNCTIONS]]

use bytes::Bytes;
use nimbus_core::{FunctionConfig, FunctionName, Runtime};
use nimbus_pool::{MemoryPolicy, PoolConfig, PoolManager};
use nimbus_runtime::{
    Executor, Instance, InstanceSpec, Invocation, InvokeResult, Outcome, RuntimeError,
};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Instant0 {
    n: AtomicU32,
}

struct Inst(String);

impl Executor for Instant0 {
    type Instance = Inst;
    async fn start(&self, _spec: Arc<InstanceSpec>) -> Result<Inst, RuntimeError> {
        Ok(Inst(self.n.fetch_add(1, Ordering::Relaxed).to_string()))
    }
}

impl Instance for Inst {
    fn id(&self) -> &str {
        &self.0
    }
    fn pid(&self) -> Option<u32> {
        None
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
    async fn stop(self) {}
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let calls: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let functions: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let pm = PoolManager::new(Arc::new(Instant0::default()), PoolConfig::default());
    let specs: Vec<_> = (0..functions)
        .map(|i| {
            Arc::new(InstanceSpec {
                function: FunctionName::parse(&format!("f{i}")).unwrap(),
                version: "$LATEST".into(),
                config: FunctionConfig::new(Runtime::parse("provided").unwrap(), "x"),
                code_dir: "/nonexistent".into(),
                opt_dir: None,
            })
        })
        .collect();
    let inv = Invocation {
        request_id: "r".into(),
        payload: Bytes::from_static(b"{}"),
        invoked_arn: "arn".into(),
        trace_id: None,
        traceparent: None,
        tracestate: None,
        client_context: None,
        stream: None,
        http: None,
    };
    // One warm instance per function first.
    for s in &specs {
        pm.invoke(s.clone(), "r1", inv.clone()).await.unwrap();
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t0 = Instant::now();
        for i in 0..calls {
            let s = &specs[i % functions];
            let r = pm.invoke(s.clone(), "r1", inv.clone()).await.unwrap();
            assert!(!r.cold);
        }
        best = best.min(t0.elapsed().as_nanos() as f64 / calls as f64);
    }
    println!(
        "warm PoolManager::invoke: {best:.0} ns per call (best of 5 × {calls} calls, round-robin over {functions} functions with one warm instance each)"
    );

    // A budget of exactly `functions` instances, all idle: every call of another function
    // first stops the least recently used one (a scan of every version's idle stack).
    let cfg = PoolConfig {
        memory: MemoryPolicy {
            budget: Some(functions as u64 * (128 << 20)),
            ..Default::default()
        },
        ..Default::default()
    };
    let pm = PoolManager::new(Arc::new(Instant0::default()), cfg);
    for s in &specs {
        pm.invoke(s.clone(), "r1", inv.clone()).await.unwrap();
    }
    let evictions = 2000.min(functions * 2);
    let t0 = Instant::now();
    for i in 0..evictions {
        // A new function each time: each call stops the oldest idle instance first.
        let other = Arc::new(InstanceSpec {
            function: FunctionName::parse(&format!("x{i}")).unwrap(),
            ..(*specs[0]).clone()
        });
        let r = pm.invoke(other, "r1", inv.clone()).await.unwrap();
        assert!(r.cold);
    }
    let per = t0.elapsed().as_nanos() as f64 / evictions as f64;
    let m = pm.memory_stats();
    assert_eq!(
        (m.instances, m.reaped_for_memory),
        (functions, evictions as u64)
    );
    println!(
        "cold start with an LRU eviction among {functions} idle instances: {:.1} µs per call ({evictions} calls; the fake start itself is free)",
        per / 1000.0
    );
}
