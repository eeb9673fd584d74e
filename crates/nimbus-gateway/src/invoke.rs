//! The Lambda Invoke API and the invocation path shared by every HTTP surface.

use crate::state::Resolved;
use crate::{ApiError, Gateway};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use nimbus_core::{arn, Limits};
use nimbus_metrics::{self as metrics, FunctionMetrics, InvocationOutcome, Trigger};
use nimbus_pool::PoolInvokeResult;
use nimbus_runtime::{Invocation, Outcome};
use nimbus_trace::TraceContext;
use std::collections::HashMap;
use std::sync::Arc;
use tracing::{info_span, Instrument};

/// Lambda's limit on `X-Amz-Client-Context` (base64-decoded JSON).
const CLIENT_CONTEXT_MAX: usize = 3583;

/// Runs one invocation. The work runs in its own task, so a client that disconnects
/// does not cut an invocation short (Lambda finishes it too).
pub(crate) async fn run(
    gw: &Arc<Gateway>,
    resolved: &Arc<Resolved>,
    trigger: Trigger,
    payload: Bytes,
    invoked_arn: String,
    trace: Option<TraceContext>,
    client_context: Option<String>,
) -> Result<(String, PoolInvokeResult), ApiError> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let inv = invocation(request_id, payload, invoked_arn, trace, client_context);
    spawn(gw, resolved, trigger, inv)?.await?
}

/// A buffered invocation carrying the caller's trace context (`traceparent`/`tracestate`;
/// [`spawn`] starts its span from it).
pub(crate) fn invocation(
    request_id: String,
    payload: Bytes,
    invoked_arn: String,
    trace: Option<TraceContext>,
    client_context: Option<String>,
) -> Invocation {
    Invocation {
        request_id,
        payload,
        invoked_arn,
        trace_id: None,
        traceparent: trace.as_ref().map(TraceContext::traceparent),
        tracestate: trace.and_then(|t| t.tracestate),
        client_context,
        stream: None,
        http: None,
    }
}

/// An invocation running in its own task: resolves to its request id and result.
pub(crate) type Running = tokio::task::JoinHandle<Result<(String, PoolInvokeResult), ApiError>>;

/// Starts `inv` in its own task (see [`run`]); the handle resolves to its result. Every
/// invocation, whatever its surface, passes here: its outcome is recorded in the metrics
/// here and nowhere else, and its invoke span starts here (a child of the context in
/// `inv.traceparent` or `inv.trace_id`; a new trace without one), whose ids the function
/// is given in their place.
pub(crate) fn spawn(
    gw: &Arc<Gateway>,
    resolved: &Arc<Resolved>,
    trigger: Trigger,
    mut inv: Invocation,
) -> Result<Running, ApiError> {
    let metrics = resolved.metrics.clone();
    if resolved.throttled {
        metrics.throttle(metrics::ThrottleReason::Reserved);
        metrics.invocation(trigger, InvocationOutcome::Throttle, None);
        return Err(ApiError::Throttled {
            message: format!(
                "Rate Exceeded: function {} has reserved concurrency 0",
                resolved.spec.function
            ),
            reason: "ReservedFunctionConcurrentInvocationLimitExceeded",
        });
    }
    let tracer = gw.cfg.tracer.clone();
    let trace = crate::trace::begin(&tracer, resolved.version.config.tracing_mode, &mut inv);
    let request_id = inv.request_id.clone();
    let pools = gw.pools.clone();
    let spec = resolved.spec.clone();
    let revision = resolved.version.revision_id.clone();
    // Cluster mode: a permit of the cluster's budget first (reservation or account).
    let permits = crate::permits::admission(gw, resolved);
    // Cluster mode: a buffered synchronous call (Invoke RequestResponse, a function URL)
    // may run on another node's warm instance (`forward.rs`).
    let forward = matches!(trigger, Trigger::Api | Trigger::Url)
        .then(|| gw.forward.get().cloned())
        .flatten()
        .filter(|_| inv.stream.is_none() && inv.http.is_none());
    let span = info_span!("invoke", function = %spec.function, version = %spec.version, request_id = %request_id, trigger = trigger.as_str(), streamed = inv.stream.is_some(), forwarded_to = tracing::field::Empty);
    Ok(tokio::spawn(
        async move {
            let in_flight = metrics.in_flight();
            let res =
                crate::forward::invoke(forward, &pools, permits, spec.clone(), &revision, inv)
                    .await;
            drop(in_flight);
            record(&metrics, trigger, &res);
            trace.end(&tracer, &spec, trigger, &request_id, &res);
            Ok((request_id, res?))
        }
        .instrument(span),
    ))
}

