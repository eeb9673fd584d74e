//! External event sources (PostgreSQL changes, NATS, RabbitMQ, Redis Streams, MQTT):
//! the native API (`/v1/sources`) and the self-managed half of Lambda's event-source
//! mapping API, which [`crate::queues`] hands over when a request names
//! `SelfManagedEventSource` (or a UUID it does not know).
//!
//! Lambda's shape for self-managed sources (as for self-managed Kafka and Amazon MQ):
//! `SelfManagedEventSource.Endpoints` keyed by the kind (`NATS_SERVERS`,
//! `RABBITMQ_BROKERS`, `REDIS_SERVERS`, `MQTT_BROKERS`, `POSTGRES_SERVERS`,
//! `NATS_CORE_SERVERS`), `Topics` (subjects, streams, topic filters, tables) or `Queues`
//! (RabbitMQ), `SourceAccessConfigurations` (`BASIC_AUTH` naming a Nimbus secret,
//! `VIRTUAL_HOST`, and Nimbus's `OPTION` with `key=value`),
//! `SelfManagedKafkaEventSourceConfig.ConsumerGroupId` for the durable name.

use crate::error::ApiError;
use crate::state::Gateway;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use nimbus_core::arn;
use nimbus_sources::{
    Kind, OnFailure, SourceError, SourceMapping, SourceRunner, SourceSpec, StartingPosition,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) fn runner(gw: &Gateway) -> Result<&Arc<SourceRunner>, ApiError> {
    gw.sources.get().ok_or_else(|| {
        ApiError::ServiceUnavailable("external event sources are not enabled".into())
    })
}

impl From<SourceError> for ApiError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Config(m) => ApiError::InvalidParameter(m),
            SourceError::Store(m) => ApiError::Internal(m),
            other => ApiError::ServiceUnavailable(other.to_string()),
        }
    }
}

async fn store_call<T: Send + 'static>(
    gw: &Gateway,
    f: impl FnOnce(&dyn nimbus_sources::SourceStore) -> nimbus_sources::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let store = runner(gw)?.store().clone();
    Ok(tokio::task::spawn_blocking(move || f(store.as_ref())).await??)
}

/// The mapping `uuid`, if it is a source mapping.
pub(crate) async fn find(gw: &Gateway, uuid: &str) -> Result<Option<SourceMapping>, ApiError> {
    if gw.sources.get().is_none() {
        return Ok(None);
    }
    let id = uuid.to_string();
    store_call(gw, move |s| s.get(&id)).await
}

/// All source mappings.
pub(crate) async fn list(gw: &Gateway) -> Result<Vec<SourceMapping>, ApiError> {
    if gw.sources.get().is_none() {
        return Ok(Vec::new());
    }
    store_call(gw, |s| s.list()).await
}

/// Checks that `function` exists and returns its stored form (`NAME[:QUALIFIER]`).
async fn function_ref(gw: &Arc<Gateway>, function: &str) -> Result<String, ApiError> {
    let (name, q) = arn::parse_function_ref(function)?;
    let q = q.filter(|q| q != nimbus_core::LATEST);
    gw.resolve(&name, q.as_deref()).await?;
    Ok(match q {
        Some(q) => format!("{name}:{q}"),
        None => name.to_string(),
    })
}

/// Checks a mapping and that its secret exists (the value is never read here).
async fn check(gw: &Arc<Gateway>, m: &SourceMapping) -> Result<(), ApiError> {
    m.validate()?;
    for f in &m.filters {
        nimbus_events::pattern::EventPattern::parse(f)
            .map_err(|e| ApiError::InvalidParameter(format!("FilterCriteria: {e}")))?;
    }
    if let Some(name) = &m.source.secret {
        check_secret(gw, name).await?;
    }
    Ok(())
}

