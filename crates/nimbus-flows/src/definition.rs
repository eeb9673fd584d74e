//! The typed model of a state machine in the Amazon States Language.
//!
//! Parse with [`StateMachine::parse`], which validates first ([`crate::validate`]) so every
//! problem is reported, not just the first one serde meets. Fields the engine does not
//! interpret (`Credentials`, `ItemReader`, `ResultWriter`, `ItemBatcher`) and the JSONata
//! templates (`Arguments`, `Output`, `Assign`, `Items`, evaluated by [`crate::jsonata`])
//! are kept as JSON data; numeric fields a JSONata state may compute are [`MaybeExpr`].
//!
//! Source: <https://states-language.net/spec.html> and
//! <https://docs.aws.amazon.com/step-functions/latest/dg/concepts-amazon-states-language.html>.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::choice::Condition;
use crate::errors::Result;

/// The query language of a machine or a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum QueryLanguage {
    /// JSONPath with intrinsic functions (the default).
    #[default]
    #[serde(rename = "JSONPath")]
    JsonPath,
    /// JSONata expressions in `{% … %}` ([`crate::jsonata`]).
    #[serde(rename = "JSONata")]
    Jsonata,
}

/// A state machine, or a Parallel branch, or a Map's item processor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StateMachine {
    /// Human-readable description.
    #[serde(default)]
    pub comment: Option<String>,
    /// The state where execution starts.
    pub start_at: String,
    /// The states by name.
    pub states: BTreeMap<String, State>,
    /// Execution timeout (top level only).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// The ASL version, `"1.0"` (top level only).
    #[serde(default)]
    pub version: Option<String>,
    /// The query language for states that do not set their own.
    #[serde(default)]
    pub query_language: Option<QueryLanguage>,
}

impl StateMachine {
    /// Parses and validates a definition; on failure every problem is returned in
    /// [`crate::Error::InvalidDefinition`].
    pub fn parse(text: &str) -> Result<Self> {
        crate::validate::parse(text)
    }

    /// The query language in force for `state`: its own, else the machine's. Call it on
    /// the top-level machine also for states of branches and item processors, which fall
    /// back to the state machine's language, not to the enclosing Parallel's or Map's.
    pub fn query_language_of(&self, state: &State) -> QueryLanguage {
        state
            .query_language()
            .or(self.query_language)
            .unwrap_or_default()
    }
}

/// A field that is a fixed value in JSONPath states and may be a JSONata expression
/// (`"{% … %}"`) in JSONata states (`Seconds`, `TimeoutSeconds`, `MaxConcurrency`, …).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum MaybeExpr<T> {
    /// A literal value.
    Value(T),
    /// A JSONata expression string, evaluated by [`crate::jsonata`].
    Expr(String),
}

impl<T: Copy> MaybeExpr<T> {
    /// The literal value, if it is one.
    pub fn fixed(&self) -> Option<T> {
        match self {
            MaybeExpr::Value(v) => Some(*v),
            MaybeExpr::Expr(_) => None,
        }
    }
}

/// How a non-terminal state moves on.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Transition {
    /// The next state's name.
    #[serde(default)]
    pub next: Option<String>,
    /// Whether the state ends the (sub-)machine.
    #[serde(default)]
    pub end: bool,
}

