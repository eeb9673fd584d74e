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

/// A rule as the API shows it.
pub(crate) fn rule_view(r: &Rule) -> Value {
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
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: PutEventsBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::InvalidRequestContent(format!(
            "expected {{\"Entries\": [{{\"Source\", \"DetailType\", \"Detail\", …}}]}}: {e}"
        ))
    })?;
    let out = bus(&gw)?.put_events(&name, body.entries).await?;
    Ok(Json(serde_json::to_value(out).map_err(ApiError::internal)?))
}

pub(crate) async fn list_rules(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = bus(&gw)?.store().clone();
    let rules = tokio::task::spawn_blocking(move || {
        store.get_bus(&name)?;
        store.list_rules(Some(&name))
    })
    .await??;
    Ok(Json(
        json!({ "rules": rules.iter().map(rule_view).collect::<Vec<_>>() }),
    ))
}

pub(crate) async fn get_rule(
    State(gw): State<Arc<Gateway>>,
    Path((b, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let store = bus(&gw)?.store().clone();
    let r = tokio::task::spawn_blocking(move || store.get_rule(&b, &name)).await??;
    Ok(Json(rule_view(&r)))
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
            TargetBody::Name(arn) => RuleTarget { arn, input: None },
            TargetBody::Full { arn, input } => RuleTarget {
                arn,
                // `Input` is JSON text in EventBridge; a JSON value here is taken as is.
                input: input.map(|v| match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                }),
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
    let r = bus(&gw)?.put_rule(&b, &name, spec).await?;
    Ok(Json(rule_view(&r)))
}

pub(crate) async fn delete_rule(
    State(gw): State<Arc<Gateway>>,
    Path((b, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    bus(&gw)?.delete_rule(&b, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
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
    let op = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix("AWSEvents."))
        .map(str::to_string);
    let Some(op) = op.filter(|_| req.method() == axum::http::Method::POST) else {
        return crate::urls::user_route(State(gw), req).await;
    };
    let body = axum::body::to_bytes(req.into_body(), AWS_JSON_MAX)
        .await
        .map_err(|e| ApiError::TooLarge(format!("request body: {e}")))?;
    match op.as_str() {
        "PutEvents" => {
            let body: PutEventsBody = serde_json::from_slice(&body).map_err(|e| {
                ApiError::InvalidRequestContent(format!("invalid PutEvents request: {e}"))
            })?;
            let out = bus(&gw)?
                .put_events(nimbus_store::DEFAULT_BUS, body.entries)
                .await?;
            let json = serde_json::to_string(&out).map_err(ApiError::internal)?;
            Ok(([("content-type", "application/x-amz-json-1.1")], json).into_response())
        }
        other => Err(ApiError::InvalidParameter(format!(
            "EventBridge operation {other} is not supported; use PutEvents, or the native \
             /v1/buses API for buses and rules"
        ))),
    }
}
