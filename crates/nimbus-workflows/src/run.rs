//! Runs one claimed step: from its state, through every state it can reach without
//! waiting (Pass, Choice, Succeed, Fail, Tasks answered at once), until the scope ends,
//! the work must wait (a Wait, a retry's backoff, a fan-out, a task token) or a budget of
//! states is spent. Everything it decides goes into one [`Transition`], committed with
//! the step's completion, so a crash re-runs the step from its recorded input.

use std::sync::Arc;
use std::time::Duration;

use nimbus_flows::definition::{Io, Map, Parallel, QueryLanguage, State, Task};
use nimbus_flows::errors::{names, Error};
use nimbus_flows::jsonata::{self, Env, Variables};
use nimbus_flows::path::ReferencePath;
use nimbus_flows::retry::{self, RetryDecision};
use nimbus_flows::steps::WaitTarget;
use nimbus_flows::store::{
    ExecutionStatus, ExecutionUpdate, JoinChild, JoinReport, Millis, NewEvent, NewJoin, NewStep,
    Step, TokenResolution, Transition,
};
use nimbus_flows::{io, steps};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::context::Loaded;
use crate::scope::{join_key, parent_of, processor, states_of};
use crate::tasks::{invoke_envelope, response_value, FunctionCall, Pattern, Resource, TaskOutcome};
use crate::Inner;

/// The largest payload a state may hand on (256 KiB), as on Step Functions.
pub const MAX_PAYLOAD: usize = 262_144;
/// States run inline in one step before the rest is queued as a new step.
const INLINE_STATES: u32 = 250;
/// History events one step may write before the rest is queued as a new step.
const INLINE_EVENTS: usize = 500;

/// What a step is about to do in its state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Enter the state.
    #[default]
    Enter,
    /// Run the state again after a retrier's backoff (no new `…StateEntered`).
    Retry,
    /// A Wait state's time is up.
    WaitDone,
    /// A Parallel's or Map's children have ended.
    Join,
    /// A `.waitForTaskToken` task's timeout or heartbeat check.
    TokenWatch,
    /// The execution's `TimeoutSeconds` is up (the step of state `""`).
    ExecutionTimeout,
    /// A `states:startExecution.sync` task looks whether its child execution ended.
    ChildWatch,
}

/// A step's payload: the executor's continuation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Payload {
    /// The state's raw input.
    pub input: Value,
    #[serde(default)]
    pub vars: Variables,
    #[serde(default)]
    pub phase: Phase,
    /// Attempts made so far per retrier.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retries: Vec<u64>,
    /// When the state was entered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entered: Option<Millis>,
    /// The first step of a Map iteration or Parallel branch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first: bool,
    /// TokenWatch: the token, the task's deadline, its heartbeat interval (s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<u64>,
    /// Join: how many failed children a Map tolerates (`None`: no tolerance configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated: Option<u32>,
    /// ChildWatch: the child execution and the current polling interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_ms: Option<u64>,
}

impl Payload {
    pub fn enter(input: Value, vars: Variables, now: Millis) -> Self {
        Payload {
            input,
            vars,
            entered: Some(now),
            ..Payload::default()
        }
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a payload serialises")
    }
}

enum Flow {
    /// Go on to `next` with this input.
    Next {
        next: String,
        output: Value,
        vars: Variables,
    },
    /// The step queued its own continuation (or nothing, when it was consumed).
    Suspended,
    /// The scope ended.
    End(Result<Value, Error>),
}

fn runtime(cause: impl Into<String>) -> Error {
    Error::states(names::RUNTIME, cause)
}

fn text(v: &Value) -> String {
    serde_json::to_string(v).expect("a JSON value serialises")
}

fn error_from_output(v: &Value) -> Error {
    Error::States {
        name: v["Error"].as_str().unwrap_or_default().to_string(),
        cause: v["Cause"].as_str().unwrap_or_default().to_string(),
    }
}

/// Runs one step against its execution.
pub(crate) struct Runner<'a> {
    pub eng: &'a Inner,
    pub exec: nimbus_flows::store::Execution,
    pub def: Arc<Loaded>,
    pub step: &'a Step,
    pub t: Transition,
    pub now: Millis,
    pub rng: StdRng,
    /// The execution ended in this step.
    pub terminal: bool,
    /// The step runs inside a DISTRIBUTED Map's iteration: its state events are not
    /// written to the execution's history (the fan-out's report still is).
    quiet: bool,
    /// Where a redrive starts, when the execution fails in this step (top scope only).
    redrive: Option<NewStep>,
}

impl<'a> Runner<'a> {
    pub fn new(
        eng: &'a Inner,
        exec: nimbus_flows::store::Execution,
        def: Arc<Loaded>,
        step: &'a Step,
        now: Millis,
    ) -> Self {
        Runner {
            eng,
            exec,
            def,
            step,
            t: Transition::default(),
            now,
            rng: StdRng::from_os_rng(),
            terminal: false,
            quiet: false,
            redrive: None,
        }
    }

    fn event(&mut self, ty: &str, details: Value) {
        if !self.quiet {
            self.t.events.push(NewEvent::new(ty, details));
        }
    }

    fn context(&self, state: &str, retry: u32, entered: Millis, token: Option<&str>) -> Value {
        self.def.context(&self.exec, state, retry, entered, token)
    }

    /// Runs the step.
    pub async fn drive(&mut self) {
        let step = self.step;
        let mut p: Payload = match serde_json::from_value(step.payload.clone()) {
            Ok(p) => p,
            Err(e) => {
                let err = runtime(format!("step payload unreadable: {e}"));
                return self.end_scope("", Err(err));
            }
        };
        if p.phase == Phase::ExecutionTimeout {
            return self.execution_timeout();
        }
        let scope = step.scope.clone();
        self.quiet = crate::scope::in_distributed_map(&self.def.machine, &scope);
        let mut name = step.state.clone();
        let mut attempt = step.attempt;
        let mut resolution = step.resolution.clone();
        let mut budget = INLINE_STATES;
        loop {
            match self
                .state(&scope, &name, &mut p, attempt, resolution.take())
                .await
            {
                Flow::Next { next, output, vars } => {
                    if text(&output).len() > MAX_PAYLOAD {
                        return self.end_scope(&scope, Err(data_limit(&name)));
                    }
                    let payload = Payload::enter(output, vars, self.now);
                    budget -= 1;
                    if budget == 0
                        || self.t.events.len() >= INLINE_EVENTS
                        || self.needs_own_step(&scope, &next)
                    {
                        self.t.next_steps.push(NewStep {
                            scope: scope.clone(),
                            state: next,
                            attempt: 0,
                            due: self.now,
                            payload: payload.to_value(),
                        });
                        return;
                    }
                    name = next;
                    p = payload;
                    attempt = 0;
                }
                Flow::Suspended => return,
                Flow::End(Ok(output)) if text(&output).len() > MAX_PAYLOAD => {
                    self.redrive_from(&name, &p);
                    return self.end_scope(&scope, Err(data_limit(&name)));
                }
                Flow::End(result) => {
                    if result.is_err() {
                        self.redrive_from(&name, &p);
                    }
                    return self.end_scope(&scope, result);
                }
            }
        }
    }