/// The JSONPath input/output processing fields.
///
/// For the nullable ones, `None` means absent (default `$`), `Some(None)` means JSON `null`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Io {
    /// `InputPath`: absent ⇒ `$`, `null` ⇒ `{}`.
    #[serde(default, deserialize_with = "nullable")]
    pub input_path: Option<Option<String>>,
    /// `OutputPath`: absent ⇒ `$`, `null` ⇒ `{}`.
    #[serde(default, deserialize_with = "nullable")]
    pub output_path: Option<Option<String>>,
    /// `Parameters`: a payload template.
    #[serde(default)]
    pub parameters: Option<Value>,
    /// `ResultSelector`: a payload template applied to the result.
    #[serde(default)]
    pub result_selector: Option<Value>,
    /// `ResultPath`: absent ⇒ `$`, `null` ⇒ discard the result.
    #[serde(default, deserialize_with = "nullable")]
    pub result_path: Option<Option<String>>,
    /// JSONata `Arguments`: a template with `{% … %}` expressions.
    #[serde(default)]
    pub arguments: Option<Value>,
    /// JSONata `Output`: a template with `{% … %}` expressions.
    #[serde(default)]
    pub output: Option<Value>,
    /// `Assign`: workflow variables to set (JSONata templates, or `.$` keys in JSONPath).
    #[serde(default)]
    pub assign: Option<Value>,
    /// The state's own query language.
    #[serde(default)]
    pub query_language: Option<QueryLanguage>,
}

fn nullable<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `JitterStrategy` of a retrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JitterStrategy {
    /// The computed delay as is.
    #[default]
    None,
    /// A random delay between 0 and the computed one.
    Full,
}

/// One `Retry` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Retrier {
    /// The error names it applies to.
    pub error_equals: Vec<String>,
    /// Seconds before the first retry (default 1).
    #[serde(default = "one")]
    pub interval_seconds: u64,
    /// Most retries (default 3; 0 never retries).
    #[serde(default = "three")]
    pub max_attempts: u64,
    /// Multiplier of the interval per attempt (default 2.0).
    #[serde(default = "two")]
    pub backoff_rate: f64,
    /// Cap on the delay.
    #[serde(default)]
    pub max_delay_seconds: Option<u64>,
    /// Jitter (default NONE).
    #[serde(default)]
    pub jitter_strategy: JitterStrategy,
    /// Human-readable description.
    #[serde(default)]
    pub comment: Option<String>,
}

fn one() -> u64 {
    1
}
fn three() -> u64 {
    3
}
fn two() -> f64 {
    2.0
}

/// One `Catch` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Catcher {
    /// The error names it applies to.
    pub error_equals: Vec<String>,
    /// The state to go to.
    pub next: String,
    /// Where the error output goes: absent ⇒ `$`, `null` ⇒ discarded.
    #[serde(default, deserialize_with = "nullable")]
    pub result_path: Option<Option<String>>,
    /// JSONata `Output` (default: the error output).
    #[serde(default)]
    pub output: Option<Value>,
    /// Workflow variables to assign when this catcher is taken.
    #[serde(default)]
    pub assign: Option<Value>,
    /// Human-readable description.
    #[serde(default)]
    pub comment: Option<String>,
}

/// A state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "Type")]
pub enum State {
    /// Runs a resource.
    Task(Box<Task>),
    /// Passes input to output, optionally injecting `Result`.
    Pass(Pass),
    /// Branches on rules.
    Choice(Choice),
    /// Waits.
    Wait(Wait),
    /// Ends the (sub-)machine successfully.
    Succeed(Succeed),
    /// Ends the (sub-)machine with an error.
    Fail(Fail),
    /// Runs branches in parallel.
    Parallel(Parallel),
    /// Runs an item processor for each item.
    Map(Box<Map>),
}

/// A Task state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    /// Human-readable description.
    #[serde(default)]
    pub comment: Option<String>,
    /// The resource ARN (function, service integration, activity).
    pub resource: String,
    /// Input/output processing.
    #[serde(flatten)]
    pub io: Io,
    /// Next/End.
    #[serde(flatten)]
    pub transition: Transition,
    /// Retriers.
    #[serde(default)]
    pub retry: Vec<Retrier>,
    /// Catchers.
    #[serde(default)]
    pub catch: Vec<Catcher>,
    /// Task timeout (default 99999999 on AWS); an expression in JSONata states.
    #[serde(default)]
    pub timeout_seconds: Option<MaybeExpr<u64>>,
    /// Reference path to the timeout.
    #[serde(default)]
    pub timeout_seconds_path: Option<String>,
    /// Heartbeat interval; an expression in JSONata states.
    #[serde(default)]
    pub heartbeat_seconds: Option<MaybeExpr<u64>>,
    /// Reference path to the heartbeat interval.
    #[serde(default)]
    pub heartbeat_seconds_path: Option<String>,
    /// Role to assume (kept as data).
    #[serde(default)]
    pub credentials: Option<Value>,
}

