//! Function URLs (`/fn/NAME/…`), user routes from manifests, and Lambda's function URL
//! configuration API (`/2021-10-31/functions/{name}/url`).

use crate::http_event::{self, HttpRequestParts};
use crate::lambda_api::{function_ref, parse_query};
use crate::state::Resolved;
use crate::{http_cache, invoke, streaming, ApiError, Gateway};
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nimbus_core::{arn, FunctionConfig, FunctionName, RuntimeFamily, UrlConfig, LATEST};
use nimbus_metrics::Trigger;
use nimbus_runtime::Outcome;
use nimbus_trace::TraceContext;
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
    // Borrowed, not cloned: most requests have no `Origin` and need no CORS settings.
    let url_cfg = resolved.version.config.url_config.as_ref();
    let cors = url_cfg.and_then(|u| {
        let origin = req.headers().get("origin")?.to_str().ok()?;
        Cors::new(&u.cors, Some(origin))
    });
    if req.method() == axum::http::Method::OPTIONS
        && req.headers().contains_key("access-control-request-method")
    {
        if let Some(cors) = &cors {
            return Ok(cors.preflight());
        }
    }
    if let Some(limit) = &resolved.version.config.url_rate_limit {
        if let Some(resp) = crate::limits::check_route(&gw, &format!("url:{name}"), limit) {
            return Ok(resp);
        }
    }
    let iam = url_cfg.is_some_and(|u| u.auth_type == "AWS_IAM");
    let req = if iam {
        crate::auth::check_function_url(&gw, &name, req).await?
    } else {
        req
    };
    let alias = resolved.version.config.url_alias().map(str::to_string);
    let stream = url_cfg.is_some_and(|u| u.invoke_mode() == UrlConfig::RESPONSE_STREAM);
    let held = resolved.clone();
    let run = |req| {
        serve_http(
            gw.clone(),
            name.clone(),
            resolved,
            alias,
            raw_path,
            "$default".into(),
            None,
            None,
            req,
            stream,
        )
    };
    let mut resp = match held.version.config.url_cache.as_ref().filter(|_| !stream) {
        Some(settings) => {
            let target = http_cache::Target {
                function: &name,
                scope: http_cache::URL_SCOPE,
                settings,
                metrics: &held.metrics,
                auth: if iam {
                    http_cache::RouteAuth::Iam
                } else {
                    http_cache::RouteAuth::Open
                },
            };
            http_cache::serve(&gw, target, req, run).await?
        }
        None => run(req).await?,
    };
    if let Some(cors) = cors {
        cors.apply(resp.headers_mut());
    }
    Ok(resp)
}

/// Lambda function URL CORS for one request whose `Origin` is allowed.
struct Cors {
    origin: String,
    cfg: Value,
}

impl Cors {
    fn new(cfg: &Value, origin: Option<&str>) -> Option<Self> {
        let origin = origin?;
        let allowed = cfg.get("AllowOrigins")?.as_array()?;
        let ok = allowed
            .iter()
            .filter_map(Value::as_str)
            .any(|o| o == "*" || o == origin);
        ok.then(|| Cors {
            origin: origin.to_string(),
            cfg: cfg.clone(),
        })
    }

    fn list(&self, key: &str) -> Option<String> {
        let items: Vec<&str> = self
            .cfg
            .get(key)?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        (!items.is_empty()).then(|| items.join(","))
    }

    fn apply(&self, h: &mut axum::http::HeaderMap) {
        let mut set = |k: &'static str, v: String| {
            if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        };
        set("access-control-allow-origin", self.origin.clone());
        if self.cfg.get("AllowCredentials").and_then(Value::as_bool) == Some(true) {
            set("access-control-allow-credentials", "true".into());
        }
        if let Some(e) = self.list("ExposeHeaders") {
            set("access-control-expose-headers", e);
        }
    }

    fn preflight(&self) -> Response {
        let mut resp = StatusCode::OK.into_response();
        self.apply(resp.headers_mut());
        let h = resp.headers_mut();
        for (key, header) in [
            ("AllowMethods", "access-control-allow-methods"),
            ("AllowHeaders", "access-control-allow-headers"),
        ] {
            if let Some(v) = self
                .list(key)
                .and_then(|v| axum::http::HeaderValue::from_str(&v).ok())
            {
                h.insert(header, v);
            }
        }
        if let Some(age) = self.cfg.get("MaxAge").and_then(Value::as_u64) {
            h.insert("access-control-max-age", age.into());
        }
        resp
    }
}

