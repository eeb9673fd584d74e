//! External targets (`/v1/targets`): a NATS subject, a RabbitMQ exchange, a Redis stream or
//! an MQTT topic that async destinations and bus rules publish to, by the ARN
//! `arn:nimbus:targets:us-east-1:000000000000:target/NAME`.

use crate::error::ApiError;
use crate::state::Gateway;
use axum::extract::{Path, State};
use axum::Json;
use bytes::Bytes;
use nimbus_sources::targets::{Target, TargetRunner};
use nimbus_sources::Kind;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

fn runner(gw: &Gateway) -> Result<&Arc<TargetRunner>, ApiError> {
    gw.targets
        .get()
        .ok_or_else(|| ApiError::ServiceUnavailable("external targets are not enabled".into()))
}

async fn call<T: Send + 'static>(
    gw: &Gateway,
    f: impl FnOnce(&dyn nimbus_sources::targets::TargetStore) -> nimbus_sources::Result<T>
        + Send
        + 'static,
) -> Result<T, ApiError> {
    let store = runner(gw)?.store().clone();
    Ok(tokio::task::spawn_blocking(move || f(store.as_ref())).await??)
}

async fn view(gw: &Gateway, t: &Target) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    v["arn"] = json!(t.arn());
    if let Ok(r) = runner(gw) {
        v["status"] = json!(r.status(&t.name));
    }
    let name = t.name.clone();
    if let Ok(depth) = call(gw, move |s| s.depth(&name)).await {
        v["waiting"] = json!(depth);
    }
    v
}

/// `GET /v1/targets`
pub(crate) async fn list(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let all = call(&gw, |s| s.list_targets()).await?;
    let mut out = Vec::new();
    for t in &all {
        out.push(view(&gw, t).await);
    }
    Ok(Json(json!({ "targets": out })))
}

/// `GET /v1/targets/{name}`
pub(crate) async fn get(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let n = name.clone();
    let t = call(&gw, move |s| s.get_target(&n))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no target {name}")))?;
    Ok(Json(view(&gw, &t).await))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    #[serde(rename = "type")]
    kind: String,
    endpoints: Vec<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    options: BTreeMap<String, String>,
}

/// `PUT /v1/targets/{name}`: creates or replaces a target.
pub(crate) async fn put(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let input: Input = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidRequestContent(format!("invalid target: {e}")))?;
    let kind = Kind::parse(&input.kind).ok_or_else(|| {
        ApiError::InvalidParameter(format!(
            "unknown target type {:?}: nats, nats-core, rabbitmq, redis or mqtt",
            input.kind
        ))
    })?;
    let t = Target {
        name,
        kind,
        endpoints: input.endpoints,
        secret: input.secret,
        options: input.options,
        last_modified_s: crate::history::now_ms() / 1000,
    };
    t.validate()?;
    if let Some(secret) = &t.secret {
        crate::sources::check_secret(&gw, secret).await?;
    }
    let stored = t.clone();
    call(&gw, move |s| s.put_target(&stored)).await?;
    runner(&gw)?.targets_changed();
    Ok(Json(view(&gw, &t).await))
}

/// `DELETE /v1/targets/{name}`: the target and its undelivered messages.
pub(crate) async fn delete(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let n = name.clone();
    let dropped = call(&gw, move |s| s.delete_target(&n))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no target {name}")))?;
    runner(&gw)?.targets_changed();
    Ok(Json(
        json!({ "deleted": name, "undelivered_dropped": dropped }),
    ))
}
