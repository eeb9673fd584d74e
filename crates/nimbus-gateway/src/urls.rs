//! Function URLs (`/fn/NAME/…`), user routes from manifests, and Lambda's function URL
//! configuration API (`/2021-10-31/functions/{name}/url`).

use crate::http_event::{self, HttpRequestParts};
use crate::{invoke, ApiError, Gateway};
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nimbus_core::{arn, FunctionName};
use nimbus_runtime::Outcome;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

pub(crate) async fn function_url_root(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    serve_url(gw, name, "/".to_string(), req).await
}

pub(crate) async fn function_url(
    State(gw): State<Arc<Gateway>>,
    Path((name, path)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    // Keep the raw (still percent-encoded) path as the function sees it.
    let raw = req.uri().path();
    let prefix = format!("/fn/{name}");
    let raw_path = raw
        .strip_prefix(&prefix)
        .filter(|p| p.starts_with('/'))
        .map(str::to_string);
    serve_url(
        gw,
        name,
        raw_path.unwrap_or_else(|| format!("/{path}")),
        req,
    )
    .await
}

async fn serve_url(
    gw: Arc<Gateway>,
    name: String,
    raw_path: String,
    req: Request,
) -> Result<Response, ApiError> {
    let name = FunctionName::parse(&name)?;
    let resolved = gw.resolve(&name, None).await?;
    if !resolved.version.config.url {
        return Err(ApiError::NotFound(format!(
            "function {name} has no function URL: set url = true in nimbus.toml or call CreateFunctionUrlConfig"
        )));
    }
    serve_http(gw, name, raw_path, "$default".into(), None, req).await
}

/// Serves requests that match no Nimbus path: user routes declared in manifests.
pub(crate) async fn user_route(
    State(gw): State<Arc<Gateway>>,
    req: Request,
) -> Result<Response, ApiError> {
    let path = req.uri().path().to_string();
    match gw.match_route(req.method().as_str(), &path) {
        Some((route, function, params)) => {
            serve_http(
                gw,
                function,
                path,
                route.key().to_string(),
                Some(params),
                req,
            )
            .await
        }
        None => Err(ApiError::NotFound(format!(
            "no route for {} {path}",
            req.method()
        ))),
    }
}

async fn serve_http(
    gw: Arc<Gateway>,
    name: FunctionName,
    raw_path: String,
    route_key: String,
    path_params: Option<BTreeMap<String, String>>,
    req: Request,
) -> Result<Response, ApiError> {
    let resolved = gw.resolve(&name, None).await?;
    let source_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let (parts, body) = req.into_parts();
    let body = invoke::read_payload(body).await?;
    let request_id = uuid::Uuid::new_v4().to_string();
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let api_id = if route_key == "$default" {
        name.to_string()
    } else {
        "nimbus".to_string()
    };
    let event = http_event::to_v2_event(&HttpRequestParts {
        method: &parts.method,
        raw_path: &raw_path,
        raw_query: parts.uri.query(),
        headers: &parts.headers,
        body: &body,
        source_ip,
        route_key: &route_key,
        path_parameters: path_params.as_ref(),
        request_id: &request_id,
        api_id: &api_id,
        domain_name: &host,
        now: time::OffsetDateTime::now_utc(),
    });
    let payload = serde_json::to_vec(&event).map_err(ApiError::internal)?;
    if payload.len() > nimbus_core::Limits::PAYLOAD_MAX {
        return Err(ApiError::TooLarge(
            "request too large for a function invocation (6 MB after encoding)".into(),
        ));
    }
    let invoked_arn = arn::function_arn(name.as_str(), None);
    let (_rid, res) = invoke::run(&gw, &resolved, payload.into(), invoked_arn, None, None).await?;
    match res.result.outcome {
        Outcome::Success(out) => {
            let mapped = http_event::from_v2_response(&out).map_err(|e| {
                ApiError::FunctionFailed(format!(
                    "function {name} returned an invalid response: {e}"
                ))
            })?;
            let mut resp = Response::new(Body::from(mapped.body));
            *resp.status_mut() = mapped.status;
            *resp.headers_mut() = mapped.headers;
            Ok(resp)
        }
        Outcome::Streamed {
            content_type,
            http_prelude,
            body,
        } => {
            let mapped = http_event::from_streamed_response(
                content_type.as_deref(),
                http_prelude.as_deref(),
                body,
            )
            .map_err(|e| {
                ApiError::FunctionFailed(format!(
                    "function {name} returned an invalid response: {e}"
                ))
            })?;
            let mut resp = Response::new(Body::from(mapped.body));
            *resp.status_mut() = mapped.status;
            *resp.headers_mut() = mapped.headers;
            Ok(resp)
        }
        Outcome::Error { error_type, .. } => Err(ApiError::FunctionFailed(format!(
            "function {name} failed ({error_type}); see `nimbus logs {name}`"
        ))),
    }
}

fn url_config(gw: &Gateway, name: &FunctionName, last_modified: &str) -> Value {
    json!({
        "FunctionUrl": gw.function_url(name),
        "FunctionArn": arn::function_arn(name.as_str(), None),
        "AuthType": "NONE",
        "Cors": {},
        "CreationTime": last_modified,
        "LastModifiedTime": last_modified,
        "InvokeMode": "BUFFERED",
    })
}

fn check_url_request(body: &[u8]) -> Result<(), ApiError> {
    if body.is_empty() {
        return Ok(());
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidParameter(format!("invalid request body: {e}")))?;
    match v.get("AuthType").and_then(Value::as_str) {
        None | Some("NONE") => {}
        Some("AWS_IAM") => {
            return Err(ApiError::InvalidParameter(
                "AuthType AWS_IAM is not supported by this server yet: use NONE (URLs listen on loopback by default)".into(),
            ))
        }
        Some(other) => return Err(ApiError::InvalidParameter(format!("invalid AuthType {other:?}: use NONE or AWS_IAM"))),
    }
    match v.get("InvokeMode").and_then(Value::as_str) {
        None | Some("BUFFERED") => Ok(()),
        Some(other) => Err(ApiError::InvalidParameter(format!(
            "InvokeMode {other:?} is not supported: use BUFFERED"
        ))),
    }
}

async fn set_url(
    gw: &Arc<Gateway>,
    name: &FunctionName,
    enabled: bool,
) -> Result<String, ApiError> {
    let cur = gw.store.get(name, None)?;
    if cur.config.url == enabled {
        return Ok(cur.last_modified);
    }
    // A URL is not part of a version: update `$LATEST` in place, as Lambda does.
    let mut config = cur.config.clone();
    config.url = enabled;
    let (store, n) = (gw.store.clone(), name.clone());
    let updated =
        tokio::task::spawn_blocking(move || store.update_latest(&n, Some(&config), None, None))
            .await??;
    gw.changed(name)?;
    Ok(updated.last_modified)
}

fn reject_qualifier(function: &str) -> Result<FunctionName, ApiError> {
    let (name, q) = arn::parse_function_ref(function)?;
    if q.is_some_and(|q| q != nimbus_core::LATEST) {
        return Err(ApiError::InvalidParameter(
            "function URLs on versions or aliases are not supported yet".into(),
        ));
    }
    Ok(name)
}

pub(crate) async fn create_url_config(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let name = reject_qualifier(&function)?;
    check_url_request(&body)?;
    if gw.store.get(&name, None)?.config.url {
        return Err(ApiError::Conflict(format!(
            "function {name} already has a function URL"
        )));
    }
    let at = set_url(&gw, &name, true).await?;
    Ok((StatusCode::CREATED, Json(url_config(&gw, &name, &at))).into_response())
}

pub(crate) async fn update_url_config(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let name = reject_qualifier(&function)?;
    check_url_request(&body)?;
    let cur = gw.store.get(&name, None)?;
    if !cur.config.url {
        return Err(ApiError::NotFound(format!(
            "function {name} has no function URL"
        )));
    }
    Ok(Json(url_config(&gw, &name, &cur.last_modified)))
}

pub(crate) async fn get_url_config(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = reject_qualifier(&function)?;
    let cur = gw.store.get(&name, None)?;
    if !cur.config.url {
        return Err(ApiError::NotFound(format!(
            "function {name} has no function URL"
        )));
    }
    Ok(Json(url_config(&gw, &name, &cur.last_modified)))
}

pub(crate) async fn delete_url_config(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = reject_qualifier(&function)?;
    if !gw.store.get(&name, None)?.config.url {
        return Err(ApiError::NotFound(format!(
            "function {name} has no function URL"
        )));
    }
    set_url(&gw, &name, false).await?;
    Ok(StatusCode::NO_CONTENT)
}