/// Serves requests that match no Nimbus path: user routes declared in manifests.
pub(crate) async fn user_route(
    State(gw): State<Arc<Gateway>>,
    req: Request,
) -> Result<Response, ApiError> {
    let path = req.uri().path().to_string();
    match gw.match_route(req.method().as_str(), &path) {
        Some((route, function, params)) => {
            let resolved = gw.resolve(&function, None).await?;
            let config = &resolved.version.config;
            let mut authorizer = None;
            if let Some(settings) = config.route_settings.get(route.key()) {
                if let Some(limit) = &settings.rate_limit {
                    let key = format!("route:{function}:{}", route.key());
                    if let Some(resp) = crate::limits::check_route(&gw, &key, limit) {
                        return Ok(resp);
                    }
                }
                if let Some(name) = &settings.authorizer {
                    let Some(a) = config.authorizers.get(name) else {
                        return Err(ApiError::Internal(format!(
                            "route {} names the missing authorizer {name}",
                            route.key()
                        )));
                    };
                    match crate::jwt::authorize(&gw.jwks, a, settings, req.headers()).await {
                        Ok(ctx) => authorizer = Some(ctx),
                        Err(e) => {
                            tracing::debug!(route = route.key(), "JWT authorizer refused: {e}");
                            return Ok(e.response());
                        }
                    }
                }
            }
            let alias = config.alias.clone();
            let held = resolved.clone();
            let cache = held
                .version
                .config
                .route_settings
                .get(route.key())
                .and_then(|s| s.cache.as_ref());
            let auth = cache.map(|settings| match &authorizer {
                Some(a) => http_cache::RouteAuth::Jwt(
                    settings
                        .keys_identity()
                        .then(|| http_cache::jwt_principal(a))
                        .flatten(),
                ),
                None => http_cache::RouteAuth::Open,
            });
            let scope = route.key().to_string();
            let run = |req| {
                serve_http(
                    gw.clone(),
                    function.clone(),
                    resolved,
                    alias,
                    path,
                    route.key().to_string(),
                    Some(params),
                    authorizer,
                    req,
                    false,
                )
            };
            match cache.zip(auth) {
                Some((settings, auth)) => {
                    let target = http_cache::Target {
                        function: &function,
                        scope: &scope,
                        settings,
                        metrics: &held.metrics,
                        auth,
                    };
                    http_cache::serve(&gw, target, req, run).await
                }
                None => run(req).await,
            }
        }
        None => match gw.match_workflow_route(req.method().as_str(), &path) {
            Some((route, machine, kind, params)) => {
                crate::workflow_routes::serve(gw, route, machine, kind, params, req).await
            }
            None => Err(ApiError::NotFound(format!(
                "no route for {} {path}",
                req.method()
            ))),
        },
    }
}

/// A request read into an API Gateway v2.0 HTTP event, with the trace context it carries
/// and the request id the event names.
pub(crate) struct HttpEvent {
    pub event: Value,
    pub trace: Option<TraceContext>,
    pub request_id: String,
}

/// Reads `req` (its body bounded as invocation payloads are) into the event a function URL
/// or route hands on (`route_key` `$default` for URLs).
pub(crate) async fn http_event_of(
    req: Request,
    raw_path: &str,
    route_key: &str,
    path_params: Option<&BTreeMap<String, String>>,
    api_id: &str,
) -> Result<HttpEvent, ApiError> {
    let source_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let (parts, body) = req.into_parts();
    let trace = crate::trace::incoming(&parts.headers);
    let body = invoke::read_payload(body).await?;
    let request_id = uuid::Uuid::new_v4().to_string();
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let event = http_event::to_v2_event(&HttpRequestParts {
        method: &parts.method,
        raw_path,
        raw_query: parts.uri.query(),
        headers: &parts.headers,
        body: &body,
        source_ip,
        route_key,
        path_parameters: path_params,
        request_id: &request_id,
        api_id,
        domain_name: host,
        now: time::OffsetDateTime::now_utc(),
    });
    Ok(HttpEvent {
        event,
        trace,
        request_id,
    })
}