/// Checks that the secret `name` exists (its value is never read here).
pub(crate) async fn check_secret(gw: &Gateway, name: &str) -> Result<(), ApiError> {
    let secrets = gw
        .secrets
        .get()
        .ok_or_else(|| ApiError::ServiceUnavailable("secrets are not enabled".into()))?;
    let (store, n) = (secrets.store.clone(), name.to_string());
    let exists = tokio::task::spawn_blocking(move || store.get(&n)).await??;
    if exists.is_none() {
        return Err(ApiError::InvalidParameter(format!(
            "the secret {name:?} does not exist: create it with `nimbus secret set {name}` (JSON {{\"username\": …, \"password\": …}})"
        )));
    }
    Ok(())
}

async fn create(gw: &Arc<Gateway>, mut m: SourceMapping) -> Result<SourceMapping, ApiError> {
    m.function = function_ref(gw, &m.function).await?;
    check(gw, &m).await?;
    m.last_modified_s = crate::history::now_ms() / 1000;
    let stored = m.clone();
    store_call(gw, move |s| {
        if let Some(other) = s.list()?.into_iter().find(|o| {
            o.function == stored.function
                && o.source.kind == stored.source.kind
                && o.source.endpoints == stored.source.endpoints
                && o.source.topics == stored.source.topics
        }) {
            return Err(SourceError::Config(format!(
                "a mapping from these {} {:?} to {} exists (UUID {})",
                stored.source.kind, stored.source.topics, stored.function, other.uuid
            )));
        }
        s.create(&stored)
    })
    .await
    .map_err(|e| match e {
        ApiError::InvalidParameter(m) if m.contains("exists (UUID") => ApiError::Conflict(m),
        e => e,
    })?;
    runner(gw)?.mappings_changed();
    Ok(m)
}

async fn replace(gw: &Arc<Gateway>, m: &SourceMapping) -> Result<(), ApiError> {
    check(gw, m).await?;
    let stored = m.clone();
    let found = store_call(gw, move |s| s.update(&stored)).await?;
    if !found {
        return Err(ApiError::NotFound(format!(
            "no event source mapping {}",
            m.uuid
        )));
    }
    runner(gw)?.mappings_changed();
    Ok(())
}

async fn remove(gw: &Arc<Gateway>, uuid: &str) -> Result<SourceMapping, ApiError> {
    runner(gw)?
        .delete(uuid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no event source mapping {uuid}")))
}

// ------------------------------------------------------------------- native API

/// The body of `POST /v1/sources` and `PUT /v1/sources/{uuid}`: a mapping's fields, with
/// Lambda's defaults for what is left out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NativeInput {
    function: String,
    #[serde(rename = "type")]
    kind: String,
    endpoints: Vec<String>,
    topics: Vec<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    options: BTreeMap<String, String>,
    #[serde(default)]
    starting_position: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    batch_size: Option<u32>,
    #[serde(default)]
    batching_window_s: Option<u32>,
    #[serde(default)]
    filters: Vec<Value>,
    #[serde(default)]
    report_batch_item_failures: bool,
    #[serde(default)]
    maximum_retry_attempts: Option<i32>,
    #[serde(default)]
    maximum_record_age_s: Option<i32>,
    #[serde(default)]
    bisect_batch_on_function_error: bool,
    #[serde(default)]
    on_failure: Option<String>,
    #[serde(default)]
    maximum_concurrency: Option<u32>,
    #[serde(default)]
    tag: Option<String>,
}

fn starting_position(s: Option<&str>) -> Result<StartingPosition, ApiError> {
    match s {
        None | Some("LATEST") => Ok(StartingPosition::Latest),
        Some("TRIM_HORIZON") => Ok(StartingPosition::TrimHorizon),
        Some(other) => Err(ApiError::InvalidParameter(format!(
            "StartingPosition {other:?}: LATEST or TRIM_HORIZON"
        ))),
    }
}

fn kind(s: &str) -> Result<Kind, ApiError> {
    Kind::parse(s).ok_or_else(|| {
        let all: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        ApiError::InvalidParameter(format!("unknown source type {s:?}: one of {all:?}"))
    })
}