    /// Where a redrive restarts if the execution fails now: the top-level state that
    /// failed (for a failure inside a branch or iteration, its Parallel or Map), entered
    /// again with its input and variables, its retries counted afresh.
    fn redrive_from(&mut self, state: &str, p: &Payload) {
        self.redrive = Some(NewStep {
            scope: String::new(),
            state: state.to_string(),
            attempt: 0,
            due: self.now,
            payload: Payload::enter(p.input.clone(), p.vars.clone(), self.now).to_value(),
        });
    }

    /// A `.waitForTaskToken` task binds its token to its own step.
    fn needs_own_step(&self, scope: &str, next: &str) -> bool {
        let Some(states) = states_of(&self.def.machine, scope) else {
            return false;
        };
        matches!(states.get(next), Some(State::Task(t)) if Resource::parse(&t.resource).pattern() == Pattern::Token)
    }

    fn execution_timeout(&mut self) {
        let cause = "The execution timed out (TimeoutSeconds of the state machine).";
        self.event(
            "ExecutionTimedOut",
            json!({"error": names::TIMEOUT, "cause": cause}),
        );
        self.t.execution = Some(ExecutionUpdate {
            status: Some(ExecutionStatus::TimedOut),
            output: None,
            error: Some(names::TIMEOUT.into()),
            cause: Some(cause.into()),
            redrive: None,
        });
        self.terminal = true;
    }

    fn end_scope(&mut self, scope: &str, result: Result<Value, Error>) {
        if scope.is_empty() {
            match result {
                Ok(output) => {
                    let out = text(&output);
                    self.event(
                        "ExecutionSucceeded",
                        json!({"output": out, "outputDetails": {"truncated": false}}),
                    );
                    self.t.execution = Some(ExecutionUpdate {
                        status: Some(ExecutionStatus::Succeeded),
                        output: Some(out),
                        error: None,
                        cause: None,
                        redrive: None,
                    });
                }
                Err(e) => {
                    self.event(
                        "ExecutionFailed",
                        json!({"error": e.error_name(), "cause": e.cause()}),
                    );
                    self.t.execution = Some(ExecutionUpdate {
                        status: Some(ExecutionStatus::Failed),
                        output: None,
                        error: Some(e.error_name().to_string()),
                        cause: Some(e.cause()),
                        redrive: self.redrive.take(),
                    });
                }
            }
            self.terminal = true;
            return;
        }
        let Some((key, parent_name, index)) = parent_of(scope) else {
            return self.end_scope("", Err(runtime(format!("unknown scope {scope}"))));
        };
        let parent_scope = key.rsplit_once('/').map_or("", |(s, _)| s);
        let is_map = states_of(&self.def.machine, parent_scope)
            .and_then(|s| s.get(&parent_name))
            .is_some_and(|s| matches!(s, State::Map(_)));
        let succeeded = result.is_ok();
        if is_map {
            let ty = if succeeded {
                "MapIterationSucceeded"
            } else {
                "MapIterationFailed"
            };
            self.event(ty, json!({"name": parent_name, "index": index}));
        }
        self.t.join_report = Some(JoinReport {
            key: key.to_string(),
            index,
            succeeded,
            result: match result {
                Ok(v) => v,
                Err(e) => e.to_error_output(),
            },
        });
    }

    async fn state(
        &mut self,
        scope: &str,
        name: &str,
        p: &mut Payload,
        attempt: u32,
        resolution: Option<TokenResolution>,
    ) -> Flow {
        let def = self.def.clone();
        let Some(state) = states_of(&def.machine, scope).and_then(|s| s.get(name)) else {
            return Flow::End(Err(runtime(format!(
                "The state '{name}' does not exist in this scope"
            ))));
        };
        // A child's first step announces the iteration once (not again when a task
        // token's resolution re-enters the state with the step's original payload).
        let first = std::mem::take(&mut p.first);
        if first && p.phase == Phase::Enter && resolution.is_none() {
            if let Some((key, parent, index)) = parent_of(scope) {
                let parent_scope = key.rsplit_once('/').map_or("", |(s, _)| s);
                if matches!(
                    states_of(&def.machine, parent_scope).and_then(|s| s.get(&parent)),
                    Some(State::Map(_))
                ) {
                    self.event(
                        "MapIterationStarted",
                        json!({"name": parent, "index": index}),
                    );
                }
            }
        }
        if p.phase == Phase::Enter && resolution.is_none() {
            self.event(
                &format!("{}StateEntered", state.type_name()),
                json!({"name": name, "input": text(&p.input), "inputDetails": {"truncated": false}}),
            );
            p.entered = Some(self.now);
        }
        let ql = def.machine.query_language_of(state);
        let result = match state {
            State::Pass(s) => self.pass(name, s, ql, p),
            State::Choice(s) => self.choice(name, s, ql, p),
            State::Wait(s) => self.wait(scope, name, s, ql, p, attempt),
            State::Succeed(s) => self.succeed(name, &s.io, ql, p),
            State::Fail(s) => self.fail(name, s, ql, p),
            State::Task(s) => self.task(scope, name, s, ql, p, attempt, resolution).await,
            State::Parallel(s) => self.parallel(scope, name, s, ql, p, attempt).await,
            State::Map(s) => self.map(scope, name, s, ql, p, attempt).await,
        };
        match result {
            Ok(flow) => flow,
            Err(e) => self.on_error(scope, name, state, ql, p, attempt, e),
        }
    }

    /// Retry, else Catch, else the scope fails.
    #[allow(clippy::too_many_arguments)]
    fn on_error(
        &mut self,
        scope: &str,
        name: &str,
        state: &State,
        ql: QueryLanguage,
        p: &Payload,
        attempt: u32,
        e: Error,
    ) -> Flow {
        let jitter: f64 = self.rng.random();
        if let RetryDecision::Retry { retrier, delay } =
            retry::decide(state.retriers(), e.error_name(), &p.retries, jitter)
        {
            let mut next = p.clone();
            next.phase = Phase::Retry;
            if next.retries.len() <= retrier {
                next.retries.resize(retrier + 1, 0);
            }
            next.retries[retrier] += 1;
            self.t.next_steps.push(NewStep {
                scope: scope.to_string(),
                state: name.to_string(),
                attempt: attempt + 1,
                due: self.now + delay.as_millis() as i64,
                payload: next.to_value(),
            });
            return Flow::Suspended;
        }
        let Some((index, catcher)) = retry::select_catcher(state.catchers(), e.error_name()) else {
            return Flow::End(Err(e));
        };
        let mut vars = p.vars.clone();
        let output = match ql {
            QueryLanguage::JsonPath => {
                let out = io::catch_output(catcher, &p.input, &e);
                if let (Ok(_), Some(assign)) = (&out, &catcher.assign) {
                    let ctx = self.context(name, attempt, p.entered.unwrap_or(self.now), None);
                    match jsonata::jsonpath_assign(
                        assign,
                        &e.to_error_output(),
                        &ctx,
                        &p.vars,
                        &mut self.rng,
                    ) {
                        Ok(a) => vars.assign(a),
                        Err(err) => return Flow::End(Err(err)),
                    }
                }
                out
            }
            QueryLanguage::Jsonata => {
                let ctx = self.context(name, attempt, p.entered.unwrap_or(self.now), None);
                let mut env = Env {
                    context: &ctx,
                    vars: &p.vars,
                    rng: &mut self.rng,
                };
                jsonata::catch_outcome(catcher, index, &p.input, &e, &mut env)
                    .map(|o| o.apply(&mut vars))
            }
        };
        match output {
            Ok(output) => Flow::Next {
                next: catcher.next.clone(),
                output,
                vars,
            },
            Err(err) => Flow::End(Err(err)),
        }
    }