/// Invokes the function with `req` as an HTTP event: `resolved` is its `$LATEST` (whose
/// URL and route settings the caller applied); the invocation goes to `alias` (the URL's
/// qualifier or the manifest's `alias`), or to `$LATEST` itself. With `stream` (a URL in
/// `RESPONSE_STREAM` mode) a streamed response goes to the client as the function writes.
#[allow(clippy::too_many_arguments)]
async fn serve_http(
    gw: Arc<Gateway>,
    name: FunctionName,
    resolved: Arc<Resolved>,
    alias: Option<String>,
    raw_path: String,
    route_key: String,
    path_params: Option<BTreeMap<String, String>>,
    authorizer: Option<Value>,
    req: Request,
    stream: bool,
) -> Result<Response, ApiError> {
    let trigger = if route_key == "$default" {
        Trigger::Url
    } else {
        Trigger::Route
    };
    let alias = alias.as_deref();
    let invoked_arn = arn::function_arn(name.as_str(), alias);
    let target = match alias {
        Some(a) => gw.resolve(&name, Some(a)).await?,
        None => resolved,
    };
    let res = if target.spec.config.runtime.family() == RuntimeFamily::WasiHttp {
        // A wasi:http component gets the request as it came, not as an event.
        let inv = component_request(req, raw_path, invoked_arn).await?;
        crate::invoke::spawn(&gw, &target, trigger, inv)?.await??.1
    } else {
        let api_id = if route_key == "$default" {
            name.as_str()
        } else {
            "nimbus"
        };
        let HttpEvent {
            mut event,
            trace,
            request_id,
        } = http_event_of(req, &raw_path, &route_key, path_params.as_ref(), api_id).await?;
        if let Some(a) = authorizer {
            // As API Gateway: `requestContext.authorizer.jwt.{claims,scopes}`.
            event["requestContext"]["authorizer"] = a;
        }
        let payload = serde_json::to_vec(&event).map_err(ApiError::internal)?;
        if payload.len() > nimbus_core::Limits::PAYLOAD_MAX {
            return Err(ApiError::TooLarge(
                "request too large for a function invocation (6 MB after encoding)".into(),
            ));
        }
        if stream {
            let inv = invoke::invocation(request_id, payload.into(), invoked_arn, trace, None);
            match streaming::start(&gw, &target, trigger, inv).await? {
                streaming::Started::Streaming(s) => {
                    return streaming::url_response(name.as_str(), s)
                }
                streaming::Started::Done(_, res) => res,
            }
        } else {
            invoke::run(
                &gw,
                &target,
                trigger,
                payload.into(),
                invoked_arn,
                trace,
                None,
            )
            .await?
            .1
        }
    };
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

/// The invocation of a `wasi-http` component for `req`: the request itself (its body
/// bounded as invocation payloads are), the path as the function sees it.
async fn component_request(
    req: Request,
    raw_path: String,
    invoked_arn: String,
) -> Result<nimbus_runtime::Invocation, ApiError> {
    let (parts, body) = req.into_parts();
    let trace = crate::trace::incoming(&parts.headers);
    let body = invoke::read_payload(body).await?;
    let authority = parts
        .headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{raw_path}?{q}"),
        None => raw_path,
    };
    let inv = invoke::invocation(
        uuid::Uuid::new_v4().to_string(),
        bytes::Bytes::new(),
        invoked_arn,
        trace,
        None,
    );
    Ok(nimbus_runtime::Invocation {
        http: Some(Arc::new(nimbus_runtime::HttpRequest {
            method: parts.method,
            https: false,
            authority,
            path_and_query,
            headers: parts.headers,
            body,
        })),
        ..inv
    })
}

fn url_config_json(gw: &Gateway, v: &nimbus_core::FunctionVersion) -> Value {
    let settings = url_settings(&v.config);
    json!({
        "FunctionUrl": gw.function_url(&v.name),
        "FunctionArn": arn::function_arn(v.name.as_str(), v.config.url_alias()),
        "AuthType": settings.auth_type,
        "Cors": settings.cors,
        "CreationTime": settings.created,
        "LastModifiedTime": lambda_iso(&v.last_modified),
        "InvokeMode": settings.invoke_mode(),
    })
}

/// The URL settings of a config (defaults for URLs declared in manifests).
fn url_settings(config: &FunctionConfig) -> UrlConfig {
    config.url_config.clone().unwrap_or_else(|| UrlConfig {
        auth_type: "NONE".into(),
        cors: json!({}),
        created: String::new(),
        qualifier: None,
        invoke_mode: None,
    })
}

/// `2021-06-16T10:49:22.524+0000` → `2021-06-16T10:49:22.524Z` (the URL APIs' format).
fn lambda_iso(last_modified: &str) -> String {
    last_modified
        .strip_suffix("+0000")
        .map(|t| format!("{t}Z"))
        .unwrap_or_else(|| last_modified.to_string())
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct UrlInput {
    auth_type: Option<String>,
    cors: Option<Value>,
    invoke_mode: Option<String>,
}

fn parse_url_request(body: &[u8]) -> Result<UrlInput, ApiError> {
    if body.is_empty() {
        return Ok(UrlInput::default());
    }
    let input: UrlInput = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidParameter(format!("invalid request body: {e}")))?;
    if let Some(t) = &input.auth_type {
        if t != "NONE" && t != "AWS_IAM" {
            return Err(ApiError::InvalidParameter(format!(
                "invalid AuthType {t:?}: use NONE or AWS_IAM"
            )));
        }
    }
    if let Some(m) = &input.invoke_mode {
        if m != "BUFFERED" && m != UrlConfig::RESPONSE_STREAM {
            return Err(ApiError::InvalidParameter(format!(
                "invalid InvokeMode {m:?}: use BUFFERED or RESPONSE_STREAM"
            )));
        }
    }
    if let Some(c) = &input.cors {
        if !c.is_object() {
            return Err(ApiError::InvalidParameter("Cors must be an object".into()));
        }
    }
    Ok(input)
}

