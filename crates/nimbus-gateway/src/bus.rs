//! The event bus over the native API: buses, rules (event patterns and schedules) and
//! `PutEvents` (`/v1/buses/…`, see `docs/api.md`).

use crate::{ApiError, Gateway};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nimbus_events::bus::{bus_arn, rule_arn, BusError, EventBus, PutEventsEntry, RuleSpec};
use nimbus_store::{Bus, Rule, RuleTarget};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

impl From<BusError> for ApiError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Invalid(m) => ApiError::InvalidParameter(m),
            BusError::Store(e) => e.into(),
        }
    }
}

fn bus(gw: &Gateway) -> Result<&Arc<EventBus>, ApiError> {
    gw.bus
        .get()
        .ok_or_else(|| ApiError::ServiceUnavailable("the event bus is not enabled".into()))
}

fn bus_view(b: &Bus) -> Value {
    json!({ "name": b.name, "arn": bus_arn(&b.name), "created_ms": b.created_ms })
}

/// A rule as the API shows it, with its `recent_matches` (newest first; in memory only).
fn rule_view(b: &EventBus, r: &Rule) -> Value {
    json!({
        "bus": r.bus,
        "name": r.name,
        "arn": rule_arn(&r.bus, &r.name),
        "pattern": r.pattern.as_deref().and_then(|p| serde_json::from_str::<Value>(p).ok()),
        "schedule": r.schedule,
        "timezone": r.timezone,
        "enabled": r.enabled,
        "state": if r.enabled { "ENABLED" } else { "DISABLED" },
        "targets": r.targets,
        "created_ms": r.created_ms,
        "last_fired_ms": r.last_fired_ms,
        "recent_matches": b.recent_matches(&r.bus, &r.name),
    })
}

pub(crate) async fn list_buses(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let store = bus(&gw)?.store().clone();
    let buses = tokio::task::spawn_blocking(move || store.list_buses()).await??;
    Ok(Json(
        json!({ "buses": buses.iter().map(bus_view).collect::<Vec<_>>() }),
    ))
}

pub(crate) async fn get_bus(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = bus(&gw)?.store().clone();
    let b = tokio::task::spawn_blocking(move || store.get_bus(&name)).await??;
    Ok(Json(bus_view(&b)))
}

pub(crate) async fn put_bus(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let b = bus(&gw)?.put_bus(&name).await?;
    Ok(Json(bus_view(&b)))
}

pub(crate) async fn delete_bus(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    bus(&gw)?.delete_bus(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PutEventsBody {
    entries: Vec<PutEventsEntry>,
}

/// `POST /v1/buses/{bus}/events`: EventBridge `PutEvents` (`{"Entries": […]}`); entries
/// without `EventBusName` go to the bus in the path.
pub(crate) async fn put_events(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: PutEventsBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::InvalidRequestContent(format!(
            "expected {{\"Entries\": [{{\"Source\", \"DetailType\", \"Detail\", …}}]}}: {e}"
        ))
    })?;
    let trace = crate::trace::incoming(&headers);
    let out = bus(&gw)?
        .put_events(&name, body.entries, trace.as_ref())
        .await?;
    Ok(Json(serde_json::to_value(out).map_err(ApiError::internal)?))
}

pub(crate) async fn list_rules(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let b = bus(&gw)?;
    let store = b.store().clone();
    let rules = tokio::task::spawn_blocking(move || {
        store.get_bus(&name)?;
        store.list_rules(Some(&name))
    })
    .await??;
    Ok(Json(
        json!({ "rules": rules.iter().map(|r| rule_view(b, r)).collect::<Vec<_>>() }),
    ))
}

