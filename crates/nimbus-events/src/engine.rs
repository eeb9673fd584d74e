//! The asynchronous invocation engine: events are stored durably before the caller gets
//! its 202, then delivered through the same instance pools as synchronous calls, with
//! retries (exponential backoff with jitter), a maximum event age, dead-lettering,
//! destinations on success and failure, idempotency keys and a per-function circuit
//! breaker.
//!
//! Delivery is at-least-once: an event whose attempt was cut short by a crash runs again
//! after restart. An idempotency key (or the request id the function sees) is how a
//! function makes processing effectively-once.
//!
//! [`AsyncEngine::drain`] stops claiming, gives back claimed events that have not
//! started (due at once, for any node), and resolves when the deliveries in flight have
//! finished; [`AsyncEngine::cut_short`] and [`AsyncEngine::give_back_held`] hand back
//! those still running when the wait for them ran out (see [`crate::drain`]).

use crate::heartbeat::Heartbeat;
use nimbus_core::{arn, AsyncEvent, EventInvokeConfig, EventStatus};
use nimbus_metrics::{DropReason, Metrics, Trigger};
use nimbus_store::{Enqueued, EventQueue, EventUpdate, StoreError};
use nimbus_trace::{TraceContext, Tracer};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tracing::{debug, info, warn};

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Success {
        body: String,
        version: String,
    },
    FunctionError {
        body: String,
        error_type: String,
        version: String,
    },
    /// No capacity now: retried later without counting as an attempt.
    Throttled(String),
    /// The function (or qualifier) no longer exists: dead-lettered at once.
    Missing(String),
}

/// Runs an invocation for the engine (implemented by the gateway over the instance pools).
pub trait Invoker: Send + Sync + 'static {
    fn invoke<'a>(
        &'a self,
        function: &'a str,
        qualifier: &'a str,
        request_id: &'a str,
        payload: String,
    ) -> Pin<Box<dyn Future<Output = Attempt> + Send + 'a>>;

    /// [`Invoker::invoke`] for a given source (queue mappings say `Queue`), for the
    /// metrics; the default ignores it.
    fn invoke_as<'a>(
        &'a self,
        _trigger: nimbus_metrics::Trigger,
        function: &'a str,
        qualifier: &'a str,
        request_id: &'a str,
        payload: String,
    ) -> Pin<Box<dyn Future<Output = Attempt> + Send + 'a>> {
        self.invoke(function, qualifier, request_id, payload)
    }

    /// [`Invoker::invoke_as`] within a trace: `trace` is the invocation's parent context
    /// as work items store it (see [`TraceContext::parse_stored`]: a W3C `traceparent`
    /// or an X-Ray header, with its `tracestate`). The default ignores it.
    fn invoke_traced<'a>(
        &'a self,
        trigger: nimbus_metrics::Trigger,
        function: &'a str,
        qualifier: &'a str,
        request_id: &'a str,
        payload: String,
        _trace: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Attempt> + Send + 'a>> {
        self.invoke_as(trigger, function, qualifier, request_id, payload)
    }

    /// The function version's `DeadLetterConfig.TargetArn` (a queue or event bus ARN), if
    /// it has one: where an event goes when it is discarded.
    fn dead_letter_target<'a>(
        &'a self,
        _function: &'a str,
        _qualifier: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>> {
        Box::pin(async { None })
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Deliveries in flight at once, across functions (each still bounded by its
    /// function's concurrency limit in the pool).
    pub workers: usize,
    /// First retry delay; each further retry doubles it (Lambda waits about 1 and 2 minutes).
    pub retry_base: Duration,
    /// Test-only: event ages, backoffs and circuit cool-downs run this many times faster.
    pub time_scale: u32,
    /// A repeated idempotency key within this window is a no-op.
    pub idempotency_window: Duration,
    /// Consecutive failed deliveries that open a function's circuit.
    pub circuit_threshold: u32,
    /// How long an open circuit pauses delivery before a probe.
    pub circuit_cooldown: Duration,
    /// Finished events kept per function (older ones are pruned).
    pub keep_finished: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: 64,
            retry_base: Duration::from_secs(60),
            time_scale: 1,
            idempotency_window: Duration::from_secs(24 * 3600),
            circuit_threshold: 10,
            circuit_cooldown: Duration::from_secs(30),
            keep_finished: 10_000,
        }
    }
}

/// A function's circuit breaker, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum CircuitView {
    Closed { consecutive_failures: u32 },
    Open { reopens_in_ms: i64 },
    HalfOpen,
}

#[derive(Debug, Clone, Copy)]
enum Circuit {
    Closed(u32),
    Open {
        until_ms: i64,
    },
    /// A probe is in flight; everything else waits.
    HalfOpen,
}

/// Result of [`AsyncEngine::submit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub request_id: String,
    /// True when an idempotency key matched an earlier submission (nothing new was stored).
    pub duplicate: bool,
}

pub struct AsyncEngine {
    queue: Arc<dyn EventQueue>,
    cfg: EngineConfig,
    wake: Notify,
    circuits: Mutex<HashMap<String, Circuit>>,
    stopping: AtomicBool,
    /// Built-in queues, for queue destinations (`arn:aws:sqs:…`; set by the server).
    queues: std::sync::OnceLock<Arc<crate::mapping::MappingRunner>>,
    /// The event bus, for bus destinations (`arn:aws:events:…:event-bus/NAME`; set by
    /// [`crate::bus::EventBus::new`]; weak because the bus holds the engine).
    bus: std::sync::OnceLock<std::sync::Weak<crate::bus::EventBus>>,
    /// External targets, for destinations `arn:nimbus:targets:…` (set by the server).
    external: std::sync::OnceLock<Arc<dyn crate::external::ExternalTargets>>,
    /// Starts workflow executions (state machine targets and destinations).
    workflows: std::sync::OnceLock<Arc<dyn crate::external::WorkflowStarter>>,
    /// Beaten by every pass of the dispatch loop (which waits at most 1 s between passes).
    heartbeat: Heartbeat,
    /// Where received, retried and dropped events are counted (set by the server).
    metrics: std::sync::OnceLock<Arc<Metrics>>,
    /// Where the spans of asynchronous hops go (set by the server; off otherwise).
    tracer: std::sync::OnceLock<Tracer>,
    /// Events this engine claimed and has not finished: id → the lease end its claim
    /// wrote (what [`EventQueue::give_back`] needs).
    held: Mutex<HashMap<String, i64>>,
    /// Dispatch passes and deliveries in progress (for [`AsyncEngine::drain`]).
    busy: Arc<crate::drain::InFlight>,
    /// Set by [`AsyncEngine::cut_short`]: outcomes are no longer recorded (the events
    /// are given back instead).
    cut_short: AtomicBool,
}

