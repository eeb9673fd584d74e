//! `[[functions.NAME.sources]]`: external event sources (PostgreSQL changes, NATS,
//! RabbitMQ, Redis Streams, MQTT) that invoke the function.
//!
//! ```toml
//! [[functions.ingest.sources]]
//! type = "nats"                          # postgres, nats, nats-core, rabbitmq, redis, mqtt
//! endpoint = "nats://127.0.0.1:4222"     # or endpoints = [...]; never a password
//! topic = "orders.>"                     # or topics = [...]: subjects, queue, streams,
//!                                        # topic filters or tables
//! secret = "nats-creds"                  # optional: {"username": …, "password": …}
//! batch_size = 100                       # Lambda's settings, all optional
//! batching_window = 1                    # seconds
//! starting_position = "TRIM_HORIZON"
//! filters = ['{"subject": [{"prefix": "orders.eu"}]}']
//! report_batch_item_failures = true
//! maximum_retry_attempts = 3
//! maximum_record_age = 3600
//! bisect_batch_on_function_error = true
//! on_failure = "arn:aws:sqs:us-east-1:000000000000:orders-dlq"
//! maximum_concurrency = 4
//! id = "orders"                          # optional; default: the entry's position
//! options = { stream = "ORDERS" }        # per kind, see docs/sources.md
//! ```
//!
//! `nimbus deploy` and `nimbus up` create or update the mappings over `/v1/sources`,
//! tagged `manifest:FUNCTION:ID` ([`managed_tag`]), and delete a manifest function's
//! tagged mappings its manifest no longer declares; mappings made through the API are left
//! alone. The kind-specific checks happen on the server, which says what is wrong.

use crate::CoreError;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    #[serde(rename = "type")]
    kind: String,
    endpoint: Option<String>,
    #[serde(default)]
    endpoints: Vec<String>,
    topic: Option<String>,
    #[serde(default)]
    topics: Vec<String>,
    group: Option<String>,
    secret: Option<String>,
    #[serde(default)]
    options: BTreeMap<String, String>,
    starting_position: Option<String>,
    enabled: Option<bool>,
    batch_size: Option<u32>,
    batching_window: Option<u32>,
    #[serde(default)]
    filters: Vec<String>,
    #[serde(default)]
    report_batch_item_failures: bool,
    maximum_retry_attempts: Option<i32>,
    maximum_record_age: Option<i32>,
    #[serde(default)]
    bisect_batch_on_function_error: bool,
    on_failure: Option<String>,
    maximum_concurrency: Option<u32>,
    id: Option<String>,
}

/// One source mapping of a function, from its `[[functions.NAME.sources]]` entries.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestSource {
    /// The function invoked.
    pub function: String,
    /// The entry's id within the function (`id`, or its 1-based position).
    pub id: String,
    /// The body of `POST /v1/sources` (the function with its alias, the tag included).
    pub body: Value,
}

/// The tag of `function`'s manifest-managed mapping `id`.
pub fn managed_tag(function: &str, id: &str) -> String {
    format!("manifest:{function}:{id}")
}

/// Validates a function's entries.
pub(super) fn parse_sources(
    function: &str,
    qualifier: Option<&str>,
    raw: Vec<RawSource>,
) -> Result<Vec<ManifestSource>, CoreError> {
    let mut out: Vec<ManifestSource> = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        let ctx = |m: String| {
            CoreError::InvalidManifest(format!("functions.{function}.sources[{}]: {m}", i + 1))
        };
        let mut endpoints = s.endpoints;
        endpoints.extend(s.endpoint);
        if endpoints.is_empty() {
            return Err(ctx(format!(
                "a {} source needs endpoint = \"URL\" (or endpoints = [...])",
                s.kind
            )));
        }
        let mut topics = s.topics;
        topics.extend(s.topic);
        if topics.is_empty() {
            return Err(ctx(
                "name what to consume: topic = \"…\" or topics = [...] (subjects, a queue, streams, topic filters or tables)".into(),
            ));
        }
        let id = s.id.unwrap_or_else(|| (i + 1).to_string());
        if !super::s3::valid_trigger_id(&id) {
            return Err(ctx(format!("id {id:?}: 1-64 letters, digits, '-' or '_'")));
        }
        if out.iter().any(|o| o.id == id) {
            return Err(ctx(format!("two sources have the id {id:?}")));
        }
        for f in &s.filters {
            serde_json::from_str::<Value>(f)
                .map_err(|e| ctx(format!("filter {f:?} is not JSON: {e}")))?;
        }
        let target = match qualifier {
            Some(q) => format!("{function}:{q}"),
            None => function.to_string(),
        };
        let mut body = json!({
            "function": target,
            "type": s.kind,
            "endpoints": endpoints,
            "topics": topics,
            "options": s.options,
            "filters": s.filters,
            "report_batch_item_failures": s.report_batch_item_failures,
            "bisect_batch_on_function_error": s.bisect_batch_on_function_error,
            "tag": managed_tag(function, &id),
        });
        let optional = [
            ("group", s.group.map(Value::from)),
            ("secret", s.secret.map(Value::from)),
            ("starting_position", s.starting_position.map(Value::from)),
            ("enabled", s.enabled.map(Value::from)),
            ("batch_size", s.batch_size.map(Value::from)),
            ("batching_window_s", s.batching_window.map(Value::from)),
            (
                "maximum_retry_attempts",
                s.maximum_retry_attempts.map(Value::from),
            ),
            (
                "maximum_record_age_s",
                s.maximum_record_age.map(Value::from),
            ),
            ("on_failure", s.on_failure.map(Value::from)),
            (
                "maximum_concurrency",
                s.maximum_concurrency.map(Value::from),
            ),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                body[k] = v;
            }
        }
        out.push(ManifestSource {
            function: function.to_string(),
            id,
            body,
        });
    }
    Ok(out)
}

/// `[targets.NAME]`: a place on a broker that destinations and bus rules publish to.
///
/// ```toml
/// [targets.orders-validated]
/// type = "nats"                       # nats, nats-core, rabbitmq, redis, mqtt
/// endpoint = "nats://127.0.0.1:4222"
/// secret = "nats-creds"               # optional
/// options = { subject = "orders.validated" }
/// ```
///
/// Destinations and rule targets name it by its ARN,
/// `arn:nimbus:targets:us-east-1:000000000000:target/orders-validated`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    #[serde(rename = "type")]
    kind: String,
    endpoint: Option<String>,
    #[serde(default)]
    endpoints: Vec<String>,
    secret: Option<String>,
    #[serde(default)]
    options: BTreeMap<String, String>,
}

/// A target of the manifest: its name and the body of `PUT /v1/targets/NAME`.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestTarget {
    pub name: String,
    pub body: Value,
}

pub(super) fn parse_targets(
    raw: BTreeMap<String, RawTarget>,
) -> Result<Vec<ManifestTarget>, CoreError> {
    raw.into_iter()
        .map(|(name, t)| {
            if !crate::arn::is_target_name(&name) {
                return Err(CoreError::InvalidManifest(format!(
                    "targets.{name}: a target name is 1-64 letters, digits, '-' or '_'"
                )));
            }
            let mut endpoints = t.endpoints;
            endpoints.extend(t.endpoint);
            if endpoints.is_empty() {
                return Err(CoreError::InvalidManifest(format!(
                    "targets.{name}: needs endpoint = \"URL\""
                )));
            }
            let mut body = json!({"type": t.kind, "endpoints": endpoints, "options": t.options});
            if let Some(s) = t.secret {
                body["secret"] = s.into();
            }
            Ok(ManifestTarget { name, body })
        })
        .collect()
}