/// A filter as JSON text: a pattern given as an object is serialised.
fn filter_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl NativeInput {
    fn into_mapping(self, uuid: String) -> Result<SourceMapping, ApiError> {
        let spec = SourceSpec {
            kind: kind(&self.kind)?,
            endpoints: self.endpoints,
            topics: self.topics,
            group: self.group,
            secret: self.secret,
            options: self.options,
            starting_position: starting_position(self.starting_position.as_deref())?,
        };
        let mut m = SourceMapping::new(uuid, self.function, spec);
        if let Some(e) = self.enabled {
            m.enabled = e;
        }
        if let Some(n) = self.batch_size {
            m.batch_size = n;
        }
        if let Some(n) = self.batching_window_s {
            m.window_s = n;
        }
        m.filters = self.filters.iter().map(filter_text).collect();
        m.report_batch_item_failures = self.report_batch_item_failures;
        if let Some(n) = self.maximum_retry_attempts {
            m.maximum_retry_attempts = n;
        }
        if let Some(n) = self.maximum_record_age_s {
            m.maximum_record_age_s = n;
        }
        m.bisect_batch_on_function_error = self.bisect_batch_on_function_error;
        m.on_failure = self.on_failure.map(|destination| OnFailure { destination });
        if let Some(n) = self.maximum_concurrency {
            m.maximum_concurrency = n;
        }
        m.tag = self.tag;
        Ok(m)
    }
}

fn native_json(gw: &Gateway, m: &SourceMapping) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or_default();
    // The durable name in effect (derived from the id when none was given).
    v["source"]["group"] = json!(m.source.group_or_default(&m.uuid));
    if let Ok(r) = runner(gw) {
        let st = r.status(m);
        v["status"] = json!(st);
        v["status"]["last_processing_result"] = json!(st.last_processing_result());
    }
    v
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidRequestContent(format!("invalid source mapping: {e}")))
}

/// `GET /v1/sources`: every source mapping with its state.
pub(crate) async fn native_list(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    runner(&gw)?;
    let all = list(&gw).await?;
    let items: Vec<Value> = all.iter().map(|m| native_json(&gw, m)).collect();
    Ok(Json(json!({ "sources": items })))
}

/// `POST /v1/sources`: 201 with the mapping.
pub(crate) async fn native_create(
    State(gw): State<Arc<Gateway>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: NativeInput = parse(&body)?;
    let m = create(&gw, input.into_mapping(uuid::Uuid::new_v4().to_string())?).await?;
    Ok((StatusCode::CREATED, Json(native_json(&gw, &m))).into_response())
}

