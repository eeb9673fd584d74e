//! Built-in queues over HTTP: the native `/v1/queues` API (create, send, receive, delete,
//! purge, stats) and Lambda's event-source mapping operations
//! (`/2015-03-31/event-source-mappings`), whose `EventSourceArn` is the queue's SQS-style ARN.

use crate::{ApiError, Gateway};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nimbus_core::{arn, LATEST};
use nimbus_events::mapping::{queue_arn, queue_from_arn, MappingRunner};
use nimbus_events::pattern::EventPattern;
use nimbus_store::{
    DedupScope, EventSourceMapping, Message, NewMessage, QueueDepth, QueueInfo, QueueSettings,
    QueueStore, RedrivePolicy, StoreError, ThroughputLimit,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) fn runner(gw: &Gateway) -> Result<&Arc<MappingRunner>, ApiError> {
    gw.queues
        .get()
        .ok_or_else(|| ApiError::ServiceUnavailable("queues are not enabled on this server".into()))
}

/// Runs a (possibly fsync-ing) store call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    gw: &Gateway,
    f: impl FnOnce(&dyn QueueStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = runner(gw)?.store().clone();
    Ok(tokio::task::spawn_blocking(move || f(store.as_ref())).await??)
}

pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn parse_body<T: for<'de> Deserialize<'de> + Default>(
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidParameter(format!("invalid request body: {e}")))
}

// ---------------------------------------------------------------- native /v1/queues

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct QueueInput {
    visibility_timeout: Option<u32>,
    max_message_size: Option<u32>,
    retention: Option<u32>,
    dead_letter: Option<String>,
    max_receive_count: Option<u32>,
    /// A FIFO queue (its name ends in `.fifo`); only at creation.
    fifo: Option<bool>,
    content_based_deduplication: Option<bool>,
    deduplication_scope: Option<DedupScope>,
    throughput_limit: Option<ThroughputLimit>,
}

fn queue_json(q: &QueueInfo) -> Value {
    let mut v = json!({
        "name": q.name,
        "arn": queue_arn(&q.name),
        "visibility_timeout": q.settings.visibility_timeout_s,
        "max_message_size": q.settings.max_message_size,
        "retention": q.settings.retention_s,
        "dead_letter": q.settings.redrive.as_ref().map(|r| r.dead_letter_queue.clone()),
        "max_receive_count": q.settings.redrive.as_ref().map(|r| r.max_receive_count),
        "created_ms": q.created_ms,
        "fifo": q.settings.fifo,
    });
    if q.settings.fifo {
        v["content_based_deduplication"] = json!(q.settings.content_based_dedup);
        v["deduplication_scope"] = json!(q.settings.dedup_scope);
        v["throughput_limit"] = json!(q.settings.throughput_limit);
    }
    v
}

fn message_json(m: &Message) -> Value {
    let mut v = json!({
        "id": m.id,
        "body": m.body,
        "attributes": m.attributes,
        "md5": m.md5,
        "receipt": m.receipt,
        "receive_count": m.receive_count,
        "sent_ms": m.sent_ms,
        "first_receive_ms": m.first_receive_ms,
    });
    if m.group_id.is_some() {
        v["group_id"] = json!(m.group_id);
        v["deduplication_id"] = json!(m.dedup_id);
        v["sequence_number"] = json!(m.sequence_number);
    }
    v
}

