//! The JSONata query language of states (`QueryLanguage: "JSONata"`): templates with
//! `{% … %}` expressions, the `$states` reserved variable, workflow variables (`Assign`) and
//! the functions Step Functions adds to JSONata.
//!
//! - A string whose trimmed text starts with `{%` and ends with `%}` is an expression;
//!   objects and arrays are walked and only such strings evaluated; other values are copied.
//! - `$states` is `{input, context}` plus `result` (Task/Parallel/Map `Output` and
//!   `Assign`) or `errorOutput` (a catcher's `Output` and `Assign`). The JSONata input
//!   document (`$`) is undefined: states read their input through `$states.input`.
//! - Workflow variables ([`Variables`]) are bound by name. `Output` and `Assign` of one
//!   state are evaluated against the same, previous variables; the new values are visible
//!   from the next state on ([`Outcome::apply`]). A Parallel branch or Map iteration runs in
//!   a child scope ([`Variables::child`]): it reads the outer variables and its assignments
//!   stay in it.
//! - Every failure, including an expression that returns nothing (undefined) where a value
//!   is needed, is `States.QueryEvaluationError` naming the expression and the field.
//! - Added functions: `$partition(array, size)`, `$range(start, end, step)` (inclusive),
//!   `$hash(data, algorithm)`, `$random([seed])`, `$uuid()`, `$parse(json)`; `$eval` is not
//!   available, as on Step Functions.
//!
//! Sources: <https://docs.aws.amazon.com/step-functions/latest/dg/transforming-data.html>,
//! <https://docs.aws.amazon.com/step-functions/latest/dg/workflow-variables.html>,
//! <https://docs.aws.amazon.com/step-functions/latest/dg/state-choice.html>.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use nimbus_jsonata::{Bindings, Expression};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map as JsonMap, Value};

use crate::choice::parse_timestamp;
use crate::definition::{Catcher, Choice, Fail, Io, Map, MaybeExpr, Pass, Wait};
use crate::errors::{names, Error, Result};
use crate::intrinsics::apply_named;
use crate::io::{dynamic_value, with_map_item};
use crate::steps::WaitTarget;

/// Longest workflow variable name, in characters.
pub const MAX_VARIABLE_NAME: usize = 80;

/// The expression inside a JSONata expression string, or `None` if `text` is plain data.
pub fn expression_text(text: &str) -> Option<&str> {
    let t = text.trim();
    (t.len() >= 4 && t.starts_with("{%") && t.ends_with("%}")).then(|| t[2..t.len() - 2].trim())
}

/// Parses the expression inside `{% … %}`.
pub fn parse_expression(inner: &str) -> std::result::Result<Expression, String> {
    Expression::parse(inner).map_err(|e| e.to_string())
}

/// Whether `name` may be assigned: a letter or `_`, then letters, digits or `_`, at most
/// [`MAX_VARIABLE_NAME`] characters, and not the reserved `states`.
pub fn valid_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_');
    first_ok
        && chars.all(|c| c.is_alphanumeric() || c == '_')
        && name.chars().count() <= MAX_VARIABLE_NAME
        && name != "states"
}

/// The workflow variables visible in one scope: those of the enclosing scopes (read-only
/// here) and the scope's own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Variables {
    outer: BTreeMap<String, Value>,
    local: BTreeMap<String, Value>,
}

impl Variables {
    /// No variables (the top scope of an execution).
    pub fn new() -> Self {
        Self::default()
    }

    /// A variable's value (the scope's own first).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.local.get(name).or_else(|| self.outer.get(name))
    }

    /// Every visible variable.
    pub fn visible(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.outer
            .iter()
            .filter(|(k, _)| !self.local.contains_key(*k))
            .chain(self.local.iter())
    }

    /// The variables assigned in this scope.
    pub fn local(&self) -> &BTreeMap<String, Value> {
        &self.local
    }

    /// The scope of a Parallel branch or a Map iteration: it sees every variable visible
    /// here; what it assigns stays in it.
    pub fn child(&self) -> Variables {
        Variables {
            outer: self
                .visible()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            local: BTreeMap::new(),
        }
    }

    /// Sets variables in this scope.
    pub fn assign(&mut self, assigned: JsonMap<String, Value>) {
        self.local.extend(assigned);
    }
}

