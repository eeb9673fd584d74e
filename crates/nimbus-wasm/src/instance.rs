//! One pool instance of a component function: a handle on the loaded component; each
//! invocation instantiates it afresh in a store of its own, bounded by the function's
//! timeout (epoch interruption) and memory size (the store's limiter).

use crate::engine::Shared;
use crate::event::Context;
use crate::http::{self, Failure};
use crate::load::Loaded;
use crate::net::Egress;
use crate::store::Host;
use nimbus_core::RuntimeFamily;
use nimbus_runtime::{
    resolve_secrets, BoxFuture, ComponentInstance, InstanceSpec, Invocation, InvocationEnd,
    InvokeResult, LogCtx, LogStreamKind, Outcome, PlatformEvent, RuntimeError,
};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Store, Trap, UpdateDeadline};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct WasmInstance {
    id: String,
    shared: Arc<Shared>,
    spec: Arc<InstanceSpec>,
    loaded: Arc<Loaded>,
    env: Arc<Vec<(String, String)>>,
    host_services: Arc<Vec<SocketAddrV4>>,
    log: Arc<LogCtx>,
    /// Loading time, reported as the first invocation's `Init Duration`.
    init: Option<Duration>,
    /// The most memory the last invocation used.
    last_peak: u64,
}

impl WasmInstance {
    pub(crate) async fn start(
        shared: Arc<Shared>,
        spec: Arc<InstanceSpec>,
    ) -> Result<Self, RuntimeError> {
        let t0 = Instant::now();
        let secrets = resolve_secrets(shared.secrets.as_deref(), &spec)?;
        let mask: Vec<String> = secrets.iter().map(|(_, v)| v.clone()).collect();
        let http = spec.config.runtime.family() == RuntimeFamily::WasiHttp;
        let loaded = shared
            .load(&spec.code_dir.join(&spec.config.handler), http)
            .await?;
        let env = environment(&spec, secrets);
        let log = Arc::new(LogCtx::new(
            spec.function.as_str(),
            spec.config.logging.clone(),
            shared.logs.clone(),
            mask,
        ));
        let id = format!("wasm-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        tracing::debug!(instance = %id, function = %spec.function, version = %spec.version, "component instance ready");
        Ok(WasmInstance {
            id,
            host_services: Arc::new(spec.config.host_services.clone()),
            shared,
            loaded,
            env: Arc::new(env),
            log,
            init: Some(t0.elapsed()),
            last_peak: 0,
            spec,
        })
    }

    async fn run(&mut self, inv: Invocation) -> InvokeResult {
        let rid = inv.request_id.clone();
        self.log.begin(&rid, inv.trace_id.as_deref());
        self.log.platform(PlatformEvent::Start {
            request_id: &rid,
            version: &self.spec.version,
            trace: inv.trace_id.as_deref(),
        });
        let _running = self.shared.running.enter();
        let timeout = Duration::from_secs(u64::from(self.spec.config.timeout_s.max(1)));
        let t0 = Instant::now();
        let deadline = t0 + timeout;
        let memory = (self.spec.config.memory_mb as usize) << 20;
        let egress = Egress {
            policy: self.spec.config.network,
            host_services: self.host_services.clone(),
        };
        let mut store = Store::new(
            &self.shared.engine,
            Host::new(&self.env, &self.spec.code_dir, &self.log, egress, memory),
        );
        store.limiter(|h| &mut h.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        let loaded = self.loaded.clone();
        let ran = {
            let fut = async {
                match &*loaded {
                    Loaded::Http(pre) => http::run(pre, &mut store, &inv).await.map(|a| {
                        if inv.http.is_some() {
                            Outcome::Streamed {
                                content_type: Some(HTTP_INTEGRATION.into()),
                                http_prelude: Some(http::prelude(&a)),
                                body: a.body,
                            }
                        } else if a.status >= 500 {
                            Outcome::platform_error(
                                "Function.HttpError",
                                format!(
                                    "the component answered {} {}",
                                    a.status,
                                    String::from_utf8_lossy(&a.body[..a.body.len().min(256)])
                                ),
                            )
                        } else {
                            Outcome::Success(http::v2_response(&a))
                        }
                    }),
                    Loaded::Event(pre) => {
                        let ctx = context(&self.spec, &inv, deadline, t0);
                        run_event(pre, &mut store, &inv, &ctx).await
                    }
                }
            };
            tokio::time::timeout(timeout, fut).await
        };
        let end = Instant::now();
        store.data().flush_output();
        let limits = &store.data().limits;
        let (refused, peak) = (limits.refused, limits.peak);
        drop(store);
        self.last_peak = peak as u64;
        let mut timed_out = false;
        let outcome = match ran {
            Err(_) => {
                timed_out = true;
                self.timeout_outcome(&rid)
            }
            Ok(Ok(o)) => o,
            Ok(Err(Failure::TooLarge)) => Outcome::platform_error(
                "Function.ResponseSizeTooLarge",
                format!("RequestId: {rid} Error: the component's response is larger than 6 MB"),
            ),
            Ok(Err(Failure::NoResponse(why))) => {
                self.log.output(LogStreamKind::Stderr, why.as_bytes());
                Outcome::platform_error(
                    "Runtime.NoResponse",
                    format!("RequestId: {rid} Error: {why}"),
                )
            }
            Ok(Err(Failure::Wasm(e))) => {
                if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                    timed_out = true;
                    self.timeout_outcome(&rid)
                } else {
                    self.trap_outcome(&rid, &e, refused)
                }
            }
        };
        let duration = end.saturating_duration_since(t0);
        let init_duration = self.init.take();
        let log_tail = self.log.end_invocation(InvocationEnd {
            request_id: &rid,
            outcome: &outcome,
            timed_out,
            crashed: false,
            duration,
            memory_mb: self.spec.config.memory_mb,
            max_memory_mb: (self.last_peak + (1 << 20) - 1) >> 20,
            init: init_duration,
            trace: inv.trace_id.as_deref(),
        });
        InvokeResult {
            outcome,
            duration,
            init_duration,
            log_tail,
            started: true,
            init_failed: false,
        }
    }

    fn timeout_outcome(&self, rid: &str) -> Outcome {
        Outcome::platform_error(
            nimbus_runtime::TIMED_OUT,
            format!(
                "RequestId: {rid} Error: Task timed out after {}.00 seconds",
                self.spec.config.timeout_s
            ),
        )
    }

    /// A trap, an exit or a host failure, written to the function's log as Lambda logs a
    /// runtime's crash.
    fn trap_outcome(&self, rid: &str, e: &wasmtime::Error, memory_refused: bool) -> Outcome {
        if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            let msg = format!(
                "RequestId: {rid} Error: Runtime exited with error: exit status {}",
                exit.0
            );
            self.log.output(LogStreamKind::Stderr, msg.as_bytes());
            return Outcome::platform_error("Runtime.ExitError", msg);
        }
        let (kind, why) = if memory_refused {
            (
                "Runtime.OutOfMemory",
                format!(
                    "the component needed more memory than the function's {} MB ({e})",
                    self.spec.config.memory_mb
                ),
            )
        } else if e.downcast_ref::<Trap>().is_some() {
            ("Runtime.WasmTrap", format!("{e:#}"))
        } else {
            ("Runtime.WasmError", format!("{e:#}"))
        };
        let first = why.lines().next().unwrap_or_default().to_string();
        for line in why.lines() {
            self.log.output(LogStreamKind::Stderr, line.as_bytes());
        }
        Outcome::platform_error(kind, format!("RequestId: {rid} Error: {first}"))
    }
}