/// `PUT /v1/queues/{q}`: creates the queue or updates its settings.
pub(crate) async fn put_queue(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let input: QueueInput = parse_body(&body)?;
    let d = QueueSettings::default();
    let redrive = match (input.dead_letter, input.max_receive_count) {
        (Some(dlq), n) => Some(RedrivePolicy {
            dead_letter_queue: dlq,
            max_receive_count: n.unwrap_or(10),
        }),
        (None, Some(_)) => {
            return Err(ApiError::InvalidParameter(
                "max_receive_count needs a dead_letter queue".into(),
            ))
        }
        (None, None) => None,
    };
    let q = blocking(&gw, move |s| {
        // What only the SQS API sets (delay, long-polling wait, redrive-allow policy, tags)
        // is kept; the rest is as given or SQS's default.
        let kept = match s.get_queue(&name) {
            Ok(q) => q.settings,
            Err(e) if e.is_not_found() => d.clone(),
            Err(e) => return Err(e),
        };
        // A queue's type is given at creation (the store refuses a change).
        let fifo = input.fifo.unwrap_or(kept.fifo);
        let settings = QueueSettings {
            visibility_timeout_s: input.visibility_timeout.unwrap_or(d.visibility_timeout_s),
            max_message_size: input.max_message_size.unwrap_or(d.max_message_size),
            retention_s: input.retention.unwrap_or(d.retention_s),
            redrive,
            fifo,
            content_based_dedup: input
                .content_based_deduplication
                .unwrap_or(kept.content_based_dedup),
            dedup_scope: input.deduplication_scope.unwrap_or(kept.dedup_scope),
            throughput_limit: input.throughput_limit.unwrap_or(kept.throughput_limit),
            ..kept
        };
        s.put_queue(&name, &settings, now_ms())
    })
    .await?;
    Ok(Json(queue_json(&q)))
}

/// `GET /v1/queues`: every queue with its stats and the send time of its oldest message
/// (one pass over the messages).
pub(crate) async fn list_queues(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    let (queues, depths) =
        blocking(&gw, move |s| Ok((s.list_queues()?, s.all_stats(now)?))).await?;
    let depths: HashMap<&str, &QueueDepth> = depths.iter().map(|d| (d.queue.as_str(), d)).collect();
    let out: Vec<Value> = queues
        .iter()
        .map(|q| {
            let mut v = queue_json(q);
            let d = depths.get(q.name.as_str());
            v["stats"] = json!(d.map(|d| d.stats).unwrap_or_default());
            v["oldest_sent_ms"] = json!(d.and_then(|d| d.oldest_sent_ms));
            v
        })
        .collect();
    Ok(Json(json!({ "queues": out })))
}

/// `GET /v1/queues/{q}`: settings and stats.
pub(crate) async fn get_queue(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (q, stats) = blocking(&gw, move |s| {
        Ok((s.get_queue(&name)?, s.stats(&name, now_ms())?))
    })
    .await?;
    let mut v = queue_json(&q);
    v["stats"] = json!(stats);
    Ok(Json(v))
}