/// What an evaluation may read besides the state's data.
pub struct Env<'a> {
    /// The context object (`$states.context`).
    pub context: &'a Value,
    /// The variables in scope.
    pub vars: &'a Variables,
    /// Randomness for `$random()` and `$uuid()`.
    pub rng: &'a mut dyn RngCore,
}

/// A state's output and the variables it assigns (apply them with [`Outcome::apply`]
/// once the state has completed).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The state's output.
    pub output: Value,
    /// Variables to assign.
    pub assigned: JsonMap<String, Value>,
}

impl Outcome {
    /// Assigns the variables in `vars`.
    pub fn apply(self, vars: &mut Variables) -> Value {
        vars.assign(self.assigned);
        self.output
    }
}

/// The outcome of a JSONata Choice state.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceOutcome {
    /// The next state.
    pub next: String,
    /// Output and assignments (the matched rule's, else the state's).
    pub outcome: Outcome,
}

fn query_error(cause: impl Into<String>) -> Error {
    Error::states(names::QUERY_EVALUATION_ERROR, cause)
}

fn fn_error(message: impl Into<String>) -> nimbus_jsonata::Error {
    nimbus_jsonata::Error::new("D3000", message, None)
}

fn arg<'v>(args: &'v [Option<Value>], i: usize, f: &str) -> nimbus_jsonata::Result<&'v Value> {
    args.get(i)
        .and_then(Option::as_ref)
        .ok_or_else(|| fn_error(format!("${f}: argument {} is missing", i + 1)))
}

fn via_intrinsic(
    name: &str,
    f: &str,
    args: Vec<Value>,
    rng: &mut dyn RngCore,
) -> nimbus_jsonata::Result<Option<Value>> {
    apply_named(name, args, rng)
        .map(Some)
        .map_err(|e| fn_error(format!("${f}: {}", e.cause())))
}

/// Most items `$range` produces (AWS accepts `$range(1, 360145, 1)` and refuses more).
pub const MAX_RANGE_ITEMS: i64 = 360_145;

/// A numeric argument truncated towards zero, as Step Functions does; `None` if absent.
fn int_arg(args: &[Option<Value>], i: usize, f: &str) -> nimbus_jsonata::Result<Option<i64>> {
    match args.get(i).and_then(Option::as_ref) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| {
                v.as_f64()
                    .filter(|x| x.abs() < 9.0e15)
                    .map(|x| x.trunc() as i64)
            })
            .map(Some)
            .ok_or_else(|| fn_error(format!("${f}: argument {} must be a number", i + 1))),
    }
}

