//! Asynchronous invocation over HTTP: `InvocationType: Event` (202 once the event is
//! durable), Lambda's event-invoke-config API (`/2019-09-25/…`), the native events view,
//! and the [`Invoker`] the async engine delivers through (the same pools as sync calls).

use crate::{invoke, ApiError, Gateway};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use nimbus_core::{arn, Destination, EventInvokeConfig, EventStatus, FunctionName, LATEST};
use nimbus_events::engine::{Attempt, Invoker};
use nimbus_metrics::Trigger;
use nimbus_runtime::Outcome;
use nimbus_trace::TraceContext;
use serde::Deserialize;
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Header carrying a caller-chosen idempotency key.
pub(crate) const IDEMPOTENCY_HEADER: &str = "x-nimbus-idempotency-key";

/// The invocation's idempotency key: the `X-Nimbus-Idempotency-Key` header, else the value
/// at the function's `idempotency_key` JSON path in the event, else none.
pub(crate) fn idempotency_key(
    headers: &HeaderMap,
    config: &nimbus_core::FunctionConfig,
    payload: &[u8],
) -> Result<Option<String>, ApiError> {
    if let Some(v) = headers.get(IDEMPOTENCY_HEADER) {
        return v
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 256)
            .map(|k| Some(k.to_string()))
            .ok_or_else(|| {
                ApiError::InvalidParameter(format!(
                    "{IDEMPOTENCY_HEADER} must be 1-256 visible characters"
                ))
            });
    }
    let Some(path) = &config.idempotency_key_path else {
        return Ok(None);
    };
    let event: serde_json::Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    Ok(nimbus_core::config::idempotency_key_at(&event, path).filter(|k| k.len() <= 256))
}

/// Queues an `Event` invocation and answers 202 with its request id.
pub(crate) async fn submit(
    gw: &Arc<Gateway>,
    name: &FunctionName,
    qualifier: Option<&str>,
    payload: Bytes,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    // Lambda checks that the function (and qualifier) exist before accepting the event.
    let resolved = gw.resolve(name, qualifier).await?;
    if payload.len() > 256 * 1024 {
        return Err(ApiError::TooLarge(
            "asynchronous payloads are limited to 256 KB, as on Lambda".into(),
        ));
    }
    let key = idempotency_key(headers, &resolved.version.config, &payload)?;
    let payload = String::from_utf8(payload.to_vec())
        .map_err(|_| ApiError::InvalidRequestContent("the payload must be UTF-8 JSON".into()))?;
    let origin = nimbus_events::engine::Origin {
        trigger: Trigger::Async,
        trace: crate::trace::incoming(headers),
    };
    let submitted = gw
        .events
        .submit_from(
            name.as_str(),
            qualifier.unwrap_or(LATEST),
            payload,
            key,
            origin,
        )
        .await?;
    let mut resp = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = HeaderValue::from_str(&submitted.request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    if submitted.duplicate {
        resp.headers_mut().insert(
            "x-nimbus-idempotent-replay",
            HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

/// Delivers async events through the gateway's resolve-and-pool path.
pub struct GatewayInvoker(pub Arc<Gateway>);

impl Invoker for GatewayInvoker {
    fn invoke<'a>(
        &'a self,
        function: &'a str,
        qualifier: &'a str,
        request_id: &'a str,
        payload: String,
    ) -> Pin<Box<dyn Future<Output = Attempt> + Send + 'a>> {
        self.invoke_as(Trigger::Async, function, qualifier, request_id, payload)
    }

    fn invoke_as<'a>(
        &'a self,
        trigger: Trigger,
        function: &'a str,
        qualifier: &'a str,
        request_id: &'a str,
        payload: String,
    ) -> Pin<Box<dyn Future<Output = Attempt> + Send + 'a>> {
        self.invoke_traced(trigger, function, qualifier, request_id, payload, None)
    }

    fn invoke_traced<'a>(
        &'a self,
        trigger: Trigger,
        function: &'a str,
        qualifier: &'a str,
        request_id: &'a str,
        payload: String,
        trace: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Attempt> + Send + 'a>> {
        Box::pin(async move {
            let gw = &self.0;
            let Ok(name) = FunctionName::parse(function) else {
                return Attempt::Missing(format!("invalid function name {function}"));
            };
            let q = (qualifier != LATEST).then_some(qualifier);
            let resolved = match gw.resolve(&name, q).await {
                Ok(r) => r,
                Err(ApiError::NotFound(m)) => return Attempt::Missing(m),
                Err(e) => return Attempt::Throttled(e.to_string()),
            };
            let version = resolved.version.version.clone();
            let trace = trace.and_then(TraceContext::parse_stored);
            let inv = invoke::invocation(
                request_id.to_string(),
                payload.into(),
                arn::function_arn(function, q),
                trace,
                None,
            );
            let run = match invoke::spawn(gw, &resolved, trigger, inv) {
                Ok(running) => running.await.unwrap_or_else(|e| Err(e.into())),
                Err(e) => Err(e),
            };
            match run {
                Ok((_, res)) => match res.result.outcome {
                    Outcome::Success(body) | Outcome::Streamed { body, .. } => Attempt::Success {
                        body: String::from_utf8_lossy(&body).into_owned(),
                        version,
                    },
                    Outcome::Error { error_type, body } => Attempt::FunctionError {
                        body: String::from_utf8_lossy(&body).into_owned(),
                        error_type,
                        version,
                    },
                },
                Err(ApiError::Throttled { message, .. }) => Attempt::Throttled(message),
                Err(ApiError::ServiceUnavailable(m)) => Attempt::Throttled(m),
                Err(e) => Attempt::Throttled(e.to_string()),
            }
        })
    }

    fn dead_letter_target<'a>(
        &'a self,
        function: &'a str,
        qualifier: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>> {
        Box::pin(crate::dead_letter::target_of(&self.0, function, qualifier))
    }
}

