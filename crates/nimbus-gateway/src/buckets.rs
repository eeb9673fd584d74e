//! Buckets over the native API (`/v1/buckets/…`), the path by which `nimbus deploy`
//! applies a manifest's `[[functions.NAME.s3]]` triggers: create a bucket (idempotent),
//! read its notification configuration, and set one function's manifest-managed
//! configurations in it, keeping every other configuration (those set through the S3 API
//! or for other functions). Served from the object store of the S3 listener: without
//! `--s3-listen` every route answers 503 with what to do.

use crate::{ApiError, Gateway};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use nimbus_core::manifest::s3::{managed_id_prefix, valid_trigger_id};
use nimbus_core::{arn, FunctionName};
use nimbus_objects::{KeyFilter, NotificationConfig, ObjectError, Objects, TargetConfig};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// What a request to `/v1/buckets` answers when the server has no object store.
pub(crate) const S3_OFF: &str = "the object store is off on this server: start it with \
    --s3-listen ADDR (or run `nimbus up`, which turns it on)";

fn objects(gw: &Gateway) -> Result<&Objects, ApiError> {
    gw.objects
        .get()
        .ok_or_else(|| ApiError::ServiceUnavailable(S3_OFF.into()))
}

impl From<ObjectError> for ApiError {
    fn from(e: ObjectError) -> Self {
        match e {
            ObjectError::NoSuchBucket(b) => {
                ApiError::NotFound(format!("bucket {b} does not exist"))
            }
            ObjectError::InvalidBucketName { .. }
            | ObjectError::InvalidArgument(_)
            | ObjectError::InvalidRequest(_) => ApiError::InvalidParameter(e.to_string()),
            e => ApiError::Internal(format!("object store: {e}")),
        }
    }
}

/// `GET /v1/buckets`: every bucket, by name.
#[tracing::instrument(name = "list_buckets", skip_all)]
pub(crate) async fn list_buckets(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let buckets = objects(&gw)?.list_buckets().await?;
    let list: Vec<Value> = buckets
        .iter()
        .map(|b| json!({ "name": b.name, "created_ms": b.created_ms }))
        .collect();
    Ok(Json(json!({ "buckets": list })))
}

/// `PUT /v1/buckets/{bucket}`: creates the bucket unless it exists (`created` says which).
#[tracing::instrument(name = "put_bucket", skip(gw))]
pub(crate) async fn put_bucket(
    State(gw): State<Arc<Gateway>>,
    Path(bucket): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let created = match objects(&gw)?.create_bucket(&bucket).await {
        Ok(()) => true,
        Err(ObjectError::BucketAlreadyOwnedByYou(_)) => false,
        Err(e) => return Err(e.into()),
    };
    Ok(Json(json!({ "name": bucket, "created": created })))
}

/// `GET /v1/buckets/{bucket}/notifications`: the bucket's notification configuration.
#[tracing::instrument(name = "get_bucket_notifications", skip(gw))]
pub(crate) async fn get_notifications(
    State(gw): State<Arc<Gateway>>,
    Path(bucket): Path<String>,
) -> Result<Json<NotificationConfig>, ApiError> {
    Ok(Json(objects(&gw)?.notification_config(&bucket).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionTriggers {
    /// The alias or version the notifications invoke (unqualified when absent).
    #[serde(default)]
    qualifier: Option<String>,
    #[serde(default)]
    configurations: Vec<TriggerInput>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerInput {
    id: String,
    events: Vec<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    suffix: Option<String>,
}

/// `PUT /v1/buckets/{bucket}/notifications/functions/{function}`: replaces the function's
/// manifest-managed configurations in the bucket (S3 `Id` `nimbus:FUNCTION:ID`) with the
/// body's (none removes them), keeping every other configuration. Answers the bucket's
/// whole configuration as stored.
#[tracing::instrument(name = "put_function_notifications", skip(gw, body))]
pub(crate) async fn put_function_notifications(
    State(gw): State<Arc<Gateway>>,
    Path((bucket, function)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<NotificationConfig>, ApiError> {
    let objects = objects(&gw)?;
    let name = FunctionName::parse(&function)?;
    let input: FunctionTriggers = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidParameter(format!("invalid request body: {e}")))?;
    let prefix = managed_id_prefix(name.as_str());
    let function_arn = arn::function_arn(name.as_str(), input.qualifier.as_deref());
    let mut configs = Vec::with_capacity(input.configurations.len());
    for t in input.configurations {
        if !valid_trigger_id(&t.id) {
            return Err(ApiError::InvalidParameter(format!(
                "configuration id {:?}: use 1-64 letters, digits, '-' or '_'",
                t.id
            )));
        }
        let id = format!("{prefix}{}", t.id);
        if configs.iter().any(|c: &TargetConfig| c.id == id) {
            return Err(ApiError::InvalidParameter(format!(
                "configuration id {:?} is given twice",
                t.id
            )));
        }
        let rules = [("prefix", &t.prefix), ("suffix", &t.suffix)];
        let filter = KeyFilter::from_rules(
            rules
                .iter()
                .filter_map(|(n, v)| v.as_deref().map(|v| (*n, v))),
        )?;
        configs.push(TargetConfig {
            id,
            arn: function_arn.clone(),
            events: t.events,
            filter,
        });
    }
    let stored = objects
        .replace_function_configs(&bucket, &prefix, configs)
        .await?;
    Ok(Json(stored))
}
