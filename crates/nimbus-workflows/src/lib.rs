//! The durable workflow executor: runs Amazon States Language executions recorded in a
//! [`FlowStore`].
//!
//! [`Workflows`] starts executions (recording `ExecutionStarted` and the first step in one
//! transaction), stops and redrives them, resolves task tokens, and runs the step loop:
//! claim due steps (leased), run each ([`run`]) and commit its transition with its
//! completion. A `kill -9` loses nothing: a step whose lease expires is claimed again and
//! re-run from its recorded input, so Tasks run at least once (the task token, or
//! `$$.Execution.Id` + `$$.State.Name` + `$$.State.RetryCount`, is the idempotency key a
//! function can use). Wait states and retry backoffs are steps due later: no thread waits.
//!
//! [`Workflows::drain`] stops claiming, hands back steps claimed but not started (due at
//! once, for any node) and resolves when the steps running have committed;
//! [`Workflows::shutdown`] then makes steps still running hand their claims back.
//!
//! - [`scope`]: where a step runs (top level, a Parallel branch, a Map iteration);
//! - [`context`]: parsed definitions and the context object;
//! - [`tasks`]: Task resources and the [`TaskRunner`] the server implements;
//! - [`run`]: the interpreter of one step.

pub mod context;
pub mod error;
pub mod run;
pub mod scope;
pub mod tasks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nimbus_flows::definition::StateMachine;
use nimbus_flows::store::{
    execution_arn, Execution, ExecutionStatus, FlowStore, Millis, NewEvent, NewExecution, NewStep,
    Started, StoreError, TokenAnswer, TokenResolution,
};
use rand::Rng;
use serde_json::json;
use tokio::sync::{oneshot, Notify, Semaphore};
use tracing::{debug, warn, Instrument};

pub use error::{WorkflowError, WorkflowResult};
pub use tasks::{BoxFuture, FunctionCall, TaskOutcome, TaskRunner};

use context::Loaded;
use run::{Payload, Phase, Runner, MAX_PAYLOAD};

/// The executor's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Steps run at once (each a state or a chain of states of one execution).
    pub max_active_steps: usize,
    /// How long a claimed step is leased before another worker may take it.
    pub lease: Duration,
    /// Test only: Wait `Seconds` are divided by this.
    pub time_scale: u32,
    /// Finished executions are deleted this long after their end.
    pub retention: Duration,
    pub region: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_active_steps: 64,
            lease: Duration::from_secs(20),
            time_scale: 1,
            retention: Duration::from_secs(90 * 86_400),
            region: "us-east-1".into(),
        }
    }
}

/// `StartExecution`.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// A state machine ARN, or a version or alias ARN of one.
    pub target: String,
    pub name: Option<String>,
    /// The input JSON text (`{}` when absent).
    pub input: Option<String>,
    pub trace_header: Option<String>,
}

pub(crate) struct Inner {
    store: Arc<dyn FlowStore>,
    tasks: Arc<dyn TaskRunner>,
    cfg: Config,
    wake: Notify,
    slots: Arc<Semaphore>,
    defs: Mutex<HashMap<String, Arc<Loaded>>>,
    watchers: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
    /// Set by [`Workflows::shutdown`]: no new claims; steps that end afterwards hand their
    /// claim back instead of committing (their calls may have failed because the server
    /// is stopping), so the next start re-runs them at once.
    stopping: std::sync::atomic::AtomicBool,
    /// Set by [`Workflows::drain`]: no new claims; steps claimed but not started are
    /// handed back; steps running commit as usual.
    draining: std::sync::atomic::AtomicBool,
    /// Step loop passes and steps in progress (for [`Workflows::drain`]).
    busy: tokio::sync::watch::Sender<usize>,
}

/// One unit of [`Inner::busy`], until dropped.
struct Busy(Arc<Inner>);

impl Busy {
    fn enter(inner: &Arc<Inner>) -> Self {
        inner.busy.send_modify(|n| *n += 1);
        Busy(inner.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The executor's handle (cheap to clone).
#[derive(Clone)]
pub struct Workflows {
    inner: Arc<Inner>,
}

/// Milliseconds since the epoch, now.
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Inner {
    /// Runs a store call on the blocking pool.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn FlowStore) -> Result<T, StoreError> + Send + 'static,
    ) -> WorkflowResult<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| WorkflowError::Internal(format!("store task: {e}")))?
            .map_err(WorkflowError::from)
    }