/// A Pass state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Pass {
    /// Human-readable description.
    #[serde(default)]
    pub comment: Option<String>,
    /// Fixed result handed to `ResultPath` (else the effective input).
    #[serde(default)]
    pub result: Option<Value>,
    /// Input/output processing.
    #[serde(flatten)]
    pub io: Io,
    /// Next/End.
    #[serde(flatten)]
    pub transition: Transition,
}

/// One top-level Choice rule: a condition and where it leads.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceRule {
    /// The condition ([`Condition::Jsonata`] for a JSONata `Condition`).
    pub condition: Condition,
    /// The state to go to when it holds.
    pub next: String,
    /// Human-readable description.
    pub comment: Option<String>,
    /// JSONata `Output` used when this rule is taken.
    pub output: Option<Value>,
    /// Variables assigned when this rule is taken.
    pub assign: Option<Value>,
}

impl<'de> Deserialize<'de> for ChoiceRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let next = v
            .get("Next")
            .and_then(Value::as_str)
            .ok_or_else(|| serde::de::Error::missing_field("Next"))?;
        let comment = v.get("Comment").and_then(Value::as_str).map(str::to_string);
        let condition = Condition::from_json(&v).map_err(serde::de::Error::custom)?;
        Ok(ChoiceRule {
            condition,
            next: next.to_string(),
            comment,
            output: v.get("Output").cloned(),
            assign: v.get("Assign").cloned(),
        })
    }
}

/// A Choice state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Choice {
    /// Human-readable description.
    #[serde(default)]
    pub comment: Option<String>,
    /// The rules, tried in order.
    pub choices: Vec<ChoiceRule>,
    /// Where to go when no rule matches (else `States.NoChoiceMatched`).
    #[serde(default)]
    pub default: Option<String>,
    /// Input/output processing (`InputPath`, `OutputPath`).
    #[serde(flatten)]
    pub io: Io,
}

/// A Wait state: exactly one of the four fields is set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Wait {
    /// Human-readable description.
    #[serde(default)]
    pub comment: Option<String>,
    /// Seconds to wait; an expression in JSONata states.
    #[serde(default)]
    pub seconds: Option<MaybeExpr<u64>>,
    /// RFC 3339 time to wait until.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Reference path to the seconds.
    #[serde(default)]
    pub seconds_path: Option<String>,
    /// Reference path to the timestamp.
    #[serde(default)]
    pub timestamp_path: Option<String>,
    /// Input/output processing (`InputPath`, `OutputPath`).
    #[serde(flatten)]
    pub io: Io,
    /// Next/End.
    #[serde(flatten)]
    pub transition: Transition,
}

/// A Succeed state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Succeed {
    /// Human-readable description.
    #[serde(default)]
    pub comment: Option<String>,
    /// Input/output processing (`InputPath`, `OutputPath`).
    #[serde(flatten)]
    pub io: Io,
}

/// A Fail state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Fail {
    /// Human-readable description.
    #[serde(default)]
    pub comment: Option<String>,
    /// The error name.
    #[serde(default)]
    pub error: Option<String>,
    /// Path (or intrinsic) giving the error name.
    #[serde(default)]
    pub error_path: Option<String>,
    /// The cause.
    #[serde(default)]
    pub cause: Option<String>,
    /// Path (or intrinsic) giving the cause.
    #[serde(default)]
    pub cause_path: Option<String>,
    /// The state's own query language.
    #[serde(default)]
    pub query_language: Option<QueryLanguage>,
}

