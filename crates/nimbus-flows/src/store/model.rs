//! The store's domain types. Times are milliseconds since the Unix epoch (UTC), given by
//! the caller (the executor's clock, which tests and `--time-scale` control).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The hard bound of an execution's history: event 25,000 may only end the execution;
/// anything else there becomes `ExecutionFailed` with [`HISTORY_LIMIT_ERROR`].
/// Source: <https://docs.aws.amazon.com/step-functions/latest/dg/bp-history-limit.html>.
pub const HISTORY_LIMIT: u32 = 25_000;
/// The error of an execution stopped by the history bound.
pub const HISTORY_LIMIT_ERROR: &str = "States.Runtime";
/// Its cause, as AWS words it.
pub const HISTORY_LIMIT_CAUSE: &str =
    "The execution reached the maximum number of history events (25000).";
/// How long a name stays taken by a finished execution (`StartExecution`).
pub const NAME_REUSE_DAYS: i64 = 90;

/// `STANDARD` or `EXPRESS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MachineType {
    Standard,
    Express,
}

impl MachineType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "STANDARD",
            Self::Express => "EXPRESS",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "STANDARD" => Some(Self::Standard),
            "EXPRESS" => Some(Self::Express),
            _ => None,
        }
    }
}

/// `ACTIVE`, or `DELETING` once deleted while executions may still run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MachineStatus {
    Active,
    Deleting,
}

impl MachineStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Deleting => "DELETING",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ACTIVE" => Some(Self::Active),
            "DELETING" => Some(Self::Deleting),
            _ => None,
        }
    }
}

/// A state machine to create. The caller builds the ARN (it knows region and account).
#[derive(Debug, Clone, PartialEq)]
pub struct NewMachine {
    pub arn: String,
    pub name: String,
    pub definition: String,
    pub machine_type: MachineType,
    pub role_arn: String,
    /// `loggingConfiguration` as the API received it (`{}` when absent).
    pub logging: Value,
    /// `tracingConfiguration` as the API received it (`{}` when absent).
    pub tracing: Value,
    pub tags: BTreeMap<String, String>,
    pub description: String,
}

/// A state machine's current revision and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub arn: String,
    pub name: String,
    pub machine_type: MachineType,
    pub status: MachineStatus,
    pub tags: BTreeMap<String, String>,
    pub description: String,
    pub created: Millis,
    /// When the last update made the current revision.
    pub updated: Millis,
    pub revision: Revision,
}

/// One immutable revision of a state machine: what an execution runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub revision_id: String,
    pub definition: String,
    pub role_arn: String,
    pub logging: Value,
    pub tracing: Value,
    pub created: Millis,
}

/// `UpdateStateMachine`: the fields given replace the current revision's ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MachineUpdate {
    pub definition: Option<String>,
    pub role_arn: Option<String>,
    pub logging: Option<Value>,
    pub tracing: Option<Value>,
    pub description: Option<String>,
}

/// What `create_machine` did: CreateStateMachine is idempotent for an identical request.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedMachine {
    pub machine: Machine,
    /// False when an identical machine existed and was returned.
    pub created: bool,
}

/// A published version: an immutable, numbered snapshot of a revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// `<machine arn>:<version>`.
    pub arn: String,
    pub machine_arn: String,
    pub version: u32,
    pub description: String,
    pub created: Millis,
    pub revision: Revision,
}

/// An alias: a name routing executions to one or two versions by weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Alias {
    /// `<machine arn>:<alias name>`.
    pub arn: String,
    pub machine_arn: String,
    pub name: String,
    pub description: String,
    pub routing: Vec<Route>,
    pub created: Millis,
    pub updated: Millis,
}

/// One entry of an alias's routing configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub version_arn: String,
    /// Percent, 0–100; the entries sum to 100.
    pub weight: u32,
}