    /// A Task's or Parallel's effective input: `InputPath` then `Parameters` (JSONPath), or
    /// `Arguments` (JSONata).
    fn effective_input(
        &mut self,
        io: &Io,
        ql: QueryLanguage,
        p: &Payload,
        ctx: &Value,
    ) -> Result<Value, Error> {
        match ql {
            QueryLanguage::JsonPath => {
                io::effective_input(io, &p.input, ctx, &p.vars, &mut self.rng)
            }
            QueryLanguage::Jsonata => {
                let mut env = Env {
                    context: ctx,
                    vars: &p.vars,
                    rng: &mut self.rng,
                };
                jsonata::arguments(io, &p.input, &mut env)
            }
        }
    }

    /// The state's output and variables after its work: `result` is a Task's, Parallel's
    /// or Map's result; `None` for states that only pass their input on.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        name: &str,
        type_name: &str,
        io: &Io,
        ql: QueryLanguage,
        p: &Payload,
        result: Option<Value>,
        ctx: &Value,
    ) -> Result<(Value, Variables), Error> {
        let mut vars = p.vars.clone();
        let (output, assigned) = match ql {
            QueryLanguage::JsonPath => {
                let (output, doc) = match result {
                    Some(r) => {
                        let out =
                            io::state_output(io, &p.input, r.clone(), ctx, &p.vars, &mut self.rng)?;
                        (out, r)
                    }
                    None => {
                        let selected = io::apply_input_path(&io.input_path, &p.input, ctx)?;
                        let out = io::apply_output_path(&io.output_path, &selected, ctx)?;
                        (out, selected)
                    }
                };
                let assigned = match &io.assign {
                    Some(a) => jsonata::jsonpath_assign(a, &doc, ctx, &p.vars, &mut self.rng)?,
                    None => Default::default(),
                };
                (output, assigned)
            }
            QueryLanguage::Jsonata => {
                let mut env = Env {
                    context: ctx,
                    vars: &p.vars,
                    rng: &mut self.rng,
                };
                let o = jsonata::state_outcome(io, &p.input, result.as_ref(), &mut env)?;
                (o.output, o.assigned)
            }
        };
        self.exited(name, type_name, &output, &assigned);
        vars.assign(assigned);
        Ok((output, vars))
    }

    fn exited(
        &mut self,
        name: &str,
        type_name: &str,
        output: &Value,
        assigned: &serde_json::Map<String, Value>,
    ) {
        let mut details =
            json!({"name": name, "output": text(output), "outputDetails": {"truncated": false}});
        if !assigned.is_empty() {
            details["assignedVariables"] = Value::Object(
                assigned
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(text(v))))
                    .collect(),
            );
        }
        self.event(&format!("{type_name}StateExited"), details);
    }

    fn next_of(
        transition: &nimbus_flows::definition::Transition,
        output: Value,
        vars: Variables,
    ) -> Flow {
        match &transition.next {
            Some(next) if !transition.end => Flow::Next {
                next: next.clone(),
                output,
                vars,
            },
            _ => Flow::End(Ok(output)),
        }
    }

    fn pass(
        &mut self,
        name: &str,
        s: &nimbus_flows::definition::Pass,
        ql: QueryLanguage,
        p: &Payload,
    ) -> Result<Flow, Error> {
        let ctx = self.context(name, 0, p.entered.unwrap_or(self.now), None);
        let mut vars = p.vars.clone();
        let (output, assigned) = match ql {
            QueryLanguage::JsonPath => {
                let output = io::pass_output(s, &p.input, &ctx, &p.vars, &mut self.rng)?;
                let assigned = match &s.io.assign {
                    Some(a) => {
                        let doc = match &s.result {
                            Some(r) => r.clone(),
                            None => {
                                io::effective_input(&s.io, &p.input, &ctx, &p.vars, &mut self.rng)?
                            }
                        };
                        jsonata::jsonpath_assign(a, &doc, &ctx, &p.vars, &mut self.rng)?
                    }
                    None => Default::default(),
                };
                (output, assigned)
            }
            QueryLanguage::Jsonata => {
                let mut env = Env {
                    context: &ctx,
                    vars: &p.vars,
                    rng: &mut self.rng,
                };
                let o = jsonata::pass_outcome(s, &p.input, &mut env)?;
                (o.output, o.assigned)
            }
        };
        self.exited(name, "Pass", &output, &assigned);
        vars.assign(assigned);
        Ok(Self::next_of(&s.transition, output, vars))
    }

    fn choice(
        &mut self,
        name: &str,
        s: &nimbus_flows::definition::Choice,
        ql: QueryLanguage,
        p: &Payload,
    ) -> Result<Flow, Error> {
        let ctx = self.context(name, 0, p.entered.unwrap_or(self.now), None);
        let mut vars = p.vars.clone();
        match ql {
            QueryLanguage::JsonPath => {
                let selected = io::apply_input_path(&s.io.input_path, &p.input, &ctx)?;
                let chosen = nimbus_flows::choice::choose(s, &selected, &ctx)?;
                // The rule that matched (its `Next` is the very string returned), if any.
                let rule = s
                    .choices
                    .iter()
                    .find(|r| std::ptr::eq(r.next.as_str(), chosen));
                let next = chosen.to_string();
                let output = io::apply_output_path(&s.io.output_path, &selected, &ctx)?;
                // Assign: the matched rule's, else the state's.
                let rule_assign = rule
                    .and_then(|r| r.assign.as_ref())
                    .or(s.io.assign.as_ref());
                let assigned = match rule_assign {
                    Some(a) => {
                        jsonata::jsonpath_assign(a, &selected, &ctx, &p.vars, &mut self.rng)?
                    }
                    None => Default::default(),
                };
                self.exited(name, "Choice", &output, &assigned);
                vars.assign(assigned);
                Ok(Flow::Next { next, output, vars })
            }
            QueryLanguage::Jsonata => {
                let mut env = Env {
                    context: &ctx,
                    vars: &p.vars,
                    rng: &mut self.rng,
                };
                let c = jsonata::choose(s, &p.input, &mut env)?;
                self.exited(name, "Choice", &c.outcome.output, &c.outcome.assigned);
                let output = c.outcome.apply(&mut vars);
                Ok(Flow::Next {
                    next: c.next,
                    output,
                    vars,
                })
            }
        }
    }

    fn wait(
        &mut self,
        scope: &str,
        name: &str,
        s: &nimbus_flows::definition::Wait,
        ql: QueryLanguage,
        p: &Payload,
        attempt: u32,
    ) -> Result<Flow, Error> {
        let ctx = self.context(name, attempt, p.entered.unwrap_or(self.now), None);
        if p.phase == Phase::WaitDone {
            let (output, vars) = self.finish(name, "Wait", &s.io, ql, p, None, &ctx)?;
            return Ok(Self::next_of(&s.transition, output, vars));
        }
        let target = match ql {
            QueryLanguage::JsonPath => {
                let selected = io::apply_input_path(&s.io.input_path, &p.input, &ctx)?;
                steps::wait_target(s, &selected)?
            }
            QueryLanguage::Jsonata => {
                let mut env = Env {
                    context: &ctx,
                    vars: &p.vars,
                    rng: &mut self.rng,
                };
                jsonata::wait_target(s, &p.input, &mut env)?
            }
        };
        let due = match target {
            WaitTarget::Seconds(secs) => {
                let scale = u64::from(self.eng.cfg.time_scale.max(1));
                self.now + (secs.saturating_mul(1000) / scale).min(i64::MAX as u64 / 2) as i64
            }
            WaitTarget::Until(t) => (t.unix_timestamp_nanos() / 1_000_000) as i64,
        };
        let mut next = p.clone();
        next.phase = Phase::WaitDone;
        self.t.next_steps.push(NewStep {
            scope: scope.to_string(),
            state: name.to_string(),
            attempt,
            due: due.max(self.now),
            payload: next.to_value(),
        });
        Ok(Flow::Suspended)
    }

    fn succeed(
        &mut self,
        name: &str,
        io: &Io,
        ql: QueryLanguage,
        p: &Payload,
    ) -> Result<Flow, Error> {
        let ctx = self.context(name, 0, p.entered.unwrap_or(self.now), None);
        let (output, _) = self.finish(name, "Succeed", io, ql, p, None, &ctx)?;
        Ok(Flow::End(Ok(output)))
    }

    fn fail(
        &mut self,
        name: &str,
        s: &nimbus_flows::definition::Fail,
        ql: QueryLanguage,
        p: &Payload,
    ) -> Result<Flow, Error> {
        let ctx = self.context(name, 0, p.entered.unwrap_or(self.now), None);
        let e = match ql {
            QueryLanguage::JsonPath => {
                steps::fail_error(s, &p.input, &ctx, &p.vars, &mut self.rng)?
            }
            QueryLanguage::Jsonata => {
                let mut env = Env {
                    context: &ctx,
                    vars: &p.vars,
                    rng: &mut self.rng,
                };
                jsonata::fail_error(s, &p.input, &mut env)?
            }
        };
        Ok(Flow::End(Err(e)))
    }

    fn seconds_field(
        &mut self,
        field: &str,
        fixed: &Option<nimbus_flows::definition::MaybeExpr<u64>>,
        path: &Option<String>,
        ql: QueryLanguage,
        p: &Payload,
        ctx: &Value,
    ) -> Result<Option<u64>, Error> {
        if let Some(v) = fixed {
            return match ql {
                QueryLanguage::JsonPath => Ok(v.fixed()),
                QueryLanguage::Jsonata => {
                    let mut env = Env {
                        context: ctx,
                        vars: &p.vars,
                        rng: &mut self.rng,
                    };
                    jsonata::resolve_u64(field, v, &p.input, &mut env).map(Some)
                }
            };
        }
        match path {
            Some(path) => {
                let v = ReferencePath::parse(path)?
                    .get(&p.input)
                    .and_then(Value::as_u64)
                    .ok_or_else(|| {
                        runtime(format!(
                            "The {field}Path '{path}' must reference a positive integer in the input"
                        ))
                    })?;
                Ok(Some(v))
            }
            None => Ok(None),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn task(
        &mut self,
        scope: &str,
        name: &str,
        s: &Task,
        ql: QueryLanguage,
        p: &mut Payload,
        attempt: u32,
        resolution: Option<TokenResolution>,
    ) -> Result<Flow, Error> {
        let resource = Resource::parse(&s.resource);
        let rtype = resource.resource_type().to_string();
        let rname = resource.resource_name(&s.resource);
        let lambda_events = matches!(resource, Resource::Function { .. });
        let entered = p.entered.unwrap_or(self.now);
        if let Some(r) = resolution {
            return match r {
                TokenResolution::Success { output } => {
                    self.event(
                        "TaskSucceeded",
                        json!({"resourceType": rtype, "resource": rname, "output": output, "outputDetails": {"truncated": false}}),
                    );
                    let result = response_value(&output);
                    let ctx = self.context(name, attempt, entered, None);
                    let (output, vars) =
                        self.finish(name, "Task", &s.io, ql, p, Some(result), &ctx)?;
                    Ok(Self::next_of(&s.transition, output, vars))
                }
                TokenResolution::Failure { error, cause } => {
                    let error = error.unwrap_or_default();
                    let cause = cause.unwrap_or_default();
                    self.event(
                        "TaskFailed",
                        json!({"resourceType": rtype, "resource": rname, "error": error, "cause": cause}),
                    );
                    Err(Error::States { name: error, cause })
                }
            };
        }
        if p.phase == Phase::TokenWatch {
            return self
                .token_watch(scope, name, &rtype, &rname, p, attempt)
                .await;
        }
        if p.phase == Phase::ChildWatch {
            return self
                .child_watch(scope, name, s, ql, p, attempt, &rtype, &rname)
                .await;
        }
        let token = if resource.pattern() == Pattern::Token {
            let step = self.step.clone();
            let now = self.now;
            match self
                .eng
                .blocking(move |st| st.create_task_token(&step, now))
                .await
            {
                Ok(t) => Some(t),
                Err(e) => return Err(runtime(format!("task token: {e}"))),
            }
        } else {
            None
        };
        let ctx = self.context(name, attempt, entered, token.as_deref());
        let effective = self.effective_input(&s.io, ql, p, &ctx)?;
        let timeout = self.seconds_field(
            "TimeoutSeconds",
            &s.timeout_seconds,
            &s.timeout_seconds_path,
            ql,
            p,
            &ctx,
        )?;
        let heartbeat = self.seconds_field(
            "HeartbeatSeconds",
            &s.heartbeat_seconds,
            &s.heartbeat_seconds_path,
            ql,
            p,
            &ctx,
        )?;
        let params = text(&effective);
        if params.len() > MAX_PAYLOAD {
            return Err(data_limit(name));
        }
        if lambda_events {
            let mut d = json!({"resource": s.resource, "input": params, "inputDetails": {"truncated": false}});
            if let Some(t) = timeout {
                d["timeoutInSeconds"] = json!(t);
            }
            self.event("LambdaFunctionScheduled", d);
            self.event("LambdaFunctionStarted", json!({}));
        } else {
            let mut d = json!({"resourceType": rtype, "resource": rname, "region": self.eng.cfg.region, "parameters": params});
            if let Some(t) = timeout {
                d["timeoutInSeconds"] = json!(t);
            }
            if let Some(h) = heartbeat {
                d["heartbeatInSeconds"] = json!(h);
            }
            self.event("TaskScheduled", d);
            self.event(
                "TaskStarted",
                json!({"resourceType": rtype, "resource": rname}),
            );
        }
        let child_name = self.child_name(scope, name, attempt);
        let call = self.call(&resource, effective, child_name);
        let outcome = match (timeout, resource.pattern()) {
            (Some(t), Pattern::Response | Pattern::Sync) => {
                match tokio::time::timeout(Duration::from_secs(t), call).await {
                    Ok(o) => o,
                    Err(_) => {
                        let cause = format!("The task did not finish within {t} seconds");
                        let ty = if lambda_events {
                            "LambdaFunctionTimedOut"
                        } else {
                            "TaskTimedOut"
                        };
                        let mut d = json!({"error": names::TIMEOUT, "cause": cause});
                        if !lambda_events {
                            d["resourceType"] = json!(rtype);
                            d["resource"] = json!(rname);
                        }
                        self.event(ty, d);
                        return Err(Error::states(names::TIMEOUT, cause));
                    }
                }
            }
            _ => call.await,
        };
        match outcome {
            TaskOutcome::Failed { error, cause } => {
                if lambda_events {
                    self.event(
                        "LambdaFunctionFailed",
                        json!({"error": error, "cause": cause}),
                    );
                } else {
                    self.event(
                        "TaskFailed",
                        json!({"resourceType": rtype, "resource": rname, "error": error, "cause": cause}),
                    );
                }
                Err(Error::States { name: error, cause })
            }
            TaskOutcome::Succeeded { output, .. } => {
                let out = text(&output);
                if let Some(token) = token {
                    self.event(
                        "TaskSubmitted",
                        json!({"resourceType": rtype, "resource": rname, "output": out, "outputDetails": {"truncated": false}}),
                    );
                    if timeout.is_some() || heartbeat.is_some() {
                        let mut watch = p.clone();
                        watch.phase = Phase::TokenWatch;
                        watch.token = Some(token);
                        watch.deadline = timeout.map(|t| entered + (t as i64) * 1000);
                        watch.heartbeat = heartbeat;
                        let due = next_watch(self.now, self.now, watch.deadline, heartbeat);
                        self.t.next_steps.push(NewStep {
                            scope: scope.to_string(),
                            state: name.to_string(),
                            attempt,
                            due,
                            payload: watch.to_value(),
                        });
                    }
                    return Ok(Flow::Suspended);
                }
                if matches!(
                    resource,
                    Resource::StartExecution {
                        pattern: Pattern::Sync
                    }
                ) {
                    self.event(
                        "TaskSubmitted",
                        json!({"resourceType": rtype, "resource": rname, "output": out, "outputDetails": {"truncated": false}}),
                    );
                    let mut watch = p.clone();
                    watch.phase = Phase::ChildWatch;
                    watch.child = output["ExecutionArn"].as_str().map(str::to_string);
                    watch.deadline = timeout.map(|t| entered + (t as i64) * 1000);
                    watch.poll_ms = Some(CHILD_POLL_FIRST_MS);
                    self.t.next_steps.push(NewStep {
                        scope: scope.to_string(),
                        state: name.to_string(),
                        attempt,
                        due: self.now + CHILD_POLL_FIRST_MS as i64,
                        payload: watch.to_value(),
                    });
                    return Ok(Flow::Suspended);
                }
                if out.len() > MAX_PAYLOAD {
                    return Err(data_limit(name));
                }
                if lambda_events {
                    self.event(
                        "LambdaFunctionSucceeded",
                        json!({"output": out, "outputDetails": {"truncated": false}}),
                    );
                } else {
                    self.event(
                        "TaskSucceeded",
                        json!({"resourceType": rtype, "resource": rname, "output": out, "outputDetails": {"truncated": false}}),
                    );
                }
                let (output, vars) = self.finish(name, "Task", &s.io, ql, p, Some(output), &ctx)?;
                Ok(Self::next_of(&s.transition, output, vars))
            }
        }
    }

    /// Calls what a Task names (not for `.waitForTaskToken` resolution).
    fn call(
        &self,
        resource: &Resource,
        effective: Value,
        child_name: String,
    ) -> crate::tasks::BoxFuture<'a, TaskOutcome> {
        let eng: &'a Inner = self.eng;
        let tasks = self.eng.tasks.clone();
        let role = self.def.role_arn.clone();
        let trace = self.exec.trace_header.clone();
        let resource = resource.clone();
        Box::pin(async move {
            let request_id = uuid::Uuid::new_v4().to_string();
            match &resource {
                Resource::Function { function } => {
                    let call = FunctionCall {
                        function,
                        qualifier: None,
                        payload: text(&effective),
                        request_id: &request_id,
                        trace: trace.as_deref(),
                        role_arn: &role,
                    };
                    match tasks.invoke(call).await {
                        TaskOutcome::Succeeded { output, version } => {
                            TaskOutcome::Succeeded { output, version }
                        }
                        failed => failed,
                    }
                }
                Resource::LambdaInvoke { .. } => {
                    let Some(function) = effective["FunctionName"].as_str() else {
                        return TaskOutcome::Failed {
                            error: names::RUNTIME.into(),
                            cause: "The lambda:invoke integration needs a 'FunctionName' parameter"
                                .into(),
                        };
                    };
                    let payload = match effective.get("Payload") {
                        Some(Value::String(s)) => s.clone(),
                        Some(v) => text(v),
                        None => "{}".into(),
                    };
                    let call = FunctionCall {
                        function,
                        qualifier: effective["Qualifier"].as_str(),
                        payload,
                        request_id: &request_id,
                        trace: trace.as_deref(),
                        role_arn: &role,
                    };
                    match tasks.invoke(call).await {
                        TaskOutcome::Succeeded { output, version } => TaskOutcome::Succeeded {
                            output: invoke_envelope(output, &version, &request_id),
                            version,
                        },
                        failed => failed,
                    }
                }
                Resource::StartExecution { .. } => {
                    start_child(eng, &effective, child_name, trace).await
                }
                Resource::Service {
                    service, action, ..
                } => tasks.call_service(service, action, effective, &role).await,
            }
        })
    }

    /// The name of the child execution a `startExecution` task starts when its parameters
    /// name none: the same for a re-run of the same attempt (no second child).
    fn child_name(&self, scope: &str, state: &str, attempt: u32) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.exec.arn, scope, state, attempt).hash(&mut h);
        let prefix: String = self
            .exec
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(40)
            .collect();
        format!("{prefix}-{:016x}", h.finish())
    }

    #[allow(clippy::too_many_arguments)]
    async fn child_watch(
        &mut self,
        scope: &str,
        name: &str,
        s: &Task,
        ql: QueryLanguage,
        p: &Payload,
        attempt: u32,
        rtype: &str,
        rname: &str,
    ) -> Result<Flow, Error> {
        let Some(child) = p.child.clone() else {
            return Err(runtime("a child watch without a child execution"));
        };
        let c = child.clone();
        let e = self
            .eng
            .blocking(move |st| st.describe_execution(&c))
            .await
            .map_err(|e| Error::states(names::TASK_FAILED, e.to_string()))?;
        if e.status.is_open() {
            if p.deadline.is_some_and(|d| self.now >= d) {
                let cause = "The child execution did not finish within the task's TimeoutSeconds";
                self.event(
                    "TaskTimedOut",
                    json!({"resourceType": rtype, "resource": rname, "error": names::TIMEOUT, "cause": cause}),
                );
                return Err(Error::states(names::TIMEOUT, cause));
            }
            let poll = p.poll_ms.unwrap_or(CHILD_POLL_FIRST_MS);
            let mut next = p.clone();
            next.poll_ms = Some((poll * 2).min(CHILD_POLL_MAX_MS));
            self.t.next_steps.push(NewStep {
                scope: scope.to_string(),
                state: name.to_string(),
                attempt,
                due: self.now + poll as i64,
                payload: next.to_value(),
            });
            return Ok(Flow::Suspended);
        }
        let v2 = s.resource.ends_with(":2");
        let doc = |t: &Option<String>| -> Value {
            match t {
                Some(t) if v2 => serde_json::from_str(t).unwrap_or(Value::Null),
                Some(t) => Value::String(t.clone()),
                None => Value::Null,
            }
        };
        let mut out = json!({
            "ExecutionArn": e.arn,
            "Input": doc(&Some(e.input.clone())),
            "InputDetails": {"Included": true},
            "Name": e.name,
            "StartDate": e.start_date,
            "StateMachineArn": e.machine_arn,
            "Status": e.status.as_str(),
            "StopDate": e.stop_date,
        });
        if e.status == ExecutionStatus::Succeeded {
            out["Output"] = doc(&e.output);
            out["OutputDetails"] = json!({"Included": true});
            self.event(
                "TaskSucceeded",
                json!({"resourceType": rtype, "resource": rname, "output": text(&out), "outputDetails": {"truncated": false}}),
            );
            let entered = p.entered.unwrap_or(self.now);
            let ctx = self.context(name, attempt, entered, None);
            let (output, vars) = self.finish(name, "Task", &s.io, ql, p, Some(out), &ctx)?;
            return Ok(Self::next_of(&s.transition, output, vars));
        }
        if let Some(err) = &e.error {
            out["Error"] = json!(err);
        }
        if let Some(cause) = &e.cause {
            out["Cause"] = json!(cause);
        }
        let cause = text(&out);
        self.event(
            "TaskFailed",
            json!({"resourceType": rtype, "resource": rname, "error": names::TASK_FAILED, "cause": cause}),
        );
        Err(Error::states(names::TASK_FAILED, cause))
    }

    async fn token_watch(
        &mut self,
        scope: &str,
        name: &str,
        rtype: &str,
        rname: &str,
        p: &Payload,
        attempt: u32,
    ) -> Result<Flow, Error> {
        let Some(token) = p.token.clone() else {
            return Err(runtime("a token watch without a token"));
        };
        let t = token.clone();
        let record = match self.eng.blocking(move |st| st.task_token(&t)).await {
            Ok(r) => r,
            Err(_) => return Ok(Flow::Suspended),
        };
        if record.status != "OPEN" {
            return Ok(Flow::Suspended);
        }
        let beat = record.last_heartbeat.unwrap_or(record.created);
        let (error, cause) = match (p.heartbeat, p.deadline) {
            (Some(h), _) if self.now >= beat + (h as i64) * 1000 => (
                names::HEARTBEAT_TIMEOUT,
                format!("No heartbeat within {h} seconds"),
            ),
            (_, Some(d)) if self.now >= d => (
                names::TIMEOUT,
                "The task did not finish within its TimeoutSeconds".to_string(),
            ),
            _ => {
                self.t.next_steps.push(NewStep {
                    scope: scope.to_string(),
                    state: name.to_string(),
                    attempt,
                    due: next_watch(self.now, beat, p.deadline, p.heartbeat),
                    payload: p.to_value(),
                });
                return Ok(Flow::Suspended);
            }
        };
        self.t.close_tokens.push(token);
        self.event(
            "TaskTimedOut",
            json!({"resourceType": rtype, "resource": rname, "error": error, "cause": cause}),
        );
        Err(Error::states(error, cause))
    }

    async fn join_results(&mut self, key: &str) -> Result<nimbus_flows::store::JoinResults, Error> {
        let arn = self.exec.arn.clone();
        let k = key.to_string();
        let r = self
            .eng
            .blocking(move |st| st.join_results(&arn, &k))
            .await
            .map_err(|e| runtime(format!("fan-out results: {e}")))?;
        self.t.drop_joins.push(key.to_string());
        Ok(r)
    }

    async fn parallel(
        &mut self,
        scope: &str,
        name: &str,
        s: &Parallel,
        ql: QueryLanguage,
        p: &Payload,
        attempt: u32,
    ) -> Result<Flow, Error> {
        let entered = p.entered.unwrap_or(self.now);
        let ctx = self.context(name, attempt, entered, None);
        let key = join_key(scope, name);
        if p.phase == Phase::Join {
            let r = self.join_results(&key).await?;
            if r.failed > 0 {
                self.event("ParallelStateFailed", json!({}));
                return Err(r
                    .first_error
                    .as_ref()
                    .map(error_from_output)
                    .unwrap_or_else(|| Error::states(names::BRANCH_FAILED, "A branch failed")));
            }
            self.event("ParallelStateSucceeded", json!({}));
            let result = Value::Array(
                r.items
                    .into_iter()
                    .map(|i| i.and_then(Result::ok).unwrap_or(Value::Null))
                    .collect(),
            );
            let (output, vars) = self.finish(name, "Parallel", &s.io, ql, p, Some(result), &ctx)?;
            return Ok(Self::next_of(&s.transition, output, vars));
        }
        let effective = self.effective_input(&s.io, ql, p, &ctx)?;
        self.event("ParallelStateStarted", json!({}));
        let children = s
            .branches
            .iter()
            .map(|b| JoinChild {
                state: b.start_at.clone(),
                payload: Payload {
                    first: true,
                    ..Payload::enter(effective.clone(), p.vars.child(), self.now)
                }
                .to_value(),
            })
            .collect();
        self.open_join(scope, name, key, p, attempt, children, 0, 0, None);
        Ok(Flow::Suspended)
    }

    #[allow(clippy::too_many_arguments)]
    fn open_join(
        &mut self,
        scope: &str,
        name: &str,
        key: String,
        p: &Payload,
        attempt: u32,
        children: Vec<JoinChild>,
        max_concurrency: u32,
        tolerated_failures: u32,
        tolerated: Option<u32>,
    ) {
        let mut parent = p.clone();
        parent.phase = Phase::Join;
        parent.tolerated = tolerated;
        self.t.new_joins.push(NewJoin {
            key,
            parent: NewStep {
                scope: scope.to_string(),
                state: name.to_string(),
                attempt,
                due: self.now,
                payload: parent.to_value(),
            },
            children,
            max_concurrency,
            tolerated_failures,
        });
    }

    async fn map(
        &mut self,
        scope: &str,
        name: &str,
        s: &Map,
        ql: QueryLanguage,
        p: &Payload,
        attempt: u32,
    ) -> Result<Flow, Error> {
        let entered = p.entered.unwrap_or(self.now);
        let ctx = self.context(name, attempt, entered, None);
        let key = join_key(scope, name);
        if p.phase == Phase::Join {
            let r = self.join_results(&key).await?;
            if r.failed > p.tolerated.unwrap_or(0) {
                self.event("MapStateFailed", json!({}));
                return Err(match p.tolerated {
                    Some(_) => Error::states(
                        names::EXCEED_TOLERATED_FAILURE_THRESHOLD,
                        format!(
                            "The number of failed items ({}) exceeds the tolerated failure threshold",
                            r.failed
                        ),
                    ),
                    None => r
                        .first_error
                        .as_ref()
                        .map(error_from_output)
                        .unwrap_or_else(|| runtime("an iteration failed")),
                });
            }
            let result = match &s.result_writer {
                Some(writer) => {
                    self.write_results(scope, name, writer, ql, p, &ctx, r.items)
                        .await?
                }
                None => Value::Array(
                    r.items
                        .into_iter()
                        .map(|i| match i {
                            Some(Ok(v)) | Some(Err(v)) => v,
                            None => Value::Null,
                        })
                        .collect(),
                ),
            };
            self.event("MapStateSucceeded", json!({}));
            let (output, vars) = self.finish(name, "Map", &s.io, ql, p, Some(result), &ctx)?;
            return Ok(Self::next_of(&s.transition, output, vars));
        }
        let Some((start_at, _)) = processor(s) else {
            return Err(runtime("The Map state has no ItemProcessor"));
        };
        let (inputs, max_concurrency, count, percentage) = match ql {
            QueryLanguage::JsonPath => {
                let selected = io::apply_input_path(&s.io.input_path, &p.input, &ctx)?;
                let items = steps::map_items(s, &selected)?;
                let mut inputs = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    inputs.push(steps::iteration_input(
                        s,
                        &selected,
                        &ctx,
                        i,
                        item,
                        &p.vars,
                        &mut self.rng,
                    )?);
                }
                let maxc = self.number_path(
                    "MaxConcurrency",
                    s.max_concurrency.as_ref().and_then(|m| m.fixed()),
                    &s.max_concurrency_path,
                    &selected,
                )?;
                let count = self.number_path(
                    "ToleratedFailureCount",
                    s.tolerated_failure_count.as_ref().and_then(|m| m.fixed()),
                    &s.tolerated_failure_count_path,
                    &selected,
                )?;
                let pct = match (&s.tolerated_failure_percentage, &s.tolerated_failure_percentage_path) {
                    (Some(v), _) => v.fixed(),
                    (None, Some(path)) => Some(
                        ReferencePath::parse(path)?
                            .get(&selected)
                            .and_then(Value::as_f64)
                            .filter(|x| (0.0..=100.0).contains(x))
                            .ok_or_else(|| runtime(format!("The ToleratedFailurePercentagePath '{path}' must reference a number from 0 to 100")))?,
                    ),
                    _ => None,
                };
                (inputs, maxc, count, pct)
            }
            QueryLanguage::Jsonata => {
                let mut env = Env {
                    context: &ctx,
                    vars: &p.vars,
                    rng: &mut self.rng,
                };
                let items = jsonata::map_items(s, &p.input, &mut env)?;
                let mut inputs = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    inputs.push(jsonata::iteration_input(s, &p.input, i, item, &mut env)?);
                }
                let maxc = s
                    .max_concurrency
                    .as_ref()
                    .map(|m| jsonata::resolve_u64("MaxConcurrency", m, &p.input, &mut env))
                    .transpose()?;
                let count = s
                    .tolerated_failure_count
                    .as_ref()
                    .map(|m| jsonata::resolve_u64("ToleratedFailureCount", m, &p.input, &mut env))
                    .transpose()?;
                let pct = s
                    .tolerated_failure_percentage
                    .as_ref()
                    .map(|m| jsonata::resolve_percentage(m, &p.input, &mut env))
                    .transpose()?;
                (inputs, maxc, count, pct)
            }
        };
        let inputs = match &s.item_batcher {
            Some(b) => batch(inputs, b, &p.input)?,
            None => inputs,
        };
        let total = inputs.len() as u64;
        let tolerated = match (count, percentage) {
            // A DISTRIBUTED Map tolerates no failure by default: the first one ends it
            // with States.ExceedToleratedFailureThreshold.
            (None, None) if s.mode() == nimbus_flows::definition::ProcessorMode::Distributed => {
                Some(0)
            }
            (None, None) => None,
            (c, pct) => {
                let by_pct = pct.map_or(0, |x| ((x / 100.0) * total as f64).floor() as u64);
                Some(c.unwrap_or(0).max(by_pct).min(u64::from(u32::MAX)) as u32)
            }
        };
        self.event("MapStateStarted", json!({"length": total}));
        let children = inputs
            .into_iter()
            .map(|input| JoinChild {
                state: start_at.to_string(),
                payload: Payload {
                    first: true,
                    ..Payload::enter(input, p.vars.child(), self.now)
                }
                .to_value(),
            })
            .collect();
        let maxc = max_concurrency.unwrap_or(0).min(u64::from(u32::MAX)) as u32;
        self.open_join(
            scope,
            name,
            key,
            p,
            attempt,
            children,
            maxc,
            tolerated.unwrap_or(0),
            tolerated,
        );
        Ok(Flow::Suspended)
    }

    /// `ResultWriter`: the iterations' results go to the object store as Step Functions
    /// writes them (`PREFIX/RUN/SUCCEEDED_0.json`, `FAILED_0.json`, `manifest.json`) and
    /// the Map's result is `{MapRunArn, ResultWriterDetails: {Bucket, Key}}`.
    #[allow(clippy::too_many_arguments)]
    async fn write_results(
        &mut self,
        scope: &str,
        name: &str,
        writer: &Value,
        ql: QueryLanguage,
        p: &Payload,
        ctx: &Value,
        items: Vec<Option<Result<Value, Value>>>,
    ) -> Result<Value, Error> {
        let failed_writer = |cause: String| Error::states(names::RESULT_WRITER_FAILED, cause);
        let resource = writer["Resource"].as_str().unwrap_or_default();
        if !matches!(
            resource,
            "arn:aws:states:::s3:putObject" | "arn:aws:states:::aws-sdk:s3:putObject"
        ) {
            return Err(failed_writer(format!(
                "ResultWriter's Resource must be arn:aws:states:::s3:putObject, not '{resource}'"
            )));
        }
        let params = match ql {
            QueryLanguage::JsonPath => match writer.get("Parameters") {
                Some(t) => io::apply_template(t, &p.input, ctx, &p.vars, &mut self.rng)?,
                None => Value::Null,
            },
            QueryLanguage::Jsonata => match writer.get("Arguments") {
                Some(t) => {
                    let mut env = Env {
                        context: ctx,
                        vars: &p.vars,
                        rng: &mut self.rng,
                    };
                    jsonata::evaluate(t, "ResultWriter/Arguments", &p.input, &mut env)?
                }
                None => Value::Null,
            },
        };
        let Some(bucket) = params["Bucket"].as_str().map(str::to_string) else {
            return Err(failed_writer("ResultWriter needs a 'Bucket'".into()));
        };
        let prefix = params["Prefix"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        let run_id = self.child_name(scope, name, self.step.attempt);
        // arn:aws:states:REGION:ACCOUNT:mapRun:MACHINE/STATE:RUN
        let map_run = format!(
            "{}/{name}:{run_id}",
            self.exec
                .machine_arn
                .replacen(":stateMachine:", ":mapRun:", 1)
        );
        let dir = if prefix.is_empty() {
            run_id.clone()
        } else {
            format!("{prefix}/{run_id}")
        };
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        for (index, item) in items.into_iter().enumerate() {
            match item {
                Some(Ok(out)) => ok.push(json!({"Index": index, "Output": text(&out), "Status": "SUCCEEDED"})),
                Some(Err(e)) => bad.push(json!({"Index": index, "Error": e["Error"], "Cause": e["Cause"], "Status": "FAILED"})),
                None => {}
            }
        }
        let mut files = json!({"FAILED": [], "PENDING": [], "SUCCEEDED": []});
        for (status, list) in [("SUCCEEDED", ok), ("FAILED", bad)] {
            if list.is_empty() {
                continue;
            }
            let key = format!("{dir}/{status}_0.json");
            let body = text(&Value::Array(list));
            let size = body.len();
            self.put_object(&bucket, &key, body)
                .await
                .map_err(failed_writer)?;
            files[status] = json!([{"Key": key, "Size": size}]);
        }
        let manifest_key = format!("{dir}/manifest.json");
        let manifest =
            json!({"DestinationBucket": bucket, "MapRunArn": map_run, "ResultFiles": files});
        self.put_object(&bucket, &manifest_key, text(&manifest))
            .await
            .map_err(failed_writer)?;
        Ok(
            json!({"MapRunArn": map_run, "ResultWriterDetails": {"Bucket": bucket, "Key": manifest_key}}),
        )
    }

    async fn put_object(&self, bucket: &str, key: &str, body: String) -> Result<(), String> {
        let params = json!({"Bucket": bucket, "Key": key, "Body": body});
        match self
            .eng
            .tasks
            .call_service("s3", "putObject", params, &self.def.role_arn)
            .await
        {
            TaskOutcome::Succeeded { .. } => Ok(()),
            TaskOutcome::Failed { error, cause } => {
                Err(format!("s3://{bucket}/{key}: {error}: {cause}"))
            }
        }
    }

    fn number_path(
        &self,
        field: &str,
        fixed: Option<u64>,
        path: &Option<String>,
        input: &Value,
    ) -> Result<Option<u64>, Error> {
        if fixed.is_some() {
            return Ok(fixed);
        }
        match path {
            Some(path) => ReferencePath::parse(path)?
                .get(input)
                .and_then(Value::as_u64)
                .map(Some)
                .ok_or_else(|| {
                    runtime(format!(
                        "The {field}Path '{path}' must reference a non-negative integer"
                    ))
                }),
            None => Ok(None),
        }
    }
}