/// `GET /v1/sources/{uuid}`
pub(crate) async fn native_get(
    State(gw): State<Arc<Gateway>>,
    Path(uuid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    runner(&gw)?;
    let m = find(&gw, &uuid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no source mapping {uuid}")))?;
    Ok(Json(native_json(&gw, &m)))
}

/// `PUT /v1/sources/{uuid}`: replaces the mapping's settings (the id stays).
pub(crate) async fn native_put(
    State(gw): State<Arc<Gateway>>,
    Path(uuid): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let input: NativeInput = parse(&body)?;
    let mut m = input.into_mapping(uuid.clone())?;
    m.function = function_ref(&gw, &m.function).await?;
    m.last_modified_s = crate::history::now_ms() / 1000;
    replace(&gw, &m).await?;
    Ok(Json(native_json(&gw, &m)))
}

/// `PATCH /v1/sources/{uuid}` with `{"enabled": bool}`.
pub(crate) async fn native_patch(
    State(gw): State<Arc<Gateway>>,
    Path(uuid): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Patch {
        enabled: bool,
    }
    let p: Patch = parse(&body)?;
    let mut m = find(&gw, &uuid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no source mapping {uuid}")))?;
    m.enabled = p.enabled;
    m.last_modified_s = crate::history::now_ms() / 1000;
    replace(&gw, &m).await?;
    Ok(Json(native_json(&gw, &m)))
}

/// `DELETE /v1/sources/{uuid}`: 200 with the deleted mapping.
pub(crate) async fn native_delete(
    State(gw): State<Arc<Gateway>>,
    Path(uuid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let m = remove(&gw, &uuid).await?;
    Ok(Json(serde_json::to_value(&m).unwrap_or_default()))
}

// ------------------------------------------------------------- Lambda's shape

/// The self-managed fields of Create/UpdateEventSourceMapping (the rest is shared with
/// the queue mappings' input and re-read here).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct LambdaInput {
    function_name: Option<String>,
    event_source_arn: Option<String>,
    self_managed_event_source: Option<SelfManaged>,
    topics: Option<Vec<String>>,
    queues: Option<Vec<String>>,
    source_access_configurations: Option<Vec<AccessConfig>>,
    self_managed_kafka_event_source_config: Option<ConsumerGroup>,
    starting_position: Option<String>,
    batch_size: Option<i64>,
    enabled: Option<bool>,
    maximum_batching_window_in_seconds: Option<i64>,
    function_response_types: Option<Vec<String>>,
    filter_criteria: Option<Value>,
    maximum_retry_attempts: Option<i64>,
    maximum_record_age_in_seconds: Option<i64>,
    bisect_batch_on_function_error: Option<bool>,
    destination_config: Option<Value>,
    scaling_config: Option<Value>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
struct SelfManaged {
    endpoints: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "PascalCase")]
struct AccessConfig {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "URI")]
    uri: String,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
struct ConsumerGroup {
    consumer_group_id: Option<String>,
}

/// Whether a Create request is for an external source.
pub(crate) fn is_self_managed(body: &Bytes) -> bool {
    serde_json::from_slice::<Value>(body)
        .map(|v| v.get("SelfManagedEventSource").is_some())
        .unwrap_or(false)
}

/// The name of a secret from `BASIC_AUTH`'s URI: a Nimbus secret name, or a Secrets
/// Manager-style ARN whose last part is the name.
fn secret_name(uri: &str) -> String {
    match uri.strip_prefix("arn:") {
        Some(rest) => rest
            .rsplit(':')
            .next()
            .unwrap_or(rest)
            .trim_start_matches("secret/")
            .to_string(),
        None => uri.to_string(),
    }
}

fn int(v: Option<i64>, what: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    match v {
        Some(n) if !(lo..=hi).contains(&n) => Err(ApiError::InvalidParameter(format!(
            "{what} must be {lo}-{hi}"
        ))),
        other => Ok(other),
    }
}

/// Applies the Lambda settings of `input` to `m` (creation and update).
fn apply_settings(m: &mut SourceMapping, input: &LambdaInput) -> Result<(), ApiError> {
    if let Some(n) = int(input.batch_size, "BatchSize", 1, 10_000)? {
        m.batch_size = n as u32;
    }
    if let Some(n) = int(
        input.maximum_batching_window_in_seconds,
        "MaximumBatchingWindowInSeconds",
        0,
        300,
    )? {
        m.window_s = n as u32;
    }
    if let Some(e) = input.enabled {
        m.enabled = e;
    }
    if let Some(f) = &input.filter_criteria {
        m.filters = crate::queues::filter_patterns(f)?;
    }
    if let Some(t) = &input.function_response_types {
        m.report_batch_item_failures = crate::queues::response_types(t)?;
    }
    if let Some(n) = int(
        input.maximum_retry_attempts,
        "MaximumRetryAttempts",
        -1,
        10_000,
    )? {
        m.maximum_retry_attempts = n as i32;
    }
    if let Some(n) = input.maximum_record_age_in_seconds {
        m.maximum_record_age_s = i32::try_from(n).unwrap_or(i32::MAX);
    }
    if let Some(b) = input.bisect_batch_on_function_error {
        m.bisect_batch_on_function_error = b;
    }
    if let Some(d) = &input.destination_config {
        m.on_failure = d
            .pointer("/OnFailure/Destination")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| OnFailure {
                destination: s.to_string(),
            });
    }
    if let Some(s) = &input.scaling_config {
        if let Some(n) = s.get("MaximumConcurrency").and_then(Value::as_i64) {
            m.maximum_concurrency =
                int(Some(n), "ScalingConfig.MaximumConcurrency", 1, 1000)?.unwrap_or(n) as u32;
        }
    }
    Ok(())
}

/// `CreateEventSourceMapping` with `SelfManagedEventSource`: 202.
pub(crate) async fn lambda_create(gw: &Arc<Gateway>, body: &Bytes) -> Result<Response, ApiError> {
    runner(gw)?;
    let input: LambdaInput = crate::queues::parse_body(body)?;
    let function = input
        .function_name
        .clone()
        .ok_or_else(|| ApiError::InvalidParameter("FunctionName is required".into()))?;
    if input.event_source_arn.is_some() {
        return Err(ApiError::InvalidParameter(
            "give either EventSourceArn (a built-in queue) or SelfManagedEventSource, not both"
                .into(),
        ));
    }
    let endpoints = input
        .self_managed_event_source
        .clone()
        .unwrap_or_default()
        .endpoints;
    let (key, urls) = match endpoints.into_iter().collect::<Vec<_>>().as_slice() {
        [(k, v)] => (k.clone(), v.clone()),
        _ => {
            return Err(ApiError::InvalidParameter(
                "SelfManagedEventSource.Endpoints needs exactly one key: NATS_SERVERS, NATS_CORE_SERVERS, RABBITMQ_BROKERS, REDIS_SERVERS, MQTT_BROKERS or POSTGRES_SERVERS".into(),
            ))
        }
    };
    let kind = Kind::from_endpoints_key(&key).ok_or_else(|| {
        ApiError::InvalidParameter(format!(
            "unsupported SelfManagedEventSource endpoint type {key:?}: NATS_SERVERS, NATS_CORE_SERVERS, RABBITMQ_BROKERS, REDIS_SERVERS, MQTT_BROKERS or POSTGRES_SERVERS"
        ))
    })?;
    let topics = match kind {
        Kind::Rabbitmq => input.queues.clone().unwrap_or_default(),
        _ => input.topics.clone().unwrap_or_default(),
    };
    let mut options = BTreeMap::new();
    let mut secret = None;
    for c in input.source_access_configurations.iter().flatten() {
        match c.kind.as_str() {
            "BASIC_AUTH" | "SASL_SCRAM_256_AUTH" | "SASL_SCRAM_512_AUTH" => {
                secret = Some(secret_name(&c.uri))
            }
            "VIRTUAL_HOST" => {
                options.insert("vhost".to_string(), c.uri.clone());
            }
            "OPTION" => {
                let (k, v) = c.uri.split_once('=').ok_or_else(|| {
                    ApiError::InvalidParameter(format!(
                        "SourceAccessConfigurations OPTION {:?}: write key=value",
                        c.uri
                    ))
                })?;
                options.insert(k.trim().to_string(), v.trim().to_string());
            }
            other => {
                return Err(ApiError::InvalidParameter(format!(
                    "unsupported SourceAccessConfigurations Type {other:?}: BASIC_AUTH, VIRTUAL_HOST or OPTION"
                )))
            }
        }
    }
    let spec = SourceSpec {
        kind,
        endpoints: urls,
        topics,
        group: input
            .self_managed_kafka_event_source_config
            .as_ref()
            .and_then(|c| c.consumer_group_id.clone()),
        secret,
        options,
        starting_position: starting_position(input.starting_position.as_deref())?,
    };
    let mut m = SourceMapping::new(uuid::Uuid::new_v4().to_string(), function, spec);
    apply_settings(&mut m, &input)?;
    let m = create(gw, m).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(lambda_json(gw, &m, Some("Creating"))),
    )
        .into_response())
}