/// `$partition(array, size)`: chunks of `size` (the last one shorter); undefined for an
/// empty array or a size below 1.
fn partition(args: &[Option<Value>]) -> nimbus_jsonata::Result<Option<Value>> {
    let items = match arg(args, 0, "partition")? {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    let Some(size) = int_arg(args, 1, "partition")?.filter(|n| *n >= 1) else {
        return Ok(None);
    };
    if items.is_empty() {
        return Ok(None);
    }
    Ok(Some(Value::Array(
        items
            .chunks(size as usize)
            .map(|c| Value::Array(c.to_vec()))
            .collect(),
    )))
}

/// `$range(start, end, step)`: from `start` towards `end` inclusive; undefined without a
/// step or with a step of the wrong sign (or 0); a single value is returned bare.
fn range(args: &[Option<Value>]) -> nimbus_jsonata::Result<Option<Value>> {
    let (Some(start), Some(end)) = (int_arg(args, 0, "range")?, int_arg(args, 1, "range")?) else {
        return Err(fn_error("$range: start and end are required"));
    };
    let Some(step) = int_arg(args, 2, "range")? else {
        return Ok(None);
    };
    if step == 0 || (step > 0 && start > end) || (step < 0 && start < end) {
        return Ok(None);
    }
    let count = (end as i128 - start as i128) / step as i128 + 1;
    if count > MAX_RANGE_ITEMS as i128 {
        return Err(fn_error(format!(
            "$range: at most {MAX_RANGE_ITEMS} items, this call produces {count}"
        )));
    }
    let items: Vec<Value> = (0..count as i64)
        .map(|k| Value::from(start + k * step))
        .collect();
    Ok(Some(match items.as_slice() {
        [one] => one.clone(),
        _ => Value::Array(items),
    }))
}

/// The bindings of one evaluation: the variables, `$states` and the added functions.
fn bindings(states: Value, env: &mut Env<'_>) -> Bindings {
    let mut b = Bindings::new();
    for (k, v) in env.vars.visible() {
        b.bind(k.clone(), v.clone());
    }
    b.bind("states", states);
    let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(env.rng.next_u64())));
    b.register("partition", 2, partition);
    b.register("range", 3, range);
    b.register("hash", 2, |args| {
        let data = arg(args, 0, "hash")?
            .as_str()
            .ok_or_else(|| fn_error("$hash: argument 1 must be a string"))?;
        let Some(algorithm) = args.get(1).and_then(Option::as_ref) else {
            return Ok(None);
        };
        let v = vec![Value::String(data.to_string()), algorithm.clone()];
        via_intrinsic("States.Hash", "hash", v, &mut StdRng::seed_from_u64(0))
    });
    let r = rng.clone();
    b.register("random", 1, move |args| {
        let x: f64 = match args.first().and_then(Option::as_ref) {
            None => r
                .lock()
                .map_err(|_| fn_error("$random: poisoned"))?
                .random(),
            Some(seed) => {
                let seed = seed
                    .as_i64()
                    .or_else(|| seed.as_f64().filter(|x| x.fract() == 0.0).map(|x| x as i64))
                    .ok_or_else(|| fn_error("$random: the seed must be an integer"))?;
                StdRng::seed_from_u64(seed as u64).random()
            }
        };
        Ok(Some(Value::from(x)))
    });
    let r = rng;
    b.register("uuid", 0, move |_| {
        let mut bytes = [0u8; 16];
        r.lock()
            .map_err(|_| fn_error("$uuid: poisoned"))?
            .fill_bytes(&mut bytes);
        Ok(Some(Value::String(
            uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .to_string(),
        )))
    });
    b.register("parse", 1, |args| {
        let s = arg(args, 0, "parse")?
            .as_str()
            .ok_or_else(|| fn_error("$parse: the argument must be a string"))?;
        serde_json::from_str(s)
            .map(Some)
            .map_err(|e| fn_error(format!("$parse: not valid JSON: {e}")))
    });
    b.register("eval", 1, |_| {
        Err(nimbus_jsonata::Error::new(
            "T1006",
            "The function $eval is not available in Step Functions; use $parse",
            None,
        ))
    });
    b
}

fn states_var(input: &Value, context: &Value, extra: Option<(&str, &Value)>) -> Value {
    let mut m = JsonMap::new();
    m.insert("input".into(), input.clone());
    m.insert("context".into(), context.clone());
    if let Some((k, v)) = extra {
        m.insert(k.into(), v.clone());
    }
    Value::Object(m)
}

/// Evaluates one expression string (`"{% … %}"`); `Ok(None)` is undefined.
fn eval_expr(text: &str, field: &str, b: &Bindings) -> Result<Option<Value>> {
    let inner = expression_text(text).unwrap_or(text);
    let expr = parse_expression(inner).map_err(|e| {
        query_error(format!(
            "The JSONata expression '{inner}' specified for the field '{field}' is invalid: {e}"
        ))
    })?;
    expr.evaluate_opt(None, b).map_err(|e| {
        query_error(format!(
            "An error occurred while evaluating the JSONata expression '{inner}' specified for the field '{field}': {e}"
        ))
    })
}

