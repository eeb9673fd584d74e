//! The JSONPath input/output pipeline of a state:
//! `InputPath` → `Parameters` → [the state's work] → `ResultSelector` → `ResultPath` →
//! `OutputPath`.
//!
//! Sources: <https://docs.aws.amazon.com/step-functions/latest/dg/concepts-input-output-filtering.html>,
//! <https://docs.aws.amazon.com/step-functions/latest/dg/input-output-inputpath-params.html>,
//! <https://docs.aws.amazon.com/step-functions/latest/dg/input-output-resultpath.html>.

use rand::RngCore;
use serde_json::{Map, Value};

use crate::definition::{Catcher, Io};
use crate::errors::{names, Error, Result};
use crate::intrinsics::{looks_like_call, Call};
use crate::jsonata::Variables;
use crate::path::{Path, ReferencePath};

/// Applies `InputPath` (absent ⇒ the whole input, `null` ⇒ `{}`); a path naming nothing
/// fails with `States.Runtime`.
pub fn apply_input_path(
    path: &Option<Option<String>>,
    input: &Value,
    context: &Value,
) -> Result<Value> {
    select_path(path, input, context, "InputPath")
}

/// Applies `OutputPath` to a state's output (absent ⇒ all, `null` ⇒ `{}`).
pub fn apply_output_path(
    path: &Option<Option<String>>,
    output: &Value,
    context: &Value,
) -> Result<Value> {
    select_path(path, output, context, "OutputPath")
}

fn select_path(
    path: &Option<Option<String>>,
    doc: &Value,
    context: &Value,
    field: &str,
) -> Result<Value> {
    match path {
        None => Ok(doc.clone()),
        Some(None) => Ok(Value::Object(Map::new())),
        Some(Some(text)) => {
            let p = Path::parse(text)?;
            p.select(doc, context).ok_or_else(|| {
                Error::states(
                    names::RUNTIME,
                    format!("Invalid path '{text}' : No results for path: {field} could not be applied to input {doc}"),
                )
            })
        }
    }
}

