//! Per-state decisions that need no I/O: the Wait target, a Fail state's error, a Map's
//! items and iteration inputs, and its tolerated-failure threshold.
//!
//! Sources: <https://docs.aws.amazon.com/step-functions/latest/dg/state-wait.html>,
//! <https://docs.aws.amazon.com/step-functions/latest/dg/state-fail.html>,
//! <https://docs.aws.amazon.com/step-functions/latest/dg/state-map-inline.html>.

use rand::RngCore;
use serde_json::Value;
use time::OffsetDateTime;

use crate::choice::parse_timestamp;
use crate::definition::{Fail, Map, Wait};
use crate::errors::{names, Error, Result};
use crate::io::{apply_template, dynamic_value, with_map_item};
use crate::jsonata::Variables;
use crate::path::ReferencePath;

/// How long a Wait state waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitTarget {
    /// A number of seconds from now.
    Seconds(u64),
    /// Until an absolute time (in the past: no wait).
    Until(OffsetDateTime),
}

fn reference(text: &str, input: &Value, field: &str) -> Result<Value> {
    let p = ReferencePath::parse(text)?;
    p.get(input).cloned().ok_or_else(|| {
        Error::states(names::RUNTIME, format!("Invalid path '{text}' : the field '{field}' references a value not present in the input"))
    })
}

/// The Wait state's target, reading `SecondsPath`/`TimestampPath` from its effective input.
pub fn wait_target(wait: &Wait, input: &Value) -> Result<WaitTarget> {
    if let Some(s) = &wait.seconds {
        return s.fixed().map(WaitTarget::Seconds).ok_or_else(|| {
            Error::states(
                names::RUNTIME,
                "Field 'Seconds' is a JSONata expression: use jsonata::wait_target",
            )
        });
    }
    if let Some(t) = &wait.timestamp {
        return parse_timestamp(t)
            .map(WaitTarget::Until)
            .ok_or_else(|| Error::states(names::RUNTIME, format!("Invalid timestamp '{t}'")));
    }
    if let Some(p) = &wait.seconds_path {
        let v = reference(p, input, "SecondsPath")?;
        return v.as_u64().map(WaitTarget::Seconds).ok_or_else(|| {
            Error::states(
                names::RUNTIME,
                format!("The SecondsPath '{p}' must reference a non-negative integer, got {v}"),
            )
        });
    }
    if let Some(p) = &wait.timestamp_path {
        let v = reference(p, input, "TimestampPath")?;
        return v
            .as_str()
            .and_then(parse_timestamp)
            .map(WaitTarget::Until)
            .ok_or_else(|| {
                Error::states(
                    names::RUNTIME,
                    format!(
                        "The TimestampPath '{p}' must reference an RFC 3339 timestamp, got {v}"
                    ),
                )
            });
    }
    Err(Error::states(
        names::RUNTIME,
        "a Wait state needs one of Seconds, Timestamp, SecondsPath, TimestampPath",
    ))
}

/// The error and cause a Fail state ends with (`ErrorPath`/`CausePath` read the raw input
/// and may be intrinsic calls).
pub fn fail_error(
    fail: &Fail,
    input: &Value,
    context: &Value,
    vars: &Variables,
    rng: &mut dyn RngCore,
) -> Result<Error> {
    let mut pick =
        |fixed: &Option<String>, path: &Option<String>, field: &str| -> Result<Option<String>> {
            if let Some(v) = fixed {
                return Ok(Some(v.clone()));
            }
            match path {
                Some(p) => match dynamic_value(field, p, input, context, vars, rng)? {
                    Value::String(s) => Ok(Some(s)),
                    other => Err(Error::states(
                        names::RUNTIME,
                        format!("The {field} '{p}' must resolve to a string, got {other}"),
                    )),
                },
                None => Ok(None),
            }
        };
    let error = pick(&fail.error, &fail.error_path, "ErrorPath")?.unwrap_or_default();
    let cause = pick(&fail.cause, &fail.cause_path, "CausePath")?.unwrap_or_default();
    Ok(Error::States { name: error, cause })
}

/// A Map state's items (`ItemsPath`, default `$`, over its effective input); they must
/// form an array.
pub fn map_items(map: &Map, input: &Value) -> Result<Vec<Value>> {
    let v = match &map.items_path {
        Some(p) => reference(p, input, "ItemsPath")?,
        None => input.clone(),
    };
    match v {
        Value::Array(items) => Ok(items),
        other => Err(Error::states(
            names::RUNTIME,
            format!("Map state's ItemsPath must reference a JSON array, got {other}"),
        )),
    }
}

/// The input of one Map iteration: `ItemSelector` (or the deprecated `Parameters`) with
/// `$$.Map.Item.Index`/`Value` set, else the item itself.
pub fn iteration_input(
    map: &Map,
    input: &Value,
    context: &Value,
    index: usize,
    item: &Value,
    vars: &Variables,
    rng: &mut dyn RngCore,
) -> Result<Value> {
    let template = map.item_selector.as_ref().or(map.io.parameters.as_ref());
    match template {
        Some(t) => apply_template(t, input, &with_map_item(context, index, item), vars, rng),
        None => Ok(item.clone()),
    }
}

/// Whether a Map's failures exceed its tolerance (`ToleratedFailureCount`/`Percentage`;
/// neither set: any failure does). Raises `States.ExceedToleratedFailureThreshold` then.
pub fn check_tolerance(
    failed: u64,
    total: u64,
    count: Option<u64>,
    percentage: Option<f64>,
) -> Result<()> {
    if failed == 0 {
        return Ok(());
    }
    let within_count = count.is_some_and(|c| failed <= c);
    let within_pct =
        percentage.is_some_and(|p| total > 0 && (failed as f64) * 100.0 / (total as f64) <= p);
    if within_count || within_pct {
        Ok(())
    } else {
        Err(Error::states(
            names::EXCEED_TOLERATED_FAILURE_THRESHOLD,
            format!("The number of failed items ({failed} of {total}) exceeds the tolerated failure threshold"),
        ))
    }
}