/// Records one finished invocation in its function's metrics.
fn record(
    m: &FunctionMetrics,
    trigger: Trigger,
    res: &Result<PoolInvokeResult, nimbus_pool::PoolError>,
) {
    use nimbus_pool::{PoolError, ThrottleReason as Pool};
    let r = match res {
        Ok(r) => r,
        Err(PoolError::Throttled { reason, .. }) => {
            m.throttle(match reason {
                Pool::Reserved => metrics::ThrottleReason::Reserved,
                Pool::Concurrency => metrics::ThrottleReason::Concurrency,
                Pool::ScaleRate => metrics::ThrottleReason::ScaleRate,
            });
            m.invocation(trigger, InvocationOutcome::Throttle, None);
            return;
        }
        Err(PoolError::MemoryExhausted { .. }) => {
            m.throttle(metrics::ThrottleReason::Memory);
            m.invocation(trigger, InvocationOutcome::Throttle, None);
            return;
        }
        // Shutting down: the invocation never ran and is not counted.
        Err(PoolError::ShuttingDown) => return,
    };
    if r.cold {
        m.cold_start(r.stem, r.result.init_duration);
    }
    let outcome = match &r.result.outcome {
        Outcome::Success(_) | Outcome::Streamed { .. } => InvocationOutcome::Success,
        Outcome::Error { .. } if r.result.init_failed => InvocationOutcome::InitError,
        Outcome::Error { error_type, .. } if error_type == nimbus_runtime::TIMED_OUT => {
            InvocationOutcome::Timeout
        }
        Outcome::Error { .. } => InvocationOutcome::Error,
    };
    m.invocation(trigger, outcome, Some(r.result.duration));
}

/// What an Invoke request asks for (both `Invoke` and `InvokeWithResponseStream`).
pub(crate) struct InvokeRequest {
    pub name: nimbus_core::FunctionName,
    pub qualifier: Option<String>,
    pub invocation_type: String,
    /// `X-Amz-Log-Type: Tail`.
    pub tail: bool,
    pub client_context: Option<String>,
    /// The JSON payload (`{}` when the body was empty).
    pub payload: Bytes,
}

/// Parses and checks an Invoke request; `types` are the invocation types the operation
/// takes.
pub(crate) async fn parse_invoke(
    function: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
    types: &[&str],
) -> Result<InvokeRequest, ApiError> {
    let (name, embedded_q) = arn::parse_function_ref(function)?;
    let qualifier = match (embedded_q, query.get("Qualifier")) {
        (Some(a), Some(b)) if &a != b => {
            return Err(ApiError::InvalidParameter(format!(
                "the qualifier in the function name ({a}) and the Qualifier parameter ({b}) differ"
            )))
        }
        (Some(a), _) => Some(a),
        (None, Some(b)) => Some(arn::validate_qualifier(b)?),
        (None, None) => None,
    };
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let invocation_type = header("x-amz-invocation-type").unwrap_or("RequestResponse");
    if !types.contains(&invocation_type) {
        return Err(ApiError::InvalidParameter(format!(
            "invalid InvocationType {invocation_type:?}: use {}",
            types.join(", ")
        )));
    }
    let tail = match header("x-amz-log-type") {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => {
            return Err(ApiError::InvalidParameter(format!(
                "invalid LogType {other:?}: use None or Tail"
            )))
        }
    };
    let client_context = header("x-amz-client-context")
        .map(decode_client_context)
        .transpose()?;
    let payload = read_payload(body).await?;
    if !payload.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_err() {
        return Err(ApiError::InvalidRequestContent(
            "Could not parse request body into json: the payload must be valid JSON".into(),
        ));
    }
    let payload = if payload.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        payload
    };
    Ok(InvokeRequest {
        name,
        qualifier,
        invocation_type: invocation_type.to_string(),
        tail,
        client_context,
        payload,
    })
}

/// A `DryRun` invocation's answer: 204 with the version that would run.
pub(crate) fn dry_run(executed_version: String) -> Response {
    (
        StatusCode::NO_CONTENT,
        [("x-amz-executed-version", executed_version)],
    )
        .into_response()
}

