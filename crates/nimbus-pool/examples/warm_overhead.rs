//! The pool's own cost per warm invocation, with an executor whose instances answer at
//! once (so only `PoolManager::invoke` is measured: concurrency slots, the idle stack,
//! the memory registry's per-instance atomics). See docs/performance.md, "Memory and
//! density".
//!
//!     cargo run --release -p nimbus-pool --example warm_overhead [-- CALLS [FUNCTIONS]]

use bytes::Bytes;
use nimbus_core::{FunctionConfig, FunctionName, Runtime};
use nimbus_pool::{PoolConfig, PoolManager};
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
            })
        })
        .collect();
    let inv = Invocation {
        request_id: "r".into(),
        payload: Bytes::from_static(b"{}"),
        invoked_arn: "arn".into(),
        trace_id: None,
        client_context: None,
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
}
