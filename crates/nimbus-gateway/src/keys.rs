//! The access keys API (`/v1/keys`, action `nimbus:Admin`): create (the only response that
//! ever holds a key's secret), list (ids, names, policies, times) and delete.

use crate::{ApiError, Auth, Gateway};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nimbus_auth::Policy;
use serde_json::{json, Value};
use std::sync::Arc;

fn auth(gw: &Gateway) -> Result<Arc<Auth>, ApiError> {
    gw.auth
        .get()
        .cloned()
        .ok_or_else(|| ApiError::ServiceUnavailable("this server has no key store".into()))
}

/// Milliseconds since the epoch as RFC 3339 (UTC).
pub(crate) fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A policy given as a JSON document, as the text of one, or as `"admin"`.
pub(crate) fn policy_from(v: &Value) -> Result<Policy, ApiError> {
    match v {
        Value::String(s) if s == "admin" => Ok(Policy::admin()),
        Value::String(s) => Ok(Policy::parse(s)?),
        Value::Object(_) => Ok(Policy::parse(&v.to_string())?),
        _ => Err(ApiError::InvalidParameter(
            "policy is a policy document ({\"Statement\": [...]}) or \"admin\"".into(),
        )),
    }
}

/// `POST /v1/keys` with `{"name": "ci", "policy": {…} | "admin"}` → 201 with the secret.
pub(crate) async fn create_key(
    State(gw): State<Arc<Gateway>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v: Value = serde_json::from_slice(&body).map_err(|_| {
        ApiError::InvalidRequestContent(
            "the body is {\"name\": \"NAME\", \"policy\": {\"Statement\": [...]} or \"admin\"}"
                .into(),
        )
    })?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::InvalidParameter("name is required".into()))?
        .to_string();
    let policy = policy_from(v.get("policy").unwrap_or(&Value::Null))?;
    let auth = auth(&gw)?;
    let p = policy.clone();
    let n = name.clone();
    let key = tokio::task::spawn_blocking(move || auth.create_key(&n, &p)).await??;
    tracing::info!(access_key = %key.id, name = %key.name, "access key created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "AccessKeyId": key.id,
            "SecretAccessKey": key.secret,
            "name": key.name,
            "user_arn": nimbus_auth::user_arn(&name),
            "created": rfc3339(key.created_ms),
            "policy": serde_json::to_value(&policy).unwrap_or(Value::Null),
        })),
    )
        .into_response())
}

/// `GET /v1/keys`: never a secret.
pub(crate) async fn list_keys(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let keys: Vec<Value> = auth(&gw)?
        .list()
        .iter()
        .map(|k| {
            json!({
                "AccessKeyId": k.id,
                "name": k.name,
                "user_arn": k.user_arn,
                "created": rfc3339(k.created_ms),
                "policy": serde_json::to_value(&k.policy).unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

/// `DELETE /v1/keys/{id}` → 204.
pub(crate) async fn delete_key(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let auth = auth(&gw)?;
    let i = id.clone();
    tokio::task::spawn_blocking(move || auth.delete_key(&i)).await??;
    tracing::info!(access_key = %id, "access key deleted");
    Ok(StatusCode::NO_CONTENT)
}