/// Writes the URL settings into `$LATEST` in place (a URL is not part of a version).
async fn store_url(
    gw: &Arc<Gateway>,
    name: &FunctionName,
    url: Option<UrlConfig>,
) -> Result<nimbus_core::FunctionVersion, ApiError> {
    let mut config = gw.store.get(name, None)?.config;
    config.url = url.is_some();
    config.url_config = url;
    let (store, n) = (gw.store.clone(), name.clone());
    let updated =
        tokio::task::spawn_blocking(move || store.update_latest(&n, Some(&config), None, None))
            .await??;
    gw.changed(name)?;
    Ok(updated)
}

/// The function of a URL config call and the qualifier it names (in the ARN or as
/// `?Qualifier=`): an alias or `$LATEST` (`None`), never a version number, as on Lambda.
fn url_target(
    function: &str,
    raw: Option<String>,
) -> Result<(FunctionName, Option<String>), ApiError> {
    let (name, q) = function_ref(function, &parse_query(raw)?)?;
    match q.filter(|q| q != LATEST) {
        Some(q) if nimbus_core::is_version(&q) => Err(ApiError::InvalidParameter(
            "a function URL invokes $LATEST or an alias, not a version number: create an alias for the version".into(),
        )),
        q => Ok((name, q)),
    }
}

/// The function's URL config when it invokes `qualifier`, with its current `$LATEST`.
fn existing_url(
    gw: &Gateway,
    name: &FunctionName,
    qualifier: Option<&str>,
) -> Result<nimbus_core::FunctionVersion, ApiError> {
    let cur = gw.store.get(name, None)?;
    if !cur.config.url || cur.config.url_alias() != qualifier {
        let which = qualifier.map(|q| format!(" for {q}")).unwrap_or_default();
        return Err(ApiError::NotFound(format!(
            "function {name} has no function URL{which}"
        )));
    }
    Ok(cur)
}

pub(crate) async fn create_url_config(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (name, qualifier) = url_target(&function, raw)?;
    let input = parse_url_request(&body)?;
    let cur = gw.store.get(&name, None)?;
    if cur.config.url {
        let at = cur.config.url_alias().unwrap_or(LATEST);
        return Err(ApiError::Conflict(format!(
            "function {name} already has a function URL (invoking {at}); Nimbus gives a function one URL"
        )));
    }
    if let Some(a) = &qualifier {
        gw.store.get_alias(&name, a)?;
    }
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(ApiError::internal)?;
    let settings = UrlConfig {
        auth_type: input.auth_type.unwrap_or_else(|| "NONE".into()),
        cors: input.cors.unwrap_or_else(|| json!({})),
        created,
        qualifier: Some(qualifier.unwrap_or_else(|| LATEST.to_string())),
        invoke_mode: input.invoke_mode.filter(|m| m != "BUFFERED"),
    };
    let v = store_url(&gw, &name, Some(settings)).await?;
    Ok((StatusCode::CREATED, Json(url_config_json(&gw, &v))).into_response())
}

pub(crate) async fn update_url_config(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let (name, qualifier) = url_target(&function, raw)?;
    let input = parse_url_request(&body)?;
    let cur = existing_url(&gw, &name, qualifier.as_deref())?;
    let mut settings = url_settings(&cur.config);
    if let Some(a) = input.auth_type {
        settings.auth_type = a;
    }
    if let Some(c) = input.cors {
        settings.cors = c;
    }
    if let Some(m) = input.invoke_mode {
        settings.invoke_mode = (m != "BUFFERED").then_some(m);
    }
    let v = store_url(&gw, &name, Some(settings)).await?;
    Ok(Json(url_config_json(&gw, &v)))
}

pub(crate) async fn get_url_config(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let (name, qualifier) = url_target(&function, raw)?;
    let cur = existing_url(&gw, &name, qualifier.as_deref())?;
    Ok(Json(url_config_json(&gw, &cur)))
}

pub(crate) async fn delete_url_config(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, ApiError> {
    let (name, qualifier) = url_target(&function, raw)?;
    existing_url(&gw, &name, qualifier.as_deref())?;
    store_url(&gw, &name, None).await?;
    Ok(StatusCode::NO_CONTENT)
}