/// Evaluates a template; an expression returning undefined fails.
fn eval_template(t: &Value, field: &str, b: &Bindings) -> Result<Value> {
    match t {
        Value::String(s) if expression_text(s).is_some() => {
            eval_expr(s, field, b)?.ok_or_else(|| {
                query_error(format!(
                    "The JSONata expression '{}' specified for the field '{field}' returned nothing (undefined).",
                    expression_text(s).unwrap_or(s)
                ))
            })
        }
        Value::Object(obj) => obj
            .iter()
            .map(|(k, v)| Ok((k.clone(), eval_template(v, &format!("{field}/{k}"), b)?)))
            .collect::<Result<JsonMap<_, _>>>()
            .map(Value::Object),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| eval_template(v, &format!("{field}[{i}]"), b))
            .collect::<Result<Vec<_>>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

/// Evaluates a template with `$states = {input, context}` (and the variables).
pub fn evaluate(template: &Value, field: &str, input: &Value, env: &mut Env<'_>) -> Result<Value> {
    let b = bindings(states_var(input, env.context, None), env);
    eval_template(template, field, &b)
}

fn eval_assign(assign: &Value, prefix: &str, b: &Bindings) -> Result<JsonMap<String, Value>> {
    let obj = assign
        .as_object()
        .ok_or_else(|| query_error("The field 'Assign' must be a JSON object"))?;
    obj.iter()
        .map(|(k, v)| {
            let field = format!("{prefix}Assign/{k}");
            Ok((k.clone(), eval_template(v, &field, b)?))
        })
        .collect()
}

/// `Output` and `Assign`, each with the prefix naming where it was written (`""`,
/// `"Choices[1]/"`, `"Catch[0]/"`).
fn outcome(
    output: Option<(&Value, &str)>,
    assign: Option<(&Value, &str)>,
    default: &Value,
    b: &Bindings,
) -> Result<Outcome> {
    let output = match output {
        Some((t, prefix)) => eval_template(t, &format!("{prefix}Output"), b)?,
        None => default.clone(),
    };
    let assigned = match assign {
        Some((a, prefix)) => eval_assign(a, prefix, b)?,
        None => JsonMap::new(),
    };
    Ok(Outcome { output, assigned })
}

/// A state's `Arguments` (Task, Parallel): absent ⇒ the state input.
pub fn arguments(io: &Io, input: &Value, env: &mut Env<'_>) -> Result<Value> {
    match &io.arguments {
        Some(t) => evaluate(t, "Arguments", input, env),
        None => Ok(input.clone()),
    }
}

/// A state's `Output` and `Assign`, both evaluated against the same `$states` and the
/// variables as they were before the state. `result` is the Task/Parallel/Map result
/// (`$states.result`, the default output); without one (Pass, Wait, Succeed) the
/// default output is the input.
pub fn state_outcome(
    io: &Io,
    input: &Value,
    result: Option<&Value>,
    env: &mut Env<'_>,
) -> Result<Outcome> {
    let b = bindings(
        states_var(input, env.context, result.map(|r| ("result", r))),
        env,
    );
    outcome(
        io.output.as_ref().map(|o| (o, "")),
        io.assign.as_ref().map(|a| (a, "")),
        result.unwrap_or(input),
        &b,
    )
}

/// A JSONata Pass state: `Output` (default: the input) and `Assign`.
pub fn pass_outcome(pass: &Pass, input: &Value, env: &mut Env<'_>) -> Result<Outcome> {
    state_outcome(&pass.io, input, None, env)
}

/// A JSONata Choice state: the first rule whose `Condition` is true (it must evaluate to
/// a boolean), else `Default`, else `States.NoChoiceMatched`. The output and assignments
/// are the matched rule's `Output`/`Assign`, each falling back to the state's.
pub fn choose(choice: &Choice, input: &Value, env: &mut Env<'_>) -> Result<ChoiceOutcome> {
    let b = bindings(states_var(input, env.context, None), env);
    let state_output = choice.io.output.as_ref().map(|o| (o, ""));
    let state_assign = choice.io.assign.as_ref().map(|a| (a, ""));
    for (i, rule) in choice.choices.iter().enumerate() {
        let prefix = format!("Choices[{i}]/");
        let crate::choice::Condition::Jsonata(text) = &rule.condition else {
            return Err(query_error(
                "A JSONata Choice rule needs a 'Condition' field",
            ));
        };
        let field = format!("{prefix}Condition");
        let holds = match eval_expr(text, &field, &b)? {
            Some(Value::Bool(v)) => v,
            other => {
                return Err(query_error(format!(
                    "The JSONata expression '{}' specified for the field '{field}' must return a boolean, got {}",
                    expression_text(text).unwrap_or(text),
                    other.map_or("nothing (undefined)".to_string(), |v| v.to_string())
                )))
            }
        };
        if holds {
            let o = outcome(
                rule.output
                    .as_ref()
                    .map(|o| (o, prefix.as_str()))
                    .or(state_output),
                rule.assign
                    .as_ref()
                    .map(|a| (a, prefix.as_str()))
                    .or(state_assign),
                input,
                &b,
            )?;
            return Ok(ChoiceOutcome {
                next: rule.next.clone(),
                outcome: o,
            });
        }
    }
    let next = choice
        .default
        .clone()
        .ok_or_else(|| Error::states(names::NO_CHOICE_MATCHED, "No Matches!"))?;
    let o = outcome(state_output, state_assign, input, &b)?;
    Ok(ChoiceOutcome { next, outcome: o })
}

/// The outcome of the catcher at `index` of the state's `Catch`: `$states.errorOutput` is
/// `{"Error", "Cause"}`, the default output; its `Output` and `Assign` replace the state's.
pub fn catch_outcome(
    catcher: &Catcher,
    index: usize,
    input: &Value,
    error: &Error,
    env: &mut Env<'_>,
) -> Result<Outcome> {
    let error_output = error.to_error_output();
    let b = bindings(
        states_var(input, env.context, Some(("errorOutput", &error_output))),
        env,
    );
    let prefix = format!("Catch[{index}]/");
    outcome(
        catcher.output.as_ref().map(|o| (o, prefix.as_str())),
        catcher.assign.as_ref().map(|a| (a, prefix.as_str())),
        &error_output,
        &b,
    )
}

fn as_whole(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|x| *x >= 0.0 && x.fract() == 0.0 && *x < 9.0e15)
            .map(|x| x as u64)
    })
}

