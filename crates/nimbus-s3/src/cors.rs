//! Bucket CORS: `CORSConfiguration` between S3's XML shapes (`s3s` DTOs) and the engine's
//! [`CorsConfig`], and the layer that applies it, since `s3s` does not route `OPTIONS`:
//!
//! - a preflight (`OPTIONS /BUCKET[/KEY]` with `Origin` and `Access-Control-Request-Method`)
//!   is answered here, unsigned (browsers cannot sign preflights): 200 with
//!   `Access-Control-Allow-{Origin,Methods,Headers}`, `Access-Control-Max-Age`,
//!   `Access-Control-Expose-Headers` and `Vary` when the first matching rule allows the
//!   origin, the method and every requested header; else 403 `AccessForbidden`;
//! - any other request with an `Origin` that a rule allows (with the request's method) gets
//!   the same `Access-Control-*` headers on its response, whatever its status.
//!
//! As S3: a rule whose matching origin is `*` answers `Access-Control-Allow-Origin: *`;
//! otherwise the request's origin is echoed with `Access-Control-Allow-Credentials: true`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nimbus_objects::{CorsConfig, CorsRule, Objects};
use s3s::dto::{CORSConfiguration, CORSRule, GetBucketCorsOutput};

const VARY: &str = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method";

/// The engine's configuration from a `PutBucketCors` body.
pub(crate) fn config_of(c: CORSConfiguration) -> CorsConfig {
    CorsConfig {
        rules: c
            .cors_rules
            .into_iter()
            .map(|r| CorsRule {
                id: r.id,
                allowed_origins: r.allowed_origins,
                allowed_methods: r.allowed_methods,
                allowed_headers: r.allowed_headers.unwrap_or_default(),
                expose_headers: r.expose_headers.unwrap_or_default(),
                max_age_seconds: r.max_age_seconds,
            })
            .collect(),
    }
}

/// The `GetBucketCors` answer.
pub(crate) fn output_of(c: CorsConfig) -> GetBucketCorsOutput {
    let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
    GetBucketCorsOutput {
        cors_rules: Some(
            c.rules
                .into_iter()
                .map(|r| CORSRule {
                    id: r.id,
                    allowed_origins: r.allowed_origins,
                    allowed_methods: r.allowed_methods,
                    allowed_headers: some(r.allowed_headers),
                    expose_headers: some(r.expose_headers),
                    max_age_seconds: r.max_age_seconds,
                })
                .collect(),
        ),
    }
}

/// The bucket a request addresses: `BUCKET.localhost` virtual hosts, else the first path
/// segment.
fn bucket_of(req: &Request) -> Option<String> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if let Some(bucket) = name.strip_suffix(".localhost").filter(|b| !b.is_empty()) {
        return Some(bucket.to_string());
    }
    let first = req.uri().path().trim_start_matches('/').split('/').next()?;
    (!first.is_empty()).then(|| first.to_string())
}

fn text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The layer: answers preflights, decorates cross-origin responses.
pub(crate) async fn layer(State(objects): State<Objects>, req: Request, next: Next) -> Response {
    if req.method() == Method::OPTIONS {
        let bucket = bucket_of(&req);
        let (parts, _) = req.into_parts();
        return preflight(&objects, bucket, &parts.headers).await;
    }
    let origin = text(req.headers(), "origin");
    let bucket = bucket_of(&req);
    let method = req.method().as_str().to_string();
    let mut resp = next.run(req).await;
    if let (Some(origin), Some(bucket)) = (origin, bucket) {
        match objects.cors_rules(&bucket).await {
            Ok(Some(config)) => {
                if let Some(rule) = config.matching(&origin, &method) {
                    add_headers(resp.headers_mut(), rule, &origin, None);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, bucket, "cannot read the CORS configuration"),
        }
    }
    resp
}

fn forbidden(message: &str) -> Response {
    error_response(StatusCode::FORBIDDEN, "AccessForbidden", message)
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/xml")],
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
             <Message>{message}</Message></Error>"
        ),
    )
        .into_response()
}

async fn preflight(objects: &Objects, bucket: Option<String>, headers: &HeaderMap) -> Response {
    let Some(origin) = text(headers, "origin") else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Insufficient information. Origin request header needed.",
        );
    };
    let Some(method) = text(headers, "access-control-request-method") else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid Access-Control-Request-Method: null",
        );
    };
    let requested: Vec<String> = text(headers, "access-control-request-headers")
        .map(|h| {
            h.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let Some(bucket) = bucket else {
        return forbidden("CORSResponse: Bucket not found");
    };
    let config = match objects.cors_rules(&bucket).await {
        Ok(Some(c)) => c,
        Ok(None) => return forbidden("CORSResponse: CORS is not enabled for this bucket."),
        Err(e) => {
            tracing::error!(error = %e, bucket, "cannot read the CORS configuration");
            return crate::errors::internal_error_response();
        }
    };
    match config.preflight(&origin, &method, &requested) {
        Some(rule) => {
            let mut resp = StatusCode::OK.into_response();
            add_headers(resp.headers_mut(), rule, &origin, Some(&requested));
            resp
        }
        None => forbidden(
            "CORSResponse: This CORS request is not allowed. This is usually because the \
             evalution of Origin, request method / Access-Control-Request-Method or \
             Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
        ),
    }
}

/// The `Access-Control-*` headers of a matching rule. `requested` (a preflight's
/// `Access-Control-Request-Headers`) are echoed as the allowed headers.
fn add_headers(h: &mut HeaderMap, rule: &CorsRule, origin: &str, requested: Option<&[String]>) {
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    if rule.any_origin() && !rule.allowed_origins.iter().any(|o| o == origin) {
        set("access-control-allow-origin", "*".into());
    } else {
        set("access-control-allow-origin", origin.into());
        set("access-control-allow-credentials", "true".into());
    }
    set(
        "access-control-allow-methods",
        rule.allowed_methods.join(", "),
    );
    if let Some(requested) = requested.filter(|r| !r.is_empty()) {
        set("access-control-allow-headers", requested.join(", "));
    }
    if !rule.expose_headers.is_empty() {
        set(
            "access-control-expose-headers",
            rule.expose_headers.join(", "),
        );
    }
    if let Some(age) = rule.max_age_seconds {
        set("access-control-max-age", age.to_string());
    }
    set("vary", VARY.into());
}