/// Evaluates a payload template (`Parameters`, `ResultSelector`, `ItemSelector`): fields
/// whose name ends in `.$` take the value of their path or intrinsic call (and lose the
/// suffix); nested objects and arrays are processed recursively; other values are copied.
/// A path naming nothing fails with `States.ParameterPathFailure`; `$name…` reads the
/// workflow variable `name` from `vars`.
pub fn apply_template(
    template: &Value,
    input: &Value,
    context: &Value,
    vars: &Variables,
    rng: &mut dyn RngCore,
) -> Result<Value> {
    match template {
        Value::Object(obj) => {
            let mut out = Map::new();
            for (key, value) in obj {
                match key.strip_suffix(".$") {
                    Some(name) => {
                        let text = value.as_str().ok_or_else(|| {
                            Error::states(
                                names::RUNTIME,
                                format!("The value of the field '{key}' must be a string"),
                            )
                        })?;
                        out.insert(
                            name.to_string(),
                            dynamic_value(key, text, input, context, vars, rng)?,
                        );
                    }
                    None => {
                        out.insert(
                            key.clone(),
                            apply_template(value, input, context, vars, rng)?,
                        );
                    }
                }
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => items
            .iter()
            .map(|v| apply_template(v, input, context, vars, rng))
            .collect::<Result<_>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

/// The workflow variable a JSONPath value reads (`$name`, `$name.a[0]`) and the path
/// into it (`$`, `$.a[0]`); `None` for `$`, `$.…`, `$[…]` and `$$…`.
pub fn variable_path(text: &str) -> Option<(&str, String)> {
    let rest = text.strip_prefix('$')?;
    if !rest
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
    {
        return None;
    }
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let (name, tail) = rest.split_at(end);
    Some((name, format!("${tail}")))
}

/// The value of one `.$` field: an intrinsic call, a path into a workflow variable
/// (`$name…`), or a path into the input or the context object.
pub fn dynamic_value(
    key: &str,
    text: &str,
    input: &Value,
    context: &Value,
    vars: &Variables,
    rng: &mut dyn RngCore,
) -> Result<Value> {
    if looks_like_call(text) {
        return Call::parse(text)?.eval(input, context, rng);
    }
    if let Some((name, path)) = variable_path(text) {
        let not_found = || {
            Error::states(
                names::PARAMETER_PATH_FAILURE,
                format!(
                    "The variable path '{text}' specified for the field '{key}' could not be found"
                ),
            )
        };
        let value = vars.get(name).ok_or_else(not_found)?;
        return Path::parse(&path)?
            .select(value, context)
            .ok_or_else(not_found);
    }
    let path = Path::parse(text)?;
    path.select(input, context).ok_or_else(|| {
        Error::states(
            names::PARAMETER_PATH_FAILURE,
            format!("The JSONPath '{text}' specified for the field '{key}' could not be found in the input '{input}'"),
        )
    })
}

/// Applies `ResultPath`: absent ⇒ the result replaces the input, `null` ⇒ the input is kept
/// and the result discarded, else the result is written at the reference path inside the
/// state's raw input (`States.ResultPathMatchFailure` if it cannot be).
pub fn apply_result_path(
    path: &Option<Option<String>>,
    raw_input: &Value,
    result: Value,
) -> Result<Value> {
    match path {
        None => Ok(result),
        Some(None) => Ok(raw_input.clone()),
        Some(Some(text)) => ReferencePath::parse(text)?.insert(raw_input.clone(), result),
    }
}

/// The effective input of a state: `InputPath` then `Parameters`.
pub fn effective_input(
    io: &Io,
    raw_input: &Value,
    context: &Value,
    vars: &Variables,
    rng: &mut dyn RngCore,
) -> Result<Value> {
    let selected = apply_input_path(&io.input_path, raw_input, context)?;
    match &io.parameters {
        Some(template) => apply_template(template, &selected, context, vars, rng),
        None => Ok(selected),
    }
}

/// A state's output from its raw input and its result: `ResultSelector` (on the result),
/// `ResultPath` (into the raw input), then `OutputPath`.
pub fn state_output(
    io: &Io,
    raw_input: &Value,
    result: Value,
    context: &Value,
    vars: &Variables,
    rng: &mut dyn RngCore,
) -> Result<Value> {
    let result = match &io.result_selector {
        Some(template) => apply_template(template, &result, context, vars, rng)?,
        None => result,
    };
    let combined = apply_result_path(&io.result_path, raw_input, result)?;
    apply_output_path(&io.output_path, &combined, context)
}

/// The output of a Pass state: `Result` (or the effective input) through `ResultPath`
/// and `OutputPath`.
pub fn pass_output(
    pass: &crate::definition::Pass,
    raw_input: &Value,
    context: &Value,
    vars: &Variables,
    rng: &mut dyn RngCore,
) -> Result<Value> {
    let effective = effective_input(&pass.io, raw_input, context, vars, rng)?;
    let result = pass.result.clone().unwrap_or(effective);
    let combined = apply_result_path(&pass.io.result_path, raw_input, result)?;
    apply_output_path(&pass.io.output_path, &combined, context)
}

/// The input of the state a Catch leads to: the error output `{"Error", "Cause"}` placed
/// in the raw input by the catcher's `ResultPath` (absent ⇒ it replaces the input).
pub fn catch_output(catcher: &Catcher, raw_input: &Value, error: &Error) -> Result<Value> {
    apply_result_path(&catcher.result_path, raw_input, error.to_error_output())
}

/// The context object with `Map.Item.Index` and `Map.Item.Value` set for one iteration.
pub fn with_map_item(context: &Value, index: usize, value: &Value) -> Value {
    let mut ctx = match context {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    ctx.insert(
        "Map".to_string(),
        serde_json::json!({ "Item": { "Index": index, "Value": value } }),
    );
    Value::Object(ctx)
}