/// Where a submitted event comes from: its trigger and the trace context it carries.
#[derive(Debug, Clone)]
pub struct Origin {
    pub trigger: Trigger,
    pub trace: Option<TraceContext>,
}

impl Default for Origin {
    fn default() -> Self {
        Origin {
            trigger: Trigger::Async,
            trace: None,
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl AsyncEngine {
    pub fn new(queue: Arc<dyn EventQueue>, cfg: EngineConfig) -> Arc<Self> {
        Arc::new(Self {
            queue,
            cfg,
            wake: Notify::new(),
            circuits: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            queues: Default::default(),
            bus: Default::default(),
            external: Default::default(),
            workflows: Default::default(),
            heartbeat: Heartbeat::new(Duration::from_secs(1)),
            metrics: Default::default(),
            tracer: Default::default(),
            held: Mutex::new(HashMap::new()),
            busy: Arc::new(crate::drain::InFlight::new()),
            cut_short: AtomicBool::new(false),
        })
    }

    /// Records the spans of asynchronous hops (bus rules, queue batches, schedule
    /// firings) with `tracer`.
    pub fn set_tracer(&self, tracer: Tracer) {
        let _ = self.tracer.set(tracer);
    }

    pub fn tracer(&self) -> &Tracer {
        static OFF: std::sync::OnceLock<Tracer> = std::sync::OnceLock::new();
        self.tracer
            .get()
            .unwrap_or_else(|| OFF.get_or_init(Tracer::off))
    }

    /// See [`Tracer::hop`].
    pub fn hop(
        &self,
        name: impl Into<std::borrow::Cow<'static, str>>,
        parent: Option<&TraceContext>,
        attributes: Vec<nimbus_trace::KeyValue>,
        links: Vec<TraceContext>,
    ) -> Option<TraceContext> {
        self.tracer().hop(name, parent, attributes, links)
    }

    /// Counts the engine's facts (events received, retried, dropped; dead-letter
    /// failures) in `metrics`.
    pub fn set_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Counts in the metrics set with [`Self::set_metrics`], if any (also for the bus and
    /// the scheduler, which deliver through this engine).
    pub(crate) fn count(&self, f: impl FnOnce(&Metrics)) {
        if let Some(m) = self.metrics.get() {
            f(m);
        }
    }

    /// The dispatch loop's heartbeat (for health checks).
    pub fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }

    /// Enables destinations on event buses.
    pub(crate) fn set_bus(&self, bus: std::sync::Weak<crate::bus::EventBus>) {
        let _ = self.bus.set(bus);
    }

    /// Enables destinations and bus targets outside Nimbus (`arn:nimbus:targets:…`).
    pub fn set_external(&self, targets: Arc<dyn crate::external::ExternalTargets>) {
        let _ = self.external.set(targets);
    }

    /// Enables state machine targets and destinations.
    pub fn set_workflows(&self, starter: Arc<dyn crate::external::WorkflowStarter>) {
        let _ = self.workflows.set(starter);
    }

    /// Starts an execution of `machine` with `input` (durable before it returns); its ARN.
    pub(crate) async fn to_workflow(
        &self,
        machine: &str,
        name: String,
        input: String,
        trace: Option<TraceContext>,
    ) -> Result<String, String> {
        let starter = self
            .workflows
            .get()
            .cloned()
            .ok_or_else(|| "workflows are not enabled".to_string())?;
        starter
            .start(machine, name, input, trace.map(|t| t.stored_xray()))
            .await
    }

    /// Hands `body` to the external target `name` (stored durably before it returns).
    pub(crate) async fn to_external(
        &self,
        name: &str,
        body: String,
        trace: Option<TraceContext>,
    ) -> Result<(), String> {
        let targets = self
            .external
            .get()
            .cloned()
            .ok_or_else(|| "external targets are not enabled".to_string())?;
        let n = name.to_string();
        tokio::task::spawn_blocking(move || {
            let trace = trace.map(|t| t.stored_traceparent());
            targets.enqueue(&n, &body, trace.as_deref())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Enables destinations on built-in queues: the destination record becomes a message.
    pub fn set_queues(&self, runner: Arc<crate::mapping::MappingRunner>) {
        let _ = self.queues.set(runner);
    }

    pub fn queue(&self) -> &Arc<dyn EventQueue> {
        &self.queue
    }

    /// How long an idempotency key is remembered (async submissions and sync results).
    pub fn idempotency_window(&self) -> Duration {
        self.cfg.idempotency_window
    }

    fn scaled(&self, d: Duration) -> i64 {
        (d.as_millis() as i64 / i64::from(self.cfg.time_scale.max(1))).max(1)
    }

    /// Stores an event durably (fsync) and returns its request id; the caller may answer
    /// 202 once this returns.
    pub async fn submit(
        &self,
        function: &str,
        qualifier: &str,
        payload: String,
        idempotency_key: Option<String>,
    ) -> Result<Submitted, StoreError> {
        self.submit_from(
            function,
            qualifier,
            payload,
            idempotency_key,
            Origin::default(),
        )
        .await
    }

    /// [`AsyncEngine::submit`] for an event from `origin`, whose trigger and trace
    /// context are stored with it.
    pub async fn submit_from(
        &self,
        function: &str,
        qualifier: &str,
        payload: String,
        idempotency_key: Option<String>,
        origin: Origin,
    ) -> Result<Submitted, StoreError> {
        let now = now_ms();
        let ev = AsyncEvent {
            id: uuid::Uuid::new_v4().to_string(),
            function: function.to_string(),
            qualifier: qualifier.to_string(),
            payload,
            status: EventStatus::Pending,
            attempts: 0,
            created_ms: now,
            next_attempt_ms: now,
            last_error: None,
            result: None,
            idempotency_key,
            trace: origin.trace.map(|t| t.stored_traceparent()),
            trigger: Some(origin.trigger.as_str().to_string()),
        };
        let queue = self.queue.clone();
        let window = self.cfg.idempotency_window.as_millis() as i64;
        let stored = ev.clone();
        let outcome = tokio::task::spawn_blocking(move || queue.enqueue(&stored, window))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
        Ok(match outcome {
            Enqueued::New => {
                self.count(|m| m.async_received(function));
                self.wake.notify_one();
                Submitted {
                    request_id: ev.id,
                    duplicate: false,
                }
            }
            Enqueued::Duplicate(id) => Submitted {
                request_id: id,
                duplicate: true,
            },
        })
    }

    /// Sends a dead or expired event of `function` again (see [`EventQueue::redrive`]) and
    /// wakes the dispatcher: it is attempted at once, as a new event would be.
    pub async fn redrive(&self, function: &str, id: &str) -> Result<AsyncEvent, StoreError> {
        let queue = self.queue.clone();
        let (f, i) = (function.to_string(), id.to_string());
        let ev = tokio::task::spawn_blocking(move || queue.redrive(&f, &i, now_ms()))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
        info!(function, event = id, "async event redriven");
        self.wake.notify_one();
        Ok(ev)
    }

    /// Forgets the circuit breaker state of `function` (after it was deleted: a function
    /// created again under the name starts closed, and nothing stays behind per name).
    pub fn forget_function(&self, function: &str) {
        self.circuits.lock().unwrap().remove(function);
    }

    /// The circuit breaker state of `function`.
    pub fn circuit(&self, function: &str) -> CircuitView {
        match self
            .circuits
            .lock()
            .unwrap()
            .get(function)
            .copied()
            .unwrap_or(Circuit::Closed(0))
        {
            Circuit::Closed(n) => CircuitView::Closed {
                consecutive_failures: n,
            },
            Circuit::Open { until_ms } => CircuitView::Open {
                reopens_in_ms: (until_ms - now_ms()).max(0),
            },
            Circuit::HalfOpen => CircuitView::HalfOpen,
        }
    }

    /// Starts delivering: requeues events a previous server left running, then dispatches
    /// until [`stop`](Self::stop).
    pub fn spawn(self: &Arc<Self>, invoker: Arc<dyn Invoker>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let q = me.queue.clone();
            match tokio::task::spawn_blocking(move || q.requeue_running(now_ms())).await {
                Ok(Ok(n)) if n > 0 => {
                    info!(events = n, "resuming async events interrupted by a restart")
                }
                Ok(Err(e)) => warn!("cannot requeue interrupted events: {e}"),
                _ => {}
            }
            me.dispatch(invoker).await;
        })
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Drains the engine: no more claims; claimed events that have not started are given
    /// back (due at once, for any node); resolves when the deliveries in flight have
    /// finished (the caller bounds the wait).
    pub async fn drain(&self) {
        self.stop();
        self.busy.idle().await;
    }

    /// Deliveries still running after a drain ran out of time: their outcomes are no
    /// longer recorded, so that [`AsyncEngine::give_back_held`] can hand their events to
    /// another node (or the next start) as attempts cut short, not counted as failures.
    pub fn cut_short(&self) {
        self.stop();
        self.cut_short.store(true, Ordering::SeqCst);
    }

    /// Gives back every event this engine still holds (see [`EventQueue::give_back`]);
    /// returns how many. Called after [`AsyncEngine::cut_short`].
    pub async fn give_back_held(&self) -> usize {
        let claims: Vec<(String, i64)> = self.held.lock().unwrap().drain().collect();
        if claims.is_empty() {
            return 0;
        }
        let q = self.queue.clone();
        match tokio::task::spawn_blocking(move || q.give_back(&claims, now_ms())).await {
            Ok(Ok(n)) => {
                if n > 0 {
                    info!(events = n, "async events cut short by the drain given back");
                }
                n
            }
            Ok(Err(e)) => {
                warn!("cannot give back async events (they return when their lease ends): {e}");
                0
            }
            Err(e) => {
                warn!("give-back task failed: {e}");
                0
            }
        }
    }

    /// A claimed event that will not run here (the engine is draining): back to the
    /// queue, due now.
    async fn give_back(&self, id: &str) {
        let Some(lease) = self.held.lock().unwrap().remove(id) else {
            return;
        };
        let (q, claims) = (self.queue.clone(), vec![(id.to_string(), lease)]);
        let res = tokio::task::spawn_blocking(move || q.give_back(&claims, now_ms())).await;
        match res {
            Ok(Ok(_)) => debug!(event = id, "async event given back by the drain"),
            _ => warn!(
                event = id,
                "cannot give back an async event (it returns when its lease ends): {res:?}"
            ),
        }
    }

    async fn dispatch(self: Arc<Self>, invoker: Arc<dyn Invoker>) {
        let slots = Arc::new(Semaphore::new(self.cfg.workers));
        // Longer than any function can run (900 s) plus margin: a live attempt never loses
        // its lease; a dead server's attempts are requeued at the next start.
        let lease_ms = 16 * 60 * 1000;
        let mut last_prune = now_ms();
        let stall = crate::heartbeat::stall_dispatcher_requested();
        if stall {
            warn!(
                "TEST ONLY: {} is set: the async dispatcher stops after its first pass",
                crate::heartbeat::STALL_DISPATCHER_ENV
            );
        }
        loop {
            // Held across the pass: a drain that sees no pass in progress knows none will
            // claim any more.
            let pass = self.busy.enter();
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            self.heartbeat.beat();
            if stall {
                std::future::pending::<()>().await;
            }
            let free = slots.available_permits();
            let mut claimed = 0;
            if free > 0 {
                let q = self.queue.clone();
                let now = now_ms();
                match tokio::task::spawn_blocking(move || q.claim_due(now, free, lease_ms)).await {
                    Ok(Ok(events)) => {
                        claimed = events.len();
                        self.held
                            .lock()
                            .unwrap()
                            .extend(events.iter().map(|ev| (ev.id.clone(), now + lease_ms)));
                        for ev in events {
                            let permit =
                                slots.clone().acquire_owned().await.expect("semaphore open");
                            let (me, inv) = (self.clone(), invoker.clone());
                            let delivering = self.busy.enter();
                            tokio::spawn(async move {
                                if me.stopping.load(Ordering::SeqCst) {
                                    me.give_back(&ev.id).await;
                                } else {
                                    me.deliver(ev, inv.as_ref()).await;
                                }
                                drop(permit);
                                drop(delivering);
                                me.wake.notify_one();
                            });
                        }
                    }
                    Ok(Err(e)) => warn!("cannot claim async events: {e}"),
                    Err(e) => warn!("claim task failed: {e}"),
                }
            }
            if now_ms() - last_prune > 60_000 {
                last_prune = now_ms();
                let (q, keep) = (self.queue.clone(), self.cfg.keep_finished);
                tokio::task::spawn_blocking(move || q.prune(keep));
            }
            if claimed > 0 && claimed == free {
                continue; // maybe more are due
            }
            let wait = if slots.available_permits() == 0 {
                Duration::from_secs(1)
            } else {
                let q = self.queue.clone();
                let next = tokio::task::spawn_blocking(move || q.next_due_ms())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten();
                match next {
                    Some(t) => Duration::from_millis((t - now_ms()).clamp(1, 1000) as u64),
                    None => Duration::from_secs(1),
                }
            };
            drop(pass);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Whether delivery to `function` may proceed now; if not, when to try again.
    fn circuit_admits(&self, function: &str, now: i64) -> Result<(), i64> {
        let mut circuits = self.circuits.lock().unwrap();
        let c = circuits
            .entry(function.to_string())
            .or_insert(Circuit::Closed(0));
        match *c {
            Circuit::Closed(_) => Ok(()),
            Circuit::Open { until_ms } if now >= until_ms => {
                info!(function, "circuit half-open: probing with one event");
                *c = Circuit::HalfOpen;
                Ok(())
            }
            Circuit::Open { until_ms } => Err(until_ms),
            Circuit::HalfOpen => Err(now + self.scaled(self.cfg.circuit_cooldown) / 4),
        }
    }

    fn record_outcome(&self, function: &str, ok: bool, now: i64) {
        let mut circuits = self.circuits.lock().unwrap();
        let c = circuits
            .entry(function.to_string())
            .or_insert(Circuit::Closed(0));
        let next = match (*c, ok) {
            (Circuit::Closed(_), true) => Circuit::Closed(0),
            (_, true) => {
                info!(function, "circuit closed: the function recovered");
                Circuit::Closed(0)
            }
            (Circuit::Closed(n), false) if n + 1 < self.cfg.circuit_threshold => {
                Circuit::Closed(n + 1)
            }
            (_, false) => {
                let until_ms = now + self.scaled(self.cfg.circuit_cooldown);
                warn!(function, cooldown_ms = until_ms - now, "circuit open: pausing async delivery after repeated failures; events keep queueing");
                Circuit::Open { until_ms }
            }
        };
        *c = next;
    }

    fn backoff_ms(&self, attempt: u32) -> i64 {
        let base =
            self.scaled(self.cfg.retry_base) as f64 * 2f64.powi(attempt.saturating_sub(1) as i32);
        // ±20% jitter so retries of a burst spread out.
        let jitter = 0.8 + 0.4 * (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0;
        (base * jitter) as i64
    }

    async fn finish(&self, id: &str, update: EventUpdate) {
        if self.cut_short.load(Ordering::SeqCst) {
            // Given back instead (see `cut_short`).
            return;
        }
        let (q, id2) = (self.queue.clone(), id.to_string());
        let res = tokio::task::spawn_blocking(move || q.finish(&id2, &update, now_ms())).await;
        if !matches!(res, Ok(Ok(()))) {
            warn!(
                event = id,
                "cannot record the outcome of an async event: {res:?}"
            );
        }
        self.held.lock().unwrap().remove(id);
    }

    async fn deliver(&self, ev: AsyncEvent, invoker: &dyn Invoker) {
        let now = now_ms();
        let cfg = {
            let (me_q, f) = (self.queue.clone(), ev.function.clone());
            tokio::task::spawn_blocking(move || me_q.config(&f).ok().flatten().unwrap_or_default())
                .await
                .unwrap_or_default()
        };
        let max_age_ms = self.scaled(Duration::from_secs(u64::from(cfg.maximum_event_age_s)));
        if now - ev.created_ms > max_age_ms {
            info!(event = %ev.id, function = %ev.function, "async event expired (maximum event age)");
            // The dead-letter copy before the event is marked: a crash in between sends
            // it again after the restart (at least once), never not at all.
            self.count(|m| m.async_dropped(&ev.function, DropReason::Expired));
            let why = ev
                .last_error
                .as_deref()
                .unwrap_or("maximum event age exceeded");
            self.dead_letter(invoker, &ev, 200, why).await;
            self.finish(&ev.id, EventUpdate::Expired).await;
            self.destination(&cfg, &ev, "EventAgeExceeded", None).await;
            return;
        }
        if let Err(retry_at) = self.circuit_admits(&ev.function, now) {
            let update = EventUpdate::Retry {
                error: "circuit open: delivery paused".into(),
                next_attempt_ms: retry_at,
                counted: false,
            };
            self.finish(&ev.id, update).await;
            return;
        }
        if self.stopping.load(Ordering::SeqCst) {
            // Draining: not started yet, so it goes back for another node.
            self.give_back(&ev.id).await;
            return;
        }
        let trigger = ev
            .trigger
            .as_deref()
            .and_then(Trigger::parse)
            .unwrap_or(Trigger::Async);
        let attempt = invoker
            .invoke_traced(
                trigger,
                &ev.function,
                &ev.qualifier,
                &ev.id,
                ev.payload.clone(),
                ev.trace.as_deref(),
            )
            .await;
        if ev.attempts == 0 && !matches!(attempt, Attempt::Throttled(_) | Attempt::Missing(_)) {
            let age = Duration::from_millis((now - ev.created_ms).max(0) as u64);
            self.count(|m| m.async_event_age(&ev.function, age));
        }
        let now = now_ms();
        match attempt {
            Attempt::Success { body, version } => {
                self.record_outcome(&ev.function, true, now);
                debug!(event = %ev.id, function = %ev.function, "async event delivered");
                self.finish(
                    &ev.id,
                    EventUpdate::Succeeded {
                        result: body.clone(),
                    },
                )
                .await;
                let response = Response {
                    status: 200,
                    version,
                    error: None,
                    body,
                };
                self.destination(&cfg, &ev, "Success", Some(response)).await;
            }
            Attempt::FunctionError {
                body,
                error_type,
                version,
            } => {
                self.record_outcome(&ev.function, false, now);
                let attempts = ev.attempts + 1;
                let error = format!("{error_type}: {}", error_message(&body));
                if attempts > cfg.maximum_retry_attempts {
                    info!(event = %ev.id, function = %ev.function, attempts, "async event dead-lettered: retries exhausted");
                    self.dead_letter(invoker, &ev, 200, &error).await;
                    // Counted before the event shows as dead (readers of both agree).
                    self.count(|m| m.async_dropped(&ev.function, DropReason::Dead));
                    self.finish(&ev.id, EventUpdate::Dead { error }).await;
                    let response = Response {
                        status: 200,
                        version,
                        error: Some("Unhandled".into()),
                        body,
                    };
                    let mut dead = ev.clone();
                    dead.attempts = attempts;
                    self.destination(&cfg, &dead, "RetriesExhausted", Some(response))
                        .await;
                } else {
                    let next_attempt_ms = now + self.backoff_ms(attempts);
                    debug!(event = %ev.id, attempts, next_attempt_ms, "async event will be retried");
                    self.count(|m| m.async_retry(&ev.function));
                    self.finish(
                        &ev.id,
                        EventUpdate::Retry {
                            error,
                            next_attempt_ms,
                            counted: true,
                        },
                    )
                    .await;
                }
            }
            Attempt::Throttled(why) => {
                let next_attempt_ms = now + self.scaled(Duration::from_secs(1)).max(10);
                self.finish(
                    &ev.id,
                    EventUpdate::Retry {
                        error: why,
                        next_attempt_ms,
                        counted: false,
                    },
                )
                .await;
            }
            Attempt::Missing(why) => {
                warn!(event = %ev.id, function = %ev.function, "async event dead-lettered: {why}");
                self.count(|m| m.async_dropped(&ev.function, DropReason::Dead));
                self.finish(&ev.id, EventUpdate::Dead { error: why }).await;
            }
        }
    }

    /// Lambda's dead-letter queue: the unmodified event, with the attributes `RequestID`,
    /// `ErrorCode` (the 3-digit HTTP status of the last attempt) and `ErrorMessage` (its
    /// first KB), to the version's `DeadLetterConfig.TargetArn` — a built-in queue (a
    /// message with those attributes) or an event bus (detail-type `Lambda Function Dead
    /// Letter`, whose `detail` holds the three attributes and the event as
    /// `requestPayload`). A failed delivery is logged (Lambda's `DeadLetterErrors`).
    async fn dead_letter(&self, invoker: &dyn Invoker, ev: &AsyncEvent, code: u16, error: &str) {
        let Some(target) = invoker
            .dead_letter_target(&ev.function, &ev.qualifier)
            .await
        else {
            return;
        };
        let mut message: String = error.chars().take(1024).collect();
        while message.len() > 1024 {
            message.pop();
        }
        let trace = self.hop_from(
            ev,
            "dead letter",
            vec![
                nimbus_trace::KeyValue::new("nimbus.dead_letter", target.clone()),
                nimbus_trace::KeyValue::new("error.message", message.clone()),
            ],
        );
        if let Some((_, bus)) = bus_from_arn(&target) {
            let payload = serde_json::from_str::<serde_json::Value>(&ev.payload)
                .unwrap_or_else(|_| ev.payload.clone().into());
            let event = crate::bus::envelope(
                &uuid::Uuid::new_v4().to_string(),
                "lambda",
                "Lambda Function Dead Letter",
                now_ms(),
                &[format!(
                    "{}:{}",
                    arn::function_arn(&ev.function, None),
                    ev.qualifier
                )],
                serde_json::json!({
                    "RequestID": ev.id,
                    "ErrorCode": code,
                    "ErrorMessage": message,
                    "requestPayload": payload,
                }),
            );
            if !self.to_bus(&target, bus, &event, trace).await {
                self.count(|m| m.dead_letter_error(&ev.function));
            }
            return;
        }
        let attributes = serde_json::json!({
            "RequestID": {"stringValue": ev.id, "dataType": "String"},
            "ErrorCode": {"stringValue": code.to_string(), "dataType": "Number"},
            "ErrorMessage": {"stringValue": message, "dataType": "String"},
        });
        if self
            .to_queue(&target, ev.payload.clone(), attributes, trace)
            .await
        {
            info!(event = %ev.id, function = %ev.function, dead_letter = %target, "event sent to the dead-letter queue");
        } else {
            self.count(|m| m.dead_letter_error(&ev.function));
        }
    }

    /// The context a copy of `ev` sent on by the engine carries (a dead-letter copy, a
    /// destination record): a producer span `name` with `attributes`, child of the
    /// event's context.
    fn hop_from(
        &self,
        ev: &AsyncEvent,
        name: &'static str,
        attributes: Vec<nimbus_trace::KeyValue>,
    ) -> Option<TraceContext> {
        let parent = ev.trace.as_deref().and_then(TraceContext::parse_stored);
        self.hop(name, parent.as_ref(), attributes, Vec::new())
    }

    /// Routes `event` on the bus `bus` (named by `target`) within `trace`; false (logged)
    /// when it cannot.
    async fn to_bus(
        &self,
        target: &str,
        bus: &str,
        event: &serde_json::Value,
        trace: Option<TraceContext>,
    ) -> bool {
        let Some(bus_handle) = self.bus.get().and_then(std::sync::Weak::upgrade) else {
            warn!(destination = %target, "event bus destinations are not enabled");
            return false;
        };
        match bus_handle.route_envelope_traced(bus, event, trace).await {
            Ok(_) => true,
            Err(e) => {
                warn!(destination = %target, "cannot route the event: {e}");
                false
            }
        }
    }

    /// Sends one message to the built-in queue named by the ARN `target`, carrying `trace`
    /// (its `AWSTraceHeader`); false (logged) when it cannot.
    async fn to_queue(
        &self,
        target: &str,
        body: String,
        attributes: serde_json::Value,
        trace: Option<TraceContext>,
    ) -> bool {
        let Some(queue) = crate::mapping::queue_from_arn(target) else {
            warn!(destination = %target, "not a queue ARN");
            return false;
        };
        let Some(runner) = self.queues.get().cloned() else {
            warn!(destination = %target, "queue destinations are not enabled");
            return false;
        };
        let (store, q) = (runner.store().clone(), queue.to_string());
        let msg = nimbus_store::NewMessage {
            body,
            attributes,
            trace: trace.map(|t| t.stored_xray()),
            ..Default::default()
        };
        match tokio::task::spawn_blocking(move || store.send(&q, &[msg], now_ms())).await {
            Ok(Ok(_)) => {
                runner.messages_sent();
                true
            }
            Ok(Err(e)) => {
                warn!(destination = %target, "cannot send the message: {e}");
                false
            }
            Err(e) => {
                warn!("queue send task failed: {e}");
                false
            }
        }
    }

    /// Sends Lambda's destination record to the configured function, queue or bus, if
    /// any, within a `destination` span of the event's trace.
    async fn destination(
        &self,
        cfg: &EventInvokeConfig,
        ev: &AsyncEvent,
        condition: &str,
        response: Option<Response>,
    ) {
        let target = if condition == "Success" {
            &cfg.on_success
        } else {
            &cfg.on_failure
        };
        let Some(target) = target else { return };
        let trace = self.hop_from(
            ev,
            "destination",
            vec![
                nimbus_trace::KeyValue::new("nimbus.destination", target.destination.clone()),
                nimbus_trace::KeyValue::new("nimbus.condition", condition.to_string()),
            ],
        );
        if let Some((_, bus)) = bus_from_arn(&target.destination) {
            // Lambda's event for an EventBridge destination: the record is the detail.
            let record = destination_record(ev, condition, response.as_ref());
            let result = if condition == "Success" {
                "Success"
            } else {
                "Failure"
            };
            let event = crate::bus::envelope(
                &uuid::Uuid::new_v4().to_string(),
                "lambda",
                &format!("Lambda Function Invocation Result - {result}"),
                now_ms(),
                &[
                    crate::bus::bus_arn(bus),
                    format!("{}:{}", arn::function_arn(&ev.function, None), ev.qualifier),
                ],
                record,
            );
            if !self.to_bus(&target.destination, bus, &event, trace).await {
                self.count(|m| m.destination_failure(&ev.function));
            }
            return;
        }
        if let Some(name) = arn::target_from_arn(&target.destination) {
            let record = destination_record(ev, condition, response.as_ref());
            if let Err(e) = self.to_external(name, record.to_string(), trace).await {
                warn!(destination = %target.destination, "cannot hand the destination record over: {e}");
                self.count(|m| m.destination_failure(&ev.function));
            }
            return;
        }
        if crate::external::is_state_machine_arn(&target.destination) {
            let record = destination_record(ev, condition, response.as_ref());
            let name = crate::external::execution_name(
                &format!("{}-{condition}", ev.id),
                &target.destination,
            );
            if let Err(e) = self
                .to_workflow(&target.destination, name, record.to_string(), trace)
                .await
            {
                warn!(destination = %target.destination, "cannot start the destination workflow: {e}");
                self.count(|m| m.destination_failure(&ev.function));
            }
            return;
        }
        if target.destination.starts_with("arn:aws:sqs:") {
            let record = destination_record(ev, condition, response.as_ref());
            let sent = self
                .to_queue(
                    &target.destination,
                    record.to_string(),
                    serde_json::Value::Null,
                    trace,
                )
                .await;
            if !sent {
                self.count(|m| m.destination_failure(&ev.function));
            }
            return;
        }
        let Ok((name, qualifier)) = arn::parse_function_ref(&target.destination) else {
            warn!(destination = %target.destination, "invalid destination");
            self.count(|m| m.destination_failure(&ev.function));
            return;
        };
        let record = destination_record(ev, condition, response.as_ref());
        let q = qualifier.unwrap_or_else(|| nimbus_core::LATEST.to_string());
        let origin = Origin {
            trigger: Trigger::Async,
            trace,
        };
        if let Err(e) = self
            .submit_from(name.as_str(), &q, record.to_string(), None, origin)
            .await
        {
            warn!(destination = %name, "cannot queue the destination record: {e}");
            self.count(|m| m.destination_failure(&ev.function));
        }
    }
}

/// `(region-and-account, bus name)` of an event bus ARN (`arn:aws:events:…:event-bus/NAME`).
pub(crate) fn bus_from_arn(arn: &str) -> Option<(&str, &str)> {
    arn.strip_prefix("arn:aws:events:")
        .and_then(|rest| rest.split_once(":event-bus/"))
}

/// What the function answered, for destination records.
struct Response {
    status: u16,
    version: String,
    error: Option<String>,
    body: String,
}

fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("errorMessage")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.chars().take(256).collect())
}

/// Lambda's destination record (`version` 1.0, `requestContext`, `requestPayload`,
/// `responseContext`, `responsePayload`).
fn destination_record(
    ev: &AsyncEvent,
    condition: &str,
    response: Option<&Response>,
) -> serde_json::Value {
    let ts = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let payload =
        |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap_or_else(|_| s.into());
    let mut record = serde_json::json!({
        "version": "1.0",
        "timestamp": ts,
        "requestContext": {
            "requestId": ev.id,
            "functionArn": arn::function_arn(&ev.function, Some(&ev.qualifier)),
            "condition": condition,
            "approximateInvokeCount": ev.attempts.max(1),
        },
        "requestPayload": payload(&ev.payload),
    });
    if let Some(r) = response {
        let mut ctx = serde_json::json!({ "statusCode": r.status, "executedVersion": r.version });
        if let Some(e) = &r.error {
            ctx["functionError"] = e.clone().into();
        }
        record["responseContext"] = ctx;
        record["responsePayload"] = payload(&r.body);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_store::SqliteEventQueue;
    use std::sync::atomic::AtomicU32;

    /// Fails the first `fail` calls per function, then succeeds; records calls.
    struct Flaky {
        fail: u32,
        calls: Mutex<HashMap<String, Vec<(i64, String)>>>,
        count: AtomicU32,
    }

    impl Invoker for Flaky {
        fn invoke<'a>(
            &'a self,
            function: &'a str,
            _q: &'a str,
            _id: &'a str,
            payload: String,
        ) -> Pin<Box<dyn Future<Output = Attempt> + Send + 'a>> {
            Box::pin(async move {
                let mut calls = self.calls.lock().unwrap();
                let list = calls.entry(function.to_string()).or_default();
                list.push((now_ms(), payload));
                self.count.fetch_add(1, Ordering::SeqCst);
                if function == "flaky" && (list.len() as u32) <= self.fail {
                    Attempt::FunctionError {
                        body: r#"{"errorMessage":"nope","errorType":"Error"}"#.into(),
                        error_type: "Error".into(),
                        version: "$LATEST".into(),
                    }
                } else {
                    Attempt::Success {
                        body: r#"{"ok":true}"#.into(),
                        version: "$LATEST".into(),
                    }
                }
            })
        }
    }

    fn engine(dir: &std::path::Path, cfg: EngineConfig) -> Arc<AsyncEngine> {
        AsyncEngine::new(Arc::new(SqliteEventQueue::open(dir).unwrap()), cfg)
    }

    async fn wait_final(e: &AsyncEngine, id: &str) -> AsyncEvent {
        for _ in 0..500 {
            let ev = e.queue().get(id).unwrap();
            if ev.status.is_final() {
                return ev;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("event {id} never finished");
    }

    #[tokio::test]
    async fn retries_with_growing_delays_then_dead_letter_and_destination() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(
            dir.path(),
            EngineConfig {
                retry_base: Duration::from_millis(100),
                ..Default::default()
            },
        );
        let dlq = arn::function_arn("dlq", None);
        e.queue()
            .put_config(
                "flaky",
                Some(&EventInvokeConfig {
                    on_failure: Some(nimbus_core::Destination { destination: dlq }),
                    ..Default::default()
                }),
            )
            .unwrap();
        let inv = Arc::new(Flaky {
            fail: 10,
            calls: Default::default(),
            count: AtomicU32::new(0),
        });
        let metrics = nimbus_metrics::Metrics::new(Default::default());
        e.set_metrics(metrics.clone());
        e.spawn(inv.clone());
        let s = e
            .submit("flaky", "$LATEST", r#"{"n":1}"#.into(), None)
            .await
            .unwrap();
        let ev = wait_final(&e, &s.request_id).await;
        assert_eq!(ev.status, EventStatus::Dead);
        assert_eq!(ev.attempts, 3, "first attempt + 2 retries");
        let text = metrics.encode().unwrap();
        for line in [
            r#"nimbus_async_events_received_total{function="flaky"} 1"#,
            r#"nimbus_async_retries_total{function="flaky"} 2"#,
            r#"nimbus_async_events_dropped_total{function="flaky",reason="dead"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(ev.last_error.as_deref().unwrap().contains("nope"));
        let calls = inv.calls.lock().unwrap()["flaky"].clone();
        assert_eq!(calls.len(), 3);
        let (d1, d2) = (calls[1].0 - calls[0].0, calls[2].0 - calls[1].0);
        assert!(
            d1 >= 80 && d2 >= 160 && d2 > d1,
            "backoff grows: {d1} ms then {d2} ms"
        );
        // The failure destination got Lambda's record.
        for _ in 0..200 {
            if inv.calls.lock().unwrap().contains_key("dlq") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let record: serde_json::Value =
            serde_json::from_str(&inv.calls.lock().unwrap()["dlq"][0].1).unwrap();
        assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
        assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
        assert_eq!(record["requestPayload"], serde_json::json!({"n": 1}));
        assert_eq!(record["responseContext"]["functionError"], "Unhandled");
        e.stop();
    }

    #[tokio::test]
    async fn idempotent_submissions_run_once() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path(), EngineConfig::default());
        let inv = Arc::new(Flaky {
            fail: 0,
            calls: Default::default(),
            count: AtomicU32::new(0),
        });
        e.spawn(inv.clone());
        let a = e
            .submit("f", "$LATEST", "{}".into(), Some("k1".into()))
            .await
            .unwrap();
        let b = e
            .submit("f", "$LATEST", "{}".into(), Some("k1".into()))
            .await
            .unwrap();
        assert!(!a.duplicate && b.duplicate);
        assert_eq!(a.request_id, b.request_id);
        wait_final(&e, &a.request_id).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(inv.count.load(Ordering::SeqCst), 1);
        e.stop();
    }

    #[tokio::test]
    async fn circuit_opens_and_closes_without_losing_events() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = EngineConfig {
            retry_base: Duration::from_millis(20),
            circuit_threshold: 3,
            circuit_cooldown: Duration::from_millis(300),
            ..Default::default()
        };
        let e = engine(dir.path(), cfg);
        e.queue()
            .put_config(
                "flaky",
                Some(&EventInvokeConfig {
                    maximum_retry_attempts: 2,
                    ..Default::default()
                }),
            )
            .unwrap();
        let inv = Arc::new(Flaky {
            fail: 3,
            calls: Default::default(),
            count: AtomicU32::new(0),
        });
        e.spawn(inv.clone());
        let first = e
            .submit("flaky", "$LATEST", "{}".into(), None)
            .await
            .unwrap();
        // Three failures open the circuit.
        let mut opened = false;
        for _ in 0..300 {
            if matches!(e.circuit("flaky"), CircuitView::Open { .. }) {
                opened = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(opened, "circuit opened");
        let queued: Vec<_> = futures_submit(&e, 5).await;
        // Nothing runs while open.
        let calls_while_open = inv.count.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(inv.count.load(Ordering::SeqCst), calls_while_open);
        // The first event failed all three attempts: dead-lettered, not lost.
        assert_eq!(
            wait_final(&e, &first.request_id).await.status,
            EventStatus::Dead
        );
        // After the cool-down a probe succeeds and every queued event is delivered.
        for id in &queued {
            let ev = wait_final(&e, id).await;
            assert_eq!(ev.status, EventStatus::Succeeded, "{id}");
            assert_eq!(ev.attempts, 1, "paused events kept their attempts");
        }
        assert_eq!(
            e.circuit("flaky"),
            CircuitView::Closed {
                consecutive_failures: 0
            }
        );
        e.stop();
    }

    #[tokio::test]
    async fn forgetting_a_deleted_function_drops_its_circuit() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = EngineConfig {
            circuit_threshold: 1,
            ..Default::default()
        };
        let e = engine(dir.path(), cfg);
        e.record_outcome("gone", false, now_ms());
        assert!(matches!(e.circuit("gone"), CircuitView::Open { .. }));
        e.forget_function("gone");
        assert_eq!(
            e.circuit("gone"),
            CircuitView::Closed {
                consecutive_failures: 0
            }
        );
        assert!(e.circuits.lock().unwrap().is_empty());
    }

    async fn futures_submit(e: &AsyncEngine, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            ids.push(
                e.submit("flaky", "$LATEST", format!("{{\"i\":{i}}}"), None)
                    .await
                    .unwrap()
                    .request_id,
            );
        }
        ids
    }

    #[tokio::test]
    async fn old_events_expire_into_the_failure_destination() {
        let dir = tempfile::tempdir().unwrap();
        // 60 s maximum age at 1000x speed: 60 ms.
        let e = engine(
            dir.path(),
            EngineConfig {
                time_scale: 1000,
                ..Default::default()
            },
        );
        e.queue()
            .put_config(
                "f",
                Some(&EventInvokeConfig {
                    maximum_event_age_s: 60,
                    ..Default::default()
                }),
            )
            .unwrap();
        let metrics = nimbus_metrics::Metrics::new(Default::default());
        e.set_metrics(metrics.clone());
        let s = e.submit("f", "$LATEST", "{}".into(), None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        let inv = Arc::new(Flaky {
            fail: 0,
            calls: Default::default(),
            count: AtomicU32::new(0),
        });
        e.spawn(inv.clone());
        assert_eq!(
            wait_final(&e, &s.request_id).await.status,
            EventStatus::Expired
        );
        assert_eq!(
            inv.count.load(Ordering::SeqCst),
            0,
            "an expired event is never delivered"
        );
        let text = metrics.encode().unwrap();
        let line = r#"nimbus_async_events_dropped_total{function="f",reason="expired"} 1"#;
        assert!(text.lines().any(|l| l == line), "{text}");
        e.stop();
    }
    /// Holds every invocation until the gate opens; counts starts and ends.
    struct Gated {
        open: tokio::sync::Semaphore,
        started: AtomicU32,
        ended: AtomicU32,
    }

    impl Invoker for Gated {
        fn invoke<'a>(
            &'a self,
            _function: &'a str,
            _q: &'a str,
            _id: &'a str,
            _payload: String,
        ) -> Pin<Box<dyn Future<Output = Attempt> + Send + 'a>> {
            Box::pin(async move {
                self.started.fetch_add(1, Ordering::SeqCst);
                let _ = self.open.acquire().await.unwrap();
                self.ended.fetch_add(1, Ordering::SeqCst);
                Attempt::Success {
                    body: "1".into(),
                    version: "$LATEST".into(),
                }
            })
        }
    }

    async fn started(g: &Gated, n: u32) {
        for _ in 0..500 {
            if g.started.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{n} deliveries never started");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drain_stops_claiming_and_lets_deliveries_in_flight_finish() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(
            dir.path(),
            EngineConfig {
                workers: 1,
                ..Default::default()
            },
        );
        let gate = Arc::new(Gated {
            open: tokio::sync::Semaphore::new(0),
            started: AtomicU32::new(0),
            ended: AtomicU32::new(0),
        });
        let task = e.spawn(gate.clone());
        let a = e.submit("f", "$LATEST", "{}".into(), None).await.unwrap();
        started(&gate, 1).await;
        let b = e.submit("f", "$LATEST", "{}".into(), None).await.unwrap();
        let drain = {
            let e = e.clone();
            tokio::spawn(async move { e.drain().await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!drain.is_finished(), "a delivery is still in flight");
        // The event waiting for a slot was never claimed: another node takes it now.
        let other = SqliteEventQueue::open(dir.path()).unwrap();
        let taken = other.claim_due(now_ms(), 10, 60_000).unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].id, b.request_id);
        gate.open.add_permits(10);
        tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            wait_final(&e, &a.request_id).await.status,
            EventStatus::Succeeded
        );
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            gate.started.load(Ordering::SeqCst),
            1,
            "nothing new started"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_still_running_when_the_drain_runs_out_are_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path(), EngineConfig::default());
        let gate = Arc::new(Gated {
            open: tokio::sync::Semaphore::new(0),
            started: AtomicU32::new(0),
            ended: AtomicU32::new(0),
        });
        let _task = e.spawn(gate.clone());
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(
                e.submit("f", "$LATEST", "{}".into(), None)
                    .await
                    .unwrap()
                    .request_id,
            );
        }
        started(&gate, 3).await;
        let other = SqliteEventQueue::open(dir.path()).unwrap();
        assert!(
            other.claim_due(now_ms(), 10, 60_000).unwrap().is_empty(),
            "leased"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(100), e.drain())
                .await
                .is_err(),
            "the deliveries are held at the gate"
        );
        e.cut_short();
        assert_eq!(e.give_back_held().await, 3);
        let mut taken: Vec<String> = other
            .claim_due(now_ms(), 10, 60_000)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        taken.sort();
        ids.sort();
        assert_eq!(taken, ids, "claimable by another node at once");
        // The cut-short deliveries end: they record nothing over the new claims.
        gate.open.add_permits(10);
        for _ in 0..100 {
            if gate.ended.load(Ordering::SeqCst) == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        for id in &ids {
            let ev = other.get(id).unwrap();
            assert_eq!((ev.status, ev.attempts), (EventStatus::Running, 0));
        }
    }
}