/// The first and the longest wait between two looks at a `.sync` child execution.
const CHILD_POLL_FIRST_MS: u64 = 100;
const CHILD_POLL_MAX_MS: u64 = 5_000;

/// `states:startExecution`: starts the child (`StateMachineArn`, `Input` — JSON or its
/// text —, `Name`); the result is `{ExecutionArn, StartDate}`.
async fn start_child(
    eng: &Inner,
    params: &Value,
    default_name: String,
    trace: Option<String>,
) -> TaskOutcome {
    let Some(machine) = params["StateMachineArn"].as_str() else {
        return TaskOutcome::Failed {
            error: names::RUNTIME.into(),
            cause: "The startExecution integration needs a 'StateMachineArn' parameter".into(),
        };
    };
    let input = match params.get("Input") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => text(v),
        None => "{}".into(),
    };
    let req = crate::StartRequest {
        target: machine.to_string(),
        name: Some(params["Name"].as_str().map_or(default_name, str::to_string)),
        input: Some(input),
        trace_header: trace,
    };
    let arn = match eng.start(&req).await {
        Ok(st) => st.execution.arn,
        // The same attempt re-run after its child finished: that child is the answer.
        Err(crate::WorkflowError::Store(
            nimbus_flows::store::StoreError::ExecutionAlreadyExists(arn),
        )) => arn,
        Err(e) => {
            return TaskOutcome::Failed {
                error: "StepFunctions.ServiceException".into(),
                cause: e.to_string(),
            }
        }
    };
    let a = arn.clone();
    let start = eng
        .blocking(move |st| st.describe_execution(&a))
        .await
        .map(|e| e.start_date)
        .unwrap_or_default();
    TaskOutcome::Succeeded {
        output: json!({"ExecutionArn": arn, "StartDate": start}),
        version: String::new(),
    }
}