/// A Parallel state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Parallel {
    /// Human-readable description.
    #[serde(default)]
    pub comment: Option<String>,
    /// The branches, each its own scope of states.
    pub branches: Vec<StateMachine>,
    /// Input/output processing.
    #[serde(flatten)]
    pub io: Io,
    /// Next/End.
    #[serde(flatten)]
    pub transition: Transition,
    /// Retriers.
    #[serde(default)]
    pub retry: Vec<Retrier>,
    /// Catchers.
    #[serde(default)]
    pub catch: Vec<Catcher>,
}

/// `ProcessorConfig.Mode` of a Map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ProcessorMode {
    /// Iterations run inside the parent execution (the default).
    #[default]
    Inline,
    /// Iterations run as child executions (a map run).
    Distributed,
}

/// A Map's `ProcessorConfig`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessorConfig {
    /// INLINE or DISTRIBUTED.
    #[serde(default)]
    pub mode: ProcessorMode,
    /// STANDARD or EXPRESS child executions (DISTRIBUTED only).
    #[serde(default)]
    pub execution_type: Option<String>,
}

/// A Map's `ItemProcessor`: a sub-machine and its configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ItemProcessor {
    /// Processor configuration.
    #[serde(default)]
    pub processor_config: ProcessorConfig,
    /// Human-readable description.
    #[serde(default)]
    pub comment: Option<String>,
    /// The state where each iteration starts.
    pub start_at: String,
    /// The iteration's states.
    pub states: BTreeMap<String, State>,
    /// The processor's query language (refused by validation: processor states fall back
    /// to the top-level machine's language).
    #[serde(default)]
    pub query_language: Option<QueryLanguage>,
}

impl ItemProcessor {
    /// The processor as a state machine (its own scope of states).
    pub fn machine(&self) -> StateMachine {
        StateMachine {
            comment: self.comment.clone(),
            start_at: self.start_at.clone(),
            states: self.states.clone(),
            timeout_seconds: None,
            version: None,
            query_language: self.query_language,
        }
    }
}

/// A Map state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Map {
    /// Human-readable description.
    #[serde(default)]
    pub comment: Option<String>,
    /// The processor (current form).
    #[serde(default)]
    pub item_processor: Option<ItemProcessor>,
    /// The processor (deprecated form, INLINE).
    #[serde(default)]
    pub iterator: Option<StateMachine>,
    /// Reference path to the items array (default `$`).
    #[serde(default)]
    pub items_path: Option<String>,
    /// JSONata `Items`: an array or an expression giving one.
    #[serde(default)]
    pub items: Option<Value>,
    /// Template building each item's input (with `$$.Map.Item.*`).
    #[serde(default)]
    pub item_selector: Option<Value>,
    /// Most iterations at once (0 or absent: as many as possible).
    #[serde(default)]
    pub max_concurrency: Option<MaybeExpr<u64>>,
    /// Reference path to `MaxConcurrency`.
    #[serde(default)]
    pub max_concurrency_path: Option<String>,
    /// Failed iterations tolerated, as a percentage.
    #[serde(default)]
    pub tolerated_failure_percentage: Option<MaybeExpr<f64>>,
    /// Reference path to the tolerated percentage.
    #[serde(default)]
    pub tolerated_failure_percentage_path: Option<String>,
    /// Failed iterations tolerated, as a count.
    #[serde(default)]
    pub tolerated_failure_count: Option<MaybeExpr<u64>>,
    /// Reference path to the tolerated count.
    #[serde(default)]
    pub tolerated_failure_count_path: Option<String>,
    /// Batching of items (kept as data).
    #[serde(default)]
    pub item_batcher: Option<Value>,
    /// Where items come from (kept as data).
    #[serde(default)]
    pub item_reader: Option<Value>,
    /// Where results go (kept as data).
    #[serde(default)]
    pub result_writer: Option<Value>,
    /// Map run label (DISTRIBUTED).
    #[serde(default)]
    pub label: Option<String>,
    /// Input/output processing.
    #[serde(flatten)]
    pub io: Io,
    /// Next/End.
    #[serde(flatten)]
    pub transition: Transition,
    /// Retriers.
    #[serde(default)]
    pub retry: Vec<Retrier>,
    /// Catchers.
    #[serde(default)]
    pub catch: Vec<Catcher>,
}