fn unqualified(function: &str) -> Result<FunctionName, ApiError> {
    let (name, q) = arn::parse_function_ref(function)?;
    if q.is_some_and(|q| q != LATEST) {
        return Err(ApiError::InvalidParameter(
            "event invoke configs apply to the whole function in Nimbus: omit the qualifier".into(),
        ));
    }
    Ok(name)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct DestinationInput {
    destination: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct DestinationConfigInput {
    on_success: Option<DestinationInput>,
    on_failure: Option<DestinationInput>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct EventInvokeConfigInput {
    maximum_retry_attempts: Option<i64>,
    maximum_event_age_in_seconds: Option<i64>,
    destination_config: Option<DestinationConfigInput>,
}

fn config_json(name: &FunctionName, c: &EventInvokeConfig) -> Value {
    let dest = |d: &Option<Destination>| match d {
        Some(d) => json!({ "Destination": d.destination }),
        None => json!({}),
    };
    let modified = c.last_modified.parse::<i64>().unwrap_or(0);
    json!({
        "LastModified": modified,
        "FunctionArn": arn::function_arn(name.as_str(), Some(LATEST)),
        "MaximumRetryAttempts": c.maximum_retry_attempts,
        "MaximumEventAgeInSeconds": c.maximum_event_age_s,
        "DestinationConfig": { "OnSuccess": dest(&c.on_success), "OnFailure": dest(&c.on_failure) },
    })
}

async fn write_config(
    gw: &Arc<Gateway>,
    function: &str,
    body: &[u8],
    merge: bool,
) -> Result<Json<Value>, ApiError> {
    let name = unqualified(function)?;
    gw.store.get(&name, None)?;
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    let input: EventInvokeConfigInput = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidParameter(format!("invalid request body: {e}")))?;
    let queue = gw.events.queue().clone();
    let existing = queue.config(name.as_str())?;
    if merge && existing.is_none() {
        return Err(ApiError::NotFound(format!(
            "function {name} has no event invoke config"
        )));
    }
    let mut c = if merge {
        existing.unwrap_or_default()
    } else {
        EventInvokeConfig::default()
    };
    if let Some(n) = input.maximum_retry_attempts {
        c.maximum_retry_attempts = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(n) = input.maximum_event_age_in_seconds {
        c.maximum_event_age_s = u32::try_from(n).unwrap_or(0);
    }
    if let Some(d) = input.destination_config {
        let pick = |d: Option<DestinationInput>| {
            d.and_then(|d| d.destination)
                .map(|destination| Destination { destination })
        };
        if let Some(s) = d.on_success {
            c.on_success = pick(Some(s));
        }
        if let Some(f) = d.on_failure {
            c.on_failure = pick(Some(f));
        }
    }
    c.validate()
        .map_err(|e| ApiError::InvalidParameter(e.to_string().replace("invalid manifest: ", "")))?;
    // Lambda reports LastModified of these configs as epoch seconds.
    c.last_modified = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    let (q, n, stored) = (queue.clone(), name.to_string(), c.clone());
    tokio::task::spawn_blocking(move || q.put_config(&n, Some(&stored))).await??;
    Ok(Json(config_json(&name, &c)))
}

/// `PUT /2019-09-25/functions/{name}/event-invoke-config` (PutFunctionEventInvokeConfig)
pub(crate) async fn put_config(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    write_config(&gw, &function, &body, false).await
}

/// `POST /2019-09-25/functions/{name}/event-invoke-config` (UpdateFunctionEventInvokeConfig)
pub(crate) async fn update_config(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    write_config(&gw, &function, &body, true).await
}

/// `GET /2019-09-25/functions/{name}/event-invoke-config`
pub(crate) async fn get_config(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = unqualified(&function)?;
    gw.store.get(&name, None)?;
    let c =
        gw.events.queue().config(name.as_str())?.ok_or_else(|| {
            ApiError::NotFound(format!("function {name} has no event invoke config"))
        })?;
    Ok(Json(config_json(&name, &c)))
}

/// `GET /2019-09-25/functions/{name}/event-invoke-config/list`
pub(crate) async fn list_configs(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = unqualified(&function)?;
    gw.store.get(&name, None)?;
    let configs: Vec<Value> = gw
        .events
        .queue()
        .config(name.as_str())?
        .iter()
        .map(|c| config_json(&name, c))
        .collect();
    Ok(Json(json!({ "FunctionEventInvokeConfigs": configs })))
}

/// `DELETE /2019-09-25/functions/{name}/event-invoke-config`
pub(crate) async fn delete_config(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = unqualified(&function)?;
    gw.store.get(&name, None)?;
    let queue = gw.events.queue();
    if queue.config(name.as_str())?.is_none() {
        return Err(ApiError::NotFound(format!(
            "function {name} has no event invoke config"
        )));
    }
    queue.put_config(name.as_str(), None)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    status: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/functions/{name}/events?status=dead&limit=N`: the async events of a function
/// (newest first), counts per status, and its circuit breaker.
pub(crate) async fn list_events(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let name = FunctionName::parse(&function)?;
    gw.store.get(&name, None)?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            EventStatus::parse(s).ok_or_else(|| {
                ApiError::InvalidParameter(format!(
                    "unknown status {s:?}: use pending, running, succeeded, dead or expired"
                ))
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let queue = gw.events.queue().clone();
    let n = name.to_string();
    let (events, counts) = tokio::task::spawn_blocking(move || {
        Ok::<_, nimbus_store::StoreError>((queue.list(&n, status, limit)?, queue.counts(&n)?))
    })
    .await??;
    Ok(Json(json!({
        "events": events,
        "counts": counts,
        "circuit": gw.events.circuit(name.as_str()),
    })))
}

/// `POST /v1/functions/{name}/events/{id}/redrive`: a dead or expired event of the function
/// goes back to pending with no attempts and is attempted at once.
pub(crate) async fn redrive_event(
    State(gw): State<Arc<Gateway>>,
    Path((function, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let name = FunctionName::parse(&function)?;
    gw.store.get(&name, None)?;
    let ev = gw.events.redrive(name.as_str(), &id).await?;
    Ok(Json(json!(ev)))
}