/// A numeric field that may be an expression (`TimeoutSeconds`, `HeartbeatSeconds`,
/// `MaxConcurrency`, `ToleratedFailureCount`): a non-negative integer.
pub fn resolve_u64(
    field: &str,
    value: &MaybeExpr<u64>,
    input: &Value,
    env: &mut Env<'_>,
) -> Result<u64> {
    match value {
        MaybeExpr::Value(v) => Ok(*v),
        MaybeExpr::Expr(text) => {
            let v = evaluate(&Value::String(text.clone()), field, input, env)?;
            as_whole(&v).ok_or_else(|| {
                query_error(format!(
                    "The JSONata expression '{}' specified for the field '{field}' must return a non-negative integer, got {v}",
                    expression_text(text).unwrap_or(text)
                ))
            })
        }
    }
}

/// `ToleratedFailurePercentage`, which may be an expression: a number from 0 to 100.
pub fn resolve_percentage(value: &MaybeExpr<f64>, input: &Value, env: &mut Env<'_>) -> Result<f64> {
    match value {
        MaybeExpr::Value(v) => Ok(*v),
        MaybeExpr::Expr(text) => {
            let field = "ToleratedFailurePercentage";
            let v = evaluate(&Value::String(text.clone()), field, input, env)?;
            v.as_f64()
                .filter(|x| (0.0..=100.0).contains(x))
                .ok_or_else(|| {
                    query_error(format!(
                        "The JSONata expression '{}' specified for the field '{field}' must return a number from 0 to 100, got {v}",
                        expression_text(text).unwrap_or(text)
                    ))
                })
        }
    }
}