/// An execution's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecutionStatus {
    #[serde(rename = "RUNNING")]
    Running,
    #[serde(rename = "SUCCEEDED")]
    Succeeded,
    #[serde(rename = "FAILED")]
    Failed,
    #[serde(rename = "TIMED_OUT")]
    TimedOut,
    #[serde(rename = "ABORTED")]
    Aborted,
    #[serde(rename = "PENDING_REDRIVE")]
    PendingRedrive,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::TimedOut => "TIMED_OUT",
            Self::Aborted => "ABORTED",
            Self::PendingRedrive => "PENDING_REDRIVE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "RUNNING" => Self::Running,
            "SUCCEEDED" => Self::Succeeded,
            "FAILED" => Self::Failed,
            "TIMED_OUT" => Self::TimedOut,
            "ABORTED" => Self::Aborted,
            "PENDING_REDRIVE" => Self::PendingRedrive,
            _ => return None,
        })
    }

    /// Open executions are running or about to be redriven.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Running | Self::PendingRedrive)
    }
}

/// `StartExecution` as the store sees it: the target already resolved to a revision.
#[derive(Debug, Clone, PartialEq)]
pub struct NewExecution {
    /// The state machine's ARN (unqualified).
    pub machine_arn: String,
    /// The execution name (the API generates a UUID when none is given).
    pub name: String,
    /// The input JSON text, kept as given (idempotency compares it byte for byte).
    pub input: String,
    /// The version started, when the caller named a version or an alias picked one.
    pub version_arn: Option<String>,
    pub alias_arn: Option<String>,
    pub trace_header: Option<String>,
}

/// An execution.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub arn: String,
    pub machine_arn: String,
    pub name: String,
    /// The revision it runs (its definition survives `UpdateStateMachine`).
    pub revision_id: String,
    pub version_arn: Option<String>,
    pub alias_arn: Option<String>,
    pub status: ExecutionStatus,
    pub input: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub cause: Option<String>,
    pub start_date: Millis,
    pub stop_date: Option<Millis>,
    pub redrive_count: u32,
    pub redrive_date: Option<Millis>,
    pub trace_header: Option<String>,
    /// Events in its history so far.
    pub event_count: u32,
}

/// What `start_execution` answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    pub execution: Execution,
    /// False when an open execution of that name and identical input was returned.
    pub created: bool,
}

/// A new execution's end or change, applied with a transition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutionUpdate {
    pub status: Option<ExecutionStatus>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub cause: Option<String>,
    /// Where a redrive of this (failed) execution starts: kept with the execution and
    /// enqueued by [`super::FlowStore::redrive_execution`].
    pub redrive: Option<NewStep>,
}

/// A history event to append; the store numbers it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// As Step Functions names it (`TaskStateEntered`, `ExecutionSucceeded`, …).
    pub event_type: String,
    /// The event that caused it; the previous event of the history when `None`.
    pub previous_event_id: Option<u32>,
    /// The `…EventDetails` object.
    pub details: Value,
}

impl NewEvent {
    pub fn new(event_type: &str, details: Value) -> Self {
        Self {
            event_type: event_type.into(),
            previous_event_id: None,
            details,
        }
    }

    /// Whether this event ends an execution.
    pub fn is_terminal(&self) -> bool {
        is_terminal_event(&self.event_type)
    }
}

/// Whether an event type ends an execution.
pub fn is_terminal_event(event_type: &str) -> bool {
    matches!(
        event_type,
        "ExecutionSucceeded" | "ExecutionFailed" | "ExecutionAborted" | "ExecutionTimedOut"
    )
}

/// A recorded history event.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEvent {
    pub id: u32,
    pub previous_event_id: u32,
    pub timestamp: Millis,
    pub event_type: String,
    pub details: Value,
}

/// A page of results and the token of the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// A step for the executor to run: the durable queue's item.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStep {
    /// Where in the execution: `""` at the top level, e.g. `"Map1/17"` for iteration 17 of
    /// a Map or `"Par/1"` for a Parallel branch (the executor's convention).
    pub scope: String,
    /// The state to run.
    pub state: String,
    /// 0 on the first attempt; retries count up.
    pub attempt: u32,
    /// When the step becomes runnable (now, a retry's backoff, a Wait's end).
    pub due: Millis,
    /// The executor's continuation (the state's input, Map/Parallel bookkeeping, …).
    pub payload: Value,
}

