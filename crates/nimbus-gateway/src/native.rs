//! The native `/v1` API (see `docs/api.md`).

use crate::{ApiError, Gateway};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use nimbus_core::{FunctionConfig, FunctionName, FunctionVersion};
use nimbus_store::{CodeInfo, PinnedCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tracing::info;

/// A function version as the API shows it.
pub(crate) fn view(gw: &Gateway, v: &FunctionVersion) -> Value {
    let mut out = serde_json::to_value(v).unwrap_or(Value::Null);
    if v.config.url {
        out["function_url"] = gw.function_url(&v.name).into();
    }
    out
}

fn parse_name(name: &str) -> Result<FunctionName, ApiError> {
    Ok(FunctionName::parse(name)?)
}

/// `/v1/health`'s figures: version, memory, isolation, stem cells, instances, logs (the
/// checks are added by `health.rs`).
pub(crate) fn figures(gw: &Gateway) -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "memory_limits": gw.cfg.memory_limits,
        "isolation": gw.cfg.isolation,
        "stem_cells": gw.pools.executor().process().stem_stats(),
        "instances": memory_view(&gw.pools.memory_stats()),
        "logs": log_view(gw),
    })
}

/// `/v1/health`'s `logs`: the log store's size and bound, and captured output dropped.
fn log_view(gw: &Gateway) -> Value {
    let u = gw.store.log_usage();
    let sink = gw.pools.executor().process().log_sink();
    json!({
        "file_bytes": u.file_bytes,
        "limit_bytes": u.limit_bytes,
        "stored_bytes": u.stored_bytes,
        "lines": u.lines,
        "pruned_lines": u.pruned_lines,
        "per_invocation_bytes": sink.per_invocation_bytes(),
        "pending_bytes": sink.in_flight_bytes(),
        "dropped_lines": sink.dropped(),
    })
}

/// `/v1/health`'s `instances`: counts and memory of every instance, and the budget.
fn memory_view(m: &nimbus_pool::MemoryStats) -> Value {
    json!({
        "count": m.instances,
        "busy": m.busy,
        "memory_bytes": m.memory_bytes,
        "committed_bytes": m.committed_bytes,
        "memory_budget_bytes": m.budget_bytes,
        "memory_floor_bytes": m.floor_bytes,
        "host_available_bytes": m.host_available_bytes,
        "reaped_for_memory": m.reaped_for_memory,
    })
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    fields: Option<String>,
}

/// The `fields` of `GET /v1/functions?fields=name,config.runtime,…`: top-level keys of a
/// function's view, or `config.KEY`.
struct Fields(Vec<(String, Option<String>)>);

impl Fields {
    const MAX: usize = 32;