/// `ItemBatcher`: items grouped into `{"Items": […], "BatchInput": …}` of at most
/// `MaxItemsPerBatch` items and `MaxInputBytesPerBatch` bytes.
fn batch(items: Vec<Value>, batcher: &Value, _input: &Value) -> Result<Vec<Value>, Error> {
    let max_items = batcher["MaxItemsPerBatch"]
        .as_u64()
        .unwrap_or(u64::MAX)
        .max(1) as usize;
    let max_bytes = batcher["MaxInputBytesPerBatch"]
        .as_u64()
        .unwrap_or(MAX_PAYLOAD as u64) as usize;
    let batch_input = batcher.get("BatchInput").cloned();
    let mut out = Vec::new();
    let mut cur: Vec<Value> = Vec::new();
    let mut bytes = 0usize;
    for item in items {
        let len = text(&item).len() + 1;
        if !cur.is_empty() && (cur.len() >= max_items || bytes + len > max_bytes) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += len;
        cur.push(item);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out
        .into_iter()
        .map(|items| {
            let mut b = json!({"Items": items});
            if let Some(bi) = &batch_input {
                b["BatchInput"] = bi.clone();
            }
            b
        })
        .collect())
}

fn data_limit(state: &str) -> Error {
    Error::states(
        names::DATA_LIMIT_EXCEEDED,
        format!("The state/task '{state}' returned a result with a size exceeding the maximum number of bytes service limit."),
    )
}

/// When a token watch looks next: the task's deadline or the next heartbeat check.
fn next_watch(
    now: Millis,
    beat: Millis,
    deadline: Option<Millis>,
    heartbeat: Option<u64>,
) -> Millis {
    let hb = heartbeat.map(|h| beat + (h as i64) * 1000);
    [deadline, hb]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now)
        .max(now)
}