/// A claimed step. `claim` proves the claim when completing.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: i64,
    pub execution_arn: String,
    pub scope: String,
    pub state: String,
    pub attempt: u32,
    pub due: Millis,
    pub payload: Value,
    /// Set on the step a `.waitForTaskToken` resolution enqueued.
    pub resolution: Option<TokenResolution>,
    pub task_token: Option<String>,
    pub claim: String,
    pub claimed_until: Millis,
}

/// A state transition, committed atomically with the completion of the step that made it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transition {
    pub events: Vec<NewEvent>,
    pub next_steps: Vec<NewStep>,
    /// A terminal status here ends the execution: its other steps are dropped and its open
    /// task tokens closed.
    pub execution: Option<ExecutionUpdate>,
    /// Task tokens to close (a timeout fired); when one of them was resolved meanwhile
    /// the step is consumed and nothing else changes ([`Completion::TokenResolved`]).
    pub close_tokens: Vec<String>,
    /// Fan-outs to open (a Parallel's branches, a Map's iterations).
    pub new_joins: Vec<NewJoin>,
    /// A child of a fan-out ended (its last state in its scope).
    pub join_report: Option<JoinReport>,
    /// Fan-outs whose results the step consumed: removed with their items.
    pub drop_joins: Vec<String>,
}

/// A fan-out: children that run in their own scopes (`<key>/<index>`), at most
/// `max_concurrency` at a time, and a parent step enqueued once, when every child has
/// ended or more than `tolerated_failures` failed. Closing early drops the children
/// still queued (and their own fan-outs and open task tokens).
#[derive(Debug, Clone, PartialEq)]
pub struct NewJoin {
    /// Unique among the execution's open fan-outs (the executor uses the parent state's
    /// scope and name).
    pub key: String,
    /// The continuation enqueued when the fan-out closes (`due` is ignored: it is due then).
    pub parent: NewStep,
    /// Each child's first step, by index.
    pub children: Vec<JoinChild>,
    /// 0: every child at once.
    pub max_concurrency: u32,
    pub tolerated_failures: u32,
}

/// One child of a fan-out: the state it starts in and its step payload.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinChild {
    pub state: String,
    pub payload: Value,
}

/// A child's end.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinReport {
    pub key: String,
    pub index: u32,
    pub succeeded: bool,
    /// Its output, or its error output when it failed.
    pub result: Value,
}

/// What a fan-out's children ended with.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinResults {
    /// By index: `Some(Ok(output))`, `Some(Err(error output))`, or `None` (not run or
    /// cut short when the fan-out closed early).
    pub items: Vec<Option<std::result::Result<Value, Value>>>,
    /// The error output of the first child that failed.
    pub first_error: Option<Value>,
    pub succeeded: u32,
    pub failed: u32,
}

/// What `complete` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// Everything committed.
    Committed,
    /// The claim was lost (lease expired and re-claimed, execution stopped): nothing changed.
    ClaimLost,
    /// A token in `close_tokens` was resolved first: the step was consumed, nothing else
    /// changed; the resolution's step runs instead.
    TokenResolved,
    /// The history reached [`HISTORY_LIMIT`]: events up to 24,999 were recorded, then
    /// `ExecutionFailed` (`States.Runtime`); the execution is FAILED.
    HistoryLimit,
}

/// How a `.waitForTaskToken` task ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status")]
pub enum TokenResolution {
    #[serde(rename = "SUCCEEDED")]
    Success { output: String },
    #[serde(rename = "FAILED")]
    Failure {
        error: Option<String>,
        cause: Option<String>,
    },
}

/// What `resolve_task_token` / `heartbeat_task_token` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAnswer {
    /// Recorded (the resolution's step is enqueued).
    Accepted,
    /// The same resolution was recorded before: nothing changed (idempotent retry).
    Duplicate,
    /// The task is over (resolved differently, timed out, execution ended): AWS answers
    /// `TaskTimedOut`.
    Closed,
}

/// A task token's record.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskToken {
    pub token: String,
    pub execution_arn: String,
    pub scope: String,
    pub state: String,
    pub attempt: u32,
    /// `OPEN`, `SUCCEEDED`, `FAILED` or `CLOSED`.
    pub status: String,
    pub created: Millis,
    pub last_heartbeat: Option<Millis>,
}