impl Map {
    /// The processor, whichever of `ItemProcessor` or `Iterator` was given.
    pub fn processor(&self) -> Option<StateMachine> {
        self.item_processor
            .as_ref()
            .map(ItemProcessor::machine)
            .or_else(|| self.iterator.clone())
    }

    /// The processor mode (INLINE for `Iterator`).
    pub fn mode(&self) -> ProcessorMode {
        self.item_processor
            .as_ref()
            .map(|p| p.processor_config.mode)
            .unwrap_or_default()
    }
}

impl State {
    /// The `Type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            State::Task(_) => "Task",
            State::Pass(_) => "Pass",
            State::Choice(_) => "Choice",
            State::Wait(_) => "Wait",
            State::Succeed(_) => "Succeed",
            State::Fail(_) => "Fail",
            State::Parallel(_) => "Parallel",
            State::Map(_) => "Map",
        }
    }

    /// The state's `Next`/`End`, for the states that have them.
    pub fn transition(&self) -> Option<&Transition> {
        match self {
            State::Task(s) => Some(&s.transition),
            State::Pass(s) => Some(&s.transition),
            State::Wait(s) => Some(&s.transition),
            State::Parallel(s) => Some(&s.transition),
            State::Map(s) => Some(&s.transition),
            State::Choice(_) | State::Succeed(_) | State::Fail(_) => None,
        }
    }

    /// The state's input/output fields (`None` for Fail).
    pub fn io(&self) -> Option<&Io> {
        match self {
            State::Task(s) => Some(&s.io),
            State::Pass(s) => Some(&s.io),
            State::Choice(s) => Some(&s.io),
            State::Wait(s) => Some(&s.io),
            State::Succeed(s) => Some(&s.io),
            State::Parallel(s) => Some(&s.io),
            State::Map(s) => Some(&s.io),
            State::Fail(_) => None,
        }
    }

    /// The retriers (empty for states without `Retry`).
    pub fn retriers(&self) -> &[Retrier] {
        match self {
            State::Task(s) => &s.retry,
            State::Parallel(s) => &s.retry,
            State::Map(s) => &s.retry,
            _ => &[],
        }
    }

    /// The catchers (empty for states without `Catch`).
    pub fn catchers(&self) -> &[Catcher] {
        match self {
            State::Task(s) => &s.catch,
            State::Parallel(s) => &s.catch,
            State::Map(s) => &s.catch,
            _ => &[],
        }
    }

    /// The state's own `QueryLanguage`, if set.
    pub fn query_language(&self) -> Option<QueryLanguage> {
        match self {
            State::Fail(f) => f.query_language,
            other => other.io().and_then(|io| io.query_language),
        }
    }

    /// Every state name this state may transition to (Next, Choice targets, Default, Catch).
    pub fn targets(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        if let Some(next) = self.transition().and_then(|t| t.next.as_deref()) {
            out.push(next);
        }
        if let State::Choice(c) = self {
            out.extend(c.choices.iter().map(|r| r.next.as_str()));
            out.extend(c.default.as_deref());
        }
        out.extend(self.catchers().iter().map(|c| c.next.as_str()));
        out
    }

    /// Whether the state can end its (sub-)machine.
    pub fn is_terminal(&self) -> bool {
        matches!(self, State::Succeed(_) | State::Fail(_))
            || self.transition().is_some_and(|t| t.end)
    }
}
