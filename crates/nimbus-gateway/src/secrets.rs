//! The secrets API (`/v1/secrets`): set, list (names and times only), delete and rotate the
//! master key. No response of this API, or of any other, contains a secret's value.

use crate::{ApiError, Gateway};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nimbus_store::{MasterKey, SecretStore, MAX_SECRET_VALUE};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// The secrets store and where its master key came from.
pub struct Secrets {
    pub store: Arc<SecretStore>,
    /// The key file the server read its key from; rotation replaces it (atomically, mode
    /// 0600) after the re-encryption commits. `None` when the key came from the environment.
    pub key_file: Option<PathBuf>,
}

fn secrets(gw: &Gateway) -> Result<&Secrets, ApiError> {
    gw.secrets
        .get()
        .ok_or_else(|| ApiError::ServiceUnavailable("this server has no secrets store".into()))
}

async fn blocking<T: Send + 'static>(
    gw: &Gateway,
    f: impl FnOnce(&SecretStore) -> Result<T, nimbus_store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = secrets(gw)?.store.clone();
    Ok(tokio::task::spawn_blocking(move || f(&store)).await??)
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// `PUT /v1/secrets/{name}`: the body is the value, raw, or JSON `{"value": "…"}` when the
/// request's content type is `application/json`.
pub(crate) async fn put_secret(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let value: Vec<u8> = if is_json {
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            ApiError::InvalidRequestContent(
                "a JSON body is {\"value\": \"...\"} (or send the raw value with another content type)".into(),
            )
        })?;
        v.get("value")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ApiError::InvalidRequestContent(
                    "a JSON body is {\"value\": \"...\"} with a string value".into(),
                )
            })?
            .as_bytes()
            .to_vec()
    } else {
        body.to_vec()
    };
    if value.len() > MAX_SECRET_VALUE {
        return Err(ApiError::TooLarge(format!(
            "a secret value is at most {MAX_SECRET_VALUE} bytes, got {}",
            value.len()
        )));
    }
    let n = name.clone();
    let created = blocking(&gw, move |s| s.set(&n, &value)).await?;
    tracing::info!(secret = %name, created, "secret set");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "name": name, "created": created }))).into_response())
}

/// `GET /v1/secrets`: names and times, never values.
pub(crate) async fn list_secrets(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let list = blocking(&gw, |s| s.list()).await?;
    let out: Vec<Value> = list
        .iter()
        .map(|i| {
            json!({
                "name": i.name,
                "created": rfc3339(i.created_ms),
                "updated": rfc3339(i.updated_ms),
            })
        })
        .collect();
    Ok(Json(json!({ "secrets": out })))
}

/// `DELETE /v1/secrets/{name}`.
pub(crate) async fn delete_secret(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let n = name.clone();
    blocking(&gw, move |s| s.delete(&n)).await?;
    tracing::info!(secret = %name, "secret deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/secrets/rotate` with `{"new_key": "<base64 of 32 bytes>"}`: re-encrypts every
/// secret under the new key in one transaction, then uses it; when the server's key came
/// from a key file, that file is replaced with the new key (mode 0600, atomic rename).
pub(crate) async fn rotate(
    State(gw): State<Arc<Gateway>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let v: Value = serde_json::from_slice(&body).map_err(|_| {
        ApiError::InvalidRequestContent("the body is {\"new_key\": \"<base64 key>\"}".into())
    })?;
    let text = v.get("new_key").and_then(Value::as_str).ok_or_else(|| {
        ApiError::InvalidRequestContent("the body is {\"new_key\": \"<base64 key>\"}".into())
    })?;
    let key = MasterKey::from_base64(text)?;
    let key_b64 = key.to_base64();
    let new_id = key.id();
    let sec = secrets(&gw)?;
    if sec.store.key_id() == new_id {
        return Err(ApiError::InvalidParameter(
            "the new master key is the key in use: generate a new one".into(),
        ));
    }
    let key_file = sec.key_file.clone();
    let forward_key = key.clone();
    let count = blocking(&gw, move |s| s.rotate(key)).await?;
    gw.master_key_changed(&forward_key);
    let mut key_file_updated = None;
    if let Some(path) = key_file {
        let p = path.clone();
        tokio::task::spawn_blocking(move || nimbus_store::write_private_file(&p, format!("{key_b64}\n").as_bytes()))
            .await?
            .map_err(|e| {
                ApiError::Internal(format!(
                    "secrets were re-encrypted under key {new_id}, but the key file {} could not be replaced ({e}): put the new key there before restarting",
                    path.display()
                ))
            })?;
        key_file_updated = Some(path.display().to_string());
    }
    tracing::info!(secrets = count, key_id = %new_id, "master key rotated");
    // The new key, sealed under the old one for the other nodes to follow the rotation,
    // leaves the database when its window ends (cluster mode; nothing to do on SQLite).
    let store = sec.store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(nimbus_store::HANDOVER + std::time::Duration::from_secs(1)).await;
        let _ = tokio::task::spawn_blocking(move || store.clear_expired_handover()).await;
    });
    Ok(Json(json!({
        "rotated": count,
        "key_id": new_id,
        "key_file": key_file_updated,
    })))
}