/// A JSONata Wait state's target: `Seconds` (a non-negative integer) or `Timestamp`
/// (an RFC 3339 string), either possibly an expression.
pub fn wait_target(wait: &Wait, input: &Value, env: &mut Env<'_>) -> Result<WaitTarget> {
    if let Some(s) = &wait.seconds {
        return resolve_u64("Seconds", s, input, env).map(WaitTarget::Seconds);
    }
    if let Some(t) = &wait.timestamp {
        let v = evaluate(&Value::String(t.clone()), "Timestamp", input, env)?;
        return v
            .as_str()
            .and_then(parse_timestamp)
            .map(WaitTarget::Until)
            .ok_or_else(|| {
                query_error(format!(
                    "The field 'Timestamp' must be an RFC 3339 timestamp such as 2016-03-14T01:59:00Z, got {v}"
                ))
            });
    }
    Err(Error::states(
        names::RUNTIME,
        "a JSONata Wait state needs 'Seconds' or 'Timestamp'",
    ))
}

/// A JSONata Fail state's error and cause (each may be an expression giving a string).
pub fn fail_error(fail: &Fail, input: &Value, env: &mut Env<'_>) -> Result<Error> {
    let mut pick = |v: &Option<String>, field: &str| -> Result<String> {
        let Some(text) = v else {
            return Ok(String::new());
        };
        match evaluate(&Value::String(text.clone()), field, input, env)? {
            Value::String(s) => Ok(s),
            other => Err(query_error(format!(
                "The field '{field}' must be a string, got {other}"
            ))),
        }
    };
    let name = pick(&fail.error, "Error")?;
    let cause = pick(&fail.cause, "Cause")?;
    Ok(Error::States { name, cause })
}

/// A JSONata Map state's items: `Items` (an array or an expression giving one), else the
/// state input, which must then be an array.
pub fn map_items(map: &Map, input: &Value, env: &mut Env<'_>) -> Result<Vec<Value>> {
    let v = match &map.items {
        Some(t) => evaluate(t, "Items", input, env)?,
        None => input.clone(),
    };
    match v {
        Value::Array(items) => Ok(items),
        other => Err(query_error(format!(
            "The Map state's items must be a JSON array, got {other}"
        ))),
    }
}

/// The input of one JSONata Map iteration: `ItemSelector` evaluated with
/// `$states.context.Map.Item.Index`/`Value` set (and `$states.input` the Map's input),
/// else the item itself.
pub fn iteration_input(
    map: &Map,
    input: &Value,
    index: usize,
    item: &Value,
    env: &mut Env<'_>,
) -> Result<Value> {
    match &map.item_selector {
        Some(t) => {
            let context = with_map_item(env.context, index, item);
            let mut inner = Env {
                context: &context,
                vars: env.vars,
                rng: &mut *env.rng,
            };
            evaluate(t, "ItemSelector", input, &mut inner)
        }
        None => Ok(item.clone()),
    }
}

/// `Assign` of a JSONPath state: fields named `name.$` take the value of their path or
/// intrinsic over `doc` (the state's result for Task/Parallel/Map, else its input), other
/// fields are copied; `$name…` reads a variable as it was before the state.
pub fn jsonpath_assign(
    assign: &Value,
    doc: &Value,
    context: &Value,
    vars: &Variables,
    rng: &mut dyn RngCore,
) -> Result<JsonMap<String, Value>> {
    let obj = assign
        .as_object()
        .ok_or_else(|| Error::states(names::RUNTIME, "The field 'Assign' must be a JSON object"))?;
    let mut out = JsonMap::new();
    for (k, v) in obj {
        match (k.strip_suffix(".$"), v.as_str()) {
            (Some(name), Some(text)) => {
                out.insert(
                    name.to_string(),
                    dynamic_value(k, text, doc, context, vars, rng)?,
                );
            }
            _ => {
                out.insert(
                    k.clone(),
                    crate::io::apply_template(v, doc, context, vars, rng)?,
                );
            }
        }
    }
    Ok(out)
}