/// `DELETE /v1/queues/{q}`
pub(crate) async fn delete_queue(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(&gw, move |s| s.delete_queue(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/queues/{q}/purge`
pub(crate) async fn purge(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let n = blocking(&gw, move |s| s.purge(&name)).await?;
    Ok(Json(json!({ "purged": n })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RedriveInput {
    destination: Option<String>,
    max_per_second: Option<u32>,
}

/// `POST /v1/queues/{dlq}/redrive` `{destination?, max_per_second?}`: moves a dead-letter
/// queue's messages to `destination`, by default the queue whose redrive policy names it
/// (SQS's `StartMessageMoveTask`). Without `max_per_second`, every message moves at once in
/// one transaction (200); with it, `max_per_second` move now and the rest follow in
/// batches of that size each second in the background (202 while messages are left).
#[tracing::instrument(skip_all, fields(dlq = %dlq))]
pub(crate) async fn redrive(
    State(gw): State<Arc<Gateway>>,
    Path(dlq): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: RedriveInput = parse_body(&body)?;
    if input
        .max_per_second
        .is_some_and(|n| !(1..=500).contains(&n))
    {
        return Err(ApiError::InvalidParameter(
            "max_per_second must be 1-500".into(),
        ));
    }
    let rate = input.max_per_second.map(u64::from);
    let (q, dest) = (dlq.clone(), input.destination);
    let r = blocking(&gw, move |s| s.redrive(&q, dest.as_deref(), rate, now_ms())).await?;
    runner(&gw)?.messages_sent();
    let mut out =
        json!({ "source": dlq, "destination": r.destination, "moved": r.moved, "left": r.left });
    let Some(rate) = rate.filter(|&n| r.moved == n && r.left > 0) else {
        return Ok(Json(out).into_response());
    };
    out["max_per_second"] = json!(rate);
    tokio::spawn(redrive_paced(gw.clone(), dlq, r.destination, rate));
    Ok(accepted(out))
}

/// The rest of a paced redrive: `rate` messages each second until the queue holds none
/// that can move (or a store error, logged).
pub(crate) async fn redrive_paced(gw: Arc<Gateway>, dlq: String, destination: String, rate: u64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let (q, d) = (dlq.clone(), destination.clone());
        match blocking(&gw, move |s| s.redrive(&q, Some(&d), Some(rate), now_ms())).await {
            Ok(r) => {
                if let Ok(runner) = runner(&gw) {
                    runner.messages_sent();
                }
                if r.moved < rate {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(dlq = %dlq, destination = %destination, "paced redrive stopped: {e}");
                return;
            }
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct SendEntry {
    body: Option<Value>,
    attributes: Option<HashMap<String, Value>>,
    delay_seconds: u32,
    /// FIFO queues: the message group (required there).
    group_id: Option<String>,
    /// FIFO queues: the deduplication id (else the queue's content-based deduplication).
    deduplication_id: Option<String>,
}

/// Message attributes in the SQS event shape: `"v"` is a String attribute; objects get
/// the list fields filled in.
fn normalize_attributes(attrs: Option<HashMap<String, Value>>) -> Result<Value, ApiError> {
    let mut out = serde_json::Map::new();
    for (k, v) in attrs.unwrap_or_default() {
        let attr = match v {
            Value::String(s) => json!({
                "stringValue": s, "stringListValues": [], "binaryListValues": [], "dataType": "String",
            }),
            Value::Number(n) => json!({
                "stringValue": n.to_string(), "stringListValues": [], "binaryListValues": [], "dataType": "Number",
            }),
            Value::Object(mut o) => {
                if !o.contains_key("stringValue") && !o.contains_key("binaryValue") {
                    return Err(ApiError::InvalidParameter(format!(
                        "message attribute {k}: give stringValue or binaryValue"
                    )));
                }
                o.entry("stringListValues").or_insert(json!([]));
                o.entry("binaryListValues").or_insert(json!([]));
                o.entry("dataType").or_insert(json!("String"));
                Value::Object(o)
            }
            _ => {
                return Err(ApiError::InvalidParameter(format!(
                    "message attribute {k}: use a string or {{\"stringValue\":…,\"dataType\":…}}"
                )))
            }
        };
        out.insert(k, attr);
    }
    Ok(Value::Object(out))
}

fn new_message(e: SendEntry) -> Result<NewMessage, ApiError> {
    let body = match e.body {
        Some(Value::String(s)) => s,
        // A JSON body that is not a string is sent as its JSON text.
        Some(v) if !v.is_null() => v.to_string(),
        _ => return Err(ApiError::InvalidParameter("a message needs a body".into())),
    };
    Ok(NewMessage {
        body,
        attributes: normalize_attributes(e.attributes)?,
        delay_s: e.delay_seconds,
        trace: None,
        sender: None,
        group_id: e.group_id,
        dedup_id: e.deduplication_id,
    })
}

/// `POST /v1/queues/{q}/messages`: `{"body":…}` or `{"entries":[{"body":…},…]}` (≤ 10).
pub(crate) async fn send(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let bad =
        |e: serde_json::Error| ApiError::InvalidParameter(format!("invalid request body: {e}"));
    let input: Value = serde_json::from_slice(&body).map_err(bad)?;
    // `{"entries":[…]}` is a batch; anything else is one message (unknown fields refused).
    let batch = input.get("entries").is_some();
    let messages: Vec<NewMessage> = if batch {
        if input.as_object().is_some_and(|o| o.len() > 1) {
            return Err(ApiError::InvalidParameter(
                "a batch is {\"entries\":[…]} alone: put each message's fields in its entry".into(),
            ));
        }
        let entries: Vec<SendEntry> =
            serde_json::from_value(input["entries"].clone()).map_err(bad)?;
        entries
            .into_iter()
            .map(new_message)
            .collect::<Result<_, _>>()?
    } else {
        vec![new_message(serde_json::from_value(input).map_err(bad)?)?]
    };
    // Each message carries the request's trace context (SQS's `AWSTraceHeader`, with its
    // `tracestate`).
    let mut messages = messages;
    if let Some(cx) = crate::trace::incoming(&headers) {
        let stored = cx.stored_xray();
        messages
            .iter_mut()
            .for_each(|m| m.trace = Some(stored.clone()));
    }
    let sent = blocking(&gw, move |s| s.send(&name, &messages, now_ms())).await?;
    runner(&gw)?.messages_sent();
    let out: Vec<Value> = sent
        .iter()
        .map(|m| {
            let mut v = json!({ "id": m.id, "md5": m.md5 });
            if let Some(n) = &m.sequence_number {
                v["sequence_number"] = json!(n);
            }
            v
        })
        .collect();
    Ok(Json(if batch {
        json!({ "messages": out })
    } else {
        out.into_iter().next().unwrap_or(Value::Null)
    }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct ReceiveInput {
    max: Option<usize>,
    visibility_timeout: Option<u32>,
    /// Long polling: wait up to this long (0-20 s) for a message when none is visible.
    wait_seconds: Option<u32>,
}

/// `POST /v1/queues/{q}/receive` `{max, visibility_timeout}`
pub(crate) async fn receive(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let input: ReceiveInput = parse_body(&body)?;
    let max = input.max.unwrap_or(1);
    if !(1..=10).contains(&max) {
        return Err(ApiError::InvalidParameter("max must be 1-10".into()));
    }
    if input.visibility_timeout.is_some_and(|v| v > 43_200) {
        return Err(ApiError::InvalidParameter(
            "visibility_timeout must be 0-43200 seconds".into(),
        ));
    }
    let wait = input.wait_seconds.unwrap_or(0);
    if wait > 20 {
        return Err(ApiError::InvalidParameter(
            "wait_seconds must be 0-20".into(),
        ));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(u64::from(wait));
    let got = loop {
        let (n, vis) = (name.clone(), input.visibility_timeout);
        let got = blocking(&gw, move |s| s.receive(&n, max, vis, now_ms())).await?;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if !got.is_empty() || left.is_zero() {
            break got;
        }
        // Woken by any send; a delayed message becoming visible is caught within 1 s.
        runner(&gw)?
            .wait_for_sends(left.min(std::time::Duration::from_secs(1)))
            .await;
    };
    Ok(Json(
        json!({ "messages": got.iter().map(message_json).collect::<Vec<_>>() }),
    ))
}

/// `DELETE /v1/queues/{q}/messages/{receipt}`
pub(crate) async fn delete_message(
    State(gw): State<Arc<Gateway>>,
    Path((name, receipt)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    blocking(&gw, move |s| s.delete_message(&name, &receipt)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct VisibilityInput {
    visibility_timeout: u32,
}

/// `POST /v1/queues/{q}/messages/{receipt}/visibility` `{visibility_timeout}`
pub(crate) async fn change_visibility(
    State(gw): State<Arc<Gateway>>,
    Path((name, receipt)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let input: VisibilityInput = parse_body(&body)?;
    blocking(&gw, move |s| {
        s.change_visibility(&name, &receipt, input.visibility_timeout, now_ms())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------- Lambda event-source mapping API

const REPORT_FAILURES: &str = "ReportBatchItemFailures";

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct MappingInput {
    function_name: Option<String>,
    event_source_arn: Option<String>,
    batch_size: Option<i64>,
    enabled: Option<bool>,
    maximum_batching_window_in_seconds: Option<i64>,
    function_response_types: Option<Vec<String>>,
    filter_criteria: Option<Value>,
}

fn mapping_json(m: &EventSourceMapping, state: Option<&str>) -> Value {
    let (name, q) = split_function(&m.function);
    let mut v = json!({
        "UUID": m.uuid,
        "EventSourceArn": queue_arn(&m.queue),
        "FunctionArn": arn::function_arn(name, q),
        "BatchSize": m.batch_size,
        "MaximumBatchingWindowInSeconds": m.window_s,
        "State": state.unwrap_or(m.state()),
        "StateTransitionReason": "USER_INITIATED",
        "LastModified": m.last_modified_s,
        "LastProcessingResult": "No records processed",
        "FunctionResponseTypes": if m.report_batch_item_failures { vec![REPORT_FAILURES] } else { vec![] },
    });
    if !m.filters.is_empty() {
        let filters: Vec<Value> = m.filters.iter().map(|p| json!({ "Pattern": p })).collect();
        v["FilterCriteria"] = json!({ "Filters": filters });
    }
    v
}

/// `name` or `name:qualifier` as stored in a mapping.
fn split_function(f: &str) -> (&str, Option<&str>) {
    match f.split_once(':') {
        Some((n, q)) => (n, Some(q)),
        None => (f, None),
    }
}

/// Resolves `FunctionName` (name, ARN or partial ARN, with an optional qualifier) to the
/// stored form, checking that the function exists.
async fn mapping_function(gw: &Arc<Gateway>, function: &str) -> Result<String, ApiError> {
    let (name, q) = arn::parse_function_ref(function)?;
    let q = q.filter(|q| q != LATEST);
    gw.resolve(&name, q.as_deref()).await?;
    Ok(match q {
        Some(q) => format!("{name}:{q}"),
        None => name.to_string(),
    })
}

/// The patterns of `FilterCriteria` (`{"Filters":[{"Pattern":"<JSON text>"}]}`, at most 5),
/// each checked as an EventBridge event pattern. `{}` or `{"Filters":[]}` clears them.
pub(crate) fn filter_patterns(criteria: &Value) -> Result<Vec<String>, ApiError> {
    let bad = |m: String| ApiError::InvalidParameter(format!("FilterCriteria: {m}"));
    let filters = match criteria.get("Filters") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("Filters must be a list".into())),
    };
    if filters.len() > 5 {
        return Err(bad("at most 5 filters".into()));
    }
    filters
        .iter()
        .map(|f| {
            let p = f
                .get("Pattern")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("each filter needs a Pattern (JSON text)".into()))?;
            EventPattern::parse(p).map_err(|e| bad(e.to_string()))?;
            Ok(p.to_string())
        })
        .collect()
}

pub(crate) fn response_types(types: &[String]) -> Result<bool, ApiError> {
    for t in types {
        if t != REPORT_FAILURES {
            return Err(ApiError::InvalidParameter(format!(
                "unsupported FunctionResponseTypes value {t:?}: only {REPORT_FAILURES}"
            )));
        }
    }
    Ok(!types.is_empty())
}

fn in_range(v: Option<i64>, what: &str, lo: i64, hi: i64) -> Result<Option<u32>, ApiError> {
    match v {
        Some(n) if !(lo..=hi).contains(&n) => Err(ApiError::InvalidParameter(format!(
            "{what} must be {lo}-{hi}"
        ))),
        Some(n) => Ok(Some(n as u32)),
        None => Ok(None),
    }
}

fn accepted(v: Value) -> Response {
    (StatusCode::ACCEPTED, Json(v)).into_response()
}

/// `POST /2015-03-31/event-source-mappings` (CreateEventSourceMapping): 202.
pub(crate) async fn create_mapping(
    State(gw): State<Arc<Gateway>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if crate::sources::is_self_managed(&body) {
        return crate::sources::lambda_create(&gw, &body).await;
    }
    let input: MappingInput = parse_body(&body)?;
    let function = input
        .function_name
        .as_deref()
        .ok_or_else(|| ApiError::InvalidParameter("FunctionName is required".into()))?;
    let source = input.event_source_arn.as_deref().ok_or_else(|| {
        ApiError::InvalidParameter(
            "EventSourceArn is required: the ARN of a built-in queue (arn:aws:sqs:us-east-1:000000000000:NAME)".into(),
        )
    })?;
    let queue = queue_from_arn(source)
        .ok_or_else(|| {
            ApiError::InvalidParameter(format!(
                "EventSourceArn {source:?} is not a queue ARN: Nimbus maps its built-in queues (arn:aws:sqs:…:NAME)"
            ))
        })?
        .to_string();
    let filters = match &input.filter_criteria {
        Some(f) => filter_patterns(f)?,
        None => Vec::new(),
    };
    let function = mapping_function(&gw, function).await?;
    let m = EventSourceMapping {
        uuid: uuid::Uuid::new_v4().to_string(),
        queue,
        function,
        batch_size: in_range(input.batch_size, "BatchSize", 1, 10_000)?.unwrap_or(10),
        window_s: in_range(
            input.maximum_batching_window_in_seconds,
            "MaximumBatchingWindowInSeconds",
            0,
            300,
        )?
        .unwrap_or(0),
        enabled: input.enabled.unwrap_or(true),
        report_batch_item_failures: response_types(
            input.function_response_types.as_deref().unwrap_or_default(),
        )?,
        last_modified_s: now_ms() / 1000,
        filters,
    };
    let stored = m.clone();
    blocking(&gw, move |s| {
        s.get_queue(&stored.queue).map_err(|_| {
            StoreError::InvalidInput(format!(
                "the queue {} does not exist: create it first",
                stored.queue
            ))
        })?;
        if let Some(other) = s
            .list_mappings()?
            .into_iter()
            .find(|o| o.queue == stored.queue && o.function == stored.function)
        {
            return Err(StoreError::Conflict(format!(
                "an event source mapping from {} to {} already exists (UUID {})",
                queue_arn(&stored.queue),
                stored.function,
                other.uuid
            )));
        }
        s.create_mapping(&stored)
    })
    .await?;
    runner(&gw)?.mappings_changed();
    Ok(accepted(mapping_json(&m, Some("Creating"))))
}

/// `GET /2015-03-31/event-source-mappings/{UUID}`
pub(crate) async fn get_mapping(
    State(gw): State<Arc<Gateway>>,
    Path(uuid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if let Some(m) = crate::sources::find(&gw, &uuid).await? {
        return Ok(Json(crate::sources::lambda_json(&gw, &m, None)));
    }
    let m = blocking(&gw, move |s| s.get_mapping(&uuid)).await?;
    Ok(Json(mapping_json(&m, None)))
}

/// `PUT /2015-03-31/event-source-mappings/{UUID}` (UpdateEventSourceMapping): 202.
pub(crate) async fn update_mapping(
    State(gw): State<Arc<Gateway>>,
    Path(uuid): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(m) = crate::sources::find(&gw, &uuid).await? {
        return crate::sources::lambda_update(&gw, m, &body).await;
    }
    let input: MappingInput = parse_body(&body)?;
    if input.event_source_arn.is_some() {
        return Err(ApiError::InvalidParameter(
            "EventSourceArn cannot be changed: create a new mapping".into(),
        ));
    }
    let id = uuid.clone();
    let mut m = blocking(&gw, move |s| s.get_mapping(&id)).await?;
    if let Some(f) = input.function_name.as_deref() {
        m.function = mapping_function(&gw, f).await?;
    }
    if let Some(n) = in_range(input.batch_size, "BatchSize", 1, 10_000)? {
        m.batch_size = n;
    }
    if let Some(n) = in_range(
        input.maximum_batching_window_in_seconds,
        "MaximumBatchingWindowInSeconds",
        0,
        300,
    )? {
        m.window_s = n;
    }
    if let Some(e) = input.enabled {
        m.enabled = e;
    }
    if let Some(f) = &input.filter_criteria {
        m.filters = filter_patterns(f)?;
    }
    if let Some(t) = input.function_response_types.as_deref() {
        m.report_batch_item_failures = response_types(t)?;
    }
    m.last_modified_s = now_ms() / 1000;
    let stored = m.clone();
    blocking(&gw, move |s| s.update_mapping(&stored)).await?;
    runner(&gw)?.mappings_changed();
    Ok(accepted(mapping_json(&m, Some("Updating"))))
}

/// `DELETE /2015-03-31/event-source-mappings/{UUID}`: 202.
pub(crate) async fn delete_mapping(
    State(gw): State<Arc<Gateway>>,
    Path(uuid): Path<String>,
) -> Result<Response, ApiError> {
    if crate::sources::find(&gw, &uuid).await?.is_some() {
        return crate::sources::lambda_delete(&gw, &uuid).await;
    }
    let m = blocking(&gw, move |s| s.delete_mapping(&uuid)).await?;
    runner(&gw)?.mappings_changed();
    Ok(accepted(mapping_json(&m, Some("Deleting"))))
}

/// `GET /2015-03-31/event-source-mappings?FunctionName&EventSourceArn&Marker&MaxItems`
pub(crate) async fn list_mappings(
    State(gw): State<Arc<Gateway>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q: HashMap<String, String> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::InvalidParameter(format!("invalid query: {e}")))?;
    let function = match q.get("FunctionName") {
        Some(f) => {
            let (name, qual) = arn::parse_function_ref(f)?;
            Some(match qual.filter(|q| q != LATEST) {
                Some(qual) => format!("{name}:{qual}"),
                None => name.to_string(),
            })
        }
        None => None,
    };
    let queue = match q.get("EventSourceArn") {
        Some(a) => Some(
            queue_from_arn(a)
                .ok_or_else(|| ApiError::InvalidParameter(format!("invalid EventSourceArn {a:?}")))?
                .to_string(),
        ),
        None => None,
    };
    let start: usize = match q.get("Marker") {
        Some(m) => m
            .parse()
            .map_err(|_| ApiError::InvalidParameter("invalid Marker".into()))?,
        None => 0,
    };
    let max: usize = match q.get("MaxItems") {
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| ApiError::InvalidParameter("MaxItems must be 1-10000".into()))?,
        None => 100,
    };
    let mut all: Vec<Value> = blocking(&gw, |s| s.list_mappings())
        .await?
        .into_iter()
        .filter(|m| function.as_ref().is_none_or(|f| &m.function == f))
        .filter(|m| queue.as_ref().is_none_or(|qn| &m.queue == qn))
        .map(|m| mapping_json(&m, None))
        .collect();
    if queue.is_none() {
        // External sources have no EventSourceArn: listed unless one is asked for.
        all.extend(
            crate::sources::list(&gw)
                .await?
                .into_iter()
                .filter(|m| function.as_ref().is_none_or(|f| &m.function == f))
                .map(|m| crate::sources::lambda_json(&gw, &m, None)),
        );
    }
    let page: Vec<Value> = all.iter().skip(start).take(max).cloned().collect();
    let mut out = json!({ "EventSourceMappings": page });
    if start + max < all.len() {
        out["NextMarker"] = (start + max).to_string().into();
    }
    Ok(Json(out))
}