/// The `Content-Type` of an answer in Lambda's HTTP-integration format.
const HTTP_INTEGRATION: &str = "application/vnd.awslambda.http-integration-response";

async fn run_event(
    pre: &crate::event::EventHandlerPre<Host>,
    store: &mut Store<Host>,
    inv: &Invocation,
    ctx: &Context,
) -> Result<Outcome, Failure> {
    let handler = pre
        .instantiate_async(&mut *store)
        .await
        .map_err(Failure::Wasm)?;
    let answer = handler
        .nimbus_function_handler()
        .call_handle(&mut *store, &inv.payload, ctx)
        .await
        .map_err(Failure::Wasm)?;
    Ok(match answer {
        Ok(out) => Outcome::Success(out.into()),
        Err(e) => {
            let body = serde_json::json!({ "errorType": e.error_type, "errorMessage": e.message });
            Outcome::Error {
                error_type: e.error_type,
                body: body.to_string().into(),
            }
        }
    })
}

fn context(spec: &InstanceSpec, inv: &Invocation, deadline: Instant, now: Instant) -> Context {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let deadline_ms = (wall + deadline.saturating_duration_since(now)).as_millis() as u64;
    Context {
        request_id: inv.request_id.clone(),
        function_name: spec.function.to_string(),
        function_version: spec.version.clone(),
        invoked_function_arn: inv.invoked_arn.clone(),
        memory_limit_mb: spec.config.memory_mb,
        deadline_ms,
        trace_id: inv.trace_id.clone(),
        traceparent: inv.traceparent.clone(),
        client_context: inv.client_context.clone(),
    }
}

/// The component's environment: the function's variables and secrets, and Lambda's
/// own (`AWS_LAMBDA_FUNCTION_NAME`, …) as a process function has them.
fn environment(spec: &InstanceSpec, secrets: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = spec
        .config
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(secrets)
        .collect();
    let platform = [
        ("_HANDLER", spec.config.handler.clone()),
        (
            "AWS_EXECUTION_ENV",
            format!("Nimbus_{}", spec.config.runtime),
        ),
        ("AWS_LAMBDA_FUNCTION_NAME", spec.function.to_string()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            spec.config.memory_mb.to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_VERSION", spec.version.clone()),
        (
            "AWS_LAMBDA_FUNCTION_TIMEOUT",
            spec.config.timeout_s.to_string(),
        ),
        ("AWS_REGION", nimbus_core::arn::REGION.to_string()),
        ("AWS_DEFAULT_REGION", nimbus_core::arn::REGION.to_string()),
        ("LAMBDA_TASK_ROOT", "/var/task".to_string()),
        ("TZ", ":UTC".to_string()),
    ];
    env.retain(|(k, _)| !platform.iter().any(|(p, _)| p == k));
    env.extend(platform.into_iter().map(|(k, v)| (k.to_string(), v)));
    env
}

impl ComponentInstance for WasmInstance {
    fn id(&self) -> &str {
        &self.id
    }

    fn invoke(&mut self, inv: Invocation) -> BoxFuture<'_, InvokeResult> {
        Box::pin(self.run(inv))
    }

    fn is_healthy(&self) -> bool {
        // Every request has a fresh instance: a trap leaves nothing behind.
        true
    }

    fn memory_bytes(&self) -> Option<u64> {
        Some(self.last_peak)
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}