/// The last 4 KB of an invocation's log, base64 (`X-Amz-Log-Result`, `LogResult`).
pub(crate) fn log_result(log_tail: &str) -> String {
    let tail_bytes = log_tail.as_bytes();
    let start = tail_bytes.len().saturating_sub(4096);
    base64::engine::general_purpose::STANDARD.encode(&tail_bytes[start..])
}

/// `POST /2015-03-31/functions/{FunctionName}/invocations`
pub(crate) async fn lambda_invoke(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let InvokeRequest {
        name,
        qualifier,
        invocation_type,
        tail,
        client_context,
        payload,
    } = parse_invoke(
        &function,
        &query,
        &headers,
        body,
        &["RequestResponse", "Event", "DryRun"],
    )
    .await?;

    if invocation_type == "Event" {
        return crate::async_invoke::submit(&gw, &name, qualifier.as_deref(), payload, &headers)
            .await;
    }
    let resolved = gw.resolve(&name, qualifier.as_deref()).await?;
    let executed_version = resolved.version.version.clone();
    if invocation_type == "DryRun" {
        return Ok(dry_run(executed_version));
    }
    // A repeated call with an idempotency key within the window gets the stored result.
    let key = crate::async_invoke::idempotency_key(&headers, &resolved.version.config, &payload)?;
    let queue = gw.events.queue().clone();
    let window = gw.events.idempotency_window().as_millis() as i64;
    if let Some(k) = &key {
        let (q, f, k) = (queue.clone(), name.to_string(), k.clone());
        let since = now_ms() - window;
        if let Some(stored) =
            tokio::task::spawn_blocking(move || q.sync_result(&f, &k, since)).await??
        {
            let mut resp = Response::new(Body::from(stored.body));
            let h = resp.headers_mut();
            h.insert("content-type", HeaderValue::from_static("application/json"));
            insert(h, "x-amzn-requestid", &stored.request_id);
            insert(h, "x-amz-executed-version", &stored.version);
            h.insert(
                "x-nimbus-idempotent-replay",
                HeaderValue::from_static("true"),
            );
            return Ok(resp);
        }
    }
    let invoked_arn = arn::function_arn(name.as_str(), qualifier.as_deref());
    let trace = crate::trace::incoming(&headers);
    let (request_id, res) = run(
        &gw,
        &resolved,
        Trigger::Api,
        payload,
        invoked_arn,
        trace,
        client_context,
    )
    .await?;
    // Only successes are remembered: a failed call may be retried with the same key.
    if let (Some(k), Outcome::Success(body)) = (&key, &res.result.outcome) {
        let stored = nimbus_store::StoredResult {
            request_id: request_id.clone(),
            version: executed_version.clone(),
            body: body.to_vec(),
        };
        let (f, k, now) = (name.to_string(), k.clone(), now_ms());
        tokio::task::spawn_blocking(move || {
            queue.put_sync_result(&f, &k, &stored, now, now - window)
        })
        .await??;
    }

    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    insert(h, "x-amzn-requestid", &request_id);
    insert(h, "x-amz-executed-version", &executed_version);
    if tail {
        insert(h, "x-amz-log-result", &log_result(&res.result.log_tail));
    }
    match res.result.outcome {
        Outcome::Success(body) => *resp.body_mut() = Body::from(body),
        // A streamed response: the raw body (after the HTTP-integration prelude, if any).
        Outcome::Streamed { body, .. } => *resp.body_mut() = Body::from(body),
        Outcome::Error { body, .. } => {
            resp.headers_mut().insert(
                "x-amz-function-error",
                HeaderValue::from_static("Unhandled"),
            );
            *resp.body_mut() = Body::from(body);
        }
    }
    Ok(resp)
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn insert(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// Reads an invocation payload, refusing more than Lambda's 6 MB synchronous limit.
pub(crate) async fn read_payload(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, Limits::PAYLOAD_MAX)
        .await
        .map_err(|_| {
            ApiError::TooLarge(format!(
                "Request must be smaller than {} bytes for the InvokeFunction operation",
                Limits::PAYLOAD_MAX
            ))
        })
}

fn decode_client_context(b64: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::InvalidParameter(
            "X-Amz-Client-Context must be base64-encoded JSON of at most 3583 bytes".into(),
        )
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| bad())?;
    if raw.len() > CLIENT_CONTEXT_MAX {
        return Err(bad());
    }
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|_| bad())?;
    Ok(text)
}