/// `UpdateEventSourceMapping` of a source mapping: 202.
pub(crate) async fn lambda_update(
    gw: &Arc<Gateway>,
    mut m: SourceMapping,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let input: LambdaInput = crate::queues::parse_body(body)?;
    if input.self_managed_event_source.is_some()
        || input.topics.is_some()
        || input.queues.is_some()
        || input.starting_position.is_some()
    {
        return Err(ApiError::InvalidParameter(
            "the source of a mapping cannot be changed: create a new mapping".into(),
        ));
    }
    if let Some(f) = &input.function_name {
        m.function = function_ref(gw, f).await?;
    }
    apply_settings(&mut m, &input)?;
    m.last_modified_s = crate::history::now_ms() / 1000;
    replace(gw, &m).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(lambda_json(gw, &m, Some("Updating"))),
    )
        .into_response())
}

/// `DeleteEventSourceMapping` of a source mapping: 202.
pub(crate) async fn lambda_delete(gw: &Arc<Gateway>, uuid: &str) -> Result<Response, ApiError> {
    let m = remove(gw, uuid).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(lambda_json(gw, &m, Some("Deleting"))),
    )
        .into_response())
}

/// A source mapping as Lambda describes a self-managed one.
pub(crate) fn lambda_json(gw: &Gateway, m: &SourceMapping, state: Option<&str>) -> Value {
    let (name, q) = match m.function.split_once(':') {
        Some((n, q)) => (n, Some(q)),
        None => (m.function.as_str(), None),
    };
    let status = runner(gw).ok().map(|r| r.status(m));
    let mut access: Vec<Value> = Vec::new();
    if let Some(s) = &m.source.secret {
        access.push(json!({"Type": "BASIC_AUTH", "URI": s}));
    }
    for (k, v) in &m.source.options {
        if k == "vhost" {
            access.push(json!({"Type": "VIRTUAL_HOST", "URI": v}));
        } else {
            access.push(json!({"Type": "OPTION", "URI": format!("{k}={v}")}));
        }
    }
    let mut v = json!({
        "UUID": m.uuid,
        "FunctionArn": arn::function_arn(name, q),
        "SelfManagedEventSource": {"Endpoints": {m.source.kind.endpoints_key(): m.source.endpoints}},
        "SourceAccessConfigurations": access,
        "StartingPosition": match m.source.starting_position {
            StartingPosition::Latest => "LATEST",
            StartingPosition::TrimHorizon => "TRIM_HORIZON",
        },
        "BatchSize": m.batch_size,
        "MaximumBatchingWindowInSeconds": m.window_s,
        "MaximumRetryAttempts": m.maximum_retry_attempts,
        "MaximumRecordAgeInSeconds": m.maximum_record_age_s,
        "BisectBatchOnFunctionError": m.bisect_batch_on_function_error,
        "ScalingConfig": {"MaximumConcurrency": m.maximum_concurrency},
        "DestinationConfig": {"OnFailure": m.on_failure.as_ref().map(|d| json!({"Destination": d.destination})).unwrap_or(json!({}))},
        "State": state.unwrap_or(m.state()),
        "StateTransitionReason": "USER_INITIATED",
        "LastModified": m.last_modified_s,
        "LastProcessingResult": status.as_ref().map(|s| s.last_processing_result()).unwrap_or_else(|| "No records processed".into()),
        "FunctionResponseTypes": if m.report_batch_item_failures { vec!["ReportBatchItemFailures"] } else { vec![] },
        "SelfManagedKafkaEventSourceConfig": {"ConsumerGroupId": m.source.group_or_default(&m.uuid)},
    });
    if m.source.kind == Kind::Rabbitmq {
        v["Queues"] = json!(m.source.topics);
    } else {
        v["Topics"] = json!(m.source.topics);
    }
    if !m.filters.is_empty() {
        let filters: Vec<Value> = m.filters.iter().map(|p| json!({ "Pattern": p })).collect();
        v["FilterCriteria"] = json!({ "Filters": filters });
    }
    v
}