    fn loaded(
        &self,
        revision_id: &str,
        definition: &str,
        role: &str,
    ) -> WorkflowResult<Arc<Loaded>> {
        if let Some(l) = self
            .defs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(revision_id)
        {
            return Ok(l.clone());
        }
        let l = Arc::new(
            Loaded::parse(definition, role)
                .map_err(|e| WorkflowError::InvalidDefinition(e.to_string()))?,
        );
        let mut defs = self.defs.lock().unwrap_or_else(|p| p.into_inner());
        if defs.len() >= 512 {
            defs.clear();
        }
        defs.insert(revision_id.to_string(), l.clone());
        Ok(l)
    }

    async fn loaded_for(&self, exec: &Execution) -> WorkflowResult<Arc<Loaded>> {
        if let Some(l) = self
            .defs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&exec.revision_id)
        {
            return Ok(l.clone());
        }
        let id = exec.revision_id.clone();
        let rev = self.blocking(move |st| st.revision(&id)).await?;
        self.loaded(&rev.revision_id, &rev.definition, &rev.role_arn)
    }

    pub(crate) async fn prepare(
        &self,
        req: &StartRequest,
    ) -> WorkflowResult<(NewExecution, Vec<NewEvent>, Vec<NewStep>)> {
        let (machine_arn, qualifier) = split_machine_arn(&req.target)
            .ok_or_else(|| WorkflowError::InvalidArn(req.target.clone()))?;
        let name = match &req.name {
            Some(n) if !valid_name(n) => {
                return Err(WorkflowError::InvalidName(format!("Invalid Name: '{n}'")))
            }
            Some(n) => n.clone(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let input = req.input.clone().unwrap_or_else(|| "{}".into());
        if input.len() > MAX_PAYLOAD {
            return Err(WorkflowError::Validation(format!(
                "1 validation error detected: Value at 'input' failed to satisfy constraint: Member must have length less than or equal to {MAX_PAYLOAD}"
            )));
        }
        let input_value: serde_json::Value = serde_json::from_str(&input).map_err(|e| {
            WorkflowError::InvalidExecutionInput(format!(
                "Invalid State Machine Execution Input: '{e}'"
            ))
        })?;
        let m = machine_arn.clone();
        let machine = self.blocking(move |st| st.describe_machine(&m)).await?;
        let (version_arn, alias_arn) = match &qualifier {
            None => (None, None),
            Some(q) if q.chars().all(|c| c.is_ascii_digit()) => (Some(req.target.clone()), None),
            Some(_) => {
                let a = req.target.clone();
                let alias = self.blocking(move |st| st.describe_alias(&a)).await?;
                let roll: u32 = rand::rng().random_range(0..100);
                let mut acc = 0;
                let version = alias
                    .routing
                    .iter()
                    .find(|r| {
                        acc += r.weight;
                        roll < acc
                    })
                    .or(alias.routing.last())
                    .map(|r| r.version_arn.clone())
                    .ok_or_else(|| WorkflowError::InvalidArn(req.target.clone()))?;
                (Some(version), Some(req.target.clone()))
            }
        };
        let revision = match &version_arn {
            Some(v) => {
                let v = v.clone();
                self.blocking(move |st| st.describe_version(&v))
                    .await?
                    .revision
            }
            None => machine.revision.clone(),
        };
        let loaded = self.loaded(
            &revision.revision_id,
            &revision.definition,
            &revision.role_arn,
        )?;
        let now = now_millis();
        let mut details = json!({
            "input": input,
            "inputDetails": {"truncated": false},
            "roleArn": revision.role_arn,
        });
        if let Some(a) = &alias_arn {
            details["stateMachineAliasArn"] = json!(a);
        }
        if let Some(v) = &version_arn {
            details["stateMachineVersionArn"] = json!(v);
        }
        let events = vec![NewEvent::new("ExecutionStarted", details)];
        let mut steps = vec![first_step(&loaded.machine, input_value, now)];
        if let Some(t) = loaded.machine.timeout_seconds {
            steps.push(NewStep {
                scope: String::new(),
                state: String::new(),
                attempt: 0,
                due: now + (t as i64) * 1000,
                payload: Payload {
                    phase: Phase::ExecutionTimeout,
                    ..Payload::default()
                }
                .to_value(),
            });
        }
        Ok((
            NewExecution {
                machine_arn,
                name,
                input,
                version_arn,
                alias_arn,
                trace_header: req.trace_header.clone(),
            },
            events,
            steps,
        ))
    }

    /// Starts an execution (and wakes the step loop).
    pub(crate) async fn start(&self, req: &StartRequest) -> WorkflowResult<Started> {
        let (new, events, steps) = self.prepare(req).await?;
        let now = now_millis();
        let started = self
            .blocking(move |st| st.start_execution(&new, &events, &steps, now))
            .await?;
        self.wake.notify_one();
        Ok(started)
    }

    fn finished(&self, arn: &str) {
        let waiters = self
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(arn);
        for w in waiters.into_iter().flatten() {
            let _ = w.send(());
        }
    }

    async fn run_step(self: Arc<Self>, step: nimbus_flows::store::Step) {
        let arn = step.execution_arn.clone();
        if self.draining.load(std::sync::atomic::Ordering::SeqCst) {
            // Claimed, not started: handed back for another node (or the next start).
            let s = step.clone();
            let _ = self
                .blocking(move |st| st.renew_claim(&s, now_millis(), 0))
                .await;
            debug!(execution = %arn, "workflow step handed back by the drain");
            return;
        }
        let a = arn.clone();
        let exec = match self.blocking(move |st| st.describe_execution(&a)).await {
            Ok(e) => e,
            Err(e) => {
                warn!(execution = %arn, error = %e, "workflow step: execution unreadable");
                return;
            }
        };
        let now = now_millis();
        let def = match self.loaded_for(&exec).await {
            Ok(d) => d,
            Err(e) => {
                warn!(execution = %arn, error = %e, "workflow step: definition unreadable");
                return;
            }
        };
        let mut runner = Runner::new(&self, exec, def, &step, now);
        if runner.exec.status.is_open() {
            let lease = self.cfg.lease;
            let run = runner.drive();
            tokio::pin!(run);
            let mut tick = tokio::time::interval(lease / 3);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = &mut run => break,
                    _ = tick.tick() => {
                        let s = step.clone();
                        let held = self
                            .blocking(move |st| st.renew_claim(&s, now_millis(), lease.as_millis() as i64))
                            .await
                            .unwrap_or(false);
                        if !held {
                            debug!(execution = %arn, "workflow step: claim lost while running");
                        }
                    }
                }
            }
        }
        let transition = std::mem::take(&mut runner.t);
        let terminal = runner.terminal;
        let s = step.clone();
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = self
                .blocking(move |st| st.renew_claim(&s, now_millis(), 0))
                .await;
            return;
        }
        match self
            .blocking(move |st| st.complete(&s, &transition, now_millis()))
            .await
        {
            Ok(nimbus_flows::store::Completion::Committed) if terminal => self.finished(&arn),
            Ok(nimbus_flows::store::Completion::HistoryLimit) => self.finished(&arn),
            Ok(c) => debug!(execution = %arn, completion = ?c, "workflow step completed"),
            Err(e) => warn!(execution = %arn, error = %e, "workflow step: commit failed"),
        }
    }
}

fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=80).contains(&n)
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>{}[]?*\"#%\\^|~`$&,;:/".contains(c))
}

/// The parts of a state machine ARN: the unqualified ARN and the qualifier, if any.
pub fn split_machine_arn(arn: &str) -> Option<(String, Option<String>)> {
    let parts: Vec<&str> = arn.split(':').collect();
    if parts.len() < 7
        || parts.len() > 8
        || parts[0] != "arn"
        || parts[2] != "states"
        || parts[5] != "stateMachine"
        || parts[6].is_empty()
    {
        return None;
    }
    Some((parts[..7].join(":"), parts.get(7).map(|q| q.to_string())))
}

impl Workflows {
    pub fn new(store: Arc<dyn FlowStore>, tasks: Arc<dyn TaskRunner>, cfg: Config) -> Self {
        let slots = Arc::new(Semaphore::new(cfg.max_active_steps.max(1)));
        Workflows {
            inner: Arc::new(Inner {
                store,
                tasks,
                cfg,
                wake: Notify::new(),
                slots,
                defs: Mutex::new(HashMap::new()),
                watchers: Mutex::new(HashMap::new()),
                stopping: std::sync::atomic::AtomicBool::new(false),
                draining: std::sync::atomic::AtomicBool::new(false),
                busy: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn FlowStore> {
        &self.inner.store
    }

    /// Wakes the step loop (new work was queued outside it).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Starts an execution.
    pub async fn start(&self, req: StartRequest) -> WorkflowResult<Started> {
        self.inner.start(&req).await
    }

    /// `StartSyncExecution`: starts an execution and waits for its end (at most
    /// `max_wait`; EXPRESS executions last at most 5 minutes).
    pub async fn start_sync(
        &self,
        req: StartRequest,
        max_wait: Duration,
    ) -> WorkflowResult<Execution> {
        let (new, events, steps) = self.inner.prepare(&req).await?;
        let arn = execution_arn(&new.machine_arn, &new.name);
        let (tx, rx) = oneshot::channel();
        self.inner
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(arn.clone())
            .or_default()
            .push(tx);
        let now = now_millis();
        let started = self
            .inner
            .blocking(move |st| st.start_execution(&new, &events, &steps, now))
            .await;
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                self.inner.finished(&arn);
                return Err(e);
            }
        };
        if started.created {
            // The first step runs here, in the caller (no hop through the step loop); what
            // it queues (a Wait, a fan-out's children) the loop runs.
            let a = arn.clone();
            let lease = self.inner.cfg.lease.as_millis() as i64;
            if let Ok(Some(step)) = self
                .inner
                .blocking(move |st| st.claim_execution_step(&a, now_millis(), lease))
                .await
            {
                self.inner.clone().run_step(step).await;
            }
        }
        self.wake();
        if started.execution.status.is_open() {
            let _ = tokio::time::timeout(max_wait, rx).await;
        }
        let a = arn.clone();
        self.inner
            .blocking(move |st| st.describe_execution(&a))
            .await
    }

    /// `StopExecution`.
    pub async fn stop(
        &self,
        arn: &str,
        error: Option<String>,
        cause: Option<String>,
    ) -> WorkflowResult<Execution> {
        let mut details = json!({});
        if let Some(e) = &error {
            details["error"] = json!(e);
        }
        if let Some(c) = &cause {
            details["cause"] = json!(c);
        }
        let a = arn.to_string();
        let exec = self
            .inner
            .blocking(move |st| {
                st.stop_execution(
                    &a,
                    error.as_deref(),
                    cause.as_deref(),
                    &[NewEvent::new("ExecutionAborted", details)],
                    now_millis(),
                )
            })
            .await?;
        self.inner.finished(arn);
        Ok(exec)
    }

    /// `RedriveExecution`: runs a FAILED execution again from the top-level state that
    /// failed, with the input and variables it had there (a failure inside a Parallel or
    /// Map re-runs that state whole); an ABORTED or TIMED_OUT one from its start state
    /// with its original input.
    pub async fn redrive(&self, arn: &str) -> WorkflowResult<Execution> {
        let a = arn.to_string();
        let exec = self
            .inner
            .blocking(move |st| st.describe_execution(&a))
            .await?;
        let loaded = self.inner.loaded_for(&exec).await?;
        let input: serde_json::Value =
            serde_json::from_str(&exec.input).unwrap_or(serde_json::Value::Null);
        let now = now_millis();
        let step = first_step(&loaded.machine, input, now);
        let events = vec![NewEvent::new(
            "ExecutionRedriven",
            json!({"redriveCount": exec.redrive_count + 1}),
        )];
        let a = arn.to_string();
        let exec = self
            .inner
            .blocking(move |st| st.redrive_execution(&a, &events, &[step], now))
            .await?;
        self.wake();
        Ok(exec)
    }

    /// `SendTaskSuccess`: `output` must be JSON.
    pub async fn task_success(&self, token: &str, output: String) -> WorkflowResult<TokenAnswer> {
        if output.len() > MAX_PAYLOAD {
            return Err(WorkflowError::Validation(format!(
                "1 validation error detected: Value at 'output' failed to satisfy constraint: Member must have length less than or equal to {MAX_PAYLOAD}"
            )));
        }
        serde_json::from_str::<serde_json::Value>(&output)
            .map_err(|e| WorkflowError::InvalidOutput(format!("Invalid output: {e}")))?;
        self.resolve(token, TokenResolution::Success { output })
            .await
    }

    /// `SendTaskFailure`.
    pub async fn task_failure(
        &self,
        token: &str,
        error: Option<String>,
        cause: Option<String>,
    ) -> WorkflowResult<TokenAnswer> {
        self.resolve(token, TokenResolution::Failure { error, cause })
            .await
    }

    async fn resolve(&self, token: &str, r: TokenResolution) -> WorkflowResult<TokenAnswer> {
        let t = token.to_string();
        let answer = self
            .inner
            .blocking(move |st| st.resolve_task_token(&t, &r, now_millis()))
            .await?;
        self.wake();
        Ok(answer)
    }

    /// `SendTaskHeartbeat`.
    pub async fn task_heartbeat(&self, token: &str) -> WorkflowResult<TokenAnswer> {
        let t = token.to_string();
        self.inner
            .blocking(move |st| st.heartbeat_task_token(&t, now_millis()))
            .await
    }

    /// Drains the executor: the step loop claims nothing more, steps claimed but not
    /// started are handed back (claimable at once), and this resolves when the steps
    /// running have committed. The caller bounds the wait (then calls
    /// [`Workflows::shutdown`]).
    pub async fn drain(&self) {
        self.inner
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.wake.notify_one();
        let mut rx = self.inner.busy.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Stops the step loop; steps still running hand their claims back when they end.
    pub fn shutdown(&self) {
        self.inner
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    /// Runs the step loop until `shutdown` resolves. Steps in flight finish on their own
    /// tasks (a step cut short by the process's end is re-run after its lease).
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let inner = self.inner.clone();
        let lease_ms = inner.cfg.lease.as_millis() as i64;
        let mut next_purge = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            // Held across the pass: a drain that sees none knows nothing more is claimed.
            let pass = Busy::enter(&inner);
            if inner.stopping.load(std::sync::atomic::Ordering::SeqCst)
                || inner.draining.load(std::sync::atomic::Ordering::SeqCst)
            {
                return;
            }
            let free = inner.slots.available_permits();
            let mut claimed = 0;
            if free > 0 {
                let limit = free.min(64);
                match inner
                    .blocking(move |st| st.claim_due(now_millis(), limit, lease_ms))
                    .await
                {
                    Ok(steps) => {
                        claimed = steps.len();
                        for step in steps {
                            let permit = match inner.slots.clone().acquire_owned().await {
                                Ok(p) => p,
                                Err(_) => return,
                            };
                            let me = inner.clone();
                            let running = Busy::enter(&inner);
                            let span = tracing::info_span!("workflow_step", execution = %step.execution_arn, state = %step.state);
                            tokio::spawn(
                                async move {
                                    me.clone().run_step(step).await;
                                    drop((permit, running));
                                    me.wake.notify_one();
                                }
                                .instrument(span),
                            );
                        }
                        if claimed == limit {
                            continue;
                        }
                    }
                    Err(e) => warn!(error = %e, "workflow steps: claim failed"),
                }
            }
            if tokio::time::Instant::now() >= next_purge {
                next_purge = tokio::time::Instant::now() + Duration::from_secs(3600);
                let before = now_millis() - inner.cfg.retention.as_millis() as i64;
                if let Err(e) = inner.blocking(move |st| st.purge_finished(before)).await {
                    warn!(error = %e, "workflow retention: purge failed");
                }
            }
            let wait = if free == 0 {
                Duration::from_secs(60)
            } else {
                match inner.blocking(|st| st.next_due()).await {
                    Ok(Some(t)) => {
                        Duration::from_millis((t - now_millis()).clamp(0, 60_000) as u64)
                    }
                    Ok(None) => Duration::from_secs(60),
                    Err(_) => Duration::from_secs(1),
                }
            };
            // A step that became due meanwhile: look again soon, without spinning.
            let wait = wait.max(Duration::from_millis(if claimed > 0 { 0 } else { 5 }));
            drop(pass);
            tokio::select! {
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = &mut shutdown => return,
            }
        }
    }

    /// Validates a definition: every problem, as `ValidateStateMachineDefinition` lists them.
    pub fn validate(definition: &str) -> Vec<nimbus_flows::validate::Diagnostic> {
        nimbus_flows::validate::validate(definition)
    }

    /// Whether an execution is known to be finished (for tests and the CLI's waits).
    pub async fn describe(&self, arn: &str) -> WorkflowResult<Execution> {
        let a = arn.to_string();
        self.inner
            .blocking(move |st| st.describe_execution(&a))
            .await
    }
}

fn first_step(machine: &StateMachine, input: serde_json::Value, now: Millis) -> NewStep {
    NewStep {
        scope: String::new(),
        state: machine.start_at.clone(),
        attempt: 0,
        due: now,
        payload: Payload::enter(input, Default::default(), now).to_value(),
    }
}

/// Whether a status ends an execution.
pub fn is_terminal(s: ExecutionStatus) -> bool {
    !s.is_open()
}