pub(crate) async fn get_rule(
    State(gw): State<Arc<Gateway>>,
    Path((b, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let events = bus(&gw)?;
    let store = events.store().clone();
    let r = tokio::task::spawn_blocking(move || store.get_rule(&b, &name)).await??;
    Ok(Json(rule_view(events, &r)))
}

/// A target: a function name or ARN, or `{"arn": …, "input": …}` (`Arn`/`Input` also work).
#[derive(Deserialize)]
#[serde(untagged)]
enum TargetBody {
    Name(String),
    Full {
        #[serde(alias = "Arn", alias = "function")]
        arn: String,
        #[serde(default, alias = "Input")]
        input: Option<Value>,
        /// A FIFO queue target's message group (EventBridge's `SqsParameters.MessageGroupId`).
        #[serde(default, alias = "MessageGroupId")]
        message_group_id: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleBody {
    pattern: Option<Value>,
    schedule: Option<String>,
    timezone: Option<String>,
    #[serde(default)]
    targets: Vec<TargetBody>,
    enabled: Option<bool>,
}

pub(crate) async fn put_rule(
    State(gw): State<Arc<Gateway>>,
    Path((b, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: RuleBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::InvalidRequestContent(format!(
            "expected {{\"pattern\": {{…}}}} or {{\"schedule\": \"rate(5 minutes)\"}} with \
             \"targets\": [\"function\", …]: {e}"
        ))
    })?;
    let targets = body
        .targets
        .into_iter()
        .map(|t| match t {
            TargetBody::Name(arn) => RuleTarget {
                id: None,
                arn,
                input: None,
                message_group_id: None,
            },
            TargetBody::Full {
                arn,
                input,
                message_group_id,
            } => RuleTarget {
                id: None,
                arn,
                // `Input` is JSON text in EventBridge; a JSON value here is taken as is.
                input: input.map(|v| match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                }),
                message_group_id,
            },
        })
        .collect();
    let spec = RuleSpec {
        pattern: body.pattern,
        schedule: body.schedule,
        timezone: body.timezone,
        targets,
        enabled: body.enabled.unwrap_or(true),
    };
    let events = bus(&gw)?;
    let r = events.put_rule(&b, &name, spec).await?;
    Ok(Json(rule_view(events, &r)))
}

pub(crate) async fn delete_rule(
    State(gw): State<Arc<Gateway>>,
    Path((b, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    bus(&gw)?.delete_rule(&b, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What an EventBridge JSON request needs authorised, as on AWS: `events:<Op>` on each bus
/// its entries go to (PutEvents; the default bus for entries naming none), on the rule it
/// names (rule and target operations), on the bus it names (bus operations and
/// ListRules), `*` for ListEventBuses. A body that is not JSON needs any valid key; the
/// handler refuses it.
pub(crate) fn checks(op: &str, body: &[u8]) -> Vec<crate::auth::Check> {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let bus_of = |v: &Value| {
        v.as_str()
            .filter(|b| !b.is_empty())
            .map(|b| b.rsplit_once(":event-bus/").map_or(b, |(_, n)| n))
            .unwrap_or(nimbus_store::DEFAULT_BUS)
            .to_string()
    };
    let name = |k: &str| req[k].as_str().unwrap_or_default();
    let mut resources: Vec<String> = match op {
        "PutEvents" => req["Entries"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| bus_arn(&bus_of(&e["EventBusName"])))
                    .collect()
            })
            .unwrap_or_default(),
        "PutRule" | "DescribeRule" | "DeleteRule" | "EnableRule" | "DisableRule" => {
            vec![rule_arn(&bus_of(&req["EventBusName"]), name("Name"))]
        }
        "PutTargets" | "RemoveTargets" | "ListTargetsByRule" => {
            vec![rule_arn(&bus_of(&req["EventBusName"]), name("Rule"))]
        }
        "CreateEventBus" | "DescribeEventBus" | "DeleteEventBus" => {
            vec![bus_arn(&bus_of(&req["Name"]))]
        }
        "ListRules" => vec![bus_arn(&bus_of(&req["EventBusName"]))],
        _ => vec!["*".to_string()],
    };
    if resources.is_empty() {
        resources.push(bus_arn(nimbus_store::DEFAULT_BUS));
    }
    resources.sort();
    resources.dedup();
    let action = format!("events:{op}");
    resources
        .into_iter()
        .map(|r| crate::auth::check(&action, r))
        .collect()
}

/// Largest EventBridge JSON request read (PutEvents takes at most 256 KB of entries).
const AWS_JSON_MAX: usize = 1024 * 1024;

/// `POST /` with `X-Amz-Target: AWSEvents.PutEvents` (EventBridge's JSON 1.1 protocol, what
/// AWS SDKs and `aws events put-events --endpoint-url …` send). Anything else at `/` is a
/// user route, as before.
pub(crate) async fn aws_json(
    State(gw): State<Arc<Gateway>>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    // The JSON protocols at `POST /`, by `X-Amz-Target`: SQS's (`AmazonSQS.`, or its query
    // protocol's signed form), then EventBridge's (`AWSEvents.`).
    if crate::sqs::protocol_of(req.method(), req.uri().path(), req.headers()).is_some() {
        return crate::sqs::handle(gw, req).await;
    }
    if crate::iam::is_iam(req.method(), req.uri().path(), req.headers()) {
        return crate::iam::handle(gw, req).await;
    }
    if crate::states::op_of(req.method(), req.uri().path(), req.headers()).is_some() {
        return Ok(crate::states::handle(gw, req).await);
    }
    // With authentication off, an unsigned IAM form (`Version=2010-05-08`) too; never
    // where requests are authenticated (there only a signature scoped to `iam` is IAM).
    let enforced =
        crate::auth::enabled(&gw) || req.extensions().get::<crate::PrivateEndpoint>().is_some();
    if !enforced && crate::iam::may_be_unsigned_iam(req.method(), req.uri().path(), req.headers()) {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, AWS_JSON_MAX)
            .await
            .map_err(|e| ApiError::TooLarge(format!("request body: {e}")))?;
        let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(body.clone()));
        if crate::iam::is_iam_form(&body) {
            return crate::iam::handle(gw, req).await;
        }
        return crate::urls::user_route(State(gw), req).await;
    }
    let op = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix("AWSEvents."))
        .map(str::to_string);
    let Some(op) = op.filter(|_| req.method() == axum::http::Method::POST) else {
        return crate::urls::user_route(State(gw), req).await;
    };
    let trace = crate::trace::incoming(req.headers());
    let body = axum::body::to_bytes(req.into_body(), AWS_JSON_MAX)
        .await
        .map_err(|e| ApiError::TooLarge(format!("request body: {e}")))?;
    let reply = match op.as_str() {
        "PutEvents" => {
            let body: PutEventsBody = serde_json::from_slice(&body).map_err(|e| {
                ApiError::InvalidRequestContent(format!("invalid PutEvents request: {e}"))
            })?;
            let out = bus(&gw)?
                .put_events(nimbus_store::DEFAULT_BUS, body.entries, trace.as_ref())
                .await?;
            serde_json::to_value(out).map_err(ApiError::internal)?
        }
        other => {
            let req: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(&body).map_err(|e| {
                    ApiError::InvalidRequestContent(format!("invalid {other} request: {e}"))
                })?
            };
            aws_control(bus(&gw)?, other, &req).await?
        }
    };
    Ok((
        [("content-type", "application/x-amz-json-1.1")],
        reply.to_string(),
    )
        .into_response())
}

/// EventBridge's rule and bus operations over the JSON protocol, on the same store as
/// `/v1/buses` (rules made either way are the same rules).
async fn aws_control(b: &Arc<EventBus>, op: &str, req: &Value) -> Result<Value, ApiError> {
    let s = |k: &str| req[k].as_str().map(str::to_string);
    let need = |k: &str| {
        s(k).filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::InvalidParameter(format!("{k} is required")))
    };
    let bus_name = s("EventBusName")
        .map(|n| {
            n.rsplit_once(":event-bus/")
                .map(|(_, b)| b.to_string())
                .unwrap_or(n)
        })
        .unwrap_or_else(|| nimbus_store::DEFAULT_BUS.to_string());
    let store = b.store().clone();
    let blocking = |f: Box<dyn FnOnce() -> Result<Value, nimbus_store::StoreError> + Send>| async move {
        Ok::<_, ApiError>(tokio::task::spawn_blocking(f).await??)
    };
    let describe = |r: &Rule| {
        let mut v = json!({
            "Name": r.name, "Arn": rule_arn(&r.bus, &r.name), "EventBusName": r.bus,
            "State": if r.enabled { "ENABLED" } else { "DISABLED" },
        });
        if let Some(p) = &r.pattern {
            v["EventPattern"] = p.clone().into();
        }
        if let Some(e) = &r.schedule {
            v["ScheduleExpression"] = e.clone().into();
        }
        v
    };
    let spec_of = |r: &Rule, targets: Vec<RuleTarget>| RuleSpec {
        pattern: r
            .pattern
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok()),
        schedule: r.schedule.clone(),
        timezone: r.timezone.clone(),
        targets,
        enabled: r.enabled,
    };
    match op {
        "CreateEventBus" => {
            let name = need("Name")?;
            b.put_bus(&name).await?;
            Ok(json!({ "EventBusArn": bus_arn(&name) }))
        }
        "DescribeEventBus" => {
            let name = s("Name").unwrap_or(bus_name);
            let n = name.clone();
            blocking(Box::new(move || store.get_bus(&n).map(|_| Value::Null))).await?;
            Ok(json!({ "Name": name, "Arn": bus_arn(&name) }))
        }
        "DeleteEventBus" => {
            b.delete_bus(&need("Name")?).await?;
            Ok(json!({}))
        }
        "ListEventBuses" => {
            let buses = blocking(Box::new(move || {
                Ok(json!(store
                    .list_buses()?
                    .iter()
                    .map(|b| json!({"Name": b.name, "Arn": bus_arn(&b.name)}))
                    .collect::<Vec<_>>()))
            }))
            .await?;
            Ok(json!({ "EventBuses": buses }))
        }
        "PutRule" => {
            let name = need("Name")?;
            let (bn, n) = (bus_name.clone(), name.clone());
            let existing = tokio::task::spawn_blocking(move || store.get_rule(&bn, &n)).await?;
            let targets = existing.map(|r| r.targets).unwrap_or_default();
            let pattern = match s("EventPattern") {
                Some(p) => Some(serde_json::from_str::<Value>(&p).map_err(|e| {
                    ApiError::InvalidParameter(format!("EventPattern is not valid JSON: {e}"))
                })?),
                None => None,
            };
            let spec = RuleSpec {
                pattern,
                schedule: s("ScheduleExpression"),
                timezone: None,
                targets,
                enabled: s("State").as_deref() != Some("DISABLED"),
            };
            let r = b.put_rule(&bus_name, &name, spec).await?;
            Ok(json!({ "RuleArn": rule_arn(&r.bus, &r.name) }))
        }
        "DescribeRule" => {
            let name = need("Name")?;
            let r = blocking(Box::new(move || {
                store.get_rule(&bus_name, &name).map(|r| describe(&r))
            }))
            .await?;
            Ok(r)
        }
        "ListRules" => {
            let prefix = s("NamePrefix").unwrap_or_default();
            let rules = blocking(Box::new(move || {
                store.get_bus(&bus_name)?;
                Ok(json!(store
                    .list_rules(Some(&bus_name))?
                    .iter()
                    .filter(|r| r.name.starts_with(&prefix))
                    .map(describe)
                    .collect::<Vec<_>>()))
            }))
            .await?;
            Ok(json!({ "Rules": rules }))
        }
        "DeleteRule" => {
            b.delete_rule(&bus_name, &need("Name")?).await?;
            Ok(json!({}))
        }
        "PutTargets" | "RemoveTargets" | "ListTargetsByRule" => {
            let name = need("Rule")?;
            let (bn, n) = (bus_name.clone(), name.clone());
            let rule = tokio::task::spawn_blocking(move || store.get_rule(&bn, &n)).await??;
            let id_of =
                |i: usize, t: &RuleTarget| t.id.clone().unwrap_or_else(|| (i + 1).to_string());
            let mut targets: Vec<RuleTarget> = rule
                .targets
                .iter()
                .enumerate()
                .map(|(i, t)| RuleTarget {
                    id: Some(id_of(i, t)),
                    ..t.clone()
                })
                .collect();
            match op {
                "ListTargetsByRule" => {
                    let list: Vec<Value> = targets
                        .iter()
                        .map(|t| {
                            let mut v = json!({"Id": t.id, "Arn": t.arn});
                            if let Some(i) = &t.input {
                                v["Input"] = i.clone().into();
                            }
                            if let Some(g) = &t.message_group_id {
                                v["SqsParameters"] = json!({ "MessageGroupId": g });
                            }
                            v
                        })
                        .collect();
                    return Ok(json!({ "Targets": list }));
                }
                "PutTargets" => {
                    for t in req["Targets"].as_array().into_iter().flatten() {
                        let (Some(id), Some(arn)) = (t["Id"].as_str(), t["Arn"].as_str()) else {
                            return Err(ApiError::InvalidParameter(
                                "each target needs an Id and an Arn".into(),
                            ));
                        };
                        let new = RuleTarget {
                            id: Some(id.to_string()),
                            arn: arn.to_string(),
                            input: t["Input"].as_str().map(str::to_string),
                            message_group_id: t["SqsParameters"]["MessageGroupId"]
                                .as_str()
                                .map(str::to_string),
                        };
                        match targets.iter_mut().find(|x| x.id.as_deref() == Some(id)) {
                            Some(old) => *old = new,
                            None => targets.push(new),
                        }
                    }
                }
                _ => {
                    let ids: Vec<&str> = req["Ids"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    targets.retain(|t| !ids.contains(&t.id.as_deref().unwrap_or("")));
                }
            }
            b.put_rule(&bus_name, &name, spec_of(&rule, targets))
                .await?;
            Ok(json!({ "FailedEntryCount": 0, "FailedEntries": [] }))
        }
        other => Err(ApiError::InvalidParameter(format!(
            "EventBridge operation {other} is not supported; use the native /v1/buses API"
        ))),
    }
}