    fn parse(text: &str) -> Result<Fields, ApiError> {
        let key = |k: &str| {
            !k.is_empty()
                && k.len() <= 64
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        let fields = text
            .split(',')
            .map(|f| {
                let (top, sub) = match f.trim().split_once('.') {
                    Some(("config", sub)) => ("config", Some(sub)),
                    Some(_) => ("", None),
                    None => (f.trim(), None),
                };
                if key(top) && sub.is_none_or(key) {
                    Ok((top.to_string(), sub.map(str::to_string)))
                } else {
                    Err(ApiError::InvalidParameter(format!(
                        "invalid field {f:?}: fields are names of a function's keys or config.KEY, comma-separated"
                    )))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if fields.len() > Self::MAX {
            return Err(ApiError::InvalidParameter(format!(
                "at most {} fields",
                Self::MAX
            )));
        }
        Ok(Fields(fields))
    }

    /// `view` with only these fields (those it lacks are left out).
    fn project(&self, view: &Value) -> Value {
        let mut out = serde_json::Map::new();
        for (top, sub) in &self.0 {
            let Some(v) = view.get(top) else { continue };
            match sub {
                None => {
                    out.insert(top.clone(), v.clone());
                }
                Some(k) => {
                    let Some(x) = v.get(k).cloned() else {
                        continue;
                    };
                    if let Some(o) = out
                        .entry(top.clone())
                        .or_insert_with(|| json!({}))
                        .as_object_mut()
                    {
                        o.insert(k.clone(), x);
                    }
                }
            }
        }
        Value::Object(out)
    }
}

/// `GET /v1/functions[?fields=…]`: every function's `$LATEST`, or only the fields asked.
#[tracing::instrument(skip_all)]
pub(crate) async fn list(
    State(gw): State<Arc<Gateway>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let fields = q.fields.as_deref().map(Fields::parse).transpose()?;
    let fns = gw.store.list()?;
    let out: Vec<Value> = fns
        .iter()
        .map(|f| match &fields {
            Some(fields) => fields.project(&view(&gw, f)),
            None => view(&gw, f),
        })
        .collect();
    Ok(Json(json!({ "functions": out })))
}

#[derive(Deserialize)]
pub(crate) struct QualifierQuery {
    qualifier: Option<String>,
}

pub(crate) async fn get_function(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(q): Query<QualifierQuery>,
) -> Result<Json<Value>, ApiError> {
    let name = parse_name(&name)?;
    let v = gw.store.get(&name, q.qualifier.as_deref())?;
    let mut out = view(&gw, &v);
    let s = gw.pools.stats(name.as_str());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let instances: Vec<Value> = gw
        .pools
        .instances(name.as_str())
        .into_iter()
        .map(|i| {
            let since = i.idle_ms.map(|ms| crate::keys::rfc3339(now_ms - ms as i64));
            json!({
                "id": i.id,
                "version": i.version,
                "state": i.state,
                "memory_bytes": i.memory_bytes,
                "peak_memory_bytes": i.peak_memory_bytes,
                "memory_source": i.memory_source,
                "configured_memory_bytes": i.configured_bytes,
                "idle_ms": i.idle_ms,
                "idle_since": since,
            })
        })
        .collect();
    out["pool"] = json!({
        "idle": s.idle, "busy": s.busy, "running": s.running, "waiting": s.waiting,
        "instances": instances,
    });
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    config: FunctionConfig,
    /// Base64 zip. Absent: keep the current code (configuration-only update).
    code_zip: Option<String>,
}

/// `PUT /v1/functions/{name}`: create or update, publishing an immutable version.
pub(crate) async fn deploy(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let req: DeployRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidParameter(format!("invalid deploy request: {e}")))?;
    drop(body);
    req.config.validate()?;
    crate::jwt::check_config(&req.config)?;
    crate::dead_letter::check_target(&gw, &req.config).await?;
    let previous = gw.store.get(&name, None).ok().map(|v| v.config);
    if let Some(n) = req.config.provisioned_concurrency {
        let reserved = gw
            .store
            .meta(&name)
            .ok()
            .and_then(|m| m.reserved_concurrency);
        if let Some(r) = reserved.filter(|r| n > *r) {
            return Err(ApiError::InvalidParameter(format!(
                "provisioned_concurrency ({n}) exceeds the function's reserved concurrency ({r})"
            )));
        }
    }
    let code = match req.code_zip {
        Some(b64) => {
            let zip = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| {
                    ApiError::InvalidParameter(format!("code_zip is not valid base64: {e}"))
                })?;
            let store = gw.code.clone();
            tokio::task::spawn_blocking(move || store.put(&zip)).await??
        }
        None => current_code(&gw, &name).await?,
    };
    let mut config = req.config;
    // The manifest names layers by version ARN: pin each to its content.
    let arns: Vec<String> = config.layers.iter().map(|l| l.arn.clone()).collect();
    let layer_pins = match crate::layers::resolve(&gw, &arns, &config.runtime).await {
        Ok((refs, pins)) => {
            config.layers = refs;
            pins
        }
        Err(e) => {
            drop(code);
            gw.collect_code_soon();
            return Err(e);
        }
    };
    if let Err(e) = crate::layers::check_size(&gw, &config, &code.info.sha256).await {
        drop(code);
        gw.collect_code_soon();
        return Err(e);
    }
    let published = publish(&gw, &name, config.clone(), code).await;
    drop(layer_pins);
    // The previous `$LATEST` code may be referenced no more (or, after a failure, the
    // package just stored).
    gw.collect_code_soon();
    let (version, created) = published?;
    crate::provisioned::apply_deploy_alias(&gw, &name, previous.as_ref(), &config, &version)
        .await?;
    let latest = gw.store.get(&name, None)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut reply = json!({ "function": view(&gw, &latest), "version": version });
    if let Some(a) = &config.alias {
        reply["alias"] = a.clone().into();
    }
    if let Some(n) = config.provisioned_concurrency {
        reply["provisioned_concurrency"] = n.into();
    }
    Ok((status, Json(reply)).into_response())
}

/// The code of `$LATEST`, for configuration-only updates, pinned against garbage
/// collection until the deploy has committed.
pub(crate) async fn current_code(
    gw: &Arc<Gateway>,
    name: &FunctionName,
) -> Result<PinnedCode, ApiError> {
    let cur = gw.store.get(name, None).map_err(|e| {
        if e.is_not_found() {
            ApiError::InvalidParameter(format!(
                "function {name} does not exist yet: include code_zip to create it"
            ))
        } else {
            e.into()
        }
    })?;
    let store = gw.code.clone();
    Ok(tokio::task::spawn_blocking(move || {
        // Pinned before reading: a concurrent delete's collection cannot take it from here on.
        let pin = store.pin(&cur.code_sha256)?;
        let zip = store.zip_bytes(&cur.code_sha256)?;
        Ok::<_, nimbus_store::StoreError>(PinnedCode {
            info: CodeInfo::of(&zip),
            pin,
        })
    })
    .await??)
}

/// Stores a new `$LATEST` (checking route conflicts), refreshes caches and routes.
/// Returns the published version and whether the function was created. The code's pin is
/// released once the registry has committed (or refused) it, even if the caller goes away.
pub(crate) async fn publish(
    gw: &Arc<Gateway>,
    name: &FunctionName,
    config: FunctionConfig,
    code: PinnedCode,
) -> Result<(String, bool), ApiError> {
    if let Some((route, other)) = gw.route_conflict(name, &config.routes) {
        return Err(ApiError::Conflict(format!(
            "route {route} is already served by function {other}"
        )));
    }
    let store = gw.store.clone();
    let n = name.clone();
    let deployed = tokio::task::spawn_blocking(move || {
        let deployed = store.deploy(&n, &config, &code.info);
        drop(code.pin);
        deployed
    })
    .await??;
    gw.changed(name)?;
    info!(function = %name, version = %deployed.version, created = deployed.created, "deployed");
    Ok((deployed.version, deployed.created))
}

pub(crate) async fn delete(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name)?;
    delete_function(&gw, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a function with all its versions and stops its instances.
pub(crate) async fn delete_function(
    gw: &Arc<Gateway>,
    name: &FunctionName,
) -> Result<(), ApiError> {
    let store = gw.store.clone();
    let n = name.clone();
    tokio::task::spawn_blocking(move || store.delete(&n)).await??;
    gw.pools.retire_function(name.as_str());
    gw.events.forget_function(name.as_str());
    gw.cfg.metrics.remove_function(name.as_str());
    if let Some(h) = gw.history.get() {
        let (history, n) = (h.store.clone(), name.to_string());
        tokio::task::spawn_blocking(move || history.delete_function(&n)).await??;
    }
    let (queue, n) = (gw.events.queue().clone(), name.to_string());
    tokio::task::spawn_blocking(move || queue.forget_function(&n)).await??;
    gw.changed(name)?;
    gw.collect_code_soon();
    info!(function = %name, "deleted");
    Ok(())
}

/// `GET /v1/functions/{name}/code?qualifier=Q`: the code package (zip) of a version
/// (what GetFunction's `Code.Location` points at).
pub(crate) async fn code(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(q): Query<QualifierQuery>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let v = gw.store.get(&name, q.qualifier.as_deref())?;
    let store = gw.code.clone();
    let zip = tokio::task::spawn_blocking(move || store.zip_bytes(&v.code_sha256)).await??;
    Ok(([("content-type", "application/zip")], zip).into_response())
}

pub(crate) async fn versions(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = parse_name(&name)?;
    let vs = gw.store.versions(&name)?;
    if vs.is_empty() {
        return Err(ApiError::NotFound(format!("function not found: {name}")));
    }
    Ok(Json(
        json!({ "versions": vs.iter().map(|v| view(&gw, v)).collect::<Vec<_>>() }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_project_a_function_view() {
        let view = json!({"name": "f", "version": "$LATEST", "last_modified": "t",
            "config": {"runtime": "nodejs20.x", "memory_mb": 128, "env": {"K": "v"}}});
        let f = Fields::parse("name, config.runtime,config.memory_mb,nope").unwrap();
        assert_eq!(
            f.project(&view),
            json!({"name": "f", "config": {"runtime": "nodejs20.x", "memory_mb": 128}})
        );
        let whole = Fields::parse("config.runtime,config").unwrap();
        assert_eq!(whole.project(&view), json!({"config": view["config"]}));
        for bad in ["", "name,", "a.b", "config.", "config.a.b", "na me"] {
            assert!(Fields::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Fields::parse(&vec!["name"; 33].join(",")).is_err());
    }
}
